"""CMS / PKCS#7 SignedData (RFC 5652 §5), attached or detached: the fields the check reads.

cryptography's pkcs7 module signs but does not verify, so the structure is walked here
and the RSA check is cryptography's. The walk reads only the fields the check uses, each
TLV header with the project's strict DER reader (`crlbuilder.der.der_header`, as the OCSP
and CRL hot paths do): asn1crypto's typed classes built one Python object per field read
and cost more than the two RSA verifications together. Input that is BER but not DER
(indefinite lengths, constructed strings) is first re-encoded as DER (`der_of_ber`, linear
in the input, at most `MAX_BER_DEPTH` levels, within the call's `BerBudget`), then walked
the same way.

One SignedData with exactly one SignerInfo (no SignerInfo is ``malformed``; several are
``unsupported``: which of them would the verdict be about?), its signer certificate
inside ``certificates`` (found by issuerAndSerialNumber or subjectKeyIdentifier),
RSASSA-PKCS1-v1_5 with SHA-256/384/512.

With signed attributes (RFC 5652 §5.4, §11): exactly one contentType equal to the
eContentType, exactly one messageDigest equal to the hash of the content, and the
signature over the DER SET OF the attributes, taken from the bytes received (a SET's
order is the signer's, never re-sorted here); signingTime (§11.3), when present, is the
signing instant the signer claims. Without signed attributes the signature is over the
content itself (then no signingTime can exist), and the eContentType must be id-data
(§5.3: the signature would not cover another type).

Detached: the content is given beside the CMS; an attached signature with content given
too is ``malformed`` (which one was meant?).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from crlbuilder.der import DerError, der_header, der_length
from responder.validation.request import CmsItem
from responder.validation.signature import (
    MAX_CERTIFICATES,
    UNCHECKED,
    CertificateOctets,
    FormatError,
    SignatureOutcome,
    Signed,
    certificate_octets,
    failed,
    hash_named,
    load_certificate,
    malformed,
    proved,
    rsa_key,
    unsupported,
    verify_pkcs1,
)

_PARSE_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)
"""What a bad input raises in the walk (`DerError` is a ValueError) or in asn1crypto."""

_INTEGER: Final = 0x02
_OCTETS: Final = 0x04
_OCTETS_CONSTRUCTED: Final = 0x24
_OID: Final = 0x06
_UTC_TIME: Final = 0x17
_GENERALIZED_TIME: Final = 0x18
_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_IMPLICIT_0: Final = 0x80
"""SignerIdentifier subjectKeyIdentifier [0] IMPLICIT OCTET STRING."""
_CONTEXT_0: Final = 0xA0
"""eContent [0] EXPLICIT, certificates and signedAttrs [0] IMPLICIT."""
_CONTEXT_1: Final = 0xA1
"""crls and unsignedAttrs [1] IMPLICIT."""


def _oid(dotted: str) -> bytes:
    """The OID's DER TLV: the walk compares algorithm and attribute types as octets."""
    return bytes(core.ObjectIdentifier(dotted).dump())


_SIGNED_DATA: Final = _oid("1.2.840.113549.1.7.2")
_ID_DATA: Final = _oid("1.2.840.113549.1.7.1")
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
_ATTRIBUTE_OIDS: Final = {
    _oid("1.2.840.113549.1.9.3"): "content_type",
    _oid("1.2.840.113549.1.9.4"): "message_digest",
    _oid("1.2.840.113549.1.9.5"): "signing_time",
}
"""The signed attributes read here, by their OID's DER."""

_Tlv = tuple[int, int, int, int]
"""(tag, start of the header, start of the content, end)."""


def _children(d: bytes, start: int, end: int) -> list[_Tlv]:
    """The TLVs that fill ``d[start:end]`` exactly."""
    out: list[_Tlv] = []
    p = start
    while p < end:
        tag, s, e = der_header(d, p, end)
        out.append((tag, p, s, e))
        p = e
    return out


def _one(d: bytes, start: int, end: int, tag: int, what: str) -> _Tlv:
    """The single TLV that fills ``d[start:end]``, of ``tag``."""
    kids = _children(d, start, end)
    if len(kids) != 1 or kids[0][0] != tag:
        raise malformed(f"the SignedData's {what} does not parse")
    return kids[0]


