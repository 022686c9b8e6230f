"""Batch 現況確認 (POST /v1/status) of 10,000 certificates against single OCSP answers, same run.

    python -m bench.bench_v1_status [--holders 3000] [--calls 15] [--ocsp 2000]
                                    [--out bench/results/v1_status.json]

Builds a small demo population here (pki init, synth, build), starts ``responder serve``
with one worker and the access log on, and, over one keep-alive connection each:

- ``--calls`` batches of 10,000 entries by issuer and serial (every certificate of the
  store, repeated when there are fewer), as ``both-verifier`` (every family answered):
  the server time per call is the access log's ``duration_ms`` (from the request's
  first byte to the answer's handing to the transport: decode, 10,000 lookups, encode,
  JWS), goal < 50 ms; entries/s = 10,000 / the client's wall time per call;
- ``--ocsp`` single OCSP requests (one CertID, SHA-1, no nonce) for the first of the same
  certificates, after a warm-up pass that fills the good-answer cache (the steady state
  of a responder): answers/s = requests / the client's wall time, and the access log's
  server time per request; then the same single requests again while another connection
  sends batches without pause: their client latency alone and during the batches (p50,
  p99), what the batch thread is for.

Then, in process (no socket, no client on the same cores), the CPU time of one worker's
``JpkiApp.handle`` for the same batch (best and median of ``--calls``): what a call costs
the server when the machine is not shared, split into decoding, the handler (10,000
lookups), encoding and the JWS.

The machine is shared (2 cores, eight people): the wall-clock figures swing with its load
(reported as ``load_average``); both are measured back to back in one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procs import stop, wait_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
ENTRIES = 10_000


def build(work: Path, holders: int) -> None:
    cb, rs = str(BIN / "crlbuilder"), str(BIN / "responder")
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run(cb, "pki", "init", "--out", str(work / "pki"))
    run(cb, "synth", "--pki", str(work / "pki"), "--holders", str(holders), "--out",
        str(work / "pop"), "--as-of", as_of)  # fmt: skip
    run(cb, "facts-key", "--out", str(work / "fk"))
    run(rs, "registry", "init", "--pki", str(work / "pki"), "--out", str(work / "registry.toml"))
    run(cb, "build", "--config", str(ROOT / "config" / "builder.toml"), "--store", str(work / "store"),
        "--pki", str(work / "pki"), "--input", str(work / "pop" / "records"), "--facts-key-file",
        str(work / "fk"), "--quarantine", str(work / "q"), "--notices", str(work / "n"),
        "--crl-dir", str(work / "crl"), "--registry", str(work / "registry.toml"),
        "--as-of", as_of, "--no-progress")  # fmt: skip


def certificates(work: Path) -> list[tuple[str, int, bytes]]:
    """(issuer id, serial, issuer certificate DER) of every certificate in the store."""
    from crlbuilder.store import format as sf
    from crlbuilder.store.lmdbstore import Store

    store = Store.open(work / "store", readonly=True)
    try:
        with store.read() as reader:
            issuers = {i.index: i for i in reader.issuers()}
            out = []
            for key, _ in reader.statuses():
                index, serial = sf.split_status_key(key)
                meta = issuers[index]
                out.append((meta.id, serial, meta.cert_der))
            return out
    finally:
        store.close()


def ocsp_request(issuer_der: bytes, serial: int) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from crlbuilder.ocsp.response import issuer_hashes

    issuer = x509.load_der_x509_certificate(issuer_der)
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def server_ms(log: Path, endpoint: str, skip: int) -> list[float]:
    """``duration_ms`` of the access log's lines of ``endpoint`` with status 200, after ``skip``."""
    out = []
    for line in log.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if (
            obj.get("event") == "request"
            and obj.get("endpoint") == endpoint
            and obj.get("http_status") == 200
        ):
            out.append(float(obj["duration_ms"]))
    return out[skip:]


def cpu_ms(fn: Callable[[], object], n: int) -> dict[str, float]:
    """CPU milliseconds of ``fn()``: best and median of ``n`` calls."""
    times = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return {"min": round(min(times), 2), "median": round(statistics.median(times), 2)}


def in_process(work: Path, body: bytes, token: str, n: int) -> dict[str, dict[str, float]]:
    """CPU time of the whole ``JpkiApp.handle`` of the batch, and of its parts."""
    import msgspec

    from responder.app import JpkiApp
    from responder.config import load_config
    from responder.http import Request, Response
    from responder.v1 import status
    from responder.v1.route import Context

    cfg = load_config(None, {"store.path": str(work / "store"), "store.pki": str(work / "pki"),
                             "registry.path": str(work / "registry.toml"),
                             "ledger.dir": str(work / "ledger-in-process"), "server.workers": 1,
                             "metrics.enabled": False})  # fmt: skip
    app = JpkiApp(cfg, 0)
    app.v1.pool = None  # no event loop here: the same work, on this thread
    try:
        headers = {
            b"content-type": b"application/json",
            b"authorization": f"Bearer {token}".encode(),
        }
        req = lambda: Request(b"POST", b"/v1/status", headers, body, ("127.0.0.1", 1), None,  # noqa: E731
                              b"1.1", True, 1)  # fmt: skip
        for _ in range(2):
            assert app.handle(req()).status == 200  # type: ignore[union-attr]
        party = app.registry.by_token(token.encode())
        assert party is not None and app.v1.signer is not None
        decoder = msgspec.json.Decoder(status.StatusRequest)
        decoded = decoder.decode(body)
        index = status.IssuerIndex()

        def handler() -> status.StatusResponse:
            with app.store.read() as reader:
                got = status.handle(decoded, Context(party, reader, time.time(), index))
            assert not isinstance(got, status.Problem)
            return got.body

        def written() -> None:  # the call as the HTTP layer answers it: counted as written
            resp = app.handle(req())
            assert isinstance(resp, Response) and resp.provision is not None
            resp.provision.sent()

        answer = handler()
        out = msgspec.json.encode(answer)
        signer = app.v1.signer
        return {
            "handle": cpu_ms(written, n),
            "decode": cpu_ms(lambda: decoder.decode(body), n),
            "handler": cpu_ms(handler, n),
            "encode": cpu_ms(lambda: msgspec.json.encode(answer), n),
            "jws": cpu_ms(lambda: signer.sign(out), n),
        }
    finally:
        app.close()


