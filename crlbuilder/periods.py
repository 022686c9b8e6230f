"""Periods the law counts from a day (期間の計算): until when what is kept must stay (sans-I/O).

The Act keeps its records for a period counted from the day of an act: a revocation record
"当該記録をした日から政令で定める期間" (Act §11-§14, §16-10-§16-13, §30-§33,
§35-10-§35-13), a revocation information file "これを作成した日から" (Act §16, §16-15, §35,
§35-15), an issuance record "これを発行した日から" (Act §8, §16-7, §27, §35-7). The Act does
not say how such a period is counted, so the Civil Code's general rules do (民法 §138):

- §140 (初日不算入): a period of days counted from a day does not count that first day,
  unless it begins at 00:00 (its proviso);
- §141: the period ends when its last day ends (24:00).

So a record made on JST day D with a period of N days is kept through the whole of day
D + N, and may go from 00:00 JST of day D + N + 1 (`kept_until`). The proviso of §140 is
not applied: an act at 00:00:00 JST (instants are whole seconds, truncated) does not
begin a period at the day's start, and counting its day too would end the period a day
early, which the law forbids; not counting it keeps the record at most one day longer.

Periods are configured in whole days (``crl.retention_days``, ``crl.keep_days``). A period
the order sets in years or months is counted by the calendar (Civil Code §143) and spans a
varying number of days: configure the longest (10 years: 3652 or 3653 days, so 3653), never
365 per year. The Civil Code itself is not among our seed texts: its articles are cited from
the code as in force (民法 第百三十八条-第百四十三条).
"""

from __future__ import annotations

from typing import Final

from crlbuilder.rules import JST_OFFSET

DAY: Final = 86_400
"""Seconds in a day (JST has no daylight saving time)."""

RULE: Final = "civil-code-140-141/jst-days"
"""Names the counting of `kept_until`: part of what an agenda computed with it applied
(`crlbuilder.retention.periods_digest`), so that one computed with another counting
(before it, ``recorded_at + days * 86400``) is computed again."""


def _jst_day(instant: int) -> int:
    """The JST day (days since 1970-01-01) of ``instant`` (epoch seconds)."""
    return (instant + JST_OFFSET) // DAY


def _day_start(day: int) -> int:
    """00:00:00 JST of the JST day number ``day``, as epoch seconds."""
    return day * DAY - JST_OFFSET


def kept_until(start: int, days: int) -> int:
    """The first instant (epoch seconds) past a period of ``days`` days counted from the
    day of ``start``: what was recorded, made or issued at ``start`` must be kept before it
    and may go at it.

    The first day, the JST day of ``start``, is not counted (初日不算入, Civil Code §140);
    the period runs through the whole of its last day, day ``days`` after it (§141), so it
    ends at 00:00 JST of the day after that: 00:00 JST of (JST day of ``start``) + ``days``
    + 1. That is always later than ``start + days * 86400``, by between one second and one
    day.
    """
    if days < 1:
        raise ValueError(f"a period is a positive number of days, not {days}")
    return _day_start(_jst_day(start) + days + 1)


def first_kept_at(instant: int, days: int) -> int:
    """The earliest start whose period of ``days`` days runs at least to ``instant``:
    ``kept_until(start, days) >= instant`` exactly when ``start >= first_kept_at(instant,
    days)`` (`kept_until` never decreases with its start). A scan compares each start with
    it, with no day arithmetic per record."""
    if days < 1:
        raise ValueError(f"a period is a positive number of days, not {days}")
    # kept_until(s) >= instant  <=>  day(s) + days + 1 >= ceil((instant + JST_OFFSET) / DAY)
    last_day = -(-(instant + JST_OFFSET) // DAY)
    return _day_start(last_day - days - 1)


def day_end(instant: int) -> int:
    """``instant``, or when it is within a JST day, the end of that day (00:00 JST of the
    next): a period ends at the end of its last day (Civil Code §141), so an end stored as
    an instant within a day (as ``start + days * 86400`` did) still keeps the whole day."""
    day = _jst_day(instant)
    return instant if _day_start(day) == instant else _day_start(day + 1)
