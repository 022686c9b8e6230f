"""The cost of metrics on the hot path: the responder with ``[metrics]`` on against off, same run.

    python -m bench.bench_metrics [--dir DIR] [--seconds 10] [--rounds 3] [--workers 1]
                                  [--out bench/results/metrics.json]

``DIR`` holds a demo store (``pki/``, ``store/``, ``crl/``, ``registry.toml``,
``population/``); it is made with `crlbuilder.demo.prepare` when missing (a
temporary directory without ``--dir``). The load is ``wrk -t1 -c32 -d10s``
keep-alive POSTs of one OCSP request (application/ocsp-request, SHA-1 CertID, no
nonce) for a revoked certificate whose pre-signed answer is stored, with the
bearer token of ``both-verifier``, against ``responder serve`` (``--workers 1`` by
default, so that wrk has the other core) started with ``--metrics`` and with
``--no-metrics`` in turn, rounds interleaved (off/on, then on/off, ...) so that
a drift of the shared machine falls on both. The access log stays off.

Checks, so that a fast error cannot pass for a fast answer: the answer is the
same revoked OCSP response with metrics on and off; wrk's bytes per answer match
its size; and with metrics on, /metrics counts as many pre-signed answers as the
server sent (wrk's count, plus answers in flight when wrk stopped, plus the checks).

Prints req/s of each run, the medians, their ratio and the cost in percent, the
workers' CPU time per answered request (user + system from /proc, less sensitive
to other jobs on the machine than req/s), and writes them as JSON. The goal: metrics cost less than 5% of throughput.

On a shared, busy machine the ratio of two loads is noisy (several percent either
way when other jobs run), so the script also measures the same thing in this
process (`in_process`): the worker's app behind the HTTP layer with and without the
metrics hooks, fed the same request, timed by this thread's CPU clock, rounds
alternated, least of each kept. That figure leaves out the kernel's share of a
request (the sockets), so as a percentage it overstates the cost; the microseconds
it adds are also shown against the workers' CPU time per request under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import BenchError, started, wait_line
from crlbuilder.demo.__main__ import prepare
from crlbuilder.model import Answer, CertStatus

BIN: Final = Path(sys.executable).parent
GOAL_COST_PERCENT: Final = 5.0
NO_PROBE: Final = "function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end"
"""wrk's first connection is a probe that sends nothing; skip it (it is not a request)."""


@dataclass(frozen=True)
class Run:
    metrics: bool
    rps: float
    requests: int
    bytes_read: int
    seconds: float
    p50_us: float
    p99_us: float
    errors: str
    cpu_us_per_request: float
    """CPU time (user + system) of the worker processes during the load, per answered request."""
    presigned_counted: int | None = None


def revoked_request(d: Path) -> tuple[bytes, Answer]:
    """An OCSP request for the first revoked sample of the population (its answer is pre-signed)."""
    pop = d / "population"
    for line in (pop / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line, type=Answer)
        if a.status is CertStatus.REVOKED and a.issuer != "sign-card-g1":
            cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
            issuer = x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes())
            req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
            return req.public_bytes(serialization.Encoding.DER), a
    raise BenchError("no revoked sample in answers.jsonl")


