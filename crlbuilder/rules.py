"""The legal rules of JPKI revocation, as pure functions of records, dates and instants.

Each function cites the article it implements so that a reader can check it
against the Act (電子署名等に係る地方公共団体情報システム機構の認証業務に関する法律)
and its Ordinance (施行規則) in shared/seeds/:

- validity end (有効期間), Ord §13 (sign) and §49 (auth), Act §16-4 / §35-4 (mobile);
- which resident record changes (異動) revoke sign certificates (Act §12, minus the
  minor corrections of Ord §20) and auth certificates (Act §31), including the
  30-days-after-planned-move-out rule that time triggers (Act §31(2));
- the card-to-mobile cascade (Act §16-13, §35-13), reasons 1-4 only, never expiry, never
  dated before the mobile certificate began (`cascade_at`);
- CA key compromise covering every certificate of the issuer generation (Act §14,
  §16-12, §33, §35-12);
- revocation requests and reports and their reason codes (Act §11, §16-10, §30, §35-10);
- the prohibition of double issuance (二重発行の禁止, Act §6, §16-5, §25, §35-5).

No I/O and no clock: every function takes the instant it is evaluated at.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Final, NamedTuple

from crlbuilder.model import (
    Category,
    ChangeKind,
    DeletionCause,
    Family,
    Reason,
    RequestReason,
    ResidentChange,
)
from crlbuilder.validity import expired_at

JST: Final = timezone(timedelta(hours=9), "JST")
"""Japan Standard Time: the Act's days (日) are Japanese calendar days. The one time zone
object of both binaries: every Japan day, month and year is cut here."""

JST_OFFSET: Final = int(JST.utcoffset(None).total_seconds())
"""`JST`'s offset from UTC in seconds (no DST), for day arithmetic on epoch seconds."""

MOVE_OUT_GRACE_DAYS: Final = 30
"""Act §31(2): 転出の予定年月日から三十日を経過したこと."""

RENEWAL_WINDOW: Final = 3
"""Ord §13(1), §49(1): renewal within three months (三月未満) of the end gives a 6th birthday."""


# ---------------------------------------------------------------------------
# Holder key (Act §44, §45: the resident record code only links certificates)
# ---------------------------------------------------------------------------


