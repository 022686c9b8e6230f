"""Freshness: from a revocation record written into the spool to the first revoked answer.

    python -m bench.bench_freshness --holders 2000 --revocations 20

Builds a small population, then runs the real `crlbuilder build --follow` on
its spool and the real `responder serve` (2 workers) on the same store. For
each of N good certificates it drops one revocation record into the spool
(written, then renamed in, as an operator's feed would) and polls the
responder over several keep-alive connections (so both workers are asked)
until one answers revoked: that time is the record's arrival-to-answer
latency. After the first revoked answer every connection is asked again: a
good answer then is a freshness violation and is counted (the product
promises none). Prints and writes JSON with the median and maximum.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.x509 import ocsp

from bench.bench_responder import ocsp_request
from bench.procs import BenchError, started, wait_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
PARTY = "both-verifier"


def run(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise BenchError(f"{' '.join(args[:2])} failed: {out.stderr[-1500:]}")
    return out.stderr


def good_samples(pop: Path, n: int) -> list[tuple[str, str, int]]:
    """(issuer id, issuer certificate file, serial) of ``n`` certificates expected good."""
    out: list[tuple[str, str, int]] = []
    for line in (pop / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line)
        if a["status"] == "good" and a["case"] == "good":
            out.append((a["issuer"], a["issuer_cert"], int(a["serial"])))
            if len(out) == n:
                break
    if len(out) < n:
        raise BenchError(f"only {len(out)} good samples in answers.jsonl (asked for {n})")
    return out


def status(conn: http.client.HTTPConnection, body: bytes, token: str) -> ocsp.OCSPCertStatus:
    conn.request(
        "POST",
        "/ocsp",
        body,
        {"Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}"},
    )
    der = conn.getresponse().read()
    resp = ocsp.load_der_ocsp_response(der)
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise BenchError(f"responder answered {resp.response_status.name}")
    return resp.certificate_status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--holders", type=int, default=2000)
    p.add_argument("--revocations", type=int, default=20)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    p.add_argument(
        "--gap",
        type=float,
        default=3.0,
        help="seconds between revocations, so that each arrives at an idle builder (0: back to"
        " back, each then also waits for the previous file's presigning and CRLs)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "freshness.json")
    p.add_argument(
        "--bin",
        type=Path,
        default=BIN,
        help="directory of the crlbuilder and responder commands to measure (default: this"
        " venv's; another checkout's venv/bin measures that version the same way)",
    )
    args = p.parse_args(argv)
    cb, rs = str(args.bin / "crlbuilder"), str(args.bin / "responder")
    # versions before consents were checked against the registry have no --registry
    registry_flag = (
        "--registry"
        in subprocess.run(
            [cb, "build", "--help"], capture_output=True, text=True, check=False
        ).stdout
    )
    work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
    run(cb, "pki", "init", "--out", str(work / "pki"))
    run(cb, "synth", "--pki", str(work / "pki"), "--holders", str(args.holders),
        "--out", str(work / "pop"), "--seed", "3", "--as-of", as_of)  # fmt: skip
    run(cb, "facts-key", "--out", str(work / "facts.key"))
    run(rs, "registry", "init", "--pki", str(work / "pki"), "--out", str(work / "registry.toml"))
    spool = work / "spool"
    # the measured checkout's own example configuration (its fields are that version's)
    config = args.bin.resolve().parent.parent / "config" / "builder.toml"
    if not config.exists():
        config = ROOT / "config" / "builder.toml"
    flags = [
        "--config", str(config), "--store", str(work / "store"),
        "--pki", str(work / "pki"), "--facts-key-file", str(work / "facts.key"),
        "--quarantine", str(work / "quarantine.jsonl"), "--notices", str(work / "notices.jsonl"),
        "--crl-dir", str(work / "crl"), "--spool", str(spool), "--no-progress",
        *(["--registry", str(work / "registry.toml")] if registry_flag else []),
    ]  # fmt: skip
    run(cb, "build", *flags, "--input", str(work / "pop" / "records"), "--as-of", as_of)
    token = (work / "pki" / "parties" / f"{PARTY}.token").read_text().strip()
    samples = good_samples(work / "pop", args.revocations)
    issuers = {
        f: x509.load_pem_x509_certificate((work / "pop" / f).read_bytes())
        for f in {s[1] for s in samples}
    }
    spool.mkdir(exist_ok=True)
    latencies: list[float] = []
    violations = 0
    follow = [cb, "build", *flags, "--input", str(spool), "--follow", "--follow-interval", "0.05"]
    serve = [rs, "serve", "--store", str(work / "store"), "--pki", str(work / "pki"),
             "--registry", str(work / "registry.toml"), "--crl-dir", str(work / "crl"),
             "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--log-level", "warning",
             "--access-log", "off", "--ledger-dir", str(work / "ledger")]  # fmt: skip
    with (
        started(follow, log=work / "builder.log") as builder,
        started(serve, log=work / "responder.log") as server,
    ):
        url = wait_line(server, r"listening on (\S+)", 60)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conns = [
            http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(args.connections)
        ]
        for i, (issuer, issuer_file, serial) in enumerate(samples):
            time.sleep(args.gap)
            body = ocsp_request(issuers[issuer_file], serial)
            if any(status(c, body, token) is not ocsp.OCSPCertStatus.GOOD for c in conns):
                raise BenchError(f"sample {i} is not good before its revocation")
            record = {"type": "revocation-request", "id": f"fresh-{time.time_ns()}-{i}",
                      "recorded_at": datetime.now(UTC).isoformat(), "serial": serial,
                      "issuer": issuer, "reason": "application"}  # fmt: skip
            tmp = spool / f".incoming-{i}.tmp"
            tmp.write_bytes(msgspec.json.encode(record) + b"\n")
            t0 = time.monotonic()
            tmp.rename(spool / f"fresh-{i:04d}.jsonl")
            seen = False
            while not seen:
                for c in conns:
                    if status(c, body, token) is ocsp.OCSPCertStatus.REVOKED:
                        seen = True
                        break
                if time.monotonic() - t0 > args.timeout:
                    raise BenchError(f"sample {i} not revoked within {args.timeout} s")
            latencies.append(time.monotonic() - t0)
            for _ in range(3):
                violations += sum(status(c, body, token) is ocsp.OCSPCertStatus.GOOD for c in conns)
        for c in conns:
            c.close()
        if builder.poll() is not None:
            raise BenchError("the builder stopped during the run")
    ms = sorted(x * 1000 for x in latencies)
    result = {
        "bin": str(args.bin),
        "holders": args.holders,
        "revocations": len(ms),
        "connections": args.connections,
        "gap_seconds": args.gap,
        "spool_to_revoked_ms": {
            "median": round(statistics.median(ms), 1),
            "max": round(ms[-1], 1),
            "min": round(ms[0], 1),
        },
        "good_after_first_revoked": violations,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
