"""Prometheus metrics of the responder (``/metrics``), totals across every worker process.

Owns every ``jpkiva_*`` metric and the admin listener's app (`MetricsApp`); the names
and labels are a fixed contract with the alert rules and the dashboard in ``deploy/``.
Label values are bounded vocabularies, issuer ids and registered party ids (``"-"``
when unauthenticated): never personal data, a token or a serial number. /metrics
needs no credentials; it is served on the admin listener (``[metrics] host`` and
``port``, loopback by default), never on the public port, where a flood of scrapes
took the workers' time from the registered parties (issue 10, item 5).

Rendering: merging every worker's files is the expensive part of a scrape (it reads
each file of each worker that ever ran). A worker renders at most once per
``[metrics] render_interval`` and answers the scrapes in between with the text it
rendered last (`WorkerMetrics.render`); ``jpkiva_metrics_renders_total`` counts the
renders. Requests on the admin listener are not counted in ``jpkiva_requests_total``.

Across processes: prometheus_client's multiprocess mode. The master
(`MasterMetrics`) creates a private directory (mode 0700), removes stale files
from it and sets ``PROMETHEUS_MULTIPROC_DIR`` before forking; each worker writes
its values into its own files, named by its pid. The files of a dead worker stay,
so totals never go down, and its replacement (a new pid) counts in new files, so
nothing is counted twice; the master calls ``mark_process_dead`` for the dead pid
so that its open connections leave the gauge. Whichever worker answers /metrics
merges every file (``MultiProcessCollector``). Each restart of a worker leaves one
more set of files (a few KiB each) until the master exits.

Hot path: per answered request `WorkerMetrics.on_request_done` does one dict
lookup and two list increments in plain per-worker Python objects (each label
set has its own local histogram: bucket counts and sum; the count is their total);
a timer flushes them into prometheus_client's values every ``[metrics]
flush_interval`` (1 s), and the worker answering a scrape flushes its own first.
So a request shows in /metrics at most one interval after its answer, and a worker
killed by SIGKILL loses at most its last interval of counts. Layer-made errors
(`responder.http.HttpHooks.on_http_error`) count with endpoint ``other``.

The app tells the hooks what it decided through ``Request.note``, an `Outcome`:
(endpoint, ocsp_status, cert_status, family, party, source, rule). ``source``
(presigned | cached | signed) feeds ``jpkiva_ocsp_answers_total`` and ``rule``
(the refusal rule, see `RULES`) ``jpkiva_refusals_total``. Each fresh signature is
counted per registered party in ``jpkiva_fresh_signatures_total{party}`` (who consumes
the signing threads; party ids are registry ids, not holders' data, and bounded by the
registry: an unauthenticated request never reaches signing).

Store gauges (`StoreCollector`) are read from the store when /metrics is scraped,
in the worker that answers, at most once a second: build, commit, last commit
time, each issuer's promised nextUpdate and stale alarm (the ``tryLater`` case of
`responder.ocsp`), and the latest full and delta CRL of each issuer from the
store's CRL index. Revoked entries per family and legal category (`EntryCounts`)
would cost a walk of the whole revoked database (about 0.5 s per million entries),
so they are counted at most once per commit and at most once per ``[metrics]
entries_interval`` for all workers together: in a background thread of the worker
that answers the scrape, the result shared through a file in the metrics
directory; until then /metrics shows the last count. Stores of at most
`INLINE_ENTRIES` entries are counted at once, during the scrape. Category ``good``
(certificates not revoked) is not exposed: it would need a walk of the status
database as well. A better source would be counts kept by crlbuilder in the store's
meta at each commit (not there yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import struct
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from crlbuilder.model import Category, Family
from crlbuilder.ocsp.response import ResponseStatus
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from responder.config import ConfigError, LogConfig, MetricsConfig
from responder.http import Request, Response
from responder.logs import AccessLog, method_label
from responder.ocsp import promised_next_update, store_generation

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "ENV",
    "INLINE_ENTRIES",
    "OCSP_STATUS",
    "RULES",
    "SOURCES",
    "EntryCounts",
    "IssuerRef",
    "MasterMetrics",
    "MetricsApp",
    "Outcome",
    "StoreCollector",
    "WorkerMetrics",
    "count_entries",
    "endpoint_of",
    "latest_crls",
    "outcome",
    "prepare_dir",
]

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST.encode("ascii")
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds (seconds) of both duration histograms; +Inf is added."""
_SLOTS: Final = len(BUCKETS) + 1
"""Local histogram: one count per bucket (+Inf last), then the sum at index ``_SLOTS``."""

