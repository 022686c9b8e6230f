"""When a holder's consents (同意, Act §18(3)) and their withdrawals are erased: past every sign certificate they could serve (sans-I/O).

A consent (``consents``: holder key ‖ verifier id → when recorded) lets the 機構 provide a
署名検証者等 the holder's 特定署名用電子証明書記録情報: the serial and four facts of the holder's
sign certificate "that has not lost effect" (§15(1), §16-14(1)), asked for about a sign
certificate of the holder that lost effect (§19(5), §20(4), §21(4); `responder.v1.recordinfo`).
A holder key is a pseudonymous personal identifier, and a consent says which verifiers the holder
deals with: personal data, kept no longer than a rule needs it. A consent is not itself 認証業務情報
as Act §44(1) defines it (the issuance records, the revocation information and its files, the
特定利用者証明検証者証明符号), so the erasure measures of Ord §70(1)(iii) do not name it and no
article sets its period: the bound below is the product's rule (nothing personal kept past its
use; information learnt in 認証業務 used for it alone, Act §46).

The Act sets no period for a consent, nor says whether one given while the holder held one
certificate still holds for a certificate issued years after every one of them ended. The rule
here (a decision, the conservative reading for the holder's data that changes no answer the
product gives while the holder keeps certificates): a consent is kept while the holder holds a
sign certificate (card or mobile) not yet past its notAfter, and then for the longest retention
period of any sign family's revocation records (`Periods`, counted from the day after the day it
ended: `crlbuilder.periods.kept_until`), from the latest notAfter of the holder's sign
certificates or from when the consent was recorded, whichever is later. Within that time a new
certificate keeps it (its notAfter is later); after it, the holder's every sign certificate has
long lost effect and its records passed their retention, and a certificate issued later needs
the holder's consent again (a new consent record). Until then ``/v1/record-info`` answers as
before; after it, about a certificate of the holder, ``not-provided`` where it said
``none-exists`` (nothing is provided either way).

The instant only grows: a status record is never deleted and keeps its notAfter when erased
(`store.writer.Commit.erase`), and an issuance adds a later notAfter. So an agenda entry
(`crlbuilder.retention`) is checked again when its time comes (and listed again at its own
instant when not due yet), and a consent or withdrawal written after the agenda's scan falls
due no earlier than the longest period from when it was recorded: the commit that writes it
lists the holder key at the end of the shortest period from its recordedAt
(`store.writer.Commit.put_consent`, ``put_withdrawal``). On an agenda an earlier release made to
a horizon, it lowers the watermark of the CRL entries' recordedAt
(`store.format.META_REVOKED_FROM`) instead, and the agenda is stale when even the shortest
period from it ends before the horizon (a consent read late).

Withdrawals (rules 9, `crlbuilder.release`). Records may be read in another order than they were
made, and the holder's last word decides: the latest recordedAt of the holder's grants and
withdrawals for a verifier, a withdrawal winning a tie (`crlbuilder.apply.Applier._consent`). So
a withdrawal is kept (``withdrawals``: holder key ‖ verifier → its recordedAt, nothing more than a
consent holds), or a grant made before it and read after it would grant again what the holder
withdrew; a grant newer than it replaces it. Its end is a consent's (`erasable_at` of its own
recordedAt): it is kept as long as the consent it ended would have been, which is as long as a
grant it outranks (recorded no later) could be kept. A grant read after that would fall due at
once; so that it never grants in between, each erasure that erases a consent or a withdrawal
raises a bound (`granted_before`, `crlbuilder.store.format.META_GRANTED_BEFORE`): a grant recorded
before it is refused as read too late (`LATE_GRANT`), and every grant a withdrawal erased
outranked is (its recordedAt is no later than the withdrawal's, which was before the bound). The
bound is one instant for the whole store (a per-holder one, by the holder's certificates now,
would let a certificate issued after the withdrawal's erasure admit the grant it outranked): it
refuses grants recorded more than the longest period before the latest such erasure (ten years
as shipped). Of a holder who held no sign certificate since, such a consent would have been
erased by then; of one who did, it would still be kept, and is refused all the same (a decision:
a grant read ten years late; the holder's consent is given again by a new record, recorded when
given).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from crlbuilder.model import Category, Family
from crlbuilder.periods import first_kept_at, kept_until

Periods = Callable[[Family, Category], int]
"""The retention period in days of a family's legal category (`config.CrlSection.retention_period_days`)."""

SIGN_FAMILIES = (Family.SIGN_CARD, Family.SIGN_MOBILE)
"""The families whose certificates a consent serves (§18(3) provides sign records only)."""


def longest_sign_period(retention: Periods) -> int:
    """The longest retention period in days of any sign family's category."""
    return max(retention(f, c) for f in SIGN_FAMILIES for c in Category if c.applies_to(f))


LATE_GRANT: Final = (
    "read too late: the consent was recorded more than the longest sign retention period before "
    "the store's latest erasure of consents, which may have erased a withdrawal that outranks it; "
    "not applied (docs/records.md, 'consent')"
)
"""Why a grant is refused as read too late (no time, nothing of the holder or verifier)."""


def granted_before(erased_at: int, longest_days: int) -> int:
    """The bound an erasure of consents or withdrawals at ``erased_at`` leaves: the first
    instant whose consent that erasure would not have erased even for a holder with no sign
    certificate since (`erasable_at` with none is later than ``erased_at``); a grant recorded
    before it is read too late."""
    return first_kept_at(erased_at + 1, longest_days)


def erasable_at(recorded_at: int, sign_ends: Iterable[int], longest_days: int) -> int:
    """The instant (epoch seconds) from which a consent recorded at ``recorded_at`` is erased,
    for a holder whose sign certificates end at ``sign_ends`` (their notAfter; none: a holder
    with auth certificates only); a withdrawal recorded then is erased at the same instant."""
    return kept_until(max([recorded_at, *sign_ends]), longest_days)
