"""The JPKI end-entity certificate profile: what a demo sign or auth certificate contains.

This module builds the end-entity certificates (電子証明書) of the four
families the way JPKI profiles them, for the demo PKI's sample certificates
and for tests, and parses the four facts back out of them:

- sign certificates (署名用電子証明書, Act §7, Ord §14) carry the holder's four
  facts (基本4情報) as subjectAltName otherName values under the arc
  1.2.392.200149.8.5.5 (.1 name, .2 name in substitute characters, .3 sex,
  .4 birth date as era digit + YYYYMMDD, .5 address, .6 address in substitute
  characters), each value a DER UTF8String; keyUsage digitalSignature and
  nonRepudiation;
- auth certificates (利用者証明用電子証明書, Act §26, Ord §50) carry no personal
  data at all; keyUsage digitalSignature;
- no subject carries personal data either: the CN is the serial number (発行の番号)
  in hex and the OU names the family;
- every certificate has basicConstraints CA:false, AKI/SKI, the issuer's OCSP
  URL in authorityInformationAccess and the issuer's CRL (失効情報ファイル, Act
  §16, §35) in cRLDistributionPoints, and is signed sha256WithRSAEncryption.

The facts are DER-encoded with asn1crypto; everything else is cryptography's
certificate builder.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from crlbuilder.facts import (
    OID_ADDRESS,
    OID_ADDRESS_ALT,
    OID_BIRTH_DATE,
    OID_NAME,
    OID_NAME_ALT,
    OID_SEX,
)
from crlbuilder.keys.certsign import sign_certificate
from crlbuilder.keys.signer import Signer
from crlbuilder.manifest import IssuerFiles
from crlbuilder.model import Family, FourFacts

__all__ = [
    "SUBJECT_ORGANIZATION",
    "CertProfileError",
    "build_ee_cert",
    "ee_subject",
    "facts_of",
    "facts_other_names",
]

SUBJECT_ORGANIZATION: Final = "JPKI demo"
"""The O of every demo end-entity subject."""


class CertProfileError(ValueError):
    """A certificate that the JPKI profile does not allow (facts on an auth cert, ...).

    Messages never quote the four facts themselves.
    """


def _utf8(value: str) -> bytes:
    """DER of a UTF8String: the otherName value of one JPKI fact."""
    return bytes(core.UTF8String(value).dump())


def facts_other_names(facts: FourFacts) -> list[x509.GeneralName]:
    """The subjectAltName otherName values carrying the four facts, in arc order (.1 to .6)."""
    pairs: list[tuple[x509.ObjectIdentifier, str | None]] = [
        (OID_NAME, facts.name),
        (OID_NAME_ALT, facts.name_alt),
        (OID_SEX, facts.sex.value),
        (OID_BIRTH_DATE, facts.birth_date),
        (OID_ADDRESS, facts.address),
        (OID_ADDRESS_ALT, facts.address_alt),
    ]
    return [x509.OtherName(oid, _utf8(value)) for oid, value in pairs if value is not None]


def ee_subject(family: Family, serial: int) -> x509.Name:
    """``CN=<serial hex>, OU=<family>, O=JPKI demo, C=JP``: no personal data in the subject."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SUBJECT_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, family.value),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{serial:x}"),
        ]
    )


_KEY_USAGE_BITS: Final = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def key_usage(*bits: str) -> x509.KeyUsage:
    """The keyUsage extension (RFC 5280 §4.2.1.3) with exactly ``bits`` set."""
    unknown = set(bits) - set(_KEY_USAGE_BITS)
    if unknown:
        raise ValueError(f"not keyUsage bits: {sorted(unknown)}")
    return x509.KeyUsage(**{b: b in bits for b in _KEY_USAGE_BITS})


_SIGN_USAGE: Final = key_usage("digital_signature", "content_commitment")
_AUTH_USAGE: Final = key_usage("digital_signature")


def build_ee_cert(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey | Signer,
    family: Family,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    public_key: rsa.RSAPublicKey,
    facts: FourFacts | None,
    issuer_files: IssuerFiles,
) -> x509.Certificate:
    """One end-entity certificate of ``family`` per the JPKI profile, signed by the issuer CA.

    ``facts`` must be given for sign families and be None for auth families
    (Act §7 vs §26: auth certificates carry no personal data). The issuer's
    OCSP and CRL URLs come from ``issuer_files``; ``issuer_files.family`` must be
    ``family``. ``issuer_key`` is the CA's private key or its `Signer` (a key in a
    PKCS#11 token: `crlbuilder.keys.certsign`).
    """
    if issuer_files.family is not family:
        raise CertProfileError(f"issuer {issuer_files.id} does not issue {family.value}")
    if family.is_sign and facts is None:
        raise CertProfileError(f"a {family.value} certificate carries the four facts")
    if not family.is_sign and facts is not None:
        raise CertProfileError(f"a {family.value} certificate carries no personal data")
    if not 1 <= serial < 2**159:
        raise CertProfileError("serial must be positive and fit in 20 octets")
    if not_after <= not_before:
        raise CertProfileError("not_after must be later than not_before")
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(ee_subject(family, serial))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGN_USAGE if family.is_sign else _AUTH_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(issuer_files.ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(issuer_files.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    )
    if facts is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(facts_other_names(facts)), critical=False
        )
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return builder.sign(issuer_key, hashes.SHA256())
    return sign_certificate(builder, issuer_key.sign)  # a CA key in a token (Ord §73(4))


_FACT_FIELDS: Final = {
    OID_NAME: "name",
    OID_NAME_ALT: "name_alt",
    OID_SEX: "sex",
    OID_BIRTH_DATE: "birth_date",
    OID_ADDRESS: "address",
    OID_ADDRESS_ALT: "address_alt",
}


def facts_of(cert: x509.Certificate) -> FourFacts | None:
    """The four facts a sign certificate carries, or None when it carries none (auth certificates).

    Raises CertProfileError when some but not all of the mandatory facts
    (name, sex, birth date, address) are present, or a value is not a UTF8String.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    values: dict[str, str] = {}
    for other in san.get_values_for_type(x509.OtherName):
        field = _FACT_FIELDS.get(other.type_id)
        if field is None:
            continue
        try:
            parsed = core.UTF8String.load(other.value, strict=True)
            values[field] = str(parsed.native)
        except (ValueError, TypeError):
            raise CertProfileError(
                f"otherName {other.type_id.dotted_string} is not a UTF8String"
            ) from None
    if not values:
        return None
    missing = [f for f in ("name", "sex", "birth_date", "address") if f not in values]
    if missing:
        raise CertProfileError(f"sign certificate lacks {', '.join(missing)}")
    try:
        return msgspec.convert(values, type=FourFacts)
    except msgspec.ValidationError as e:
        # msgspec may quote the offending value: keep only the field path.
        where = str(e).rpartition(" - at ")[2] if " - at " in str(e) else "$"
        raise CertProfileError(f"invalid four facts (at {where})") from None
