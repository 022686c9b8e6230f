"""The lateness bound (`crlbuilder.lateness`): a record made before what an erasure past retention
(Ord §70(1)(iii)) may have erased, read after it, is refused to the quarantine, by the store's
state and never the builder's clock; a record just inside the bound is applied."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import lateness
from crlbuilder.apply import from_epoch
from crlbuilder.ingest import read_file
from crlbuilder.model import ChangeKind, Family, Issuance, ResidentChange
from crlbuilder.periods import kept_until
from crlbuilder.store import format as sf
from tests.support.store import dump_store
from tests.test_apply import H1, World, issuance, ts
from tests.test_lapse_time import FakeClock
from tests.test_lapsed_erasure import DAYS, domestic, erase, pending
from tests.test_window_order import PLANNED, change

AT = 1_800_000_000
"""An erasure's instant (2027-01-15 08:00 UTC)."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def notice(made: int) -> ResidentChange:
    at = from_epoch(made)
    return ResidentChange(id="n", recorded_at=at + timedelta(days=400), holder=H1,
                          change=ChangeKind.MOVE_OUT_NOTICE, planned_date=at.date(),
                          notified_at=at)  # fmt: skip


def cert(not_before: int, not_after: int) -> Issuance:
    return Issuance(id="i", recorded_at=from_epoch(not_before), serial=1, family=Family.AUTH_CARD,
                    issuer="auth-card-g1", not_before=from_epoch(not_before),
                    not_after=from_epoch(not_after), holder=H1)  # fmt: skip


def test_the_bound_is_exact_at_its_edges() -> None:
    """A notice made at ``made_before`` keeps its period past the erasure (``kept_until`` of it
    is later than the erasure): judged whole; a second earlier, its period ended by the erasure,
    as that of anything it depends on made no earlier."""
    state = lateness.bound(AT, shortest=30, notice_days=60)
    assert kept_until(state.made_before, 60) > AT >= kept_until(state.made_before - 1, 60)
    assert kept_until(state.issued_before, 30) > AT >= kept_until(state.issued_before - 1, 30)
    assert lateness.refusal(notice(state.made_before), state) is None
    assert lateness.refusal(notice(state.made_before - 1), state) == lateness.LATE_NOTICE
    early = state.issued_before - 1
    assert lateness.refusal(cert(early, AT), state) == lateness.LATE_ISSUANCE
    assert lateness.refusal(cert(early, AT + 1), state) is None  # valid past the erasure
    assert lateness.refusal(cert(state.issued_before, AT), state) is None
    assert lateness.refusal(notice(0), None) is None  # no erasure yet: nothing is late


def test_the_bound_never_goes_back() -> None:
    """An erasure by longer periods, or an earlier one read again, lowers no field."""
    first = lateness.bound(AT, shortest=30, notice_days=30)
    later = lateness.bound(AT + 86_400, shortest=3650, notice_days=3650, before=first)
    assert later.at == AT + 86_400
    assert (later.issued_before, later.made_before) == (first.issued_before, first.made_before)
    assert lateness.bound(AT - 86_400, 30, 30, before=first) == first


def older(made_at: int) -> dict[str, object]:
    """A move-out notice made at ``made_at`` (before the erased one of day 35, whose lapse due
    instant comes first), recorded on day 31 or when made, if later."""
    made = from_epoch(made_at)
    recorded = max(made, datetime.fromisoformat(ts(31)))
    return change(0, "move-out-notice", recorded_at=recorded.isoformat(),
                  planned_date=(PLANNED + timedelta(days=20)).isoformat(),
                  notified_at=made.isoformat())  # fmt: skip


@pytest.mark.parametrize("inside", [True, False])
def test_a_notice_just_inside_the_bound_is_applied_one_second_earlier_refused(
    world: World, inside: bool
) -> None:
    """After the lapsed notice's erasure at ``at``, a move-out notice made at the bound is
    applied (pending by its own dates); made one second earlier, it is refused and counted."""
    at = kept_until(domestic(world), DAYS)
    erase(world, at, agenda=False)
    with world.store.read() as r:
        state = r.erased_state()
    assert state is not None and state.at == at
    made = state.made_before if inside else state.made_before - 1
    ap = world.apply([older(made)])
    assert ap.summary.as_dict()["refused_late"] == int(not inside)
    assert (pending(world) is not None) is inside
    reasons = [q["reason"] for q in world.quarantined()]
    assert reasons == ([] if inside else [lateness.LATE_NOTICE])


def test_the_bound_is_the_stores_not_the_clocks(world: World, tmp_path: Path) -> None:
    """The same late record is refused whatever the reading builder's clock says, and a store
    that erased nothing refuses nothing however far its clock is: two stores fed the same
    records and erasures hold the same bound and refuse alike (byte-equal nodes)."""
    other = World(tmp_path / "other")
    try:
        stores = []
        for w, clock_years in ((world, 0), (other, 100)):
            at = kept_until(domestic(w), DAYS)
            erase(w, at, agenda=False)
            ap = w.apply([])
            ap.clock = FakeClock(from_epoch(at + clock_years * 365 * 86_400))
            late = older(at - (DAYS + 5) * 86_400)
            late["id"] = "late-1"
            path = w.tmp / "late.jsonl"
            path.write_bytes(msgspec.json.encode(late) + b"\n")
            ap.run(read_file(path))
            assert ap.summary.late == 1
            stores.append(dump_store(w.store, meta=(sf.META_ERASED,), skip=(sf.DB_OUTBOX,)))
        assert stores[0]["meta"] == stores[1]["meta"] != []
    finally:
        other.store.close()


def test_no_erasure_no_bound(world: World) -> None:
    """A store whose erasures erased nothing keeps no bound: a notice made years before the
    builder's clock is judged as before (its lapse written, nothing late)."""
    at = kept_until(domestic(world), DAYS)
    erase(world, at - 1, agenda=False)  # the notice not yet due: nothing erased
    with world.store.read() as r:
        assert r.erased_state() is None
    ap = world.apply([older(int(datetime.fromisoformat(ts(30)).timestamp()))])
    ap.clock = FakeClock(from_epoch(at + 10 * 365 * 86_400))
    assert ap.summary.late == 0 and world.quarantined() == []


def test_an_issuance_still_valid_at_the_erasure_is_never_late(world: World) -> None:
    """However long before the erasure a certificate was issued, its record is applied while
    it was valid at the erasure: a revocation it needs is not lost to a refusal."""
    at = kept_until(domestic(world), DAYS)
    erase(world, at, agenda=False)
    ap = world.apply([issuance(104, "auth-card-g1", "22" * 32, day=-400, not_after=ts(1000))])
    assert ap.summary.late == 0 and ap.summary.applied == 1
