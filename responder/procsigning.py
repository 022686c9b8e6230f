"""Fresh OCSP signatures in signing processes (``[ocsp] signing = "processes"``): the worker's side.

Owns a worker's signing processes (`responder.signchild`, ``[ocsp] sign_processes`` of
them, by default the machine's cores shared out between the workers) and the hand-off of
fresh sign jobs to them, for the fresh answers of 失効情報の提供 by OCSP (Act §18(1),
§37(1)) to the registered parties (署名検証者, 利用者証明検証者, Act §17(4), §36(2)).
Jobs wait in the same per-party `responder.signqueue.FairQueue` as on the signing threads
(`responder.signing`), a party's share refused at once (`sign` returns None: OCSP
``tryLater``, RFC 6960 §2.3, rule ``fair_share``), and are taken from it in turn only
when a process has room (at most `DEPTH` jobs in a process's pipe, so that it never
waits for the event loop between two signatures). The hand-off is batched: every job
ready when the loop dispatches goes to a process's pipe in one write, and every result
waiting in a pipe is read in one read. The worker builds the to-be-signed bytes
(tbsResponseData) and assembles the answer around the signature; only the process holds
the keys (PEM, mode 0600, or its own PKCS#11 session, Ord §73, §74): nothing secret
crosses the pipe.

Why processes (issue 17, item 3): a signing thread shares the worker's GIL with the
event loop and wakes and sleeps with it; a process signing jobs from a pipe takes no
GIL but its own, and the event loop reads its answers like any socket. Whether that
costs less CPU per fresh answer than the threads is measured in bench/README.md
("Issue 17, ninth pass"); the default stays the threads.

Failures: a process that exits (crash, SIGKILL, a key it cannot load) has its jobs in
flight answered ``tryLater`` (`SignerLost`, a `TokenUnavailable`: the signer is out of
reach for now) and is replaced at once, or after a back-off when it keeps dying young;
while no process runs, jobs are refused the same way rather than left waiting. Each exit
is counted (``on_exit``: ``jpkiva_signing_process_exits_total``). A job whose connection
went away (its future cancelled) is not sent, or its signature is dropped. `close`
cancels what waits, closes the pipes (the processes exit at end of input) and reaps
them. Everything here runs on the worker's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from crlbuilder.keys.pkcs11 import TokenUnavailable
from crlbuilder.seal import FACTS_KEY_ENV
from responder.ocsp import Ready, SignJob
from responder.signchild import FAILED, HELLO, JOB, OK, RESULT, UNAVAILABLE
from responder.signqueue import FairQueue

__all__ = ["DEPTH", "ProcessSigningPool", "SignatureFailed", "SignerLost"]

_log: Final = logging.getLogger("responder.procsigning")

DEPTH: Final = 2
"""Jobs at most in one process's pipe: the next is there when a signature ends."""
YOUNG_SECONDS: Final = 5.0
"""A process that exits younger than this is restarted after a back-off (0.5 s, doubling)."""
MAX_BACKOFF_SECONDS: Final = 30.0
CLOSE_WAIT_SECONDS: Final = 2.0
"""How long `close` waits for the processes to exit at end of input before killing them."""
_READ: Final = 1 << 16


def _abandoned(item: tuple[SignJob, asyncio.Future[Ready]]) -> bool:
    return item[1].cancelled()


class SignerLost(TokenUnavailable):
    """The signing process exited, or none runs: the signer is out of reach for now (tryLater)."""


class SignatureFailed(Exception):
    """The signing process could not sign this job (the name of its error)."""


@dataclass(slots=True)
class _InFlight:
    job: SignJob
    tbs: bytes
    future: asyncio.Future[Ready]


@dataclass(slots=True)
class _Child:
    slot: int
    proc: subprocess.Popen[bytes]
    wfd: int
    rfd: int
    started: float
    inflight: dict[int, _InFlight] = field(default_factory=dict)
    out: bytearray = field(default_factory=bytearray)
    buf: bytearray = field(default_factory=bytearray)
    writing: bool = False
    """A writer callback is registered: ``out`` did not fit in the pipe."""
    hello: bool = False
    """Its first frame came: its keys are loaded (or it failed to load them and exits)."""


