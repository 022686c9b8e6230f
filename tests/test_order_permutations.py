"""One holder's resident changes and card issuances give the same end whatever order their records
arrive in (Act §12, §31, §34(1)(2); shared/DOMAIN.md section 3): each small scenario is applied
in every arrival order through the real `Applier` on a real store, and each certificate's end
(revoked or not, category, instant) and the refusals are compared with those of the records
applied in the order they were made. The only differences allowed are the limits
docs/records.md documents ("Arrival order: what stands as it was written"), each named where it
applies (`tests.orderperm.Run.limits`) and pinned by a scenario of its own below.

Also checked in every order: no revocation dated before the certificate began, a lapse dated
at the clock of the run that wrote it (never earlier, Act §34(1)(2)), and the same input
replayed changes no byte of the store.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import permutations
from pathlib import Path

import pytest

from crlbuilder.apply import epoch
from crlbuilder.store import format as sf
from tests.orderperm import (
    Outcome,
    Rec,
    Run,
    auth,
    day,
    deletion,
    dump,
    fact_change,
    move_in,
    move_out,
    second_auth,
    sign,
)
from tests.test_apply import World

LATE = day(400)
"""A builder clock past every due instant of every scenario."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def check(run: Run) -> Counter[str]:
    """Apply ``run``, check every order against the made order; returns how many certificate
    ends each documented limit explained (and ``exact``: the orders equal to the made order)."""
    run.apply()
    outcomes = run.outcomes()
    ref = outcomes[0]
    seen: Counter[str] = Counter()
    changes = {epoch(day(r.recorded)) for r in run.recs if not r.notice and not r.issuance}
    clocks = {epoch(c) for c in run.clocks}
    dues = [r.due for r in run.recs if r.due is not None]
    for k, got in enumerate(outcomes):
        where = f"{run.name}: {run.label(k)} (made order: {run.label(0)})"
        assert got.refused == ref.refused, where
        assert got.certs.keys() == ref.certs.keys(), where
        for tag, end in got.certs.items():
            issued = next(r for r in run.recs if r.kind == tag)
            revoked, _category, at = end
            if revoked:
                assert at >= epoch(day(issued.made)), f"{where}: {tag} revoked before it began"
                # a change's own instant, or a lapse dated at the clock that wrote it
                assert at in changes or (at in clocks and dues and at >= epoch(min(dues))), where
            if end != ref.certs[tag]:
                why = run.limits(k, tag, end, ref.certs[tag])
                assert why, f"{where}: {tag} ends {end}, in the made order {ref.certs[tag]}"
                seen.update(why)
        if got == ref:
            seen["exact"] += 1
    before = dump(run.world)
    run.replay()
    assert dump(run.world) == before, f"{run.name}: replaying the input changed the store"
    return seen


def differing(run: Run) -> dict[str, Outcome]:
    outcomes = run.outcomes()
    return {run.label(k): o for k, o in enumerate(outcomes) if o != outcomes[0]}


# --- scenarios every order must agree on (each once a bug: see report-ordaudit.md) ------------

AGREE: dict[str, list[Rec]] = {
    # a change whose record comes first takes a certificate issued before it (was: stayed good)
    "fact-change-before-the-issuance": [sign(30), fact_change(120), move_out(120, 125)],
    "death-before-the-issuances": [sign(10), auth(20), deletion(30, "death"), move_in(100)],
    "abroad-deletion-outside-the-window": [
        sign(15),
        move_out(20, 40, abroad=True),
        deletion(40.5, "abroad-move-out"),
    ],
    # a change whose record comes last takes no certificate issued after it (was: revoked
    # before it began)
    "issuance-after-the-change": [deletion(0, "death"), sign(25), move_in(100), auth(120)],
    "fact-change-then-new-card": [fact_change(10), move_out(30, 30), move_in(35), sign(75)],
    # a lapse whose notice a later move-in (made too late) removed still takes the certificate
    # issued before it fell due, read after both (was: stayed good, a documented limit)
    "late-issuance-under-a-lapse-whose-notice-was-removed": [
        auth(0),
        move_out(40, 45),
        move_in(100),
    ],
    # movein's cases, with a certificate: the notices judged by when they were made
    "late-move-out-after-its-move-in": [auth(0), move_in(45), move_out(35, 40, lag=15)],
    "two-move-outs-a-move-in": [auth(0), move_out(20, 25, lag=60), move_out(30, 40, lag=50)],
}


