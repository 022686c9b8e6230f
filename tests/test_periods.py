"""Periods counted from a day (期間の計算, Civil Code §140-§141): `crlbuilder.periods`.

Every instant here is fixed and written in JST: nothing depends on today, the hour or the
process's time zone.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from crlbuilder.periods import DAY, day_end, first_kept_at, kept_until

JST = timezone(timedelta(hours=9))


def jst(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=JST).timestamp())


@pytest.mark.parametrize(
    "recorded",
    [
        jst(2026, 3, 1, 0, 0, 0),  # at 00:00:00: §140's proviso is not applied
        jst(2026, 3, 1, 0, 0, 30),
        jst(2026, 3, 1, 8, 59, 59),  # 23:59:59 UTC the day before
        jst(2026, 3, 1, 9, 0, 0),  # 00:00 UTC
        jst(2026, 3, 1, 23, 59, 59),
    ],
)
def test_the_first_day_is_not_counted_and_the_last_is_kept_whole(recorded: int) -> None:
    # recorded on 1 March (JST): 30 days are 2-31 March, kept until 24:00 of 31 March
    assert kept_until(recorded, 30) == jst(2026, 4, 1)
    assert kept_until(recorded, 1) == jst(2026, 3, 3)
    assert kept_until(recorded, 30) > recorded + 30 * DAY  # never earlier than the old rule


def test_the_next_day_starts_the_next_period() -> None:
    assert kept_until(jst(2026, 3, 2), 30) == jst(2026, 4, 2)
    assert kept_until(jst(2026, 12, 31, 23, 59, 59), 1) == jst(2027, 1, 2)
    assert kept_until(jst(2028, 2, 28, 12), 1) == jst(2028, 3, 1)  # a leap year: 29 February
    assert kept_until(jst(1969, 12, 31, 12), 1) == jst(1970, 1, 2)  # before the epoch


def test_a_period_is_positive() -> None:
    for f in (kept_until, first_kept_at):
        with pytest.raises(ValueError, match="positive number of days"):
            f(0, 0)


def test_first_kept_at_is_the_inverse_of_kept_until() -> None:
    rng = random.Random(20261206)
    base = jst(2026, 3, 1)
    instants = [base + s for s in (-1, 0, 1, DAY - 1, DAY, DAY + 1, -DAY)]
    instants += [rng.randrange(-(2**33), 2**33) for _ in range(2000)]
    for instant in instants:
        for days in (1, 2, 30, 365, 3650):
            start = first_kept_at(instant, days)
            assert kept_until(start, days) >= instant
            assert kept_until(start - 1, days) < instant


def test_day_end_keeps_the_whole_day_of_an_end_within_it() -> None:
    assert day_end(jst(2026, 3, 31, 0, 0, 30)) == jst(2026, 4, 1)
    assert day_end(jst(2026, 3, 31, 23, 59, 59)) == jst(2026, 4, 1)
    assert day_end(jst(2026, 4, 1)) == jst(2026, 4, 1)  # already a day's end
    for start in (jst(2026, 3, 1, 0, 0, 30), jst(2026, 3, 1, 17, 5, 0)):
        assert day_end(kept_until(start, 30)) == kept_until(start, 30)
        assert day_end(start + 30 * DAY) == kept_until(start, 30)  # a stored old-rule end


def _oracle_kept_until(start: int, days: int) -> int:
    """`kept_until` computed independently, from calendar dates in Japan's zone (zoneinfo)."""
    tokyo = ZoneInfo("Asia/Tokyo")
    first = datetime.fromtimestamp(start, tokyo).date() + timedelta(days=days + 1)
    return int(datetime(first.year, first.month, first.day, tzinfo=tokyo).timestamp())


@pytest.mark.parametrize("days", [1, 2, 30, 3653])
def test_first_kept_at_and_kept_until_agree_at_every_second_of_three_days(days: int) -> None:
    # every instant from 23:59:58 JST on 28 February 2028 (a leap year) through 00:00:02 JST
    # on 2 March: kept_until(s) >= i exactly when s >= first_kept_at(i), checked as
    # "first_kept_at(i) is kept to i, the second before it is not", with kept_until never
    # decreasing and equal to a calendar computation at every second of the window
    lo, hi = jst(2028, 2, 28, 23, 59, 58), jst(2028, 3, 2, 0, 0, 2)
    previous = kept_until(lo - 1, days)
    oracle_day = -1
    expected = 0
    for s in range(lo, hi + 1):
        got = kept_until(s, days)
        assert previous <= got, s
        previous = got
        if (s + 9 * 3600) // DAY != oracle_day:  # a new JST day: ask the calendar again
            oracle_day = (s + 9 * 3600) // DAY
            expected = _oracle_kept_until(s, days)
        assert got == expected, s
        start = first_kept_at(s, days)
        assert kept_until(start, days) >= s, s
        assert kept_until(start - 1, days) < s, s
    # the instants an entry is first past its period: at 00:00 JST, never a second before
    last = jst(2028, 2, 29, 23, 59, 59)
    assert (
        first_kept_at(kept_until(last, days), days)
        <= last
        < first_kept_at(kept_until(last, days) + 1, days)
    )
