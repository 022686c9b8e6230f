"""Adopting a record stream made again: a node keeps its store (`crlbuilder stream adopt`).

When the record stream (`crlbuilder.stream`) is deleted and made again under its name, its
sequences start over, and every node's builder refuses it (`build.StreamReplaced`). Making
the stores again from the republished history is not harmless: the whole history lands on
the new stream at once, so each batch is dated by the republishing instant (the stream's
clock), and a 30-day move-out lapse (異動等失効情報, Act §31(2)) is written before the move-in
notice (転入届) that, applied in its time, had stopped it: a valid auth certificate revoked,
which is never undone (Act §34(1)(2)).

Adopting keeps the store instead. Its builder skips every record it applied before (the
store's ``applied`` record ids, `apply.Summary.duplicates`), so the store names the new
stream instance at sequence 0 and applies the republished stream as duplicates, then the
records it never saw, with nothing re-dated: a lapse the store holds stopped stays stopped,
one it wrote stays written.

What is checked before anything is written (`refusal`, sans-I/O), each a one-line refusal:

- the store names a stream (an unnamed store takes the stream by itself at its builder's
  start; a group appliance's, filled from CRLs, follows none): judged before NATS is asked;
- the stream exists and is another instance than the one the store names (a store already
  on this instance has nothing to adopt);
- the operator knows it was made again: the store's builder refused it (its refusal is kept,
  `META_STREAM_REFUSED`), or ``--made-again`` says so for a store whose builder has not run
  since;
- the new stream carries every record the store applied (by record id: the messages'
  ``Jpki-Id``, an older publisher's ``Nats-Msg-Id``, read headers only; what each says is
  compared by the builder as it applies the stream, against the digest kept beside the id,
  `crlbuilder.recorddigest`: a republished record that says otherwise than the one applied
  under its id is refused and quarantined on every node, not skipped). A record the store
  holds and the stream lacks would
  stay on this node only, and nodes made from the stream would answer otherwise: the history
  is not all republished yet;
- the store stood at the old stream's end as its builder last saw it (`META_STREAM_HEAD`):
  a node behind would apply the rest at the republishing instant, lapses dated by it as in
  a rebuild, and differ from the others (``--accept-behind`` when no node stood further);
- no process writes the store (its builder is stopped): the store's writer lock.

Then one commit (`Commit.adopt_feed`) names the new instance at sequence 0, clears the
refusal and the old stream's head, and starts the changes feed again (its entries name
the old stream's positions; a party's cursor of the old stream is answered 410 and the
party resynchronises). Nothing else of the store changes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import api

from crlbuilder.jetstream import Cluster, ClusterError
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.stream import H_ID, H_RECORD, H_TICK, StreamNames, feed_id

FETCH: int = 1000
"""Messages asked for at once when reading the stream's record ids."""


@dataclass(frozen=True, slots=True)
class StoreSide:
    """What adopting reads of the store."""

    feed: bytes
    """The stream instance it names (`StoreReader.feed_id`); empty: none."""
    seq: int
    """Its last sequence applied of that instance."""
    refused: str
    """Why its builder stopped applying the stream (`StoreReader.stream_refused`); empty: none."""
    head: int = 0
    """The old stream's last sequence as its builder last saw it (`StoreReader.stream_head`)."""
    group: bool = False
    """A group appliance's store (`StoreReader.crl_import`): filled from CRLs, no stream."""


def store_side(store: Store) -> StoreSide:
    """What adopting reads of ``store``, in one read transaction."""
    with store.read() as r:
        head = r.stream_head()[0]
        return StoreSide(r.feed_id(), r.stream_seq(), r.stream_refused(), head, r.crl_import())


def store_refusal(side: StoreSide) -> str | None:
    """Why the store has nothing to adopt whatever the stream is (None: it may have): judged
    before any NATS server is asked, so a store that follows no stream is told so, not that
    NATS cannot be reached (a group appliance has no NATS)."""
    if side.group:
        return (
            "this is a group appliance's store (団体署名検証者: filled from the 機構's CRLs by "
            "crlbuilder group pull): it follows no record stream, there is nothing to adopt"
        )
    if not side.feed:
        return (
            "this store names no record stream: its builder takes the stream at its start, "
            "there is nothing to adopt"
        )
    return None


@dataclass(frozen=True, slots=True)
class Adopted:
    """What one adoption did (the command prints it)."""

    stream: str
    was_seq: int
    """The old instance's last sequence the store had applied."""
    records_checked: int
    """Record ids the store applied, each found on the new stream."""
    records_to_apply: int
    """Record ids on the new stream the store has not applied (what the builder will apply:
    the records published since the old stream was lost, and those it refused before). Every
    node that stood at the old stream's end says the same."""
    changes_dropped: int
    """Entries of the changes feed of the old stream dropped (`Commit.adopt_feed`)."""


class AdoptRefused(Exception):
    """Adopting is refused, nothing written: the message says why and what to do."""


class AlreadyFollowed(Exception):
    """The store already names the stream as it stands: nothing to adopt, nothing written."""


