"""A record id reused with other content is refused and quarantined, a replay is skipped
(`crlbuilder.recorddigest`; docs/records.md, "Record ids").

Before, the store kept only the commit that applied an id: a second revocation request under
the id of the first, for another certificate, was counted ``skipped_duplicates`` and its
certificate stayed good, with nothing quarantined.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from crlbuilder import recorddigest
from crlbuilder.ingest import decode_line
from crlbuilder.model import CertStatus
from crlbuilder.store import format as sf
from tests.conftest import BIN, Built
from tests.support.builder import as_of_the_clock
from tests.support.store import dump_store
from tests.test_apply import H1, KEY, World, holder_set, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def revoke(rid: str, serial: int, issuer: str = "auth-card-g1") -> dict[str, object]:
    return {"type": "revocation-request", "id": rid, "recorded_at": ts(10), "serial": serial,
            "issuer": issuer, "reason": "application"}  # fmt: skip


def test_a_reused_id_is_refused_quarantined_once_and_the_first_record_stays(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([revoke("dup-1", 102)])
    ap = world.apply([revoke("dup-1", 101, "sign-card-g1")])  # another file, another record
    assert (ap.summary.applied, ap.summary.duplicates, ap.summary.quarantined) == (0, 0, 1)
    assert world.status("auth-card-g1", 102).revoked  # the first record stays applied
    assert not world.status("sign-card-g1", 101).revoked  # the second: refused, nothing applied
    [q] = world.quarantined()
    assert q["id"] == "dup-1" and q["file"] == "in003.jsonl" and q["line"] == 1
    reason = str(q["reason"])
    assert reason.startswith(recorddigest.REASON) and "\n" not in reason
    assert "101" not in reason and "sign-card" not in reason  # no value of the record
    # the reuse fed again: quarantined once; a third content under the id: quarantined too
    again = world.apply(
        [revoke("dup-1", 101, "sign-card-g1"), revoke("dup-1", 103, "sign-mobile-g1")]
    )
    assert (again.summary.duplicates, again.summary.quarantined) == (1, 1)
    assert [q["line"] for q in world.quarantined()] == [1, 2]
    assert not world.status("sign-mobile-g1", 103).revoked


def test_the_same_record_again_is_a_duplicate_however_its_line_is_written(world: World) -> None:
    """A replay compares the decoded record: the key order and spacing of its line do not count."""
    world.apply(holder_set(H1))
    first = revoke("dup-1", 102)
    world.apply([first])
    before = dump_store(world.store, skip=(sf.DB_META,))
    line = json.dumps(dict(reversed(first.items())), separators=(" , ", " : ")).encode()
    ap = world.apply([line, msgspec.json.encode(first)])
    assert (ap.summary.duplicates, ap.summary.quarantined, ap.summary.commits) == (2, 0, 0)
    assert ap.summary.unchecked == 0
    assert dump_store(world.store, skip=(sf.DB_META,)) == before


def test_the_same_instant_under_another_utc_offset_is_the_same_record(world: World) -> None:
    """A time is an instant (the store keeps it so, the rules count JST days from it): the
    record replayed with its times written under another UTC offset (an export made again in
    UTC, `+09:00` then `Z`) decodes to an equal record and is a duplicate, not a reused id."""
    world.apply(holder_set(H1))
    first = revoke("dup-1", 102)
    world.apply([first])
    at = datetime.fromisoformat(str(first["recorded_at"]))
    again = {**first, "recorded_at": at.astimezone(timezone(timedelta(hours=9))).isoformat()}
    assert again["recorded_at"] != first["recorded_at"]
    assert decode_line(msgspec.json.encode(again)) == decode_line(msgspec.json.encode(first))
    ap = world.apply([again])
    assert (ap.summary.duplicates, ap.summary.quarantined) == (1, 0)
    assert world.quarantined() == []


def test_a_reuse_within_one_batch_is_refused(world: World) -> None:
    world.apply(holder_set(H1))
    ap = world.apply([revoke("dup-1", 102), revoke("dup-1", 101, "sign-card-g1")])
    assert (ap.summary.applied, ap.summary.quarantined) == (1, 1)
    assert world.status("auth-card-g1", 102).revoked
    assert not world.status("sign-card-g1", 101).revoked


def test_a_refused_first_record_leaves_the_id_free_for_the_next(world: World) -> None:
    """A record refused (an unknown serial) keeps no mark: the next record under its id is
    judged afresh, as before (docs/records.md: a refused record may be fed again)."""
    world.apply(holder_set(H1))
    ap = world.apply([revoke("dup-1", 999), revoke("dup-1", 102)])
    assert (ap.summary.applied, ap.summary.quarantined) == (1, 1)
    [q] = world.quarantined()
    assert "unknown serial" in str(q["reason"])
    assert world.status("auth-card-g1", 102).revoked


def _as_older_release(world: World) -> None:
    """Every applied id's value cut to the commit sequence alone, as a builder before release
    1.5 wrote it."""
    db = world.store.dbs[sf.DB_APPLIED]
    with world.store.env.begin(write=True) as txn:
        for key, value in list(txn.cursor(db=db)):
            txn.put(key, bytes(value)[:4], db=db)


def test_an_id_applied_by_an_older_release_is_skipped_and_said(world: World) -> None:
    """A store written before the digest: its ids cannot be compared, a record under one is
    skipped as before and counted ``skipped_duplicates_unchecked``; ids applied from then on
    are compared."""
    world.apply(holder_set(H1))
    world.apply([revoke("old-1", 102)])
    _as_older_release(world)
    with world.store.read() as r:
        commit = r.applied("old-1")
    assert commit is not None and commit > 0  # the older value reads
    ap = world.apply([revoke("old-1", 101, "sign-card-g1"), revoke("new-1", 103, "sign-mobile-g1")])
    assert (ap.summary.duplicates, ap.summary.unchecked, ap.summary.applied) == (1, 1, 1)
    assert ap.summary.as_dict()["skipped_duplicates_unchecked"] == 1
    assert not world.status("sign-card-g1", 101).revoked and world.quarantined() == []
    with world.store.read() as r:
        assert r.applied("old-1") == commit  # nothing rewritten under the old id
    ap = world.apply([revoke("new-1", 104, "auth-mobile-g1")])
    assert ap.summary.quarantined == 1  # an id applied since is compared


def test_the_digest_is_kept_beside_the_id_and_keyed(world: World) -> None:
    world.apply(holder_set(H1))
    rec = revoke("dup-1", 102)
    world.apply([rec])
    with world.store.env.begin() as txn:
        raw = bytes(txn.get(b"dup-1", db=world.store.dbs[sf.DB_APPLIED]))
    with world.store.read() as r:
        seq = r.applied("dup-1")
    digest = recorddigest.RecordDigest(KEY).of(decode_line(msgspec.json.encode(rec)))
    assert raw == sf.pack_u32(seq or 0) + digest and len(digest) == sf.APPLIED_DIGEST_SIZE
    # keyed: another facts key digests it otherwise (no guess of a record confirmed without it)
    other = recorddigest.RecordDigest(bytes(32)).of(decode_line(msgspec.json.encode(rec)))
    assert other != digest
    assert repr(recorddigest.RecordDigest(KEY)) == "RecordDigest(<key not shown>)"


def test_a_reuse_is_told_only_against_a_digest_held() -> None:
    """The decision alone (sans-I/O): no digest held, nothing to compare."""
    assert recorddigest.reused(b"a" * 16, b"b" * 16)
    assert not recorddigest.reused(b"a" * 16, b"a" * 16)
    assert not recorddigest.reused(None, b"a" * 16)


@pytest.mark.integration  # runs crlbuilder build --follow
def test_build_from_the_spool_quarantines_a_reused_id(built: Built, tmp_path: Path) -> None:
    """The defect as met: two spool files, one id, two certificates; the second stayed good."""
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    spool = tmp_path / "store-spool"
    spool.mkdir()
    good = [
        a for a in built.answers if a.status is CertStatus.GOOD and a.family.value == "auth-card"
    ][:2]
    for name, a in zip(("a.jsonl", "b.jsonl"), good, strict=True):
        (spool / name).write_bytes(msgspec.json.encode(
            {"type": "revocation-request", "id": "dup-1", "recorded_at": built.as_of.isoformat(),
             "serial": a.serial, "issuer": a.issuer, "reason": "application"}) + b"\n")  # fmt: skip
    args = as_of_the_clock(built.builder_args(store, tmp_path / "crl"))
    p = subprocess.run(
        [str(BIN / "crlbuilder"), "build", *args, "--follow", "--max-idle", "2",
         "--follow-interval", "0.1"], check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert not (spool / "b.jsonl").exists()  # taken, refused, quarantined
    lines = (tmp_path / "store-quarantine.jsonl").read_bytes().splitlines()
    [q] = [msgspec.json.decode(x) for x in lines]
    assert q["id"] == "dup-1" and q["file"] == "b.jsonl"
    assert str(q["reason"]).startswith(recorddigest.REASON)
    states = []
    for a in good:
        out = subprocess.run(
            [str(BIN / "crlbuilder"), "status", "--store", str(store), "--issuer", a.issuer,
             "--serial", str(a.serial)], capture_output=True, text=True, check=True,
        )  # fmt: skip
        states.append('"status":"revoked"' in out.stdout)
    assert states == [True, False]
