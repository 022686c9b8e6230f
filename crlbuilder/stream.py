"""The record stream: record files (失効情報, 発行記録...) on one NATS JetStream stream, in order.

A source of records beside the files and the spool directory (`crlbuilder.ingest`,
`crlbuilder.build`): `crlbuilder publish` puts each line of a record file on the stream,
and every node's `crlbuilder build --source nats://...` applies the stream in order to its
own store. One stream, replicated by the cluster (three copies on three servers), so every
node sees the same records in the same order and a node may die and resume.

What a message is (`message`): one line of a record file, sealed (below), with headers

- ``Nats-Msg-Id``: the publication's id (random, one per `publish` call), the line's place in
  it (the file's index among the call's files, the line number) and the record id, so that
  JetStream drops a message its publisher sends again within its duplicate window (an
  acknowledgement lost, the rest of the window sent one by one) and no other line: two lines
  of one publication under one record id are both stored, and every node judges the second
  (skipped when it says the same, refused when it reuses the id for another record,
  `crlbuilder.recorddigest`); a line with no readable id is named by a digest of its file,
  line number and bytes; a token record of the signer's builder by its id and a digest of its
  bytes (`token_msg_id`). A record published again by
  another call is stored again: it may have been refused (a revocation read before its
  issuance, quarantined), and docs/records.md has the operator feed it again once what it
  needs is applied; the record id alone would have JetStream drop it for a day. A record
  applied already is skipped by every node's ``applied`` record ids, as from a file;
- ``Jpki-Id``: the record id (a line with a readable one, a token record), for
  `crlbuilder.streamadopt`;
- ``Jpki-File``, ``Jpki-Line``: where the line was (the file's name, not its path), so a refusal
  is quarantined on every node as it would be from the file;
- ``Jpki-End``: the last line of a batch: every ``batch_size`` lines of a file (the publisher's
  ``input.batch_size``, at most `MAX_BATCH`) and its last line;
- ``Jpki-Release``: the release of the publisher (`crlbuilder.release`), on ticks too: a node of
  an older release stops before a batch that holds a message of a newer one (upgrade order:
  docs/operations.md); the stream's first message of release 1.6 or later sets a flag in every
  node's store, from which an unsigned token revocation is refused (`token_signatures`), and
  its first message of release 1.7 or later another, from which records are judged by rules 7
  (`rules7_from`), and of release 1.8 or later a third, for rules 8 (`rules8_from`), and of
  release 1.9 or later a fourth, for rules 9 (`rules9_from`: consents, and their erasure);
- ``Jpki-Release-Mac``: an HMAC of the message id and ``Jpki-Release`` under a key derived
  from the facts key (`StreamCipher.release_mac`). A node believes a release newer than its
  own (or one it cannot read) only with it (`vouched_release`): the header is not sealed, and
  a tick has no payload, so without it anyone who may publish on the record subject (the
  signer node's NATS seed alone) could stop every node at one message for good; an unvouched
  claim is read as a message with no header (a tick then a tick, a record refused by its
  seal as any unopened message). Releases before this one wrote no MAC, but claimed none
  newer than this one.

Batches follow the stream, not the timing (`Batcher`): a node commits one LMDB transaction
per batch, cut where the publisher marked an end (or after ``batch_size`` unmarked lines),
whatever each node's own configuration says,
so two nodes that applied the same prefix of the stream made the same commits and their
status records carry the same versions: their stores hold the same bytes. Only a batch
whose publisher died before marking its end is cut by time (``tail_wait``), which is the
one case where two nodes may cut it differently (a rerun of the publisher marks it).

The stream is the nodes' clock too. Writes that time alone makes due are dated by the
stream, not by each node's clock, or two nodes would write them at different positions:
before applying a batch, a node writes the 30-day move-out lapses (異動等失効情報, Act
§31(2)) due by the time JetStream stored the batch's last message (`Delivered.at`, the
stream leader's clock, replicated with the message), and at a tick (a message with no
record) it also erases what passed its retention (Ord §70(1)(iii)). One node (the CRL
signer, ``stream.tick_seconds``) publishes ticks periodically and when a lapse or an
erasure falls due (00:00 JST after a retention period's last day), so both are written on
every node at the same stream position, at the tick of their due instant. Both steps are idempotent as of an instant, so a node killed between them and
the batch's commit repeats them as no-ops.

At least once, applied once: a node acknowledges a batch (AckAll on its last message) only
after its LMDB commit, which also records the batch's last stream sequence
(`Commit.put_stream_seq`). The store, not the consumer, says where to resume: on start the
node's durable consumer is recreated to deliver from the store's sequence + 1 unless it
already stands there, and anything delivered again is skipped by sequence; a record seen
twice (republished past the duplicate window) is skipped by the store's ``applied`` record
ids. A node killed at any point therefore resumes without loss and without applying a
record twice.

The stream is kept whole until a compaction (`crlbuilder.recordcompact`, after each store
snapshot) purges the messages the latest snapshot holds, less a tail: a record erased past
its retention does not stay on the stream for ever. A node whose store stands before the
stream's first message then starts from the snapshot (`crlbuilder.build` refuses the stream).

The four facts (基本4情報) travel on issuance records and must not rest in clear (Act §44,
§45): each payload is sealed with AES-256-GCM under a key derived from the facts key
(`StreamCipher`; every node holds that key already, to seal the facts in its store), with
the message id as associated data, so neither the servers' files nor the wire hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.aio.msg import Msg
from nats.js import api

from crlbuilder import jetstream, release
from crlbuilder.ingest import (
    MAX_LINE,
    TOKEN_SOURCE,
    Located,
    Rejected,
    decode_item,
    lines,
    record_id,
)
from crlbuilder.jetstream import Cluster, ClusterError
from crlbuilder.model import Record
from crlbuilder.tokenrevocation import TokenSignatures

H_ID: Final = "Nats-Msg-Id"
H_RECORD: Final = "Jpki-Id"
H_FILE: Final = "Jpki-File"
H_LINE: Final = "Jpki-Line"
H_END: Final = "Jpki-End"
H_TOO_LONG: Final = "Jpki-Too-Long"
H_TICK: Final = "Jpki-Tick"
H_RELEASE_MAC: Final = "Jpki-Release-Mac"

_NONCE: Final = 12

MAX_BATCH: Final = 100_000
"""The most lines one consumer batch holds when no end mark comes: a constant of the stream,
not of a node's configuration, so every node cuts the same batches."""


