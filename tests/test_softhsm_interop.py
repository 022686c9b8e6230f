"""Every signing key in SoftHSM2: the builder and the responder unchanged for real clients (issue 15).

Ord §73(4) and §74(3) want the signing keys (発行者署名符号) on dedicated equipment.
`crlbuilder pki init --keys softhsm` (`crlbuilder.demo.softhsm`) makes a SoftHSM2 token
in a temporary directory and generates in it every CA key, delegated OCSP signer key
and the group relay's responder key; then the same population as the `built` fixture
is synthesized and built with those keys, and a real `responder serve` answers from
them. Checked from outside, as a relying party would: every CRL verifies with
``openssl crl``, every sample's answer with ``openssl ocsp`` (pre-signed, and freshly
signed with a nonce), and the answers are the ones answers.jsonl expects, as with PEM
keys (tests/test_responder_interop.py).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

from crlbuilder.demo.__main__ import commands
from crlbuilder.keys.oplog import OPLOG_ENV, OpRecord, verify_oplog
from crlbuilder.manifest import load_manifest
from responder.v1 import jws
from tests.conftest import Built, make_built, run_tool
from tests.support.harness import Server, start_server, total
from tests.support.wait import until
from tests.test_responder_interop import check_openssl_text, compromised_issuers, openssl_ocsp

pytestmark = [pytest.mark.integration, pytest.mark.interop]

HOLDERS = 400
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.fixture(scope="module")
def hsm_built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """A PKI whose signing keys are all in a fresh SoftHSM2 token, and a build made with them."""
    if not Path(MODULE).exists():
        if os.environ.get("CI") == "true":  # .ci/run installs it: a skip would hide that
            pytest.fail("SoftHSM2 is not installed (Debian package softhsm2)")
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    base = tmp_path_factory.mktemp("hsm")
    pki = base / "pki"
    run_tool("crlbuilder", "pki", "init", "--out", str(pki), "--keys", "softhsm")
    with pytest.MonkeyPatch.context() as mp:  # the tools and the responder find the token
        mp.setenv("SOFTHSM2_CONF", str(pki / "softhsm" / "softhsm2.conf"))
        mp.setenv("JPKIVA_PKCS11_MODULE", MODULE)
        mp.setenv(OPLOG_ENV, str(pki / "softhsm" / "oplog.jsonl"))
        yield make_built(pki, load_manifest(pki), base, HOLDERS)


@pytest.fixture(scope="module")
def hsm_server(hsm_built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(hsm_built, tmp_path_factory.mktemp("hsm-responder")) as s:
        yield s


_TOKEN_KEYS = """
import json, sys, pkcs11
from pkcs11 import Attribute, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(user_pin=open(sys.argv[3]).read().strip()) as s:
    print(json.dumps({k.label: [bool(k[Attribute.SENSITIVE]), bool(k[Attribute.EXTRACTABLE]),
                                k.key_length] for k in s.get_objects(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY})}))
