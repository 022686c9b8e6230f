"""Positions of the record stream in one node's changes feed: a version 2 cursor read anywhere.

On a service of several nodes every node applies the record stream (`crlbuilder.stream`) to
its own store, so its commit numbers are its own (a node's own commits, the token issuer's
for instance, are numbered among the stream's), but every commit the stream makes is marked
with the stream's batch it belongs to (`store.format.StreamGroup`: the stream sequence
before the batch and its last one; the lapses written before a batch, dated by it, belong
to it). A cursor therefore names stream positions (`responder.v1.cursor.StreamPosition`),
and this module finds them in a node's feed (`locate`) and follows a read to make the next
one (`Tracker`). Pure: no I/O but the view's.

Why no change is skipped: batches are cut by the stream alone, so nodes usually commit the
same batches, with the same changes. A batch the builder cut by time (``tail_wait``, a
publisher that died before marking its end) may be cut differently on two nodes; then a
position is read from the first batch of this node that ends after the cursor's ``base``,
which holds every change of the stream after ``base`` (and perhaps some before it):
changes may be delivered again, never passed. A position inside a batch is taken as it is
only when this node's batch is the same (same ``base`` and end, and the commit named is
there); otherwise the batch is read again from its start. Commits the stream did not make
(no group: the token issuer's, of a family this feed never delivers, or a store's commits
before it was fed by the stream) are passed over.

A node behind the cursor (its store has not applied ``base`` yet) has nothing to add: the
read answers no change and the same cursor (`Verdict.NOT_YET`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crlbuilder.store import format as sf
from crlbuilder.store.reader import ChangeEntry, StoreReader, changes_start
from responder.v1.cursor import Inside, StreamPosition


class Verdict(enum.Enum):
    """Why a stream position cannot be read on this node."""

    OTHER_FEED = "other_feed"
    """Another stream (or a store not fed by one): resynchronise (410)."""
    EXPIRED = "expired"
    """Some batch after ``base`` was pruned from the feed (its retention): resynchronise (410)."""
    NOT_YET = "not_yet"
    """This node has not applied ``base`` yet: no change here, the same cursor."""


@dataclass(frozen=True, slots=True)
class Start:
    """Where a read of this node's feed starts, and the position it stands at there."""

    start: bytes
    """`StoreReader.changes`'s ``start``."""
    tracker: Tracker


def _tagged_from(reader: StoreReader, commit: int) -> ChangeEntry | None:
    """The first entry of the first commit at or after ``commit`` that the stream made."""
    while True:
        e = next(iter(reader.changes(sf.commit_marker_key(commit))), None)
        if e is None or e.group is not None:
            return e
        commit = e.commit + 1  # a commit of this node's own: the next one


def first_after(reader: StoreReader, base: int) -> ChangeEntry | None:
    """The first entry of the first commit whose batch ends after ``base`` (binary search on
    the commit numbers: the batches' ends grow with them)."""
    lo, hi = max(reader.changes_from() + 1, 1), reader.generation().commit + 1
    while lo < hi:
        mid = (lo + hi) // 2
        e = _tagged_from(reader, mid)
        if e is None or (e.group is not None and e.group.end > base):
            hi = mid
        else:
            lo = mid + 1
    return _tagged_from(reader, lo)


def locate(position: StreamPosition, reader: StoreReader) -> Start | Verdict:
    """Where this view reads the changes after ``position`` (module docstring)."""
    feed = reader.feed_id()
    if not feed or position.feed_id != feed:
        return Verdict.OTHER_FEED
    if position.base < reader.changes_from_seq():
        return Verdict.EXPIRED
    if position.base > reader.stream_seq():
        return Verdict.NOT_YET
    first = first_after(reader, position.base)
    restart = Tracker(feed, position.base)
    if first is None:  # nothing after it in this view
        return Start(changes_start(reader.generation().commit), restart)
    inside = position.inside
    group = sf.StreamGroup(position.base, inside.end) if inside is not None else None
    if inside is not None and first.group == group:
        commit: int | None = first.commit
        for _ in range(inside.ordinal):  # the batch's commit the read stopped in
            assert commit is not None
            e = _tagged_from(reader, commit + 1)
            commit = e.commit if e is not None and e.group == group else None
            if commit is None:
                break
        if commit is not None:
            at = Tracker(feed, position.base, group, commit, inside.ordinal, inside.key)
            return Start(sf.change_key(commit, inside.key) + b"\x00", at)
    return Start(sf.commit_marker_key(first.commit), restart)


class Tracker:
    """Follows a read entry by entry (`see`) to name where it stopped (`after_last`, `at_end`)."""

    __slots__ = ("base", "commit", "feed", "group", "key", "ordinal")

    def __init__(
        self,
        feed: bytes,
        base: int,
        group: sf.StreamGroup | None = None,
        commit: int = 0,
        ordinal: int = 0,
        key: bytes = b"",
    ) -> None:
        self.feed = feed
        self.base = base
        """Where the read started when nothing of a batch is read yet."""
        self.group = group
        self.commit = commit
        self.ordinal = ordinal
        self.key = key

    def see(self, e: ChangeEntry) -> None:
        """``e`` was read (an entry of a commit the stream made)."""
        assert e.group is not None
        if e.group == self.group:
            if e.commit != self.commit:
                self.ordinal += 1
        else:
            self.group, self.ordinal = e.group, 0
        self.commit, self.key = e.commit, e.key

    def after_last(self) -> StreamPosition:
        """The position just after the last entry read (where the read started if none was)."""
        if self.group is None:
            return StreamPosition(self.feed, self.base)
        inside = Inside(self.group.end, self.ordinal, self.key)
        return StreamPosition(self.feed, self.group.base, inside)

    def at_end(self, stream_seq: int) -> StreamPosition:
        """The position after a read to the view's end: every batch through ``stream_seq``
        (the view's `StoreReader.stream_seq`), or, when the last entry read is of a batch not
        committed whole yet (its lapses are, its records are not), just after it."""
        if self.group is not None and self.group.end > stream_seq:
            return self.after_last()
        return StreamPosition(self.feed, max(stream_seq, self.base))
