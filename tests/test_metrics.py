"""/metrics (responder/metrics.py): totals across workers, restarts, store gauges, refusals.

In-process tests check the pieces (local counting and flushing, histogram buckets,
the store readers, the shared entry count); the others start the real `responder
serve` with two workers on loopback and read /metrics with prometheus_client's
parser while real requests are sent, a worker is killed with SIGKILL, or the store
goes stale.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from crlbuilder.model import CertStatus, Family
from responder import metrics as m
from responder.app import JpkiApp
from responder.config import MetricsConfig
from responder.http import Request, Response
from responder.logs import method_label
from responder.outcome import Outcome
from responder.v1 import changes
from tests.conftest import Built, run_tool
from tests.support.harness import (
    Labels,
    Server,
    ocsp_request,
    parse_metrics,
    sample,
    start_server,
    total,
)
from tests.support.wait import until

# -- in process: local counting, flushing, exposition ----------------------------------------


def _req(target: bytes, note: Outcome | None, method: bytes = b"POST", rid: int = 1) -> Request:
    return Request(method, target, {}, b"", ("127.0.0.1", 1), None, b"1.1", True, rid, note)


@pytest.mark.real_clock  # the ledger flusher's timed wait hangs under libfaketime
def test_a_ledger_whose_flushes_fail_raises_its_gauge_until_one_succeeds(
    mp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing ledger flush (the 帳簿 of Act §40 no longer durable) was only a log line:
    nothing to alert on (JpkiVaLedgerFlushFailing)."""
    from responder.ledger import LedgerWriter

    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))

    def failing(ledger: str) -> float:
        return parse_metrics(wm.render().decode())[
            ("jpkiva_ledger_flush_failing", frozenset({("ledger", ledger)}))
        ]

    assert (failing("provisions"), failing("calls")) == (0, 0)
    real_fsync, broken = os.fsync, [True]

    def fsync(fd: int) -> None:
        if broken[0]:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    with LedgerWriter.open(tmp_path / "ledger", 0) as w:
        w.on_flush_state = functools.partial(wm.ledger_flush, "provisions")
        monkeypatch.setattr(os, "fsync", fsync)
        w.start_flusher(interval=0.01)
        until(lambda: w.flush_error is not None, 5, "a flush failed", interval=0.01)
        assert (failing("provisions"), failing("calls")) == (1, 0)
        broken[0] = False
        until(lambda: w.flush_error is None, 5, "a flush succeeded", interval=0.01)
        assert failing("provisions") == 0


@pytest.mark.real_clock  # the ledger flusher's timed wait hangs under libfaketime
def test_the_app_raises_the_flush_gauge_of_the_ledger_that_fails(
    built: Built, tmp_path: Path, mp_dir: Path
) -> None:
    """The app hooks each of its two ledgers (帳簿, Act §40: provisions; and calls) to
    ``jpkiva_ledger_flush_failing`` under its own name: the calls ledger failing raises
    ``calls`` alone, and its recovery lowers it (the gauge and the flusher are tested apart in
    tests/test_metrics.py; this is the wiring between them)."""
    cfg = built.app_config(tmp_path, **{"metrics.enabled": True, "metrics.render_interval": 0})
    a = JpkiApp(cfg, 0)
    try:
        assert a.metrics is not None
        wm = a.metrics  # its render reads the multiprocess directory (mp_dir)

        def failing() -> dict[str, float]:
            got = parse_metrics(wm.render().decode())
            return {
                name: got[("jpkiva_ledger_flush_failing", frozenset({("ledger", name)}))]
                for name in ("provisions", "calls")
            }

        assert failing() == {"provisions": 0, "calls": 0}
        broken = [True]
        real_flush = a.calls.flush

        def flush() -> None:
            if broken[0]:
                raise OSError(28, "No space left on device")
            real_flush()

        a.calls.flush = flush  # type: ignore[method-assign]
        a.calls.start_flusher(interval=0.01)
        until(lambda: a.calls.flush_error is not None, 5, "the calls ledger failed", interval=0.01)
        assert failing() == {"provisions": 0, "calls": 1}
        broken[0] = False
        until(lambda: a.calls.flush_error is None, 5, "the calls ledger recovered", interval=0.01)
        assert failing() == {"provisions": 0, "calls": 0}
    finally:
        a.close()


