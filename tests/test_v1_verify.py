"""POST /v1/verify in process: the dispatcher's gate for the validation service and the batch
(Act §19(1), §21(1)), over a `MemoryReader`; nothing here starts a process.

Who may ask (the agreement's ``validation`` service, sign families, method json), what is
counted in the ledger (帳簿, Act §40: one per item whose status was read), the receipt (a
detached JWS over the exact body, with the store commit inside), 413 for a document over
the configured limit, 400 for bad JSON, and a per-item result for anything that decodes.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from crlbuilder.keys.signer import PemSigner
from crlbuilder.model import Category, Family, Reason
from responder.config import ResponderConfig, V1Config
from responder.http import Request, Response
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.v1 import verify as v1verify
from responder.v1.jws import AnswerSigner
from responder.v1.jws import verify as verify_jws
from responder.v1.routes import SIGNATURE_HEADER, V1Api
from tests.support.pki import make_ca
from tests.support.signing import Jpki, cms_signed, der, pkcs1, xml_signed
from tests.support.written import written
from tests.test_policy import GRP, MEM, NOW, SIG, USR, build, party_table
from tests.test_v1_status import Ledger, Quotas

DOC = "申請書".encode()
SERIAL = 0x77


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.fixture(scope="module")
def answer_signer() -> AnswerSigner:
    ca = make_ca("answer signer")
    assert not isinstance(ca.key, type(None))
    return AnswerSigner(PemSigner(ca.key, ca.cert))  # type: ignore[arg-type]


def registry() -> Registry:
    card_only = party_table("card-only", {SIG}, services=["validation"])
    card_only["agreement"]["families"] = ["sign-card"]
    return build(
        party_table("sig", {SIG}),
        party_table("usr", {USR}),
        party_table("g", {GRP}),
        party_table("m-1", {MEM}),
        party_table("status-only", {SIG}, services=["sign-revocation-info"]),
        card_only,
    )


class Api:
    def __init__(
        self, j: Jpki, signer: AnswerSigner | None = None, config: ResponderConfig | None = None
    ) -> None:
        self.ledger = Ledger()
        self.api = V1Api(
            (v1verify.ROUTE,), config or ResponderConfig(), store=j.reader, quota=Quotas(),
            ledger=self.ledger, signer=signer,
        )  # fmt: skip
        self.registry = registry()
        self.last: Request | None = None

    def call(self, body: bytes | object, party: str = "sig") -> tuple[Response, Any]:
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        headers = {
            b"content-type": b"application/json",
            b"authorization": b"Bearer " + party.encode(),
        }
        req = Request(b"POST", b"/v1/verify", headers, raw, ("127.0.0.1", 1), None, b"1.1", True, 1)
        self.last = req
        resp = written(self.api.handle(req, self.registry, NOW))
        return resp, msgspec.json.decode(bytes(resp.body))


@pytest.fixture
def pki() -> Jpki:
    return Jpki.make()


def three(j: Jpki, family: Family = Family.SIGN_CARD, serial: int = SERIAL) -> list[dict[str, Any]]:
    """One good signature per format over DOC."""
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    cert = j.issue(family, serial, not_before=start)
    return [
        {
            "format": "pkcs1",
            "certificate": b64(der(cert)),
            "signature": b64(pkcs1(DOC)),
            "data": b64(DOC),
        },
        {"format": "cms", "cms": b64(cms_signed(DOC, cert, detached=True)), "content": b64(DOC)},
        {"format": "xmldsig", "xml": b64(xml_signed(cert))},
    ]


def test_a_signature_verifier_verifies_three_formats_act_19_1(
    pki: Jpki, answer_signer: AnswerSigner
) -> None:
    api = Api(pki, answer_signer)
    resp, got = api.call({"items": three(pki)})
    assert resp.status == 200, got
    assert [r["result"] for r in got["results"]] == ["ok", "ok", "ok"]
    assert [r["format"] for r in got["results"]] == ["pkcs1", "cms", "xmldsig"]
    assert got["store"]["commit"] == 7 and got["checkedAt"]
    # 帳簿 (Act §40): one provision per item whose status was read
    assert api.ledger.counted == [("sig", Service.VALIDATION, Method.JSON, 3)]
    assert api.last is not None and api.last.note is not None
    assert api.last.note.endpoint == "v1-verify" and api.last.note.family == "sign-card"
    # the receipt: a detached JWS over the exact body, carrying the store commit
    signature = dict(resp.extra_headers)[SIGNATURE_HEADER]
    header = verify_jws(signature, bytes(resp.body), answer_signer_cert(answer_signer))
    assert header["alg"] == "RS256"


def answer_signer_cert(signer: AnswerSigner) -> Any:
    from cryptography import x509

    return x509.load_der_x509_certificate(base64.b64decode(signer.header["x5c"][0]))


def test_a_group_verifies_for_its_members_act_20_1(pki: Jpki) -> None:
    api = Api(pki)
    resp, got = api.call({"items": three(pki)}, party="g")
    assert resp.status == 200 and {r["result"] for r in got["results"]} == {"ok"}
    assert api.ledger.counted == [("g", Service.VALIDATION, Method.JSON, 3)]


@pytest.mark.parametrize(
    ("party", "article"),
    [
        ("usr", "Act §19(1), §21(1)"),  # a 利用者証明検証者 receives no sign information
        ("m-1", "Act §20(1)"),  # a 署名確認者 is answered by its group, not by the 機構
        ("status-only", "Act §17(4)"),  # the agreement (取決め) does not name validation
    ],
)
def test_parties_without_the_service_are_refused_403(pki: Jpki, party: str, article: str) -> None:
    api = Api(pki)
    resp, got = api.call({"items": three(pki)}, party=party)
    assert resp.status == 403, got
    assert got["article"] == article and got["rule"] == "unauthorized_service"
    assert api.ledger.counted == []


def test_a_family_outside_the_agreement_is_refused_per_item(pki: Jpki) -> None:
    api = Api(pki)
    items = three(pki)[:1] + three(pki, Family.SIGN_MOBILE, SERIAL + 1)[:1]
    resp, got = api.call({"items": items}, party="card-only")
    assert resp.status == 200
    ok, refused = got["results"]
    assert ok["result"] == "ok"
    assert refused["result"] == "refused" and refused["refusal"]["rule"] == "unauthorized_family"
    assert "statusNow" not in refused and "facts" not in refused
    assert api.ledger.counted == [("card-only", Service.VALIDATION, Method.JSON, 1)]


def test_auth_certificates_and_bad_items_are_per_item_and_not_counted(pki: Jpki) -> None:
    api = Api(pki)
    items = [
        *three(pki, Family.AUTH_CARD)[:1],
        {"format": "cms", "cms": b64(b"0\x80garbage")},
        {
            "format": "pkcs1",
            "certificate": b64(b"\x01"),
            "signature": b64(b"\x02"),
            "data": b64(DOC),
        },
        {"format": "xmldsig", "xml": b64(b"<not-xml")},
    ]
    resp, got = api.call({"items": items})
    assert resp.status == 200
    assert [r["result"] for r in got["results"]] == [
        "not-a-sign-certificate",
        "malformed",
        "malformed",
        "malformed",
    ]
    assert all("Traceback" not in r["detail"] for r in got["results"])
    assert api.ledger.counted == []


def test_revocation_detail_in_the_answer(pki: Jpki) -> None:
    from datetime import UTC, datetime

    items = three(pki)[:1]
    cert = pki.issue(
        Family.SIGN_CARD, SERIAL, not_before=datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    )
    pki.put_status(cert, Family.SIGN_CARD, revoked_at=datetime.fromtimestamp(NOW, UTC) - timedelta(days=1),
                   category=Category.RESIDENT_CHANGE, reason=Reason.AFFILIATION_CHANGED)  # fmt: skip
    _, got = Api(pki).call({"items": items})
    r = got["results"][0]
    assert r["result"] == "revoked"
    assert (
        r["statusNow"]["category"] == "resident-change" and r["statusNow"]["article"] == "Act §12"
    )
    assert r["statusAtSigning"]["status"] == "revoked"


def test_a_document_over_the_configured_limit_is_413(pki: Jpki) -> None:
    config = ResponderConfig(v1=V1Config(verify_max_document_bytes=8192))
    api = Api(pki, config=config)
    items = three(pki)
    items[1]["content"] = b64(b"x" * 8193)
    resp, got = api.call({"items": items})
    assert resp.status == 413 and got["rule"] == "too_large"
    assert got["field"] == "$.items[1].content"
    assert api.ledger.counted == []


def test_the_xml_items_of_a_call_share_one_canonicalisation_budget(
    pki: Jpki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound is per call, not per item: a thousand items each under its own budget
    would still hold the worker a thousand times as long. With a budget of one and a half
    documents' work, the second XML item is unsupported and the batch goes on."""
    from lxml import etree

    from responder.validation import xmldsig

    items = three(pki)
    xml = base64.b64decode(items[2]["xml"])
    cost = xmldsig.work(etree.fromstring(xml))
    monkeypatch.setattr(v1verify, "XmlBudget", lambda: xmldsig.XmlBudget(cost * 3 // 2))
    resp, got = Api(pki).call({"items": [items[2], items[2], items[0]]})
    assert resp.status == 200, got
    assert [r["result"] for r in got["results"]] == ["ok", "unsupported", "ok"], got
    assert "canonicalisation work" in got["results"][1]["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        {"items": []},
        {"items": [{"format": "pkcs1"}]},
        {"items": [{"format": "cms", "cms": "AA==", "extra": 1}]},
        {"items": [{"format": "cms", "cms": "AA=="}] * 1001},
    ],
)
def test_bad_requests_are_400_naming_the_field(pki: Jpki, body: object) -> None:
    api = Api(pki)
    resp, got = api.call(body)
    assert resp.status == 400 and got["rule"] == "bad_input", got
    assert api.ledger.counted == []


def test_on_a_group_appliance_its_members_verify_act_20_1_21_1(pki: Jpki) -> None:
    """A group appliance (V1Api with ``group_id``) decides by `policy.decide_member`: its own
    member is answered (Act §20(1), §21(1)); a 署名検証者 of the 機構 is not (only members)."""
    ledger = Ledger()
    api = Api(pki)
    api.api = V1Api(
        (v1verify.ROUTE,), ResponderConfig(), store=pki.reader, quota=Quotas(), ledger=ledger,
        signer=None, group_id="g",
    )  # fmt: skip
    resp, got = api.call({"items": three(pki)}, party="m-1")
    assert resp.status == 200 and {r["result"] for r in got["results"]} == {"ok"}, got
    assert ledger.counted == [("m-1", Service.VALIDATION, Method.JSON, 3)]
    resp, got = api.call({"items": three(pki)}, party="sig")
    assert resp.status == 403 and got["article"] == "Act §20(1)"
    assert ledger.counted == [("m-1", Service.VALIDATION, Method.JSON, 3)]


def test_a_costly_verify_call_is_answered_off_the_event_loop_and_fairly(pki: Jpki) -> None:
    """A verify call's cost does not follow its body's size: one XML item of 36 KB within
    every bound took 2.7 s of a core to canonicalise (the call's budget allows about 4 s),
    1,000 raw items under 8192-bit keys 2.3 s. Answered on the event loop, such a call
    stopped every other connection of the worker (OCSP included) for as long. A call with
    an XML item, or with more than LOOP_ITEMS items, goes to the batch thread, fed per
    party in a fair queue: a party whose share is taken gets 429 ``fair_share``, nothing
    counted. A call of a few raw or CMS items (~0.5 ms each) stays on the loop."""
    import asyncio
    from datetime import UTC, datetime

    from responder.signing import SigningPool
    from responder.v1.routes import THREAD_BYTES, Done

    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    cert = pki.issue(Family.SIGN_CARD, SERIAL + 9, not_before=start)
    detached = {  # xmlsec1 reads the supplied document in the batch thread too
        "format": "xmldsig",
        "xml": b64(xml_signed(cert, detached=("a.txt", DOC))),
        "documents": {"a.txt": b64(DOC)},
    }
    one_raw = three(pki)[0]
    xml_call = msgspec.json.encode({"items": [*three(pki), detached]})
    many_call = msgspec.json.encode({"items": [one_raw] * (v1verify.LOOP_ITEMS + 1)})
    few_call = msgspec.json.encode({"items": [one_raw] * v1verify.LOOP_ITEMS})
    for body in (xml_call, many_call):
        assert len(body) < THREAD_BYTES  # small: the size rule alone kept it on the loop
    api = Api(pki)
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}

    def request(body: bytes) -> Request:
        return Request(
            b"POST", b"/v1/verify", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1
        )

    async def run() -> list[Response]:
        got = [api.api.handle(request(b), api.registry, NOW) for b in (xml_call, many_call)]
        assert not isinstance(got[0], Response), "answered on the event loop"
        assert not isinstance(got[1], Response), "answered on the event loop"
        refused = api.api.handle(request(xml_call), api.registry, NOW)
        assert isinstance(refused, Response) and refused.status == 429  # the party's share
        few = api.api.handle(request(few_call), api.registry, NOW)
        assert isinstance(few, Response) and few.status == 200  # on the loop, at once
        assert api.ledger.counted == []
        return [written(await got[0]), written(await got[1]), refused, written(few)]

    try:
        xml_resp, many_resp, refused, few_resp = asyncio.run(run())
    finally:
        pool.close()
    assert msgspec.json.decode(bytes(refused.body))["rule"] == "fair_share"
    for resp, n in (
        (xml_resp, 4),
        (many_resp, v1verify.LOOP_ITEMS + 1),
        (few_resp, v1verify.LOOP_ITEMS),
    ):
        assert resp.status == 200
        results = msgspec.json.decode(bytes(resp.body))["results"]
        assert [r["result"] for r in results] == ["ok"] * n, results
    assert sorted(n for *_, n in api.ledger.counted) == sorted(
        [4, v1verify.LOOP_ITEMS + 1, v1verify.LOOP_ITEMS]
    )


