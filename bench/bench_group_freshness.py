"""Group freshness: from a revocation recorded at the 機構 to a member's revoked answer from its group.

    python -m bench.bench_group_freshness --holders 2000 --revocations 10 --cycle 2

Two appliances on loopback, every part the real command: the 機構's (`crlbuilder build
--follow` on its spool, `responder serve` with its CRL files) and a group's (団体署名検証者,
set up by `crlbuilder group init` from the 機構's /ca/, fed by `crlbuilder group pull
--follow` at a ``--cycle`` of seconds, `responder serve` in group mode). For each of N
good sign certificates one revocation record is dropped into the 機構's spool; member-1
then asks its group (OCSP, bearer token) until the answer is revoked: that time is the
record-to-member latency. The goal is the cycle plus one second (the 機構's delta CRL is
produced within a second of the record, bench_freshness; the pull fetches it at its next
pass, at most a cycle later). Prints and writes JSON with the median and maximum.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.x509 import ocsp

from bench.bench_freshness import run, status
from bench.bench_responder import ocsp_request
from bench.procs import BenchError, started, wait_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
GROUP, MEMBER = "group-verifier", "member-1"


def sign_samples(pop: Path, n: int) -> list[tuple[str, str, int]]:
    """(issuer id, issuer certificate file, serial) of ``n`` signature certificates expected
    good (a group answers about signature certificates only, Act §20(1))."""
    out = []
    for line in (pop / "answers.jsonl").read_bytes().splitlines():
        a = msgspec.json.decode(line)
        if a["status"] == "good" and a["case"] == "good" and a["family"].startswith("sign-"):
            out.append((a["issuer"], a["issuer_cert"], int(a["serial"])))
    if len(out) < n:
        raise BenchError(f"only {len(out)} good sign samples in answers.jsonl (asked for {n})")
    return out[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--holders", type=int, default=2000)
    p.add_argument("--revocations", type=int, default=10)
    p.add_argument("--cycle", type=int, default=2, help="the group's pull cycle, seconds")
    p.add_argument("--gap", type=float, default=1.5, help="seconds between revocations")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "group_freshness.json")
    args = p.parse_args(argv)
    cb, rs = str(BIN / "crlbuilder"), str(BIN / "responder")
    work = Path(tempfile.mkdtemp(prefix="bench-group-freshness-"))
    pki = work / "pki"
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
    run(cb, "pki", "init", "--out", str(pki))
    run(cb, "synth", "--pki", str(pki), "--holders", str(args.holders),
        "--out", str(work / "pop"), "--seed", "3", "--as-of", as_of)  # fmt: skip
    run(cb, "facts-key", "--out", str(work / "facts.key"))
    run(rs, "registry", "init", "--pki", str(pki), "--out", str(work / "registry.toml"))
    spool = work / "spool"
    flags = [
        "--config", str(ROOT / "config" / "builder.toml"), "--store", str(work / "store"),
        "--pki", str(pki), "--facts-key-file", str(work / "facts.key"),
        "--quarantine", str(work / "quarantine.jsonl"), "--notices", str(work / "notices.jsonl"),
        "--crl-dir", str(work / "crl"), "--spool", str(spool), "--no-progress",
        "--registry", str(work / "registry.toml"),
    ]  # fmt: skip
    run(cb, "build", *flags, "--input", str(work / "pop" / "records"), "--as-of", as_of)
    spool.mkdir(exist_ok=True)
    samples = sign_samples(work / "pop", args.revocations)
    issuers = {
        f: x509.load_pem_x509_certificate((work / "pop" / f).read_bytes())
        for f in {s[1] for s in samples}
    }
    follow = [cb, "build", *flags, "--input", str(spool), "--follow", "--follow-interval", "0.05"]
    kikou = [rs, "serve", "--store", str(work / "store"), "--pki", str(pki),
             "--registry", str(work / "registry.toml"), "--crl-dir", str(work / "crl"),
             "--port", "0", "--workers", "2", "--log-level", "warning", "--metrics-port", "0",
             "--ledger-dir", str(work / "ledger")]  # fmt: skip
    g = work / "group"
    token = (pki / "parties" / f"{MEMBER}.token").read_text().strip()
    latencies: list[float] = []
    with started(follow, log=work / "builder.log"), started(kikou, log=work / "kikou.log") as k:
        kikou_url = wait_line(k, r"listening on (\S+)", 60)
        run(cb, "group", "init", "--out", str(g), "--authority", kikou_url, "--group-id", GROUP,
            "--token-file", str(pki / "parties" / f"{GROUP}.token"), "--cycle", str(args.cycle),
            "--responder-cert", str(pki / "tls" / "group-responder.pem"),
            "--responder-key", str(pki / "tls" / "group-responder.key"), "--port", "0",
            "--metrics-port", "0", "--name", "bench group", "--address", "a",
            "--representative", "r", "--office", "o", "--group-kind", "1",
            "--member-prefix", "member-", "--liability", "l", "--member-answer", "m")  # fmt: skip
        run(rs, "registry", "add", "--registry", str(g / "registry.toml"), "--id", MEMBER,
            "--name", "bench member", "--title", "signature-confirmer", "--group", GROUP,
            "--token-sha256", hashlib.sha256(token.encode()).hexdigest())  # fmt: skip
        run(cb, "group", "pull", "--group", str(g))
        pull = [cb, "group", "pull", "--group", str(g), "--follow"]
        serve = [rs, "serve", "--config", str(g / "responder.toml"), "--workers", "2",
                 "--log-level", "warning"]  # fmt: skip
        with started(pull, log=work / "pull.log"), started(serve, log=work / "group.log") as s:
            url = wait_line(s, r"listening on (\S+)", 60)
            host, port = url.removeprefix("http://").rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            for i, (issuer, issuer_file, serial) in enumerate(samples):
                time.sleep(args.gap)
                body = ocsp_request(issuers[issuer_file], serial)
                if status(conn, body, token) is not ocsp.OCSPCertStatus.GOOD:
                    raise BenchError(f"sample {i} is not good before its revocation")
                record = {"type": "revocation-request", "id": f"group-{time.time_ns()}-{i}",
                          "recorded_at": datetime.now(UTC).isoformat(), "serial": serial,
                          "issuer": issuer, "reason": "application"}  # fmt: skip
                tmp = spool / f".incoming-{i}.tmp"
                tmp.write_bytes(msgspec.json.encode(record) + b"\n")
                t0 = time.monotonic()
                tmp.rename(spool / f"group-{i:04d}.jsonl")
                while status(conn, body, token) is not ocsp.OCSPCertStatus.REVOKED:
                    if time.monotonic() - t0 > args.timeout:
                        raise BenchError(f"sample {i} not revoked within {args.timeout} s")
                    time.sleep(0.02)
                latencies.append(time.monotonic() - t0)
            conn.close()
    ms = sorted(x * 1000 for x in latencies)
    result = {
        "holders": args.holders,
        "revocations": len(ms),
        "cycle_seconds": args.cycle,
        "goal_ms": (args.cycle + 1) * 1000,
        "record_to_member_ms": {
            "median": round(statistics.median(ms), 1),
            "max": round(ms[-1], 1),
            "min": round(ms[0], 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
