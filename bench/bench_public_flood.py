"""A registered party's cached OCSP answers timed while anyone floods a public route.

    python -m bench.bench_public_flood [--dir DIR] [--seconds 8] [--connections 40]
                                       [--workers 2] [--source SRC]
                                       [--route /healthz --route /announcements ...]
                                       [--serve-arg=... ...] [--out FILE]

Decision A of the public routes' reading (report aupublic): nothing bounded the requests
of connections that carry no credential, so a flood of cheap public routes
(``/healthz``, ``/readyz``, ``/announcements``) took the workers' time from the parties.
This starts ``responder serve`` (``--workers 2``, loopback, from the source tree ``SRC``,
the repository by default, so that another checkout can be measured the same way) on a
demo store (made with `crlbuilder.demo.prepare` when ``DIR`` has none), then for each
phase (no flood, then each ``--route``):

- the party: ``both-verifier`` sends ``GET /ocsp/{base64}`` of one request without a
  nonce (a cached answer after the first) on one keep-alive connection with its bearer
  token, one every millisecond, for ``--seconds``; its latencies are kept (p50, p90, p99);
- the flood: ``wrk -t1 -c{connections}`` on the route, unauthenticated, keep-alive, as
  fast as answered, from 0.5 s before the party's phase to its end; wrk's requests per
  second and how many of them were not 2xx (the bound's 429).

wrk shares the cores with the server (on a 2-core machine it overstates the harm); the
figures move with the machine's other jobs: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from bench.procs import BenchError, started, wait_line
from crlbuilder.demo.__main__ import prepare
from crlbuilder.model import Answer, CertStatus, Family

ROOT: Final = Path(__file__).resolve().parent.parent
ROUTES: Final = ("/healthz", "/announcements", "/readyz")


def get_path(d: Path) -> str:
    """``/ocsp/{base64}`` of a request (SHA-1 CertID, no nonce) for a good sign-card certificate."""
    pop = d / "population"
    for line in (pop / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line, type=Answer)
        if a.status is CertStatus.GOOD and a.family is Family.SIGN_CARD:
            cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
            issuer = x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes())
            b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
            der = b.build().public_bytes(serialization.Encoding.DER)
            return "/ocsp/" + base64.urlsafe_b64encode(der).decode().rstrip("=")
    raise BenchError("no good sign-card sample in answers.jsonl")


def party(host: str, port: int, token: str, path: str, seconds: float) -> dict[str, object]:
    """One GET every millisecond for ``seconds``: latencies (µs) and HTTP statuses."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            latencies.append((time.perf_counter() - t0) * 1e6)
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            time.sleep(0.001)
    finally:
        conn.close()
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * q))])

    return {
        "requests": len(latencies),
        "statuses": statuses,
        "p50_us": round(statistics.median(latencies)),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
    }


def wrk_figures(out: str) -> dict[str, float]:
    """Requests per second and non-2xx answers from wrk's text."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rps is None or total is None:
        raise BenchError(f"wrk said: {out}")
    return {
        "rps": round(float(rps.group(1))),
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_public_flood", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--dir", type=Path, help="demo store directory (made when missing)")
    p.add_argument("--holders", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    p.add_argument("--connections", type=int, default=40, help="wrk's connections")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--source", type=Path, default=ROOT, help="source tree of the responder run")
    p.add_argument("--route", action="append", help=f"a flooded route (repeat; {ROUTES})")
    p.add_argument("--out", type=Path, help="JSON results file")
    p.add_argument(
        "--serve-arg", action="append", default=[],
        help="one more argument of `responder serve` (repeat)",
    )  # fmt: skip
    args = p.parse_args(argv)
    routes = args.route or list(ROUTES)
    phases: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-public-flood-") as tmp:
        work = Path(tmp)
        d: Path = args.dir or work / "demo"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "registry.toml").exists() or not (d / "store" / "data.mdb").exists():
            with open(os.devnull, "w") as quiet:
                saved, sys.stdout = sys.stdout, quiet
                try:
                    prepare(d, args.holders, 7)
                finally:
                    sys.stdout = saved
        path = get_path(d)
        token = (d / "pki" / "parties" / "both-verifier.token").read_text().strip()
        source = args.source.resolve()
        env = {**os.environ, "PYTHONPATH": str(source)}
        serve = [sys.executable, "-m", "responder.cli", "serve", "--store", str(d / "store"),
                 "--pki", str(d / "pki"), "--registry", str(d / "registry.toml"), "--port", "0",
                 "--workers", str(args.workers), "--log-level", "warning", "--access-log", "off",
                 "--ledger-dir", str(work / "ledger"), "--no-metrics", *args.serve_arg]  # fmt: skip
        with started(serve, log=work / "responder.log", cwd=source, env=env, grace=20) as proc:
            url = wait_line(proc, r"(listening on \S+)", 60).split()[2]
            host, port = url.removeprefix("http://").rsplit(":", 1)
            print(f"responder from {source}, --workers {args.workers}; party both-verifier "
                  f"(cached GET every 1 ms), wrk -t1 -c{args.connections}", flush=True)  # fmt: skip
            party(host, int(port), token, path, 1.0)  # warm: the answer cached in each worker
            phases["none"] = {"party": party(host, int(port), token, path, args.seconds)}
            print(f"  no flood: {phases['none']}", flush=True)
            for route in routes:
                wrk = subprocess.Popen(
                    ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 1:.0f}s",
                     f"{url}{route}"],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                time.sleep(0.5)  # the flood is under way
                victim = party(host, int(port), token, path, args.seconds)
                out, _ = wrk.communicate(timeout=args.seconds + 60)
                phases[route] = {"party": victim, "flood": wrk_figures(out)}
                print(f"  {route}: {phases[route]}", flush=True)
    result = {
        "source": str(source),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "serve_args": args.serve_arg,
        "phases": phases,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
