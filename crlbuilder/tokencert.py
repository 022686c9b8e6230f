"""What a `token-issued` record's certificate must show before a node records the token.

A 特定利用者証明検証者証明符号 (Act §38-3) is recorded on every node from the signer's
`crlbuilder.model.TokenIssued` record on the record stream. Any NATS user allowed to publish
there (the feed's publisher too, which holds the facts key that seals a message) could write
such a record, so a record's source header proves nothing. The record therefore carries the
token certificate itself (DER), which only the holder of the token issuer's key can sign, and
`refusal` checks it against the token issuer's certificate (the manifest's ``token_issuer``,
which every node has in its store's issuer table) and against the record: its serial, its
validity and its party (the record's holder is `crlbuilder.tokenrequest.token_holder` of the
party id the certificate names, `crlbuilder.tokens.token_certificate`'s profile). A pure
function of the record and the issuer's certificate: every node decides alike.

A `token-revoked` carries no certificate: it is proven by the token issuer's signature over it,
checked by `crlbuilder.tokenrevocation`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from crlbuilder.tokenrequest import TOKEN_POLICY_OID, token_holder

PARTY_URI: Final = "urn:jpki-va:party:"
"""The prefix of the token's subjectAltName URI, followed by the party id."""


def _party(cert: x509.Certificate) -> str | None:
    """The party id the certificate names: its one subject CN, also named by its one
    subjectAltName URI; None when it names none or two."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return cns[0].value if uris == [PARTY_URI + cns[0].value] else None


def _policies(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return set()
    return {p.policy_identifier for p in ext}


def refusal(
    cert_der: bytes,
    *,
    issuer_der: bytes,
    issuer_id: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    holder: str,
) -> str | None:
    """Why a `token-issued` record of ``issuer_id`` with these fields is refused (one line,
    nothing personal: the party id is not named), or None when ``cert_der`` is a token
    certificate the token issuer (``issuer_der``) signed that says what the record says."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        issuer = x509.load_der_x509_certificate(issuer_der)
    except ValueError:
        return "the token certificate does not parse as DER X.509"
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return f"the token certificate is not signed by the token issuer {issuer_id}"
    if TOKEN_POLICY_OID not in _policies(cert):
        return "the certificate is not a token certificate (no token certificate policy)"
    if cert.serial_number != serial:
        return "the token certificate's serial is not the record's"
    if (cert.not_valid_before_utc, cert.not_valid_after_utc) != (not_before, not_after):
        return "the token certificate's validity is not the record's"
    party = _party(cert)
    if party is None:
        return "the token certificate names no one party (subject CN and subjectAltName URI)"
    if token_holder(party).hex() != holder:
        return "the record's holder is not the party the token certificate names"
    return None
