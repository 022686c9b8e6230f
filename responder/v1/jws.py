"""Signed answers: a detached-payload JWS over each /v1 answer's exact body bytes (issue 12 item 7).

Every answer of a /v1 route that provides information (`responder.v1.route.Route.signed`)
carries, in the response header ``JWS-Signature``, a JWS Compact Serialization (RFC 7515
§7.1) with a detached payload (RFC 7515 appendix F): ``BASE64URL(header) + ".." +
BASE64URL(signature)``, where the signing input is the header segment, ".", and the
BASE64URL of the response body exactly as sent (``b64`` stays true: no RFC 7797). A party
that keeps the body and the header keeps evidence of what it was told and when (the
body's ``producedAt``) by whom, and a group (団体署名検証者) can relay both unchanged to
its members (Act §20(1)), who check them against the same certificate.

The protected header: ``alg`` ``RS256`` (RSASSA-PKCS1-v1_5 with SHA-256, the signature of
every key of the service, Ord §2, §38), ``kid`` (the RFC 7638 thumbprint of the public
key), ``x5c`` (the answer-signing certificate, DER base64: RFC 7515 §4.1.6) and ``typ``
``jpki-va-answer+jws``. The key is the responder's dedicated answer-signing key (応答署名
用の鍵), not an OCSP signer: its certificate, issued by the demo root with the extended key
usage `crlbuilder.manifest.ANSWER_SIGNING_EKU`, is published at ``GET /v1/keys`` (a JWKS
with ``x5c``: the certificate, then its issuer's when configured, each certifying the one
before, RFC 7517 §4.7, checked at start; a party checks kept answers offline against its
trust anchor). The JWS header's ``x5c`` carries the certificate alone (every answer
carries it). It is a PEM file or a ``pkcs11:`` URI (`crlbuilder.keys.signer.load_signer`).

JOSE is joserfc's (serialization, header checks, JWK thumbprint, verification); the one
thing added is an ``RS256`` algorithm whose signature comes from a
`crlbuilder.keys.signer.Signer` (`crlbuilder.keys.jwsalg`), so a key in an HSM signs as well as a PEM key (the
signature bytes are the same RSASSA-PKCS1-v1_5 SHA-256).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from crlbuilder.keys.jwsalg import ALG, SignerRS256
from crlbuilder.keys.signer import Signer, SignerError, load_signer
from crlbuilder.manifest import ANSWER_SIGNING_EKU, Manifest
from crlbuilder.ocsp.delegate import validity_problem
from crlbuilder.validity import expired_at
from responder.config import ResponderConfig

TYP: Final = "jpki-va-answer+jws"
_MAX_BODY: Final = 64 << 20
"""The largest body verified here (the 10,000-entry answers are about 1 MB)."""


def _registry(algorithms: dict[str, JWSAlgModel] | None = None) -> JWSRegistry:
    reg = JWSRegistry(algorithms=[ALG])
    if algorithms is not None:
        reg.algorithms = algorithms
    reg.max_header_length = 8192  # the header carries the certificate (x5c)
    reg.max_payload_length = _MAX_BODY
    return reg


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _jwk(
    cert: x509.Certificate, issuers: Sequence[x509.Certificate] = ()
) -> tuple[RSAKey, dict[str, Any]]:
    """The public JWK of an answer-signing certificate (``kid`` its RFC 7638 thumbprint,
    ``x5c`` the certificate then ``issuers``), as ``GET /v1/keys`` lists it."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("the answer-signing certificate's key is not RSA")
    key = RSAKey.import_key(public)
    jwk = dict(key.as_dict(private=False))
    x5c = [_b64(c) for c in (cert, *issuers)]
    jwk.update({"use": "sig", "alg": ALG, "kid": key.thumbprint(), "x5c": x5c})
    return key, jwk


