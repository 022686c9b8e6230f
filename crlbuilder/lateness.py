"""Records read too late to be judged: the lateness bound at ingest (sans-I/O).

The erasure past retention (認証業務情報の消去, Ord §70(1)(iii): `crlbuilder.apply.Applier
.erase_past_retention`) erases, besides CRL entries, what the builder keeps per holder for the
records of the holder read after it: a lapsed move-out notice (`crlbuilder.lapsed`), the kept
changes, lapses and move-ins (`crlbuilder.keptfor`). A record made before such an entry and read
only after its erasure would be judged without it (docs/records.md, "Arrival order"): at worst a
move-out notice (転出届) made before an erased one lapses and revokes an auth-card certificate
issued since, which read in time stays good. Such a record is refused instead, to the quarantine,
with a reason that names no time and nothing of the holder (`LATE_ISSUANCE`, `LATE_NOTICE`),
and counted (``refused_late`` in the build summary).

Which records, from what each entry is never erased before (the readers of each, from
`crlbuilder.keptfor` and `crlbuilder.lapsed`, concern a certificate issued, or a notice made,
no later than the entry's instant ``e``):

- a kept change, lapse or move-in: not before the end of the shortest retention period counted
  from ``e`` (`crlbuilder.periods.kept_until`), nor before every card certificate issued by
  ``e`` has expired; a card's CRL entry, which a mobile certificate's issuance read later follows
  (the cascade, Act §16-13, §35-13): not before its period from its recording, nor before the
  card's notAfter (no earlier than the mobile one's). So an issuance (発行記録) is read too late
  when the store's latest erasure came after both the shortest period counted from the
  certificate's notBefore and its notAfter: the certificate had expired by then;
- a lapsed move-out notice: not before the period of auth-card ``resident-change`` counted from
  when its lapse was written; a kept move-in: not before that period counted from when it was
  made. So a move-out or move-in notice is read too late when that period, counted from when
  it was made (``notified_at``, else ``recorded_at``), had ended by the store's latest erasure.

The bound is the store's (`store.format.ErasedState`, written by each erasure that erased
anything, in its transaction, with the periods it applied), never the node's clock: every node
of a record stream erases at the same ticks and so refuses the same records, and its store
stays byte-equal to the others'. A record of another kind is never refused by it: a revocation
request, recording error, compromise, consent withdrawal, or a resident change that is no notice
reads only the status of certificates (kept after an erasure: they lost effect) or nothing erased.
A consent grant has its own bound, by the erasures of consents and withdrawals
(`crlbuilder.consentkept.LATE_GRANT`, counted here too).
Not covered: a deletion on a 国外転出届 recorded while a sign-card certificate of its window was
valid, after the notice's lapse, read after the notice's erasure (the window read from the
notice is gone; it takes that certificate, which has expired by then: docs/records.md).
"""

from __future__ import annotations

from typing import Final

from crlbuilder.consentkept import LATE_GRANT
from crlbuilder.model import ChangeKind, Issuance, Record, ResidentChange
from crlbuilder.periods import first_kept_at
from crlbuilder.store.format import ErasedState

LATE_ISSUANCE: Final = (
    "read too late: the certificate had expired, and was issued more than a retention period, "
    "before the store's latest erasure past retention (Ord §70(1)(iii)), which may have erased "
    "what it is judged by; not applied (docs/records.md, 'Read too late')"
)
"""Why an issuance record is refused as read too late (no time, nothing of the holder)."""

LATE_NOTICE: Final = (
    "read too late: the notice was made more than a retention period before the store's latest "
    "erasure past retention (Ord §70(1)(iii)), which may have erased what it is judged by; not "
    "applied (docs/records.md, 'Read too late')"
)
"""Why a move-out or move-in notice record is refused as read too late."""

REASONS: Final = frozenset({LATE_ISSUANCE, LATE_NOTICE, LATE_GRANT})
"""Every reason of this module: a refusal with one of them is counted ``refused_late``."""


def bound(
    at: int, shortest: int, notice_days: int, before: ErasedState | None = None
) -> ErasedState:
    """The state an erasure at ``at`` that erased anything leaves (`store.format.ErasedState`),
    by the periods it applied: ``shortest`` days (of any family and category) and
    ``notice_days`` (auth-card ``resident-change``: a lapse record's); never below ``before``
    (an earlier erasure's, perhaps by other periods)."""
    # kept_until(t, days) <= at  <=>  t < first_kept_at(at + 1, days)
    state = ErasedState(
        at=at,
        issued_before=first_kept_at(at + 1, shortest),
        made_before=first_kept_at(at + 1, notice_days),
    )
    if before is None:
        return state
    return ErasedState(
        at=max(at, before.at),
        issued_before=max(state.issued_before, before.issued_before),
        made_before=max(state.made_before, before.made_before),
    )


def refusal(rec: Record, state: ErasedState | None) -> str | None:
    """Why ``rec`` is read too late to be judged (see the module), or None."""
    if state is None:
        return None
    match rec:
        case Issuance():
            issued = int(rec.not_before.timestamp())
            if issued < state.issued_before and int(rec.not_after.timestamp()) <= state.at:
                return LATE_ISSUANCE
        case ResidentChange(change=ChangeKind.MOVE_OUT_NOTICE | ChangeKind.MOVE_IN_NOTICE):
            made = rec.notified_at or rec.recorded_at
            if int(made.timestamp()) < state.made_before:
                return LATE_NOTICE
    return None
