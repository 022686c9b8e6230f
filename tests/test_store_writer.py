"""The store writer: every bookkeeping rule of a write transaction is `Commit`'s.

A revocation bumps the status version, writes the CRL entry of this commit and
deletes the stored answer; a change moves the commit sequence and dates it by the
caller's clock; the builder's own state moves neither; a failed or empty commit
writes nothing.
"""

from __future__ import annotations

import gc
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import lmdb
import pytest

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import StoredAnswer
from crlbuilder.store.writer import Commit

BUILD_CLOCK = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
"""A build instant years away from the wall clock: a commit dated by the wall clock shows."""
ISSUER = 1
KEY = sf.status_key(ISSUER, 42)
OTHER = sf.status_key(ISSUER, 43)
HOLDER = bytes(range(32))


def _clock() -> datetime:
    return BUILD_CLOCK


def _good(version: int = 0, holder: bytes = HOLDER) -> sf.StatusRecord:
    return sf.StatusRecord(
        version=version, state=sf.STATE_GOOD, category=0, reason=0, family=Family.SIGN_CARD.code,
        not_before=1_900_000_000, not_after=2_100_000_000, revoked_at=0, holder=holder,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Two issued certificates (commit 1) and a pre-signed answer of each."""
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    with Commit(s, _clock) as c:
        c.add_certificate(KEY, _good(), Family.SIGN_CARD, b"sealed")
        c.add_certificate(OTHER, _good(), Family.SIGN_CARD, b"sealed too")
    with Commit(s) as c:
        for k in (KEY, OTHER):
            c.put_answer(k, StoredAnswer(1, 10, 2_000_000_000, b"signerid", b"stem"))
    try:
        yield s
    finally:
        s.close()


def test_revoke_bumps_version_drops_the_stored_answer_and_dates_the_commit(store: Store) -> None:
    with store.read() as r:
        before = r.generation().commit
        st = r.status(KEY)
    assert before == 1 and st is not None and st.version == 1
    with Commit(store, _clock) as c:
        assert c.seq == before + 1
        new = c.revoke(
            KEY, st, category=Category.REQUEST.code, reason=int(Reason.KEY_COMPROMISE),
            at=1_950_000_000, recorded_at=1_950_000_100,
        )  # fmt: skip
    with store.read() as r:
        assert r.generation().commit == before + 1
        assert r.committed_at() == int(BUILD_CLOCK.timestamp())
        assert r.status(KEY) == new
        assert new.version == before + 1 and new.revoked and new.revoked_at == 1_950_000_000
        assert r.revoked_entry(KEY) == sf.RevokedEntry(
            revoked_at=1_950_000_000, reason=int(Reason.KEY_COMPROMISE),
            category=Category.REQUEST.code, commit=before + 1, recorded_at=1_950_000_100,
        )  # fmt: skip
        assert r.stored_answer(KEY) is None  # never served again for the new version
        assert r.stored_answer(OTHER) is not None  # the neighbour's answer stays
        assert r.holder_certs(HOLDER, Family.SIGN_CARD) == [KEY, OTHER]
        # its four facts are read only for a certificate in effect (Act §18(3)): gone with it
        assert r.sealed_facts(KEY) is None
        assert r.sealed_facts(OTHER) == b"sealed too"


def test_new_version_alone_invalidates_cached_answers(store: Store) -> None:
    with Commit(store, _clock) as c:
        st = c.status(OTHER)
        assert st is not None
        c.new_version(OTHER, st)
    with store.read() as r:
        st = r.status(OTHER)
        assert st is not None and st.version == 2 and not st.revoked
        assert r.generation().commit == 2


def test_builder_state_moves_no_commit(store: Store) -> None:
    with store.read() as r:
        before = (r.generation().commit, r.committed_at())
    with Commit(store) as c:
        c.put_crl_state(ISSUER, sf.CrlState(number=3, next_update=99))
        c.put_ocsp_state(ISSUER, sf.OcspState(produced_at=5, next_update=77))
        build = c.bump_build(500)
    with store.read() as r:
        assert (r.generation().commit, r.committed_at()) == before
        assert r.generation().build == build == 1
        assert r.crl_state(ISSUER).number == 3 and r.promised_next_update(ISSUER) == 99
        # the run's promise, named by its build: an issuer with no CRL and no answer has it
        assert r.vouched() == (1, 500) and r.promised_next_update(ISSUER + 1) == 500


def test_a_change_without_the_callers_clock_is_refused_and_nothing_written(store: Store) -> None:
    with pytest.raises(RuntimeError, match="clock"), Commit(store) as c:
        c.put_consent(HOLDER, "verifier-1", 5)
    with store.read() as r:
        assert r.consent(HOLDER, "verifier-1") is None and r.generation().commit == 1


def test_an_exception_aborts_the_whole_commit(store: Store) -> None:
    with store.read() as r:
        snapshot = r.snapshot()
    with pytest.raises(ValueError), Commit(store, _clock) as c:
        st = c.status(KEY)
        assert st is not None
        c.revoke(KEY, st, category=Category.REQUEST.code, reason=0, at=1, recorded_at=1)
        raise ValueError("refused half way")
    with store.read() as r:
        st = r.status(KEY)
        assert st is not None and not st.revoked and r.revoked_entry(KEY) is None
        assert r.stored_answer(KEY) is not None and r.snapshot() == snapshot


def test_an_empty_commit_is_not_written(store: Store) -> None:
    with store.read() as r:
        snapshot = r.snapshot()
    with Commit(store, _clock) as c:
        assert c.status(KEY) is not None
    with store.read() as r:
        assert r.snapshot() == snapshot and r.generation().commit == 1


def test_erase_keeps_only_that_the_certificate_lost_effect_ord_70_1_iii(store: Store) -> None:
    with Commit(store, _clock) as c:
        st = c.status(KEY)
        assert st is not None
        c.revoke(KEY, st, category=Category.REQUEST.code, reason=1, at=1_950_000_000,
                 recorded_at=1_950_000_000)  # fmt: skip
    with Commit(store, _clock) as c:
        st = c.status(KEY)
        assert st is not None
        c.erase(KEY, st, keep_time=False)
    with store.read() as r:
        st = r.status(KEY)
        assert st is not None and st.erased and (st.category, st.reason, st.revoked_at) == (0, 0, 0)
        assert st.version == 3 == r.generation().commit
        assert r.revoked_entry(KEY) is None and r.stored_answer(KEY) is None


def test_imported_crl_entries_bulk_and_one_by_one_write_the_same_bytes(tmp_path: Path) -> None:
    entries = [(sf.status_key(2, n), 1_950_000_000 + n, n % 6) for n in (5, 9, 700)]

    def stored(path: Path, bulk: bool) -> dict[str, list[tuple[bytes, bytes]]]:
        s = Store.open(path, readonly=False, map_size=1 << 24)
        try:
            with Commit(s, _clock) as c:
                if bulk:
                    c.list_revoked_sorted(2, Family.AUTH_CARD.code, entries)
                else:
                    for key, at, reason in entries:
                        c.list_revoked(key, Family.AUTH_CARD.code, at, reason)
            with s.env.begin() as txn:
                return {
                    name.decode(): [(bytes(k), bytes(v)) for k, v in txn.cursor(db=s.dbs[name])]
                    for name in (sf.DB_STATUS, sf.DB_REVOKED)
                }
        finally:
            s.close()

    one_by_one = stored(tmp_path / "a", bulk=False)
    assert one_by_one == stored(tmp_path / "b", bulk=True)
    key, value = one_by_one["status"][0]
    assert key == entries[0][0]
    assert sf.unpack_status(value) == sf.StatusRecord(
        version=1, state=sf.STATE_REVOKED, category=0, reason=5, family=Family.AUTH_CARD.code,
        not_before=0, not_after=0, revoked_at=1_950_000_005, holder=bytes(32),
    )  # fmt: skip
    assert sf.unpack_revoked(one_by_one["revoked"][0][1]) == sf.RevokedEntry(
        revoked_at=1_950_000_005, reason=5, category=0, commit=1, recorded_at=1_950_000_005
    )


def test_revoked_category_read_in_place_agrees_with_the_entry() -> None:
    for category in (0, 1, 5, 255):
        e = sf.RevokedEntry(revoked_at=-7, reason=9, category=category, commit=3, recorded_at=1)
        assert sf.revoked_category(e.pack()) == sf.unpack_revoked(e.pack()).category == category


def test_a_read_only_store_refuses_a_commit(store: Store) -> None:
    path = store.path
    store.close()
    ro = Store.open(path, readonly=True)
    try:
        with pytest.raises(sf.StoreFormatError, match="read-only"):
            Commit(ro, _clock)
    finally:
        ro.close()


def test_pack_revoked_entry_is_the_named_tuples_bytes() -> None:
    for at, reason, category, commit, recorded in [
        (1_900_000_000, 1, 1, 7, 1_900_000_000),
        (-1, 0, 0, 0, 0),
        (2**62, 10, 6, 2**32 - 1, 2**62 - 5),
    ]:
        want = sf.RevokedEntry(
            revoked_at=at, reason=reason, category=category, commit=commit, recorded_at=recorded
        ).pack()
        assert sf.pack_revoked_entry(at, reason, category, commit, recorded) == want


def test_holder_certs_on_the_commits_cursor_sees_its_own_links(store: Store) -> None:
    """A commit keeps one links cursor: every call sees the links written before it."""
    holder = bytes(range(1, 33))
    new, other = sf.status_key(ISSUER, 1042), sf.status_key(ISSUER, 1043)
    with Commit(store, _clock) as c:
        assert c.holder_certs(holder, Family.SIGN_CARD) == []
        c.add_certificate(new, _good(holder=holder), Family.SIGN_CARD, None)
        assert c.holder_certs(holder, Family.SIGN_CARD) == [new]
        assert c.holder_certs(holder, Family.AUTH_CARD) == []
        c.add_certificate(other, _good(holder=holder), Family.SIGN_CARD, None)
        assert c.holder_certs(holder, Family.SIGN_CARD) == [new, other]
    with store.read() as r:
        assert r.holder_certs(holder, Family.SIGN_CARD) == [new, other]


def test_link_key_and_unpack_status_keep_their_bytes() -> None:
    for family in Family:
        assert sf.link_key(HOLDER, family) == HOLDER + bytes((family.code,))
    st = _good(version=7)._replace(state=sf.STATE_REVOKED, category=1, reason=1, revoked_at=5)
    back = sf.unpack_status(st.pack())
    assert back == st and type(back) is sf.StatusRecord and back.revoked


def _failed(store: Store, clock: Callable[[], datetime], n: int, verifier: str) -> BaseException:
    """The exception of a commit of ``n`` consents (the commit object only in its frames)."""
    try:
        with Commit(store, clock) as c:
            for i in range(n):
                c.put_consent(i.to_bytes(32, "big"), verifier, i)
    except Exception as e:
        return e
    return AssertionError("committed")


def _commits_again(store: Store, kept: list[BaseException]) -> bool:
    """Whether a new commit gets through within 10 s (in a thread: a hang is a False), while
    ``kept`` holds the failed commit's exception. On a hang ``kept`` is let go, which ends the
    failed transaction, so that the thread and the test end."""
    done: list[bool] = []

    def again() -> None:
        with Commit(store, _clock) as c:
            c.put_consent(HOLDER, "after", 1)
        done.append(True)

    t = threading.Thread(target=again, daemon=True)
    t.start()
    t.join(10)
    hung = t.is_alive()
    kept.clear()
    gc.collect()
    t.join(10)
    return not hung and done == [True]


def test_a_commit_failing_as_it_ends_lets_go_of_the_write_lock(store: Store) -> None:
    """The body wrote, then the commit's own bookkeeping failed (here the caller's clock): the
    write transaction stayed open for as long as the exception was kept, holding LMDB's write
    lock, and the process's next commit waited for ever. It is aborted now: nothing of it
    written, the next commit goes through."""

    def broken() -> datetime:
        raise OSError("clock gone")

    with store.read() as r:
        before = r.generation()
    kept = [_failed(store, broken, 1, "v")]  # a caller that logs it, a loop that retries
    assert _commits_again(store, kept)
    with store.read() as r:
        assert r.consent(bytes(32), "v") is None
        assert r.consent(HOLDER, "after") == 1
        assert r.generation().commit == before.commit + 1


def _map_full_at_the_end(tmp_path: Path) -> tuple[Store, list[BaseException]]:
    """A new store whose first commit failed of MDB_MAP_FULL in its own bookkeeping put, after
    every write of its body got through, and that failure (nothing else holds it)."""
    for n in range(150, 400):  # the first size whose failure comes from the commit's own put
        s = Store.open(tmp_path / str(n), readonly=False, map_size=1 << 16)
        failed = _failed(s, _clock, n, "v" * 100)
        # LMDB's error as `Commit` raises it, a `StoreWriteError` naming the store (2ec4ace)
        e = failed.__cause__ if isinstance(failed, sf.StoreWriteError) else failed
        if isinstance(e, lmdb.MapFullError):
            tb = traceback.extract_tb(e.__traceback__)
            if "_end" in [f.name for f in tb] and "META_" in (tb[-1].line or ""):
                return s, [failed]
        s.close()
    pytest.fail("no map-full came from the commit's own writes")


def test_a_map_full_as_the_commit_ends_writes_nothing_and_lets_go(tmp_path: Path) -> None:
    """MDB_MAP_FULL can come from the commit's own writes (its sequence, its time), after
    every write of the body got through: the builder is told (the exception), nothing of the
    transaction is in the store, and the next commit goes through (it waited for ever)."""
    s, kept = _map_full_at_the_end(tmp_path)  # kept: a caller that logs it, a loop that retries
    try:
        assert _commits_again(s, kept)
        with s.read() as r:
            assert (r.generation().commit, r.count(sf.DB_CONSENTS)) == (1, 1)
            assert r.consent(HOLDER, "after") == 1
    finally:
        s.close()
