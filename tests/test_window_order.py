"""The 国外転出届 window (Act §12(2), §31(2)) and move-in notices are judged by the dates the
records carry (when the notice was made), never by the order in which the records arrive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.apply import Applier, next_lapse
from crlbuilder.ingest import read_file
from crlbuilder.model import Category
from crlbuilder.store import format as sf
from tests.support.store import dump_store
from tests.test_apply import FACTS, H1, KEY, T0, World, issuance, rid, ts
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


# --- a move-out notice whose record arrives after the move-in that followed it ---------------


def holder_key() -> bytes:
    return bytes.fromhex(H1)


def lapse_state(world: World) -> tuple[int, bool]:
    """(lapse due for the auth-card certificate 102 as the responder reads it, a notice pending)."""
    st = world.status("auth-card-g1", 102)
    with world.store.read() as r:
        return r.lapse_due(st), r.pending(holder_key()) is not None


def sweep_long_after(world: World) -> int:
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=400))
    return ap.sweep_lapses(DUE + timedelta(days=400))


@pytest.mark.parametrize("one_batch", [True, False])
def test_act_31_2_move_out_recorded_after_the_move_in_that_followed_it_starts_no_lapse(
    world: World, one_batch: bool
) -> None:
    """The 転出届 made on day 35, the 転入届 on day 45 (before the due instant, day 71); the move-in
    record comes first. The move-out then starts no lapse: no bound on the answers, no
    revocation when the due instant passes, nothing pending."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    move_in = change(46, "move-in-notice", notified_at=ts(45))
    move_out = change(50, "move-out-notice", planned_date=PLANNED.isoformat(), notified_at=ts(35))
    if one_batch:
        world.apply([move_in, move_out])
    else:
        world.apply([move_in])
        world.apply([move_out])
    assert world.quarantined() == []
    assert lapse_state(world) == (0, False)
    assert next_lapse(world.store) is None
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 102).revoked


def test_act_31_2_move_in_made_after_the_due_instant_does_not_follow_a_late_move_out(
    world: World,
) -> None:
    """The 転入届 made on day 75, after the due instant (day 71): the 30 days passed with no move-in,
    and the lapse stands whichever record came first."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([change(76, "move-in-notice", notified_at=ts(75)),
                 change(77, "move-out-notice", planned_date=PLANNED.isoformat(),
                        notified_at=ts(35))])  # fmt: skip
    assert lapse_state(world) == (int(DUE.timestamp()), True)
    assert sweep_long_after(world) == 1
    assert world.status("auth-card-g1", 102).revoked


def test_act_31_2_move_in_made_before_a_late_move_out_does_not_follow_it(world: World) -> None:
    """The 転入届 made on day 10 (an earlier move) and recorded first; the 転出届 made on day 30: it is
    pending, and lapses."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([change(11, "move-in-notice", notified_at=ts(10)),
                 change(35, "move-out-notice", planned_date=PLANNED.isoformat(),
                        notified_at=ts(30))])  # fmt: skip
    assert lapse_state(world) == (int(DUE.timestamp()), True)
    assert sweep_long_after(world) == 1
    assert world.status("auth-card-g1", 102).revoked


EARLY_PLANNED = (T0 + timedelta(days=25)).date()  # its lapse is due on day 56


def two_move_outs_one_move_in() -> dict[str, dict[str, object]]:
    """X made on day 20 (due day 56), Y made on day 30 (replaces X before X's lapse is due;
    due day 71), the 転入届 M made on day 60 (too late for X alone, in time for Y): by the order
    they were made, nothing lapses. Each record arrives on day 80."""
    return {
        "X": change(80, "move-out-notice", planned_date=EARLY_PLANNED.isoformat(),
                    notified_at=ts(20)),
        "Y": change(80, "move-out-notice", planned_date=PLANNED.isoformat(), notified_at=ts(30)),
        "M": change(80, "move-in-notice", notified_at=ts(60)),
    }  # fmt: skip


@pytest.mark.parametrize("order", ["XYM", "YXM", "YMX", "MXY", "MYX"])
def test_act_31_2_two_move_outs_and_a_move_in_judged_by_when_they_were_made(
    world: World, order: str
) -> None:
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    notices = two_move_outs_one_move_in()
    ap = world.apply([notices[k] for k in order])
    assert world.quarantined() == []
    assert ap.summary.move_in_after_lapse == 0
    assert lapse_state(world) == (0, False)
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 102).revoked


