"""POST /v1/status: batch 現況確認, revocation information on request for many certificates at once.

保存期間に係る署名用電子証明書失効情報 (Act §18(1)) and 利用者証明用電子証明書失効情報
(Act §37(1)) on request, as a JSON batch: up to `MAX_ENTRIES` certificates in one call,
the re-check after the first confirmation that Act §19(4) asks of a 署名検証者 (a group
answers its members' re-checks, §20(1), §21(3), from what it receives). Each entry names a
certificate by issuer id + serial (hexadecimal) or by the certificate itself (DER,
base64; its issuer is found by name and authority key identifier); the answer lists,
in the request's order, per entry:

- ``good``, ``revoked`` (with the revocation time, the RFC 5280 reason, the legal
  category (失効事由) and its article for the certificate's family) or ``unknown``, as
  OCSP would answer (`responder.flow`): an expired, never revoked certificate is
  ``good``; a record erased after its retention (Ord §70(1)(iii)) is ``revoked`` with
  no reason when the time was kept, else ``unknown``; a group appliance's store
  (CRL-import mode) answers for a serial its CRLs do not list what its OCSP answers,
  ``[group] unlisted`` (``good`` by default, docs/operations.md);
- ``refused`` with the rule and article when the party may not receive that family
  (per entry, not per call: Act §18(1), §37(1), the agreement 取決め);
- a 特定利用者証明検証者証明符号 (Act §38-3: a certificate of the token issuer, family
  ``verifier-token``) answered as OCSP answers it (`responder.policy.decide_token_status`):
  to any party whose provision runs, whatever families its agreement names (a token exists
  to be shown to others and carries nothing personal), and never counted: its status is no
  失効情報 of Act §18(1) or §37(1), no provision the ledger counts (帳簿, Act §40). A group
  appliance's store, which imports the Act's families' CRLs only, answers ``unknown`` for a
  token it does not hold (never ``[group] unlisted``), as its OCSP does;
- ``unavailable`` (rule ``stale``) when the answer could be wrong: the issuer's data is
  past the nextUpdate the builder promised, a group appliance's store holds no CRL of the
  issuer, or a 30-day lapse (Act §31(2)) is due and not yet written. OCSP answers tryLater
  in each case; a batch never answers ``good`` there.

and, for the whole answer, the store's commit sequence and commit time it reflects.

Counted in the ledger (帳簿, Act §40) one provision per answered entry (good, revoked or
unknown) about the Act's families, per service (sign or auth), the unit a fee per provision
would use (Act §67); refused and unavailable entries, and a token's status, are not
provisions. The call itself is one request in the
quotas and in ``jpkiva_requests_total{endpoint="v1-status"}``.

Bad input (400, nothing counted): malformed JSON, an unknown field, no entries or more than
`MAX_ENTRIES`, an entry with both or neither form, a serial over 20 octets, an issuer id we
do not serve, a certificate that does not parse or whose issuer we do not serve; the
problem names the field (``$.entries[7].issuer``), never its value.

The lookup is built for 10,000 entries in a few tens of milliseconds: msgspec decodes the
request into frozen Structs, per-issuer facts (key prefix, family, service, the party's
permit) are resolved once per call, each entry costs one `StoreReader.status` read, and
the answers that carry no per-certificate data (good, unknown, refused per family) are
shared instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.reader import StoreReader, never_fed
from responder import policy
from responder.config import ResponderConfig
from responder.registry.vocabulary import Service
from responder.v1 import problem
from responder.v1.certref import IssuerIndex, from_certificate
from responder.v1.route import Context, Reply, Route
from responder.v1.wire import CertRef, Problem, StoreRef, first_bad_serial

MAX_ENTRIES: Final = 10_000
"""Entries per call (issue 12: a bank re-checks thousands of customers at once)."""

StatusName = Literal["good", "revoked", "unknown", "refused", "unavailable"]

REASON_NAMES: Final = {
    Reason.UNSPECIFIED: "unspecified",
    Reason.KEY_COMPROMISE: "keyCompromise",
    Reason.CA_COMPROMISE: "cACompromise",
    Reason.AFFILIATION_CHANGED: "affiliationChanged",
    Reason.SUPERSEDED: "superseded",
    Reason.CESSATION_OF_OPERATION: "cessationOfOperation",
    Reason.CERTIFICATE_HOLD: "certificateHold",
    Reason.REMOVE_FROM_CRL: "removeFromCRL",
    Reason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    Reason.AA_COMPROMISE: "aACompromise",
}
"""RFC 5280 §5.3.1 CRLReason names."""
_REASONS: Final = frozenset(int(r) for r in Reason)
_SERIAL_END: Final = 1 << (8 * sf.SERIAL_BYTES)
_LAPSE_FAMILIES: Final = frozenset({Family.AUTH_CARD, Family.AUTH_MOBILE})
_STALE: Final = "stale"
_ONE_FORM: Final = "name a certificate by issuer and serial, or by certificate"
_TOKEN_ARTICLE: Final = "Act §38-3(2)"
"""What a token's stale entry cites: the 機構's provision of the code."""


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The certificates to check, in the order the answer follows."""

    entries: Annotated[
        list[CertRef],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_ENTRIES,
            examples=[
                [
                    {"issuer": "sign-card-g2", "serial": "1a2b3c"},
                    {"issuer": "auth-card-g1", "serial": "10"},
                ]
            ],
        ),
    ]


