"""The watch lists of a service of several nodes: one log of operations, applied in order.

Behind a load balancer a party registers through any node and reads through any other, so
the watch lists (`responder.v1.watchset`) must be the same on every node. Each ``POST
/v1/watch`` becomes one operation (`WatchOp`) on a JetStream stream (``JPKI_WATCH``,
`responder.v1.watchstream`), and every node applies the stream's operations in stream
order to its own lists (`Replica.apply`, `catch_up`), so every node decides the same:

- an operation holds only what the lists store: the party's tag and the keyed digests of
  the certificates removed and added (`WatchKeys`: no serial, no party id in clear), the
  bound the taking node applied (``[watch] max_per_party``) and a value naming the watch
  secret the hashes were made with (`WatchKeys.check`); every node needs the same secret,
  and a node whose secret differs refuses the operation (`SecretMismatch`) rather than
  apply hashes it would never match (a list silently empty);
- applying is deterministic: removals first, then additions; a batch that would take the
  list past its bound changes nothing and its outcome says so (409 ``watch_full`` on every
  node); the outcome is kept by sequence (`Outcome`), so the node that took the request
  answers with what its own copy did (read-your-writes);
- the lists record the last sequence applied in the same transaction (`Replica.applied`):
  an operation is applied once, a node restarted resumes after it, a new node replays the
  stream from its start (or from the latest snapshot, once the stream was compacted:
  `responder.v1.watchsnap`); a gap (an operation the stream no longer holds) stops the
  replication (`Gone`) instead of going on without it, and so does a stream deleted and
  made again under its name (`OtherStream`, named by `stream_id`: its sequences start over);
- an operation is MAC'd with the watch secret (`WatchKeys.op_mac`, version 2): anyone who may
  publish on the watch subject (every responder's NATS user) can read the operations, the
  value naming the secret, the party tags and digests on them, so an operation without that
  MAC could empty a party's list on every node, and bytes that are no operation stopped every
  node's replication for good. An unsigned operation (version 1, every release before this
  one's) is applied only before the stream's first signed one (the lists keep where that was,
  and so does a snapshot's seal); from it on, whatever this node's MAC does not vouch for is
  passed over by every node alike (`Replica.refuse`). Before it, bytes that name another
  secret still stop the lists (`SecretMismatch`, as before the MAC: a node whose secret
  differs finds out so), and other bytes that are no operation are passed over;
- a signed operation carries its publisher's time (`WatchOp.at_ms`, under the MAC), and every
  node compares it with the time JetStream stored that message at (`Stored.stamped_ms`, the
  same for a sequence on every node and server): one more than `REPLAY_WINDOW` apart is
  passed over as the forged ones are (`replayed`). The MAC does not cover the message id, so
  without it an operation copied from the stream and published again later (an old "remove X"
  after the party's later "add X") would be applied again on every node; what remains is a
  copy published again within the window of its original;
- one request is one operation: its message id (`op_id`) carries a nonce drawn per request,
  so a publish retried on a new connection is stored once, and the same batch sent again
  later (add X, remove X, add X) is another operation, not dropped as a repeat.

Sans-I/O: the codec, the decision (`decide`), the catch-up loop (`catch_up`, its fetching
and clock given) and `MemoryReplica`, the twin of `responder.v1.watchdb` for tests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple, Protocol

from responder.v1.watchset import DIGEST_BYTES, TAG_BYTES

VERSION: Final = 1
SIGNED: Final = 2
"""The version of an operation MAC'd with the watch secret (`encode` with a MAC)."""
MAC_BYTES: Final = 16
CHECK_BYTES: Final = 16
_HEAD: Final = 1 + CHECK_BYTES + 8 + TAG_BYTES + 4 + 4
_AT: Final = 1 + CHECK_BYTES + 8
"""Where a signed operation's publisher time (8 bytes, milliseconds) stands."""
REPLAY_WINDOW: Final = 60
"""Seconds a signed operation's publisher time may be before (or after) the time JetStream
stored it at; one further apart is passed over (`replayed`). It must cover the publish itself
(a call bounded by ``timeout``, 2 s, tried twice on a failure: under 10 s) and the difference
between a node's clock and the NATS servers' (NTP keeps it under a second; a minute leaves
room for a node whose synchronisation failed for a while without its batches being lost). It
is also how long a copy of an operation may be published again and still be applied (every
node alike): shorter would narrow that, at the price of refusing a node whose clock drifted."""


