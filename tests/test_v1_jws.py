"""Signed answers (issue 12 item 7): a detached JWS (RFC 7515 appendix F) over a /v1 answer's
exact bytes, by the answer-signing key whose certificate the party can fetch."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jws as jose

from crlbuilder.keys.signer import PemSigner, SignerError
from crlbuilder.manifest import ANSWER_SIGNING_EKU, Manifest
from responder.config import ResponderConfig, V1Config
from responder.v1.jws import AnswerSigner, load_answer_signer, verify
from tests.support.pki import Ca, certificate, make_ca, rsa_key

EKU = x509.ExtendedKeyUsage([x509.ObjectIdentifier(ANSWER_SIGNING_EKU)])


@pytest.fixture(scope="module")
def root() -> Ca:
    return make_ca("demo root")


def signer_files(root: Ca, d: Path, *, eku: bool = True) -> tuple[Path, Path, x509.Certificate]:
    key = rsa_key()
    cert = root.issue("answer signer", key, extensions=[(EKU, False)] if eku else [])
    key_path, cert_path = d / "answer.key", d / "answer.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, cert


def test_detached_jws_verifies_over_the_exact_body_and_nothing_else(root: Ca) -> None:
    key = rsa_key()
    cert = root.issue("answer signer", key, extensions=[(EKU, False)])
    signer = AnswerSigner(PemSigner(key, cert))
    body = b'{"entries":[{"status":"good"}]}'
    sig = signer.sign(body)
    head, payload, signature = sig.decode().split(".")
    assert payload == "" and head and signature  # RFC 7515 appendix F: detached
    header = verify(sig, body, cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert header["alg"] == "RS256" and header["x5c"] == [base64.b64encode(der).decode()]
    assert header["kid"] == signer.kid
    assert "b64" not in header  # b64 stays true (no RFC 7797)
    with pytest.raises(ValueError, match="does not verify"):
        verify(sig, body + b" ", cert)  # one byte more: not what was signed
    other = root.issue("someone else", rsa_key())
    with pytest.raises(ValueError):
        verify(sig, body, other)
    # an independent check with joserfc's own RS256 and the JWKS a party fetches
    keys = json.loads(signer.jwks)["keys"]
    assert keys[0]["kid"] == signer.kid and keys[0]["x5c"] == header["x5c"]
    from joserfc.jwk import RSAKey

    jwk = RSAKey.import_key(keys[0])
    registry = jose.JWSRegistry(algorithms=["RS256"])
    registry.max_header_length = 4096  # joserfc's default 512 is less than a header with x5c
    got = jose.deserialize_compact(sig.decode(), jwk, payload=body, registry=registry)
    assert got.payload == body


def test_the_answer_key_is_required_and_must_be_an_answer_signing_certificate(
    root: Ca, tmp_path: Path
) -> None:
    manifest = Manifest(
        key_size=2048, base_url="http://x", issuers=[], client_ca="", client_ca_key="",
        server_cert="", server_key="", group_responder_cert="", group_responder_key="",
        directory=str(tmp_path),
    )  # fmt: skip
    with pytest.raises(SignerError, match="no answer-signing key"):
        load_answer_signer(ResponderConfig(), manifest)
    key_path, cert_path, _ = signer_files(root, tmp_path)
    config = ResponderConfig(v1=V1Config(answer_key=str(key_path), answer_cert=cert_path))
    assert load_answer_signer(config, manifest).kid
    in_manifest = msgspec.structs.replace(
        manifest, answer_key="answer.key", answer_cert="answer.pem"
    )
    assert load_answer_signer(ResponderConfig(), in_manifest).kid
    d = tmp_path / "no-eku"
    d.mkdir()
    key_path, cert_path, _ = signer_files(root, d, eku=False)
    config = ResponderConfig(v1=V1Config(answer_key=str(key_path), answer_cert=cert_path))
    with pytest.raises(SignerError, match="not an answer-signing certificate"):
        load_answer_signer(config, manifest)
    key_path.chmod(0o644)  # a key others may read is refused (keys 0600)
    with pytest.raises(SignerError):
        load_answer_signer(config, manifest)


def test_a_rollover_publishes_the_previous_key_so_kept_answers_still_verify_by_kid(
    root: Ca, tmp_path: Path
) -> None:
    """A party keeps an answer and its JWS as evidence, and checks it later against GET
    /v1/keys by ``kid``. After the answer key is rolled over, the JWKS lists the previous
    key too ([v1] published_certs): the old answer still finds its key; the new key signs."""
    from joserfc.jwk import RSAKey

    manifest = Manifest(
        key_size=2048, base_url="http://x", issuers=[], client_ca="", client_ca_key="",
        server_cert="", server_key="", group_responder_cert="", group_responder_key="",
        directory=str(tmp_path),
    )  # fmt: skip
    (old_dir := tmp_path / "old").mkdir()
    (new_dir := tmp_path / "new").mkdir()
    old_key, old_cert_path, _ = signer_files(root, old_dir)
    new_key, new_cert_path, _ = signer_files(root, new_dir)
    before = load_answer_signer(
        ResponderConfig(v1=V1Config(answer_key=str(old_key), answer_cert=old_cert_path)), manifest
    )
    body = b'{"entries":[{"status":"revoked"}]}'
    kept = before.sign(body).decode()  # what the party keeps
    after = load_answer_signer(
        ResponderConfig(
            v1=V1Config(
                answer_key=str(new_key), answer_cert=new_cert_path,
                published_certs=[old_cert_path, new_cert_path],  # a duplicate is listed once
            )
        ),
        manifest,
    )  # fmt: skip
    keys = json.loads(after.jwks)["keys"]
    assert [k["kid"] for k in keys] == [after.kid, before.kid]  # the signing key first
    header = json.loads(base64.urlsafe_b64decode(kept.split(".")[0] + "=="))
    [jwk] = [k for k in keys if k["kid"] == header["kid"]]
    registry = jose.JWSRegistry(algorithms=["RS256"])
    registry.max_header_length = 4096
    got = jose.deserialize_compact(kept, RSAKey.import_key(jwk), payload=body, registry=registry)
    assert got.payload == body
    assert (
        json.loads(base64.urlsafe_b64decode(after.sign(body).split(b".")[0] + b"=="))["kid"]
        == after.kid
    )
    # a published certificate must be an answer-signing one, like answer_cert
    (plain := tmp_path / "plain").mkdir()
    _, plain_cert, _ = signer_files(root, plain, eku=False)
    with pytest.raises(SignerError, match="not an answer-signing certificate"):
        load_answer_signer(
            ResponderConfig(
                v1=V1Config(
                    answer_key=str(new_key), answer_cert=new_cert_path,
                    published_certs=[plain_cert],
                )
            ),
            manifest,
        )  # fmt: skip


def _manifest(d: Path) -> Manifest:
    return Manifest(
        key_size=2048, base_url="http://x", issuers=[], client_ca="", client_ca_key="",
        server_cert="", server_key="", group_responder_cert="", group_responder_key="",
        directory=str(d),
    )  # fmt: skip


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _x5c(value: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(value))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """RFC 7517 §4.7's "each certifying the one before", checked here by hand."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    public = issuer.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and cert.signature_hash_algorithm is not None
    try:
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )  # fmt: skip
    except InvalidSignature:
        return False
    return cert.issuer == issuer.subject


