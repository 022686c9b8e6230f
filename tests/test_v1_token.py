"""POST /v1/token in process: 特定利用者証明検証者証明符号 (Act §38-3) through the /v1 dispatcher.

The party, the agreement, the approval (認可, Act §38-2) and the CSR are checked before a
request is queued; the token is handed out once the builder issued it (here: a
`MemoryDesk` and a `MemoryReader` stand for the directories and the store). Nothing here
starts a process.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from crlbuilder.keys.pkcs11 import TokenUnavailable
from crlbuilder.manifest import IssuerFiles
from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from crlbuilder.tokenrequest import (
    TOKEN_POLICY_OID,
    TokenRequest,
    issued_path,
    party_uri,
    read_request,
    token_holder,
    token_serial,
)
from crlbuilder.tokens import token_certificate
from responder.config import ResponderConfig
from responder.http import Request, Response
from responder.limits import Limit, Wait
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.v1 import openapi
from responder.v1 import token as v1token
from responder.v1.routes import V1Api
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import written
from tests.test_policy import NOW, SPC, USR, build, party_table
from tests.test_v1_status import Ledger, Quotas

INDEX = 51  # verifier-token-g1
ISSUER = IssuerFiles(
    id="verifier-token-g1", family=Family.SPECIFIED_VERIFIER_TOKEN, generation=1, index=INDEX,
    cert="ca.pem", key="ca.key", ocsp_cert="o.pem", ocsp_key="o.key",
    crl_url="http://127.0.0.1/crl/verifier-token-g1.crl",
    delta_crl_url="http://127.0.0.1/crl/verifier-token-g1-delta.crl",
    ocsp_url="http://127.0.0.1/ocsp",
)  # fmt: skip


class MemoryDesk:
    """The `responder.v1.token.TokenDesk` of a test: dicts for the two directories."""

    def __init__(self, ca: Ca) -> None:
        self.ca = ca
        self.queued: dict[str, TokenRequest] = {}
        self.files: dict[str, bytes] = {}
        self.counted: set[str] = set()
        self.bound = 16

    def issuer_pem(self) -> str | None:
        return self.ca.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issuer_index(self) -> int:
        return INDEX

    def issuer_id(self) -> str:
        return "verifier-token-g1"

    def issued(self, rid: str) -> bytes | None:
        return self.files.get(rid)

    def queue(self, req: TokenRequest) -> None:
        self.queued.setdefault(req.id, req)

    def max_per_party(self) -> int:
        return self.bound

    def queued_by(self, party: str) -> frozenset[str]:
        return frozenset(r.id for r in self.queued.values() if r.party == party)

    def counted_before(self, rid: str) -> bool | None:
        return rid in self.counted

    def count_once(self, rid: str, give: Callable[[], bool]) -> bool | None:
        if rid in self.counted:
            return True
        if not give():
            return False
        self.counted.add(rid)
        return True


class CaSigner:
    """Just enough of `crlbuilder.keys.signer.Signer` for `token_certificate`."""

    def __init__(self, ca: Ca) -> None:
        self.ca = ca
        self.certificate = ca.cert

    def sign(self, data: bytes) -> bytes:
        key = self.ca.key
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def spec_table(pid: str = "spec", **approval: Any) -> dict[str, Any]:
    table = party_table(pid, {USR, SPC})
    for t in table["title"]:
        if t["kind"] == SPC.value:
            t.update(approval)
    return table


class Api:
    def __init__(
        self, *tables: dict[str, Any], desk: MemoryDesk | None, signer: object = None
    ) -> None:
        self.ledger = Ledger()
        self.reader = MemoryReader()
        self.registry: Registry = build(*tables, party_table("usr", {USR}))
        route = dataclasses.replace(v1token.ROUTE, setup=lambda cfg: desk)
        self.api = V1Api(
            (route,), ResponderConfig(), store=self.reader, quota=Quotas(), ledger=self.ledger,
            signer=signer,  # type: ignore[arg-type]
        )  # fmt: skip

    def made(self, body: object, party: str = "spec") -> Response:
        """The answer to a POST, made and not yet written."""
        headers = {
            b"content-type": b"application/json",
            b"authorization": b"Bearer " + party.encode(),
        }
        raw = msgspec.json.encode(body)
        req = Request(b"POST", b"/v1/token", headers, raw, ("127.0.0.1", 1), None, b"1.1", True, 1)
        got = self.api.handle(req, self.registry, NOW)
        assert isinstance(got, Response)
        return got

    def post(self, body: object, party: str = "spec") -> tuple[Response, dict[str, Any]]:
        resp = written(self.made(body, party))
        out: dict[str, Any] = msgspec.json.decode(bytes(resp.body))
        return resp, out


def resolve(template: Any, answer: dict[str, Any]) -> Any:
    """An OpenAPI link's request body with its ``$response.body#/name`` values read from
    ``answer`` (a missing one: KeyError)."""
    if isinstance(template, dict):
        return {k: resolve(v, answer) for k, v in template.items()}
    if isinstance(template, list):
        return [resolve(v, answer) for v in template]
    prefix = "$response.body#/"
    if isinstance(template, str) and template.startswith(prefix):
        return answer[template[len(prefix) :]]
    return template


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca("verifier-token-g1 CA", rsa_key(), not_before=datetime(2020, 1, 1, tzinfo=UTC))


def csr_of(key: Any, *parties: str) -> x509.CertificateSigningRequest:
    """A CSR of ``key`` naming ``parties`` (``spec`` when none is given) as subjectAltName URIs
    (`crlbuilder.tokenrequest.party_uri`): a request bound to its party."""
    names = [x509.UniformResourceIdentifier(party_uri(p)) for p in parties or ("spec",)]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "spec")]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def unbound_csr_of(key: Any) -> x509.CertificateSigningRequest:
    """A CSR of ``key`` naming no party (as every client made them before the binding)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "spec")]))
        .sign(key, hashes.SHA256())
    )


def pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_act_38_3_request_queued_then_token_handed_out_and_counted(ca: Ca) -> None:
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    key = ec.generate_private_key(ec.SECP256R1())
    resp, body = api.post({"csr": pem(csr_of(key))})
    assert resp.status == 202 and body["status"] == "pending" and body["retryAfterSeconds"] > 0
    # an HTTP client's retry logic reads the header (RFC 9110 §10.2.3), not the body
    assert (b"retry-after", str(body["retryAfterSeconds"]).encode()) in resp.extra_headers
    rid = body["request"]
    [req] = desk.queued.values()
    assert req.id == rid and req.party == "spec"
    assert api.ledger.counted == []  # nothing provided yet
    # the same request again: the same id, queued once
    assert api.post({"csr": pem(csr_of(key))})[1]["request"] == rid and len(desk.queued) == 1
    # the builder issues it (crlbuilder.tokens): the file, then its status in the store
    cert = token_certificate(
        req, issuer=ISSUER, issuer_cert=ca.cert, approval_window=(0, None),
        validity=timedelta(days=365), signer=CaSigner(ca),  # type: ignore[arg-type]
    )  # fmt: skip
    desk.files[rid] = cert.public_bytes(serialization.Encoding.PEM)
    assert api.post({"csr": pem(csr_of(key))})[0].status == 202  # not committed yet
    skey = sf.status_key(INDEX, token_serial(rid))
    api.reader.status_records[skey] = sf.StatusRecord(
        version=1, state=sf.STATE_GOOD, category=0, reason=0,
        family=Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=0, not_after=2**40,
        revoked_at=0, holder=b"\0" * 32,
    )  # fmt: skip
    api.reader.changed()
    # base64 DER is accepted as well as PEM
    der = base64.b64encode(csr_of(key).public_bytes(serialization.Encoding.DER)).decode()
    resp, body = api.post({"csr": der})
    assert resp.status == 200 and body["status"] == "issued" and body["request"] == rid
    got = x509.load_pem_x509_certificate(body["certificate"].encode())
    got.verify_directly_issued_by(
        x509.load_pem_x509_certificate(body["issuerCertificate"].encode())
    )
    assert got.public_key().public_numbers() == key.public_key().public_numbers()
    assert body["policy"] == TOKEN_POLICY_OID.dotted_string
    # what POST /v1/status asks its status by (the document's link): its issuer and serial
    link = openapi.document([v1token.ROUTE])["paths"]["/v1/token"]["post"]["responses"]["200"]
    assert link["links"]["status"]["operationId"] == "status"
    [entry] = resolve(link["links"]["status"]["requestBody"], body)["entries"]
    assert entry == {"issuer": "verifier-token-g1", "serial": f"{got.serial_number:x}"}
    assert "links" not in openapi.document([v1token.ROUTE])["paths"]["/v1/token"]["post"][
        "responses"]["202"]  # fmt: skip
    assert api.ledger.counted == [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]
    # handed out again (the party polls on): the same token, no new provision (Act §38-3(2))
    resp, body = api.post({"csr": der})
    assert (
        resp.status == 200
        and body["certificate"] == got.public_bytes(serialization.Encoding.PEM).decode()
    )
    assert len(api.ledger.counted) == 1
    # revoked since (its approval was revoked, then restored): refused, not handed out
    api.reader.status_records[skey] = api.reader.status_records[skey]._replace(
        state=sf.STATE_REVOKED, category=Category.APPROVAL_WITHDRAWN.code,
        reason=Reason.PRIVILEGE_WITHDRAWN, revoked_at=1,
    )  # fmt: skip
    api.reader.changed()
    resp, body = api.post({"csr": der})
    # its cause is not kept with it: the article every cause shares (Act §38-3(1))
    assert resp.status == 409 and body["article"] == "Act §38-3(1)"
    assert len(api.ledger.counted) == 1


class NoneLeft(Quotas):
    """The day's provisions: refused until ``left``."""

    left = False

    def take_provisions(self, party: Any, n: int, now: float) -> Wait | float:
        return now if self.left else Wait(Limit.DAY, 3600)


def _issue(api: Api, ca: Ca, req: TokenRequest, issued_dir: Path) -> None:
    """What the builder does for ``req``: the file ``<id>.pem``, then its status (good)."""
    cert = token_certificate(
        req, issuer=ISSUER, issuer_cert=ca.cert, approval_window=(0, None),
        validity=timedelta(days=365), signer=CaSigner(ca),  # type: ignore[arg-type]
    )  # fmt: skip
    issued_dir.mkdir(exist_ok=True)
    issued_path(issued_dir, req.id).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    api.reader.status_records[sf.status_key(INDEX, token_serial(req.id))] = sf.StatusRecord(
        version=1, state=sf.STATE_GOOD, category=0, reason=0,
        family=Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=0, not_after=2**40,
        revoked_at=0, holder=b"\0" * 32,
    )  # fmt: skip
    api.reader.changed()


