"""`make bench`: rerun every benchmark, then rewrite the results table in bench/README.md.

Each benchmark is a module of this package writing one JSON file under
bench/results/; this driver runs them in turn (bounded in time and count, on
loopback only) and renders the table between the RESULTS markers of
bench/README.md from those files, so the table always shows the last run.

    python -m bench.run                 # everything (tens of minutes on 2 cores)
    python -m bench.run --only crl      # one benchmark
    python -m bench.run --render        # only rewrite the table from the JSON files
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"

BENCHES: dict[str, list[str]] = {
    "crl": ["-m", "bench.bench_crl", "--entries", "1000000", "--out", str(RESULTS / "crl.json")],
    "import": [
        "-m",
        "bench.bench_import",
        "--entries",
        "1000000",
        "--out",
        str(RESULTS / "import.json"),
    ],
    "build": [
        "-m",
        "bench.bench_build",
        "--holders",
        "1000000",
        "--out",
        str(RESULTS / "build.json"),
    ],
    "ocsp": ["-m", "bench.bench_ocsp"],
    "agreements": ["-m", "bench.bench_agreements", "--out", str(RESULTS / "agreements.json")],
    "metrics": ["-m", "bench.bench_metrics", "--out", str(RESULTS / "metrics.json")],
    "distinct": [
        "-m",
        "bench.bench_distinct",
        "--store-dir",
        str(HERE.parent / "var" / "bench-distinct"),
        "--holders",
        "1000000",
        "--requests",
        "100000",
        "--nonce-share",
        "0.1",
        "--sign-load",
        "--out",
        str(RESULTS / "distinct.json"),
    ],
    # one request repeated, against nginx, openssl ocsp and cfssl, on the store "distinct"
    # prepared just before (pki/, store/, crl/)
    "responder": [
        "-m",
        "bench.bench_responder",
        "--store-dir",
        str(HERE.parent / "var" / "bench-distinct"),
        "--seconds",
        "10",
        "--out",
        str(RESULTS / "responder.json"),
    ],
    # the open loop's slow answers at half the maximum rate, by what the cores ran meanwhile
    # (a perf sched_switch trace), the responder's and nginx's, on the store "distinct"
    "tail": [
        "-m",
        "bench.bench_tail",
        "--store-dir",
        str(HERE.parent / "var" / "bench-distinct"),
        "--out",
        str(RESULTS / "tail.json"),
    ],
    # a spool file dropped while every stored answer of the store "distinct" is re-signed (as
    # when an issuer's answers fall due): arrival to commit, the follow loop's runs bounded
    "walk": [
        "-m",
        "bench.bench_build",
        "--holders",
        "1000000",
        "--dir",
        str(HERE.parent / "var" / "bench-distinct"),
        "--incremental-only",
        "--during-walk",
        "20",
        "--out",
        str(RESULTS / "build.json"),
    ],
    "freshness": ["-m", "bench.bench_freshness", "--out", str(RESULTS / "freshness.json")],
    "group_freshness": [
        "-m",
        "bench.bench_group_freshness",
        "--out",
        str(RESULTS / "group_freshness.json"),
    ],
    "pkcs11": ["-m", "bench.bench_pkcs11", "--out", str(RESULTS / "pkcs11.json")],
    "v1_verify": ["-m", "bench.bench_v1_verify", "--out", str(RESULTS / "v1_verify.json")],
    "v1_status": ["-m", "bench.bench_v1_status", "--out", str(RESULTS / "v1_status.json")],
    "v1_changes": [
        "-m",
        "bench.bench_v1_changes",
        "--watched",
        "1000000",
        "--out",
        str(RESULTS / "v1_changes.json"),
    ],
}

NATIONAL_DIR = HERE.parent / "var" / "bench-national"


def _national_build(*steps: str) -> list[str]:
    """``bench_build`` on the 10,000,000-holder store, with ``steps``, into build_10m.json."""
    return ["-m", "bench.bench_build", "--holders", "10000000", "--dir", str(NATIONAL_DIR),
            *steps, "--out", str(RESULTS / "build_10m.json")]  # fmt: skip


OPTIONAL: dict[str, list[list[str]]] = {
    # hours on 2 cores (synth, build and copy of 10,000,000 holders, then 1,000,000 distinct
    # serials served): run by name only, `python -m bench.run --only national` (make
    # bench-national); its results stay in the table until the next such run
    "national": [
        _national_build("--reuse"),
        # the follow loop as deployed: pre-signing and CRLs after one file
        _national_build("--incremental-only", "--post-commit"),
        # a file dropped while every stored answer is re-signed
        _national_build("--incremental-only", "--during-walk", "20"),
        [
            "-m",
            "bench.bench_national",
            "--store-dir",
            str(NATIONAL_DIR),
            "--out",
            str(RESULTS / "national.json"),
        ],
    ],
}


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    if not p.exists():
        return None
    data: dict[str, Any] = json.loads(p.read_text())
    return data


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def _by_key(d: Any) -> str:
    """``{"status": 143.9, "meta": 0.0, ...}`` as "status 144, ...": largest first, zeros left out."""
    if not isinstance(d, dict) or not d:
        return "—"
    items = sorted(((k, v) for k, v in d.items() if v), key=lambda kv: -float(kv[1]))
    return ", ".join(f"{k} {_fmt(round(v) if v >= 10 else v)}" for k, v in items)


def render() -> str:
    rows: list[tuple[str, str, str, str]] = []
    add: Callable[[str, str, str, str], None] = lambda *r: rows.append(r)  # noqa: E731
    for build in (_load("build"), _load("build_10m")):
        if not build:
            continue
        n = _fmt(build.get("holders"))
        add(f"synth --holders {n}", _fmt(_get(build, "synth", "seconds"), " s"),
            f"peak anonymous memory {_fmt(_get(build, 'synth', 'peak_anon_mib'), ' MiB')}, {_fmt(_get(build, 'synth', 'records'))} records",
            "`python -m bench.bench_build`")  # fmt: skip
        add(f"full build, {n} holders", _fmt(_get(build, "build", "seconds"), " s"),
            f"apply {_fmt(_get(build, 'build', 'records_per_s_apply'))} records/s (goal ≥ 100,000); phases (s) {_by_key(_get(build, 'build', 'phases'))};"
            f" peak anonymous memory {_fmt(_get(build, 'build', 'peak_anon_mib'), ' MiB')}", "same")  # fmt: skip
        if _get(build, "build", "presign_vs_raw") is not None:
            add(f"presign, {n} holders", f"{_fmt(_get(build, 'build', 'presign_vs_raw'))}× raw RSA",
                f"{_fmt(_get(build, 'build', 'presign_per_s'))} answers/s against raw cryptography signing"
                f" {_fmt(_get(build, 'build', 'raw_signs_per_s'))}/s, one process per core, right after"
                " (goal ≥ 0.9×)", "same")  # fmt: skip
        add(f"store size, {n} holders", _fmt(_get(build, "store", "mib_per_million_certificates"), " MiB per million certificates"),
            f"{_fmt(_get(build, 'store', 'certificates'))} certificates, {_fmt(_get(build, 'store', 'bytes'))} bytes"
            + (f"; bytes per certificate by database: {_by_key(_get(build, 'store', 'bytes_per_certificate_by_db'))}"
               if _get(build, "store", "bytes_per_certificate_by_db") else ""),
            "same")  # fmt: skip
        if _get(build, "store_copy"):
            add(f"store compacted (`crlbuilder store copy`), {n} holders",
                _fmt(_get(build, "store_copy", "mib_per_million_certificates"), " MiB per million certificates"),
                f"copy {_fmt(_get(build, 'store_copy', 'seconds'), ' s')}; by database"
                f" {_by_key(_get(build, 'store_copy', 'bytes_per_certificate_by_db'))} (goal ≤ 400 MiB)", "same")  # fmt: skip
        add(f"incremental, {_fmt(_get(build, 'incremental', 'records'))} records",
            _fmt(_get(build, "incremental", "arrival_to_committed_seconds"), " s"),
            "spool file arrival to committed (goal < 0.5 s)"
            + (f"; the loop's interval {_fmt(iv, ' s')} (a file renamed in wakes it)"
               if (iv := _get(build, "incremental", "follow_interval_seconds")) else ""),
            "same")  # fmt: skip
        post = _get(build, "incremental_post_commit")
        if post:
            secs = post.get("file_seconds") or {}
            add(f"the follow loop after {_fmt(post.get('records'))} records, {n} holders",
                _fmt(round(sum(v for k, v in secs.items() if k != "apply"), 2), " s"),
                f"after the commit: presign {_fmt(secs.get('presign'), ' s')} ({_fmt(post.get('file_ocsp_presigned'))}"
                f" answers, {_fmt(post.get('file_ocsp_walked'))} issuers read whole), CRLs {_fmt(secs.get('crl'), ' s')};"
                f" the start-up build's presign {_fmt(_get(post, 'start_seconds', 'presign'), ' s')}"
                f" ({_fmt(post.get('start_ocsp_walked'))} issuers read whole)",
                "`python -m bench.bench_build --incremental-only --post-commit`")  # fmt: skip
        walk = _get(build, "incremental_during_walk")
        if walk:
            add(f"{_fmt(walk.get('records'))} records while every stored answer is re-signed, {n} holders",
                _fmt(walk.get("arrival_to_committed_seconds"), " s"),
                f"spool file arrival to committed, dropped {_fmt(walk.get('dropped_after_start_seconds'), ' s')}"
                f" into the re-signing ({_fmt(walk.get('presigned_before'))} answers signed by then); the"
                f" file's run left {_fmt(walk.get('file_ocsp_walking'))} issuers' walks going on"
                + (f"; the walk's runs alone {_fmt(walk.get('walk_answers_per_second'))} answers/s,"
                   f" {_fmt(walk.get('walk_over_raw'), '×')} raw signing"
                   f" ({_fmt(walk.get('raw_signatures_per_second'))}/s right after)"
                   if walk.get("walk_over_raw") else ""),
                f"`python -m bench.bench_build --incremental-only --during-walk"
                f" {round(walk.get('dropped_after_start_seconds') or 20)}`")  # fmt: skip
    crl = _load("crl")
    if crl:
        add(f"CRL of {_fmt(crl.get('entries'))} entries: encode + sign",
            _fmt(_get(crl, "encode", "ours_seconds"), " s"),
            f"`openssl ca -gencrl` on the same set {_fmt(_get(crl, 'encode', 'openssl_ca_gencrl_seconds'), ' s')}:"
            f" {_fmt(_get(crl, 'encode', 'speedup_vs_openssl'), '×')} faster", "`python -m bench.bench_crl`")  # fmt: skip
        add(f"CRL of {_fmt(crl.get('entries'))} entries: parse + verify + walk",
            _fmt(_get(crl, "import", "ours_total_seconds"), " s"),
            f"cryptography load + iterate {_fmt(_get(crl, 'import', 'cryptography_total_seconds'), ' s')}",
            "same")  # fmt: skip
    imp = _load("import")
    if imp:
        add(f"import-crl of {_fmt(imp.get('entries'))} entries", _fmt(imp.get("import_seconds"), " s"),
            f"into a fresh store: parse, verify, write (goal < 10 s); next full CRL with 1% changed"
            f" {_fmt(_get(imp, 'runs', 'next', 'seconds'), ' s')}", "`python -m bench.bench_import`")  # fmt: skip

    resp = _load("responder")
    if resp:
        for sample in ("revoked", "good"):
            r = _get(resp, "ratios", sample) or {}
            add(f"responder vs peers, {sample} answer (wrk -c32 keep-alive POST)",
                f"{_fmt(r.get('ratio_nginx'))}× nginx",
                f"{_fmt(r.get('ratio_openssl'))}× `openssl ocsp -multi 2`, {_fmt(r.get('ratio_cfssl'))}× cfssl"
                " ocspserve (goals ≥ 0.8×, ≥ 10×, > 1×)", "`python -m bench.bench_responder`")  # fmt: skip
        goals = resp.get("goals", {})
        for name, g in goals.items():
            if "p99" in name or "fresh" in name:
                value = g.get("value_ms", g.get("value"))
                said = "met" if g.get("met") else "not met"
                if "nginx_ms" in g:
                    said += f"; nginx under the same load at the same rate p99 {_fmt(g['nginx_ms'], ' ms')}"
                add(name, _fmt(value, " ms" if "value_ms" in g else "×"), said, "same")  # fmt: skip
        for lat in resp.get("latency_half_max", []):
            sweep = lat.get("open_loop_by_fraction") or {}
            if sweep:
                under = [f for f, o in sweep.items() if o.get("p99_us", 1e9) < 1000]
                add(f"open loop (Poisson arrivals), workers={lat.get('workers')}: p99 by share of the max rate",
                    f"< 1 ms up to {float(max(under, key=float)):.1%} of it" if under else "≥ 1 ms at every share",
                    "; ".join(f"{float(f):.0%} ({_fmt(o.get('achieved_rps'))}/s): p50 {_fmt(o.get('p50_us'))},"
                              f" p99 {_fmt(o.get('p99_us'))}, p99.9 {_fmt(o.get('p999_us'))} µs"
                              for f, o in sweep.items()),
                    "same")  # fmt: skip
    tail = _load("tail")
    if tail:
        for who in ("responder", "nginx"):
            s = _get(tail, who, "slow_answers") or {}
            c = s.get("classes") or {}
            add(f"open loop at {_fmt(tail.get('rate'))}/s ({round(100 * (tail.get('fraction') or 0))}% of the responder's max),"
                f" {who} 1 worker: answers over {_fmt(s.get('threshold_ms'), ' ms')}",
                _fmt(round(100 * (s.get("slow_share") or 0.0), 2), "%"),
                f"p50 {_fmt(_get(tail, who, 'p50_us'))}, p99 {_fmt(_get(tail, who, 'p99_us'))} µs; the slow ones"
                f" waited behind a task of the machine's on a core {_fmt(c.get('foreign'))}, behind the"
                f" server itself {_fmt(c.get('server_busy'))}, other {_fmt(c.get('other'))}; on the cores"
                f" {_fmt(_get(tail, who, 'server_on_cpu', 'cpu_us_per_answer'))} µs per answer;"
                f" its maximum {_fmt(_get(tail, 'max_rate', who, 'rps'))}/s at"
                f" {_fmt(_get(tail, 'max_rate', who, 'server_cpu_us_per_answer'))} µs per answer, waking"
                f" halted cores {_fmt(sum(_get(tail, 'max_rate', who, 'ipis_per_answer_by_cpu', 'CAL') or [0]))}"
                f" times per answer; halt-polling {_fmt(tail.get('halt_poll_ns'), ' ns')}",
                "`python -m bench.bench_tail`")  # fmt: skip
    dist = _load("distinct")
    if dist:
        st = dist.get("set", {})
        what = (f"{_fmt(st.get('requests'))} distinct requests over a store of"
                f" {_fmt(st.get('store_certificates'))} certificates")  # fmt: skip
        ng = _get(dist, "results", "nginx", "get_distinct") or {}
        for w in ("responder_w1", "responder_w2"):
            r = _get(dist, "ratios", w) or {}
            res = _get(dist, "results", w) or {}
            get = res.get("get_distinct", {})
            add(f"{what}, GET, {w[-2:]} vs nginx 1 worker (wrk -c32 keep-alive)",
                f"{_fmt(r.get('get_distinct_over_nginx'))}× nginx",
                f"CPU per answer {_fmt(get.get('cpu_us_per_answer'))} µs vs nginx {_fmt(ng.get('cpu_us_per_answer'))} µs"
                f" (CPU ratio {_fmt(r.get('cpu_nginx_over_get_distinct'))}); distinct POST / single POST"
                f" {_fmt(r.get('post_distinct_over_post_single'))}; p99 {_fmt((get.get('latency_us') or {}).get('99'))} µs",
                "`python -m bench.bench_distinct`")  # fmt: skip
        sig = _get(dist, "results", "signing")
        if sig:
            cpu = _get(sig, "responder", "cpu_us_per_answer")
            raw = sig.get("raw_cpu_us_per_signature")
            add("fresh signing, every request with a nonce, 2 workers", f"{_fmt(sig.get('ratio'))}× raw RSA",
                f"by CPU: {_fmt(cpu)} µs per answer vs {_fmt(raw)} µs per raw signature"
                f" ({_fmt(raw / cpu if cpu and raw else None)}×; goal ≥ 0.9×)", "same")  # fmt: skip
    fresh = _load("freshness")
    if fresh:
        ms = fresh.get("spool_to_revoked_ms", {})
        add(f"spool record to first revoked answer ({_fmt(fresh.get('revocations'))} revocations)",
            f"median {_fmt(ms.get('median'), ' ms')}",
            f"max {_fmt(ms.get('max'), ' ms')}; good answers after the first revoked one:"
            f" {_fmt(fresh.get('good_after_first_revoked'))} (must be 0)", "`python -m bench.bench_freshness`")  # fmt: skip
    gfresh = _load("group_freshness")
    if gfresh:
        ms = gfresh.get("record_to_member_ms", {})
        add(f"record at the 機構 to a member's revoked answer from its group ({_fmt(gfresh.get('revocations'))} revocations,"
            f" cycle {_fmt(gfresh.get('cycle_seconds'))} s)", f"median {_fmt(ms.get('median'), ' ms')}",
            f"max {_fmt(ms.get('max'), ' ms')} (goal cycle + 1 s = {_fmt(gfresh.get('goal_ms'), ' ms')})",
            "`python -m bench.bench_group_freshness`")  # fmt: skip
    agr = _load("agreements")
    if agr:
        add("agreements + ledger on the hot path", _fmt(agr.get("added_us"), " µs/request"),
            f"policy {_fmt(agr.get('policy_decide_us'))} + quota {_fmt(agr.get('quota_admit_us'))}"
            f" (with a quota {_fmt(agr.get('quota_admit_with_quota_us'))}) + ledger {_fmt(agr.get('ledger_count_us'))} µs;"
            f" {_fmt(100 * agr['share_of_request_work'])}% of the app's {_fmt(agr.get('request_total_us'))} µs"
            " (goal < 10%)", "`python -m bench.bench_agreements`")  # fmt: skip
    p11 = _load("pkcs11")
    if p11:
        for path, what in (
            ("presign_batch", "presign batch (builder worker loop)"),
            ("fresh_answers", "fresh answers (responder SignJob, nonce)"),
        ):
            r = p11.get(path) or {}
            ps = r.get("per_second") or {}
            add(f"SoftHSM2 vs PEM signing, {what}, RSA-{p11.get('bits')}",
                f"{_fmt(r.get('ratio_pkcs11_to_pem'))}× PEM",
                f"pkcs11 {_fmt(ps.get('pkcs11'))}/s, PEM {_fmt(ps.get('pem'))}/s, raw cryptography"
                f" {_fmt(ps.get('raw'))}/s per CPU second, one thread (goal ≥ 0.8×:"
                f" {'met' if r.get('goal_met') else 'not met'})", "`python -m bench.bench_pkcs11`")  # fmt: skip
    ver = _load("v1_verify")
    if ver:
        for fmt, what in (
            ("cms-detached", "CMS detached"),
            ("pkcs1", "raw PKCS#1"),
            ("xmldsig", "XMLDSig"),
        ):
            r = _get(ver, "formats", fmt) or {}
            goal = (
                " (goal ≥ 0.5×: " + ("met" if _get(ver, "goal", "met") else "not met") + ")"
                if fmt == "cms-detached"
                else ""
            )
            add(f"POST /v1/verify, {what}, batches of {_fmt(ver.get('batch'))}",
                f"{_fmt(r.get('ratio_server_to_bare_cpu'))}× bare calls per CPU second{goal}",
                f"server {_fmt(r.get('server_per_cpu_s'))}/CPU-s ({_fmt(r.get('server_per_s'))}/s on 2 workers),"
                f" bare parse + RSA verify {_fmt(r.get('bare_per_cpu_s'))}/CPU-s ({_fmt(r.get('bare_per_s'))}/s in 2 processes);"
                f" raw RSA-2048 verify {_fmt(ver.get('raw_rsa_verify_per_cpu_s'))}/CPU-s",
                "`python -m bench.bench_v1_verify`")  # fmt: skip
    v1s = _load("v1_status")
    if v1s:
        cpu = _get(v1s, "batch_server_cpu_ms", "handle", "median")
        add(f"POST /v1/status, {_fmt(v1s.get('entries'))} entries per call",
            f"{_fmt(cpu, ' ms')} server CPU per call",
            f"goal < 50 ms ({'met' if v1s.get('goal_met_cpu') else 'not met'} in CPU time; wall time"
            f" {_fmt(_get(v1s, 'batch_server_ms', 'median'), ' ms')} at load {_fmt((v1s.get('load_average') or [None])[0])});"
            f" {_fmt(v1s.get('batch_entries_per_s'))} entries/s against {_fmt(v1s.get('ocsp_answers_per_s'))}"
            " single OCSP answers/s in the same run", "`python -m bench.bench_v1_status`")  # fmt: skip
        alone, mixed = (
            v1s.get("ocsp_client_ms_alone") or {},
            v1s.get("ocsp_client_ms_during_batches") or {},
        )
        add("single OCSP answers while batches of 10,000 run (one worker)",
            f"p99 {_fmt(mixed.get('p99'), ' ms')}",
            f"p50 {_fmt(mixed.get('p50'), ' ms')}; alone p50 {_fmt(alone.get('p50'), ' ms')}, p99"
            f" {_fmt(alone.get('p99'), ' ms')} (the batches run in the worker's batch thread)", "same")  # fmt: skip
    met = _load("metrics")
    if met:
        add("metrics on the hot path", _fmt(met.get("in_process_added_us"), " µs/request"),
            f"in process (HTTP layer and app) {_fmt(met.get('in_process_increase_percent'))}% more;"
            f" under load (wrk -c32, 1 worker, on against off) {_fmt(met.get('cost_percent'))}% of"
            f" the rate and {_fmt(met.get('worker_cpu_increase_percent'))}% of the worker's CPU"
            " per request (goal < 5%)", "`python -m bench.bench_metrics`")  # fmt: skip
    feed = _load("v1_changes")
    if feed:
        add(f"changes feed: register {_fmt(feed.get('watched'))} watched certificates",
            _fmt(_get(feed, "register", "seconds"), " s"),
            f"POST /v1/watch, {_fmt(_get(feed, 'register', 'calls'))} calls of 10,000: median"
            f" {_fmt(_get(feed, 'register', 'per_call_ms_median'), ' ms')} per call; lists"
            f" {_fmt((feed.get('watch_lists_bytes') or 0) // (1 << 20), ' MiB')} on disk",
            "`python -m bench.bench_v1_changes`")  # fmt: skip
        add(f"changes feed: read a day's changes ({_fmt(feed.get('day_changes'))} in the feed)",
            _fmt(_get(feed, "read", "seconds"), " s"),
            f"GET /v1/changes, {_fmt(_get(feed, 'read', 'calls'))} call(s), "
            f"{_fmt(_get(feed, 'read', 'delivered'))} watched changes delivered,"
            f" {_fmt(_get(feed, 'read', 'feed_entries_per_s'))} feed entries/s", "same")  # fmt: skip
    nat = _load("national")
    if nat:
        mem = _get(nat, "memory", "stages") or []
        if mem:
            last = mem[-1]
            add(f"worker private memory after touching {_fmt(last.get('touched'))} distinct serials"
                f" ({_fmt(nat.get('store_certificates'))} certificates)",
                _fmt(round(last["private_kib"] / 1024, 1), " MiB"),
                "by round: " + ", ".join(_fmt(round(m["private_kib"] / 1024, 1)) for m in mem)
                + " MiB (goal < 100 MB, flat); store pages mapped"
                f" {_fmt(round(last['store_mapped_rss_kib'] / 1024))} MiB (page cache, shared)",
                "`python -m bench.bench_national`")  # fmt: skip
        for label in ("cold", "warm"):
            c = _get(nat, "cold", label) or {}
            if c:
                add(f"one at a time, {label} page cache ({_fmt(_get(nat, 'cold', 'requests'))} distinct serials)",
                    f"p50 {_fmt(_get(c, 'all', 'p50_ms'), ' ms')}, p99 {_fmt(_get(c, 'all', 'p99_ms'), ' ms')}",
                    f"revoked (stored) p50/p99 {_fmt(_get(c, 'revoked', 'p50_ms'))}/{_fmt(_get(c, 'revoked', 'p99_ms'))} ms;"
                    f" good p50/p99 {_fmt(_get(c, 'good', 'p50_ms'))}/{_fmt(_get(c, 'good', 'p99_ms'))} ms", "same")  # fmt: skip
        lapses = nat.get("lapses") or {}
        if lapses.get("index_current"):
            add(f"the next 30-day lapse ({_fmt(lapses.get('notices_kept'))} move-out notices kept)",
                _fmt(round(lapses["index_seconds_median"] * 1e6, 1), " µs"),
                f"from the lapse index; reading every notice {_fmt(round(lapses['walk_seconds_median'], 3), ' s')}",
                "`python -m bench.bench_national --only lapses`")  # fmt: skip
        ex = nat.get("extrapolation") or {}
        if ex:
            add(f"extrapolated to {_fmt(ex.get('population_holders'))} holders",
                f"rebuild {_fmt(_get(ex, 'rebuild_hours', 'total'))} h",
                f"{_fmt(ex.get('certificates'))} certificates, {_fmt(ex.get('records'))} records; apply"
                f" {_fmt(_get(ex, 'rebuild_hours', 'apply'))} h, presign {_fmt(_get(ex, 'rebuild_hours', 'presign'))} h;"
                f" store {_fmt(_get(ex, 'store_gib', 'built'))} GiB built, {_fmt(_get(ex, 'store_gib', 'compacted'))} GiB"
                " compacted (details in the section below)", "`python -m bench.bench_national --only extrapolate`")  # fmt: skip
    lines = ["| what | result | detail | rerun |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_readme() -> None:
    text = README.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", choices=sorted([*BENCHES, *OPTIONAL]), action="append")
    p.add_argument("--render", action="store_true", help="only rewrite the README table")
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.render:
        for name in args.only or BENCHES:
            print(f"== {name}", flush=True)
            for step in OPTIONAL.get(name) or [BENCHES[name]]:
                rc = subprocess.run([sys.executable, *step], check=False).returncode
                if rc != 0:
                    print(f"bench {name} failed (exit {rc})", file=sys.stderr)
                    break
    write_readme()
    print(README.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
