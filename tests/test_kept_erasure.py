"""A holder's kept changes and lapses (``taken``) and move-ins (``moveins``) are erased once no
rule needs them (`crlbuilder.keptfor`: past the periods of the records they stand for, Act §31,
Ord §70(1)(iii), and the end of validity of every card certificate issued before them, Ord
§13(1), §49(1)), by the erasure past retention (`Applier.erase_past_retention`), in its
transaction, found by its scan or agenda."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import keptfor, rules
from crlbuilder.apply import Applier, epoch, from_epoch, next_erasure
from crlbuilder.ingest import read_file
from crlbuilder.lateness import LATE_ISSUANCE, LATE_NOTICE
from crlbuilder.model import Category, Family
from crlbuilder.periods import kept_until
from crlbuilder.retention import NOTICES, periods_digest, scanned
from crlbuilder.store import format as sf
from crlbuilder.store.reader import changes_start
from crlbuilder.store.writer import Commit
from tests.support.store import agenda, dump_store
from tests.test_apply import H1, INDEX, KEY, World, issuance, ts
from tests.test_lapse_time import FakeClock, published
from tests.test_lapsed_erasure import domestic, pending
from tests.test_window_order import DUE, PLANNED, change

DAYS = 30
"""The retention period of every record here: far shorter than a certificate's validity, so
the end of validity decides (the shipped 3650 days decide in `test_the_period_decides_when_longer`)."""


def retention(family: Family, category: Category) -> int:
    return DAYS


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def holder() -> bytes:
    return bytes.fromhex(H1)


def taken(world: World) -> list[sf.Taken]:
    with world.store.read() as r:
        return r.taken(holder())


def move_ins(world: World) -> list[sf.MoveIn]:
    with world.store.read() as r:
        return r.move_ins(holder())


def kept_keys(world: World) -> tuple[list[bytes], list[bytes]]:
    """The holder keys left in ``taken`` and in ``moveins``."""
    with world.store.read() as r:
        return [h for h, _ in r.taken_kept()], [h for h, _ in r.move_ins_kept()]


def erase(world: World, now: int, *, agenda: bool, days: int = DAYS) -> Applier:
    ap = world.apply([])
    ap.clock = FakeClock(from_epoch(now))
    ap.erase_past_retention(now, lambda f, c: days, keep_time=False, agenda=agenda)
    return ap


def read_at(world: World, now: int, records: list[dict[str, object]]) -> Applier:
    """Apply ``records`` with the builder's clock at ``now`` (records read late)."""
    world.files += 1
    path = world.tmp / f"late{world.files:03}.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    ap = Applier(
        world.store, facts_key=KEY, quarantine=world.quarantine, clock=FakeClock(from_epoch(now))
    )
    ap.run(read_file(path))
    ap.sweep_lapses(from_epoch(now))
    return ap


def address_change(day: float) -> sf.Taken:
    """A change of address recorded on ``day`` (Act §12(1): it takes the sign-card certificates
    issued by then), applied; its kept entry."""
    return sf.Taken(int(datetime.fromisoformat(ts(day)).timestamp()), True, False)


# --- the instants (sans-I/O) ---------------------------------------------------------------


def test_validity_end_bounds_every_card_certificate_issued_by_then() -> None:
    """No certificate issued on a day (or before it) ends later than `keptfor.validity_end` of
    that day: the 6th birthday after issuance (renewal, Ord §13(1), §49(1)) for every birth date,
    29 February births too, in every family; and it is at least `VALIDITY_AT_LEAST` later."""
    births = [date(1960, 2, 29), date(1980, 3, 1), date(1990, 12, 31), date(2000, 1, 1)]
    days = [date(2023, 1, 1) + timedelta(days=offset) for offset in range(0, 3 * 366, 13)]
    leap = [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1), date(2028, 2, 29)]
    for issued in [*days, *leap]:  # issued on 29 February too: its 6th anniversary is not one
        t = int(rules.start_of_day_utc(issued).timestamp()) + 15 * 3600 + 59 * 60  # 23:59 JST
        end = keptfor.validity_end(t)
        assert end >= t + keptfor.VALIDITY_AT_LEAST
        for family in Family:
            if not family.is_jpki:
                continue
            for renewal in (False, True):
                for birth in [None, *births]:
                    last = rules.latest_validity_end(
                        family=family, issued=issued, renewal=renewal, birth_date=birth
                    )
                    assert int(rules.end_of_day_utc(last).timestamp()) <= end


