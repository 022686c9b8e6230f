"""A `token-issued` record's certificate (`crlbuilder.tokencert`): a node records a token only
from a certificate the token issuer signed that says what the record says; and the signer's
upgrade publication (`TokenIssuer.republish_held`) carries the certificates it holds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import TokenIssued, TokenRevoked
from crlbuilder.tokencert import refusal
from crlbuilder.tokenrequest import issued_path, request_path, token_holder, token_serial
from crlbuilder.tokens import TokenReport
from tests.test_token_stream import Forger, signed_token
from tests.test_tokens import (  # noqa: F401  (its fixtures)
    T0,
    World,
    party,
    pki,
    world,
)


def _fields(cert: x509.Certificate, pid: str) -> dict[str, object]:
    return {
        "serial": cert.serial_number,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "holder": token_holder(pid).hex(),
    }


def test_the_signers_certificate_is_accepted_and_every_mismatch_refused(
    world: World,  # noqa: F811
) -> None:
    m = world.manifest
    tok = m.token_issuer
    assert tok is not None
    issuer_der = world.ca().public_bytes(serialization.Encoding.DER)
    cert = signed_token(m, "spec", T0)
    der = cert.public_bytes(serialization.Encoding.DER)
    ok = _fields(cert, "spec")

    def why(cert_der: bytes, **change: object) -> str | None:
        f = ok | change
        return refusal(
            cert_der, issuer_der=issuer_der, issuer_id=tok.id, serial=f["serial"],  # type: ignore[arg-type]
            not_before=f["not_before"], not_after=f["not_after"], holder=f["holder"],  # type: ignore[arg-type]
        )  # fmt: skip

    assert why(der) is None
    forged = signed_token(m, "spec", T0, signer=Forger(world.ca()))
    forged_der = forged.public_bytes(serialization.Encoding.DER)
    assert why(forged_der, **_fields(forged, "spec")) == (
        f"the token certificate is not signed by the token issuer {tok.id}"
    )
    assert why(b"\x30\x03\x02\x01\x01") == "the token certificate does not parse as DER X.509"
    assert why(der, serial=cert.serial_number + 1) == (
        "the token certificate's serial is not the record's"
    )
    later = cert.not_valid_before_utc + timedelta(seconds=1)
    assert why(der, not_before=later) == "the token certificate's validity is not the record's"
    assert why(der, holder=token_holder("mallory-7").hex()) == (
        "the record's holder is not the party the token certificate names"
    )
    # a certificate the token issuer signed that is no token: its delegated OCSP signer's
    ocsp = x509.load_pem_x509_certificate(Path(m.path(tok.ocsp_cert)).read_bytes())
    assert why(ocsp.public_bytes(serialization.Encoding.DER), **_fields(ocsp, "spec")) == (
        "the certificate is not a token certificate (no token certificate policy)"
    )


def test_republish_held_carries_the_certificate_and_a_lost_file_waits_for_its_party(
    world: World,  # noqa: F811
) -> None:
    """Tokens a release before the token records committed to the signer's store alone: the
    upgrade publication carries each one's certificate from the issued directory (every node
    checks it); one whose file is lost is counted, not published as issued, until its party
    asks again: it is then signed again (the stored times) and published."""
    rid, _ = world.queue("spec")
    lost, _ = world.queue("spec")
    queued = request_path(world.requests, lost).read_bytes()
    gone, _ = world.queue("spec2")
    world.write_registry(party(), party("spec2"))
    assert world.build(T0 + timedelta(minutes=1))["tokens_issued"] == 3
    issued_path(world.issued, lost).unlink()
    world.write_registry(party())  # spec2's approval gone: its token revoked
    world.build(T0 + timedelta(minutes=2))
    issuer, published = world.publishing_issuer()
    assert issuer.republish_held() == (3, 1)
    issued = {p.serial: p for p in published if isinstance(p, TokenIssued)}
    (rev,) = [p for p in published if isinstance(p, TokenRevoked)]
    assert set(issued) == {token_serial(rid), token_serial(gone)}
    assert rev.serial == token_serial(gone)
    rec = issued[token_serial(rid)]
    assert rec.certificate == world.token(rid).public_bytes(serialization.Encoding.DER)
    tok = world.manifest.token_issuer
    assert tok is not None
    issuer_der = world.ca().public_bytes(serialization.Encoding.DER)
    for r in issued.values():
        assert refusal(
            r.certificate, issuer_der=issuer_der, issuer_id=tok.id, serial=r.serial,
            not_before=r.not_before, not_after=r.not_after, holder=r.holder,
        ) is None  # fmt: skip
    published.clear()
    request_path(world.requests, lost).write_bytes(queued)  # its party asks again
    issuer.issue(int((T0 + timedelta(minutes=3)).timestamp()), TokenReport())
    (again,) = published
    assert isinstance(again, TokenIssued) and again.serial == token_serial(lost)
    assert again.certificate == world.token(lost).public_bytes(serialization.Encoding.DER)
