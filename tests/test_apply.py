"""Applying records to the store: the rules end to end on small hand-written histories."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder.apply import Applier, FactsCipher, register_issuers
from crlbuilder.ingest import Quarantine, read_file
from crlbuilder.model import Category, Family, FourFacts, Reason, Sex
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.verifiers import ConsentVerifiers, RegistryReadError, Verifiers, parse_verifiers
from tests.support.store import dump_store

T0 = datetime(2024, 1, 10, 0, 0, tzinfo=UTC)
KEY = bytes(range(32))
H1 = "11" * 32
H2 = "22" * 32
ISSUERS = [
    sf.IssuerMeta(index=1, id="sign-card-g1", family=Family.SIGN_CARD, generation=1, cert_der=b""),
    sf.IssuerMeta(index=2, id="sign-card-g2", family=Family.SIGN_CARD, generation=2, cert_der=b""),
    sf.IssuerMeta(
        index=3, id="sign-mobile-g1", family=Family.SIGN_MOBILE, generation=1, cert_der=b""
    ),
    sf.IssuerMeta(index=4, id="auth-card-g1", family=Family.AUTH_CARD, generation=1, cert_der=b""),
    sf.IssuerMeta(
        index=5, id="auth-mobile-g1", family=Family.AUTH_MOBILE, generation=1, cert_der=b""
    ),
]
INDEX = {i.id: i.index for i in ISSUERS}
FACTS = {"name": "試験 太郎", "sex": "1", "birth_date": "319800915", "address": "東京都千代田区1-1"}


def ts(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


_n = 0


def rid() -> str:
    global _n
    _n += 1
    return f"t{_n}"


def issuance(
    serial: int, issuer: str, holder: str, day: float = 0, **kw: object
) -> dict[str, object]:
    fam = issuer.rsplit("-", 1)[0]
    rec: dict[str, object] = {
        "type": "issuance", "id": rid(), "recorded_at": ts(day), "serial": serial,
        "family": fam, "issuer": issuer, "not_before": ts(day), "not_after": ts(day + 1500),
        "holder": holder,
    }  # fmt: skip
    if fam.startswith("sign"):
        rec["facts"] = FACTS
    rec.update(kw)
    return rec


def two_holders(w: World) -> None:
    """H1's sign certificates end on days 300 (card) and 290 (mobile), its auth card on day 300;
    H2's sign card runs to day 1400 (the expiry and consent erasure tests' population)."""
    w.apply([
        issuance(101, "sign-card-g1", H1, 0, not_after=ts(300)),
        issuance(103, "sign-mobile-g1", H1, 1, card_serial=101, not_after=ts(290)),
        issuance(102, "auth-card-g1", H1, 0, not_after=ts(300)),
        issuance(201, "sign-card-g1", H2, 0, not_after=ts(1400)),
    ])  # fmt: skip


def holder_set(holder: str, day: float = 0, base: int = 100) -> list[dict[str, object]]:
    """A holder with all four families (sign-card from g1)."""
    return [
        issuance(base + 1, "sign-card-g1", holder, day),
        issuance(base + 2, "auth-card-g1", holder, day),
        issuance(
            base + 3,
            "sign-mobile-g1",
            holder,
            day + 1,
            card_serial=base + 1,
            not_after=ts(day + 1400),
        ),
        issuance(
            base + 4,
            "auth-mobile-g1",
            holder,
            day + 1,
            card_serial=base + 2,
            not_after=ts(day + 1400),
        ),
    ]


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = Store.open(tmp / "store", readonly=False, map_size=1 << 26)
        register_issuers(self.store, ISSUERS)
        self.quarantine = Quarantine(tmp / "quarantine.jsonl")
        self.files = 0
        self.verifiers: Verifiers | None = Verifiers(eligible=frozenset({"bank"}))

    def apply(
        self, records: list[dict[str, object]] | list[bytes], batch_size: int = 1000
    ) -> Applier:
        self.files += 1
        path = self.tmp / f"in{self.files:03}.jsonl"
        lines = [r if isinstance(r, bytes) else msgspec.json.encode(r) for r in records]
        path.write_bytes(b"\n".join(lines) + b"\n")
        return self.apply_file(path, batch_size)

    def apply_file(self, path: Path, batch_size: int = 1000) -> Applier:
        ap = Applier(self.store, facts_key=KEY, quarantine=self.quarantine, batch_size=batch_size,
                     notices_path=self.tmp / "notices.jsonl", verifiers=self.verifiers)  # fmt: skip
        ap.run(read_file(path))
        return ap

    def status(self, issuer: str, serial: int) -> sf.StatusRecord:
        with self.store.read() as r:
            st = r.status(sf.status_key(INDEX[issuer], serial))
        assert st is not None
        return st

    def quarantined(self) -> list[dict[str, object]]:
        p = self.tmp / "quarantine.jsonl"
        if not p.exists():
            return []
        return [msgspec.json.decode(line) for line in p.read_bytes().splitlines()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def test_issuance_good_and_facts_sealed(world: World) -> None:
    ap = world.apply(holder_set(H1))
    assert ap.summary.applied == 4 and ap.summary.quarantined == 0
    st = world.status("sign-card-g1", 101)
    assert st.state == sf.STATE_GOOD and st.family_enum is Family.SIGN_CARD
    with world.store.env.begin() as txn:
        key = sf.status_key(1, 101)
        sealed = bytes(txn.get(key, db=world.store.dbs[sf.DB_HOLDERS]))
        assert "試験".encode() not in sealed
        assert FactsCipher(KEY).open(key, sealed) == FourFacts(
            name="試験 太郎", sex=Sex.MALE, birth_date="319800915", address="東京都千代田区1-1"
        )
        assert txn.get(sf.status_key(4, 102), db=world.store.dbs[sf.DB_HOLDERS]) is None
    with world.store.read() as r:
        assert len(r.holder_certs(bytes.fromhex(H1), Family.SIGN_CARD)) == 1


def test_act_11_request_revokes_and_cascades_to_mobile(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": "sign-card-g1", "reason": "loss"}])  # fmt: skip
    card = world.status("sign-card-g1", 101)
    assert card.revoked and card.category_enum is Category.REQUEST
    assert card.reason_enum is Reason.KEY_COMPROMISE
    mobile = world.status("sign-mobile-g1", 103)
    assert mobile.revoked and mobile.category_enum is Category.CARD_CASCADE
    assert mobile.revoked_at == card.revoked_at
    # the auth side is untouched
    assert not world.status("auth-card-g1", 102).revoked
    assert not world.status("auth-mobile-g1", 104).revoked


def test_act_12_31_fact_change_revokes_sign_not_auth(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([{"type": "resident-change", "id": rid(), "recorded_at": ts(20), "holder": H1,
                  "change": "fact-change", "fact": "address"}])  # fmt: skip
    assert world.status("sign-card-g1", 101).category_enum is Category.RESIDENT_CHANGE
    assert world.status("sign-mobile-g1", 103).category_enum is Category.CARD_CASCADE
    assert not world.status("auth-card-g1", 102).revoked


def test_ord_20_minor_correction_revokes_nothing(world: World) -> None:
    world.apply(holder_set(H1))
    ap = world.apply([{"type": "resident-change", "id": rid(), "recorded_at": ts(20), "holder": H1,
                       "change": "minor-correction", "correction": "lot-number"}])  # fmt: skip
    assert ap.summary.applied == 1 and ap.summary.no_effect == 1
    assert not any(
        world.status(i, s).revoked for i, s in [("sign-card-g1", 101), ("auth-card-g1", 102)]
    )


def test_act_31_1_death_revokes_everything(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([{"type": "resident-change", "id": rid(), "recorded_at": ts(30), "holder": H1,
                  "change": "record-deletion", "cause": "death"}])  # fmt: skip
    for issuer, serial in [
        ("sign-card-g1", 101),
        ("auth-card-g1", 102),
        ("sign-mobile-g1", 103),
        ("auth-mobile-g1", 104),
    ]:
        assert world.status(issuer, serial).revoked


def test_act_31_2_thirty_day_rule_fires_on_next_record_and_on_sweep(world: World) -> None:
    world.apply(holder_set(H1) + holder_set(H2, base=200))
    planned = (T0 + timedelta(days=40)).date().isoformat()
    world.apply([
        {"type": "resident-change", "id": rid(), "recorded_at": ts(35), "holder": H1,
         "change": "move-out-notice", "planned_date": planned},
        {"type": "resident-change", "id": rid(), "recorded_at": ts(35), "holder": H2,
         "change": "move-out-notice", "planned_date": planned},
        # H2 moves in within 30 days: nothing lapses
        {"type": "resident-change", "id": rid(), "recorded_at": ts(50), "holder": H2,
         "change": "move-in-notice"},
    ])  # fmt: skip
    assert not world.status("auth-card-g1", 102).revoked
    # H1's next record (a consent) is later than the lapse: the lapse applies first
    world.apply([{"type": "consent", "id": rid(), "recorded_at": ts(90), "holder": H1,
                  "verifier": "bank", "granted": True}])  # fmt: skip
    st = world.status("auth-card-g1", 102)
    assert st.revoked and st.category_enum is Category.RESIDENT_CHANGE
    lapse = datetime.fromisoformat(planned) + timedelta(days=31) - timedelta(hours=9)
    assert st.revoked_at == int(lapse.replace(tzinfo=UTC).timestamp())
    assert world.status("auth-mobile-g1", 104).category_enum is Category.CARD_CASCADE
    assert not world.status("sign-card-g1", 101).revoked
    assert not world.status("auth-card-g1", 202).revoked


def test_act_31_2_sweep_as_of_build_time(world: World) -> None:
    world.apply(holder_set(H1))
    planned = (T0 + timedelta(days=40)).date()
    ap = world.apply([{"type": "resident-change", "id": rid(), "recorded_at": ts(35), "holder": H1,
                       "change": "move-out-notice", "planned_date": planned.isoformat()}])  # fmt: skip
    assert ap.sweep_lapses(T0 + timedelta(days=60)) == 0
    assert not world.status("auth-card-g1", 102).revoked
    assert ap.sweep_lapses(T0 + timedelta(days=80)) == 2  # auth-card and its mobile cascade
    assert world.status("auth-card-g1", 102).revoked


def test_act_14_ca_compromise_revokes_generation_and_cascades(world: World) -> None:
    world.apply([*holder_set(H1), issuance(300, "sign-card-g2", H2)])
    ap = world.apply(
        [{"type": "ca-compromise", "id": rid(), "recorded_at": ts(100), "issuer": "sign-card-g1"}]
    )
    assert ap.summary.revocations == {"ca-compromise": 1, "card-cascade": 1}
    assert world.status("sign-card-g1", 101).reason_enum is Reason.CA_COMPROMISE
    assert world.status("sign-mobile-g1", 103).category_enum is Category.CARD_CASCADE
    assert not world.status("sign-card-g2", 300).revoked
    # no issuance from the compromised generation afterwards
    world.apply([issuance(400, "sign-card-g1", H2, day=200)])
    assert "compromised" in str(world.quarantined()[-1]["reason"])
    notices = (world.tmp / "notices.jsonl").read_bytes()
    assert b"public-announcement" in notices


def test_act_6_double_issuance_quarantined(world: World) -> None:
    world.apply(holder_set(H1))
    world.apply([issuance(150, "sign-card-g2", H1, day=5)])
    q = world.quarantined()
    assert len(q) == 1 and "二重発行" in str(q[0]["reason"])
    with world.store.read() as r:
        assert r.status(sf.status_key(2, 150)) is None
    # after a renewal request, a new certificate may be issued
    world.apply([
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(6), "serial": 101,
         "issuer": "sign-card-g1", "reason": "renewal"},
        issuance(151, "sign-card-g2", H1, day=6, not_after=ts(1500)),  # Ord §13(2): auth end
    ])  # fmt: skip
    assert world.status("sign-card-g2", 151).state == sf.STATE_GOOD
    assert world.status("sign-card-g1", 101).reason_enum is Reason.SUPERSEDED


def test_bad_records_quarantined_with_file_line_field(world: World) -> None:
    world.apply(holder_set(H1))
    ok = {
        "type": "recording-error",
        "id": rid(),
        "recorded_at": ts(9),
        "serial": 101,
        "issuer": "sign-card-g1",
    }
    bad = [
        b"{not json",
        msgspec.json.encode({**ok, "id": rid(), "serial": 999}),  # unknown serial
        msgspec.json.encode({**ok, "id": rid(), "recorded_at": ts(-5)}),  # before issuance
        msgspec.json.encode({**ok, "id": rid(), "issuer": "nobody-g9"}),  # unknown issuer
        msgspec.json.encode({**ok, "id": rid(), "bogus": 1}),  # unknown field
        msgspec.json.encode({**ok, "id": rid(), "recorded_at": "2024-01-10T00:00:00"}),  # naive time
        msgspec.json.encode({"type": "resident-change", "id": rid(), "recorded_at": ts(9),
                             "serial": 103, "issuer": "sign-mobile-g1", "change": "record-deletion",
                             "cause": "death"}),  # category not allowed for the family
        msgspec.json.encode({"type": "resident-change", "id": rid(), "recorded_at": ts(9),
                             "holder": H1, "change": "fact-change"}),  # missing fact
        msgspec.json.encode(issuance(500, "auth-card-g1", H2, facts=FACTS)),  # auth carries no facts
        msgspec.json.encode(issuance(501, "sign-mobile-g1", H2, card_serial=777)),  # no such card cert
    ]  # fmt: skip
    ap = world.apply([*bad, msgspec.json.encode(ok)])
    assert ap.summary.quarantined == len(bad) and ap.summary.applied == 1
    q = world.quarantined()
    reasons = [str(e["reason"]) for e in q]
    assert [e["line"] for e in q] == list(range(1, len(bad) + 1))
    assert all(e["file"] == "in002.jsonl" for e in q)  # the name, not the path
    assert [e["id"] for e in q][1:] == [msgspec.json.decode(r)["id"] for r in bad[1:]]
    assert q[0]["id"] is None  # not JSON: no id to read
    assert q[4]["field"] is None and q[5]["field"] == "$.recorded_at"
    assert q[7]["field"] == "$.fact" and q[8]["field"] == "$.facts"
    assert "not JSON" in reasons[0]
    assert "unknown serial" in reasons[1]
    assert "before the certificate's issuance" in reasons[2]
    assert "unknown issuer" in reasons[3]
    # the key is part of the line: named by neither the reason nor the field (the operator
    # finds it by file and line), as a key may carry the four facts (crlbuilder.decodeerror)
    assert "unknown field" in reasons[4] and "bogus" not in reasons[4]
    assert "timezone" in reasons[5] and "recorded_at" in reasons[5]
    assert "does not apply to sign-mobile" in reasons[6]
    assert "$.fact" in reasons[7]
    assert "$.facts" in reasons[8]
    assert "card_serial" in reasons[9]
    # quarantined records changed nothing
    assert (
        not world.status("sign-mobile-g1", 103).revoked or world.status("sign-card-g1", 101).revoked
    )
    with world.store.read() as r:
        assert r.status(sf.status_key(4, 500)) is None


def test_a_refused_record_is_not_taken_for_applied(world: World) -> None:
    """The idempotence mark is taken before a record is applied and given back when it is
    refused: a batch of refusals only moves no commit, and the same id, once valid, applies."""
    world.apply(holder_set(H1))
    with world.store.read() as r:
        commit = r.generation().commit
    refused = issuance(150, "sign-card-g2", H1, day=5)  # 二重発行: H1 holds a valid sign-card
    ap = world.apply([refused, refused])
    assert ap.summary.quarantined == 1 and ap.summary.duplicates == 1  # quarantined once
    assert ap.summary.applied == 0 and ap.summary.commits == 0
    with world.store.read() as r:
        assert r.applied(str(refused["id"])) is None
        assert r.generation().commit == commit
    world.apply([
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(6), "serial": 101,
         "issuer": "sign-card-g1", "reason": "renewal"},
        {**refused, "recorded_at": ts(6), "not_before": ts(6), "not_after": ts(1500)},
    ])  # fmt: skip
    with world.store.read() as r:
        assert r.applied(str(refused["id"])) == commit + 1
    assert world.status("sign-card-g2", 150).state == sf.STATE_GOOD


def test_replay_changes_nothing(world: World) -> None:
    records = [*holder_set(H1), {"type": "revocation-request", "id": "rq", "recorded_at": ts(10),
                                 "serial": 102, "issuer": "auth-card-g1", "reason": "application"}]  # fmt: skip
    world.apply(records)
    before = dump_store(world.store, skip=(sf.DB_META,))
    ap = world.apply(records)
    assert ap.summary.duplicates == len(records) and ap.summary.commits == 0
    assert dump_store(world.store, skip=(sf.DB_META,)) == before


def test_revocation_bumps_version_and_drops_stored_answer(world: World) -> None:
    world.apply(holder_set(H1))
    key = sf.status_key(4, 102)
    v0 = world.status("auth-card-g1", 102).version
    with world.store.env.begin(write=True) as txn:
        txn.put(
            key, sf.pack_response(v0, 0, 0, bytes(8), b"stale"), db=world.store.dbs[sf.DB_RESPONSES]
        )
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 102, "issuer": "auth-card-g1", "reason": "application"}])  # fmt: skip
    assert world.status("auth-card-g1", 102).version > v0
    with world.store.env.begin() as txn:
        assert txn.get(key, db=world.store.dbs[sf.DB_RESPONSES]) is None


def test_store_of_other_format_version_refused(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with s.env.begin(write=True) as txn:
        txn.put(sf.META_FORMAT, sf.pack_u32(99), db=s.dbs[sf.DB_META])
    s.close()
    with pytest.raises(sf.StoreFormatError, match="format version 99"):
        Store.open(tmp_path / "s", readonly=True)
    with pytest.raises(sf.StoreFormatError, match="no status store"):
        Store.open(tmp_path / "empty", readonly=True)


def test_a_format_check_on_an_open_store_leaves_it_open(tmp_path: Path) -> None:
    """The responder's readiness check asks an open store for its format (`/readyz`): a
    version changed under it is refused there, and the store stays open, its other readers
    unharmed. Before, the check closed the environment: every later request of that worker
    failed on a closed environment (a 500) until it was restarted. A refused open still
    closes what it opened, the writer's lock with it: a second writer's open is refused for
    the version too, not for a writer that is no more."""
    s = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    try:
        with s.env.begin(write=True) as txn:
            txn.put(sf.META_FORMAT, sf.pack_u32(99), db=s.dbs[sf.DB_META])
        with pytest.raises(sf.StoreFormatError, match="format version 99"):
            s.check_format()
        with s.env.begin() as txn:  # still open
            assert txn.get(sf.META_FORMAT, db=s.dbs[sf.DB_META]) == sf.pack_u32(99)
    finally:
        s.close()
    with pytest.raises(sf.StoreFormatError, match="format version 99"):
        Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with pytest.raises(sf.StoreFormatError, match="format version 99"):  # not "another process"
        Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)


_KILLED_CHILD = """
import os, signal, sys
from pathlib import Path
from crlbuilder.apply import Applier
from crlbuilder.ingest import Quarantine, read_file
from crlbuilder.store.lmdbstore import Store

