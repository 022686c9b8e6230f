"""The fair share of fresh OCSP signing between registered parties: a per-party round-robin queue.

Owns the decision of which party's sign job runs next and when a party's job is refused
(sans-I/O: no threads, no clock, no event loop; `responder.loopsigning`, signing on the
worker's event loop, and `responder.signing`, the signing threads, take jobs from it).

Why: a fresh signature (an answer with the requester's nonce, RFC 9654, or a good answer
not yet cached) costs an RSA private-key operation, the dearest thing a worker does. A
party whose agreement sets no quota could force thousands of them a second, one new
nonce per request, and every other registered party's fresh answer waited behind its queue (issue 10, item 6: another party's p99 went from 2.6 to 10.6 ms).
The registered parties (署名検証者, Act §17(4); 利用者証明検証者, Act §36(2)) each have an
agreement (取決め, Act §17(4) and Ord §31; Act §36(2) and Ord §62) and are each entitled
to be served by it; none may take the whole signer.

The rule: each party has its own FIFO of waiting jobs, at most ``per_party`` long; a
job beyond that is refused at once (the caller answers OCSP ``tryLater``, RFC 6960
§2.3, and counts rule ``fair_share``); jobs whose requester went away are not waiting
(`FairQueue.drop`, before each push in `responder.signing.SigningPool`). The next job to run is taken from the parties
with waiting jobs in turn, one job per party per round (round-robin), so a party with
one waiting job waits for at most one job of each other waiting party, however many
the others have queued. Parties are registry ids, so the number of queues is bounded by
the registry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Waiting jobs per party, served round-robin; at most ``per_party`` waiting per party."""

    def __init__(self, per_party: int) -> None:
        if per_party < 1:
            raise ValueError("per_party must be at least 1")
        self.per_party = per_party
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()
        """Parties with waiting jobs, in the order of their next turn."""
        self._size = 0

    def push(self, party: str, item: T) -> bool:
        """Queue ``item`` for ``party``; False (nothing queued) when its share is full."""
        queue = self._queues.get(party)
        if queue is None:
            queue = self._queues[party] = deque()
            self._turns.append(party)
        elif len(queue) >= self.per_party:
            return False
        queue.append(item)
        self._size += 1
        return True

    def drop(self, party: str, gone: Callable[[T], bool]) -> int:
        """Remove the waiting items of ``party`` for which ``gone`` is true (their requester
        went away: they would be skipped when their turn came, and held the party's share
        until then); how many were removed. The others keep their order and turn."""
        queue = self._queues.get(party)
        if queue is None or not any(map(gone, queue)):  # the usual case: nothing to rebuild
            return 0
        kept = deque(item for item in queue if not gone(item))
        removed = len(queue) - len(kept)
        if removed:
            self._size -= removed
            if kept:
                self._queues[party] = kept
            else:
                del self._queues[party]
                self._turns.remove(party)
        return removed

    def pop(self) -> tuple[str, T] | None:
        """The next (party, item): the oldest item of the party whose turn it is; None if empty."""
        if not self._turns:
            return None
        party = self._turns.popleft()
        queue = self._queues[party]
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._turns.append(party)  # its next job waits for one turn of every other party
        else:
            del self._queues[party]
        return party, item

    def waiting(self, party: str) -> int:
        """Jobs of ``party`` waiting now."""
        queue = self._queues.get(party)
        return len(queue) if queue is not None else 0

    def __len__(self) -> int:
        return self._size
