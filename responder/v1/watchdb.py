"""The watch lists on disk: an LMDB environment of the responder's own (`LmdbWatchSet`).

The durable `responder.v1.watchset.WatchSet`: one LMDB environment in the directory
``[watch] dir`` (mode 0700), apart from the builder's status store (which the responder
never writes). Every worker opens it after the fork and writes to it: LMDB serialises
the write transactions of all processes with its own lock, and readers never wait. A
batch (`update`) is one write transaction: all of it or none, across a kill.

Databases: ``watch`` holds one empty value per watched certificate, under its keyed
hash (`WatchKeys.entries`: party tag ‖ digest, 24 bytes: no serial, no party id in
clear); ``meta`` holds ``check`` (`WatchKeys.check`: the secret the lists were
written with; another secret is refused at open, not silently read as empty lists)
and ``count`` ‖ party tag → u64, the size of each list (its bound, 10,000,000 by
default, is checked in the same transaction), ``gen`` ‖ party tag → the party's last addition
(random on one node, the operation's stream and sequence on several; all forgotten when a
snapshot is loaded, ``loaded`` then naming it: `LmdbWatchSet.generation` names the list a
counted mark is of), and ``adds`` ‖ party tag → a random stamp drawn at each addition to
the party's list and kept when a snapshot is loaded: the stamp the party's counted mark on
this node is kept under. The marks themselves (`responder.v1.provision`: this node's own,
not on the watch stream nor in its snapshots) are in an environment of their own in
``marks/`` (`responder.v1.markdb`: written on the event loop, without fsync, behind no lock
a watch batch holds); a mark of another stamp is none (forgotten when an entry is added).

The lists survive restarts of the responder and rebuilds of the status store: they
name certificates, not store positions.

On a node of several (`responder.v1.watchlog`) the lists are written only by applying the
watch stream's operations (`apply`): ``meta`` then also holds ``applied`` (u64, the last
operation applied, written in its transaction), ``stream`` (16 B: the watch stream these
lists apply, `bind`: a stream made again under its name is another, refused), ``outcome``
‖ sequence (what each recent operation did: the node that took it answers with it),
``seen`` (u64 ‖ i64: the stream's last sequence as a worker last saw it, and when) and
``broken`` (why replication stopped: another secret, a gap, a stream made again), which
the metrics read (`responder.v1.watchgauges`), and, while the lists are loaded from a
snapshot of the watch stream (`responder.v1.watchsnap`), ``loading`` (its seal and how far:
one part per transaction, no ``applied`` until the last part, so nothing reads them half
loaded and another worker or a restart goes on where it stopped).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import lmdb

from responder.v1.markdb import STAMP_BYTES, LmdbMarks, boot_id
from responder.v1.watchlog import (
    Behind,
    Gone,
    OtherStream,
    Outcome,
    SecretMismatch,
    WatchOp,
    decide,
    passed_over,
    secret_check,
    unsigned_allowed,
)
from responder.v1.watchset import (
    GEN_BYTES,
    WatchFull,
    WatchKeys,
    WatchUnavailable,
    WatchUpdate,
)
from responder.v1.watchsnap import BadSnapshot, Loading, Part, Seal, counts

_DB_WATCH: Final = b"watch"
_DB_META: Final = b"meta"
_META_CHECK: Final = b"check"
_META_COUNT: Final = b"count"
_META_APPLIED: Final = b"applied"
_META_OUTCOME: Final = b"outcome"
_META_SEEN: Final = b"seen"
_META_BROKEN: Final = b"broken"
_META_STREAM: Final = b"stream"
_META_LOADING: Final = b"loading"
_META_LOADS: Final = b"loads"
_META_ADDS: Final = b"adds"
_META_GEN: Final = b"gen"
_META_LOADED: Final = b"loaded"
_META_SIGNED_FROM: Final = b"signed-from"
"""The watch stream's first signed operation these lists applied (`watchlog`; absent: none)."""
_META_PASSED: Final = b"passed"
"""How many operations were passed over (`watchlog.passed_over`), 8 bytes, then the last
reason: what an operator reads after an alert of forged operations."""
OUTCOMES_KEPT: Final = 65_536
"""Operations whose outcome is kept: the node that took one reads it right after applying."""
_OUTCOME: Final = struct.Struct(">BIIQQ")


