"""Attributing every request to a registered party before any lookup (access control).

Three proofs, as each party's registry entry allows: a TLS client certificate
(the worker terminated TLS, or a trusted proxy passed it on), a bearer token
(``Authorization: Bearer …``, compared by hash), or a signed OCSP request
(RFC 6960 §4.1.2: requestorName and a signature over tbsRequest, checked
against the party's registered certificate). The certificate a signed
request is checked against is found by index first (the requestorName, or
the certificate the request attached: `Registry.request_signers`), so a
request costs at most one signature check per candidate (one, unless a party
holds two certificates with the same subject), and a request whose requestor
is not registered costs none, however many parties are registered. Each credential counts only
inside its validity window (`responder.registry.CredentialInfo`), so a party
can rotate a token or certificate by holding two for a while. Nothing here
reads the status store; what the party may receive is
`responder.policy.decide`'s business; the caller refuses an unattributed
request with ``unauthorized``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder.ocsp.request import OcspRequest, RequestSignature
from responder.registry.lookup import Registry
from responder.registry.party import Party

_BEARER: Final = b"bearer "

_SIG_HASHES: Final[dict[str, hashes.HashAlgorithm]] = {
    "1.2.840.113549.1.1.11": hashes.SHA256(),  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12": hashes.SHA384(),
    "1.2.840.113549.1.1.13": hashes.SHA512(),
    "1.2.840.113549.1.1.5": hashes.SHA1(),  # noqa: S303 - sha1WithRSAEncryption, what older clients sign with
}


class Credentials(Protocol):
    """What the transport proves about a request: a TLS client certificate (the worker
    terminated TLS, or a trusted proxy passed it on) and the header fields (a bearer
    token). `responder.http.Request` is one."""

    @property
    def client_cert_der(self) -> bytes | None: ...

    @property
    def headers(self) -> Mapping[bytes, bytes]: ...


def bearer_token(req: Credentials) -> bytes | None:
    value = req.headers.get(b"authorization")
    if value is None or len(value) <= len(_BEARER) or value[: len(_BEARER)].lower() != _BEARER:
        return None
    return value[len(_BEARER) :].strip() or None


def by_transport(registry: Registry, req: Credentials, now: float | None = None) -> Party | None:
    """The party proven by the connection (client certificate) or a bearer token."""
    if req.client_cert_der is not None:
        party = registry.by_certificate(req.client_cert_der, now)
        if party is not None:
            return party
    token = bearer_token(req)
    if token is not None:
        return registry.by_token(token, now)
    return None


Verifier = Callable[[rsa.RSAPublicKey, RequestSignature, hashes.HashAlgorithm], bool]
"""Checks a request signature with one public key (injectable: tests count the calls)."""


def verify_rsa(
    key: rsa.RSAPublicKey, sig: RequestSignature, algorithm: hashes.HashAlgorithm
) -> bool:
    """RSASSA-PKCS1-v1_5 over the tbsRequest DER (RFC 6960 §4.1.2)."""
    try:
        key.verify(sig.signature, sig.tbs_request_der, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


def by_signature(
    registry: Registry,
    req: OcspRequest,
    now: float | None = None,
    *,
    verify: Verifier = verify_rsa,
) -> Party | None:
    """The party whose registered signed-request certificate verifies a signed OCSP request.

    Candidates come from the registry's index (`Registry.request_signers`: requestorName,
    attached certificate); no candidate means no signature check at all.
    """
    sig = req.signature
    if sig is None:
        return None
    algorithm = _SIG_HASHES.get(sig.algorithm_oid)
    if algorithm is None:
        return None
    for party, key in registry.request_signers(req.requestor_name, sig.certs, now):
        if isinstance(key, rsa.RSAPublicKey) and verify(key, sig, algorithm):
            return party
    return None
