"""OCSP request parsing (OCSP要求の解析): DER bytes in, an `OcspRequest` or a `RequestError` out.

This module owns how the responder reads what a relying party sends when it
asks for 失効情報 by OCSP (Act §18(1) for signature certificates, §37(1) for
user certificates): the OCSPRequest of RFC 6960 §4.1 as profiled by RFC 5019 /
RFC 9919, the nonce of RFC 9654 and the GET form of RFC 6960 appendix A.1.
It is sans-I/O: no sockets, no store, no clock.

Errors: `parse_request` raises `RequestError`, whose ``status`` is the
OCSPResponseStatus to answer with (always malformedRequest here). Raising
costs nothing on the success path (Python 3.11 zero-cost ``try``), so the
common case stays a straight walk; callers wrap the call in one
``try/except RequestError``. No other exception escapes, whatever the bytes.

The DER walker is hand-written because it runs on every request (about
1.3 µs for the canonical RFC 5019 request, 45 µs with asn1crypto; see
bench/bench_ocsp.py). The canonical request (one sha1 or sha256 CertID, no
extension, no signature, all lengths short) is recognised by a few slice
comparisons on its fixed layout; everything else takes the general walk.
Both are strict DER where it matters (definite, minimal lengths; minimal
INTEGERs; no trailing bytes at any level) and are tested to agree with each
other and with asn1crypto on generated requests, and to raise nothing but
`RequestError` on random, truncated and bit-flipped input.

Decisions:

- CertID hash algorithms: sha1 and sha256 come back as ``"sha1"`` and
  ``"sha256"`` (their hashes must then be 20 and 32 bytes, else the request
  is malformed). Any other algorithm is well-formed OCSP and comes back as
  its dotted OID. The responder cannot recognise the issuer by it and answers
  the whole request ``unauthorized`` (RFC 6960 §2.3: "the server is not
  capable of responding authoritatively"), not a signed ``unknown`` (RFC
  6960 §2.2). Both are allowed; ``unauthorized`` is chosen because a signed
  answer needs what the issuer decides: the delegated signer (each issuer
  generation has its own, RFC 6960 §4.2.2.2, and signing with another
  issuer's would be a false claim of authority), and the provision decision
  (提供の可否), which depends on the certificate's family (sign: Act §18(1),
  auth: §37(1)) and is made before any lookup. A CertID naming no issuer of
  ours is treated the same way (`responder.ocsp.OcspService.issuer_of`).
- Extensions: the nonce (RFC 9654) is read; acceptable responses,
  preferred signature algorithms (request) and service locator
  (single request) are understood and ignored (we always answer with
  id-pkix-ocsp-basic and sha256WithRSAEncryption, and we are authoritative).
  Unknown non-critical extensions are ignored (RFC 6960 §4.4), their OIDs
  listed in ``unknown_extensions``; an unknown critical one, or any extension
  twice, makes the request malformed.
- Nonce: the extnValue must hold exactly one OCTET STRING of 1 to
  ``max_nonce`` bytes (RFC 9654 §2.1: 0 or more than 128 is malformedRequest).
- A signed request is parsed, not verified: ``signature`` carries what the
  caller needs to verify it against a registered party's certificate.
"""

from __future__ import annotations

import binascii
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from crlbuilder.der import DerError, der_header
from crlbuilder.ocsp.response import ResponseStatus


class RequestError(Exception):
    """A request we answer with an error ``responseStatus`` (OCSP応答の状態) instead of data.

    ``reason`` is a fixed short phrase for logs and metrics; it never
    contains request bytes.
    """

    __slots__ = ("reason", "status")

    def __init__(self, reason: str, status: ResponseStatus = ResponseStatus.MALFORMED_REQUEST):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class CertId(NamedTuple):
    """One CertID of a request (RFC 6960 §4.1.1).

    ``serial`` is the INTEGER as sent: it may be negative or longer than the
    20 octets RFC 5280 allows (no such certificate exists: answer unknown).
    ``der`` is the CertID's exact DER, to echo in the SingleResponse.
    """

    hash_alg: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes


