"""The store's changes feed: every loss of effect (失効) by commit, in the revoking transaction.

`Commit.revoke` (and an imported CRL's listing) appends ``commit ‖ status key`` to
`DB_CHANGES` in the same write transaction as the status change, with the commit's
marker (its time); `Commit.prune_changes` drops whole commits past the retention and
moves the horizon (`META_CHANGES_FROM`); every store has an identity (`META_STORE_ID`)
so a cursor of another store, or of one rebuilt from the records, is recognised. The
LMDB reader and `MemoryReader` read the feed alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import ChangeEntry, StoreReader, changes_start
from crlbuilder.store.writer import Commit
from responder.v1.cursor import StreamPosition
from responder.v1.feedpos import Start, Verdict, locate

T1 = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
T2 = datetime(2031, 2, 4, 4, 5, 6, tzinfo=UTC)
T3 = datetime(2031, 2, 5, 4, 5, 6, tzinfo=UTC)
ISSUER = 1
KEYS = [sf.status_key(ISSUER, n) for n in (40, 41, 42, 43)]
HOLDER = bytes(range(32))


def _good() -> sf.StatusRecord:
    return sf.StatusRecord(
        version=0, state=sf.STATE_GOOD, category=0, reason=0, family=Family.SIGN_CARD.code,
        not_before=1_900_000_000, not_after=2_100_000_000, revoked_at=0, holder=HOLDER,
    )  # fmt: skip


def _revoke(store: Store, keys: list[bytes], when: datetime) -> int:
    with Commit(store, lambda: when) as c:
        for k in keys:
            st = c.status(k)
            assert st is not None
            c.revoke(
                k, st, category=Category.REQUEST.code, reason=int(Reason.KEY_COMPROMISE),
                at=int(when.timestamp()), recorded_at=int(when.timestamp()),
            )  # fmt: skip
        return c.seq


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Four good certificates (commit 1)."""
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    with Commit(s, lambda: T1) as c:
        for k in KEYS:
            c.add_certificate(k, _good(), Family.SIGN_CARD, None)
    try:
        yield s
    finally:
        s.close()


def _all(r: StoreReader) -> list[ChangeEntry]:
    return list(r.changes(changes_start(0)))


def test_revocation_is_in_the_feed_in_its_own_transaction(store: Store) -> None:
    with store.read() as before:
        seq = _revoke(store, KEYS[2:0:-1], T2)
        assert _all(before) == []  # a view opened before the commit sees none of it
    at = int(T2.timestamp())
    with store.read() as r:
        assert _all(r) == [ChangeEntry(seq, KEYS[1], at), ChangeEntry(seq, KEYS[2], at)]
        assert r.status(KEYS[1]) is not None and r.status(KEYS[1]).revoked  # type: ignore[union-attr]
        first = next(r.changes(changes_start(0)))
        assert list(r.changes(first.after)) == [ChangeEntry(seq, KEYS[2], at)]  # mid-commit
        assert list(r.changes(changes_start(seq))) == []


def test_issuance_and_a_commit_that_revokes_nothing_write_no_change(store: Store) -> None:
    with store.read() as r:
        assert _all(r) == [] and r.count(sf.DB_CHANGES) == 0
        assert r.changes_from() == 0  # a store created with the feed holds it from commit 0


def test_imported_crl_listing_is_a_change(store: Store) -> None:
    with Commit(store, lambda: T2) as c:
        c.list_revoked(KEYS[0], Family.SIGN_CARD.code, 1_950_000_000, int(Reason.SUPERSEDED))
        c.list_revoked_sorted(
            2, Family.AUTH_CARD.code,
            [(sf.status_key(2, 5), 1_950_000_000, 1), (sf.status_key(2, 6), 1_950_000_000, 1)],
        )  # fmt: skip
        seq = c.seq
    with store.read() as r:
        got = [(e.commit, e.key) for e in _all(r)]
    assert got == [(seq, KEYS[0]), (seq, sf.status_key(2, 5)), (seq, sf.status_key(2, 6))]


