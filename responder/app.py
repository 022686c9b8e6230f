"""The responder's routes: what each path does, with whom, and in which order.

    POST /ocsp, POST /      OCSP (application/ocsp-request), RFC 6960 appendix A.1 (POST
                            /ocsp/ too: a responder URL given with a trailing slash); on a
                            group's appliance (``[group] file``) for its members only,
                            signed with the group's key (`responder.policy.decide_member`)
    GET  /ocsp/{base64}     OCSP by GET, with RFC 5019 caching headers; HEAD is refused
                            (405, Allow: GET): an answer's length is known only once it is
                            signed, and a HEAD provides nothing, so it must neither sign
                            nor count in the ledger (帳簿, Act §40)
    GET  /{base64}          the same for a responder URL that is the root (RFC 5019 §5:
                            ``{url}/{base64}``): a root path that can be a request by its
                            bytes (`responder.ocsppath`: ``M`` first, base64 and percent
                            escapes only), which no other route's path can be; one that
                            does not decode is malformedRequest, as below /ocsp/
    GET  /crl/{file}.crl    the current CRL files, for parties that may receive the family;
                            served from memory maps (`responder.crlfiles`), with
                            Last-Modified, ETag and Cache-Control: private, no-cache
                            (no shared cache may keep them, a party's own revalidates). HEAD answers what GET would (the
                            same status and header fields, the body left out) and
                            provides nothing: no ledger count (帳簿, Act §40), and
                            neither the quota nor the party's CRL cycle (周期, Ord
                            §31(2)) is used. A GET or HEAD whose If-None-Match (or,
                            without it, If-Modified-Since) names the current file gets
                            304 once the party may receive the family, before its
                            quota and cycle: nothing provided, counted or used;
                            one naming a newer CRL than this node's is 503, never
                            the older file (`responder.crlfiles.behind`)
    GET  /ca/index.json, /ca/{issuer}.pem  the issuers' CA certificates (the 機構 publishes
                            them, Ord §74(1)) and where their CRL files are: public, what a
                            group appliance is set up from (`crlbuilder group init`); not on
                            a group's appliance, which passes on no CRL file either (Act §52(4))
    GET  /reports/YYYY[.csv|.json]  the yearly report (報告書, Act §41), public; rendered at
                            most once per ``[ledger] collect_interval`` per year and format;
                            not on a group's appliance (the report is the 機構's; a group's
                            members' names are not published)
    GET  /announcements[.json|.atom]  CA compromise announcements (`responder.announce`), public
    *    /v1/...            the JSON API (`responder.v1`: batch status and the other
                            provisions of Act §18, §37, §38-3, each behind the same
                            authentication, policy, quotas and ledger as OCSP); on a
                            group's appliance only POST /v1/record-info, relayed to the
                            機構 for a member (`responder.relay`, Act §20(4),(5)), and POST
                            /v1/status and /v1/verify, answered from the group's own store
                            (Act §20(1), §21(1),(3)); another /v1 path there is 404 naming them
    GET  /healthz           the process answers
    GET  /readyz            the store is open, still the one at its path, and fresh, every
                            issuer's OCSP signer within its validity, its issuer table
                            agrees with this
                            responder's issuers, the registry loaded (several
                            nodes: caught up with the record stream; opt-in, the watch
                            lists replicated, ``[watch] ready_requires_replication``)

/metrics is not on this (public) port: it is served on the admin listener of
``[metrics] host`` and ``port`` (loopback by default) by `responder.metrics.MetricsApp`,
the ``admin`` attribute here; on the public port it answers 404 (counted as endpoint
``metrics``), so that a flood of unauthenticated scrapes cannot take the workers'
time from the registered parties.

The public routes (/healthz, /readyz, /announcements, /ca/, /reports/, a path not
served, never an OCSP GET at the root) are bounded per worker for clients that prove no party (`responder.publicbound`:
429 and a second's hold past ``[server.limits] public_per_second``); a party's requests
are never counted, and a connection's first request to /healthz or /readyz (a health
check's) is never refused.

Every OCSP request is decided by `responder.flow` (sans-I/O: parse, attribute it to a
registered party, check the issuer, the policy and the quota, and only then look
anything up); this module is its shell: it passes the request's bytes, the
transport's credentials, the time, the store and the registry in, and carries the
decision out (the response, the ledger count, the note). Fresh signatures are made on
signing threads (cryptography releases the GIL while signing), so the worker's other
connections go on, or on request on the event loop itself, one per loop iteration
(``[ocsp] signing``, `responder.loopsigning`); the jobs wait in a per-party fair queue
(`responder.signqueue`), so one party's flood of nonce requests cannot delay the
others', and a party past its share gets tryLater (rule ``fair_share``). Reports
(`/reports/`) render on threads of their own (``report``), never where signatures are
made.

A request with a body and an ``Authorization`` field that matches no party's
credential is refused from its headers (`JpkiApp.early`), before its body is
read, so it cannot hold a connection slot while the body trickles in.

Every route leaves its decision in ``Request.note`` (a `responder.outcome.Outcome`:
endpoint, OCSP status, first CertID's status, family, party id, answer source,
refusal rule) for the metrics and the access log, which never look at the
request's content themselves.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import formatdate
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client.registry import Collector

from crlbuilder.group.setup import GroupSetup, load_group_setup
from crlbuilder.jetstream import ClusterError
from crlbuilder.keys.pkcs11 import TokenUnavailable
from crlbuilder.keys.signer import load_signer
from crlbuilder.manifest import Manifest, load_manifest
from crlbuilder.ocsp.request import RequestError, decode_get_path
from crlbuilder.ocsp.response import CertStatus, ResponseStatus
from crlbuilder.store.format import StoreCorrupt
from crlbuilder.store.lmdbstore import Store
from responder import access, announce, flow, ledgerstream, policy, publicbound, streamlag
from responder.config import ResponderConfig
from responder.crlfiles import CrlFiles, behind, not_modified
from responder.flow import Answer, OcspFlow, Refusal, Signing
from responder.http import HttpHooks, Request, Response
from responder.ledger import Ledger, LedgerWriter
from responder.ledgergauges import RefusedCollector
from responder.limits import FILE_NAME as LIMITS_FILE
from responder.limits import CrlKind, Limit, LimitsTable, Wait
from responder.logs import AccessLog
from responder.loopsigning import FreshSigning, fresh_signing
from responder.memberbound import MemberQuota
from responder.metrics import (
    ANSWER_SIGNER,
    OCSP_STATUS,
    MetricsApp,
    WorkerMetrics,
)
from responder.ocsp import ERRORS, Ready, load_group_issuers, load_issuers
from responder.ocsppath import is_ocsp, is_root_request
from responder.outcome import NO_PARTY, Outcome
from responder.procsigning import ProcessSigningPool
from responder.quotagauges import QuotaCollector
from responder.registry.lookup import LastGoodRegistry, Registry
from responder.registry.party import Party
from responder.registry.schema import RegistryError
from responder.registry.syncstamp import RegistrySyncCollector
from responder.registry.vocabulary import Method, Service
from responder.relay import ROUTE as RELAY_ROUTE
from responder.relay import RecordInfoRelay
from responder.report import Format as ReportFormat
from responder.report import ReportCache, Scope, parse_report_path, render_ledger_dir
from responder.shipgauges import ShippingCollector
from responder.signchild import child_command
from responder.signergauges import SignerCollector
from responder.signing import SigningPool
from responder.storegauges import EntryCounts, IssuerRef, StoreCollector
from responder.streamgauges import StreamCollector
from responder.structs import FrozenNoGc
from responder.tlsgauges import TlsCollector
from responder.v1 import changes
from responder.v1 import problem as v1problem
from responder.v1.jws import AnswerSigner, load_answer_signer
from responder.v1.routes import CALLS_DIR, V1Api, public_documents
from responder.v1.routes import Done as V1Done
from responder.v1.table import MEMBER_ROUTES as V1_MEMBER_ROUTES
from responder.v1.table import ROUTES as V1_ROUTES
from responder.v1.token import issuer_not_after as token_issuer_not_after
from responder.v1.watchgauges import WatchCollector

_log: Final = logging.getLogger("responder.app")
SIGNING_START_SECONDS: Final = 10.0
"""How long a worker waits for its signing processes' keys before it says it is ready."""

