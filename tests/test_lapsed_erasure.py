"""A lapsed move-out notice (転出届, Act §31(2)) leaves the store's ``pending`` database with the
retention of its lapse record (Act §31, Ord §70(1)(iii)), and a 国外転出届 not while a sign-card
certificate of its window is valid (Act §12(2)): `crlbuilder.lapsed`, run by the erasure past
retention (`Applier.erase_past_retention`), in its transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from crlbuilder.apply import Applier, epoch, from_epoch, next_erasure
from crlbuilder.lateness import LATE_NOTICE
from crlbuilder.model import Category, Family
from crlbuilder.periods import kept_until
from crlbuilder.retention import periods_digest, scanned
from crlbuilder.store import format as sf
from crlbuilder.store.reader import changes_start
from crlbuilder.store.writer import Commit
from tests.support.store import dump_store
from tests.test_apply import H1, World, issuance, ts
from tests.test_lapse_time import FakeClock, published
from tests.test_window_order import DUE, PLANNED, change, window_history

DAYS = 30
"""The retention period of every record here: shorter than the certificates' validity."""


def retention(family: Family, category: Category) -> int:
    return DAYS


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def holder() -> bytes:
    return bytes.fromhex(H1)


def pending(world: World) -> sf.PendingMoveOut | None:
    with world.store.read() as r:
        return r.pending(holder())


def taken(world: World) -> list[sf.Taken]:
    with world.store.read() as r:
        return r.taken(holder())


def lapse(world: World, at: datetime) -> int:
    """Write the holder's lapse at ``at`` (a published store: dated when written); its lapsedAt."""
    ap = world.apply([])
    ap.clock = FakeClock(at)
    ap.sweep_lapses(at)
    p = pending(world)
    assert p is not None and p.lapsed_at == epoch(at)
    return p.lapsed_at


def erase(world: World, now: int, *, agenda: bool) -> Applier:
    ap = world.apply([])
    ap.clock = FakeClock(from_epoch(now))
    ap.erase_past_retention(now, retention, keep_time=False, agenda=agenda)
    return ap


def domestic(world: World, not_after: float = 90) -> int:
    """The 転出届 of the holder of an auth-card certificate valid to day ``not_after`` (by
    default before its lapse record's retention ends), lapsed one second after its due instant;
    its lapsedAt."""
    world.apply([issuance(102, "auth-card-g1", H1, not_after=ts(not_after))])
    published(world)
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat())])
    return lapse(world, DUE + timedelta(seconds=1))


@pytest.mark.parametrize("agenda", [False, True])
def test_a_lapsed_notice_goes_at_its_lapse_records_retention_not_a_second_before(
    world: World, agenda: bool
) -> None:
    lapsed_at = domestic(world)
    at = kept_until(lapsed_at, DAYS)  # 00:00 JST after the 30th day from the day after
    assert erase(world, at - 10 * 86_400, agenda=agenda).summary.notices_erased == 0
    if agenda:  # a scan within 30 days of it put it on the agenda: a follow loop wakes then
        assert next_erasure(world.store, retention) == from_epoch(at)
    before = erase(world, at - 1, agenda=agenda)
    assert before.summary.notices_erased == 0 and pending(world) is not None
    ap = erase(world, at, agenda=agenda)
    assert ap.summary.notices_erased == 1
    assert ap.summary.as_dict()["lapsed_notices_erased"] == 1
    assert pending(world) is None
    # its lapse stays kept with the holder's changes: an issuance read later is judged by it
    assert any(t.lapse_due == epoch(DUE) and t.at == lapsed_at for t in taken(world))
    assert world.status("auth-card-g1", 102).revoked  # the lapse stands


@pytest.mark.parametrize("agenda", [False, True])
def test_erasing_again_changes_nothing(world: World, agenda: bool) -> None:
    at = kept_until(domestic(world), DAYS)
    erase(world, at, agenda=agenda)
    after = dump_store(world.store, meta=())
    ap = erase(world, at, agenda=agenda)
    assert ap.summary.notices_erased == 0
    assert dump_store(world.store, meta=()) == after


