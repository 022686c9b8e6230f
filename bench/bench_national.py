"""A store at national scale, served: worker memory over 1,000,000 distinct serials, latency
with a cold page cache, and the extrapolation to JPKI's population (issue 17, item 5).

    python -m bench.bench_build --holders 10000000 --dir var/bench-national \\
        --out bench/results/build_10m.json          # hours: synth, build, copy
    python -m bench.bench_national --store-dir var/bench-national \\
        --out bench/results/national.json

(``make bench-national`` runs both; ``make bench`` does not: the build alone takes hours on
2 cores.) ``DIR`` holds what `bench.bench_build` made (``pki/``, ``store/``, ``crl/``,
``registry.toml``). First a build with no new records (`refresh`; ``--no-refresh`` skips
it): a store built hours ago is stale (its delta CRLs last an hour) and answers ``tryLater``.
Then three parts, each bounded in time:

1. **Memory.** `responder serve` with one worker is asked ``--touch`` distinct serials
   (default 1,000,000), spread evenly over the whole store in key order and shuffled, each
   once, by POST (``wrk -t1 -c32`` keep-alive, `bench.bench_responder.lua_many`), in four
   equal rounds; after start and after each round, the worker's private memory without the
   store's mapping (`bench.bench_responder.memory_of`: what must not grow with the store)
   and the store pages it has mapped. Revoked serials get their pre-signed answer; good ones
   are signed fresh and enter the good-answer cache, bounded by ``ocsp.good_cache_entries``.
2. **Cold page cache.** The responder stopped, the store file's pages are dropped from the
   page cache (``posix_fadvise(POSIX_FADV_DONTNEED)``, checked with ``fincore`` when there
   is one); a new responder (one worker) is asked ``--cold`` other distinct serials one at a
   time over one keep-alive connection, each request timed by the client; then the same
   serials again (warm: store pages cached, good answers in the worker's cache). p50, p99
   and max per kind (revoked: stored answer; good: a fresh signature when cold).
3. **Extrapolation** to ``--population`` holders (default 120,000,000) from the measured
   per-unit costs of the builds in ``--builds`` (bench_build JSON files: records per holder,
   certificates per holder, revoked share, apply µs per record, presign rate, CRL seconds
   per entry, bytes per certificate built and compacted) and the serving rates of
   ``--distinct`` (bench_distinct JSON): rebuild time, store size, memory, what one node and
   N nodes serve. Every projected figure names the measured one it scales.
4. **The next 30-day lapse.** What the builder asks after every spool file, refresh and turn
   of the record stream (Act §31(2)): the earliest lapse of the move-out notices not lapsed,
   found by reading every notice kept (as before the lapse index) and from the index
   (`store.format.DB_LAPSES`, which the refresh build makes when the store has none), five
   times each, median wall seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.x509 import ocsp

from bench.bench_responder import (
    PARTY,
    lua_many,
    memory_of,
    ocsp_request,
    run_wrk,
)
from bench.procs import BenchError, children, started, wait_line
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results"
BIN: Final = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
OCSP_REQUEST: Final = "application/ocsp-request"
_STATE: Final = 4
_NOT_AFTER: Final = slice(16, 24)


def pick_keys(store_dir: Path, n: int, seed: int, skip: set[bytes]) -> list[tuple[bytes, str]]:
    """About ``n`` status keys spread evenly over the whole store (every issuer, in key order),
    answerable as revoked (a stored answer) or good (not expired within the hour), shuffled.
    The status records are read as raw bytes: a pass over tens of millions takes seconds."""
    now = int(time.time()) + 3600
    store = Store.open(store_dir / "store", readonly=True)
    out: list[tuple[bytes, str]] = []
    try:
        with store.env.begin(buffers=True) as txn:
            total: int = txn.stat(store.dbs[sf.DB_STATUS])["entries"]
            step = max(1, total // max(1, int(n * 1.6)))  # about half are neither: expired
            rng = random.Random(seed)
            offset = rng.randrange(step)
            responses = store.dbs[sf.DB_RESPONSES]
            cur = txn.cursor(db=store.dbs[sf.DB_STATUS])
            for i, (key, value) in enumerate(cur.iternext()):
                if i % step != offset:
                    continue
                k = bytes(key)
                if k in skip:
                    continue
                state = value[_STATE]
                if state == sf.STATE_REVOKED and txn.get(k, db=responses) is not None:
                    out.append((k, "revoked"))
                elif state == sf.STATE_GOOD and int.from_bytes(value[_NOT_AFTER], "big") > now:
                    out.append((k, "good"))
                if len(out) >= n:
                    break
    finally:
        store.close()
    random.Random(seed + 1).shuffle(out)
    return out


def requests_for(store_dir: Path, keys: list[tuple[bytes, str]]) -> list[bytes]:
    store = Store.open(store_dir / "store", readonly=True)
    try:
        with store.read() as r:
            certs = {m.index: x509.load_der_x509_certificate(m.cert_der) for m in r.issuers()}
    finally:
        store.close()
    return [
        ocsp_request(certs[int.from_bytes(k[:2], "big")], sf.split_status_key(k)[1])
        for k, _ in keys
    ]


@contextmanager
def responder(store_dir: Path, work: Path, name: str) -> Iterator[tuple[str, int]]:
    """`responder serve`, one worker, access log off: (base URL, worker PID)."""
    run = work / name
    run.mkdir()
    args = [
        str(BIN / "responder"), "serve", "--store", str(store_dir / "store"),
        "--pki", str(store_dir / "pki"), "--registry", str(store_dir / "registry.toml"),
        "--crl-dir", str(store_dir / "crl"), "--host", "127.0.0.1", "--port", "0",
        "--workers", "1", "--log-level", "warning", "--access-log", "off",
        "--ledger-dir", str(run / "ledger"), "--no-metrics",
    ]  # fmt: skip
    with started(args, log=run / "stderr.log") as proc:
        url = wait_line(proc, r"listening on (\S+)", 120)
        deadline = time.monotonic() + 30
        while not (workers := children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not workers:
            raise BenchError("the responder started no worker")
        yield url, workers[0]


def token(store_dir: Path) -> str:
    return (store_dir / "pki" / "parties" / f"{PARTY}.token").read_text().strip()


def bench_memory(store_dir: Path, work: Path, n: int, rounds: int) -> dict[str, Any]:
    t0 = time.monotonic()
    keys = pick_keys(store_dir, n, seed=1, skip=set())
    bodies = requests_for(store_dir, keys)
    prep = time.monotonic() - t0
    kinds = {k: sum(1 for _, x in keys if x == k) for k in ("revoked", "good")}
    print(f"  memory: {len(keys):,} distinct serials ({kinds}), picked and encoded in "
          f"{prep:.0f} s", flush=True)  # fmt: skip
    headers = {"Content-Type": OCSP_REQUEST, "Authorization": f"Bearer {token(store_dir)}"}
    store_file = (store_dir / "store" / "data.mdb").resolve()
    stages: list[dict[str, Any]] = []
    with responder(store_dir, work, "memory") as (url, pid):
        probe(url, headers, keys, bodies)
        stages.append({"touched": 0, **memory_of(pid, store_file)})
        per = -(-len(bodies) // rounds)
        for j in range(rounds):
            part = bodies[j * per : (j + 1) * per]
            done = work / f"round{j}.done"
            lua = lua_many(work / f"round{j}.lua", part, headers, done)
            r = run_wrk(url, lua, 1800, 32, until=done)
            if r.non_2xx or r.requests < len(part):
                raise BenchError(
                    f"round {j}: {r.requests} answers of {len(part)}, {r.non_2xx} non-2xx"
                )
            touched = min(len(bodies), (j + 1) * per)
            stages.append({"touched": touched, "rps": round(r.rps), "seconds": r.seconds,
                           **memory_of(pid, store_file)})  # fmt: skip
            s = stages[-1]
            print(f"    {touched:>9,} touched: private {s['private_kib'] / 1024:.1f} MiB, store "
                  f"pages mapped {s['store_mapped_rss_kib'] / 1024:.0f} MiB, {r.rps:,.0f} req/s",
                  flush=True)  # fmt: skip
    return {"distinct": len(keys), "kinds": kinds, "stages": stages}


def probe(
    url: str, headers: dict[str, str], keys: list[tuple[bytes, str]], bodies: list[bytes]
) -> None:
    """The first answers of each kind are successful and say what the store says: a stale store
    (past its promised nextUpdate) answers tryLater with HTTP 200, which wrk counts as served."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for kind in ("revoked", "good"):
            for (_, k), body in [x for x in zip(keys, bodies, strict=True) if x[0][1] == kind][:3]:
                conn.request("POST", "/ocsp", body=body, headers=headers)
                got = ocsp.load_der_ocsp_response(conn.getresponse().read())
                if got.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                    raise BenchError(f"a {k} serial answered {got.response_status.name}: "
                                     "refresh the store (crlbuilder build with no new records)")  # fmt: skip
                if got.certificate_status.name.lower() != k:
                    raise BenchError(f"a {k} serial answered {got.certificate_status.name}")
    finally:
        conn.close()


