"""What deploy/ asks of /metrics, checked against what a real responder exposes.

tests/test_deploy.py checks that the alert rules and the dashboard name only metrics of a
list written by hand (the contract, also in docs/operations.md). This file checks the other
side, against the responder itself: a real `responder serve` (two workers, loopback) is
sent some traffic (OCSP answers of each status, an unauthenticated request, a CRL download,
the probes, a 404) by a party with a daily quota, then its admin listener's /metrics is
parsed. To it are added what a node of several exports (the record stream's, the ledger
stream's and the watch lists' collectors, collected in process) and a node terminating TLS
(its certificate's end, `responder.tlsgauges`) and the declarations of
the worker's and the master's own metrics (the series that need an event to appear: the
changes feed's unbound cursors). Then:

- every metric an alert or a panel names exists under that name with the type its suffix
  says (``_total``: a counter; ``_bucket``/``_sum``/``_count``: a histogram; else a gauge),
  and ``rate``/``increase`` are taken of counters (and histograms' series) only;
- every label an expression matches on, groups by (``by``/``on``), or an alert's
  annotations print (``$labels.x``) is a label of a metric it names (or Prometheus's own
  ``job``, ``instance``, ``le``), and every constant value it matches a bounded label
  against (``endpoint="shed"``, ``rule!~"quota|stale"``) is one the responder produces;
  the latency panel's endpoint choice is every endpoint with a duration histogram;
- every counter an alert fires on at its first increase (``increase(...) > 0``) is there,
  at 0, on a responder that has seen no such event yet, for every issuer, signer or CRL
  file the alert is by: a series that appears only with its first event starts at 1, and
  ``increase`` over it says 0, so the first burst of failures would never fire the alert;
- the metrics exposed are exactly the contract of tests/test_deploy.py (and so of
  docs/operations.md): nothing exported undocumented, nothing documented gone;
- no label value of the traffic's series is a serial number or holds a party's token.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from crlbuilder.model import CertStatus
from crlbuilder.store.lmdbstore import Store
from responder import metrics as m
from responder.config import MetricsConfig
from responder.publicbound import ROUTE_CLASSES
from responder.registry.syncstamp import RegistrySyncCollector
from responder.shipgauges import ShippingCollector
from responder.streamgauges import StreamCollector
from responder.tlsgauges import TlsCollector
from responder.v1.table import ROUTES as V1_ROUTES
from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchgauges import WatchCollector
from tests.conftest import Built, run_tool
from tests.support.harness import request_for, start_server
from tests.support.wait import until
from tests.test_deploy import METRICS, _alert_rules, _dashboard, _exprs, metric_names

PROMETHEUS_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""

VOCABULARIES: dict[str, frozenset[str]] = {
    "endpoint": frozenset(
        {*m.ENDPOINTS, "shed", "v1-record-info", *(r.endpoint for r in V1_ROUTES)}
    ),
    "rule": frozenset(m.RULES),
    "ocsp_status": frozenset(m.OCSP_STATUS.values()),
    "cert_status": frozenset({"", *(s.value for s in CertStatus)}),
    "source": frozenset(m.SOURCES),
    "kind": frozenset({"full", "delta"}),
    "ledger": frozenset(m.LEDGERS),
    "route": frozenset(ROUTE_CLASSES),
    "outcome": frozenset({"accepted", "refused"}),
}
"""The bounded labels whose values an expression may compare with constants, and the values
the responder gives them (`responder.metrics`, `responder.storegauges`)."""


class Family:
    """One exposed metric: its type and the names of its labels."""

    def __init__(self, name: str, kind: str, labels: Iterable[str]) -> None:
        self.name = name
        self.kind = kind
        self.labels = set(labels)


def series_of(families: Iterable[Metric]) -> dict[str, Family]:
    """Series name (as PromQL selects it) -> its family, of parsed or collected metrics."""
    out: dict[str, Family] = {}
    for f in families:
        labels = {k for s in f.samples for k in s.labels}
        if f.type == "counter":
            out[f"{f.name}_total"] = Family(f.name, "counter", labels)
        elif f.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                extra = {"le"} if suffix == "_bucket" else set()
                out[f.name + suffix] = Family(f.name, "histogram", (labels - {"le"}) | extra)
        else:
            out[f.name] = Family(f.name, f.type, labels)
    return out


def declared(objs: Iterable[object]) -> dict[str, Family]:
    """The prometheus_client metrics held as attributes of ``objs``, by series name."""
    out: dict[str, Family] = {}
    for obj in objs:
        for value in vars(obj).values():
            name = getattr(value, "_name", None)
            kind = getattr(value, "_type", None)
            if not isinstance(name, str) or not name.startswith("jpkiva_"):
                continue
            labels = set(value._labelnames)
            if kind == "counter":
                out[f"{name}_total"] = Family(name, kind, labels)
            elif kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    extra = {"le"} if suffix == "_bucket" else set()
                    out[name + suffix] = Family(name, kind, labels | extra)
            else:
                out[name] = Family(name, str(kind), labels)
    return out


# --- reading PromQL ------------------------------------------------------------------------

_STRINGLESS = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)")
_RATE = re.compile(r"\b(rate|irate|increase)\s*\(\s*([A-Za-z_:][\w:]*)")


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every label matcher of a selector with a name."""
    for sel in _SELECTOR.finditer(expr):
        for mt in _MATCHER.finditer(sel.group(2)):
            yield sel.group(1), mt.group(1), mt.group(2), mt.group(3)


