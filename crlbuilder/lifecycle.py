"""Child processes that do not outlive their parent (PR_SET_PDEATHSIG on Linux).

A builder killed with SIGKILL must not leave its signing processes behind, and
a responder worker must not serve on after its master died: each child asks
the kernel to signal it when its parent goes away.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
