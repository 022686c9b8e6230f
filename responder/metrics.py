"""Prometheus metrics of the responder (``/metrics``), totals across every worker process.

Owns every ``jpkiva_*`` metric and the admin listener's app (`MetricsApp`); the names
and labels are a fixed contract with the alert rules and the dashboard in ``deploy/``.
Label values are bounded vocabularies, issuer ids and registered party ids (``"-"``
when unauthenticated): never personal data, a token or a serial number. /metrics
needs no credentials; it is served on the admin listener (``[metrics] host`` and
``port``, loopback by default), never on the public port, where a flood of scrapes
took the workers' time from the registered parties (issue 10, item 5).

Rendering: merging every worker's files is the expensive part of a scrape (it reads
each file of each live worker, the master's and the dead workers' archive). A worker renders at most once per
``[metrics] render_interval`` and answers the scrapes in between with the text it
rendered last (`WorkerMetrics.render`); ``jpkiva_metrics_renders_total`` counts the
renders. Requests on the admin listener are not counted in ``jpkiva_requests_total``.

Across processes: prometheus_client's multiprocess mode. The master
(`MasterMetrics`) creates a private directory (mode 0700), removes stale files
from it and sets ``PROMETHEUS_MULTIPROC_DIR`` before forking; each worker writes
its values into its own files, named by its pid. The counts of a dead worker stay,
so totals never go down, and its replacement (a new pid) counts in new files, so
nothing is counted twice; the master calls ``mark_process_dead`` for the dead pid
so that its open connections leave the gauge, then folds its counters and histograms into
the directory's archive files (`responder.metricfiles.fold`), so that the files, and the
cost of a render, stay bounded however many workers died. Whichever worker answers /metrics
merges every file (`responder.metricfiles.WorkerFiles`: prometheus_client's merge, less
the files a starting worker has created but not yet sized, on which the merge failed with
a 500 right after a restart). A scrape that still fails (a corrupt file, a
collector's error) is answered 500 and logged as ``metrics_render_failed`` with its
reason (the file, named by a pid, or the code location; never request data).

Hot path: per answered request `WorkerMetrics.on_request_done` does one dict
lookup and two list increments in plain per-worker Python objects (each label
set has its own local histogram: bucket counts and sum; the count is their total);
a timer flushes them into prometheus_client's values every ``[metrics]
flush_interval`` (1 s), and the worker answering a scrape flushes its own first.
So a request shows in /metrics at most one interval after its answer, and a worker
killed by SIGKILL loses at most its last interval of counts. Layer-made errors
(`responder.http.HttpHooks.on_http_error`) count with endpoint ``other``, except the
layer's load shedding (503, `responder.http.SHED_STATUS`): endpoint ``shed``
(`responder.logs.layer_endpoint`), which the critical error ratio leaves out.

The app tells the hooks what it decided through ``Request.note``, a
`responder.outcome.Outcome` (endpoint, ocsp_status, cert_status, family, party, source,
rule). ``source``
(presigned | cached | signed) feeds ``jpkiva_ocsp_answers_total`` and ``rule``
(the refusal rule, see `RULES`) ``jpkiva_refusals_total``. Each fresh signature is
counted per registered party in ``jpkiva_fresh_signatures_total{party}`` (who consumes
the signing threads; party ids are registry ids, not holders' data, and bounded by the
registry: an unauthenticated request never reaches signing).

Each cursor of the changes feed issued before cursors were bound to their party (versions 1
and 2, `responder.v1.cursor`) is counted per registered party in
``jpkiva_changes_unbound_cursors_total{party, outcome}``: ``accepted`` while ``[watch]
unbound_cursors`` is on, ``refused`` (410) after; the operator ends that transition once
``accepted`` stays flat (docs/operations.md, "The changes feed's watch lists"). Rare (a
transition), and told from the /v1 batch thread too: counted at once, under the value's lock.

The store's gauges (build, commit, freshness, CRLs, entry counts) are
`responder.storegauges`'s: a collector passed in with ``collectors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import traceback
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector

from crlbuilder.ocsp.response import ResponseStatus
from responder.config import ConfigError, LogConfig, MetricsConfig
from responder.http import Request, Response
from responder.logs import AccessLog, layer_endpoint, method_label
from responder.metricfiles import MetricsFileError, WorkerFiles, fold
from responder.ocsppath import is_ocsp
from responder.outcome import Outcome
from responder.publicbound import ROUTE_CLASSES
from responder.storegauges import ENTRIES_FILES

__all__ = [
    "ANSWER_SIGNER",
    "BUCKETS",
    "CONTENT_TYPE",
    "ENV",
    "OCSP_STATUS",
    "RULES",
    "SOURCES",
    "MasterMetrics",
    "MetricsApp",
    "WorkerMetrics",
    "endpoint_of",
    "prepare_dir",
]

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
ANSWER_SIGNER: Final = "answer"
"""``jpkiva_signer_errors_total``'s ``signer`` for the /v1 answers' JWS key
(`responder.v1.jws`); every other value is an issuer id (its delegated OCSP signer)."""
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST.encode("ascii")
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds (seconds) of both duration histograms; +Inf is added."""
_SLOTS: Final = len(BUCKETS) + 1
"""Local histogram: one count per bucket (+Inf last), then the sum at index ``_SLOTS``."""

