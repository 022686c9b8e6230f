"""What the store file holds at rest: live data only, never leftover heap bytes (Act §44, §45).

LMDB writes whole pages; opened with ``meminit=False`` it leaves the unused part
of each page as the builder's heap had it, and the builder's heap holds the raw
record lines (the four facts in clear) and the key files it read.
"""

from __future__ import annotations

import gc
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import lmdb
import msgspec
import pytest

from crlbuilder.apply import Applier, register_issuers
from crlbuilder.build import issuer_table
from crlbuilder.cli import main
from crlbuilder.demo import synth
from crlbuilder.ingest import Quarantine, read_file
from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store
from crlbuilder.store.writer import Commit

KEY = bytes(range(32))


def _dirty_heap(*blobs: bytes) -> None:
    """Leave ``blobs`` in freed heap chunks of a page's size, where LMDB's next page comes from."""
    junk = [bytearray(b[i : i + 4000]) for b in blobs for i in range(0, len(b), 4000)]
    del junk
    gc.collect()


def _facts(records: Path) -> tuple[set[bytes], set[bytes]]:
    names, addresses = set(), set()
    for f in sorted(records.glob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            rec = msgspec.json.decode(line)
            if rec.get("facts"):
                names.add(rec["facts"]["name"].encode())
                addresses.add(rec["facts"]["address"].encode())
    return names, addresses


def test_store_file_holds_no_names_addresses_or_pem_act_44(
    demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """Apply a population file by file with the heap full of its lines and a PEM key: none of it
    reaches data.mdb (with meminit=False, 51 of 588 names were found this way)."""
    pki_dir, manifest = demo_pki
    pop = tmp_path / "pop"
    synth.synth(manifest, pop, holders=400, seed=11, as_of=datetime(2026, 6, 1, tzinfo=UTC),
                samples=0)  # fmt: skip
    pem = (pki_dir / manifest.issuers[0].ocsp_key).read_bytes()
    assert pem.startswith(b"-----BEGIN")
    store = Store.open(tmp_path / "store", readonly=False, map_size=1 << 28)
    register_issuers(store, issuer_table(manifest))
    quarantine = Quarantine(tmp_path / "q.jsonl")
    try:
        for f in sorted((pop / "records").glob("*.jsonl")):
            _dirty_heap(f.read_bytes(), pem)
            ap = Applier(store, facts_key=KEY, quarantine=quarantine, batch_size=200)
            ap.run(read_file(f))
            assert ap.summary.applied > 0
    finally:
        store.close()
    data = (tmp_path / "store" / "data.mdb").read_bytes()
    names, addresses = _facts(pop / "records")
    assert names and addresses
    assert [n.decode() for n in names if n in data] == []
    assert [a.decode() for a in addresses if a in data] == []
    assert b"-----BEGIN" not in data and b"PRIVATE KEY" not in data
    assert b'"facts"' not in data


def test_store_copy_keeps_live_data_only(tmp_path: Path) -> None:
    """`crlbuilder store copy` rewrites a store written before the fix: deleted bytes left in its
    pages (a byte copy, even LMDB's compacting one, keeps them) are not in the copy."""
    old = tmp_path / "old"
    store = Store.open(old, readonly=False, map_size=1 << 26)
    store.close()
    marker = "試験 花子 東京都千代田区9-9-9".encode()
    env = lmdb.open(str(old), max_dbs=sf.MAX_DBS, meminit=False, map_size=1 << 26)
    applied = env.open_db(sf.DB_APPLIED)
    with env.begin(write=True) as txn:
        for i in range(200):
            txn.put(b"r%05d" % i, sf.pack_u32(i), db=applied)
        txn.put(b"r00100x", marker * 20, db=applied)
    with env.begin(write=True) as txn:
        txn.delete(b"r00100x", db=applied)
    env.close()
    assert marker in (old / "data.mdb").read_bytes()  # the leftover a byte copy would keep

    assert main(["store", "copy", str(old), str(tmp_path / "new")]) == 0
    assert marker not in (tmp_path / "new" / "data.mdb").read_bytes()
    a, b = Store.open(old, readonly=True), Store.open(tmp_path / "new", readonly=True)
    try:
        with a.env.begin() as ta, b.env.begin() as tb:
            for name in sf.ALL_DBS:
                assert list(ta.cursor(db=a.dbs[name])) == list(tb.cursor(db=b.dbs[name])), name
    finally:
        a.close()
        b.close()
    with pytest.raises(sf.StoreFormatError, match="already there"):
        copy_store(old, tmp_path / "new")


def test_store_copy_writes_full_pages(tmp_path: Path) -> None:
    """The copy appends each database in key order: status records inserted in random serial
    order (as a build meets them) fill pages about two thirds; the copy's pages are full, and a
    holder with several certificates (``links``, dupsort) keeps every one."""
    import random

    old = tmp_path / "old"
    store = Store.open(old, readonly=False, map_size=1 << 27)
    rng = random.Random(5)
    holder = bytes(32)
    status, links = store.dbs[sf.DB_STATUS], store.dbs[sf.DB_LINKS]
    with store.env.begin(write=True) as txn:
        for _ in range(20_000):
            key = sf.status_key(1, rng.getrandbits(64))
            txn.put(key, bytes(sf.STATUS_RECORD_BYTES), db=status)
            txn.put(sf.link_key(holder, Family.SIGN_CARD), key, db=links)
    store.close()
    copy_store(old, tmp_path / "new", map_size=1 << 27)

    def leaves(path: Path) -> tuple[int, int, int]:
        s = Store.open(path, readonly=True, map_size=1 << 27)
        try:
            with s.env.begin() as txn:
                st = txn.stat(s.dbs[sf.DB_STATUS])
                return st["leaf_pages"], st["entries"], txn.stat(s.dbs[sf.DB_LINKS])["entries"]
        finally:
            s.close()

    before, entries, linked = leaves(old)
    after, copied, copied_links = leaves(tmp_path / "new")
    assert (copied, copied_links) == (entries, linked) == (20_000, 20_000)
    node = 8 + sf.KEY_BYTES + sf.STATUS_RECORD_BYTES + 2  # header, key, value, slot
    full = -(-entries // ((4096 - 16) // node))
    assert after <= full + 1 < before


def test_store_copy_that_fails_leaves_no_store(tmp_path: Path) -> None:
    """A copy cut short (here its map is full) left a part of a store at the target, which
    opened as a store; now nothing is left, and the error says why."""
    old = tmp_path / "old"
    store = Store.open(old, readonly=False, map_size=1 << 26)
    with store.env.begin(write=True) as txn:
        for i in range(20_000):
            txn.put(sf.status_key(1, i + 1), bytes(sf.STATUS_RECORD_BYTES),
                    db=store.dbs[sf.DB_STATUS])  # fmt: skip
    store.close()
    with pytest.raises(sf.StoreFormatError, match="the copy failed"):
        copy_store(old, tmp_path / "new", map_size=1 << 20)
    assert not (tmp_path / "new").exists()
    (tmp_path / "given").mkdir()
    with pytest.raises(sf.StoreFormatError):
        copy_store(old, tmp_path / "given", map_size=1 << 20)
    assert list((tmp_path / "given").iterdir()) == []


def test_store_files_are_the_owners_only(tmp_path: Path) -> None:
    """data.mdb and lock.mdb are created 0600 (and their directory 0700), whatever the umask:
    the store holds who holds which certificate."""
    old = os.umask(0o022)
    try:
        Store.open(tmp_path / "store", readonly=False, map_size=1 << 20).close()
        copy_store(tmp_path / "store", tmp_path / "copy")
    finally:
        os.umask(old)
    (tmp_path / "store" / "data.mdb").chmod(0o644)  # a store made before: opened for writing
    Store.open(tmp_path / "store", readonly=False, map_size=1 << 20).close()
    for d in (tmp_path / "store", tmp_path / "copy"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        for f in ("data.mdb", "lock.mdb"):
            assert stat.S_IMODE((d / f).stat().st_mode) == 0o600, (
                d / f,
                oct((d / f).stat().st_mode),
            )


def test_a_deleted_value_stays_in_free_pages_until_the_store_is_copied(tmp_path: Path) -> None:
    """What docs/store.md says of free pages: LMDB zeroes the unused bytes of the pages it
    writes, but a page freed by a deletion (an erasure past retention, Ord §70(1)(iii), a
    delivered outbox line, a move-out notice deleted) keeps its bytes in data.mdb until LMDB
    reuses it; `crlbuilder store copy` writes live data only."""
    path = tmp_path / "store"
    store = Store.open(path, readonly=False, map_size=1 << 24)
    marker = b'{"record_id":"erased-0001","notified_at":1700000000,"planned_date":"2031-04-01"}'
    clock = lambda: datetime(2030, 1, 1, tzinfo=UTC)  # noqa: E731
    try:
        with Commit(store, clock) as c:
            for i in range(200):
                c._put(sf.DB_PENDING, bytes([i]) * 32, marker)
        with Commit(store, clock) as c:
            for i in range(200):
                c._delete(sf.DB_PENDING, bytes([i]) * 32)
        with Commit(store, clock) as c:
            c.put_consent(KEY, "v", 1)
    finally:
        store.close()
    assert marker in (path / "data.mdb").read_bytes()
    copy_store(path, tmp_path / "copy", map_size=1 << 24)
    assert marker not in (tmp_path / "copy" / "data.mdb").read_bytes()