OCSP_REQUEST: Final = b"application/ocsp-request"
OCSP_RESPONSE: Final = b"application/ocsp-response"
TEXT: Final = b"text/plain; charset=utf-8"
CRL: Final = b"application/pkix-crl"
PEM: Final = b"application/x-pem-file"

_NOT_FOUND: Final = Response(404, b"not found\n", TEXT)
_OK: Final = Response(200, b"ok\n", TEXT)
_UNAUTHORIZED_HTTP: Final = Response(
    401, b"unauthorized\n", TEXT, ((b"www-authenticate", b"Bearer"),)
)
_FORBIDDEN: Final = Response(403, b"forbidden\n", TEXT)
_METRICS_ELSEWHERE: Final = Response(
    404, b"not found: /metrics is served on the admin listener ([metrics] host, port)\n", TEXT
)
_REPORTS_BUSY: Final = Response(
    429, b"too many reports being rendered, retry\n", TEXT, ((b"retry-after", b"1"),)
)
"""429, not 503: a flood of the public route is the clients' doing, and a 5xx would count
toward the operators' error-ratio alert (JpkiVaErrorRatioHigh), which anyone could trip."""
_PUBLIC_BUSY: Final = Response(
    429,
    b"too many requests without credentials, retry\n",
    TEXT,
    ((b"retry-after", b"1"),),
    hold=1.0,
)
"""Past the worker's bound on clients proving no party (`responder.publicbound`): 429 for
the same reason as `_REPORTS_BUSY`; a token comes back within 1/``public_per_second`` s
(at least 1 a second), so Retry-After is 1, and the connection is not read for that
second (`responder.http.Response.hold`): a client that does not wait is refused once a
second per connection, not once per request."""
_CRL_FILE_BROKEN: Final = Response(
    503,
    b"CRL file unavailable, retry later\n",
    TEXT,
    ((b"cache-control", b"no-store"), (b"retry-after", b"60")),
)
"""A CRL file in ``[store] crl_dir`` that is not one whole CRL (`responder.crlfiles.CrlFile.
whole`): neither served nor counted (帳簿, Act §40), nor the quota, provisions or cycle
(周期) used; none of its bytes in the answer. 503 with Retry-After: the next CRL
crlbuilder publishes (by rename) replaces it. Counted in jpkiva_crl_file_broken_total and
logged once per worker and file version (``crl_file_broken``)."""
_CRL_FILE_BEHIND: Final = Response(
    503,
    b"this node has not received the newest CRL file yet, retry later\n",
    TEXT,
    ((b"cache-control", b"no-store"), (b"retry-after", b"1")),
)
"""A CRL file older than the one the party says it holds (`responder.crlfiles.behind`: its
If-None-Match names a later thisUpdate; another node received the newest first). Serving
it would take the party back to an older CRL, revocations since missing, until its next
cycle (周期); so 503, nothing served, counted or used, as `_CRL_FILE_BROKEN`. Retry-After: 1,
since the newest reaches this node within a shipping interval; behind haproxy the
``crl_files`` backend retries a 503 on another node at once. Counted in
jpkiva_crl_file_behind_total."""
_UNSUPPORTED: Final = Response(415, b"content type must be application/ocsp-request\n", TEXT)
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_OCSP_ERRORS: Final[dict[int, Response]] = {
    s: Response(200, der, OCSP_RESPONSE, _NO_STORE) for s, der in ERRORS.items()
}


def _clock() -> float:
    """The app's clock for `V1Api` (the instant an answer is counted at), read through this
    module's ``time`` at each call."""
    return time.time()


def _method_not_allowed(allow: bytes) -> Response:
    return Response(405, b"method not allowed\n", TEXT, ((b"allow", allow),))


_POST_ONLY: Final = _method_not_allowed(b"POST")
_GET_ONLY: Final = _method_not_allowed(b"GET, HEAD")
_OCSP_GET_ONLY: Final = _method_not_allowed(b"GET")

_ROOT_REQUEST_START: Final = (b"M", b"/")
"""What a root path's second byte is when it may be an OCSP GET's (`responder.ocsppath`)."""

# Notes (responder.outcome.Outcome) of the answers that do not depend on the request.
_NOTE_OCSP_HTTP: Final = Outcome("ocsp")
_NOTE_MALFORMED: Final = Outcome(
    "ocsp", ocsp_status=OCSP_STATUS[ResponseStatus.MALFORMED_REQUEST], rule="malformed"
)
_NOTE_UNAUTHENTICATED: Final = Outcome(
    "ocsp", ocsp_status=OCSP_STATUS[ResponseStatus.UNAUTHORIZED], rule="unauthenticated"
)
_NOTE_CRL_UNAUTHENTICATED: Final = Outcome("crl", rule="unauthenticated")
_NOTE_OTHER: Final = Outcome("other")
_NOTE_HEALTHZ: Final = Outcome("healthz")
_NOTE_READYZ: Final = Outcome("readyz")
_NOTE_METRICS: Final = Outcome("metrics")
_PUBLIC_NOTES: Final = {
    route: Outcome(route if route in ("healthz", "readyz") else "other", rule="public_rate")
    for route in publicbound.ROUTE_CLASSES
}
"""The notes of a public request refused by the bound, by route class (the endpoint label
knows healthz, readyz and other only; jpkiva_public_refused_total has the class)."""
_SUCCESSFUL: Final = OCSP_STATUS[ResponseStatus.SUCCESSFUL]
_TRY_LATER: Final = OCSP_STATUS[ResponseStatus.TRY_LATER]
_INTERNAL_ERROR: Final = OCSP_STATUS[ResponseStatus.INTERNAL_ERROR]
_FAIR_SHARE: Final = "fair_share"
_QUOTA: Final = policy.Rule.QUOTA.value
V1_QUEUE_PER_PARTY: Final = 2
"""A party's /v1 batches waiting for the batch thread; more are refused 429 ``fair_share``."""
STORE_CHECK_SECONDS: Final = 1.0
"""How often a worker looks whether its store's path still holds the file it mapped
(`JpkiApp.store_replaced`)."""
_STORE_REPLACED: Final = Response(
    503, b"store replaced on disk since this responder opened it: restart the responder\n", TEXT
)
_V1_STORE_REPLACED: Final = v1problem.make(
    503, v1problem.UNAVAILABLE, "the store was replaced on disk: this node must be restarted"
)
_SOURCE: Final = {True: "presigned", False: "cached"}
"""An `Answer`'s source: the builder's pre-signed answer, or one signed here and cached."""