def test_prune_drops_whole_commits_past_retention_and_moves_the_horizon(store: Store) -> None:
    old = _revoke(store, [KEYS[0], KEYS[1]], T1)
    new = _revoke(store, [KEYS[2]], T2)
    with Commit(store) as c:  # the builder's own write: no clock, no new commit
        assert c.prune_changes(int(T2.timestamp())) == 3  # marker + two entries of ``old``
    with store.read() as r:
        assert [(e.commit, e.key) for e in _all(r)] == [(new, KEYS[2])]
        assert r.changes_from() == old
        assert r.generation().commit == new


def test_every_store_has_its_own_identity_and_a_copy_keeps_it(store: Store, tmp_path: Path) -> None:
    _revoke(store, [KEYS[0]], T1)
    with store.read() as r:
        ident = r.store_id()
    assert len(ident) == sf.STORE_ID_BYTES
    other = Store.open(tmp_path / "other", readonly=False, map_size=1 << 24)
    with other.read() as r:
        assert r.store_id() != ident
    other.close()
    store.close()
    copy_store(tmp_path / "store", tmp_path / "copy", map_size=1 << 24)
    copy = Store.open(tmp_path / "copy", readonly=True, map_size=1 << 24)
    with copy.read() as r:
        assert r.store_id() == ident and len(_all(r)) == 1
    copy.close()


def test_store_from_before_the_feed_starts_it_at_its_commit(store: Store, tmp_path: Path) -> None:
    """A store an older builder wrote has no feed: its horizon is its commit, read-only or once
    a builder opened it (the losses of effect before are not in the feed)."""
    seq = _revoke(store, [KEYS[0]], T1)
    with store.env.begin(write=True) as txn:
        txn.drop(store.dbs[sf.DB_CHANGES], delete=True)
        txn.delete(sf.META_CHANGES_FROM, db=store.dbs[sf.DB_META])
    store.close()
    path = tmp_path / "store"
    ro = Store.open(path, readonly=True, map_size=1 << 24)
    with ro.read() as r:
        assert r.changes_from() == seq and _all(r) == []
    ro.close()
    rw = Store.open(path, readonly=False, map_size=1 << 24)
    with rw.read() as r:
        assert r.changes_from() == seq and _all(r) == []
    rw.close()


def test_memory_reader_reads_the_feed_like_lmdb(store: Store) -> None:
    seq = _revoke(store, [KEYS[3], KEYS[1]], T2)
    at = int(T2.timestamp())
    mem = MemoryReader(
        lost=[(seq, KEYS[3]), (seq, KEYS[1])], commit_times={seq: at}, horizon=0, ident=b"x" * 16
    )
    with store.read() as r:
        for start in (changes_start(0), _all(r)[0].after, changes_start(seq)):
            assert list(mem.changes(start)) == list(r.changes(start))
        assert mem.count(sf.DB_CHANGES) == r.count(sf.DB_CHANGES)


def test_the_last_commit_with_a_change_at_or_before_one_and_its_time(store: Store) -> None:
    """`StoreReader.last_change`: what ties a feed position to the commits the store holds
    (a store restored from an older copy writes its next commits, of the same numbers,
    later: `responder.v1.cursor.Anchor`). LMDB and `MemoryReader` alike."""
    with store.read() as r:
        assert r.last_change(10) is None  # no change yet
    first = _revoke(store, [KEYS[0], KEYS[1]], T2)
    with Commit(store, lambda: T2) as c:  # a commit that revokes nothing: no marker
        c.add_certificate(sf.status_key(ISSUER, 50), _good(), Family.SIGN_CARD, None)
        quiet = c.seq
    second = _revoke(store, [KEYS[2]], T3)
    t2, t3 = int(T2.timestamp()), int(T3.timestamp())
    mem = MemoryReader(
        lost=[(first, KEYS[0]), (first, KEYS[1]), (second, KEYS[2])],
        commit_times={first: t2, second: t3},
    )
    with store.read() as r:
        for reader in (r, mem):
            assert reader.last_change(first - 1) is None
            assert reader.last_change(first) == (first, t2)
            assert reader.last_change(quiet) == (first, t2)
            assert reader.last_change(second) == (second, t3)
            assert reader.last_change(second + 5) == (second, t3)
    with store.read() as r:
        assert r.changes_from() < first
    with Commit(store) as c:
        c.prune_changes(t3)  # ``first`` past retention: its marker and entries dropped
    mem = mem.__class__(lost=[(second, KEYS[2])], commit_times={second: t3}, horizon=first,
                        horizon_at=t2)  # fmt: skip
    with store.read() as r:
        assert r.changes_from() == first
        for reader in (r, mem):  # the horizon, dropped, is still the last with a change
            assert reader.last_change(quiet) == (first, t2)
            assert reader.last_change(first) == (first, t2)
            assert reader.last_change(first - 1) is None  # before the horizon: unknown
            assert reader.last_change(second) == (second, t3)


