"""A request for a 特定利用者証明検証者証明符号 (Act §38-3(1)): the CSR's checks, the request file, its id.

The responder takes a 特定利用者証明検証者's request (`responder.v1.token`, POST /v1/token),
the builder issues the token (`crlbuilder.tokens`): workers never hold a CA key, and the
responder never writes the builder's store. What passes between them is one small file
per request in a directory both are configured with (``tokens.requests`` of the builder,
``[token] requests`` of the responder): a `TokenRequest` as JSON, named ``<id>.json``,
written whole (a temporary file renamed in). The issued certificate comes back as
``<id>.pem`` in the issued directory (``tokens.issued``), which the responder reads.

This module is what both sides share, pure apart from the file helpers (`write_whole`,
`write_request`, `read_request`, and `sweep_tmp`, which removes the temporary files of
writers that crashed: run by the builder at every token run and by each responder worker
at start, so no copy of a request lingers):

- `check_csr`: the party's PKCS#10 request (PEM, or base64 DER, in lines or not), its
  self-signature verified (proof of possession, RFC 2986 §3; SHA-256 or stronger) and its
  key RSA of 2048 bits or more (public exponent 65537 or more) or EC P-256; a refusal names
  the field (`CsrError`), never the content; and the parties it names (`CheckedCsr.parties`,
  `csr_parties`);
- `binding_refusal`: a request is bound to the party that asks: its CSR must name that
  party, and no other, as a subjectAltName URI ``urn:jpki-va:party:<id>`` (`party_uri`) in
  its requested extensions (PKCS#9 extensionRequest, RFC 2986 §4.1), under the key holder's
  own self-signature. A CSR shows only that whoever made it holds the key; a CSR is no
  secret (a party may have shown it to another, to a CA, in a ticket), and without the
  binding a party holding another party's CSR got a token naming itself with that key (the
  機構 would vouch that the other party's signatures were its own). The token carries the
  same URI (`crlbuilder.tokens`);
- `request_id`: the request's id, a digest of the party, the CSR's public key and the
  approval (認可, Act §38-2(1)) it rests on: asking again for the same key under the same
  approval is the same request (idempotent), a renewed or changed approval a new one;
- `token_serial`: the token's serial, derived from the id (a replay or a rebuild issues
  the same certificate: RSASSA-PKCS1-v1_5 signatures are deterministic);
- `TOKEN_POLICY_OID`: the certificate policy naming the title (特定利用者証明検証者), under
  the project's arc `PROJECT_ARC`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Final

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crlbuilder import atomicfile
from crlbuilder.atomicfile import STALE_TMP_SECONDS, write_whole
from crlbuilder.rules import JST

PROJECT_ARC: Final = "2.25.23992150756379134278736048147909983724"
"""The project's OID arc: a UUID OID (ITU-T X.667, arc 2.25; no registration needed),
UUID 120cb85c-38d6-474e-b441-e4aa531a3dec. Sub-arcs: ``.1`` certificate policies."""
TOKEN_POLICY_OID: Final = x509.ObjectIdentifier(PROJECT_ARC + ".1.1")
"""Certificate policy of a 特定利用者証明検証者証明符号: the subject is a 特定利用者証明検証者
(Act §38-2(4)) approved when the token was issued (Act §38-3(1))."""

MIN_RSA_BITS: Final = 2048
"""The smallest RSA modulus accepted in a CSR (as for every key of the service, Ord §2, §38)."""
MIN_RSA_EXPONENT: Final = 65_537
"""The smallest RSA public exponent accepted in a CSR, odd and below 2**256 (as the CA/Browser
Forum's Baseline Requirements §6.1.6 and NIST SP 800-89 §5.3.3 ask): e = 3 keys have had
signature forgeries through lax PKCS#1 v1.5 verifiers (Bleichenbacher 2006)."""
_OPENSSL_SMALL_MODULUS_BITS: Final = 3072
_OPENSSL_MAX_E_BITS: Final = 64
"""OpenSSL (``OPENSSL_RSA_SMALL_MODULUS_BITS``, ``OPENSSL_RSA_MAX_PUBEXP_BITS``) refuses an RSA
public key over 3072 bits whose exponent has more than 64 bits ("bad e value"): no signature
under it verifies, whatever was signed."""
MAX_CSR_CHARS: Final = 4096
"""A CSR's text in a request, PEM or base64: an RSA-4096 CSR's PEM is ~1.7 KB, an RSA-8192
one's ~3.1 KB. Tight, so that a request over it (even in JSON escapes) is refused by the
route (400 naming ``$.csr``), not by the server's body limit."""

RequestId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
r"""`request_id`'s 32 hex digits; ``\Z``, not ``$``, which msgspec matches before a final line
feed too (a request file is read where it lies, never from the record stream)."""

_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE REQUEST-----"
_DIGESTS: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
"""The digests a CSR's self-signature may use (cryptography verifies no SHA-1 or MD5 one)."""


class CsrError(ValueError):
    """A CSR that is refused: ``field`` names where (the request's ``$.csr``), the message why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class CheckedCsr(msgspec.Struct, frozen=True):
    """A CSR that passed `check_csr`: its DER, its SubjectPublicKeyInfo DER and the party ids
    it names (`csr_parties`)."""

    der: bytes
    spki: bytes
    parties: tuple[str, ...] = ()


PARTY_URI_PREFIX: Final = "urn:jpki-va:party:"
"""The subjectAltName URI naming a party, in a token and in the CSR it is issued from."""

_URN_NID: Final = "urn:jpki-va:"
"""The URN scheme and its NID, case-insensitive (RFC 8141 §3.1); ``party:<id>`` (the NSS)
is compared exactly."""


def party_uri(party: str) -> str:
    """``urn:jpki-va:party:<id>``: the URI naming ``party`` (`PARTY_URI_PREFIX`)."""
    return PARTY_URI_PREFIX + party


def csr_parties(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    """The party ids a CSR names: its requested subjectAltName's URIs that begin with
    `PARTY_URI_PREFIX`, in order. Raises ValueError when its requested extensions cannot be
    read (malformed, or one of them twice).

    RFC 8141 §3.1: the ``urn`` scheme and the NID ``jpki-va`` are read in any case
    (``URN:JPKI-VA:party:<id>`` names ``<id>``); the NSS, ``party:<id>``, is compared
    exactly, so a party id differing only in case is another id."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    nss = PARTY_URI_PREFIX[len(_URN_NID) :]
    return tuple(
        u[len(PARTY_URI_PREFIX) :]
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.isascii()  # IA5String; and no non-ASCII letter lower-cases into the NID
        and u[: len(_URN_NID)].lower() == _URN_NID
        and u[len(_URN_NID) :].startswith(nss)
    )


def binding_refusal(parties: tuple[str, ...], party: str) -> str | None:
    """Why a CSR naming ``parties`` (`csr_parties`) cannot be a request of ``party`` (the
    module docstring: a request is bound to its party), or None when it names that party
    and no other. The message names what to add, and only the asking party's own id."""
    if parties == (party,):
        return None
    want = f"a subjectAltName URI {party_uri(party)} (this party's id) in its requested extensions"
    if not parties:
        return f"the request must name the party that asks: {want}"
    return f"the request names another party, or several: it must name only {want}"


def check_csr(text: str, *, field: str = "$.csr") -> CheckedCsr:
    """The party's CSR, checked: PEM or base64 DER, self-signature valid, key strong enough."""
    text = text.strip()
    if len(text) > MAX_CSR_CHARS:
        raise CsrError(field, f"longer than {MAX_CSR_CHARS} characters")
    try:
        if text.startswith(_PEM_BEGIN):
            csr = x509.load_pem_x509_csr(text.encode("ascii"))
        else:
            # base64 as tools write it: wrapped in lines (base64, openssl base64)
            flat = "".join(text.split())
            csr = x509.load_der_x509_csr(base64.b64decode(flat, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise CsrError(field, "not a PKCS#10 certificate request (PEM, or DER in base64)") from None
    try:
        key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):  # a key algorithm nobody knows
        raise CsrError(field, "the request's public key cannot be read") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrError(field, f"an RSA key of {MIN_RSA_BITS} bits or more is required")
        e = key.public_numbers().e
        if e < MIN_RSA_EXPONENT or e % 2 == 0 or e >= 2**256:
            raise CsrError(
                field, f"an RSA key's public exponent must be odd, {MIN_RSA_EXPONENT} or more"
            )
        if key.key_size > _OPENSSL_SMALL_MODULUS_BITS and e.bit_length() > _OPENSSL_MAX_E_BITS:
            # OpenSSL verifies nothing under such a key: it said "does not verify"
            raise CsrError(
                field,
                f"an RSA key over {_OPENSSL_SMALL_MODULUS_BITS} bits must have a public "
                f"exponent of {_OPENSSL_MAX_E_BITS} bits at most (65537 is usual)",
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CsrError(field, "an EC key must be on P-256 (secp256r1)")
    else:
        raise CsrError(field, "the key must be RSA (2048 bits or more) or EC P-256")
    try:
        digest = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:  # a signature algorithm cryptography does not know
        digest = None
    if digest is not None and not isinstance(digest, _DIGESTS):
        shown = {"sha1": "SHA-1", "md5": "MD5"}.get(digest.name, digest.name.upper())
        raise CsrError(
            field, f"the request is signed with {shown}: SHA-256 or stronger is required"
        )
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):  # an algorithm cryptography cannot verify
        valid = False
    if not valid:
        raise CsrError(
            field, "the request's signature does not verify with its own key (RFC 2986 §3)"
        )
    try:
        parties = csr_parties(csr)
    except ValueError:  # a malformed extensionRequest, or an extension in it twice
        raise CsrError(field, "the request's requested extensions cannot be read") from None
    return CheckedCsr(
        der=csr.public_bytes(Encoding.DER),
        spki=key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        parties=parties,
    )


def approval_window(approved: date, approved_until: date | None) -> tuple[int, int | None]:
    """An approval period (認可, Act §38-2(1)) as epoch seconds: from the first second of its
    day (Japan time) to the first second after its last day (None: no end was set)."""
    start = int(datetime.combine(approved, time(0), tzinfo=JST).timestamp())
    if approved_until is None:
        return start, None
    # a Japan day is 86,400 seconds (no daylight saving); the day after date.max has no date
    return start, int(datetime.combine(approved_until, time(0), tzinfo=JST).timestamp()) + 86_400


def request_id(party: str, spki: bytes, window: tuple[int, int | None]) -> str:
    """The id of a request: the party, the public key and the approval window
    (`approval_window`) it rests on. 32 hex digits."""
    h = hashlib.sha256(b"jpki-va token request\x00")
    h.update(party.encode() + b"\x00" + spki + b"\x00")
    h.update(f"{window[0]}\x00{window[1]}".encode())
    return h.hexdigest()[:32]


def token_serial(rid: str) -> int:
    """The token's serial: 127 bits from the request id, never 0 (RFC 5280 §4.1.2.2)."""
    n = int.from_bytes(hashlib.sha256(b"jpki-va token serial\x00" + rid.encode()).digest()[:16])
    return (n >> 1) or 1


def token_holder(party: str) -> bytes:
    """The store's holder key of a party's tokens (its links, `crlbuilder.store`): a digest of
    the party id. A verifier is no resident: nothing personal is hashed here."""
    return hashlib.sha256(b"jpki-va verifier-token holder\x00" + party.encode()).digest()


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One request file (``<id>.json``): who asked, for which key, when (求め, Act §38-3(1))."""

    id: RequestId
    party: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}\Z")]
    csr: bytes
    """The CSR's DER (base64 in the JSON)."""
    requested_at: Annotated[datetime, msgspec.Meta(tz=True)]
    """When the responder accepted the request: the token's notBefore at the earliest."""


def request_path(directory: Path, rid: str) -> Path:
    return directory / f"{rid}.json"


def issued_path(directory: Path, rid: str) -> Path:
    return directory / f"{rid}.pem"


TMP_NAME: Final = re.compile(r"^\..+\.(json|pem)\.\d+(\.[0-9a-f]+)?\.tmp$")
"""The temporary names `write_whole` gives requests and tokens (and the older ones without the
random part): the token directories' own, all that `sweep_tmp` removes there."""


def sweep_tmp(directory: Path, *, now: float, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove the stale temporaries of requests and tokens in ``directory``
    (`atomicfile.sweep_tmp`, `TMP_NAME` only); returns how many."""
    return atomicfile.sweep_tmp(directory, now=now, older_than=older_than, name=TMP_NAME)


def write_request(directory: Path, req: TokenRequest) -> Path:
    """Queue ``req`` for the builder (``<id>.json``, written whole, mode 0600)."""
    path = request_path(directory, req.id)
    write_whole(path, msgspec.json.encode(req), mode=0o600)
    return path


def read_request(path: Path) -> TokenRequest:
    """A request file; raises `msgspec.DecodeError`/`ValidationError` or `OSError`."""
    return msgspec.json.decode(path.read_bytes(), type=TokenRequest)