tmp, point, name, nth = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
store = Store.open(tmp / "store", readonly=False, map_size=1 << 26)
ap = Applier(store, facts_key=bytes(range(32)), quarantine=Quarantine(tmp / "quarantine.jsonl"),
             notices_path=tmp / "notices.jsonl", batch_size=4)
calls = 0

def crash():
    global calls
    calls += 1
    if calls == nth:
        os.kill(os.getpid(), signal.SIGKILL)

ap.crash_points[point] = crash
ap.run(read_file(tmp / name))
"""


def run_killed(tmp: Path, point: str, name: str, nth: int = 1) -> None:
    """Apply ``tmp/name`` in a child process killed (SIGKILL) at the ``nth`` pass by ``point``."""
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(tmp), point, name, str(nth)],
        timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL


@pytest.mark.integration  # a builder process killed mid-commit
@pytest.mark.parametrize("point", ["notices-before-write", "notices-before-delete"])
def test_act_15_2_notice_survives_a_kill_after_the_commit_and_is_delivered_once(
    world: World, point: str
) -> None:
    """The revocation commits with its notice staged; a builder killed before (or while) writing
    the notices file leaves it staged, and the next run delivers it exactly once."""
    world.apply(holder_set(H1))
    world.store.close()
    rec = {"type": "recording-error", "id": "err-1", "recorded_at": ts(9), "serial": 101,
           "issuer": "sign-card-g1"}  # fmt: skip
    (world.tmp / "late.jsonl").write_bytes(msgspec.json.encode(rec) + b"\n")
    run_killed(world.tmp, point, "late.jsonl")
    world.store = Store.open(world.tmp / "store", readonly=False, map_size=1 << 26)
    assert world.status("sign-card-g1", 101).revoked  # the revocation committed
    notices = world.tmp / "notices.jsonl"

    def delivered() -> list[dict[str, object]]:
        lines = notices.read_bytes().splitlines() if notices.exists() else []
        return [msgspec.json.decode(line) for line in lines]

    said_before = delivered()
    assert len(said_before) == (1 if point == "notices-before-delete" else 0)
    world.apply([])  # the next run, with nothing new
    world.apply([rec])  # and a replay of the same input
    out = delivered()
    assert [(n["record_id"], n["kind"]) for n in out] == [("err-1", "holder-notification")]
    assert out[0]["serial"] == 101 and out[0]["issuer"] == "sign-card-g1"
    with world.store.env.begin() as txn:
        assert txn.stat(world.store.dbs[sf.DB_OUTBOX])["entries"] == 0


def test_notice_cut_by_a_kill_is_written_again_whole(world: World) -> None:
    """A half-written notices line (a kill inside write) does not hide the notice."""
    world.apply(holder_set(H1))
    notices = world.tmp / "notices.jsonl"
    notices.write_bytes(b'{"kind":"holder-notification","record_id":"err-2","art')
    world.apply([{"type": "recording-error", "id": "err-2", "recorded_at": ts(9),
                  "serial": 101, "issuer": "sign-card-g1"}])  # fmt: skip
    lines = notices.read_bytes().splitlines()
    assert lines[0].endswith(b'"art') and len(lines) == 2
    assert msgspec.json.decode(lines[1])["record_id"] == "err-2"


def test_quarantine_and_notices_made_readable_by_others_are_narrowed_to_0600(
    world: World,
) -> None:
    """Files made before (by an older builder, by hand, under a wide umask) keep no wider
    mode than the ones the builder creates: 0600, like the store's."""
    quarantine, notices = world.tmp / "quarantine.jsonl", world.tmp / "notices.jsonl"
    for f in (quarantine, notices):
        f.touch()
        f.chmod(0o644)
    world.apply(holder_set(H1))
    world.apply([{"type": "recording-error", "id": "err-3", "recorded_at": ts(9),
                  "serial": 101, "issuer": "sign-card-g1"},
                 {"type": "revocation-request", "id": "q-x", "recorded_at": ts(9),
                  "serial": 9999, "issuer": "auth-card-g1", "reason": "loss"}])  # fmt: skip
    assert world.quarantined() and notices.read_bytes()
    for f in (quarantine, notices):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def _bad_lines(n: int) -> list[bytes]:
    """``n`` refused lines: a revocation of an unknown serial, then a sign-card issuance
    with its four facts whose holder already holds one (二重発行), alternately."""
    out = []
    for i in range(n):
        if i % 2:
            out.append(msgspec.json.encode(issuance(900 + i, "sign-card-g2", H1, day=5)))
        else:
            out.append(msgspec.json.encode({"type": "revocation-request", "id": f"q-{i}",
                                            "recorded_at": ts(9), "serial": 9000 + i,
                                            "issuer": "auth-card-g1", "reason": "loss"}))  # fmt: skip
    return out


