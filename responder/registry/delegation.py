"""Delegation of the whole verification work to a certified contractor (Ord §29, §60): its checks and the party it makes.

A body that entrusts the whole of its 電子署名等確認業務 (the confirmation work of Act §17(1)
item 6, so named in Ord §28 item 1) to one body certified under that item (the 電子署名等確認業務受託者,
"contractor") is deemed certified under item 6 itself (the 電子署名等確認業務委託者,
"principal", Ord §29(1)). The contractor may file the principal's notification in its place
(Ord §29(3) sign side, §60(1) auth side), and when the contractor is itself a 署名検証者
(resp. 利用者証明検証者) its agreement with the 機構 is deemed the principal's (Ord §29(4),
§60(2)). The registry says so on the principal's titles (``delegated_to``) and notification
(``filed_by``); `principal` checks it against the contractor's entry and builds the `Party`
the workers serve, so that every service path (OCSP, /v1, CRL files), which reads only that
`Party`, sees the deemed agreement and the deemed certification without knowing of either.

Decisions (tests/test_registry_delegation.py, test_policy_delegation.py,
test_registrycli_delegation.py and test_delegation_app.py hold them):

- One contractor, one level. Every 署名検証者 and 利用者証明検証者 title of a principal names
  the same contractor (the *whole* work goes to *one* body, Ord §29(1)); the titles are of
  category 6 (the item the principal is deemed certified under) and carry no
  ``certified_until`` of their own. A principal holds no group or member title (a
  団体署名検証者 notifies and agrees in its own name, Act §17(5),(6)). The contractor is a
  registered party, not the principal, holds a 署名検証者 or 利用者証明検証者 title of category 6
  with ``certified_until`` (its certification under item 6, which covers both kinds of
  confirmation, Act §17(1)(6)), no group or member title, and delegates nothing itself.
- ``filed_by``, when given, is the contractor: only it files in a principal's place.
- The agreement that counts, per side: Ord §29(4) (§60(2)) deems the contractor's agreement
  the principal's for its 署名検証者 (利用者証明検証者) title when the contractor is a 署名検証者
  (利用者証明検証者) itself. The deeming (みなす) is the law's, not a default: on that side the
  contractor's agreement is the principal's, whatever else was agreed: the services a
  principal's own ``[party.agreement]`` names on that side are not served under it, and every
  registry command warns, naming ``agreement.services`` and the way out (``registry update
  --drop-agreement`` when nothing else is left; `registry add|update` makes no agreement
  there). A warning, not a refusal: a contractor that takes up the title a principal agreed
  itself would otherwise be refused, and the principal's agreement could not be dropped
  before (it was still needed), a dead end. A delegated title whose kind the contractor does
  not hold is agreed by the principal itself (Act §17(4), §36(2)): without its own agreement
  the principal is refused and told so. The deemed agreement gives the principal the contractor's grants for
  the services its own titles may receive (a principal that is no 利用者証明検証者 gets no auth
  service, nor ``corresponding-serial``), never the 特定利用者証明検証者証明符号 (its agreement is
  of Act §38-3(3), which Ord §29(4) and §60(2) do not deem). `Party.deemed` names the titles
  whose agreement is the contractor's; refusals cite the deeming provision for those only.
  (The first version let a principal's own agreement replace the deemed one on every side: a
  misreading of みなす, corrected by the audit of this module.)
- Quotas under a deemed agreement are shared: the contractor's agreement sets them once for
  the systems that make every request it makes, for itself and for each principal, so the
  principal's requests and provisions count against the contractor's (`Party.quota_id`: one
  set of counters in `responder.limits`, read by the per-second, per-day and provisions
  bounds and by both quota gauges). A contractor cannot multiply what the 機構 agreed to
  provide by registering principals. A principal with its own agreement for the side its
  contractor does not cover is bounded by the tighter of the two agreements' quotas (and the
  longer CRL cycle), still counted under the contractor's id: the counters are per party, not
  per side, and counting under the tighter bound passes neither agreement. The CRL cycle (周期)
  stays per recipient: each principal receives its own copy of a file, which the ledger
  counts for it. When the contractor holds neither of the principal's kinds, nothing is
  deemed: the principal's own agreement and quotas count, under its own id.
- Fair shares of the worker's signing and batch threads are per body whose systems make the
  requests (`Party.fair_id`: the contractor for a principal), not per party: a contractor
  with many principals gets one share, as any other party (its principals' requests all come
  from its systems, Ord §29(1)).
- Dates: a principal starts no earlier than its contractor's notified start, and ends no
  later than its contractor's end of provision (``ended``); a file (so a `registry end` of the
  contractor) that breaks either is refused naming the principal, the field and the way out
  (end the principal too, or move it: ``update --delegated-to`` another, ``--no-delegation``;
  ``registry end --with-principals`` ends the contractor and those principals in one change).
  No automatic cascade: the 機構 may rather move a principal to another contractor.
  Both are dates in the file: time passing refuses nothing.
- The deemed certification lasts while the contractor's does: every grant of a delegated
  side ends at the end of the contractor's ``certified_until`` (of its title of the same kind
  when it holds one, else of its other category-6 title), and at the contractor's end of
  provision (``ended``), whichever comes first, whether the principal is served under the
  deemed agreement or its own (a contractor that left the registry is none the 機構 can vouch
  for; the principal is re-registered, with another contractor or its own certification).
  Refused then as ``ended`` under Ord §29(1).
- A suspension of the contractor (提供の停止, Act §18(6), §37(4)) stops, for each principal
  that delegated the title it concerns, the same services for the same time, under the
  contractor's article: the contractor's systems do the principal's whole work, and the
  機構's grounds to stop provision include its contractors' breaches (Act §18(6)(2), §37(4)(2)).
  A carry-over to the contractor's other title (Act §18(6)(6), §37(4)(6)) reaches the
  principal's same side only through the window it makes on the contractor. The 機構 can also
  suspend a principal itself (`registry suspend`), as any party.
- Requests for a principal are made by the contractor's systems with the principal's own
  credentials (held by the contractor), so the principal is the one authenticated, decided
  for and counted (帳簿, Act §40; 報告書, Act §41, Ord §71, §72) under its own id; the
  contractor's own credentials act for the contractor only.
- The principal's own notified start date governs when it is served (no earlier than its
  contractor's, above); the criteria it must meet itself (Ord §28 item 1, its officers and
  those in charge of the work: Ord §29(1) names only that item, the rest of §28 being the
  contractor's to meet) and the contractor's report to the minister (§29(2)) are not the
  機構's records and are not kept here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from responder.registry.party import (
    Grant,
    Party,
    SuspensionWindow,
    day_end,
    revocation_families,
)
from responder.registry.schema import (
    AnyEntry,
    GroupSignatureVerifierTitle,
    PartyEntry,
    SignatureConfirmerTitle,
    SignatureVerifierTitle,
    UserVerifierTitle,
)
from responder.registry.vocabulary import (
    AUTH_SIDE,
    SERVICE_REQUIRES_ALL,
    SIGN_SIDE,
    TITLE_SERVICES,
    Service,
    Title,
    title_services,
)

VerifierTitle = SignatureVerifierTitle | UserVerifierTitle

Err = Callable[[str, str, str], None]
"""How an error is reported: party id, field, message (`responder.registry.checks`)."""

SIDE: Final[dict[Title, frozenset[Service]]] = {
    Title.SIGNATURE_VERIFIER: SIGN_SIDE,
    Title.USER_VERIFIER: AUTH_SIDE,
}
"""The services a delegated title's agreement, certification and suspensions concern."""

