"""CMS / PKCS#7 SignedData (RFC 5652 §5), attached or detached, checked with asn1crypto.

cryptography's pkcs7 module signs but does not verify, so the structure is read with
asn1crypto and the RSA check is cryptography's. One SignedData with exactly one
SignerInfo (no SignerInfo is ``malformed``; several are ``unsupported``: which of them
would the verdict be about?), its signer certificate inside ``certificates`` (found by
issuerAndSerialNumber or subjectKeyIdentifier), RSASSA-PKCS1-v1_5 with SHA-256/384/512.

With signed attributes (RFC 5652 §5.4, §11): exactly one contentType equal to the
eContentType, exactly one messageDigest equal to the hash of the content, and the
signature over the DER SET OF the attributes, taken from the bytes received (a SET's
order is the signer's, never re-sorted here); signingTime (§11.3), when present, is the
signing instant the signer claims. Without signed attributes the signature is over the
content itself (then no signingTime can exist).

Detached: the content is given beside the CMS; an attached signature with content given
too is ``malformed`` (which one was meant?).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from crlbuilder.der import der_length
from responder.validation.request import CmsItem
from responder.validation.signature import (
    FormatError,
    SignatureOutcome,
    Signed,
    failed,
    hash_named,
    load_certificate,
    malformed,
    rsa_key,
    unsupported,
    verify_pkcs1,
)

_PARSE_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)
"""What asn1crypto raises on bad input, lazily, as fields are read."""


def _oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


# algorithms by their OID's DER: asn1crypto's OID-to-name mapping is slow on the hot path
_DIGESTS: Final = {
    _oid("2.16.840.1.101.3.4.2.1"): "sha256",
    _oid("2.16.840.1.101.3.4.2.2"): "sha384",
    _oid("2.16.840.1.101.3.4.2.3"): "sha512",
    _oid("1.3.14.3.2.26"): "sha1",
    _oid("2.16.840.1.101.3.4.2.4"): "sha224",
    _oid("1.2.840.113549.2.5"): "md5",
}
_PKCS1_SIGNATURES: Final = {
    _oid("1.2.840.113549.1.1.1"): None,  # rsaEncryption: the digest algorithm decides
    _oid("1.2.840.113549.1.1.11"): "sha256",
    _oid("1.2.840.113549.1.1.12"): "sha384",
    _oid("1.2.840.113549.1.1.13"): "sha512",
}


def check_cms(item: CmsItem) -> Signed:
    """The signature check of one ``cms`` item."""
    cert: x509.Certificate | None = None
    try:
        signer_info, signed_data = _one_signer(item.cms)
        cert = _signer_certificate(signed_data, signer_info)
        return _verify(signer_info, signed_data, cert, item.content)
    except FormatError as e:
        return failed(e, cert)
    except _PARSE_ERRORS:
        return failed(malformed("the SignedData does not parse"), cert)


def _one_signer(der: bytes) -> tuple[Any, Any]:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].native
    except _PARSE_ERRORS:
        raise malformed("cms is not a DER/BER ContentInfo") from None
    if kind != "signed_data":
        raise unsupported("the ContentInfo is not SignedData")
    signed_data = info["content"]
    signers = signed_data["signer_infos"]
    if len(signers) == 0:
        raise malformed("the SignedData has no SignerInfo")
    if len(signers) > 1:
        raise unsupported("the SignedData has several SignerInfos: send one signature per item")
    return signers[0], signed_data


def _signer_certificate(signed_data: Any, signer_info: Any) -> x509.Certificate:
    """The certificate ``sid`` names, among those inside (compared with cryptography's parse:
    asn1crypto's name comparison prepares every string and is slow)."""
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        serial = sid.chosen["serial_number"].native
        issuer = sid.chosen["issuer"].dump()
        key_id = None
    else:
        key_id = sid.chosen.native
    for c in signed_data["certificates"]:
        if c.name != "certificate":
            continue
        cert = load_certificate(c.chosen.dump(), "a certificate inside the SignedData")
        if key_id is None:
            if cert.serial_number == serial and cert.issuer.public_bytes() == issuer:
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == key_id:
                return cert
    raise malformed("the signer certificate is not inside the SignedData (certificates)")


def _content(signed_data: Any, detached: bytes | None) -> tuple[bytes, bool]:
    """(the signed content, attached)."""
    value = signed_data["encap_content_info"]["content"]
    if isinstance(value, core.Void) or value.native is None:
        if detached is None:
            raise malformed("a detached SignedData needs its content (content)")
        return detached, False
    if detached is not None:
        raise malformed("content given for a SignedData that carries its own")
    if isinstance(value, core.ParsableOctetString):
        return bytes(value.__bytes__()), True
    return bytes(value.native), True


_ATTRIBUTE_OIDS: Final = {
    core.ObjectIdentifier(dotted).dump(): name
    for dotted, name in (
        ("1.2.840.113549.1.9.3", "content_type"),
        ("1.2.840.113549.1.9.4", "message_digest"),
        ("1.2.840.113549.1.9.5", "signing_time"),
    )
}
"""The signed attributes read here, by their OID's DER (asn1crypto's OID names are slow)."""


def _attributes(attrs: Any) -> dict[str, Any]:
    """contentType, messageDigest and signingTime by name: each at most once, one value."""
    out: dict[str, Any] = {}
    for a in attrs:
        name = _ATTRIBUTE_OIDS.get(a["type"].dump())
        if name is None:
            continue
        values = a["values"]
        if name in out or len(values) != 1:
            raise malformed(f"the signed attribute {name} must occur once with one value")
        out[name] = values[0]
    return out


def _verify(
    signer_info: Any, signed_data: Any, cert: x509.Certificate, detached: bytes | None
) -> Signed:
    content, attached = _content(signed_data, detached)
    name = _DIGESTS.get(signer_info["digest_algorithm"]["algorithm"].dump(), "an unknown hash")
    algorithm = hash_named(name)
    sig_alg = signer_info["signature_algorithm"]["algorithm"].dump()
    if sig_alg not in _PKCS1_SIGNATURES:
        raise unsupported("the signature algorithm is not RSASSA-PKCS1-v1_5")
    if _PKCS1_SIGNATURES[sig_alg] not in (None, name):
        raise malformed("the signature algorithm's hash differs from the digest algorithm")
    key = rsa_key(cert)
    signature = bytes(signer_info["signature"].native)
    attrs = signer_info["signed_attrs"]
    signing_time: datetime | None = None
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        ok = verify_pkcs1(key, signature, algorithm, data=content)
        signed_attributes = False
    else:
        found = _attributes(attrs)
        content_type = found.get("content_type")
        digest = found.get("message_digest")
        if content_type is None or digest is None:
            raise malformed("the signed attributes lack contentType or messageDigest")
        if content_type.dump() != signed_data["encap_content_info"]["content_type"].dump():
            raise malformed("the contentType attribute differs from the eContentType")
        at = found.get("signing_time")
        signing_time = at.native if at is not None else None
        if signing_time is not None and signing_time.tzinfo is None:
            raise malformed("signingTime has no time zone")
        h = hashes.Hash(algorithm)
        h.update(content)
        if bytes(digest.native) != h.finalize():
            return Signed(
                SignatureOutcome.MISMATCH,
                "the content's digest differs from the messageDigest attribute (the content was changed)",
                cert, hash=name, signing_time=signing_time, signed_attributes=True, attached=attached,
            )  # fmt: skip
        # RFC 5652 §5.4: the signature covers the attributes' DER as an explicit SET OF
        raw = bytes(attrs.contents)
        ok = verify_pkcs1(key, signature, algorithm, data=b"\x31" + der_length(len(raw)) + raw)
        signed_attributes = True
    return Signed(
        SignatureOutcome.VALID if ok else SignatureOutcome.MISMATCH,
        "the signature verifies with the signer certificate's key"
        if ok
        else "the signature does not verify with the signer certificate's key",
        cert, hash=name, signing_time=signing_time, signed_attributes=signed_attributes,
        attached=attached,
    )  # fmt: skip