class JpkiApp:
    """One worker's app: the store opened after fork, the registry, the OCSP service.

    ``hooks`` (the worker's metrics, or its access log alone when metrics are off, or
    None) is what `responder.server` installs in the HTTP layer.
    """

    def __init__(
        self,
        config: ResponderConfig,
        worker_index: int = 0,
        last_good: LastGoodRegistry | None = None,
    ) -> None:
        self.config = config
        self.group: GroupSetup | None = None
        """A group appliance's ``group.json`` (団体署名検証者, Act §20; ``[group] file``)."""
        self.manifest: Manifest | None = None
        if config.group.file is not None:
            self.group = load_group_setup(config.group.file)
        else:
            self.manifest = load_manifest(config.store.pki)
        self.store = Store.open(config.store.path, readonly=True)
        registry_error: str | None = None
        if last_good is None:
            self.registry = Registry.load(config.registry.path)
        else:  # the file on disk, or the master's last good registry if it does not load
            self.registry, registry_error = last_good.for_worker()
            if registry_error is not None:
                _log.error(
                    "registry_file_bad",
                    extra={"fields": {"error": registry_error, "kept": "the last good registry"}},
                )
        ledger_dir = config.ledger.dir
        ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.limits = LimitsTable(
            ledger_dir / LIMITS_FILE, config.server.worker_count, worker_index,
            nodes=config.cluster.nodes,
        )  # fmt: skip
        # a group passes on no CRL file (Act §52(4): it uses them to answer its members)
        self.crl_files = (
            CrlFiles(Path(config.store.crl_dir))
            if config.store.crl_dir and self.group is None
            else None
        )
        # this worker's own PKCS#11 sessions (after fork); `responder serve` checked every key
        # before forking, so a worker (re)started while a token is gone serves (tryLater for
        # fresh signatures, jpkiva_signer_errors_total) rather than failing in a restart loop
        # with signing processes the keys are theirs alone: the worker loads certificates
        keys = config.ocsp.signing != "processes"
        if self.group is not None:
            views = load_group_issuers(self.group, outage_ok=True, keys=keys)
        else:
            assert self.manifest is not None
            views = load_issuers(self.manifest, outage_ok=True, keys=keys)
        self.member_quota: MemberQuota | None = None
        """On a group appliance: the group's bound on each member's requests to the routes
        answered from its own store (`responder.memberbound`, Ord §33(4))."""
        if self.group is not None:
            self.member_quota = MemberQuota(
                self.limits, config.group.member_requests_per_second,
                config.group.member_requests_per_day,
            )  # fmt: skip
        self.ocsp = OcspFlow(
            views, self.member_quota or self.limits, config.ocsp,
            group_id=self.group.group_id if self.group is not None else None,
            unlisted=CertStatus.GOOD if config.group.unlisted == "good" else CertStatus.UNKNOWN,
        )  # fmt: skip
        self._ca = ca_routes(self.manifest) if self.manifest is not None else {}
        """GET /ca/ (the 機構's appliance only): its issuers' CA certificates, public (Ord §74(1))."""
        self._signer_names = {v.signer.signer_id: v.id for v in views}
        """Issuer id of each delegated OCSP signer, for `jpkiva_signer_errors_total`."""
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="report")
        self.reports = ReportCache(
            self._render_report, self.pool, max_age=config.ledger.collect_interval
        )
        self.signing: FreshSigning = fresh_signing(
            config.ocsp.signing, config.ocsp.sign_threads, config.ocsp.sign_queue_per_party,
            [rs.signer for v in views for rs in (v.signer, v.successor) if rs is not None],
            processes=config.ocsp.sign_processes, workers=config.server.worker_count,
            command=child_command(
                pki=config.store.pki if self.group is None else None, group=config.group.file,
                log_level=config.log.level,
            ),
            on_exit=self._signing_process_exited,
        )  # fmt: skip
        self.worker_index = worker_index
        limits = config.server.limits
        self.public = publicbound.PublicBucket(limits.public_per_second, limits.public_burst)
        """This worker's bound on the public routes' requests of clients proving no party."""
        self._store_check_at = 0.0
        self._store_replaced = False
        self._proven: tuple[Mapping[bytes, bytes], Registry, Party] | None = None
        """The party `early` proved from a request's header fields (with the registry it
        used), for that request's `_ocsp`; matched by the identity of the header dict."""
        self.ledger = LedgerWriter.open(ledger_dir, worker_index)
        self.ledger.start_flusher()
        self.calls = LedgerWriter.open(ledger_dir / CALLS_DIR, worker_index)
        """The /v1 calls per party, day and service (`responder.v1.routes`, CALLS_DIR): a
        ledger of its own, so the 帳簿 and the 報告書 count provisions only."""
        self.calls.start_flusher()
        self._stop = threading.Event()
        if worker_index == 0:  # one merger is enough; the SQLite ledger serializes the rest
            threading.Thread(target=self._merge_loop, name="ledger-merge", daemon=True).start()
        # every worker takes a registry change (and says when the file is bad or good again
        # in jpkiva_registry_file_bad) within a second, with or without traffic, off the
        # request path
        threading.Thread(target=self._registry_loop, name="registry-watch", daemon=True).start()
        self.v1_pool: SigningPool[V1Done] = SigningPool(1, V1_QUEUE_PER_PARTY)
        """The batch thread of /v1 (`responder.v1.routes.THREAD_BYTES`): one thread, since the
        work holds the GIL; it keeps a batch of 10,000 off the event loop."""
        self.v1: V1Api | None = None
        self._answer_not_after: datetime | None = None
        """The /v1 answer-signing certificate's notAfter (`responder.signergauges`)."""
        self.relay: RecordInfoRelay | None = None
        """On a group appliance the /v1 route not answered from its store: 特定署名用電子証明書
        記録情報 relayed for a member (Act §20(4),(5)), the 機構's signed answer passed on
        unchanged; and the 404 of a /v1 path the appliance does not serve."""
        if self.group is not None:
            # the status (Act §20(1), §21(3)) and validation (§21(1)) a group gives its members
            # from its own store, its answers signed by the group's responder key, which the
            # members already trust for the group's OCSP answers
            group_signer = AnswerSigner(
                load_signer(
                    self.group.key_ref(), self.group.path(self.group.responder_cert),
                    outage_ok=True,
                )
            )  # fmt: skip
            self._answer_not_after = group_signer.not_after
            self.v1 = V1Api(
                V1_MEMBER_ROUTES, config, store=self.store, quota=self.member_quota or self.limits,
                ledger=self.ledger, calls=self.calls, pool=self.v1_pool, signer=group_signer,
                public=public_documents((*V1_MEMBER_ROUTES, RELAY_ROUTE), group_signer),
                group_id=self.group.group_id, clock=_clock, current=lambda: self.registry,
            )  # fmt: skip
            self.relay = RecordInfoRelay(
                self.group, self.store, self.ledger, self.limits,
                current=lambda: self.registry,
                served=[
                    *(f"{r.method} {r.path}" for r in V1_MEMBER_ROUTES),
                    *(f"GET {p.decode()}" for p in self.v1.public),
                ],
            )  # fmt: skip
        else:
            assert self.manifest is not None
            answer_signer = load_answer_signer(config, self.manifest, outage_ok=True)
            self._answer_not_after = answer_signer.not_after
            self.v1 = V1Api(
                V1_ROUTES,
                config,
                store=self.store,
                quota=self.limits,
                ledger=self.ledger,
                calls=self.calls,
                pool=self.v1_pool,
                signer=answer_signer,
                public=public_documents(V1_ROUTES, answer_signer),
                clock=_clock,
                current=lambda: self.registry,
            )
        self.access_log = AccessLog(config.log, worker_index)
        self.metrics: WorkerMetrics | None = None
        self.entries: EntryCounts | None = None
        self.hooks: HttpHooks | None = self.access_log if self.access_log.on else None
        self.admin: MetricsApp | None = None
        """The admin listener's app (`responder.server` serves it there); None: metrics off."""
        self._tls = TlsCollector()
        """The TLS server certificate's notAfter, once the worker loaded a chain."""
        if config.metrics.enabled:
            self.metrics = self.hooks = self._make_metrics()
            self.metrics.registry_file(bad=registry_error is not None)
            for name, writer in (("provisions", self.ledger), ("calls", self.calls)):
                writer.on_flush_state = functools.partial(self.metrics.ledger_flush, name)
                if writer.flush_error is not None:  # failing before the metrics were made
                    self.metrics.ledger_flush(name, True)
            self.admin = MetricsApp(self.metrics)

    def _make_metrics(self) -> WorkerMetrics:
        cfg = self.config.metrics
        views = list(self.ocsp.by_index.values())
        collector = StoreCollector(self.store, [IssuerRef(v.index, v.id, v.family) for v in views])
        quotas = QuotaCollector(lambda: self.registry, self.limits)
        tokens = (
            token_issuer_not_after(self.config, self.manifest)
            if self.manifest is not None and self.group is None
            else None
        )
        signers = SignerCollector(views, self._answer_not_after, tokens)
        collectors: list[Collector] = [
            collector, quotas, signers, self._tls, RefusedCollector(self.config.ledger.dir)
        ]  # fmt: skip
        if self.config.cluster.nats:  # a node of several: the record stream and the ledger stream
            watch = changes.setup(self.config)  # the env the feed's routes share
            collectors += [
                StreamCollector(self.store, self.config.cluster.max_lag),
                RegistrySyncCollector(self.config.registry.path),
                ShippingCollector(self.config.ledger.dir),
                WatchCollector(lambda: watch.watchset),  # once a feed call opened them
            ]
        metrics = WorkerMetrics(cfg, collectors=collectors, access=self.access_log)
        answers = [ANSWER_SIGNER] if self.v1 is not None and self.v1.signer is not None else []
        metrics.known(
            signers=sorted(set(self._signer_names.values())) + answers,
            crl_files=[f"{v.id}{kind}.crl" for v in views for kind in ("", "-delta")],
        )
        if answers and self.v1 is not None:  # the /v1 answers' JWS key (responder.v1.jws)
            self.v1.sign_failed = functools.partial(metrics.signer_error, ANSWER_SIGNER)
        feed = self.v1.env(changes.CHANGES_ROUTE.path) if self.v1 is not None else None
        if isinstance(feed, changes.WatchEnv):  # the env the feed's routes share
            feed.on_unbound = metrics.unbound_cursor
        collector.entries = self.entries = EntryCounts(
            self.store,
            {v.index: v.family for v in views},
            metrics.dir,
            min_interval=cfg.entries_interval,
        )
        return metrics

    # --- lifecycle (called by responder.server) -----------------------------------

    def tls_loaded(self, not_after: datetime | None) -> None:
        """The worker serves a TLS chain whose certificate ends at ``not_after``
        (`responder.tlsgauges`)."""
        self._tls.loaded(not_after)

    def reload(self, config: ResponderConfig) -> None:
        """SIGHUP: new registry and OCSP limits, and this node's share of every quota
        (``[cluster] nodes``, "Add a node"); a broken registry file keeps the old one (the
        log says what is wrong and where)."""
        self.config = config
        self.limits.nodes = config.cluster.nodes
        limits = config.server.limits
        self.public.configure(limits.public_per_second, limits.public_burst)
        self.access_log.configure(config.log)
        self.reports.max_age = config.ledger.collect_interval
        self.signing.queue.per_party = config.ocsp.sign_queue_per_party
        self.ocsp.config = config.ocsp
        feed = self.v1.env(changes.CHANGES_ROUTE.path) if self.v1 is not None else None
        if isinstance(feed, changes.WatchEnv):  # made once per worker: [watch] unbound_cursors
            # is the one field of it a reload applies (`responder.server.restart_fields`)
            feed.config = msgspec.structs.replace(
                feed.config, unbound_cursors=config.watch.unbound_cursors
            )
        try:
            registry = Registry.load(config.registry.path)
        except RegistryError as e:
            _log.error(
                "registry_reload_failed",
                extra={"fields": {"error": str(e), "kept": "the registry in use"}},
            )
            self._registry_file(bad=True)
            return
        self.registry = registry
        self._registry_file(bad=False)

    def _registry_file(self, *, bad: bool) -> None:
        if self.metrics is not None:
            self.metrics.registry_file(bad=bad)

    def close(self) -> None:
        self._stop.set()
        self.signing.close()
        self.v1_pool.close()
        if self.relay is not None:
            self.relay.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.ledger.close()
        self.calls.close()
        self.limits.close()
        if self.entries is not None and not self.entries.close():
            return  # a count still reads the store: leave it open, the process is exiting
        self.store.close()

    # --- routing -----------------------------------------------------------------

    def handle(self, req: Request) -> Response | asyncio.Future[Response]:
        path = req.target.split(b"?", 1)[0]
        if path in (b"/ocsp", b"/"):
            if req.method != b"POST":
                if path == b"/ocsp":
                    req.note = _NOTE_OCSP_HTTP
                    return _POST_ONLY  # a GET's request is in the path: /ocsp/{base64}
                req.note = _NOTE_OTHER
                return _NOT_FOUND
            return self._ocsp_post(req)
        if path.startswith(b"/ocsp/"):
            if path == b"/ocsp/" and req.method == b"POST":  # a responder URL ending in '/'
                return self._ocsp_post(req)
            encoded = path[6:]
        elif path.startswith(b"/v1/"):
            return self._v1(req)
        elif path[1:2] in _ROOT_REQUEST_START and is_root_request(path):
            encoded = path  # {url}/{request} of a responder URL that is the root
        else:
            return self._other(req, path)
        if req.method != b"GET":  # HEAD too: it would sign and count for nothing
            req.note = _NOTE_OCSP_HTTP
            return _OCSP_GET_ONLY
        try:
            der = decode_get_path(encoded)
        except RequestError:
            req.note = _NOTE_MALFORMED
            return _OCSP_ERRORS[ResponseStatus.MALFORMED_REQUEST]
        return self._ocsp(req, der, get=True)

    def _other(self, req: Request, path: bytes) -> Response | asyncio.Future[Response]:
        """The routes other than OCSP's and /v1's."""
        if not path.startswith(b"/crl/"):  # /crl/ proves its party itself, before any lookup
            busy = self._public_bound(req, path)
            if busy is not None:
                return busy
        get = req.method in (b"GET", b"HEAD")
        if path == b"/healthz":
            req.note = _NOTE_HEALTHZ
            return _OK if get else _GET_ONLY
        if path == b"/readyz":
            req.note = _NOTE_READYZ
            return self._ready() if get else _GET_ONLY
        if path == b"/metrics":  # served on the admin listener only (`MetricsApp`)
            req.note = _NOTE_METRICS
            return _METRICS_ELSEWHERE
        if path.startswith(b"/announcements"):  # 公表 (Act §15(3) ...), public
            req.note = _NOTE_OTHER
            return announce.serve(self.store, path) if get else _GET_ONLY
        if path.startswith(b"/ca/"):  # the issuers' CA certificates, public (Ord §74(1))
            req.note = _NOTE_OTHER
            return self._ca.get(path, _NOT_FOUND) if get else _GET_ONLY
        if path.startswith(b"/reports/"):
            req.note = _NOTE_OTHER
            return self._report(path) if get else _GET_ONLY
        if path.startswith(b"/crl/"):
            if not get:
                req.note = Outcome("crl")
                return _GET_ONLY
            return self._crl(req, path[5:])
        req.note = _NOTE_OTHER
        return _NOT_FOUND

    def _public_bound(self, req: Request, path: bytes) -> Response | None:
        """The worker's bound on the public routes (`responder.publicbound`): None to answer
        ``req``, else the 429 (noted, counted by route class). A request that proves a
        party is never charged; a probe's (a connection's first request to /healthz or
        /readyz) is charged while tokens last and never refused."""
        if (req.client_cert_der is not None or b"authorization" in req.headers) and (
            access.by_transport(self.registry, req) is not None
        ):
            return None
        if self.public.take(time.monotonic()) or publicbound.is_probe(path, req.sequence):
            return None
        route = publicbound.route_class(path)
        req.note = _PUBLIC_NOTES[route]
        if self.metrics is not None:
            self.metrics.on_public_refused(route)
        return _PUBLIC_BUSY

    def too_large(self, target: bytes, status: int = 413) -> Response | None:
        """`responder.http`'s refusal of a request over a limit (413 a body, 414 a target, 431
        header fields): under /v1, the API's problem (``application/problem+json``, rule
        ``too_large``, as its OpenAPI document lists it); elsewhere None (the layer's plain
        answer). ``target`` may be only the start of a 414's."""
        if self.v1 is None or not target.startswith(b"/v1/"):
            return None
        refusal = v1problem.OVER_LIMIT.get(status)
        return None if refusal is None else v1problem.response(refusal)

    def early(self, req: Request) -> Response | None:
        """`responder.http`'s hook after the headers of a request with a body and an
        ``Authorization`` field, body unread: the answer to a credential that matches no
        party, sent at once (the connection then closes), or None to read the body.

        OCSP and /crl/: only a bearer token is judged here; a client certificate that
        matches no party still lets the body (perhaps a signed request) decide, as in
        `_ocsp`. /v1: every route authenticates by the transport alone (the body proves
        nothing), so a request proving no party, whatever its ``Authorization`` field says
        (``Basic``, an empty bearer) or whichever certificate it shows, is answered now: its
        credential-looking fields raised its body's limit to ``max_json_body_bytes``.
        """
        path = req.target.split(b"?", 1)[0]
        ocsp = is_ocsp(path)
        v1 = path.startswith(b"/v1/")
        if not ocsp and not v1 and not path.startswith(b"/crl/"):
            return None
        if not v1 and access.bearer_token(req) is None:
            return None
        registry = self.registry
        party = access.by_transport(registry, req)
        if party is not None:
            # the same request's body comes next: `_ocsp` takes this proof instead of
            # authenticating twice (the same header fields, the same registry)
            self._proven = (req.headers, registry, party)
            return None
        if ocsp:
            req.note = _NOTE_UNAUTHENTICATED
            return _OCSP_ERRORS[ResponseStatus.UNAUTHORIZED]
        if v1:  # 401 (or 404, 405): no party, so nothing reaches the batch thread
            got = self._v1(req)
            assert isinstance(got, Response)
            return got
        req.note = _NOTE_CRL_UNAUTHENTICATED
        return _UNAUTHORIZED_HTTP

    def _v1(self, req: Request) -> Response | asyncio.Future[Response]:
        """/v1/...: the JSON API (`responder.v1`); on a group appliance the relay of
        特定署名用電子証明書記録情報 for its members (`responder.relay`)."""
        if self.relay is not None and not self._member_route(req):
            return self.relay.handle(req, self.registry, time.time())
        assert self.v1 is not None
        now = time.time()
        route = self.v1.routes.get(req.target.split(b"?", 1)[0])
        if route is not None and self.store_replaced(now):  # as `_ocsp`: nothing read
            req.note = Outcome(route.endpoint, rule=flow.STALE)
            return v1problem.response(_V1_STORE_REPLACED, retry_after=60)
        return self.v1.handle(req, self.registry, now)

    def _member_route(self, req: Request) -> bool:
        """A /v1 route the group appliance serves its members itself (POST /v1/verify)."""
        path = req.target.split(b"?", 1)[0]
        return self.v1 is not None and (path in self.v1.routes or path in self.v1.public)

    # --- OCSP ----------------------------------------------------------------------

    def _ocsp_post(self, req: Request) -> Response | asyncio.Future[Response]:
        """An OCSP POST (RFC 6960 appendix A.1.1): its body, of type application/ocsp-request."""
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != OCSP_REQUEST:
            req.note = _NOTE_OCSP_HTTP
            return _UNSUPPORTED
        return self._ocsp(req, req.body, get=False)

    def store_replaced(self, now: float) -> bool:
        """Whether the store's path holds another file than the one this worker mapped
        (`crlbuilder.store.lmdbstore.Store.replaced`, looked at every `STORE_CHECK_SECONDS`):
        the store was copied or restored and renamed into place while the responder ran.
        The builder writes the new file, this worker reads the old one: a revocation
        committed there would never show here and a revoked certificate would stay ``good``.
        So OCSP answers ``tryLater`` (rule ``stale``), the /v1 routes 503 ``unavailable``
        and /readyz 503 until the responder is restarted (docs/operations.md: stop it for a store copy)."""
        if now >= self._store_check_at:
            self._store_check_at = now + STORE_CHECK_SECONDS
            self._store_replaced = self.store.replaced()
        return self._store_replaced

    def _ocsp(self, req: Request, der: bytes, *, get: bool) -> Response | asyncio.Future[Response]:
        """Carry out `responder.flow`'s decision on one OCSP request."""
        registry = self.registry
        proven = self._proven
        party_proven = None
        if proven is not None:
            self._proven = None
            if proven[0] is req.headers and proven[1] is registry:
                party_proven = proven[2]  # by `early`, from these header fields
        now = time.time()
        if self.store_replaced(now):  # nothing read from the old file: no status, no party
            req.note = Outcome("ocsp", _TRY_LATER, party=NO_PARTY, rule=flow.STALE)
            return _OCSP_ERRORS[ResponseStatus.TRY_LATER]
        try:
            got = self.ocsp.decide(der, req, now, self.store, registry, proven=party_proven)
        except StoreCorrupt as e:  # a damaged value: never an answer; nothing was counted
            _log.error("store_corrupt", extra={"fields": {"error": str(e)}})
            req.note = Outcome("ocsp", _INTERNAL_ERROR, party=NO_PARTY)  # RFC 6960 internalError
            return _OCSP_ERRORS[ResponseStatus.INTERNAL_ERROR]
        if isinstance(got, Answer):
            ready = got.ready
            party = got.party.id
            req.note = Outcome(
                "ocsp", _SUCCESSFUL, ready.statuses[0], ready.families[0].value, party,
                _SOURCE[ready.presigned],
            )  # fmt: skip
            if got.service is None:  # a token's status (Act §38-3): not counted
                return self._ocsp_response(ready, get)
            return self._provided(got.party, got.service, len(ready.statuses), got.at, ready, get)
        if isinstance(got, Refusal):
            req.note = Outcome(
                "ocsp",
                OCSP_STATUS[got.status],
                family=got.family.value if got.family is not None else "",
                party=got.party.id if got.party is not None else NO_PARTY,
                rule=got.rule,
            )
            return _OCSP_ERRORS[got.status]
        job = got.job
        family = job.families[0].value
        party = got.party.id
        signed = self.signing.sign(got.party.fair_id, job)  # one share per contractor
        if signed is None:  # the party's share of the signer is taken: RFC 6960 tryLater
            self._give_back(got)
            req.note = Outcome("ocsp", _TRY_LATER, family=family, party=party, rule=_FAIR_SHARE)
            return _OCSP_ERRORS[ResponseStatus.TRY_LATER]
        req.note = Outcome("ocsp", family=family, party=party)  # until the signature is made
        return asyncio.ensure_future(self._sign(req, got, signed, get))

    async def _sign(
        self, req: Request, got: Signing, signed: asyncio.Future[Ready], get: bool
    ) -> Response:
        party = got.party.id
        try:
            ready = await signed
        except asyncio.CancelledError:  # the connection went away (`responder.http`): the
            self._give_back(got)  # answer is never sent nor counted, so nothing was provided
            raise
        except Exception as exc:  # a signer failure is the responder's fault, never a crash
            self._give_back(got)
            signer = self._signer_names.get(got.job.signer.signer_id, "")
            if self.metrics is not None:
                self.metrics.signer_error(signer)
            if isinstance(exc, TokenUnavailable):  # the HSM may come back: RFC 6960 tryLater
                _log.error(
                    "signer_unavailable", extra={"fields": {"signer": signer, "error": str(exc)}}
                )
                req.note = Outcome("ocsp", _TRY_LATER, party=party)
                return _OCSP_ERRORS[ResponseStatus.TRY_LATER]
            _log.error(
                "signer_failed", extra={"fields": {"signer": signer, "error": type(exc).__name__}}
            )
            req.note = Outcome("ocsp", _INTERNAL_ERROR, party=party)  # RFC 6960 internalError
            return _OCSP_ERRORS[ResponseStatus.INTERNAL_ERROR]
        self.ocsp.remember(got.job, ready)
        # never before the take: a clock set back across 00:00 JST while the signature was
        # made would date it in a day the bound never took it from
        at = max(time.time(), got.now)
        # provided now, not when decided: a suspension (提供の停止) or an end of provision in
        # force by now, set ahead or taken by a reload while the signature was made, stops it
        stopped = self._standing(got, at)
        if stopped is not None:
            self._give_back(got)
            family = got.job.families[0].value
            req.note = Outcome(
                "ocsp", OCSP_STATUS[stopped.status], family=family, party=party,
                rule=stopped.rule,
            )  # fmt: skip
            return _OCSP_ERRORS[stopped.status]
        n = len(got.job.answers)
        carried = at
        if got.service is not None:
            # provided now: a signature waited for across 00:00 JST moves its provisions to
            # the new day, where the ledger dates it (none left there: tryLater, as in flow)
            moved = self.limits.carry_provisions(got.party, n, got.now, at)
            if isinstance(moved, Wait):
                family = got.job.families[0].value
                req.note = Outcome("ocsp", _TRY_LATER, family=family, party=party, rule=_QUOTA)
                return _OCSP_ERRORS[ResponseStatus.TRY_LATER]
            carried = moved
        if self.metrics is not None:
            self.metrics.observe_signing(ready.signing_seconds, party)
        req.note = Outcome(
            "ocsp", _SUCCESSFUL, ready.statuses[0], ready.families[0].value, party, "signed"
        )
        if got.service is None:
            return self._ocsp_response(ready, get)
        return self._provided(got.party, got.service, n, carried, ready, get)

    def _standing(self, got: Signing, at: float) -> Refusal | None:
        """`OcspFlow.standing` of ``got``'s party at ``at``, as the registry of the moment
        holds it (a party no longer in it is refused as unauthenticated)."""
        registry = self.registry
        party = registry.parties.get(got.party.id)
        if party is None:
            return Refusal(ResponseStatus.UNAUTHORIZED, flow.UNAUTHENTICATED, got.party)
        return self.ocsp.standing(party, got.job.families[0], registry, at)

    async def ready(self) -> None:
        """Before the worker says it is ready: its signing processes (``[ocsp] signing =
        "processes"``) have loaded their keys, or 10 s passed (they are replaced if they
        fail; fresh answers meanwhile wait in their pipes)."""
        if isinstance(self.signing, ProcessSigningPool):
            await self.signing.started(SIGNING_START_SECONDS)

    def _signing_process_exited(self, jobs_lost: int) -> None:
        """A signing process (``[ocsp] signing = "processes"``) exited with ``jobs_lost``
        jobs in flight (answered tryLater, each counted as a signer error): counted."""
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.signing_process_exit()

    def _give_back(self, got: Signing) -> None:
        """The provisions `responder.flow` took for a signature that was not made, given back
        to the Japan day they were taken in (``got.now``; nothing if that day has turned)."""
        if got.service is not None:
            self.limits.give_back_provisions(got.party, len(got.job.answers), got.now)

    def _ocsp_response(
        self, ready: Ready, get: bool, provision: _OcspProvision | None = None
    ) -> Response:
        headers = caching_headers(ready, int(time.time())) if get else ()
        return Response(200, ready.der, OCSP_RESPONSE, headers, provision=provision)

    def _provided(
        self, party: Party, service: Service, n: int, at: float, ready: Ready, get: bool
    ) -> Response:
        """An answer of ``n`` provisions to ``party``, taken for the Japan day of ``at``: the
        ledger (帳簿, Act §40; 件数 = statuses provided) counts them when its bytes go to the
        transport, still before they are written (a worker killed then loses no count of
        what a client received), and never for an answer the connection went away before
        (pipelined behind a slower one): then the provisions are given back instead."""
        return self._ocsp_response(
            ready, get, _OcspProvision(self.ledger, self.limits, party, service, n, at)
        )

    # --- other routes ----------------------------------------------------------------

    def _ready(self) -> Response:
        now = int(time.time())
        try:
            self.store.check_format()
        except Exception:  # any failure means not ready
            return Response(503, b"store not readable\n", TEXT)
        self._store_check_at = 0.0  # look now
        if self.store_replaced(now):
            return _STORE_REPLACED
        with self.store.read() as reader:
            self.ocsp.refresh(reader)
            if self.config.cluster.nats:  # several nodes: caught up with the record stream?
                head, seen_at = reader.stream_head()
                behind = streamlag.verdict(
                    reader.stream_seq(), head, seen_at, now, max_lag=self.config.cluster.max_lag,
                    refused=reader.stream_refused(),
                )  # fmt: skip
                if behind is not None:
                    return Response(503, f"not caught up: {behind}\n".encode(), TEXT)
        if self.config.cluster.nats and self.config.watch.ready_requires_replication:
            try:
                broken = changes.setup(self.config).not_replicating()
            except Exception:  # any failure means not ready
                broken = "watch lists not readable"
            if broken is not None:
                return Response(503, f"{broken}\n".encode(), TEXT)
        if foreign := self.ocsp.foreign():  # answers from another issuer's data: never
            which = ", ".join(
                f"{index} is {self.ocsp.by_index[index].id} here, {other} in the store"
                for index, other in sorted(foreign.items())
            )
            return Response(503, f"issuer table differs from the store's: {which}\n".encode(), TEXT)
        # An issuer this node cannot answer, with or without CRLs: its data past its promise, or
        # its delegated OCSP signer past its notAfter (every answer then tryLater). The node is
        # not ready (docs/operations.md, Readiness): the load balancer sends the parties to a
        # node that can (one whose builder still runs, one given the renewed delegate), as a
        # restarted worker would refuse to start with that signer at all.
        views = self.ocsp.by_index.values()
        stale = [v.id for v in views if self.ocsp.stale(v, now)]
        expired = [v.id for v in views if self.ocsp.signer_expired(v, now)]
        if stale or expired:
            why = ([f"stale data for {', '.join(stale)}"] if stale else []) + (
                [f"OCSP signer expired for {', '.join(expired)}"] if expired else []
            )
            return Response(503, ("; ".join(why) + "\n").encode(), TEXT)
        return Response(200, b"ready\n", TEXT)

    def _crl(self, req: Request, name: bytes) -> Response:
        """A CRL file (失効情報ファイル) for a party whose agreement includes it.

        GET provides it: the quota and the party's cycle for that file (周期, Ord §31(2),
        §33(2), §62(2)) are used and the ledger counts one (帳簿, Act §40) as the answer is
        written (`_CrlProvision`: one never written gives its provision and cycle back). HEAD goes
        through the same checks and gets the same answer without the body; it provides
        nothing, so nothing is counted or used. A GET or HEAD whose ``If-None-Match`` names
        the file's current ETag (RFC 9110 §13.1.2), or without it whose
        ``If-Modified-Since`` is not before its Last-Modified (`responder.crlfiles.
        not_modified`), is 304 once the party may receive the
        family: the party holds the file already, so nothing is provided, counted or used,
        whatever its cycle and quota (a group's pull restarted within its cycle,
        `crlbuilder.group.pull`). One whose ``If-None-Match`` names a newer CRL than this
        node's (`responder.crlfiles.behind`: another node received it first) is 503
        (`_CRL_FILE_BEHIND`), nothing used or counted, never the older file. A file absent is 404 before the quota is used; a file that is
        not one whole CRL (cut short, written in place) is 503 (`_CRL_FILE_BROKEN`), before
        anything is used or counted.
        """
        provide = req.method == b"GET"
        party = access.by_transport(self.registry, req)
        if party is None:
            req.note = _NOTE_CRL_UNAUTHENTICATED
            return _UNAUTHORIZED_HTTP
        req.note = Outcome("crl", party=party.id)
        if self.crl_files is None:
            return _NOT_FOUND
        try:
            fname = name.decode("ascii")
        except UnicodeDecodeError:
            return _NOT_FOUND
        stem = fname.removesuffix(".crl").removesuffix("-delta")
        view = next((v for v in self.ocsp.by_index.values() if v.id == stem), None)
        if view is None or not fname.endswith(".crl") or "/" in fname:
            return _NOT_FOUND
        family = view.family.value
        now = time.time()
        if view.family.is_jpki:
            service = policy.service_for_crl(view.family)
            verdict = policy.decide(
                party, service=service, family=view.family, method=Method.CRL_FILE, now=now
            )
        else:  # the token issuer's CRL (Act §38-3): any registered party, no 失効情報ファイル
            service = Service.SPECIFIED_VERIFIER_TOKEN  # names the quota refusal's agreement
            verdict = policy.decide_token_status(party, now=now)
            provide = False
        if verdict is not policy.ALLOWED:
            assert isinstance(verdict, policy.Refused)
            req.note = Outcome("crl", family=family, party=party.id, rule=verdict.rule.value)
            return problem(403, verdict)
        crl = self.crl_files.get(fname)
        if crl is None:
            req.note = Outcome("crl", family=family, party=party.id)
            return _NOT_FOUND
        if not crl.whole:  # cut short or written in place: nothing a party could use
            req.note = Outcome("crl", family=family, party=party.id)
            if self.metrics is not None:
                self.metrics.crl_file_broken(fname)
            return _CRL_FILE_BROKEN
        if not_modified(req.headers, crl):  # the party holds this very file already
            req.note = Outcome("crl", family=family, party=party.id)
            return Response(304, crl.body, CRL, crl.headers)  # its length only: see http
        if behind(req.headers, crl):  # the party holds a newer one: never take it back
            req.note = Outcome("crl", family=family, party=party.id)
            if self.metrics is not None:
                self.metrics.crl_file_behind(fname)
            return _CRL_FILE_BEHIND
        # a download of a 失効情報ファイル is one provision (件数), taken first (a HEAD, or the
        # token issuer's CRL, takes none) and given back if a quota or the cycle refuses
        took = provide and party.provisions_per_day is not None
        at = now  # when the ledger dates it: the instant of the day its provision came from
        if view.family.is_jpki and party.provisions_per_day is not None:
            taken = self.limits.take_provisions(party, 1, now, record=provide)
            if isinstance(taken, Wait):
                rule = policy.Rule.QUOTA.value
                req.note = Outcome("crl", family=family, party=party.id, rule=rule)
                refusal = policy.limit_refusal(party, service, taken.limit)
                return problem(429, refusal, retry_after=taken.retry_after, now=now, wait=taken)
            at = taken
        kind: CrlKind = "delta" if fname.endswith("-delta.crl") else "full"
        cycle = provide and party.crl_cycle_seconds > 0  # used by a GET, given back if dropped
        last = self.limits.crl_mark(party, view.index, kind) if cycle else 0
        wait = self.limits.admit(party, now, record=provide)
        if wait is None:
            wait = self.limits.admit_crl(party, view.index, kind, now, record=provide)
        if wait is not None:
            if took:
                self.limits.give_back_provisions(party, 1, at)
            why = policy.Rule.CYCLE if wait.limit is Limit.CYCLE else policy.Rule.QUOTA
            req.note = Outcome("crl", family=family, party=party.id, rule=why.value)
            refusal = policy.limit_refusal(party, service, wait.limit)
            return problem(429, refusal, retry_after=wait.retry_after)
        req.note = Outcome("crl", family=family, party=party.id)
        if not provide:
            return Response(200, crl.body, CRL, crl.headers)
        # counted as it is written, on the day taken (`_CrlProvision`)
        given = _CrlProvision(
            self.ledger, self.limits, party, service, at, took,
            (view.index, kind, now, last) if cycle else None,
        )  # fmt: skip
        return Response(200, crl.body, CRL, crl.headers, provision=given)

    def _report(self, path: bytes) -> Response | asyncio.Future[Response]:
        """/reports/YYYY[.csv|.json]: the yearly report (報告書, Act §41), open to anyone (Ord §72(2)).

        Rendered at most once per ``[ledger] collect_interval`` per year and format, in the
        report threads (`responder.report.ReportCache`): a flood of requests is answered
        from the last rendering, and at most a few renders wait at once (then 429).
        """
        parsed = parse_report_path(path)
        if parsed is None or self.group is not None:
            # a group's appliance publishes no report: the report of Act §41 is the 機構's,
            # and a group's recipients are its members, natural persons among them
            # (行政書士 ...), whose names it has no ground to publish; its ledger stays its
            # own (`responder report` renders it for the group)
            return _NOT_FOUND
        year, fmt = parsed
        hit = self.reports.fresh(year, fmt)
        if hit is not None:
            return Response(200, hit[0], hit[1], _NO_STORE)
        return asyncio.ensure_future(self._serve_report(year, fmt))

    async def _serve_report(self, year: int, fmt: ReportFormat) -> Response:
        got = await self.reports.get(year, fmt)
        if got is None:
            return _REPORTS_BUSY
        return Response(200, got[0], got[1], _NO_STORE)

    def _render_report(self, year: int, fmt: ReportFormat) -> tuple[bytes, bytes]:
        """One rendering (in a report thread), read-only: the ledger as worker 0's collection
        cycle last left it (`_collect_ledger`), never a collection or an exchange with the
        ledger stream of its own: anyone may ask for the report, and no such request may
        write the ledger, open a connection to NATS, or fail because NATS is down. Several
        nodes: every node's counts as last gathered; the report says how current it is."""
        names = {p.id: p.name for p in self.registry.parties.values()}
        scope: Scope = "service" if self.config.cluster.nats else "node"
        return render_ledger_dir(
            self.config.ledger.dir, year, fmt, registry_names=names, scope=scope
        )

    def _registry_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._reload_registry_if_changed()

    def _merge_loop(self) -> None:
        # at once, then every interval: a report rendered after a (re)start reads a ledger
        # collected (and gathered) by this process, not one left from before
        self._collect_ledger()
        while not self._stop.wait(self.config.ledger.collect_interval):
            self._collect_ledger()

    def _collect_ledger(self) -> None:
        """Merge every worker's counter files into the SQLite ledgers (worker 0, its own
        thread): the 帳簿's provisions, then the /v1 calls (`CALLS_DIR`). Several nodes: then
        ship the 帳簿's counts to the ledger stream and gather every node's (the exchange):
        one process per node does it, on this timer, which `/reports/` reads the outcome of.
        Worker 0 rather than the master: the master holds neither the ledger nor a NATS
        connection, and this cycle already collected and shipped here; a worker 0 that dies
        is restarted by the master and resumes it."""
        for directory in (self.config.ledger.dir, self.config.ledger.dir / CALLS_DIR):
            try:
                ledger = Ledger.open(directory)
                try:
                    result = ledger.collect()
                    # said before the exchange, which may fail (NATS down) and end the cycle
                    for refused in result.refused:
                        _log.warning(
                            "ledger_file_refused",
                            extra={"fields": {"file": refused.path, "reason": refused.reason}},
                        )
                    if self.config.cluster.nats and directory == self.config.ledger.dir:
                        # several nodes: the 帳簿's counts exchanged with the ledger stream (the
                        # calls' ledger stays per node)
                        ledgerstream.exchange(ledger, self.config.cluster)
                finally:
                    ledger.close()
            except ledgerstream.GatherFailed as e:  # shipped; every node's not gathered (counted
                # in the ledger, jpkiva_ledger_gather_failures_total, and said on /reports/);
                # the next collection gathers from where the last one stopped.
                _log.warning("ledger_gather_failed", extra={"fields": {"error": str(e)}})
                continue
            except ClusterError as e:  # several nodes: the shipment failed (counted in the ledger,
                # jpkiva_ledger_ship_failures_total, and as a failed gathering: nothing was
                # gathered after it); the next collection ships it all again.
                # The message names the servers or the stream and the reason: no personal data.
                _log.warning("ledger_ship_failed", extra={"fields": {"error": str(e)}})
                continue
            except Exception as e:  # the counts stay in the worker files; the next merge retries
                _log.warning("ledger_collect_failed", extra={"fields": {"error": type(e).__name__}})
                continue

    def _reload_registry_if_changed(self) -> None:
        """Registry changes reach every worker within a second, without SIGHUP (Act §18(6) suspensions)."""
        try:
            fresh = self.registry.reload_if_changed(self.config.registry.path)
        except RegistryError as e:
            _log.warning("registry_reload_failed", extra={"fields": {"error": str(e)}})
            self._registry_file(bad=True)
            return
        except Exception as e:  # the watch outlives anything: a dead one takes no later change
            _log.error("registry_watch_failed", extra={"fields": {"error": type(e).__name__}})
            self._registry_file(bad=True)
            return
        if fresh is not None:
            self.registry = fresh
            self._registry_file(bad=False)


