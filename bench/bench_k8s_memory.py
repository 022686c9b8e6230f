"""The responder container's memory, as a Kubernetes memory limit counts it (deploy/kubernetes).

    python -m bench.bench_build --holders 20000 --dir DIR      # a store (seconds)
    python -m bench.bench_k8s_memory --store-dir DIR --out bench/results/k8s_memory.json

A container's limit counts its processes' anonymous and shared (tmpfs) memory and the page
cache it charged; the kernel reclaims the page cache (the store's mapped pages among it)
before it kills, so what must fit under the limit is the rest. `responder serve` with
``--workers`` (2, as the manifest starts it) is asked every revoked serial picked (its
pre-signed answer) and more good serials than the good-answer cache holds (signed fresh,
cached until ``ocsp.good_cache_entries``), spread over the store, each once, by POST (``wrk
-t1 -c32`` keep-alive, `bench.bench_responder.lua_many`); then 8 s of requests with a fresh
nonce each (a signature every request). After start and after each load: each process's
own memory (`bench.bench_responder.memory_of`: private, the store's pages taken out), the
master's too, and the bytes in the metrics directory (a memory volume in the pod). Bounded:
every load by its count or seconds, every process stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from bench.bench_responder import (
    answer_signers,
    lua_many,
    lua_nonce,
    make_ctx,
    memory_of,
    ocsp_request,
    responder,
    run_wrk,
    spread_keys,
    verify_responder,
)
from bench.procs import children
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--store-dir", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--good", type=int, default=30_000, help="distinct good serials asked")
    p.add_argument("--revoked", type=int, default=20_000, help="distinct revoked serials asked")
    p.add_argument("--nonce-seconds", type=float, default=8.0)
    p.add_argument(
        "--responder", default=str(Path(__file__).resolve().parents[1] / ".venv/bin/responder")
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="k8s-memory-"))
    ctx = make_ctx(args.store_dir, work, seconds=10, connections=32, responder=args.responder,
                   budget=300, tool="bench_k8s_memory")  # fmt: skip
    store = Store.open(ctx.store_dir / "store", readonly=True)
    rng = random.Random(1)
    try:
        signers = answer_signers(ctx.manifest)
        rev = spread_keys(store, sf.DB_REVOKED, args.revoked, "revoked", signers, rng)
        good = spread_keys(store, sf.DB_STATUS, args.good, "good", signers, rng)
        with store.read() as r:
            issuers = {m.index: m for m in r.issuers()}
    finally:
        store.close()
    certs = {i: x509.load_der_x509_certificate(m.cert_der) for i, m in issuers.items()}
    bodies = [
        ocsp_request(certs[int.from_bytes(k[:2], "big")], int.from_bytes(k[2:], "big"))
        for k in (*rev, *good)
    ]
    rng.shuffle(bodies)
    store_file = (ctx.store_dir / "store" / "data.mdb").resolve()
    stages: list[dict[str, Any]] = []
    with responder(ctx, args.workers) as (url, proc):
        verify_responder(ctx, url)
        metrics = next(Path(work).glob("responder-w*/metrics"))
        pids = [proc.pid, *children(proc.pid)]

        def stage(name: str) -> None:
            mem = {pid: memory_of(pid, store_file) for pid in pids}
            total = sum(m["private_kib"] for m in mem.values())
            stages.append({
                "stage": name,
                "master_private_kib": mem[proc.pid]["private_kib"],
                "workers_private_kib": [mem[pid]["private_kib"] for pid in pids[1:]],
                "metrics_dir_bytes": _dir_bytes(metrics),
                "total_private_mib": round(total / 1024, 1),
                "detail": {str(k): v for k, v in mem.items()},
            })  # fmt: skip
            print(f"  {name}: master {mem[proc.pid]['private_kib'] >> 10} MiB, workers "
                  f"{[mem[pid]['private_kib'] >> 10 for pid in pids[1:]]} MiB, metrics dir "
                  f"{_dir_bytes(metrics) >> 10} KiB; total {total >> 10} MiB", flush=True)  # fmt: skip

        stage("after_start")
        done = work / "many.done"
        load = run_wrk(url, lua_many(work / "many.lua", bodies, ctx.headers, done), 600.0, 32,
                       until=done)  # fmt: skip
        stage("after_distinct_serials")
        nonce = lua_nonce(work / "nonce.lua", ctx.issuer_cert, ctx.good.serial, ctx.headers)
        signed = run_wrk(url, nonce, args.nonce_seconds, 32)
        stage("after_fresh_signing")
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workers": args.workers,
        "distinct": {
            "revoked": len(rev),
            "good": len(good),
            "requests": load.requests,
            "non_2xx": load.non_2xx,
        },
        "fresh_signing": {"requests": signed.requests, "seconds": signed.seconds},
        "stages": stages,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
