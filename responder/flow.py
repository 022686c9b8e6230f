"""The OCSP request flow: the whole decision on one request, sans-I/O (失効情報の提供, Act §18(1), §37(1)).

`OcspFlow.decide` takes the request's DER, what the transport proves
(`responder.access.Credentials`), the time, the store (a
`crlbuilder.store.reader.ReadSource`) and the registry of parties in force, and
returns what to do:

- `Answer`: response bytes to send now (a cached answer, or the builder's pre-signed one);
- `Refusal`: an error responseStatus and the rule that chose it (never any status data);
- `Signing`: a fresh response to sign (a `responder.ocsp.SignJob`) for a proven party.

Order, the first refusal wins; nothing is read from the store before a party is proven:

1. parse (RFC 6960 §4.1): bad bytes are ``malformedRequest`` (rule ``malformed``);
2. authenticate (`responder.access`: client certificate, bearer token, or a signed
   request; registered parties only, Act §17(1), §36(1)): none is ``unauthorized``
   (``unauthenticated``), a requestorName without a signature ``sigRequired`` (RFC
   6960 §2.3: the request must be signed);
3. the issuer: every CertID names one issuer generation we serve (one delegated
   signer covers one issuer), else ``unauthorized`` (``unknown_issuer``);
4. policy (`responder.policy.decide`; on a group appliance `responder.policy.decide_member`:
   only the group's own members, 署名確認者 Act §20(1), sign families only): may this party receive this family's
   revocation information by OCSP now (started, not ended, not suspended, 提供の停止
   Act §18(6), §37(4); family and method in its agreement, 取決め Act §17(4), §36(2)),
   else ``unauthorized`` with the policy's rule. The status of a 特定利用者証明検証者証明符号
   (Act §38-3, the token issuer's certificates) is given to every registered party whose
   provision runs (`responder.policy.decide_token_status`) and not counted in the ledger;
5. quota (the agreed requests per second and per day, Ord §31, §33, §62), through the
   `Quota` port (the shell's shared table, `responder.limits.LimitsTable`): used up is
   ``tryLater`` (``quota``); on a group appliance a member has no agreement, and the port
   holds it to the group's bound on each member (`responder.memberbound.MemberQuota`, Ord
   §33(4)): used up is ``tryLater`` (``member_quota``);
6. the lookup (`OcspFlow.lookup`), in one consistent view of the store;
7. for a party whose agreement bounds its provisions per day (``provisions_per_day``,
   件数), an answer to give (`Answer`, `Signing`) takes one provision per CertID, what the
   ledger will count (`Quota.take_provisions`), all or none: past the bound is
   ``tryLater`` (``quota``), nothing taken. A token's status is no provision and takes
   none. The shell gives a `Signing`'s provisions back when its signature is not made
   or not sent (fair share, signer failure, connection gone: `Quota.give_back_provisions`),
   an `Answer`'s when it is never written (its connection gone while it waited behind a
   slower answer: `responder.http.Provision.dropped`; the ledger counts an answer only
   as it is written, `Provision.sent`), and moves them to the new Japan day when the
   signature is made after 00:00 JST (the day the ledger dates it; none left there:
   ``tryLater``). Without the field this step is one attribute test.

What the lookup answers (RFC 6960, RFC 5019 profile):

- when the issuer's data is past the nextUpdate the builder promised (its last
  CRL's nextUpdate, else its pre-signed answers' earliest, else the last build run's own
  promise, `crlbuilder.store.reader.ReaderRules.promised_next_update`: so a stopped
  builder's issuer with no CRL and no revoked serial goes stale too), ``tryLater``
  (``stale``): never an expired answer; on a group
  appliance's store, likewise for an issuer no CRL of which was imported
  (`crlbuilder.store.reader.never_fed`): nothing vouches for its serials; and for an
  issuer under whose index the store's issuer table records another issuer
  (`OcspFlow.foreign`): the status records there are not this issuer's;
- a revoked serial with a stored pre-signed answer of the current status version,
  a SHA-1 CertID the answer echoes byte for byte (hashAlgorithm parameters NULL,
  `crlbuilder.ocsp.response.cert_id_der`), no nonce and one CertID gets the bytes signed
  (`presigned_der`: stored as its parts, the answer is rebuilt by the encoder the builder
  signed and checked against the stored check, signed afresh when it does not match; stored
  as its stem, those bytes), while now lies between their thisUpdate and nextUpdate (one
  dated ahead, by a builder's clock ahead of this node's or a build ``--as-of`` a later
  instant, is rejected by clients: signed afresh instead);
- a good or unknown serial is signed on demand and cached per worker, keyed by the
  request's CertID DER (an answer echoes the CertID asked: parameters NULL and absent
  are two entries) and checked against the status record's version (read before the
  cache), so a revoked serial can never get a cached good; a new store generation
  empties the cache;
- a nonce (RFC 9654), several CertIDs, or a SHA-256 CertID force a fresh signature;
- records mode (a store built from issuance records): a serial with no issuance
  record is ``unknown``; an expired, never revoked one is ``good`` (OCSP speaks of
  revocation; expiry shows in the certificate itself). A serial whose revocation
  record passed its retention and was erased (Ord §70(1)(iii); the certificate had
  expired too) is never ``good``: ``unknown``, or ``revoked`` at the kept time with
  no reason when crlbuilder kept it (``crl.erased_answer``). CRL-import mode (a
  group appliance): a serial absent from the 機構's CRL is ``good`` (RFC 6960 §2.2:
  not revoked; a CRL cannot tell a never-issued serial, docs/operations.md), or
  ``unknown`` when the group configured so (``[group] unlisted``);
- a good answer's nextUpdate (and so the HTTP max-age and Expires, RFC 5019 §6.2)
  never passes the instant the certificate is due to lose effect: its notAfter or
  its holder's pending 30-day lapse (Act §31(2), `StoreReader.lapse_due`;
  `responder.ocsp.good_next_update`). The bound travels with the cached entry; a
  move-out notice bumps the status version of the holder's auth certificates. The
  lapse takes effect only when the builder writes it (§34(1)(2)): between the due
  instant and that write the answer is ``tryLater`` (``stale``), never good;
- a CA key compromised with no successor signer: ``tryLater`` (``stale``);
- the signer's certificate past its notAfter (the worker loaded it when it started, when
  it was valid): ``tryLater`` (rule ``signer_expired``), no answer at all, since every
  client rejects what that signer signed (RFC 6960 §4.2.2.2, checked at the time the
  client validates). Not its notBefore: a worker only gets before it by a clock set back
  (`responder serve` refuses a signer not valid yet at start), and clients check the
  signer at their own time, not at the answer's producedAt. A fresh
  answer's nextUpdate, good or revoked, never passes the signer's notAfter
  (`crlbuilder.ocsp.response.ResponseSigner.capped`), nor does a pre-signed one's (the
  builder caps it), so no cached or stored answer outlives the signer either. One
  comparison of two integers per request.

What stays in the shell (`responder.app`): the HTTP routes and the GET form, the
fresh signatures and their per-party fair queue (`responder.loopsigning`: a party past
its share gets ``tryLater``, rule ``fair_share``), the ledger (帳簿, Act §40), the
metrics and access log, the registry file, the quota table's shared memory.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from typing import Final, Protocol

from crlbuilder.model import Family
from crlbuilder.ocsp.request import CertId, OcspRequest, RequestError, parse_request
from crlbuilder.ocsp.response import (
    CertStatus,
    ResponseSigner,
    ResponseStatus,
    SingleAnswer,
    cert_id_der,
    issuer_hashes,
)
from crlbuilder.store import format as sf
from crlbuilder.store.reader import Generation, ReadSource, StoredAnswer, StoreReader, never_fed
from crlbuilder.validity import expired_at
from responder import access, policy
from responder.config import OcspConfig
from responder.limits import Wait
from responder.memberbound import MEMBER_QUOTA
from responder.ocsp import IssuerView, Ready, SignJob, good_next_update
from responder.registry.lookup import Registry
from responder.registry.party import Party
from responder.registry.vocabulary import Method, Service
from responder.structs import FrozenNoGc

MALFORMED: Final = "malformed"
UNAUTHENTICATED: Final = policy.Rule.UNAUTHENTICATED.value
UNKNOWN_ISSUER: Final = "unknown_issuer"
QUOTA: Final = policy.Rule.QUOTA.value
STALE: Final = "stale"
SIGNER_EXPIRED: Final = "signer_expired"
"""The flow's own refusal rules (the ``rule`` label, `responder.metrics.RULES`); the rest
are `responder.policy.Rule` values."""


class Quota(Protocol):
    """The agreed quotas, counted across the workers: `responder.limits.LimitsTable`."""

    def admit(self, party: Party, now: float) -> Wait | None:
        """Count one request of ``party`` if its quotas allow it; else which quota and the wait."""
        ...

    def take_provisions(self, party: Party, n: int, now: float) -> Wait | float:
        """Take ``n`` of the party's provisions of the day, all or none: the instant of the
        Japan day taken from, for the ledger to date them at; else the wait."""
        ...

    def give_back_provisions(self, party: Party, n: int, now: float) -> None:
        """Undo `take_provisions` for provisions that were not given after all."""
        ...


class Answer(FrozenNoGc, frozen=True):
    """Response bytes to send now, to a proven party (the ledger counts one per CertID)."""

    ready: Ready
    party: Party
    service: Service | None
    """None for the status of a 特定利用者証明検証者証明符号 (`policy.decide_token_status`):
    not counted in the ledger."""
    at: float
    """The instant the ledger dates it at (帳簿, Act §40): the decision's, or 00:00 JST of
    the later day its provisions were taken from (`Quota.take_provisions`: the clock set
    back across 00:00 JST)."""


class Signing(FrozenNoGc, frozen=True):
    """A fresh response to sign for a proven party (by the shell's signer)."""

    job: SignJob
    party: Party
    service: Service | None
    """As `Answer.service`."""
    now: float
    """The instant its provisions were taken at (`Quota.take_provisions`: the decision's, or
    00:00 JST of the later day taken from when the clock was set back across 00:00 JST), of
    the Japan day they were taken for: a give-back (`Quota.give_back_provisions`) must name
    that day, not the day the signature failed in (past midnight, that would come off the
    new day's count), and the ledger never dates the answer earlier. A signature
    made after 00:00 JST is provided, and counted in the ledger, in the new day: the shell
    moves its provisions there (`responder.limits.LimitsTable.carry_provisions`)."""


class Refusal(FrozenNoGc, frozen=True):
    """An error responseStatus instead of data, and the rule that chose it."""

    status: ResponseStatus
    rule: str
    party: Party | None = None
    """The proven party, None before authentication succeeded."""
    family: Family | None = None
    """The certificates' family, once the issuer is known."""


class Unavailable(enum.Enum):
    """Why the lookup cannot answer now (``tryLater``, rule ``stale``)."""

    STALE = "the issuer's data is past the nextUpdate the builder promised"
    LAPSE_DUE = "a 30-day lapse (Act §31(2)) is due and not yet written by the builder"
    NO_SIGNER = "the issuer's CA key is compromised and no successor signer is configured"
    FOREIGN = "the store records another issuer under this issuer's index"
    SIGNER_EXPIRED = "the delegated OCSP signer's certificate has expired"


_PARSE_REFUSALS: Final = {s: Refusal(s, MALFORMED) for s in ResponseStatus}
_UNAUTHENTICATED: Final = Refusal(ResponseStatus.UNAUTHORIZED, UNAUTHENTICATED)
_SIG_REQUIRED: Final = Refusal(ResponseStatus.SIG_REQUIRED, UNAUTHENTICATED)
_STATUS_NAME: Final = {
    CertStatus.GOOD: "good",
    CertStatus.REVOKED: "revoked",
    CertStatus.UNKNOWN: "unknown",
}
_log: Final = logging.getLogger("responder.flow")

_SERIAL_END: Final = 1 << 160
"""Serials at or past this (or not positive) have no status key: never ours."""


class PresignedUnusable(Exception):
    """A pre-signed answer stored as its parts does not rebuild the bytes it was signed for (its
    check does not match, `store.format.response_check`): its value was damaged, or the encoder
    changed since the builder signed it. Its bytes would not verify: the answer is signed
    afresh instead (`OcspFlow`), from the status record as every fresh answer is."""


def presigned_der(
    stored: StoredAnswer, st: sf.StatusRecord, cid: CertId, signer: ResponseSigner
) -> bytes | None:
    """The DER to send for a pre-signed answer of ``st``'s version by ``signer`` asked with the
    SHA-1 CertID ``cid``, or None when it does not echo ``cid`` (hashAlgorithm parameters
    absent, not NULL: signed afresh).

    Stored as its stem (an earlier version's layout): the stem and the signer's ``certs``.
    Stored as its parts: the tbsResponseData rebuilt by the encoder the builder signed
    (`ResponseSigner.presigned_data`, from the CertID, ``st``'s revocationTime and reason and
    the stored times), checked against the stored check (`PresignedUnusable` when it does not
    match: the bytes would not verify), then the envelope around it and the signature."""
    if not stored.parts:
        return stored.stem + signer.certs_suffix if cid.der in stored.stem else None
    cert_id = cert_id_der("sha1", cid.issuer_name_hash, cid.issuer_key_hash, cid.serial)
    if cid.der != cert_id:
        return None
    try:
        signed = signer.presigned_data(
            cert_id, st.revoked_at, st.reason, stored.this_update, stored.next_update
        )
    except ValueError:  # a time no GeneralizedTime holds: no builder signed it
        raise PresignedUnusable from None
    if not stored.rebuilt(signed):
        raise PresignedUnusable
    return signer.assemble(signed, stored.signature)


class OcspFlow:
    """One worker's OCSP decision and what it keeps between requests: the issuer table,
    each issuer's promised nextUpdate, and the good-answer cache."""

    def __init__(
        self,
        issuers: Iterable[IssuerView],
        quota: Quota,
        config: OcspConfig,
        *,
        group_id: str | None = None,
        unlisted: CertStatus = CertStatus.GOOD,
    ) -> None:
        self.quota = quota
        self.config = config
        self.group_id = group_id
        """On a group appliance (団体署名検証者, Act §20(1)): the group's party id; its
        members are answered (`responder.policy.decide_member`), nobody else. None: the
        機構's appliance (`responder.policy.decide`)."""
        self.unlisted = unlisted
        """CRL-import mode: the status of a serial on no CRL (docs/operations.md)."""
        """The bounds of a request and the freshness policy ([ocsp]); replaced on SIGHUP."""
        self.by_index: dict[int, IssuerView] = {}
        self.issuers: dict[tuple[str, bytes, bytes], IssuerView] = {}
        """(hash algorithm, issuerNameHash, issuerKeyHash) -> issuer, sha1 and sha256 only."""
        self._services: dict[int, Service | None] = {}
        """Index -> the service an OCSP answer about its certificates provides (None: a
        token's status, Act §38-3): what `decide` needs of the family, looked up once."""
        for view in issuers:
            self.by_index[view.index] = view
            family = view.family
            self._services[view.index] = policy.service_for_ocsp(family) if family.is_jpki else None
            for alg in ("sha1", "sha256"):
                name_hash, key_hash = issuer_hashes(view.certificate, alg)
                self.issuers[(alg, name_hash, key_hash)] = view
        self._cache: dict[bytes, tuple[int, Ready]] = {}
        """The request's CertID DER -> (status version, answer). The CertID whole, not the
        status key and hash algorithm: an answer echoes the CertID it was asked, and one
        certificate has several (SHA-1 or SHA-256; hashAlgorithm parameters NULL or absent)."""
        self._seen = Generation(-1, -1)
        self._snapshot = -1
        self._fresh_until: dict[int, int] = {}
        self._compromised: frozenset[int] = frozenset()
        self._never_fed: frozenset[int] = frozenset()
        """Issuers of the Act's families a group store holds no CRL of (`reader.never_fed`)."""
        self._foreign: dict[int, str] = {}
        """Index -> the id the store's issuer table gives it, where that is not this
        responder's issuer of the index (`foreign`)."""
        self.crl_import = False
        self.lapse_refusals = 0
        """tryLater answers for a certificate whose 30-day lapse is due but not yet written."""
        self.presigned_unusable = 0
        """Pre-signed answers that did not rebuild the bytes they were signed for
        (`PresignedUnusable`), signed afresh; the first is logged, once per worker."""

    # --- the decision ---------------------------------------------------------------

    def standing(
        self, party: Party, family: Family, registry: Registry, now: float
    ) -> Refusal | None:
        """None when ``party`` may receive the status of a ``family`` certificate by OCSP at
        ``now`` under ``registry``, else the refusal (step 3 of the module docstring).

        The shell asks again, under the registry of the moment, when a fresh signature it
        waited for is made (`responder.app.JpkiApp`): the answer is provided then, and a
        suspension (提供の停止, Act §18(6),(7), §37(4)) or an end of provision in force by then
        stops it, though the request was decided before."""
        service = policy.service_for_ocsp(family) if family.is_jpki else None
        return self._standing(party, family, service, registry, now)

    def _standing(
        self, party: Party, family: Family, service: Service | None, registry: Registry, now: float
    ) -> Refusal | None:
        """`standing`, given the family's service (None for a token's status)."""
        if service is not None:
            if self.group_id is None:
                verdict = policy.decide(
                    party, service=service, family=family, method=Method.OCSP, now=now
                )
            else:
                verdict = policy.decide_member(
                    party, self.group_id, registry.parties.get(self.group_id),
                    service=service, family=family, method=Method.OCSP, now=now,
                )  # fmt: skip
        else:  # a 特定利用者証明検証者証明符号 (Act §38-3): no provision the ledger counts
            verdict = policy.decide_token_status(party, now=now)
        if verdict is policy.ALLOWED:
            return None
        assert isinstance(verdict, policy.Refused)
        return Refusal(ResponseStatus.UNAUTHORIZED, verdict.rule.value, party, family)

    def decide(
        self,
        request: bytes,
        credentials: access.Credentials,
        now: float,
        store: ReadSource,
        registry: Registry,
        *,
        proven: Party | None = None,
    ) -> Answer | Refusal | Signing:
        """What to do with one OCSP request (the order is the module docstring's).

        ``proven``: the party the shell already proved from these same credentials against
        this same ``registry`` (`responder.app.JpkiApp.early`, before the body was read);
        step 2 then takes it instead of checking the credentials again.
        """
        try:
            cfg = self.config
            req = parse_request(request, max_certids=cfg.max_certids, max_nonce=cfg.max_nonce)
        except RequestError as e:
            return _PARSE_REFUSALS[e.status]
        party = proven if proven is not None else access.by_transport(registry, credentials, now)
        if party is None and req.signature is not None:
            party = access.by_signature(registry, req, now)
        if party is None:
            if req.signature is None and req.requestor_name is not None:
                return _SIG_REQUIRED
            return _UNAUTHENTICATED
        view = self.issuer_of(req)
        if view is None:
            return Refusal(ResponseStatus.UNAUTHORIZED, UNKNOWN_ISSUER, party)
        family = view.family
        service = self._services[view.index]
        refused = self._standing(party, family, service, registry, now)
        if refused is not None:
            return refused
        if self.quota.admit(party, now) is not None:  # on a group appliance a member's
            # only quota: the group's bound on each member (`responder.memberbound`)
            rule = QUOTA if self.group_id is None else MEMBER_QUOTA
            return Refusal(ResponseStatus.TRY_LATER, rule, party, family)
        with store.read() as reader:
            found = self.lookup(req, view, int(now), reader)
        at = now
        if (
            service is not None
            and party.provisions_per_day is not None
            and not isinstance(found, Unavailable)
        ):
            taken = self.quota.take_provisions(party, len(req.cert_ids), now)
            if isinstance(taken, Wait):
                return Refusal(ResponseStatus.TRY_LATER, QUOTA, party, family)
            at = taken
        if isinstance(found, Ready):
            return Answer(found, party, service, at)
        if isinstance(found, SignJob):
            return Signing(found, party, service, at)
        rule = SIGNER_EXPIRED if found is Unavailable.SIGNER_EXPIRED else STALE
        return Refusal(ResponseStatus.TRY_LATER, rule, party, family)

    def issuer_of(self, req: OcspRequest) -> IssuerView | None:
        """The one issuer of every CertID, or None (answer ``unauthorized``) when one is not
        ours or they name several issuers (one delegated signer covers one issuer only).

        Issuers are indexed by sha1 and sha256 CertID hashes only: a CertID with any
        other hash algorithm names no issuer we know (RFC 6960 §2.3 ``unauthorized``; why
        not ``unknown``: `crlbuilder.ocsp.request`, Decisions).
        """
        issuer = None
        for cid in req.cert_ids:
            view = self.issuers.get((cid.hash_alg, cid.issuer_name_hash, cid.issuer_key_hash))
            if view is None or (issuer is not None and view is not issuer):
                return None
            issuer = view
        return issuer

    def lookup(
        self, req: OcspRequest, view: IssuerView, now: int, reader: StoreReader
    ) -> Ready | SignJob | Unavailable:
        """The answer of an authenticated, authorized request about ``view``'s certificates."""
        self.refresh(reader)
        signer = self.signer_for(view)
        if signer is None:
            return Unavailable.NO_SIGNER
        if expired_at(signer.not_after, now):
            # past its notAfter's second (RFC 5280 §4.1.2.5: inclusive) every client rejects
            # what it signed: no answer, stored, cached or fresh (RFC 6960 §4.2.2.2)
            return Unavailable.SIGNER_EXPIRED
        next_update = signer.capped(now + self.config.good_validity_seconds)
        if view.index in self._foreign:  # another issuer's data: not this one's to answer from
            return Unavailable.FOREIGN
        if view.index in self._never_fed:  # no CRL of it imported: nothing vouches for a serial
            return Unavailable.STALE
        fresh = self._fresh_until.get(view.index, 0)
        if fresh:
            if fresh <= now:
                return Unavailable.STALE
            next_update = min(next_update, fresh)
        answers: list[SingleAnswer] = []
        statuses: list[str] = []
        single = len(req.cert_ids) == 1 and req.nonce is None
        cache_key: tuple[bytes, bytes, int] | None = None
        for cid in req.cert_ids:
            key = sf.status_key(view.index, cid.serial) if 0 < cid.serial < _SERIAL_END else None
            st = reader.status(key) if key is not None else None
            version = st.version if st is not None else 0
            if single and key is not None:
                # one dict lookup serves repeated answers, signed here or pre-signed;
                # the status version read above keeps a revoked serial from a cached good
                cached = self._cache.get(cid.der)
                if cached is not None and cached[0] == version and cached[1].next_update > now:
                    return cached[1]
                cache_key = (key, cid.der, version)
            if st is None:
                # a group appliance imported the CRLs of the Act's families only: a token
                # (Act §38-3) absent from its store is unknown there, never good
                imported = self.crl_import and view.family.is_jpki
                status = self.unlisted if imported and key is not None else CertStatus.UNKNOWN
                answers.append(SingleAnswer(cid.der, status))
            elif st.state == sf.STATE_REVOKED:
                if single and cid.hash_alg == "sha1" and key is not None:
                    stored = reader.stored_answer(key)
                    if (
                        stored is not None
                        and stored.version == version
                        and stored.this_update <= now < stored.next_update
                        and stored.signer_id == signer.signer_id
                        and (der := self._presigned(stored, st, cid, signer)) is not None
                    ):
                        ready = Ready(
                            der, stored.this_update, stored.next_update, ("revoked",),
                            (view.family,), presigned=True,
                        )  # fmt: skip
                        self._put(cid.der, version, ready)
                        return ready
                answers.append(SingleAnswer(cid.der, CertStatus.REVOKED, st.revoked_at, st.reason))
            elif st.state == sf.STATE_ERASED:
                # its revocation record passed retention and was erased (Ord §70(1)(iii)):
                # revoked at the kept time, no reason; unknown when no time was kept
                answers.append(
                    SingleAnswer(cid.der, CertStatus.REVOKED, st.revoked_at, 0)
                    if st.revoked_at
                    else SingleAnswer(cid.der, CertStatus.UNKNOWN)
                )
            else:
                lapse = reader.lapse_due(st)
                if lapse and lapse <= now:  # due, not yet written by the builder
                    self.lapse_refusals += 1
                    return Unavailable.LAPSE_DUE
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
            families=(view.family,) * len(answers),
            cache_key=cache_key,
        )

    # --- what is kept between requests -------------------------------------------------

    def refresh(self, reader: StoreReader) -> None:
        """Re-read per-issuer freshness when the builder wrote something new.

        Keyed by the store's `Generation`: a refresh run of crlbuilder (new CRLs and
        re-signed answers, no new records) moves the build number only, and must be seen
        too. A new generation empties the good-answer cache.
        """
        snapshot = reader.snapshot()  # the last committed write: unchanged means nothing new
        if snapshot == self._snapshot:
            return
        self._snapshot = snapshot
        seen = reader.generation()
        if seen == self._seen:
            return
        self._seen = seen
        self._cache.clear()
        self.crl_import = reader.crl_import()
        for index in self.by_index:
            self._fresh_until[index] = reader.promised_next_update(index)
        table = reader.issuers()
        self._compromised = frozenset(i.index for i in table if i.compromised_at)
        self._foreign = {
            i.index: i.id
            for i in table
            if i.index in self.by_index and i.id != self.by_index[i.index].id
        }
        self._never_fed = frozenset(
            i for i, v in self.by_index.items() if v.family.is_jpki and never_fed(reader, i)
        )

    def foreign(self) -> dict[int, str]:
        """As of the last `refresh`: each index under which the store's issuer table records
        another issuer than this responder's (its ``pki.json`` or ``group.json``), with the
        store's id. The status records there are that issuer's: this one's answers are
        ``tryLater`` (`Unavailable.FOREIGN`) and ``/readyz`` 503 until the two agree (a
        group's store made by ``import-crl --pki`` with the 機構's indexes and served with
        ``group.json``'s; a manifest edited after the store was built, which the builder
        then refuses to update)."""
        return dict(self._foreign)

    def signer_for(self, view: IssuerView) -> ResponseSigner | None:
        """Who signs ``view``'s answers now: its delegate, or after a compromise of its CA key
        the successor's delegate, or nobody (None) when there is no successor."""
        if view.index in self._compromised:
            return view.successor
        return view.signer

    def signer_expired(self, view: IssuerView, now: float) -> bool:
        """Whether ``view``'s signer's certificate has expired at ``now`` (past its notAfter's
        second, `crlbuilder.validity`): nothing about the issuer can be answered then (``tryLater``,
        rule ``signer_expired``), and `/readyz` says 503 naming it (`responder.app`)."""
        signer = self.signer_for(view)
        return signer is not None and expired_at(signer.not_after, now)

    def fresh_until(self, issuer_index: int) -> int:
        """The nextUpdate the builder promised for an issuer, as of the last `refresh`."""
        return self._fresh_until.get(issuer_index, 0)

    def stale(self, view: IssuerView, now: int) -> bool:
        """Whether ``view``'s data cannot be answered from at ``now``, as of the last
        `refresh`: past the nextUpdate promised, or (a group appliance) a signature issuer no
        CRL of which was imported (`never_fed`: every answer ``tryLater``, as a stale one's).
        An auth issuer of a group is never fed (Act §20(1)) and never stale: its certificates
        are refused, not answered. What `/readyz` and ``jpkiva_stale_issuer`` say."""
        if view.family.is_sign and view.index in self._never_fed:
            return True
        return 0 < self.fresh_until(view.index) <= now

    def remember(self, job: SignJob, ready: Ready) -> None:
        """Cache a freshly signed single answer (good or unknown, or revoked with a SHA-256 CertID).

        Not when its signer no longer signs for the issuer: a job decided before the
        builder recorded a compromise of the CA key (Act §14) and finished after it
        was signed by the compromised generation's delegate. The status version does
        not guard that (an unknown serial keeps version 0), and the cache, emptied by
        the new store generation, would otherwise take the answer back in.
        """
        if job.cache_key is None:
            return
        key, cert_id, version = job.cache_key
        view = self.by_index.get(sf.split_status_key(key)[0])
        if view is None or job.signer is not self.signer_for(view):
            return
        self._put(cert_id, version, ready)

    def _presigned(
        self, stored: StoredAnswer, st: sf.StatusRecord, cid: CertId, signer: ResponseSigner
    ) -> bytes | None:
        """`presigned_der`, or None (signed afresh) for an answer that does not rebuild."""
        try:
            return presigned_der(stored, st, cid, signer)
        except PresignedUnusable:
            self.presigned_unusable += 1
            if self.presigned_unusable == 1:
                _log.warning(
                    "presigned_answer_unusable",
                    extra={"fields": {
                        "message": "a pre-signed answer does not rebuild the bytes it was "
                        "signed for (a damaged responses value, or answers signed by another "
                        "release's encoder): such answers are signed afresh; `crlbuilder build "
                        "--presign-full` signs them again",
                    }},
                )  # fmt: skip
            return None

    def _put(self, cert_id: bytes, version: int, ready: Ready) -> None:
        entries = self.config.good_cache_entries
        if not entries:
            return
        if len(self._cache) >= entries:
            self._cache.pop(next(iter(self._cache)))
        self._cache[cert_id] = (version, ready)
