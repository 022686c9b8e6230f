"""The certificate path and profile: a JPKI issuer generation, its family, the key usage.

The configured JPKI issuer generations (発行者署名符号の世代) are the store's issuer
table (`StoreReader.issuers`: each generation's id, family, store index and CA
certificate, written by the builder from the PKI manifest); a certificate is the 機構's
when it names one of them as issuer (name, and authorityKeyIdentifier when both carry
key identifiers) and that CA's key verifies the signature on it. The CA certificate must
be valid at the signing instant. Anything else is ``unknown-issuer``.

The family comes from the issuer generation: each generation issues one family. A sign
certificate (署名用電子証明書) is for electronic signatures (電子署名, Act §2(1), (4)); an
auth certificate (利用者証明用電子証明書) proves a login (電子利用者証明, Act §2(2), (5)) and
is refused as ``not-a-sign-certificate``, as is a sign-family certificate without the
profile's keyUsage digitalSignature + nonRepudiation (`crlbuilder.demo.certprofile`), one
that is a CA, or one whose key is not RSA of 2048 bits or more (the electronic signature's
standard, Ord §2).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder.model import Family
from crlbuilder.store.format import IssuerMeta
from crlbuilder.validity import expired_at, not_yet_valid_at
from responder.validation.signature import MIN_RSA_BITS, CertificateOctets

NOT_A_SIGNATURE_ARTICLE: Final = "Act §2(1), (2), (4), (5)"
"""電子署名 vs 電子利用者証明, 署名認証業務 vs 利用者証明認証業務."""


class PathOutcome(enum.Enum):
    OK = "ok"
    UNKNOWN_ISSUER = "unknown-issuer"
    CA_NOT_YET_VALID = "ca-not-yet-valid"
    CA_EXPIRED = "ca-expired"


@dataclass(frozen=True, slots=True)
class Anchor:
    """One configured issuer generation and its parsed CA certificate."""

    meta: IssuerMeta
    cert: x509.Certificate
    ski: bytes | None
    subject: bytes
    """The CA's subject name, DER: what an issued certificate's issuer field copies."""
    subject_text: str
    """The CA's subject name, RFC 4514: an issued certificate's issuer name when it copies
    ``subject``'s octets."""
    key: rsa.RSAPublicKey | None
    """The CA's RSA key, loaded once per issuer record: cryptography's
    ``verify_directly_issued_by`` loads the issuer's key again on every call."""


@dataclass(frozen=True, slots=True)
class PathCheck:
    outcome: PathOutcome
    detail: str
    anchor: Anchor | None
    issuer_name: str
    """The certificate's issuer name, RFC 4514 (``""`` when cryptography cannot render it)."""


@functools.lru_cache(maxsize=128)
def _anchor(meta: IssuerMeta) -> Anchor | None:
    try:
        cert = x509.load_der_x509_certificate(meta.cert_der)
    except ValueError:
        return None
    try:
        ski: bytes | None = cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        ski = None
    try:
        text = cert.subject.rfc4514_string()
    except ValueError:  # an attribute value cryptography cannot render
        text = ""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    rsa_key = key if isinstance(key, rsa.RSAPublicKey) else None
    return Anchor(meta, cert, ski, cert.subject.public_bytes(), text, rsa_key)