def test_a_token_is_counted_once_however_often_it_is_handed_out(ca: Ca, tmp_path: Path) -> None:
    """帳簿 (Act §40): the provision is of the code (Act §38-3(2)), one per token: the party
    that polls on after it got its token gets the same certificate, counted the first time
    only, by every worker of the node (the mark is a file under ``request_dir``). A first
    hand-out the day's provisions refuse (429) is not marked: the next one is counted."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    desk = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    spec = spec_table()
    spec["agreement"]["provisions_per_day"] = 10  # the dispatcher asks the (fake) bound
    api = Api(spec, desk=None)
    api.api._envs["/v1/token"] = desk
    key = ec.generate_private_key(ec.SECP256R1())
    resp, body = api.post({"csr": pem(csr_of(key))})
    assert resp.status == 202
    _issue(api, ca, read_request(requests / f"{body['request']}.json"), issued)
    counted = [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]
    certs = set()
    for _ in range(3):
        resp, body = api.post({"csr": pem(csr_of(key))})
        assert resp.status == 200 and body["status"] == "issued"
        certs.add(body["certificate"])
    assert len(certs) == 1 and api.ledger.counted == counted
    mark = requests / "counted" / body["request"]
    assert mark.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in requests.glob("*.json")) == [f"{body['request']}.json"]
    # another worker of the node (a new desk on the same directories) does not count it again
    api.api._envs["/v1/token"] = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    assert api.post({"csr": pem(csr_of(key))})[0].status == 200
    assert api.ledger.counted == counted
    # another token of the party is another provision; refused by the day's bound first
    other = ec.generate_private_key(ec.SECP256R1())
    rid = api.post({"csr": pem(csr_of(other))})[1]["request"]
    _issue(api, ca, read_request(requests / f"{rid}.json"), issued)
    quota = NoneLeft()
    api.api.quota = quota
    resp, body = api.post({"csr": pem(csr_of(other))})
    assert resp.status == 429 and body["rule"] == "quota" and api.ledger.counted == counted
    assert not (requests / "counted" / rid).exists()  # not marked
    quota.left = True
    assert api.post({"csr": pem(csr_of(other))})[0].status == 200
    assert api.ledger.counted == counted * 2


class Taken(Quotas):
    """The day's provisions as a running total: taken, given back."""

    taken = 0

    def take_provisions(self, party: Any, n: int, now: float) -> Wait | float:
        self.taken += n
        return now

    def give_back_provisions(self, party: Any, n: int, now: float) -> None:
        self.taken -= n


def test_act_40_a_token_is_counted_and_marked_when_written_not_when_decided(
    ca: Ca, tmp_path: Path
) -> None:
    """帳簿 (Act §40): a token handed out is counted, and marked counted, as the answer is
    written (`Provision.sent`): one made and dropped (pipelined behind a slower answer on a
    connection that went away) was counted and marked though never received, so the hand-out
    the party then received went uncounted. Dropped, nothing is counted or marked and the
    provision is given back; two hand-outs made at once count the token once, whichever is
    written first, the other's provision given back."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    desk = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    spec = spec_table()
    spec["agreement"]["provisions_per_day"] = 10  # the dispatcher asks the (fake) bound
    api = Api(spec, desk=None)
    api.api._envs["/v1/token"] = desk
    quota = Taken()
    api.api.quota = quota
    key = ec.generate_private_key(ec.SECP256R1())
    resp, body = api.post({"csr": pem(csr_of(key))})
    assert resp.status == 202
    _issue(api, ca, read_request(requests / f"{body['request']}.json"), issued)
    mark = requests / "counted" / body["request"]
    gone = api.made({"csr": pem(csr_of(key))})
    assert gone.status == 200 and gone.provision is not None and quota.taken == 1
    gone.provision.dropped()
    assert api.ledger.counted == [] and quota.taken == 0 and not mark.exists()
    one, two = api.made({"csr": pem(csr_of(key))}), api.made({"csr": pem(csr_of(key))})
    assert quota.taken == 2
    written(two)
    written(one)
    assert api.ledger.counted == [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]
    assert quota.taken == 1 and mark.stat().st_size > 0
    assert api.post({"csr": pem(csr_of(key))})[0].status == 200  # counted before: none taken
    assert len(api.ledger.counted) == 1 and quota.taken == 1


def test_a_party_holds_at_most_max_per_party_tokens(ca: Ca, tmp_path: Path) -> None:
    """``[token] max_per_party``: the tokens in force (good, unexpired, the store's links of
    the party) and queued; past it a new request is 409 ``token_limit`` naming ``$.csr``,
    nothing queued or counted; a request already queued is answered as ever; a token that
    expired or was revoked makes room; another party is not held back."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    desk = v1token.FileDesk(requests, issued, pem_ca, INDEX, max_per_party=2)
    api = Api(spec_table(), spec_table("spec2"), desk=None)
    api.api._envs["/v1/token"] = desk
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    first, second = (api.post({"csr": pem(csr_of(k))})[1]["request"] for k in keys[:2])
    resp, body = api.post({"csr": pem(csr_of(keys[2]))})
    assert resp.status == 409 and body["rule"] == "token_limit" and body["field"] == "$.csr"
    assert "0 特定利用者証明検証者証明符号 in force and 2 being issued" in body["detail"]
    assert len(list(requests.glob("*.json"))) == 2 and api.ledger.counted == []
    assert api.post({"csr": pem(csr_of(keys[0]))})[0].status == 202  # queued already
    assert api.post({"csr": pem(csr_of(keys[2], "spec2"))}, "spec2")[0].status == 202
    # the builder issues the party's two (and takes their requests): two in force
    holder = token_holder("spec")
    for rid in (first, second):
        path = requests / f"{rid}.json"
        _issue(api, ca, read_request(path), issued)
        path.unlink()
        key = sf.status_key(INDEX, token_serial(rid))
        api.reader.links.setdefault((holder, Family.SPECIFIED_VERIFIER_TOKEN), []).append(key)
    api.reader.changed()
    resp, body = api.post({"csr": pem(csr_of(keys[2]))})
    assert (
        resp.status == 409
        and "holds 2 特定利用者証明検証者証明符号 in force and 0" in body["detail"]
    )
    # a token of the party whose file is being signed again is no new token
    issued_path(issued, first).unlink()
    assert api.post({"csr": pem(csr_of(keys[0]))})[0].status == 202
    # one revoked, then one expired: room for one new token each time
    skey = sf.status_key(INDEX, token_serial(first))
    api.reader.status_records[skey] = api.reader.status_records[skey]._replace(
        state=sf.STATE_REVOKED, category=Category.APPROVAL_WITHDRAWN.code, revoked_at=1
    )
    api.reader.changed()
    (requests / f"{first}.json").unlink()
    assert api.post({"csr": pem(csr_of(keys[2]))})[0].status == 202
    assert api.post({"csr": pem(csr_of(keys[3]))})[0].status == 409
    skey = sf.status_key(INDEX, token_serial(second))
    # in force through its notAfter's second (`crlbuilder.validity`): no room yet (it was)
    api.reader.status_records[skey] = api.reader.status_records[skey]._replace(not_after=int(NOW))
    api.reader.changed()
    assert api.post({"csr": pem(csr_of(keys[3]))})[0].status == 409
    api.reader.status_records[skey] = api.reader.status_records[skey]._replace(
        not_after=int(NOW) - 1
    )
    api.reader.changed()
    assert api.post({"csr": pem(csr_of(keys[3]))})[0].status == 202
    assert api.ledger.counted == []


