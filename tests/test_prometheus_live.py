"""A real Prometheus scrapes the real responder and evaluates deploy/prometheus/alerts.yml.

The responder (`responder serve`, two workers, on loopback) is scraped on its admin
listener (`[metrics] port`, the `metrics on` line; not the public port) every
second by the Prometheus of the Debian package ``prometheus`` (2.42), started on
an ephemeral loopback port with a temporary TSDB, job name ``jpki-va`` (the name
the alert rules use in ``up{job="jpki-va"}``) and the alert rules loaded with a
1 s evaluation interval. A known mix of OCSP requests is sent (good, revoked and
unknown certificates from a registered party, and unauthenticated requests, which
the responder refuses with ``unauthorized``, Act §17 and §36: only a notified
署名検証者 or 利用者証明検証者 receives 失効情報); then Prometheus's HTTP API must
show exactly those counts, summed over both workers, together with the process
and freshness gauges, every alert group loaded and evaluated with health "ok",
no alert a healthy responder should not raise, and ``up`` falling to 0 once the
responder is stopped.

A missing ``prometheus`` binary skips the test, except under CI (``CI`` set),
where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crlbuilder.model import Answer, CertStatus
from tests.conftest import ROOT, Built
from tests.support.harness import Server, request_for, start_server
from tests.support.procs import stop

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "jpki-va"
GROUPS = frozenset({"jpki-va.freshness", "jpki-va.traffic", "jpki-va.processes", "jpki-va.cluster"})
DEADLINE = 20.0
"""Seconds to wait for Prometheus to see a change: the responder flushes its
workers' counts every second and Prometheus scrapes every second."""
NEXT_UPDATE_SOON = 900.0
"""The threshold of JpkiVaIssuerNextUpdateSoon (seconds before nextUpdate)."""