@pytest.mark.integration  # a builder process killed mid-commit
@pytest.mark.parametrize("point", ["quarantine-before-write", "quarantine-before-delete"])
def test_quarantine_is_idempotent_across_a_kill_and_a_replay(world: World, point: str) -> None:
    """A builder killed mid-input and started again quarantines each refusal once (it used to
    write 92 lines where an uninterrupted builder wrote 24)."""
    world.apply(holder_set(H1))
    lines = [msgspec.json.encode(r) for r in holder_set(H2, base=200)] + _bad_lines(6)
    lines.insert(6, b"{not json")
    (world.tmp / "feed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    world.store.close()
    run_killed(world.tmp, point, "feed.jsonl", nth=2)  # the second batch's delivery
    world.store = Store.open(world.tmp / "store", readonly=False, map_size=1 << 26)
    q = world.tmp / "quarantine.jsonl"
    before = q.read_bytes().count(b"\n") if q.exists() else 0
    assert 0 < before <= 7  # before-delete: written, still staged
    ap = world.apply_file(world.tmp / "feed.jsonl", batch_size=4)  # restarted on the same input
    world.apply_file(world.tmp / "feed.jsonl", batch_size=4)  # and once more
    entries = world.quarantined()
    assert len(entries) == 7 == len({(e["file"], e["line"]) for e in entries})
    assert sorted(int(str(e["line"])) for e in entries) == list(range(5, 12))
    # every refusal was committed (staged) by the killed run: the restart only delivers the rest
    assert ap.summary.quarantined == 0 and ap.summary.duplicates == len(lines)


def test_quarantine_keeps_no_facts_and_no_path_act_45(world: World) -> None:
    """A refused sign-card issuance carries the four facts: the quarantine keeps its id, file
    name, line, field and reason, and neither its name, its address nor the input's path."""
    world.apply(holder_set(H1))
    facts = {"name": "秘密 次郎", "sex": "1", "birth_date": "319800915",
             "address": "大阪府大阪市北区秘密町7-7"}  # fmt: skip
    bad_enum = issuance(600, "sign-card-g2", H2, facts={**facts, "sex": "9"})
    world.apply([issuance(150, "sign-card-g2", H1, day=5, facts=facts), bad_enum])
    raw = (world.tmp / "quarantine.jsonl").read_bytes()
    entries = world.quarantined()
    assert len(entries) == 2
    for value in (facts["name"], facts["address"], "319800915", str(world.tmp)):
        assert value.encode() not in raw, value
    assert set(entries[0]) == {"id", "file", "line", "field", "reason"}
    assert entries[0]["file"] == "in002.jsonl" and entries[0]["line"] == 1
    assert "二重発行" in str(entries[0]["reason"])
    assert entries[1]["id"] == bad_enum["id"] and entries[1]["field"] == "$.facts.sex"
    assert "'9'" not in str(entries[1]["reason"])


REGISTRY = """
version = 2

[[party]]
id = "bank"
name = "a 署名検証者"
[[party.title]]
kind = "signature-verifier"
category = 6
[[party.credential]]
kind = "token"

[[party]]
id = "group"
name = "a 団体署名検証者"
[[party.title]]
kind = "group-signature-verifier"
group_kind = 1

[[party]]
id = "login-only"
name = "a 利用者証明検証者"
[[party.title]]
kind = "user-verifier"
category = 6

[[party]]
id = "gone"
name = "provision ended"
[[party.title]]
kind = "signature-verifier"
category = 6
[party.ended]
at = 2025-01-01T00:00:00+09:00
reason = "届出の廃止"
"""


def consent(verifier: str, granted: bool = True) -> dict[str, object]:
    return {"type": "consent", "id": rid(), "recorded_at": ts(20), "holder": H1,
            "verifier": verifier, "granted": granted}  # fmt: skip


def consents(store: Store) -> list[str]:
    with store.env.begin() as txn:
        return [bytes(k)[32:].decode() for k, _ in txn.cursor(db=store.dbs[sf.DB_CONSENTS])]


def test_act_18_3_consent_must_name_a_registered_signature_verifier(world: World) -> None:
    """A consent names a 署名検証者等 of the registry; a misspelt id, a login-only verifier or a
    party whose provision ended is quarantined with the reason, and nothing is stored."""
    world.verifiers = parse_verifiers(REGISTRY, source="registry.toml")
    world.apply(holder_set(H1))
    ap = world.apply([consent("bank"), consent("group"), consent("bnak"), consent("login-only"),
                      consent("gone")])  # fmt: skip
    assert ap.summary.applied == 2 and ap.summary.quarantined == 3
    assert consents(world.store) == ["bank", "group"]
    reasons = [str(e["reason"]) for e in world.quarantined()]
    assert "'bnak', which is no party of the registry" in reasons[0]
    assert "'login-only', which is not a 署名検証者 or 団体署名検証者" in reasons[1]
    assert "'gone', whose provision has ended" in reasons[2]
    assert all("Act §18(3)" in r for r in reasons)
    # a withdrawal always applies, whatever the registry says now
    world.verifiers = parse_verifiers("version = 2", source="empty.toml")
    ap = world.apply([consent("bank", granted=False)])
    assert ap.summary.applied == 1 and consents(world.store) == ["group"]


def test_act_18_3_a_verifier_whose_end_is_set_ahead_still_takes_consents(world: World) -> None:
    """`registry end --at` a later time: the responder serves the party until then, so a
    consent naming it was refused as if its provision had ended already."""
    ahead = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    world.verifiers = parse_verifiers(
        REGISTRY.replace('id = "gone"', 'id = "ending"').replace(
            "at = 2025-01-01T00:00:00+09:00", f"at = {ahead}"
        ),
        source="registry.toml",
    )
    world.apply(holder_set(H1))
    ap = world.apply([consent("ending")])
    assert ap.summary.applied == 1 and consents(world.store) == ["ending"]


def test_act_18_3_no_registry_no_consent(world: World) -> None:
    """Without a registry the builder cannot check a consent: it refuses every grant (safe)."""
    world.verifiers = None
    world.apply(holder_set(H1))
    ap = world.apply([consent("bank")])
    assert ap.summary.quarantined == 1 and consents(world.store) == []
    assert "no registry of parties configured" in str(world.quarantined()[0]["reason"])


def test_consent_registry_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY.split('[[party]]\nid = "group"', maxsplit=1)[0])
    reg = ConsentVerifiers(path)
    assert reg.current().eligible == {"bank"}
    path.write_text(REGISTRY)
    assert reg.current().eligible == {"bank", "group"}
    path.write_text("[[party]\n")
    with pytest.raises(RegistryReadError, match="not valid TOML"):
        reg.current()
    assert reg.last_good.eligible == {"bank", "group"}
    with pytest.raises(RegistryReadError, match="cannot read"):
        ConsentVerifiers(tmp_path / "missing.toml")