DEEMING: Final[dict[Title, str]] = {
    Title.SIGNATURE_VERIFIER: "Ord §29(4)",
    Title.USER_VERIFIER: "Ord §60(2)",
}
"""The provision that deems the contractor's agreement the principal's, per title."""

_JA: Final[dict[Title, str]] = {
    Title.SIGNATURE_VERIFIER: "署名検証者 (signature-verifier)",
    Title.USER_VERIFIER: "利用者証明検証者 (user-verifier)",
}


def contractor_of(entry: AnyEntry) -> str | None:
    """The contractor a party's titles delegate to (the first one named), or None."""
    if not isinstance(entry, PartyEntry):
        return None
    return next(
        (t.delegated_to for t in entry.title if isinstance(t, VerifierTitle) and t.delegated_to),
        None,
    )


def principal(
    e: PartyEntry,
    own: Party,
    entries: Mapping[str, AnyEntry],
    parties: Mapping[str, Party],
    err: Err,
    warn: Callable[[str], None] = lambda _: None,
    now: float = -math.inf,
) -> Party:
    """The party ``e`` as the workers serve it: ``own`` (built from its entry alone) when it
    delegates nothing, else with the deemed agreement, certification and suspensions of the
    module docstring. Each problem is reported through ``err`` (the file is then refused);
    ``warn`` says that a principal is refused at ``now`` because of its contractor (its
    certification lapsed or its provision ended: time passed, which refuses no file)."""
    n = e.notification
    cid = contractor_of(e)
    if cid is None:
        if n is not None and n.filed_by is not None:
            err(
                e.id,
                "notification.filed_by",
                "only a contractor (電子署名等確認業務受託者) files in a party's place (Ord "
                "§29(3), §60(1)), and this party delegates its work to none: set delegated_to "
                "on its titles, or remove filed_by",
            )
        return own
    ok = _titles(e, cid, err)
    if n is not None and n.filed_by is not None and n.filed_by != cid:
        ok = False
        err(
            e.id,
            "notification.filed_by",
            f"{n.filed_by!r} is not this party's contractor ({cid!r}): only the contractor "
            "files the notification in its place (Ord §29(3), §60(1))",
        )
    contractor = _contractor(e, cid, entries, parties, err)
    if contractor is None or not ok:
        return own
    c, certified = contractor
    ce = entries[cid]
    if isinstance(ce, PartyEntry) and not _dates(e, ce, err):
        return own
    kinds = frozenset(t.TITLE for t in e.title if isinstance(t, VerifierTitle))
    sides: frozenset[Service] = frozenset().union(*(SIDE[k] for k in kinds))
    deemed_kinds = frozenset(k for k in kinds if k in c.titles)
    deemed: frozenset[Service] = frozenset().union(*(SIDE[k] for k in deemed_kinds))
    if e.agreement is None:
        lacking = sorted(kinds - deemed_kinds, key=lambda k: k.value)
        for k in lacking:
            err(
                e.id,
                "agreement",
                f"required: its contractor {cid!r} is not a {_JA[k]}, so no agreement of its "
                f"is deemed this party's ({DEEMING[k]}); give the party its own [party.agreement]",
            )
        if lacking:
            return own
    else:
        clash = sorted(s.value for s in e.agreement.services if s in deemed)
        if clash:  # a warning: refused, a contractor taking up a title would be stuck
            warn(
                f"party {e.id!r}: agreement.services: {', '.join(clash)}: its contractor "
                f"{cid!r}'s agreement is this party's on that side, deemed by law "
                f"({', '.join(sorted(DEEMING[k] for k in deemed_kinds))}), so these are not "
                "served under an agreement of its own; remove them (or the whole agreement: "
                "`registry update --drop-agreement`)"
            )
    grants = {s: g for s, g in own.grants.items() if s not in deemed}
    served = own
    if deemed_kinds:
        allowed = title_services(own.titles) & deemed
        grants |= {s: g for s, g in c.grants.items() if s in allowed}
        served = msgspec.structs.replace(
            own,
            agreement_holder=c.id,
            deemed=deemed_kinds,
            requests_per_second=_tighter(c.requests_per_second, own.requests_per_second),
            requests_per_day=_tighter(c.requests_per_day, own.requests_per_day),
            provisions_per_day=_tighter(c.provisions_per_day, own.provisions_per_day),
            crl_cycle_seconds=max(c.crl_cycle_seconds, own.crl_cycle_seconds),
        )
    lapse = {k: _lapse(k, certified) for k in kinds}
    for s, g in grants.items():
        involved = {k for k in kinds if s in TITLE_SERVICES[k]} | (
            SERVICE_REQUIRES_ALL.get(s, frozenset()) & kinds
        )
        if involved:
            until = min(g.until, c.end, *(lapse[k] for k in involved))
            grants[s] = Grant(g.families, g.methods, until)
    if own.end > now >= min((g.until for g in grants.values()), default=math.inf):
        warn(
            f"party {e.id!r}: its contractor {c.id!r}'s certification has lapsed or its "
            "provision has ended: what rests on it is refused (Ord §29(1)) until the contractor is "
            "renewed or the delegation ends"
        )
    inherited = tuple(
        SuspensionWindow(stopped, w.since, w.until, w.article, via=c.id)
        for w in c.suspensions
        if (stopped := w.services & sides)
    )
    return msgspec.structs.replace(
        served,
        grants=grants,
        families=revocation_families(grants),
        suspensions=own.suspensions + inherited,
        contractor=c.id,
    )