class WatchDbError(Exception):
    """The watch environment cannot be opened (another secret, not a watch directory)."""


_NO_STAMP: Final = bytes(STAMP_BYTES)


class LmdbWatchSet:
    """The watch lists in LMDB (module docstring); open one per process, after the fork.
    ``boot``: which boot of the machine this is (`responder.v1.markdb`: the counted marks
    do not outlive it; by default the kernel's boot id)."""

    def __init__(
        self,
        path: Path,
        keys: WatchKeys,
        *,
        map_size: int,
        boot: Callable[[], str | None] = boot_id,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        env: lmdb.Environment | None = None
        try:
            env = lmdb.open(
                str(path), map_size=map_size, max_dbs=2, readahead=False, meminit=True,
                max_readers=1024, mode=0o600,  # data.mdb, lock.mdb: 0600 from creation
            )  # fmt: skip
            for name in ("data.mdb", "lock.mdb"):  # made wider by an older version
                os.chmod(path / name, 0o600)
            with env.begin(write=True) as txn:
                self._watch = env.open_db(_DB_WATCH, txn=txn)
                self._meta = env.open_db(_DB_META, txn=txn)
                check = keys.check()
                txn.put(_META_CHECK, check, db=self._meta, overwrite=False)
                raw = txn.get(_META_CHECK, db=self._meta)
                stored = bytes(raw) if raw is not None else b""
        except (lmdb.Error, OSError) as e:
            if env is not None:
                env.close()
            raise WatchDbError(f"{path}: cannot open the watch lists: {e}") from None
        self._env = env
        if stored != check:
            self._env.close()
            raise WatchDbError(
                f"{path}: the watch lists were written with another secret "
                "([watch] secret_file): restore that secret, or move the lists away"
            )
        self._env.reader_check()  # free the reader slots of workers that died (SIGKILL)
        try:
            self._marks = LmdbMarks(path / "marks", keys, boot=boot())
        except (lmdb.Error, OSError) as e:
            self._env.close()
            marks = path / "marks"
            raise WatchDbError(
                f"{path}: cannot open the counted marks: {e} (they hold nothing else: stop the "
                f"responder, remove {marks} and start it; each party's changes delivered again "
                "are then counted again, once)"
            ) from None
        self._keys = keys
        self._tags: dict[str, bytes] = {}
        self._stream = b""
        """The watch stream `bind` last confirmed."""

    @property
    def keys(self) -> WatchKeys:
        return self._keys

    def close(self) -> None:
        self._marks.close()
        self._env.close()

    def _tag(self, party: str) -> bytes:
        tag = self._tags.get(party)
        if tag is None:
            tag = self._tags[party] = self._keys.tag(party)
        return tag

    def watched(self, party: str, keys: Sequence[bytes]) -> list[bool]:
        entries = self._keys.entries(self._tag(party), keys)
        try:
            with self._env.begin(db=self._watch) as txn:
                get = txn.get
                return [get(e) is not None for e in entries]
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def generation(self, party: str) -> bytes:
        try:
            with self._env.begin() as txn:
                return self._generation(txn, self._tag(party))
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def _generation(self, txn: lmdb.Transaction, tag: bytes) -> bytes:
        """The party's last addition (a random value on one node; on several, its operation's
        watch stream and sequence, the same on every node), or, none applied since this node
        last loaded a snapshot, that snapshot (its seal): two nodes' lists of the party are of
        one generation only where they hold the same additions. Not a count of this node's
        loads: two nodes that each loaded once, snapshots with other additions of the party,
        would have agreed, a cursor's mark of the one read on the other as covering
        certificates it never saw watched."""
        added = txn.get(_META_GEN + tag, db=self._meta)
        if added is not None:
            raw = b"added/" + bytes(added)
        else:
            loaded = txn.get(_META_LOADED, db=self._meta)
            raw = b"loaded/" + (bytes(loaded) if loaded is not None else b"")
        return hashlib.blake2b(raw, digest_size=GEN_BYTES, person=b"jpkiva-w-gen").digest()

    def _stamp(self, txn: lmdb.Transaction, tag: bytes) -> bytes:
        raw = txn.get(_META_ADDS + tag, db=self._meta)
        return bytes(raw) if raw is not None else _NO_STAMP

    def mark(self, party: str) -> bytes | None:
        tag = self._tag(party)

        def stamp() -> bytes:
            with self._env.begin() as txn:
                return self._stamp(txn, tag)

        try:
            return self._marks.mark(tag, stamp)
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def count_once(self, party: str, decide: Callable[[bytes | None, bytes], bytes | None]) -> None:
        tag = self._tag(party)
        gens: list[bytes] = []

        def stamp() -> bytes:  # in the marks' write transaction: no lock of the lists held
            with self._env.begin() as txn:
                gens.append(self._generation(txn, tag))
                return self._stamp(txn, tag)

        try:
            self._marks.count_once(tag, stamp, lambda kept: decide(kept, gens[-1]))
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def _added(self, txn: lmdb.Transaction, tag: bytes, added: bytes) -> None:
        """Entries were added to the party's list: a new generation, and a new stamp, so
        this node's counted mark of the party is forgotten (it never saw them watched)."""
        txn.put(_META_GEN + tag, added, db=self._meta)
        txn.put(_META_ADDS + tag, secrets.token_bytes(STAMP_BYTES), db=self._meta)

    def count(self, party: str) -> int:
        """How many certificates ``party`` watches."""
        with self._env.begin() as txn:
            raw = txn.get(_META_COUNT + self._tag(party), db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def update(
        self, party: str, add: Sequence[bytes], remove: Sequence[bytes], *, limit: int
    ) -> WatchUpdate:
        tag = self._tag(party)
        gone, new = self._keys.entries(tag, remove), self._keys.entries(tag, add)
        new.sort()  # in key order: neighbouring pages, fewer page splits
        count_key = _META_COUNT + tag
        try:
            with self._env.begin(write=True) as txn:
                raw = txn.get(count_key, db=self._meta)
                before = int.from_bytes(raw, "big") if raw is not None else 0
                cur = txn.cursor(db=self._watch)
                removed = sum(1 for e in gone if cur.set_key(e) and cur.delete())
                put = cur.put
                added = sum(1 for e in new if put(e, b"", overwrite=False))
                total = before - removed + added
                if total > limit:  # raising aborts the transaction: nothing changed
                    raise WatchFull(before, limit)
                txn.put(count_key, total.to_bytes(8, "big"), db=self._meta)
                if added:
                    self._added(txn, tag, secrets.token_bytes(GEN_BYTES))
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None
        return WatchUpdate(
            added=added,
            already=len(add) - added,
            removed=removed,
            absent=len(remove) - removed,
            total=total,
        )

    # --- replicated: the watch stream's operations (`responder.v1.watchlog`) -------------

    def applied(self) -> int:
        with self._env.begin() as txn:
            raw = txn.get(_META_APPLIED, db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def bind(self, stream_id: bytes) -> None:
        """The lists apply the watch stream named ``stream_id`` (`watchstream.WatchStream.state`).
        The first one is recorded (lists of an earlier version, which recorded none, take the
        one they meet); lists that applied operations of another one refuse it (`OtherStream`,
        noted for the metrics): its sequences start over, and passing its first ones as
        applied would lose them. Lists that applied nothing take the new one."""
        if stream_id == self._stream:
            return
        try:
            with self._env.begin(write=True) as txn:
                raw = txn.get(_META_STREAM, db=self._meta)
                applied = txn.get(_META_APPLIED, db=self._meta)
                if applied is None:  # a snapshot being loaded is of the stream recorded
                    applied = txn.get(_META_LOADING, db=self._meta)
                if raw is not None and bytes(raw) != stream_id and applied is not None:
                    why = (
                        "the watch stream is not the one these lists applied (deleted and made "
                        "again?): move this node's [watch] dir away to replay the new one"
                    )
                    txn.put(_META_BROKEN, why.encode(), db=self._meta)
                    broken = OtherStream(why)
                else:
                    txn.put(_META_STREAM, stream_id, db=self._meta)
                    broken = None
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None
        if broken is not None:
            raise broken
        self._stream = stream_id

    def _next_in_line(self, txn: lmdb.Transaction, seq: int) -> bool:
        """Whether operation ``seq`` is the next one for these lists, read in the write
        transaction that takes it: False when it was taken already (another worker applied or
        passed it over first); `Behind` while another worker loads a snapshot, `Gone` for a
        gap."""
        raw = txn.get(_META_APPLIED, db=self._meta)
        applied = int.from_bytes(raw, "big") if raw is not None else 0
        if txn.get(_META_LOADING, db=self._meta) is not None:
            raise Behind(0, seq)  # another worker is loading a snapshot
        if seq <= applied:
            return False
        if seq != applied + 1:
            raise Gone(f"watch operation {seq} after {applied}: a gap")
        return True

    def _signed_from(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(_META_SIGNED_FROM, db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def _unsigned_passed_over(self, seq: int, op: WatchOp) -> bool:
        """True when the unsigned ``op`` came after the stream's first signed operation and was
        passed over as operation ``seq`` (forged: no node of this release writes one), judged
        in the transaction that passes it over (another worker may apply the first signed
        operation meanwhile)."""
        try:
            with self._env.begin(write=True) as txn:
                if not self._next_in_line(txn, seq):
                    return True  # another worker applied it first
                signed_from = self._signed_from(txn)
                if unsigned_allowed(op, signed_from):
                    return False
                why = passed_over(op.check, secret_check(self._keys.check()), signed_from)
                self._pass_over(txn, seq, why or "an unsigned operation after the first signed one")
                return True
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def refuse(self, seq: int, check: bytes | None, why: str | None = None) -> None:
        mine = secret_check(self._keys.check())
        reason = why
        try:
            with self._env.begin(write=True) as txn:
                if not self._next_in_line(txn, seq):
                    return
                if reason is None:
                    reason = passed_over(check, mine, self._signed_from(txn))
                if reason is not None:
                    self._pass_over(txn, seq, reason)
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None
        if reason is None:
            self._note_broken("an operation of the watch stream was made with another watch "
                              "secret: every node needs the same [watch] secret_file")  # fmt: skip
            raise SecretMismatch(f"watch operation {seq}: made with another watch secret")

    def _pass_over(self, txn: lmdb.Transaction, seq: int, why: str) -> None:
        """Operation ``seq`` passed over in ``txn``: counted, its reason noted, applied."""
        old = txn.get(_META_PASSED, db=self._meta)
        n = int.from_bytes(bytes(old)[:8], "big") + 1 if old is not None else 1
        txn.put(_META_PASSED, n.to_bytes(8, "big") + f"operation {seq}: {why}".encode(),
                db=self._meta)  # fmt: skip
        txn.put(_META_APPLIED, seq.to_bytes(8, "big"), db=self._meta)

    def passed(self) -> tuple[int, str]:
        """How many operations these lists passed over, and the last one's reason."""
        with self._env.begin() as txn:
            raw = txn.get(_META_PASSED, db=self._meta)
        if raw is None:
            return 0, ""
        raw = bytes(raw)
        return int.from_bytes(raw[:8], "big"), raw[8:].decode()

    def apply(self, seq: int, op: WatchOp) -> None:
        if not op.signed and self._unsigned_passed_over(seq, op):
            return
        if op.check != secret_check(self._keys.check()):
            self._note_broken("an operation of the watch stream was made with another watch "
                              "secret: every node needs the same [watch] secret_file")  # fmt: skip
            raise SecretMismatch(f"watch operation {seq}: made with another watch secret")
        count_key = _META_COUNT + op.tag
        try:
            with self._env.begin(write=True) as txn:
                if not self._next_in_line(txn, seq):
                    return  # another worker applied it first
                raw = txn.get(count_key, db=self._meta)
                before = int.from_bytes(raw, "big") if raw is not None else 0
                tag = op.tag

                def present(digest: bytes) -> bool:
                    return txn.get(tag + digest, db=self._watch) is not None

                got, gone, new = decide(before, present, op)
                for d in gone:
                    txn.delete(tag + d, db=self._watch)
                for d in sorted(new):
                    txn.put(tag + d, b"", db=self._watch)
                if new:  # the same generation on every node: the operation's stream and sequence
                    stream = txn.get(_META_STREAM, db=self._meta)
                    self._added(txn, tag, bytes(stream or b"") + seq.to_bytes(8, "big"))
                if not got.full:
                    txn.put(count_key, got.total.to_bytes(8, "big"), db=self._meta)
                packed = _OUTCOME.pack(got.full, got.added, got.removed, got.total, got.limit)
                txn.put(_META_OUTCOME + seq.to_bytes(8, "big"), packed, db=self._meta)
                if seq > OUTCOMES_KEPT:
                    txn.delete(
                        _META_OUTCOME + (seq - OUTCOMES_KEPT).to_bytes(8, "big"), db=self._meta
                    )
                if op.signed and not self._signed_from(txn):
                    txn.put(_META_SIGNED_FROM, seq.to_bytes(8, "big"), db=self._meta)
                txn.put(_META_APPLIED, seq.to_bytes(8, "big"), db=self._meta)
                txn.delete(_META_BROKEN, db=self._meta)
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    # --- a snapshot of the watch stream (`responder.v1.watchsnap`) -----------------------

    def loading(self) -> Loading | None:
        """The snapshot being loaded, and how far (None: none)."""
        with self._env.begin() as txn:
            raw = txn.get(_META_LOADING, db=self._meta)
        return Loading.decode(bytes(raw)) if raw is not None else None

    def _empty(self, txn: lmdb.Transaction) -> None:
        """Every entry and every party's count gone, in ``txn`` (a snapshot load's start, or
        its abandonment)."""
        txn.drop(self._watch, delete=False)
        txn.delete(_META_SIGNED_FROM, db=self._meta)
        cur = txn.cursor(db=self._meta)
        if cur.set_range(_META_COUNT):
            while cur.key()[: len(_META_COUNT)] == _META_COUNT and cur.delete():
                pass

    def begin_load(self, loading: Loading) -> None:
        """Empty the lists to load the snapshot ``loading`` names: they had applied less than
        the watch stream still holds, and the snapshot is what applying all of it leaves."""
        try:
            with self._env.begin(write=True) as txn:
                if txn.get(_META_LOADING, db=self._meta) is not None:
                    return  # another worker began first
                self._empty(txn)
                txn.delete(_META_APPLIED, db=self._meta)
                txn.delete(_META_BROKEN, db=self._meta)
                txn.put(_META_LOADING, loading.encode(), db=self._meta)
                raw = txn.get(_META_LOADS, db=self._meta)
                loads = int.from_bytes(raw, "big") + 1 if raw is not None else 1
                txn.put(_META_LOADS, loads.to_bytes(8, "big"), db=self._meta)
                # every list's generation is now the snapshot's (`_generation`)
                seal = hashlib.blake2b(loading.seal, digest_size=16).digest()
                txn.put(_META_LOADED, seal, db=self._meta)
                cur = txn.cursor(db=self._meta)
                if cur.set_range(_META_GEN):
                    while cur.key()[: len(_META_GEN)] == _META_GEN and cur.delete():
                        pass
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def whole(self) -> int | None:
        """None while a snapshot is being loaded, else how many loads began (counted by
        `begin_load`, which empties the lists): a reader that gets the same value before and
        after its reads read whole lists, none that a load emptied in between (another
        worker whose next operation a compaction purged)."""
        with self._env.begin() as txn:
            if txn.get(_META_LOADING, db=self._meta) is not None:
                return None
            raw = txn.get(_META_LOADS, db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def abandon_load(self) -> None:
        """Give up the snapshot being loaded (purged, or refused): the lists stay empty with
        nothing applied, so the next call loads the latest snapshot from its start."""
        try:
            with self._env.begin(write=True) as txn:
                self._empty(txn)
                txn.delete(_META_LOADING, db=self._meta)
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def load_part(self, seal: Seal, part: Part, at: int, *, searched: int | None = None) -> bool:
        """Load ``part`` of the snapshot sealed by ``seal`` (found at ``at`` on the snapshot
        stream, the first of its subject from ``searched``, default ``at``) in one
        transaction; True when it was the last: the lists are then at the seal's operation.
        A part not the next one (another worker loaded it first, a copy, another compaction's)
        is passed over, and the next search starts after it when nothing was searched
        between: a snapshot whose next part is missing is found so at last, not searched for
        again from the same place at every call. Raises `BadSnapshot` (nothing of this part
        loaded) when the parts do not add up to the seal."""
        if part.seq != seal.seq or part.stream != seal.stream or part.number >= seal.parts:
            raise BadSnapshot(f"watch snapshot {seal.seq}: a part of another snapshot")
        try:
            with self._env.begin(write=True) as txn:
                raw = txn.get(_META_LOADING, db=self._meta)
                if raw is None:
                    return False
                st = Loading.decode(bytes(raw))
                if part.number != st.next_index:
                    if (searched if searched is not None else at) <= st.search_from <= at:
                        txn.put(_META_LOADING, st._replace(search_from=at + 1).encode(),
                                db=self._meta)  # fmt: skip
                    return False
                cur = txn.cursor(db=self._watch)
                pairs = zip(part.entries, itertools.repeat(b""), strict=False)
                if cur.putmulti(pairs, append=True)[1] != len(part.entries):
                    raise BadSnapshot(f"watch snapshot {seal.seq}: a part out of key order")
                for tag, n in counts(part.entries).items():
                    key = _META_COUNT + tag
                    old = txn.get(key, db=self._meta)
                    total = (int.from_bytes(old, "big") if old is not None else 0) + n
                    txn.put(key, total.to_bytes(8, "big"), db=self._meta)
                loaded = st.loaded + len(part.entries)
                last = part.number + 1 == seal.parts
                if last and loaded != seal.entries:
                    raise BadSnapshot(
                        f"watch snapshot {seal.seq}: {loaded} entries, its seal says {seal.entries}"
                    )
                if last:
                    txn.delete(_META_LOADING, db=self._meta)
                    txn.put(_META_APPLIED, seal.seq.to_bytes(8, "big"), db=self._meta)
                    if seal.signed_from:
                        txn.put(_META_SIGNED_FROM, seal.signed_from.to_bytes(8, "big"),
                                db=self._meta)  # fmt: skip
                else:
                    txn.put(_META_LOADING, st._replace(
                        next_index=part.number + 1, search_from=at + 1, loaded=loaded
                    ).encode(), db=self._meta)  # fmt: skip
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None
        return last

    @contextmanager
    def frozen(self) -> Iterator[tuple[int, bytes, Iterator[bytes], int]]:
        """The lists as of one instant, for a snapshot: (last operation applied, the watch
        stream they apply, their entries in key order, the stream's first signed operation or
        0). One read transaction: the workers go on writing meanwhile (LMDB keeps the pages
        this one reads)."""
        with self._env.begin() as txn:
            applied = txn.get(_META_APPLIED, db=self._meta)
            stream = txn.get(_META_STREAM, db=self._meta)
            cur = txn.cursor(db=self._watch)
            yield (
                int.from_bytes(applied, "big") if applied is not None else 0,
                bytes(stream) if stream is not None else b"",
                (bytes(k) for k in cur.iternext(keys=True, values=False)),
                self._signed_from(txn),
            )

    def outcome(self, seq: int) -> Outcome | None:
        with self._env.begin() as txn:
            raw = txn.get(_META_OUTCOME + seq.to_bytes(8, "big"), db=self._meta)
        if raw is None:
            return None
        full, added, removed, total, limit = _OUTCOME.unpack(bytes(raw))
        return Outcome(bool(full), added, removed, total, limit)

    def note_seen(self, last_seq: int, at: int) -> None:
        """The watch stream's last sequence as seen at ``at`` (epoch seconds)."""
        try:
            with self._env.begin(write=True) as txn:
                txn.put(_META_SEEN, last_seq.to_bytes(8, "big") + at.to_bytes(8, "big", signed=True),
                        db=self._meta)  # fmt: skip
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def _note_broken(self, why: str) -> None:
        try:
            with self._env.begin(write=True) as txn:
                txn.put(_META_BROKEN, why.encode(), db=self._meta)
        except lmdb.Error:
            pass  # the refusal itself is raised; the note is for the metrics

    def note_gap(self, why: str) -> None:
        """The replication stopped at a gap (`watchlog.Gone`): said on /metrics."""
        self._note_broken(why)

    def replication(self) -> tuple[int, int, int, str]:
        """(applied, stream's last sequence seen, when seen, why broken or "")."""
        with self._env.begin() as txn:
            applied = txn.get(_META_APPLIED, db=self._meta)
            seen = txn.get(_META_SEEN, db=self._meta)
            broken = txn.get(_META_BROKEN, db=self._meta)
        last, at = (
            (int.from_bytes(seen[:8], "big"), int.from_bytes(seen[8:16], "big", signed=True))
            if seen is not None and len(seen) == 16
            else (0, 0)
        )
        return (
            int.from_bytes(applied, "big") if applied is not None else 0, last, at,
            bytes(broken).decode() if broken is not None else "",
        )  # fmt: skip