def test_the_instants_are_those_of_the_jst_day() -> None:
    """`keptfor` computes its instants once per JST day: the first and the last second of a day
    give the instants the rules give for that day, and the next second another day's."""
    for offset in range(0, 400, 7):
        d = date(2024, 2, 20) + timedelta(days=offset)
        first = int(rules.start_of_day_utc(d).timestamp())
        last = int(rules.end_of_day_utc(d).timestamp())
        end = rules.latest_validity_end(
            family=Family.AUTH_CARD, issued=d, renewal=True, birth_date=None
        )
        want = int(rules.end_of_day_utc(end).timestamp())
        assert keptfor.validity_end(first) == keptfor.validity_end(last) == want
        assert keptfor.validity_end(last + 1) > want
        m = sf.MoveIn(last)
        lapse = int(rules.move_out_lapse(d).timestamp())
        assert keptfor.move_in_erasable_at(m, lambda f, c: 30) == keptfor.validity_end(lapse)
        assert keptfor.move_in_erasable_at(m, lambda f, c: 4000) == kept_until(last, 4000)
        assert keptfor.taken_erasable_at(sf.Taken(first, True, False), lambda f, c: 4000) == (
            kept_until(first, 4000)
        )


def test_the_period_decides_when_longer() -> None:
    """With the shipped 3650 days a change or lapse is kept through the periods of the records it
    stands for, longer than any validity; each family's own period and its mobile cascade's count."""
    at = epoch(datetime(2024, 5, 1, 3, tzinfo=UTC))
    change_ = sf.Taken(at, True, False)
    assert keptfor.taken_erasable_at(change_, lambda f, c: 3650) == kept_until(at, 3650)

    def sign_mobile_longer(f: Family, c: Category) -> int:
        return 4000 if (f, c) == (Family.SIGN_MOBILE, Category.CARD_CASCADE) else 30

    assert keptfor.taken_erasable_at(change_, sign_mobile_longer) == kept_until(at, 4000)
    auth_only = sf.Taken(at, False, True)
    assert keptfor.taken_erasable_at(auth_only, sign_mobile_longer) == keptfor.validity_end(at)
    lapse = sf.Taken(at, False, True, 0, 0, at - 86_400 * 300)
    assert keptfor.taken_erasable_at(lapse, lambda f, c: 30) == keptfor.validity_end(
        at - 86_400 * 300
    )
    m = sf.MoveIn(at, at - 86_400)
    due = int(rules.move_out_lapse(rules.jst_date(from_epoch(at))).timestamp())
    assert keptfor.move_in_erasable_at(m, lambda f, c: 30) == keptfor.validity_end(due)
    assert keptfor.move_in_erasable_at(m, lambda f, c: 3650) == kept_until(at, 3650)


# --- taken: changes -----------------------------------------------------------------------


@pytest.mark.parametrize("agenda", [False, True])
def test_a_kept_change_goes_at_the_end_of_validity_of_what_it_took_not_a_second_before(
    world: World, agenda: bool
) -> None:
    world.apply([change(20, "fact-change", fact="address")])
    [t] = taken(world)
    assert t == address_change(20)
    at = keptfor.taken_erasable_at(t, retention)
    assert at == keptfor.validity_end(t.at)
    assert erase(world, at - 10 * 86_400, agenda=agenda).summary.taken_erased == 0
    if agenda:  # a scan within 30 days of it put the holder on the agenda: a follow loop wakes then
        assert next_erasure(world.store, retention) == from_epoch(at)
    assert erase(world, at - 1, agenda=agenda).summary.taken_erased == 0
    assert taken(world) == [t]
    ap = erase(world, at, agenda=agenda)
    assert ap.summary.taken_erased == 1 and ap.summary.as_dict()["taken_erased"] == 1
    assert kept_keys(world) == ([], [])  # nothing of the holder left there


