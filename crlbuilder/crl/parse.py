"""Fast parsing and signature checking of X.509 CRLs (失効情報ファイル, Act §16, §35).

A group signature verifier (団体署名検証者, Act §17(5)) receives the 機構's CRL
files (Act §18(2), §37(2)) and imports them; our own CRLs are read back to check
them. A JPKI CRL holds millions of entries, and loading it through cryptography
and iterating its entries as Python objects is slow, so this module walks the
DER itself, for speed: `parse_crl` reads the outer structure and the CRL
extensions eagerly (constant time apart from copying the signed bytes), and
`ParsedCrl.entries` walks revokedCertificates lazily, yielding plain
``(serial, revoked_at, reason)`` tuples with a per-day time cache and a fast
path for the common reasonCode-only entry extensions.

The reader is strict DER: definite minimal lengths, single-byte tags, exact
structure ends, no trailing bytes. Any malformed input raises `CrlError` with a
message saying what and where (never IndexError, never a hang). Signatures are
checked with cryptography by `verify_crl_signature`; the issuer Name is turned
into an `x509.Name` by cryptography on demand.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ObjectIdentifier, SignatureAlgorithmOID

from crlbuilder.der import DerError, der_header, der_length

__all__ = ["CrlError", "ParsedCrl", "parse_crl", "verify_crl_signature"]


class CrlError(ValueError):
    """A CRL that is malformed, unsupported, or whose signature does not verify."""


_TAG_INTEGER: Final = 0x02
_TAG_BIT_STRING: Final = 0x03
_TAG_OCTET_STRING: Final = 0x04
_TAG_OID: Final = 0x06
_TAG_ENUMERATED: Final = 0x0A
_TAG_BOOLEAN: Final = 0x01
_TAG_UTC_TIME: Final = 0x17
_TAG_GENERALIZED_TIME: Final = 0x18
_TAG_SEQUENCE: Final = 0x30
_TAG_EXTENSIONS: Final = 0xA0  # [0] EXPLICIT, constructed

# Extension OIDs as DER contents (RFC 5280 §5.2, §5.3).
_AUTHORITY_KEY_ID: Final = b"\x55\x1d\x23"  # 2.5.29.35
_CRL_NUMBER: Final = b"\x55\x1d\x14"  # 2.5.29.20
_REASON_CODE: Final = b"\x55\x1d\x15"  # 2.5.29.21
_INVALIDITY_DATE: Final = b"\x55\x1d\x18"  # 2.5.29.24
_DELTA_CRL_INDICATOR: Final = b"\x55\x1d\x1b"  # 2.5.29.27
_ISSUING_DP: Final = b"\x55\x1d\x1c"  # 2.5.29.28
_CERTIFICATE_ISSUER: Final = b"\x55\x1d\x1d"  # 2.5.29.29
_FRESHEST_CRL: Final = b"\x55\x1d\x2e"  # 2.5.29.46

# CRL entry extensions RFC 5280 §5.3 says are non-critical: one marked critical is refused.
_NON_CRITICAL_ENTRY: Final[dict[bytes, str]] = {
    _REASON_CODE: "reasonCode (2.5.29.21)",
    _INVALIDITY_DATE: "invalidityDate (2.5.29.24)",
}

_REASON_CODES: Final = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})

# The exact crlEntryExtensions of an entry whose only extension is a
# non-critical reasonCode: the common case, recognised by one dict lookup.
_REASON_ONLY: Final[dict[bytes, int]] = {
    b"\x30\x0c\x30\x0a\x06\x03\x55\x1d\x15\x04\x03\x0a\x01" + bytes((code,)): code
    for code in _REASON_CODES
}

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_SECONDS_PER_DAY: Final = 86400

_HASHES: Final[dict[ObjectIdentifier, tuple[hashes.HashAlgorithm, bool]]] = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: (hashes.SHA256(), True),
    SignatureAlgorithmOID.RSA_WITH_SHA384: (hashes.SHA384(), True),
    SignatureAlgorithmOID.RSA_WITH_SHA512: (hashes.SHA512(), True),
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: (hashes.SHA256(), False),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: (hashes.SHA384(), False),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: (hashes.SHA512(), False),
}
"""Signature algorithms `verify_crl_signature` accepts: (hash, is RSA PKCS#1 v1.5)."""


# ---------------------------------------------------------------------------
# DER reader
# ---------------------------------------------------------------------------


def _header(d: bytes, p: int, end: int, what: str) -> tuple[int, int, int]:
    """Read the TLV header at ``p`` (`der_header`); return (tag, content start, content end)."""
    try:
        return der_header(d, p, end)
    except DerError as exc:
        raise CrlError(f"bad DER: {exc} ({what})") from None


def _expect(d: bytes, p: int, end: int, tag: int, what: str) -> tuple[int, int]:
    try:
        got, start, stop = der_header(d, p, end)
    except DerError as exc:
        raise CrlError(f"bad DER: {exc} ({what})") from None
    if got != tag:
        raise CrlError(
            f"bad DER: expected {what} (tag {tag:#04x}) at offset {p}, found tag {got:#04x}"
        )
    return start, stop


def _integer(d: bytes, start: int, stop: int, what: str) -> int:
    if start == stop:
        raise CrlError(f"bad DER: empty INTEGER ({what}) at offset {start}")
    return int.from_bytes(d[start:stop], "big", signed=True)


def _unsigned(d: bytes, p: int, end: int, what: str) -> tuple[int, int]:
    start, stop = _expect(d, p, end, _TAG_INTEGER, what)
    value = _integer(d, start, stop, what)
    if value < 0:
        raise CrlError(f"{what} is negative")
    return value, stop


def _oid_text(content: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's contents."""
    if not content or content[-1] & 0x80:
        raise CrlError("bad DER: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for octet in content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


@functools.cache
def _hms_seconds() -> dict[bytes, int]:
    """Seconds of the day for every valid ``HHMMSS``, built once."""
    return {
        b"%02d%02d%02d" % (h, m, s): h * 3600 + m * 60 + s
        for h in range(24)
        for m in range(60)
        for s in range(60)
    }


def _day_seconds(digits: bytes) -> int:
    """Epoch seconds at 00:00 UTC of the date ``YYYYMMDD``."""
    if len(digits) != 8 or not digits.isdigit():
        raise CrlError(f"bad time: {digits!r} is not a date")
    try:
        d = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise CrlError(f"bad time: {digits.decode('ascii')} is not a valid date") from None
    return (d.toordinal() - _EPOCH_ORDINAL) * _SECONDS_PER_DAY


def _utc_date(yymmdd: bytes) -> bytes:
    """YYMMDD of a UTCTime as YYYYMMDD (RFC 5280: 50-99 are 19xx, 00-49 20xx)."""
    if not yymmdd[:2].isdigit():
        raise CrlError(f"bad time: {yymmdd!r} is not a date")
    return (b"19" if yymmdd[:2] >= b"50" else b"20") + yymmdd


def _time(d: bytes, p: int, end: int, what: str) -> tuple[int, int]:
    """Read a Time at ``p``: (epoch seconds, offset after it)."""
    tag, start, stop = _header(d, p, end, what)
    raw = d[start:stop]
    if tag == _TAG_UTC_TIME and len(raw) == 13 and raw[12] == 0x5A:
        day = _day_seconds(_utc_date(raw[:6]))
        hms = raw[6:12]
    elif tag == _TAG_GENERALIZED_TIME and len(raw) == 15 and raw[14] == 0x5A:
        day = _day_seconds(raw[:8])
        hms = raw[8:14]
    elif tag in (_TAG_UTC_TIME, _TAG_GENERALIZED_TIME):
        raise CrlError(f"bad time: {what} {raw!r} is not YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ")
    else:
        raise CrlError(f"bad DER: expected {what} (a Time) at offset {p}, found tag {tag:#04x}")
    second = _hms_seconds().get(hms)
    if second is None:
        raise CrlError(f"bad time: {what} has an invalid time of day {hms!r}")
    return day + second, stop


def _datetime(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _extensions(
    d: bytes, start: int, stop: int, what: str
) -> Iterator[tuple[bytes, bool, int, int]]:
    """Walk Extensions: yield (OID contents, critical, value start, value end)."""
    p = start
    while p < stop:
        ext_start, ext_stop = _expect(d, p, stop, _TAG_SEQUENCE, f"{what} Extension")
        q_start, q = _expect(d, ext_start, ext_stop, _TAG_OID, f"{what} extnID")
        oid = d[q_start:q]
        critical = False
        tag, c_start, c_stop = _header(d, q, ext_stop, f"{what} critical or extnValue")
        if tag == _TAG_BOOLEAN:
            if c_stop - c_start != 1 or d[c_start] not in (0x00, 0xFF):
                raise CrlError(f"bad DER: malformed BOOLEAN in {what} at offset {q}")
            if d[c_start] == 0x00:
                raise CrlError(
                    f"bad DER: critical FALSE is the DEFAULT and must be omitted ({what})"
                )
            critical = True
            q = c_stop
            tag, c_start, c_stop = _header(d, q, ext_stop, f"{what} extnValue")
        if tag != _TAG_OCTET_STRING:
            raise CrlError(f"bad DER: expected extnValue OCTET STRING in {what} at offset {q}")
        if c_stop != ext_stop:
            raise CrlError(f"bad DER: trailing bytes in {what} Extension at offset {c_stop}")
        yield oid, critical, c_start, c_stop
        p = ext_stop


def _entry_reason(d: bytes, start: int, stop: int) -> int:
    """The reason code of one entry's crlEntryExtensions (0 when it has no reasonCode)."""
    ext_start, ext_stop = _expect(d, start, stop, _TAG_SEQUENCE, "crlEntryExtensions")
    if ext_stop != stop:
        raise CrlError(f"bad DER: trailing bytes after crlEntryExtensions at offset {ext_stop}")
    reason = 0
    seen: set[bytes] = set()
    for oid, critical, v_start, v_stop in _extensions(d, ext_start, ext_stop, "CRL entry"):
        if oid in seen:  # which of two reasonCodes is meant cannot be told
            raise CrlError(f"a CRL entry has extension {_oid_text(oid)} twice")
        seen.add(oid)
        if critical and oid in _NON_CRITICAL_ENTRY:
            # RFC 5280 §5.3.1, §5.3.2: these are non-critical. A CRL marking one critical is
            # malformed, refused whole (the 機構's input is trusted, a broken one is not).
            raise CrlError(
                f"{_NON_CRITICAL_ENTRY[oid]} is marked critical; RFC 5280 §5.3 makes it non-critical"
            )
        if oid == _REASON_CODE:
            e_start, e_stop = _expect(d, v_start, v_stop, _TAG_ENUMERATED, "reasonCode")
            if e_stop != v_stop:
                raise CrlError("bad DER: trailing bytes in reasonCode")
            reason = _integer(d, e_start, e_stop, "reasonCode")
            if reason not in _REASON_CODES:
                raise CrlError(f"unknown CRL reason code {reason}")
        elif oid == _CERTIFICATE_ISSUER:
            raise CrlError("indirect CRL entries (certificateIssuer) are not supported")
        elif critical:
            raise CrlError(f"unsupported critical CRL entry extension {_oid_text(oid)}")
    return reason


def _iter_entries(d: bytes, p: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Walk revokedCertificates contents ``d[p:end]``, yielding (serial, epoch, reason).

    The common shapes (short lengths, UTCTime or GeneralizedTime, reasonCode
    only) take an inlined fast path; anything else goes through the general
    reader, which raises CrlError on malformed input.
    """
    hms = _hms_seconds()
    utc_days: dict[bytes, int] = {}
    generalized_days: dict[bytes, int] = {}
    reason_only = _REASON_ONLY
    from_bytes = int.from_bytes
    while p < end:
        if p + 2 > end or d[p] != _TAG_SEQUENCE or d[p + 1] & 0x80:
            q, e = _expect(d, p, end, _TAG_SEQUENCE, "CRL entry")
        else:
            q = p + 2
            e = q + d[p + 1]
            if e > end:
                raise CrlError(
                    f"truncated DER: CRL entry at offset {p} runs past revokedCertificates"
                )
        # userCertificate
        if q + 2 <= e and d[q] == _TAG_INTEGER and 0 < d[q + 1] < 0x80:
            r = q + 2 + d[q + 1]
            if r > e:
                raise CrlError(f"truncated DER: serial of the CRL entry at offset {p}")
            serial = from_bytes(d[q + 2 : r], "big", signed=True)
        else:
            s_start, r = _expect(d, q, e, _TAG_INTEGER, "userCertificate")
            serial = _integer(d, s_start, r, "userCertificate")
        # revocationDate
        if r + 2 > e:
            raise CrlError(f"truncated DER: revocationDate of the CRL entry at offset {p}")
        tag = d[r]
        length = d[r + 1]
        s = r + 2
        t = s + length
        if t > e:
            raise CrlError(f"truncated DER: revocationDate of the CRL entry at offset {p}")
        if tag == _TAG_UTC_TIME and length == 13 and d[s + 12] == 0x5A:
            key = d[s : s + 6]
            day = utc_days.get(key)
            if day is None:
                day = utc_days[key] = _day_seconds(_utc_date(key))
            second = hms.get(d[s + 6 : s + 12])
        elif tag == _TAG_GENERALIZED_TIME and length == 15 and d[s + 14] == 0x5A:
            key = d[s : s + 8]
            day = generalized_days.get(key)
            if day is None:
                day = generalized_days[key] = _day_seconds(key)
            second = hms.get(d[s + 8 : s + 14])
        else:
            at, t = _time(d, r, e, "revocationDate")
            day, second = at, 0
        if second is None:
            raise CrlError(
                f"bad time: revocationDate of the CRL entry at offset {p} has an invalid time of day"
            )
        # crlEntryExtensions
        if t == e:
            reason = 0
        else:
            found = reason_only.get(d[t:e])
            reason = found if found is not None else _entry_reason(d, t, e)
        yield serial, day + second, reason
        p = e


# ---------------------------------------------------------------------------
# CertificateList
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedCrl:
    """A parsed CRL: its header fields, signed bytes, signature and a lazy entry walker."""

    der: bytes = field(repr=False)
    """The whole CRL, as given."""
    version: int
    """1 for a v1 CRL (no version field), 2 for v2."""
    tbs: bytes = field(repr=False)
    """tbsCertList, the signed bytes."""
    issuer_der: bytes
    """The issuer Name, DER, exactly as in the CRL."""
    this_update: datetime
    next_update: datetime | None
    number: int | None
    """cRLNumber (None only for a CRL without one)."""
    delta_base: int | None
    """deltaCRLIndicator's base CRL number: set for a delta CRL."""
    authority_key_id: bytes | None
    """authorityKeyIdentifier's keyIdentifier."""
    idp_der: bytes | None
    """issuingDistributionPoint's value (DER), if present."""
    freshest_crl_der: bytes | None
    """freshestCRL's value (DER), if present."""
    signature_algorithm_oid: ObjectIdentifier
    signature_algorithm_der: bytes = field(repr=False)
    """The AlgorithmIdentifier, DER (equal in tbsCertList and CertificateList)."""
    signature: bytes = field(repr=False)
    _entries_start: int = field(repr=False)
    _entries_end: int = field(repr=False)

    @property
    def idp_present(self) -> bool:
        return self.idp_der is not None

    @property
    def is_delta(self) -> bool:
        return self.delta_base is not None

    @property
    def revoked_der(self) -> bytes:
        """The contents of revokedCertificates (the entries' DER back to back; empty if none)."""
        return self.der[self._entries_start : self._entries_end]

    @property
    def issuer(self) -> x509.Name:
        """The issuer as an `x509.Name`, decoded by cryptography."""
        return _name_from_der(self.issuer_der)

    def entries(self) -> Iterator[tuple[int, int, int]]:
        """Yield every entry as (serial, revoked_at epoch seconds UTC, reason code).

        Walks the DER in order; an entry without a reasonCode has reason 0.
        Raises CrlError at the first malformed entry.
        """
        return _iter_entries(self.der, self._entries_start, self._entries_end)


@functools.lru_cache(maxsize=64)
def _name_from_der(name_der: bytes) -> x509.Name:
    """Decode a Name with cryptography, which has no public Name parser: wrap it in a tiny CRL.

    The wrapper is tbsCertList { version v2, sha256WithRSA, issuer, thisUpdate }
    with an empty signature; cryptography reads the issuer without checking it.
    """
    tbs_body = (
        b"\x02\x01\x01"
        + bytes.fromhex("300d06092a864886f70d01010b0500")
        + name_der
        + b"\x17\x0d700101000000Z"
    )
    tbs = b"\x30" + der_length(len(tbs_body)) + tbs_body
    body = tbs + bytes.fromhex("300d06092a864886f70d01010b0500") + b"\x03\x01\x00"
    try:
        return x509.load_der_x509_crl(b"\x30" + der_length(len(body)) + body).issuer
    except ValueError as exc:
        raise CrlError(f"the issuer Name cannot be decoded: {exc}") from None


def parse_crl(der: bytes) -> ParsedCrl:
    """Parse a DER CRL's structure and extensions; entries are walked later by `entries()`.

    Raises CrlError for truncated or malformed DER, trailing bytes, an
    unsupported version, mismatched signature algorithms, an unknown critical
    CRL extension, or an entry list that is not a SEQUENCE.
    """
    if not isinstance(der, bytes):
        der = bytes(der)
    end = len(der)
    if end and der[:1] == b"-":
        raise CrlError("the CRL is PEM; DER is expected")
    start, stop = _expect(der, 0, end, _TAG_SEQUENCE, "CertificateList")
    if stop != end:
        raise CrlError(f"trailing garbage: {end - stop} octets after the CertificateList")

    tbs_start, tbs_stop = _expect(der, start, stop, _TAG_SEQUENCE, "tbsCertList")
    alg_start, alg_stop = _expect(der, tbs_stop, stop, _TAG_SEQUENCE, "signatureAlgorithm")
    algorithm_der = der[tbs_stop:alg_stop]
    sig_start, sig_stop = _expect(der, alg_stop, stop, _TAG_BIT_STRING, "signatureValue")
    if sig_stop != stop:
        raise CrlError("bad DER: extra fields after signatureValue")
    if sig_start == sig_stop or der[sig_start] != 0:
        raise CrlError("bad DER: signatureValue BIT STRING with unused bits")
    signature = der[sig_start + 1 : sig_stop]
    oid_start, oid_stop = _expect(der, alg_start, alg_stop, _TAG_OID, "signature algorithm OID")
    try:
        algorithm_oid = ObjectIdentifier(_oid_text(der[oid_start:oid_stop]))
    except ValueError as exc:
        raise CrlError(f"bad signature algorithm OID: {exc}") from None

    # tbsCertList
    p = tbs_start
    tag, v_start, v_stop = _header(der, p, tbs_stop, "tbsCertList version or signature")
    version = 1
    if tag == _TAG_INTEGER:
        value = _integer(der, v_start, v_stop, "version")
        if value != 1:
            raise CrlError(f"unsupported CRL version {value + 1} (only v1 and v2 exist)")
        version = 2
        p = v_stop
    _, inner_stop = _expect(der, p, tbs_stop, _TAG_SEQUENCE, "tbsCertList signature")
    if der[p:inner_stop] != algorithm_der:
        raise CrlError("tbsCertList.signature differs from signatureAlgorithm (RFC 5280 §5.1.2.2)")
    p = inner_stop
    _, name_stop = _expect(der, p, tbs_stop, _TAG_SEQUENCE, "issuer Name")
    issuer_der = der[p:name_stop]
    p = name_stop
    this_epoch, p = _time(der, p, tbs_stop, "thisUpdate")
    next_epoch: int | None = None
    if p < tbs_stop and der[p] in (_TAG_UTC_TIME, _TAG_GENERALIZED_TIME):
        next_epoch, p = _time(der, p, tbs_stop, "nextUpdate")
    entries_start = entries_end = p
    if p < tbs_stop and der[p] == _TAG_SEQUENCE:
        entries_start, entries_end = _expect(der, p, tbs_stop, _TAG_SEQUENCE, "revokedCertificates")
        p = entries_end
    number: int | None = None
    delta_base: int | None = None
    authority_key_id: bytes | None = None
    idp_der: bytes | None = None
    freshest_der: bytes | None = None
    if p < tbs_stop:
        x_start, x_stop = _expect(der, p, tbs_stop, _TAG_EXTENSIONS, "crlExtensions [0]")
        if version == 1:
            raise CrlError("a v1 CRL must not have crlExtensions")
        e_start, e_stop = _expect(der, x_start, x_stop, _TAG_SEQUENCE, "crlExtensions")
        if e_stop != x_stop:
            raise CrlError("bad DER: trailing bytes after crlExtensions")
        seen: set[bytes] = set()
        for oid, critical, v0, v1 in _extensions(der, e_start, e_stop, "CRL"):
            if oid in seen:
                raise CrlError(f"duplicate CRL extension {_oid_text(oid)}")
            seen.add(oid)
            if oid == _CRL_NUMBER:
                number, after = _unsigned(der, v0, v1, "cRLNumber")
                _no_trailing(after, v1, "cRLNumber")
            elif oid == _DELTA_CRL_INDICATOR:
                delta_base, after = _unsigned(der, v0, v1, "deltaCRLIndicator")
                _no_trailing(after, v1, "deltaCRLIndicator")
            elif oid == _AUTHORITY_KEY_ID:
                authority_key_id = _key_identifier(der, v0, v1)
            elif oid == _ISSUING_DP:
                idp_der = der[v0:v1]
            elif oid == _FRESHEST_CRL:
                freshest_der = der[v0:v1]
            elif critical:
                raise CrlError(f"unsupported critical CRL extension {_oid_text(oid)}")
        p = x_stop
    if p != tbs_stop:
        raise CrlError(f"bad DER: unexpected field at offset {p} in tbsCertList")

    return ParsedCrl(
        der=der,
        version=version,
        tbs=der[start:tbs_stop],
        issuer_der=issuer_der,
        this_update=_datetime(this_epoch),
        next_update=None if next_epoch is None else _datetime(next_epoch),
        number=number,
        delta_base=delta_base,
        authority_key_id=authority_key_id,
        idp_der=idp_der,
        freshest_crl_der=freshest_der,
        signature_algorithm_oid=algorithm_oid,
        signature_algorithm_der=algorithm_der,
        signature=signature,
        _entries_start=entries_start,
        _entries_end=entries_end,
    )


def _no_trailing(after: int, stop: int, what: str) -> None:
    if after != stop:
        raise CrlError(f"bad DER: trailing bytes in {what}")


def _key_identifier(d: bytes, start: int, stop: int) -> bytes | None:
    """AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL, ... }."""
    s_start, s_stop = _expect(d, start, stop, _TAG_SEQUENCE, "authorityKeyIdentifier")
    _no_trailing(s_stop, stop, "authorityKeyIdentifier")
    p = s_start
    while p < s_stop:
        tag, c_start, c_stop = _header(d, p, s_stop, "authorityKeyIdentifier field")
        if tag == 0x80:
            return d[c_start:c_stop]
        p = c_stop
    return None


def verify_crl_signature(parsed: ParsedCrl, issuer_cert: x509.Certificate) -> None:
    """Check that ``issuer_cert`` issued and signed this CRL; raise CrlError if not.

    Checks, in order: the CRL's issuer Name equals the certificate's subject;
    the authorityKeyIdentifier (if both sides have one) matches the
    certificate's subjectKeyIdentifier; the certificate may sign CRLs (keyUsage
    cRLSign, when keyUsage is present); and the signature over tbsCertList
    verifies with the certificate's public key.
    """
    if parsed.issuer != issuer_cert.subject:
        raise CrlError("the CRL's issuer is not the certificate's subject")
    if parsed.authority_key_id is not None:
        try:
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            ski = None
        if ski is not None and ski.digest != parsed.authority_key_id:
            raise CrlError("the CRL's authorityKeyIdentifier does not match the certificate's key")
    try:
        key_usage = issuer_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.crl_sign:
        raise CrlError("the issuer certificate's keyUsage does not allow cRLSign")
    algorithm = _HASHES.get(parsed.signature_algorithm_oid)
    if algorithm is None:
        raise CrlError(
            f"unsupported CRL signature algorithm {parsed.signature_algorithm_oid.dotted_string}"
        )
    hash_algorithm, is_rsa = algorithm
    public_key = issuer_cert.public_key()
    try:
        if is_rsa and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(parsed.signature, parsed.tbs, padding.PKCS1v15(), hash_algorithm)
        elif not is_rsa and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(parsed.signature, parsed.tbs, ec.ECDSA(hash_algorithm))
        else:
            raise CrlError(
                "the CRL's signature algorithm does not fit the issuer certificate's key type"
            )
    except InvalidSignature:
        raise CrlError(
            "the CRL's signature does not verify with the issuer certificate's key"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise CrlError(f"the CRL's signature cannot be checked: {exc}") from None
