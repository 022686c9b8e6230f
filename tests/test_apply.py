"""Applying records to the store: the rules end to end on small hand-written histories."""

from __future__ import annotations

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

    def apply(
        self, records: list[dict[str, object]] | list[bytes], batch_size: int = 1000
    ) -> Applier:
        self.files += 1
        path = self.tmp / f"in{self.files:03}.jsonl"
        lines = [r if isinstance(r, bytes) else msgspec.json.encode(r) for r in records]
        path.write_bytes(b"\n".join(lines) + b"\n")
        ap = Applier(self.store, facts_key=KEY, quarantine=self.quarantine, batch_size=batch_size,
                     notices_path=self.tmp / "notices.jsonl")  # fmt: skip
        ap.run(read_file(path))
        self.quarantine.flush()
        return ap

    def status(self, issuer: str, serial: int) -> sf.StatusRecord:
        st = self.store.status_of(INDEX[issuer], serial)
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
        assert len(world.store.holder_certs(bytes.fromhex(H1), Family.SIGN_CARD.code, txn)) == 1


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
    assert world.store.status_of(2, 150) is None
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
    assert all(str(e["source"]).endswith("in002.jsonl") for e in q)
    assert "not JSON" in reasons[0]
    assert "unknown serial" in reasons[1]
    assert "before the certificate's issuance" in reasons[2]
    assert "unknown issuer" in reasons[3]
    assert "bogus" in reasons[4]
    assert "timezone" in reasons[5] and "recorded_at" in reasons[5]
    assert "does not apply to sign-mobile" in reasons[6]
    assert "$.fact" in reasons[7]
    assert "$.facts" in reasons[8]
    assert "card_serial" in reasons[9]
    # quarantined records changed nothing
    assert (
        not world.status("sign-mobile-g1", 103).revoked or world.status("sign-card-g1", 101).revoked
    )
    assert world.store.status_of(4, 500) is None


def test_replay_changes_nothing(world: World) -> None:
    records = [*holder_set(H1), {"type": "revocation-request", "id": "rq", "recorded_at": ts(10),
                                 "serial": 102, "issuer": "auth-card-g1", "reason": "application"}]  # fmt: skip
    world.apply(records)
    before = dump(world.store)
    ap = world.apply(records)
    assert ap.summary.duplicates == len(records) and ap.summary.commits == 0
    assert dump(world.store) == before


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


def dump(store: Store) -> dict[bytes, list[tuple[bytes, bytes]]]:
    out = {}
    with store.env.begin() as txn:
        for name in sf.ALL_DBS:
            if name == sf.DB_META:
                continue
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.dbs[name]).iternext()]
    return out


def test_store_of_other_format_version_refused(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "s", readonly=False, map_size=1 << 24)
    with s.env.begin(write=True) as txn:
        txn.put(sf.META_FORMAT, sf.pack_u32(99), db=s.dbs[sf.DB_META])
    s.close()
    with pytest.raises(sf.StoreFormatError, match="format version 99"):
        Store.open(tmp_path / "s", readonly=True)
    with pytest.raises(sf.StoreFormatError, match="no status store"):
        Store.open(tmp_path / "empty", readonly=True)