def test_unbound_cursors_are_counted_by_party_and_outcome_from_any_thread(mp_dir: Path) -> None:
    """``jpkiva_changes_unbound_cursors_total{party, outcome}``: how many cursors issued before
    cursors were bound each party still sends (accepted while ``[watch] unbound_cursors`` is
    on, refused 410 after), so that the operator knows when the transition can end. Counted
    at once, from the batch thread too (where a feed read runs on several nodes)."""
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    wm.unbound_cursor("sig-verifier", True)
    worker = threading.Thread(target=wm.unbound_cursor, args=("sig-verifier", True))
    worker.start()
    worker.join()
    wm.unbound_cursor("usr-verifier", False)
    got = parse_metrics(wm.render().decode())
    name = "jpkiva_changes_unbound_cursors_total"
    assert {k: v for k, v in got.items() if k[0] == name} == {
        (name, frozenset({("party", "sig-verifier"), ("outcome", "accepted")})): 2,
        (name, frozenset({("party", "usr-verifier"), ("outcome", "refused")})): 1,
    }
    wm.close()


@pytest.mark.real_clock  # the ledger flusher's timed wait hangs under libfaketime
def test_the_app_counts_the_unbound_cursors_of_its_changes_feed(
    built: Built, tmp_path: Path, mp_dir: Path
) -> None:
    """The feed's env (the one its routes share) tells this worker's metrics of each unbound
    cursor (the counting and the env's call are tested apart; this is the wiring)."""
    cfg = built.app_config(tmp_path, **{"metrics.enabled": True, "metrics.render_interval": 0})
    a = JpkiApp(cfg, 0)
    try:
        assert a.metrics is not None and a.v1 is not None
        env = a.v1.env(changes.CHANGES_ROUTE.path)
        assert isinstance(env, changes.WatchEnv) and env is changes.setup(a.config)
        env.on_unbound("sig-verifier", False)
        got = parse_metrics(a.metrics.render().decode())
        key = frozenset({("party", "sig-verifier"), ("outcome", "refused")})
        assert got[("jpkiva_changes_unbound_cursors_total", key)] == 1
    finally:
        a.close()


def test_local_counts_reach_the_files_only_when_flushed(mp_dir: Path) -> None:
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    ok = Response(200, b"x", b"application/ocsp-response")
    note = Outcome("ocsp", "successful", "revoked", "sign-card", "sig-verifier", "presigned")
    for i in range(5):
        wm.on_request_done(_req(b"/ocsp", note, rid=i), ok, 0.0003)
    refused = Outcome("ocsp", "unauthorized", rule="unauthenticated")
    wm.on_request_done(_req(b"/ocsp", refused), ok, 0.00005)
    wm.on_request_done(_req(b"/nope", None, method=b"GET"), Response(404, b"", b"text/plain"), 2.0)
    wm.on_http_error(413)
    wm.on_request_done(_req(b"/crl/a.crl", Outcome("crl"), method=b"GET"), ok, 0.001)
    wm.on_connection_open()
    wm.on_connection_open()
    wm.on_connection_close()
    wm.observe_signing(0.004, "sig-verifier")

    def from_files() -> dict[tuple[str, Labels], float]:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        reg = CollectorRegistry()
        MultiProcessCollector(reg, str(mp_dir))  # type: ignore[no-untyped-call]
        return parse_metrics(generate_latest(reg).decode())

    assert total(from_files(), "jpkiva_requests_total") == 0  # nothing before the flush
    s = parse_metrics(wm.render().decode())  # a scrape flushes this worker first
    assert s == from_files()
    assert total(s, "jpkiva_requests_total", endpoint="ocsp", party="sig-verifier", cert_status="revoked",
                 family="sign-card", ocsp_status="successful", method="POST", http_status="200") == 5  # fmt: skip
    assert (
        total(s, "jpkiva_requests_total", endpoint="ocsp", party="-", ocsp_status="unauthorized")
        == 1
    )
    assert total(s, "jpkiva_requests_total", endpoint="other", method="GET", http_status="404") == 1
    assert total(s, "jpkiva_requests_total", endpoint="other", method="", http_status="413") == 1
    assert total(s, "jpkiva_requests_total", endpoint="crl", party="-", ocsp_status="") == 1
    assert total(s, "jpkiva_ocsp_answers_total", source="presigned") == 5
    assert total(s, "jpkiva_ocsp_answers_total", source="signed") == 0
    assert total(s, "jpkiva_refusals_total", rule="unauthenticated") == 1
    assert {ls for (n, ls) in s if n == "jpkiva_refusals_total"} == {
        frozenset({("rule", r)}) for r in m.RULES
    }
    assert total(s, "jpkiva_open_connections") == 1
    # histogram: 5 in (0.00025, 0.0005], 1 in (0, 0.0001], 1 above 1 s (+Inf only)
    b = "jpkiva_request_duration_seconds_bucket"
    assert total(s, b, endpoint="ocsp", le="0.0001") == 1
    assert total(s, b, endpoint="ocsp", le="0.00025") == 1
    assert total(s, b, endpoint="ocsp", le="0.0005") == 6
    assert total(s, b, endpoint="ocsp", le="+Inf") == 6
    assert total(s, "jpkiva_request_duration_seconds_count", endpoint="ocsp") == 6
    assert total(s, "jpkiva_request_duration_seconds_sum", endpoint="ocsp") == pytest.approx(
        0.00155
    )
    assert total(s, b, endpoint="other", le="1.0") == 0
    assert total(s, b, endpoint="other", le="+Inf") == 1
    assert total(s, "jpkiva_signing_duration_seconds_bucket", le="0.0025") == 0
    assert total(s, "jpkiva_signing_duration_seconds_bucket", le="0.005") == 1
    assert total(s, "jpkiva_fresh_signatures_total", party="sig-verifier") == 1
    # a second flush adds nothing; new counts add to the old
    wm.flush()
    wm.on_request_done(_req(b"/ocsp", note), ok, 0.0003)
    s = parse_metrics(wm.render().decode())
    assert total(s, "jpkiva_ocsp_answers_total", source="presigned") == 6
    assert total(s, "jpkiva_request_duration_seconds_count", endpoint="ocsp") == 7
    wm.close()