ENDPOINTS: Final = ("ocsp", "crl", "healthz", "readyz", "metrics", "other")
"""The app's endpoints, each with a duration histogram from the start. ``jpkiva_requests_total``
has one more, ``shed``: the HTTP layer's load shedding (`responder.logs.layer_endpoint`),
answered before any request reaches the app, so it has no duration."""
SOURCES: Final = ("presigned", "cached", "signed")
LEDGERS: Final = ("provisions", "calls")
"""The ledger files of a worker (``jpkiva_ledger_flush_failing``'s ``ledger``): the 帳簿's
provisions, and the /v1 calls (`responder.app`)."""
RULES: Final = (
    "unauthenticated",
    "unauthorized_family",
    "unknown_issuer",
    "malformed",
    "stale",
    "signer_expired",
    "suspended",
    "quota",
    "cycle",
    "unauthorized_service",
    "unauthorized_method",
    "not-started",
    "ended",
    "fair_share",
    "public_rate",
    "member_quota",
)
"""Refusal rules (``jpkiva_refusals_total{rule}``): no registered party proven
(unauthenticated); a family the party's title may not receive (unauthorized_family,
Act §18(1), §37(1)); an issuer we do not serve; a malformed request; stale data
(tryLater); the issuer's delegated OCSP signer certificate not valid now (signer_expired,
tryLater: every client would reject its answers, `responder.flow`); and the rules of `responder.policy`:
provision suspended (提供の停止, Act §18(6), §37(4)), quota or cycle (周期) of the
agreement (取決め, Ord §31), a service the agreement does not include; and a fresh
signature beyond the party's fair share of the signing threads (fair_share, tryLater:
`responder.signqueue`); a public route asked beyond the worker's bound on clients proving
no party (public_rate, 429: `responder.publicbound`); on a group appliance, a member past
the group's bound on each member's requests (member_quota: `responder.memberbound`)."""

OCSP_STATUS: Final[dict[int, str]] = {
    ResponseStatus.SUCCESSFUL: "successful",
    ResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ResponseStatus.INTERNAL_ERROR: "internalError",
    ResponseStatus.TRY_LATER: "tryLater",
    ResponseStatus.SIG_REQUIRED: "sigRequired",
    ResponseStatus.UNAUTHORIZED: "unauthorized",
}
"""OCSPResponseStatus (RFC 6960 §4.2.1) -> its ASN.1 name, the ``ocsp_status`` label."""


REQUEST_LABELS: Final = (
    "endpoint",
    "method",
    "http_status",
    "ocsp_status",
    "cert_status",
    "family",
    "party",
)

_MASTER_FILE: Final = "master.pid"
"""The pid of the master that owns a directory (orphans of a killed master are swept)."""
_TEMP_PREFIX: Final = "jpki-va-metrics-"
_ORPHAN_AGE: Final = 60.0

