"""When CRL entries pass their retention: the builder's agenda of erasures (sans-I/O).

A revocation record (失効情報の記録) is kept for the period Cabinet order sets, counted
from the day after the day it was recorded (Civil Code §140-§141, `crlbuilder.periods`),
and never erased while its certificate is still valid (Ord §70(1)(iii),
`crlbuilder.apply.past_retention`): an entry falls due at
``max(kept_until(recorded_at, days), not_after)`` (`crlbuilder.apply.due_instant`). Finding which
are due by reading every CRL entry costs seconds at national scale (31 s on a store of
10,000,000 holders read from disk), and the builder asks at every build, every stream tick
and every commit of the follow loop, when nearly always none is due; and that read runs in the
erasure's write transaction, so a revocation record read meanwhile waits behind it (one
builder, one writer: minutes at national scale, bench/bench_scan_wait.py).

The agenda makes the question cheap without changing its answer, and needs no such read but once.
One scan of every entry (`Applier.erase_past_retention`) erases what is due and lists, in the store
(``retention`` database, `store.format.RetentionState`), every entry not yet due at the instant it
falls due: the agenda is then complete (`NO_HORIZON`, `scanned_whole`). From then on every commit
that writes an entry which can fall due lists it, in its own transaction and whichever process
writes it (`store.writer.Commit`): a CRL entry under its status key and a lapsed move-out notice or
a consent under its holder key, at the end of the shortest period (`RetentionState.shortest`) from
its recordedAt, lapsedAt or recordedAt, before which none can fall due; a holder's kept entry at
the earliest instant it can fall due; sealed facts at their instant. An entry the agenda names is
checked again against the store when its time comes (it may have been erased, unlisted or revoked
again since, or fall due later than the earliest instant it was listed at): what is due goes, what
is not is listed again at its own instant (a key listed at several instants is checked at each). So
what is erased at an instant is what a full scan would erase then, on every node of the record
stream alike, and an erasure reads only what the agenda names by then: its time is bounded by what
falls due, not by the store's size.

The full scan runs again only when the agenda cannot be trusted: none yet (a store from before
the first erasure), or the retention periods, the way they are counted
(`crlbuilder.periods.RULE`) or what is listed (`LISTED`) are not those it applied (their digest:
an upgrade or a reconfiguration; an agenda of a store written by a builder that counted
``recorded_at + days * 86400``, up to a day early, is never used, the scan that replaces it
applies today's counting), a clock before the scan's instant, or a commit that did not list
what it wrote lowered a watermark
(`store.format.META_REVOKED_FROM`, `store.format.META_KEPT_FROM`: a builder of an earlier
release writing to the store, whose agenda had a horizon and its commits only those watermarks).
A builder of an earlier release reading a complete agenda sees another digest and scans again.

The agenda of an earlier release listed only what fell due before a horizon `LOOKAHEAD` after
its scan, and was scanned again when the horizon came (every 30 days) or when a commit's
watermark showed an entry that could fall due before it; an agenda made with a ``lookahead``
(`scanned`) still works so (`Applier.erase_past_retention`), commits lowering the watermarks
and listing only facts due before its horizon.

What is listed, besides the CRL entries:

The lapsed move-out notices (`crlbuilder.lapsed`): each falls due no earlier than its lapse
record's retention, so a notice lapsed is listed under its holder key (32 bytes, beside the
22-byte status keys) from its ``lapsed_at`` (`store.writer.Commit.put_pending`). An agenda made
before the notices were on it (another `NOTICES` in its digest) is stale.

The holders' kept changes, lapses and move-ins (``taken``, ``moveins``: `crlbuilder.keptfor`): a
holder key is listed at the earliest instant of its entries, each falls due no earlier than six
years after its change, due instant or move-in (`crlbuilder.keptfor.taken_due_from`, whatever the
periods; `store.writer.Commit.put_taken`, ``put_move_ins``); a holder key taken off the agenda
has its notice and its entries checked again, once however many instants it was listed at (the
next instant of those left is listed again). An agenda made before them (another `KEPT` in its
digest) is stale.

The sealed four facts of sign certificates (``holders``, `crlbuilder.factskept`): the scan reads
every sealed entry's status and lists, under its status key, the facts at the second after the
certificate's notAfter; a commit that seals facts lists them so (`store.writer.Commit
.add_certificate`). A status key taken off the agenda is checked for both what it may stand for
(its CRL entry, its facts). An agenda made before them (another `FACTS` in its digest) is stale:
the scan that replaces it erases the facts of every certificate that expired before it.

The holders' consents (``consents``, `crlbuilder.consentkept`): the scan reads every holder's
consents and the notAfter of its sign certificates, and lists the holder key at the earliest
instant one of them falls due; a consent written is listed under its holder key from its
recordedAt as a CRL entry is (`store.writer.Commit.put_consent`). A holder key taken off the
agenda has its consents checked again. An agenda made before them (another `CONSENTS` in its
digest) is stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from typing import Final

from crlbuilder.model import Category, Family
from crlbuilder.periods import RULE, first_kept_at, kept_until
from crlbuilder.store.format import RetentionState

LOOKAHEAD: Final = 30 * 86_400
"""Seconds past a scan that an agenda of an earlier release covered (its horizon); an agenda
made with a ``lookahead`` (`scanned`) still works so. This release's agenda has none
(`NO_HORIZON`)."""

NO_HORIZON: Final = 1 << 62
"""The horizon of a complete agenda (`scanned_whole`): every entry not yet due is listed,
whenever it falls due, and every commit lists what it writes
(`store.format.RetentionState.complete`)."""

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

COMPLETE: Final = "complete-1"
"""Names how the agenda is kept: complete, every commit listing what it writes (`NO_HORIZON`);
part of `periods_digest`, as `NOTICES`: an agenda made to a horizon by an earlier release, whose
commits only lowered watermarks, is made again once, and a builder of an earlier release sees
another digest in a complete agenda and does not use it (its erasures from the agenda would not
list again what is not yet due)."""

LISTED: Final = (NOTICES, KEPT, FACTS, CONSENTS, COMPLETE)
"""What a scan lists besides the CRL entries, and how (`COMPLETE`), each named in
`periods_digest` (an earlier release listed fewer: RULES 2 none, RULES 3 `NOTICES`, then
`KEPT`, `FACTS`, `CONSENTS`, each to a horizon)."""

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
    the scan may (``kept_since``, the earliest instant one can: `crlbuilder.keptfor`). A
    complete agenda has no horizon: only another digest, a ``now`` before its scan or a
    watermark at all (a commit that did not list what it wrote: an earlier release's) make it
    stale."""
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
    periods: Collection[str] | None = None,
) -> int | None:
    """The earliest instant at which an erasure may fall due: the agenda of ``state``'s
    earliest entry (``first_due``), its horizon (past it, only a scan knows), the end of
    the ``shortest`` period (days) of an entry recorded at ``written_since``, committed since
    the scan, or ``kept_since`` (`stale`), whichever is soonest. None before the first scan, and
    when a complete agenda (no horizon) lists nothing. A follow loop or a tick publisher sleeps
    no longer than it (`crlbuilder.build`).

    ``periods``: the digests (`periods_digest`) an erasure now would trust; an agenda made under
    another (the periods changed since its scan) says nothing of what is due under these: its
    scan's instant, so that the erasure, which scans, runs at once."""
    if state is None:
        return None
    if periods is not None and state.periods not in periods:
        return state.scanned_at
    ats = [] if state.complete else [state.horizon]  # a complete agenda never runs out
    if first_due is not None:
        ats.append(first_due)
    if kept_since is not None:
        ats.append(kept_since)
    if written_since is not None:
        ats.append(kept_until(written_since, shortest))
    return min(ats, default=None)


def unseen_from(horizon: int, shortest: int) -> int:
    """The earliest recordedAt a scan can pass over: an entry recorded then or later falls
    due at or after ``horizon`` whatever its period (``shortest`` days or more)."""
    return first_kept_at(horizon, shortest)


def scanned(now: int, periods: str, lookahead: int = LOOKAHEAD) -> RetentionState:
    """The state of an agenda made by a scan at ``now`` to a horizon ``lookahead`` seconds on, as
    an earlier release made it (this release's: `scanned_whole`)."""
    if lookahead <= 0:
        raise ValueError("the agenda's lookahead is a positive number of seconds")
    return RetentionState(scanned_at=now, horizon=now + lookahead, periods=periods)


def scanned_whole(now: int, periods: str, shortest: int) -> RetentionState:
    """The state of a complete agenda made by a scan at ``now`` (`NO_HORIZON`): its commits list
    what they write from the ``shortest`` period (days) on."""
    if shortest < 1:
        raise ValueError("a complete agenda needs the shortest period, a positive number of days")
    return RetentionState(scanned_at=now, horizon=NO_HORIZON, periods=periods, shortest=shortest)