class ProcessSigningPool:
    """``processes`` signing processes taking jobs from a fair queue of per-party shares."""

    def __init__(
        self,
        processes: int,
        per_party: int,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        """``on_exit`` is called on the loop with the number of jobs lost each time a
        signing process exits while the pool runs (a metric)."""
        if processes < 1:
            raise ValueError("at least one signing process")
        self.processes = processes
        self.queue: FairQueue[tuple[SignJob, asyncio.Future[Ready]]] = FairQueue(per_party)
        self.command = list(command)
        self.env = env if env is not None else _child_env()
        self.children: list[_Child | None] = [None] * processes
        self.sent = 0
        """Jobs written to a process so far (a cancelled job waiting in the queue is not)."""
        self.restarts = 0
        """Processes started to replace one that exited."""
        self.exits = 0
        """Signing processes that exited while the pool ran (not at `close`)."""
        self._on_exit = on_exit
        self._failures = [0] * processes
        """Consecutive young exits of each slot (its back-off)."""
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._timers: list[asyncio.TimerHandle] = []
        with contextlib.suppress(RuntimeError):  # made in a worker's running loop: watch the
            self._loop = asyncio.get_running_loop()  # processes from now, not from a first job
        for slot in range(processes):
            self._start(slot)

    # --- the processes --------------------------------------------------------------

    def _start(self, slot: int) -> None:
        """Start the process of ``slot`` (raises OSError when it cannot be started)."""
        proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env
        )
        assert proc.stdin is not None and proc.stdout is not None
        wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        child = _Child(slot, proc, wfd, rfd, time.monotonic())
        self.children[slot] = child
        if self._loop is not None:
            self._loop.add_reader(rfd, self._readable, child)

    async def started(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until every process has loaded its keys or
        exited (a worker calls it before it says it is ready, so that its first fresh
        answers do not wait for a Python start); whether they all did. Call on the loop
        the pool was made in."""
        loop = asyncio.get_running_loop()
        self._attach(loop)
        deadline = loop.time() + timeout
        while not all(c is None or c.hello for c in self.children):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def pids(self) -> list[int]:
        """The running signing processes."""
        return [c.proc.pid for c in self.children if c is not None]

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the processes' answers on ``loop``: the loop that submits (a worker has one;
        an idle pool moves to another, as a test's or a benchmark's next loop)."""
        old = self._loop
        if old is loop:
            return
        if any(c is not None and (c.inflight or c.out) for c in self.children):
            raise RuntimeError("the signing pool is busy on another event loop")
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self._loop = loop
        for slot, child in enumerate(self.children):
            if child is None:  # its restart was due on the other loop
                self._restart(slot)
                continue
            if old is not None and not old.is_closed():
                old.remove_reader(child.rfd)
            loop.add_reader(child.rfd, self._readable, child)

    def _lost(self, child: _Child) -> None:
        """``child`` exited (or its pipe broke): answer its jobs tryLater, replace it."""
        if self.children[child.slot] is not child:
            return
        self.children[child.slot] = None
        self._detach(child)
        code = child.proc.poll()
        _log.error(
            "signing_process_exited",
            extra={
                "fields": {"pid": child.proc.pid, "code": code, "jobs_lost": len(child.inflight)}
            },
        )
        self.exits += 1
        if self._on_exit is not None:
            self._on_exit(len(child.inflight))
        lost = SignerLost(f"the signing process {child.proc.pid} exited")
        for p in child.inflight.values():
            if not p.future.done():
                p.future.set_exception(lost)
        child.inflight.clear()
        self._reap(child.proc, time.monotonic() + CLOSE_WAIT_SECONDS)
        if self._closed:
            return
        young = time.monotonic() - child.started < YOUNG_SECONDS
        self._failures[child.slot] = self._failures[child.slot] + 1 if young else 0
        if self._failures[child.slot] == 0:
            self._restart(child.slot)
        else:
            self._retry(child.slot)
        if not any(self.children):
            self._refuse_waiting()
        self._dispatch()

    def _retry(self, slot: int) -> None:
        """Start ``slot`` again after its back-off."""
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(self._failures[slot] - 1, 0))
        assert self._loop is not None
        self._timers.append(self._loop.call_later(delay, self._restart, slot))

    def _restart(self, slot: int) -> None:
        if self._closed or self.children[slot] is not None:
            return
        self.restarts += 1
        try:
            self._start(slot)
        except OSError as exc:
            _log.error(
                "signing_process_start_failed", extra={"fields": {"error": exc.strerror or ""}}
            )
            self._failures[slot] += 1
            self._retry(slot)
            return
        self._dispatch()

    def _refuse_waiting(self) -> None:
        """No process runs: the waiting jobs are answered tryLater rather than held."""
        while (nxt := self.queue.pop()) is not None:
            future = nxt[1][1]
            if not future.done():
                future.set_exception(SignerLost("no signing process is running"))

    def _detach(self, child: _Child) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(child.rfd)
            if child.writing:
                self._loop.remove_writer(child.wfd)
        child.writing = False
        for f in (child.proc.stdin, child.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def _reap(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Collect ``proc``'s exit; kill it once ``deadline`` passed (without blocking the loop)."""
        if proc.poll() is not None:
            return
        if time.monotonic() >= deadline:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
            return
        if self._loop is None or self._loop.is_closed():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.0))
            self._reap(proc, 0.0)
            return
        self._timers.append(self._loop.call_later(0.05, self._reap, proc, deadline))

    # --- jobs -----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "processes"

    def sign(self, party: str, job: SignJob) -> asyncio.Future[Ready] | None:
        """The future answer of ``job`` signed for ``party``; None when its share is full.

        Call from the running event loop. With no signing process running the future
        fails at once with `SignerLost` (tryLater).
        """
        if self._closed:
            return None
        loop = asyncio.get_running_loop()
        self._attach(loop)
        result: asyncio.Future[Ready] = loop.create_future()
        if not any(self.children):
            result.set_exception(SignerLost("no signing process is running"))
            return result
        self.queue.drop(party, _abandoned)  # their connections went away: no longer waiting
        if not self.queue.push(party, (job, result)):
            return None
        self._dispatch()
        return result

    def _dispatch(self) -> None:
        """Send waiting jobs, in the fair queue's order, to the processes with room."""
        touched: list[_Child] = []
        while len(self.queue) and not self._closed:
            child = self._roomiest()
            if child is None:
                break
            nxt = self.queue.pop()
            assert nxt is not None
            job, result = nxt[1]
            if result.cancelled():  # its connection went away: sign nothing for nobody
                continue
            try:
                tbs = job.signer.response_data(
                    job.answers,
                    produced_at=job.produced_at,
                    this_update=job.produced_at,
                    next_update=job.next_update,
                    nonce=job.nonce,
                )
            except Exception as exc:
                result.set_exception(exc)
                continue
            job_id = next(self._ids) & 0x7FFFFFFF
            child.inflight[job_id] = _InFlight(job, tbs, result)
            child.out += JOB.pack(job_id, job.signer.signer_id, len(tbs))
            child.out += tbs
            self.sent += 1
            if child not in touched:
                touched.append(child)
        for child in touched:
            self._flush(child)

    def _roomiest(self) -> _Child | None:
        best: _Child | None = None
        for child in self.children:
            if (
                child is not None
                and len(child.inflight) < DEPTH
                and (best is None or len(child.inflight) < len(best.inflight))
            ):
                best = child
        return best

    def _flush(self, child: _Child) -> None:
        """Write what waits for ``child``; the rest when its pipe has room."""
        if self.children[child.slot] is not child:
            return
        try:
            n = os.write(child.wfd, child.out) if child.out else 0
        except BlockingIOError:
            n = 0
        except OSError:  # its end is closed: it exited, its end of input says so too
            self._lost(child)
            return
        del child.out[:n]
        loop = self._loop
        if loop is None:
            return
        if child.out and not child.writing:
            loop.add_writer(child.wfd, self._flush, child)
            child.writing = True
        elif not child.out and child.writing:
            loop.remove_writer(child.wfd)
            child.writing = False

    def _readable(self, child: _Child) -> None:
        try:
            data = os.read(child.rfd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost(child)
            return
        buf = child.buf
        buf += data
        pos, head = 0, RESULT.size
        while len(buf) - pos >= head:
            job_id, status, micros, n = RESULT.unpack_from(buf, pos)
            if len(buf) - pos - head < n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            if job_id == HELLO:
                child.hello = True
                if status != OK:  # it exits now: its end of input follows
                    _log.error(
                        "signing_process_failed",
                        extra={"fields": {"pid": child.proc.pid, "error": payload.decode()}},
                    )
                continue
            p = child.inflight.pop(job_id, None)
            if p is None or p.future.done():
                continue
            if status == OK:
                job = p.job
                p.future.set_result(
                    Ready(
                        job.signer.assemble(p.tbs, payload),
                        job.produced_at,
                        job.next_update,
                        job.statuses,
                        job.families,
                        signing_seconds=micros / 1e6,
                    )
                )
            elif status == UNAVAILABLE:
                p.future.set_exception(TokenUnavailable(payload.decode(errors="replace")))
            else:
                assert status == FAILED
                p.future.set_exception(SignatureFailed(payload.decode(errors="replace")))
        del buf[:pos]
        self._dispatch()

    def close(self) -> None:
        """Stop: waiting and running jobs are cancelled; the processes exit and are reaped."""
        self._closed = True
        for t in self._timers:
            t.cancel()
        while (nxt := self.queue.pop()) is not None:
            nxt[1][1].cancel()
        procs = []
        for slot, child in enumerate(self.children):
            if child is None:
                continue
            self.children[slot] = None
            for p in child.inflight.values():
                p.future.cancel()
            child.inflight.clear()
            self._detach(child)  # end of input: the process exits
            procs.append(child.proc)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.0))
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)


def _child_env() -> dict[str, str]:
    """The worker's environment, with this project importable by the signing process, without
    the facts key (`responder serve` took it out already; an app made otherwise may still
    hold it there): a signing process opens no facts."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != FACTS_KEY_ENV}
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    return env
