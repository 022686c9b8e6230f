"""The token issuer's signature over a `token-revoked` record: made by the signer, checked by every node.

A 特定利用者証明検証者証明符号 (Act §38-3) is revoked when its party's approval (認可) no
longer holds (Act §38-2(6)) by the cluster signer's builder, which publishes a
`crlbuilder.model.TokenRevoked` record on the record stream for every node to apply. Any NATS
user allowed to publish there (the feed's publisher too, which holds the facts key that seals a
message), or whoever can drop a file where a publisher reads, could write such a record: its
source proves nothing. So the record carries ``signature``, a JWS (RFC 7515 Compact
Serialization, payload attached) made with the token issuer's key, the key that signs the
tokens (a PEM file or a ``pkcs11:`` URI: `crlbuilder.keys.jwsalg.SignerRS256`), over what the
revocation says: the token issuer and serial, the instant, the category and reason, and the
party (the token's holder digest, `crlbuilder.tokenrequest.token_holder`, nothing personal).
Every node checks it (`refusal`) against the token issuer's certificate it holds in its store's
issuer table, and against the record and the token's status record; a pure function of those,
so every node decides alike and their stores stay byte-equal. The signature is deterministic
(RSASSA-PKCS1-v1_5), so a revocation published again with its first instant is the same record.

Release 1.5's signer published unsigned revocations, which may stand on the record stream:
each node applies an unsigned one as release 1.5 did until its store holds the stream's first
message of a release that signs them (`crlbuilder.release.SIGNS_TOKEN_REVOCATIONS`), a flag
set in that message's batch (`crlbuilder.store.format.META_TOKEN_SIGNATURES`), then refuses
one (`TokenSignatures`, `required`). The stream's order decides, so a node replaying the
stream from its start revokes what the live nodes revoked and their stores stay byte-equal. A
signed one is checked before the flag too. A node fed by no stream applies no token record.

JOSE is joserfc's (serialization, header, verification with its own ``RS256``); nothing is
encoded by hand. The protected header is ``alg`` ``RS256`` and ``typ`` `TYP`, which no other
JWS of the service carries (a /v1 answer's is ``jpki-va-answer+jws``, by another key).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, NamedTuple

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from crlbuilder.keys.jwsalg import ALG, SignerRS256
from crlbuilder.keys.signer import Signer
from crlbuilder.model import Category, TokenRevoked

TYP: Final = "jpki-va-token-revoked+jws"
"""The protected header's ``typ``: this JWS says a token is revoked, nothing else."""

CATEGORY: Final = Category.APPROVAL_WITHDRAWN
"""A token is revoked for one cause only (Act §38-2(6)); signed, so no record says another."""

_MAX: Final = 4096
"""The largest header or payload read (a claim is some 300 bytes)."""


class TokenSignatures(NamedTuple):
    """Where, in one batch of the record stream, token revocations start to need the token
    issuer's signature (`crlbuilder.stream.token_signatures` reads it from the messages'
    releases; the store keeps it once met, `crlbuilder.store.format.META_TOKEN_SIGNATURES`)."""

    unsigned: int
    """The batch's records (ticks left out) before its first message of a release that signs
    token revocations: an unsigned revocation among them is applied, unless the store's flag
    is set already."""
    first: int | None
    """That message's stream sequence, which sets the store's flag; None: the batch has none."""


def unsigned_before(flag_set: bool, where: TokenSignatures | None) -> int:
    """How many of a batch's first records may be ``token-revoked`` records without the
    token issuer's signature (applied as release 1.5 applied them): none once the store's flag
    is set, nor outside the record stream (``where`` None); else those before the batch's first
    message of a signing release."""
    return 0 if flag_set or where is None else where.unsigned


class Claim(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the token issuer signs: the revocation of one token, as every node records it."""

    type: str
    """Always ``token-revoked`` (the record's kind)."""
    issuer: str
    serial: str
    """Lower-case hex, as the record id names it."""
    at: datetime
    category: str
    reason: int
    holder: str
    """The token's holder digest (hex): the party the revoked token was issued to."""


def claim(*, issuer: str, serial: int, at: datetime, holder: bytes) -> Claim:
    """The claim of token ``serial`` of ``issuer``, held by ``holder``, revoked at ``at``."""
    return Claim(
        type="token-revoked", issuer=issuer, serial=f"{serial:x}", at=at.astimezone(UTC),
        category=CATEGORY.value, reason=int(CATEGORY.default_reason), holder=holder.hex(),
    )  # fmt: skip


def _registry(signer: Signer | None = None) -> JWSRegistry:
    reg = JWSRegistry(algorithms=[ALG])
    if signer is not None:
        reg.algorithms = {ALG: SignerRS256(signer)}
    reg.max_header_length = _MAX
    reg.max_payload_length = _MAX
    return reg


def _key(cert: x509.Certificate) -> RSAKey | None:
    public = cert.public_key()
    return RSAKey.import_key(public) if isinstance(public, rsa.RSAPublicKey) else None


def sign(signer: Signer, *, issuer: str, serial: int, at: datetime, holder: bytes) -> str:
    """The compact JWS, by ``signer`` (the token issuer's key), of the revocation of token
    ``serial`` of ``issuer`` held by ``holder`` at ``at``: a `TokenRevoked`'s ``signature``."""
    key = _key(signer.certificate)
    if key is None:  # `load_signer` opens RSA keys only
        raise ValueError("the token issuer's key is not RSA")
    payload = msgspec.json.encode(claim(issuer=issuer, serial=serial, at=at, holder=holder))
    return jws.serialize_compact({"alg": ALG, "typ": TYP}, payload, key, registry=_registry(signer))


def refusal(rec: TokenRevoked, *, issuer_der: bytes, holder: bytes) -> str | None:
    """Why ``rec`` is refused (one line, nothing personal), or None when its ``signature`` is
    the token issuer's (``issuer_der``: its certificate) over what ``rec`` says, for the token
    whose status record names ``holder``."""
    if not rec.signature:
        return (
            f"the token revocation carries no signature of the token issuer {rec.issuer} "
            "(a token is revoked by the signer's records only)"
        )
    try:
        key = _key(x509.load_der_x509_certificate(issuer_der))
    except ValueError:
        key = None
    if key is None:
        return f"the token issuer {rec.issuer}'s certificate has no RSA key to check with"
    try:
        got = jws.deserialize_compact(rec.signature, key, registry=_registry())
    except (JoseError, ValueError):
        return f"the token revocation is not signed by the token issuer {rec.issuer}"
    if got.protected.get("typ") != TYP:
        return "the token revocation's signature is not a token revocation's (typ)"
    try:
        signed = msgspec.json.decode(got.payload, type=Claim)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "the token revocation's signed content does not parse"
    if signed != claim(issuer=rec.issuer, serial=rec.serial, at=rec.at, holder=holder):
        return (
            "the token revocation's signed content is not the record's "
            "(issuer, serial, instant, category or party)"
        )
    if rec.recorded_at != rec.at:
        return "the token revocation is recorded at another instant than it signs"
    return None