def test_act_34_1_2_two_move_outs_lapse_written_before_the_later_one_stands(world: World) -> None:
    """X, then M, then Y: when M is applied only X is known, and X's lapse, due on day 56, is
    written before M (made on day 60, too late for X) is taken. It stands (Act §34(1)(2)),
    though Y, which M followed in time, had replaced X before it was due; Y starts nothing."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    notices = two_move_outs_one_move_in()
    world.apply([notices[k] for k in "XMY"])
    st = world.status("auth-card-g1", 102)
    assert st.revoked and st.revoked_at >= int(rules.move_out_lapse(EARLY_PLANNED).timestamp())
    assert lapse_state(world) == (0, False)
    assert sweep_long_after(world) == 0


@pytest.mark.parametrize("move_in_first", [True, False])
def test_act_12_2_window_of_a_move_out_a_move_in_followed_is_the_same_whatever_came_first(
    world: World, move_in_first: bool
) -> None:
    """A 国外転出届 that a 転入届 followed is no longer pending, whichever record came first: a
    deletion citing it afterwards is judged the same way both times (the sign-card certificate
    issued in its window is not spared, as with the records in order)."""
    certs, notice, deletion = window_history()
    move_in = change(31, "move-in-notice", notified_at=ts(30))
    world.apply([*certs, move_in, notice] if move_in_first else [*certs, notice, move_in])
    assert world.quarantined() == []
    with world.store.read() as r:
        assert r.pending(holder_key()) is None
    world.apply([deletion])
    assert world.status("sign-card-g2", 201).revoked
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 202).revoked


def test_act_31_2_a_late_move_out_replayed_changes_nothing(world: World) -> None:
    """The records applied again (the same input replayed): every one a duplicate, the store's
    bytes as they were, the kept move-in included."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    notices = two_move_outs_one_move_in()
    path = world.tmp / "replayed.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(notices[k]) + b"\n" for k in "MYX"))
    world.apply_file(path)
    before = dump_store(world.store)
    ap = world.apply_file(path)
    assert ap.summary.duplicates == 3 and ap.summary.applied == 0
    assert dump_store(world.store) == before
    with world.store.read() as r:
        kept = r.move_ins(holder_key())
    assert kept == [sf.MoveIn(epoch_day(60), ended=epoch_day(30))]  # M, which ended Y (and X)


def epoch_day(day: float) -> int:
    return int((T0 + timedelta(days=day)).timestamp())


def test_kept_move_ins_are_the_latest_made_per_holder_two_instants_each_and_no_record_id(
    world: World,
) -> None:
    """Bounded: one entry per holder, a list of the latest `MAX_MOVE_INS` move-ins made, earliest
    first (an earlier one arriving later takes its place by when it was made), each two
    instants (when it was made, the move-out notice it ended) under the holder key, nothing
    of the records."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    world.apply([change(61, "move-in-notice", notified_at=ts(60)),
                 change(62, "move-in-notice", notified_at=ts(50)),
                 change(63, "move-out-notice", planned_date=PLANNED.isoformat(),
                        notified_at=ts(35))])  # fmt: skip
    [(key, value)] = dump_store(world.store)[sf.DB_MOVE_INS.decode()]
    assert key == holder_key()
    # the move-out made on day 35 is ended by the first move-in made after it, on day 50
    assert msgspec.json.decode(value) == [[epoch_day(50), epoch_day(35)], [epoch_day(60), 0]]
    later = [100 + 10 * n for n in range(sf.MAX_MOVE_INS - 1)]
    world.apply([change(d + 1, "move-in-notice", notified_at=ts(d)) for d in later])
    [(key, value)] = dump_store(world.store)[sf.DB_MOVE_INS.decode()]
    assert msgspec.json.decode(value) == [[epoch_day(d), 0] for d in [60, *later]]


def two_moves() -> dict[str, dict[str, object]]:
    """Two moves: the 転出届 X made on day 10 (due day 46), the 転入届 I on day 20, the 転出届 Y on
    day 60 (due day 96), the 転入届 J on day 70. Each record arrives on day 100."""
    return {
        "X": change(100, "move-out-notice", planned_date=(T0 + timedelta(days=15)).date()
                    .isoformat(), notified_at=ts(10)),
        "I": change(100, "move-in-notice", notified_at=ts(20)),
        "Y": change(100, "move-out-notice", planned_date=(T0 + timedelta(days=65)).date()
                    .isoformat(), notified_at=ts(60)),
        "J": change(100, "move-in-notice", notified_at=ts(70)),
    }  # fmt: skip


@pytest.mark.parametrize("order", ["IJXY", "JIXY", "IYJX", "YJIX", "JIYX"])
def test_act_31_2_move_out_read_after_a_later_move_is_judged_by_the_move_in_that_followed_it(
    world: World, order: str
) -> None:
    """X's record read after J's (a later move): X is judged by I, which followed it in time,
    not by J, made too late for X; by the order they were made nothing lapses."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    notices = two_moves()
    world.apply([notices[k] for k in order])
    assert world.quarantined() == []
    assert lapse_state(world) == (0, False)
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 102).revoked
    with world.store.read() as r:
        assert [m.notified_at for m in r.move_ins(holder_key())] == [epoch_day(20), epoch_day(70)]