def ca_routes(manifest: Manifest) -> dict[bytes, Response]:
    """GET /ca/index.json and /ca/<issuer>.pem: the issuing CA certificates the 機構
    publishes (Ord §74(1)), with where each issuer's CRL files are (paths on this
    appliance): what a group appliance is set up from (``crlbuilder group init``)."""
    headers = ((b"cache-control", b"public, max-age=3600"),)
    out: dict[bytes, Response] = {}
    index: list[dict[str, object]] = []
    for i in sorted(manifest.issuers, key=lambda i: i.index):
        cert = x509.load_pem_x509_certificate(manifest.path(i.cert).read_bytes())
        der = cert.public_bytes(Encoding.DER)
        out[f"/ca/{i.id}.pem".encode()] = Response(
            200, cert.public_bytes(Encoding.PEM), PEM, headers
        )
        index.append(
            {
                "id": i.id,
                "family": i.family.value,
                "generation": i.generation,
                "cert": f"/ca/{i.id}.pem",
                "sha256": hashlib.sha256(der).hexdigest(),
                "crl": f"/crl/{i.id}.crl",
                "delta_crl": f"/crl/{i.id}-delta.crl",
            }
        )
        if i.successor_cert:  # who signs its CRLs since its key was compromised (Act §14)
            succ = x509.load_pem_x509_certificate(manifest.path(i.successor_cert).read_bytes())
            out[f"/ca/{i.id}-successor.pem".encode()] = Response(
                200, succ.public_bytes(Encoding.PEM), PEM, headers
            )
            index[-1]["successor_cert"] = f"/ca/{i.id}-successor.pem"
            index[-1]["successor_sha256"] = hashlib.sha256(
                succ.public_bytes(Encoding.DER)
            ).hexdigest()
    body = msgspec.json.format(msgspec.json.encode({"issuers": index}), indent=2) + b"\n"
    out[b"/ca/index.json"] = Response(200, body, b"application/json", headers)
    return out