def _algorithm(d: bytes, tlv: _Tlv, what: str) -> bytes:
    """An AlgorithmIdentifier's OID (its DER TLV)."""
    tag, _, s, e = tlv
    kids = _children(d, s, e) if tag == _SEQUENCE else []
    if not kids or len(kids) > 2 or kids[0][0] != _OID:
        raise malformed(f"the SignedData's {what} does not parse")
    return d[kids[0][1] : kids[0][3]]


@dataclass(frozen=True, slots=True)
class _Parsed:
    """The fields of a SignedData and of its one SignerInfo that the check reads."""

    content_type: bytes
    """The eContentType's DER TLV."""
    content: bytes | None
    """The eContent, None when detached."""
    certificates: list[bytes]
    """The DER of each Certificate in ``certificates`` (other choices left out)."""
    sid_issuer: bytes | None
    sid_serial: int | None
    sid_key_id: bytes | None
    digest_algorithm: bytes
    signature_algorithm: bytes
    signature: bytes
    signed_attrs: bytes | None
    """The content octets of signedAttrs (the SET OF's elements, as received)."""


def check_cms(item: CmsItem, budget: BerBudget | None = None) -> Signed:
    """The signature check of one ``cms`` item (read, then proved)."""
    return proved(read_cms(item, budget))


def read_cms(item: CmsItem, budget: BerBudget | None = None) -> Signed:
    """One ``cms`` item read and its messageDigest checked, its RSA check left pending
    (`Signed.proof`)."""
    cert: x509.Certificate | None = None
    try:
        parsed = _parse(item.cms, budget if budget is not None else BerBudget())
        cert, octets = _signer_certificate(parsed)
        return _verify(parsed, cert, octets, item.content)
    except FormatError as e:
        return failed(e, cert)
    except _PARSE_ERRORS:
        return failed(malformed("the SignedData does not parse"), cert)


def _parse(blob: bytes, budget: BerBudget) -> _Parsed:
    """The walk; BER that is not DER is re-encoded as DER first (`der_of_ber`)."""
    try:
        return _walk(blob)
    except DerError:
        pass
    try:
        return _walk(der_of_ber(blob, budget))
    except DerError:
        raise malformed("cms is not a DER/BER ContentInfo") from None


def is_der(blob: bytes) -> bool:
    """Whether the walk reads ``blob`` without re-encoding it (`der_of_ber`): a few dozen
    TLV headers, for deciding where a call is answered (`responder.v1.verify`). Input the
    walk refuses for another reason than BER counts as DER (it costs nothing more)."""
    try:
        _walk(blob)
    except DerError:
        return False
    except (FormatError, *_PARSE_ERRORS):
        return True
    return True


MAX_BER_DEPTH: Final = 32
"""Levels of nested TLVs in a BER input (a SignedData's eContent segments stand at 7, a
certificate's deepest field at about 10)."""
BER_TLVS_PER_CALL: Final = 65_536
"""TLVs the BER inputs of one call may hold together (`BerBudget`): re-encoding costs about a
microsecond each, and an 8 MiB document in one-octet segments is 2.8 million of them."""


@dataclass(slots=True)
class BerBudget:
    """What is left of one call's BER re-encoding (`BER_TLVS_PER_CALL` TLVs)."""

    left: int = BER_TLVS_PER_CALL


def der_of_ber(d: bytes, budget: BerBudget | None = None) -> bytes:
    """``d``, one BER TLV (X.690 §8), re-encoded with definite lengths and each constructed
    OCTET STRING joined into one (§8.7.3): DER as far as `_walk` reads it. Linear in the
    input (each level joins its children once; at most `MAX_BER_DEPTH` levels). asn1crypto
    did this before (``load(...).dump(force=True)``), in time growing faster than the input:
    one 8 MiB document in 1,000-octet segments took 12 s of a core, in one-octet segments
    490 s. Takes one unit of ``budget`` per TLV; raises `FormatError` (malformed: not BER;
    unsupported: too deep, or past the call's budget)."""
    call = budget if budget is not None else BerBudget()
    out, end = _ber_tlv(d, 0, len(d), 0, call)
    if end != len(d):
        raise malformed("cms is not a DER/BER ContentInfo")
    return out


