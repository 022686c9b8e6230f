"""POST /v1/corresponding in process: 対応署名用電子証明書の発行の番号 (Act §18(4)), 対応証明書の発行の
番号 (§18(5)) and 対応利用者証明用電子証明書の発行の番号 (§37(3)) over the `MemoryReader` population of
tests/test_v1_recordinfo.py, through the real dispatcher; nothing here starts a process."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from crlbuilder.model import Family
from crlbuilder.store import format as sf
from responder.http import Response
from responder.registry.vocabulary import Method, Service
from responder.v1.corresponding import PAIRS
from tests.support.pki import Ca
from tests.test_v1_recordinfo import (
    AC,
    AM,
    FAMILY_OF,
    SC,
    SM,
    Api,
    T,
    cas,  # noqa: F401  (the module's CA fixture)
    population,
    ref,
)


@pytest.fixture
def api(cas: dict[int, Ca]) -> Api:  # noqa: F811
    return Api(population(cas), None)  # no facts key: this route never opens the facts


def ask(api: Api, index: int, serial: int, want: Family, party: str) -> tuple[Response, Any]:
    return api.call(
        b"/v1/corresponding", {"certificate": ref(index, serial), "counterpart": want.value}, party
    )


def serials(got: Any) -> list[str]:
    return [s["serial"] for s in got["serials"]]


@pytest.mark.parametrize(
    ("index", "serial", "want", "party", "article", "expected"),
    [
        # §18(4)(1): card -> mobile sign; both of A's mobiles are within their validity, the
        # revoked one too ("revoked or not"), newest first
        (SC, 0xA2, Family.SIGN_MOBILE, "sig", "Act §18(4)(1)", ["A4", "A3"]),
        (SC, 0xA1, Family.SIGN_MOBILE, "sig", "Act §18(4)(1)", ["A4", "A3"]),
        # §18(4)(2): mobile -> card sign
        (SM, 0xA4, Family.SIGN_CARD, "sig", "Act §18(4)(2)", ["A2", "A1"]),
        # §18(5)(1), (2): card auth <-> card sign, to a party holding both titles
        (AC, 0xA5, Family.SIGN_CARD, "both", "Act §18(5)(1)", ["A2", "A1"]),
        (SC, 0xA2, Family.AUTH_CARD, "both", "Act §18(5)(2)", ["A5"]),
        # §37(3)(1), (2): card auth <-> mobile auth
        (AC, 0xA5, Family.AUTH_MOBILE, "usr", "Act §37(3)(1)", ["A6"]),
        (AM, 0xA6, Family.AUTH_CARD, "usr", "Act §37(3)(2)", ["A5"]),
        # D's old card certificate expired: its validity period has elapsed, only the new one
        (AC, 0xD5, Family.SIGN_CARD, "both", "Act §18(5)(1)", ["D2"]),
    ],
)
def test_each_item_of_the_act_gives_the_serials_whose_validity_has_not_elapsed(
    api: Api, index: int, serial: int, want: Family, party: str, article: str, expected: list[str]
) -> None:
    resp, got = ask(api, index, serial, want, party)
    assert resp.status == 200, got
    assert got["article"] == article and got["family"] == want.value
    assert serials(got) == expected
    assert {s["issuer"] for s in got["serials"]} == {f"{want.value}-g1"}
    assert got["store"]["commit"] == 42
    assert api.ledger.counted == [(party, PAIRS[(FAMILY_OF[index], want)].service, Method.JSON, 1)]


def test_no_counterpart_is_an_empty_list_and_no_provision(api: Api) -> None:
    resp, got = ask(api, SC, 0xE1, Family.SIGN_MOBILE, "sig")
    assert resp.status == 200 and got["serials"] == []
    assert api.ledger.counted == []


def test_the_counterparts_validity_bounds_it(api: Api) -> None:
    """A certificate is listed through its notAfter's own second, not after it (有効期間が経過
    していない; RFC 5280 §4.1.2.5: inclusive, `crlbuilder.validity`). It was left out in that
    second (``now < not_after``), while OCSP and the rules counted it valid."""
    a4 = sf.status_key(SM, 0xA4)
    st = api.reader.status_records[a4]
    api.reader.status_records[a4] = st._replace(not_after=T - 1)
    _, got = ask(api, SC, 0xA2, Family.SIGN_MOBILE, "sig")
    assert serials(got) == ["A3"]
    api.reader.status_records[a4] = st._replace(not_after=T)
    _, got = ask(api, SC, 0xA2, Family.SIGN_MOBILE, "sig")
    assert serials(got) == ["A4", "A3"]


@pytest.mark.parametrize(
    ("index", "serial", "want", "party", "rule", "article"),
    [
        # §18(5) only to a 署名検証者 that is also a 利用者証明検証者
        (AC, 0xA5, Family.SIGN_CARD, "sig", "unauthorized_service", "Act §18(5)"),
        (SC, 0xA2, Family.AUTH_CARD, "usr", "unauthorized_service", "Act §18(5)"),
        # §18(4) is a 署名検証者's, not a group's; §37(3) a 利用者証明検証者's
        (SC, 0xA2, Family.SIGN_MOBILE, "g", "unauthorized_service", "Act §18(4)"),
        (AC, 0xA5, Family.AUTH_MOBILE, "sig", "unauthorized_service", "Act §37(3)"),
        (SM, 0xA4, Family.SIGN_CARD, "usr", "unauthorized_service", "Act §18(4)"),
        (AC, 0xA5, Family.AUTH_MOBILE, "m-1", "unauthorized_service", "Act §20(1)"),
    ],
)
def test_who_may_ask_for_which_correspondence(
    api: Api, index: int, serial: int, want: Family, party: str, rule: str, article: str
) -> None:
    resp, got = ask(api, index, serial, want, party)
    assert resp.status == 403, got
    assert got["rule"] == rule and got["article"] == article, got
    assert api.ledger.counted == []


@pytest.mark.parametrize(
    ("index", "serial", "want"),
    [
        (SM, 0xA4, Family.AUTH_MOBILE),  # no article pairs mobile sign and mobile auth
        (SC, 0xA2, Family.SIGN_CARD),  # nor a family with itself
        (AM, 0xA6, Family.SIGN_MOBILE),
    ],
)
def test_a_pair_no_article_provides_is_bad_input(
    api: Api, index: int, serial: int, want: Family
) -> None:
    resp, got = ask(api, index, serial, want, "both")
    assert resp.status == 400 and got["field"] == "$.counterpart"
    assert api.ledger.counted == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"certificate": {"issuer": "sign-card-g1", "serial": "a2"}}, 400, "$"),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "a2"}, "counterpart": "x"}, 400, "$.counterpart"),
        ({"certificate": {"issuer": "nope-g1", "serial": "a2"}, "counterpart": "sign-mobile"}, 400, "$.certificate.issuer"),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "a9"}, "counterpart": "sign-mobile"}, 404, "$.certificate"),
        ({"certificate": {"issuer": "sign-card-g1", "serial": "-a2"}, "counterpart": "sign-mobile"}, 400, "$.certificate.serial"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(api: Api, body: object, status: int, field: str) -> None:
    resp, got = api.call(b"/v1/corresponding", msgspec.json.encode(body), "both")
    assert resp.status == status, got
    assert got["field"] == field
    assert api.ledger.counted == []


def test_a_group_appliance_store_holds_no_issuance_records(cas: dict[int, Ca]) -> None:  # noqa: F811
    reader = population(cas)
    reader.imported = True
    resp, got = ask(Api(reader, None), SC, 0xA2, Family.SIGN_MOBILE, "sig")
    assert resp.status == 503 and got["rule"] == "unavailable"


def test_every_pair_names_its_services_title_and_families() -> None:
    """The table against the Act's text: §18(4) sign card<->mobile, §18(5) card sign<->auth,
    §37(3) auth card<->mobile, and nothing else."""
    assert {(a.value, b.value): p.service for (a, b), p in PAIRS.items()} == {
        ("sign-card", "sign-mobile"): Service.CORRESPONDING_SIGN_SERIAL,
        ("sign-mobile", "sign-card"): Service.CORRESPONDING_SIGN_SERIAL,
        ("auth-card", "sign-card"): Service.CORRESPONDING_SERIAL,
        ("sign-card", "auth-card"): Service.CORRESPONDING_SERIAL,
        ("auth-card", "auth-mobile"): Service.CORRESPONDING_AUTH_SERIAL,
        ("auth-mobile", "auth-card"): Service.CORRESPONDING_AUTH_SERIAL,
    }