def test_an_item_whose_status_the_store_cannot_vouch_for_is_not_counted_act_40(
    pki: Jpki,
) -> None:
    """帳簿 (Act §40) counts provisions of revocation information: an item answered
    ``status-unavailable`` at the signing instant and now (the issuer's data past its
    promised nextUpdate) provided none, as an ``unavailable`` entry of /v1/status is no
    provision; an item of a fresh issuer in the same call is counted."""
    items = three(pki)[:1] + three(pki, Family.SIGN_MOBILE, SERIAL + 1)[:1]
    from crlbuilder.store import format as sf

    stale = pki.metas[Family.SIGN_MOBILE].index
    pki.reader.crl_states[stale] = sf.CrlState(next_update=int(NOW) - 60)
    api = Api(pki)
    resp, got = api.call({"items": items})
    assert resp.status == 200, got
    assert [r["result"] for r in got["results"]] == ["ok", "status-unavailable"], got
    assert got["results"][1]["statusNow"]["status"] == "unavailable"
    assert api.ledger.counted == [("sig", Service.VALIDATION, Method.JSON, 1)]


def test_the_receipt_names_what_was_checked_by_its_digests(pki: Jpki) -> None:
    """The signed answer is the verifier's evidence of what was checked (docs/validation.md,
    "The receipt"): each result carries the SHA-256 of every octet string its item sent
    (certificate, signature, data or digest, cms, content, xml, each supplied document by
    its URI), so that the answer and its JWS show which document and signature were found
    ``ok``, not only which certificate. Without them, one signed ``ok`` about a serial could
    be shown beside any document. The appliance keeps none of them (Act §52)."""
    import hashlib
    from datetime import UTC, datetime

    items = three(pki)
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    cert = base64.b64decode(items[0]["certificate"])
    from tests.support.signing import xml_signed as signed_xml

    detached = {
        "format": "xmldsig",
        "xml": b64(
            signed_xml(
                pki.issue(Family.SIGN_CARD, SERIAL + 5, not_before=start), detached=("a.txt", DOC)
            )
        ),
        "documents": {"a.txt": b64(DOC)},
    }
    _, got = Api(pki).call({"items": [*items, detached]})
    assert [r["result"] for r in got["results"]] == ["ok"] * 4, got

    def h(value: str) -> str:
        return hashlib.sha256(base64.b64decode(value)).hexdigest()

    pk, cms, xml, det = got["results"]
    assert pk["received"] == {
        "certificate": hashlib.sha256(cert).hexdigest(),
        "signature": h(items[0]["signature"]),
        "data": h(items[0]["data"]),
    }
    assert cms["received"] == {"cms": h(items[1]["cms"]), "content": h(items[1]["content"])}
    assert xml["received"] == {"xml": h(items[2]["xml"])}
    assert det["received"] == {"xml": h(detached["xml"]), "documents/a.txt": h(b64(DOC))}
    # a malformed item too: what was received, whatever it was
    _, got = Api(pki).call({"items": [{"format": "cms", "cms": b64(b"0\x80garbage")}]})
    assert got["results"][0]["received"] == {"cms": hashlib.sha256(b"0\x80garbage").hexdigest()}