class WatchOp(NamedTuple):
    """One ``POST /v1/watch`` batch as the lists store it (keyed digests only)."""

    check: bytes
    """`secret_check` of the secret the digests were made with."""
    limit: int
    """The bound of the party's list (``[watch] max_per_party`` of the node that took it)."""
    tag: bytes
    """The party's tag (`WatchKeys.tag`)."""
    remove: tuple[bytes, ...]
    """Digests (`WatchKeys.entries` less the tag), each once."""
    add: tuple[bytes, ...]
    signed: bool = False
    """It came MAC'd with this node's watch secret (version 2)."""
    at_ms: int = 0
    """A signed operation's publisher time (milliseconds since the epoch, taken when the
    request was published; under the MAC); 0 on an unsigned one."""


class Stored(NamedTuple):
    """An operation's message as the watch stream holds it."""

    data: bytes
    stamped_ms: int
    """When JetStream stored it (milliseconds since the epoch): the server's time, the same
    for that sequence on every node that reads it."""


class Outcome(NamedTuple):
    """What one operation did to the party's list, the same on every node."""

    full: bool
    """It would have taken the list past ``limit``: nothing changed."""
    added: int
    removed: int
    total: int
    """The list's size after it (before it, when ``full``)."""
    limit: int


def secret_check(check: bytes) -> bytes:
    """The part of `WatchKeys.check` an operation carries."""
    return check[:CHECK_BYTES]


def encode(op: WatchOp, mac: Callable[[bytes], bytes] | None = None) -> bytes:
    """The operation's bytes; with ``mac`` (`WatchKeys.op_mac`), version 2, MAC'd, its
    publisher time (``op.at_ms``) after the bound."""
    head = (
        bytes((VERSION if mac is None else SIGNED,)) + op.check + op.limit.to_bytes(8, "big")
        + (b"" if mac is None else op.at_ms.to_bytes(8, "big"))
        + op.tag + len(op.remove).to_bytes(4, "big") + len(op.add).to_bytes(4, "big")
    )  # fmt: skip
    body = head + b"".join(op.remove) + b"".join(op.add)
    return body if mac is None else body + mac(body)


def decode(raw: bytes, mac: Callable[[bytes], bytes] | None = None) -> WatchOp | None:
    """The operation, or None when ``raw`` is not one this node may apply (another version,
    cut, padded; a version 2 one whose MAC under ``mac`` fails, or with no ``mac`` given)."""
    if raw[:1] == bytes((SIGNED,)):
        body, sealed = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if (
            mac is None
            or len(raw) < _HEAD + 8 + MAC_BYTES
            or not hmac.compare_digest(mac(body), sealed)
        ):
            return None
        got = decode(bytes((VERSION,)) + body[1:_AT] + body[_AT + 8 :])
        at_ms = int.from_bytes(body[_AT : _AT + 8], "big")
        return None if got is None else got._replace(signed=True, at_ms=at_ms)
    if len(raw) < _HEAD or raw[0] != VERSION:
        return None
    at = 1 + CHECK_BYTES
    check, limit = raw[1:at], int.from_bytes(raw[at : at + 8], "big")
    tag = raw[at + 8 : at + 8 + TAG_BYTES]
    at += 8 + TAG_BYTES
    n_remove, n_add = (
        int.from_bytes(raw[at : at + 4], "big"),
        int.from_bytes(raw[at + 4 : at + 8], "big"),
    )
    body = raw[_HEAD:]
    if len(body) != (n_remove + n_add) * DIGEST_BYTES:
        return None
    digests = [body[i : i + DIGEST_BYTES] for i in range(0, len(body), DIGEST_BYTES)]
    return WatchOp(check, limit, tag, tuple(digests[:n_remove]), tuple(digests[n_remove:]))


def op_id(op: bytes, nonce: bytes) -> str:
    """The message id of one request's operation: JetStream drops a repeat within its
    duplicate window, so a publish retried after a lost acknowledgement is stored once. The
    ``nonce`` is drawn once per request: the same batch sent again by a party (add X, remove
    X, add X) is another operation, applied, not dropped as a repeat of the first."""
    return "watch:" + hashlib.blake2b(op, digest_size=16, salt=nonce).hexdigest()