def _titles(e: PartyEntry, cid: str, err: Err) -> bool:
    """A principal's titles: every verifier title delegated to ``cid``, category 6, with no
    certification of its own; no group or member title."""
    ok = True
    for i, t in enumerate(e.title):
        fld = f"title[{i}]"
        if isinstance(t, GroupSignatureVerifierTitle | SignatureConfirmerTitle):
            ok = False
            err(
                e.id,
                fld,
                f"a party that delegates its verification work (Ord §29(1), delegated_to {cid!r}) "
                "holds no group or member title: a 団体署名検証者 notifies and agrees in its own "
                "name (Act §17(5),(6)); register the group as a party of its own",
            )
        elif isinstance(t, VerifierTitle):
            if t.delegated_to != cid:
                ok = False
                err(
                    e.id,
                    f"{fld}.delegated_to",
                    f"the whole 電子署名等確認業務 is entrusted to one contractor (Ord §29(1)): "
                    f"name {cid!r} on this title too",
                )
            elif t.category != 6:
                ok = False
                err(
                    e.id,
                    f"{fld}.delegated_to",
                    "only a party deemed certified under Act §17(1) item 6 delegates its work "
                    f"(Ord §29(1)): this title is category {t.category}, not 6",
                )
            elif t.certified_until is not None:
                ok = False
                err(
                    e.id,
                    f"{fld}.certified_until",
                    "a delegated title has no certification of its own: it is deemed certified "
                    f"while its contractor {cid!r} is (Ord §29(1)); remove certified_until",
                )
    return ok