ENDPOINTS: Final = ("ocsp", "crl", "healthz", "readyz", "metrics", "other")
SOURCES: Final = ("presigned", "cached", "signed")
RULES: Final = (
    "unauthenticated",
    "unauthorized_family",
    "unknown_issuer",
    "malformed",
    "stale",
    "suspended",
    "quota",
    "cycle",
    "unauthorized_service",
    "unauthorized_method",
    "not-started",
    "ended",
    "fair_share",
)
"""Refusal rules (``jpkiva_refusals_total{rule}``): no registered party proven
(unauthenticated); a family the party's title may not receive (unauthorized_family,
Act §18(1), §37(1)); an issuer we do not serve; a malformed request; stale data
(tryLater); and the rules of `responder.policy`:
provision suspended (提供の停止, Act §18(6), §37(4)), quota or cycle (周期) of the
agreement (取決め, Ord §31), a service the agreement does not include; and a fresh
signature beyond the party's fair share of the signing threads (fair_share, tryLater:
`responder.signqueue`)."""

OCSP_STATUS: Final[dict[int, str]] = {
    ResponseStatus.SUCCESSFUL: "successful",
    ResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ResponseStatus.INTERNAL_ERROR: "internalError",
    ResponseStatus.TRY_LATER: "tryLater",
    ResponseStatus.SIG_REQUIRED: "sigRequired",
    ResponseStatus.UNAUTHORIZED: "unauthorized",
}
"""OCSPResponseStatus (RFC 6960 §4.2.1) -> its ASN.1 name, the ``ocsp_status`` label."""

Outcome = tuple[str, str, str, str, str, str, str]
"""(endpoint, ocsp_status, cert_status, family, party, source, rule): what the app decided.

Strings from bounded vocabularies; ``party`` is the registered party id or ``"-"``."""

REQUEST_LABELS: Final = (
    "endpoint",
    "method",
    "http_status",
    "ocsp_status",
    "cert_status",
    "family",
    "party",
)

INLINE_ENTRIES: Final = 20_000
"""Revoked databases up to this many entries are counted during the scrape (~10 ms)."""
_ENTRIES_FILE: Final = "store-entries.json"
_ENTRIES_LOCK: Final = "store-entries.lock"
_MASTER_FILE: Final = "master.pid"
"""The pid of the master that owns a directory (orphans of a killed master are swept)."""
_TEMP_PREFIX: Final = "jpki-va-metrics-"
_ORPHAN_AGE: Final = 60.0
_CATEGORY_AT: Final = struct.calcsize(">qB")
"""Offset of the category byte in a `store.format.RevokedEntry` (revoked_at q, reason B)."""
_YIELD_EVERY: Final = 1 << 16

_log = logging.getLogger("responder.metrics")


def outcome(
    endpoint: str,
    *,
    ocsp_status: str = "",
    cert_status: str = "",
    family: str = "",
    party: str = "-",
    source: str = "",
    rule: str = "",
) -> Outcome:
    """An `Outcome` by name (for constants; the hot path builds the tuple itself)."""
    return (endpoint, ocsp_status, cert_status, family, party, source, rule)


_LAYER_ERROR: Final = outcome("other")

_FIXED_PATHS: Final = {b"/healthz": "healthz", b"/readyz": "readyz", b"/metrics": "metrics"}


