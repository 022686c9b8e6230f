"""Compaction of the record stream: its messages purged through what the latest store snapshot
holds, less a tail (`crlbuilder stream compact`).

The record stream (``JPKI_RECORDS``, `crlbuilder.stream`) would otherwise keep every message it
was given for ever: issuance records with the four facts (基本4情報, sealed under a key derived
from the facts key, which every node holds) and revocation records. When a record passes its
retention period (保存期間, Act §11-§14 and the other families' articles: `crlbuilder.periods`,
`crlbuilder.retention`) each store erases it at a tick; the stream kept a copy. A compaction
purges the stream's messages through the sequence the latest snapshot's store had applied
(`crlbuilder.snapshot`, its description's ``stream_seq``), less a tail, so the stream holds a
record at most a snapshot interval and the tail longer than the stores do.

What a compaction relies on, each checked before anything is purged (`CompactionRefused`
otherwise, nothing purged):

- a snapshot there (`snapshot.NoSnapshot` refused: a purged stream and no snapshot would
  leave a new node nothing to start from; it must not start empty, and its builder refuses
  the stream then: `crlbuilder.build`, ``StreamTruncated``);
- complete and verified: the latest snapshot is read whole, as a new node reads it
  (`snapshot.get` into a temporary directory: its chunks against their SHA-256 digest, the
  store opened, its own sequence the one described), and its description read again
  afterwards: a snapshot replaced meanwhile (a put under way when the compaction started) is
  refused, to be compacted by the next run;
- of this instance of the stream (its ``feed``, `crlbuilder.stream.feed_id`, read again with
  the state the purge is computed from: a stream made again while the snapshot was read is
  not purged through the old one's sequence; one naming no stream, put by a release before
  the field, is refused too) and of no newer release than
  this one (`crlbuilder.release`);
- the stream not already purged past it (a snapshot put from a store behind the stream's
  first message: no node could start from it).

The purge is one JetStream request (``$JS.API.STREAM.PURGE.<stream>`` with ``seq``: the
messages before it go, those from it on stay), applied by the stream's leader and replicated
as one entry: all or nothing. The flags a node judges later records by (the stream's first
message of release 1.6, 1.7 and 1.8: `crlbuilder.stream`, rules 6 to 8), its feed id and its
sequence are in its store, so they travel in the snapshot; the ticks that dated lapses and
erasures are purged with the records, their effect in the store.

The tail (`tail_start`): the messages of the last ``keep_days`` days before the stream's last
message (the signer's ticks keep that near now) stay, so a node stopped for maintenance shorter
than that resumes from its own store; one stopped longer starts again from the snapshot. It is
measured from the earlier of the last message's stored time and the compacting host's clock:
a leader whose clock ran ahead when it stored the last message (a year ahead: no tail at all)
does not shorten it, and a clock behind only lengthens it. The search takes stored times as
rising with the sequence; a stretch stored while a leader's clock was set back (times earlier
than those before them) can still be taken for older than the tail, the purge then going
further, never past the snapshot (decision: a walk of every message would be exact, at a
request per message). A node that the purge goes past, stopped or still catching up, refuses
the stream (`crlbuilder.build`, ``StreamTruncated``, also at a gap in what its consumer
delivers) and starts again from the snapshot.

``--keep-days 0`` purges through the snapshot: every node behind it then starts again from the
snapshot (a decision left to the operator; the units use the default week).

NATS: the compaction runs as the ``snapshot`` role, given the record stream's info, message
gets (the stored times of the tail's search) and purge (`crlbuilder.natsconfig`). A message
get returns the whole message: the sealed payload, which the role cannot open (no facts key;
the snapshot it already reads holds the same facts sealed), and the headers in clear that every
role reading the stream sees (the release and its MAC, the file's name and line, the record
id, the batch end). Kept (decision): the tail by time needs stored times, which only a message
get (or a consumer, which delivers the same: its headers-only setting is the client's choice,
not a permission) gives; a tail counted by messages alone, or by the
snapshots of the days before, would need no get, at the price of a tail no longer in days.

Sans-I/O: `purge_through` and `tail_start` decide; `compact` asks the cluster.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors

from crlbuilder import release, snapshot
from crlbuilder.jetstream import Cluster, ClusterError
from crlbuilder.snapshot import SnapshotInfo
from crlbuilder.stream import StreamNames, current_feed_id, feed_id


class CompactionRefused(Exception):
    """Nothing purged: the latest snapshot cannot be relied on (the message says why and what
    to do)."""


@dataclass(frozen=True, slots=True)
class Compacted:
    """What one compaction did."""

    snapshot_seq: int
    """The stream sequence the latest snapshot's store had applied."""
    purged_through: int
    """The last sequence purged (0: nothing purged)."""
    first: int
    """The stream's first sequence afterwards."""
    last: int


def purge_through(info: SnapshotInfo, *, feed: bytes, first: int, last: int, tail_from: int) -> int:
    """The last sequence of the stream to purge (0: none) when it holds ``first``..``last``
    (``first`` is ``last`` + 1 when it holds none), its instance is ``feed``, the tail to keep
    starts at ``tail_from`` (``last`` + 1: no tail), and the latest snapshot is ``info``.
    `CompactionRefused` when the snapshot cannot be relied on (see the module docstring)."""
    refused = release.refusal("the latest store snapshot", info.release or None)
    if refused is not None:
        raise CompactionRefused(refused)
    if not info.feed:
        raise CompactionRefused(
            "the latest store snapshot names no record stream (put by a release before it "
            "did): put a snapshot with this release (crlbuilder snapshot put), then compact"
        )
    if info.feed != feed.hex():
        raise CompactionRefused(
            "the latest store snapshot was filled from another instance of the record stream "
            "(deleted and made again since): put a snapshot from a node that applies this one "
            "(docs/operations.md, 'A record stream made again'), then compact"
        )
    if info.stream_seq > last:
        raise CompactionRefused(
            f"the latest store snapshot stands at sequence {info.stream_seq}, past the "
            f"stream's last {last}: not a snapshot of this stream as it stands"
        )
    if first > info.stream_seq + 1:
        raise CompactionRefused(
            f"the record stream was purged through {first - 1}, past the latest store "
            f"snapshot (sequence {info.stream_seq}): no node can start from it; put a "
            "snapshot from a caught-up node (crlbuilder snapshot put)"
        )
    through = min(info.stream_seq, tail_from - 1)
    return through if through >= first else 0