def _ber_tlv(d: bytes, p: int, end: int, depth: int, budget: BerBudget) -> tuple[bytes, int]:
    """The TLV at ``d[p]`` (within ``end``) re-encoded, and where it ends in ``d``."""
    if depth > MAX_BER_DEPTH:
        raise unsupported(f"cms nests BER values deeper than {MAX_BER_DEPTH} levels")
    budget.left -= 1
    if budget.left < 0:
        raise unsupported("the call's BER re-encoding is spent: send DER, or fewer BER items")
    if p + 2 > end:
        raise malformed("cms is not a DER/BER ContentInfo")
    tag, n, i = d[p], d[p + 1], p + 2
    if tag & 0x1F == 0x1F:  # a multi-byte tag: none in what a SignedData carries
        raise malformed("cms is not a DER/BER ContentInfo")
    constructed = bool(tag & 0x20)
    parts: list[bytes] = []
    if n == 0x80:  # indefinite: children until end-of-contents (§8.1.3.6)
        if not constructed:
            raise malformed("cms is not a DER/BER ContentInfo")
        while True:
            if i + 2 > end:
                raise malformed("cms is not a DER/BER ContentInfo")
            if d[i] == 0 and d[i + 1] == 0:
                i += 2
                break
            part, i = _ber_tlv(d, i, end, depth + 1, budget)
            parts.append(part)
        stop = i
    else:
        if n > 0x80:
            count = n & 0x7F
            if count > 4 or i + count > end:
                raise malformed("cms is not a DER/BER ContentInfo")
            n = int.from_bytes(d[i : i + count], "big")
            i += count
        stop = i + n
        if stop > end:
            raise malformed("cms is not a DER/BER ContentInfo")
        if not constructed:
            return bytes((tag,)) + der_length(n) + d[i:stop], stop
        while i < stop:
            part, i = _ber_tlv(d, i, stop, depth + 1, budget)
            parts.append(part)
    if tag == _OCTETS_CONSTRUCTED:  # its segments, OCTET STRINGs themselves, joined
        segments = []
        for part in parts:
            if part[0] != _OCTETS:
                raise malformed("the SignedData's eContent is not an OCTET STRING")
            _, s, e = der_header(part, 0, len(part))
            segments.append(part[s:e])
        content = b"".join(segments)
        tag = _OCTETS
    else:
        content = b"".join(parts)
    return bytes((tag,)) + der_length(len(content)) + content, stop


def _walk(d: bytes) -> _Parsed:
    tag, s, e = der_header(d, 0, len(d))
    if tag != _SEQUENCE or e != len(d):
        raise malformed("cms is not a DER/BER ContentInfo")
    info = _children(d, s, e)
    if not 1 <= len(info) <= 2 or info[0][0] != _OID:
        raise malformed("cms is not a DER/BER ContentInfo")
    if d[info[0][1] : info[0][3]] != _SIGNED_DATA:
        raise unsupported("the ContentInfo is not SignedData")
    if len(info) != 2 or info[1][0] != _CONTEXT_0:
        raise malformed("the SignedData does not parse")
    _, _, s, e = _one(d, info[1][2], info[1][3], _SEQUENCE, "content")
    fields = _children(d, s, e)
    if len(fields) < 4 or fields[0][0] != _INTEGER or fields[1][0] != _SET:
        raise malformed("the SignedData does not parse")
    encap, signer_infos, middle = fields[2], fields[-1], fields[3:-1]
    if encap[0] != _SEQUENCE or signer_infos[0] != _SET:
        raise malformed("the SignedData does not parse")
    if [t for t, *_ in middle] not in ([], [_CONTEXT_0], [_CONTEXT_1], [_CONTEXT_0, _CONTEXT_1]):
        raise malformed("the SignedData does not parse")
    content_type, content = _encapsulated(d, encap)
    certificates = [
        d[p:end]
        for t, _, _, _ in middle
        if t == _CONTEXT_0
        for tag, p, _, end in _children(d, middle[0][2], middle[0][3])
        if tag == _SEQUENCE  # a Certificate; the other CertificateChoices are not read
    ]
    if len(certificates) > MAX_CERTIFICATES:
        raise unsupported(f"the SignedData carries more than {MAX_CERTIFICATES} certificates")
    signers = _children(d, signer_infos[2], signer_infos[3])
    if len(signers) == 0:
        raise malformed("the SignedData has no SignerInfo")
    if len(signers) > 1:
        raise unsupported("the SignedData has several SignerInfos: send one signature per item")
    return _signer(d, signers[0], content_type, content, certificates)