@pytest.mark.parametrize("where", ["answer_issuer", "in the answer_cert file"])
def test_keys_publish_the_chain_leaf_then_issuer_so_kept_answers_check_offline(
    root: Ca, tmp_path: Path, where: str
) -> None:
    key_path, cert_path, leaf = signer_files(root, tmp_path)
    issuer_path = tmp_path / "issuer.pem"
    issuer_path.write_bytes(_pem(root.cert))
    if where == "answer_issuer":
        v1 = V1Config(answer_key=str(key_path), answer_cert=cert_path, answer_issuer=issuer_path)
    else:
        cert_path.write_bytes(_pem(leaf, root.cert))
        v1 = V1Config(answer_key=str(key_path), answer_cert=cert_path)
    # a rollover's previous key, by the same issuer, is published with the chain too;
    # one of another issuer alone
    (other := tmp_path / "other").mkdir()
    _, same_issuer_path, same_issuer = signer_files(root, other)
    (foreign_dir := tmp_path / "foreign").mkdir()
    _, foreign_path, _ = signer_files(make_ca("another root"), foreign_dir)
    v1 = msgspec.structs.replace(v1, published_certs=[same_issuer_path, foreign_path])
    foreign = x509.load_pem_x509_certificate(foreign_path.read_bytes())
    signer = load_answer_signer(ResponderConfig(v1=v1), _manifest(tmp_path))
    keys = json.loads(signer.jwks)["keys"]
    chain = [_x5c(v) for v in keys[0]["x5c"]]
    assert chain == [leaf, root.cert]  # leaf first (RFC 7517 §4.7)
    assert _signed_by(chain[0], chain[1]) and _signed_by(root.cert, root.cert)  # to the anchor
    assert [_x5c(v) for v in keys[1]["x5c"]] == [same_issuer, root.cert]
    assert [_x5c(v) for v in keys[2]["x5c"]] == [foreign]
    # the answer's own header names the certificate alone; the answer verifies by it
    body = b'{"entries":[]}'
    assert verify(signer.sign(body), body, chain[0])["x5c"] == keys[0]["x5c"][:1]