def holder_key(secret: bytes, resident_code: str) -> str:
    """The holder key: hex HMAC-SHA256 of the resident record code (住民票コード) under ``secret``.

    The code itself never enters the store or the model (Act §44, §45); the keyed
    hash only lets the 機構's certificates of one person be linked.
    """
    if len(secret) < 16:
        raise ValueError("holder key secret must be at least 16 bytes")
    if not (len(resident_code) == 11 and resident_code.isascii() and resident_code.isdigit()):
        raise ValueError("a resident record code is 11 digits")
    return hmac.new(secret, resident_code.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------
# Days and instants
# ---------------------------------------------------------------------------


def start_of_day_utc(d: date) -> datetime:
    """00:00:00 JST of day ``d``, as an aware UTC datetime."""
    return datetime.combine(d, time(0, 0, 0), JST).astimezone(UTC)


def end_of_day_utc(d: date) -> datetime:
    """23:59:59 JST of day ``d``, as an aware UTC datetime: a certificate's notAfter."""
    return datetime.combine(d, time(23, 59, 59), JST).astimezone(UTC)


def jst_date(instant: datetime) -> date:
    """The Japanese calendar day of an aware instant."""
    return instant.astimezone(JST).date()


# ---------------------------------------------------------------------------
# Validity (有効期間): Ord §13, §49; Act §16-4, §35-4
# ---------------------------------------------------------------------------


def birthday_in(birth: date, year: int) -> date:
    """The holder's birthday in ``year``.

    For someone born on 29 February, the birthday of a common year is taken as
    28 February: under 年齢計算ニ関スル法律 and Civil Code §143 such a person
    attains the new age at the end of 28 February, and the earlier day keeps a
    certificate from outliving its legal end.
    """
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def nth_birthday_after(birth: date, issued: date, n: int) -> date:
    """The holder's n-th birthday after the day of issuance (発行の日後の n 回目の誕生日).

    "After" is strict: a certificate issued on a birthday counts from the next one.
    """
    if n < 1:
        raise ValueError("n must be positive")
    first = birthday_in(birth, issued.year)
    if first <= issued:
        first = birthday_in(birth, issued.year + 1)
    return birthday_in(birth, first.year + n - 1)


def validity_end(
    *,
    family: Family,
    issued: date,
    birth_date: date,
    renewal: bool,
    card_expiry: date,
    auth_cert_end: date | None = None,
    card_cert_end: date | None = None,
) -> date:
    """The last day of validity of a certificate issued on ``issued``.

    Ord §13 (sign) and §49 (auth): the earliest of
      1. the holder's 5th birthday after issuance, or the 6th when the
         certificate renews one that had less than three months left (``renewal``);
      2. for a sign certificate, the end of the holder's auth certificate, if any
         (Ord §13(2));
      3. the expiry of the card it is recorded on (Ord §13(3), §49(2)).
    Mobile certificates (Act §16-4, §35-4) additionally end no later than the
    card certificate of the same kind they were issued against (``card_cert_end``). For a
    mobile certificate the birthday and card bounds are the card rule applied by analogy (the
    demo population's, `crlbuilder.demo.synth`): the seed Ordinance sets no period for mobiles,
    and the builder holds a mobile record to its card certificate's end alone (rules 7,
    `crlbuilder.apply.Applier._check_validity`).
    """
    candidates = [nth_birthday_after(birth_date, issued, 6 if renewal else 5), card_expiry]
    if family.is_sign and auth_cert_end is not None:
        candidates.append(auth_cert_end)
    if family.is_mobile:
        if card_cert_end is None:
            raise ValueError("a mobile certificate's validity needs its card certificate's end")
        candidates.append(card_cert_end)
    end = min(candidates)
    if end < issued:
        raise ValueError("validity would end before issuance")
    return end


def latest_validity_end(
    *,
    family: Family,
    issued: date,
    renewal: bool,
    birth_date: date | None,
    auth_cert_end: date | None = None,
    card_cert_end: date | None = None,
) -> date:
    """The latest last day of validity the rules allow, from what an issuance record tells.

    `validity_end` with the card's expiry unknown (no record carries it), so an upper
    bound: Ord §13(1)/§49(1)'s 5th birthday after issuance, the 6th for a renewal
    (``renewal``: the previous certificate had less than three months left); for a
    sign-card certificate the end of the holder's valid auth-card certificate (Ord
    §13(2)); for a mobile one its card certificate's end (Act §16-4, §35-4), the builder's only
    bound of a mobile record from rules 7 (`crlbuilder.apply.Applier._check_validity`). Without
    the birth date (auth certificates carry no facts) the n-th birthday after issuance
    is at the latest the day after the n-th anniversary of issuance.
    """
    n = 6 if renewal else 5
    if birth_date is not None:
        end = nth_birthday_after(birth_date, issued, n)
    else:
        end = birthday_in(issued, issued.year + n) + timedelta(days=1)
    if family is Family.SIGN_CARD and auth_cert_end is not None:
        end = min(end, auth_cert_end)
    if family.is_mobile and card_cert_end is not None:
        end = min(end, card_cert_end)
    return end


def months_before(d: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (clamped to the month's last day)."""
    total = d.year * 12 + (d.month - 1) - months
    y, m = divmod(total, 12)
    return date(y, m + 1, min(d.day, calendar.monthrange(y, m + 1)[1]))


def is_renewal(previous_end: date, issued: date) -> bool:
    """True when the previous certificate had less than three months left (Ord §13(1), §49(1)).

    "有効期間が満了する日までの期間が三月未満となった場合": then the new
    certificate runs to the 6th birthday instead of the 5th.
    """
    return months_before(previous_end, RENEWAL_WINDOW) < issued <= previous_end


# ---------------------------------------------------------------------------
# Resident record changes (異動): Act §12 (sign), §31 (auth), Ord §20
# ---------------------------------------------------------------------------


class MoveOutNotice(NamedTuple):
    """A move-out notice (転出届) the 機構 has learnt of, for the rules that depend on it.

    ``notified_at`` is when the holder made the notice, as its record carries it
    (not when the record arrived): the window of Act §12(2), §31(2) starts there.
    """

    notified_at: datetime
    planned_date: date
    abroad: bool


def issued_in_abroad_window(issued_at: datetime, notice: MoveOutNotice | None) -> bool:
    """True when the certificate was issued between a 国外転出届 and its planned date.

    Act §12(2) and §31(2) exempt such certificates: a holder may take a card
    certificate abroad, so the deletion or lapse caused by that very notice does
    not revoke it.
    """
    if notice is None or not notice.abroad:
        return False
    return notice.notified_at <= issued_at <= end_of_day_utc(notice.planned_date)


def sign_revoked_by(
    change: ResidentChange, *, issued_at: datetime, notice: MoveOutNotice | None = None
) -> bool:
    """Whether a resident record change revokes a sign-card certificate (Act §12).

    - §12(1): a change of name, sex, birth date or address, except the minor
      corrections of Ord §20 (which arrive as MINOR_CORRECTION and revoke nothing);
    - §12(2): the deletion of the resident record, except a deletion by a
      国外転出届 of a certificate issued between that notice and its planned date;
    - §12(3): the deletion of the 戸籍の附票 of a person living abroad.
    Move-out and move-in notices by themselves revoke no sign certificate.
    """
    match change.change:
        case ChangeKind.FACT_CHANGE:
            return True
        case ChangeKind.MINOR_CORRECTION:
            return False
        case ChangeKind.RECORD_DELETION:
            if change.cause is DeletionCause.ABROAD_MOVE_OUT:
                return not issued_in_abroad_window(issued_at, notice)
            return True
        case ChangeKind.KOSEKI_ANNEX_DELETION:
            return True
        case ChangeKind.MOVE_OUT_NOTICE | ChangeKind.MOVE_IN_NOTICE:
            return False


def auth_revoked_by(change: ResidentChange) -> bool:
    """Whether a resident record change revokes an auth-card certificate at once (Act §31(1), (3)).

    Auth certificates carry no personal data, so changes of the four facts revoke
    nothing. §31(1): deletion of the resident record, except a deletion based on a
    転出届 (domestic or abroad: those fall under the 30-day rule of §31(2), see
    `move_out_lapse`); §31(3): deletion of the 戸籍の附票 of a person living abroad.
    """
    match change.change:
        case ChangeKind.RECORD_DELETION:
            return change.cause not in (DeletionCause.MOVE_OUT, DeletionCause.ABROAD_MOVE_OUT)
        case ChangeKind.KOSEKI_ANNEX_DELETION:
            return True
        case _:
            return False


def move_out_lapse(planned_date: date) -> datetime:
    """The instant Act §31(2) revokes an auth-card certificate after a 転出届 with no 転入届.

    "転出の予定年月日から三十日を経過したこと": counting from the day after the planned
    date (初日不算入, Civil Code §140), the thirtieth day ends at 24:00 of
    planned_date + 30, so the certificate loses effect at 00:00 JST of
    planned_date + 31.
    """
    return start_of_day_utc(planned_date + timedelta(days=MOVE_OUT_GRACE_DAYS + 1))


MAX_PLANNED_AHEAD_DAYS: Final = 365
"""The latest planned move-out date (転出の予定年月日) a move-out notice may name, in days after
the JST day it was made. No article sets one (住民基本台帳法 §24 asks for the notice in advance,
and municipalities take it about two weeks ahead): a year is far past any notice made in earnest,
and keeps every lapse's instant (`move_out_lapse`, 31 days on) a date."""

MAX_PLANNED_BEHIND_DAYS: Final = 14
"""The earliest planned move-out date a move-out notice may name, in days before the JST day it
was made. 住民基本台帳法 §24 asks for the 転出届 in advance, but municipalities also take one
made after the move (within about 14 days of it), naming the day moved: refused, such a notice
would start no lapse at all, and the auth-card certificate it should take (Act §31(2)) would
stay good. Further back is no notice made in earnest."""

_LAST_PLANNED: Final = date.max - timedelta(days=MOVE_OUT_GRACE_DAYS + 1)
"""The last planned date whose lapse (`move_out_lapse`) is a date at all."""


def planned_date_refusal(planned: date, made: datetime, *, bounded: bool = True) -> str | None:
    """Why a move-out notice made at ``made`` cannot name ``planned`` as its planned date, or
    None: with ``bounded`` (rules 6), it is at most `MAX_PLANNED_BEHIND_DAYS` days before the
    JST day the notice was made (a 転出届 is made in advance, 住民基本台帳法 §24, not among our
    seed texts, or soon after the move) and at most `MAX_PLANNED_AHEAD_DAYS` days after it;
    without (a record a release before rules 6 published, `crlbuilder.apply`), any date whose
    lapse is a date. The 30-day lapse counts from it (Act §31(2)): a date far off would hold
    the lapse back for ever, or past the calendar (the lapse of a notice planned on 9999-12-31
    has no instant: refused in either case, since it would leave every lapse sweep failing)."""
    if planned > _LAST_PLANNED:
        return "the planned move-out date is past the calendar's end"
    if not bounded:
        return None
    ahead = (planned - jst_date(made)).days
    if ahead < -MAX_PLANNED_BEHIND_DAYS:
        return (
            f"the planned move-out date is more than {MAX_PLANNED_BEHIND_DAYS} days before the "
            "day the notice was made"
        )
    if ahead > MAX_PLANNED_AHEAD_DAYS:
        return (
            f"the planned move-out date is more than {MAX_PLANNED_AHEAD_DAYS} days after the "
            "day the notice was made"
        )
    return None


def ends_before_lapse(notice: MoveOutNotice, made: datetime) -> bool:
    """Whether a notice the holder made at ``made`` ends ``notice``'s 30-day clock (Act §31(2)).

    A 転入届 (住民基本台帳法 §22(1)) made at or after the 転出届 and before its lapse is due
    (`move_out_lapse`): "転入届を行うことなく...三十日を経過" is then never met. A move-in
    notice made before the move-out notice follows an earlier move and ends nothing; one made
    once the lapse is due comes too late (the lapse stands, Act §34(1)(2)). The same holds of
    a later 転出届 made in that time: the notice in force is the latest one made, and the
    earlier one's clock ends with it.
    """
    return notice.notified_at <= made < move_out_lapse(notice.planned_date)


def lapse_revokes(notice: MoveOutNotice, *, issued_at: datetime, as_of: datetime) -> bool:
    """Whether, as of ``as_of``, a pending 転出届 with no 転入届 has revoked an auth-card cert (Act §31(2)).

    The caller keeps the notice pending only until a move-in notice arrives. A
    certificate issued between a 国外転出届 and its planned date is exempt, and so is one
    issued once the lapse was due: the lapse took the certificates the holder had then
    (its record may be written later, when the notice's record came late; a certificate
    issued since was issued to a holder on a resident record again).
    """
    due = move_out_lapse(notice.planned_date)
    if as_of < due or issued_at >= due:
        return False
    return not issued_in_abroad_window(issued_at, notice)


def resident_change_revokes(
    family: Family,
    change: ResidentChange,
    *,
    issued_at: datetime,
    notice: MoveOutNotice | None = None,
) -> bool:
    """Whether ``change`` revokes a certificate of ``family`` at once (異動等失効情報).

    Only card families have the resident-change category (Act §12, §31); mobile
    certificates follow their card certificate by the cascade instead. A change takes the
    certificates issued no later than it (``change.recorded_at``): one issued after it was
    issued on the changed record, whatever order the two records arrive in, and a
    revocation is never dated before the certificate's issuance.
    """
    if issued_at > change.recorded_at:
        return False
    if family is Family.SIGN_CARD:
        return sign_revoked_by(change, issued_at=issued_at, notice=notice)
    if family is Family.AUTH_CARD:
        return auth_revoked_by(change)
    return False


# ---------------------------------------------------------------------------
# Requests, cascade, compromise, double issuance
# ---------------------------------------------------------------------------


def request_revocation(reason: RequestReason) -> tuple[Category, Reason]:
    """失効申請等情報 (Act §11, §16-10, §30, §35-10): the category and RFC 5280 reason of a request."""
    return Category.REQUEST, reason.reason


CASCADING: Final = frozenset(
    {Category.REQUEST, Category.RESIDENT_CHANGE, Category.RECORDING_ERROR, Category.CA_COMPROMISE}
)
"""The four categories of a card certificate's revocation that carry over to mobile (reasons 1-4)."""


def cascade(card_family: Family, card_category: Category) -> tuple[Family, Category, Reason] | None:
    """The mobile revocation a card revocation causes (Act §16-13, §35-13), if any.

    When a card certificate loses effect for one of the four recorded reasons
    (request, resident change, recording error, issuing-key compromise), the same
    holder's mobile certificate of the same kind loses effect too, recorded in
    its own category (個人番号カード用…電子証明書の失効に係る情報). Expiry is no
    record and cascades nothing; a mobile revocation never cascades.
    """
    if card_family.is_mobile or card_category not in CASCADING:
        return None
    category = Category.CARD_CASCADE
    return card_family.mobile_family, category, category.default_reason


def cascade_at(at: int, card_not_after: int, not_before: int, not_after: int) -> int | None:
    """When a card certificate's loss of effect at ``at`` (epoch seconds) takes a mobile
    certificate of the holder that began at ``not_before`` and ends at ``not_after`` (Act
    §16-13, §35-13: 個人番号カード用…電子証明書の失効に係る情報), or None when it does not.

    At ``at`` for one issued by then. One that began later was issued while the card certificate
    had lost effect, which the 機構 refuses (Act §16-2(3), §35-2(1): its issuance record was
    read before the record of that loss): it is taken from its own beginning, ``not_before``,
    never earlier (a revocation is not dated before the certificate exists), so that it is never
    good. Unless it ends after the card certificate (``card_not_after``): a mobile certificate
    lies within its card certificate's validity (Act §16-4, §35-4), so that one was issued
    against a later card certificate of the holder, whose cascade it follows, not this one's.
    Whether it is still in effect then is the caller's (`in_effect_at`)."""
    if not_before <= at:
        return at
    return not_before if not_after <= card_not_after else None


def in_effect_at(not_after: int, t: int, *, through: bool = True) -> bool:
    """Whether a certificate ending at ``not_after`` has not expired at ``t`` (epoch seconds).

    Its validity runs through notAfter (RFC 5280 §4.1.2.5: inclusive; Ord §13, §49: to the end
    of the last day, 発行の日から…日までとする, whose 23:59:59 JST is notAfter), so a loss of
    effect recorded in that second still takes it (``through``, rules 7; `double_issuance`
    counts it valid then too). Without ``through`` (rules 6), expired from that second."""
    return not expired_at(not_after, t) if through else t < not_after


def compromise_revokes(
    *,
    cert_issuer: str,
    compromised_issuer: str,
    not_after: datetime,
    at: datetime,
    through: bool = True,
) -> bool:
    """Whether an issuing-key compromise (Act §14, §16-12, §33, §35-12) revokes a certificate.

    Every certificate the compromised key generation signed, and only those,
    loses effect when the compromise is recorded; an already expired one has no
    effect left to lose (`in_effect_at`: ``through`` its notAfter's second, rules 7).
    """
    # exact datetimes, not `crlbuilder.validity`'s whole seconds: a record dated within
    # notAfter's second but after it (a fraction) is taken as expired, as since rules 7; moving
    # that to the convention would change decisions (a rules bump, not taken)
    return cert_issuer == compromised_issuer and (at <= not_after if through else at < not_after)


class HeldCert(NamedTuple):
    """A certificate a holder already has in one family, for the double-issuance check."""

    serial: int
    not_after: datetime
    revoked_at: datetime | None


def double_issuance(existing: Iterable[HeldCert], not_before: datetime) -> HeldCert | None:
    """The still-valid certificate that forbids a new issuance, if any (二重発行の禁止).

    Act §6, §16-5, §25, §35-5: the 機構 issues no certificate of a family to a
    person who holds a valid one of that family. A held certificate is valid at
    ``not_before`` unless it was revoked at or before it or expired before it.
    """
    for held in existing:
        if held.revoked_at is not None and held.revoked_at <= not_before:
            continue
        if held.not_after < not_before:  # exact, as `compromise_revokes` (not whole seconds)
            continue
        return held
    return None
