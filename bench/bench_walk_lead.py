"""When an idle `build --follow` begins the walk that re-signs stored answers falling due.

The answers of an issuer fall due together, at an instant the walk that signed them set
(perhaps another process's build); an idle follow loop must look at them within the lead
before it (`crlbuilder.presign.walk_lead`) or the walk begins after they expired, and the
responder signs each on demand meanwhile. With a short validity so that it shows in minutes:
a one-shot build re-signs every stored answer at t1 (due t1 + validity), then `build
--follow` starts at t1 + offset, and the store's OCSP states are read every half second
until the earliest stored nextUpdate moves on (the walk ended). Reports, per offset, when
that was seen and the least time left before it (negative: answers past due). Real
commands; ``--crlbuilder`` runs another tree's (a before/after tool, not in `make bench`).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.bench_build import _flags
from bench.bench_distinct import prepare_store
from crlbuilder.store.lmdbstore import Store

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def earliest(store: Path) -> int:
    """The earliest nextUpdate of any stored answer, over the issuers that have some."""
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            return min(
                st.next_update for i in r.issuers() if (st := r.ocsp_state(i.index)).next_update
            )
    finally:
        s.close()


def one(
    cb: str, d: Path, validity: int, refresh: int, offset: float, seconds: float
) -> dict[str, Any]:
    flags = [*_flags(d), "--input", str(d / "empty"), "--no-crl"]
    t1 = time.time()
    subprocess.run(
        [cb, "build", *flags, "--ocsp-validity-seconds", str(validity),
         "--ocsp-refresh-before-seconds", "1000000000"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    built = time.time() - t1
    time.sleep(max(0.0, t1 + offset - time.time()))
    log = d / "follow.log"
    with log.open("w") as err:
        p = subprocess.Popen(
            [cb, "build", *flags, "--follow", "--ocsp-validity-seconds", str(validity),
             "--ocsp-refresh-before-seconds", str(refresh)],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        first = least = ended = None
        try:
            end = time.time() + seconds
            while time.time() < end and ended is None:
                e, now = earliest(d / "store"), time.time()
                first = first or e
                if e > first:
                    ended = now
                else:
                    least = e - now if least is None else min(least, e - now)
                time.sleep(0.5)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    assert first is not None
    warnings = [
        str(ev["message"])
        for line in log.read_text().splitlines()
        if line.startswith("{") and (ev := json.loads(line)).get("event") == "warning"
    ]
    return {
        "offset_seconds": offset,
        "one_shot_build_seconds": round(built, 1),
        "due_after_t1": round(first - t1, 1),
        "walk_end_seen_after_t1": round(ended - t1, 1) if ended is not None else None,
        "least_left_seconds": round(least, 1) if least is not None else None,
        "warnings": warnings,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=ROOT / "var" / "bench-walk-lead")
    p.add_argument("--holders", type=int, default=20_000)
    p.add_argument("--validity", type=int, default=240, help="ocsp.validity_seconds")
    p.add_argument("--refresh-before", type=int, default=30, help="ocsp.refresh_before_seconds")
    p.add_argument("--offset", type=float, nargs="+", default=[40.0, 100.0],
                   help="seconds after the one-shot build's start when the loop starts")  # fmt: skip
    p.add_argument("--seconds", type=float, default=330.0, help="how long to watch each loop")
    p.add_argument("--crlbuilder", default=str(BIN / "crlbuilder"), help="another tree's command")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "walk_lead.json")
    args = p.parse_args(argv)
    d = args.dir.resolve()
    prepare_store(d, args.holders)
    (d / "spool").mkdir(exist_ok=True)
    runs = []
    for offset in args.offset:
        runs.append(
            one(args.crlbuilder, d, args.validity, args.refresh_before, offset, args.seconds)
        )
        print(json.dumps(runs[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"crlbuilder": args.crlbuilder, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