def problem(
    status: int,
    refusal: policy.Refused,
    *,
    retry_after: int | None = None,
    now: float = 0.0,
    wait: Wait | None = None,
) -> Response:
    """An RFC 9457 problem details answer naming the rule and its article, never the data;
    for the agreed provisions per day (``wait`` of `Limit.PROVISIONS`), what remains today
    and when the Japan day turns, as the /v1 routes say it (`responder.v1.problem.quota`)."""
    fields: dict[str, object] = {
        "type": f"urn:jpki-va:problem:{refusal.rule.value}",
        "title": refusal.rule.value,
        "status": status,
        "detail": refusal.detail,
        "article": refusal.article,
    }
    if wait is not None and wait.limit is Limit.PROVISIONS:
        given = v1problem.quota(refusal, wait, now)
        fields.update(detail=given.detail, remaining=given.remaining, resetsAt=given.resets_at)
    body = msgspec.json.encode(fields)
    headers: tuple[tuple[bytes, bytes], ...] = _NO_STORE
    if retry_after is not None:
        headers = (*headers, (b"retry-after", str(max(1, retry_after)).encode()))
    return Response(status, body, b"application/problem+json", headers)


class _OcspProvision(FrozenNoGc, frozen=True):
    """An OCSP answer's provisions (`responder.http.Provision`): ``n`` statuses to ``party``,
    taken for the Japan day of ``at``. Counted in the ledger (帳簿, Act §40) as the answer
    is written, or given back to the day's bound when it never is. One small struct, not
    two closures: it is made for every answer given."""

    ledger: LedgerWriter
    limits: LimitsTable
    party: Party
    service: Service
    n: int
    at: float

    def sent(self) -> None:
        self.ledger.count(self.party.id, self.service, Method.OCSP, self.n, at=self.at)

    def dropped(self) -> None:
        self.limits.give_back_provisions(self.party, self.n, self.at)