class _Bounded(Quotas):
    """A party with ``left`` provisions left today (`provisions_per_day`); a take past them
    is refused, as `responder.limits.LimitsTable.take_provisions` does."""

    def __init__(self, left: int) -> None:
        super().__init__()
        self.left = left

    def provisions_left(self, party: Any, now: float) -> int | None:
        return self.left

    def take_provisions(self, party: Any, n: int, now: float) -> Any:
        from responder.limits import provisions_wait

        if n > self.left:
            return provisions_wait(now, self.left)
        self.left -= n
        return now


def test_a_call_past_the_provisions_of_the_day_is_refused_before_any_rsa_work(
    pki: Jpki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """帳簿 (Act §40), 件数: with 2 provisions left today, a call of 3 genuine signatures
    was computed whole (every RSA check, on the batch thread for a larger call) and then
    refused 429 when its provisions were taken. What counts is known before any signature's
    RSA check (the statuses, not the signatures, decide it): the call is refused before
    that work. An item that will not count (a foreign CA's) does not use a provision."""
    from responder.validation import raw

    verified: list[int] = []
    real = raw.verify_pkcs1

    def spy(*args: Any, **kw: Any) -> bool:
        verified.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(raw, "verify_pkcs1", spy)
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    items = [three(pki, serial=SERIAL + n)[0] for n in range(3)]
    api = Api(pki)
    bounded = party_table("bounded", {SIG})
    bounded["agreement"]["provisions_per_day"] = 100
    api.registry = build(bounded)
    api.api.quota = _Bounded(2)
    resp, got = api.call({"items": items}, party="bounded")
    assert resp.status == 429, got
    assert got["rule"] == "quota" and got["remaining"] == 2 and got["resetsAt"]
    assert int(dict(resp.extra_headers)[b"retry-after"]) >= 1
    assert verified == [], "RSA work was done for a call refused by the provisions of the day"
    assert api.ledger.counted == []
    # two genuine items and one of a foreign CA: two count, within the bound
    foreign = Jpki.make().issue(Family.SIGN_CARD, SERIAL + 9, not_before=start)
    stray = {**items[0], "certificate": b64(der(foreign))}
    resp, got = api.call({"items": [*items[:2], stray]}, party="bounded")
    assert resp.status == 200, got
    assert [r["result"] for r in got["results"]] == ["ok", "ok", "unknown-issuer"]
    assert api.ledger.counted == [("bounded", Service.VALIDATION, Method.JSON, 2)]
    assert len(verified) == 2


def test_a_call_with_a_cms_item_in_ber_is_answered_off_the_event_loop(pki: Jpki) -> None:
    """A CMS in BER is re-encoded before it is read (`responder.validation.cms.der_of_ber`,
    up to `BER_TLVS_PER_CALL` TLVs a call, about 0.3 s): a call of a single such item goes
    to the batch thread, as an XML item does; a DER one stays on the loop."""
    from responder.validation.request import CmsItem, VerifyRequest
    from tests.test_validation import streamed

    cert = pki.issue(Family.SIGN_CARD, SERIAL)
    ber = streamed(DOC, cert, 4)
    assert v1verify._heavy(VerifyRequest(items=[CmsItem(cms=ber)]))
    assert not v1verify._heavy(VerifyRequest(items=[CmsItem(cms=cms_signed(DOC, cert))]))


def test_a_supplied_document_no_reference_names_is_malformed_not_shown_as_received(
    pki: Jpki,
) -> None:
    """The signed answer names each supplied document by its digest (``received``) beside
    the verdict: a document the signature does not cover was listed there too, so an
    ``ok`` over ``honbun.txt`` read as if ``other.pdf`` had been judged with it. A
    document no Reference names is refused (``malformed``)."""
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    cert = pki.issue(Family.SIGN_CARD, SERIAL, not_before=start)
    xml = xml_signed(cert, detached=("honbun.txt", DOC))
    item = {"format": "xmldsig", "xml": b64(xml), "documents": {"honbun.txt": b64(DOC)}}
    _, got = Api(pki).call({"items": [item]})
    assert got["results"][0]["result"] == "ok", got
    item["documents"]["other.pdf"] = b64(b"%PDF- an unsigned document")
    _, got = Api(pki).call({"items": [item]})
    result = got["results"][0]
    assert result["result"] == "malformed" and "named by no Reference" in result["detail"], got