class EntryRefusal(msgspec.Struct, frozen=True, gc=False):
    """Why one entry was not answered: the policy rule and its article."""

    rule: str
    article: str


class EntryStatus(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False, rename="camel"
):
    """One certificate's status (the fields after ``status`` only when they apply)."""

    status: StatusName
    family: Family | None = None
    """The certificate's family, once its issuer is known."""
    revoked_at: datetime | None = None
    """When it lost effect (revoked, or revoked and erased with the time kept)."""
    reason: str | None = None
    """RFC 5280 §5.3.1 CRLReason name (``keyCompromise`` ...)."""
    category: Category | None = None
    """The legal category of the revocation (失効事由)."""
    article: str | None = None
    """The article of the Act defining that category for this family (``Act §11``)."""
    refusal: EntryRefusal | None = None
    """For ``refused`` and ``unavailable``: the rule and its article."""


class StatusResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The entries' statuses in the request's order, and the store state they reflect."""

    store: StoreRef
    produced_at: datetime
    entries: list[EntryStatus]


@dataclass(frozen=True, slots=True)
class _Issuer:
    """What one call needs of an issuer generation, resolved once."""

    slot: int
    """Its position in the call's tally of answered entries."""
    prefix: bytes
    family: Family
    service: Service | None
    """None for the token issuer (Act §38-3): its entries are no provision."""
    fresh_until: int
    never_fed: bool
    """A group store holding no CRL of it (`crlbuilder.store.reader.never_fed`): unavailable."""
    lapses: bool
    """A family a 30-day lapse revokes (auth), whose good answers need `lapse_due`."""
    refused: EntryStatus | None
    good: EntryStatus
    unknown: EntryStatus
    unavailable: EntryStatus
    revoked: dict[tuple[int, int], tuple[str, Category | None, str | None]]
    """(reason, category code) -> (reason name, category, article): decoded once per call."""

    def revocation(self, reason: int, category: int) -> tuple[str, Category | None, str | None]:
        key = (reason, category)
        got = self.revoked.get(key)
        if got is None:
            cat = Category.from_code(category) if category else None
            name = (
                REASON_NAMES.get(Reason(reason), "unspecified")
                if reason in _REASONS
                else "unspecified"
            )
            got = self.revoked[key] = (name, cat, cat.articles.get(self.family) if cat else None)
        return got


@dataclass(frozen=True, slots=True)
class Env:
    """What every call of one worker shares: the certificates' issuer index, and whether a
    serial on no imported CRL is ``good`` (``[group] unlisted``)."""

    index: IssuerIndex
    unlisted_good: bool


def setup(config: ResponderConfig) -> Env:
    return Env(IssuerIndex(), config.group.unlisted == "good")


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _issuers(reader: StoreReader, ctx: Context) -> dict[str, _Issuer]:
    out: dict[str, _Issuer] = {}
    for slot, meta in enumerate(reader.issuers()):
        family = meta.family
        service: Service | None
        refusal: policy.Refused | None
        if family.is_jpki:
            service = policy.service_for_ocsp(family)
            refusal = ctx.permit(service, family)
        else:  # the token issuer (Act §38-3): no 失効情報 of §18(1), §37(1); as OCSP answers
            service = None
            verdict = policy.decide_token_status(ctx.party, now=ctx.now)
            refusal = verdict if isinstance(verdict, policy.Refused) else None
        fresh = reader.promised_next_update(meta.index)
        out[meta.id] = _Issuer(
            slot=slot,
            prefix=sf.issuer_prefix(meta.index),
            family=family,
            service=service,
            fresh_until=fresh,
            never_fed=family.is_jpki and never_fed(reader, meta.index),
            lapses=family in _LAPSE_FAMILIES,
            refused=(
                EntryStatus(
                    status="refused",
                    family=family,
                    refusal=EntryRefusal(refusal.rule.value, refusal.article),
                )
                if refusal is not None
                else None
            ),
            good=EntryStatus(status="good", family=family),
            unknown=EntryStatus(status="unknown", family=family),
            unavailable=EntryStatus(
                status="unavailable",
                family=family,
                refusal=EntryRefusal(_STALE, service.article if service else _TOKEN_ARTICLE),
            ),
            revoked={},
        )
    return out


