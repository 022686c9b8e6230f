"""Fresh-signing fairness: one party floods nonce requests, another party's fresh answers are timed.

    python -m bench.bench_fairness [--dir DIR] [--seconds 8] [--connections 32] [--workers 2]
                                   [--source SRC] [--serve-arg=--sign-threads=1 ...]
                                   [--out bench/results/fairness.json]

Issue 10, item 6: a party whose agreement sets no quota could force unbounded RSA work
(a new nonce in every request makes every answer a fresh signature), and the other
parties' fresh answers waited behind its queue. This starts ``responder serve``
(``--workers 2``, loopback, from the source tree ``SRC``, the repository by default,
so that another checkout can be measured the same way) on a demo store (made with
`crlbuilder.demo.prepare` when ``DIR`` has none), then:

1. baseline: ``both-verifier`` alone sends one OCSP request with a new nonce every
   20 ms for ``--seconds`` (sequential, one keep-alive connection) and its latencies
   are kept;
2. flood: ``sig-verifier`` (no quota in the demo registry) floods nonce requests on
   ``--connections`` keep-alive connections from another process (closed loop, one
   request in flight per connection), while ``both-verifier`` does as in 1.

With ``--flood-kind public-metrics`` or ``admin-metrics`` the flooder sends
unauthenticated ``GET /metrics`` instead, on the public port or on the admin listener
(issue 10, item 5; metrics are on for these runs, off for ``sign``).

Printed and written as JSON: the victim's p50/p99/max and statuses in both phases,
the flooder's answers per second by OCSP status (``sign``: successful are fresh
signatures) or by HTTP status (metrics). Bounded: each phase stops after ``--seconds``. On a shared
machine the figures move with the other jobs: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
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
PLACEHOLDER: Final = b"\xa5" * 16
"""The nonce of the template request; each request gets 16 random bytes in its place."""
STATUS_NAMES: Final = {0: "successful", 1: "malformedRequest", 2: "internalError",
                       3: "tryLater", 5: "sigRequired", 6: "unauthorized"}  # fmt: skip


def template_request(d: Path) -> bytes:
    """An OCSP request (SHA-1 CertID, a nonce) for a good sign-card certificate."""
    pop = d / "population"
    for line in (pop / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line, type=Answer)
        if a.status is CertStatus.GOOD and a.family is Family.SIGN_CARD:
            cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
            issuer = x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes())
            b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
            b = b.add_extension(x509.OCSPNonce(PLACEHOLDER), critical=False)
            der = b.build().public_bytes(serialization.Encoding.DER)
            if der.count(PLACEHOLDER) != 1:
                raise BenchError("the nonce placeholder is not unique in the request")
            return der
    raise BenchError("no good sign-card sample in answers.jsonl")


def fresh(template: bytes) -> bytes:
    return template.replace(PLACEHOLDER, os.urandom(16))


def ocsp_status(der: bytes) -> int:
    """responseStatus of an OCSPResponse (SEQUENCE { ENUMERATED, ... })."""
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    if der[i : i + 2] != b"\x0a\x01":
        raise BenchError("not an OCSPResponse")
    return der[i + 2]


def http_request(host: str, token: str, body: bytes) -> bytes:
    return (
        b"POST /ocsp HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/ocsp-request\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


# -- the flooder (its own process) ------------------------------------------------------------


async def _flood_one(host: str, port: int, token: str, template: bytes, until: float,
                     counts: dict[str, int], scrape: bool, interval: float) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    get = b"GET /metrics HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
    due = time.monotonic()
    try:
        while time.monotonic() < until:
            if interval:  # paced: one request per interval on this connection
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(get if scrape else http_request(host, token, fresh(template)))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if scrape:
                key = "http-" + head.split(b" ", 2)[1].decode()
            else:
                key = STATUS_NAMES.get(ocsp_status(body), "other") if length else "http-error"
            counts[key] = counts.get(key, 0) + 1
    finally:
        writer.close()


def flood(args: argparse.Namespace) -> int:
    host, port = args.flood.rsplit(":", 1)
    token = Path(args.token_file).read_text().strip()
    template = Path(args.body_file).read_bytes()
    counts: dict[str, int] = {}

    async def run() -> float:
        t0 = time.monotonic()
        until = t0 + args.seconds
        await asyncio.gather(
            *(_flood_one(host, int(port), token, template, until, counts, args.scrape,
                         args.connections / args.rate if args.rate else 0.0)
              for _ in range(args.connections))
        )  # fmt: skip
        return time.monotonic() - t0

    elapsed = asyncio.run(run())
    Path(args.out).write_text(json.dumps({"seconds": elapsed, "counts": counts}))
    return 0


# -- the victim (this process) -----------------------------------------------------------------


def victim(host: str, port: int, token: str, template: bytes, seconds: float) -> dict[str, object]:
    """Nonce requests every 20 ms for ``seconds``: latencies (ms) and statuses."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}"}
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            body = fresh(template)
            t0 = time.perf_counter()
            conn.request("POST", "/ocsp", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            key = STATUS_NAMES.get(ocsp_status(data), "other") if r.status == 200 else str(r.status)
            statuses[key] = statuses.get(key, 0) + 1
            time.sleep(0.02)
    finally:
        conn.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "max_ms": round(latencies[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_fairness", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--dir", type=Path, help="demo store directory (made when missing)")
    p.add_argument("--holders", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    p.add_argument("--connections", type=int, default=32, help="the flooder's connections")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--source", type=Path, default=ROOT, help="source tree of the responder run")
    p.add_argument("--out", type=Path, help="JSON results file")
    p.add_argument(
        "--flood-kind",
        choices=("sign", "public-metrics", "admin-metrics"),
        default="sign",
        help="what the flooder sends: nonce requests, or GET /metrics on either port",
    )
    p.add_argument(
        "--rate", type=float, default=0.0,
        help="the flooder's requests per second over all its connections (0: as fast as answered)",
    )  # fmt: skip
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="one more argument of `responder serve` (repeat), e.g. --serve-arg=--sign-threads=1",
    )
    p.add_argument("--flood", help=argparse.SUPPRESS)  # internal: run as the flooder
    p.add_argument("--token-file", help=argparse.SUPPRESS)
    p.add_argument("--body-file", help=argparse.SUPPRESS)
    p.add_argument("--scrape", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flood:
        return flood(args)
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
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
        template = template_request(d)
        (work / "body.der").write_bytes(template)
        parties = d / "pki" / "parties"
        victim_token = (parties / "both-verifier.token").read_text().strip()
        source = args.source.resolve()
        env = {**os.environ, "PYTHONPATH": str(source)}
        serve = [sys.executable, "-m", "responder.cli", "serve", "--store", str(d / "store"),
                 "--pki", str(d / "pki"), "--registry", str(d / "registry.toml"), "--port", "0",
                 "--workers", str(args.workers), "--log-level", "warning", "--access-log", "off",
                 "--ledger-dir", str(work / "ledger"),
                 "--no-metrics" if args.flood_kind == "sign" else "--metrics", *args.serve_arg]  # fmt: skip
        with started(serve, log=work / "responder.log", cwd=source, env=env, grace=20) as proc:
            admin = args.flood_kind == "admin-metrics"
            ready = r"(listening on \S+\s+metrics on \S+)" if admin else r"(listening on \S+)"
            lines = wait_line(proc, ready, 60).split()
            host, port = lines[2].removeprefix("http://").rsplit(":", 1)
            target = lines[-1].removeprefix("http://")  # the admin listener, or the public port
            print(f"responder from {source}, --workers {args.workers}; victim both-verifier "
                  f"(nonce every 20 ms), flooder {args.flood_kind} ({args.connections} connections"
                  f" to {target})", flush=True)  # fmt: skip
            baseline = victim(host, int(port), victim_token, template, args.seconds)
            print(f"  baseline: {baseline}", flush=True)
            flood_out = work / "flood.json"
            flooder = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_fairness", "--flood", target,
                 "--token-file", str(parties / "sig-verifier.token"), "--body-file",
                 str(work / "body.der"), "--connections", str(args.connections),
                 "--seconds", str(args.seconds + 1), "--out", str(flood_out),
                 "--rate", str(args.rate),
                 *(["--scrape"] if args.flood_kind != "sign" else [])],
                cwd=ROOT,
            )  # fmt: skip
            time.sleep(0.5)  # the flood is under way
            under = victim(host, int(port), victim_token, template, args.seconds)
            flooder.wait(timeout=args.seconds + 60)
            flooded = json.loads(flood_out.read_text())
            secs = flooded["seconds"]
            rates = {k: round(v / secs, 1) for k, v in flooded["counts"].items()}
            print(f"  under flood: {under}", flush=True)
            print(f"  flooder answers per second: {rates}", flush=True)
    result = {
        "source": str(source),
        "workers": args.workers,
        "flood_kind": args.flood_kind,
        "flooder_connections": args.connections,
        "flooder_rate": args.rate,
        "seconds": args.seconds,
        "serve_args": args.serve_arg,
        "victim_baseline": baseline,
        "victim_under_flood": under,
        "flooder_per_second": rates,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