class RequestSignature(NamedTuple):
    """The optionalSignature of a signed request (RFC 6960 §4.1.2), unverified.

    Verify ``signature`` over ``tbs_request_der`` with the algorithm
    ``algorithm_der`` (the full AlgorithmIdentifier; ``algorithm_oid`` is its
    dotted OID) and the public key of the party's registered certificate;
    ``certs`` are the DER certificates the requestor attached, if any.
    """

    algorithm_oid: str
    algorithm_der: bytes
    signature: bytes
    certs: tuple[bytes, ...]
    tbs_request_der: bytes


class OcspRequest(NamedTuple):
    """A parsed OCSPRequest."""

    cert_ids: tuple[CertId, ...]
    nonce: bytes | None
    """The nonce value (the content of the inner OCTET STRING), or None."""
    requestor_name: bytes | None
    """The DER of the requestorName GeneralName, or None."""
    signature: RequestSignature | None
    unknown_extensions: tuple[str, ...] = ()
    """Dotted OIDs of the non-critical request extensions we ignored."""


# --- the DER walker ---------------------------------------------------------

_OID_NONCE: Final = bytes.fromhex("2b0601050507300102")
_REQUEST_EXTENSIONS: Final = frozenset(
    {
        bytes.fromhex("2b0601050507300104"),  # id-pkix-ocsp-response (acceptable responses)
        bytes.fromhex("2b0601050507300108"),  # id-pkix-ocsp-pref-sig-algs (RFC 6960 §4.4.7)
    }
)
_SINGLE_REQUEST_EXTENSIONS: Final = frozenset(
    {bytes.fromhex("2b0601050507300107")}  # id-pkix-ocsp-service-locator (RFC 6960 §4.4.6)
)

# Complete hashAlgorithm AlgorithmIdentifiers (parameters NULL or absent) -> (name, hash size).
_HASH_ALGS: Final = {
    bytes.fromhex("300906052b0e03021a0500"): ("sha1", 20),
    bytes.fromhex("300706052b0e03021a"): ("sha1", 20),
    bytes.fromhex("300d06096086480165030402010500"): ("sha256", 32),
    bytes.fromhex("300b0609608648016503040201"): ("sha256", 32),
}
_HASH_OIDS: Final = frozenset({bytes.fromhex("2b0e03021a"), bytes.fromhex("608648016503040201")})


