"""The changes feed's cursor: an opaque string naming a position in one store's feed, or in
the record stream every node of a service applies.

A cursor says "every loss of effect (失効) up to here has been read" in the store's
changes feed (`crlbuilder.store.format.DB_CHANGES`, read with
`crlbuilder.store.reader.StoreReader.changes`). It is URL-safe base64 (no padding) of::

    version 1 B (= 1) ‖ store id 16 B ‖ feed position (4 B: after a whole commit;
                                                       27 B: inside a commit)

The store id (`StoreReader.store_id`) ties it to one store: a cursor of another store,
or of a store rebuilt from the records (a new id, other commit numbers), is recognised
and refused instead of silently skipping or repeating changes. `judge` says whether a
cursor can be served by a view of the store: not issued by this service (400: malformed,
or a field no cursor of ours can hold: a boundary before commit 0, an inside position not
followed by the 0x00 `ChangeEntry.after` appends, or one naming a change the kept feed never
recorded), of another store or older than the feed's horizon (`StoreReader.changes_from`,
the retention: 410), or ahead of the store (a store restored from an older copy, or a
node bootstrapped from another's snapshot: 409). Each refusal tells the party how to
resynchronise. Pure: no I/O but the view's, no clock.

A store filled from the record stream (`crlbuilder.stream`; it names the stream,
`StoreReader.feed_id`) issues version 2 instead, valid on every node fed by that stream
(`StreamPosition`, read by `responder.v1.feedpos`)::

    version 1 B (= 2) ‖ feed id 16 B ‖ base u64 [‖ end u64 ‖ ordinal u8 ‖ status key 22 B]

"every change of the stream's batches ending at or before ``base`` is read" (8 bytes of
position), and, inside the batch ``base`` + 1 .. ``end``, "and of its commits, the first
``ordinal`` ones and, of the next, the changes up to this status key". Stream sequences are
the same on every node; commit numbers are not (a node's own commits, such as the token
issuer's, Act §38-3, are numbered among the stream's).

The answers carry either position bound to the party that read it (version 3, `seal`)::

    version 1 B (= 3) ‖ list generation 8 B ‖ n 1 B ‖ position n B (a version 1 or 2 one,
      as above) ‖ counted mark (a position of the same store or feed, without its version
      and id) ‖ tag 16 B

A cursor of one node's store (a version 1 position) also carries, after the mark and before
the tag, an anchor of the position and one of the mark (`Anchor`, 12 bytes each): the last
commit at or before each that recorded a change, and that commit's time. A store restored
from an older copy keeps its store id and numbers its next commits as the lost ones, written
later: the same position then names other changes. A position whose anchor the store no
longer holds is refused as ahead (409: the store went back), and a mark whose anchor it no
longer holds is not read (what it covered is counted again). A bound cursor of such a store
without anchors (issued before them) is read with its mark as its position.

The counted mark (`responder.v1.provision`) says up to where the changes delivered to the
party were counted in the ledger (帳簿, Act §40): a change at or before it is delivered again
when the position is before it, not counted again, as long as the party's watch list is
the one of the generation (`responder.v1.watchset.WatchSet.generation`: it changes when an
entry is added, and a change of a certificate added since was never delivered: the mark
does not cover it, so the mark is then not read). The tag is HMAC-SHA256, cut to 16 bytes,
over the party's id and every byte before it, under `WatchKeys.cursor_key` (derived from the
service's watch secret, the same on every node): a cursor altered (its position or mark), or
presented by another party, is refused (`Verdict.NOT_GENUINE`, 400) instead of read. A cursor
of version 1 or 2 (issued before cursors were bound) carries no mark and no tag; `unseal`
reads it as a position whose mark is itself, so it cannot spare a change from being counted,
and the answer carries a bound cursor; ``[watch] unbound_cursors`` off ends that transition
(docs/operations.md, "The changes feed's watch lists").

The cursor is not secret and carries no personal data: a commit number and a position
that names a status key (issuer index and serial) only when the read stopped inside a
commit, which the party was just told about; the party's id is in the tag, not in the
cursor.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from typing import Final, NamedTuple

from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader, changes_start

VERSION: Final = 1
STREAM_VERSION: Final = 2
_BOUNDARY_BYTES: Final = 1 + sf.STORE_ID_BYTES + 4
_INSIDE_BYTES: Final = 1 + sf.STORE_ID_BYTES + sf.CHANGE_KEY_BYTES + 1
_STREAM_BOUNDARY_BYTES: Final = 1 + sf.STORE_ID_BYTES + 8
_STREAM_INSIDE_BYTES: Final = _STREAM_BOUNDARY_BYTES + 8 + 1 + sf.KEY_BYTES
BOUND_VERSION: Final = 3
TAG_BYTES: Final = 16
_TAG_DOMAIN: Final = b"jpkiva changes cursor v3\x00"
GEN_BYTES: Final = 8
"""The watch list generation a bound cursor's mark is of (`WatchSet.generation`)."""
ANCHOR_BYTES: Final = 4 + 8
"""An `Anchor`: commit u32 ‖ time i64."""
_INSIDE_MARK: Final = _INSIDE_BYTES - 1 - sf.STORE_ID_BYTES + 2 * ANCHOR_BYTES
"""A store mark inside a commit, then the two anchors (`Anchor`): 51 bytes."""
MAX_CURSOR_CHARS: Final = 168
"""The longest cursor string (a bound stream cursor of 121 bytes is 162 base64 characters)."""


