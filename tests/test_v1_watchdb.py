"""The watch lists: the same behaviour in LMDB (`LmdbWatchSet`) and in memory
(`MemoryWatchSet`), keyed hashes only at rest (no serial, no party id in clear), the
secret's file (0600) and its check, all-or-nothing batches, and writers in several
processes."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from crlbuilder.store import format as sf
from responder.v1.watchdb import LmdbWatchSet, WatchDbError
from responder.v1.watchset import (
    MemoryWatchSet,
    SecretError,
    WatchFull,
    WatchKeys,
    WatchSet,
    WatchUpdate,
    load_secret,
)

SECRET = bytes(range(32))
KEYS = [sf.status_key(11, 0x7E57_0000 + n) for n in range(5)]
PARTY = "bank-of-tests"


@pytest.fixture(params=["lmdb", "memory"])
def lists(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WatchSet]:
    if request.param == "memory":
        yield MemoryWatchSet()
        return
    db = LmdbWatchSet(tmp_path / "watch", WatchKeys(SECRET), map_size=1 << 24)
    yield db
    db.close()


def test_batches_add_remove_and_count(lists: WatchSet) -> None:
    assert lists.update(PARTY, KEYS[:3], [], limit=10) == WatchUpdate(3, 0, 0, 0, 3)
    assert lists.update(PARTY, KEYS[2:4], KEYS[0:1] + KEYS[4:5], limit=10) == WatchUpdate(
        added=1, already=1, removed=1, absent=1, total=3
    )
    assert lists.watched(PARTY, KEYS) == [False, True, True, True, False]
    assert lists.watched("other-party", KEYS) == [False] * 5  # each party its own list


def test_a_batch_past_the_bound_changes_nothing(lists: WatchSet) -> None:
    lists.update(PARTY, KEYS[:2], [], limit=3)
    with pytest.raises(WatchFull):
        lists.update(PARTY, KEYS[2:], KEYS[:1], limit=3)  # -1 +3 = 4 > 3
    assert lists.watched(PARTY, KEYS) == [True, True, False, False, False]
    assert lists.update(PARTY, KEYS[2:3], [], limit=3).total == 3


def test_nothing_at_rest_names_a_serial_or_the_party(tmp_path: Path) -> None:
    where = tmp_path / "watch"
    db = LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24)
    db.update(PARTY, KEYS, [], limit=10)
    db.close()
    data = (where / "data.mdb").read_bytes()
    for k in KEYS:
        assert k not in data and k[2:] not in data and k[-4:] not in data
    assert PARTY.encode() not in data
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert stat.S_IMODE((where / "data.mdb").stat().st_mode) == 0o600


def test_lists_survive_a_reopen_and_refuse_another_secret(tmp_path: Path) -> None:
    where = tmp_path / "watch"
    db = LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24)
    db.update(PARTY, KEYS[:2], [], limit=10)
    db.close()
    again = LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24)
    assert again.watched(PARTY, KEYS[:3]) == [True, True, False]
    assert again.count(PARTY) == 2
    again.close()
    with pytest.raises(WatchDbError, match="another secret"):
        LmdbWatchSet(where, WatchKeys(bytes(32)), map_size=1 << 24)


def test_the_lists_files_are_0600_from_creation_and_when_refused(tmp_path: Path) -> None:
    """The files were made with the umask's mode (0644) and narrowed only after the secret
    check: refused, they stayed as they were."""
    where = tmp_path / "watch"
    old = os.umask(0)
    try:
        LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24).close()
        modes = {n: stat.S_IMODE((where / n).stat().st_mode) for n in ("data.mdb", "lock.mdb")}
        assert modes == {"data.mdb": 0o600, "lock.mdb": 0o600}
        for n in modes:
            os.chmod(where / n, 0o644)  # as an older version left them
        with pytest.raises(WatchDbError, match="another secret"):
            LmdbWatchSet(where, WatchKeys(bytes(32)), map_size=1 << 24)
    finally:
        os.umask(old)
    assert {stat.S_IMODE((where / n).stat().st_mode) for n in modes} == {0o600}


def test_the_secret_is_drawn_once_0600_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watch.secret"
    first = load_secret(path, create=True)
    assert len(first) == 32 and load_secret(path, create=True) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.hex() not in repr(WatchKeys(first))
    os.chmod(path, 0o640)
    with pytest.raises(SecretError, match="0600"):
        load_secret(path, create=False)
    os.chmod(path, 0o600)
    path.write_text("abcd\n")
    with pytest.raises(SecretError, match="64 hex digits") as e:
        load_secret(path, create=False)
    assert "abcd" not in str(e.value)
    with pytest.raises(SecretError, match="cannot read"):
        load_secret(tmp_path / "absent", create=False)


def _writer(where: str, party: str, base: int) -> None:
    db = LmdbWatchSet(Path(where), WatchKeys(SECRET), map_size=1 << 24)
    for b in range(10):
        keys = [sf.status_key(11, base + b * 100 + n) for n in range(100)]
        db.update(party, keys, [], limit=10_000)
    db.close()


@pytest.mark.integration
def test_workers_in_several_processes_write_the_same_lists(tmp_path: Path) -> None:
    where = tmp_path / "watch"
    LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(where), PARTY, base)) for base in (0, 10_000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    db = LmdbWatchSet(where, WatchKeys(SECRET), map_size=1 << 24)
    assert db.count(PARTY) == 2000
    assert all(db.watched(PARTY, [sf.status_key(11, n) for n in (0, 999, 10_000, 10_999)]))
    db.close()