class StreamCipher:
    """Seals record lines on the stream (AES-256-GCM, key derived from the facts key).

    The nonce is derived from the message id and the line (HMAC), so a republished record is
    the same bytes and no (key, nonce) pair seals two different lines.
    """

    def __init__(self, facts_key: bytes) -> None:
        self._key = hmac.new(facts_key, b"jpki-va record stream v1", hashlib.sha256).digest()
        self._aead = AESGCM(self._key)

    def seal(self, msg_id: str, line: bytes) -> bytes:
        nonce = hmac.new(self._key, msg_id.encode() + b"\0" + line, hashlib.sha256).digest()
        nonce = nonce[:_NONCE]
        return nonce + self._aead.encrypt(nonce, line, msg_id.encode())

    def release_mac(self, msg_id: str, claimed: str) -> str:
        """The ``Jpki-Release-Mac`` of a message ``msg_id`` naming release ``claimed``."""
        key = hmac.new(self._key, b"release header", hashlib.sha256).digest()
        text = msg_id.encode() + b"\0" + claimed.encode()
        return hmac.new(key, text, hashlib.sha256).hexdigest()

    def open(self, msg_id: str, sealed: bytes) -> bytes:
        """The line; raises `ValueError` when the payload was not sealed under this key."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], msg_id.encode())
        except (InvalidTag, ValueError):
            raise ValueError(
                "a stream message that does not open with this node's facts key "
                "(another key, or altered)"
            ) from None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: its headers and sealed payload."""

    msg_id: str
    headers: dict[str, str]
    payload: bytes