def worker_cpu_seconds(master: int) -> float:
    """User + system CPU seconds of the master's children (the workers) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0.0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _lua(path: Path, body: bytes, token: str) -> Path:
    data = "".join(f"\\{c}" for c in body)
    path.write_text(
        f'{NO_PROBE}\nwrk.method = "POST"\nwrk.body = "{data}"\n'
        'wrk.headers["Content-Type"] = "application/ocsp-request"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    return path


def _post(url: str, body: bytes, token: str) -> bytes:
    req = urllib.request.Request(
        f"{url}/ocsp",
        data=body,
        headers={"Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        data: bytes = r.read()
        return data


def _presigned(admin_url: str) -> int:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "jpkiva_ocsp_answers_total" and s.labels.get("source") == "presigned":
                return int(s.value)
    raise BenchError("/metrics has no jpkiva_ocsp_answers_total{source=presigned}")


_UNITS: Final = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _latency(text: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def _size(value: str, unit: str) -> float:
    return float(value) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def wrk(
    url: str, lua: Path, seconds: int, connections: int
) -> tuple[float, int, int, float, float, float, str]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            "-s", str(lua), f"{url}/ocsp"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s), ([\d.]+)(B|KB|MB|GB) read", text)
    if out.returncode != 0 or not rps or not done:
        raise BenchError(f"wrk failed ({out.returncode}):\n{text}\n{out.stderr}")
    secs = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    errors = " ".join(
        e.group(0)
        for e in re.finditer(r"Non-2xx or 3xx responses: \d+|Socket errors: [^\n]*", text)
    )
    return (
        float(rps.group(1)),
        int(done.group(1)),
        int(_size(done.group(4), done.group(5))),
        secs,
        _latency(text, "50"),
        _latency(text, "99"),
        errors,
    )


class _Sink:
    """A transport that takes the answers and counts them (the in-process measurement)."""

    def __init__(self) -> None:
        self.writes = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def in_process(
    d: Path, body: bytes, token: str, rounds: int = 15, n: int = 20_000
) -> tuple[float, float]:
    """CPU microseconds per request (off, on) through the HTTP layer and the app, in this process.

    One `responder.app.JpkiApp` (the worker's app, metrics on) behind two
    `responder.http.HttpServer`: one without hooks, as with ``[metrics] enabled = false``,
    one with the app's hooks. Each round feeds ``n`` keep-alive requests to a connection
    of each and reads this thread's CPU time (no syscalls, no other process counted);
    rounds alternate, and the least time of each is kept.
    """
    from responder.app import JpkiApp
    from responder.config import load_config
    from responder.http import HttpServer

    raw = (
        b"POST /ocsp HTTP/1.1\r\nHost: bench\r\nContent-Type: application/ocsp-request\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    with tempfile.TemporaryDirectory(prefix="bench-metrics-mp-") as mp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp
        overrides = {"store.path": str(d / "store"), "store.pki": str(d / "pki"),
                     "registry.path": str(d / "registry.toml")}  # fmt: skip
        config = load_config(None, overrides, environ={})
        app = JpkiApp(config, 0)

        async def measure() -> tuple[float, float]:
            servers = {on: HttpServer.from_config(app, config.server, hooks=app.hooks if on else None)
                       for on in (False, True)}  # fmt: skip
            for server in servers.values():
                server.start()
            best = {False: float("inf"), True: float("inf")}
            for r in range(rounds):
                for on in (False, True) if r % 2 == 0 else (True, False):
                    server = servers[on]
                    conn, sink = server(), _Sink()
                    conn.connection_made(sink)  # type: ignore[arg-type]
                    t0 = time.thread_time()
                    for _ in range(n):
                        conn.data_received(raw)
                    best[on] = min(best[on], (time.thread_time() - t0) / n * 1e6)
                    conn.connection_lost(None)
                    if sink.writes != n:
                        raise BenchError(f"in-process: {sink.writes} answers to {n} requests")
            return best[False], best[True]

        try:
            return asyncio.run(measure())
        finally:
            app.close()
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def one_run(d: Path, work: Path, metrics: bool, args: argparse.Namespace, body: bytes, token: str,
            expected: bytes | None) -> tuple[Run, bytes]:  # fmt: skip
    serve = [str(BIN / "responder"), "serve", "--store", str(d / "store"), "--pki", str(d / "pki"),
             "--registry", str(d / "registry.toml"), "--crl-dir", str(d / "crl"), "--port", "0",
             "--workers", str(args.workers), "--log-level", "warning", "--access-log", "off",
             "--ledger-dir", str(work / f"ledger-{'on' if metrics else 'off'}"),
             "--metrics-port", "0", "--metrics" if metrics else "--no-metrics"]  # fmt: skip
    log = work / f"responder-{'on' if metrics else 'off'}.log"
    with started(serve, log=log, grace=20) as proc:
        # /metrics is on the admin listener, announced after the public address
        ready = r"(listening on \S+\s+metrics on \S+)" if metrics else r"(listening on \S+)"
        lines = wait_line(proc, ready, 30).split()
        url, admin_url = lines[2], lines[-1]
        answer = _post(url, body, token)
        resp = ocsp.load_der_ocsp_response(answer)
        if resp.certificate_status is not ocsp.OCSPCertStatus.REVOKED:
            raise BenchError("the sample is not answered revoked")
        if expected is not None and answer != expected:
            raise BenchError("the answer differs between the runs (not the pre-signed bytes?)")
        cpu0 = worker_cpu_seconds(proc.pid)
        rps, n, nbytes, secs, p50, p99, errors = wrk(url, _lua(work / "post.lua", body, token),
                                                     args.seconds, args.connections)  # fmt: skip
        cpu_us = (worker_cpu_seconds(proc.pid) - cpu0) / max(n, 1) * 1e6
        if _post(url, body, token) != answer:
            raise BenchError("the answer changed under load")
        per_answer = nbytes / max(n, 1)
        if errors or not len(answer) < per_answer < len(answer) + 400:
            raise BenchError(f"wrong answers under load: {errors or per_answer} bytes per answer")
        counted = None
        if metrics:
            time.sleep(1.2)  # one flush interval: every worker's counts are in the files
            counted = _presigned(admin_url)
            if not n + 2 <= counted <= n + 2 + args.connections * args.workers:
                raise BenchError(f"/metrics counts {counted} pre-signed answers, wrk saw {n} (+2)")
        return Run(metrics, rps, n, nbytes, secs, p50, p99, errors, cpu_us, counted), answer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_metrics", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--dir", type=Path, help="demo store directory (made when missing)")
    p.add_argument(
        "--holders", type=int, default=2000, help="population size when the store is made"
    )
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--out", type=Path, help="JSON results file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        work = Path(tmp)
        d: Path = args.dir or work / "demo"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "registry.toml").exists() or not (d / "store" / "data.mdb").exists():
            with open(os.devnull, "w") as quiet:
                saved = sys.stdout
                sys.stdout = quiet
                try:
                    prepare(d, args.holders, 7)
                finally:
                    sys.stdout = saved
        body, sample = revoked_request(d)
        token = (d / "pki" / "parties" / "both-verifier.token").read_text().strip()
        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s keep-alive POST, revoked {sample.issuer} "
              f"(pre-signed answer), responder --workers {args.workers}, {args.rounds} rounds", flush=True)  # fmt: skip
        runs: list[Run] = []
        expected: bytes | None = None
        for r in range(args.rounds):
            for metrics in (False, True) if r % 2 == 0 else (True, False):
                run, expected = one_run(d, work, metrics, args, body, token, expected)
                runs.append(run)
                print(f"  round {r + 1} metrics {'on ' if metrics else 'off'}: {run.rps:9.0f} req/s  "
                      f"p50 {run.p50_us:7.0f} us  p99 {run.p99_us:7.0f} us  "
                      f"worker CPU {run.cpu_us_per_request:6.2f} us/request", flush=True)  # fmt: skip
        # in the directory's lifetime: a store made here is gone once the block ends
        ip_off, ip_on = in_process(d, body, token)
    on = [x.rps for x in runs if x.metrics]
    off = [x.rps for x in runs if not x.metrics]
    ratio = statistics.median(on) / statistics.median(off)
    cost = (1 - ratio) * 100
    print(f"median: metrics on {statistics.median(on):.0f} req/s, off {statistics.median(off):.0f} req/s; "
          f"ratio on/off {ratio:.3f}; cost {cost:.1f}% (goal < {GOAL_COST_PERCENT:g}%)")  # fmt: skip
    cpu_on = statistics.median(x.cpu_us_per_request for x in runs if x.metrics)
    cpu_off = statistics.median(x.cpu_us_per_request for x in runs if not x.metrics)
    print(f"median worker CPU per request: metrics on {cpu_on:.2f} us, off {cpu_off:.2f} us; "
          f"+{(cpu_on / cpu_off - 1) * 100:.1f}%")  # fmt: skip
    added = ip_on - ip_off
    print(f"in process (HTTP layer + app, thread CPU): off {ip_off:.2f} us, on {ip_on:.2f} us per request: "
          f"+{added:.2f} us, +{added / ip_off * 100:.1f}% of the in-process work, "
          f"{added / cpu_off * 100:.1f}% of a worker's CPU per request under load")  # fmt: skip
    result = {
        "load": f"wrk -t1 -c{args.connections} -d{args.seconds}s keep-alive POST of one OCSP request, "
        "revoked, pre-signed answer, bearer token",
        "workers": args.workers,
        "rounds": args.rounds,
        "median_rps_metrics_on": round(statistics.median(on), 1),
        "median_rps_metrics_off": round(statistics.median(off), 1),
        "ratio_on_off": round(ratio, 4),
        "cost_percent": round(cost, 2),
        "goal_cost_percent": GOAL_COST_PERCENT,
        "median_worker_cpu_us_per_request_on": round(cpu_on, 3),
        "median_worker_cpu_us_per_request_off": round(cpu_off, 3),
        "worker_cpu_increase_percent": round((cpu_on / cpu_off - 1) * 100, 2),
        "in_process_us_per_request_off": round(ip_off, 3),
        "in_process_us_per_request_on": round(ip_on, 3),
        "in_process_added_us": round(added, 3),
        "in_process_increase_percent": round(added / ip_off * 100, 2),
        "added_share_of_worker_cpu_percent": round(added / cpu_off * 100, 2),
        "runs": [asdict(x) for x in runs],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
