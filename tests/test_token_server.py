"""特定利用者証明検証者証明符号 (Act §38-3) end to end: the real responder, the real builder, openssl.

The demo party ``specified-verifier`` (利用者証明検証者 approved under Act §38-2(1), its
agreement naming ``specified-verifier-token`` by ``json``) makes its key and CSR with
``openssl req``, asks POST /v1/token (202: queued), the builder issues the token, the party
asks again (200: the token), ``openssl verify`` checks it against the demo token CA, and
``openssl ocsp`` asks its status (good); then the approval is revoked in the registry
(Act §38-2(6)), the builder runs again and OCSP answers revoked (privilegeWithdrawn).
On a copy of the session's store: the shared one is not changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from crlbuilder.model import Category
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.tokenrequest import (
    TokenRequest,
    approval_window,
    party_uri,
    request_id,
    token_serial,
    write_request,
)
from responder.registry.demo import DEMO_START
from tests.conftest import BIN, Built, run_tool
from tests.support.harness import Server, start_server
from tests.support.procs import started
from tests.support.wait import until
from tests.test_v1_token import resolve

pytestmark = [pytest.mark.integration, pytest.mark.interop]

PARTY = "specified-verifier"


def post_token(s: Server, csr_pem: str, party: str = PARTY) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{s.url}/v1/token",
        data=json.dumps({"csr": csr_pem}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {s.token(party)}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def v1_status(s: Server, issued: dict[str, Any]) -> str:
    """The token's status by POST /v1/status, its body the token answer's ``status`` link of
    the served OpenAPI document with the answer's values in place (`resolve`)."""
    doc = json.loads(s.get("/v1/openapi.json")[1])
    link = doc["paths"]["/v1/token"]["post"]["responses"]["200"]["links"]["status"]
    assert link["operationId"] == "status"
    req = urllib.request.Request(
        f"{s.url}/v1/status",
        data=json.dumps(resolve(link["requestBody"], issued)).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {s.token(PARTY)}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        [entry] = json.loads(r.read())["entries"]
    status: str = entry["status"]
    return status


def openssl(*args: str, cwd: Path) -> str:
    out = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout + out.stderr


def ocsp_status(s: Server, d: Path, party: str) -> str:
    text = openssl(
        "ocsp", "-url", f"{s.url}/ocsp", "-header", f"Authorization=Bearer {s.token(party)}",
        "-issuer", "issuer.pem", "-cert", "token.pem", "-CAfile", "issuer.pem", "-no_nonce",
        cwd=d,
    )  # fmt: skip
    assert "Response verify OK" in text, text
    line = next(ln for ln in text.splitlines() if ln.startswith("token.pem:"))
    return line.split(":", 1)[1].strip()


def test_act_38_3_token_issued_verified_and_revoked_with_the_approval(
    built: Built, tmp_path: Path
) -> None:
    store, crl = tmp_path / "store", tmp_path / "crl"
    shutil.copytree(built.store, store)
    shutil.copytree(built.crl_dir, crl)
    requests, issued = tmp_path / "token-requests", tmp_path / "token-issued"
    requests.mkdir()
    d = tmp_path / "server"
    extra = (
        "--token-requests",
        str(requests),
        "--token-issued",
        str(issued),
        "--crl-dir",
        str(crl),
    )
    with start_server(built, d, store=store, extra=extra) as s:

        def build(at: datetime) -> dict[str, Any]:
            out = run_tool(
                "crlbuilder", "build", *built.builder_args(store=store, crl_dir=crl),
                "--registry", str(s.registry), "--token-requests", str(requests),
                "--token-issued", str(issued), "--as-of", at.isoformat(),
            )  # fmt: skip
            summary: dict[str, Any] = json.loads(out.stderr.strip().splitlines()[-1])
            return summary

        openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
            "-out", "csr.pem", "-subj", "/CN=specified-verifier",
            "-addext", "subjectAltName=URI:urn:jpki-va:party:specified-verifier", cwd=tmp_path,
        )  # fmt: skip
        csr = (tmp_path / "csr.pem").read_text()
        status, body = post_token(s, csr)
        assert status == 202 and body["status"] == "pending", body
        assert (requests / f"{body['request']}.json").exists()
        # a party that is no 特定利用者証明検証者 is refused, citing the Act
        status, refused = post_token(s, csr, "auth-verifier")
        assert status == 403 and refused["article"].startswith("Act §38-3"), refused

        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        assert build(now)["tokens_issued"] == 1
        status, body = post_token(s, csr)
        assert status == 200 and body["status"] == "issued", body
        (tmp_path / "token.pem").write_text(body["certificate"])
        (tmp_path / "issuer.pem").write_text(body["issuerCertificate"])
        assert "token.pem: OK" in openssl(
            "verify", "-CAfile", "issuer.pem", "-policy_check", "-policy", body["policy"],
            "-explicit_policy", "token.pem", cwd=tmp_path,
        )  # fmt: skip
        demo_ca = built.pki / "ca" / "verifier-token-g1.pem"
        assert demo_ca.read_text().strip() == body["issuerCertificate"].strip()
        # its status by OCSP, to the party itself and to another registered party
        assert ocsp_status(s, tmp_path, PARTY) == "good"
        assert ocsp_status(s, tmp_path, "auth-verifier") == "good"
        # and by POST /v1/status, asked as the answer's link in the document says (its issuer
        # and serial): "token then use"
        assert v1_status(s, body) == "good"

        # the ministers revoke the approval (Act §38-2(6)); the next build revokes the token
        revoked = now + timedelta(seconds=1)
        run_tool(
            "responder", "registry", "update", "--registry", str(s.registry), "--actor", "test",
            "--id", PARTY, "--approval-revoked", revoked.isoformat(),
        )  # fmt: skip
        assert build(revoked + timedelta(seconds=1))["tokens_revoked"] == 1
        assert ocsp_status(s, tmp_path, PARTY) == "revoked"
        # the reason (openssl 3.0 prints 9 as "(UNKNOWN)": its table stops at removeFromCRL)
        token = x509.load_pem_x509_certificate(body["certificate"].encode())
        issuer = x509.load_pem_x509_certificate(body["issuerCertificate"].encode())
        req = ocsp.OCSPRequestBuilder().add_certificate(token, issuer, hashes.SHA1()).build()
        answer = ocsp.load_der_ocsp_response(
            s.post(req.public_bytes(serialization.Encoding.DER), token=s.token(PARTY))
        )
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert v1_status(s, body) == "revoked"
        assert answer.revocation_reason is x509.ReasonFlags.privilege_withdrawn
        # and on the token issuer's delta CRL (the full one follows at its cycle), which any
        # registered party may fetch (no 失効情報ファイル of Act §18(2), §37(2): nothing counted)
        for party in (PARTY, "auth-verifier"):
            req_crl = urllib.request.Request(
                f"{s.url}/crl/verifier-token-g1-delta.crl",
                headers={"Authorization": f"Bearer {s.token(party)}"},
            )
            with urllib.request.urlopen(req_crl, timeout=10) as r:
                listed = x509.load_der_x509_crl(r.read())
            entry = listed.get_revoked_certificate_by_serial_number(token.serial_number)
            assert entry is not None and listed.is_signature_valid(issuer.public_key())