@pytest.mark.parametrize("erased", [False, True])
def test_a_late_issuance_is_judged_by_the_change_until_its_erasure(
    world: World, erased: bool
) -> None:
    """Before the erasure, a sign-card certificate issued on day 10 whose record is read then is
    revoked by the change of day 20; read after it (more than a retention period after the change,
    the certificate long expired), it was added as it said, good (docs/records.md, arrival
    order): now refused as read too late (`crlbuilder.lateness`), nothing of it stored."""
    world.apply([change(20, "fact-change", fact="address")])
    at = keptfor.taken_erasable_at(address_change(20), retention)
    now = at if erased else at - 1
    erase(world, now, agenda=True)
    record = issuance(101, "sign-card-g1", H1, day=10)
    ap = read_at(world, now, [record])
    assert ap.summary.quarantined == ap.summary.late == int(erased)
    if erased:
        assert [q["reason"] for q in world.quarantined()] == [LATE_ISSUANCE]
        with world.store.read() as r:
            assert r.status(sf.status_key(INDEX["sign-card-g1"], 101)) is None
        return
    st = world.status("sign-card-g1", 101)
    assert st.not_after < now  # expired long before
    assert st.revoked and st.revoked_at == address_change(20).at


# --- taken: lapses ------------------------------------------------------------------------


@pytest.mark.parametrize("agenda", [False, True])
def test_a_kept_lapse_goes_at_the_end_of_validity_of_what_it_could_take(
    world: World, agenda: bool
) -> None:
    lapsed_at = domestic(world)
    [t] = taken(world)
    assert (t.at, t.lapse_due) == (lapsed_at, epoch(DUE))
    at = keptfor.taken_erasable_at(t, retention)
    assert at == keptfor.validity_end(epoch(DUE))
    ap = erase(world, at - 1, agenda=agenda)
    assert pending(world) is None and ap.summary.notices_erased == 1  # the notice long since
    assert taken(world) == [t]
    assert erase(world, at, agenda=agenda).summary.taken_erased == 1
    assert kept_keys(world) == ([], [])


@pytest.mark.parametrize("agenda", [False, True])
def test_a_lapse_the_notice_s_erasure_keeps_goes_in_that_erasure_once_past_its_own_instant(
    world: World, agenda: bool
) -> None:
    """A lapse an earlier builder kept only in its notice (no ``taken``): the notice's erasure
    writes it to ``taken`` (`crlbuilder.lapsed`), and when that erasure comes past the lapse's own
    instant it is erased in the same transaction, not left for ever."""
    domestic(world)
    with world.store.env.begin(write=True) as txn:
        txn.delete(holder(), db=world.store.dbs[sf.DB_TAKEN])
    p = pending(world)
    assert p is not None
    at = keptfor.taken_erasable_at(sf.Taken(p.lapsed_at, False, True, 0, 0, epoch(DUE)), retention)
    ap = erase(world, at, agenda=agenda)
    assert (ap.summary.notices_erased, ap.summary.taken_erased) == (1, 1)
    assert pending(world) is None and kept_keys(world) == ([], [])


# --- moveins ------------------------------------------------------------------------------


def move_in_history(world: World) -> sf.MoveIn:
    """A 転出届 made on day 30 for day 40, ended by a 転入届 made on day 45; the move-in kept."""
    world.apply([change(30, "move-out-notice", planned_date=PLANNED.isoformat()),
                 change(45, "move-in-notice")])  # fmt: skip
    [m] = move_ins(world)
    assert m.ended == epoch(datetime.fromisoformat(ts(30)))
    return m


@pytest.mark.parametrize("agenda", [False, True])
def test_a_kept_move_in_goes_at_its_instant_not_a_second_before(world: World, agenda: bool) -> None:
    m = move_in_history(world)
    at = keptfor.move_in_erasable_at(m, retention)
    assert erase(world, at - 10 * 86_400, agenda=agenda).summary.move_ins_erased == 0
    if agenda:
        assert next_erasure(world.store, retention) == from_epoch(at)
    assert erase(world, at - 1, agenda=agenda).summary.move_ins_erased == 0
    assert move_ins(world) == [m]
    ap = erase(world, at, agenda=agenda)
    assert ap.summary.move_ins_erased == 1 and ap.summary.as_dict()["move_ins_erased"] == 1
    assert kept_keys(world) == ([], [])