@pytest.mark.parametrize("name", sorted(AGREE))
@pytest.mark.parametrize("clocks", [(LATE,), (day(66), LATE)], ids=["late", "staged"])
def test_every_arrival_order_ends_as_the_made_order(
    world: World, name: str, clocks: tuple[datetime, ...]
) -> None:
    run = Run.of(world, name, AGREE[name], clocks)
    seen = check(run)
    assert differing(run) == {}
    assert seen["exact"] == len(run.orders)


def test_a_new_auth_card_made_after_the_lapse_fell_due_is_no_double_issuance(
    world: World,
) -> None:
    """A@0, a 転出届 made on day 10 for day 20 (its 30-day lapse due on day 51, Act §31(2)), a
    second auth-card certificate B issued on day 60, a 転入届 on day 100 (too late to stop the
    lapse). A builder catching up at day 400 on a published store writes the lapse dated at its
    clock (Act §34(1)(2)), but A lost effect for Act §25 when the lapse fell due: B is no double
    issuance (was: quarantined, in the order made too), whichever of A, O and I came first, the
    lapsed notice still pending or already removed by I. Each clock: all at once at day 400, or
    day 66 then 400.

    Only the orders with A and O before B: read before either, B meets a valid certificate and
    no notice, and is refused (docs/records.md, "what stands as it was written")."""
    recs = [auth(0), move_out(10, 20), second_auth(60), move_in(100)]
    a, o, b = 0, 1, 2
    for clocks in ((LATE,), (day(66), LATE)):
        orders = [p for p in permutations(range(4)) if p.index(b) > max(p.index(a), p.index(o))]
        run = Run.of(world, f"second-auth-{len(clocks)}", recs, clocks, orders=orders)
        seen = check(run)
        assert len(run.orders) == 8
        assert differing(run) == {}
        assert seen["exact"] == 8
        made = run.outcomes()[0]
        assert made.refused == ()
        assert made.certs["B"] == (False, "", 0)
        assert made.certs["A"] == (True, "resident-change", epoch(clocks[0]))


# --- the documented limits, each pinned -------------------------------------------------------


def test_limit_lapse_written_before_the_notice_that_ended_it_stands(world: World) -> None:
    """X (made day 20, due day 56), Y (day 30, replaces X in time), M (move-in day 60, in time
    for Y): in the order made nothing lapses. When M's record comes while only X is known, X's
    lapse is due by M's date and is written first: it stands (Act §34(1)(2)), whatever Y says
    after. Exactly the orders with X before M before Y, and the certificate's issuance before M,
    differ (read after M, the issuance finds X's lapse written and its notice removed by M: good,
    as in the order made)."""
    recs = [auth(0), move_out(20, 25, lag=60), move_out(30, 40, lag=50), move_in(60, lag=20)]
    run = Run.of(world, "lapse-first", recs, (LATE,))
    seen = check(run)
    diff = differing(run)
    x, y, m = (r.name for r in recs[1:])
    assert sorted(diff) == sorted(
        run.label(k) for k, o in enumerate(run.orders) if o.index(1) < o.index(3) < o.index(2)
    )
    assert {o.certs["A"][:2] for o in diff.values()} == {(True, "resident-change")}
    assert set(seen) == {"exact", "lapse-written-before-the-notice-that-ended-it"}
    assert (x, y, m) == ("O@20>25~80", "O@30>40~80", "I@60~80")