_log = logging.getLogger("responder.metrics")


_LAYER_ERROR: Final = Outcome("other")

_FIXED_PATHS: Final = {b"/healthz": "healthz", b"/readyz": "readyz", b"/metrics": "metrics"}


def endpoint_of(target: bytes) -> str:
    """The ``endpoint`` label of a request target (used when the app left no note)."""
    path = target.split(b"?", 1)[0]
    if is_ocsp(path):
        return "ocsp"
    if path.startswith(b"/crl/"):
        return "crl"
    return _FIXED_PATHS.get(path, "other")


def _use_multiprocess_values() -> None:
    """Make prometheus_client write this process's values into files named by its pid.

    prometheus_client picks its value class when it is first imported; the master sets
    ``PROMETHEUS_MULTIPROC_DIR`` later, and each worker needs a class of its own pid.
    """
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


# -- the master ------------------------------------------------------------------------------


def prepare_dir(configured: Path | None) -> tuple[Path, bool]:
    """The metrics directory, private and empty: (path, True when made here and to be removed).

    A configured directory is created with mode 0700 (or set to it); it must belong to
    this user. Files a previous run left there (``*.db``, an archive's ``*.tmp``, the
    entries cache, the master's pid) are removed. Unset: a new directory under the system's temporary directory;
    the directories that earlier masters made there and could not remove (killed by
    SIGKILL: their pid is gone) are removed first.
    """
    if configured is None:
        _sweep_orphans(Path(tempfile.gettempdir()))
        return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)), True
    configured.mkdir(mode=0o700, parents=True, exist_ok=True)
    if configured.stat().st_uid != os.getuid():
        raise ConfigError("[metrics]", "metrics.dir", f"{configured} belongs to another user")
    configured.chmod(0o700)
    for stale in (*configured.glob("*.db"), *configured.glob("*.tmp")):
        stale.unlink(missing_ok=True)
    for name in (*ENTRIES_FILES, _MASTER_FILE):
        (configured / name).unlink(missing_ok=True)
    return configured, False


