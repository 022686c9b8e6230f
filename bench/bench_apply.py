"""The build's apply phase: its CPU seconds per record, and a digest of the store it wrote.

    python -m bench.bench_apply cpu [--profile FILE | --callgrind] -- BUILD ARGS...
    python -m bench.bench_apply dump STORE

``cpu`` runs `crlbuilder build` in this process with ``BUILD ARGS`` (those of
`bench.bench_build`, plus ``--no-presign --no-crl`` to stop after the lapses) and prints
one JSON line: the user and system CPU seconds (``getrusage``) of `Applier.run` alone,
reading and decoding the record files included, and per record. CPU seconds, not wall
time: on a machine shared with other work they are what one change moves. ``--profile``
writes a cProfile of the same span (slower: the CPU then says nothing). ``--callgrind``, under
``valgrind --tool=callgrind --instr-atstart=no``, counts the instructions of that span alone
(callgrind's client requests, compiled with ``cc`` against valgrind's headers and loaded here:
instrumentation on at its start, off and dumped as part "apply" at its end): a count, not a
time, that the machine's other work does not move.

``dump`` prints, per named database, its entries and the SHA-256 of its keys and values
in key order: two builds of the same records must print the same lines. Left out: the
store's random identity (``store-id``) and the commit times (``committed_at``, the
changes feed's commit markers), which follow the clock.
"""

from __future__ import annotations

import cProfile
import ctypes
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CALLGRIND_C = """#include <valgrind/callgrind.h>
void apply_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void apply_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("apply"); }
"""


def _callgrind() -> ctypes.CDLL:
    """callgrind's client requests around the measured span (no-ops outside valgrind)."""
    work = Path(tempfile.mkdtemp(prefix="bench-apply-cg-"))
    (work / "cg.c").write_text(_CALLGRIND_C)
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", str(work / "cg.so"), str(work / "cg.c")],
        check=True,
    )
    return ctypes.CDLL(str(work / "cg.so"))


def cpu(argv: list[str]) -> int:
    import crlbuilder.apply as apply
    from crlbuilder.cli import main

    profile = None
    if argv[:1] == ["--profile"]:
        profile, argv = argv[1], argv[2:]
    grind = None
    if argv[:1] == ["--callgrind"]:
        grind, argv = _callgrind(), argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    measured: dict[str, float] = {}
    run = apply.Applier.run

    def timed(self: apply.Applier, items: Iterable[Any]) -> apply.Summary:
        prof = cProfile.Profile() if profile else None
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        if prof is not None:
            prof.enable()
        if grind is not None:
            grind.apply_start()
        try:
            return run(self, items)
        finally:
            if grind is not None:
                grind.apply_stop()
            if prof is not None:
                prof.disable()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            if prof is not None and profile:
                prof.dump_stats(profile)
            measured["user"] = r1.ru_utime - r0.ru_utime
            measured["sys"] = r1.ru_stime - r0.ru_stime
            measured["records"] = self.summary.read

    apply.Applier.run = timed  # type: ignore[method-assign]
    rc = main(["build", *argv])
    if measured:
        seconds = measured["user"] + measured["sys"]
        records = int(measured["records"]) or 1
        out = {
            **measured,
            "cpu": round(seconds, 3),
            "us_per_record": round(seconds / records * 1e6, 2),
        }
        print(json.dumps(out), file=sys.stderr)
    return rc


def dump(store_path: str) -> int:
    from crlbuilder.store import format as sf
    from crlbuilder.store.lmdbstore import Store

    s = Store.open(store_path, readonly=True)
    try:
        with s.env.begin() as txn:
            for name in sf.ALL_DBS:
                db = s.dbs.get(name)
                h, n = hashlib.sha256(), 0
                if db is not None:
                    for k, v in txn.cursor(db=db):
                        if name == sf.DB_META and k in (sf.META_STORE_ID, sf.META_COMMITTED_AT):
                            continue
                        if name == sf.DB_CHANGES and len(k) == 4:
                            continue  # a commit marker: the commit's time
                        for part in (bytes(k), bytes(v)):
                            h.update(len(part).to_bytes(4, "big") + part)
                        n += 1
                print(name.decode(), n, h.hexdigest())
    finally:
        s.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if args[:1] == ["cpu"]:
        return cpu(args[1:])
    if args[:1] == ["dump"] and len(args) == 2:
        return dump(args[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
