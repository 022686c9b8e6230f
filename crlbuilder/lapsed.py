"""When a lapsed move-out notice (転出届) is erased from the store (sans-I/O).

A move-out notice whose 30-day lapse (Act §31(2)) was written stays in the store's ``pending``
database with ``lapsed_at`` set (`store.format.PendingMoveOut`). The lapse record itself
(異動等失効情報) is a record the 機構 keeps "当該記録をした日から政令で定める期間" (Act §31) and
then erases (認証業務情報の消去, Ord §70(1)(iii)). Two rules still read the notice after its
lapse, for records of the holder that arrive later:

- the exemption of Act §12(2): a deletion of the resident record caused by a 国外転出届
  (``record-deletion``, cause ``abroad-move-out``) does not take a sign-card certificate issued
  between that notice and its planned date; the window is read from the notice, also when the
  deletion's record arrives after the lapse (`crlbuilder.apply`, `rules.sign_revoked_by`);
- a move-in notice (転入届) made before the due instant whose record arrives after the lapse
  was written: the lapse stands (Act §34(1)(2)) and the build counts it
  (``move_in_after_lapse``); a move-out notice made before it, read later, is judged by it.

Every other later reading of the lapse is served by the copy kept with the holder's changes
(`store.format.Taken`, written with the lapse; `erasable_at`'s caller writes it again before
erasing, for a store whose lapse was written by a builder that kept none).

The rule (`erasable_at`): a lapsed notice is erased at the first erasure past retention
(`crlbuilder.apply.Applier.erase_past_retention`, at every build, follow-loop timer and stream
tick) at or after the latest of

1. the end of the retention period of the lapse record it produced: ``retention(auth-card,
   resident-change)`` days (configuration, `config.CrlSection.retention_period_days`)
   counted from the day after the day the lapse was written (Act §31, 記録をした日から;
   初日不算入, Civil Code §140, `crlbuilder.periods.kept_until`);
2. the notAfter of every auth-card certificate of the holder its lapse takes
   (`rules.lapse_revokes`: issued before the due instant, outside a 国外転出届's window),
   revoked by it or not: a lapse record is never erased while its certificate is valid
   (Ord §70(1)(iii), `crlbuilder.apply.due_instant`), so with 1. the notice goes no earlier
   than the last record its lapse wrote, in the same erasure when the lapse revoked that
   certificate (a lapse that took none: at 1.);
3. for a 国外転出届 (``abroad``), the notAfter of every sign-card certificate of the holder
   issued in its window (from when it was made to the end of its planned date, JST:
   `rules.issued_in_abroad_window`), revoked or not: while one is valid, a deletion caused by
   that notice could still take it (Act §12(2)).

The certificates of 2. and 3. are those whose issuance records were read: one read later can
only hold the notice longer, so the builder checks a notice again when its instant comes.

Past that instant no answer the store gives depends on the notice, unless a record of the
holder made before it arrives only then (more than a retention period after the lapse): a
sign-card issuance of the window read after a deletion, a move-in notice made in time, or a
move-out notice made before this one: each is refused as read too late (`crlbuilder.lateness`);
and a deletion recorded after the lapse while a window certificate was valid, which is not (it
takes that certificate, expired by then). docs/records.md lists them with the other limits of
arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable

from crlbuilder.periods import kept_until


def erasable_at(lapsed_at: int, days: int, not_afters: Iterable[int] = ()) -> int:
    """The instant (epoch seconds) from which a notice whose lapse was written at ``lapsed_at``
    is erased: the end of the lapse record's retention of ``days`` days (`kept_until`), and not
    before any of ``not_afters``: the notAfter of each auth-card certificate of the holder its
    lapse takes (Ord §70(1)(iii)) and, for a 国外転出届, of each sign-card certificate of the
    holder issued in its window (Act §12(2))."""
    if lapsed_at <= 0:
        raise ValueError("only a notice whose lapse was written is erased")
    return max(kept_until(lapsed_at, days), max(not_afters, default=0))