def test_a_commit_of_the_record_stream_marks_its_batch_and_prune_moves_the_stream_horizon(
    store: Store,
) -> None:
    """The marker of a commit the record stream made names its batch (`StreamGroup`), read
    back on every entry; pruning it moves `META_CHANGES_FROM_SEQ` to the batch's end, so a
    stream cursor before it is refused. A commit of the node's own carries none."""
    g1, g2 = sf.StreamGroup(0, 17), sf.StreamGroup(17, 30)
    with Commit(store, lambda: T1) as c:
        c.group = g1
        st = c.status(KEYS[0])
        assert st is not None
        c.revoke(KEYS[0], st, category=Category.REQUEST.code, reason=1, at=0, recorded_at=0)
        first = c.seq
    own = _revoke(store, [KEYS[1]], T1)
    with Commit(store, lambda: T2) as c:
        c.group = g2
        st = c.status(KEYS[2])
        assert st is not None
        c.revoke(KEYS[2], st, category=Category.REQUEST.code, reason=1, at=0, recorded_at=0)
        last = c.seq
    t1, t2 = int(T1.timestamp()), int(T2.timestamp())
    with store.read() as r:
        assert _all(r) == [
            ChangeEntry(first, KEYS[0], t1, g1), ChangeEntry(own, KEYS[1], t1, None),
            ChangeEntry(last, KEYS[2], t2, g2),
        ]  # fmt: skip
        assert r.changes_from_seq() == 0
        assert list(r.changes(_all(r)[2].after)) == []
        assert next(r.changes(sf.change_key(last, KEYS[2]))).group == g2  # read from inside
    with Commit(store) as c:
        c.prune_changes(t2)
    with store.read() as r:
        assert r.changes_from_seq() == 17 and r.changes_from() == own
        assert [e.group for e in _all(r)] == [g2]
    mem = MemoryReader(lost=[(first, KEYS[0])], groups={first: g1}, commit_times={first: t1})
    assert _all(mem) == [ChangeEntry(first, KEYS[0], t1, g1)]


def test_a_store_named_after_part_of_the_stream_serves_stream_cursors_from_there_only(
    store: Store,
) -> None:
    """A builder of an earlier version applied the stream through 40 without marking its
    commits: the feed in stream positions starts at 40 (a cursor before it would pass those
    commits' changes), `responder.v1.feedpos` refuses it (410) instead."""
    _revoke(store, [KEYS[0]], T1)  # no group: an earlier builder's commit
    with Commit(store) as c:
        c.put_stream_seq(40)
    with Commit(store) as c:
        c.name_feed(b"F" * 16)
    with store.read() as r:
        assert r.feed_id() == b"F" * 16 and r.changes_from_seq() == 40
        assert locate(StreamPosition(b"F" * 16, 30), r) is Verdict.EXPIRED
        assert isinstance(locate(StreamPosition(b"F" * 16, 40), r), Start)
    with Commit(store) as c:  # another stream (made again) named at 50: its feed starts there
        c.put_stream_seq(50)
    with Commit(store) as c:
        c.name_feed(b"G" * 16)
    with store.read() as r:
        assert r.changes_from_seq() == 50
        assert locate(StreamPosition(b"F" * 16, 50), r) is Verdict.OTHER_FEED