def endpoint_of(target: bytes) -> str:
    """The ``endpoint`` label of a request target (used when the app left no note)."""
    path = target.split(b"?", 1)[0]
    if path in (b"/ocsp", b"/") or path.startswith(b"/ocsp/"):
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
    this user. Files a previous run left there (``*.db``, the entries cache, the master's
    pid) are removed. Unset: a new directory under the system's temporary directory;
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
    for stale in configured.glob("*.db"):
        stale.unlink(missing_ok=True)
    for name in (_ENTRIES_FILE, _ENTRIES_LOCK, _MASTER_FILE):
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
    """The master's part: the shared directory, ``jpkiva_workers_up`` and restarts.

    Create it in the master before any worker is forked (it sets ``PROMETHEUS_MULTIPROC_DIR``
    for them); `responder.server.serve` calls the ``on_*`` methods and `close`.
    """

    def __init__(self, config: MetricsConfig) -> None:
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

    def on_workers_changed(self, serving: int) -> None:
        """Workers started and ready, after a change."""
        self.workers_up.set(serving)

    def on_worker_exit(self, pid: int, restarting: bool) -> None:
        """A worker died (its live gauges go); ``restarting``: the master starts another."""
        mark_process_dead(pid, str(self.dir))  # type: ignore[no-untyped-call]
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
        self.renders = Counter(
            "jpkiva_metrics_renders",
            "Times a worker merged every worker's files to answer /metrics (at most one per "
            "render_interval per worker; the scrapes in between get the last text).",
            registry=None,
        )
        for source in SOURCES:
            self.answers.labels(source)
        for rule in RULES:
            self.refusals.labels(rule)
        for endpoint in ENDPOINTS:
            self.duration.labels(endpoint)
        self.open_connections.set(0)
        self.registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self.registry, path)  # type: ignore[no-untyped-call]
        for collector in collectors:
            self.registry.register(collector)
        self.access = access if access is not None else AccessLog(LogConfig(access_log="off"), 0)
        self.interval = config.flush_interval
        self.render_interval = config.render_interval
        self.clock = clock
        self._rendered: tuple[float, bytes] | None = None
        """(clock time, text) of the last render."""
        self._cells: dict[tuple[tuple[str, ...], bytes, int], list[float]] = {}
        """(note, method, HTTP status) -> local histogram of those requests since the flush."""
        self._errors: dict[int, int] = {}
        """Layer-made errors by HTTP status since the flush."""
        self._children: dict[tuple[tuple[str, ...], bytes, int], Any] = {}
        self._sign = _new_hist()
        self._signed_by: dict[str, int] = {}
        """Fresh signatures per party since the flush."""
        self._open = 0
        self._open_flushed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.interval, self._tick)

    def registry_file(self, *, bad: bool) -> None:
        """Whether the registry file on disk failed to load (the worker keeps its last good)."""
        self.registry_file_bad.set(1 if bad else 0)

    # -- HttpHooks (the hot path) ------------------------------------------------------

    def on_connection_open(self) -> None:
        self._open += 1

    def on_connection_close(self) -> None:
        self._open -= 1

    def on_request_done(self, req: Request, resp: Response, seconds: float) -> None:
        note = req.note
        if note is None:
            note = (endpoint_of(req.target), "", "", "", "-", "", "")
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
        counts += [((_LAYER_ERROR, b"", status), n) for status, n in errors.items()]
        by_endpoint: dict[str, list[float]] = {}
        for (note, _, _), cell in cells.items():
            total = by_endpoint.get(note[0])
            if total is None:
                by_endpoint[note[0]] = cell
            else:
                for i, v in enumerate(cell):
                    total[i] += v
        by_source: dict[str, int] = {}
        by_rule: dict[str, int] = {}
        for key, n in counts:
            child = self._children.get(key)
            note, method, status = key
            if len(note) != len(_LAYER_ERROR):  # not an Outcome: make it one
                note = (*note[:7], *_LAYER_ERROR[len(note) :])
            if child is None:
                child = self._children[key] = self.requests.labels(
                    note[0], method_label(method), str(status), note[1], note[2], note[3], note[4]
                )
            child.inc(n)
            if note[5]:
                by_source[note[5]] = by_source.get(note[5], 0) + n
            if note[6]:
                by_rule[note[6]] = by_rule.get(note[6], 0) + n
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
        return Response(200, self.metrics.render(), CONTENT_TYPE, _NO_STORE)


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


# -- the store ---------------------------------------------------------------------------------


class IssuerRef(msgspec.Struct, frozen=True):
    """One issuer generation the responder answers for."""

    index: int
    id: str
    family: Family