def _sweep_orphans(base: Path) -> None:
    """Remove this user's metrics directories whose master is gone (older than a minute)."""
    for d in base.glob(_TEMP_PREFIX + "*"):
        try:
            st = d.stat()
            if st.st_uid != os.getuid() or time.time() - st.st_mtime < _ORPHAN_AGE:
                continue
            pid = int((d / _MASTER_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue  # not one of ours, or its master has not written its pid yet
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue  # the pid lives (another user's process)


class MasterMetrics:
    """The master's part: the shared directory, ``jpkiva_workers_up``, the workers it runs
    (``jpkiva_workers_configured``: ``[server] workers``, what JpkiVaWorkersMissing compares
    the serving ones with) and restarts.

    Create it in the master before any worker is forked (it sets ``PROMETHEUS_MULTIPROC_DIR``
    for them); `responder.server.serve` calls the ``on_*`` methods and `close`.
    """

    def __init__(self, config: MetricsConfig, *, workers: int) -> None:
        self.dir, self._owned = prepare_dir(config.dir)
        fd = os.open(self.dir / _MASTER_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
        os.environ[ENV] = str(self.dir)
        _use_multiprocess_values()
        self.workers_up = Gauge(
            "jpkiva_workers_up",
            "Worker processes serving now (the master's count).",
            multiprocess_mode="livemax",
            registry=None,
        )
        self.restarts = Counter(
            "jpkiva_worker_restarts",
            "Workers the master restarted after they died.",
            registry=None,
        )
        self.workers_up.set(0)
        self.workers_configured = Gauge(
            "jpkiva_workers_configured",
            "Worker processes the master runs ([server] workers, as it started).",
            multiprocess_mode="livemax",
            registry=None,
        )
        self.workers_configured.set(workers)

    def on_workers_changed(self, serving: int) -> None:
        """Workers started and ready, after a change."""
        self.workers_up.set(serving)

    def on_worker_exit(self, pid: int, restarting: bool) -> None:
        """A worker died (its live gauges go, its counts join the archive: `fold`);
        ``restarting``: the master starts another."""
        mark_process_dead(pid, str(self.dir))  # type: ignore[no-untyped-call]
        try:
            fold(self.dir, pid)
        except Exception as exc:  # its files stay, counted as before; the master goes on
            _log.error("metrics_fold_failed", extra={"fields": {"reason": render_failure(exc)}})
        if restarting:
            self.restarts.inc()

    def close(self) -> None:
        """At the master's exit: remove the directory when it was made for this run."""
        if self._owned:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- a worker ---------------------------------------------------------------------------------


class WorkerMetrics:
    """One worker's counting (an `responder.http.HttpHooks`) and its /metrics answer.

    Create it inside the worker, after the fork, with ``PROMETHEUS_MULTIPROC_DIR`` set by
    `MasterMetrics`. When an event loop runs, a timer flushes every ``flush_interval``.
    """

    def __init__(
        self,
        config: MetricsConfig,
        *,
        collectors: Sequence[Collector] = (),
        access: AccessLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        path = os.environ.get(ENV)
        if not path or not os.path.isdir(path):
            raise ConfigError(
                "<environment>",
                ENV,
                "not a directory: metrics need the directory the master makes "
                "(start with `responder serve`, or set [metrics] enabled = false)",
            )
        self.dir = Path(path)
        _use_multiprocess_values()
        self.requests = Counter(
            "jpkiva_requests",
            "Answered requests by endpoint, method, HTTP status, OCSP outcome and party.",
            REQUEST_LABELS,
            registry=None,
        )
        self.duration = Histogram(
            "jpkiva_request_duration_seconds",
            "From a request's first byte to its answer handed to the transport.",
            ("endpoint",),
            buckets=BUCKETS,
            registry=None,
        )
        self.answers = Counter(
            "jpkiva_ocsp_answers",
            "Successful OCSP answers by where the bytes came from.",
            ("source",),
            registry=None,
        )
        self.signing = Histogram(
            "jpkiva_signing_duration_seconds",
            "Time of each fresh RSA signature of an OCSP answer.",
            buckets=BUCKETS,
            registry=None,
        )
        self.signatures = Counter(
            "jpkiva_fresh_signatures",
            "Fresh RSA signatures of OCSP answers, by the registered party whose request "
            "needed them (who consumes the signing threads).",
            ("party",),
            registry=None,
        )
        self.refusals = Counter(
            "jpkiva_refusals",
            "Requests refused, by rule.",
            ("rule",),
            registry=None,
        )
        self.open_connections = Gauge(
            "jpkiva_open_connections",
            "Open client connections, summed over the live workers.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.registry_file_bad = Gauge(
            "jpkiva_registry_file_bad",
            "1 while a live worker serves its last good registry because the file does not load.",
            multiprocess_mode="livemax",
            registry=None,
        )
        self.ledger_flush_failing = Gauge(
            "jpkiva_ledger_flush_failing",
            "1 while a live worker cannot flush a ledger file to disk (ledger: provisions, the "
            "帳簿 of Act §40; or calls, the /v1 calls): what it counts since would be lost in "
            "a crash.",
            ("ledger",),
            multiprocess_mode="livemax",
            registry=None,
        )
        self.renders = Counter(
            "jpkiva_metrics_renders",
            "Times a worker merged every worker's files to answer /metrics (at most one per "
            "render_interval per worker; the scrapes in between get the last text).",
            registry=None,
        )
        self.signer_errors = Counter(
            "jpkiva_signer_errors",
            "Fresh signatures that failed, by signer: the issuer generation whose delegated "
            "OCSP signer failed (an HSM token gone or failing; the request was answered "
            "tryLater or internalError), or 'answer', the /v1 answer-signing key (the call "
            "was answered 503).",
            ("signer",),
            registry=None,
        )
        self.signing_process_exits = Counter(
            "jpkiva_signing_process_exits",
            "Signing processes of this worker that exited while it ran ([ocsp] signing = "
            '"processes": a crash, a kill, a key that could not be loaded); each was '
            "replaced, and the fresh answers it held were answered tryLater.",
            registry=None,
        )
        self.evictions = Counter(
            "jpkiva_connections_evicted",
            "Connections not yet attributed to a party displaced by newer ones (503 and a "
            "close: [server.limits] max_unattributed or max_connections reached).",
            registry=None,
        )
        self.crl_files_broken = Counter(
            "jpkiva_crl_file_broken",
            "Requests for a CRL file answered 503 because the file in [store] crl_dir is not "
            "one whole CRL (cut short, written in place): not served, not counted in the "
            "ledger. By file name (an issuer's CRL or delta CRL).",
            ("file",),
            registry=None,
        )
        self.crl_files_behind = Counter(
            "jpkiva_crl_file_behind",
            "Requests for a CRL file answered 503 because the party's If-None-Match names a "
            "newer CRL of that name than this node's (it has not received the newest yet): "
            "not served, not counted in the ledger. By file name.",
            ("file",),
            registry=None,
        )
        self.public_refused = Counter(
            "jpkiva_public_refused",
            "Requests of clients proving no party refused 429 on a public route, beyond the "
            "worker's bound ([server.limits] public_per_second, public_burst), by route class "
            "(healthz, readyz, announcements, ca, reports, other), never by client.",
            ("route",),
            registry=None,
        )
        self.unbound_cursors = Counter(
            "jpkiva_changes_unbound_cursors",
            "Cursors of GET /v1/changes issued before cursors were bound to their party, by "
            "the registered party that sent one and outcome: accepted (read, answered with a "
            "bound cursor: [watch] unbound_cursors on) or refused (410 once it is off).",
            ("party", "outcome"),
            registry=None,
        )
        for source in SOURCES:
            self.answers.labels(source)
        for rule in RULES:
            self.refusals.labels(rule)
        for endpoint in ENDPOINTS:
            self.duration.labels(endpoint)
        for route in ROUTE_CLASSES:
            self.public_refused.labels(route)
        self.open_connections.set(0)
        for ledger in LEDGERS:
            self.ledger_flush_failing.labels(ledger).set(0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerFiles(self.dir))
        for collector in collectors:
            self.registry.register(collector)
        self.access = access if access is not None else AccessLog(LogConfig(access_log="off"), 0)
        self.interval = config.flush_interval
        self.render_interval = config.render_interval
        self.clock = clock
        self._rendered: tuple[float, bytes] | None = None
        """(clock time, text) of the last render."""
        self._cells: dict[tuple[Outcome, bytes, int], list[float]] = {}
        """(note, method, HTTP status) -> local histogram of those requests since the flush."""
        self._errors: dict[int, int] = {}
        """Layer-made errors by HTTP status since the flush."""
        self._children: dict[tuple[Outcome, bytes, int], Any] = {}
        self._sign = _new_hist()
        self._signed_by: dict[str, int] = {}
        """Fresh signatures per party since the flush."""
        self._open = 0
        self._open_flushed = 0
        self._evicted = 0
        """Connections displaced since the flush."""
        self._public_refused: dict[str, int] = {}
        """Public requests refused by the bound since the flush, by route class."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.interval, self._tick)

    def known(self, *, signers: Iterable[str], crl_files: Iterable[str]) -> None:
        """Create at 0 the series of every signer (issuer id) and CRL file name this worker
        may count a failure of, before any fails.

        The alerts on them (JpkiVaSignerErrors, JpkiVaCrlFileBroken) fire on ``increase(...)
        > 0``; a series that appeared only with its first failure starts at that count, and
        ``increase`` over it is 0: the first burst of failures raised no alert.
        """
        for signer in signers:
            self.signer_errors.labels(signer)
        for file in crl_files:
            self.crl_files_broken.labels(file)
            self.crl_files_behind.labels(file)

    def ledger_flush(self, ledger: str, failing: bool) -> None:
        """Whether ``ledger`` (`LEDGERS`) fails to flush; from its flusher's thread (a gauge's
        set takes the value's lock)."""
        self.ledger_flush_failing.labels(ledger).set(1 if failing else 0)

    def registry_file(self, *, bad: bool) -> None:
        """Whether the registry file on disk failed to load (the worker keeps its last good)."""
        self.registry_file_bad.set(1 if bad else 0)

    # -- HttpHooks (the hot path) ------------------------------------------------------

    def on_connection_open(self) -> None:
        self._open += 1

    def on_connection_close(self) -> None:
        self._open -= 1

    def on_connection_evicted(self) -> None:
        """`responder.http.HttpServer` displaced an unattributed connection (optional hook)."""
        self._evicted += 1

    def on_public_refused(self, route: str) -> None:
        """`responder.publicbound`'s bound refused a request on a public route (`ROUTE_CLASSES`)."""
        self._public_refused[route] = self._public_refused.get(route, 0) + 1

    def on_request_done(self, req: Request, resp: Response, seconds: float) -> None:
        note = req.note
        if note is None:
            note = Outcome(endpoint_of(req.target))
        key = (note, req.method, resp.status)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _new_hist()
        cell[bisect_left(BUCKETS, seconds)] += 1
        cell[_SLOTS] += seconds
        access = self.access
        if access.on:
            access.request(req, resp, seconds)

    def on_http_error(self, status: int, peer: str = "") -> None:
        self._errors[status] = self._errors.get(status, 0) + 1
        if self.access.on:
            self.access.http_error(status, peer)

    def crl_file_broken(self, file: str) -> None:
        """A request for CRL file ``file`` answered 503: the file is not one whole CRL."""
        self.crl_files_broken.labels(file).inc()

    def crl_file_behind(self, file: str) -> None:
        """A request for CRL file ``file`` answered 503: the party holds a newer one."""
        self.crl_files_behind.labels(file).inc()

    def signer_error(self, signer: str) -> None:
        """A fresh signature by ``signer`` (an issuer id) failed: count it at once (an alarm)."""
        self.signer_errors.labels(signer).inc()

    def signing_process_exit(self) -> None:
        """A signing process of this worker exited (`responder.procsigning`): counted at once."""
        self.signing_process_exits.inc()

    def unbound_cursor(self, party: str, accepted: bool) -> None:
        """``party`` (a registry id) sent a changes cursor issued before cursors were bound,
        ``accepted`` or refused: counted at once (any thread: the /v1 batch thread too)."""
        self.unbound_cursors.labels(party, "accepted" if accepted else "refused").inc()

    def observe_signing(self, seconds: float, party: str) -> None:
        """One fresh RSA signature of an OCSP answer for ``party`` (a registry id) took ``seconds``."""
        self._signed_by[party] = self._signed_by.get(party, 0) + 1
        sign = self._sign
        sign[bisect_left(BUCKETS, seconds)] += 1
        sign[_SLOTS] += seconds

    # -- flushing --------------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # never let the timer die: counts wait for the next tick
            _log.error("metrics_flush_failed", extra={"fields": {"exc_type": type(exc).__name__}})
        if self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_later(self.interval, self._tick)

    def flush(self) -> None:
        """Add the local counts since the last flush to the shared values, and reset them.

        Like every method here, call it from the worker's event loop thread only.
        """
        cells, self._cells = self._cells, {}
        errors, self._errors = self._errors, {}
        counts = [(key, int(sum(cell[:_SLOTS]))) for key, cell in cells.items()]
        counts += [((Outcome(layer_endpoint(s)), b"", s), n) for s, n in errors.items()]
        by_endpoint: dict[str, list[float]] = {}
        for (note, _, _), cell in cells.items():
            total = by_endpoint.get(note.endpoint)
            if total is None:
                by_endpoint[note.endpoint] = cell
            else:
                for i, v in enumerate(cell):
                    total[i] += v
        by_source: dict[str, int] = {}
        by_rule: dict[str, int] = {}
        for key, n in counts:
            child = self._children.get(key)
            note, method, status = key
            if child is None:
                child = self._children[key] = self.requests.labels(
                    note.endpoint,
                    method_label(method),
                    str(status),
                    note.ocsp_status,
                    note.cert_status,
                    note.family,
                    note.party,
                )
            child.inc(n)
            if note.source:
                by_source[note.source] = by_source.get(note.source, 0) + n
            if note.rule:
                by_rule[note.rule] = by_rule.get(note.rule, 0) + n
        for source, n in by_source.items():
            self.answers.labels(source).inc(n)
        for rule, n in by_rule.items():
            self.refusals.labels(rule).inc(n)
        for endpoint, hist in by_endpoint.items():
            _flush_hist(hist, self.duration.labels(endpoint))
        _flush_hist(self._sign, self.signing)
        signed_by, self._signed_by = self._signed_by, {}
        for party, n in signed_by.items():
            self.signatures.labels(party).inc(n)
        evicted, self._evicted = self._evicted, 0
        if evicted:
            self.evictions.inc(evicted)
        refused, self._public_refused = self._public_refused, {}
        for route, n in refused.items():
            self.public_refused.labels(route).inc(n)
        if self._open != self._open_flushed:
            self._open_flushed = self._open
            self.open_connections.set(self._open)

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The /metrics body: this worker's counts flushed, every worker's files merged.

        At most once per ``render_interval``: a scrape within it gets the last text.
        """
        now = self.clock()
        last = self._rendered
        if last is not None and 0 <= now - last[0] < self.render_interval:
            return last[1]
        self.renders.inc()
        self.flush()
        text = generate_latest(self.registry)
        self._rendered = (now, text)
        return text

    def close(self) -> None:
        """At the worker's exit: stop the timer and flush what is left."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        self.flush()


_TEXT: Final = b"text/plain; charset=utf-8"
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_ADMIN_NOT_FOUND: Final = Response(404, b"not found: the admin listener serves /metrics\n", _TEXT)
_ADMIN_GET_ONLY: Final = Response(405, b"method not allowed\n", _TEXT, ((b"allow", b"GET, HEAD"),))
_RENDER_FAILED: Final = Response(500, b"metrics render failed (logged)\n", _TEXT, _NO_STORE)


class MetricsApp:
    """The admin listener's app (``[metrics] host``:``port``): ``GET /metrics`` and nothing else.

    A `responder.http.App`; `responder.server` serves it on the admin socket of each worker
    when the worker's app has it as its ``admin`` attribute.
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def handle(self, req: Request) -> Response:
        if req.target.split(b"?", 1)[0] != b"/metrics":
            return _ADMIN_NOT_FOUND
        if req.method not in (b"GET", b"HEAD"):
            return _ADMIN_GET_ONLY
        try:
            body = self.metrics.render()
        except Exception as exc:
            _log.error(
                "metrics_render_failed",
                extra={"fields": {"exc_type": type(exc).__name__, "reason": render_failure(exc)}},
            )
            return _RENDER_FAILED
        return Response(200, body, CONTENT_TYPE, _NO_STORE)


def render_failure(exc: BaseException) -> str:
    """Why a render failed, for the log: the metric file and what failed in it, else the
    error's type and where it was raised (never its message, which may carry data)."""
    if isinstance(exc, MetricsFileError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {frames[-1].filename}:{frames[-1].lineno}:{frames[-1].name}" if frames else ""
    return f"{type(exc).__name__}{at}"


def _new_hist() -> list[float]:
    return [0.0] * (_SLOTS + 1)


def _flush_hist(local: list[float], child: Any) -> None:
    """Add a local histogram (bucket counts, then the sum) to a prometheus_client Histogram.

    prometheus_client has no call that adds a count to a bucket; its Histogram keeps one
    value per bucket (not cumulative, in multiprocess mode) in ``_buckets`` and the sum
    in ``_sum``, which ``observe`` increments: this does what ``observe`` would have done
    ``local[i]`` times.
    """
    if not any(local[:_SLOTS]):
        return
    buckets = child._buckets
    for i in range(_SLOTS):
        n = local[i]
        if n:
            buckets[i].inc(n)
            local[i] = 0.0
    child._sum.inc(local[_SLOTS])
    local[_SLOTS] = 0.0
