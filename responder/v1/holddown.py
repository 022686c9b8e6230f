"""When a worker tries the watch stream again after it could not be reached (`HoldDown`).

On a node of several every ``POST /v1/watch`` and ``GET /v1/changes`` calls the watch stream
(`responder.v1.watchstream`) from the worker's one /v1 batch thread. While the stream's
servers are down or hung, each call would hold that thread for its connection attempts
(seconds per server) before answering 503, and the large ``POST /v1/status`` batches queued
behind it would wait. So a failed call holds the stream down: the calls within the interval
answer 503 at once, without trying, and the first call after it tries again (a probe); each
failure in a row doubles the interval, from `FIRST` to `LONGEST` seconds, and a call that
succeeds ends it. The 503's Retry-After is what remains of the interval.

Sans-I/O: the clock is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

FIRST: Final = 2.0
"""Seconds held down after the first failure."""
LONGEST: Final = 16.0
"""The longest interval: a stream back is tried again within it."""


@dataclass
class HoldDown:
    """The failures in a row of one worker's watch stream and until when it is held down."""

    first: float = FIRST
    longest: float = LONGEST
    failures: int = 0
    interval: float = 0.0
    """The last interval held down (0: none since the last success)."""
    until: float = 0.0
    """The clock's time the next try may be made at (0: not held down)."""

    def failed(self, now: float) -> float:
        """A call failed at ``now``: hold down for the next interval; its length."""
        # doubled from the last interval, not computed as first * 2**failures: an outage of
        # hours counts over a thousand failures, and 2.0**1024 overflows a float
        interval = self.first if self.failures == 0 else min(self.interval * 2.0, self.longest)
        self.failures += 1
        self.interval = interval
        self.until = now + interval
        return interval

    def succeeded(self) -> None:
        """A call succeeded: no longer held down, the next failure starts at `first` again."""
        self.failures = 0
        self.interval = 0.0
        self.until = 0.0

    def wait(self, now: float) -> float:
        """Seconds left of the hold-down at ``now`` (0: a call may try)."""
        return max(0.0, self.until - now)

    def retry_after(self, now: float) -> int | None:
        """Whole seconds for a Retry-After at ``now`` (at least 1); None when not held down."""
        left = self.wait(now)
        return max(1, math.ceil(left)) if left > 0 else None