class StoreCollector(Collector):
    """Gauges read from the store when /metrics is scraped (cached for ``max_age`` seconds)."""

    def __init__(
        self,
        store: Store,
        issuers: Iterable[IssuerRef],
        *,
        entries: EntryCounts | None = None,
        clock: Callable[[], float] = time.time,
        max_age: float = 1.0,
    ) -> None:
        self.store = store
        self.issuers = tuple(issuers)
        self.entries = entries
        self.clock = clock
        self.max_age = max_age
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        cached = self._cached
        if cached is not None and 0 <= now - cached[0] < self.max_age:
            return cached[1]
        out = self._read(int(now))
        self._cached = (now, out)
        return out

    def _read(self, now: int) -> list[Metric]:
        store = self.store
        build = GaugeMetricFamily("jpkiva_store_build", "crlbuilder build number of the store.")
        commit = GaugeMetricFamily("jpkiva_store_commit", "Commit sequence of the store.")
        committed = GaugeMetricFamily(
            "jpkiva_store_last_commit_timestamp_seconds", "When the last commit was written."
        )
        stale = GaugeMetricFamily(
            "jpkiva_stale_issuer",
            "1 when the issuer's data is past the nextUpdate the builder promised (tryLater).",
            labels=("issuer",),
        )
        next_update = GaugeMetricFamily(
            "jpkiva_issuer_next_update_timestamp_seconds",
            "The nextUpdate the builder promised for the issuer (its last CRL's).",
            labels=("issuer",),
        )
        crl_time = GaugeMetricFamily(
            "jpkiva_crl_last_produced_timestamp_seconds",
            "thisUpdate of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        crl_bytes = GaugeMetricFamily(
            "jpkiva_crl_bytes",
            "Size of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        crl_entries = GaugeMetricFamily(
            "jpkiva_crl_entries",
            "Entries of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        with store.env.begin() as txn:
            seq, number = store_generation(store, txn)
            build.add_metric((), number)
            commit.add_metric((), seq)
            committed.add_metric((), store.meta_i64(sf.META_COMMITTED_AT, txn))
            for issuer in self.issuers:
                promised = promised_next_update(store, issuer.index, txn)
                stale.add_metric((issuer.id,), 1 if 0 < promised <= now else 0)
                if promised:
                    next_update.add_metric((issuer.id,), promised)
                for e in latest_crls(store, txn, issuer.index):
                    kind = ("delta" if e.delta else "full",)
                    crl_time.add_metric((issuer.id, *kind), e.this_update)
                    crl_bytes.add_metric((issuer.id, *kind), e.size)
                    crl_entries.add_metric((issuer.id, *kind), e.entries)
        out: list[Metric] = [
            build, commit, committed, stale, next_update, crl_time, crl_bytes, crl_entries,
        ]  # fmt: skip
        if self.entries is not None:
            counts = self.entries.get(seq)
            if counts is not None:
                entries = GaugeMetricFamily(
                    "jpkiva_store_entries",
                    "Revoked entries (CRL entries) per family and legal category.",
                    labels=("family", "category"),
                )
                for (family, category), n in sorted(counts.items()):
                    entries.add_metric((family, category), n)
                out.append(entries)
        return out


def latest_crls(store: Store, txn: Any, issuer_index: int) -> list[sf.CrlFileEntry]:
    """The issuer's latest full CRL and the latest delta CRL after it, from the CRL index.

    Walks the index backwards from the issuer's last key and stops at the first full
    CRL: a delta numbered before the latest full one is superseded.
    """
    prefix = sf.issuer_prefix(issuer_index)
    cur = txn.cursor(db=store.dbs[sf.DB_CRLS])
    found = (
        cur.set_range(sf.issuer_prefix(issuer_index + 1)) and cur.prev()
        if issuer_index + 1 < 1 << 16
        else False
    ) or cur.last()
    out: list[sf.CrlFileEntry] = []
    delta_seen = False
    while found and bytes(cur.key()[:2]) == prefix:
        entry = sf.crl_file_decoder.decode(cur.value())
        if not entry.delta:
            out.append(entry)
            break
        if not delta_seen:
            out.append(entry)
            delta_seen = True
        found = cur.prev()
    return out


class _Stopped(Exception):
    """A background count abandoned because the worker is exiting."""


def count_entries(
    store: Store, txn: Any, families: dict[int, Family], *, stop: threading.Event | None = None
) -> dict[tuple[str, str], int]:
    """Revoked entries per (family, category) in one walk of the revoked database.

    Category ``unknown`` is an entry without a legal category (a store imported from
    the 機構's CRLs). With ``stop`` (background counting) the walk yields the GIL now and
    then, and gives up when ``stop`` is set.
    """
    raw: dict[tuple[bytes, int], int] = {}
    at = _CATEGORY_AT
    for n, (key, value) in enumerate(txn.cursor(db=store.dbs[sf.DB_REVOKED]).iternext(), 1):
        k = (key[:2], value[at])
        raw[k] = raw.get(k, 0) + 1
        if stop is not None and not n % _YIELD_EVERY:
            if stop.is_set():
                raise _Stopped
            time.sleep(0)
    out: dict[tuple[str, str], int] = {}
    for (issuer, code), count in raw.items():
        family = families.get(int.from_bytes(issuer, "big"))
        name = family.value if family is not None else "unknown"
        try:
            category = Category.from_code(code).value
        except KeyError:
            category = "unknown"
        out[(name, category)] = out.get((name, category), 0) + count
    return out


class _Counted(msgspec.Struct):
    commit: int
    at: float
    counts: list[tuple[str, str, int]]


_counted_decoder: Final = msgspec.json.Decoder(_Counted)


class EntryCounts:
    """``jpkiva_store_entries``: counted at most once per commit for all workers together.

    `get` returns the counts of the given commit when known, else the last known ones
    (None before any). A recount starts when the commit moved and the last count is
    ``min_interval`` seconds old: inline for a small store (at most `INLINE_ENTRIES`),
    else in a background thread holding an exclusive lock on a file of ``shared_dir``
    (one counting worker at a time). The result is written to ``shared_dir`` so that
    the other workers take it instead of counting again.
    """

    def __init__(
        self,
        store: Store,
        families: dict[int, Family],
        shared_dir: Path,
        *,
        min_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.families = dict(families)
        self.file = shared_dir / _ENTRIES_FILE
        self.lock_file = shared_dir / _ENTRIES_LOCK
        self.min_interval = min_interval
        self.clock = clock
        self._known: _Counted | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def get(self, commit: int) -> dict[tuple[str, str], int] | None:
        known = self._known
        if known is None or known.commit != commit:
            shared = self._read_shared()
            if shared is not None and (known is None or shared.at > known.at):
                self._known = known = shared
        if known is None or known.commit != commit:
            with self.store.env.begin() as txn:
                total = txn.stat(self.store.dbs[sf.DB_REVOKED])["entries"]
                if total <= INLINE_ENTRIES:
                    seq = store_generation(self.store, txn)[0]
                    known = self._record(seq, count_entries(self.store, txn, self.families))
            if (known is None or known.commit != commit) and self._due(known):
                self._start()
        return {(f, c): n for f, c, n in known.counts} if known is not None else None

    def wait(self, timeout: float) -> bool:
        """Wait for a background count to end; False if it still runs after ``timeout``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Abandon a background count; False if it still holds a store transaction."""
        self._stop.set()
        return self.wait(timeout)

    def _due(self, known: _Counted | None) -> bool:
        running = self._thread is not None and self._thread.is_alive()
        if running or self._stop.is_set():
            return False
        return known is None or self.clock() - known.at >= self.min_interval

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._count, name="entries", daemon=True)
        self._thread.start()

    def _count(self) -> None:
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another worker is counting
            with self.store.env.begin() as txn:
                seq = store_generation(self.store, txn)[0]
                shared = self._read_shared()
                if shared is not None and shared.commit == seq:
                    self._known = shared
                    return
                self._record(seq, count_entries(self.store, txn, self.families, stop=self._stop))
        except _Stopped:
            return
        except Exception as exc:  # a failed count leaves the last one in place
            _log.error("entries_count_failed", extra={"fields": {"exc_type": type(exc).__name__}})
        finally:
            os.close(fd)

    def _record(self, commit: int, counts: dict[tuple[str, str], int]) -> _Counted:
        known = _Counted(commit, self.clock(), [(f, c, n) for (f, c), n in sorted(counts.items())])
        self._known = known
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(known))
            os.replace(tmp, self.file)
        except OSError as exc:
            _log.warning("entries_share_failed", extra={"fields": {"error": exc.strerror}})
        return known

    def _read_shared(self) -> _Counted | None:
        try:
            return _counted_decoder.decode(self.file.read_bytes())
        except (OSError, msgspec.DecodeError):
            return None