def messages(
    path: Path, cipher: StreamCipher, batch_size: int, publication: str = ""
) -> Iterator[Outgoing]:
    """The messages of one record file, in line order (blank lines are skipped), their ids
    prefixed with ``publication`` (one per `publish` call and file: see the module docstring)
    and, with one, the line number (a record id may come twice in a file)."""
    batch_size = min(batch_size, MAX_BATCH)
    name = path.name
    with path.open("rb") as f:  # a line too long is None, never held whole (`ingest.lines`)
        todo = [(n, line) for n, line in lines(f) if line is None or line.strip()]
    for i, (n, line) in enumerate(todo, start=1):
        too_long = line is None
        record = None if line is None else record_id(line)
        if record is None:
            digest = hashlib.sha256(f"{name}\0{n}\0".encode() + (line or b"")).hexdigest()[:32]
            rid = f"{publication}line:{digest}"
        else:
            rid = f"{publication}{n}:{record}" if publication else record
        headers = {H_ID: rid, H_FILE: name, H_LINE: str(n), **release_headers(rid, cipher)}
        if record is not None:
            headers[H_RECORD] = record
        if i % batch_size == 0 or i == len(todo):
            headers[H_END] = "1"
        if too_long:
            headers[H_TOO_LONG] = "1"
        yield Outgoing(rid, headers, cipher.seal(rid, b"" if line is None else line))


def record_messages(records: list[Record], cipher: StreamCipher) -> list[Outgoing]:
    """The messages of records a builder writes itself (the signer's token records,
    `crlbuilder.tokens`): one batch, each sealed and named by its record id like a file's line,
    so a record published twice (a refresh that ran again before the first was applied) is
    dropped by JetStream within its duplicate window, and skipped by its id past it.

    The message id is the record id and a digest of the record (`token_msg_id`): the same
    record twice is one message, but a message of that record id with other content (a forgery
    by another publisher on the stream, which every node refuses, `crlbuilder.tokencert`) does
    not make JetStream drop the signer's own record for the whole duplicate window."""
    out = []
    for n, rec in enumerate(records, start=1):
        line = msgspec.json.encode(rec)
        msg_id = token_msg_id(rec.id, line)
        headers = {
            H_ID: msg_id, H_RECORD: rec.id, H_FILE: TOKEN_SOURCE, H_LINE: str(n),
            **release_headers(msg_id, cipher),
        }  # fmt: skip
        if n == len(records):
            headers[H_END] = "1"
        out.append(Outgoing(msg_id, headers, cipher.seal(msg_id, line)))
    return out


def token_msg_id(record_id: str, line: bytes) -> str:
    """The ``Nats-Msg-Id`` of a token record's message: its id and a digest of its bytes."""
    return f"{record_id}#{hashlib.sha256(line).hexdigest()[:32]}"


def message_record_id(headers: dict[str, str]) -> str | None:
    """The record id a message carries, from its headers only (None: a tick, or a line with no
    readable id): its ``Jpki-Id``; else, from a publisher before that header, its message id (a
    file's line: the record id), or a token record's message id's record id (`token_msg_id`,
    from a signer before token records carried it)."""
    if headers.get(H_TICK):
        return None
    rid = headers.get(H_RECORD)
    if rid:
        return rid
    msg_id = headers.get(H_ID)
    if not msg_id:
        return None
    if headers.get(H_FILE) == TOKEN_SOURCE:
        return msg_id.partition("#")[0] or None
    return msg_id


def tick_message(at: datetime, cipher: StreamCipher | None = None) -> Outgoing:
    """A tick: no record, the stream's time moving on (see the module docstring); its release
    vouched for by ``cipher`` (`release_headers`) when given."""
    msg_id = f"tick:{int(at.timestamp())}"
    rel = (
        {release.HEADER: str(release.CURRENT)}
        if cipher is None
        else release_headers(msg_id, cipher)
    )
    headers = {H_ID: msg_id, H_TICK: "1", H_END: "1", **rel}
    return Outgoing(msg_id, headers, b"")