class Anchor(NamedTuple):
    """What ties a position of one node's store feed to the commits the store holds: the
    last commit at or before it that recorded a change (`StoreReader.last_change`), and
    when that commit was written; (0, 0) when the feed held none. A store restored from an
    older copy writes its next commits, of the same numbers, later (module docstring)."""

    commit: int
    at: int


NO_ANCHOR: Final = Anchor(0, 0)


def _through(position: Position) -> int:
    """The last commit whose changes ``position`` may have passed (all or some of)."""
    return position.commit if len(position.start) > 4 else position.commit - 1


def anchor(reader: StoreReader, position: Position) -> Anchor:
    """``position``'s anchor in ``reader``'s view."""
    got = reader.last_change(_through(position))
    return Anchor(*got) if got is not None else NO_ANCHOR


def holds(reader: StoreReader, position: Position, at: Anchor) -> bool:
    """Does the store still hold the commits ``position`` was anchored in (``at``)? Also when
    retention has dropped the anchor's commit since (and nothing after it up to there): the
    store then answers with its horizon and that commit's time (`StoreReader.last_change`),
    which must be the anchor's; only where that time is not kept (a horizon no prune moved
    since `sf.META_CHANGES_FROM_AT` was written) is an anchor at or before the horizon taken
    on trust."""
    now = anchor(reader, position)
    return now == at or (now == NO_ANCHOR and at.commit <= reader.changes_from())


def _pack_anchor(a: Anchor) -> bytes:
    return sf.pack_u32(a.commit) + sf.pack_i64(a.at)


def _unpack_anchor(raw: bytes) -> Anchor:
    return Anchor(sf.unpack_u32(raw[:4]), sf.unpack_i64(raw[4:]))


def pack_anchored(position: Position, at: Anchor) -> bytes:
    """A store position and its anchor, as a node keeps its counted mark."""
    return pack(position) + _pack_anchor(at)


def unpack_anchored(raw: bytes) -> tuple[Position, Anchor] | None:
    """What `pack_anchored` wrote, or None."""
    position = unpack(raw[:-ANCHOR_BYTES]) if len(raw) > ANCHOR_BYTES else None
    if not isinstance(position, Position):
        return None
    return position, _unpack_anchor(raw[-ANCHOR_BYTES:])


class Verdict(enum.Enum):
    """Why a cursor cannot be served, or that it can."""

    OK = "ok"
    MALFORMED = "malformed"
    """Not issued by this service: not a cursor, or a field none of ours can hold."""
    NEVER_RECORDED = "never_recorded"
    """Inside a commit the feed still keeps, at a change it never recorded: altered."""
    OTHER_STORE = "other_store"
    """Minted by another store (or one rebuilt from the records since)."""
    EXPIRED = "expired"
    """Older than the feed's horizon: some changes after it were pruned."""
    AHEAD = "ahead"
    """After the store's last commit: the store went back (restored from a copy)."""
    NOT_GENUINE = "not_genuine"
    """A bound cursor whose tag does not match: altered, or issued to another party."""


class Position(NamedTuple):
    store_id: bytes
    start: bytes
    """The feed position to read from (`StoreReader.changes`'s ``start``)."""

    @property
    def commit(self) -> int:
        """The commit the position is in (or the first one not read yet, after a boundary)."""
        return sf.unpack_u32(self.start[:4])