def test_scrapes_within_the_render_interval_render_once(mp_dir: Path) -> None:
    """Issue 10 item 5: merging every worker's files is done at most once per render_interval.

    A flood of scrapes within the interval gets the same text from one render; the next
    scrape after the interval renders again and shows what was counted in between."""
    now = [1000.0]
    wm = m.WorkerMetrics(MetricsConfig(render_interval=5.0), clock=lambda: now[0])
    ok = Response(200, b"x", b"application/ocsp-response")
    note = Outcome("ocsp", "successful", "good", "sign-card", "sig-verifier", "signed")
    wm.on_request_done(_req(b"/ocsp", note), ok, 0.001)
    app = m.MetricsApp(wm)
    first = app.handle(_req(b"/metrics", None, method=b"GET"))
    assert first.status == 200 and first.content_type == m.CONTENT_TYPE
    for i in range(200):
        wm.on_request_done(_req(b"/ocsp", note, rid=i), ok, 0.001)
        now[0] += 1 / 64  # 3.1 s of scrapes, all within the interval
        assert app.handle(_req(b"/metrics", None, method=b"GET")).body == first.body
    s = parse_metrics(first.body.decode())
    assert total(s, "jpkiva_metrics_renders_total") == 1
    assert total(s, "jpkiva_requests_total", endpoint="ocsp") == 1
    now[0] += 2.0  # past the interval: one more render, with the 200 requests counted since
    s = parse_metrics(app.handle(_req(b"/metrics", None, method=b"GET")).body.decode())
    assert total(s, "jpkiva_metrics_renders_total") == 2
    assert total(s, "jpkiva_requests_total", endpoint="ocsp") == 201
    # the admin app serves /metrics and nothing else
    assert app.handle(_req(b"/healthz", None, method=b"GET")).status == 404
    assert app.handle(_req(b"/metrics", None, method=b"POST")).status == 405
    wm.close()


def test_labels_and_endpoints() -> None:
    assert m.endpoint_of(b"/ocsp") == "ocsp" and m.endpoint_of(b"/ocsp/MEQw") == "ocsp"
    assert m.endpoint_of(b"/crl/a.crl") == "crl" and m.endpoint_of(b"/metrics?x") == "metrics"
    assert m.endpoint_of(b"/healthz") == "healthz" and m.endpoint_of(b"/x") == "other"
    assert method_label(b"POST") == "POST" and method_label(b"PROPFIND") == "other"
    assert method_label(b"") == ""
    assert set(m.OCSP_STATUS.values()) == {
        "successful", "malformedRequest", "internalError", "tryLater", "sigRequired", "unauthorized",
    }  # fmt: skip


