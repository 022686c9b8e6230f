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
_PKCS1_SIGNATURES: Final = {
    "rsassa_pkcs1v15": None,  # rsaEncryption: the digest algorithm decides
    "sha256_rsa": "sha256",
    "sha384_rsa": "sha384",
    "sha512_rsa": "sha512",
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
    sid = signer_info["sid"]
    certs = [c.chosen for c in signed_data["certificates"] if c.name == "certificate"]
    for c in certs:
        if sid.name == "issuer_and_serial_number":
            match = (
                c.issuer == sid.chosen["issuer"]
                and c.serial_number == sid.chosen["serial_number"].native
            )
        else:
            match = c.key_identifier is not None and c.key_identifier == sid.chosen.native
        if match:
            return load_certificate(c.dump(), "the signer certificate inside the SignedData")
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


def _only(attrs: Any, name: str) -> Any | None:
    """The single value of the signed attribute ``name``, None when absent."""
    found = [a for a in attrs if a["type"].native == name]
    if not found:
        return None
    values = found[0]["values"]
    if len(found) > 1 or len(values) != 1:
        raise malformed(f"the signed attribute {name} must occur once with one value")
    return values[0]


def _verify(
    signer_info: Any, signed_data: Any, cert: x509.Certificate, detached: bytes | None
) -> Signed:
    content, attached = _content(signed_data, detached)
    name = signer_info["digest_algorithm"]["algorithm"].native
    algorithm = hash_named(str(name))
    sig_alg = signer_info["signature_algorithm"]["algorithm"].native
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
        content_type = _only(attrs, "content_type")
        digest = _only(attrs, "message_digest")
        if content_type is None or digest is None:
            raise malformed("the signed attributes lack contentType or messageDigest")
        if content_type.native != signed_data["encap_content_info"]["content_type"].native:
            raise malformed("the contentType attribute differs from the eContentType")
        at = _only(attrs, "signing_time")
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
