"""Delegation of the whole verification work to a certified contractor (Ord §29, §60): the
registry's checks refuse what the law does not allow, naming the field, and build the
principal's party with the agreement, certification and suspensions that count for it
(`responder.registry.delegation`)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from crlbuilder.model import Family
from responder.limits import Limit, LimitsTable
from responder.quotagauges import QuotaCollector
from responder.registry.party import day_end, day_start
from responder.registry.vocabulary import Service, Title
from tests.test_registry import NOW, build, group, refused, text, verifier

CERTIFIED_UNTIL = date(2026, 3, 31)
"""The contractor's certification (認定) ends with this Japan day (NOW is 2025-06-01)."""


def contractor(pid: str = "acme", **over: Any) -> dict[str, Any]:
    """A body certified under Act §17(1) item 6, 署名検証者 and 利用者証明検証者 itself."""
    t = verifier(pid)
    t["title"] = [
        {"kind": "signature-verifier", "category": 6, "certified_until": CERTIFIED_UNTIL},
        {"kind": "user-verifier", "category": 6, "certified_until": CERTIFIED_UNTIL},
    ]
    t["agreement"] = {**t["agreement"], "requests_per_day": 1000, "provisions_per_day": 500}
    t.update(over)
    return t


def principal(pid: str = "city", to: str = "acme", **over: Any) -> dict[str, Any]:
    """A 電子署名等確認業務委託者: both verifier titles delegated to ``to``, no agreement of its
    own, its notification filed by the contractor (Ord §29(3), §60(1))."""
    t = verifier(pid)
    del t["agreement"]
    t["notification"] = {**t["notification"], "filed_by": to}
    t["title"] = [
        {"kind": "signature-verifier", "category": 6, "delegated_to": to},
        {"kind": "user-verifier", "category": 6, "delegated_to": to},
    ]
    t.update(over)
    return t


def sign_only(t: dict[str, Any]) -> dict[str, Any]:
    """``t`` with its user-verifier title (and the services resting on it) taken away."""
    t = copy.deepcopy(t)
    t["title"] = [x for x in t["title"] if x["kind"] == "signature-verifier"]
    if "agreement" in t:
        t["agreement"] = {
            **t["agreement"],
            "services": ["sign-revocation-info", "sign-crl-file"],
            "families": ["sign-card", "sign-mobile"],
        }
    return t


def test_a_principal_without_an_agreement_has_its_contractors() -> None:
    """Ord §29(4), §60(2): the contractor's agreement is deemed the principal's: the same
    grants, families, quotas and cycle; its quotas counted under the contractor's id."""
    reg = build(text(contractor(), principal()))
    acme, city = reg.parties["acme"], reg.parties["city"]
    assert city.contractor == "acme" and city.agreement_holder == "acme"
    assert city.quota_id == "acme" and acme.quota_id == "acme"
    assert (
        set(city.grants)
        == set(acme.grants)
        == {
            Service.SIGN_REVOCATION_INFO,
            Service.SIGN_CRL_FILE,
            Service.CORRESPONDING_SERIAL,
            Service.AUTH_REVOCATION_INFO,
        }
    )
    assert city.families == acme.families == set(Family) - {Family.SPECIFIED_VERIFIER_TOKEN}
    assert (city.requests_per_second, city.requests_per_day, city.provisions_per_day) == (
        100,
        1000,
        500,
    )
    assert city.crl_cycle_seconds == 3600
    assert city.may_receive(Family.AUTH_MOBILE, NOW)
    assert acme.contractor is None and acme.agreement_holder is None
    # the file's order does not matter: the principal may come before its contractor
    assert build(text(principal(), contractor())).parties["city"] == city


def test_the_deemed_agreement_gives_what_the_principals_titles_receive() -> None:
    """A principal that is a 署名検証者 only gets the contractor's sign services, never its
    auth ones nor corresponding-serial (Act §18(5) needs both titles)."""
    city = build(text(contractor(), sign_only(principal()))).parties["city"]
    assert set(city.grants) == {Service.SIGN_REVOCATION_INFO, Service.SIGN_CRL_FILE}
    assert city.families == {Family.SIGN_CARD, Family.SIGN_MOBILE}