class _CrlProvision(FrozenNoGc, frozen=True):
    """A CRL download's provision (`responder.http.Provision`): one 失効情報ファイル to
    ``party``, dated ``at`` (the Japan day its provision was taken from, ``took``). Counted in
    the ledger (帳簿, Act §40) as the answer's bytes go to the transport, or its provision
    given back when it is never written (pipelined behind a slower answer on a connection
    gone), and the party's cycle for that file (周期, Ord §31(2)) with it (``cycle``: the
    issuer index, the kind of file, the instant it was used at and the mark before it), so
    that the party's next GET is not refused for a file it never received. A download cut
    short after its bytes were handed to the transport (the connection lost while the file
    streams) stays counted, its cycle used: the layer cannot tell what the party kept."""

    ledger: LedgerWriter
    limits: LimitsTable
    party: Party
    service: Service
    at: float
    took: bool
    cycle: tuple[int, CrlKind, float, int] | None

    def sent(self) -> None:
        self.ledger.count(self.party.id, self.service, Method.CRL_FILE, 1, at=self.at)

    def dropped(self) -> None:
        if self.took:
            self.limits.give_back_provisions(self.party, 1, self.at)
        if self.cycle is not None:
            index, kind, used, before = self.cycle
            self.limits.give_back_crl(self.party, index, kind, used, before)


