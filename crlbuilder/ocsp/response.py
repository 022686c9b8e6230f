"""OCSP response production (OCSP応答の生成): CertIDs, answers, signed OCSPResponse DER.

This module owns the bytes of every OCSP response jpki-va sends: the
失効情報の提供 of Act §18(1) (signature certificates) and §37(1) (user
certificates) when made by OCSP. It is sans-I/O: plain values in, DER out,
so that crlbuilder uses it to pre-sign the answers it stores and the
responder uses it to sign fresh ones (nonce, several CertIDs).

Profile (RFC 6960 with RFC 5019 / RFC 9919): responseStatus ``successful``
with ``id-pkix-ocsp-basic``; ``tbsResponseData`` version v1 (omitted, DEFAULT),
``responderID`` byKey (SHA-1 of the signer's subjectPublicKey BIT STRING
value), ``producedAt``, one SingleResponse per answer with ``thisUpdate`` and
``nextUpdate``; the nonce (RFC 9654) as the only responseExtension when the
caller passes one; signatureAlgorithm and signature from the
`crlbuilder.keys.signer.Signer` (PEM file or PKCS#11 key); the
signer's (delegated OCSP signing) certificate in ``certs``.

Reason code decision: ``revocationReason`` is omitted when the reason is
unknown (``None``) or ``unspecified`` (0), and present for every other
RFC 5280 CRLReason. RFC 5280 §5.3.1 says the CRL entry reasonCode SHOULD be
absent rather than ``unspecified``; OCSP answers and CRL entries for the same
certificate must agree, so OCSP follows the same rule.

The DER of ``tbsResponseData`` and of the envelope is written by hand here,
because the responder signs on the request path and a generic encoder costs
tens of microseconds per response; tests compare these bytes with
cryptography's OCSPResponseBuilder (byte for byte, single responses) and
decode several SingleResponses with asn1crypto and openssl.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Final, NamedTuple

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.der import der_length
from crlbuilder.keys.signer import Signer
from crlbuilder.model import CertStatus

__all__ = [  # CertStatus is crlbuilder.model's (the one status set), named here as SingleAnswer's
    "HASH_ALGORITHM_DER",
    "OID_BASIC_DER",
    "OID_NONCE_DER",
    "CertStatus",
    "ResponseSigner",
    "ResponseStatus",
    "SingleAnswer",
    "cert_id_der",
    "der_integer",
    "error_response",
    "issuer_hashes",
]


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 §4.2.1); 4 is not used."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


class SingleAnswer(NamedTuple):
    """One SingleResponse to encode.

    ``cert_id_der`` is the complete DER of the CertID to echo (the request's
    own bytes for a fresh answer, `cert_id_der` for a pre-signed one);
    ``status`` the `CertStatus` (encoded as the CHOICE [0], [1] or [2] of
    RFC 6960 §4.2.1); ``revoked_at`` the revocationTime in
    seconds since the epoch (revoked only); ``reason`` the RFC 5280 CRLReason
    (revoked only; ``None`` or 0 leaves revocationReason out).
    """

    cert_id_der: bytes
    status: CertStatus
    revoked_at: int = 0
    reason: int | None = None


# --- DER building blocks --------------------------------------------------

_MAX_GENERALIZED_TIME: Final = 253402300799  # 9999-12-31T23:59:59Z


def _tlv(tag: bytes, content: bytes) -> bytes:
    return tag + der_length(len(content)) + content


def der_integer(value: int) -> bytes:
    """The DER INTEGER TLV of ``value`` (minimal two's complement)."""
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return _tlv(b"\x02", value.to_bytes(size, "big", signed=True))


_TWO_DIGITS: Final = tuple(b"%02d" % n for n in range(60))


@lru_cache(maxsize=1 << 14)
def _date(day: int) -> bytes:
    """``YYYYMMDD`` of a day counted from the epoch (UTC)."""
    t = time.gmtime(day * 86_400)
    return b"%04d%02d%02d" % (t.tm_year, t.tm_mon, t.tm_mday)


@lru_cache(maxsize=4096)
def _gt(epoch: int) -> bytes:
    """GeneralizedTime TLV ``YYYYMMDDHHMMSSZ`` (RFC 5280 §4.1.2.5.2) of an epoch second: the
    date of its day (cached: a pre-signed answer's revocationTime misses this cache, its day
    seldom does), then the time of day."""
    if not 0 <= epoch <= _MAX_GENERALIZED_TIME:
        raise ValueError("time out of GeneralizedTime range")
    day, second = divmod(epoch, 86_400)
    hour, second = divmod(second, 3_600)
    minute, second = divmod(second, 60)
    two = _TWO_DIGITS
    return b"\x18\x0f" + _date(day) + two[hour] + two[minute] + two[second] + b"Z"


OID_SHA1_DER: Final = b"\x06\x05\x2b\x0e\x03\x02\x1a"
OID_SHA256_DER: Final = b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"
OID_NONCE_DER: Final = b"\x06\x09\x2b\x06\x01\x05\x05\x07\x30\x01\x02"
"""id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2 (RFC 9654)."""
OID_BASIC_DER: Final = b"\x06\x09\x2b\x06\x01\x05\x05\x07\x30\x01\x01"
"""id-pkix-ocsp-basic 1.3.6.1.5.5.7.48.1.1."""

HASH_ALGORITHM_DER: Final = {
    "sha1": b"\x30\x09" + OID_SHA1_DER + b"\x05\x00",
    "sha256": b"\x30\x0d" + OID_SHA256_DER + b"\x05\x00",
}
"""CertID hashAlgorithm AlgorithmIdentifiers with NULL parameters, as OpenSSL,
cryptography and most clients send them."""

_HASH_LENGTH: Final = {"sha1": 20, "sha256": 32}

# CRLReason values of RFC 5280 §5.3.1 (7 is unused); 0 is never encoded (see module doc).
_REASON_DER: Final = {r: b"\xa0\x03\x0a\x01" + bytes((r,)) for r in (1, 2, 3, 4, 5, 6, 8, 9, 10)}

_GOOD: Final = b"\x80\x00"  # good [0] IMPLICIT NULL
_UNKNOWN: Final = b"\x82\x00"  # unknown [2] IMPLICIT UnknownInfo (NULL)
_IS_GOOD: Final = CertStatus.GOOD
_IS_REVOKED: Final = CertStatus.REVOKED
_IS_UNKNOWN: Final = CertStatus.UNKNOWN
_NEXT_UPDATE_TAG: Final = b"\xa0\x11"

_ERROR_RESPONSES: Final[dict[int, bytes]] = {
    s: b"\x30\x03\x0a\x01" + bytes((s,)) for s in ResponseStatus if s != ResponseStatus.SUCCESSFUL
}


def error_response(status: int) -> bytes:
    """The constant OCSPResponse carrying only an error ``responseStatus`` (no responseBytes).

    ``status`` is one of malformedRequest (1), internalError (2), tryLater (3),
    sigRequired (5), unauthorized (6); anything else raises ValueError.
    """
    try:
        return _ERROR_RESPONSES[status]
    except KeyError:
        raise ValueError(f"not an error responseStatus: {status!r}") from None


def cert_id_der(
    hash_alg: str, issuer_name_hash: bytes, issuer_key_hash: bytes, serial: int
) -> bytes:
    """The DER of a CertID (RFC 6960 §4.1.1), hashAlgorithm with NULL parameters.

    This is what OpenSSL, cryptography and Java put in their requests, so a
    response pre-signed with it matches them byte for byte.
    """
    try:
        alg = HASH_ALGORITHM_DER[hash_alg]
    except KeyError:
        raise ValueError(f"unsupported CertID hash algorithm: {hash_alg!r}") from None
    size = _HASH_LENGTH[hash_alg]
    if len(issuer_name_hash) != size or len(issuer_key_hash) != size:
        raise ValueError(f"{hash_alg} CertID hashes must be {size} bytes")
    body = (
        alg + _tlv(b"\x04", issuer_name_hash) + _tlv(b"\x04", issuer_key_hash) + der_integer(serial)
    )
    return _tlv(b"\x30", body)


def _subject_and_key_bits(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """The certificate's subject Name DER and its subjectPublicKey BIT STRING value.

    Both are taken from the certificate's own bytes (asn1crypto keeps them
    verbatim), never re-encoded.
    """
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    tbs = parsed["tbs_certificate"]
    subject: bytes = tbs["subject"].dump()
    bits: bytes = tbs["subject_public_key_info"]["public_key"].contents
    if not bits or bits[0] != 0:
        raise ValueError("subjectPublicKey has unused bits")
    return subject, bits[1:]


def issuer_hashes(issuer_cert: x509.Certificate, hash_alg: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of an issuing CA for CertIDs (RFC 6960 §4.1.1).

    The name hash is the hash of the DER of the issuer's subject Name; the key
    hash is the hash of the value (without the unused-bits octet) of the
    issuer's subjectPublicKey BIT STRING. ``hash_alg`` is "sha1" or "sha256".
    """
    if hash_alg not in _HASH_LENGTH:
        raise ValueError(f"unsupported CertID hash algorithm: {hash_alg!r}")
    subject, key = _subject_and_key_bits(issuer_cert)
    return hashlib.new(hash_alg, subject).digest(), hashlib.new(hash_alg, key).digest()


def _single_response(answer: SingleAnswer, times: bytes) -> bytes:
    status = answer.status
    if status is _IS_GOOD:
        cert_status = _GOOD
    elif status is _IS_REVOKED:
        reason = answer.reason
        info = _gt(answer.revoked_at)
        if reason:
            try:
                info += _REASON_DER[reason]
            except KeyError:
                raise ValueError(f"not a CRLReason: {reason!r}") from None
        cert_status = b"\xa1" + der_length(len(info)) + info
    elif status is _IS_UNKNOWN:
        cert_status = _UNKNOWN
    else:
        raise ValueError(f"not a CertStatus: {status!r}")
    body = answer.cert_id_der + cert_status + times
    return b"\x30" + der_length(len(body)) + body


class ResponseSigner:
    """Signs OCSP responses with one delegated OCSP signer (OCSP署名用の証明書).

    Everything that does not change between responses (responderID,
    signatureAlgorithm, the ``certs`` field) is encoded once here.
    ``include_certificate`` puts the signer's certificate in ``certs``, which
    clients need to verify a delegated signer (RFC 6960 §4.2.2.2).
    """

    __slots__ = ("_algorithm", "_certs", "_responder_id", "_signer_id", "key_hash", "not_after",
                 "signer")  # fmt: skip

    def __init__(self, signer: Signer, *, include_certificate: bool = True) -> None:
        self.signer = signer
        cert = signer.certificate
        _, key_bits = _subject_and_key_bits(cert)
        self.key_hash: bytes = hashlib.sha1(key_bits).digest()  # noqa: S324 (RFC 6960 KeyHash is SHA-1)
        """The responderID byKey value: SHA-1 of the signer's public key bits."""
        self._responder_id = _tlv(b"\xa2", _tlv(b"\x04", self.key_hash))
        self._algorithm = bytes(signer.signature_algorithm_der)
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        self._signer_id = hashlib.sha256(cert_der).digest()[:8]
        self.not_after: int = int(cert.not_valid_after_utc.timestamp())
        """The signer certificate's notAfter in epoch seconds: a client checks every answer's
        signer against it (RFC 6960 §4.2.2.2), so none may be signed from it on, nor carry a
        nextUpdate past it (`capped`); an integer, compared once per request on the
        responder's hot path (`responder.flow`)."""
        if include_certificate:
            self._certs = _tlv(b"\xa0", _tlv(b"\x30", cert_der))
        else:
            self._certs = b""

    def capped(self, next_update: int) -> int:
        """``next_update`` no later than the signer certificate's notAfter: past it every
        client rejects the answer (RFC 6960 §4.2.2.2, RFC 5280 §6.1.3), so a cache or
        responder serving it until a later nextUpdate would serve a rejected answer."""
        return min(next_update, self.not_after)

    @property
    def certs_suffix(self) -> bytes:
        """The ``certs`` field that ends every response of this signer (empty without it)."""
        return self._certs

    @property
    def signer_id(self) -> bytes:
        """8 bytes of the SHA-256 of the signer certificate: names `certs_suffix` in the store."""
        return self._signer_id

    def response_data(
        self,
        answers: Sequence[SingleAnswer],
        *,
        produced_at: int,
        this_update: int,
        next_update: int,
        nonce: bytes | None = None,
    ) -> bytes:
        """The DER of tbsResponseData (ResponseData): the bytes that get signed.

        Times are seconds since the epoch (UTC); ``this_update`` and
        ``next_update`` apply to every answer. ``nonce`` is the nonce value
        (RFC 9654), echoed as a non-critical responseExtension.
        """
        if not answers:
            raise ValueError("an OCSP response needs at least one answer")
        times = _gt(this_update) + _NEXT_UPDATE_TAG + _gt(next_update)
        singles = b"".join([_single_response(a, times) for a in answers])
        body = self._responder_id + _gt(produced_at) + b"\x30" + der_length(len(singles)) + singles
        if nonce is not None:
            if not nonce:
                raise ValueError("an OCSP nonce is 1 to 128 bytes (RFC 9654)")
            value = b"\x04" + der_length(len(nonce)) + nonce
            ext = OID_NONCE_DER + b"\x04" + der_length(len(value)) + value
            ext = b"\x30" + der_length(len(ext)) + ext
            exts = b"\x30" + der_length(len(ext)) + ext
            body += b"\xa1" + der_length(len(exts)) + exts
        return b"\x30" + der_length(len(body)) + body

    def presigned_data(
        self,
        cert_id: bytes,
        revoked_at: int,
        reason: int | None,
        this_update: int,
        next_update: int,
    ) -> bytes:
        """The tbsResponseData of a pre-signed answer: one revoked CertID (``cert_id``, SHA-1,
        `cert_id_der`), producedAt equal to ``this_update``, no nonce.

        The one encoder of those bytes: the builder signs what it returns
        (`crlbuilder.presign`) and stores the signature with the times
        (`crlbuilder.store.format.pack_response_parts`); the responder calls it again with
        the same values (the serial from the key, revocationTime and reason from the status
        record of the answer's version) and sends `assemble` of it and the signature
        (`responder.flow`): the bytes signed, byte for byte, for as long as this function
        encodes the same values the same way (a change here that moves a byte is caught by the
        stored check: never sent with a signature that does not verify, the answer signed
        afresh instead, `responder.flow.PresignedUnusable`). The bytes
        `response_data` makes of the same answer (tests/test_presigned_parts.py compares them),
        written out for the one answer: the responder calls it for every pre-signed answer it
        does not hold in its cache."""
        info = _gt(revoked_at)
        if reason:
            try:
                info += _REASON_DER[reason]
            except KeyError:
                raise ValueError(f"not a CRLReason: {reason!r}") from None
        this = _gt(this_update)
        single = cert_id + b"\xa1" + der_length(len(info)) + info + this + _NEXT_UPDATE_TAG
        single += _gt(next_update)
        single = b"\x30" + der_length(len(single)) + single
        body = self._responder_id + this + b"\x30" + der_length(len(single)) + single
        return b"\x30" + der_length(len(body)) + body

    def assemble(self, response_data: bytes, signature: bytes) -> bytes:
        """The full OCSPResponse DER around a signed tbsResponseData."""
        sig_len = len(signature) + 1
        basic_len = (
            len(response_data)
            + len(self._algorithm)
            + 1
            + len(der_length(sig_len))
            + sig_len
            + len(self._certs)
        )
        basic_hdr = b"\x30" + der_length(basic_len)
        octets_len = len(basic_hdr) + basic_len
        octets_hdr = b"\x04" + der_length(octets_len)
        rb_len = len(OID_BASIC_DER) + len(octets_hdr) + octets_len
        rb_hdr = b"\x30" + der_length(rb_len)
        tagged_len = len(rb_hdr) + rb_len
        tagged_hdr = b"\xa0" + der_length(tagged_len)
        outer_len = 3 + len(tagged_hdr) + tagged_len
        return b"".join(
            (
                b"\x30",
                der_length(outer_len),
                b"\x0a\x01\x00",
                tagged_hdr,
                rb_hdr,
                OID_BASIC_DER,
                octets_hdr,
                basic_hdr,
                response_data,
                self._algorithm,
                b"\x03",
                der_length(sig_len),
                b"\x00",
                signature,
                self._certs,
            )
        )

    def sign_response(
        self,
        answers: Sequence[SingleAnswer],
        *,
        produced_at: int,
        this_update: int,
        next_update: int,
        nonce: bytes | None = None,
    ) -> bytes:
        """A complete, signed, successful OCSPResponse (DER) for ``answers``."""
        data = self.response_data(
            answers,
            produced_at=produced_at,
            this_update=this_update,
            next_update=next_update,
            nonce=nonce,
        )
        return self.assemble(data, self.signer.sign(data))