def test_a_chain_that_does_not_verify_refuses_to_start(root: Ca, tmp_path: Path) -> None:
    """``responder serve`` prints a `SignerError` and exits 2 (responder.cli): a chain whose
    issuer did not sign the certificate (another key under the same name), an unrelated CA,
    an empty issuer file, or a chain given twice."""
    key_path, cert_path, leaf = signer_files(root, tmp_path)
    impostor = make_ca("demo root")  # the same name, another key
    unrelated = make_ca("another root")
    issuer_path = tmp_path / "issuer.pem"
    manifest = _manifest(tmp_path)
    for issuer, match in [
        (impostor.cert, "does not verify: certificate 1 .*demo root"),
        (unrelated.cert, "does not verify: certificate 1"),
    ]:
        issuer_path.write_bytes(_pem(issuer))
        v1 = V1Config(answer_key=str(key_path), answer_cert=cert_path, answer_issuer=issuer_path)
        with pytest.raises(SignerError, match=match):
            load_answer_signer(ResponderConfig(v1=v1), manifest)
        cert_path.write_bytes(_pem(leaf, issuer))  # the same chain in the certificate's file
        v1 = V1Config(answer_key=str(key_path), answer_cert=cert_path)
        with pytest.raises(SignerError, match=match):
            load_answer_signer(ResponderConfig(v1=v1), manifest)
        cert_path.write_bytes(_pem(leaf))
    issuer_path.write_bytes(b"")
    v1 = V1Config(answer_key=str(key_path), answer_cert=cert_path, answer_issuer=issuer_path)
    with pytest.raises(SignerError, match="no PEM certificate"):
        load_answer_signer(ResponderConfig(v1=v1), manifest)
    issuer_path.write_bytes(_pem(root.cert))
    cert_path.write_bytes(_pem(leaf, root.cert))
    with pytest.raises(SignerError, match="give one"):
        load_answer_signer(ResponderConfig(v1=v1), manifest)


def test_no_answer_is_signed_under_an_expired_answer_signing_certificate(
    root: Ca, tmp_path: Path
) -> None:
    """The answer-signing certificate's validity was never checked: a responder kept signing
    /v1 answers after its notAfter (and started with an expired one), evidence a party
    checking it against its trust anchor must reject. Signed through the notAfter's second,
    refused after it (the routes answer 503); refused at start unless a worker's
    (``outage_ok``: the master checked)."""
    key = rsa_key()
    cert = root.issue("answer signer", key, extensions=[(EKU, False)])
    end = cert.not_valid_after_utc.timestamp()
    at = [end]
    signer = AnswerSigner(PemSigner(key, cert), clock=lambda: at[0])
    verify(signer.sign(b"{}"), b"{}", cert)  # within the notAfter second (inclusive)
    at[0] = end + 1
    with pytest.raises(SignerError, match="answer-signing certificate expired at"):
        signer.sign(b"{}")
    old = certificate(
        "answer signer", key, root.key, issuer=root.cert.subject,
        not_before=datetime(2020, 1, 1, tzinfo=UTC), days=30, extensions=[(EKU, False)],
    )  # fmt: skip
    key_path, cert_path, _ = signer_files(root, tmp_path)
    cert_path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = ResponderConfig(v1=V1Config(answer_key=str(key_path), answer_cert=cert_path))
    manifest = _manifest(tmp_path)
    with pytest.raises(
        SignerError, match="the answer-signing certificate: its certificate is expired"
    ):
        load_answer_signer(config, manifest)
    worker = load_answer_signer(config, manifest, outage_ok=True)
    with pytest.raises(SignerError, match="expired at 2020-01-31"):
        worker.sign(b"{}")