Sample = dict[str, Any]
"""One element of an instant query's ``data.result``: ``{"metric": {...}, "value": [t, "v"]}``."""


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not found: install the Debian package prometheus"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Prometheus:
    url: str
    pid: int
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` of a ``success`` answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[Sample] = data["result"]
        return result

    def eventually(self, expr: str, done: Callable[[list[Sample]], bool]) -> list[Sample]:
        """Poll ``expr`` until ``done`` holds of its result; the last result either way."""
        deadline = time.monotonic() + DEADLINE
        while True:
            result = self.query(expr)
            if done(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.25)


def retry(check: Callable[[], None]) -> None:
    """Run ``check`` until it passes, for up to DEADLINE seconds; its last failure otherwise."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.25)


def value(sample: Sample) -> float:
    return float(sample["value"][1])


def scalar(result: list[Sample]) -> float | None:
    """The value of a one-series result (None when empty)."""
    assert len(result) <= 1, result
    return value(result[0]) if result else None


def write_config(d: Path, target: str) -> Path:
    """prometheus.yml (JSON is YAML): one scrape job and the project's alert rules."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }
    path = d / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.contextmanager
def start_prometheus(binary: str, d: Path, target: str) -> Iterator[Prometheus]:
    """A real Prometheus on an ephemeral loopback port, ready, stopped by PID afterwards.

    The port is found free and then given to Prometheus, so another process may take
    it in between: a start that fails with "address already in use" is retried.
    """
    config = write_config(d, target)
    log = d / "prometheus.log"
    for attempt in range(3):
        port = free_port()
        with log.open("wb") as out:
            p = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={d / f'tsdb-{attempt}'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        try:
            prom = Prometheus(f"http://127.0.0.1:{port}", p.pid, log)
            if wait_ready(p, prom):
                yield prom
                return
        finally:
            stop(p, timeout=10)
        if "address already in use" not in log.read_text():
            break
    pytest.fail(f"prometheus did not become ready:\n{log.read_text()[-4000:]}")


def wait_ready(p: subprocess.Popen[bytes], prom: Prometheus) -> bool:
    """Poll /-/ready for up to 15 s; False when Prometheus exited or never got ready."""
    deadline = time.monotonic() + 15
    while p.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def send(server: Server, answers: list[Answer], unauthenticated: int) -> Counter[str]:
    """OCSP POSTs for ``answers`` as both-verifier, then unauthenticated ones: the
    count per first-CertID status ("" for the refused ones), checked on the answers."""
    from cryptography.x509 import ocsp

    token = server.token("both-verifier")
    sent: Counter[str] = Counter()
    for a in answers:
        resp = ocsp.load_der_ocsp_response(server.post(request_for(server, a), token=token))
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL, a.case
        assert resp.certificate_status.name.lower() == a.status.value, a.case
        sent[a.status.value] += 1
    for a in answers[:unauthenticated]:
        resp = ocsp.load_der_ocsp_response(server.post(request_for(server, a)))
        assert resp.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
        sent[""] += 1
    return sent


def mix(built: Built, per_status: int) -> list[Answer]:
    """``per_status`` sample answers of each certificate status, across families."""
    out: list[Answer] = []
    for status in CertStatus:
        some = [a for a in built.answers if a.status is status][:per_status]
        assert len(some) == per_status, f"population has too few {status.value} samples"
        out += some
    return out


@pytest.mark.real_clock  # Prometheus (Go) keeps the real clock under libfaketime
def test_prometheus_scrapes_the_responder_and_loads_the_alerts(
    built: Built, tmp_path: Path
) -> None:
    binary = prometheus_binary()
    answers = mix(built, 7)
    unauthenticated = 4
    total = len(answers) + unauthenticated
    issuers = {i.id for i in built.manifest.all_issuers()}  # the token issuer too
    (tmp_path / "responder").mkdir()
    (tmp_path / "prometheus").mkdir()
    up = f'up{{job="{JOB}"}}'
    ocsp_sum = f'sum(jpkiva_requests_total{{job="{JOB}",endpoint="ocsp"}})'
    with contextlib.ExitStack() as stack:
        # The responder is stopped first, while Prometheus still scrapes it (see the end);
        # on a failure ExitStack stops Prometheus, then the responder.
        responder = contextlib.ExitStack()
        stack.callback(responder.close)
        server = responder.enter_context(start_server(built, tmp_path / "responder"))
        target = urllib.parse.urlsplit(server.metrics_url).netloc  # the admin listener
        prom = stack.enter_context(start_prometheus(binary, tmp_path / "prometheus", target))

        first = prom.eventually(up, lambda r: scalar(r) == 1)
        assert scalar(first) == 1, (first, prom.api("targets"))
        # Scraped before any OCSP request: no OCSP count yet.
        before = prom.query(ocsp_sum)
        assert scalar(before) in (None, 0.0), before

        sent = send(server, answers, unauthenticated)
        assert sum(sent.values()) == total
        result = prom.eventually(ocsp_sum, lambda r: (scalar(r) or 0) >= total)
        assert scalar(result) == total, result
        # Each scrape reads the workers' last flush, which writes one series after
        # another: a scrape between two writes is corrected by the next one.
        retry(lambda: check_counts(prom, sent, total))
        check_gauges(prom, issuers)
        check_rules(prom)
        check_alerts(prom)
        # Still exact after more scrapes: nothing counted twice across the workers.
        time.sleep(2)
        assert scalar(prom.query(ocsp_sum)) == total

        # The responder stops (SIGTERM by PID): its scrapes fail, up falls to 0.
        responder.close()
        down = prom.eventually(up, lambda r: scalar(r) == 0)
        assert scalar(down) == 0, (down, prom.api("targets"))


def check_counts(prom: Prometheus, sent: Counter[str], total: int) -> None:
    """Per-status counts, refusals, answers and the duration histogram: all exact."""
    sel = f'job="{JOB}",endpoint="ocsp"'
    by_status = {
        s["metric"].get("cert_status", ""): value(s)
        for s in prom.query(f"sum by (cert_status) (jpkiva_requests_total{{{sel}}})")
    }
    assert by_status == {k: float(v) for k, v in sent.items()}, (by_status, sent)
    by_ocsp = {
        s["metric"].get("ocsp_status", ""): value(s)
        for s in prom.query(f"sum by (ocsp_status) (jpkiva_requests_total{{{sel}}})")
    }
    successful = total - sent[""]
    assert by_ocsp == {"successful": successful, "unauthorized": sent[""]}, by_ocsp
    by_party = {
        s["metric"].get("party", ""): value(s)
        for s in prom.query(f"sum by (party) (jpkiva_requests_total{{{sel}}})")
    }
    assert by_party == {"both-verifier": successful, "-": sent[""]}, by_party
    http = prom.query(f"sum by (http_status) (jpkiva_requests_total{{{sel}}})")
    assert [(s["metric"].get("http_status"), value(s)) for s in http] == [("200", total)], http
    refusals = prom.query(f'sum(jpkiva_refusals_total{{job="{JOB}",rule="unauthenticated"}})')
    assert scalar(refusals) == sent[""], refusals
    answered = prom.query(f'sum(jpkiva_ocsp_answers_total{{job="{JOB}"}})')
    assert scalar(answered) == successful, answered
    duration = prom.query(f"sum(jpkiva_request_duration_seconds_count{{{sel}}})")
    assert scalar(duration) == total, duration
    inf = prom.query(f'sum(jpkiva_request_duration_seconds_bucket{{{sel},le="+Inf"}})')
    assert scalar(inf) == total, inf


def check_gauges(prom: Prometheus, issuers: set[str]) -> None:
    """Two workers up; every issuer of the manifest fresh, its nextUpdate in the future."""
    workers = prom.query(f'jpkiva_workers_up{{job="{JOB}"}}')
    assert [value(s) for s in workers] == [2.0], workers
    stale = prom.query(f'jpkiva_stale_issuer{{job="{JOB}"}}')
    assert {s["metric"]["issuer"]: value(s) for s in stale} == dict.fromkeys(issuers, 0.0), stale
    left = prom.query(f'jpkiva_issuer_next_update_timestamp_seconds{{job="{JOB}"}} - time()')
    remaining = {s["metric"]["issuer"]: value(s) for s in left}
    assert remaining.keys() == issuers, remaining
    assert all(v > 0 for v in remaining.values()), remaining
    future = prom.query(f'jpkiva_issuer_next_update_timestamp_seconds{{job="{JOB}"}} > bool time()')
    assert {value(s) for s in future} == {1.0}, future


def check_rules(prom: Prometheus) -> None:
    """Every group of alerts.yml loaded; every rule evaluated (health "ok", no lastError)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        groups = prom.api("rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if (rules and all(r["health"] == "ok" for r in rules)) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert {g["name"] for g in groups} == GROUPS, groups
    assert all(g["file"] == str(ALERTS) and g["interval"] == 1 for g in groups), groups
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    names = {r["name"] for r in rules}
    assert {"JpkiVaIssuerStale", "JpkiVaWorkersDown", "JpkiVaErrorRatioHigh"} <= names, names
    assert len(names) == len(rules) == ALERTS.read_text().count("- alert:"), names


def check_alerts(prom: Prometheus) -> None:
    """A healthy responder raises no alert, except NextUpdateSoon when that is true."""
    soonest = min(
        value(s)
        for s in prom.query(f'jpkiva_issuer_next_update_timestamp_seconds{{job="{JOB}"}} - time()')
    )
    allowed = {"JpkiVaIssuerNextUpdateSoon"} if soonest < NEXT_UPDATE_SOON + 60 else set()
    alerts = prom.api("alerts")["alerts"]
    raised = {a["labels"]["alertname"] for a in alerts}
    assert raised <= allowed, (alerts, soonest)