@pytest.mark.parametrize("erased", [False, True])
def test_an_older_move_out_read_late_is_judged_by_the_move_in_until_its_erasure(
    world: World, erased: bool
) -> None:
    """A 転出届 made on day 25 for day 40, before the move-in of day 45, read only then: before the
    erasure the move-in answers it (nothing pending); after it (more than a retention period
    after the move-in: docs/records.md, arrival order), it is pending by its own dates and
    lapsed (every auth-card certificate its lapse could take had expired: none was revoked):
    now refused as read too late (`crlbuilder.lateness`), nothing pending either way."""
    world.apply([issuance(102, "auth-card-g1", H1, day=0, not_after=ts(1500))])
    published(world)  # a lapse is dated when written (Act §34(1)(2))
    m = move_in_history(world)
    at = keptfor.move_in_erasable_at(m, retention)
    now = at if erased else at - 1
    erase(world, now, agenda=True)
    older = change(44, "move-out-notice", planned_date=PLANNED.isoformat())
    older["notified_at"] = ts(25)
    ap = read_at(world, now, [older])
    assert ap.summary.quarantined == ap.summary.late == int(erased)
    assert [q["reason"] for q in world.quarantined()] == ([LATE_NOTICE] if erased else [])
    assert pending(world) is None
    assert not world.status("auth-card-g1", 102).revoked


# --- the agenda, the transaction ----------------------------------------------------------


def history(world: World) -> int:
    """A change, a lapse and a move-in of the holder; the instant all are due by."""
    lapsed_at = domestic(world)
    world.apply([change(500, "move-out-notice", planned_date=(PLANNED + timedelta(days=460)).isoformat()),
                 change(505, "move-in-notice"), change(520, "fact-change", fact="address")])  # fmt: skip
    assert lapsed_at
    return max(
        [keptfor.taken_erasable_at(t, retention) for t in taken(world)]
        + [keptfor.move_in_erasable_at(m, retention) for m in move_ins(world)]
    )


@pytest.mark.parametrize("agenda", [False, True])
def test_erasing_again_changes_nothing(world: World, agenda: bool) -> None:
    at = history(world)
    ap = erase(world, at, agenda=agenda)
    assert (ap.summary.taken_erased, ap.summary.move_ins_erased) == (2, 1)
    after = dump_store(world.store, meta=())
    ap = erase(world, at, agenda=agenda)
    assert (ap.summary.taken_erased, ap.summary.move_ins_erased) == (0, 0)
    assert dump_store(world.store, meta=()) == after


def test_a_crash_before_the_erasures_commit_leaves_the_store(world: World) -> None:
    at = history(world)
    before = dump_store(world.store)

    def killed() -> None:
        raise RuntimeError("killed")

    ap = world.apply([])
    ap.crash_points["erase-before-commit"] = killed
    with pytest.raises(RuntimeError, match="killed"):
        ap.erase_past_retention(at, retention, keep_time=False, agenda=True)
    assert dump_store(world.store) == before
    again = erase(world, at, agenda=True)
    assert (again.summary.taken_erased, again.summary.move_ins_erased) == (2, 1)


def test_the_agenda_lists_the_next_entry_of_a_holder_left_with_some(world: World) -> None:
    """Two changes 10 days apart: the first's erasure leaves the second, whose instant the agenda
    lists again (a follow loop wakes then, and it goes then, not at the next scan)."""
    world.apply([change(20, "fact-change", fact="address"), change(30, "fact-change", fact="name")])
    first, second = (keptfor.taken_erasable_at(t, retention) for t in taken(world))
    assert erase(world, first, agenda=True).summary.taken_erased == 1
    assert taken(world) == [address_change(30)]
    assert next_erasure(world.store, retention) == from_epoch(second)
    assert erase(world, second - 1, agenda=True).summary.taken_erased == 0
    assert erase(world, second, agenda=True).summary.taken_erased == 1
    assert kept_keys(world) == ([], [])


@pytest.mark.parametrize("kind", ["fact-change", "move-in-notice"])
def test_an_entry_kept_since_the_scan_for_a_record_read_late_goes_at_once(
    world: World, kind: str
) -> None:
    """A change recorded (or a move-in made) on day 20 whose record is read after the scan, years
    later, already past its instant: it makes the agenda stale (as a CRL entry recorded then would),
    so the next erasure within the agenda's span erases it, not the scan after its horizon."""
    now = keptfor.validity_end(epoch(datetime.fromisoformat(ts(400)))) + 100 * 86_400
    erase(world, now, agenda=True)
    rec = change(20, kind, **({"fact": "address"} if kind == "fact-change" else {}))
    read_at(world, now + 60, [rec])
    assert kept_keys(world) != ([], [])
    ap = erase(world, now + 120, agenda=True)
    assert ap.summary.taken_erased + ap.summary.move_ins_erased == 1
    assert kept_keys(world) == ([], [])


