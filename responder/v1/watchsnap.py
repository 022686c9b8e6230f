"""Compaction of the watch stream: the lists as of one operation, sealed, then the operations
before it purged (`responder.v1.watchlog` is the log this shortens).

The watch stream (``JPKI_WATCH``) would otherwise only grow, and a node that joins replays all
of it (about 105 s for one 10,000,000-entry list). A compaction (`responder watch-compact`)
takes one node's lists as of the last operation they applied, ``seq``, and writes them to
the snapshot stream (``JPKI_WATCH_SNAP``) as parts, then a seal; only then does it purge the
watch stream's operations through ``seq`` (less the tail it keeps). A node whose lists applied
less than the stream still holds (a new node, or one stopped across a compaction) loads the
latest snapshot instead of stopping at the gap, then applies the operations after it: it ends
with the lists of a node that replayed everything, removals included, since a snapshot is
exactly what applying operations 1..seq leaves (entries and per-party counts; the bound
travels with each operation, not with the list).

Why not the JetStream shortcuts: one list may hold 10,000,000 entries (240 MB), far past a
message's ``max_payload``, so neither a rollup message (``Nats-Rollup``) nor one message per
party fits; a KV bucket of one message per entry (``max_msgs_per_subject`` 1, deletes as
markers) would keep as many messages as entries (a replay as long) and lose the operation's
all-or-nothing bound (409 ``watch_full`` decided alike on every node).

What a snapshot holds is what the stream and the lists already hold: the stored entries (party
tag ‖ keyed digest, `responder.v1.watchset.WatchKeys`: no serial, no party id in clear), the
value naming the watch secret (`WatchKeys.check`), the stream's identity (`watchlog.stream_id`)
and the sequence. Each part and the seal carry a MAC keyed with the watch secret: a node refuses
a snapshot not made with its secret, cut, or of another stream, before it changes its lists.

Snapshots follow one another by sequence: a seal is published only if it is still the latest
(JetStream's ``Nats-Expected-Last-Subject-Sequence``: two compactions at once, one loses and
purges nothing), and the watch stream is purged only through a sealed sequence, so the latest
snapshot always reaches the stream's first operation. The previous snapshot is kept (a node
loading it when a newer one is sealed can finish, while the operations after it are on the
stream); older ones are purged.

Sans-I/O: the codec, the MAC, the parts of a list (`parts`), and the decisions (`next_step`,
`compaction`).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, NamedTuple

from responder.v1.watchlog import CHECK_BYTES
from responder.v1.watchset import ENTRY_BYTES, TAG_BYTES

VERSION: Final = 1
MAC_BYTES: Final = 16
ID_BYTES: Final = 16
PART_ENTRIES: Final = 16_384
"""Entries per part: 384 KiB, under NATS's default 1 MiB ``max_payload``; one part is one
get and one LMDB transaction for a loading node (milliseconds: loading never holds a call)."""
_SEAL_V1: Final = struct.Struct(f">B{ID_BYTES}s{CHECK_BYTES}sQIQQ")
"""version, stream id, secret check, sequence, parts, entries, stream sequence of part 0."""
SEAL_VERSION: Final = 2
_SEAL: Final = struct.Struct(f">B{ID_BYTES}s{CHECK_BYTES}sQIQQQ")
"""Version 2 (this release's): version 1's fields, then the watch stream's first signed
operation (`Seal.signed_from`). A version 1 seal (a release before it, whose lists stopped at
the first signed operation: none before its sequence) is read with 0 there."""
_PART: Final = struct.Struct(f">B{ID_BYTES}sQII")
"""version, stream id, sequence, index, entries."""


Mac = Callable[[bytes], bytes]
"""`WatchKeys.snapshot_mac`: keyed with the watch secret."""
_LOADING_TAIL: Final = struct.Struct(">IQQ")
_AFTER: Final = b"\xff" * (ENTRY_BYTES - TAG_BYTES)
"""Past every digest of a tag: ``tag + _AFTER`` sorts after the tag's entries."""


class Seal(NamedTuple):
    """A snapshot's last message: what its parts add up to."""

    stream: bytes
    """`watchlog.stream_id` of the watch stream the lists applied."""
    check: bytes
    """`watchlog.secret_check` of the secret the entries were made with."""
    seq: int
    """The last operation the lists had applied."""
    parts: int
    entries: int
    first_part: int
    """The snapshot stream's sequence of part 0 (a loader looks for the parts from there)."""
    signed_from: int = 0
    """The watch stream's first signed operation the lists applied (0: none by ``seq``): from
    it on an unsigned operation is passed over (`responder.v1.watchlog`)."""


class Part(NamedTuple):
    stream: bytes
    seq: int
    number: int
    entries: tuple[bytes, ...]
    """Stored entries (tag ‖ digest), in key order across the parts."""


class BadSnapshot(Exception):
    """Not a snapshot of these lists' stream and secret (cut, altered, another version)."""


def encode_seal(mac: Mac, seal: Seal) -> bytes:
    head = _SEAL.pack(SEAL_VERSION, *seal)
    return head + mac(head)


def decode_seal(mac: Mac, raw: bytes) -> Seal:
    fmt = {VERSION: _SEAL_V1, SEAL_VERSION: _SEAL}.get(raw[0]) if raw else None
    if fmt is None or len(raw) != fmt.size + MAC_BYTES:
        raise BadSnapshot("not a watch snapshot seal of this version")
    head = raw[: fmt.size]
    if mac(head) != raw[fmt.size :]:
        raise BadSnapshot("a watch snapshot seal not made with this node's watch secret")
    _v, *fields = fmt.unpack(head)
    return Seal(*fields)


def encode_part(mac: Mac, part: Part) -> bytes:
    body = _PART.pack(VERSION, part.stream, part.seq, part.number, len(part.entries))
    body += b"".join(part.entries)
    return body + mac(body)


def decode_part(mac: Mac, raw: bytes) -> Part:
    if len(raw) < _PART.size + MAC_BYTES or raw[0] != VERSION:
        raise BadSnapshot("not a watch snapshot part of this version")
    body, sealed = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    _v, stream, seq, index, n = _PART.unpack(body[: _PART.size])
    data = body[_PART.size :]
    if len(data) != n * ENTRY_BYTES or mac(body) != sealed:
        raise BadSnapshot(f"watch snapshot {seq} part {index}: cut or altered")
    entries = tuple(data[i : i + ENTRY_BYTES] for i in range(0, len(data), ENTRY_BYTES))
    return Part(stream, seq, index, entries)


def parts(
    stream: bytes, seq: int, entries: Iterable[bytes], size: int = PART_ENTRIES
) -> Iterator[Part]:
    """The parts of a list's entries (in key order); at least one, empty for empty lists, so
    that a seal always names the stream position of a part 0."""
    chunk: list[bytes] = []
    index = 0
    for e in entries:
        chunk.append(e)
        if len(chunk) == size:
            yield Part(stream, seq, index, tuple(chunk))
            index += 1
            chunk = []
    if chunk or index == 0:
        yield Part(stream, seq, index, tuple(chunk))


def counts(entries: Sequence[bytes]) -> dict[bytes, int]:
    """Entries per party tag (what a part adds to each list's count), ``entries`` in key order
    (a part's): one binary search per party, not a look at each entry."""
    out: dict[bytes, int] = {}
    at, n = 0, len(entries)
    while at < n:
        tag = entries[at][:TAG_BYTES]
        end = bisect.bisect_right(entries, tag + _AFTER, at)
        out[tag] = end - at
        at = end
    return out


class Loading(NamedTuple):
    """A snapshot being loaded into a node's lists, one part per transaction (kept with them:
    another worker, or the same after a restart, goes on where it stopped)."""

    seal: bytes
    """The seal as published (`encode_seal`)."""
    next_index: int
    search_from: int
    """The snapshot stream's sequence to look for the next part from."""
    loaded: int
    """Entries loaded so far (all of them must add up to the seal's)."""

    def encode(self) -> bytes:
        return self.seal + _LOADING_TAIL.pack(self.next_index, self.search_from, self.loaded)

    @classmethod
    def decode(cls, raw: bytes) -> Loading:
        cut = len(raw) - _LOADING_TAIL.size
        return cls(raw[:cut], *_LOADING_TAIL.unpack(raw[cut:]))


class CatchUp(NamedTuple):
    """Apply the watch stream's operations after the lists' last one."""


class Load(NamedTuple):
    """The stream no longer holds the lists' next operation: load the latest snapshot."""


class Resume(NamedTuple):
    """A snapshot is being loaded: load its next part."""


Step = CatchUp | Load | Resume


def next_step(applied: int, loading: bool, first: int, last: int) -> Step:
    """What a node does next, its lists having applied ``applied`` (0: none), ``loading`` a
    snapshot or not, the watch stream holding operations ``first``..``last`` (JetStream's
    first sequence: ``last + 1`` when it holds none)."""
    if loading:
        return Resume()
    if applied >= last or applied + 1 >= first:
        return CatchUp()
    return Load()


def usable(seal: Seal, stream: bytes, check: bytes, first: int) -> str | None:
    """Why ``seal`` cannot bring lists to the watch stream (``stream``, holding operations from
    ``first``) for a node whose secret's check is ``check``; None when it can."""
    if seal.stream != stream:
        return "the latest watch snapshot is of another watch stream (made again?)"
    if seal.check != check:
        return "the latest watch snapshot was made with another watch secret"
    if seal.seq + 1 < first:
        return (
            f"the watch stream was purged through operation {first - 1} but its latest "
            f"snapshot is of operation {seal.seq}: operations are lost"
        )
    return None


class Compaction(NamedTuple):
    """What one compaction does: snapshot the lists at ``snapshot`` (0: no new snapshot), then
    purge the watch stream's operations through ``purge`` (0: none)."""

    snapshot: int
    purge: int


def compaction(
    applied: int, first: int, last: int, sealed: int, *, keep: int, min_operations: int
) -> Compaction:
    """The compaction of a stream holding ``first``..``last`` by lists at ``applied`` (caught
    up), the latest snapshot being of ``sealed`` (0: none): a new snapshot when the stream
    holds at least ``min_operations`` before the tail of ``keep`` it leaves (nodes running a
    little behind apply those as usual instead of loading a snapshot); the purge never goes
    past the snapshot it relies on. When no snapshot reaches the stream's first operation
    (the latest lost, or purged by hand: nodes behind cannot join), one is made whatever
    ``min_operations`` says."""
    if keep < 0 or min_operations < 1:
        raise ValueError("keep must be >= 0 and min_operations >= 1")
    through = min(applied, last - keep)
    if through - (first - 1) < min_operations:
        return Compaction(applied if sealed + 1 < first <= applied + 1 else 0, 0)
    snapshot = applied if applied > sealed else 0
    return Compaction(snapshot, through)
