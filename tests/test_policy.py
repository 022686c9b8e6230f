"""The access decision (`responder.policy.decide`) against the Act, title by title.

The expectations below are written from the Act's text (who receives which
service, about which certificates, by which method), independently of the
tables in `responder.registry`, so a wrong table there fails here.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crlbuilder.model import Family
from responder.policy import (
    ALLOWED,
    Refused,
    Rule,
    cycle_refusal,
    decide,
    quota_refusal,
    service_for_crl,
    service_for_ocsp,
)
from responder.registry.lookup import Registry
from responder.registry.party import Party
from responder.registry.schema import parse_registry, toml_dumps
from responder.registry.vocabulary import Method, Service, Title

SIG = Title.SIGNATURE_VERIFIER
GRP = Title.GROUP_SIGNATURE_VERIFIER
USR = Title.USER_VERIFIER
SPC = Title.SPECIFIED_USER_VERIFIER
MEM = Title.SIGNATURE_CONFIRMER

# Who receives each service, from the Act's text.
WHO: dict[str, list[set[Title]]] = {
    "sign-revocation-info": [{SIG}, {GRP}],  # §18(1): 署名検証者等 (署名検証者 or 団体署名検証者)
    "sign-crl-file": [{SIG}, {GRP}],  # §18(2): 署名検証者等
    "sign-record-info": [{SIG}, {GRP}],  # §18(3): 署名検証者等
    "corresponding-sign-serial": [{SIG}],  # §18(4): 署名検証者 only
    "corresponding-serial": [{SIG, USR}],  # §18(5): a 署名検証者 that is a 利用者証明検証者
    "auth-revocation-info": [{USR}],  # §37(1)
    "auth-crl-file": [{USR}],  # §37(2)
    "corresponding-auth-serial": [{USR}],  # §37(3)
    "specified-verifier-token": [{SPC}],  # §38-3(2)
    # §19(1): the 署名検証者's confirmation; a group's for its members (§20(1), §21(1)):
    # the member itself only through its group
    "validation": [{SIG}, {GRP}],
}
# What certificates each service is about.
SIGN = {"sign-card", "sign-mobile"}
AUTH = {"auth-card", "auth-mobile"}
ABOUT: dict[str, set[str | None]] = {
    "sign-revocation-info": {*SIGN},
    "sign-crl-file": {*SIGN},
    "sign-record-info": {*SIGN},
    "corresponding-sign-serial": {*SIGN},  # card <-> mobile sign (§18(4) items 1, 2)
    "corresponding-serial": {"sign-card", "auth-card"},  # card sign <-> card auth (§18(5))
    "auth-revocation-info": {*AUTH},
    "auth-crl-file": {*AUTH},
    "corresponding-auth-serial": {*AUTH},
    "specified-verifier-token": {None},
    "validation": {*SIGN},
}
# How each service is carried.
BY: dict[str, set[str]] = {
    "sign-revocation-info": {"ocsp", "json"},
    "sign-crl-file": {"crl-file"},
    "sign-record-info": {"json"},
    "corresponding-sign-serial": {"json"},
    "corresponding-serial": {"json"},
    "auth-revocation-info": {"ocsp", "json"},
    "auth-crl-file": {"crl-file"},
    "corresponding-auth-serial": {"json"},
    "specified-verifier-token": {"json"},
    "validation": {"json"},
}
ARTICLE = {
    "sign-revocation-info": "Act §18(1)",
    "sign-crl-file": "Act §18(2)",
    "sign-record-info": "Act §18(3)",
    "corresponding-sign-serial": "Act §18(4)",
    "corresponding-serial": "Act §18(5)",
    "auth-revocation-info": "Act §37(1)",
    "auth-crl-file": "Act §37(2)",
    "corresponding-auth-serial": "Act §37(3)",
    "specified-verifier-token": "Act §38-3(2)",
    "validation": "Act §19(1), §21(1)",
}
FAMILIES: list[str | None] = [f.value for f in Family] + [None]
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()


def title_table(t: Title) -> dict[str, Any]:
    if t in (SIG, USR):
        return {"kind": t.value, "category": 4}
    if t is GRP:
        return {"kind": t.value, "group_kind": 1, "member_prefix": "m-"}
    if t is SPC:
        return {"kind": t.value, "approved": date(2020, 1, 1)}
    return {"kind": t.value, "group": "g"}


def party_table(
    pid: str, titles: set[Title], *, services: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A [[party]] granted, by default, every service its titles receive according to WHO."""
    table: dict[str, Any] = {
        "id": pid,
        "name": f"party {pid}",
        "title": [title_table(t) for t in sorted(titles, key=list(Title).index)],
        "credential": [{"kind": "token", "token_sha256": hashlib.sha256(pid.encode()).hexdigest()}],
    }
    if titles == {MEM}:
        return table | extra
    if services is None:
        services = [s for s, who in WHO.items() if any(w <= titles for w in who)]
    fams = {f for s in services for f in ABOUT[s] if f is not None}
    table["notification"] = {
        "address": "somewhere",
        "office": "an office",
        "representative": "someone",
        "start": date(2024, 4, 1),
    }
    table["agreement"] = {
        "services": services,
        "families": sorted(fams),
        "methods": sorted({m for s in services for m in BY[s]}),
        "liability": "as agreed",
    } | ({"member_answer": "by OCSP"} if GRP in titles else {})
    return table | extra