def test_worker_metrics_refuse_to_start_without_the_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from responder.config import ConfigError

    monkeypatch.delenv(m.ENV, raising=False)
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        m.WorkerMetrics(MetricsConfig())


@pytest.mark.integration  # starts a process to have a dead pid
def test_directories_of_killed_masters_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    old = time.time() - 3600
    dirs = {}
    for name, pid in (
        ("dead", dead.pid),
        ("alive", os.getpid()),
        ("young", dead.pid),
        ("other", None),
    ):
        d = tmp_path / f"jpki-va-metrics-{name}"
        d.mkdir(mode=0o700)
        (d / "counter_1.db").write_bytes(b"x")
        if pid is not None:
            (d / "master.pid").write_text(str(pid))
        # stamped from this process's clock, the one the sweep reads (under libfaketime the
        # kernel's own stamp is the real time, hours away from a shifted clock)
        stamp = time.time() if name == "young" else old
        os.utime(d, (stamp, stamp))
        dirs[name] = d
    fresh, owned = m.prepare_dir(None)
    assert owned and fresh.parent == tmp_path
    assert not dirs["dead"].exists()  # its master died without cleaning up
    assert dirs["alive"].exists() and dirs["young"].exists() and dirs["other"].exists()


def test_prepare_dir_is_private_and_emptied(tmp_path: Path) -> None:
    d = tmp_path / "metrics"
    d.mkdir(mode=0o755)
    (d / "counter_123.db").write_bytes(b"old")
    (d / "store-entries.json").write_text("{}")
    (d / "keep.txt").write_text("not ours")
    path, owned = m.prepare_dir(d)
    assert path == d and not owned
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt"]
    fresh, owned = m.prepare_dir(None)
    try:
        assert owned and stat.S_IMODE(fresh.stat().st_mode) == 0o700 and not any(fresh.iterdir())
    finally:
        fresh.rmdir()


# -- the real server --------------------------------------------------------------------------


def _more_lines(srv: Server, than: int) -> bool:
    return len(srv.events("request")) > than


