"""Opening the store: what `Store.open` refuses, with a message, before LMDB reads a page.

A truncated data.mdb, a second writer, a directory of other files, a file where the
directory should be: each is refused with `StoreFormatError` (the commands print it as
one line and exit 2), and nothing is changed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store


def _store_of_pages(path: Path, entries: int = 2000) -> None:
    """A store whose last committed page lies well past the first few."""
    store = Store.open(path, readonly=False, map_size=1 << 24)
    try:
        with store.env.begin(write=True) as txn:
            db = store.dbs[sf.DB_META]
            for i in range(entries):
                txn.put(b"audit-%06d" % i, bytes(64), db=db)
    finally:
        store.close()


@pytest.mark.integration
def test_a_truncated_store_is_refused_not_a_bus_error(tmp_path: Path) -> None:
    """LMDB maps data.mdb: a page past the end of a cut file kills the reader with SIGBUS
    (exit -7, no message). The open compares the file with its last committed page first."""
    store = tmp_path / "store"
    _store_of_pages(store)
    data = store / "data.mdb"
    whole = data.stat().st_size
    os.truncate(data, 4 * 4096)
    status = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "status", "--store", str(store),
         "--issuer", "sign-card-g1", "--serial", "1"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 2, status
    assert "truncated" in status.stderr and "Traceback" not in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1, status.stderr
    writer = subprocess.run(
        [sys.executable, "-c", "import sys; from crlbuilder.store.lmdbstore import Store; "
         "Store.open(sys.argv[1], readonly=False, map_size=1 << 24)", str(store)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert writer.returncode == 1 and "StoreFormatError" in writer.stderr, writer
    assert "truncated" in writer.stderr and whole > data.stat().st_size == 4 * 4096


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path: Path) -> None:
    """Two builders on one store would both pre-sign, publish CRLs and write each refusal to
    the quarantine twice: the second writer is refused until the first closes."""
    path = tmp_path / "store"
    first = Store.open(path, readonly=False, map_size=1 << 20)
    try:
        with pytest.raises(sf.StoreFormatError, match="another process is writing this store"):
            Store.open(path, readonly=False, map_size=1 << 20)
    finally:
        first.close()
    first.close()  # a second close releases nothing more
    Store.open(path, readonly=False, map_size=1 << 20).close()


def test_a_new_store_is_made_only_in_a_new_or_empty_directory(tmp_path: Path) -> None:
    """A mistyped --store (a PKI directory, a file) is refused and left as it was: not
    narrowed to 0700, no data.mdb added among its files."""
    other = tmp_path / "pki"
    other.mkdir(mode=0o755)
    (other / "pki.json").write_text("{}")
    with pytest.raises(sf.StoreFormatError, match="holds other files"):
        Store.open(other, readonly=False, map_size=1 << 20)
    assert sorted(p.name for p in other.iterdir()) == ["pki.json"]
    assert stat.S_IMODE(other.stat().st_mode) == 0o755
    with pytest.raises(sf.StoreFormatError, match="not a directory"):
        Store.open(other / "pki.json", readonly=False, map_size=1 << 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    Store.open(empty, readonly=False, map_size=1 << 20).close()
    Store.open(empty, readonly=False, map_size=1 << 20).close()  # a store: opened again


def test_an_empty_data_file_is_no_store(tmp_path: Path) -> None:
    """A zero-length data.mdb (a copy that never started) reads as no store, not as
    LMDB's "Bad file descriptor"."""
    (tmp_path / "data.mdb").touch()
    with pytest.raises(sf.StoreFormatError, match="no status store here"):
        Store.open(tmp_path, readonly=True)


@pytest.mark.parametrize("name", ["lock.mdb", "data.mdb"])
def test_a_store_file_that_is_a_symbolic_link_is_not_written_through(
    tmp_path: Path, name: str
) -> None:
    """A lock.mdb (or data.mdb) linked to another file: the writer's open followed the link,
    LMDB wrote its lock table into that file and the open made it 0600. Refused now, the
    file it points at unchanged."""
    path = tmp_path / "store"
    Store.open(path, readonly=False, map_size=1 << 20).close()
    victim = tmp_path / "victim"
    if name == "data.mdb":
        (path / name).rename(victim)  # a real store file, to be written through the link
    else:
        victim.write_bytes(b"someone else's file\n")
        (path / name).unlink()
    victim.chmod(0o644)
    before = victim.read_bytes()
    (path / name).symlink_to(victim)
    with pytest.raises(sf.StoreFormatError, match="a symbolic link"):
        Store.open(path, readonly=False, map_size=1 << 20).close()
    assert victim.read_bytes() == before
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_store_another_user_owns_is_not_written(tmp_path: Path) -> None:
    """A store directory or data.mdb another user owns (and may change, or link elsewhere,
    under the builder) is refused for writing; reading it is left to the file modes."""
    path = tmp_path / "store"
    Store.open(path, readonly=False, map_size=1 << 20).close()
    for f in (path / "data.mdb", path):
        os.chown(f, 65534, 65534)
        with pytest.raises(sf.StoreFormatError, match="owned by user 65534"):
            Store.open(path, readonly=False, map_size=1 << 20).close()
        os.chown(f, 0, 0)
    Store.open(path, readonly=False, map_size=1 << 20).close()