def build(*tables: dict[str, Any]) -> Registry:
    text = toml_dumps({"version": 2, "party": list(tables)})
    return Registry.build(
        parse_registry(text, source="t.toml"), base=Path(), source="t.toml", now=NOW
    )


def one(table: dict[str, Any], *others: dict[str, Any]) -> Party:
    return build(table, *others).parties[table["id"]]


TITLE_SETS = [{SIG}, {GRP}, {USR}, {USR, SPC}, {SIG, USR}, {SIG, USR, SPC}, {GRP, USR}, {MEM}]


@pytest.mark.parametrize("titles", TITLE_SETS, ids=lambda ts: "+".join(sorted(t.value for t in ts)))
def test_matrix_every_title_service_family_method(titles: set[Title]) -> None:
    """Each title (set) × service × family × method: allowed exactly as the Act says."""
    tables = [party_table("p", titles)]
    if MEM in titles:
        tables.append(party_table("g", {GRP}))
        tables[1]["title"][0]["member_prefix"] = "p"
    party = one(*tables)
    decided = 0
    for service, family, method in itertools.product(Service, FAMILIES, Method):
        fam = Family(family) if family else None
        got = decide(party, service=service, family=fam, method=method, now=NOW)
        s = service.value
        if not any(w <= titles for w in WHO[s]):
            assert isinstance(got, Refused) and got.rule is Rule.UNAUTHORIZED_SERVICE, (s, got)
            # the law, not the agreement, refuses it (a member: its group answers it, §20(1))
            assert got.article == ("Act §20(1)" if titles == {MEM} else ARTICLE[s]), (s, got)
        elif family not in ABOUT[s]:
            assert isinstance(got, Refused) and got.rule is Rule.UNAUTHORIZED_FAMILY, (
                s,
                family,
                got,
            )
        elif method.value not in BY[s]:
            assert isinstance(got, Refused) and got.rule is Rule.UNAUTHORIZED_METHOD, (
                s,
                method,
                got,
            )
        else:
            assert got is ALLOWED, (s, family, method, got)
        decided += 1
    assert decided == len(Service) * len(FAMILIES) * len(Method)


