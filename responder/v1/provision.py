"""What one provision (提供) of the changes feed is, and the counted mark that keeps it one.

The ledger (帳簿, Act §40) records how many pieces of revocation information were provided
(提供を行った…失効情報等の件数, Ord §71(4)); the yearly report (報告書, Act §41, Ord §72) publishes
those counts and a fee per provision (Act §67(1)(ii), (vi)) would use them. Through ``GET
/v1/changes`` one provision is **one change (a certificate's loss of effect, 失効) delivered
to a party for the first time**. The same change delivered to the same party again is not a
new provision: the party is given no information it was not given already. That happens by
design: a read from an older cursor (a retry, a party that crashed before keeping its last
cursor), a fresh cursor that stands ``[cluster] max_lag`` records back over changes this
node delivered to the party before, or a node of several that cut a batch of the record
stream otherwise than the node that read it first. Those changes are delivered (the party
may need them) and not counted again. A fresh cursor's mark is its own position, not the
node's: a change first delivered from it is counted (else a party that takes a fresh cursor
before every read would read the feed uncounted).

The counted mark says up to where the changes delivered to a party were counted: every
change at or before it, of a certificate the party watched then. So a mark is read only
while the party's watch list is of the generation it was made under
(`responder.v1.watchset.WatchSet.generation`, which changes when an entry is added): a
change of a certificate watched since was never delivered, whatever the mark says (else a
party would watch one late change, read, watch everything and read again from an old
cursor, given the kept feed uncounted). After an addition a read from an older cursor
counts again the changes it delivers again (an over-count, only on such a rewind). Nor is
a mark read by a read that withholds other families than the reads that made it did (a
suspension, 提供の停止, Act §18(6), §37(4), begun or lifted; an agreement amended, a title
notified again: `responder.v1.changes._Receivable` folds the families the party may not
receive into the generation): a read moves the mark past the changes
it passed over, which were never delivered, and one of them delivered later, from an older
cursor, is a first provision. It is a feed position of the same kind as the cursor's
(`responder.v1.cursor`: a position in one store's feed, or in the record stream) and travels
in two places, the later of which applies:

- in the party's cursor, bound to the party by an HMAC (`responder.v1.cursor.seal`): a
  cursor from node A read at node B, or after a restart, counts nothing A counted;
- beside this node's watch lists (`responder.v1.watchset.WatchSet.count_once`, one write
  transaction per counting read in an environment of the marks' own, `responder.v1.markdb`,
  without fsync and emptied at a reboot, in the same step as the ledger counts it and only as
  the answer is written, `responder.v1.route.Delivery`): a party that retries with an
  older cursor on the same node is not counted twice, nor are two reads of one party at
  once; a mark never says more was counted than the ledger did.

A mark of one node's own store carries the anchor of the commits it passed
(`responder.v1.cursor.Anchor`): a store restored from an older copy numbers its next
commits as the lost ones, and a mark anchored in lost commits is not read (counted again).

Positions of the record stream compare exactly within one batch only where both nodes cut
it alike (they usually do: batches are cut by the stream); a change of a batch this node cut
otherwise than the mark's (a builder that cut by time, its publisher gone) cannot be placed
and is counted: a change is never left uncounted, at worst counted twice there. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from responder.v1.cursor import Position, StreamPosition

P = TypeVar("P", Position, StreamPosition)


def _order(p: Position | StreamPosition) -> tuple[int, int, int, bytes] | bytes:
    if isinstance(p, Position):
        return p.start
    if p.inside is None:
        return (p.base, 0, 0, b"")
    return (p.base, 1, p.inside.ordinal, p.inside.key)


def later(a: P, b: P) -> P:
    """The later of two positions of one store or feed."""
    return b if _order(b) > _order(a) else a  # type: ignore[operator]


def covers(mark: P, after: P) -> bool:
    """Was the change just before ``after`` (its `ChangeEntry.after`, or the stream position
    just after it) counted by a read that reached ``mark``?"""
    if isinstance(mark, Position):
        assert isinstance(after, Position)
        return after.start <= mark.start
    assert isinstance(after, StreamPosition)
    if after.inside is None:  # a boundary: every batch ending at or before it
        return after.base <= mark.base
    end = after.inside.end
    if mark.inside is not None and (after.base, end) == (mark.base, mark.inside.end):
        return (after.inside.ordinal, after.inside.key) <= (mark.inside.ordinal, mark.inside.key)
    return end <= mark.base  # a batch read whole before the mark; else not placed: counted


def count(afters: Sequence[P], mark: P) -> tuple[list[bool], P]:
    """For each change delivered (in feed order, by the position just after it), whether it
    is a provision (not covered by ``mark``), and the mark after them."""
    new = [not covers(mark, a) for a in afters]
    for a, fresh in zip(afters, new, strict=True):
        if fresh:
            mark = later(mark, a)
    return new, mark