def test_the_counted_mark_unreadable_is_503_nothing_counted(ca: Ca, tmp_path: Path) -> None:
    """The mark cannot be kept (``counted`` is a file, not a directory): the token is not
    handed out uncounted, nor counted: 503, as when the changes feed's mark cannot be read."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    api = Api(spec_table(), desk=None)
    api.api._envs["/v1/token"] = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    key = ec.generate_private_key(ec.SECP256R1())
    rid = api.post({"csr": pem(csr_of(key))})[1]["request"]
    _issue(api, ca, read_request(requests / f"{rid}.json"), issued)
    (requests / "counted").write_bytes(b"")
    resp, _body = api.post({"csr": pem(csr_of(key))})
    assert resp.status == 503 and api.ledger.counted == []


def test_expired_token_is_409_not_handed_out_nor_counted(ca: Ca) -> None:
    """A token lives ``tokens.validity_days`` (365) within an approval that may run longer
    (or has no end): once it expired, the same key under the same approval is the same
    request, so the party is told to ask with a new key; the expired certificate is never
    handed out as a provision (帳簿, Act §40)."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    key = ec.generate_private_key(ec.SECP256R1())
    rid = api.post({"csr": pem(csr_of(key))})[1]["request"]
    req = desk.queued[rid]
    issued_at = datetime.fromtimestamp(NOW, UTC) - timedelta(days=366)
    req = msgspec.structs.replace(req, requested_at=issued_at)
    cert = token_certificate(
        req, issuer=ISSUER, issuer_cert=ca.cert, approval_window=(0, None),
        validity=timedelta(days=365), signer=CaSigner(ca),  # type: ignore[arg-type]
    )  # fmt: skip
    assert cert.not_valid_after_utc.timestamp() < NOW
    desk.files[rid] = cert.public_bytes(serialization.Encoding.PEM)
    api.reader.status_records[sf.status_key(INDEX, token_serial(rid))] = sf.StatusRecord(
        version=1, state=sf.STATE_GOOD, category=0, reason=0,
        family=Family.SPECIFIED_VERIFIER_TOKEN.code,
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()), revoked_at=0, holder=b"\0" * 32,
    )  # fmt: skip
    api.reader.changed()
    resp, body = api.post({"csr": pem(csr_of(key))})
    assert resp.status == 409 and body["rule"] == "token_expired" and body["field"] == "$.csr"
    assert "new key" in body["detail"]
    assert api.ledger.counted == []
    # a new key is a new request, queued for the builder
    resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == 202 and body["request"] != rid


def test_token_issuer_expired_is_503_nothing_queued_nor_counted() -> None:
    """Past the token issuer's own notAfter the builder can sign no token (it drops the
    request, `crlbuilder.tokens`): a request queued then would be answered ``pending`` for
    ever, so it is refused at once, saying why."""
    expired = make_ca(
        "verifier-token-g1 CA", rsa_key(), not_before=datetime(2020, 1, 1, tzinfo=UTC), days=365
    )
    assert expired.cert.not_valid_after_utc.timestamp() < NOW
    desk = MemoryDesk(expired)
    api = Api(spec_table(), desk=desk)
    resp, body = api.post({"csr": pem(csr_of(rsa_key()))})
    assert resp.status == 503 and body["rule"] == "unavailable", body
    assert "token issuer's certificate expired at 2020-12-31" in body["detail"]
    assert desk.queued == {} and api.ledger.counted == []


