"""When CRL entries pass their retention: the builder's agenda of erasures (sans-I/O).

A revocation record (失効情報の記録) is kept for the period Cabinet order sets, counted
from the day after the day it was recorded (Civil Code §140-§141, `crlbuilder.periods`),
and never erased while its certificate is still valid (Ord §70(1)(iii),
`crlbuilder.apply.past_retention`): an entry falls due at
``max(kept_until(recorded_at, days), not_after)`` (`crlbuilder.apply.due_instant`). Finding which
are due by reading every CRL entry costs seconds at national scale (31 s on a store of
10,000,000 holders read from disk), and the builder asks at every build, every stream tick
and every commit of the follow loop, when nearly always none is due.

The agenda makes the question cheap without changing its answer. One scan of every entry
(`Applier.erase_past_retention`) erases what is due and lists, in the store, what falls
due before a horizon `LOOKAHEAD` later (``retention`` database, `store.format.RetentionState`);
until the horizon, the agenda alone answers, across builder runs. An entry committed after
the scan, by any process, lowers the store's watermark (`store.format.META_REVOKED_FROM`)
in its own transaction; it cannot fall due before the shortest period from its recordedAt
ends: when that is before the horizon, the agenda is stale and the next question scans
again, as it does when the retention periods, or the way they are counted
(`crlbuilder.periods.RULE`), are not those the scan applied: an agenda of a store written
by a builder that counted ``recorded_at + days * 86400`` (up to a day early) is never
used, the scan that replaces it applies today's counting. An entry the agenda names
is checked again against the store when its time comes (it may have been erased, unlisted or
revoked again since), so the agenda only ever spares reads: what is erased at an instant is
what a full scan would erase then, on every node of the record stream alike.

The same scan and agenda carry the lapsed move-out notices (`crlbuilder.lapsed`): each falls
due no earlier than its lapse record's retention, so a notice lapsed since the scan lowers the
watermark by its ``lapsed_at`` (`store.writer.Commit.put_pending`), and the agenda lists it
under its holder key (32 bytes, beside the 22-byte status keys). An agenda made before the
notices were on it (another `NOTICES` in its digest) is stale.

So do the holders' kept changes, lapses and move-ins (``taken``, ``moveins``:
`crlbuilder.keptfor`): a holder key is listed at the earliest instant of its entries, each
falls due no earlier than six years after its change, due instant or move-in
(`crlbuilder.keptfor.taken_due_from`, whatever the periods), which lowers a watermark of its own
when the entry is kept (`store.format.META_KEPT_FROM`, `store.writer.Commit.put_taken`,
``put_move_ins``): only an entry a record read years late adds makes the agenda stale, and a
holder key taken off the agenda has its notice and its
entries checked again, once however many instants it was listed at (the next instant of those
left is listed again). An agenda made before
them (another `KEPT` in its digest) is stale.

So do the sealed four facts of sign certificates (``holders``, `crlbuilder.factskept`): the scan
reads every sealed entry's status and lists, under its status key, the facts whose certificate
expires before the horizon (at the second after its notAfter); facts sealed since the scan are
listed by the commit that seals them when they fall due before the horizon
(`store.writer.Commit.add_certificate`), so they lower no watermark. A status key taken off the
agenda is checked for both what it may stand for (its CRL entry, its facts). An agenda made
before them (another `FACTS` in its digest) is stale: the scan that replaces it erases the facts
of every certificate that expired before it.

So do the holders' consents (``consents``, `crlbuilder.consentkept`): the scan reads every
holder's consents and the notAfter of its sign certificates, and lists the holder key at the
earliest instant one of them falls due before the horizon; a consent recorded since the scan
lowers the CRL entries' watermark by its recordedAt (`store.writer.Commit.put_consent`). A holder
key taken off the agenda has its consents checked again. An agenda made before them (another
`CONSENTS` in its digest) is stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from crlbuilder.model import Category, Family
from crlbuilder.periods import RULE, first_kept_at, kept_until
from crlbuilder.store.format import RetentionState

LOOKAHEAD: Final = 30 * 86_400
"""Seconds past a scan that its agenda covers."""

NOTICES: Final = "notices-1"
"""Names what else a scan lists: the lapsed move-out notices (`crlbuilder.lapsed`); part of
`periods_digest`, so an agenda made without them is made again."""

KEPT: Final = "kept-1"
"""Names what else a scan lists: the holders' kept changes, lapses and move-ins
(`crlbuilder.keptfor`); part of `periods_digest`, as `NOTICES`."""

FACTS: Final = "facts-1"
"""Names what else a scan lists: the sealed four facts of certificates that lose effect by the
end of their validity (`crlbuilder.factskept`); part of `periods_digest`, as `NOTICES`: an
agenda made without them is made again, and that scan erases the facts of every certificate
that expired before it."""

CONSENTS: Final = "consents-1"
"""Names what else a scan lists: the holders' consents past every sign certificate they could
serve (`crlbuilder.consentkept`); part of `periods_digest`, as `NOTICES`: an agenda made without
them is made again, and that scan erases every consent already past the rule."""

LISTED: Final = (NOTICES, KEPT, FACTS, CONSENTS)
"""What a scan lists besides the CRL entries, each named in `periods_digest` (an earlier release
listed fewer: RULES 2 none, RULES 3 `NOTICES`, then `KEPT`, `FACTS`, `CONSENTS`)."""

Periods = Callable[[Family, Category], int]
"""The retention period in days of a family's legal category (`config.CrlSection.retention_period_days`)."""