def test_a_crash_before_the_erasures_commit_leaves_the_notice_and_the_store(world: World) -> None:
    at = kept_until(domestic(world), DAYS)
    before = dump_store(world.store)

    def killed() -> None:
        raise RuntimeError("killed")

    ap = world.apply([])
    ap.crash_points["erase-before-commit"] = killed
    with pytest.raises(RuntimeError, match="killed"):
        ap.erase_past_retention(at, retention, keep_time=False, agenda=True)
    assert dump_store(world.store) == before and pending(world) is not None
    assert erase(world, at, agenda=True).summary.notices_erased == 1  # the rerun does it


def test_a_lapsed_notice_replaced_since_the_agenda_was_made_is_not_erased(world: World) -> None:
    """The agenda names the holder; the notice there when its time comes is a new one, pending."""
    lapsed_at = domestic(world)
    at = kept_until(lapsed_at, DAYS)
    erase(world, at - 10 * 86_400, agenda=True)  # the scan lists the lapsed notice
    assert next_erasure(world.store, retention) == from_epoch(at)
    later = (PLANNED + timedelta(days=60)).isoformat()
    world.apply([change(80, "move-out-notice", planned_date=later)])
    ap = erase(world, at, agenda=True)
    assert ap.summary.notices_erased == 0
    p = pending(world)
    assert p is not None and not p.lapsed_at and p.planned_date == later


@pytest.mark.parametrize("agenda", [False, True])
def test_an_abroad_notice_stays_while_a_window_sign_card_is_valid(
    world: World, agenda: bool
) -> None:
    """Act §12(2): the sign-card certificate 201, issued in the 国外転出届's window, is valid to
    day 1422 (`window_history`); the deletion that notice caused, read after the lapse record's
    retention, still spares it; the notice goes at its notAfter."""
    certs, notice, deletion = window_history()
    certs[1]["not_after"] = ts(100)  # the old auth-card certificate its lapse takes: expired
    world.apply([notice, *certs])
    published(world)
    lapsed_at = lapse(world, DUE + timedelta(days=1))
    assert not world.status("auth-card-g1", 202).revoked  # Act §31(2): in the window too
    past_retention = kept_until(lapsed_at, DAYS)
    not_after = epoch(datetime.fromisoformat(ts(1400)))
    assert past_retention < not_after
    assert erase(world, past_retention, agenda=agenda).summary.notices_erased == 0
    if agenda:
        assert next_erasure(world.store, retention) is not None
    world.apply([deletion])
    assert not world.status("sign-card-g2", 201).revoked  # the notice still read
    assert erase(world, not_after - 1, agenda=agenda).summary.notices_erased == 0
    assert pending(world) is not None
    assert erase(world, not_after, agenda=agenda).summary.notices_erased == 1
    assert pending(world) is None


def short(family: Family, category: Category) -> int:
    return 3


def test_a_notice_lapsed_since_the_scan_is_erased_in_time_though_it_wrote_no_crl_entry(
    world: World,
) -> None:
    """With a period shorter than the agenda's span, a notice lapsed after the scan falls due
    before its horizon: its lapsedAt lowers the watermark as a CRL entry's recordedAt does, so
    the next erasure scans again rather than missing it until the next scan."""
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat())])  # no card
    published(world)
    ap = world.apply([])
    ap.erase_past_retention(epoch(DUE), short, keep_time=False, agenda=True)  # nothing lapsed
    lapsed_at = lapse(world, DUE + timedelta(seconds=1))  # revokes nothing: no CRL entry
    at = kept_until(lapsed_at, 3)
    with world.store.read() as r:
        state = r.retention_state()
    assert state is not None and at < state.horizon  # it falls due before the scan's horizon
    assert next_erasure(world.store, short) == from_epoch(at)
    ap = world.apply([])
    ap.erase_past_retention(at, short, keep_time=False, agenda=True)
    assert ap.summary.notices_erased == 1 and pending(world) is None