def release_headers(msg_id: str, cipher: StreamCipher) -> dict[str, str]:
    """``Jpki-Release`` (this release) and its ``Jpki-Release-Mac`` for the message ``msg_id``."""
    claimed = str(release.CURRENT)
    return {release.HEADER: claimed, H_RELEASE_MAC: cipher.release_mac(msg_id, claimed)}


def vouched_release(headers: dict[str, str], cipher: StreamCipher) -> str | None:
    """The release a message's headers name, as this node may believe it: a release not newer
    than its own as it comes (what releases before the MAC wrote); a newer one, or one that
    cannot be read, only with its ``Jpki-Release-Mac`` under this node's stream key; else None
    (read as a message of a release before the header: see the module docstring)."""
    claimed = headers.get(release.HEADER)
    if claimed is None:
        return None
    try:
        if not release.parse(claimed).newer_than(release.CURRENT):
            return claimed
    except release.ReleaseError:
        pass
    mac = headers.get(H_RELEASE_MAC, "")
    want = cipher.release_mac(headers.get(H_ID, ""), claimed)
    return claimed if hmac.compare_digest(mac.encode(), want.encode()) else None


def decode(
    headers: dict[str, str], payload: bytes, cipher: StreamCipher
) -> Located | Rejected | None:
    """One message back to what the file would have given (a record or a refusal); None for
    a tick."""
    if headers.get(H_TICK):
        return None
    source = headers.get(H_FILE, "stream")
    try:
        n = int(headers.get(H_LINE, "0"))
    except ValueError:
        n = 0
    if headers.get(H_TOO_LONG):
        return Rejected(source, n, f"line longer than {MAX_LINE} bytes")
    msg_id = headers.get(H_ID, "")
    try:
        line = cipher.open(msg_id, payload)
    except ValueError as e:
        return Rejected(source, n, str(e))
    return decode_item(source, n, line, replayed=True)  # as earlier releases applied it


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message as a consumer received it."""

    seq: int
    """Its stream sequence."""
    item: Located | Rejected | None
    """The record or refusal; None for a tick."""
    at: datetime
    """When the stream stored it (the stream leader's clock, the same on every node)."""
    end: bool
    """The publisher marked it the last of a batch."""
    pending: int
    """Messages of the stream after it, not yet delivered to this consumer."""
    msg: Msg | None = None
    release: str | None = None
    """The publisher's release (the ``Jpki-Release`` header; None: a release before it)."""


def refusal(batch: list[Delivered]) -> str | None:
    """Why this node must not apply ``batch`` (`crlbuilder.release.refusal` of its first
    message from a release it cannot apply), or None."""
    taken: set[str | None] = set()  # a batch's messages mostly name one release: judged once
    for d in batch:
        if d.release in taken:
            continue
        what = "a tick" if d.item is None else "a record message"
        reason = release.refusal(f"{what} of the record stream (sequence {d.seq})", d.release)
        if reason is not None:
            return reason
        taken.add(d.release)
    return None


def first_of(batch: list[Delivered], first: release.Release) -> release.FirstOf:
    """Where ``batch``'s first message written by release ``first`` or a later one (a tick as a
    record: the message's ``Jpki-Release``) stands. The stream's order, not its batches,
    decides: two nodes that cut the stream otherwise judge each record alike. An unreadable
    release is not that one (a batch holding one is refused before, `refusal`)."""
    records = 0
    older: set[str | None] = set()  # a batch's messages mostly name one release: judged once
    for d in batch:
        if d.release not in older:
            try:
                met = not first.newer_than(release.parse(d.release))
            except release.ReleaseError:
                met = False
            if met:
                return release.FirstOf(records, d.seq)
            older.add(d.release)
        records += d.item is not None
    return release.FirstOf(records, None)


def token_signatures(batch: list[Delivered]) -> TokenSignatures:
    """Where ``batch``'s first message written by a release that signs token revocations
    (`release.SIGNS_TOKEN_REVOCATIONS` or later: `first_of`) stands."""
    where = first_of(batch, release.SIGNS_TOKEN_REVOCATIONS)
    return TokenSignatures(where.before, where.first)


def rules7_from(batch: list[Delivered]) -> release.FirstOf:
    """Where ``batch``'s first message of release 1.7 or later (`release.RULES_7`: `first_of`)
    stands: the records from it on are judged by rules 7."""
    return first_of(batch, release.RULES_7)


def rules8_from(batch: list[Delivered]) -> release.FirstOf:
    """Where ``batch``'s first message of release 1.8 or later (`release.RULES_8`: `first_of`)
    stands: the records from it on are judged by rules 8."""
    return first_of(batch, release.RULES_8)


def rules9_from(batch: list[Delivered]) -> release.FirstOf:
    """Where ``batch``'s first message of release 1.9 or later (`release.RULES_9`: `first_of`)
    stands: the records from it on are judged by rules 9, and the erasures after its batch erase
    consents (`crlbuilder.consentkept`)."""
    return first_of(batch, release.RULES_9)


@dataclass
class Batcher:
    """Cuts the delivered messages into batches by the stream alone (sans-I/O).

    ``after`` is the last sequence already committed: what is delivered at or before it
    (delivered again) is skipped. A batch ends at a message marked ``end`` or when it holds
    ``batch_size`` messages.
    """

    after: int
    batch_size: int
    items: list[Delivered] = field(default_factory=list)

    def add(self, d: Delivered) -> list[Delivered] | None:
        """Take one delivered message; the batch it completes, if any."""
        last = self.items[-1].seq if self.items else self.after
        if d.seq <= last:
            return None
        self.items.append(d)
        if d.end or len(self.items) >= self.batch_size:
            return self.cut()
        return None

    def cut(self) -> list[Delivered]:
        """The batch so far (the tail of a publisher that stopped before its end)."""
        out, self.items = self.items, []
        if out:
            self.after = out[-1].seq
        return out


def feed_id(name: str, created: datetime) -> bytes:
    """The 16 bytes naming one record stream (`store.format.META_FEED_ID`): its name and when
    it was created, so a stream deleted and made again under the same name (its sequences
    starting over) is another feed."""
    text = f"{name}\0{created.astimezone(UTC).isoformat()}".encode()
    return hashlib.blake2b(text, digest_size=16, person=b"jpkiva-feed-id").digest()


@dataclass(frozen=True, slots=True)
class StreamNames:
    name: str
    subject: str
    replicas: int = 0
    duplicate_window_seconds: int = 86_400


def current_feed_id(cluster: Cluster, name: str) -> bytes | None:
    """The `feed_id` of the stream ``name`` as it stands (None: there is no such stream)."""
    got = feed_and_first(cluster, name)
    return None if got is None else got[0]


def feed_and_first(cluster: Cluster, name: str) -> tuple[bytes, int] | None:
    """The `feed_id` of the stream ``name`` and the first sequence it holds, as one answer of
    JetStream (None: there is no such stream)."""

    async def go() -> tuple[bytes, int] | None:
        try:
            info = await cluster.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
        if info.created is None:
            raise ClusterError(f"stream {name}: JetStream gave no creation time")
        return feed_id(name, info.created), int(info.state.first_seq)

    try:
        return cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"stream {name}: {e}") from None


