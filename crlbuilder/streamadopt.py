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
  is not all republished yet. The token records, which no record file holds, are published
  by the signer's adopt (`TokenSide` with its certificates and key; run first), as its store
  applied them (`crlbuilder.tokenadopt.held`), before it reads the stream's ids; a revocation
  release 1.5 published unsigned counts as carried only in its signed form, its signature
  checked (a node replaying the new stream refuses the unsigned one);
- the store stood at the old stream's end as its builder last saw it (`META_STREAM_HEAD`):
  a node behind would apply the rest at the republishing instant, lapses dated by it as in
  a rebuild, and differ from the others (``--accept-behind`` when no node stood further);
- no process writes the store (its builder is stopped): the store's writer lock.

Then one commit (`Commit.adopt_feed`) names the new instance at sequence 0, clears the
refusal and the old stream's head, and starts the changes feed again (its entries name
the old stream's positions; a party's cursor of the old stream is answered 410 and the
party resynchronises). Nothing else of the store changes, but for the digest kept beside the
id of each token revocation release 1.5 published unsigned: that of its signed form as read
from the new stream, its signature checked (`crlbuilder.tokenadopt.signed_digest`,
`Commit.rekey_applied`), so the builder skips it as the record applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import nats.js.errors
from cryptography import x509
from nats.js import api

from crlbuilder import tokenadopt
from crlbuilder.ingest import Located
from crlbuilder.jetstream import Cluster, ClusterError
from crlbuilder.model import Record
from crlbuilder.recorddigest import RecordDigest
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.stream import (
    Consumer,
    StreamCipher,
    StreamNames,
    decode,
    feed_id,
    message_record_id,
)

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
    token_records_published: int = 0
    """Token records the store applied that the new stream lacked, published by this adopt (the
    signer's: `crlbuilder.tokenadopt.held`)."""
    token_revocations_signed: int = 0
    """Release 1.5's unsigned token revocations the store applied, whose id now keeps the digest
    of their signed form read from the new stream (`crlbuilder.tokenadopt.signed_digest`)."""


@dataclass(frozen=True, slots=True)
class TokenSide:
    """What adopting a store that applied token records needs (`crlbuilder.tokenadopt`)."""

    digests: RecordDigest
    """The record digests (the facts key's), to tell what the store applied."""
    cipher: StreamCipher
    """To open a message read from the stream (a revocation's signed form)."""
    certificates: dict[int, x509.Certificate] | None = None
    """The signer's only: its token certificates (``tokens.issued``), by serial."""
    sign: Callable[[str, int, datetime, bytes], str] | None = None
    """The signer's only: signs a revocation by the token issuer's key (issuer, serial,
    instant, holder: `crlbuilder.tokenrevocation.sign`)."""

    @property
    def signer(self) -> bool:
        return self.certificates is not None and self.sign is not None


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


def missing_refusal(
    stream: str, missing: int, applied: int, tokens: int = 0, unmade: int = 0
) -> str | None:
    """Why records the store applied and the stream lacks forbid adopting it (None: none do);
    ``tokens`` of them token records (the signer's builder wrote them, no record file), of
    which this (the signer's) adopt could not make ``unmade`` again."""
    if not missing:
        return None
    what = "record" if missing == 1 else "records"
    why = (
        f"{missing} {what} of the {applied} this store applied not on the record stream "
        f"{stream}: republish every record file first (crlbuilder publish; a record published "
        "twice is applied once), then adopt"
    )
    if unmade:
        return (
            f"{why}; {unmade} of them token records this signer's store applied that it cannot "
            "publish again as they were (a token's certificate missing from tokens.issued, or "
            "another content than applied)"
        )
    if tokens:
        return (
            f"{why}; {tokens} of them token records, which the signer publishes again: adopt on "
            "the signer's node first"
        )
    return why


