"""Time `crlbuilder import-crl` on a large CRL (失効情報ファイル) into a fresh status store.

    python -m bench.bench_import --entries 1000000 --out FILE.json

Builds a demo PKI (`crlbuilder.demo.pki.init_pki`), encodes one full CRL of
``--entries`` entries for ``sign-card-g1`` with `crlbuilder.crl.encode.encode_crl`
(ascending random serials, mixed reasons), writes it to a file, then times,
each in its own fresh process state but the same store:

1. ``first``: the import of that file into a fresh store (read, parse, issuer
   match, signature check, one write transaction, commit): the figure the
   goal is about (1,000,000 entries in under 10 s);
2. ``again``: the same CRL again (already imported: parse and verify only);
3. ``next``: the next full CRL with 1% of the entries removed and 1% added
   (the merge walk over the stored range);
4. ``delta``: a delta CRL of 1% of the entries on top.

Prints the JSON result and writes it to ``--out``. Everything lives in a
temporary directory removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crlbuilder.crl.encode import encode_crl
from crlbuilder.crl.importer import CrlImporter, ImportResult
from crlbuilder.demo.pki import init_pki
from crlbuilder.keys.signer import PemSigner
from crlbuilder.manifest import Manifest
from crlbuilder.store.lmdbstore import Store

GOAL_SECONDS = 10.0
ISSUER = "sign-card-g1"
REASONS = (0, 1, 1, 3, 3, 3, 4, 4, 5, 5)


def _entries(n: int, seed: int, start: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    serial = 1 << 40
    out = []
    for k in range(n):
        serial += rng.randint(1, 4000)
        out.append((serial, start + k * 17, rng.choice(REASONS)))
    return out


def _crl(
    manifest: Manifest,
    number: int,
    entries: list[tuple[int, int, int]],
    this_update: datetime,
    delta_base: int | None = None,
) -> bytes:
    files = manifest.issuer(ISSUER)
    signer = PemSigner.from_files(manifest.path(files.key), manifest.path(files.cert))
    return encode_crl(
        issuer=signer.certificate,
        signer=signer,
        number=number,
        this_update=this_update,
        next_update=this_update + timedelta(days=1),
        entries=entries,
        delta_base=delta_base,
    )


def _timed_import(
    store_dir: Path, manifest: Manifest, path: Path, as_of: datetime
) -> tuple[ImportResult, float, float]:
    """Open the store, import one file, close: (result, wall seconds, CPU seconds)."""
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    store = Store.open(store_dir, readonly=False)
    try:
        result = CrlImporter(store, manifest).import_source(str(path), as_of=as_of)
    finally:
        store.close()
    return result, time.perf_counter() - t0, time.process_time() - c0


def _row(result: ImportResult, seconds: float, cpu: float, size: int) -> dict[str, Any]:
    row = result.as_dict()
    row.pop("event")
    row["seconds"] = round(seconds, 3)
    row["cpu_seconds"] = round(cpu, 3)
    row["crl_bytes"] = size
    row["entries_per_second"] = round(result.entries / seconds) if seconds else None
    return row


def run(n: int, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    manifest = init_pki(work / "pki")
    pki_seconds = time.perf_counter() - t0
    now = datetime.now(UTC).replace(microsecond=0)
    this_update = now - timedelta(minutes=5)
    start = int((now - timedelta(days=3 * 365)).timestamp())

    entries = _entries(n, 1, start)
    t0 = time.perf_counter()
    full = _crl(manifest, 100, entries, this_update)
    encode_seconds = time.perf_counter() - t0
    full_path = work / "full-100.crl"
    full_path.write_bytes(full)

    rng = random.Random(2)
    churn = max(1, n // 100)
    serials = {e[0] for e in entries}
    kept = sorted(rng.sample(entries, n - churn)) if n > churn else []
    added = {(s + 1, start + 5, 1) for s, _, _ in rng.sample(entries, min(churn, n))}
    nxt = sorted(kept + [e for e in added if e[0] not in serials])
    next_path = work / "full-101.crl"
    next_path.write_bytes(_crl(manifest, 101, nxt, this_update + timedelta(minutes=1)))
    delta_entries = sorted(
        {
            s: (s, t, 8 if k % 3 == 0 else 4)
            for k, (s, t, _) in enumerate(rng.sample(nxt, min(churn, len(nxt))))
        }.values()
    )
    delta_path = work / "delta-102.crl"
    delta_path.write_bytes(
        _crl(manifest, 102, delta_entries, this_update + timedelta(minutes=2), delta_base=101)
    )

    # Only the CRL files remain: the entry lists would slow the garbage collector.
    del entries, serials, kept, added, nxt, delta_entries
    store_dir = work / "store"
    as_of = now + timedelta(minutes=5)
    runs: dict[str, Any] = {}
    for name, path in (
        ("first", full_path),
        ("again", full_path),
        ("next", next_path),
        ("delta", delta_path),
    ):
        result, seconds, cpu = _timed_import(store_dir, manifest, path, as_of)
        runs[name] = _row(result, seconds, cpu, path.stat().st_size)
        print(f"{name}: {json.dumps(runs[name])}", file=sys.stderr)
    first = runs["first"]["seconds"]
    store_bytes = (store_dir / "data.mdb").stat().st_size
    return {
        "benchmark": "crlbuilder import-crl",
        "entries": n,
        "goal_seconds": GOAL_SECONDS,
        "goal_met": first < GOAL_SECONDS,
        "import_seconds": first,
        "import_cpu_seconds": runs["first"]["cpu_seconds"],
        "load_average": os.getloadavg(),
        "runs": runs,
        "encode_seconds": round(encode_seconds, 3),
        "pki_seconds": round(pki_seconds, 3),
        "store_bytes": store_bytes,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "at": now.isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_import", description=__doc__)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, required=True, help="JSON result file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        result = run(args.entries, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
