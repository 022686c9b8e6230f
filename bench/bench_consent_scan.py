"""What the consents' pass adds to a whole retention scan (`crlbuilder.consentkept`).

    python -m bench.bench_consent_scan --holders 50000 --dir DIR

In process, in a new store under ``DIR`` (made empty first): HOLDERS holders, each with one
sign-card certificate and one consent; then whole erasure scans (no agenda) with nothing due,
timed with the consents' pass (`LmdbReader.consents_kept`) while every consent is recent and once
within 30 days of their end, and with the pass left out, five of each,
interleaved. Prints the medians and every run (the machine is shared).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from crlbuilder.model import Category, Family
from crlbuilder.store.reader import LmdbReader
from tests.test_apply import FACTS, World, ts


def _none(self: LmdbReader) -> Iterator[tuple[bytes, list[tuple[str, int]]]]:
    return iter(())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holders", type=int, default=50_000)
    ap.add_argument("--dir", type=Path, required=True)
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    w = World(args.dir)
    recs: list[dict[str, object]] = []
    for i in range(args.holders):
        h = hashlib.sha256(f"h{i}".encode()).hexdigest()
        recs.append({"type": "issuance", "id": f"i{i}", "recorded_at": ts(0),
                     "serial": 10_000 + i, "family": "sign-card", "issuer": "sign-card-g1",
                     "not_before": ts(0), "not_after": ts(1500), "holder": h, "facts": FACTS})  # fmt: skip
        recs.append({"type": "consent", "id": f"c{i}", "recorded_at": ts(1), "holder": h,
                     "verifier": "bank", "granted": True})  # fmt: skip
    feed = args.dir / "feed.jsonl"
    feed.write_bytes(b"\n".join(msgspec.json.encode(r) for r in recs) + b"\n")
    w.apply_file(feed, batch_size=5000)
    t0 = int(datetime.fromisoformat(ts(0)).timestamp())

    def retention(family: Family, category: Category) -> int:
        return 3650

    def scan(day: int) -> float:
        applier = w.apply([])
        start = time.perf_counter()
        applier.erase_past_retention(t0 + day * 86_400, retention, keep_time=False)
        return time.perf_counter() - start

    real = LmdbReader.consents_kept
    # day 10: every consent younger than the period (passed over unread); day 5130: every
    # consent's holder within the agenda's 30 days of its end (its certificates read)
    ends_near = 1500 + 3650 - 20
    with_pass: list[float] = []
    near_end: list[float] = []
    without: list[float] = []
    try:
        for k in range(5):
            with_pass.append(scan(10 + k))
            LmdbReader.consents_kept = _none  # type: ignore[method-assign]
            without.append(scan(10 + k))
            LmdbReader.consents_kept = real  # type: ignore[method-assign]
        near_end.append(scan(ends_near - 1))  # the certificates' facts erased: not timed
        near_end.clear()
        for k in range(5):
            near_end.append(scan(ends_near + k))
    finally:
        LmdbReader.consents_kept = real  # type: ignore[method-assign]
        w.store.close()

    def runs(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.3f} s ({', '.join(f'{x:.3f}' for x in xs)})"

    print(f"whole scan, {args.holders} holders with a recent consent: {runs(with_pass)}")
    print(f"whole scan, the same within 30 days of their consents' end: {runs(near_end)}")
    print(f"the consents' pass left out: {runs(without)}")


if __name__ == "__main__":
    main()