@pytest.mark.parametrize("later", [sf.MAX_MOVE_INS - 1, sf.MAX_MOVE_INS])
def test_act_31_2_a_move_out_read_after_more_move_ins_than_kept_lapses(
    world: World, later: int
) -> None:
    """The bound (docs/records.md): X (made day 10, due day 46) followed by I (day 20), then
    ``later`` move-ins (from day 50), X's record last. While I is among the latest
    `MAX_MOVE_INS` made X starts nothing; once ``MAX_MOVE_INS`` later ones pushed it out, X is
    judged by those, too late for it, and lapses."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    notices = two_moves()
    moves = [change(200, "move-in-notice", notified_at=ts(50 + 5 * n)) for n in range(later)]
    world.apply([notices["I"], *moves, {**notices["X"], "recorded_at": ts(200)}])
    assert world.quarantined() == []
    sweep_long_after(world)
    assert world.status("auth-card-g1", 102).revoked == (later >= sf.MAX_MOVE_INS)


def test_act_31_2_older_move_out_recorded_after_a_later_one_lapsed_adds_no_lapse(
    world: World,
) -> None:
    """Y, made on day 30, lapses on day 71; the holder's new auth-card certificate is issued on
    day 120. Then the record of X, made on day 20 but replaced by Y before its own lapse was due
    (day 56), arrives: by the order they were made X never lapsed, and the new certificate stays
    good. (The lapsed notice is what says so: see report-movein.md on pruning it.)"""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    notices = two_move_outs_one_move_in()
    world.apply([{**notices["Y"], "recorded_at": ts(31)}])
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=1))
    assert ap.sweep_lapses(DUE + timedelta(days=1)) == 1
    world.apply([issuance(302, "auth-card-g1", H1, day=120)])
    world.apply([{**notices["X"], "recorded_at": ts(130)}])
    assert world.quarantined() == []
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 302).revoked
    st = world.status("auth-card-g1", 302)
    with world.store.read() as r:
        assert r.lapse_due(st) == 0


VERY_EARLY_PLANNED = (T0 + timedelta(days=5)).date()  # its lapse is due on day 36


def early_move_out(recorded: float) -> dict[str, object]:
    """A 転出届 made on day 5, whose lapse falls due (day 36) before the 転出届 `later_move_out`."""
    return change(recorded, "move-out-notice", planned_date=VERY_EARLY_PLANNED.isoformat(),
                  notified_at=ts(5))  # fmt: skip


def later_move_out(recorded: float) -> dict[str, object]:
    """A 転出届 made on day 40 for day 40: its lapse is due on day 71 (`DUE`)."""
    return change(recorded, "move-out-notice", planned_date=PLANNED.isoformat(),
                  notified_at=ts(40))  # fmt: skip


def test_act_31_2_older_move_out_lapsed_before_the_pending_one_was_made_lapses_by_itself(
    world: World,
) -> None:
    """Z (made day 5, due day 36, no move-in) arrives after Y (made day 40, due day 71): by the
    order they were made Z lapsed on day 36, before Y was made. Its lapse is written when its
    record comes, and Y stays pending with its own planned date (the older notice replaces
    nothing)."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([later_move_out(41)])
    ap = world.apply([early_move_out(42)])
    st = world.status("auth-card-g1", 102)
    assert st.revoked and st.category_enum is Category.RESIDENT_CHANGE
    assert ap.summary.revocations == {"resident-change": 1}
    with world.store.read() as r:
        p = r.pending(holder_key())
    assert p is not None and p.planned_date == PLANNED.isoformat() and not p.lapsed_at