def test_a_late_move_in_read_after_the_erasure_is_refused_as_read_too_late(world: World) -> None:
    """A move-in notice made in time (before the due instant) whose record comes only after the
    notice was erased was applied without it, not counted in ``move_in_after_lapse`` (the limit
    docs/records.md, arrival order, named): made more than a retention period before the
    erasure, it is now refused as read too late (`crlbuilder.lateness`); the lapse stands."""
    at = kept_until(domestic(world), DAYS)
    erase(world, at, agenda=False)
    ap = world.apply([change(200, "move-in-notice", notified_at=ts(60))])
    assert ap.summary.move_in_after_lapse == 0 and ap.summary.late == 1
    assert [q["reason"] for q in world.quarantined()] == [LATE_NOTICE]
    assert world.status("auth-card-g1", 102).revoked
    with world.store.read() as r:
        assert r.move_ins(holder()) == []  # nothing of it kept


def test_a_lapse_an_earlier_builder_kept_only_in_its_notice_is_kept_in_taken_when_it_goes(
    world: World,
) -> None:
    """A store whose lapse was written before lapses were kept in ``taken``: the erasure writes
    it there first, so an auth-card issuance read afterwards, issued before the due instant, is
    still revoked by that lapse at its instant."""
    published(world)
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat())])
    lapsed_at = lapse(world, DUE + timedelta(seconds=1))  # the holder's card is not read yet
    with world.store.env.begin(write=True) as txn:
        assert txn.delete(holder(), db=world.store.dbs[sf.DB_TAKEN])
    erase(world, kept_until(lapsed_at, DAYS), agenda=True)
    assert pending(world) is None
    assert [(t.at, t.lapse_due) for t in taken(world)] == [(lapsed_at, epoch(DUE))]
    world.apply([issuance(103, "auth-card-g1", H1, day=30)])
    st = world.status("auth-card-g1", 103)
    assert st.revoked and st.revoked_at == lapsed_at


@pytest.mark.parametrize("agenda", [False, True])
def test_a_notice_goes_with_the_last_record_its_lapse_wrote(world: World, agenda: bool) -> None:
    """Ord §70(1)(iii): the lapse record of a certificate still valid at the end of the period
    is kept to its notAfter (day 300 here); the notice goes in the same erasure, not before."""
    lapsed_at = domestic(world, not_after=300)
    not_after = epoch(datetime.fromisoformat(ts(300)))
    assert kept_until(lapsed_at, DAYS) < not_after
    erase(world, not_after - 10 * 86_400, agenda=agenda)
    if agenda:
        assert next_erasure(world.store, retention) == from_epoch(not_after)
    ap = erase(world, not_after - 1, agenda=agenda)
    assert (ap.summary.erased, ap.summary.notices_erased) == (0, 0) and pending(world) is not None
    ap = erase(world, not_after, agenda=agenda)
    assert (ap.summary.erased, ap.summary.notices_erased) == (1, 1) and pending(world) is None
    assert world.status("auth-card-g1", 102).erased


def test_a_window_sign_card_read_after_the_scan_holds_the_notice_to_its_not_after(
    world: World,
) -> None:
    """The agenda names the notice at its lapse record's retention; a sign-card certificate of
    the 国外転出届's window whose issuance is read after the scan (no CRL entry: the agenda is
    not stale) holds it to its notAfter, before the horizon: checked again when its time comes,
    it goes back on the agenda then, and the follow loop wakes and erases it at that notAfter,
    not at the next scan."""
    certs, notice, _ = window_history()
    certs[1]["not_after"] = ts(80)  # the old auth-card certificate: its CRL entry erased first
    sign = next(c for c in certs if c["serial"] == 201)
    world.apply([notice, *(c for c in certs if c is not sign)])
    published(world)
    at = kept_until(lapse(world, DUE + timedelta(days=1)), DAYS)
    erase(world, at - 10 * 86_400, agenda=True)  # the scan lists the notice at ``at``
    assert next_erasure(world.store, retention) == from_epoch(at)
    not_after = at + 7 * 86_400  # before the scan's horizon (at + 20 days)
    world.apply([{**sign, "not_after": from_epoch(not_after).isoformat()}])
    assert erase(world, at, agenda=True).summary.notices_erased == 0
    assert pending(world) is not None
    assert next_erasure(world.store, retention) == from_epoch(not_after)
    assert erase(world, not_after - 1, agenda=True).summary.notices_erased == 0
    assert erase(world, not_after, agenda=True).summary.notices_erased == 1
    assert pending(world) is None


