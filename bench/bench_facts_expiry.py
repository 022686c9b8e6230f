"""What erasing expired certificates' sealed facts costs (`crlbuilder.factskept`), on a copy of a store.

    python -m bench.bench_build --holders 100000 --dir DIR --out bench/results/build.json
    python -m bench.bench_facts_expiry --dir DIR --out bench/results/facts_expiry.json

On a copy of ``DIR/store`` (the original is left as it is), in process: the retention scan's
pass over every sealed entry with its status record (`LmdbReader.sealed_ends`); a whole
erasure scan with nothing due, with and without that pass; an upgrade's first erasure after the
facts of every expired sign certificate are put back as an earlier release kept them under an
agenda of the earlier digest (it scans and erases the backlog); erasures from the agenda an hour
apart (a tick each); and the per-commit read of ``meta/retention`` that `Commit._list_facts`
adds. Prints JSON. Timings are medians of a few runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from crlbuilder import retention as agenda
from crlbuilder.apply import Applier, from_epoch
from crlbuilder.config import load_config
from crlbuilder.ingest import Quarantine
from crlbuilder.model import Category, Family
from crlbuilder.periods import RULE
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit

ROOT = Path(__file__).resolve().parent.parent


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def measure(work: Path, scratch: Path) -> dict[str, object]:
    (scratch / "store").mkdir(parents=True)
    shutil.copy(work / "store" / "data.mdb", scratch / "store" / "data.mdb")
    summary = json.loads((work / "pop" / "summary.json").read_text())
    as_of = int(datetime.fromisoformat(summary["as_of"]).timestamp())
    retention = load_config(ROOT / "config" / "builder.toml").crl.retention_period_days
    key = bytes.fromhex((work / "facts.key").read_text().strip())
    store = Store.open(scratch / "store", readonly=False, map_size=1 << 33)
    out: dict[str, object] = {}

    def erase(now: int, *, use_agenda: bool) -> tuple[float, Applier]:
        ap = Applier(store, facts_key=key, quarantine=Quarantine(scratch / "q.jsonl"),
                     notices_path=scratch / "notices.jsonl")  # fmt: skip
        t = time.perf_counter()
        ap.erase_past_retention(now, retention, keep_time=False, agenda=use_agenda)
        return time.perf_counter() - t, ap

    try:
        with store.read() as r:
            out["certificates"] = r.count(sf.DB_STATUS)
            out["sealed_entries"] = r.count(sf.DB_HOLDERS)
            expired = [
                k
                for k, st in r.statuses()
                if st.family_enum.is_sign and st.state == sf.STATE_GOOD and st.not_after < as_of
            ]
            out["expired_sign_certificates"] = len(expired)
            out["expired_with_facts"] = sum(r.sealed_facts(k) is not None for k in expired)
            sizes = [len(r.sealed_facts(k) or b"") for k, _, _ in r.sealed_ends()]
        sealed_size = int(statistics.mean(sizes)) if sizes else 64

        runs = []
        for _ in range(5):
            with store.read() as r:
                t = time.perf_counter()
                n = sum(1 for _ in r.sealed_ends())
                runs.append(time.perf_counter() - t)
        out["sealed_pass_s"] = round(_median(runs), 4)
        out["sealed_pass_us_per_entry"] = round(_median(runs) / max(n, 1) * 1e6, 2)

        now = as_of + 60
        whole = [erase(now, use_agenda=False)[0] for _ in range(3)]
        real = LmdbReader.sealed_ends

        def nothing(self: LmdbReader) -> Iterator[tuple[bytes, int | None, int]]:
            return iter(())

        LmdbReader.sealed_ends = nothing  # type: ignore[method-assign]
        try:
            without = [erase(now, use_agenda=False)[0] for _ in range(3)]
        finally:
            LmdbReader.sealed_ends = real  # type: ignore[method-assign]
        out["whole_scan_s"] = round(_median(whole), 3)
        out["whole_scan_without_sealed_pass_s"] = round(_median(without), 3)

        periods = ",".join(
            f"{f.value}/{c.value}={retention(f, c)}"
            for f in Family
            for c in Category
            if c.applies_to(f)
        )
        earlier = hashlib.sha256(
            f"{RULE}:{agenda.NOTICES}:{agenda.KEPT}:{periods}".encode()
        ).hexdigest()[:32]
        holders = store.dbs[sf.DB_HOLDERS]
        with store.env.begin(write=True) as txn:  # as an earlier release left them
            for k in expired:
                txn.put(k, bytes(sealed_size), db=holders)
        with Commit(store, lambda: from_epoch(now)) as c:
            c.rebuild_retention(agenda.scanned(now - 86_400, earlier), [])
        secs, ap = erase(now, use_agenda=True)
        out["upgrade_first_erasure_s"] = round(secs, 3)
        out["upgrade_facts_erased"] = ap.summary.facts_erased

        ticks = [erase(now + i * 3600, use_agenda=True)[0] for i in range(1, 41)]
        out["tick_erasure_ms_median"] = round(_median(ticks) * 1e3, 3)
        out["tick_erasure_ms_max"] = round(max(ticks) * 1e3, 2)
        with store.read() as r:
            out["agenda_entries"] = r.count(sf.DB_RETENTION)
            t = time.perf_counter()
            for _ in range(10_000):
                r.retention_state()
            out["per_commit_agenda_read_us"] = round((time.perf_counter() - t) / 10_000 * 1e6, 2)
    finally:
        store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dir", type=Path, required=True, help="bench_build's --dir")
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jpki-facts-expiry-") as scratch:
        out = measure(args.dir, Path(scratch))
    text = json.dumps(out, indent=2) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
