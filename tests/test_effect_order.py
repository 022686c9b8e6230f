"""A record that made certificates lose effect covers them whatever order the records arrive in:
an issuance record read after it is never good (Act §14, §16-12, §33, §35-12 cover every
certificate the compromised key signed; Act §16-13, §35-13 every mobile certificate of a holder
whose card certificate lost effect; Act §12, §31(1), (3) every card certificate issued no later than
the resident change, and none issued after it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from crlbuilder.apply import Applier
from crlbuilder.ingest import read_file
from crlbuilder.model import Category, Reason
from crlbuilder.store import format as sf
from tests.support.store import dump_store
from tests.test_apply import H1, KEY, World, issuance, rid, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def compromise(day: float, issuer: str = "sign-card-g1") -> dict[str, object]:
    return {"type": "ca-compromise", "id": rid(), "recorded_at": ts(day), "issuer": issuer}


def revoked_as(st: sf.StatusRecord, category: Category, reason: Reason, day: float) -> None:
    assert st.revoked
    assert (Category.from_code(st.category), st.reason) == (category, reason)
    assert st.revoked_at == int(datetime.fromisoformat(ts(day)).timestamp())


def test_act_14_issuance_recorded_before_the_compromise_but_read_after_it_is_revoked(
    world: World,
) -> None:
    world.apply([compromise(10)])
    world.apply([issuance(101, "sign-card-g1", H1, day=5)])  # signed on day 5, its record late
    assert world.quarantined() == []
    revoked_as(world.status("sign-card-g1", 101), Category.CA_COMPROMISE, Reason.CA_COMPROMISE, 10)


def test_act_14_issuance_not_before_the_compromise_is_still_refused(world: World) -> None:
    world.apply([compromise(10)])
    world.apply([issuance(101, "sign-card-g1", H1, day=12)])
    [q] = world.quarantined()
    assert "compromised before this issuance" in str(q["reason"])


def test_act_14_certificate_dated_to_begin_after_the_compromise_is_revoked(world: World) -> None:
    """Signed (recorded) on day 5 to begin on day 15: the key compromised on day 10 signed it."""
    world.apply([issuance(101, "sign-card-g1", H1, day=15, recorded_at=ts(5))])
    world.apply([compromise(10)])
    revoked_as(world.status("sign-card-g1", 101), Category.CA_COMPROMISE, Reason.CA_COMPROMISE, 10)


@pytest.mark.parametrize(
    ("card", "mobile"), [("sign-card-g1", "sign-mobile-g1"), ("auth-card-g1", "auth-mobile-g1")]
)
def test_act_16_13_35_13_mobile_read_after_its_card_lost_effect_is_revoked(
    world: World, card: str, mobile: str
) -> None:
    signer = [issuance(100, "sign-card-g1", H1)] if "auth" in card else []  # Act §35-2(3)
    world.apply([*signer, issuance(101, card, H1)])
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": card, "reason": "loss"}])  # fmt: skip
    # issued on day 5 against the card certificate, its record read after the card's loss
    world.apply([issuance(103, mobile, H1, day=5, card_serial=101, not_after=ts(1400),
                          recorded_at=ts(11))])  # fmt: skip
    assert world.quarantined() == []
    revoked_as(world.status(mobile, 103), Category.CARD_CASCADE, Reason.CESSATION_OF_OPERATION, 10)


def test_act_16_2_3_mobile_issued_after_its_card_lost_effect_is_still_refused(
    world: World,
) -> None:
    world.apply([issuance(101, "sign-card-g1", H1)])
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 101, "issuer": "sign-card-g1", "reason": "application"}])  # fmt: skip
    world.apply([issuance(103, "sign-mobile-g1", H1, day=12, card_serial=101, not_after=ts(1400))])
    [q] = world.quarantined()
    assert "Act §16-2(3)" in str(q["reason"])


def change(day: float, kind: str, **kw: object) -> dict[str, object]:
    return {"type": "resident-change", "id": rid(), "recorded_at": ts(day), "holder": H1,
            "change": kind, **kw}  # fmt: skip


@pytest.mark.parametrize(
    ("record", "issuer"),
    [
        (("fact-change", {"fact": "address"}), "sign-card-g1"),
        (("record-deletion", {"cause": "move-out"}), "sign-card-g1"),
        (("record-deletion", {"cause": "ex-officio"}), "auth-card-g1"),
    ],
)
def test_act_12_31_change_read_after_a_later_issuance_leaves_it_good(
    world: World, record: tuple[str, dict[str, object]], issuer: str
) -> None:
    """The resident record changed on day 20; the holder's card certificate was issued on day 25,
    on the changed record, and its issuance record came first: the change takes the
    certificates issued no later than it, not this one (it would be revoked before it began)."""
    kind, kw = record
    world.apply([issuance(101, issuer, H1, day=25)])
    world.apply([change(20, kind, **kw)])
    assert world.quarantined() == []
    assert not world.status(issuer, 101).revoked


def test_act_12_change_still_takes_a_certificate_issued_before_it(world: World) -> None:
    world.apply([issuance(101, "sign-card-g1", H1, day=20)])
    world.apply([change(20, "fact-change", fact="name")])
    revoked_as(world.status("sign-card-g1", 101), Category.RESIDENT_CHANGE,
               Reason.AFFILIATION_CHANGED, 20)  # fmt: skip


@pytest.mark.parametrize(
    ("record", "issuer"),
    [
        (("fact-change", {"fact": "address"}), "sign-card-g1"),
        (("record-deletion", {"cause": "death"}), "sign-card-g1"),
        (("record-deletion", {"cause": "death"}), "auth-card-g1"),
        (("record-deletion", {"cause": "ex-officio"}), "auth-card-g1"),
        (("koseki-annex-deletion", {}), "auth-card-g1"),
    ],
)
def test_act_12_31_issuance_recorded_after_the_change_that_took_it_is_never_good(
    world: World, record: tuple[str, dict[str, object]], issuer: str
) -> None:
    """The certificate issued on day 10, the resident record changed on day 20, the change's
    record read first (the holder had no certificate the builder knew of): the change took it,
    at its instant, in the commit that adds it; one issued after the change stays good."""
    kind, kw = record
    world.apply([change(20, kind, **kw)])
    world.apply([issuance(101, issuer, H1, day=10), issuance(201, "sign-card-g2", H1, day=25)])
    assert world.quarantined() == []
    revoked_as(world.status(issuer, 101), Category.RESIDENT_CHANGE,
               Reason.AFFILIATION_CHANGED, 20)  # fmt: skip
    assert not world.status("sign-card-g2", 201).revoked


def test_a_kept_change_older_than_the_longest_validity_still_decides_a_late_issuance(
    world: World,
) -> None:
    """A kept change outlives the longest validity while its records' period runs (3650 days
    shipped, `crlbuilder.keptfor`): a fact change on day 100 still takes the sign-card
    certificate issued on day 0 whose record a builder reads seven years later (its clock past
    the longest validity, the 6th birthday after issuance, Ord §13(1)). Dropped, the certificate
    would be added good (expired, but answered good and left off the CRL instead of revoked and
    listed for the retention period); `tests/test_kept_erasure.py` pins when it is dropped."""
    world.apply([change(100, "fact-change", fact="address")])
    late = datetime.fromisoformat(ts(100 + 7 * 366))
    path = world.tmp / "late.jsonl"
    path.write_bytes(msgspec.json.encode(issuance(101, "sign-card-g1", H1, day=0)) + b"\n")
    ap = Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=lambda: late)
    ap.run(read_file(path))
    ap.sweep_lapses(late)
    assert world.quarantined() == []
    revoked_as(world.status("sign-card-g1", 101), Category.RESIDENT_CHANGE,
               Reason.AFFILIATION_CHANGED, 100)  # fmt: skip


def test_act_31_1_issuance_recorded_after_a_move_out_deletion_keeps_the_auth_card(
    world: World,
) -> None:
    """A deletion on a 転出届 takes no auth-card certificate (Act §31(1)): read later, neither."""
    world.apply([change(20, "record-deletion", cause="move-out")])
    world.apply([issuance(101, "auth-card-g1", H1, day=10)])
    assert not world.status("auth-card-g1", 101).revoked


@pytest.mark.parametrize(("day", "spared"), [(22, True), (15, False)])
def test_act_12_2_issuance_recorded_after_the_abroad_deletion_is_judged_by_its_window(
    world: World, day: float, spared: bool
) -> None:
    """A 国外転出届 made on day 20 for day 40, the record deleted on it on day 40: a sign-card
    certificate issued on day 22 (in the window) whose record comes after the deletion's is
    spared as it would have been in order; one issued on day 15 is taken."""
    planned = datetime.fromisoformat(ts(40)).date().isoformat()
    world.apply([change(20, "move-out-notice", planned_date=planned, abroad=True),
                 change(40.5, "record-deletion", cause="abroad-move-out")])  # fmt: skip
    world.apply([issuance(101, "sign-card-g1", H1, day=day)])
    assert world.quarantined() == []
    assert world.status("sign-card-g1", 101).revoked is not spared


def test_act_12_kept_changes_are_bounded_per_holder_and_replay_changes_nothing(
    world: World,
) -> None:
    """At most `MAX_TAKEN` changes kept per holder (the latest), instants and families only; the
    same input again changes no byte of the store."""
    changes = [change(10 + d, "fact-change", fact="address") for d in range(sf.MAX_TAKEN + 3)]
    path = world.tmp / "changes.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(c) + b"\n" for c in changes))
    world.apply_file(path)
    with world.store.read() as r:
        kept = r.taken(bytes.fromhex(H1))
    assert [t.at for t in kept] == [
        int(datetime.fromisoformat(ts(10 + d)).timestamp()) for d in range(3, sf.MAX_TAKEN + 3)
    ]
    assert all(t.sign and not t.auth and not t.spared_to for t in kept)
    before = dump_store(world.store)
    ap = world.apply_file(path)
    assert ap.summary.duplicates == len(changes) and dump_store(world.store) == before


def test_act_12_a_holder_s_lapses_do_not_push_out_the_change_that_took_a_sign_card(
    world: World,
) -> None:
    """The address changed on day 20 (Act §12: it takes the sign-card certificates issued by
    then); then `MAX_TAKEN` + 2 30-day lapses (Act §31(2)) of the holder's move-out notices, each
    made after the last one's lapse fell due, are written. A sign-card certificate issued on
    day 5 whose record comes after them all is still taken by the change: the lapses, which
    take auth-card certificates only, are kept apart from the changes and push none out."""
    notices = []
    for k in range(sf.MAX_TAKEN + 3):
        made = 30 + 40 * k
        planned = datetime.fromisoformat(ts(made)).date().isoformat()
        notices.append(change(made, "move-out-notice", planned_date=planned))
    world.apply([change(20, "fact-change", fact="address"), *notices])
    with world.store.read() as r:
        kept = r.taken(bytes.fromhex(H1))
    assert sum(1 for t in kept if t.lapse_due) == sf.MAX_TAKEN  # the latest, of 2 more written
    assert [t.at for t in kept if not t.lapse_due] == [
        int(datetime.fromisoformat(ts(20)).timestamp())
    ]
    world.apply([issuance(101, "sign-card-g1", H1, day=5)])
    assert world.quarantined() == []
    revoked_as(world.status("sign-card-g1", 101), Category.RESIDENT_CHANGE,
               Category.RESIDENT_CHANGE.default_reason, 20)  # fmt: skip
