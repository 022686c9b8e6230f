"""The 国外転出届 window (Act §12(2), §31(2)) and move-in notices are judged by the dates the
records carry (when the notice was made), never by the order in which the records arrive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from crlbuilder import rules
from tests.test_apply import FACTS, H1, T0, World, issuance, rid, ts
from tests.test_lapse_time import FakeClock, published

PLANNED = (T0 + timedelta(days=40)).date()
DUE = rules.move_out_lapse(PLANNED)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def change(day: float, kind: str, **kw: object) -> dict[str, object]:
    return {"type": "resident-change", "id": rid(), "recorded_at": ts(day), "holder": H1,
            "change": kind, **kw}  # fmt: skip


def window_history() -> tuple[list[dict[str, object]], dict[str, object], dict[str, object]]:
    """Old card certs given up; a 国外転出届 made on day 20 but recorded on day 25; new card
    certificates issued on day 22, inside the window; the record deleted on the planned date."""
    old = [issuance(101, "sign-card-g1", H1), issuance(102, "auth-card-g1", H1)]
    give_up = [
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(21), "serial": s,
         "issuer": i, "reason": "application"}
        for i, s in (("sign-card-g1", 101), ("auth-card-g1", 102))
    ]  # fmt: skip
    new = [
        issuance(202, "auth-card-g1", H1, day=22, not_after=ts(1400)),
        issuance(201, "sign-card-g2", H1, day=22.01, not_after=ts(1400), facts=FACTS),
    ]
    notice = change(25, "move-out-notice", planned_date=PLANNED.isoformat(), abroad=True,
                    notified_at=ts(20))  # fmt: skip
    deletion = change(40.5, "record-deletion", cause="abroad-move-out")
    return [*old, *give_up, *new], notice, deletion


@pytest.mark.parametrize("notice_first", [True, False])
def test_act_12_2_window_counts_from_when_the_notice_was_made(
    world: World, notice_first: bool
) -> None:
    certs, notice, deletion = window_history()
    # the notice's record before or after the window issuances: the same outcome
    world.apply([notice, *certs, deletion] if notice_first else [*certs, notice, deletion])
    assert world.quarantined() == []
    assert not world.status("sign-card-g2", 201).revoked  # Act §12(2): spared
    world.apply([])
    assert world.apply([]).sweep_lapses(DUE + timedelta(days=1)) == 0
    assert not world.status("auth-card-g1", 202).revoked  # Act §31(2): spared


@pytest.mark.parametrize("lapse_first", [True, False])
def test_act_12_2_deletion_after_the_lapse_still_sees_its_notice(
    world: World, lapse_first: bool
) -> None:
    """The deletion's record may arrive after the 30-day lapse was written: same outcome."""
    certs, notice, deletion = window_history()
    world.apply([notice, *certs])
    if lapse_first:
        world.apply([]).sweep_lapses(DUE + timedelta(days=1))
        world.apply([deletion])
    else:
        world.apply([deletion])
        world.apply([]).sweep_lapses(DUE + timedelta(days=1))
    assert not world.status("sign-card-g2", 201).revoked
    assert not world.status("auth-card-g1", 202).revoked


def test_act_12_2_certificate_older_than_the_notice_is_revoked(world: World) -> None:
    """The window starts when the notice was made: a certificate issued before it is not spared."""
    world.apply([issuance(101, "sign-card-g1", H1, day=19)])
    world.apply([change(25, "move-out-notice", planned_date=PLANNED.isoformat(), abroad=True,
                        notified_at=ts(20)),
                 change(40.5, "record-deletion", cause="abroad-move-out")])  # fmt: skip
    assert world.status("sign-card-g1", 101).revoked


def test_act_31_2_move_in_made_in_time_counts_though_recorded_after_the_due_instant(
    world: World,
) -> None:
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    late_move_in = change(75, "move-in-notice", notified_at=ts(60))  # made before DUE (day 71)
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat()), late_move_in])
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=10))
    assert ap.sweep_lapses(DUE + timedelta(days=10)) == 0
    assert not world.status("auth-card-g1", 102).revoked


def test_act_31_2_move_in_made_before_the_move_out_notice_does_not_stop_it(world: World) -> None:
    """A move-in notice made on day 10 whose record arrives after a move-out notice made on day
    30: it is no 転入届 following that 転出届, and the lapse still falls due."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat(), notified_at=ts(30)),
                 change(36, "move-in-notice", notified_at=ts(10))])  # fmt: skip
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=1))
    assert ap.sweep_lapses(DUE + timedelta(days=1)) == 1
    assert world.status("auth-card-g1", 102).revoked


def test_act_34_1_2_lapse_written_before_a_late_move_in_stands(world: World) -> None:
    """Written, the lapse has taken effect (Act §34(1)(2)); the late notice is counted, not undone."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat())])
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(seconds=1))
    assert ap.sweep_lapses(DUE + timedelta(seconds=1)) == 1
    ap = world.apply([change(75, "move-in-notice", notified_at=ts(60))])
    assert ap.summary.move_in_after_lapse == 1
    assert world.status("auth-card-g1", 102).revoked


def test_act_31_2_notified_at_after_recorded_at_refused(world: World) -> None:
    world.apply([issuance(102, "auth-card-g1", H1)])
    world.apply(
        [change(35, "move-out-notice", planned_date=PLANNED.isoformat(), notified_at=ts(36))]
    )
    [q] = world.quarantined()
    assert "notified_at is later than recorded_at" in str(q["reason"])
