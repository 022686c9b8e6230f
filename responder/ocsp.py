"""The OCSP answer's parts (失効情報の提供 by OCSP, Act §18(1), §37(1)): issuers, answers, sign jobs.

What a worker answers with, and nothing about when: the decision itself is
`responder.flow` (sans-I/O). Here:

- `IssuerView`: one issuer generation as a worker answers for it, its delegated OCSP
  signer and, after a compromise of its CA key, its successor's (`load_issuers` reads
  them from the PKI manifest once, when the worker starts);
- `Ready`: response bytes to send now, with the times the HTTP layer's caching headers
  need (RFC 5019 §6.2);
- `SignJob`: a fresh response to sign (``run()`` spends one RSA signature, with the GIL
  released), on the worker's signing threads or its event loop (`responder.loopsigning`);
- `ERRORS`: the constant bytes of every error responseStatus;
- `good_next_update`: a good answer's nextUpdate bounded by when the certificate loses
  effect (its notAfter, Act §15(1)(5), §16-14(1)(5), §34(1)(5), §35-14(1)(5); a pending
  30-day lapse, Act §31(2)).

Who signs, on a group appliance (団体署名検証者, Act §20(1)): the group's own responder key
for every issuer (`load_group_issuers`). On the 機構's: each issuer generation's delegated OCSP signer, certified by that
generation's CA key. Once the store records a compromise of that key
(発行者署名符号の漏えい等, Act §14, §16-12, §33, §35-12) its delegate is no longer
believable (whoever holds the key can certify another) and signs nothing: the
generation's answers (every certificate valid at the compromise is revoked,
cACompromise) are signed by the successor generation's delegate, which RFC
6960 §4.2.2.2 calls a Trusted Responder (clients must be configured to trust it,
e.g. ``openssl ocsp -VAfile``); with no successor in the manifest the answer is
``tryLater`` (`responder.flow`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography import x509

from crlbuilder.group.setup import GroupSetup
from crlbuilder.keys.signer import SignerError, load_signer
from crlbuilder.manifest import Manifest, ocsp_signer_files
from crlbuilder.model import Family
from crlbuilder.ocsp.delegate import delegate_problem, validity_problem
from crlbuilder.ocsp.response import ResponseSigner, ResponseStatus, SingleAnswer, error_response

ERRORS: Final[dict[int, bytes]] = {
    s: error_response(s) for s in ResponseStatus if s != ResponseStatus.SUCCESSFUL
}
"""The constant bytes of every error response (responseStatus only)."""


@dataclass(frozen=True, slots=True)
class IssuerView:
    """One issuer generation as a worker answers for it."""

    index: int
    id: str
    family: Family
    signer: ResponseSigner
    certificate: x509.Certificate
    certs_suffix: bytes
    """The signer's ``certs`` field, appended to stored answer stems."""
    successor: ResponseSigner | None = None
    """The successor generation's delegate: signs this issuer's answers once its CA key
    is compromised (`crlbuilder.manifest.ocsp_signer_files`)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Response bytes to send now, with the times the HTTP layer needs for caching headers."""

    der: bytes
    this_update: int = 0
    next_update: int = 0
    statuses: tuple[str, ...] = ()
    """good/revoked/unknown of each CertID (for metrics); empty for an error."""
    families: tuple[Family, ...] = ()
    presigned: bool = False
    signing_seconds: float = 0.0
    """Time spent on the RSA signature of a freshly signed answer (metrics); 0 otherwise."""
    http_fields: list[tuple[tuple[bytes, bytes], ...]] = field(
        default_factory=list, compare=False, repr=False
    )
    """The answer's RFC 5019 §6.2 header fields that do not depend on the time (Last-Modified,
    Expires, ETag), made by `responder.app.caching_headers` on the first GET of this answer
    and kept here (empty until then): a cached answer is sent many times, and they cost more
    than the rest of the answer's work. Not part of the answer's identity."""