def grouping_labels(expr: str) -> set[str]:
    """The labels of every ``by``/``on``/``ignoring``/``without`` list of an expression."""
    bare = _STRINGLESS.sub('""', expr)
    return {
        label.strip()
        for g in _GROUPING.finditer(bare)
        for label in g.group(1).split(",")
        if label.strip()
    }


def constants(op: str, value: str) -> list[str]:
    """The literal values a matcher compares with, or [] when it is a pattern or a variable."""
    if "$" in value:
        return []
    if op in ("=", "!="):
        return [value]
    alternatives = value.split("|")
    if all(re.fullmatch(r"[\w-]*", a) for a in alternatives):
        return alternatives
    return []


def test_the_promql_readers() -> None:
    expr = (
        'sum by (job, instance, rule) (rate(jpkiva_refusals_total{rule!~"quota|stale"}[5m]))'
        ' / on (job) sum(rate(jpkiva_requests_total{http_status=~"5..", endpoint="ocsp"}[5m]))'
    )
    assert list(matchers(expr)) == [
        ("jpkiva_refusals_total", "rule", "!~", "quota|stale"),
        ("jpkiva_requests_total", "http_status", "=~", "5.."),
        ("jpkiva_requests_total", "endpoint", "=", "ocsp"),
    ]
    assert grouping_labels(expr) == {"job", "instance", "rule"}
    assert constants("!~", "quota|stale") == ["quota", "stale"]
    assert constants("=~", "5..") == []
    assert constants("=", "$endpoint") == []
    assert [g.group(2) for g in _RATE.finditer(expr)] == [
        "jpkiva_refusals_total",
        "jpkiva_requests_total",
    ]


# --- the exposition ------------------------------------------------------------------------


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text: str = r.read().decode()
        return text