def chain_problem(chain: Sequence[x509.Certificate]) -> str | None:
    """Why ``chain`` (leaf first) is not one RFC 7517 §4.7 allows in ``x5c`` (a certificate
    not issued and signed by the next one), or None."""
    for i, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            why = str(e) or "the signature does not verify"
            return (
                f"certificate {i + 1} ({cert.subject.rfc4514_string()}) is not issued by "
                f"the next, {issuer.subject.rfc4514_string()}: {why}"
            )
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return chain_problem((cert, issuer)) is None


class AnswerSigner:
    """Signs answers with one key; the JWKS of ``GET /v1/keys``: that key, then the
    ``published`` certificates' (a rollover's next or previous key, never used to sign)."""

    def __init__(
        self,
        signer: Signer,
        published: Sequence[x509.Certificate] = (),
        issuers: Sequence[x509.Certificate] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``issuers``: the signing certificate's issuer, then its issuers (checked by the
        caller, `chain_problem`), after it in its JWK's ``x5c``, and after each published
        certificate the same issuer signed. ``clock``: the time `sign` checks the
        certificate's notAfter against."""
        self._key, jwk = _jwk(signer.certificate, issuers)
        self.not_after: datetime = signer.certificate.not_valid_after_utc
        """The certificate's notAfter: past it `sign` refuses (and
        ``jpkiva_answer_signer_not_after_timestamp_seconds`` says when, `responder.signergauges`)."""
        self._clock = clock
        self.kid: str = jwk["kid"]
        self.header: dict[str, Any] = {
            "alg": ALG, "kid": self.kid, "typ": TYP, "x5c": [_b64(signer.certificate)]
        }  # fmt: skip
        self._registry = _registry({ALG: SignerRS256(signer)})
        keys = {self.kid: jwk}
        for cert in published:
            same = bool(issuers) and _issued_by(cert, issuers[0])
            other = _jwk(cert, issuers if same else ())[1]
            keys.setdefault(other["kid"], other)
        self.jwks: bytes = msgspec.json.encode({"keys": list(keys.values())})
        """The JSON Web Key Set (RFC 7517 §5) of ``GET /v1/keys``."""

    def sign(self, body: bytes) -> bytes:
        """The detached compact JWS (``header..signature``) over ``body`` exactly.

        `SignerError` once the certificate has expired (past its notAfter's second): a
        party checking the answer against its trust anchor would find it signed under an
        expired certificate, no evidence; the /v1 routes answer 503 instead (`responder
        serve` refuses such a certificate at start, `load_answer_signer`)."""
        if expired_at(self.not_after, self._clock()):
            raise SignerError(
                f"the answer-signing certificate expired at {self.not_after:%Y-%m-%dT%H:%M:%SZ}: "
                "nothing is signed with it (renew it: docs/operations.md)"
            )
        compact = jws.serialize_compact(self.header, body, self._key, registry=self._registry)
        head, _, rest = compact.partition(".")
        return f"{head}..{rest.rpartition('.')[2]}".encode("ascii")