def _bad_signature() -> str:
    der = bytearray(csr_of(rsa_key()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    return base64.b64encode(bytes(der)).decode()


def _unknown_key_algorithm() -> str:
    """A CSR whose key's algorithm OID is none cryptography knows (id-ecPublicKey's last arc
    changed): ``public_key()`` raises UnsupportedAlgorithm, which is no ValueError."""
    der = csr_of(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
    assert der.count(ec_public_key) == 1
    unknown = der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
    return base64.b64encode(unknown).decode()


def _signed_with_sha1() -> str:
    """A CSR whose self-signature is sha1WithRSAEncryption, valid (as ``openssl req -sha1``
    makes): refused for its digest, not as a signature that "does not verify" with its key."""
    key = rsa_key()
    req = asn1_csr.CertificationRequest.load(csr_of(key).public_bytes(serialization.Encoding.DER))
    req["signature_algorithm"] = {"algorithm": "sha1_rsa"}
    info = req["certification_request_info"].dump()
    req["signature"] = key.sign(info, padding.PKCS1v15(), hashes.SHA1())
    return base64.b64encode(req.dump(force=True)).decode()


def _rsa_big_e(bits: int, e: int) -> rsa.RSAPrivateKey:
    """An RSA key of ``bits`` bits with public exponent ``e`` (or the next odd one that fits)."""
    import math

    pn = rsa.generate_private_key(public_exponent=65_537, key_size=bits).private_numbers()
    p, q = pn.p, pn.q
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    while math.gcd(e, lam) != 1:
        e += 2
    d = pow(e, -1, lam)
    return rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    ).private_key()  # fmt: skip


def test_a_large_key_with_a_large_exponent_is_refused_for_what_it_is(ca: Ca) -> None:
    """An RSA key over 3072 bits with a public exponent over 64 bits (within the 2**256 bound)
    was refused as "the request's signature does not verify with its own key", a signature
    that was valid: OpenSSL verifies nothing under such a key. The refusal says why; the
    same exponent under RSA-3072 is accepted."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    resp, body = api.post({"csr": pem(csr_of(_rsa_big_e(3080, 2**64 + 1)))})
    assert resp.status == 400 and body["field"] == "$.csr", body
    assert "public exponent of 64 bits at most" in body["detail"], body
    assert desk.queued == {}
    assert api.post({"csr": pem(csr_of(_rsa_big_e(3072, 2**64 + 1)))})[0].status == 202


@pytest.mark.parametrize(
    ("csr", "says"),
    [
        pytest.param(lambda: "hello", "not a PKCS#10", id="not-a-csr"),
        pytest.param(
            lambda: base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "not a PKCS#10",
            id="der-not-a-csr",
        ),
        pytest.param(_bad_signature, "signature", id="bad-signature"),
        pytest.param(_unknown_key_algorithm, "public key", id="unknown-key-algorithm"),
        pytest.param(_signed_with_sha1, "SHA-1", id="signed-with-sha1"),
        pytest.param(lambda: pem(csr_of(rsa_key(1024))), "2048", id="rsa-1024"),
        pytest.param(
            lambda: pem(csr_of(rsa.generate_private_key(public_exponent=3, key_size=2048))),
            "exponent", id="rsa-e3",
        ),
        pytest.param(lambda: pem(csr_of(ec.generate_private_key(ec.SECP384R1()))), "P-256",
                     id="ec-p384"),
    ],
)  # fmt: skip
def test_bad_csr_is_400_naming_the_field_nothing_queued_nothing_counted(
    ca: Ca, csr: Any, says: str
) -> None:
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    resp, body = api.post({"csr": csr()})
    assert resp.status == 400 and body["field"] == "$.csr" and says in body["detail"]
    assert desk.queued == {} and api.ledger.counted == []


def test_base64_der_wrapped_in_lines_is_accepted(ca: Ca) -> None:
    """``openssl req -outform DER | base64`` wraps its output at 76 columns (``openssl base64``
    at 64): the line breaks are no part of the encoding, and the same request is queued."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    csr = csr_of(rsa_key())
    flat = base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()
    wrapped = "\r\n".join(flat[i : i + 76] for i in range(0, len(flat), 76)) + "\n"
    resp, body = api.post({"csr": wrapped})
    assert resp.status == 202, body
    assert api.post({"csr": pem(csr)})[1]["request"] == body["request"]
    assert len(desk.queued) == 1


def test_unknown_field_is_400(ca: Ca) -> None:
    resp, body = Api(spec_table(), desk=MemoryDesk(ca)).post({"csr": "x", "subject": "CN=me"})
    # msgspec names the object "$"; the key is the caller's input, never echoed
    assert resp.status == 400 and body["field"] == "$" and "unknown field" in body["detail"]
    assert "subject" not in body["detail"]


def test_party_without_the_title_is_403_citing_act_38_3(ca: Ca) -> None:
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))}, "usr")
    assert resp.status == 403 and body["rule"] == "unauthorized_service"
    assert body["article"].startswith("Act §38-3")
    assert desk.queued == {} and api.ledger.counted == []


def test_an_agreement_without_the_token_is_403_citing_act_38_3_3(ca: Ca) -> None:
    """A 特定利用者証明検証者 whose agreement (取決め, Act §38-3(3)) no longer names the token
    is provided none, not even one the builder issued before (its tokens stay valid: the
    builder does not revoke them, tests/test_tokens.py)."""
    desk = MemoryDesk(ca)
    spec = spec_table()
    spec["agreement"]["services"].remove(Service.SPECIFIED_VERIFIER_TOKEN.value)
    api = Api(spec, desk=desk)
    resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == 403 and body["article"] == "Act §38-3(3)", body
    assert desk.queued == {} and api.ledger.counted == []


@pytest.mark.parametrize(
    ("approval", "article"),
    [
        ({"revoked": datetime.fromtimestamp(NOW - 60, UTC)}, "Act §38-2(6)"),
        ({"approved_until": date(2025, 5, 31)}, "Act §38-2(1)"),  # NOW is 2025-06-01
    ],
    ids=["approval-revoked", "approval-period-ended"],
)
def test_approval_not_in_force_is_refused_act_38_2(
    ca: Ca, approval: dict[str, Any], article: str
) -> None:
    desk = MemoryDesk(ca)
    api = Api(spec_table(**approval), desk=desk)
    resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == 403 and body["rule"] == "ended" and body["article"] == article
    assert desk.queued == {} and api.ledger.counted == []


@pytest.mark.parametrize(
    ("ends", "status", "article"),
    [
        ({"revoked": 1.0}, 403, "Act §38-2(6)"),  # at the end of the request's second
        ({"revoked": 0.5}, 403, "Act §38-2(6)"),  # within it
        ({"ended": 1.0}, 403, "Act §36(2)"),  # the party's provision end, set ahead
        ({"revoked": 2.0}, 202, ""),  # one more second: a token of two seconds
    ],
    ids=["revoked-at-its-end", "revoked-within-it", "provision-end", "a-second-later"],
)
def test_an_approval_ending_in_the_request_s_second_is_refused_not_queued(
    ca: Ca, ends: dict[str, float], status: int, article: str
) -> None:
    """A token's notBefore is the request's second; an approval that stops being in force at
    that second's end (or within it) leaves notAfter == notBefore. The request was queued
    (202) and the builder dropped it (``not_after <= not_before``) without a word to the
    party; it is refused 403 ``ended`` citing the article, nothing queued or counted."""
    desk = MemoryDesk(ca)
    ((what, after),) = ends.items()
    at = datetime.fromtimestamp(NOW + after, UTC)
    if what == "revoked":
        table = spec_table(revoked=at)
    else:
        table = spec_table() | {"ended": {"at": at, "reason": "届出の廃止"}}
    api = Api(table, desk=desk)
    resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == status, body
    if status == 403:
        assert body["rule"] == "ended" and body["article"] == article, body
        assert "end of this second" in body["detail"]
        assert desk.queued == {} and api.ledger.counted == []
    else:
        assert len(desk.queued) == 1