@pytest.mark.real_clock  # the follow loop's scans are timed waits
@pytest.mark.parametrize("ahead", [0.0, 2.5])
def test_follow_issues_a_queued_token_and_revokes_it_when_the_registry_changes(
    built: Built, tmp_path: Path, ahead: float
) -> None:
    """`build --follow` takes a queued request at its next scan, not at its next refresh, and
    revokes the token as soon as the registry says the approval was revoked (Act §38-2(6)):
    at once for a revocation dated now (even one written within the second of a refresh,
    builds being dated in whole seconds), at its instant for one dated ``ahead`` seconds
    later, with no further change of the registry file."""
    store, crl, registry = tmp_path / "store", tmp_path / "crl", tmp_path / "registry.toml"
    shutil.copytree(built.store, store)
    shutil.copy(built.registry, registry)
    requests, issued = tmp_path / "token-requests", tmp_path / "token-issued"
    requests.mkdir()
    (tmp_path / "store-spool").mkdir()  # builder_args' spool: the loop watches it
    args = built.builder_args(store, crl)
    del args[args.index("--as-of") : args.index("--as-of") + 2]  # follow runs on the clock
    args += [
        "--registry", str(registry), "--token-requests", str(requests),
        "--token-issued", str(issued), "--follow", "--follow-interval", "0.1", "--max-idle", "60",
    ]  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(party_uri(PARTY))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rid = request_id(PARTY, spki, approval_window(DEMO_START, None))
    tok = built.manifest.token_issuer
    assert tok is not None
    skey = sf.status_key(tok.index, token_serial(rid))

    def status() -> sf.StatusRecord | None:
        s = Store.open(store, readonly=True)
        try:
            with s.read() as r:
                return r.status(skey)
        finally:
            s.close()

    with started([str(BIN / "crlbuilder"), "build", *args], log=tmp_path / "follow.log"):
        log = tmp_path / "follow.log"
        until(lambda: '"event":"build"' in log.read_text(), 60, "the first build")
        write_request(
            requests,
            TokenRequest(
                id=rid, party=PARTY, csr=csr.public_bytes(serialization.Encoding.DER),
                requested_at=datetime.now(UTC).replace(microsecond=0),
            ),
        )  # fmt: skip
        until(lambda: (issued / f"{rid}.pem").exists() and status(), 20, "the token")
        run_tool(
            "responder", "registry", "update", "--registry", str(registry), "--actor", "test",
            "--id", PARTY, "--approval-revoked",
            (datetime.now(UTC) + timedelta(seconds=ahead)).isoformat(),
        )  # fmt: skip
        st = until(lambda: (x := status()) is not None and x.revoked and x, 20, "the revocation")
        assert st.category == Category.APPROVAL_WITHDRAWN.code
