"""Pages of the store's ``applied`` database per record, its values of 4 bytes (the commit, before
release 1.5) and of 20 (the commit and a 16-byte content digest, `crlbuilder.recorddigest`).

    python -m bench.bench_applied_size [N] [DIR]

N record ids shaped as `crlbuilder synth` makes them (``r<holder>-<n>``, 3 to 8 per holder),
inserted in a random order (records arrive in time order, not id order) 1,000 per write
transaction as a build commits them, then rewritten in key order with ``MDB_APPEND`` as
`crlbuilder store copy` does: branch + leaf + overflow pages per record, built and copied.
Calibrated against bench_build's bytes per certificate (bench/README.md): the 4-byte values
give its 33.7 and 23.2 bytes per record (47.8 and 33.0 per certificate at 1.42 records each).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

import lmdb


def pages(env: lmdb.Environment, db: lmdb._Database) -> int:
    """Bytes of the pages of ``db`` (branch, leaf and overflow)."""
    with env.begin() as t:
        s = t.stat(db)
    return int((s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"])


def main(n: int, tmp: Path) -> None:
    rng = random.Random(1)
    ids: list[bytes] = []
    h = 0
    while len(ids) < n:
        ids += [f"r{h}-{k}".encode() for k in range(rng.randint(3, 8))]
        h += 1
    ids = ids[:n]
    rng.shuffle(ids)  # records arrive in time order, not id order
    for vlen in (4, 20):
        built_dir, copy_dir = tmp / f"env{vlen}", tmp / f"copy{vlen}"
        for d in (built_dir, copy_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        env = lmdb.open(str(built_dir), max_dbs=2, map_size=1 << 32)
        env2 = lmdb.open(str(copy_dir), max_dbs=2, map_size=1 << 32)
        db, db2 = env.open_db(b"applied"), env2.open_db(b"applied")
        v = bytes(vlen)
        for i in range(0, n, 1000):  # a build's commits
            with env.begin(write=True) as t:
                for k in ids[i : i + 1000]:
                    t.put(k, v, db=db, overwrite=False)
        with env.begin() as t, env2.begin(write=True) as t2:  # `crlbuilder store copy`
            for k, val in t.cursor(db=db):
                t2.put(k, val, db=db2, append=True)
        built, copied = pages(env, db) / n, pages(env2, db2) / n
        mib = 1e6 / 2**20
        print(
            f"value {vlen:2} B: built {built:.1f} B/record ({built * mib:.1f} MiB per million "
            f"records), copied {copied:.1f} B/record ({copied * mib:.1f} MiB per million)"
        )
        env.close()
        env2.close()
        shutil.rmtree(built_dir)
        shutil.rmtree(copy_dir)


def cli(argv: list[str] | None = None) -> int:
    """The command line (module docstring); 0 once the figures are printed."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.bench_applied_size",
        description="Bytes per record of the store's applied database, 4- and 20-byte values, "
        "as built and as `crlbuilder store copy` rewrites it.",
    )
    ap.add_argument("n", nargs="?", type=int, default=1_000_000, help="record ids (1,000,000)")
    ap.add_argument("dir", nargs="?", type=Path, help="where the two LMDB files go (a new "
                    "temporary directory)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("N must be at least 1")
    main(args.n, args.dir if args.dir is not None else Path(tempfile.mkdtemp()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