"""


def test_ord_74_every_signing_key_is_generated_in_the_token(hsm_built: Built) -> None:
    """The manifest names each signing key by a pkcs11: URI; the token holds it sensitive and
    non-extractable (Ord §74(3)); no PEM file of a signing key exists; the PIN file is 0600."""
    m = hsm_built.manifest
    # all_issuers: with the token issuer's (Act §38-3)
    refs = [i.key for i in m.all_issuers()] + [i.ocsp_key for i in m.all_issuers()]
    refs += [m.group_responder_key, m.answer_key]  # the /v1 answer-signing key too
    assert all(r.startswith("pkcs11:token=jpki-va-demo;object=") for r in refs), refs
    pem_keys = {p.relative_to(hsm_built.pki) for p in hsm_built.pki.rglob("*.key")}
    assert pem_keys == {Path("tls/client-ca.key"), Path("tls/server.key")} | {
        Path(p.key) for p in m.parties
    }
    pin = hsm_built.pki / "softhsm" / "pin"
    assert pin.stat().st_mode & 0o777 == 0o600
    out = subprocess.run(
        [sys.executable, "-c", _TOKEN_KEYS, MODULE, "jpki-va-demo", str(pin)],
        capture_output=True, text=True, check=True, timeout=60, env=os.environ,
    )  # fmt: skip
    in_token = json.loads(out.stdout)
    labels = {r.split("object=")[1].split(";")[0] for r in refs}
    assert set(in_token) == labels
    assert all(v == [True, False, m.key_size] for v in in_token.values()), in_token


def test_ord_73_3_the_tokens_operations_are_in_its_chained_log(hsm_server: Server) -> None:
    """The set-up's key generations and certificates, and the builder's signing sessions, are
    in the token's operation log (Ord §73(3)), whose chain verifies; no PIN is in it."""
    built = hsm_server.built
    log = built.pki / "softhsm" / "oplog.jsonl"
    records = [msgspec.json.decode(line, type=OpRecord) for line in log.read_bytes().splitlines()]
    report = verify_oplog(log)
    assert report.problems == [] and report.records == len(records) > 0, report.problems
    setup_end = max(n for n, r in enumerate(records) if r.event == "certificate-issued")

    def labels_of(event: str, rs: list[OpRecord]) -> set[str]:
        return {r.key.split("object=")[1].split(";")[0] for r in rs if r.event == event}

    labels = {f"{k}-{i.id}" for i in built.manifest.all_issuers() for k in ("ca", "ocsp")}
    labels |= {"group-responder", "answer-signer"}  # the relay's key, the /v1 answer key
    assert labels_of("key-generated", records) == labels
    assert labels_of("certificate-issued", records) == labels
    # after the set-up: the build's sessions, CA keys for CRLs and delegates for answers
    later = records[setup_end + 1 :]
    compromised = compromised_issuers(built.store)
    live_cas = {f"ca-{i.id}" for i in built.manifest.issuers if i.id not in compromised}
    assert live_cas <= labels_of("signing-session-started", later)
    assert any(k.startswith("ocsp-") for k in labels_of("signing-session-ended", later))
    assert (built.pki / "softhsm" / "pin").read_text().strip() not in log.read_text()


def test_crls_signed_in_the_token_verify_with_openssl(hsm_built: Built) -> None:
    """Every full and delta CRL verifies with ``openssl crl`` against its CA certificate, or
    after a compromise against the successor certificate (docs/operations.md)."""
    m = hsm_built.manifest
    compromised = compromised_issuers(hsm_built.store)
    checked = 0
    for i in m.issuers:
        ca = m.path(i.successor_cert if i.id in compromised and i.successor else i.cert)
        for name in (f"{i.id}.crl", f"{i.id}-delta.crl"):
            crl = hsm_built.crl_dir / name
            out = subprocess.run(
                ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(ca), "-noout"],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            assert out.returncode == 0 and "verify OK" in out.stdout + out.stderr, (name, out)
            checked += 1
    assert checked == 2 * len(m.issuers)


def test_every_sample_presigned_answer_verifies_with_openssl(hsm_server: Server) -> None:
    """POST without a nonce: every sample's pre-signed answer (signed in the token by the
    builder's workers) verifies against its CA and says what answers.jsonl says."""
    for a in hsm_server.built.answers:
        out, err = openssl_ocsp(hsm_server, a, "-no_nonce")
        assert "Response verify OK" in err, (a.case, err)
        check_openssl_text(out, a)


def test_fresh_answers_with_nonce_are_signed_in_the_token(hsm_server: Server) -> None:
    """With a nonce every answer is signed now by a responder worker's own token session."""
    seen: set[tuple[str, str]] = set()
    for a in hsm_server.built.answers:
        if (a.family.value, a.case) in seen:
            continue
        seen.add((a.family.value, a.case))
        out, err = openssl_ocsp(hsm_server, a)
        assert "Response verify OK" in err and "WARNING: no nonce" not in err, (a.case, err)
        check_openssl_text(out, a)
    assert len(seen) > 10


