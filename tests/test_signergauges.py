"""When the responder's signing certificates expire, as /metrics says (`responder.signergauges`),
read from the demo PKI's real certificates in process."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crlbuilder.manifest import Manifest
from responder.config import ResponderConfig
from responder.ocsp import load_issuers
from responder.signergauges import SignerCollector
from responder.v1.jws import load_answer_signer


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