def refusal(
    side: StoreSide,
    stream: str,
    current: bytes | None,
    *,
    made_again: bool,
    accept_behind: bool = False,
) -> str | None:
    """Why the store must not adopt the stream instance ``current`` (None: no such stream), the
    record ids aside (`missing_refusal`); None when it may. A store already on ``current``
    raises `AlreadyFollowed` unless its builder refused that very instance."""
    local = store_refusal(side)
    if local is not None:
        return local
    if current is None:
        return (
            f"the record stream {stream} does not exist: make it again and republish every "
            "record file (crlbuilder publish) first"
        )
    if side.feed == current:
        if side.refused:
            return (
                f"the store already follows the record stream {stream} as it stands; its "
                f"builder refused it for another reason, which adopting does not cure: "
                f"{side.refused}"
            )
        raise AlreadyFollowed
    if not side.refused and not made_again:
        return (
            f"the record stream {stream} is another instance than the one this store follows "
            f"(at its sequence {side.seq}), but this store's builder has not refused it: pass "
            "--made-again if the stream was deleted and made again (docs/operations.md, "
            "'A record stream made again')"
        )
    if side.seq < side.head and not accept_behind:
        return (
            f"this store stood at sequence {side.seq} of the old stream, which held at least "
            f"{side.head}: adopted, it would apply the rest at the republishing instant (the "
            "30-day lapses dated by it, as a rebuild does) and differ from the nodes that "
            "applied it in its time; start this node from the snapshot of a node that adopted "
            "instead, or pass --accept-behind if no node stood further"
        )
    return None


def missing_refusal(stream: str, missing: int, applied: int) -> str | None:
    """Why records the store applied and the stream lacks forbid adopting it (None: none do)."""
    if not missing:
        return None
    what = "record" if missing == 1 else "records"
    return (
        f"{missing} {what} of the {applied} this store applied not on the record stream "
        f"{stream}: republish every record file first (crlbuilder publish; a record published "
        "twice is applied once), then adopt"
    )


def stream_record_ids(cluster: Cluster, names: StreamNames, durable: str) -> tuple[bytes, set[str]]:
    """The stream's `feed_id` and the message ids (record ids) of every message on it now,
    ticks aside, read headers only through this node's durable consumer ``durable`` (the one
    its credential may make: `crlbuilder.natsconfig`; its builder is stopped), which is
    deleted after: the builder makes it again from the store's sequence."""

    async def go() -> tuple[bytes, set[str]]:
        js = cluster.js
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(names.name, durable)
        info = await js.stream_info(names.name)
        if info.created is None:
            raise ClusterError(f"stream {names.name}: JetStream gave no creation time")
        feed = feed_id(names.name, info.created)
        last = int(info.state.last_seq)
        ids: set[str] = set()
        if not last:
            return feed, ids
        cfg = api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.NONE,
            headers_only=True,
            filter_subject=names.subject,
        )
        await js.add_consumer(names.name, cfg)
        try:
            sub = await js.pull_subscribe_bind(durable=durable, stream=names.name)
            seen = 0
            while seen < last:
                try:
                    msgs = await sub.fetch(batch=FETCH, timeout=5)
                except (nats.errors.TimeoutError, TimeoutError):
                    pending = (await js.consumer_info(names.name, durable)).num_pending
                    if not pending:
                        break  # fewer messages than the last sequence (some deleted)
                    continue
                for m in msgs:
                    seen = max(seen, m.metadata.sequence.stream)
                    headers = m.headers or {}
                    # the record id; an older publisher's message id was the record id
                    rid = headers.get(H_RECORD) or headers.get(H_ID)
                    if not headers.get(H_TICK) and rid:
                        ids.add(rid)
            await sub.unsubscribe()
        finally:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(names.name, durable)
        return feed, ids

    try:
        return cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"reading the record stream {names.name}: {e}") from None


def adopt(
    store: Store,
    cluster: Cluster,
    names: StreamNames,
    durable: str,
    current: bytes | None,
    *,
    made_again: bool,
    accept_behind: bool = False,
) -> Adopted:
    """Check (module docstring) and adopt the stream instance ``current`` (its `feed_id` as
    it stands) into ``store``, opened for writing (its lock: no builder runs); raises
    `AdoptRefused` or `AlreadyFollowed`, nothing written."""
    side = store_side(store)
    why = refusal(side, names.name, current, made_again=made_again, accept_behind=accept_behind)
    if why is not None:
        raise AdoptRefused(why)
    assert current is not None
    read, on_stream = stream_record_ids(cluster, names, durable)
    if read != current:
        raise AdoptRefused(
            f"the record stream {names.name} was made again while adopt read it: run it again"
        )
    with store.read() as r:
        applied = missing = 0
        for rid in r.applied_ids():
            applied += 1
            missing += rid not in on_stream
        to_apply = sum(r.applied(rid) is None for rid in on_stream)
    why = missing_refusal(names.name, missing, applied)
    if why is not None:
        raise AdoptRefused(why)
    with Commit(store) as c:  # the store held for writing since it was read: still ``side``
        dropped = c.adopt_feed(current)
    return Adopted(names.name, side.seq, applied, to_apply, dropped)