@dataclass(slots=True)
class SignJob:
    """A fresh response to sign off the event loop; ``run()`` returns the `Ready`."""

    signer: ResponseSigner
    answers: list[SingleAnswer]
    produced_at: int
    next_update: int
    nonce: bytes | None
    statuses: tuple[str, ...]
    families: tuple[Family, ...]
    cache_key: tuple[bytes, bytes, int] | None
    """(status key, the request's CertID DER, status version) when the answer may be cached."""

    def run(self) -> Ready:
        t0 = time.perf_counter()
        der = self.signer.sign_response(
            self.answers,
            produced_at=self.produced_at,
            this_update=self.produced_at,
            next_update=self.next_update,
            nonce=self.nonce,
        )
        return Ready(
            der,
            self.produced_at,
            self.next_update,
            self.statuses,
            self.families,
            signing_seconds=time.perf_counter() - t0,
        )


def good_next_update(next_update: int, now: int, not_after: int, lapse: int) -> int:
    """A good answer's nextUpdate: ``next_update`` bounded by when the certificate loses effect.

    ``not_after`` (expiry, Act §34(1)(5) and its kin) and ``lapse`` (a pending 30-day
    lapse, Act §31(2), 0 for none) bound it when still ahead of ``now``; an expired
    certificate keeps ``next_update`` (its answer stays good: nothing can revoke it
    any more, and a bound before thisUpdate is no valid answer).
    """
    for bound in (not_after, lapse):
        if now < bound < next_update:
            next_update = bound
    return next_update


def load_group_issuers(setup: GroupSetup, *, outage_ok: bool = False) -> list[IssuerView]:
    """A group appliance's issuers (団体署名検証者, Act §20(1)), every one answered by the
    group's own responder key and certificate (``group.json``, `crlbuilder.group.setup`).

    The group holds no delegate of the 機構's CAs: its answers come from a responder its
    members trust by configuration (RFC 6960 §4.2.2.2, ``openssl ocsp -VAfile``), so the
    same signer stands for every issuer, before and after a compromise of a CA key.

    Unless ``outage_ok`` (a worker, after the master checked), a responder certificate not
    valid now (expired, or installed before its notBefore) raises `SignerError`, as the
    機構's delegates do (`load_issuers`): the members would reject every answer it signs.
    """
    cert_path = setup.path(setup.responder_cert)
    own = load_signer(setup.key_ref(), cert_path, outage_ok=outage_ok)
    if not outage_ok and (problem := validity_problem(own.certificate, datetime.now(UTC))):
        raise SignerError(f"{cert_path}: the group's responder certificate: {problem}")
    signer = ResponseSigner(own)
    views = []
    for i in setup.issuers:
        cert = x509.load_pem_x509_certificate(setup.path(i.cert).read_bytes())
        views.append(IssuerView(i.index, i.id, i.family, signer, cert, signer.certs_suffix, signer))
    return views


def load_issuers(manifest: Manifest, *, outage_ok: bool = False) -> list[IssuerView]:
    """Every issuer generation of the PKI manifest with its signers.

    A key field may be a PEM file or a PKCS#11 URI (`crlbuilder.keys.signer.load_signer`);
    called in each worker after the fork, so each opens its own PKCS#11 session. Raises
    `crlbuilder.keys.signer.SignerError` naming the key when one cannot be used, or the
    certificate when it is no delegated OCSP signer of its issuer (`delegate_problem`; not
    valid now, too, unless ``outage_ok``);
    ``outage_ok`` (a worker: the master checked every key before forking) accepts a
    token that cannot be reached now, whose signatures then fail until it is back.
    """
    views = []
    for i in manifest.all_issuers():
        cert = x509.load_pem_x509_certificate(manifest.path(i.cert).read_bytes())
        signer = load_signer(
            manifest.key_ref(i.ocsp_key), manifest.path(i.ocsp_cert), outage_ok=outage_ok
        )
        # its validity only where the master checks, before forking: a worker started
        # again after the certificate expired would otherwise fail, and again (the
        # alert JpkiVaOcspSignerExpiring says so weeks ahead)
        at = None if outage_ok else datetime.now(UTC)
        problem = delegate_problem(cert, signer.certificate, at=at)
        if problem is not None:
            raise SignerError(f"{manifest.path(i.ocsp_cert)}: {i.id}'s OCSP signer: {problem}")
        rs = ResponseSigner(signer)
        successor = None
        files = ocsp_signer_files(manifest, i, compromised=True)
        if files is not None:
            key, successor_cert = files
            successor = ResponseSigner(
                load_signer(
                    manifest.key_ref(key), manifest.path(successor_cert), outage_ok=outage_ok
                )
            )
        views.append(IssuerView(i.index, i.id, i.family, rs, cert, rs.certs_suffix, successor))
    return views