def caching_headers(ready: Ready, now: int) -> tuple[tuple[bytes, bytes], ...]:
    """RFC 5019 §6.2: max-age within nextUpdate, Last-Modified, Expires, ETag; ``private``.

    Every answer goes to an authenticated registered party, so it may be kept by that
    party's own cache only, never by a shared one (``private``, RFC 9111 §5.2.2.7): a
    shared cache would hand the answer to anyone, outside the notified recipients (Act
    §18(1), §37(1): information is provided to 署名検証者等 and 利用者証明検証者 only),
    without the ledger counting it (帳簿, Act §40), and the 機構 would have provided
    認証業務情報 beyond what Act §45 allows. max-age is what RFC 5019 computes
    (nextUpdate minus now, never negative).
    """
    max_age = max(0, ready.next_update - now)
    memo = ready.http_fields
    if not memo:  # the first GET of this answer: the fields that never change for it
        memo.append(
            (
                (b"last-modified", formatdate(ready.this_update, usegmt=True).encode()),
                (b"expires", formatdate(ready.next_update, usegmt=True).encode()),
                (
                    b"etag",
                    b'"'
                    + hashlib.sha1(ready.der, usedforsecurity=False).hexdigest().encode()
                    + b'"',
                ),
            )
        )
    return (
        (b"cache-control", b"max-age=%d, private, no-transform, must-revalidate" % max_age),
        *memo[0],
    )


def create_app(
    config: ResponderConfig, worker_index: int, last_good: LastGoodRegistry | None = None
) -> JpkiApp:
    """`responder.server`'s app factory: runs in each worker after the fork (``last_good``:
    the master's last good registry, served when the file on disk does not load)."""
    return JpkiApp(config, worker_index, last_good)