AUTH_AGREEMENT: dict[str, Any] = {
    "services": ["auth-revocation-info", "auth-crl-file"],
    "families": ["auth-card", "auth-mobile"],
    "methods": ["ocsp", "crl-file"],
    "requests_per_second": 7,
    "provisions_per_day": 900,
    "crl_cycle_seconds": 7200,
    "liability": "its own",
}
"""A principal's own agreement for its 利用者証明検証者 title only (Act §36(2))."""


def test_an_agreement_of_its_own_where_the_contractors_is_deemed_does_not_count() -> None:
    """Ord §29(4), §60(2) deem the contractor's agreement the principal's (みなす: by law,
    whatever else was agreed): what an agreement of the principal's own names on a side the
    contractor's covers is not served under it, and a warning names the party, the field,
    the services and the way out."""
    narrow = {**AUTH_AGREEMENT, "services": ["sign-revocation-info"], "families": ["sign-card"],
              "methods": ["ocsp"]}  # fmt: skip
    reg = build(text(contractor(), {**principal(), "agreement": narrow}))
    city = reg.parties["city"]
    assert city.deemed == {Title.SIGNATURE_VERIFIER, Title.USER_VERIFIER}
    # the contractor's grant, not the principal's narrower one
    assert city.grants[Service.SIGN_REVOCATION_INFO].families == {
        Family.SIGN_CARD,
        Family.SIGN_MOBILE,
    }
    (warning,) = reg.warnings
    assert (
        "party 'city': agreement.services: sign-revocation-info: its contractor 'acme'" in warning
    )
    assert "Ord §29(4)" in warning and "--drop-agreement" in warning
    # nor its own for the auth side, when the contractor is a 利用者証明検証者 too
    (warning,) = build(text(contractor(), {**principal(), "agreement": AUTH_AGREEMENT})).warnings
    assert "agreement.services: auth-crl-file, auth-revocation-info" in warning
    assert "Ord §60(2)" in warning


def test_a_principal_of_a_sign_only_contractor_has_one_agreement_per_side() -> None:
    """A contractor that is a 署名検証者 only: the sign side is agreed by its agreement, deemed
    the principal's (Ord §29(4)); the auth side by the principal's own (Act §36(2)). The
    quotas are the tighter of the two, counted under the contractor's id (the contractor's
    systems make every request); the cycle the longer."""
    acme = sign_only(contractor())
    city = build(text(acme, {**principal(), "agreement": AUTH_AGREEMENT})).parties["city"]
    assert city.agreement_holder == "acme" and city.quota_id == "acme"
    assert city.deemed == {Title.SIGNATURE_VERIFIER}
    assert set(city.grants) == {
        Service.SIGN_REVOCATION_INFO,
        Service.SIGN_CRL_FILE,
        Service.AUTH_REVOCATION_INFO,
        Service.AUTH_CRL_FILE,
    }
    assert city.grants[Service.SIGN_CRL_FILE].families == {Family.SIGN_CARD, Family.SIGN_MOBILE}
    assert (city.requests_per_second, city.requests_per_day, city.provisions_per_day) == (
        7,
        1000,
        500,
    )
    assert city.crl_cycle_seconds == 7200
    # the auth side rests on the contractor's one certification, shown on its sign title
    assert city.grants[Service.AUTH_REVOCATION_INFO].until == day_end(CERTIFIED_UNTIL)


def test_the_deemed_certification_ends_with_the_contractors() -> None:
    """Ord §29(1): the principal is deemed certified while its contractor is: every grant
    ends with the contractor's certified_until, with its own agreement too."""
    end = day_end(CERTIFIED_UNTIL)
    for c, p in ((contractor(), principal()),
                 (sign_only(contractor()), {**principal(), "agreement": AUTH_AGREEMENT})):  # fmt: skip
        city = build(text(c, p)).parties["city"]
        assert {g.until for g in city.grants.values()} == {end}
        assert city.may_receive(Family.SIGN_CARD, end - 1)
        assert not city.may_receive(Family.SIGN_CARD, end)
        # the file loads once the day has passed (time refuses no file), saying so
        assert build(text(c, p), now=end - 1).warnings == ()
        (warning,) = build(text(c, p), now=end).warnings
        assert "party 'city': its contractor 'acme'" in warning and "Ord §29(1)" in warning


