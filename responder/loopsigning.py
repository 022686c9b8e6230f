"""Where a worker makes its fresh OCSP signatures (``[ocsp] signing``): on its signing threads, or on its event loop.

Owns `LoopSigning` (the fresh signatures of OCSP answers, 失効情報の提供 by OCSP, Act
§18(1), §37(1), made by the worker's event loop itself, one per loop iteration, taken
from the per-party `responder.signqueue.FairQueue` of the registered parties, 署名検証者
and 利用者証明検証者, Act §17(4), §36(2)) and `fresh_signing`, the choice between it, the
signing threads of `responder.signing` (the default) and the signing processes of
`responder.procsigning`.

What the hand-off to a thread costs (issue 17, item 3): a fresh answer took 414-447 µs
of the server's CPU against 249-256 µs for the bare RSA-2048 signature. About 50 µs of
it is the request's own work on the loop (HTTP, the party, the OCSP request, the
lookup, the answer's bytes); most of the rest comes from the worker's threads
sleeping and waking, 2.8 times per answer (the loop waiting for signatures, the
threads for jobs and for the GIL): each wake-up is a scheduler round trip and cold
caches, and the loop of a worker waiting on signatures costs ~130 µs per answer
instead of ~50. Signing processes fed over pipes (``processes``,
`responder.procsigning`) cost about as much as threads (bench/README.md, ninth pass):
the loop still sleeps and wakes between signatures. A loop that signs never waits while
there is work: 389-395 µs per fresh answer (6 to 13 per cent less CPU; docs/operations.md).

The price, and why it is not the default: while it signs (a quarter of a millisecond
for RSA-2048) the worker answers nothing else, and a worker busy signing is one the
kernel no longer wakes first. One signature is made per loop iteration, every ready
connection served in between, yet under a nonce flood on a shared 2-core machine the
p99 of another party's cached answers went from 3-7 ms (threads) to 16-26 ms. It suits
a node whose cores serve mostly fresh answers. A key in a token (PKCS#11, Ord §73,
§74) may block for as long as the token takes, or retry while it is out of reach: it
stays on the threads. Fairness is the same queue either way: the parties' jobs in
turn, a party's share (``sign_queue_per_party``) refused at once (`sign` returns
None: OCSP ``tryLater``, RFC 6960 §2.3, rule ``fair_share``), a job whose connection
went away (its future cancelled) never signed, nor counted against its share.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from crlbuilder.keys.signer import PemSigner, Signer
from responder.config import SigningMode
from responder.ocsp import Ready, SignJob
from responder.procsigning import ProcessSigningPool
from responder.signing import SignJobThreads
from responder.signqueue import FairQueue

__all__ = ["FreshSigning", "LoopSigning", "SigningMode", "fresh_signing", "signing_processes"]

LOOP: Final = "loop"
PROCESSES: Final = "processes"


class FreshSigning(Protocol):
    """What the app asks of whoever makes its fresh OCSP signatures."""

    @property
    def mode(self) -> str:
        """``loop``, ``threads`` or ``processes``."""
        ...

    @property
    def queue(self) -> FairQueue[Any]:
        """The parties' waiting jobs (its ``per_party`` is re-read on SIGHUP)."""
        ...

    def sign(self, party: str, job: SignJob) -> asyncio.Future[Ready] | None:
        """The future answer of ``job`` for ``party``; None when its share is full."""
        ...

    def close(self) -> None: ...


def _abandoned(item: tuple[SignJob, asyncio.Future[Ready]]) -> bool:
    return item[1].cancelled()


class LoopSigning:
    """Fresh signatures made on the running event loop, one per iteration, parties in turn."""

    def __init__(self, per_party: int) -> None:
        self._queue: FairQueue[tuple[SignJob, asyncio.Future[Ready]]] = FairQueue(per_party)
        self._scheduled: asyncio.AbstractEventLoop | None = None
        """The loop on which `_sign_one` is due (None: not scheduled)."""
        self._closed = False

    @property
    def mode(self) -> str:
        return LOOP

    @property
    def queue(self) -> FairQueue[tuple[SignJob, asyncio.Future[Ready]]]:
        return self._queue

    def sign(self, party: str, job: SignJob) -> asyncio.Future[Ready] | None:
        """The future answer of ``job`` for ``party``; None when its share is full.

        Call from the running event loop: the signature is made in one of its next
        iterations, after the connections that are ready then.
        """
        if self._closed:
            return None
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Ready] = loop.create_future()
        self._queue.drop(party, _abandoned)  # their connections went away: no longer waiting
        if not self._queue.push(party, (job, result)):
            return None
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self._sign_one, loop)
        return result

    def _sign_one(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sign the next waiting job in the fair queue's order; come back next iteration
        if more wait (I/O callbacks run in between)."""
        self._scheduled = None
        while (nxt := self._queue.pop()) is not None:
            job, result = nxt[1]
            if result.cancelled() or result.get_loop().is_closed():  # nobody waits for it
                continue
            try:
                ready = job.run()
            except Exception as exc:  # the app answers internalError, or tryLater for a token
                result.set_exception(exc)
            else:
                result.set_result(ready)
            break
        if len(self._queue) and not self._closed:
            self._scheduled = loop
            loop.call_soon(self._sign_one, loop)

    def close(self) -> None:
        """Stop: waiting jobs are cancelled; later ones are refused."""
        self._closed = True
        while (nxt := self._queue.pop()) is not None:
            nxt[1][1].cancel()


def fresh_signing(
    mode: SigningMode,
    threads: int,
    per_party: int,
    signers: Iterable[Signer],
    *,
    processes: int = 0,
    workers: int = 1,
    command: Sequence[str] | None = None,
    on_exit: Callable[[int], None] | None = None,
) -> FreshSigning:
    """The worker's fresh signing for ``[ocsp] signing``: ``threads`` (``threads`` of them),
    ``loop`` when every key of ``signers`` is in memory (PEM; a token's calls may block,
    so a key in a token keeps the threads), or ``processes``: ``processes`` signing
    processes running ``command`` (`responder.signchild.child_command`; 0: the cores
    shared out between the ``workers``, at least one each), ``on_exit`` told of each
    one that exits (`responder.procsigning`)."""
    if mode == PROCESSES:
        if command is None:
            raise ValueError("signing processes need the command that loads the keys")
        count = processes or signing_processes(os.cpu_count() or 1, workers)
        return ProcessSigningPool(count, per_party, command, on_exit=on_exit)
    if mode == LOOP and all(isinstance(s, PemSigner) for s in signers):
        return LoopSigning(per_party)
    return SignJobThreads(threads, per_party)


def signing_processes(cores: int, workers: int) -> int:
    """Signing processes per worker sized to the cores: ``cores`` shared out between
    ``workers`` (the remainder dropped), at least one each."""
    return max(1, cores // max(1, workers))