def test_approval_ending_later_is_a_new_request(ca: Ca) -> None:
    """The id rests on the approval: renewed or changed, the party asks anew."""
    key = ec.generate_private_key(ec.SECP256R1())
    a = Api(spec_table(), desk=MemoryDesk(ca)).post({"csr": pem(csr_of(key))})[1]["request"]
    b = Api(spec_table(approved_until=date(2026, 3, 31)), desk=MemoryDesk(ca)).post(
        {"csr": pem(csr_of(key))}
    )[1]["request"]
    assert a != b


def test_not_configured_is_503(ca: Ca) -> None:
    resp, body = Api(spec_table(), desk=None).post({"csr": "x"})
    assert resp.status == 503 and body["rule"] == "unavailable"


def test_tokens_are_not_counted_as_issued_certificates_ord_71() -> None:
    """発行件数 (Ord §71(1)) counts the Act's certificates; a token issued in the store does not
    appear there (nor break the yearly report), its provisions are in the ledger instead."""
    from responder.ledger import issuance_counts

    reader = MemoryReader(
        status_records={
            sf.status_key(INDEX, 7): sf.StatusRecord(
                version=1, state=sf.STATE_GOOD, category=0, reason=0,
                family=Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=int(NOW),
                not_after=int(NOW) + 86400, revoked_at=0, holder=b"\0" * 32,
            )
        }
    )  # fmt: skip
    counts = issuance_counts(reader, date(2025, 1, 1), date(2025, 12, 31))
    assert counts == {f: {} for f in ("sign-card", "sign-mobile", "auth-card", "auth-mobile")}


def test_token_status_by_ocsp_to_any_running_party_not_counted() -> None:
    """A token's status is answered by OCSP like any certificate's, signed by its issuer's
    delegate, to every registered party whose provision runs (no agreement names it), and
    is no §18(1)/§37(1) provision: the flow names no service, so the ledger counts none."""
    from crlbuilder.keys.signer import PemSigner
    from crlbuilder.ocsp.response import ResponseSigner
    from responder.flow import Answer, OcspFlow, Refusal, Signing
    from responder.ocsp import IssuerView
    from tests.test_ocsp_flow import (
        CONFIG,
        REGISTRY,
        Creds,
        cert_status,
        party,
        request,
        self_signed,
        signed,
        status,
    )  # fmt: skip
    from tests.test_ocsp_flow import (
        NOW as FLOW_NOW,
    )
    from tests.test_ocsp_flow import (
        Quotas as FlowQuotas,
    )

    k = rsa_key()
    cert = self_signed(k, "verifier-token-g1 CA")
    rs = ResponseSigner(PemSigner(k, cert))
    view = IssuerView(INDEX, ISSUER.id, Family.SPECIFIED_VERIFIER_TOKEN, rs, cert, rs.certs_suffix)
    reader = MemoryReader(
        issuer_table=[
            sf.IssuerMeta(
                index=INDEX, id=ISSUER.id, family=Family.SPECIFIED_VERIFIER_TOKEN, generation=1,
                cert_der=cert.public_bytes(serialization.Encoding.DER),
            )
        ],
        crl_states={INDEX: sf.CrlState(next_update=FLOW_NOW + 86400)},
        status_records={
            sf.status_key(INDEX, 7): status(1, sf.STATE_GOOD, Family.SPECIFIED_VERIFIER_TOKEN),
            sf.status_key(INDEX, 8): status(
                2, sf.STATE_REVOKED, Family.SPECIFIED_VERIFIER_TOKEN, revoked_at=FLOW_NOW - 60,
                reason=Reason.PRIVILEGE_WITHDRAWN, category=Category.APPROVAL_WITHDRAWN.code,
            ),
        },
    )  # fmt: skip
    fl = OcspFlow([view], FlowQuotas(frozenset()), CONFIG)
    for who in ("sign-only", "auth-mobile-only"):  # agreements about other families
        got = fl.decide(request(view, 7), Creds(who), FLOW_NOW, reader, REGISTRY)
        assert isinstance(got, Signing | Answer) and got.service is None, got  # cached: Answer
        assert cert_status(signed(got, fl)) is x509.ocsp.OCSPCertStatus.GOOD
    got = fl.decide(request(view, 8), Creds("sign-only"), FLOW_NOW, reader, REGISTRY)
    assert isinstance(got, Signing)
    answer = x509.ocsp.load_der_ocsp_response(signed(got, fl).der)
    assert answer.revocation_reason is x509.ReasonFlags.privilege_withdrawn
    # a group appliance (CRL import: absent from the 機構's CRLs is good) imports no token
    # CRL: a token it does not know is unknown there, never good
    reader.imported = True
    reader.changed()
    fresh = OcspFlow([view], FlowQuotas(frozenset()), CONFIG)
    got = fresh.decide(request(view, 9), Creds("sign-only"), FLOW_NOW, reader, REGISTRY)
    assert cert_status(signed(got, fresh)) is x509.ocsp.OCSPCertStatus.UNKNOWN
    ended = Registry([party("gone", end=FLOW_NOW - 1, end_article="Act §36(1)")])
    got = fl.decide(request(view, 7), Creds("gone"), FLOW_NOW, reader, ended)
    assert isinstance(got, Refusal) and got.rule == "ended"


