"""Instants a registry change sets in the past: found, so that only a stated correction sets them.

A party's suspension (提供の停止, Act §18(6),(7), §37(4)) says from when it receives nothing,
its resumption from when it receives again, its end of provision from when never again, a
credential's window from when it authenticates. The ledger (帳簿, Act §40) counted what each
party received as it was provided. A change dating one of these instants before now rewrites
that past: the registry would say the party received nothing while the ledger counted its
provisions (or the reverse). So a change may set such an instant no earlier than
`ALLOWANCE` seconds before now (the operator's typing, the nodes' clock skew); an earlier one
is a correction of the record, made only with a reason (`registry ... --correction REASON`),
which the audit log keeps with the change.

Compared are the instants a change sets or moves, of each party present before and after:
a suspension's ``since`` (a new one) and ``until`` (set or moved), the end's ``at``, a
credential's ``not_before`` and ``not_after`` (by label; a credential added is checked by
`cli._check_credentials` instead, and a removed one ends now). Not compared: an approval's
revocation (``revoked``, Act §38-2(6)): it records the ministers' act on its own date, which
the 機構 learns of afterwards, and is dated when they revoked.

Sans-I/O: two registry files and the time in, the instants found out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from responder.registry.schema import (
    CredentialEntry,
    PartyEntry,
    RegistryFile,
    Suspension,
)

ALLOWANCE: Final = 60.0
"""Seconds before now an instant may lie without being a correction."""


@dataclass(frozen=True)
class PastInstant:
    """One instant a change sets in the past."""

    party: str
    field: str
    """What it dates, e.g. ``suspension (Act §18(6)(1)) since``, ``ended at``."""
    at: datetime

    def describe(self, now: float) -> str:
        ago = now - self.at.timestamp()
        return f"party {self.party!r}: {self.field} {self.at.isoformat()} is {_span(ago)} ago"


def past_instants(
    before: RegistryFile, after: RegistryFile, now: float, allowance: float = ALLOWANCE
) -> list[PastInstant]:
    """The instants ``after`` sets or moves, relative to ``before``, earlier than ``now`` minus
    ``allowance``."""
    cutoff = now - allowance
    old = {p.id: p for p in before.parties if isinstance(p, PartyEntry)}
    found: list[PastInstant] = []
    for a in after.parties:
        b = old.get(a.id)
        if not isinstance(a, PartyEntry) or b is None:
            continue
        for field, at in _changed(b, a):
            if at.timestamp() < cutoff:
                found.append(PastInstant(a.id, field, at))
    return found


def _changed(b: PartyEntry, a: PartyEntry) -> Iterator[tuple[str, datetime]]:
    """What ``a`` dates differently from ``b``: (field, instant)."""
    was = {_suspension_key(s): s for s in b.suspension}
    for s in a.suspension:
        prior = was.get(_suspension_key(s))
        what = f"suspension ({s.article})"
        if prior is None:
            yield f"{what} since", s.since
        if s.until is not None and (prior is None or prior.until != s.until):
            yield f"{what} until", s.until
    if a.ended is not None and (b.ended is None or b.ended.at != a.ended.at):
        yield "ended at", a.ended.at
    creds = {c.label: c for c in b.credential if c.label is not None}
    for c in a.credential:
        prior_c = creds.get(c.label) if c.label is not None else None
        if prior_c is None or not _same_credential(prior_c, c):
            continue
        for name in ("not_before", "not_after"):
            value: datetime | None = getattr(c, name)
            if value is not None and value != getattr(prior_c, name):
                yield f"credential {c.label!r} {name}", value


def _suspension_key(s: Suspension) -> tuple[str, datetime]:
    return (s.article, s.since)


def _same_credential(x: CredentialEntry, y: CredentialEntry) -> bool:
    """The same credential (kind and what it holds), whatever its window."""
    if type(x) is not type(y):
        return False
    return getattr(x, "token_sha256", None) == getattr(y, "token_sha256", None) and getattr(
        x, "cert", None
    ) == getattr(y, "cert", None)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
