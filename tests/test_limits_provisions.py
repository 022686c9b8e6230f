"""The agreed provisions per day (件数, ``provisions_per_day``) in the shared quota table:
all or none, per Japan calendar day, across workers, nodes and restarts."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from crlbuilder.rules import JST, JST_OFFSET
from responder import policy
from responder.limits import _VALUES_AT, Limit, LimitsTable, Wait, day_ends
from responder.registry.vocabulary import Service
from responder.v1 import problem
from tests.test_limits import NOW, party

# 23:59:50 JST on a fixed Japan day: never "today" of the machine running the test
MIDNIGHT_JST = (int(NOW) + JST_OFFSET) // 86400 * 86400 - JST_OFFSET + 86400
LATE = MIDNIGHT_JST - 10.0


def table(tmp_path: Path, workers: int = 1, index: int = 0, nodes: int = 1) -> LimitsTable:
    path = tmp_path / "t"
    if not path.exists():
        LimitsTable.create(path, workers)
    return LimitsTable(path, workers, index, nodes=nodes)


def test_a_call_is_taken_whole_or_refused_whole(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=10)
    assert t.take_provisions(p, 7, LATE) == LATE
    assert t.provisions_left(p, LATE) == 3
    # 4 would pass the bound: refused, nothing taken, the 3 that remain said
    assert t.take_provisions(p, 4, LATE) == Wait(Limit.PROVISIONS, 10, 3)
    assert t.provisions_left(p, LATE) == 3
    assert t.take_provisions(p, 3, LATE) == LATE  # exactly at the bound
    assert t.provisions_left(p, LATE) == 0
    assert t.take_provisions(p, 1, LATE) == Wait(Limit.PROVISIONS, 10, 0)


def test_the_day_turns_at_jst_midnight_not_utc(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=5)
    assert t.take_provisions(p, 5, MIDNIGHT_JST - 1) == MIDNIGHT_JST - 1
    refused = t.take_provisions(p, 1, MIDNIGHT_JST - 0.5)
    assert refused == Wait(Limit.PROVISIONS, 1, 0)  # until 00:00 JST, half a second away
    assert day_ends(MIDNIGHT_JST - 0.5) == MIDNIGHT_JST
    assert t.provisions_left(p, MIDNIGHT_JST) == 5  # 00:00:00 JST: a new Japan day
    assert t.take_provisions(p, 5, MIDNIGHT_JST) == MIDNIGHT_JST
    # 00:00 UTC (09:00 JST) is no boundary
    utc_midnight = MIDNIGHT_JST + JST_OFFSET
    assert t.provisions_left(p, utc_midnight) == 0


def test_a_head_asks_without_taking(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=2)
    assert t.take_provisions(p, 2, LATE, record=False) == LATE
    assert t.provisions_left(p, LATE) == 2
    t.take_provisions(p, 2, LATE)
    assert t.take_provisions(p, 1, LATE, record=False) == Wait(Limit.PROVISIONS, 10, 0)


def test_no_bound_takes_and_writes_nothing(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(requests_per_day=3)
    assert t.provisions_left(p, LATE) is None
    assert all(t.take_provisions(p, 10**6, LATE) == LATE for _ in range(5))
    assert t.admitted_today(p.id, LATE) == 0  # the request quota is another counter


def test_provisions_and_requests_are_counted_apart(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(requests_per_day=100, provisions_per_day=1000)
    assert t.admit(p, LATE) is None
    assert t.take_provisions(p, 1000, LATE) == LATE
    assert t.admitted_today(p.id, LATE) == 1
    assert t.provisions_left(p, LATE) == 0
    assert t.admit(p, LATE) is None  # requests remain; the provisions do not


def test_give_back_undoes_a_take_within_the_day_only(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=4)
    t.take_provisions(p, 3, LATE)
    t.give_back_provisions(p, 2, LATE)
    assert t.provisions_left(p, LATE) == 3
    t.take_provisions(p, 3, MIDNIGHT_JST - 1)
    t.give_back_provisions(p, 3, MIDNIGHT_JST + 1)  # the day turned: nothing to give back
    assert t.provisions_left(p, MIDNIGHT_JST + 1) == 4
    assert t.provisions_left(p, MIDNIGHT_JST - 1) == 0
    t.give_back_provisions(p, 99, MIDNIGHT_JST - 1)  # never below 0
    assert t.provisions_left(p, MIDNIGHT_JST - 1) == 4


def test_the_count_outlives_a_restart(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=10)
    t.take_provisions(p, 6, LATE)
    t.close()
    again = LimitsTable(tmp_path / "t", 1, 0)  # a restarted worker: the same file
    assert again.provisions_left(p, LATE) == 4


def test_a_node_of_several_takes_its_share(tmp_path: Path) -> None:
    t = table(tmp_path, nodes=3)
    p = party(provisions_per_day=10)  # ceil(10 / 3) = 4 on this node
    assert t.provisions_left(p, LATE) == 4
    assert t.take_provisions(p, 5, LATE) == Wait(Limit.PROVISIONS, 10, 4)


def test_workers_share_one_count(tmp_path: Path) -> None:
    a = table(tmp_path, workers=2, index=0)
    b = table(tmp_path, workers=2, index=1)
    p = party(provisions_per_day=100)
    assert a.take_provisions(p, 60, LATE) == LATE
    assert b.provisions_left(p, LATE) == 40
    assert b.take_provisions(p, 41, LATE) == Wait(Limit.PROVISIONS, 10, 40)
    assert b.take_provisions(p, 40, LATE) == LATE
    assert a.take_provisions(p, 1, LATE) == Wait(Limit.PROVISIONS, 10, 0)


def _taker(path: str, index: int, q: multiprocessing.Queue[int]) -> None:
    t = LimitsTable(Path(path), 2, index)
    p = party(provisions_per_day=5000)
    q.put(sum(7 for _ in range(2000) if t.take_provisions(p, 7, LATE) == LATE))


def test_two_worker_processes_never_pass_the_bound(tmp_path: Path) -> None:
    """Reserve, then check (`responder.limits`): racing batches may be refused, never let
    past the bound together."""
    path = tmp_path / "t"
    LimitsTable.create(path, 2)
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_taker, args=(str(path), i, q)) for i in range(2)]
    for proc in procs:
        proc.start()
    taken = q.get(timeout=30) + q.get(timeout=30)
    for proc in procs:
        proc.join(timeout=30)
    assert 5000 - 7 * 20 < taken <= 5000  # a collision refuses both: retried, rarely lost
    assert LimitsTable(path, 2, 0).provisions_left(party(provisions_per_day=5000), LATE) == (
        5000 - taken
    )


def test_a_restart_with_fewer_workers_keeps_the_counts_of_the_rows_it_no_longer_writes(
    tmp_path: Path,
) -> None:
    """Three workers, then a restart with two: what the third worker took today (its row)
    still counts, for the provisions, the requests per day and the CRL cycle alike."""
    path = tmp_path / "t"
    LimitsTable.create(path, 3)
    third = LimitsTable(path, 3, 2)
    p = party(provisions_per_day=6, requests_per_day=2, crl_cycle_seconds=3600)
    assert third.take_provisions(p, 5, LATE) == LATE
    assert third.admit(p, LATE) is None and third.admit(p, LATE + 1) is None
    assert third.admit_crl(p, 0, "full", LATE) is None
    third.close()
    again = LimitsTable(path, 2, 0)
    assert again.provisions_left(p, LATE) == 1
    wait = again.take_provisions(p, 2, LATE)
    assert isinstance(wait, Wait) and wait.limit is Limit.PROVISIONS and wait.remaining == 1
    assert again.admitted_today(p.id, LATE + 2) == 2
    refused = again.admit(p, LATE + 2)
    assert refused is not None and refused.limit is Limit.DAY
    cycle = again.admit_crl(p, 0, "full", LATE + 2)
    assert cycle is not None and cycle.limit is Limit.CYCLE
    again.close()
    assert LimitsTable(path, 3, 2).provisions_left(p, LATE) == 1  # and back to three


def test_a_call_of_the_day_before_taken_after_midnight_loses_no_count(tmp_path: Path) -> None:
    """A threaded /v1 batch asked at 23:59:59 JST is taken when its thread is done, at the
    request's instant, after this worker took for the new day: it must not put the row back
    on the day before, which dropped the new day's count (and the old day's) to that batch."""
    path = tmp_path / "t"
    LimitsTable.create(path, 2)
    a, b = LimitsTable(path, 2, 0), LimitsTable(path, 2, 1)
    p = party(provisions_per_day=10)
    assert a.take_provisions(p, 6, MIDNIGHT_JST - 5) == MIDNIGHT_JST - 5
    assert b.take_provisions(p, 3, MIDNIGHT_JST - 2) == MIDNIGHT_JST - 2
    assert a.take_provisions(p, 7, MIDNIGHT_JST + 1) == MIDNIGHT_JST + 1  # the new day: 7 of 10
    # the late batch: in the new day, dated at its 00:00 JST for the ledger
    assert a.take_provisions(p, 2, MIDNIGHT_JST - 1) == MIDNIGHT_JST
    assert a.provisions_left(p, MIDNIGHT_JST + 2) == 1
    refused = b.take_provisions(p, 2, MIDNIGHT_JST + 2)
    assert isinstance(refused, Wait) and refused.remaining == 1
    late = a.take_provisions(p, 2, MIDNIGHT_JST - 1)  # refused for the new day, until it ends
    assert isinstance(late, Wait) and late.retry_after == 86400
    refusal = policy.limit_refusal(p, Service.SIGN_REVOCATION_INFO, Limit.PROVISIONS)
    said = problem.quota(refusal, late, MIDNIGHT_JST - 1)  # what the 429 tells the party
    assert said.resets_at == datetime.fromtimestamp(MIDNIGHT_JST + 86400, JST)


def test_provisions_carried_to_the_day_they_are_provided_in(tmp_path: Path) -> None:
    """`LimitsTable.carry_provisions`: taken at 23:59:50 JST for an answer provided later.
    The same Japan day: nothing moves. After 00:00 JST: given back to the day before and
    taken from the new day, all or none (none left there: a Wait, none taken)."""
    a = table(tmp_path, workers=2, index=0)
    b = table(tmp_path, workers=2, index=1)
    p = party(provisions_per_day=5)
    assert a.take_provisions(p, 2, LATE) == LATE
    assert a.carry_provisions(p, 2, LATE, MIDNIGHT_JST - 1) == MIDNIGHT_JST - 1
    assert a.provisions_left(p, LATE) == 3
    assert a.carry_provisions(p, 2, LATE, MIDNIGHT_JST + 1) == MIDNIGHT_JST + 1
    assert a.provisions_left(p, MIDNIGHT_JST + 1) == 3
    assert b.take_provisions(p, 2, LATE) == LATE  # b's row is still on the day before
    assert b.take_provisions(p, 2, MIDNIGHT_JST + 2) == MIDNIGHT_JST + 2  # the new day: 1 left
    assert b.carry_provisions(p, 2, LATE, MIDNIGHT_JST + 3) == Wait(Limit.PROVISIONS, 86397, 1)
    assert a.provisions_left(p, MIDNIGHT_JST + 3) == 1  # nothing more taken


def test_a_row_moved_to_the_new_day_still_counts_the_day_before(tmp_path: Path) -> None:
    """Worker b took 3 before 00:00 JST and then 1 after it (its row moved on); worker a's
    take for the day before, coming after that (an instant read before midnight), still
    counts b's 3 (once, b's row showed only the new day and a passed the bound)."""
    a = table(tmp_path, workers=2, index=0)
    b = table(tmp_path, workers=2, index=1)
    p = party(provisions_per_day=5)
    assert b.take_provisions(p, 3, LATE) == LATE
    assert b.take_provisions(p, 1, MIDNIGHT_JST + 1) == MIDNIGHT_JST + 1
    assert a.provisions_left(p, LATE) == 2
    assert a.take_provisions(p, 3, LATE + 1) == Wait(Limit.PROVISIONS, 9, 2)
    assert a.take_provisions(p, 2, LATE + 1) == LATE + 1
    assert a.provisions_left(p, MIDNIGHT_JST + 1) == 4  # the new day: b's 1


def test_a_give_back_after_the_row_moved_on_comes_off_the_day_before(tmp_path: Path) -> None:
    t = table(tmp_path)
    p = party(provisions_per_day=5)
    assert t.take_provisions(p, 2, LATE) == LATE
    assert t.take_provisions(p, 1, MIDNIGHT_JST + 1) == MIDNIGHT_JST + 1
    t.give_back_provisions(p, 2, LATE)  # a signature taken before midnight, failed after it
    assert t.provisions_left(p, LATE) == 5
    assert t.provisions_left(p, MIDNIGHT_JST + 1) == 4  # the new day's count untouched
    t.give_back_provisions(p, 1, LATE - 86400)  # an older day: nothing
    assert t.provisions_left(p, MIDNIGHT_JST + 1) == 4


class _TornAt:
    """A reader's view of the table that lets another worker's stores land once, between
    two of its loads: right after the load of word ``at`` (`LimitsTable._read` loads a
    slot's four counters one by one, in order)."""

    def __init__(self, q: memoryview, at: int, between: Callable[[], object]) -> None:
        self.q, self.at = q, at
        self.between: Callable[[], object] | None = between

    def __getitem__(self, i: int) -> int:
        v: int = self.q[i]
        if i == self.at and self.between is not None:
            between, self.between = self.between, None  # once
            between()
        return v

    def __setitem__(self, i: int, v: int) -> None:
        self.q[i] = v


def test_a_row_read_while_it_moves_on_never_under_counts_the_day_before(
    tmp_path: Path,
) -> None:
    """Worker a reads b's slot while b moves it on to the new day: a's load of the day
    comes before b's stores and its load of the count after them, so it reads the old
    day with the new day's count (and the old day again as the day before's). Read as
    the current day's, b's 3 of the day before were lost and a passed the bound."""
    a = table(tmp_path, workers=2, index=0)
    b = table(tmp_path, workers=2, index=1)
    p = party(provisions_per_day=5)
    assert b.take_provisions(p, 3, LATE) == LATE
    off = b._slot(1, b"p/" + p.id.encode(), allocate=False)
    day_word = (off + _VALUES_AT) >> 3
    a._q = _TornAt(a._q, day_word, lambda: b.take_provisions(p, 1, MIDNIGHT_JST + 1))  # type: ignore[assignment]
    assert a.take_provisions(p, 3, LATE + 1) == Wait(Limit.PROVISIONS, 9, 2)
    assert a.provisions_left(p, LATE + 1) == 2
    assert a.provisions_left(p, MIDNIGHT_JST + 1) == 4  # b's 1 of the new day


def test_a_take_says_the_day_it_took_from(tmp_path: Path) -> None:
    """`take_provisions` returns an instant of the Japan day it took from, for the ledger to
    date the provisions at (帳簿, Act §40): ``now`` itself, or 00:00 JST of the later day
    this worker's row is on when the clock was set back across 00:00 JST before the
    request was asked (the take goes to the row's day; the ledger dated it by ``now``, the
    day before, and the two disagreed on both days)."""
    t = table(tmp_path)
    p = party(provisions_per_day=5)
    assert t.take_provisions(p, 1, LATE) == LATE  # the day of now
    assert t.take_provisions(p, 1, MIDNIGHT_JST + 1) == MIDNIGHT_JST + 1  # the row moves on
    stepped_back = MIDNIGHT_JST - 2.0
    assert t.take_provisions(p, 1, stepped_back) == MIDNIGHT_JST  # the row's later day
    assert t.provisions_left(p, MIDNIGHT_JST + 5) == 3
    assert t.provisions_left(p, stepped_back) == 4  # the day before: only the first
    # a refusal is for the day taken from too: until its end, with what it has left
    assert t.take_provisions(p, 4, stepped_back) == Wait(Limit.PROVISIONS, 86400, 3)
    # no bound, or a HEAD: nothing taken, dated at now
    assert t.take_provisions(party(), 1, stepped_back) == stepped_back
    assert t.take_provisions(p, 1, stepped_back, record=False) == stepped_back