def _encapsulated(d: bytes, encap: _Tlv) -> tuple[bytes, bytes | None]:
    """(eContentType's DER TLV, eContent or None)."""
    kids = _children(d, encap[2], encap[3])
    if not 1 <= len(kids) <= 2 or kids[0][0] != _OID:
        raise malformed("the SignedData's encapContentInfo does not parse")
    content_type = d[kids[0][1] : kids[0][3]]
    if len(kids) == 1:
        return content_type, None
    if kids[1][0] != _CONTEXT_0:
        raise malformed("the SignedData's encapContentInfo does not parse")
    tag, p, s, e = _one(d, kids[1][2], kids[1][3], d[kids[1][2]], "eContent")
    if tag == _OCTETS:
        return content_type, d[s:e]
    if tag == _OCTETS_CONSTRUCTED:  # BER: re-encoded first (`der_of_ber`)
        raise DerError("constructed OCTET STRING", p)
    raise malformed("the SignedData's eContent is not an OCTET STRING")


def _signer(
    d: bytes, tlv: _Tlv, content_type: bytes, content: bytes | None, certificates: list[bytes]
) -> _Parsed:
    if tlv[0] != _SEQUENCE:
        raise malformed("the SignerInfo does not parse")
    kids = _children(d, tlv[2], tlv[3])
    if len(kids) < 5 or kids[0][0] != _INTEGER:
        raise malformed("the SignerInfo does not parse")
    sid = kids[1]
    issuer: bytes | None = None
    serial: int | None = None
    key_id: bytes | None = None
    if sid[0] == _SEQUENCE:  # issuerAndSerialNumber
        parts = _children(d, sid[2], sid[3])
        if len(parts) != 2 or parts[0][0] != _SEQUENCE or parts[1][0] != _INTEGER:
            raise malformed("the SignerInfo's sid does not parse")
        issuer = d[parts[0][1] : parts[0][3]]
        serial = int.from_bytes(d[parts[1][2] : parts[1][3]], "big", signed=True)
    elif sid[0] == _IMPLICIT_0:  # subjectKeyIdentifier
        key_id = d[sid[2] : sid[3]]
    else:
        raise malformed("the SignerInfo's sid does not parse")
    rest = kids[3:]
    attrs: bytes | None = None
    if rest[0][0] == _CONTEXT_0:
        attrs = d[rest[0][2] : rest[0][3]]
        if not attrs:  # SignedAttributes ::= SET SIZE (1..MAX) OF Attribute
            raise malformed("the SignerInfo's signedAttrs is empty")
        rest = rest[1:]
    if len(rest) not in (2, 3) or rest[1][0] != _OCTETS:
        raise malformed("the SignerInfo does not parse")
    if len(rest) == 3 and rest[2][0] != _CONTEXT_1:
        raise malformed("the SignerInfo does not parse")
    return _Parsed(
        content_type=content_type, content=content, certificates=certificates,
        sid_issuer=issuer, sid_serial=serial, sid_key_id=key_id,
        digest_algorithm=_algorithm(d, kids[2], "digestAlgorithm"),
        signature_algorithm=_algorithm(d, rest[0], "signatureAlgorithm"),
        signature=d[rest[1][2] : rest[1][3]], signed_attrs=attrs,
    )  # fmt: skip


def _signer_certificate(
    parsed: _Parsed,
) -> tuple[x509.Certificate, CertificateOctets | None]:
    """The certificate ``sid`` names, among those inside, and its octets."""
    for der in parsed.certificates:
        cert = load_certificate(der, "a certificate inside the SignedData")
        octets = certificate_octets(der)
        if parsed.sid_key_id is None:
            issuer = octets.issuer if octets is not None else cert.issuer.public_bytes()
            if cert.serial_number == parsed.sid_serial and issuer == parsed.sid_issuer:
                return cert, octets
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == parsed.sid_key_id:
                return cert, octets
    raise malformed("the signer certificate is not inside the SignedData (certificates)")


def _content(parsed: _Parsed, detached: bytes | None) -> tuple[bytes, bool]:
    """(the signed content, attached)."""
    if parsed.content is None:
        if detached is None:
            raise malformed("a detached SignedData needs its content (content)")
        return detached, False
    if detached is not None:
        raise malformed("content given for a SignedData that carries its own")
    return parsed.content, True