def load_answer_signer(
    config: ResponderConfig, manifest: Manifest, *, outage_ok: bool = False
) -> AnswerSigner:
    """The configured answer-signing key (``[v1] answer_key``/``answer_cert``, else the PKI
    manifest's), opened and checked against its certificate now.

    Raises `SignerError` when none is configured, the key does not open or match, the
    certificate lacks the extended key usage `ANSWER_SIGNING_EKU`, or (unless ``outage_ok``)
    it is not valid now, expired or not yet valid (``responder serve`` refuses to start:
    answers must not go out unsigned, nor signed under a certificate a party would reject).
    ``outage_ok`` as for `load_signer` (a worker, after the master checked: one restarted
    after the notAfter starts, and its answers are 503, `AnswerSigner.sign`).
    """
    key = config.v1.answer_key or (
        manifest.key_ref(manifest.answer_key) if manifest.answer_key else ""
    )
    cert = config.v1.answer_cert or (
        manifest.path(manifest.answer_cert) if manifest.answer_cert else None
    )
    if not key or cert is None:
        raise SignerError(
            "no answer-signing key: set [v1] answer_key and answer_cert, or use a PKI whose "
            "manifest has them (crlbuilder pki init)"
        )
    signer = load_signer(key, cert, outage_ok=outage_ok)
    _check_eku(signer.certificate, cert)
    if not outage_ok and (problem := validity_problem(signer.certificate, datetime.now(UTC))):
        raise SignerError(f"{cert}: the answer-signing certificate: {problem}")
    issuers = _issuers(cert, signer.certificate, config.v1.answer_issuer)
    published: list[x509.Certificate] = []
    for path in config.v1.published_certs:
        try:
            other = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as e:
            raise SignerError(
                f"{path}: [v1] published_certs: not a PEM certificate ({e})"
            ) from None
        _check_eku(other, path)
        if not isinstance(other.public_key(), rsa.RSAPublicKey):
            raise SignerError(f"{path}: [v1] published_certs: the key is not RSA")
        published.append(other)
    return AnswerSigner(signer, published, issuers)


def _pem_certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SignerError(f"{path}: {what}: cannot read it ({e.strerror})") from None
    if not data.lstrip().startswith(b"-----BEGIN"):
        return []  # DER: one certificate, no chain (`load_signer` read it)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise SignerError(f"{path}: {what}: not PEM certificates ({e})") from None


def _issuers(
    cert_path: Path, leaf: x509.Certificate, issuer_path: Path | None
) -> list[x509.Certificate]:
    """The answer certificate's issuers, from its own file after it or ``[v1]
    answer_issuer``; refused (`SignerError`, the responder does not start) unless each
    certificate of the chain is issued and signed by the next."""
    in_file = _pem_certificates(cert_path, "the answer-signing certificate")[1:]
    named = _pem_certificates(issuer_path, "[v1] answer_issuer") if issuer_path else []
    if issuer_path is not None and not named:
        raise SignerError(f"{issuer_path}: [v1] answer_issuer: no PEM certificate in it")
    if in_file and named:
        raise SignerError(
            f"{cert_path} holds a chain and [v1] answer_issuer names one too: give one"
        )
    issuers = in_file or named
    problem = chain_problem([leaf, *issuers])
    if problem is not None:
        where = issuer_path if named else cert_path
        raise SignerError(f"{where}: the answer-signing chain (x5c) does not verify: {problem}")
    return issuers


def _check_eku(certificate: x509.Certificate, where: object) -> None:
    try:
        ext = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        usages = frozenset(ext.value)
    except x509.ExtensionNotFound:  # (cryptography 51 refuses an empty ExtendedKeyUsage)
        usages = frozenset()
    if x509.ObjectIdentifier(ANSWER_SIGNING_EKU) not in usages:
        raise SignerError(f"{where}: not an answer-signing certificate (EKU {ANSWER_SIGNING_EKU})")


def verify(signature: bytes | str, body: bytes, certificate: x509.Certificate) -> dict[str, Any]:
    """Check a detached JWS over ``body`` with ``certificate``'s key; its protected header.

    Raises ValueError when the signature does not verify, the algorithm is not ``RS256``,
    or the header's ``x5c`` does not name ``certificate`` (what a party that kept an answer
    runs; the tests too).
    """
    value = signature.decode("ascii") if isinstance(signature, bytes) else signature
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("not an RSA certificate")
    try:
        got = jws.deserialize_compact(
            value, RSAKey.import_key(public), payload=body, registry=_registry()
        )
    except JoseError as e:
        raise ValueError(f"the JWS does not verify: {e.error}") from None
    header: dict[str, Any] = dict(got.protected)
    der = certificate.public_bytes(serialization.Encoding.DER)
    if header.get("alg") != ALG or header.get("x5c", [None])[0] != base64.b64encode(der).decode():
        raise ValueError("the JWS header does not name this certificate")
    return header