def test_limit_lapse_written_before_the_move_in_that_ended_it_lets_a_second_card_in(
    world: World,
) -> None:
    """A@0, a 転出届 on day 10 for day 20 (due day 51), a 転入届 made on day 30 (in time), a second
    auth-card issuance B on day 60. In the order made nothing lapses and B is refused (Act §25: A
    was in effect). When B's record comes before I's (A and O before it), B's record writes the
    lapse, which stands (Act §34(1)(2), the limit above), and B is then no double issuance: A is
    revoked at the clock, B is good. Never both good; exactly those orders differ. (Run apart:
    the harness compares no refusal difference, docs/records.md.)"""
    recs = [auth(0), move_out(10, 20), move_in(30), second_auth(60)]
    a, o, i, b = range(4)
    orders = [p for p in permutations(range(4)) if p.index(b) > max(p.index(a), p.index(o))]
    run = Run.of(world, "lapse-first-second-card", recs, (LATE,), orders=orders)
    run.apply()
    made = run.outcomes()[0]
    assert made.certs == {"A": (False, "", 0)} and made.refused == (recs[b].name,)
    diff = differing(run)
    assert sorted(diff) == sorted(
        run.label(k) for k, p in enumerate(run.orders) if p.index(b) < p.index(i)
    )
    assert len(diff) == 2
    for got in diff.values():
        assert got.refused == ()
        assert got.certs == {"A": (True, "resident-change", epoch(LATE)), "B": (False, "", 0)}


def test_limit_a_revocation_written_is_not_redated_by_an_earlier_change(world: World) -> None:
    """A fact change on day 20 and a deletion on day 45 both take the sign-card certificate;
    in the order made it lost effect on day 20. When the deletion's record comes first, the
    certificate is revoked on day 45 then; the fact change read afterwards finds it revoked and
    leaves it so (docs/records.md: a written revocation is never changed). Read after both
    changes, the issuance is revoked at the earliest (day 20), as in the order made."""
    recs = [sign(10), fact_change(20), deletion(45, "move-out")]
    run = Run.of(world, "redate", recs, (LATE,))
    seen = check(run)
    diff = differing(run)
    assert sorted(diff) == ["D:move-out@45 S@10 F@20", "S@10 D:move-out@45 F@20"]
    assert {o.certs["S"] for o in diff.values()} == {(True, "resident-change", epoch(day(45)))}
    assert set(seen) == {"exact", "revocation-not-redated"}


def test_limit_abroad_deletion_read_before_its_notice_takes_the_window(world: World) -> None:
    """A 国外転出届 made on day 20 for day 40, a sign-card certificate issued on day 22 (in its
    window, Act §12(2)), the record deleted on it on day 40. Read before the notice's record,
    the deletion cannot know the window: it revokes the certificate, and the notice read
    afterwards does not undo it. The other orders spare it, as the order made does."""
    recs = [move_out(20, 40, abroad=True, lag=30), sign(22), deletion(40.5, "abroad-move-out")]
    run = Run.of(world, "abroad", recs, (LATE,))
    seen = check(run)
    diff = differing(run)
    o, s, d = (r.name for r in recs)
    assert sorted(diff) == sorted([f"{d} {o} {s}", f"{d} {s} {o}", f"{s} {d} {o}"])
    assert {x.certs["S"] for x in diff.values()} == {(True, "resident-change", epoch(day(40.5)))}
    assert set(seen) == {"exact", "abroad-deletion-read-without-its-notice"}


def test_two_moves_differ_only_where_a_lapse_was_written_first(world: World) -> None:
    """Two moves: 転出届 X (day 10, due day 46) followed by 転入届 I (day 20), 転出届 Y (day 60, due
    day 96) followed by 転入届 J (day 70). In the order made nothing lapses. X read after J is
    judged by I, kept with J (was: only the latest move-in kept, 53 of 120 orders lapsed). What
    differs is only where X's lapse was written before I was read: Y, or a record dated after
    X's due instant, read while X waits for I (Act §34(1)(2)), wherever the certificate's
    issuance is read (read after I, it finds X's lapse kept, `store.format.Taken`)."""
    recs = [auth(0), move_out(10, 15), move_in(20), move_out(60, 65), move_in(70)]
    run = Run.of(world, "two-moves", recs, (LATE,))
    seen = check(run)
    diff = differing(run)
    assert {o.certs["A"][:2] for o in diff.values()} == {(True, "resident-change")}
    assert len(diff) == 35
    assert all(label.index("O@10>15") < label.index("I@20") for label in diff)  # X before I
    assert set(seen) == {"exact", "lapse-written-before-the-notice-that-ended-it"}