def _contractor(
    e: PartyEntry,
    cid: str,
    entries: Mapping[str, AnyEntry],
    parties: Mapping[str, Party],
    err: Err,
) -> tuple[Party, dict[Title, float]] | None:
    """The contractor's party and the end of its certification per title kind, or None
    (reported) when ``cid`` cannot be a contractor."""
    fld = "title.delegated_to"
    if cid == e.id:
        err(e.id, fld, "a party is not its own contractor (電子署名等確認業務受託者, Ord §29(1))")
        return None
    entry, party = entries.get(cid), parties.get(cid)
    if not isinstance(entry, PartyEntry) or party is None:
        err(e.id, fld, f"{cid!r} is not a registered party (in the current format)")
        return None
    ok = True
    if party.titles & {Title.GROUP_SIGNATURE_VERIFIER, Title.SIGNATURE_CONFIRMER}:
        ok = False
        err(
            e.id,
            fld,
            f"{cid!r} holds a group or member title: a contractor is a body certified under "
            "Act §17(1) item 6 (Ord §29(1)), registered with its verifier titles only",
        )
    own_contractor = contractor_of(entry)
    if own_contractor is not None:
        ok = False
        err(
            e.id,
            fld,
            f"{cid!r} delegates its own work to {own_contractor!r}: a contractor does the work "
            "itself (one level: Ord §29(1) entrusts it to a body certified in its own right)",
        )
    certified = {
        t.TITLE: day_end(t.certified_until)
        for t in entry.title
        if isinstance(t, VerifierTitle) and t.category == 6 and t.certified_until is not None
    }
    if not certified and own_contractor is None:
        ok = False
        err(
            e.id,
            fld,
            f"{cid!r} is not certified under Act §17(1) item 6 (no signature-verifier or "
            "user-verifier title of category 6 with certified_until): Ord §29(1) deems a "
            "party certified only through such a contractor",
        )
    return (party, certified) if ok else None


def _lapse(kind: Title, certified: Mapping[Title, float]) -> float:
    """When the contractor's certification a delegated title of ``kind`` rests on ends: that of
    its title of the same kind, else of its other one (one certification, Act §17(1)(6))."""
    if kind in certified:
        return certified[kind]
    return min(certified.values(), default=-math.inf)


def _tighter(a: int | None, b: int | None) -> int | None:
    """The tighter of two agreed bounds (None: no bound)."""
    return b if a is None else a if b is None else min(a, b)


def _dates(e: PartyEntry, c: PartyEntry, err: Err) -> bool:
    """A principal is served neither before its contractor's notified start nor after its
    contractor's end of provision: its whole work is done by the contractor's systems, under
    the contractor's certification (and agreement, deemed its own), Ord §29(1),(4), §60(2).
    Both are dates in the file, so a file that breaks this is refused (not time passing)."""
    ok = True
    n, cn = e.notification, c.notification
    if n is not None and cn is not None and n.start < cn.start:
        ok = False
        err(
            e.id,
            "notification.start",
            f"{n.start.isoformat()} is before its contractor {c.id!r}'s start "
            f"({cn.start.isoformat()}): the contractor's systems do its whole work (Ord §29(1)); "
            "start it on or after the contractor's",
        )
    if c.ended is not None and (e.ended is None or e.ended.at > c.ended.at):
        ok = False
        err(
            e.id,
            "ended",
            f"its contractor {c.id!r} ends at {c.ended.at.isoformat()}, and with it the deemed "
            "certification this party rests on (Ord §29(1)): end this party at or before then "
            f"(`registry end {e.id} --at ...`), or move it first (`registry update {e.id} "
            "--delegated-to ID` or `--no-delegation`)",
        )
    return ok