def latency(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 3),
        "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(sorted(values)[int(0.9 * (len(values) - 1))], 3),
        "min": round(min(values), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--holders", type=int, default=3000)
    p.add_argument("--calls", type=int, default=15)
    p.add_argument("--ocsp", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "v1_status.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jpki-bench-v1-"))
    build(work, args.holders)
    certs = certificates(work)
    refs = [{"issuer": i, "serial": f"{s:x}"} for i, s, _ in certs]
    refs = (refs * (ENTRIES // len(refs) + 1))[:ENTRIES]
    body = json.dumps({"entries": refs}).encode()
    token = (work / "pki" / "parties" / "both-verifier.token").read_text().strip()
    log = work / "serve.log"
    args_ = [
        str(BIN / "responder"), "serve", "--store", str(work / "store"), "--pki", str(work / "pki"),
        "--registry", str(work / "registry.toml"), "--crl-dir", str(work / "crl"), "--port", "0",
        "--workers", "1", "--ledger-dir", str(work / "ledger"), "--no-metrics", "--access-log", "all",
    ]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(args_, stdout=subprocess.PIPE, stderr=err)
    try:
        url = wait_line(proc, r"listening on (\S+)", 60).split()[-1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        batch_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        wall: list[float] = []
        for i in range(args.calls + 1):  # the first call warms the worker up (not counted)
            t0 = time.perf_counter()
            conn.request("POST", "/v1/status", body, batch_headers)
            r = conn.getresponse()
            data = r.read()
            if i:
                wall.append((time.perf_counter() - t0) * 1000)
            assert r.status == 200, data[:300]
            assert r.getheader("JWS-Signature")
        answer: dict[str, Any] = json.loads(data)
        statuses: dict[str, int] = {}
        for e in answer["entries"]:
            statuses[e["status"]] = statuses.get(e["status"], 0) + 1
        ocsp_bodies = [ocsp_request(der, s) for _, s, der in certs[: args.ocsp]]
        ocsp_headers = {
            "Content-Type": "application/ocsp-request",
            "Authorization": f"Bearer {token}",
        }
        for der in ocsp_bodies:  # warm-up: sign and cache the good answers
            conn.request("POST", "/ocsp", der, ocsp_headers)
            conn.getresponse().read()
        alone: list[float] = []
        t0 = time.perf_counter()
        for der in ocsp_bodies:
            t1 = time.perf_counter()
            conn.request("POST", "/ocsp", der, ocsp_headers)
            r = conn.getresponse()
            r.read()
            alone.append((time.perf_counter() - t1) * 1000)
            assert r.status == 200
        ocsp_wall = time.perf_counter() - t0
        # mixed: batches on a second connection while single OCSP answers are timed here
        stop_batches = threading.Event()
        batches_done = [0]

        def batches() -> None:
            other = http.client.HTTPConnection(host, int(port), timeout=60)
            while not stop_batches.is_set():
                other.request("POST", "/v1/status", body, batch_headers)
                other.getresponse().read()
                batches_done[0] += 1
            other.close()

        feeder = threading.Thread(target=batches, daemon=True)
        feeder.start()
        time.sleep(0.2)
        mixed: list[float] = []
        for der in ocsp_bodies:
            t1 = time.perf_counter()
            conn.request("POST", "/ocsp", der, ocsp_headers)
            conn.getresponse().read()
            mixed.append((time.perf_counter() - t1) * 1000)
        stop_batches.set()
        feeder.join(60)
        conn.close()
        time.sleep(0.5)  # the last access log lines reach the file
    finally:
        stop(proc)
    cpu = in_process(work, body, token, args.calls)
    batch_server = server_ms(log, "v1-status", 1)
    ocsp_server = server_ms(log, "ocsp", len(ocsp_bodies))
    wall_s = statistics.median(wall) / 1000
    results = {
        "entries": ENTRIES,
        "distinct_certificates": min(len(certs), ENTRIES),
        "body_bytes": len(body),
        "answer_bytes": len(data),
        "statuses": statuses,
        "batch_server_ms": summary(batch_server),
        "batch_client_ms": summary(wall),
        "batch_entries_per_s": round(ENTRIES / wall_s),
        "ocsp_requests": len(ocsp_bodies),
        "ocsp_server_ms": summary(ocsp_server),
        "ocsp_answers_per_s": round(len(ocsp_bodies) / ocsp_wall),
        "ocsp_client_ms_alone": latency(alone),
        "ocsp_client_ms_during_batches": latency(mixed),
        "batches_during_mixed": batches_done[0],
        "batch_server_cpu_ms": cpu,
        "load_average": list(os.getloadavg()),
        "goal_server_ms": 50,
        "goal_met_wall": statistics.median(batch_server) < 50,
        "goal_met_cpu": cpu["handle"]["median"] < 50,
        "note": "one worker, one keep-alive client connection each, same run, shared 2-core machine",
    }
    results["batch_vs_ocsp_entries_per_s"] = round(
        results["batch_entries_per_s"] / results["ocsp_answers_per_s"], 1
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