def handle(request: StatusRequest, ctx: Context) -> Reply[StatusResponse] | Problem:
    """The batch's answer (see the module docstring)."""
    refs = request.entries
    bad = first_bad_serial(refs)
    if bad is not None:
        return problem.bad_input(f"$.entries[{bad}].serial", "not a hexadecimal serial number")
    reader = ctx.reader
    now = int(ctx.now)
    issuers = _issuers(reader, ctx)
    crl_import = reader.crl_import()
    status = reader.status
    lapse_due = reader.lapse_due
    entries: list[EntryStatus] = []
    append = entries.append
    tally = [0] * len(issuers)
    env = ctx.env
    assert isinstance(env, Env)
    unlisted_good = crl_import and env.unlisted_good  # the Act's families only (a token: no)
    for i, ref in enumerate(refs):
        if ref.certificate is None:
            if ref.issuer is None or ref.serial is None:
                return problem.bad_input(f"$.entries[{i}]", _ONE_FORM)
            issuer_id, serial = ref.issuer, int(ref.serial, 16)
        else:
            if ref.issuer is not None or ref.serial is not None:
                return problem.bad_input(f"$.entries[{i}]", _ONE_FORM)
            got = from_certificate(ref, f"$.entries[{i}]", env.index, reader)
            if isinstance(got, Problem):
                return got
            issuer_id, serial = got
        issuer = issuers.get(issuer_id)
        if issuer is None:
            field = "certificate" if ref.certificate is not None else "issuer"
            return problem.bad_input(f"$.entries[{i}].{field}", "not an issuer served here")
        if issuer.refused is not None:
            append(issuer.refused)
            continue
        if issuer.never_fed or 0 < issuer.fresh_until <= now:
            append(issuer.unavailable)
            continue
        if 0 < serial < _SERIAL_END:
            st = status(issuer.prefix + serial.to_bytes(sf.SERIAL_BYTES))
        else:
            st = None
        if st is None:
            unlisted = unlisted_good and issuer.service is not None and 0 < serial < _SERIAL_END
            entry = issuer.good if unlisted else issuer.unknown
        elif st.state == sf.STATE_GOOD:
            if issuer.lapses:
                due = lapse_due(st)
                if due and due <= now:  # due, not yet written (Act §31(2), §34(1)(2))
                    append(issuer.unavailable)
                    continue
            entry = issuer.good
        elif st.state == sf.STATE_REVOKED:
            reason, category, article = issuer.revocation(st.reason, st.category)
            entry = EntryStatus(
                status="revoked",
                family=issuer.family,
                revoked_at=_at(st.revoked_at),
                reason=reason,
                category=category,
                article=article,
            )
        elif st.revoked_at:  # erased after retention, the time kept (Ord §70(1)(iii))
            entry = EntryStatus(
                status="revoked", family=issuer.family, revoked_at=_at(st.revoked_at)
            )
        else:
            entry = issuer.unknown
        append(entry)
        tally[issuer.slot] += 1
    counts: dict[Service, int] = {}
    families: set[Family] = set()
    for issuer in issuers.values():
        n = tally[issuer.slot]
        if n:
            if issuer.service is not None:  # a token's status: no provision
                counts[issuer.service] = counts.get(issuer.service, 0) + n
            families.add(issuer.family)
    committed = reader.committed_at()
    body = StatusResponse(
        store=StoreRef(
            commit=reader.generation().commit,
            committed_at=_at(committed) if committed else None,
        ),
        produced_at=_at(now),
        entries=entries,
    )
    family = next(iter(families)).value if len(families) == 1 else ""
    return Reply(body, tuple(counts.items()), family)


ROUTE: Final = Route(
    method="POST",
    path="/v1/status",
    name="status",
    summary="Batch status (現況確認): revocation information on request, Act §18(1), §37(1)",
    description=__doc__ or "",
    request=StatusRequest,
    response=StatusResponse,
    services=(Service.SIGN_REVOCATION_INFO, Service.AUTH_REVOCATION_INFO),
    handler=handle,
    setup=setup,
    threaded=True,  # the env's IssuerIndex only swaps whole tables; the rest is per call
)
