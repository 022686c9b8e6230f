"""Waking the spool loop when a record file lands in the spool (inotify), not at its next look.

`build --follow` reads the spool directory, applies what is there, then waits
``input.follow_interval`` seconds (1 s by default), or less when a lapse or the end of an
approval falls due sooner. With that wait a sleep, a file waited up to the whole interval
before its apply began: half a second on average with the default, as long as the apply of
10,000 records into a 1,000,000-holder store. `SpoolWatch.wait` ends the wait as soon as a
``*.jsonl`` file is renamed into the spool (how operations drop one: docs/operations.md)
or closed after being written there, through Linux's inotify (`inotify_simple`).

The loop still reads the directory at every turn: the watch only shortens the wait, so an
event missed (the kernel's queue overflowed, a file written by other means) costs at most
the interval, as before. Where inotify is not available (another system, the user's
instances used up) it sleeps, and says so once through ``warn``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"
"""The files the spool loop applies; others (a ``.part`` being written, ``done/``) do not wake it."""


class SpoolWatch:
    """Waits on one spool directory (a context manager: its inotify descriptor is closed)."""

    def __init__(self, spool: Path, warn: Callable[[str], None] | None = None) -> None:
        self._inotify: Any = None
        self._overflow = 0
        try:
            from inotify_simple import INotify, flags

            inotify = INotify()
            try:
                inotify.add_watch(spool, flags.MOVED_TO | flags.CLOSE_WRITE)
            except OSError:
                inotify.close()
                raise
        except (ImportError, OSError) as e:
            if warn is not None:
                warn(f"{spool}: not watched ({e or type(e).__name__}); "
                     "a file is seen at the next look, every input.follow_interval")  # fmt: skip
            return
        self._inotify = inotify
        self._overflow = int(flags.Q_OVERFLOW)

    @property
    def watching(self) -> bool:
        """Whether inotify wakes `wait` (else it sleeps)."""
        return self._inotify is not None

    def wait(self, seconds: float) -> bool:
        """Wait at most ``seconds``; True as soon as a ``*.jsonl`` file landed in the spool
        (or the kernel lost events, which may have been one), False when the time is up."""
        if self._inotify is None:
            time.sleep(seconds)
            return False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            # milliseconds, at least 1 (0 would not wait at all)
            for e in self._inotify.read(timeout=max(1, math.ceil(left * 1000))):
                if e.mask & self._overflow or str(e.name).endswith(SUFFIX):
                    return True
        return False

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def __enter__(self) -> SpoolWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
