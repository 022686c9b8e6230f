"""What enforcing agreements and keeping the ledger cost per request, in-process.

    python -m bench.bench_agreements [--out bench/results/agreements.json]

Times, per OCSP request, the three steps the agreements add to the hot path
(`policy.decide`, the shared quota table's `admit`, the ledger's `count`)
against the whole per-request work of a worker answering from a stored
answer (`JpkiApp.handle` on a parsed request, without the socket), on a small
store built here. Wall-clock load tests on this shared 2-core machine swing
by tens of percent between runs (bench/README.md), too much to resolve a
few percent; CPU time in-process is stable, and the ratio is the share of a
worker's user-space work per request.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def per_call(fn: object, n: int) -> float:
    """CPU µs per call of ``fn()`` (best of 5 rounds of ``n``)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "agreements.json")
    p.add_argument("-n", type=int, default=20_000)
    args = p.parse_args()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import load_pem_x509_certificate, ocsp

    from crlbuilder.model import CertStatus, Family
    from responder import policy
    from responder.app import JpkiApp
    from responder.config import load_config
    from responder.http import Request
    from responder.registry.vocabulary import Method

    work = Path(tempfile.mkdtemp(prefix="jpki-bench-agr-"))
    cb, rs = str(BIN / "crlbuilder"), str(BIN / "responder")
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
    subprocess.run([cb, "pki", "init", "--out", str(work / "pki")], check=True, capture_output=True)
    subprocess.run([cb, "synth", "--pki", str(work / "pki"), "--holders", "500", "--out", str(work / "pop"),
                    "--as-of", as_of], check=True, capture_output=True)  # fmt: skip
    subprocess.run([cb, "facts-key", "--out", str(work / "fk")], check=True, capture_output=True)
    subprocess.run([rs, "registry", "init", "--pki", str(work / "pki"), "--out", str(work / "registry.toml")],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([cb, "build", "--config", str(ROOT / "config" / "builder.toml"), "--store", str(work / "store"),
                    "--pki", str(work / "pki"), "--input", str(work / "pop" / "records"), "--facts-key-file",
                    str(work / "fk"), "--quarantine", str(work / "q"), "--notices", str(work / "n"),
                    "--crl-dir", str(work / "crl"), "--registry", str(work / "registry.toml"),
                    "--as-of", as_of, "--no-progress"],
                   check=True, capture_output=True)  # fmt: skip
    cfg = load_config(None, {"store.path": str(work / "store"), "store.pki": str(work / "pki"),
                             "registry.path": str(work / "registry.toml"), "ledger.dir": str(work / "ledger"),
                             "server.workers": 1, "metrics.enabled": False})  # fmt: skip
    app = JpkiApp(cfg, 0)
    answers = [
        json.loads(line) for line in (work / "pop" / "answers.jsonl").read_text().splitlines()
    ]
    a = next(
        x for x in answers if x["status"] == CertStatus.REVOKED.value and x["family"] == "sign-card"
    )
    cert = load_pem_x509_certificate((work / "pop" / a["cert"]).read_bytes())
    issuer = load_pem_x509_certificate((work / "pop" / a["issuer_cert"]).read_bytes())
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    token = (work / "pki" / "parties" / "sig-verifier.token").read_text().strip().encode()
    headers = {b"content-type": b"application/ocsp-request", b"authorization": b"Bearer " + token}
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)
    resp = app.handle(req)
    assert getattr(resp, "status", None) == 200, resp
    party = app.registry.by_token(token)
    assert party is not None
    svc = policy.service_for_ocsp(Family.SIGN_CARD)
    now = time.time()
    results = {
        "request_total_us": per_call(lambda: app.handle(req), args.n),
        "policy_decide_us": per_call(
            lambda: policy.decide(
                party, service=svc, family=Family.SIGN_CARD, method=Method.OCSP, now=now
            ),
            args.n,
        ),
        "quota_admit_us": per_call(lambda: app.limits.admit(party, now), args.n),
        "ledger_count_us": per_call(
            lambda: app.ledger.count(party.id, svc, Method.OCSP, 1), args.n
        ),
    }
    added = results["policy_decide_us"] + results["quota_admit_us"] + results["ledger_count_us"]
    results["added_us"] = added
    results["share_of_request_work"] = added / results["request_total_us"]
    results["note"] = (
        "CPU µs per call, best of 5; request_total_us is JpkiApp.handle for a stored revoked answer "
        "(parse, authenticate, decide, quota, store read, ledger) without the HTTP layer and kernel; "
        "party without quotas (admit returns at once) — see quota_admit_with_quota_us"
    )
    from responder.registry.party import Party

    limited = Party(id=party.id, name=party.name, titles=party.titles, families=party.families, auth=party.auth,
                    cert_public_keys=(), requests_per_second=10**9, requests_per_day=10**12)  # fmt: skip
    results["quota_admit_with_quota_us"] = per_call(lambda: app.limits.admit(limited, now), args.n)
    # the agreed provisions per day (件数), taken per answer for a party whose agreement
    # bounds them; a party without the field is the request_total_us above
    bounded = Party(id=party.id, name=party.name, titles=party.titles, families=party.families, auth=party.auth,
                    cert_public_keys=(), provisions_per_day=10**15)  # fmt: skip
    results["provisions_take_with_bound_us"] = per_call(
        lambda: app.limits.take_provisions(bounded, 1, now), args.n
    )
    app.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