def shortest_period(retention: Periods) -> int:
    """The shortest period in days of any (family, category) that applies."""
    return min(retention(f, c) for f in Family for c in Category if c.applies_to(f))


def periods_digest(retention: Periods, listed: tuple[str, ...] = LISTED) -> str:
    """Names the periods a scan applied, how they were counted (`crlbuilder.periods.RULE`) and
    what it listed (`LISTED`; another ``listed``: the digest an earlier release wrote):
    another configuration, counting or listing makes its agenda stale."""
    periods = ",".join(
        f"{f.value}/{c.value}={retention(f, c)}"
        for f in Family
        for c in Category
        if c.applies_to(f)
    )
    table = ":".join((RULE, *listed, periods))
    return hashlib.sha256(table.encode()).hexdigest()[:32]


def stale(
    state: RetentionState | None,
    now: int,
    written_since: int | None,
    shortest: int,
    periods: str,
    kept_since: int | None = None,
) -> bool:
    """Whether only a scan of every entry says what is due at ``now``: no scan yet, one
    with other ``periods``, ``now`` outside the scan's span, an entry recorded at
    ``written_since`` (the earliest committed since the scan) may fall due before the
    horizon (its ``shortest`` period, in days, ends before it), or a holder's entry kept since
    the scan may (``kept_since``, the earliest instant one can: `crlbuilder.keptfor`)."""
    if state is None or state.periods != periods:
        return True
    if not state.scanned_at <= now < state.horizon:
        return True
    if kept_since is not None and kept_since < state.horizon:
        return True
    return written_since is not None and kept_until(written_since, shortest) < state.horizon


def next_erasure(
    state: RetentionState | None,
    first_due: int | None,
    written_since: int | None,
    shortest: int,
    kept_since: int | None = None,
) -> int | None:
    """The earliest instant at which an erasure may fall due: the agenda of ``state``'s
    earliest entry (``first_due``), its horizon (past it, only a scan knows), the end of
    the ``shortest`` period (days) of an entry recorded at ``written_since``, committed since
    the scan, or ``kept_since`` (`stale`), whichever is soonest. None before the first scan. A
    follow loop or a tick publisher sleeps no longer than it (`crlbuilder.build`)."""
    if state is None:
        return None
    at = state.horizon if first_due is None else min(first_due, state.horizon)
    if kept_since is not None:
        at = min(at, kept_since)
    return at if written_since is None else min(at, kept_until(written_since, shortest))


def unseen_from(horizon: int, shortest: int) -> int:
    """The earliest recordedAt a scan can pass over: an entry recorded then or later falls
    due at or after ``horizon`` whatever its period (``shortest`` days or more)."""
    return first_kept_at(horizon, shortest)


def scanned(now: int, periods: str, lookahead: int = LOOKAHEAD) -> RetentionState:
    """The state of an agenda made by a scan at ``now``."""
    if lookahead <= 0:
        raise ValueError("the agenda's lookahead is a positive number of seconds")
    return RetentionState(scanned_at=now, horizon=now + lookahead, periods=periods)