def test_refusal_articles_name_the_act() -> None:
    auth = one(party_table("a", {USR}))
    got = decide(
        auth,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert got == Refused(
        Rule.UNAUTHORIZED_SERVICE, "Act §18(1)", got.detail if isinstance(got, Refused) else ""
    )
    sig = one(party_table("s", {SIG}))
    got = decide(
        sig,
        service=Service.CORRESPONDING_SERIAL,
        family=Family.SIGN_CARD,
        method=Method.JSON,
        now=NOW,
    )
    assert isinstance(got, Refused) and got.article == "Act §18(5)"
    group = one(party_table("g", {GRP}))
    got = decide(
        group,
        service=Service.CORRESPONDING_SIGN_SERIAL,
        family=Family.SIGN_CARD,
        method=Method.JSON,
        now=NOW,
    )
    assert isinstance(got, Refused) and got.article == "Act §18(4)"
    member = one(party_table("m-1", {MEM}), party_table("g", {GRP}))
    got = decide(
        member,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert isinstance(got, Refused) and got.article == "Act §20(1)"
    assert got.rule is Rule.UNAUTHORIZED_SERVICE


def test_agreement_narrower_than_the_title() -> None:
    """The agreement (取決め) limits services, families and methods within what the title allows."""
    t = party_table("b", {SIG, USR}, services=["sign-revocation-info"])
    t["agreement"] |= {"families": ["sign-card"], "methods": ["ocsp"]}
    party = one(t)
    ok = decide(
        party,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert ok is ALLOWED
    cases = [
        (
            Service.AUTH_REVOCATION_INFO,
            Family.AUTH_CARD,
            Method.OCSP,
            Rule.UNAUTHORIZED_SERVICE,
            "Act §36(2)",
        ),
        (
            Service.SIGN_CRL_FILE,
            Family.SIGN_CARD,
            Method.CRL_FILE,
            Rule.UNAUTHORIZED_SERVICE,
            "Act §17(4)",
        ),
        (
            Service.SIGN_REVOCATION_INFO,
            Family.SIGN_MOBILE,
            Method.OCSP,
            Rule.UNAUTHORIZED_FAMILY,
            "Act §17(4)",
        ),
        (
            Service.SIGN_REVOCATION_INFO,
            Family.SIGN_CARD,
            Method.JSON,
            Rule.UNAUTHORIZED_METHOD,
            "Ord §31(1)",
        ),
        (
            Service.SIGN_REVOCATION_INFO,
            Family.AUTH_CARD,
            Method.OCSP,
            Rule.UNAUTHORIZED_FAMILY,
            "Act §18(1)",
        ),
        (
            Service.SIGN_REVOCATION_INFO,
            Family.SIGN_CARD,
            Method.CRL_FILE,
            Rule.UNAUTHORIZED_METHOD,
            "Act §18(1)",
        ),
    ]
    for service, family, method, rule, article in cases:
        got = decide(party, service=service, family=family, method=method, now=NOW)
        assert isinstance(got, Refused), (service, family, method)
        assert (got.rule, got.article) == (rule, article), (service, family, method, got)


def test_unauthenticated_not_started_ended() -> None:
    got = decide(
        None,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert isinstance(got, Refused) and got.rule is Rule.UNAUTHENTICATED
    t = party_table("s", {SIG})
    t["notification"]["start"] = date(2025, 6, 2)  # tomorrow in Japan
    party = one(t)
    args: dict[str, Any] = {
        "service": Service.SIGN_REVOCATION_INFO,
        "family": Family.SIGN_CARD,
        "method": Method.OCSP,
    }
    got = decide(party, **args, now=NOW)
    assert isinstance(got, Refused) and (got.rule, got.article) == (Rule.NOT_STARTED, "Ord §30(3)")
    # the start date is a Japan day: 2025-06-02 00:00 JST is 2025-06-01 15:00 UTC
    assert decide(party, **args, now=datetime(2025, 6, 1, 15, tzinfo=UTC).timestamp()) is ALLOWED
    assert isinstance(
        decide(party, **args, now=datetime(2025, 6, 1, 14, 59, 59, tzinfo=UTC).timestamp()), Refused
    )
    t = party_table(
        "s",
        {SIG},
        ended={
            "at": datetime(2025, 6, 1, 13, tzinfo=UTC),
            "reason": "withdrew",
            "article": "Act §17(3)",
        },
    )
    party = one(t)
    assert decide(party, **args, now=NOW) is ALLOWED  # an end in the future: still served
    got = decide(party, **args, now=NOW + 3600)
    assert isinstance(got, Refused) and (got.rule, got.article) == (Rule.ENDED, "Act §17(3)")


def test_certification_lapse_ends_the_title_it_rests_on() -> None:
    """Act §17(2): a category 5/6 certification lapses unless renewed; only that title's services stop."""
    t = party_table("b", {SIG, USR})
    t["title"][0] |= {"category": 6, "certified_until": date(2025, 5, 31)}  # signature-verifier
    party = one(t)
    got = decide(
        party,
        service=Service.SIGN_REVOCATION_INFO,
        family=Family.SIGN_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert isinstance(got, Refused) and (got.rule, got.article) == (Rule.ENDED, "Act §17(2)")
    got = decide(
        party,
        service=Service.CORRESPONDING_SERIAL,
        family=Family.AUTH_CARD,
        method=Method.JSON,
        now=NOW,
    )
    assert isinstance(got, Refused) and got.rule is Rule.ENDED  # §18(5) needs both titles
    ok = decide(
        party,
        service=Service.AUTH_REVOCATION_INFO,
        family=Family.AUTH_CARD,
        method=Method.OCSP,
        now=NOW,
    )
    assert ok is ALLOWED
    # the last certified day itself is still inside (a Japan day)
    day = datetime(2025, 5, 31, 14, 59, tzinfo=UTC).timestamp()
    assert (
        decide(
            party,
            service=Service.SIGN_REVOCATION_INFO,
            family=Family.SIGN_CARD,
            method=Method.OCSP,
            now=day,
        )
        is ALLOWED
    )


def _suspend(
    table: dict[str, Any], article: str, *, carry: bool = False, hours: int | None = None
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "article": article,
        "since": datetime(2025, 6, 1, tzinfo=UTC),
        "reason": "breach",
    }
    if carry:
        s["carry_over"] = True
    if hours is not None:
        s["until"] = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=hours)
    table["suspension"] = [*table.get("suspension", []), s]
    return table


def _rule(
    party: Party, service: Service, family: Family | None, method: Method, now: float = NOW
) -> tuple[Rule, str] | None:
    got = decide(party, service=service, family=family, method=method, now=now)
    return None if got is ALLOWED else (got.rule, got.article) if isinstance(got, Refused) else None


def test_suspension_and_carry_over() -> None:
    sign = (Service.SIGN_REVOCATION_INFO, Family.SIGN_CARD, Method.OCSP)
    crl = (Service.SIGN_CRL_FILE, Family.SIGN_MOBILE, Method.CRL_FILE)
    auth = (Service.AUTH_REVOCATION_INFO, Family.AUTH_CARD, Method.OCSP)
    cser = (Service.CORRESPONDING_SERIAL, Family.SIGN_CARD, Method.JSON)
    # a sign-side suspension stops the sign services only
    p = one(_suspend(party_table("b", {SIG, USR}), "Act §18(6)(1)"))
    assert _rule(p, *sign) == _rule(p, *crl) == _rule(p, *cser) == (Rule.SUSPENDED, "Act §18(6)(1)")
    assert _rule(p, *auth) is None
    # carried over (Act §37(4)(6)): the auth services stop too, under that article
    p = one(_suspend(party_table("b", {SIG, USR}), "Act §18(6)(1)", carry=True))
    assert _rule(p, *auth) == (Rule.SUSPENDED, "Act §37(4)(6)")
    # an auth suspension carried over stops the sign side under Act §18(6)(6)
    p = one(_suspend(party_table("b", {SIG, USR}), "Act §37(4)(2)", carry=True))
    assert _rule(p, *auth) == (Rule.SUSPENDED, "Act §37(4)(2)")
    assert _rule(p, *sign) == (Rule.SUSPENDED, "Act §18(6)(6)")
    # a group's members broke the rules (Act §18(7)): §18(1)-(3) stop for the group
    p = one(_suspend(party_table("g", {GRP}), "Act §18(7)(1)"))
    assert _rule(p, *sign) == (Rule.SUSPENDED, "Act §18(7)(1)")
    # resumed (until set): served again afterwards, refused inside the window
    p = one(_suspend(party_table("s", {SIG}), "Act §18(6)(3)", hours=2))
    assert _rule(p, *sign, now=NOW) is None  # NOW is 12:00 UTC, the window ended at 02:00
    assert _rule(p, *sign, now=datetime(2025, 6, 1, 1, tzinfo=UTC).timestamp()) == (
        Rule.SUSPENDED,
        "Act §18(6)(3)",
    )
    assert p.state(NOW).value == "active"
    assert p.state(datetime(2025, 6, 1, 1, tzinfo=UTC).timestamp()).value == "suspended"


def test_ocsp_and_crl_map_to_their_services() -> None:
    assert service_for_ocsp(Family.SIGN_CARD) is Service.SIGN_REVOCATION_INFO
    assert service_for_ocsp(Family.SIGN_MOBILE) is Service.SIGN_REVOCATION_INFO
    assert service_for_ocsp(Family.AUTH_CARD) is Service.AUTH_REVOCATION_INFO
    assert service_for_ocsp(Family.AUTH_MOBILE) is Service.AUTH_REVOCATION_INFO
    assert service_for_crl(Family.SIGN_MOBILE) is Service.SIGN_CRL_FILE
    assert service_for_crl(Family.AUTH_CARD) is Service.AUTH_CRL_FILE


def test_quota_and_cycle_refusals() -> None:
    sig = one(party_table("s", {SIG}))
    grp = one(party_table("g", {GRP}))
    usr = one(party_table("u", {USR}))
    assert quota_refusal(sig, Service.SIGN_REVOCATION_INFO, per="day").rule is Rule.QUOTA
    assert quota_refusal(usr, Service.AUTH_REVOCATION_INFO, per="second").article == "Act §36(2)"
    assert cycle_refusal(sig, Service.SIGN_CRL_FILE) == Refused(
        Rule.CYCLE, "Ord §31(2)", cycle_refusal(sig, Service.SIGN_CRL_FILE).detail
    )
    assert cycle_refusal(grp, Service.SIGN_CRL_FILE).article == "Ord §33(2)"
    assert cycle_refusal(usr, Service.AUTH_CRL_FILE).article == "Ord §62(2)"
    assert {r.value for r in Rule} >= {
        "unauthenticated",
        "not-started",
        "ended",
        "suspended",
        "unauthorized_service",
        "unauthorized_family",
        "unauthorized_method",
        "quota",
        "cycle",
    }


def test_a_refusal_carries_no_data() -> None:
    """Only the rule, an article and a fixed text: nothing about the party or a certificate."""
    t = party_table("s", {SIG})
    t["name"] = "株式会社テスト銀行"
    t["notification"]["address"] = "東京都千代田区一丁目"
    party = one(_suspend(t, "Act §18(6)(2)"))
    details = set()
    for service, family, method in itertools.product(Service, FAMILIES, Method):
        got = decide(
            party,
            service=service,
            family=Family(family) if family else None,
            method=method,
            now=NOW,
        )
        assert isinstance(got, Refused)
        assert set(got.__struct_fields__) == {"rule", "article", "detail"}
        assert "テスト銀行" not in got.detail and "千代田" not in got.detail and got.detail != "s"
        details.add(got.detail)
    assert len(details) <= 4  # fixed texts, not built from the request