def _crl_download(url: str, token: str, file: str) -> int:
    req = urllib.request.Request(f"{url}/crl/{file}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return int(r.status)


@pytest.fixture(scope="module")
def exposed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a real responder exposes before and after some traffic."""
    d = tmp_path_factory.mktemp("contract")
    registry = d / "registry.toml"
    run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out", str(registry))
    run_tool(
        "responder", "registry", "update", "--registry", str(registry), "--actor", "test",
        "--id", "both-verifier", "--quota-per-day", "100000", "--provisions-per-day", "100000",
    )  # fmt: skip
    (d / "token-requests").mkdir()  # a responder that takes token requests (Act §38-3)
    tokens = ("--token-requests", str(d / "token-requests"), "--token-issued", str(d / "issued"))
    with start_server(built, d, extra=tokens) as s:
        fresh = _scrape(s.metrics_url)
        token = s.token("both-verifier")
        for status in CertStatus:
            for a in [a for a in built.answers if a.status is status][:3]:
                s.post(request_for(s, a), token)
        s.post(request_for(s, built.answers[0]))  # unauthenticated: refused
        issuer = next(i.id for i in built.manifest.all_issuers() if i.family.is_sign)
        assert _crl_download(s.url, token, f"{issuer}.crl") == 200
        for path in ("/healthz", "/readyz", "/metrics", "/nothing-here"):
            s.get(path)

        def counted() -> str:
            text = _scrape(s.metrics_url)
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            ocsp = sum(
                x.value
                for x in fams["jpkiva_requests"].samples
                if x.labels.get("endpoint") == "ocsp"
            )
            return text if ocsp == 3 * len(CertStatus) + 1 else ""

        after = until(counted, timeout=10)
    return {"fresh": fresh, "after": after}


@pytest.fixture(scope="module")
def cluster_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Family]:
    """What only a node of several (or one terminating TLS) exports, collected in process from
    its collectors."""
    d = tmp_path_factory.mktemp("cluster")
    store = Store.open(d / "store", readonly=False, map_size=1 << 24)
    try:
        families: list[Metric] = [*StreamCollector(store, max_lag=10).collect()]
    finally:
        store.close()
    families += ShippingCollector(d / "ledger").collect()
    families += RegistrySyncCollector(d / "registry.toml").collect()

    class Lists(LmdbWatchSet):
        """The two reads WatchCollector makes, without an LMDB environment."""

        def __init__(self) -> None:
            pass

        def replication(self) -> tuple[int, int, int, str]:
            return (0, 0, 0, "")

        def loading(self) -> None:
            return None

        def passed(self) -> tuple[int, str]:
            return (0, "")

    families += WatchCollector(Lists).collect()
    # and what a node whose workers terminate TLS exports ([server.tls]: the traffic above is
    # plain HTTP; tests/test_metrics.py scrapes a real server with TLS for it)
    tls = TlsCollector()
    tls.loaded(datetime(2030, 1, 1, tzinfo=UTC))
    families += tls.collect()
    return series_of(families)


@pytest.fixture(scope="module")
def declarations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Family]:
    """The worker's and the master's own metrics as declared (labels of series that need an
    event to appear)."""
    d = tmp_path_factory.mktemp("declared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(m.ENV, str(d))
        master = m.MasterMetrics(MetricsConfig(dir=d / "mp"), workers=2)
        try:
            worker = m.WorkerMetrics(MetricsConfig())
            worker.close()
            return declared([worker, master])
        finally:
            master.close()


@pytest.fixture(scope="module")
def catalogue(
    exposed: dict[str, Any], cluster_only: dict[str, Family], declarations: dict[str, Family]
) -> dict[str, Family]:
    """Every series name a responder exports, with its type and labels."""
    out = dict(declarations)
    for name, fam in cluster_only.items():
        out[name] = fam
    for name, fam in series_of(text_string_to_metric_families(exposed["after"])).items():
        if name in out:
            assert out[name].kind == fam.kind, (name, out[name].kind, fam.kind)
            fam.labels |= out[name].labels
        out[name] = fam
    return out


def _everything() -> list[tuple[str, str]]:
    """(where, expression) of every alert and every dashboard query."""
    return [(f"alert {r['alert']}", r["expr"]) for r in _alert_rules()] + [
        (f"dashboard {where}", expr) for where, expr in _exprs(_dashboard())
    ]


def test_every_metric_deploy_names_is_exported_with_that_type(
    catalogue: dict[str, Family],
) -> None:
    for where, expr in _everything():
        for name in metric_names(expr) - {"up"}:
            assert name in catalogue, f"{where}: {name} is exported by no responder"
            fam = catalogue[name]
            if name.endswith("_total"):
                assert fam.kind == "counter", f"{where}: {name} is a {fam.kind}"
            elif name.endswith(("_bucket", "_sum", "_count")) and fam.kind == "histogram":
                pass
            else:
                assert fam.kind == "gauge", f"{where}: {name} is a {fam.kind}"
        for fn in _RATE.finditer(expr):
            kind = catalogue[fn.group(2)].kind
            assert kind in ("counter", "histogram"), f"{where}: {fn.group(1)} of a {kind}"


def test_every_label_deploy_uses_is_a_label_of_its_metric(catalogue: dict[str, Family]) -> None:
    for where, expr in _everything():
        names = metric_names(expr) - {"up"}
        known = set(PROMETHEUS_LABELS).union(*(catalogue[n].labels for n in names))
        for name, label, op, value in matchers(expr):
            labels = PROMETHEUS_LABELS | catalogue[name].labels if name != "up" else {"job"}
            assert label in labels, f"{where}: {name} has no label {label}"
            if label in VOCABULARIES:
                for v in constants(op, value):
                    assert v in VOCABULARIES[label], f"{where}: {label}={v!r} never exported"
        for label in grouping_labels(expr):
            assert label in known, f"{where}: groups by {label}, a label of none of {names}"
    for r in _alert_rules():
        names = metric_names(r["expr"]) - {"up"}
        by = grouping_labels(r["expr"])
        out = by or set(PROMETHEUS_LABELS).union(*(catalogue[n].labels for n in names))
        for text in [*r["annotations"].values(), *r.get("labels", {}).values()]:
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in out, f"alert {r['alert']}: prints $labels.{label}, not kept"
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            name, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q).groups()  # type: ignore[union-attr]
            assert label in PROMETHEUS_LABELS | catalogue[name].labels, f"variable {v['name']}"
        if v["type"] == "custom" and v["name"] == "endpoint":
            # the latency panel's choice: every endpoint with a duration histogram (the
            # /v1 routes' too: they were missing, their latency not to be seen)
            timed = VOCABULARIES["endpoint"] - {"shed"}
            assert set(v["query"].split(",")) == timed, f"variable endpoint: {v['query']}"
            assert [o["value"] for o in v["options"]] == v["query"].split(",")


def test_the_counters_alerts_take_increase_of_are_there_before_their_first_event(
    exposed: dict[str, Any], built: Built
) -> None:
    fresh = series_of(text_string_to_metric_families(exposed["fresh"]))
    samples = {
        (s.name, frozenset(s.labels.items()))
        for f in text_string_to_metric_families(exposed["fresh"])
        for s in f.samples
    }
    issuers = {i.id for i in built.manifest.all_issuers()}
    for r in _alert_rules():
        if not re.search(r"\bincrease\(.*\)\s*>\s*0\s*$", r["expr"].strip(), re.S):
            continue  # not fired by a single event (a ratio, a rate over a threshold)
        for fn in _RATE.finditer(r["expr"]):
            name = fn.group(2)
            if name not in METRICS and not name.endswith(("_bucket", "_count", "_sum")):
                continue
            if name.startswith(("jpkiva_ledger_", "jpkiva_stream_", "jpkiva_watch_")):
                continue  # a node of several only
            assert name in fresh, f"alert {r['alert']}: no {name} before its first event"
            by = grouping_labels(r["expr"]) - PROMETHEUS_LABELS - {"le"}
            for label in by & {"signer", "issuer"}:
                have = {
                    dict(lbls)[label] for n, lbls in samples if n == name and dict(lbls).get(label)
                }
                assert have >= issuers - {"-"}, (r["alert"], name, label, issuers - have)
            if "file" in by:
                have = {
                    dict(lbls)["file"] for n, lbls in samples if n == name and "file" in dict(lbls)
                }
                assert have >= {f"{i}.crl" for i in issuers}, (r["alert"], name, have)


def test_what_is_exported_is_the_contract(catalogue: dict[str, Family]) -> None:
    names = {f.name + ("_total" if f.kind == "counter" else "") for f in catalogue.values()}
    assert names == METRICS, (sorted(names - METRICS), sorted(METRICS - names))


def test_no_label_value_is_a_serial_or_a_token(exposed: dict[str, Any], built: Built) -> None:
    """Label values of the traffic's series: bounded words and registry ids, never a serial
    number (hex or decimal) nor any party's token."""
    tokens = [p.read_text().strip() for p in (built.pki / "parties").glob("*.token")]
    serials = {format(a.serial, "x") for a in built.answers} | {
        str(a.serial) for a in built.answers
    }
    for f in text_string_to_metric_families(exposed["after"]):
        for s in f.samples:
            for k, v in s.labels.items():
                assert v not in serials, (s.name, k, v)
                assert not any(t in v for t in tokens), (s.name, k)
                assert len(v) <= 64, (s.name, k, v)