def default_durable() -> str:
    """``node-`` and the host name, in the characters a consumer name may hold."""
    return "node-" + re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]


@dataclass
class PublishReport:
    published: int = 0
    duplicates: int = 0
    """Messages JetStream dropped as already on the stream (same record id)."""
    last_seq: int = 0


def ensure_stream(cluster: Cluster, names: StreamNames, *, create: bool = True) -> None:
    """Create the record stream when it does not exist (an existing one is left as it is);
    not ``create``: `crlbuilder.jetstream.StreamMissing` then (a builder reads it only)."""
    jetstream.ensure_stream(
        cluster, names.name, [names.subject], replicas=names.replicas,
        duplicate_window_seconds=names.duplicate_window_seconds, create=create,
    )  # fmt: skip


def publish(
    cluster: Cluster,
    names: StreamNames,
    paths: list[Path],
    cipher: StreamCipher,
    *,
    batch_size: int,
    window: int = 256,
    retry_seconds: float = 30.0,
) -> PublishReport:
    """Publish every line of ``paths`` in order; returns once JetStream has stored them all.

    Up to ``window`` messages wait for their acknowledgement at once (one connection,
    published in order). When an acknowledgement does not come (a server of the cluster
    lost, the stream electing a new leader), the rest of the window is published again one
    by one, retried for up to ``retry_seconds``: what JetStream had stored is dropped as a
    duplicate by its id, so nothing is stored twice; but a line lost in that instant lands
    after the lines of its window that were stored (every node applies that same order; a
    record applied before what it needs is quarantined, as from a file in that order).
    Failing past it raises `ClusterError`: publishing the same files again is safe.
    """
    ensure_stream(cluster, names)
    report = PublishReport()
    publication = f"p{secrets.token_hex(8)}:"  # this call's: its own retries are dropped

    def count(ack: api.PubAck) -> None:
        if ack.duplicate:
            report.duplicates += 1
        else:
            report.published += 1
        report.last_seq = max(report.last_seq, ack.seq)

    async def one_by_one(m: Outgoing) -> api.PubAck:
        """Publish ``m`` alone, retried while the stream elects a new leader (a server
        lost); a repeat of a message JetStream stored is dropped by its id."""
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                return await cluster.js.publish(
                    names.subject, m.payload, timeout=2, stream=names.name, headers=dict(m.headers)
                )
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def go() -> None:
        window_msgs: list[tuple[Outgoing, asyncio.Future[api.PubAck]]] = []

        async def settle() -> None:
            for i, (_, fut) in enumerate(window_msgs):
                try:
                    ack = await asyncio.wait_for(fut, 5)
                except (nats.errors.Error, TimeoutError):
                    for _, f in window_msgs[i:]:
                        f.cancel()
                    for m2, _ in window_msgs[i:]:
                        count(await one_by_one(m2))
                    break
                count(ack)
            window_msgs.clear()

        for k, p in enumerate(paths):
            for m in messages(p, cipher, batch_size, f"{publication}{k}:"):
                try:
                    fut = await cluster.js.publish_async(
                        names.subject, m.payload, headers=dict(m.headers), stream=names.name
                    )
                except (nats.errors.Error, TimeoutError):
                    await settle()
                    count(await one_by_one(m))
                    continue
                window_msgs.append((m, fut))
                if len(window_msgs) >= window:
                    await settle()
        await settle()

    try:
        cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"publishing to {names.name}: {e}") from None
    return report


