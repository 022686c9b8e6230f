"""Answering OCSP requests from the status store (失効情報の提供 by OCSP, Act §18(1), §37(1)).

Sans-I/O: `OcspService.answer` takes the request's bytes, the party already
authenticated, and the time, and returns either the response bytes at once
(`Ready`) or a `SignJob` whose ``run()`` signs a fresh response (call it off
the event loop: it spends one RSA signature, with the GIL released). The HTTP
layer only moves those bytes.

What is answered (RFC 6960, RFC 5019 profile):

- the issuer of each CertID is found by (hash algorithm, issuerNameHash,
  issuerKeyHash) among every generation of every family; an issuer we do not
  serve, or a family the party may not receive, gets ``unauthorized`` for the
  whole request and no status;
- a revoked serial with a stored pre-signed answer of the current status
  version, a SHA-1 CertID, no nonce and one CertID gets those stored bytes;
- a good or unknown serial is signed on demand and cached per worker, keyed by
  the status record's version, so a revoked serial can never get a cached good;
- a nonce (RFC 9654), several CertIDs, or a SHA-256 CertID force a fresh signature;
- when the issuer's data is past the nextUpdate the builder promised (its last
  CRL's nextUpdate), the answer is ``tryLater``: never an expired answer.

Who signs: each issuer generation's delegated OCSP signer, certified by that
generation's CA key. Once the store records a compromise of that key
(発行者署名符号の漏えい等, Act §14, §16-12, §33, §35-12) its delegate is no longer
believable (whoever holds the key can certify another) and signs nothing: the
generation's answers (every certificate valid at the compromise is revoked,
cACompromise) are signed by the successor generation's delegate, which RFC
6960 §4.2.2.2 calls a Trusted Responder (clients must be configured to trust it,
e.g. ``openssl ocsp -VAfile``); with no successor in the manifest the answer is
``tryLater``. A request is answered by one issuer's signer (`issuer_of`).

Certificate status: records mode (a store built from issuance records): a
serial with no issuance record is ``unknown``; an expired, never revoked one is
``good`` (OCSP speaks of revocation; expiry shows in the certificate itself).
A serial whose revocation record passed its retention and was erased (Ord
§70(1)(iii); the certificate had expired too) is never ``good``: ``unknown``
by default, or ``revoked`` at the kept time with no reason when crlbuilder was
configured to keep it (``crl.erased_answer``; the store holds what to say).
CRL-import mode (a group appliance): a serial absent from the 機構's CRL is good.

A good answer's nextUpdate (and so the HTTP max-age and Expires derived from
it, RFC 5019 §6.2) never passes the instant the certificate is due to lose
effect: its notAfter (Act §15(1)(5), §16-14(1)(5), §34(1)(5), §35-14(1)(5)), and
for an auth certificate its holder's pending 30-day lapse (Act §31(2), through
`Store.lapse_due`), so no client keeps a cached good past either. The bound is
computed when the answer is signed and travels with the cached entry (a cache
hit reads nothing more); a move-out notice bumps the status version of the
holder's auth certificates, so an answer cached before it is not served. The
lapse takes effect only when the builder writes it (§34(1)(2)): between the due
instant and that write the answer is ``tryLater``, never good.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509

from crlbuilder.keys.signer import PemSigner
from crlbuilder.manifest import Manifest, ocsp_signer_files
from crlbuilder.model import Family
from crlbuilder.ocsp.request import OcspRequest
from crlbuilder.ocsp.response import (
    CertStatus,
    ResponseSigner,
    ResponseStatus,
    SingleAnswer,
    error_response,
    issuer_hashes,
)
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store

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
    ocsp_status: int = 0
    signing_seconds: float = 0.0
    """Time spent on the RSA signature of a freshly signed answer (metrics); 0 otherwise."""


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
    cache_key: tuple[bytes, str, int] | None
    """(status key, hash algorithm, status version) when the answer may be cached."""

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


def promised_next_update(store: Store, issuer_index: int, txn: Any) -> int:
    """The nextUpdate the builder promised for one issuer (0: none yet).

    Its last CRL's nextUpdate, else the earliest nextUpdate of its pre-signed answers.
    Past it the issuer's data is stale: OCSP answers ``tryLater`` and the metric
    ``jpkiva_stale_issuer`` is 1.
    """
    return store.crl_state(issuer_index, txn).next_update or (
        store.ocsp_state(issuer_index, txn).next_update
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


def store_generation(store: Store, txn: Any) -> tuple[int, int]:
    """(commit sequence, build number): changes whenever crlbuilder wrote anything.

    The commit sequence moves with every write of records; the build number with every
    pre-signing and CRL run (which may write new nextUpdates without a new commit).
    """
    meta = store.dbs[sf.DB_META]
    commit = txn.get(sf.META_COMMIT, db=meta)
    build = txn.get(sf.META_BUILD, db=meta)
    return (
        sf.unpack_u32(commit) if commit is not None else 0,
        sf.unpack_u32(build) if build is not None else 0,
    )


_STATUS_NAME: Final = {
    CertStatus.GOOD: "good",
    CertStatus.REVOKED: "revoked",
    CertStatus.UNKNOWN: "unknown",
}


class OcspService:
    """The OCSP answers of one worker: issuer table, store reads, the good-answer cache."""

    def __init__(
        self,
        store: Store,
        manifest: Manifest,
        *,
        good_validity_seconds: int,
        cache_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.good_validity = good_validity_seconds
        self.cache_entries = cache_entries
        self.clock = clock
        self.issuers: dict[tuple[str, bytes, bytes], IssuerView] = {}
        self.by_index: dict[int, IssuerView] = {}
        for i in manifest.issuers:
            cert = x509.load_pem_x509_certificate(manifest.path(i.cert).read_bytes())
            signer = PemSigner.from_files(manifest.path(i.ocsp_key), manifest.path(i.ocsp_cert))
            rs = ResponseSigner(signer)
            successor = None
            files = ocsp_signer_files(manifest, i, compromised=True)
            if files is not None:
                key, successor_cert = files
                successor = ResponseSigner(
                    PemSigner.from_files(manifest.path(key), manifest.path(successor_cert))
                )
            view = IssuerView(i.index, i.id, i.family, rs, cert, rs.certs_suffix, successor)
            self.by_index[i.index] = view
            for alg in ("sha1", "sha256"):
                name_hash, key_hash = issuer_hashes(cert, alg)
                self.issuers[(alg, name_hash, key_hash)] = view
        self._cache: dict[tuple[bytes, str], tuple[int, Ready]] = {}
        self._seen: tuple[int, int] = (-1, -1)
        self._snapshot = -1
        self._fresh_until: dict[int, int] = {}
        self._compromised: frozenset[int] = frozenset()
        self.crl_import = False
        self.stale_refusals = 0
        self.lapse_refusals = 0
        """tryLater answers for a certificate whose 30-day lapse is due but not yet written."""

    # --- store metadata -------------------------------------------------------

    def refresh(self, txn: Any) -> None:
        """Re-read per-issuer freshness when the builder wrote something new.

        Keyed by `store_generation`: a refresh run of crlbuilder (new CRLs and re-signed
        answers, no new records) moves the build number only, and must be seen too.
        """
        snapshot = txn.id()  # the last committed write: unchanged means nothing to re-read
        if snapshot == self._snapshot:
            return
        self._snapshot = snapshot
        seen = store_generation(self.store, txn)
        if seen == self._seen:
            return
        self._seen = seen
        self._cache.clear()
        self.crl_import = txn.get(sf.META_MODE, db=self.store.dbs[sf.DB_META]) == sf.MODE_CRL_IMPORT
        for index in self.by_index:
            self._fresh_until[index] = promised_next_update(self.store, index, txn)
        self._compromised = frozenset(i.index for i in self.store.issuers(txn) if i.compromised_at)

    def signer_for(self, view: IssuerView) -> ResponseSigner | None:
        """Who signs ``view``'s answers now: its delegate, or after a compromise of its CA key
        the successor's delegate, or nobody (None) when there is no successor."""
        if view.index in self._compromised:
            return view.successor
        return view.signer

    def fresh_until(self, issuer_index: int) -> int:
        return self._fresh_until.get(issuer_index, 0)

    # --- answering ------------------------------------------------------------

    def issuer_of(self, req: OcspRequest) -> list[IssuerView] | None:
        """The issuer of every CertID, or None when one is not ours (answer unauthorized).

        Issuers are indexed by sha1 and sha256 CertID hashes only: a CertID with any
        other hash algorithm names no issuer we know, so it is None too (RFC 6960 §2.3
        ``unauthorized``; why not ``unknown``: `crlbuilder.ocsp.request`, Decisions).
        """
        out = []
        for cid in req.cert_ids:
            view = self.issuers.get((cid.hash_alg, cid.issuer_name_hash, cid.issuer_key_hash))
            if view is None:
                return None
            out.append(view)
        return out

    def answer(self, req: OcspRequest, views: list[IssuerView]) -> Ready | SignJob:
        """The answer to an authenticated, authorized request (see the module docstring)."""
        now = int(self.clock())
        with self.store.env.begin() as txn:
            self.refresh(txn)
            next_update = now + self.good_validity
            signer = self.signer_for(views[0])
            if signer is None:  # a compromised CA key and no successor: nothing may sign
                return Ready(ERRORS[ResponseStatus.TRY_LATER], ocsp_status=ResponseStatus.TRY_LATER)
            for v in views:
                fresh = self._fresh_until.get(v.index, 0)
                if fresh:
                    if fresh <= now:
                        self.stale_refusals += 1
                        return Ready(
                            ERRORS[ResponseStatus.TRY_LATER], ocsp_status=ResponseStatus.TRY_LATER
                        )
                    next_update = min(next_update, fresh)
            answers: list[SingleAnswer] = []
            statuses: list[str] = []
            single = len(req.cert_ids) == 1 and req.nonce is None
            cache_key: tuple[bytes, str, int] | None = None
            status_db = self.store.status
            for cid, view in zip(req.cert_ids, views, strict=True):
                key = sf.status_key(view.index, cid.serial) if 0 < cid.serial < 1 << 160 else None
                raw = txn.get(key, db=status_db) if key is not None else None
                st = sf.unpack_status(raw) if raw is not None else None
                version = st.version if st is not None else 0
                if single and key is not None:
                    # one dict lookup serves repeated answers, signed here or pre-signed;
                    # the status version read above keeps a revoked serial from a cached good
                    cached = self._cache.get((key, cid.hash_alg))
                    if cached is not None and cached[0] == version and cached[1].next_update > now:
                        return cached[1]
                    cache_key = (key, cid.hash_alg, version)
                if st is None:
                    status = (
                        CertStatus.GOOD
                        if self.crl_import and key is not None
                        else CertStatus.UNKNOWN
                    )
                    answers.append(SingleAnswer(cid.der, status))
                elif st.state == sf.STATE_REVOKED:
                    if single and cid.hash_alg == "sha1" and key is not None:
                        stored = txn.get(key, db=self.store.dbs[sf.DB_RESPONSES])
                        if stored is not None:
                            sv, tu, nu, sid = sf.unpack_response_head(stored)
                            if sv == version and nu > now and sid == signer.signer_id:
                                ready = Ready(
                                    stored[sf.RESPONSE_HEAD_BYTES :] + signer.certs_suffix, tu, nu,
                                    ("revoked",), (view.family,), presigned=True,
                                )  # fmt: skip
                                self._put(key, cid.hash_alg, version, ready)
                                return ready
                    answers.append(
                        SingleAnswer(cid.der, CertStatus.REVOKED, st.revoked_at, st.reason)
                    )
                elif st.state == sf.STATE_ERASED:
                    # its revocation record passed retention and was erased (Ord §70(1)(iii)):
                    # revoked at the kept time, no reason; unknown when no time was kept
                    answers.append(
                        SingleAnswer(cid.der, CertStatus.REVOKED, st.revoked_at, 0)
                        if st.revoked_at
                        else SingleAnswer(cid.der, CertStatus.UNKNOWN)
                    )
                else:
                    lapse = self.store.lapse_due(st, txn)
                    if lapse and lapse <= now:  # due, not yet written by the builder
                        self.lapse_refusals += 1
                        return Ready(
                            ERRORS[ResponseStatus.TRY_LATER], ocsp_status=ResponseStatus.TRY_LATER
                        )
                    next_update = good_next_update(next_update, now, st.not_after, lapse)
                    answers.append(SingleAnswer(cid.der, CertStatus.GOOD))
                statuses.append(_STATUS_NAME[CertStatus(answers[-1].status)])
        return SignJob(
            signer=signer,
            answers=answers,
            produced_at=now,
            next_update=next_update,
            nonce=req.nonce,
            statuses=tuple(statuses),
            families=tuple(v.family for v in views),
            cache_key=cache_key,
        )

    def remember(self, job: SignJob, ready: Ready) -> None:
        """Cache a freshly signed single answer (good or unknown, or revoked with a SHA-256 CertID)."""
        if job.cache_key is None:
            return
        key, alg, version = job.cache_key
        self._put(key, alg, version, ready)

    def _put(self, key: bytes, alg: str, version: int, ready: Ready) -> None:
        if not self.cache_entries:
            return
        if len(self._cache) >= self.cache_entries:
            self._cache.pop(next(iter(self._cache)))
        self._cache[(key, alg)] = (version, ready)