def _attributes(d: bytes) -> dict[str, tuple[int, int, int, int]]:
    """contentType, messageDigest and signingTime by name (their one value's TLV in ``d``):
    each at most once, one value."""
    out: dict[str, _Tlv] = {}
    for tag, _, s, e in _children(d, 0, len(d)):
        kids = _children(d, s, e) if tag == _SEQUENCE else []
        if len(kids) != 2 or kids[0][0] != _OID or kids[1][0] != _SET:
            raise malformed("the signed attributes do not parse")
        name = _ATTRIBUTE_OIDS.get(d[kids[0][1] : kids[0][3]])
        if name is None:
            continue
        values = _children(d, kids[1][2], kids[1][3])
        if name in out or len(values) != 1:
            raise malformed(f"the signed attribute {name} must occur once with one value")
        out[name] = values[0]
    return out


def _signing_time(d: bytes, tlv: _Tlv) -> datetime:
    """signingTime's Time (RFC 5652 §11.3: UTCTime or GeneralizedTime), by asn1crypto."""
    tag, p, _, e = tlv
    kind = {_UTC_TIME: core.UTCTime, _GENERALIZED_TIME: core.GeneralizedTime}.get(tag)
    if kind is None:
        raise malformed("signingTime is not a UTCTime or GeneralizedTime")
    at = kind.load(d[p:e], strict=True).native
    if not isinstance(at, datetime):
        raise malformed("signingTime does not parse")
    if at.tzinfo is None:
        raise malformed("signingTime has no time zone")
    return at


def _verify(
    parsed: _Parsed, cert: x509.Certificate, octets: CertificateOctets | None,
    detached: bytes | None,
) -> Signed:  # fmt: skip
    content, attached = _content(parsed, detached)
    name = _DIGESTS.get(parsed.digest_algorithm, "an unknown hash")
    algorithm = hash_named(name)
    sig_alg = parsed.signature_algorithm
    if sig_alg not in _PKCS1_SIGNATURES:
        raise unsupported("the signature algorithm is not RSASSA-PKCS1-v1_5")
    if _PKCS1_SIGNATURES[sig_alg] not in (None, name):
        raise malformed("the signature algorithm's hash differs from the digest algorithm")
    signature = parsed.signature
    raw = parsed.signed_attrs
    signing_time: datetime | None = None
    if raw is None:
        if parsed.content_type != _ID_DATA:  # RFC 5652 §5.3: the type would not be signed
            raise malformed("a SignerInfo without signed attributes signs id-data content only")
        signed = content
        signed_attributes = False
    else:
        found = _attributes(raw)
        content_type = found.get("content_type")
        digest = found.get("message_digest")
        if content_type is None or digest is None:
            raise malformed("the signed attributes lack contentType or messageDigest")
        if raw[content_type[1] : content_type[3]] != parsed.content_type:
            raise malformed("the contentType attribute differs from the eContentType")
        at = found.get("signing_time")
        signing_time = _signing_time(raw, at) if at is not None else None
        if digest[0] != _OCTETS:
            raise malformed("the messageDigest attribute is not an OCTET STRING")
        h = hashes.Hash(algorithm)
        h.update(content)
        if raw[digest[2] : digest[3]] != h.finalize():
            return Signed(
                SignatureOutcome.MISMATCH,
                "the content's digest differs from the messageDigest attribute (the content was changed)",
                cert, hash=name, signing_time=signing_time, signed_attributes=True, attached=attached,
                octets=octets,
            )  # fmt: skip
        # RFC 5652 §5.4: the signature covers the attributes' DER as an explicit SET OF
        signed = b"\x31" + der_length(len(raw)) + raw
        signed_attributes = True

    def proof() -> tuple[SignatureOutcome, str]:
        if verify_pkcs1(rsa_key(cert), signature, algorithm, data=signed):
            return (
                SignatureOutcome.VALID,
                "the signature verifies with the signer certificate's key",
            )
        return (
            SignatureOutcome.MISMATCH,
            "the signature does not verify with the signer certificate's key",
        )

    return Signed(
        SignatureOutcome.NOT_CHECKED, UNCHECKED, cert, hash=name, signing_time=signing_time,
        signed_attributes=signed_attributes, attached=attached, octets=octets, proof=proof,
    )  # fmt: skip