def test_act_31_2_older_lapse_spares_a_certificate_issued_after_it_fell_due(world: World) -> None:
    """The older notice's lapse (due day 36) takes the certificates the holder had then, not the
    one issued on day 38, which stays under the pending notice's own lapse (day 71)."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(37),
                  "serial": 102, "issuer": "auth-card-g1", "reason": "application"},
                 issuance(302, "auth-card-g1", H1, day=38)])  # fmt: skip
    world.apply([later_move_out(41), early_move_out(45)])
    assert world.quarantined() == []
    assert world.status("auth-card-g1", 102).category_enum is Category.REQUEST
    assert lapse_state(world)[1]
    st = world.status("auth-card-g1", 302)
    assert not st.revoked
    with world.store.read() as r:
        assert r.lapse_due(st) == int(DUE.timestamp())
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=1))
    assert ap.sweep_lapses(DUE + timedelta(days=1)) == 1
    assert world.status("auth-card-g1", 302).revoked


def test_act_31_2_older_lapse_not_due_by_the_clock_is_refused_state_unchanged(world: World) -> None:
    """A builder whose clock (day 30) is before the older notice's due instant (day 36) cannot
    write its lapse, nor keep it pending in the later notice's place: the record is refused with
    one line, nothing of it applied (its quarantine key aside)."""
    world.apply([issuance(102, "auth-card-g1", H1), later_move_out(41)])
    before = dump_store(world.store, meta=(), skip=[sf.DB_QUARANTINE])
    path = world.tmp / "older.jsonl"
    path.write_bytes(msgspec.json.encode(early_move_out(45)) + b"\n")
    ap = Applier(world.store, facts_key=KEY, quarantine=world.quarantine,
                 clock=FakeClock(T0 + timedelta(days=30)))  # fmt: skip
    ap.run(read_file(path))
    assert ap.summary.quarantined == 1 and ap.summary.applied == 0
    [q] = world.quarantined()
    assert "lapse is not due by the builder's clock" in str(q["reason"])
    assert dump_store(world.store, meta=(), skip=[sf.DB_QUARANTINE]) == before


def test_act_31_2_late_move_out_lapse_spares_a_certificate_issued_after_it_fell_due(
    world: World,
) -> None:
    """The 転出届 made on day 35 (due day 71) is recorded on day 80, after the holder's old
    certificate was given up (day 72), a new one issued (day 73) and a 転入届 made too late for it
    (day 75). Its lapse is written, but takes only the certificates the holder had on day 71:
    the new one is neither bounded nor revoked by it."""
    world.apply([issuance(102, "auth-card-g1", H1)])
    published(world)
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(72),
                  "serial": 102, "issuer": "auth-card-g1", "reason": "application"},
                 issuance(302, "auth-card-g1", H1, day=73),
                 change(76, "move-in-notice", notified_at=ts(75)),
                 change(80, "move-out-notice", planned_date=PLANNED.isoformat(),
                        notified_at=ts(35))])  # fmt: skip
    assert world.quarantined() == []
    st = world.status("auth-card-g1", 302)
    with world.store.read() as r:
        assert r.lapse_due(st) == 0
    assert sweep_long_after(world) == 0
    assert not world.status("auth-card-g1", 302).revoked
    assert world.status("auth-card-g1", 102).category_enum is Category.REQUEST


def test_act_31_2_issuance_recorded_after_the_lapse_that_took_it_is_never_good(
    world: World,
) -> None:
    """The holder's auth-card certificate issued on day 37, after a 転出届 (day 35, due day 71)
    and before the lapse fell due; its issuance record arrives after the lapse was written. The
    lapse took every certificate the holder had on day 71: this one is revoked by it, at its
    instant, in the commit that adds it (a certificate issued after the due instant is not)."""
    world.apply([issuance(102, "auth-card-g1", H1),
                 {"type": "revocation-request", "id": rid(), "recorded_at": ts(30),
                  "serial": 102, "issuer": "auth-card-g1", "reason": "application"},
                 change(36, "move-out-notice", planned_date=PLANNED.isoformat(),
                        notified_at=ts(35))])  # fmt: skip
    published(world)
    ap = world.apply([])
    ap.clock = FakeClock(DUE + timedelta(days=1))
    assert ap.sweep_lapses(DUE + timedelta(days=1)) == 0  # no good certificate to take yet
    with world.store.read() as r:
        lapsed = r.pending(holder_key())
    assert lapsed is not None and lapsed.lapsed_at
    ap = world.apply(
        [issuance(302, "auth-card-g1", H1, day=37), issuance(303, "auth-card-g1", H1, day=75)]
    )
    assert world.quarantined() == []
    st = world.status("auth-card-g1", 302)
    assert st.revoked and st.category_enum is Category.RESIDENT_CHANGE
    assert st.revoked_at == lapsed.lapsed_at and ap.summary.revocations == {"resident-change": 1}
    assert not world.status("auth-card-g1", 303).revoked