def test_openapi_documents_the_pending_answer_and_the_revoked_token() -> None:
    """The contract lists 202 (pending, the same answer Struct) and 409 for POST /v1/token."""
    from responder.v1.openapi import document
    from responder.v1.table import ROUTES

    responses = document(ROUTES)["paths"]["/v1/token"]["post"]["responses"]
    assert responses["202"]["content"] == responses["200"]["content"]
    assert responses["202"]["headers"]["Retry-After"]["required"] is True
    assert "JWS-Signature" in responses["202"]["headers"]  # signed like the 200
    assert "409" in responses and "400" in responses and "403" in responses


@pytest.mark.parametrize(("ends", "status"), [(0, 202), (-1, 503)])
def test_the_token_issuer_is_valid_through_its_notafters_second(ends: int, status: int) -> None:
    """RFC 5280 §4.1.2.5 (inclusive; `crlbuilder.validity`): a request in the token issuer's
    notAfter second is queued (the builder may sign in it); the next second it is 503. It was
    503 from notAfter's own second (``now < notAfter``)."""
    start = datetime.fromtimestamp(NOW + ends, UTC) - timedelta(days=365)
    issuer = make_ca("verifier-token-g1 CA", rsa_key(), not_before=start, days=365)
    assert issuer.cert.not_valid_after_utc.timestamp() == NOW + ends
    desk = MemoryDesk(issuer)
    api = Api(spec_table(), desk=desk)
    resp, body = api.post({"csr": pem(csr_of(rsa_key()))})
    assert resp.status == status, body


def _queued_files(requests: Path) -> list[str]:
    return sorted(p.name for p in requests.glob("*.json"))


def test_a_request_copied_from_another_party_is_refused_the_right_one_accepted(
    ca: Ca, tmp_path: Path
) -> None:
    """A CSR proves only that whoever made it holds the key, and a CSR is no secret: a party
    holding another's got a token naming itself with the other's key (the 機構 vouching that
    the other's signatures were its own, Act §38-3(1)). A request is bound to the party that
    asks: its CSR names it, and no other, as the subjectAltName URI urn:jpki-va:party:<id>,
    under the key holder's own signature. Copied (naming another), naming none, or naming
    several: 400 naming ``$.csr``, nothing queued or counted; replayed by the copier after the
    rightful party's token was issued: refused the same; the rightful party's own: queued,
    then its token handed out and counted once."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    api = Api(spec_table(), spec_table("spec2"), desk=None)
    api.api._envs["/v1/token"] = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    key = ec.generate_private_key(ec.SECP256R1())  # spec's key
    spec_csr = pem(csr_of(key, "spec"))
    for csr, says in (
        (spec_csr, "names another party"),  # spec's request, copied by spec2
        (pem(unbound_csr_of(key)), "must name the party that asks"),
        (pem(csr_of(key, "spec", "spec2")), "names another party, or several"),
    ):
        resp, body = api.post({"csr": csr}, "spec2")
        assert resp.status == 400 and body["field"] == "$.csr", body
        assert says in body["detail"] and party_uri("spec2") in body["detail"], body
        assert body["detail"].count("urn:jpki-va:party:") == 1  # the other party not echoed
        assert _queued_files(requests) == [] and api.ledger.counted == []
    # the rightful party's own request: queued, issued, handed out
    resp, body = api.post({"csr": spec_csr})
    assert resp.status == 202, body
    rid = body["request"]
    _issue(api, ca, read_request(requests / f"{rid}.json"), issued)
    (requests / f"{rid}.json").unlink()  # taken by the builder
    resp, body = api.post({"csr": spec_csr})
    assert resp.status == 200 and body["request"] == rid, body
    got = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert got.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "spec"
    counted = [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]
    assert api.ledger.counted == counted
    # replayed by the copier once the token exists: refused, nothing queued, nothing counted
    resp, body = api.post({"csr": spec_csr}, "spec2")
    assert resp.status == 400 and body["field"] == "$.csr", body
    assert "names another party" in body["detail"]
    assert _queued_files(requests) == [] and api.ledger.counted == counted


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("URN:JPKI-VA:party:spec", 202),
        ("urn:Jpki-Va:party:spec", 202),
        ("Urn:jpki-va:party:spec", 202),
        ("urn:jpki-va:party:SPEC", 400),  # the party id is exact: another id
        ("urn:jpki-va:PARTY:spec", 400),  # so is the rest of the NSS
        ("urn:jpki-va:party:spec ", 400),
    ],
)
def test_the_party_urn_s_scheme_and_nid_are_read_in_any_case(ca: Ca, uri: str, status: int) -> None:
    """RFC 8141 §3.1: the ``urn`` scheme and the NID (``jpki-va``) are case-insensitive, the
    NSS (``party:<id>``) is not: a CSR naming ``URN:JPKI-VA:party:spec`` names the party
    ``spec`` (it was refused as naming no party); ``party:SPEC`` names another id, refused."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "spec")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    resp, body = api.post({"csr": pem(csr)})
    assert resp.status == status, body
    if status == 202:
        assert list(desk.queued) == [body["request"]]
        assert body["request"] == api.post({"csr": pem(csr_of(key))})[1]["request"]
    else:
        assert body["field"] == "$.csr" and desk.queued == {}, body


