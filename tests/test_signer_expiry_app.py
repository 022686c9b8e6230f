"""A running worker whose delegated OCSP signer expires answers ``tryLater`` for its issuer,
counted under rule ``signer_expired``; until then its fresh answers end at the notAfter.

`responder serve` refuses to start with a signer not valid now, but a worker loads its
signers once, at start, and may run past their notAfter: every answer signed or served then
fails at the client (RFC 6960 §4.2.2.2). The app in process, its clock pinned (no wall
clock is asked for a date), the PKI a copy whose every delegate ends ten minutes before
the store's earliest promise (so that nothing else bounds the answers' nextUpdate).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from crlbuilder.manifest import load_manifest
from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.store.lmdbstore import Store
from responder.app import JpkiApp
from responder.http import Request, Response
from tests.conftest import Built
from tests.test_ocspreq import a_request
from tests.test_presign import delegate_valid


@pytest.fixture
def app(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JpkiApp]:
    store = Store.open(built.store, readonly=True)
    try:
        with store.read() as r:
            promise = min(r.promised_next_update(i.index) for i in r.issuers())
            built_at = max(r.crl_state(i.index).this_update for i in r.issuers())
    finally:
        store.close()
    ends = promise - 600
    assert ends - 60 > built_at
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    for issuer in load_manifest(pki).all_issuers():
        delegate_valid(pki, issuer.id, ends - 86_400, ends)
    cfg = built.app_config(tmp_path, **{"store.pki": str(pki)})
    clock = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    )
    clock.ends = ends
    clock.now = ends - 60
    clock.time = lambda: clock.now
    monkeypatch.setattr("responder.app.time", clock)
    a = JpkiApp(cfg, 0)
    a.pinned = clock  # type: ignore[attr-defined]
    yield a
    a.close()


def ask(app: JpkiApp, *, nonce: bytes | None = None) -> tuple[Request, Response]:
    """An OCSP request about one serial of the first issuer (no stored answer: signed)."""
    issuer = x509.load_pem_x509_certificate(
        (app.config.store.pki / app.manifest.issuers[0].cert).read_bytes()
    )
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    der = a_request(
        [{"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": name_hash,
          "issuer_key_hash": key_hash, "serial_number": 5}], nonce=nonce,
    )  # fmt: skip
    token = (app.config.store.pki / "parties" / "sig-verifier.token").read_text().strip()
    headers = {b"content-type": b"application/ocsp-request",
               b"authorization": b"Bearer " + token.encode()}  # fmt: skip
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def run() -> Response:
        got = app.handle(req)
        return got if isinstance(got, Response) else await got

    return req, asyncio.run(run())


def test_a_worker_past_its_signers_notafter_answers_try_later_counted_signer_expired(
    app: JpkiApp,
) -> None:
    ends = app.pinned.ends  # type: ignore[attr-defined]
    for nonce in (None, b"n" * 16):  # cached or not: the same bound
        _, before = ask(app, nonce=nonce)
        resp = ocsp.load_der_ocsp_response(before.body)
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.next_update_utc == datetime.fromtimestamp(ends, UTC)  # not a validity on
    app.pinned.now = ends  # type: ignore[attr-defined]
    _, last = ask(app, nonce=b"l" * 16)  # notAfter's own second: still valid (RFC 5280 inclusive)
    assert ocsp.load_der_ocsp_response(last.body).response_status is (
        ocsp.OCSPResponseStatus.SUCCESSFUL
    )
    for at in (ends + 1, ends + 600):
        app.pinned.now = at  # type: ignore[attr-defined]
        for nonce in (None, b"n" * 16):
            req, after = ask(app, nonce=nonce)
            resp = ocsp.load_der_ocsp_response(after.body)
            assert resp.response_status is ocsp.OCSPResponseStatus.TRY_LATER, (at, nonce)
            assert req.note is not None and req.note.rule == "signer_expired"


def ready(app: JpkiApp) -> Response:
    req = Request(b"GET", b"/readyz", {}, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    got = app.handle(req)
    assert isinstance(got, Response)
    return got


def test_readyz_is_503_naming_the_issuers_whose_signer_expired_with_crls_too(
    app: JpkiApp,
) -> None:
    """One readiness for every issuer the node cannot answer (docs/operations.md,
    Readiness): with CRLs the data stays fresh past the delegate's notAfter, and /readyz said
    200 while every answer about its issuer was tryLater (without CRLs the issuer went stale:
    503). Through the notAfter's own second it is ready (inclusive, `crlbuilder.validity`)."""
    ends = app.pinned.ends  # type: ignore[attr-defined]
    for at in (ends - 60, ends):
        app.pinned.now = at  # type: ignore[attr-defined]
        assert (ready(app).status, bytes(ready(app).body)) == (200, b"ready\n")
    app.pinned.now = ends + 1  # type: ignore[attr-defined]
    got = ready(app)
    assert got.status == 503
    body = bytes(got.body).decode()
    assert body.startswith("OCSP signer expired for ") and "stale" not in body, body
    for issuer in app.manifest.all_issuers():
        assert issuer.id in body
