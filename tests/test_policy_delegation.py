"""The access decision (`responder.policy.decide`) for a principal that delegated its whole
verification work to a certified contractor (電子署名等確認業務委託者, Ord §29, §60): served
under the agreement that counts for it, refused when the contractor's certification lapses
or the contractor is suspended, and needing its own agreement where the contractor is not a
verifier of that kind."""

from __future__ import annotations

from datetime import UTC, datetime

from crlbuilder.model import Family
from responder.limits import Limit
from responder.policy import ALLOWED, Refused, Rule, decide, limit_refusal
from responder.registry.party import Party, day_end
from responder.registry.vocabulary import Method, Service
from tests.test_registry import NOW, build, text
from tests.test_registry_delegation import (
    AUTH_AGREEMENT,
    CERTIFIED_UNTIL,
    contractor,
    principal,
    sign_only,
)

SIGN = (Service.SIGN_REVOCATION_INFO, Family.SIGN_CARD, Method.OCSP)
CRL = (Service.SIGN_CRL_FILE, Family.SIGN_MOBILE, Method.CRL_FILE)
AUTH = (Service.AUTH_REVOCATION_INFO, Family.AUTH_CARD, Method.OCSP)
JSON = (Service.SIGN_REVOCATION_INFO, Family.SIGN_MOBILE, Method.JSON)
CSER = (Service.CORRESPONDING_SERIAL, Family.SIGN_CARD, Method.JSON)


def city(*parties: dict[str, object]) -> Party:
    return build(text(*parties)).parties["city"]


def rule(
    party: Party, service: Service, family: Family, method: Method, now: float = NOW
) -> tuple[Rule, str] | None:
    got = decide(party, service=service, family=family, method=method, now=now)
    if got is ALLOWED:
        return None
    assert isinstance(got, Refused)
    return got.rule, got.article


def test_served_under_the_contractors_agreement() -> None:
    """Ord §29(4), §60(2): no agreement of its own, the principal receives what the
    contractor's agreement names, by its methods and families, and nothing else."""
    p = city(contractor(), principal())
    for what in (SIGN, CRL, AUTH, JSON, CSER):
        assert rule(p, *what) is None, what
    narrow = contractor()
    narrow["agreement"] = {
        **narrow["agreement"],
        "services": ["sign-revocation-info", "auth-revocation-info"],
        "methods": ["ocsp"],
    }
    p = city(narrow, principal())
    assert rule(p, *SIGN) is None and rule(p, *AUTH) is None
    # the contractor's agreement names no CRL file, no JSON: the principal gets neither; the
    # refusal names the provision that made that agreement the principal's
    assert rule(p, *CRL) == (Rule.UNAUTHORIZED_SERVICE, "Act §17(4), Ord §29(4)")
    assert rule(p, *JSON) == (Rule.UNAUTHORIZED_METHOD, "Ord §31(1)")
    assert limit_refusal(p, Service.AUTH_REVOCATION_INFO, Limit.DAY).article == (
        "Act §36(2), Ord §60(2)"
    )


def test_refused_once_the_contractors_certification_lapses() -> None:
    """Ord §29(1): deemed certified while the contractor is; the day after its
    certified_until every service is refused as ended, its own agreement or not."""
    last_second = day_end(CERTIFIED_UNTIL) - 1
    for p in (city(contractor(), principal()),
              city(sign_only(contractor()), {**principal(), "agreement": AUTH_AGREEMENT})):  # fmt: skip
        assert rule(p, *SIGN, now=last_second) is None
        for what in (SIGN, AUTH, CRL):
            assert rule(p, *what, now=last_second + 1) == (Rule.ENDED, "Ord §29(1)"), what
        got = decide(p, service=SIGN[0], family=SIGN[1], method=SIGN[2], now=last_second + 1)
        assert isinstance(got, Refused) and "contractor" in got.detail


def test_refused_while_the_contractor_is_suspended() -> None:
    """A suspension of the contractor (Act §18(6), §37(4)) stops what it does for its
    principals, on the side it concerns, under its article, while it lasts."""
    since = datetime(2025, 6, 1, tzinfo=UTC)
    stop = {"article": "Act §37(4)(1)", "since": since, "reason": "breach",
            "until": datetime(2025, 6, 2, tzinfo=UTC)}  # fmt: skip
    p = city(contractor(suspension=[stop]), principal())
    assert rule(p, *AUTH) == (Rule.SUSPENDED, "Act §37(4)(1)")
    got = decide(p, service=AUTH[0], family=AUTH[1], method=AUTH[2], now=NOW)
    assert isinstance(got, Refused) and "contractor" in got.detail
    assert rule(p, *SIGN) is None  # not carried over: the sign side goes on
    assert rule(p, *AUTH, now=datetime(2025, 6, 2, tzinfo=UTC).timestamp()) is None  # lifted
    p = city(contractor(suspension=[stop | {"carry_over": True}]), principal())
    assert rule(p, *SIGN) == (Rule.SUSPENDED, "Act §18(6)(6)")
    # the contractor's own refusal is worded as its own
    acme = build(text(contractor(suspension=[stop]), principal())).parties["acme"]
    got = decide(acme, service=AUTH[0], family=AUTH[1], method=AUTH[2], now=NOW)
    assert isinstance(got, Refused) and "contractor" not in got.detail


def test_a_contractor_without_the_title_leaves_the_principal_its_own_agreement() -> None:
    """A contractor that is a 署名検証者 only deems no agreement for the principal's
    利用者証明検証者 title (Ord §60(2)): the principal's own agreement counts for that side,
    whose content decides (here: no auth mobile family), and its refusals cite Act §36(2)
    alone; the sign side is the contractor's agreement, deemed (Ord §29(4))."""
    own = principal()
    own["agreement"] = {
        "services": ["auth-revocation-info"],
        "families": ["auth-card"],
        "methods": ["ocsp"],
        "liability": "its own",
    }
    p = city(sign_only(contractor()), own)
    assert p.agreement_holder == "acme"
    assert rule(p, *SIGN) is None and rule(p, *AUTH) is None
    assert rule(p, Service.AUTH_REVOCATION_INFO, Family.AUTH_MOBILE, Method.OCSP) == (
        Rule.UNAUTHORIZED_FAMILY,
        "Act §36(2)",
    )
    assert rule(p, Service.AUTH_CRL_FILE, Family.AUTH_CARD, Method.CRL_FILE) == (
        Rule.UNAUTHORIZED_SERVICE,
        "Act §36(2)",
    )
    assert rule(p, *CRL) is None
    narrow = sign_only(contractor())
    narrow["agreement"] = {**narrow["agreement"], "services": ["sign-revocation-info"],
                           "methods": ["ocsp"]}  # fmt: skip
    p = city(narrow, own)
    assert rule(p, *CRL) == (Rule.UNAUTHORIZED_SERVICE, "Act §17(4), Ord §29(4)")