def test_demo_commands_verify_with_keys_in_softhsm(hsm_server: Server) -> None:
    """`make demo KEYS=softhsm` prints the same ready-to-paste commands as with PEM keys, and
    each verifies: a compromised generation's sample names the successor's delegate as a
    trusted responder (-VAfile, RFC 6960 §4.2.2.2), as the PEM demo needs too."""
    d = hsm_server.built.pki.parent  # the demo's layout: pki/, population/, store/
    printed = commands(d, hsm_server.url)
    assert {what.split()[0] for what, _ in printed} == {"good", "revoked", "unknown"}
    for what, cmd in printed:
        out = subprocess.run(
            shlex.split(cmd), capture_output=True, text=True, timeout=30, check=False
        )
        assert "Response verify OK" in out.stderr, (what, cmd, out.stderr)
        assert f": {what.split()[0]}" in out.stdout, (what, out.stdout)


def test_act_38_3_token_signed_with_the_token_issuers_key_in_the_token(
    hsm_built: Built, tmp_path: Path
) -> None:
    """The token issuer's CA key is a pkcs11: URI like the others; the builder signs a
    特定利用者証明検証者証明符号 with it (`crlbuilder.tokens`, through `load_signer`)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509

    from tests.test_tokens import World

    tok = hsm_built.manifest.token_issuer
    assert tok is not None and tok.key.startswith("pkcs11:token=jpki-va-demo;object=")
    w = World(tmp_path, (hsm_built.pki, hsm_built.manifest))
    try:
        at = datetime.now(UTC).replace(microsecond=0)
        rid, key = w.queue(at=at)
        assert w.build(at + timedelta(seconds=1))["tokens_issued"] == 1
        cert = w.token(rid)
        cert.verify_directly_issued_by(w.ca())
        assert isinstance(cert, x509.Certificate)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    finally:
        w.builder.close()


def test_v1_answers_are_signed_by_the_answer_key_in_the_token(hsm_server: Server) -> None:
    """The JWS of a /v1 answer (issue 12 item 7) comes from the answer-signing key in the
    token (a pkcs11: URI): it verifies with the certificate of GET /v1/keys."""
    from tests.test_v1_server import by_serial, v1, v1_raw

    a = hsm_server.built.answers[0]
    code, headers, raw = v1_raw(
        hsm_server, "/v1/status", {"entries": [by_serial(a)]}, "both-verifier"
    )
    assert code == 200, raw
    _, _, jwks = v1(hsm_server, "/v1/keys")
    cert = x509.load_der_x509_certificate(base64.b64decode(jwks["keys"][0]["x5c"][0]))
    assert jws.verify(headers["jws-signature"], raw, cert)["kid"] == jwks["keys"][0]["kid"]


def test_v1_answers_while_the_answer_key_s_token_is_gone_are_503_and_counted(
    hsm_server: Server,
) -> None:
    """The answer-signing key's token gone: each /v1 call is 503 (nothing unsigned goes out)
    and counted in jpkiva_signer_errors_total{signer="answer"}, which alert
    JpkiVaSignerErrors watches (it counted OCSP signers only: nothing showed the /v1 key
    failing); the token back, the answers are signed again."""
    from tests.test_v1_server import by_serial, v1_raw

    a = hsm_server.built.answers[0]
    tokens = hsm_server.built.pki / "softhsm" / "tokens"
    away = tokens.with_name("tokens-away")
    assert total(hsm_server.scrape(), "jpkiva_signer_errors_total", signer="answer") == 0
    tokens.rename(away)
    try:
        for _ in range(2):
            code, headers, raw = v1_raw(
                hsm_server, "/v1/status", {"entries": [by_serial(a)]}, "both-verifier"
            )
            assert code == 503 and "jws-signature" not in headers, raw
        until(
            lambda: total(hsm_server.scrape(), "jpkiva_signer_errors_total", signer="answer") == 2,
            what="the answer key's failures counted",
        )
    finally:
        away.rename(tokens)
    until(
        lambda: (
            v1_raw(hsm_server, "/v1/status", {"entries": [by_serial(a)]}, "both-verifier")[0] == 200
        ),
        what="a signed answer once the token is back",
    )