def anchors(issuers: Sequence[IssuerMeta]) -> list[Anchor]:
    """The issuer generations of the store, parsed (cached per issuer record)."""
    return [a for meta in issuers if (a := _anchor(meta)) is not None]


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def _rfc4514(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:  # an attribute value cryptography cannot render
        return ""


_PKCS1_SHA2: Final = frozenset(
    {
        x509.SignatureAlgorithmOID.RSA_WITH_SHA256,
        x509.SignatureAlgorithmOID.RSA_WITH_SHA384,
        x509.SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)


def _issued_by(cert: x509.Certificate, a: Anchor, octets: CertificateOctets | None) -> bool:
    """Did ``a``'s key sign ``cert`` (its name already matched)? RSASSA-PKCS1-v1_5 over the
    tbsCertificate as received, with the key loaded once per issuer record; any other
    algorithm, or without the octets, cryptography's ``verify_directly_issued_by``."""
    hash_algorithm = cert.signature_hash_algorithm
    if (
        octets is None
        or a.key is None
        or hash_algorithm is None
        or cert.signature_algorithm_oid not in _PKCS1_SHA2
    ):
        try:
            cert.verify_directly_issued_by(a.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
    try:
        a.key.verify(cert.signature, octets.tbs, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        return False
    return True


def check_path(
    cert: x509.Certificate, known: Sequence[Anchor], at: datetime,
    octets: CertificateOctets | None = None,
) -> PathCheck:  # fmt: skip
    """Which configured issuer generation issued ``cert``, and is its CA valid ``at``?

    ``octets``: the certificate's tbsCertificate and issuer Name as it carries them
    (`responder.validation.signature.certificate_octets`); None: cryptography's.
    """
    aki = _aki(cert)
    raw = octets.issuer if octets is not None else cert.issuer.public_bytes()
    # the octets first; RFC 5280's name comparison (cryptography's Name equality) otherwise
    named = [a for a in known if a.subject == raw]
    if named:
        issuer_name = named[0].subject_text
    else:
        issuer = cert.issuer
        named = [a for a in known if a.cert.subject == issuer]
        issuer_name = _rfc4514(issuer)
    candidates = [a for a in named if aki is None or a.ski is None or a.ski == aki]
    for a in candidates:
        if not _issued_by(cert, a, octets):
            continue
        if not_yet_valid_at(a.cert.not_valid_before_utc, at):
            return PathCheck(
                PathOutcome.CA_NOT_YET_VALID,
                f"the issuing CA certificate ({a.meta.id}) is not yet valid at the signing instant",
                a,
                issuer_name,
            )
        if expired_at(a.cert.not_valid_after_utc, at):
            return PathCheck(
                PathOutcome.CA_EXPIRED,
                f"the issuing CA certificate ({a.meta.id}) had expired at the signing instant",
                a,
                issuer_name,
            )
        return PathCheck(
            PathOutcome.OK, f"issued by the JPKI issuer generation {a.meta.id}", a, issuer_name
        )
    if named:
        return PathCheck(
            PathOutcome.UNKNOWN_ISSUER,
            "the certificate names a JPKI issuer, but that issuer's key did not sign it",
            None,
            issuer_name,
        )
    return PathCheck(
        PathOutcome.UNKNOWN_ISSUER,
        "the certificate was not issued by a configured JPKI issuer generation",
        None,
        issuer_name,
    )


class ProfileOutcome(enum.Enum):
    SIGN = "sign"
    AUTH = "auth"
    """An auth certificate: proves a login, not a signature."""
    OFF_PROFILE = "off-profile"
    """A sign-family certificate without the sign profile's key usage, or a CA."""


@dataclass(frozen=True, slots=True)
class ProfileCheck:
    outcome: ProfileOutcome
    detail: str


def check_profile(cert: x509.Certificate, family: Family) -> ProfileCheck:
    """Is ``cert`` (of ``family``, by its issuer) a sign certificate usable for signatures?"""
    if not family.is_sign:
        return ProfileCheck(
            ProfileOutcome.AUTH,
            f"a {family.japanese} proves a login (電子利用者証明), not a signature (電子署名)",
        )
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            return ProfileCheck(ProfileOutcome.OFF_PROFILE, "the certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ProfileCheck(ProfileOutcome.OFF_PROFILE, "the certificate has no keyUsage")
    missing = [
        name
        for name, bit in (
            ("digitalSignature", usage.digital_signature),
            ("nonRepudiation", usage.content_commitment),
        )
        if not bit
    ]
    if missing:
        return ProfileCheck(
            ProfileOutcome.OFF_PROFILE, f"the certificate's keyUsage lacks {' and '.join(missing)}"
        )
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        return ProfileCheck(
            ProfileOutcome.OFF_PROFILE,
            f"the certificate's key is not an RSA key of {MIN_RSA_BITS} bits or more (Ord §2)",
        )
    return ProfileCheck(
        ProfileOutcome.SIGN,
        f"a {family.japanese}: keyUsage digitalSignature and nonRepudiation",
    )