def _connections_by_worker(
    srv: Server, token: str, body: bytes, n: int
) -> list[tuple[http.client.HTTPConnection, int]]:
    """``n`` keep-alive connections, each with one answered request, and the worker that served it."""
    out = []
    for _ in range(n):
        before = len(srv.events("request"))
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("POST", "/ocsp", body, {"Content-Type": "application/ocsp-request",
                                             "Authorization": f"Bearer {token}"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        until(functools.partial(_more_lines, srv, before), 5, "the access log line")
        worker = srv.events("request")[before]["worker"]
        assert isinstance(worker, int)
        out.append((conn, worker))
    return out


def _send(conns: list[http.client.HTTPConnection], token: str, body: bytes, per_conn: int) -> None:
    def work(conn: http.client.HTTPConnection) -> None:
        for _ in range(per_conn):
            conn.request("POST", "/ocsp", body, {"Content-Type": "application/ocsp-request",
                                                 "Authorization": f"Bearer {token}"})  # fmt: skip
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def _ocsp_total(srv: Server) -> float:
    return total(srv.scrape(), "jpkiva_requests_total", endpoint="ocsp")


def test_totals_across_workers_survive_a_killed_worker(built: Built, tmp_path: Path) -> None:
    """N requests over both workers count N; SIGKILL of one: no drop, no double count."""
    with start_server(built, tmp_path / "srv", extra=("--access-log", "all")) as srv:
        token = srv.token("both-verifier")
        revoked = sample(built, CertStatus.REVOKED, "sign-card")
        body = ocsp_request(built, revoked)
        conns: list[tuple[http.client.HTTPConnection, int]] = []
        for _ in range(6):  # until both workers hold connections (the kernel picks)
            conns += _connections_by_worker(srv, token, body, 4)
            if {w for _, w in conns} == {0, 1}:
                break
        assert {w for _, w in conns} == {0, 1}, "every connection went to one worker"
        _send([c for c, _ in conns], token, body, 25)
        n = len(conns) * 26
        until(lambda: _ocsp_total(srv) == n, what=f"{n} OCSP requests in /metrics")
        time.sleep(1.5)  # one more flush interval: still exactly n (nothing counted twice)
        s = srv.scrape()
        assert total(s, "jpkiva_requests_total", endpoint="ocsp") == n
        assert total(s, "jpkiva_requests_total", endpoint="ocsp", ocsp_status="successful",
                     cert_status="revoked", family="sign-card", party="both-verifier",
                     method="POST", http_status="200") == n  # fmt: skip
        assert total(s, "jpkiva_ocsp_answers_total", source="presigned") == n
        assert total(s, "jpkiva_request_duration_seconds_count", endpoint="ocsp") == n
        assert total(s, "jpkiva_workers_up") == 2 and total(s, "jpkiva_worker_restarts_total") == 0
        # what JpkiVaWorkersMissing compares them with: [server] workers, not the last hour's
        assert total(s, "jpkiva_workers_configured") == 2
        # ours; the scrape's is on the admin listener, which is not counted
        assert total(s, "jpkiva_open_connections") == len(conns)

        # kill -9 a worker that holds open connections
        victim = conns[0][1]
        pid = next(
            e["worker_pid"] for e in reversed(srv.events("worker_ready")) if e["worker"] == victim
        )
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        until(lambda: len(srv.events("worker_ready")) == 3, what="the restarted worker")
        for conn, _ in conns:
            conn.close()
        s = srv.scrape()
        assert total(s, "jpkiva_requests_total", endpoint="ocsp") == n  # nothing lost
        assert total(s, "jpkiva_worker_restarts_total") == 1
        assert total(s, "jpkiva_workers_up") == 2

        # send more over both workers: exactly added, never doubled
        more: list[tuple[http.client.HTTPConnection, int]] = []
        for _ in range(6):
            more += _connections_by_worker(srv, token, body, 4)
            if {w for _, w in more} == {0, 1}:
                break
        _send([c for c, _ in more], token, body, 10)
        n2 = n + len(more) * 11
        until(lambda: _ocsp_total(srv) == n2, what=f"{n2} OCSP requests after the restart")
        for conn, _ in more:
            conn.close()
        # the dead worker's connections left the gauge (mark_process_dead)
        until(
            lambda: total(srv.scrape(), "jpkiva_open_connections") == 0, what="open connections 0"
        )
        time.sleep(1.2)
        assert _ocsp_total(srv) == n2
        # the access log: one JSON object per line, no request data
        lines = srv.events("request")
        assert len([x for x in lines if x["endpoint"] == "ocsp"]) == n2
        assert {tuple(sorted(x)) for x in lines} == {
            ("client", "duration_ms", "endpoint", "event", "http_status", "level", "logger", "method",
             "ocsp_status", "party", "pid", "request_id", "ts", "worker")
        }  # fmt: skip
        metrics_dir = next(
            p
            for p in Path(tempfile.gettempdir()).glob("jpki-va-metrics-*")
            if (p / "master.pid").read_text() == str(srv.pid)
        )
        assert stat.S_IMODE(metrics_dir.stat().st_mode) == 0o700
        # the dead worker's counts stay, folded into the archive (above: nothing lost); its
        # files went, its live gauge with them: the directory does not grow with each death
        assert not any(metrics_dir.glob(f"*_{pid}.db"))
        assert (metrics_dir / "counter_archive.db").is_file()
        assert (metrics_dir / "histogram_archive.db").is_file()
    assert not metrics_dir.exists()  # removed when the master exits


def test_sources_refusals_and_log_hygiene(built: Built, tmp_path: Path) -> None:
    """Sources and refusal rules are counted; no token, certificate, serial or fact is logged or exposed."""
    from crlbuilder.demo.certprofile import facts_of
    from crlbuilder.demo.pki import init_pki

    with start_server(built, tmp_path / "srv", extra=("--access-log", "all")) as srv:
        both = srv.token("both-verifier")
        revoked = sample(built, CertStatus.REVOKED, "sign-card")
        good = sample(built, CertStatus.GOOD, "sign-card", "good")
        auth = sample(
            built, CertStatus.GOOD, "auth-mobile", "good"
        )  # another test revokes an auth-card one
        status = ocsp.load_der_ocsp_response

        assert (
            status(srv.post(ocsp_request(built, revoked), both)).certificate_status
            is ocsp.OCSPCertStatus.REVOKED
        )
        for _ in range(3):  # signed once, then cached (per worker: at most one signature each)
            assert (
                status(srv.post(ocsp_request(built, good), both)).certificate_status
                is ocsp.OCSPCertStatus.GOOD
            )
        assert (
            status(srv.post(ocsp_request(built, good, nonce=True), both)).certificate_status
            is ocsp.OCSPCertStatus.GOOD
        )
        # a party's certificate passed by the trusted proxy, and a signed request
        pem = (built.pki / "parties" / "auth-verifier.pem").read_text()
        hdr = {"client-cert": urllib.parse.quote(pem)}
        assert (
            status(srv.post(ocsp_request(built, auth), headers=hdr)).response_status
            is ocsp.OCSPResponseStatus.SUCCESSFUL
        )
        parties = built.pki / "parties"
        out = subprocess.run(
            ["openssl", "ocsp", "-url", f"{srv.url}/ocsp", "-issuer", str(built.population / good.issuer_cert),
             "-cert", str(built.population / good.cert), "-no_nonce", "-noverify",
             "-signer", str(parties / "sig-verifier.pem"), "-signkey", str(parties / "sig-verifier.key")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert ": good" in out.stdout, out
        # refusals
        unauthorized = ocsp.OCSPResponseStatus.UNAUTHORIZED
        assert status(srv.post(ocsp_request(built, revoked))).response_status is unauthorized
        assert (
            status(srv.post(ocsp_request(built, revoked), "not-a-token")).response_status
            is unauthorized
        )
        assert (
            status(
                srv.post(ocsp_request(built, revoked), srv.token("auth-verifier"))
            ).response_status
            is unauthorized
        )
        foreign = init_pki(tmp_path / "other")
        body = ocsp_request(built, good, issuer_cert=foreign.path(foreign.issuers[0].cert))
        assert status(srv.post(body, both)).response_status is unauthorized
        assert (
            status(srv.post(b"\x30\x03\x02\x01\x00", both)).response_status
            is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        )
        assert srv.get("/crl/sign-card-g2.crl")[0] == 401
        req = urllib.request.Request(f"{srv.url}/crl/sign-card-g2.crl",
                                     headers={"Authorization": f"Bearer {srv.token('auth-verifier')}"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=10)

        def settled() -> bool:
            s = srv.scrape()
            return (
                total(s, "jpkiva_refusals_total") == 7
                and total(s, "jpkiva_ocsp_answers_total") == 7
            )

        until(settled, what="the refusals and answers")
        s = srv.scrape()
        rules = {r: total(s, "jpkiva_refusals_total", rule=r) for r in m.RULES}
        # an auth-verifier asking about sign certificates asks for a service its title lacks
        # (sign-revocation-info, Act §18(1)): policy.decide names that rule
        assert rules == {"unauthenticated": 3, "unauthorized_family": 0, "unknown_issuer": 1,
                         "malformed": 1, "stale": 0, "signer_expired": 0, "suspended": 0,
                         "quota": 0, "cycle": 0, "unauthorized_service": 2, "unauthorized_method": 0,
                         "not-started": 0, "ended": 0, "fair_share": 0, "public_rate": 0,
                         "member_quota": 0}  # fmt: skip
        sources = {x: total(s, "jpkiva_ocsp_answers_total", source=x) for x in m.SOURCES}
        # 3 plain asks for `good` (signed once per worker at most), 1 nonce, the mTLS and signed ones
        assert sources["presigned"] == 1 and sources["signed"] >= 3
        assert sources["signed"] + sources["cached"] == 6
        assert total(s, "jpkiva_signing_duration_seconds_count") == sources["signed"]
        assert total(s, "jpkiva_requests_total", party="auth-verifier", family="auth-mobile",
                     ocsp_status="successful") == 1  # fmt: skip
        assert (
            total(s, "jpkiva_requests_total", party="sig-verifier", ocsp_status="successful") == 1
        )
        assert total(s, "jpkiva_requests_total", endpoint="crl", http_status="401", party="-") == 1
        assert total(s, "jpkiva_requests_total", endpoint="crl", http_status="403",
                     party="auth-verifier", family="sign-card") == 1  # fmt: skip
        metrics_text = srv.get("/metrics", srv.metrics_url)[1].decode()

    # log hygiene: nothing secret or personal in the access log (nor in /metrics)
    log_text = srv.log.read_text(errors="replace")
    assert len(srv.events("request")) >= 14  # 7 answered, 7 refused (scrapes: not logged)
    secrets: list[str] = []
    for party in built.manifest.parties:
        secrets.append(built.manifest.path(party.token).read_text().strip())
        body_lines = built.manifest.path(party.cert).read_text().strip().splitlines()[1:-1]
        secrets += [ln for ln in body_lines if len(ln) >= 32]
    asked = [revoked, good, auth]
    for a in asked:
        serial = a.serial
        secrets += [str(serial), f"{serial:x}", f"{serial:X}"]
    facts_seen = 0
    for a in built.answers:
        if a.family in (Family.SIGN_CARD, Family.SIGN_MOBILE):
            cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
            facts = facts_of(cert)
            if facts is not None:
                facts_seen += 1
                secrets += [facts.name, facts.address, str(facts.birth_date)]
                secrets += [x for x in (facts.name_alt, facts.address_alt) if x]
    assert facts_seen > 10
    for secret in secrets:
        assert secret not in log_text, "a secret or personal datum is in the log"
        assert secret not in metrics_text, "a secret or personal datum is in /metrics"
    for line in log_text.splitlines():  # every line is one JSON object
        assert isinstance(json.loads(line), dict)


def test_the_tls_certificate_a_node_serves_is_exported_with_its_end(
    built: Built, tmp_path: Path
) -> None:
    """Where the workers terminate TLS, /metrics says when the server certificate they serve
    expires (JpkiVaTlsCertificateExpiring: past it no party completes a handshake), to the
    second the certificate says; without TLS, no series."""
    pki = built.manifest
    tls = ("--tls-cert", str(pki.path(pki.server_cert)), "--tls-key", str(pki.path(pki.server_key)))
    end = x509.load_pem_x509_certificate(pki.path(pki.server_cert).read_bytes()).not_valid_after_utc
    name = "jpkiva_tls_certificate_not_after_timestamp_seconds"
    with start_server(built, tmp_path / "tls", extra=tls) as srv:
        assert [v for (n, _), v in srv.scrape().items() if n == name] == [end.timestamp()]
    with start_server(built, tmp_path / "plain") as srv:
        assert not [n for n, _ in srv.scrape() if n == name]


def test_stale_issuer_alarm_and_recovery(built: Built, tmp_path: Path) -> None:
    """jpkiva_stale_issuer is 1 where OCSP answers tryLater, and 0 again after crlbuilder refreshes."""
    store = tmp_path / "store"  # a new store: a build may not go back before a store's last commit
    crl = tmp_path / "crl"
    args = built.builder_args(store, crl)
    args[args.index("--as-of") + 1] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    run_tool("crlbuilder", "build", *args)  # CRLs whose nextUpdate has passed
    with start_server(built, tmp_path / "srv", store) as srv:
        s = srv.scrape()
        ids = [i.id for i in built.manifest.issuers]
        assert {i: total(s, "jpkiva_stale_issuer", issuer=i) for i in ids} == dict.fromkeys(ids, 1)
        # each issuer's delegated OCSP signer: when its certificate expires (JpkiVaOcspSignerExpiring)
        assert {
            i.id: total(s, "jpkiva_ocsp_signer_not_after_timestamp_seconds", issuer=i.id)
            for i in built.manifest.issuers
        } == {
            i.id: x509.load_pem_x509_certificate(
                (built.pki / i.ocsp_cert).read_bytes()
            ).not_valid_after_utc.timestamp()
            for i in built.manifest.issuers
        }
        # the /v1 answer-signing certificate's (JpkiVaAnswerSignerExpiring)
        assert total(s, "jpkiva_answer_signer_not_after_timestamp_seconds") == (
            x509.load_pem_x509_certificate(
                (built.pki / built.manifest.answer_cert).read_bytes()
            ).not_valid_after_utc.timestamp()
        )
        now = time.time()
        for i in ids:
            assert total(s, "jpkiva_issuer_next_update_timestamp_seconds", issuer=i) < now
            assert (
                total(s, "jpkiva_crl_last_produced_timestamp_seconds", issuer=i, kind="delta")
                < now - 3 * 3600 + 120
            )
        good = sample(built, CertStatus.GOOD)
        der = srv.post(ocsp_request(built, good), srv.token("both-verifier"))
        assert ocsp.load_der_ocsp_response(der).response_status is ocsp.OCSPResponseStatus.TRY_LATER
        until(
            lambda: total(srv.scrape(), "jpkiva_refusals_total", rule="stale") == 1,
            what="stale refusal",
        )
        build_before = total(srv.scrape(), "jpkiva_store_build")
        # a refresh run: no new records (no new commit), new CRLs and answers, a new build number
        empty = tmp_path / "empty"
        empty.mkdir()
        args = built.builder_args(store, crl)
        args[args.index("--input") + 1] = str(empty)
        args[args.index("--as-of") + 1] = datetime.now(UTC).isoformat()
        run_tool("crlbuilder", "build", *args)
        time.sleep(1.1)  # the store gauges are cached for a second
        s = srv.scrape()
        assert total(s, "jpkiva_store_build") == build_before + 1
        assert total(s, "jpkiva_stale_issuer") == 0
        assert (
            min(total(s, "jpkiva_issuer_next_update_timestamp_seconds", issuer=i) for i in ids)
            > time.time()
        )
        der = srv.post(ocsp_request(built, good), srv.token("both-verifier"))
        assert (
            ocsp.load_der_ocsp_response(der).response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        )


def test_metrics_only_on_the_admin_listener_and_a_scrape_flood_renders_once(
    built: Built, tmp_path: Path
) -> None:
    """Issue 10 item 5: /metrics is not on the public port; admin scrapes are served cached.

    A flood of unauthenticated GET /metrics on the public port took the workers' time from
    the parties. Now the public port answers 404 (counted as endpoint ``metrics``), the
    admin listener is on loopback, and 200 scrapes on 4 keep-alive connections within the
    render interval cause at most one render per worker per interval."""
    interval = 5.0
    with start_server(
        built, tmp_path / "srv", extra=("--metrics-render-interval", str(interval))
    ) as srv:
        admin = urllib.parse.urlsplit(srv.metrics_url)
        assert admin.hostname == "127.0.0.1" and admin.port != srv.port
        status, body = srv.get("/metrics")
        assert status == 404 and b"admin listener" in body
        assert b"jpkiva_" not in body
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("HEAD", "/metrics")
        assert conn.getresponse().status == 404
        conn.close()
        assert srv.get("/healthz", srv.metrics_url)[0] == 404  # the admin listener: /metrics only

        def renders(text: bytes) -> float:
            return total(parse_metrics(text.decode()), "jpkiva_metrics_renders_total")

        bodies: list[bytes] = []
        lock = threading.Lock()

        def scrape_many(n: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", admin.port or 0, timeout=10)
            try:
                for _ in range(n):
                    c.request("GET", "/metrics")
                    r = c.getresponse()
                    data = r.read()
                    assert r.status == 200
                    with lock:
                        bodies.append(data)
            finally:
                c.close()

        time.sleep(interval)  # every worker's last render is now older than the interval
        t0 = time.monotonic()
        threads = [threading.Thread(target=scrape_many, args=(50,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - t0
        assert len(bodies) == 200
        windows = int(elapsed // interval) + 1
        # each worker renders at most once per interval: 2 workers, `windows` intervals
        assert len(set(bodies)) <= 2 * windows, (len(set(bodies)), elapsed)
        seen = sorted({renders(b) for b in bodies})
        assert seen[-1] - seen[0] < 2 * windows, (seen, elapsed)
        # the public 404s were counted, as endpoint "metrics"
        until(
            lambda: total(srv.scrape(), "jpkiva_requests_total", endpoint="metrics",
                          http_status="404") == 2,
            timeout=3 * interval, what="the public /metrics 404s counted",
        )  # fmt: skip


def test_metrics_off(built: Built, tmp_path: Path) -> None:
    """[metrics] enabled = false: no /metrics, no per-request work; OCSP is served as before."""
    with start_server(built, tmp_path / "srv", extra=("--no-metrics",)) as srv:
        assert srv.get("/metrics")[0] == 404
        good = sample(built, CertStatus.REVOKED)
        der = srv.post(ocsp_request(built, good), srv.token("both-verifier"))
        assert ocsp.load_der_ocsp_response(der).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_configured_directory_is_cleaned_at_start(built: Built, tmp_path: Path) -> None:
    d = tmp_path / "metrics"
    d.mkdir()
    fake = d / "counter_1.db"
    fake.write_bytes(b"\0" * 16)
    with start_server(built, tmp_path / "srv", extra=("--metrics-dir", str(d))) as srv:
        assert not fake.exists()
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert srv.get("/healthz")[0] == 200
        until(
            lambda: total(srv.scrape(), "jpkiva_requests_total", endpoint="healthz") == 1,
            what="healthz count",
        )
        assert any(d.glob("counter_*.db"))
    assert d.exists()  # a configured directory stays (emptied at the next start)