def test_store_without_the_builder_databases_still_opens_read_only(tmp_path: Path) -> None:
    """`outbox` and `quarantine` were added without a format version: a store made before them
    opens read-only (the responder's case), and the builder's next open adds them."""
    s = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with s.env.begin(write=True) as txn:
        for name in sf.BUILDER_DBS:
            txn.drop(s.dbs[name], delete=True)
    s.close()
    r = Store.open(tmp_path / "s", readonly=True)
    with r.read() as view:
        assert set(r.dbs) == set(sf.ALL_DBS) - sf.BUILDER_DBS and "outbox" not in view.counts()
    r.close()
    w = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with w.read() as view:
        assert view.counts()["outbox"] == 0 and view.counts()["quarantine"] == 0
    w.close()


def test_store_without_announcements_opens_read_only_with_none(tmp_path: Path) -> None:
    """`announcements` came after format 1 too: a responder upgraded before its builder opens
    the older store (it refused it as "not a jpki-va store"), reads no announcement, and the
    builder's next open adds the database."""
    s = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with s.env.begin(write=True) as txn:
        for name in sf.BUILDER_DBS | sf.OPTIONAL_DBS:
            txn.drop(s.dbs[name], delete=True)
    s.close()
    r = Store.open(tmp_path / "s", readonly=True)
    with r.read() as view:
        assert view.announcements() == []
    r.close()
    w = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with w.read() as view:
        assert view.announcements() == [] and view.counts()["announcements"] == 0
    w.close()
