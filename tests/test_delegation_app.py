"""A principal served in process under its contractor's agreement (Ord §29, §60): its OCSP,
/v1 and CRL file requests, made with its own credentials, are answered, counted in the
ledger (帳簿, Act §40) under its own id and against the contractor's shared quotas, and stop
when the contractor is suspended. The app's clock is pinned to an instant of the run."""

from __future__ import annotations

import asyncio
import hashlib
import time
import types
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography.x509 import ocsp

from responder.app import JpkiApp
from responder.http import Request, Response
from responder.ledger import Method, read_worker_file
from responder.registry.lookup import Registry
from tests.conftest import Built, run_tool
from tests.test_provisions_app import one_certid_request

PINNED = time.time()
NOW = [PINNED]
"""The app's clock: PINNED, moved on by the test once (a suspension starts when it is made)."""
CONTRACTOR = "sig-verifier"
TOKEN = b"a token the contractor holds for city-1"


@pytest.fixture
def app(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JpkiApp]:
    NOW[0] = PINNED
    cfg = built.app_config(tmp_path)
    clock = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    )
    clock.time = lambda: NOW[0]
    monkeypatch.setattr("responder.app.time", clock)
    a = JpkiApp(cfg, 0)
    yield a
    a.close()


def registry(app: JpkiApp, command: str, pid: str, *flags: str) -> None:
    run_tool("responder", "registry", command, "--registry", str(app.config.registry.path),
             "--id", pid, *flags)  # fmt: skip
    app.registry = Registry.load(app.config.registry.path)


def answer(app: JpkiApp, req: Request) -> Response:
    async def run() -> Response:
        got = app.handle(req)
        return got if isinstance(got, Response) else await got

    resp = asyncio.run(run())
    if resp.provision is not None:
        resp.provision.sent()  # as the HTTP layer writes it
    return resp


def get(path: bytes) -> Request:
    headers = {b"authorization": b"Bearer " + TOKEN}
    return Request(b"GET", path, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)


def post(path: bytes, content_type: bytes, body: bytes) -> Request:
    headers = {b"content-type": content_type, b"authorization": b"Bearer " + TOKEN}
    return Request(b"POST", path, headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1)


def counted(app: JpkiApp) -> dict[tuple[str, Method], int]:
    out: dict[tuple[str, Method], int] = {}
    for s in read_worker_file(app.ledger.path).slots:
        if s.count:
            out[(s.party, s.method)] = out.get((s.party, s.method), 0) + s.count
    return out


def test_a_delegated_principal_is_served_and_counted_under_its_own_id(app: JpkiApp) -> None:
    registry(app, "update", CONTRACTOR, "--category", "6", "--certified-until", "2099-12-31",
             "--provisions-per-day", "5")  # fmt: skip
    registry(app, "add", "city-1", "--name", "テスト市", "--address", "どこか", "--office",
             "どこか", "--start", "2016-01-01", "--title", "signature-verifier", "--category",
             "6", "--delegated-to", CONTRACTOR, "--filed-by", CONTRACTOR,
             "--token-sha256", hashlib.sha256(TOKEN).hexdigest())  # fmt: skip
    city = app.registry.parties["city-1"]
    assert city.agreement_holder == CONTRACTOR  # no agreement of its own (Ord §29(4))
    contractor = app.registry.parties[CONTRACTOR]

    resp = answer(app, post(b"/ocsp", b"application/ocsp-request", one_certid_request(app)))
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
    body = msgspec.json.encode({"entries": [{"issuer": "sign-card-g1", "serial": "5"}]})
    resp = answer(app, post(b"/v1/status", b"application/json", body))
    assert resp.status == 200, resp.body
    assert msgspec.json.decode(resp.body)["entries"][0]["status"] in ("good", "revoked", "unknown")
    assert answer(app, get(b"/crl/sign-card-g1.crl")).status == 200
    # the recipient counted is the principal; the provisions come off the shared agreement
    served = {
        ("city-1", Method.OCSP): 1,
        ("city-1", Method.JSON): 1,
        ("city-1", Method.CRL_FILE): 1,
    }
    assert counted(app) == served
    assert app.limits.provisions_left(contractor, PINNED) == 2

    # the contractor suspended (Act §18(6)(1)): what it does for the principal stops too
    registry(app, "suspend", CONTRACTOR, "--article", "Act §18(6)(1)", "--reason", "breach")
    NOW[0] = time.time() + 1  # the suspension, begun at the command's now, is in force
    resp = answer(app, post(b"/ocsp", b"application/ocsp-request", one_certid_request(app)))
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "UNAUTHORIZED"
    resp = answer(app, post(b"/v1/status", b"application/json", body))
    assert resp.status == 403
    problem = msgspec.json.decode(resp.body)
    assert problem["title"] == "suspended" and problem["article"] == "Act §18(6)(1)"
    assert answer(app, get(b"/crl/sign-card-g1-delta.crl")).status == 403
    assert counted(app) == served


def test_a_contractors_principals_share_one_fair_share(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signing threads and the /v1 batch thread are shared fairly per body whose systems
    make the requests: a principal's turn is its contractor's (`Party.fair_id`, Ord §29(1)),
    so a contractor with many principals has one share, not one per principal."""
    registry(app, "update", CONTRACTOR, "--category", "6", "--certified-until", "2099-12-31")
    registry(app, "add", "city-1", "--name", "テスト市", "--address", "どこか", "--office",
             "どこか", "--start", "2016-01-01", "--title", "signature-verifier", "--category",
             "6", "--delegated-to", CONTRACTOR, "--filed-by", CONTRACTOR,
             "--token-sha256", hashlib.sha256(TOKEN).hexdigest())  # fmt: skip
    shares: list[str] = []

    def full(party: str, *_: object) -> None:  # every share taken: refused, key recorded
        shares.append(party)

    monkeypatch.setattr(app.signing, "sign", full)
    monkeypatch.setattr(app.v1_pool, "submit", full)
    resp = answer(app, post(b"/ocsp", b"application/ocsp-request", one_certid_request(app)))
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "TRY_LATER"
    big = [{"issuer": "sign-card-g1", "serial": f"{n:X}"} for n in range(1, 1200)]
    body = msgspec.json.encode({"entries": big})
    assert len(body) >= 32 << 10  # answered in the batch thread
    resp = answer(app, post(b"/v1/status", b"application/json", body))
    assert resp.status == 429 and msgspec.json.decode(resp.body)["title"] == "fair_share"
    assert shares == [CONTRACTOR, CONTRACTOR]
