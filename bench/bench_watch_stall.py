"""What a party's ``POST /v1/watch`` batches cost the event loop's other connections.

    python -m bench.bench_watch_stall [--seconds 8] [--out bench/results/watch_stall.json]
                                      [--spy /tmp/spy.txt]

One ``responder serve`` worker (access log on) on the demo store of `bench.bench_v1_marks`
(200 certificates of the signing issuer). A probing process (its own process, so its client
time is not the batching client's GIL) sends, on two keep-alive connections, ``GET /healthz``
and an OCSP request for one of the 200 certificates, one each every 2 ms, for ``--seconds``
alone, then for ``--seconds`` while a batching process sends ``POST /v1/watch`` of 10,000 new
certificates without pause on a third connection (bodies made before the phase). Reported:
the client latency of ``/healthz`` and of the OCSP request, and the access log's
``duration_ms`` of each watch batch (its own time). ``--spy FILE`` runs ``py-spy dump --nonblocking`` on
the worker every 0.1 s of the batch phase and writes the stacks of the main thread to FILE.

Median, p99 and max in ms. The machine is shared: run it back to back on the trees
compared. Nothing asserted about speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_v1_marks import BATCH, BIN, ROOT, build, server_ms, stats
from bench.bench_v1_status import ocsp_request
from bench.procs import stop, wait_line


def probe(host: str, port: int, ocsp_body: bytes, token: str, seconds: float, out: Any) -> None:
    """``/healthz`` and one OCSP request, alternately, one every 2 ms: (healthz, ocsp) in ms."""
    health = http.client.HTTPConnection(host, port, timeout=60)
    oc = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}"}
    hz: list[float] = []
    oq: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        health.request("GET", "/healthz")
        health.getresponse().read()
        hz.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
        t = time.perf_counter()
        oc.request("POST", "/ocsp", ocsp_body, headers)
        r = oc.getresponse()
        r.read()
        assert r.status == 200
        oq.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
    out.put((hz, oq))


def batches(host: str, port: int, issuer: str, token: str, n: int, ready: Any, done: Any) -> None:
    """``n`` ``POST /v1/watch`` of 10,000 new certificates, bodies made first."""

    def serial(b: int, i: int) -> str:
        return f"{(1 << 52) + BATCH * b + i:x}"

    bodies = [
        json.dumps(
            {"add": [{"issuer": issuer, "serial": serial(b, i)} for i in range(BATCH)]}
        ).encode()
        for b in range(n)
    ]
    c = http.client.HTTPConnection(host, port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    ready.set()
    for body in bodies:
        if done.is_set():
            break
        c.request("POST", "/v1/watch", body, headers)
        r = c.getresponse()
        data = r.read()
        assert r.status == 200, data[:300]


def spy(pid: int, until: float, path: Path) -> None:
    """``py-spy dump`` of the worker every 0.1 s until ``until``: the main thread's stacks."""
    tool = shutil.which("py-spy") or str(BIN / "py-spy")
    with path.open("w") as f:
        while time.perf_counter() < until:
            r = subprocess.run(
                [tool, "dump", "--nonblocking", "--pid", str(pid)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            f.write(r.stdout + "\n=====\n")
            time.sleep(0.1)


def run(work: Path, seconds: float, spy_to: Path | None) -> dict[str, Any]:
    from crlbuilder.store.lmdbstore import Store

    _cursor, issuer, serials = build(work)
    store = Store.open(work / "store", readonly=True)
    with store.read() as r:
        der = next(i.cert_der for i in r.issuers() if i.id == issuer)
    store.close()
    body = ocsp_request(der, serials[0])
    log = work / "serve.log"
    argv = [
        str(BIN / "responder"), "serve", "--store", str(work / "store"), "--pki", str(work / "pki"),
        "--registry", str(work / "registry.toml"), "--port", "0", "--workers", "1",
        "--ledger-dir", str(work / "ledger-server"), "--no-metrics", "--access-log", "all",
    ]  # fmt: skip
    token = (work / "pki" / "parties" / "sig-verifier.token").read_text().strip()
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    ctx = multiprocessing.get_context("spawn")
    try:
        url = wait_line(proc, r"listening on (\S+)", 60).split()[-1]
        host, port_s = url.removeprefix("http://").rsplit(":", 1)
        port = int(port_s)
        q = ctx.Queue()
        p = ctx.Process(target=probe, args=(host, port, body, token, 1.0, q))  # warm-up
        p.start()
        q.get(timeout=120)
        p.join()
        p = ctx.Process(target=probe, args=(host, port, body, token, seconds, q))
        p.start()
        hz_alone, oq_alone = q.get(timeout=120 + seconds)
        p.join()
        skip = len(server_ms(log, "v1-watch"))
        ready, done = ctx.Event(), ctx.Event()
        b = ctx.Process(target=batches, args=(host, port, issuer, token, 200, ready, done))
        b.start()
        ready.wait(300)
        time.sleep(0.5)  # the first batch under way
        p = ctx.Process(target=probe, args=(host, port, body, token, seconds, q))
        p.start()
        if spy_to is not None:
            worker = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
            )
            pids = worker.stdout.split() or [str(proc.pid)]
            spy(int(pids[0]), time.perf_counter() + seconds, spy_to)
        hz_during, oq_during = q.get(timeout=120 + seconds)
        p.join()
        done.set()
        b.join(300)
        time.sleep(0.3)
        watch = server_ms(log, "v1-watch")[skip:]
    finally:
        stop(proc)
    return {
        "alone": {"healthz_client_ms": stats(hz_alone), "ocsp_client_ms": stats(oq_alone)},
        "during_watch_batches": {
            "healthz_client_ms": stats(hz_during),
            "ocsp_client_ms": stats(oq_during),
            "watch_server_ms": stats(watch) if watch else {},
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "watch_stall.json")
    p.add_argument("--spy", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jpki-bench-stall-"))
    try:
        result = run(work, args.seconds, args.spy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