def test_an_agenda_an_earlier_release_made_is_scanned_again_for_notices_lapsed_long_ago(
    world: World,
) -> None:
    """Upgrade (docs/store.md): a store whose agenda a release before `RULES` 3 made (its digest
    without `retention.NOTICES`, no holder key on it) and whose notice lapsed years ago: the first
    erasure scans every notice and erases it then, not at that agenda's horizon."""
    lapsed_at = domestic(world)
    now = kept_until(lapsed_at, DAYS) + 1000 * 86_400
    earlier = periods_digest(retention, ())  # as RULES 2 wrote it
    with Commit(world.store, lambda: from_epoch(now)) as c:
        c.rebuild_retention(scanned(now - 5 * 86_400, earlier), [])
    assert pending(world) is not None
    assert erase(world, now, agenda=True).summary.notices_erased == 1
    assert pending(world) is None


def test_erasing_a_lapsed_notice_alone_moves_no_commit(world: World) -> None:
    """A lapsed notice bounds no answer (the responder reads only notices not lapsed): its
    erasure, with nothing else due, leaves the commit sequence (and so every cached answer)
    and the changes feed as they were."""
    world.apply([change(35, "move-out-notice", planned_date=PLANNED.isoformat())])  # no card
    published(world)
    at = kept_until(lapse(world, DUE + timedelta(seconds=1)), DAYS)
    erase(world, at - 1, agenda=False)
    with world.store.read() as r:
        before = (r.generation(), list(r.changes(changes_start(0))))
    ap = erase(world, at, agenda=False)
    assert (ap.summary.erased, ap.summary.notices_erased) == (0, 1)
    with world.store.read() as r:
        assert (r.generation(), list(r.changes(changes_start(0)))) == before


@pytest.mark.parametrize("erased", [False, True])
def test_an_older_move_out_read_after_the_erasure_is_refused_not_let_take_a_card_issued_since(
    world: World, erased: bool
) -> None:
    """The worst case of the documented limit (docs/records.md, arrival order), closed by the
    lateness bound (`crlbuilder.lateness`): a move-out notice made (day 30) before the erased
    one (day 35), whose due instant comes after the erased one's, read only after the erasure,
    was pending by its own dates, and its lapse revoked the auth-card certificate issued since
    the erased notice's lapse (day 80, valid to day 1580), which read in time stays good (the
    erased notice, made before that due instant, replaced it). It is made more than a retention
    period (30 days here, 3650 shipped) before the erasure: now refused, quarantined with a
    reason naming no time, counted, and the certificate stays good as read in time."""
    older = change(
        31,
        "move-out-notice",
        planned_date=(PLANNED + timedelta(days=20)).isoformat(),
        notified_at=ts(30),
    )
    at = kept_until(domestic(world), DAYS)
    world.apply([issuance(103, "auth-card-g1", H1, day=80)])  # after the lapse's due instant
    if erased:
        erase(world, at, agenda=False)
    assert (pending(world) is None) is erased
    ap = world.apply([older])
    ap.clock = FakeClock(from_epoch(at + 86_400))
    ap.sweep_lapses(from_epoch(at + 86_400))
    assert not world.status("auth-card-g1", 103).revoked
    assert pending(world) is None if erased else pending(world) is not None
    assert ap.summary.as_dict()["refused_late"] == int(erased)
    late = [q for q in world.quarantined() if q["id"] == older["id"]]
    assert [q["reason"] for q in late] == ([LATE_NOTICE] if erased else [])