class Inside(NamedTuple):
    """Where a read stopped inside one batch of the record stream (`StreamPosition`)."""

    end: int
    """The batch's last stream sequence."""
    ordinal: int
    """Which of the batch's commits that hold changes (0: its first) the read stopped in."""
    key: bytes
    """The status key of the last change read in that commit."""


class StreamPosition(NamedTuple):
    """A position in the changes of the record stream (version 2; module docstring)."""

    feed_id: bytes
    base: int
    """Every change of the stream's batches ending at or before it is read."""
    inside: Inside | None = None
    """And this much of the batch after ``base``."""


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pack(position: Position | StreamPosition) -> bytes:
    """The bytes of a position (version 1 or 2, module docstring)."""
    if isinstance(position, Position):
        return bytes((VERSION,)) + _id(position.store_id) + position.start
    raw = bytes((STREAM_VERSION,)) + position.feed_id + sf.pack_u64(position.base)
    if position.inside is not None:
        i = position.inside
        raw += sf.pack_u64(i.end) + bytes((i.ordinal,)) + i.key
    return raw


def encode_stream(position: StreamPosition) -> str:
    """An unbound version 2 cursor (`seal` makes the ones the answers carry)."""
    return _text(pack(position))


def _raw(cursor: str) -> bytes | None:
    """The bytes of a cursor in its one spelling (no padding, no stray bits), else None."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cursor:
        return None
    return raw


def decode_any(cursor: str) -> Position | StreamPosition | None:
    """The position an unbound cursor of either version names, or None when it is not one."""
    raw = _raw(cursor)
    return unpack(raw) if raw is not None else None


def unpack(raw: bytes) -> Position | StreamPosition | None:
    """The position of version 1 or 2 in ``raw`` (`pack`), or None when it is not one."""
    if not raw:
        return None
    if raw[0] == VERSION:
        return _unpack_store(raw)
    if raw[0] != STREAM_VERSION or len(raw) not in (_STREAM_BOUNDARY_BYTES, _STREAM_INSIDE_BYTES):
        return None
    feed = raw[1 : 1 + sf.STORE_ID_BYTES]
    at = 1 + sf.STORE_ID_BYTES
    base = sf.unpack_u64(raw[at : at + 8])
    if len(raw) == _STREAM_BOUNDARY_BYTES:
        return StreamPosition(feed, base)
    end, ordinal, key = sf.unpack_u64(raw[at + 8 : at + 16]), raw[at + 16], raw[at + 17 :]
    if end <= base:
        return None  # a batch ends after the sequence before it
    return StreamPosition(feed, base, Inside(end, ordinal, key))


def _id(reader_id: bytes) -> bytes:
    """The 16-byte id a cursor carries (zeros for a store that has none yet)."""
    return reader_id if len(reader_id) == sf.STORE_ID_BYTES else bytes(sf.STORE_ID_BYTES)


def encode(store_id: bytes, start: bytes) -> str:
    """An unbound version 1 cursor (`seal` makes the ones the answers carry)."""
    return _text(pack(Position(store_id, start)))


def at_commit(reader: StoreReader) -> Position:
    """The position after every change of the view's commit: where a party that has just
    read the status of its whole list (POST /v1/status, the same commit) starts."""
    return Position(_id(reader.store_id()), changes_start(reader.generation().commit))


def decode(cursor: str) -> Position | None:
    """The position an unbound version 1 cursor names, or None when it is not one."""
    raw = _raw(cursor)  # one cursor, one spelling (no padding, no stray bits)
    return _unpack_store(raw) if raw is not None else None


def _unpack_store(raw: bytes) -> Position | None:
    if len(raw) not in (_BOUNDARY_BYTES, _INSIDE_BYTES) or raw[0] != VERSION:
        return None
    start = raw[1 + sf.STORE_ID_BYTES :]
    if len(start) == 4 and start == bytes(4):
        return None  # the boundary before commit 0: `changes_start` is never below commit 1
    if len(start) > 4 and start[-1] != 0:
        return None  # `ChangeEntry.after` ends in 0x00
    return Position(raw[1 : 1 + sf.STORE_ID_BYTES], raw[1 + sf.STORE_ID_BYTES :])


def judge(position: Position | None, reader: StoreReader, at: Anchor | None = None) -> Verdict:
    """Can ``reader`` serve the changes after ``position`` exactly (module docstring)?
    ``at``: the position's anchor, when the cursor carries one."""
    if position is None:
        return Verdict.MALFORMED
    if position.store_id != _id(reader.store_id()):
        return Verdict.OTHER_STORE
    if position.start < changes_start(reader.changes_from()):
        return Verdict.EXPIRED
    if position.start > changes_start(reader.generation().commit):
        return Verdict.AHEAD
    if at is not None and not holds(reader, position, at):
        return Verdict.AHEAD  # restored from an older copy: its commits since are others
    if len(position.start) > 4:  # inside a kept commit: the change it follows is recorded
        entry = position.start[:-1]
        first = next(iter(reader.changes(entry)), None)
        if first is None or sf.change_key(first.commit, first.key) != entry:
            return Verdict.NEVER_RECORDED
    return Verdict.OK


