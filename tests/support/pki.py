"""Small hand-made CAs and certificates for tests and benchmarks (not the demo PKI).

`certificate` builds and signs one certificate (SHA-256) with the extensions a test
names; `make_ca` a self-signed CA (RSA-2048 unless a key is given) with basic constraints,
key usage and a subject key identifier, and `Ca.issue` certificates under it. The demo
PKI of JPKI's families (`crlbuilder.demo.pki.init_pki`) is another thing: use it when the
test is about the product's issuers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from crlbuilder.demo.certprofile import key_usage

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
REASON_FLAGS = {
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
"""CRLReason codes (RFC 5280 §5.3.1) and cryptography's flags, 0 (unspecified) aside."""
START = datetime(2025, 1, 1, tzinfo=UTC)
"""The default notBefore of `make_ca`: fixed, so CA certificates do not depend on the day."""


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(cn: str, *, organization: str | None = None, country: str | None = None) -> x509.Name:
    """C, O, CN (those given)."""
    attrs = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def certificate(
    subject: x509.Name | str,
    key: Key,
    signer: Key | None = None,
    *,
    issuer: x509.Name | None = None,
    serial: int | None = None,
    not_before: datetime | None = None,
    days: float = 30,
    ca: bool | None = None,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    ski: bool = False,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate for ``key``'s public key, signed by ``signer`` (self-signed by ``key``).

    ``issuer`` defaults to the subject (self-issued); ``serial`` to a random one;
    ``not_before`` to a day ago. ``ca`` adds critical basic constraints (with
    ``path_length``), ``usage`` a critical key usage, ``ski`` the subject key identifier;
    ``extensions`` are further (extension, critical) pairs, added in order.
    """
    subject_name = name(subject) if isinstance(subject, str) else subject
    start = not_before or datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer or subject_name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signer or key, hashes.SHA256())


class Ca(NamedTuple):
    """A CA's key and self-signed certificate (unpacks as ``key, cert``)."""

    key: Key
    cert: x509.Certificate

    def issue(
        self,
        subject: x509.Name | str,
        key: Key,
        *,
        serial: int | None = None,
        days: float = 30,
        ca: bool | None = None,
        usage: x509.KeyUsage | None = None,
        extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    ) -> x509.Certificate:
        """A certificate under this CA (arguments as `certificate`'s)."""
        return certificate(
            subject, key, self.key, issuer=self.cert.subject, serial=serial, days=days, ca=ca,
            usage=usage, extensions=extensions,
        )  # fmt: skip


def make_ca(
    cn: str,
    key: Key | None = None,
    *,
    organization: str | None = None,
    country: str | None = "JP",
    serial: int = 1,
    not_before: datetime = START,
    days: float = 3650,
    path_length: int | None = 0,
    digital_signature: bool = False,
    crl_sign: bool = True,
    ski: bool = True,
) -> Ca:
    """A fresh self-signed CA (RSA-2048 unless ``key``): CA basic constraints, keyCertSign
    (and cRLSign, digitalSignature as asked) and a subject key identifier."""
    key = key or rsa_key()
    cert = certificate(
        name(cn, organization=organization, country=country), key,
        serial=serial, not_before=not_before, days=days, ca=True, path_length=path_length,
        usage=key_usage(
            "key_cert_sign",
            *(["crl_sign"] if crl_sign else []),
            *(["digital_signature"] if digital_signature else []),
        ),
        ski=ski,
    )  # fmt: skip
    return Ca(key, cert)
