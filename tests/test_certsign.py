"""`crlbuilder.keys.certsign`: a certificate signed by a key cryptography cannot hold (Ord §73(4))."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from crlbuilder.keys.certsign import sign_certificate


def _builder(key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )


def test_rfc5280_certificate_signed_by_an_opaque_key_verifies_as_self_signed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = sign_certificate(
        _builder(key), lambda tbs: key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    )
    cert.verify_directly_issued_by(cert)
    assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    assert cert.serial_number == 7


def test_a_signature_by_another_key_does_not_verify() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = sign_certificate(
        _builder(key), lambda tbs: other.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    )
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(cert)