class Consumer:
    """This node's durable pull consumer on the stream (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        names: StreamNames,
        durable: str,
        cipher: StreamCipher,
        *,
        ack_wait_seconds: float = 300,
        create: bool = True,
    ) -> None:
        """``create``: make the stream when it does not exist (the signer, which publishes
        its ticks there); a builder only reads it (`ensure_stream`)."""
        self.cluster = cluster
        self.create = create
        self.names = names
        self.durable = durable
        self.cipher = cipher
        self.ack_wait = ack_wait_seconds
        self._sub: nats.js.JetStreamContext.PullSubscription | None = None

    def open(self, after: int) -> None:
        """Deliver from ``after`` + 1: reuse the consumer when it stands there, else recreate it."""
        ensure_stream(self.cluster, self.names, create=self.create)
        js, stream, durable = self.cluster.js, self.names.name, self.durable

        async def go() -> nats.js.JetStreamContext.PullSubscription:
            try:
                info = await js.consumer_info(stream, durable)
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                delivered = info.delivered.stream_seq if info.delivered else 0
                if (
                    floor != after
                    or delivered != after
                    or info.config.ack_policy != api.AckPolicy.ALL
                ):
                    await js.delete_consumer(stream, durable)
                    raise nats.js.errors.NotFoundError
            except nats.js.errors.NotFoundError:
                cfg = api.ConsumerConfig(
                    durable_name=durable,
                    deliver_policy=(
                        api.DeliverPolicy.BY_START_SEQUENCE if after else api.DeliverPolicy.ALL
                    ),
                    opt_start_seq=after + 1 if after else None,
                    ack_policy=api.AckPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=-1,
                    filter_subject=self.names.subject,
                )
                await js.add_consumer(stream, cfg)
            return await js.pull_subscribe_bind(durable=durable, stream=stream)

        old, self._sub = self._sub, None
        if old is not None:  # opened again: the previous subscription goes
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                self.cluster.run(old.unsubscribe())
        try:
            self._sub = self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"consumer {durable} on {stream}: {e}") from None

    def fetch(self, n: int, timeout: float) -> list[Delivered]:
        """Up to ``n`` messages, waiting at most ``timeout`` seconds; [] when none came."""
        assert self._sub is not None, "open() first"
        sub = self._sub

        async def go() -> list[Msg]:
            try:
                return await sub.fetch(batch=n, timeout=timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                return []

        out = []
        try:
            msgs = self.cluster.run(go())
        except nats.errors.Error as e:
            raise ClusterError(f"consumer {self.durable} on {self.names.name}: {e}") from None
        for m in msgs:
            md = m.metadata
            headers = dict(m.headers or {})
            out.append(
                Delivered(
                    seq=md.sequence.stream,
                    item=decode(headers, m.data, self.cipher),
                    at=md.timestamp.astimezone(UTC),
                    end=bool(headers.get(H_END)),
                    pending=md.num_pending,
                    msg=m,
                    release=vouched_release(headers, self.cipher),
                )
            )
        return out

    def ack(self, last: Delivered) -> None:
        """Everything up to ``last`` is committed (AckAll)."""
        if last.msg is None:
            return
        msg = last.msg
        # A lost acknowledgement costs nothing: the commit holds, and the next start resumes
        # from the store's sequence, skipping what is delivered again.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            self.cluster.run(msg.ack_sync(timeout=5))

    def tick(self, at: datetime) -> None:
        """Publish a tick as of ``at`` (one per second at most: a tick's id is its second)."""
        m = tick_message(at, self.cipher)

        async def go() -> None:
            await self.cluster.js.publish(
                self.names.subject, m.payload, headers=m.headers, stream=self.names.name
            )

        try:
            self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"tick on {self.names.name}: {e}") from None

    def publish_records(self, records: list[Record], retry_seconds: float = 30.0) -> None:
        """Publish records this builder wrote (`record_messages`), in order, each stored by
        JetStream before the next is sent (retried while the stream elects a new leader);
        `ClusterError` when the stream did not take them: publishing them again is safe."""
        if not records:
            return
        todo = record_messages(records, self.cipher)

        async def go() -> None:
            for m in todo:
                deadline = time.monotonic() + retry_seconds
                while True:
                    try:
                        await self.cluster.js.publish(
                            self.names.subject, m.payload, timeout=2, stream=self.names.name,
                            headers=dict(m.headers),
                        )  # fmt: skip
                        break
                    except (nats.errors.Error, TimeoutError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.25)

        try:
            self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"token records on {self.names.name}: {e}") from None

    def feed_id(self) -> bytes:
        """The stream's `feed_id` (from its name and creation instant, as JetStream keeps them)."""
        got = current_feed_id(self.cluster, self.names.name)
        if got is None:
            raise ClusterError(f"stream {self.names.name}: not found")
        return got

    def first_seq(self) -> int:
        """The first sequence the stream still holds (its last + 1 when it holds none; 0 or 1
        for one that never held any)."""

        async def go() -> int:
            return int((await self.cluster.js.stream_info(self.names.name)).state.first_seq)

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"stream {self.names.name}: {e}") from None

    def last_seq(self) -> int:
        """The stream's last sequence (what a caught-up node has applied)."""
        return self.head()[0]

    def head(self) -> tuple[int, bytes]:
        """The stream's last sequence and its `feed_id`, as one answer of JetStream: a stream
        made again under the name shows in the second even when the first did not go back."""

        async def go() -> tuple[int, bytes]:
            info = await self.cluster.js.stream_info(self.names.name)
            if info.created is None:
                raise ClusterError(f"stream {self.names.name}: JetStream gave no creation time")
            return int(info.state.last_seq), feed_id(self.names.name, info.created)

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"stream {self.names.name}: {e}") from None
