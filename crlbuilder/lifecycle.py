"""How long-running processes end: on their parent's death, or when asked to stop.

A builder killed with SIGKILL must not leave its signing processes behind, and
a responder worker must not serve on after its master died: each child asks
the kernel to signal it when its parent goes away (PR_SET_PDEATHSIG on Linux).
Neither ever leaves a core dump (`no_core_dumps`): both hold signing keys, a PIN or the facts
key in memory, which a dump would write to disk, readable by whoever reads the dumps.
A loop that runs until stopped (``build --follow``, ``registry sync --follow``, the
wait for a NATS cluster) takes SIGTERM and SIGINT as a request, seen at its next
turn (`StopRequest`), so that it ends between two commits, never inside one.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
from types import FrameType, TracebackType
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def no_core_dumps() -> None:
    """Make this process, and the children it forks, leave no core dump (no-op where Linux's
    calls are missing).

    RLIMIT_CORE 0 (soft and hard: no core file, and systemd-coredump stores none for it);
    PR_SET_DUMPABLE 0 (no dump through any core_pattern, no ptrace attach by another process
    of the same user, /proc/<pid>/environ and mem for root only: a PIN given as
    ``pin-source=env:`` stays in the environment). Both are inherited by forked children
    (workers, signing processes); an exec'd program starts dumpable again.
    """
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class StopRequest:
    """While installed, SIGTERM and SIGINT set ``requested`` instead of ending the process;
    `restore` puts back the handlers there before. ``with StopRequest() as stop:`` does both,
    or ``stop = StopRequest.install()`` ... ``finally: stop.restore()``."""

    __slots__ = ("_previous", "requested")

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    @classmethod
    def install(cls) -> StopRequest:
        stop = cls()
        stop._install()
        return stop

    def _install(self) -> None:
        self._previous = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
        }

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def restore(self) -> None:
        """The signals' handlers as they were before `install` (once; later calls do nothing)."""
        previous, self._previous = self._previous, {}
        for s, handler in previous.items():
            signal.signal(s, handler)

    def __enter__(self) -> StopRequest:
        self._install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()
