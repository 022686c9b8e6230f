"""The signing threads of a worker, fed fairly: the I/O shell around `responder.signqueue`.

Owns the worker's signing threads (``[ocsp] sign_threads``; with ``[ocsp] signing =
"loop"`` the event loop signs instead, `responder.loopsigning` chooses) and the hand-off
of fresh sign jobs from the event loop to them (`SignJobThreads`; `SigningPool` also runs
the /v1 batch thread). Jobs wait in a `responder.signqueue.FairQueue` (per party,
bounded by ``[ocsp] sign_queue_per_party``, served round-robin) instead of the
executor's own FIFO queue, and go to a thread only when one is free, so that one
party's flood of nonce requests cannot make another party's fresh answer wait behind it
(issue 10, item 6). A job beyond its party's share is refused at once: `submit`
returns None and the app answers OCSP ``tryLater`` (RFC 6960 §2.3).

Everything here runs on the worker's event loop thread, except the jobs themselves
(cryptography releases the GIL while it signs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Generic, TypeVar

from responder.ocsp import Ready, SignJob
from responder.signqueue import FairQueue

__all__ = ["SignJobThreads", "SigningPool"]

R = TypeVar("R")


def _abandoned(item: tuple[Callable[[], object], asyncio.Future[Any]]) -> bool:
    return item[1].cancelled()


class SigningPool(Generic[R]):
    """``threads`` signing threads taking jobs from a fair queue of per-party shares."""

    def __init__(self, threads: int, per_party: int) -> None:
        self.threads = threads
        self.queue: FairQueue[tuple[Callable[[], R], asyncio.Future[R]]] = FairQueue(per_party)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sign")
        self.running = 0
        """Jobs handed to a thread and not yet finished (at most ``threads``)."""
        self._closed = False

    def submit(self, party: str, job: Callable[[], R]) -> asyncio.Future[R] | None:
        """The future result of ``job`` run for ``party``; None when its share is full.

        Call from the running event loop.
        """
        if self._closed:
            return None
        loop = asyncio.get_running_loop()
        result: asyncio.Future[R] = loop.create_future()
        self.queue.drop(party, _abandoned)  # their connections went away: no longer waiting
        if not self.queue.push(party, (job, result)):
            return None
        self._dispatch(loop)
        return result

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand waiting jobs to free threads, in the fair queue's order."""
        while self.running < self.threads and not self._closed:
            nxt = self.queue.pop()
            if nxt is None:
                return
            job, result = nxt[1]
            if result.cancelled():  # its connection went away: sign nothing for nobody
                continue
            self.running += 1
            done = self.executor.submit(job)
            done.add_done_callback(partial(self._from_thread, loop, result))

    def _from_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        result: asyncio.Future[R],
        done: concurrent.futures.Future[R],
    ) -> None:
        """In the signing thread: pass the outcome to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is exiting
            loop.call_soon_threadsafe(self._finished, loop, result, done)

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        result: asyncio.Future[R],
        done: concurrent.futures.Future[R],
    ) -> None:
        self.running -= 1
        if not result.cancelled():
            if done.cancelled():
                result.cancel()
            elif (exc := done.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(done.result())
        self._dispatch(loop)

    def close(self) -> None:
        """Stop: waiting jobs are cancelled, running ones finish in their threads."""
        self._closed = True
        while (nxt := self.queue.pop()) is not None:
            nxt[1][1].cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class SignJobThreads(SigningPool[Ready]):
    """The signing threads of fresh OCSP answers (``[ocsp] signing = "threads"``)."""

    @property
    def mode(self) -> str:
        return "threads"

    def sign(self, party: str, job: SignJob) -> asyncio.Future[Ready] | None:
        """The future answer of ``job`` for ``party``; None when its share is full."""
        return self.submit(party, job.run)