def _fincore(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache (util-linux fincore), None without the tool."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.split()[0])


def drop_cache(path: Path) -> dict[str, int | None]:
    before = _fincore(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return {"cached_before": before, "cached_after": _fincore(path)}


def _pcts(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {"n": len(s), "p50_ms": round(at(0.5) * 1e3, 3), "p99_ms": round(at(0.99) * 1e3, 3),
            "max_ms": round(s[-1] * 1e3, 3)}  # fmt: skip


def bench_cold(store_dir: Path, work: Path, n: int, skip: set[bytes]) -> dict[str, Any]:
    keys = pick_keys(store_dir, n, seed=7, skip=skip)
    bodies = requests_for(store_dir, keys)
    store_file = (store_dir / "store" / "data.mdb").resolve()
    dropped = drop_cache(store_file)
    print(f"  cold: page cache of data.mdb {dropped}", flush=True)
    auth = {"Content-Type": OCSP_REQUEST, "Authorization": f"Bearer {token(store_dir)}"}
    out: dict[str, Any] = {"requests": len(keys), "page_cache": dropped}
    with responder(store_dir, work, "cold") as (url, _pid):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for label in ("cold", "warm"):
            times: dict[str, list[float]] = {"revoked": [], "good": []}
            for (_, kind), body in zip(keys, bodies, strict=True):
                t = time.perf_counter()
                conn.request("POST", "/ocsp", body=body, headers=auth)
                resp = conn.getresponse()
                data = resp.read()
                times[kind].append(time.perf_counter() - t)
                if resp.status != 200:
                    raise BenchError(f"HTTP {resp.status} for a {kind} serial")
                answer = ocsp.load_der_ocsp_response(data)
                if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                    raise BenchError(f"a {kind} serial answered {answer.response_status.name}")
                got = answer.certificate_status
                if got.name.lower() != kind:
                    raise BenchError(f"a {kind} serial answered {got.name}")
            out[label] = {kind: _pcts(ts) for kind, ts in times.items()}
            out[label]["all"] = _pcts([t for ts in times.values() for t in ts])
            print(f"    {label}: {out[label]}", flush=True)
        conn.close()
    out["page_cache_after"] = _fincore(store_file)
    return out


# --- extrapolation ----------------------------------------------------------------------------


def per_unit(build: dict[str, Any]) -> dict[str, Any]:
    """The per-unit costs one bench_build run measured."""
    holders = build["holders"]
    b, st = build["build"], build["store"]
    phases = b["phases"]
    certs = st["certificates"]
    records = build["synth"].get("records") or 0
    revoked = st["entries"]["revoked"]
    copy = build.get("store_copy", {})
    return {
        "holders": holders,
        "records_per_holder": round(records / holders, 3) if records else None,
        "certificates_per_holder": round(certs / holders, 3),
        "revoked_share": round(revoked / certs, 3),
        "apply_us_per_record": round(phases["apply"] / records * 1e6, 2) if records else None,
        "presign_per_s": b.get("presign_per_s") or round(b["presigned"] / phases["presign"]),
        "presign_vs_raw": b.get("presign_vs_raw"),
        "crl_s_per_million_revoked": round(phases.get("crl", 0) / revoked * 1e6, 2),
        "bytes_per_certificate_built": round(st["bytes"] / certs, 1),
        "bytes_per_certificate_copied": round(copy["bytes"] / certs, 1) if copy else None,
        "copy_s_per_million_certificates": round(copy["seconds"] / certs * 1e6, 2)
        if copy
        else None,
        "build_peak_anon_mib": b["peak_anon_mib"],
    }


def extrapolate(
    builds: list[dict[str, Any]], distinct: dict[str, Any] | None, population: int,
    memory: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    units = sorted((per_unit(b) for b in builds), key=lambda u: u["holders"])
    big = units[-1]
    certs = population * big["certificates_per_holder"]
    records = population * (big["records_per_holder"] or 0)
    revoked = certs * big["revoked_share"]
    apply_s = records * (big["apply_us_per_record"] or 0) / 1e6
    presign_s = revoked / big["presign_per_s"]
    crl_s = revoked / 1e6 * big["crl_s_per_million_revoked"]
    built = certs * big["bytes_per_certificate_built"]
    copied = certs * (big["bytes_per_certificate_copied"] or big["bytes_per_certificate_built"])
    out: dict[str, Any] = {
        "population_holders": population,
        "from": {"per_unit": units, "scaled_from_holders": big["holders"]},
        "certificates": round(certs),
        "records": round(records),
        "revoked": round(revoked),
        "rebuild_hours": {
            "apply": round(apply_s / 3600, 1),
            "presign": round(presign_s / 3600, 1),
            "crl": round(crl_s / 3600, 2),
            "total": round((apply_s + presign_s + crl_s) / 3600, 1),
        },
        "store_gib": {"built": round(built / 2**30), "compacted": round(copied / 2**30)},
        "note": "linear in the measured per-unit costs of the largest build; the apply cost "
        "per record grew between the builds listed (apply_slowdown_from_smallest), so the "
        "rebuild time is a lower bound",
    }
    if len(units) > 1 and units[0]["apply_us_per_record"] and big["apply_us_per_record"]:
        out["apply_slowdown_from_smallest"] = round(
            big["apply_us_per_record"] / units[0]["apply_us_per_record"], 2
        )
    if memory:
        last = memory["stages"][-1]
        out["worker_private_mib_after_touching"] = {
            "distinct": last["touched"], "mib": round(last["private_kib"] / 1024, 1),
        }  # fmt: skip
    if distinct:
        r = distinct.get("results", {})
        w2 = r.get("responder_w2", {})
        node = {
            "cached_answers_per_s_2_cores": round(w2.get("get_distinct", {}).get("rps", 0)),
            "fresh_signatures_per_s_2_cores": round(
                r.get("signing", {}).get("responder", {}).get("rps", 0)
            ),
            "measured_on_certificates": distinct.get("set", {}).get("store_certificates"),
        }
        out["one_node"] = node
        out["n_nodes"] = (
            "every node holds the whole store and answers alone (issue 16: the record stream "
            "feeds each node's builder), so N nodes serve N times one node's rate behind "
            "haproxy; each needs the store on local disk and, for cached-page latency, RAM for "
            "the hot part of it"
        )
    return out


def refresh(store_dir: Path) -> float:
    """A build with no new records (`bench.bench_build`'s flags, the clock's time): the CRLs
    re-issued and the answers near their nextUpdate re-signed, so that a store built hours ago
    answers (its delta CRLs last an hour; a stale issuer answers ``tryLater``). Seconds taken:
    about 5 minutes at 10,000,000 holders."""
    from bench.bench_build import _flags

    with tempfile.TemporaryDirectory(prefix="bench-national-empty-") as empty:
        t0 = time.monotonic()
        done = subprocess.run(
            [str(BIN / "crlbuilder"), "build", *_flags(store_dir), "--input", empty],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"refresh build failed: {done.stderr.strip()[-2000:]}")
        return time.monotonic() - t0


def bench_lapses(store_dir: Path, reps: int = 5) -> dict[str, Any]:
    """The earliest pending lapse by reading every notice, then from the lapse index."""
    from datetime import date

    from crlbuilder import rules

    def walk() -> object:
        with store.read() as r:
            due = [
                rules.move_out_lapse(date.fromisoformat(p.planned_date))
                for _, p in r.pending_notices()
                if not p.lapsed_at
            ]
        return min(due, default=None)

    def index() -> object:
        with store.read() as r:
            for planned, _ in r.pending_lapses():
                return rules.move_out_lapse(planned)
        return None

    store = Store.open(store_dir / "store", readonly=True)
    try:
        with store.read() as r:
            out: dict[str, Any] = {
                "notices_kept": r.count(sf.DB_PENDING),
                "notices_not_lapsed": r.count(sf.DB_LAPSES),
                "index_current": r.lapse_index_current(),
            }
        if not out["index_current"]:
            return out | {"error": "the store has no current lapse index (run a build first)"}
        for name, f in (("walk", walk), ("index", index)):
            times, found = [], None
            for _ in range(reps):
                t0 = time.perf_counter()
                found = f()
                times.append(time.perf_counter() - t0)
            out[f"{name}_seconds_median"] = sorted(times)[len(times) // 2]
            out[f"{name}_found"] = str(found)
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--store-dir", type=Path, required=True, help="a bench_build --dir")
    p.add_argument("--touch", type=int, default=1_000_000, help="distinct serials for memory")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--cold", type=int, default=20_000, help="distinct serials, cold cache")
    p.add_argument("--population", type=int, default=120_000_000)
    p.add_argument("--builds", type=Path, nargs="+",
                   default=[RESULTS / "build.json", RESULTS / "build_10m.json"])  # fmt: skip
    p.add_argument("--distinct", type=Path, default=RESULTS / "distinct.json")
    p.add_argument("--only", choices=("memory", "cold", "extrapolate", "lapses"), action="append")
    p.add_argument("--out", type=Path, default=RESULTS / "national.json")
    p.add_argument("--no-refresh", action="store_true",
                   help="serve the store as it is (default: a build with no new records first)")  # fmt: skip
    args = p.parse_args(argv)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result: dict[str, Any] = dict(previous)
    only = set(args.only or ("memory", "cold", "extrapolate", "lapses"))
    work = Path(tempfile.mkdtemp(prefix="bench-national-"))
    try:
        if only & {"memory", "cold"}:
            if not args.no_refresh:
                secs = refresh(args.store_dir)
                print(f"  refresh: a build with no new records, {secs:.0f} s", flush=True)
            store = Store.open(args.store_dir / "store", readonly=True)
            with store.read() as r:
                result["store_certificates"] = r.count(sf.DB_STATUS)
            store.close()
            result["store_bytes"] = (args.store_dir / "store" / "data.mdb").stat().st_blocks * 512
        if "memory" in only:
            result["memory"] = bench_memory(args.store_dir, work, args.touch, args.rounds)
        if "cold" in only:
            result["cold"] = bench_cold(args.store_dir, work, args.cold, skip=set())
        if "lapses" in only:
            result["lapses"] = bench_lapses(args.store_dir)
            print(json.dumps(result["lapses"], indent=2), flush=True)
        if "extrapolate" in only:
            builds = [json.loads(b.read_text()) for b in args.builds if b.exists()]
            if not builds:
                raise BenchError(f"no build results among {args.builds}")
            dist = json.loads(args.distinct.read_text()) if args.distinct.exists() else None
            result["extrapolation"] = extrapolate(
                builds, dist, args.population, result.get("memory")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("extrapolation", {}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
