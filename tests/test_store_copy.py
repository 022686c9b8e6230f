"""`crlbuilder store copy` (`copy_store`) never leaves out what the source holds.

The copy is put in the source's place (docs/operations.md, "Stores built before the meminit
fix"): an entry it left out is an entry the store loses, a revocation among them. Two ways it did so
without a word: a database of a later release (the copy knew only its own), and what a
writer still running on the source committed after the copy's snapshot.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import lmdb
import pytest

from crlbuilder.cli import main
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store, snapshot_store
from crlbuilder.store.writer import Commit

T = datetime(2030, 1, 1, tzinfo=UTC)


def _store(path: Path) -> None:
    store = Store.open(path, readonly=False, map_size=1 << 24)
    try:
        with Commit(store, lambda: T) as c:
            c.put_consent(bytes(32), "verifier-1", 1)
    finally:
        store.close()


def test_a_database_of_a_later_release_is_not_dropped_by_the_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later release adds a database (as `taken`, `erased`... were added, no format change):
    the copy of this release knew only its own and dropped it, exit 0. Refused now, nothing
    made at the target."""
    src = tmp_path / "src"
    _store(src)
    env = lmdb.open(str(src), max_dbs=sf.MAX_DBS + 1, map_size=1 << 24)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v", db=env.open_db(b"later", txn=txn))
    finally:
        env.close()
    assert main(["store", "copy", str(src), str(tmp_path / "dst")]) == 2
    assert "databases this release does not know (later)" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


@pytest.mark.integration
def test_a_copy_is_refused_while_a_writer_holds_the_source(tmp_path: Path) -> None:
    """The copy reads one snapshot: a builder still running commits after it (a revocation),
    and the copy put in place lacks it. It took no lock on the source and copied; now a
    writer's lock on the source refuses it, and the copy's lock keeps a writer out."""
    src = tmp_path / "src"
    _store(src)
    holder = (  # a builder in its own process: it opens the store for writing and waits
        "import sys; from crlbuilder.store.lmdbstore import Store; "
        f"s = Store.open({str(src)!r}, readonly=False, map_size=1 << 24); "
        "print('open', flush=True); sys.stdin.read(); s.close()"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        with pytest.raises(sf.StoreFormatError, match="another process is writing"):
            copy_store(src, tmp_path / "dst", map_size=1 << 24)
        assert not (tmp_path / "dst").exists()
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        assert writer.wait(timeout=30) == 0
    assert copy_store(src, tmp_path / "dst", map_size=1 << 24) > 0
    Store.open(src, readonly=False, map_size=1 << 24).close()  # the copy let its lock go


def test_the_copy_holds_every_key_of_every_database(tmp_path: Path) -> None:
    """Every database the release knows, dupsort links included, key for key."""
    src = tmp_path / "src"
    store = Store.open(src, readonly=False, map_size=1 << 24)
    try:
        with store.env.begin(write=True) as txn:
            for n, name in enumerate(sf.ALL_DBS):
                for i in range(3):
                    txn.put(bytes([n, i]) * 11, bytes([i]) * (i + 1), db=store.dbs[name])
            txn.put(sf.link_key(bytes(32), Family.SIGN_CARD), b"a" * 22,
                    db=store.dbs[sf.DB_LINKS])  # fmt: skip
            txn.put(sf.link_key(bytes(32), Family.SIGN_CARD), b"b" * 22,
                    db=store.dbs[sf.DB_LINKS])  # fmt: skip
    finally:
        store.close()
    copy_store(src, tmp_path / "dst", map_size=1 << 24)
    a = Store.open(src, readonly=True, map_size=1 << 24)
    b = Store.open(tmp_path / "dst", readonly=True, map_size=1 << 24)
    try:
        with a.env.begin() as ta, b.env.begin() as tb:
            for name in sf.ALL_DBS:
                got = list(tb.cursor(db=b.dbs[name]))
                assert list(ta.cursor(db=a.dbs[name])) == got, name
    finally:
        a.close()
        b.close()


def test_the_copy_and_the_snapshot_carry_the_withdrawals_and_rules_9s_meta(tmp_path: Path) -> None:
    """What a node bootstrapped from either holds of rules 9: the withdrawals kept, the grants'
    bound (`meta/granted-before`) and the stream's flag (`meta/rules9-from`), read through the
    store's API, not only as bytes."""
    src = tmp_path / "src"
    store = Store.open(src, readonly=False, map_size=1 << 24)
    try:
        with Commit(store, lambda: T) as c:
            c.put_consent(bytes(32), "verifier-1", 5)
            c.put_withdrawal(bytes([1]) * 32, "verifier-1", 7)
            c.put_granted_before(3)
            c.put_rules9_from(42)
        snapshot_store(store, tmp_path / "snap")
    finally:
        store.close()
    copy_store(src, tmp_path / "dst", map_size=1 << 24)
    for place in (tmp_path / "snap", tmp_path / "dst"):
        s = Store.open(place, readonly=True, map_size=1 << 24)
        try:
            with s.read() as r:
                got = (r.consent(bytes(32), "verifier-1"),
                       r.withdrawals_of(bytes([1]) * 32), r.granted_before())  # fmt: skip
            assert got == (5, [("verifier-1", 7)], 3), place
        finally:
            s.close()
        w = Store.open(place, readonly=False, map_size=1 << 24)
        try:
            with Commit(w) as c:
                assert c.rules9_from() == 42, place
        finally:
            w.close()