def test_an_entry_kept_in_time_costs_no_scan(world: World) -> None:
    """A move-in made five days before the scan, its record read after it (a usual lag): it can
    fall due six years on at the earliest (`keptfor.move_in_due_from`): the commit lists its
    holder there (the agenda is complete, no watermark), so the agenda stays good and no erasure
    scans, with 30-day periods too."""
    now = epoch(datetime.fromisoformat(ts(300)))
    erase(world, now, agenda=True)
    rec = change(300 + 60 / 86_400, "move-in-notice")
    rec["notified_at"] = ts(295)
    read_at(world, now + 60, [rec])
    with world.store.read() as r:
        assert r.kept_written_from() is None  # the commit lists it on the agenda (complete)
    due_from = keptfor.move_in_due_from(epoch(datetime.fromisoformat(ts(295))))
    assert (due_from, bytes.fromhex(H1)) in agenda(world.store)
    erase(world, now + 120, agenda=True)
    with world.store.read() as r:
        state = r.retention_state()
        assert state is not None and state.scanned_at == now  # no scan since


def test_an_agenda_a_release_before_made_is_scanned_again_for_entries_due_long_ago(
    world: World,
) -> None:
    """Upgrade (docs/store.md): a store whose agenda `RULES` 3 made (its digest without
    `retention.KEPT`) and whose kept entries fell due years ago: the first erasure scans and
    erases them, not at that agenda's horizon."""
    at = history(world)
    now = at + 1000 * 86_400
    earlier = periods_digest(retention, (NOTICES,))  # RULES 3's
    with Commit(world.store, lambda: from_epoch(now)) as c:
        c.rebuild_retention(scanned(now - 5 * 86_400, earlier), [])
    ap = erase(world, now, agenda=True)
    assert (ap.summary.taken_erased, ap.summary.move_ins_erased) == (2, 1)


def test_erasing_kept_entries_alone_moves_no_commit(world: World) -> None:
    """Kept entries bound no answer: their erasure (every one of the holder's, its keys deleted)
    leaves the commit sequence (and every cached answer) and the changes feed as they were."""
    at = history(world)
    first = min(
        [keptfor.taken_erasable_at(t, retention) for t in taken(world)]
        + [keptfor.move_in_erasable_at(m, retention) for m in move_ins(world)]
    )
    erase(world, first - 1, agenda=False)  # the lapsed notice, long since
    with world.store.read() as r:
        before = (r.generation(), list(r.changes(changes_start(0))))
    ap = erase(world, at, agenda=False)
    assert (ap.summary.erased, ap.summary.taken_erased, ap.summary.move_ins_erased) == (0, 2, 1)
    assert kept_keys(world) == ([], [])
    with world.store.read() as r:
        assert (r.generation(), list(r.changes(changes_start(0)))) == before


def test_a_holder_listed_twice_on_the_agenda_is_erased_once(world: World) -> None:
    """A holder's lapsed notice and its kept change each list its holder key on the agenda, at
    instants a few days apart: an erasure that comes after both (a node down for a few days, a
    build run daily) takes the key twice. The notice is erased once, the change too; the
    erasure does not fail (it did: the second take found the notice gone, an assertion, and every
    erasure, so every build, failed from then on)."""
    lapsed_at = domestic(world)
    notice_at = kept_until(lapsed_at, DAYS)
    day = -2200.0
    while keptfor.validity_end(epoch(datetime.fromisoformat(ts(day)))) < notice_at - 3 * 86_400:
        day += 1
    world.apply([change(day, "fact-change", fact="address")])
    change_at = keptfor.taken_erasable_at(address_change(day), retention)
    assert notice_at - 5 * 86_400 < change_at < notice_at
    erase(world, change_at - 5 * 86_400, agenda=True)  # a scan lists the holder at both instants
    ap = erase(world, notice_at, agenda=True)
    assert (ap.summary.notices_erased, ap.summary.taken_erased) == (1, 1)
    assert pending(world) is None
    assert [t.at for t in taken(world)] == [lapsed_at]  # the lapse, kept six years on
