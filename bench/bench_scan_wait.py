"""How long a revocation read during the retention scan waits behind it, on a copy of a store.

    python -m bench.bench_build --holders 100000 --dir DIR --out bench/results/build.json
    python -m bench.bench_scan_wait --dir DIR

The builder is one process with one writer: a revocation record read while the erasure past
retention scans (when its agenda runs out, every 30 days, or goes stale: an upgrade) is
committed after the scan's write transaction. On a copy of ``DIR/store``, per run: the agenda
made stale (another digest), the erasure (the scan) and right after it one revocation
committed, as the follow loop does them; the revocation's wait is the erasure's wall time.
The same with the pass over the sealed four facts left out (`crlbuilder.factskept`, what the
facts' erasure at expiry added to the scan), and the revocation alone.

Then the steady state from the agenda the last of those scans made: per run one erasure 30 days
and a second later (`retention.LOOKAHEAD`: past the horizon an agenda of
an earlier release had, which scanned again there; a complete agenda only reads what falls due)
followed by one revocation; and the retention agenda's size after the first scan (entries, pages
per certificate). Runs with whichever crlbuilder is imported (``PYTHONPATH`` at another tree's
root measures that one). Prints JSON (seconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from crlbuilder import retention as agenda
from crlbuilder.apply import Applier, from_epoch
from crlbuilder.config import load_config
from crlbuilder.ingest import Quarantine, decode_item
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit
from responder.v1.certref import issuer_ids

ROOT = Path(__file__).resolve().parent.parent


def measure(work: Path, scratch: Path, runs: int) -> dict[str, object]:
    (scratch / "store").mkdir(parents=True)
    shutil.copy(work / "store" / "data.mdb", scratch / "store" / "data.mdb")
    summary = json.loads((work / "pop" / "summary.json").read_text())
    as_of = int(datetime.fromisoformat(summary["as_of"]).timestamp())
    retention = load_config(ROOT / "config" / "builder.toml").crl.retention_period_days
    key = bytes.fromhex((work / "facts.key").read_text().strip())
    store = Store.open(scratch / "store", readonly=False, map_size=1 << 33)
    with store.read() as r:
        ids = issuer_ids(r)
        goods = [
            k
            for k, st in r.statuses()
            if st.state == sf.STATE_GOOD and st.not_after > as_of + 200 * 86_400
        ][: 4 * runs + 1]
        sealed = r.count(sf.DB_HOLDERS)
        certificates = r.count(sf.DB_STATUS)

    def applier() -> Applier:
        return Applier(store, facts_key=key, quarantine=Quarantine(scratch / "q.jsonl"),
                       notices_path=scratch / "notices.jsonl")  # fmt: skip

    def revoke(now: int) -> float:
        k = goods.pop()
        index, serial = sf.split_status_key(k)
        rec = {"type": "revocation-request", "id": f"wait-{len(goods)}", "serial": serial,
               "recorded_at": from_epoch(now).isoformat(), "issuer": ids[index],
               "reason": "application"}  # fmt: skip
        ap = applier()
        t = time.perf_counter()
        ap.commit([decode_item("bench", 1, msgspec.json.encode(rec))])
        took = time.perf_counter() - t
        if ap.summary.applied != 1:
            raise SystemExit("the revocation was not applied (quarantined: see q.jsonl)")
        return took

    def erase(now: int) -> float:
        t = time.perf_counter()
        applier().erase_past_retention(now, retention, keep_time=False, agenda=True)
        return time.perf_counter() - t

    def agenda_size() -> dict[str, object]:
        with store.env.begin() as txn:
            st = txn.stat(store.dbs[sf.DB_RETENTION])
        pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return {
            "entries": st["entries"],
            "bytes_per_certificate": round(pages * st["psize"] / certificates, 1),
        }

    def behind_scan(now: int) -> float:
        with Commit(store, lambda: from_epoch(now)) as c:  # stale: another digest
            c.rebuild_retention(agenda.scanned(now - 86_400, "0" * 32), [])
        t, cpu = time.perf_counter(), time.process_time()
        applier().erase_past_retention(now, retention, keep_time=False, agenda=True)
        waited = time.perf_counter() - t
        scan_cpu.append(time.process_time() - cpu)
        revoke(now)
        return waited

    now = as_of + 60
    scan_cpu: list[float] = []
    """The CPU seconds of each erasure behind which a revocation waited (the machine's load
    stretches the wall time, not these)."""
    try:
        alone = [revoke(now + i) for i in range(runs)]
        wait = [behind_scan(now + i) for i in range(runs)]
        real = LmdbReader.sealed_ends

        def nothing(self: LmdbReader) -> Iterator[tuple[bytes, int | None, int]]:
            return iter(())

        LmdbReader.sealed_ends = nothing  # type: ignore[method-assign]
        try:
            without = [behind_scan(now + runs + i) for i in range(runs)]
        finally:
            LmdbReader.sealed_ends = real  # type: ignore[method-assign]
        size = agenda_size()  # as the last scan made it
        steady: list[float] = []
        after_steady: list[float] = []
        for i in range(runs):
            at = now + 2 * runs + (i + 1) * (agenda.LOOKAHEAD + 1)
            steady.append(erase(at))
            after_steady.append(revoke(at))
    finally:
        store.close()
    return {
        "sealed_entries": sealed,
        "revocation_alone_s": [round(x, 3) for x in alone],
        "wait_behind_scan_s": [round(x, 3) for x in wait],
        "wait_behind_scan_without_facts_pass_s": [round(x, 3) for x in without],
        "median_wait_s": round(statistics.median(wait), 3),
        "median_scan_cpu_s": round(statistics.median(scan_cpu[:runs]), 3),
        "median_wait_without_facts_pass_s": round(statistics.median(without), 3),
        "agenda_after_scan": size,
        "wait_at_30_day_steps_s": [round(x, 4) for x in steady],
        "revocation_after_those_s": [round(x, 4) for x in after_steady],
        "median_wait_at_30_day_steps_s": round(statistics.median(steady), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dir", type=Path, required=True, help="bench_build's --dir")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jpki-scan-wait-") as scratch:
        out = measure(args.dir, Path(scratch), args.runs)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