def test_limit_more_move_ins_than_kept(world: World) -> None:
    """X (made day 10, due day 46) followed by I (day 20), then `MAX_MOVE_INS` more move-ins
    (from day 50): the made order, and X's record read after I and after the later ones but the
    last (I still kept: X starts nothing), or after them all (I dropped: X is judged by those
    kept, too late for it, and lapses)."""
    later = [move_in(50 + 5 * n) for n in range(sf.MAX_MOVE_INS)]
    recs = [auth(0), move_out(10, 15), move_in(20), *later]
    x, last = 1, len(recs) - 1
    rest = [i for i in range(len(recs)) if i not in (x, last)]
    orders = [(*rest, x, last), (*rest, last, x)]
    run = Run.of(world, "more-move-ins", recs, (LATE,), orders=orders)
    seen = check(run)
    diff = differing(run)
    assert list(diff) == [run.label(2)]
    assert diff[run.label(2)].certs["A"][:2] == (True, "resident-change")
    assert set(seen) == {"exact", "more-move-ins-than-kept"}


# --- seeded random scenarios, every arrival order ---------------------------------------------

DAYS = (0, 10, 20, 25, 30, 35, 40, 45, 60, 75, 80, 100, 120)
CAUSES = ("death", "move-out", "abroad-move-out", "ex-officio")


def scenario(rng: random.Random) -> list[Rec]:
    """2 to 5 records of one holder: at most one sign-card and one auth-card issuance (two valid
    ones of a family are refused whatever the order, Act §6, §25), notices made on distinct
    days, some recorded 50 days late."""
    pool = ["S", "A", "O", "O", "OA", "I", "D", "F"]
    rng.shuffle(pool)
    recs: list[Rec] = []
    notice_days: set[int] = set()
    for kind in pool[: rng.randint(2, 5)]:
        d = rng.choice(DAYS)
        lag = rng.choice((0.5, 0.5, 50))
        if kind in ("O", "OA", "I"):
            if d in notice_days:
                continue
            notice_days.add(d)
        match kind:
            case "S":
                recs.append(sign(d))
            case "A":
                recs.append(auth(d))
            case "O" | "OA":
                to = d + rng.choice((0, 5, 20))
                recs.append(move_out(d, to, abroad=kind == "OA", lag=lag))
            case "I":
                recs.append(move_in(d, lag=lag))
            case "D":
                recs.append(deletion(d, rng.choice(CAUSES)))
            case _:
                recs.append(fact_change(d))
    return recs if len(recs) >= 2 else scenario(rng)


SEEDS = 80
"""Scenarios per mode: about 10 s each on one core (each in all its arrival orders, up to 120)."""


@pytest.mark.parametrize(
    ("mode", "stage"), [("late", None), ("staged", (40, 57, 66, 72, 90))], ids=["late", "staged"]
)
def test_random_scenarios_in_every_arrival_order(
    world: World, mode: str, stage: Sequence[int] | None
) -> None:
    rng = random.Random(f"ordaudit-{mode}")
    seen: Counter[str] = Counter()
    for n in range(SEEDS):
        recs = scenario(rng)
        clocks = (LATE,) if stage is None else (day(rng.choice(stage)), LATE)
        batch = 1000 if stage is None else 7  # commits cut inside a holder's records too
        seen += check(Run.of(world, f"{mode}{n}", recs, clocks, batch_size=batch))
    # most orders end exactly as the made order; the limits explain the others
    explained = sum(v for k, v in seen.items() if k != "exact")
    assert seen["exact"] > 10 * explained, seen
    print(mode, dict(seen))