def test_a_token_issued_before_the_binding_is_still_handed_out_for_its_csr(ca: Ca) -> None:
    """Migration: a token the builder issued from a CSR naming no party (before requests were
    bound) is handed out for that CSR, as before (the party collects what was issued); a new
    request from such a CSR is refused, saying what to add."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk)
    key = ec.generate_private_key(ec.SECP256R1())
    old = pem(unbound_csr_of(key))
    resp, body = api.post({"csr": old})
    assert resp.status == 400 and party_uri("spec") in body["detail"] and desk.queued == {}
    rid = api.post({"csr": pem(csr_of(key))})[1]["request"]  # the same id: party, key, approval
    req = desk.queued.pop(rid)
    cert = token_certificate(
        req, issuer=ISSUER, issuer_cert=ca.cert, approval_window=(0, None),
        validity=timedelta(days=365), signer=CaSigner(ca),  # type: ignore[arg-type]
    )  # fmt: skip
    desk.files[rid] = cert.public_bytes(serialization.Encoding.PEM)
    api.reader.status_records[sf.status_key(INDEX, token_serial(rid))] = sf.StatusRecord(
        version=1, state=sf.STATE_GOOD, category=0, reason=0,
        family=Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=0, not_after=2**40,
        revoked_at=0, holder=b"\0" * 32,
    )  # fmt: skip
    api.reader.changed()
    resp, body = api.post({"csr": old})
    assert resp.status == 200 and body["request"] == rid and body["status"] == "issued"
    assert api.ledger.counted == [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]


def test_a_token_call_is_answered_off_the_event_loop_and_fairly(ca: Ca, tmp_path: Path) -> None:
    """A token call's cost does not follow its body's size: a new request writes its file
    whole with an fsync (measured 1.5 to 172 ms on a shared machine), each call reads the
    queue back, and a CSR's self-signature under RSA-8192 with the largest public exponent
    accepted costs 2-5.5 ms (``python -m bench.bench_v1_token_loop``). Answered on the event
    loop, it held every other connection of the worker (OCSP too) that long. Every call goes
    to the batch thread, in its party's fair share (429 ``fair_share`` past it, nothing
    queued or counted); the request is queued from that thread, and the token handed out
    from it is counted once as its answer is written, on the loop."""
    import asyncio
    import threading

    from responder.signing import SigningPool
    from responder.v1.routes import Done

    requests, issued = tmp_path / "requests", tmp_path / "issued"
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    queued_in: list[str] = []

    class Desk(v1token.FileDesk):
        def queue(self, req: TokenRequest) -> None:
            queued_in.append(threading.current_thread().name)
            super().queue(req)

    api = Api(spec_table(), desk=None)
    api.api._envs["/v1/token"] = Desk(requests, issued, pem_ca, INDEX)
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    key = ec.generate_private_key(ec.SECP256R1())
    body = msgspec.json.encode({"csr": pem(csr_of(key))})
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer spec"}

    def request() -> Request:
        return Request(
            b"POST", b"/v1/token", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1
        )

    async def run() -> tuple[Response, Response, Response]:
        first = api.api.handle(request(), api.registry, NOW)  # in the thread
        assert not isinstance(first, Response), "answered on the event loop"
        second = api.api.handle(request(), api.registry, NOW)  # waiting its turn
        assert not isinstance(second, Response), "answered on the event loop"
        refused = api.api.handle(request(), api.registry, NOW)
        assert isinstance(refused, Response) and refused.status == 429  # the party's share
        return written(await first), written(await second), refused

    async def again() -> Response:
        got = api.api.handle(request(), api.registry, NOW)
        assert not isinstance(got, Response), "answered on the event loop"
        return written(await got)

    try:
        pending, again_pending, refused = asyncio.run(run())
        assert pending.status == 202 and again_pending.status == 202, bytes(pending.body)
        assert msgspec.json.decode(bytes(refused.body))["rule"] == "fair_share"
        assert queued_in and all(t != threading.main_thread().name for t in queued_in)
        [path] = requests.glob("*.json")
        _issue(api, ca, read_request(path), issued)
        handed = asyncio.run(again())
    finally:
        pool.close()
    assert handed.status == 200 and msgspec.json.decode(bytes(handed.body))["status"] == "issued"
    assert api.ledger.counted == [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]


def test_a_request_that_cannot_be_queued_is_503_and_logged_without_its_path(
    ca: Ca, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``[token] request_dir`` unwritable (here a file stands in its place): the party gets
    503, nothing queued or counted, and the operator was told nothing at all (the effect's
    error was swallowed). It is logged once, with the error's text and neither the request's
    path (its id) nor anything of the CSR."""
    requests, issued = tmp_path / "requests", tmp_path / "issued"
    requests.write_bytes(b"")  # not a directory
    pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    api = Api(spec_table(), desk=None)
    api.api._envs["/v1/token"] = v1token.FileDesk(requests, issued, pem_ca, INDEX)
    with caplog.at_level("ERROR"):
        resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == 503 and body["rule"] == "unavailable" and api.ledger.counted == []
    [rec] = [r for r in caplog.records if r.levelname == "ERROR"]
    text = rec.getMessage()
    assert "/v1/token" in text and "effect failed" in text, text
    assert str(tmp_path) not in text and "-----BEGIN" not in text


class GoneSigner:
    """An answer signer whose key is in a token that went away (`TokenUnavailable`)."""

    def sign(self, body: bytes) -> bytes:
        raise TokenUnavailable("pkcs11:token=t;object=answer;type=private: token gone")


def test_an_answer_that_cannot_be_signed_queues_nothing(
    ca: Ca, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer-signing key's token gone: the party gets 503 ("try again"), and nothing
    happened. The request used to be queued first, then the pending answer failed to sign:
    a 503 whose request the builder still issued (state changed behind a refusal)."""
    desk = MemoryDesk(ca)
    api = Api(spec_table(), desk=desk, signer=GoneSigner())
    failed: list[str] = []
    api.api.sign_failed = lambda: failed.append("answer")  # the app's signer-error counter
    with caplog.at_level("ERROR"):
        resp, body = api.post({"csr": pem(csr_of(ec.generate_private_key(ec.SECP256R1())))})
    assert resp.status == 503 and body["rule"] == "unavailable"
    assert desk.queued == {} and api.ledger.counted == []
    assert any("could not be signed" in r.getMessage() for r in caplog.records)
    assert failed == ["answer"]