def tail_start(
    first: int,
    last: int,
    stored_at: Callable[[int], tuple[int, datetime] | None],
    keep: timedelta,
    *,
    now: datetime | None = None,
) -> int:
    """The first sequence of the tail to keep: the first message stored at most ``keep``
    before the last one held, or before ``now`` (the compacting host's clock) when that is
    earlier (``last`` + 1 when ``keep`` is zero or none is held): a last message stored by a
    leader whose clock ran ahead does not shorten the tail, a host's clock behind only
    lengthens it.
    ``stored_at(seq)`` gives the first message at or after ``seq`` (one deleted alone inside
    the stream is passed) and its time as JetStream stored it, None when there is none (the
    stream's last messages deleted alone: nats-server 2.9 then finds no last message of the
    subject either); binary searches, times taken as rising with the sequence."""
    if last < first or keep <= timedelta(0):
        return last + 1
    end = stored_at(last)
    if end is None:
        lo, hi = first, last  # a message at or after lo, none at or after hi
        if stored_at(lo) is None:
            return last + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if stored_at(mid) is None:
                hi = mid
            else:
                lo = mid
        end = stored_at(lo)
        assert end is not None
    since = (end[1] if now is None else min(end[1], now)) - keep
    lo, hi = first, end[0]  # the answer is in lo..hi: the last message held is in the tail
    while lo < hi:
        mid = (lo + hi) // 2
        found = stored_at(mid)
        assert found is not None  # the last held message is at or after it
        seq, at = found
        if at >= since:
            hi = mid
        else:
            lo = seq + 1
    return lo


def compact(
    cluster: Cluster, names: StreamNames, bucket: snapshot.Bucket, *, keep: timedelta
) -> Compacted:
    """Purge the record stream ``names`` through the latest snapshot in ``bucket``, less the
    tail of ``keep`` (see the module docstring). `CompactionRefused` (nothing purged) when
    the snapshot cannot be relied on; `ClusterError` when the cluster fails (nothing purged
    unless the purge itself was sent: JetStream applies it whole or not at all)."""
    feed = current_feed_id(cluster, names.name)
    if feed is None:
        raise ClusterError(f"stream {names.name}: not found")
    with tempfile.TemporaryDirectory(prefix="jpki-va-compact-") as tmp:
        try:  # the whole snapshot read and checked as a new node would take it
            info = snapshot.get(cluster, bucket, Path(tmp) / "store", feed=feed)
        except snapshot.NoSnapshot as e:
            raise CompactionRefused(
                f"{e}: the record stream is not purged without a snapshot to start from "
                "(crlbuilder snapshot put from a caught-up node first)"
            ) from None
        except (snapshot.SnapshotRefused, snapshot.SnapshotDamaged) as e:
            raise CompactionRefused(str(e)) from None
        except OSError as e:
            raise ClusterError(f"cannot read the snapshot into {tmp} to verify it: {e}") from None
    try:
        described = snapshot.latest_description(cluster, bucket)
    except snapshot.NoSnapshot as e:  # deleted while it was verified: refused, as none
        raise CompactionRefused(
            f"{e} (deleted while it was verified): the record stream is not purged without a "
            "snapshot to start from (crlbuilder snapshot put from a caught-up node first)"
        ) from None
    try:
        now = msgspec.json.decode(described or "", type=SnapshotInfo)
    except msgspec.DecodeError:
        now = None
    if now != info:
        raise CompactionRefused(
            f"the latest snapshot in {bucket.name} was replaced while it was verified (a put "
            "under way): nothing purged; compact again once the put is done"
        )

    async def state() -> tuple[int, int, bytes]:
        """The stream's first and last sequences and its instance, as one answer: the
        stream made again while the snapshot was read is not purged through the old one's
        sequence (its instance was read before)."""
        got = await cluster.js.stream_info(names.name)
        if got.created is None:
            raise ClusterError(f"stream {names.name}: JetStream gave no creation time")
        s = got.state
        return int(s.first_seq), int(s.last_seq), feed_id(names.name, got.created)

    async def at(seq: int) -> tuple[int, datetime] | None:
        try:
            m = await cluster.js.get_msg(names.name, seq=seq, subject=names.subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        if m.seq is None or m.time is None:
            raise ClusterError(f"stream {names.name}: message {seq} has no sequence or time")
        return int(m.seq), m.time

    try:
        first, last, feed = cluster.run(state())
        first = max(first, 1)
        tail = tail_start(first, last, lambda s: cluster.run(at(s)), keep, now=datetime.now(UTC))
        through = purge_through(info, feed=feed, first=first, last=last, tail_from=tail)
        if through:
            cluster.run(cluster.js.purge_stream(names.name, seq=through + 1))
            first, last, _ = cluster.run(state())
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as e:
        raise ClusterError(f"stream {names.name}: {e}") from None
    return Compacted(info.stream_seq, through, first, last)