def decide(
    before: int, present: Callable[[bytes], bool], op: WatchOp
) -> tuple[Outcome, list[bytes], list[bytes]]:
    """What ``op`` does to a list of ``before`` entries, ``present`` saying which digests it
    holds: (outcome, digests to delete, digests to put); nothing to change when full."""
    gone = [d for d in dict.fromkeys(op.remove) if present(d)]
    removed = set(gone)
    new = [d for d in dict.fromkeys(op.add) if d in removed or not present(d)]
    total = before - len(gone) + len(new)
    if total > op.limit:
        return Outcome(True, 0, 0, before, op.limit), [], []
    return Outcome(False, len(new), len(gone), total, op.limit), gone, new


def stream_id(name: str, created: datetime) -> bytes:
    """16 bytes naming one watch stream: its name and when JetStream created it, so that a
    stream deleted and made again under its name (its sequences starting over) is another."""
    text = f"{name}\0{created.astimezone(UTC).isoformat()}".encode()
    return hashlib.blake2b(text, digest_size=16, person=b"jpkiva-watch-id").digest()


class SecretMismatch(Exception):
    """An operation made with another watch secret: every node needs the same one."""


class Gone(Exception):
    """An operation the stream no longer holds (or not an operation): the lists cannot be
    made the same as the other nodes' by going on."""


class OtherStream(Gone):
    """The watch stream is not the one these lists applied (deleted and made again under its
    name, numbering from 1): its operations are not the ones the lists count as applied."""


class Behind(Exception):
    """The catch-up did not reach its target in the time given (applied so far: kept)."""

    def __init__(self, applied: int, target: int) -> None:
        super().__init__(f"watch lists at operation {applied} of {target}")
        self.applied = applied
        self.target = target


class Replica(Protocol):
    """A node's copy of the watch lists, written only by applying the log."""

    def applied(self) -> int:
        """The last sequence applied (0 before any)."""
        ...

    def apply(self, seq: int, op: WatchOp) -> None:
        """Apply ``op`` as operation ``seq`` in one transaction with the sequence; a
        sequence already applied (another worker was first) is passed over. Raises
        `SecretMismatch` (nothing applied), `Gone` when ``seq`` is not the next one."""
        ...

    def outcome(self, seq: int) -> Outcome | None:
        """What operation ``seq`` did (kept for the recent ones)."""
        ...

    def refuse(self, seq: int, check: bytes | None, why: str | None = None) -> None:
        """Operation ``seq`` is not one this node may apply (`decode`); ``check``: the secret
        it claims to be made with (`claimed_check`). Passed over (in one transaction with the
        sequence, nothing else changed; `passed_over`), but `SecretMismatch` when it names
        another secret than this node's before the stream's first signed operation (nothing
        applied). ``why``: an operation signed with this node's secret passed over for that
        reason (`replayed`), never a mismatch. As `apply` for a sequence applied already or
        not the next one."""
        ...


def catch_up(
    replica: Replica,
    fetch: Callable[[int], Stored | None],
    target: int,
    *,
    deadline: float,
    clock: Callable[[], float],
    mac: Callable[[bytes], bytes] | None = None,
) -> int:
    """Apply the operations after ``replica.applied()`` through ``target`` in order;
    ``fetch(seq)`` gives an operation's message (None: the stream no longer holds it); bytes
    that are no operation this node may apply (`decode` with ``mac``), and a signed operation
    stored too far from its publisher's time (`replayed`), are passed over.
    Returns the sequence reached; `Behind` past ``deadline`` (what was applied stays; one
    operation at least is applied by every call, so calls that each wait too little still
    make their way)."""
    seq = replica.applied()
    while seq < target:
        stored = fetch(seq + 1)
        if stored is None:
            raise Gone(f"watch operation {seq + 1} is not on the stream")
        op = decode(stored.data, mac)
        stale = None if op is None or not op.signed else replayed(op.at_ms, stored.stamped_ms)
        if op is None:
            replica.refuse(seq + 1, claimed_check(stored.data))
        elif stale is not None:
            replica.refuse(seq + 1, op.check, stale)
        else:
            replica.apply(seq + 1, op)
        seq = max(seq + 1, replica.applied())
        if seq < target and clock() > deadline:
            raise Behind(seq, target)
    return seq


