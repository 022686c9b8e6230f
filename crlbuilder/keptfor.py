"""When a holder's kept changes, lapses (``taken``) and move-ins (``moveins``) are erased (sans-I/O).

The builder keeps, per holder, the resident changes that took card certificates at once and the
30-day lapses it wrote (`store.format.Taken`, ``taken``), and the move-in notices (転入届) the
holder made (`store.format.MoveIn`, ``moveins``), for the records of the holder read after them
(`crlbuilder.apply`). Nothing personal is kept longer than a rule needs it, and records are
erased once their retention has passed (認証業務情報の消去, Ord §70(1)(iii)); an entry goes at the
first erasure past retention at or after its instant here (`crlbuilder.apply.Applier
.erase_past_retention`: every build, the follow loop's timer, a stream's ticks).

Who reads an entry, from `crlbuilder.apply`:

- a change (異動, Act §12, §31(1), (3)) recorded at ``at``: the issuance record of a card
  certificate issued no later (`_lost_before_its_record`, revoked at ``at``), and the
  double-issuance check (二重発行の禁止, Act §6, §25) of a new certificate while one it took is
  held (`_lost_effect_by`);
- a lapse (異動等失効情報, Act §31(2)) written at ``at``, due at ``lapse_due``: the issuance
  record of an auth-card certificate issued before ``lapse_due`` (revoked at ``at``), and the
  double-issuance check of a new auth-card (Act §25) or auth-mobile certificate (Act §35-5)
  while an auth-card certificate it took, or an auth-mobile one issued before it, is held
  (`_lost_effect_by`, `_card_lapses`);
- a move-in made at ``notified_at``: a move-out notice (転出届) made no later whose lapse was not
  due by then, when its record is read after it (`_followed`): it starts no lapse.

Each reader concerns a certificate issued before the entry's instant or a notice made before
it. A card certificate issued on a day has expired by the end of the day after the sixth
anniversary of that day (Ord §13(1), §49(1): the sixth birthday after issuance, on renewal, at
the latest; a mobile certificate by its card's end, Act §16-4, §35-4: `validity_end`). So from
that end on, a record made then or later, read in whatever order, is judged alike with or
without the entry: a double-issuance check finds the certificates it took expired, and no
issuance or move-out it could take or answer is made any more. The entry also stands for
records the store keeps for their period (the CRL entries it writes when an issuance record
comes late are recorded at ``at``; for a lapse that answered, 30 days on): it is not erased
before those periods end either, so only a record read more than a retention period after the
entry's instant could be judged without it: it is refused as read too late instead
(`crlbuilder.lateness`, `docs/records.md`).

The instants (`taken_erasable_at`, `move_in_erasable_at`):

- a change: the latest of the end of each period of the records it stands for, counted from
  the day after the day it was recorded (記録をした日から, 初日不算入, Civil Code §140,
  `crlbuilder.periods.kept_until`): ``resident-change`` of each card family it takes
  (``sign``, ``auth``) and ``card-cascade`` of that family's mobile certificates (Act §16-13,
  §35-13); and `validity_end` of ``at``;
- a lapse: the latest of the periods of auth-card ``resident-change`` and auth-mobile
  ``card-cascade`` from ``at``, and `validity_end` of ``lapse_due``;
- a move-in: the latest of the period of auth-card ``resident-change`` from when it was made
  (the lapse record it answered), and `validity_end` of the lapse due after the day it was
  made (`rules.move_out_lapse`): a lapse it prevented of a move-out planned no later than the
  move-in fell due by then, and every auth-card certificate that lapse would have taken has
  expired at that end. A move-out notice made before it and planned later than it, read more
  than a retention period late, is refused as read too late (`crlbuilder.lateness`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from crlbuilder import rules
from crlbuilder.model import Category, Family
from crlbuilder.periods import kept_until
from crlbuilder.store.format import MoveIn, Taken

VALIDITY_AT_LEAST: Final = 6 * 365 * 86_400
"""Seconds by which `validity_end` of an instant is always later than it (six years of 365
days): an entry kept for a certificate issued at ``t`` is not erased before ``t`` plus this."""

Periods = Callable[[Family, Category], int]
"""The retention period in days of a family's legal category (`config.CrlSection.retention_period_days`)."""


_JST: Final = 9 * 3600
"""Japan's offset from UTC in seconds (no daylight saving time): the JST day of an instant ``t``
is ``(t + _JST) // 86_400``, and both instants below are functions of that day alone, so they
are computed once per day (an erasure after an upgrade counts hundreds of thousands)."""


def _day(t: int) -> int:
    return (t + _JST) // 86_400


@functools.lru_cache(maxsize=1 << 14)
def _validity_end_of(day: int) -> int:
    issued = rules.jst_date(datetime.fromtimestamp(day * 86_400 - _JST, UTC))
    last = rules.latest_validity_end(
        family=Family.AUTH_CARD, issued=issued, renewal=True, birth_date=None
    )
    return int(rules.end_of_day_utc(last).timestamp())


@functools.lru_cache(maxsize=1 << 14)
def _kept_until_of(day: int, days: int) -> int:
    return kept_until(day * 86_400 - _JST, days)  # 00:00 JST of that day: the same day


def validity_end(issued_by: int) -> int:
    """The latest notAfter (epoch seconds) of any card or mobile certificate issued at or before
    ``issued_by``: 23:59:59 JST of the day after the sixth anniversary of its JST day
    (`rules.latest_validity_end` of a renewal without a birth date, the bound of Ord §13(1),
    §49(1); a mobile certificate ends no later than its card's, Act §16-4, §35-4; a sign-card
    one no later than the 6th birthday after issuance either). Later days give later ends."""
    return _validity_end_of(_day(issued_by))


def taken_due_from(t: Taken) -> int:
    """The earliest instant the kept change or lapse ``t`` can be erased, whatever the periods
    (`taken_erasable_at`): the end of validity alone."""
    return validity_end(t.lapse_due or t.at)


def move_in_due_from(made: int) -> int:
    """The earliest instant a move-in made at ``made`` can be erased, whatever the periods
    (`move_in_erasable_at`)."""
    return validity_end(int(_lapse_after(_day(made)).timestamp()))


def taken_erasable_at(t: Taken, retention: Periods) -> int:
    """The instant (epoch seconds) from which the kept change or lapse ``t`` is erased (see the
    module): the periods of the records it stands for, and the end of validity of the
    certificates it can take."""
    families: list[Family] = []
    if t.sign and not t.lapse_due:
        families.append(Family.SIGN_CARD)
    if t.auth or t.lapse_due:
        families.append(Family.AUTH_CARD)
    day = _day(t.at)
    kept = [_kept_until_of(day, retention(f, Category.RESIDENT_CHANGE)) for f in families]
    kept += [
        _kept_until_of(day, retention(f.mobile_family, Category.CARD_CASCADE)) for f in families
    ]
    return max([*kept, taken_due_from(t)])


@functools.lru_cache(maxsize=1 << 14)
def _lapse_after(day: int) -> datetime:
    """`rules.move_out_lapse` of a move-out planned on JST day ``day``."""
    return rules.move_out_lapse(rules.jst_date(datetime.fromtimestamp(day * 86_400 - _JST, UTC)))


def move_in_erasable_at(m: MoveIn, retention: Periods) -> int:
    """The instant (epoch seconds) from which the kept move-in ``m`` is erased (see the module)."""
    made = m.notified_at
    days = retention(Family.AUTH_CARD, Category.RESIDENT_CHANGE)
    return max(_kept_until_of(_day(made), days), move_in_due_from(made))