def test_a_contractor_ends_only_once_its_principals_end_or_move() -> None:
    """A contractor's end of provision ends the deemed certification its principals rest on
    (Ord §29(1)): a file whose contractor ends while a principal naming it goes on is refused,
    naming the principal, the field and the way out; ended with it (or before), it loads."""
    at = datetime(2025, 7, 1, tzinfo=UTC)
    ended = {"at": at, "reason": "notification withdrawn"}
    acme = contractor(ended=ended)
    msg = refused(text(acme, principal()))
    assert "party 'city': ended: its contractor 'acme' ends at 2025-07-01" in msg
    assert "registry end city" in msg and "--no-delegation" in msg
    later = {**ended, "at": datetime(2025, 7, 2, tzinfo=UTC)}
    assert "party 'city': ended:" in refused(text(acme, principal(ended=later)))
    city = build(text(acme, principal(ended=ended))).parties["city"]
    assert city.end == at.timestamp()
    assert {g.until for g in city.grants.values()} == {at.timestamp()}


def test_a_principal_starts_no_earlier_than_its_contractor() -> None:
    """The contractor's systems do the principal's whole work (Ord §29(1)): a principal whose
    notified start is before its contractor's is refused, naming the field."""
    late = contractor()
    late["notification"] = {**late["notification"], "start": date(2025, 4, 2)}
    early = principal()
    early["notification"] = {**early["notification"], "start": date(2025, 4, 1)}
    msg = refused(text(late, early))
    assert "party 'city': notification.start: 2025-04-01 is before its contractor 'acme'" in msg
    same = {**early, "notification": {**early["notification"], "start": date(2025, 4, 2)}}
    assert build(text(late, same)).parties["city"].start == day_start(date(2025, 4, 2))


def test_the_contractors_suspension_stops_its_principals_same_side() -> None:
    """A suspension of the contractor (Act §18(6)) stops what it does for its principals on
    that side, under its article; its carry-over (Act §18(6)(6)) reaches the other side."""
    since = datetime(2025, 5, 1, tzinfo=UTC)
    susp = {"article": "Act §18(6)(1)", "since": since, "reason": "breach"}
    city = build(text(contractor(suspension=[susp]), principal())).parties["city"]
    (w,) = city.suspensions
    assert w.via == "acme" and w.article == "Act §18(6)(1)" and w.since == since.timestamp()
    assert Service.SIGN_REVOCATION_INFO in w.services
    assert not city.may_receive(Family.SIGN_CARD, NOW)
    assert city.may_receive(Family.AUTH_CARD, NOW)
    # a sign-only contractor's suspension stops the sign side; the auth side, agreed by the
    # principal itself, goes on (the 機構 may suspend the principal itself, as any party)
    own = {**principal(), "agreement": AUTH_AGREEMENT}
    city = build(text(sign_only(contractor(suspension=[susp])), own)).parties["city"]
    assert city.deemed == {Title.SIGNATURE_VERIFIER}
    assert not city.may_receive(Family.SIGN_CARD, NOW) and city.may_receive(Family.AUTH_CARD, NOW)
    carried = build(text(contractor(suspension=[{**susp, "carry_over": True}]), principal()))
    city = carried.parties["city"]
    assert {w.article for w in city.suspensions} == {"Act §18(6)(1)", "Act §37(4)(6)"}
    assert not city.may_receive(Family.AUTH_CARD, NOW)
    # a principal that did not delegate the auth side: the contractor's auth suspension
    # (carried from the sign side) is none of its business
    city = build(text(contractor(suspension=[susp | {"carry_over": True}]),
                      sign_only(principal()))).parties["city"]  # fmt: skip
    assert {w.article for w in city.suspensions} == {"Act §18(6)(1)"}


def test_a_contractor_without_the_title_deems_no_agreement_for_it() -> None:
    """Ord §60(2) deems the contractor's agreement the principal's only when the contractor
    is a 利用者証明検証者 itself: otherwise the principal needs its own agreement."""
    acme = sign_only(contractor())
    msg = refused(text(acme, principal()))
    assert "party 'city': agreement: required" in msg
    assert "'acme' is not a 利用者証明検証者" in msg and "Ord §60(2)" in msg


def _titles(t: dict[str, Any], **over: Any) -> dict[str, Any]:
    t = copy.deepcopy(t)
    for title in t["title"]:
        title.update(over)
    return t


