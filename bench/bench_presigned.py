"""A worker's own work for a pre-signed (revoked) answer not in its answer cache, in process.

    python -m bench.bench_presigned --store-dir DIR [-n 20000] [--distinct 2000] [--callgrind]

``--distinct`` revoked certificates with a stored answer, asked in turn by GET (SHA-1 CertID,
no nonce) on one keep-alive connection to a worker whose answer cache is off
(``ocsp.good_cache_entries = 0``): every answer is read from the store and made from what it
stores (the stem and the signer's ``certs``, or, stored as its parts, the DER rebuilt by the
encoder that signed it, `responder.flow.presigned_der`). `bench.bench_hotpath` measures the
steady state instead (every answer cached after its first request). The same harness as
`bench.bench_hotpath` (its fake transport and loop, the app and HTTP server as deployed,
metrics and ledger on), the same two measures: CPU µs per answer (best of 5 rounds of ``-n``)
and, with ``--callgrind``, instructions per answer (runs of ``-n`` and ``5 * -n`` requests
under valgrind, the difference over the difference of requests). Run it against an earlier
tree's library with ``PYTHONPATH`` set to a copy holding that tree's ``crlbuilder`` and
``responder`` and this ``bench``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from bench.bench_distinct import build_requests, pick_set
from bench.bench_hotpath import (
    _small_map_under_valgrind,
    _token,
    counted_instructions,
    drive,
    make_worker,
    registry_dir,
)
from crlbuilder.store.lmdbstore import Store
from responder.flow import Answer
from responder.http import Request


def revoked_requests(store_dir: Path, distinct: int, token: str) -> list[tuple[bytes, bytes]]:
    """(OCSP request DER, raw HTTP GET) of ``distinct`` revoked certificates, every issuer."""
    store = Store.open(store_dir / "store", readonly=True)
    try:
        picks, _ = pick_set(store, distinct, 1.0, 0.0, 0.0, 1)
        with store.read() as r:
            certs = {m.index: x509.load_der_x509_certificate(m.cert_der) for m in r.issuers()}
    finally:
        store.close()
    auth = f"Authorization: Bearer {token}\r\n".encode()
    return [
        (q.der, b"GET " + q.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"\r\n")
        for q in build_requests(picks, certs)
    ]


def request_pairs(d: Path, distinct: int, token: str) -> list[tuple[bytes, bytes]]:
    """`revoked_requests`, made once per store and ``distinct`` and saved beside it: the
    callgrind runs read the same set (made before them, `callgrind`)."""
    saved = d / f"presigned-requests-{distinct}.json"
    if saved.exists():
        return [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in json.loads(saved.read_text())]
    pairs = revoked_requests(d, distinct, token)
    saved.write_text(json.dumps([(a.hex(), b.hex()) for a, b in pairs]))
    return pairs


def run(args: argparse.Namespace) -> float | None:
    d: Path = args.store_dir.resolve()
    work = registry_dir(d, "bench-presigned-")
    token = _token(d)
    pairs = request_pairs(d, args.distinct, token)
    app, srv = make_worker(d, work, 0)  # no answer cache: every answer from the store
    try:
        headers = {b"authorization": b"Bearer " + token.encode()}
        reqs = []
        for der, raw in pairs:  # those answered from a stored answer (not a compromised
            # issuer's without a successor, not one due and not yet re-signed)
            req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 0)
            got = app.ocsp.decide(der, req, time.time(), app.store, app.registry)
            if isinstance(got, Answer) and got.ready.presigned:
                reqs.append(raw)
        if len(reqs) < len(pairs) // 2:
            raise SystemExit(f"only {len(reqs)} of {len(pairs)} revoked answers are stored")
        t = drive(srv, reqs, len(reqs))
        if not t.last.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"get_revoked_cold: {t.last[:80]!r}")
        if args.count is not None:
            drive(srv, reqs, args.count)  # the measured part, under callgrind
            return None
        best = float("inf")
        for _ in range(5):
            c0 = time.process_time()
            drive(srv, reqs, args.n)
            best = min(best, time.process_time() - c0)
        us = round(best / int(args.n) * 1e6, 2)
        print(f"  get_revoked_cold {us:>7.2f} µs CPU per answer ({len(reqs)} distinct)")
        return us
    finally:
        app.close()
        shutil.rmtree(work, ignore_errors=True)


def callgrind(args: argparse.Namespace) -> int:
    """Instructions per answer (`bench.bench_hotpath.counted_instructions`)."""
    d: Path = args.store_dir.resolve()
    request_pairs(d, args.distinct, _token(d))  # made here, not in the first counted run
    argv = ["--store-dir", str(args.store_dir), "--distinct", str(args.distinct)]
    ir = counted_instructions("bench.bench_presigned", argv, int(args.n))
    print(f"  get_revoked_cold {ir:>9,} instructions per answer")
    return ir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-dir", type=Path, required=True, help="a bench_build --dir")
    p.add_argument("-n", type=int, default=20_000, help="requests per round (callgrind: base)")
    p.add_argument("--distinct", type=int, default=2000)
    p.add_argument("--callgrind", action="store_true", help="instructions per answer")
    p.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    _small_map_under_valgrind()
    if args.callgrind:
        result: dict[str, Any] = {"instructions_per_answer": callgrind(args)}
    else:
        result = {"cpu_us_per_answer": run(args)}
    if args.out is not None and args.count is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
