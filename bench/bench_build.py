"""Build benchmarks: synth and a full build of N holders, an incremental spool file, store size.

    python -m bench.bench_build --holders 1000000 --out bench/results/build.json

Runs the real commands (`crlbuilder synth`, `crlbuilder build`, `crlbuilder
build --follow`) in child processes and reads their peak RSS from
``wait4``'s rusage, so the numbers are what an operator gets. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> tuple[float, int, str]:
    """(seconds, peak anonymous memory in MiB, stderr) of one command and its children.

    Peak RSS would count the store's memory-mapped pages, which belong to the
    page cache, not the process; the anonymous memory (RssAnon, summed over
    the process and its signing children, sampled every 0.1 s) is what a
    builder really holds.
    """
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _anon_kib(p.pid))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    assert p.stderr is not None
    err = p.stderr.read()
    status = p.wait()
    done.set()
    t.join()
    if status != 0:
        raise SystemExit(f"{args[0]} failed: {err[-2000:]}")
    return time.monotonic() - t0, peak[0] // 1024, err


def _anon_kib(pid: int) -> int:
    """RssAnon of a process and all its descendants, in KiB."""
    total = 0
    pids = [pid]
    while pids:
        q = pids.pop()
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{q}/task/{q}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return total


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def db_bytes(store: Path, certificates: int) -> dict[str, float]:
    """Bytes of pages (branch, leaf, overflow) each named database holds, per certificate."""
    import lmdb

    from crlbuilder.store import format as sf

    env = lmdb.open(str(store), readonly=True, lock=False, max_dbs=sf.MAX_DBS)
    out: dict[str, float] = {}
    try:
        psize = env.stat()["psize"]
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            for name in names:
                st = txn.stat(env.open_db(name, txn=txn, create=False))
                pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                out[name.decode()] = round(pages * psize / max(1, certificates), 1)
    finally:
        env.close()
    out["total"] = round(sum(out.values()), 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--holders", type=int, default=1_000_000)
    p.add_argument(
        "--incremental",
        type=int,
        default=10_000,
        metavar="N",
        help="the incremental step revokes N certificates of the built store that are in effect "
        "(default 10,000); on a small population that is most of them, so a store meant for "
        "the serving benchmarks afterwards wants a smaller N, or 0 to skip the step",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "build.json")
    p.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temporary one)"
    )
    p.add_argument(
        "--reuse", action="store_true", help="reuse a population of the same size in --dir"
    )
    p.add_argument(
        "--incremental-only", action="store_true", help="only rerun the incremental step"
    )
    p.add_argument(
        "--post-commit", action="store_true",
        help="with --incremental-only: the builder pre-signs and publishes CRLs too (the follow "
        "loop as deployed); reports each step's seconds, for its start and for the file",
    )  # fmt: skip
    p.add_argument(
        "--during-walk", type=float, default=None, metavar="SECONDS",
        help="with --incremental-only: start the follow loop with every stored answer due (a "
        "refresh margin past the latest stored nextUpdate: every answer re-signed, as when an "
        "issuer's answers fall due) and drop the file SECONDS after it starts; reports the "
        "file's arrival to commit while that pre-signing goes on",
    )  # fmt: skip
    p.add_argument(
        "--follow-interval", type=float, default=1.0, metavar="SECONDS",
        help="the follow loop's interval for the incremental step (default 1.0, the "
        "configuration's default: how long a file may wait when nothing wakes the loop; "
        "until 2026-12-05 the bench polled every 0.05 s)",
    )  # fmt: skip
    p.add_argument(
        "--crlbuilder",
        default=str(BIN / "crlbuilder"),
        help="the crlbuilder command to run (another checkout's, for a before/after)",
    )
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="jpki-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    as_of = datetime.now(UTC).replace(microsecond=0).isoformat()
    cb = args.crlbuilder
    results: dict[str, object] = {"holders": args.holders, "cores": os.cpu_count()}

    if not (work / "pki" / "pki.json").exists():
        run(cb, "pki", "init", "--out", str(work / "pki"))
    if not (work / "facts.key").exists():
        run(cb, "facts-key", "--out", str(work / "facts.key"))
    if not (work / "registry.toml").exists():  # consents are checked against it (Act §18(3))
        run(str(BIN / "responder"), "registry", "init", "--pki", str(work / "pki"),
            "--out", str(work / "registry.toml"))  # fmt: skip
    if args.incremental_only:
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        if args.during_walk is not None:
            name = "incremental_during_walk"
            previous[name] = during_walk(cb, _flags(work), work, args.incremental, args.during_walk)
        else:
            name = "incremental_post_commit" if args.post_commit else "incremental"
            previous[name] = incremental(
                cb, _flags(work), work, args.incremental, post_commit=args.post_commit,
                interval=args.follow_interval,
            )  # fmt: skip
        args.out.write_text(json.dumps(previous, indent=2) + "\n")
        print(json.dumps(previous[name], indent=2))
        return 0
    summary_file = work / "pop" / "summary.json"
    if (
        args.reuse
        and summary_file.exists()
        and json.loads(summary_file.read_text())["holders"] == args.holders
    ):
        as_of = json.loads(summary_file.read_text())["as_of"]
        results["synth"] = {"reused": True}
    else:
        secs, rss, _ = run(cb, "synth", "--pki", str(work / "pki"), "--holders", str(args.holders),
                           "--out", str(work / "pop"), "--seed", "1", "--as-of", as_of, "--force")  # fmt: skip
        results["synth"] = {"seconds": round(secs, 1), "peak_anon_mib": rss}
    summary = json.loads(summary_file.read_text())
    records = int(summary.get("records", 0))
    results["synth"]["records"] = records  # type: ignore[index]

    flags = _flags(work)
    shutil.rmtree(work / "store", ignore_errors=True)
    shutil.rmtree(work / "crl", ignore_errors=True)
    secs, rss, err = run(
        cb, "build", *flags, "--input", str(work / "pop" / "records"), "--as-of", as_of
    )
    report = msgspec.json.decode(err.strip().splitlines()[-1])
    apply_s = report["seconds"]["apply"]
    results["build"] = {
        "seconds": round(secs, 1),
        "peak_anon_mib": rss,
        "phases": report["seconds"],
        "records_per_s_apply": round(records / apply_s) if apply_s else None,
        "records_per_s_total": round(records / secs),
        "presigned": report["ocsp_presigned"],
        "revocations": report["revocations_by_category"],
        "quarantined": report["quarantined"],
    }
    # presigning against what the same cores sign raw (cryptography, RSA PKCS#1 v1.5, one
    # process per core, the first issuer's delegate key), measured right after the build
    from bench.bench_responder import raw_sign_rate
    from crlbuilder.manifest import load_manifest

    pki = load_manifest(work / "pki")
    raw, _ = raw_sign_rate(work / "pki" / pki.issuers[0].ocsp_key, 5.0, procs=os.cpu_count() or 1)
    presign_s = report["seconds"].get("presign", 0)
    if presign_s and report["ocsp_presigned"]:
        rate = report["ocsp_presigned"] / presign_s
        results["build"]["presign_per_s"] = round(rate)  # type: ignore[index]
        results["build"]["raw_signs_per_s"] = round(raw)  # type: ignore[index]
        results["build"]["presign_vs_raw"] = round(rate / raw, 3)  # type: ignore[index]

    from crlbuilder.store.lmdbstore import Store

    s = Store.open(work / "store", readonly=True)
    with s.read() as r:
        counts = r.counts()
    s.close()
    certs = counts["status"]
    size = du(work / "store")
    results["store"] = {
        "certificates": certs,
        "bytes": size,
        "mib_per_million_certificates": round(size / 2**20 / (certs / 1e6), 1) if certs else None,
        "entries": counts,
        "bytes_per_certificate_by_db": db_bytes(work / "store", certs),
    }
    # the same store rewritten in key order (`crlbuilder store copy`: every database appended,
    # full pages), against the build's pages filled by inserts in record order
    shutil.rmtree(work / "store.copy", ignore_errors=True)
    secs, rss, _ = run(cb, "store", "copy", str(work / "store"), str(work / "store.copy"))
    copied = du(work / "store.copy")
    results["store_copy"] = {
        "seconds": round(secs, 1),
        "peak_anon_mib": rss,
        "bytes": copied,
        "mib_per_million_certificates": round(copied / 2**20 / (certs / 1e6), 1) if certs else None,
        "bytes_per_certificate_by_db": db_bytes(work / "store.copy", certs),
    }
    shutil.rmtree(work / "store.copy", ignore_errors=True)

    # incremental: N revocation requests dropped into the spool, arrival to committed
    if args.incremental > 0:
        results["incremental"] = incremental(
            cb, flags, work, args.incremental, interval=args.follow_interval
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _flags(work: Path) -> list[str]:
    return [
        "--config", str(ROOT / "config" / "builder.toml"), "--store", str(work / "store"),
        "--pki", str(work / "pki"),
        "--facts-key-file", str(work / "facts.key"), "--quarantine", str(work / "quarantine.jsonl"),
        "--notices", str(work / "notices.jsonl"), "--crl-dir", str(work / "crl"),
        "--spool", str(work / "spool"), "--registry", str(work / "registry.toml"), "--no-progress",
    ]  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a live process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def incremental(
    cb: str,
    flags: list[str],
    work: Path,
    n: int,
    *,
    post_commit: bool = False,
    interval: float = 1.0,
) -> dict[str, object]:
    """``n`` revocation records dropped into the spool of `build --follow`: arrival to commit,
    the apply's seconds and the builder's CPU; with ``post_commit`` the builder pre-signs and
    publishes CRLs as deployed, and the seconds of each step after the commit are reported,
    for the build at its start and for the file."""
    spool = work / "spool"
    spool.mkdir(exist_ok=True)
    lines = _revocations(work, n)
    steps = [] if post_commit else ["--no-presign", "--no-crl"]
    p = subprocess.Popen([cb, "build", *flags, "--input", str(spool), "--follow", "--max-idle", "60",
                          "--follow-interval", str(interval), *steps],
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stderr is not None
    start: dict[str, Any] | None = None
    try:
        for line in p.stderr:  # the follow loop starts after the initial (empty) build
            if '"event":"build"' in line:
                start = json.loads(line)
                break
        cpu_before = _cpu_seconds(p.pid)
        tmp = spool / "incoming.tmp"
        tmp.write_bytes(b"\n".join(lines) + b"\n")
        arrived = time.time()
        tmp.rename(spool / "bench-incremental.jsonl")
        event = None
        for line in p.stderr:
            if '"spool-file"' in line:
                event = json.loads(line)
                break
        cpu = _cpu_seconds(p.pid) - cpu_before
    finally:
        p.terminate()
        p.wait(timeout=60)
    if event is None:
        return {"records": len(lines), "error": "no spool-file event"}
    return {
        "records": len(lines),
        "follow_interval_seconds": interval,
        "arrival_to_committed_seconds": round(event["committed_at_unix"] - arrived, 3),
        "apply_seconds": event["seconds"]["apply"],
        # the builder's CPU from the end of its first build to the file's event: the file's
        # apply and what follows its commit (erasures, lapses), and the idle loop's turns
        "builder_cpu_seconds": round(cpu, 2),
        "revocations": event["revocations_by_category"],
    } | (
        {
            "start_seconds": start["seconds"] if start else None,
            "start_ocsp_walked": start.get("ocsp_walked") if start else None,
            "file_seconds": event["seconds"],
            "file_ocsp_walked": event.get("ocsp_walked"),
            "file_ocsp_presigned": event.get("ocsp_presigned"),
        }
        if post_commit
        else {}
    )


def _revocations(work: Path, n: int) -> list[bytes]:
    """Revocation requests (JSON lines) of ``n`` certificates of the store in effect now."""
    from crlbuilder.store.lmdbstore import Store

    s = Store.open(work / "store", readonly=True)
    picks: list[tuple[str, int]] = []
    with s.read() as r:
        issuers = {i.index: i.id for i in r.issuers()}
        for key, st in r.statuses():
            if not st.revoked and st.not_after > time.time():
                picks.append(
                    (issuers[int.from_bytes(key[:2], "big")], int.from_bytes(key[2:], "big"))
                )
                if len(picks) >= n:
                    break
    s.close()
    now = datetime.now(UTC).isoformat()
    return [
        msgspec.json.encode(
            {
                "type": "revocation-request",
                "id": f"bench-{time.time_ns()}-{i}",
                "recorded_at": now,
                "serial": serial,
                "issuer": issuer,
                "reason": "application",
            }
        )
        for i, (issuer, serial) in enumerate(picks)
    ]


def during_walk(cb: str, flags: list[str], work: Path, n: int, delay: float) -> dict[str, object]:
    """``n`` revocation records dropped into the spool ``delay`` seconds after `build --follow`
    starts re-signing every stored answer: arrival to commit, and what the builder reported
    until then. The builder is stopped once the file is committed; a cut walk goes on at its
    next start.

    Every stored answer is made due as when an issuer's answers fall due: the refresh margin
    is set past the latest stored nextUpdate and the validity two hours past the margin, so
    that the answers signed anew are not due for two hours (the walk ends; the loop's refresh
    cycle, validity less margin, is those two hours). Each run moves the latest nextUpdate
    on by about that much (the validity was twice the margin until 2026-12-05, which doubled
    it at every run).

    The peer, measured right after on the same cores: raw signatures with a delegate's key
    (`raw_sign_rate`), against the answers per second of the pre-signing runs alone."""
    from crlbuilder.store.lmdbstore import Store

    spool = work / "spool"
    spool.mkdir(exist_ok=True)
    lines = _revocations(work, n)
    s = Store.open(work / "store", readonly=True)
    with s.read() as r:
        latest = max(
            (a.next_update for i in r.issuers() for _, a in r.stored_answers(i.index)), default=0
        )
    s.close()
    margin = max(0, latest - int(time.time())) + 3_600
    p = subprocess.Popen([cb, "build", *flags, "--input", str(spool), "--follow", "--max-idle", "60",
                          "--follow-interval", "0.05",
                          "--ocsp-refresh-before-seconds", str(margin),
                          "--ocsp-validity-seconds", str(margin + 7_200)],
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stderr is not None
    stderr = p.stderr
    events: list[tuple[float, dict[str, Any]]] = []
    filed = threading.Event()

    def read() -> None:
        for line in stderr:
            if line.startswith("{"):
                events.append((time.time(), json.loads(line)))
                if events[-1][1].get("event") == "spool-file":
                    filed.set()
        filed.set()  # the builder ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.time()
    try:
        time.sleep(delay)
        tmp = spool / "incoming.tmp"
        tmp.write_bytes(b"\n".join(lines) + b"\n")
        arrived = time.time()
        tmp.rename(spool / "bench-during-walk.jsonl")
        filed.wait(timeout=7_200)
    finally:
        p.terminate()
        p.wait(timeout=600)
        reader.join(timeout=60)
    file = next((e for _, e in events if e.get("event") == "spool-file"), None)
    if file is None:
        return {"records": len(lines), "error": "no spool-file event"}
    before = [e for t, e in events if t <= file["committed_at_unix"] and e is not file]
    from bench.bench_responder import raw_sign_rate

    key = min((work / "pki" / "ocsp").glob("*.key"))
    raw = raw_sign_rate(key, 5.0, procs=os.cpu_count() or 1)[0]
    walk = _walk_rate(before)
    return {
        "records": len(lines),
        "refresh_margin_seconds": margin,
        "dropped_after_start_seconds": round(arrived - started, 1),
        "arrival_to_committed_seconds": round(file["committed_at_unix"] - arrived, 3),
        "apply_seconds": file["seconds"]["apply"],
        "file_seconds": file["seconds"],
        "file_ocsp_presigned": file.get("ocsp_presigned"),
        "file_ocsp_walking": file.get("ocsp_walking"),
        # pre-signing runs reported before the file's commit (the start-up build's and, when
        # they are cut, the runs that went on with it), answers signed in them
        "events_before": [e.get("event") for e in before],
        # when each was reported (seconds after the builder started) and its steps' seconds
        "events_before_at": [round(t - started, 1) for t, e in events if e in before],
        "events_before_seconds": [e.get("seconds") for e in before],
        "events_before_presigned": [e.get("ocsp_presigned") for e in before],
        "presigned_before": sum(int(e.get("ocsp_presigned", 0)) for e in before),
        # the pre-signing runs alone (after the start-up build's): answers per second of
        # their pre-signing, what a walk goes at in the follow loop
        "walk_answers_per_second": walk,
        "raw_signatures_per_second": round(raw, 1),
        "walk_over_raw": round(walk / raw, 3) if walk else None,
    }


def _walk_rate(events: list[dict[str, Any]]) -> float | None:
    runs = [e for e in events if e.get("event") == "presign"]
    seconds = sum(float(e["seconds"].get("presign", 0.0)) for e in runs)
    signed = sum(int(e.get("ocsp_presigned", 0)) for e in runs)
    return round(signed / seconds, 1) if seconds else None


if __name__ == "__main__":
    sys.exit(main())
