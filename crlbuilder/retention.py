"""When CRL entries pass their retention: the builder's agenda of erasures (sans-I/O).

A revocation record (失効情報の記録) is kept for the period Cabinet order sets, counted
from when it was recorded, and never erased while its certificate is still valid
(Ord §70(1)(iii), `crlbuilder.apply.past_retention`): an entry falls due at
``max(recorded_at + period, not_after)`` (`crlbuilder.apply.due_instant`). Finding which are due by reading every CRL entry
costs seconds at national scale (about 4 s of CPU at 10,000,000 holders), and the builder
asks at every build, every stream tick and every commit of the follow loop, when nearly
always none is due.

`RetentionAgenda` makes the question cheap without changing its answer. One scan of
every entry (`Applier.erase_past_retention`) erases what is due and lists what falls due
before a horizon ``lookahead`` seconds later; until the horizon, the agenda alone answers.
An entry written after the scan (the store's `RevokedWatermark`) cannot fall due before
its recordedAt plus the shortest period: when that is before the horizon, the agenda is
stale and the next question scans again. An entry the agenda names is checked again
against the store when its time comes (it may have been erased, unlisted or revoked again
since), so the agenda only ever spares reads: what is erased at an instant is what a full
scan would erase then, on every node of the record stream alike.
"""

from __future__ import annotations

import bisect
from typing import Final

LOOKAHEAD: Final = 30 * 86_400
"""Seconds past a scan that its agenda covers."""


class RetentionAgenda:
    """What falls due before ``horizon``, as of the last scan (`rebuild`)."""

    __slots__ = ("_due", "horizon", "lookahead")

    def __init__(self, lookahead: int = LOOKAHEAD) -> None:
        if lookahead <= 0:
            raise ValueError("the agenda's lookahead is a positive number of seconds")
        self.lookahead = lookahead
        self.horizon: int | None = None
        """Until when the agenda answers (epoch seconds); None before the first scan."""
        self._due: list[tuple[int, bytes]] = []

    def stale(self, now: int, written_since: int | None, shortest: int) -> bool:
        """Whether only a scan of every entry says what is due at ``now``: no scan yet, the
        horizon reached, or an entry recorded at ``written_since`` (the earliest written
        since the scan) may fall due before the horizon (``shortest``: the shortest period)."""
        if self.horizon is None or now >= self.horizon:
            return True
        return written_since is not None and written_since + shortest < self.horizon

    def rebuild(self, now: int, later: list[tuple[int, bytes]]) -> None:
        """After a scan at ``now``: ``later`` holds every (due instant, status key) of an entry
        not due at ``now`` that falls due before ``now + lookahead`` (in any order)."""
        self.horizon = now + self.lookahead
        self._due = sorted(later)

    def take(self, now: int) -> list[bytes]:
        """The keys the agenda names as due by ``now``, taken off it (check each again)."""
        cut = bisect.bisect_right(self._due, (now, b"\xff" * 64))
        out = [key for _, key in self._due[:cut]]
        del self._due[:cut]
        return out

    def __len__(self) -> int:
        return len(self._due)