@dataclass
class MemoryReplica:
    """A `Replica` in dicts (tests): the same decisions as `responder.v1.watchdb`."""

    check: bytes
    lists: dict[bytes, set[bytes]] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    seq: int = 0
    signed_from: int = 0
    """The stream's first signed operation applied (0: none yet)."""
    skipped: list[int] = field(default_factory=list)

    def applied(self) -> int:
        return self.seq

    def apply(self, seq: int, op: WatchOp) -> None:
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            raise Gone(f"watch operation {seq} after {self.seq}: a gap")
        if not unsigned_allowed(op, self.signed_from):
            self.refuse(seq, op.check)  # an unsigned one after the first signed one: forged
            return
        if op.check != secret_check(self.check):
            raise SecretMismatch("a watch operation made with another watch secret")
        if op.signed and not self.signed_from:
            self.signed_from = seq
        mine = self.lists.setdefault(op.tag, set())
        got, gone, new = decide(len(mine), mine.__contains__, op)
        mine.difference_update(gone)
        mine.update(new)
        self.outcomes[seq] = got
        self.seq = seq

    def outcome(self, seq: int) -> Outcome | None:
        return self.outcomes.get(seq)

    def refuse(self, seq: int, check: bytes | None, why: str | None = None) -> None:
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            raise Gone(f"watch operation {seq} after {self.seq}: a gap")
        if why is None and passed_over(check, secret_check(self.check), self.signed_from) is None:
            raise SecretMismatch("a watch operation made with another watch secret")
        self.seq = seq
        self.skipped.append(seq)


def claimed_check(raw: bytes) -> bytes | None:
    """The value naming the secret that bytes of either version claim (unchecked: anyone who
    may publish on the stream can write any), or None when they hold none."""
    if raw[:1] in (bytes((VERSION,)), bytes((SIGNED,))) and len(raw) >= 1 + CHECK_BYTES:
        return raw[1 : 1 + CHECK_BYTES]
    return None


def passed_over(claimed: bytes | None, mine: bytes, signed_from: int) -> str | None:
    """Why an operation this node may not apply is passed over (a note for the lists), or None
    when it stops them instead: it names another secret than ``mine`` before the stream's
    first signed operation ``signed_from`` (the stops of releases before the MAC, and how a
    node whose own secret differs finds out; from the first signed operation on, this node's
    secret is the one the others sign with)."""
    if signed_from:
        return "an operation not signed with the watch secret (forged) passed over"
    if claimed is not None and claimed != mine:
        return None
    return "an operation that is none, or whose MAC fails (forged), passed over"


def replayed(at_ms: int, stamped_ms: int) -> str | None:
    """Why a signed operation whose publisher time is ``at_ms`` and which JetStream stored at
    ``stamped_ms`` is passed over (a note for the lists), or None when it is applied: the two
    more than `REPLAY_WINDOW` apart either way (a copy published again later, or a publisher
    whose clock is that far from the servers'). Both times are on the message, the same for
    every node: every node decides alike."""
    off = stamped_ms - at_ms
    if -REPLAY_WINDOW * 1000 <= off <= REPLAY_WINDOW * 1000:
        return None
    return (
        f"a signed operation stored {off / 1000:+.0f} s from its publisher's time, past the "
        f"{REPLAY_WINDOW} s allowed (published again, or the publisher's clock off) passed over"
    )


def unsigned_allowed(op: WatchOp, signed_from: int) -> bool:
    """Whether ``op`` may be applied on lists whose stream's first signed operation is
    ``signed_from`` (0: none yet): a signed one always; an unsigned one (a release before the
    MAC) only before it, since every node of this release signs what it publishes."""
    return op.signed or not signed_from


def make_op(
    check: bytes,
    limit: int,
    entries_remove: Sequence[bytes],
    entries_add: Sequence[bytes],
    tag: bytes,
) -> WatchOp:
    """An operation from the stored entries (`WatchKeys.entries`: tag ‖ digest) of a batch."""
    cut = len(tag)
    return WatchOp(
        secret_check(check), limit, tag,
        tuple(dict.fromkeys(e[cut:] for e in entries_remove)),
        tuple(dict.fromkeys(e[cut:] for e in entries_add)),
    )  # fmt: skip