def stream_record_ids(
    cluster: Cluster,
    names: StreamNames,
    durable: str,
    bodies: Collection[str] = (),
    found: list[tuple[str, dict[str, str], bytes]] | None = None,
) -> tuple[bytes, set[str]]:
    """The stream's `feed_id` and the record ids of every message on it now, ticks aside
    (`stream.message_record_id`), read headers only through this node's durable consumer
    ``durable`` (the one its credential may make: `crlbuilder.natsconfig`; its builder is
    stopped), which is deleted after: the builder makes it again from the store's sequence.
    With ``bodies`` (record ids: release 1.5's unsigned token revocations the store holds,
    `crlbuilder.tokenadopt`), payloads are read too, and each message of one of those ids is
    appended to ``found`` (its id, headers, sealed payload)."""

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
            headers_only=not bodies,
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
                    rid = message_record_id(headers)
                    if rid:
                        ids.add(rid)
                        if rid in bodies and found is not None:
                            found.append((rid, dict(headers), bytes(m.data)))
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
    tokens: TokenSide | None = None,
) -> Adopted:
    """Check (module docstring) and adopt the stream instance ``current`` (its `feed_id` as
    it stands) into ``store``, opened for writing (its lock: no builder runs); raises
    `AdoptRefused` or `AlreadyFollowed`, nothing written."""
    side = store_side(store)
    why = refusal(side, names.name, current, made_again=made_again, accept_behind=accept_behind)
    if why is not None:
        raise AdoptRefused(why)
    assert current is not None

    def read(
        bodies: Collection[str] = (),
    ) -> tuple[set[str], list[tuple[str, dict[str, str], bytes]]]:
        found: list[tuple[str, dict[str, str], bytes]] = []
        feed, ids = stream_record_ids(cluster, names, durable, bodies, found)
        if feed != current:
            raise AdoptRefused(
                f"the record stream {names.name} was made again while adopt read it: run it again"
            )
        return ids, found

    with store.read() as r:
        holds_tokens = any(True for _ in r.applied_entries(tokenadopt.ISSUED)) or any(
            True for _ in r.applied_entries(tokenadopt.REVOKED)
        )
    published = unmade = 0
    unsigned: dict[str, bytes] = {}
    if holds_tokens and tokens is not None:
        with store.read() as r:
            unsigned = tokenadopt.unsigned(r, tokens.digests)
        if tokens.signer:
            # what the stream carries of them, read whole: a message under a token record's id
            # that says otherwise (another publisher's, which every node refuses) does not
            # stand for the record applied, which is published still
            with store.read() as r:
                kept = tokenadopt.kept_digests(r)
            _, there = read(kept)
            carried: set[str] = set()
            with store.read() as r:
                for rid, headers, payload in there:
                    item = decode(headers, payload, tokens.cipher)
                    if not isinstance(item, Located) or item.record.id != rid:
                        continue
                    digest = tokens.digests.of(item.record)
                    if digest == kept[rid] or (
                        rid in unsigned
                        and tokenadopt.signed_digest(r, tokens.digests, item.record, kept[rid])
                    ):
                        carried.add(rid)
            assert tokens.certificates is not None and tokens.sign is not None
            with store.read() as r:
                made = tokenadopt.held(
                    r, tokens.digests, tokens.certificates, tokens.sign,
                    skip=carried.__contains__,
                )  # fmt: skip
            unmade = made.unmade
            if made.records:
                publish(cluster, names, durable, tokens.cipher, made.records)
                published = len(made.records)
    on_stream, found = read(unsigned)
    rekeyed: dict[str, bytes] = {}
    if tokens is not None:
        with store.read() as r:
            for rid, headers, payload in found:
                item = decode(headers, payload, tokens.cipher)
                if rid in rekeyed or not isinstance(item, Located) or item.record.id != rid:
                    continue
                got = tokenadopt.signed_digest(r, tokens.digests, item.record, unsigned[rid])
                if got is not None:
                    rekeyed[rid] = got
    with store.read() as r:
        applied = missing = missing_tokens = 0
        for rid in r.applied_ids():
            applied += 1
            # release 1.5's unsigned revocation: its signed form (the signer's adopt), checked,
            # or a node replaying the new stream would refuse what this one applied
            if rid not in on_stream or (rid in unsigned and rid not in rekeyed):
                missing += 1
                missing_tokens += tokenadopt.is_token_id(rid)
        to_apply = sum(r.applied(rid) is None for rid in on_stream)
    why = missing_refusal(
        names.name, missing, applied, missing_tokens if holds_tokens else 0, unmade
    )
    if why is not None:
        raise AdoptRefused(why)
    with Commit(store) as c:  # the store held for writing since it was read: still ``side``
        dropped = c.adopt_feed(current)
        for rid, digest in rekeyed.items():
            c.rekey_applied(rid, digest)
    return Adopted(names.name, side.seq, applied, to_apply, dropped, published, len(rekeyed))


def publish(
    cluster: Cluster, names: StreamNames, durable: str, cipher: StreamCipher, records: list[Record]
) -> None:
    """Publish token records as the signer's builder does (`Consumer.publish_records`)."""
    Consumer(cluster, names, durable, cipher, create=False).publish_records(records)