# --- bound cursors (version 3) -----------------------------------------------------------


class Bound(NamedTuple):
    """What a cursor says: where to read from, and up to where the changes delivered to the
    party were counted (`responder.v1.provision`)."""

    position: Position | StreamPosition
    mark: Position | StreamPosition
    """Of the same kind and store (or feed) as ``position``."""
    bound: bool = True
    """False for a cursor of version 1 or 2 (issued before cursors were bound)."""
    gen: bytes = bytes(GEN_BYTES)
    """The generation of the party's watch list the mark was counted under: read only while
    the list is still of it (`responder.v1.watchset.WatchSet.generation`)."""
    anchors: tuple[Anchor, Anchor] | None = None
    """Of a store position: the position's and the mark's `Anchor`; None for a stream
    position, an unbound cursor, or a bound one issued before anchors."""


def _tag(key: bytes, party: str, body: bytes) -> bytes:
    who = party.encode()
    msg = _TAG_DOMAIN + len(who).to_bytes(2, "big") + who + body
    return hmac.new(key, msg, hashlib.sha256).digest()[:TAG_BYTES]


def seal(key: bytes, party: str, bound: Bound) -> str:
    """The cursor of ``bound`` for ``party``, tagged under ``key`` (`WatchKeys.cursor_key`)."""
    position, mark = pack(bound.position), pack(bound.mark)
    if mark[: 1 + sf.STORE_ID_BYTES] != position[: 1 + sf.STORE_ID_BYTES]:
        raise ValueError("a counted mark is of the position's store or feed")
    if len(bound.gen) != GEN_BYTES:
        raise ValueError(f"a watch list generation is {GEN_BYTES} bytes")
    head = bytes((BOUND_VERSION,)) + bound.gen + bytes((len(position),))
    body = head + position + mark[1 + sf.STORE_ID_BYTES :]
    if bound.anchors is not None:
        if not isinstance(bound.position, Position):
            raise ValueError("only a position of one node's store has anchors")
        body += _pack_anchor(bound.anchors[0]) + _pack_anchor(bound.anchors[1])
    return _text(body + _tag(key, party, body))


def unseal(key: bytes, party: str, cursor: str) -> Bound | Verdict:
    """What ``party``'s cursor says, or why it is not one of its own (`Verdict.MALFORMED`,
    `Verdict.NOT_GENUINE`). A cursor of version 1 or 2 is read with its position as mark."""
    raw = _raw(cursor)
    if raw is None or not raw:
        return Verdict.MALFORMED
    if raw[0] != BOUND_VERSION:
        old = unpack(raw)
        return Bound(old, old, bound=False) if old is not None else Verdict.MALFORMED
    start = 2 + GEN_BYTES
    if len(raw) < start + TAG_BYTES:
        return Verdict.MALFORMED
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, party, body)):
        return Verdict.NOT_GENUINE
    gen, n = body[1 : 1 + GEN_BYTES], body[1 + GEN_BYTES]
    position = unpack(body[start : start + n])
    rest, anchors = body[start + n :], None
    if isinstance(position, Position) and len(rest) in (4 + 2 * ANCHOR_BYTES, _INSIDE_MARK):
        cut = len(rest) - 2 * ANCHOR_BYTES
        rest, tail = rest[:cut], rest[cut:]
        anchors = (_unpack_anchor(tail[:ANCHOR_BYTES]), _unpack_anchor(tail[ANCHOR_BYTES:]))
    mark = unpack(body[start : start + 1 + sf.STORE_ID_BYTES] + rest)
    if position is None or mark is None or type(position) is not type(mark):
        return Verdict.MALFORMED  # tagged by this service: not one it writes
    return Bound(position, mark, gen=gen, anchors=anchors)