def _oid_str(content: bytes) -> str:
    """The dotted form of OBJECT IDENTIFIER content octets (validated)."""
    if not content or content[-1] & 0x80:
        raise RequestError("bad object identifier")
    arcs: list[int] = []
    value = 0
    fresh = True
    for b in content:
        if fresh and b == 0x80:
            raise RequestError("bad object identifier")
        value = (value << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(map(str, head + arcs[1:]))


def _integer(d: bytes, i: int, e: int) -> int:
    if i == e:
        raise RequestError("empty integer")
    if e - i > 1:
        b0 = d[i]
        b1 = d[i + 1]
        if (b0 == 0 and b1 < 0x80) or (b0 == 0xFF and b1 >= 0x80):
            raise RequestError("non-minimal integer")
    return int.from_bytes(d[i:e], "big", signed=True)


def _algorithm(d: bytes, i: int, e: int) -> bytes:
    """Check an AlgorithmIdentifier whose content is d[i:e]; return its OID content."""
    tag, oi, oe = der_header(d, i, e)
    if tag != 0x06:
        raise RequestError("bad algorithm identifier")
    if oe < e:
        _, _, pe = der_header(d, oe, e)
        if pe != e:
            raise RequestError("bad algorithm identifier")
    return d[oi:oe]


def _extensions(
    d: bytes, i: int, e: int, known: frozenset[bytes], max_nonce: int
) -> tuple[bytes | None, list[str]]:
    """Walk an [n] EXPLICIT Extensions whose content is d[i:e].

    Returns the nonce (when ``max_nonce`` > 0, i.e. request extensions) and
    the dotted OIDs of ignored non-critical extensions.
    """
    tag, p, xe = der_header(d, i, e)
    if tag != 0x30 or xe != e:
        raise RequestError("bad extensions")
    nonce: bytes | None = None
    unknown: list[str] = []
    seen: set[bytes] = set()
    while p < xe:
        tag, ei, ee = der_header(d, p, xe)
        if tag != 0x30:
            raise RequestError("bad extension")
        tag, oi, oe = der_header(d, ei, ee)
        if tag != 0x06:
            raise RequestError("bad extension")
        oid = d[oi:oe]
        if oid in seen:
            raise RequestError("duplicate extension")
        seen.add(oid)
        critical = False
        tag, vi, ve = der_header(d, oe, ee)
        if tag == 0x01:
            if ve - vi != 1:
                raise RequestError("bad extension")
            critical = d[vi] != 0
            tag, vi, ve = der_header(d, ve, ee)
        if tag != 0x04 or ve != ee:
            raise RequestError("bad extension")
        if max_nonce and oid == _OID_NONCE:
            tag, ni, ne = der_header(d, vi, ve)
            if tag != 0x04 or ne != ve:
                raise RequestError("bad nonce")
            if ni == ne or ne - ni > max_nonce:
                raise RequestError("nonce length")
            nonce = d[ni:ne]
        elif oid not in known:
            name = _oid_str(oid)
            if critical:
                raise RequestError("unsupported critical extension")
            unknown.append(name)
        p = ee
    return nonce, unknown


def _signature(d: bytes, i: int, e: int, tbs: bytes) -> RequestSignature:
    """Walk the [0] EXPLICIT Signature whose content is d[i:e]."""
    tag, si, se = der_header(d, i, e)
    if tag != 0x30 or se != e:
        raise RequestError("bad signature")
    tag, ai, ae = der_header(d, si, se)
    if tag != 0x30:
        raise RequestError("bad signature algorithm")
    oid = _oid_str(_algorithm(d, ai, ae))
    tag, bi, be = der_header(d, ae, se)
    if tag != 0x03 or bi == be or d[bi] != 0:
        raise RequestError("bad signature value")
    certs: list[bytes] = []
    if be < se:
        tag, ci, ce = der_header(d, be, se)
        if tag != 0xA0 or ce != se:
            raise RequestError("bad signature certs")
        tag, p, le = der_header(d, ci, ce)
        if tag != 0x30 or le != ce:
            raise RequestError("bad signature certs")
        while p < le:
            tag, _, xe = der_header(d, p, le)
            if tag != 0x30:
                raise RequestError("bad signature certs")
            certs.append(d[p:xe])
            p = xe
    return RequestSignature(oid, d[si:ae], d[bi + 1 : be], tuple(certs), tbs)


def _parse(d: bytes, max_certids: int, max_nonce: int) -> OcspRequest:
    """The walker proper: raises only RequestError or DerError (a bad header) on well-typed arguments."""
    n = len(d)
    tag, i, end = der_header(d, 0, n)
    if tag != 0x30:
        raise RequestError("not an OCSPRequest")
    if end != n:
        raise RequestError("trailing data")
    # TBSRequest
    tbs_start = i
    tag, i, tend = der_header(d, i, end)
    if tag != 0x30:
        raise RequestError("bad tbsRequest")
    tag, ci, ce = der_header(d, i, tend)
    if tag == 0xA0:  # version [0] EXPLICIT, DEFAULT v1: accept an explicit v1 (0)
        tag, vi, ve = der_header(d, ci, ce)
        if tag != 0x02 or ve != ce or _integer(d, vi, ve) != 0:
            raise RequestError("unsupported version")
        tag, ci, ce = der_header(d, ce, tend)
    requestor: bytes | None = None
    if tag == 0xA1:  # requestorName [1] EXPLICIT GeneralName
        tag, _, ge = der_header(d, ci, ce)
        if ge != ce or not (0x80 <= tag <= 0x88 or 0xA0 <= tag <= 0xA8):
            raise RequestError("bad requestorName")
        requestor = d[ci:ce]
        tag, ci, ce = der_header(d, ce, tend)
    if tag != 0x30:
        raise RequestError("bad requestList")
    # requestList: SEQUENCE OF Request { CertID, [0] EXPLICIT Extensions OPTIONAL }
    hash_algs = _HASH_ALGS
    cert_ids: list[CertId] = []
    p = ci
    while p < ce:
        if len(cert_ids) >= max_certids:
            raise RequestError("too many CertIDs")
        tag, ri, re_ = der_header(d, p, ce)
        if tag != 0x30:
            raise RequestError("bad Request")
        tag, ki, ke = der_header(d, ri, re_)
        if tag != 0x30:
            raise RequestError("bad CertID")
        # Fast path: a known hashAlgorithm fixes the layout of the two hashes.
        short = ke - ki >= 2 and d[ki] == 0x30 and d[ki + 1] < 0x80
        ae = ki + 2 + d[ki + 1] if short else ki
        known = hash_algs.get(d[ki:ae])
        if known is not None:
            alg, size = known
            hi = ae + 2
            he = hi + size
            yi = he + 2
            ye = yi + size
            if ye > ke or d[ae] != 4 or d[ae + 1] != size or d[he] != 4 or d[he + 1] != size:
                raise RequestError("bad CertID hashes")
        else:
            tag, ai, ae = der_header(d, ki, ke)
            if tag != 0x30:
                raise RequestError("bad hashAlgorithm")
            oid = _algorithm(d, ai, ae)
            if oid in _HASH_OIDS:
                raise RequestError("bad hashAlgorithm parameters")
            alg = _oid_str(oid)
            tag, hi, he = der_header(d, ae, ke)
            if tag != 0x04:
                raise RequestError("bad issuerNameHash")
            tag, yi, ye = der_header(d, he, ke)
            if tag != 0x04:
                raise RequestError("bad issuerKeyHash")
        tag, si, se = der_header(d, ye, ke)
        if tag != 0x02 or se != ke:
            raise RequestError("bad serialNumber")
        if ke != re_:
            tag, xi, xe = der_header(d, ke, re_)
            if tag != 0xA0 or xe != re_:
                raise RequestError("bad singleRequestExtensions")
            _extensions(d, xi, xe, _SINGLE_REQUEST_EXTENSIONS, 0)
        cert_ids.append(CertId(alg, d[hi:he], d[yi:ye], _integer(d, si, se), d[ri:ke]))
        p = re_
    if not cert_ids:
        raise RequestError("no CertID")
    nonce: bytes | None = None
    unknown: tuple[str, ...] = ()
    if ce < tend:  # requestExtensions [2] EXPLICIT Extensions
        tag, xi, xe = der_header(d, ce, tend)
        if tag != 0xA2 or xe != tend:
            raise RequestError("bad requestExtensions")
        nonce, found = _extensions(d, xi, xe, _REQUEST_EXTENSIONS, max_nonce)
        unknown = tuple(found)
    signature: RequestSignature | None = None
    if tend < end:  # optionalSignature [0] EXPLICIT Signature
        tag, gi, ge = der_header(d, tend, end)
        if tag != 0xA0 or ge != end:
            raise RequestError("bad optionalSignature")
        signature = _signature(d, gi, ge, d[tbs_start:tend])
    return OcspRequest(tuple(cert_ids), nonce, requestor, signature, unknown)


# The canonical RFC 5019 request (one CertID with a sha1 or sha256 hashAlgorithm with NULL
# parameters, no extension, no signature, every length in short form) has a fixed layout once
# its total size is known: checked with a few slice comparisons instead of the walk. Only
# requests that can be served from a pre-signed answer take it (a nonce means signing anyway).
_CANONICAL_PREFIX: Final = {
    n: bytes((0x30, n - 2, 0x30, n - 4, 0x30, n - 6, 0x30, n - 8, 0x30, n - 10))
    for n in range(12, 130)
}
_SHA1_HEAD: Final = bytes.fromhex("300906052b0e03021a05000414")
_SHA256_HEAD: Final = bytes.fromhex("300d060960864801650304020105000420")


def _canonical(d: bytes) -> OcspRequest | None:
    """The canonical request's parse, or None to take the walk (never a different result)."""
    n = len(d)
    if d[:10] != _CANONICAL_PREFIX.get(n):
        return None
    if n >= 68 and d[10:23] == _SHA1_HEAD:
        if d[43:45] != b"\x04\x14" or d[65] != 2 or d[66] != n - 67:
            return None
        alg, name_hash, key_hash, serial = "sha1", d[23:43], d[45:65], d[67:]
    elif n >= 96 and d[10:27] == _SHA256_HEAD:
        if d[59:61] != b"\x04\x20" or d[93] != 2 or d[94] != n - 95:
            return None
        alg, name_hash, key_hash, serial = "sha256", d[27:59], d[61:93], d[95:]
    else:
        return None
    if len(serial) > 1:
        b0 = serial[0]
        b1 = serial[1]
        if (b0 == 0 and b1 < 0x80) or (b0 == 0xFF and b1 >= 0x80):
            return None
    value = int.from_bytes(serial, "big", signed=True)
    return OcspRequest((CertId(alg, name_hash, key_hash, value, d[8:]),), None, None, None, ())


def parse_request(der: bytes, *, max_certids: int, max_nonce: int = 128) -> OcspRequest:
    """Parse the DER of an OCSPRequest (RFC 6960 §4.1.1).

    Raises `RequestError` (status malformedRequest) for undecodable or
    non-DER input, trailing data, no CertID, more than ``max_certids``
    CertIDs, a nonce of 0 or more than ``max_nonce`` bytes (RFC 9654), a
    version other than v1, or an unknown critical extension. Nothing else
    is raised.
    """
    if max_certids < 1 or max_nonce < 1:
        raise ValueError("max_certids and max_nonce must be at least 1")
    d = der if type(der) is bytes else bytes(der)
    try:
        return _canonical(d) or _parse(d, max_certids, max_nonce)
    except RequestError:
        raise
    except DerError as exc:  # a TLV header that is not DER: its fixed reason
        raise RequestError(exc.reason) from None
    except Exception as exc:  # defence in depth: the walker is fuzzed not to get here
        raise RequestError("undecodable") from exc


_URLSAFE_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")


def _unescape(raw: bytes) -> bytes:
    """``raw`` URL-decoded, as `urllib.parse.unquote_to_bytes` decodes it.

    Of base64's alphabet only ``/``, ``+`` and ``=`` are escaped (``%2F``, ``%2B``, ``%3D``,
    as ``urllib.parse.quote`` writes them): three replaces do it. The result is the same:
    a replacement never makes a ``%``, and the three escapes cannot overlap, so when no
    ``%`` is left every one was such an escape. Anything else (lower-case hex, other bytes
    escaped, a ``%`` not followed by two hex digits) is decoded by ``unquote_to_bytes``,
    a loop in Python, from the original bytes."""
    out = raw.replace(b"%2F", b"/").replace(b"%2B", b"+").replace(b"%3D", b"=")
    return out if b"%" not in out else unquote_to_bytes(raw)


def decode_get_path(path_component: str | bytes, *, max_length: int = 4096) -> bytes:
    """The request DER of an RFC 6960 appendix A.1 GET: the path after the responder's base URL.

    The component is URL-decoded, then base64-decoded. Standard base64 is the
    rule; base64url (``-``/``_``) and missing ``=`` padding are tolerated,
    as clients send both. Pass everything after the base path, ``/``
    included: unescaped base64 contains ``/``. Raw bytes from the request
    line are taken as they are (no text decoding first); anything outside
    base64's alphabet after URL-decoding is refused. Leading ``/`` are dropped:
    a client given a responder URL ending in ``/`` sends ``/ocsp//MEMw...``
    (RFC 5019 §5: ``{url}/{base64}``), and a request's base64 begins with
    ``M`` (DER 0x30), never ``/``. Raises `RequestError`
    (malformedRequest) for anything that does not decode or is longer than
    ``max_length`` characters.
    """
    if not path_component or len(path_component) > max_length:
        raise RequestError("bad GET path")
    if isinstance(path_component, str):
        try:
            raw = path_component.encode("ascii")
        except UnicodeEncodeError:
            raise RequestError("bad GET path") from None
    else:
        raw = path_component
    raw = raw.lstrip(b"/")
    if b"%" in raw:
        raw = _unescape(raw)
    raw = raw.translate(_URLSAFE_TO_STANDARD).rstrip(b"=")
    raw += b"=" * (-len(raw) % 4)
    try:
        der = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise RequestError("bad GET path") from None
    if not der:
        raise RequestError("bad GET path")
    return der