REFUSALS: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    ("no such contractor", [principal(to="nobody")],
     ["party 'city': title.delegated_to: 'nobody' is not a registered party"]),
    ("its own contractor", [principal(to="city")],
     ["title.delegated_to: a party is not its own contractor"]),
    ("contractor not certified under item 6", [verifier("acme"), principal()],
     ["'acme' is not certified under Act §17(1) item 6"]),
    ("contractor delegating in turn", [contractor("big"), principal("acme", to="big"),
                                       principal()],
     ["party 'city': title.delegated_to: 'acme' delegates its own work to 'big'", "one level"]),
    ("contractor a group", [contractor(title=[
        {"kind": "signature-verifier", "category": 6, "certified_until": CERTIFIED_UNTIL},
        {"kind": "group-signature-verifier", "group_kind": 1, "member_prefix": "m-"}]),
        principal()],
     ["'acme' holds a group or member title"]),
    ("two contractors", [contractor(), contractor("other"), {**principal(), "title": [
        {"kind": "signature-verifier", "category": 6, "delegated_to": "acme"},
        {"kind": "user-verifier", "category": 6, "delegated_to": "other"}]}],
     ["title[1].delegated_to: the whole 電子署名等確認業務 is entrusted to one contractor",
      "name 'acme'"]),
    ("one title not delegated", [contractor(), {**principal(), "title": [
        {"kind": "signature-verifier", "category": 6, "delegated_to": "acme"},
        {"kind": "user-verifier", "category": 6, "certified_until": CERTIFIED_UNTIL}]}],
     ["title[1].delegated_to: the whole 電子署名等確認業務"]),
    ("principal of category 4", [contractor(), _titles(principal(), category=4)],
     ["title[0].delegated_to: only a party deemed certified under Act §17(1) item 6",
      "category 4"]),
    ("principal with its own certification", [
        contractor(), _titles(principal(), certified_until=CERTIFIED_UNTIL)],
     ["title[0].certified_until: a delegated title has no certification of its own"]),
    ("filed by another", [contractor(), contractor("other"), {**principal(), "notification": {
        **principal()["notification"], "filed_by": "other"}}],
     ["notification.filed_by: 'other' is not this party's contractor ('acme')",
      "Ord §29(3), §60(1)"]),
    ("filed by a contractor without delegation", [contractor(), {**verifier("city"),
        "notification": {**verifier("city")["notification"], "filed_by": "acme"}}],
     ["party 'city': notification.filed_by: only a contractor", "delegates its work to none"]),
    ("principal holding a group title", [contractor(), {**group("city"), "title": [
        {"kind": "signature-verifier", "category": 6, "delegated_to": "acme"},
        {"kind": "group-signature-verifier", "group_kind": 1, "member_prefix": "m-"}]}],
     ["party 'city': title[1]: a party that delegates its verification work",
      "holds no group or member title"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("parties", "needles"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused_naming_the_field(parties: list[dict[str, Any]], needles: list[str]) -> None:
    msg = refused(text(*parties))
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_the_principals_requests_count_against_the_contractors_quotas(tmp_path: Path) -> None:
    """The deemed agreement's quotas are shared: what the contractor's systems ask for the
    principal and for themselves is one count (`responder.limits`, `Party.quota_id`)."""
    acme = contractor()
    acme["agreement"] = {**acme["agreement"], "requests_per_day": 3, "provisions_per_day": 5}
    reg = build(text(acme, principal()))
    a, c = reg.parties["acme"], reg.parties["city"]
    table = LimitsTable(tmp_path / "limits.tbl", 1, 0)
    try:
        assert table.admit(a, NOW) is None and table.admit(c, NOW) is None
        assert table.admit(c, NOW + 1) is None
        refusal = table.admit(a, NOW + 2)
        assert refusal is not None and refusal.limit is Limit.DAY
        assert table.take_provisions(c, 4, NOW) == NOW
        assert table.provisions_left(a, NOW) == 1
        # the CRL cycle stays the recipient's own: each principal receives its copy
        assert table.admit_crl(a, 0, "full", NOW) is None
        assert table.admit_crl(c, 0, "full", NOW) is None
        refused_crl = table.admit_crl(c, 0, "full", NOW + 1)
        assert refused_crl is not None and refused_crl.limit is Limit.CYCLE
        # the gauges show the shared remainder under each of them
        gauges = {
            f.name: {s.labels["party"]: s.value for s in f.samples}
            for f in QuotaCollector(lambda: reg, table, clock=lambda: NOW + 2).collect()
        }
        assert gauges["jpkiva_quota_remaining"] == {"acme": 0, "city": 0}
        assert gauges["jpkiva_provisions_remaining"] == {"acme": 1, "city": 1}
    finally:
        table.close()
