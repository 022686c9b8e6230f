"""Who a group appliance answers (団体署名検証者, Act §20): `responder.policy.decide_member`, in process.

The full member × family × service × method matrix against the Act's text: a group
answers its own members (署名確認者, Act §20(1)) about signature certificates only, and
passes on 特定署名用電子証明書記録情報 (Act §20(4),(5)); nobody else, never an auth
certificate. A member refused under Act §20(2) / §20(6) (`responder registry suspend`)
is refused with that article; a member of another group, a 署名検証者 and a member of
a group missing from the registry are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from crlbuilder.model import Family
from responder.policy import ALLOWED, Refused, Rule, decide, decide_member
from responder.registry.vocabulary import Method, Service
from tests.test_policy import GRP, MEM, NOW, SIG, build, party_table

GROUP = "g"


def group_table(
    pid: str = GROUP, *, services: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return party_table(pid, {GRP}, services=services, **extra)


def member(pid: str, group: str = GROUP, item: int | None = None, **extra: Any) -> dict[str, Any]:
    title: dict[str, Any] = {"kind": "signature-confirmer", "group": group}
    if item is not None:
        title["item"] = item
    return party_table(pid, {MEM}, title=[title], **extra)


def suspension(article: str) -> dict[str, Any]:
    return {
        "article": article,
        "since": datetime.fromtimestamp(NOW - 60, UTC),
        "reason": "the member broke the purpose rule",
    }


REGISTRY = build(
    group_table(),
    member("m-1"),
    member("m-2", suspension=[suspension("Act §20(2)(1)")]),
    member("m-3", suspension=[suspension("Act §20(6)(2)")]),
    group_table(
        "h", title=[{"kind": "group-signature-verifier", "group_kind": 2, "members": ["x-1"]}]
    ),
    member("x-1", group="h"),
    party_table("s", {SIG}),
)


def verdict(party: str, service: Service, family: Family | None, method: Method) -> Any:
    return decide_member(
        REGISTRY.parties[party], GROUP, REGISTRY.parties.get(GROUP),
        service=service, family=family, method=method, now=NOW,
    )  # fmt: skip


@pytest.mark.parametrize("service", list(Service), ids=lambda s: s.value)
@pytest.mark.parametrize("family", [*Family, None], ids=lambda f: f.value if f else "none")
@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.value)
def test_member_matrix_act_20(service: Service, family: Family | None, method: Method) -> None:
    """A member in good standing gets exactly: sign revocation info by OCSP or JSON (§20(1)),
    sign record info by JSON (§20(4),(5)), the validation of a signature by JSON (§20(1),
    §21(1): POST /v1/verify on the group's appliance), about a signature certificate."""
    want = (
        (service is Service.SIGN_REVOCATION_INFO and method in (Method.OCSP, Method.JSON))
        or (service is Service.SIGN_RECORD_INFO and method is Method.JSON)
        or (service is Service.VALIDATION and method is Method.JSON)
    ) and family in (Family.SIGN_CARD, Family.SIGN_MOBILE)
    got = verdict("m-1", service, family, method)
    assert (got is ALLOWED) == want, got
    if not want:
        assert isinstance(got, Refused) and got.article.startswith("Act §")


def test_auth_certificate_refused_for_a_member() -> None:
    got = verdict("m-1", Service.SIGN_REVOCATION_INFO, Family.AUTH_CARD, Method.OCSP)
    assert isinstance(got, Refused)
    assert (got.rule, got.article) == (Rule.UNAUTHORIZED_FAMILY, "Act §20(1)")


@pytest.mark.parametrize("who", ["x-1", "s", "h"])
def test_only_the_groups_own_members_act_20_1(who: str) -> None:
    """A member of another group, a 署名検証者, another group: unauthorized, Act §20(1)."""
    got = verdict(who, Service.SIGN_REVOCATION_INFO, Family.SIGN_CARD, Method.OCSP)
    assert isinstance(got, Refused)
    assert (got.rule, got.article) == (Rule.UNAUTHORIZED_SERVICE, "Act §20(1)")


def test_refused_member_act_20_2_and_20_6() -> None:
    """§20(2) stops the answers (§20(1)) only; §20(6) the record information (§20(5)) only."""
    got = verdict("m-2", Service.SIGN_REVOCATION_INFO, Family.SIGN_CARD, Method.OCSP)
    assert isinstance(got, Refused) and (got.rule, got.article) == (
        Rule.SUSPENDED,
        "Act §20(2)(1)",
    )
    assert verdict("m-2", Service.SIGN_RECORD_INFO, Family.SIGN_CARD, Method.JSON) is ALLOWED
    # the validation of a signature is the §20(1) answer with the signature checked too
    got = verdict("m-2", Service.VALIDATION, Family.SIGN_CARD, Method.JSON)
    assert isinstance(got, Refused) and got.article == "Act §20(2)(1)"
    assert verdict("m-3", Service.VALIDATION, Family.SIGN_CARD, Method.JSON) is ALLOWED
    got = verdict("m-3", Service.SIGN_RECORD_INFO, Family.SIGN_MOBILE, Method.JSON)
    assert isinstance(got, Refused) and got.article == "Act §20(6)(2)"
    assert verdict("m-3", Service.SIGN_REVOCATION_INFO, Family.SIGN_CARD, Method.OCSP) is ALLOWED


def test_group_missing_or_without_the_service() -> None:
    """The group's entry is what members' answers rest on: absent, nothing is answered; a
    group whose agreement lacks record information cannot pass it on (Act §17(6))."""
    m = REGISTRY.parties["m-1"]
    got = decide_member(
        m, GROUP, None, service=Service.SIGN_REVOCATION_INFO, family=Family.SIGN_CARD,
        method=Method.OCSP, now=NOW,
    )  # fmt: skip
    assert isinstance(got, Refused) and got.article == "Act §17(5)"
    narrow = build(group_table(services=["sign-crl-file"]), member("m-1"))
    args: dict[str, Any] = {"family": Family.SIGN_CARD, "now": NOW}
    g, m = narrow.parties[GROUP], narrow.parties["m-1"]
    ok = decide_member(
        m, GROUP, g, service=Service.SIGN_REVOCATION_INFO, method=Method.OCSP, **args
    )
    assert ok is ALLOWED  # the answer rests on the CRL files (Act §20(1))
    got = decide_member(m, GROUP, g, service=Service.SIGN_RECORD_INFO, method=Method.JSON, **args)
    assert isinstance(got, Refused) and got.article == "Act §17(6)"


def test_the_kikou_still_refuses_members() -> None:
    """On the 機構's appliance (no group mode) a member is answered by nobody (Act §20(1))."""
    got = decide(
        REGISTRY.parties["m-1"], service=Service.SIGN_REVOCATION_INFO, family=Family.SIGN_CARD,
        method=Method.OCSP, now=NOW,
    )  # fmt: skip
    assert isinstance(got, Refused) and got.article == "Act §20(1)"


def test_suspension_article_for_a_member_needs_a_member() -> None:
    """'Act §20(2)(N)' applies to a 署名確認者 only; 'Act §20(2)(9)' is no item of §18(7)."""
    from responder.registry.schema import RegistryError

    with pytest.raises(RegistryError, match="suspension"):
        build(group_table(), party_table("s", {SIG}, suspension=[suspension("Act §20(2)(1)")]))
    with pytest.raises(RegistryError, match="Act §20"):
        build(group_table(), member("m-1", suspension=[suspension("Act §20(2)(9)")]))


def test_a_member_has_its_groups_item_act_17_5() -> None:
    """A member registered with an item (Act §17(5), §21(1)) has its group's."""
    from responder.registry.schema import RegistryError

    ok = build(group_table(), member("m-1", item=1))
    assert ok.parties["m-1"].group == GROUP
    with pytest.raises(RegistryError, match=r"item"):
        build(group_table(), member("m-1", item=2))


@pytest.mark.parametrize("article", ["Act §18(7)(1)", "Act §18(6)(1)"])
def test_the_groups_own_suspension_leaves_the_answers_act_20_1(article: str) -> None:
    """The 機構's stop of its provision to the group (Act §18(6),(7)) stops what the 機構
    provides from then on; the group still answers its members from the CRL files it already
    received (Act §20(1): 提供を受けた...を基に), until their nextUpdate passes (tryLater, the
    store's freshness). Only §20(2) lets it refuse, a member at a time. 特定署名用電子証明書記録情報
    is asked of the 機構 at the member's request (§20(4)), which provides it no more: refused."""
    stopped = build(group_table(suspension=[suspension(article)]), member("m-1"))
    g, m = stopped.parties[GROUP], stopped.parties["m-1"]
    args: dict[str, Any] = {"family": Family.SIGN_CARD, "now": NOW}
    for service in (Service.SIGN_REVOCATION_INFO, Service.VALIDATION):
        method = Method.OCSP if service is Service.SIGN_REVOCATION_INFO else Method.JSON
        assert decide_member(m, GROUP, g, service=service, method=method, **args) is ALLOWED
    got = decide_member(m, GROUP, g, service=Service.SIGN_RECORD_INFO, method=Method.JSON, **args)
    assert isinstance(got, Refused) and (got.rule, got.article) == (Rule.SUSPENDED, article)
