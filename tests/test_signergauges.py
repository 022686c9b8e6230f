"""When the responder's signing certificates expire, as /metrics says (`responder.signergauges`),
read from the demo PKI's real certificates in process."""

from __future__ import annotations

from pathlib import Path

import msgspec
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crlbuilder.manifest import Manifest
from responder.config import ResponderConfig, TokenConfig
from responder.ocsp import load_issuers
from responder.signergauges import SignerCollector
from responder.v1.jws import load_answer_signer
from responder.v1.token import issuer_not_after as token_issuer_not_after


def scrape(collector: SignerCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def not_after(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


def test_the_answer_signing_and_ocsp_signer_certificates_not_after(
    demo_pki: tuple[Path, Manifest],
) -> None:
    """The /v1 answer-signing certificate's notAfter is exported beside the OCSP signers' (its
    expiry makes every /v1 answer 503, alert JpkiVaAnswerSignerExpiring), to the second the
    certificate file says."""
    pki, manifest = demo_pki
    views = load_issuers(manifest)
    answer = load_answer_signer(ResponderConfig(), manifest)
    got = scrape(SignerCollector(views, answer.not_after))
    assert got[("jpkiva_answer_signer_not_after_timestamp_seconds", ())] == not_after(
        pki / manifest.answer_cert
    )
    ocsp = {
        dict(labels)["issuer"]: value
        for (name, labels), value in got.items()
        if name == "jpkiva_ocsp_signer_not_after_timestamp_seconds"
    }
    assert ocsp == {i.id: not_after(pki / i.ocsp_cert) for i in manifest.all_issuers()}


def test_no_answer_signing_series_where_no_answer_is_signed(
    demo_pki: tuple[Path, Manifest],
) -> None:
    _, manifest = demo_pki
    got = scrape(SignerCollector(load_issuers(manifest)))
    assert not any(name == "jpkiva_answer_signer_not_after_timestamp_seconds" for name, _ in got)
    assert any(name == "jpkiva_ocsp_signer_not_after_timestamp_seconds" for name, _ in got)


def test_the_token_issuer_certificate_not_after_where_tokens_are_requested(
    demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """Where this responder takes token requests ([token]), the token issuer's certificate's
    notAfter (no token outlives it; past it POST /v1/token is 503): alert
    JpkiVaTokenIssuerExpiring. Without [token], or a PKI without a token issuer, no series."""
    pki, manifest = demo_pki
    tok = manifest.token_issuer
    assert tok is not None
    views = load_issuers(manifest)
    assert token_issuer_not_after(ResponderConfig(), manifest) is None  # no [token]
    config = ResponderConfig(
        token=TokenConfig(request_dir=tmp_path / "requests", issued_dir=tmp_path / "issued")
    )
    token = token_issuer_not_after(config, manifest)
    assert token is not None
    got = scrape(SignerCollector(views, token=token))
    key = ("jpkiva_token_issuer_not_after_timestamp_seconds", (("issuer", tok.id),))
    assert got[key] == not_after(pki / tok.cert)
    assert not any(name == "jpkiva_answer_signer_not_after_timestamp_seconds" for name, _ in got)
    without = msgspec.structs.replace(manifest, token_issuer=None)
    assert token_issuer_not_after(config, without) is None
    got = scrape(SignerCollector(views))
    assert not any(name == "jpkiva_token_issuer_not_after_timestamp_seconds" for name, _ in got)
