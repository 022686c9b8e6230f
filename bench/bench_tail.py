"""Where the open loop's slow answers come from: what each core ran while they waited.

    python -m bench.bench_tail --store-dir var/bench-distinct [--fraction 0.5] [--seconds 20]
        [--threshold-ms 1] [--pin] [--halt-poll-ns N] [--out bench/results/tail.json]

`bench.bench_responder`'s latency step reports one worker's p99 at half its maximum rate under
Poisson arrivals (`bench.openloop`); this explains it. The responder (one worker) serves the
open loop at ``--fraction`` of the rate wrk measures first (one revoked POST, its pre-signed
answer), then nginx serves the same answer at the same rate (its own maximum measured too;
each maximum with the server's CPU per answer and the inter-processor interrupts per answer
on each core, from /proc/interrupts), each while `perf record -a -e sched:sched_switch`
(clock CLOCK_MONOTONIC, written to tmpfs so that its own writes wake no disk writeback)
records what every core ran. The generator's trace gives each request's
scheduled instant and latency on the same clock. Every answer slower than ``--threshold-ms``
is put in one class by what the cores ran during its wait:

- ``foreign``: a task that is neither the server, the generator, this harness (this script,
  perf) nor idle held one core for at least 30% of the wait: the machine's other processes and
  kernel threads (the report names the busiest);
- ``server_busy``: the server's threads were on a core for at least 80% of the wait: a queue
  behind a stretch of slow service;
- ``other``: neither (waits in the kernel, shorter overlaps of both).

It also reports the server's continuous stretches on a core longer than 1 ms: their length, the
answers completed in them and the µs per answer that makes (a stretch lasts only while the
server is behind, so this is its service time there), beside its mean CPU per answer. With
``--pin`` the server runs on the last core and the generator (with this script and perf) on the
first, so that the two never share one. With ``--halt-poll-ns`` the guest's halt-polling (KVM
guests: /sys/module/haltpoll/parameters/guest_halt_poll_ns) is set for the run and put back
afterwards (root). Needs perf (Debian: linux-perf) and root, or perf_event_paranoid at -1.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import openloop
from bench.bench_responder import (
    HALT_POLL,
    ROOT,
    Ctx,
    cpu_seconds,
    halt_poll_ns,
    lua_fixed,
    make_ctx,
    responder,
    run_wrk,
    static_nginx,
    verify_responder,
)
from bench.procs import BenchError, children

FOREIGN_SHARE: Final = 0.3
"""A foreign task holding one core this share of a slow answer's wait classes it ``foreign``."""
BUSY_SHARE: Final = 0.8
"""The server on a core this share of the wait classes it ``server_busy``."""
STRETCH_GAP: Final = 20e-6
"""Two runs of the server on a core this close together count as one stretch."""

_SWITCH: Final = re.compile(
    r"\s*(?P<comm>.*?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<t>\d+\.\d+):\s+"
    r"sched:sched_switch:.*?==> next_comm=(?P<next>.*?) next_pid=(?P<pid>\d+) "
)


@dataclass(frozen=True)
class Segment:
    """One core running one thread from ``start`` to ``end`` (CLOCK_MONOTONIC seconds)."""

    start: float
    end: float
    comm: str
    tid: int


@dataclass(frozen=True)
class Request:
    """One measured request of the open loop: scheduled at ``at``, answered ``latency`` s
    later."""

    at: float
    latency: float


# --- the analysis (pure: perf's and the generator's text in, figures out) -----------------


def parse_switches(lines: Iterable[str]) -> dict[int, list[Segment]]:
    """Per core, what ran when, from `perf script -F comm,tid,cpu,time,event,trace` lines of
    sched_switch events (each closes the core's current segment and opens the next)."""
    cores: dict[int, list[Segment]] = {}
    current: dict[int, tuple[float, str, int]] = {}
    for line in lines:
        m = _SWITCH.match(line)
        if m is None:
            continue
        cpu, t = int(m["cpu"]), float(m["t"])
        if cpu in current:
            start, comm, tid = current[cpu]
            cores.setdefault(cpu, []).append(Segment(start, t, comm, tid))
        current[cpu] = (t, m["next"], int(m["pid"]))
    return cores


def parse_trace(text: str) -> list[Request]:
    """The generator's trace (`bench.openloop`, ``trace``): a start line with its
    CLOCK_MONOTONIC instant, then one measured request a line."""
    lines = text.splitlines()
    head = re.match(r"# start (\d+\.\d+)", lines[0]) if lines else None
    if head is None:
        raise BenchError("bench_tail: the generator's trace has no start line")
    t0 = float(head[1])
    out = []
    for line in lines[1:]:
        at, lat = line.split()[:2]
        out.append(Request(t0 + float(at), float(lat) / 1e6))
    return out


class Timeline:
    """What each core ran, queried by time window."""

    def __init__(self, cores: dict[int, list[Segment]]) -> None:
        self.cores = {c: sorted(s, key=lambda x: x.start) for c, s in cores.items()}
        self._starts = {c: [s.start for s in segs] for c, segs in self.cores.items()}

    def occupancy(self, a: float, b: float) -> dict[int, dict[tuple[str, int], float]]:
        """Per core, the seconds of [a, b] each thread (command name, tid) held it."""
        out: dict[int, dict[tuple[str, int], float]] = {}
        for c, segs in self.cores.items():
            held: defaultdict[tuple[str, int], float] = defaultdict(float)
            i = max(0, bisect.bisect_right(self._starts[c], a) - 1)
            while i < len(segs) and segs[i].start < b:
                s = segs[i]
                overlap = min(s.end, b) - max(s.start, a)
                if overlap > 0:
                    held[s.comm, s.tid] += overlap
                i += 1
            out[c] = held
        return out


@dataclass(frozen=True)
class Roles:
    """Which threads are whose: the server's, the harness's (this script, perf), the generator's
    (by its command name); idle is tid 0; anything else is foreign."""

    server: frozenset[int]
    harness: frozenset[int]
    generator_comm: str = "openloop"

    def of(self, comm: str, tid: int) -> str:
        if tid == 0:
            return "idle"
        if tid in self.server:
            return "server"
        if tid in self.harness or comm == "perf":
            return "harness"
        if comm == self.generator_comm:
            return "generator"
        return "foreign"


def classify(
    tl: Timeline, roles: Roles, requests: list[Request], threshold: float
) -> dict[str, Any]:
    """Every request slower than ``threshold`` s put in one class (module docstring), with
    the foreign tasks' time during those waits by name."""
    classes: Counter[str] = Counter()
    foreign_by_comm: defaultdict[str, float] = defaultdict(float)
    slow = [r for r in requests if r.latency > threshold]
    for r in slow:
        occ = tl.occupancy(r.at, r.at + r.latency)
        server = 0.0
        foreign_max = 0.0
        for held in occ.values():
            foreign_here = 0.0
            for (comm, tid), secs in held.items():
                role = roles.of(comm, tid)
                if role == "server":
                    server += secs
                elif role == "foreign":
                    foreign_here += secs
                    foreign_by_comm[_task_name(comm)] += secs
            foreign_max = max(foreign_max, foreign_here)
        if foreign_max >= FOREIGN_SHARE * r.latency:
            classes["foreign"] += 1
        elif server >= BUSY_SHARE * r.latency:
            classes["server_busy"] += 1
        else:
            classes["other"] += 1
    n = len(requests)
    return {
        "requests": n,
        "threshold_ms": threshold * 1e3,
        "slow": len(slow),
        "slow_share": round(len(slow) / n, 5) if n else 0.0,
        "classes": {k: classes[k] for k in ("foreign", "server_busy", "other")},
        "foreign_tasks_ms": {
            k: round(v * 1e3, 1)
            for k, v in sorted(foreign_by_comm.items(), key=lambda kv: -kv[1])[:8]
        },
    }


def _task_name(comm: str) -> str:
    """A thread's command name without the per-instance suffix of kernel workers."""
    return re.sub(r"[:/]\d.*$", "", comm) if comm.startswith("kworker") else comm


def stretches(
    tl: Timeline, roles: Roles, requests: list[Request], longer_than: float = 1e-3
) -> dict[str, Any]:
    """The server's continuous stretches on a core longer than ``longer_than`` s (runs closer
    than `STRETCH_GAP` merged) that start in the measured period, and the answers completed in
    each, against its time on the cores per answer over that period."""
    done = sorted(r.at + r.latency for r in requests)
    t0 = min((r.at for r in requests), default=0.0)
    t1 = done[-1] if done else 0.0
    runs: list[list[float]] = []
    total = 0.0
    for segs in tl.cores.values():
        mine = [s for s in segs if roles.of(s.comm, s.tid) == "server"]
        total += sum(max(0.0, min(s.end, t1) - max(s.start, t0)) for s in mine)
        merged: list[list[float]] = []
        for s in mine:
            if merged and s.start - merged[-1][1] < STRETCH_GAP:
                merged[-1][1] = max(merged[-1][1], s.end)
            else:
                merged.append([s.start, s.end])
        runs += [m for m in merged if m[1] - m[0] > longer_than]
    window = [r for r in runs if t0 <= r[0] <= t1]
    rows = []
    for a, b in window:
        answers = bisect.bisect_left(done, b) - bisect.bisect_left(done, a)
        rows.append((b - a, answers))
    rows.sort(reverse=True)
    per_answer = sorted(1e6 * d / a for d, a in rows if a)
    return {
        "cpu_us_per_answer": round(1e6 * total / max(len(requests), 1), 1),
        "stretches_over_1ms": len(rows),
        "stretches_over_5ms": sum(d > 5e-3 for d, _ in rows),
        "seconds_in_stretches": round(sum(d for d, _ in rows), 3),
        "us_per_answer_in_stretches_median": (
            round(per_answer[len(per_answer) // 2], 1) if per_answer else None
        ),
        "longest": [
            {"ms": round(d * 1e3, 2), "answers": a, "us_per_answer": round(1e6 * d / a, 1)}
            for d, a in rows[:5]
            if a
        ],
    }


# --- the run -------------------------------------------------------------------------------


def _tids(pids: Iterable[int]) -> set[int]:
    out: set[int] = set()
    for pid in pids:
        try:
            out |= {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        except OSError:
            continue
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


@contextmanager
def halt_poll(ns: int | None) -> Iterator[int | None]:
    """The guest's halt-polling set to ``ns`` for the block and put back after; yields the
    value in force (None where the guest has no haltpoll driver)."""
    before = halt_poll_ns()
    if ns is None or before is None:
        if ns is not None:
            raise SystemExit(f"bench_tail: no {HALT_POLL} (not a KVM guest with haltpoll)")
        yield before
        return
    try:
        HALT_POLL.write_text(str(ns))
    except OSError as e:
        raise SystemExit(f"bench_tail: cannot set {HALT_POLL}: {e.strerror}") from None
    try:
        yield ns
    finally:
        HALT_POLL.write_text(str(before))


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """This process (and what it starts) on ``cpus`` for the block."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def interrupts() -> dict[str, list[int]]:
    """The inter-processor interrupts taken so far, per CPU, from /proc/interrupts: ``CAL``
    (function calls: how this kernel wakes a task on a halted core) and ``RES``
    (rescheduling)."""
    out: dict[str, list[int]] = {}
    ncpu = os.cpu_count() or 1
    for line in Path("/proc/interrupts").read_text().splitlines():
        f = line.split()
        if f and f[0] in ("CAL:", "RES:"):
            out[f[0][:-1]] = [int(x) for x in f[1 : 1 + ncpu]]
    return out


def max_rate(url: str, lua: Path, server_pid: int, pin: bool) -> dict[str, Any]:
    """wrk (32 keep-alive connections, 5 s) against ``url``: the rate, the server's CPU per
    answer and the inter-processor interrupts per answer on each core (with ``pin``, the
    generator's core first, the server's last)."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin:
        for tid in _tids(_tree(server_pid)):
            os.sched_setaffinity(tid, {cpus[-1]})
    with pinned({cpus[0]} if pin else None):
        irq0, cpu0 = interrupts(), cpu_seconds(server_pid)
        r = run_wrk(url, lua, 5, 32)
        irq1, cpu1 = interrupts(), cpu_seconds(server_pid)
    n = max(r.requests, 1)
    return {
        "rps": round(r.rps),
        "server_cpu_us_per_answer": round(1e6 * (cpu1 - cpu0) / n, 1),
        "ipis_per_answer_by_cpu": {
            k: [round((b - a) / n, 3) for a, b in zip(irq0[k], irq1[k], strict=True)]
            for k in irq1
            if k in irq0
        },
    }


def traced_load(
    ctx: Ctx, url: str, server_pid: int, rate: float, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    """The open loop against ``url`` at ``rate`` under a system-wide sched_switch trace;
    the generator's figures and the analysis."""
    cpus = sorted(os.sched_getaffinity(0))
    server = _tree(server_pid)
    if args.pin:
        for tid in _tids(server):
            os.sched_setaffinity(tid, {cpus[-1]})
    data = scratch / "perf.data"
    trace = scratch / "openloop.trace"
    with pinned({cpus[0]} if args.pin else None):
        perf = subprocess.Popen(
            ["perf", "record", "-a", "-q", "-k", "CLOCK_MONOTONIC", "-e", "sched:sched_switch",
             "-m", "1024", "-o", str(data)],  # 4 MiB a core; what is lost is counted
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            time.sleep(0.5)
            if perf.poll() is not None:
                err = perf.stderr.read().decode(errors="replace") if perf.stderr else ""
                raise BenchError(f"bench_tail: perf record stopped: {err.strip()[:300]}")
            ol = openloop.run(
                url, ctx.requests["revoked"], ctx.headers, rate=rate, seconds=args.seconds,
                work=ctx.work, trace=trace,
            )  # fmt: skip
            server_tids = _tids(server)  # signing and pool threads exist by now
        finally:
            if perf.poll() is None:
                perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,tid,cpu,time,event,trace"],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    stats = subprocess.run(
        ["perf", "report", "-i", str(data), "--stats"],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    data.unlink()
    lost = sum(int(n) for n in re.findall(r"LOST events:\s+(\d+)", stats.stdout))
    if lost:
        print(f"  warning: perf lost {lost} events; the classes are approximate", flush=True)
    tl = Timeline(parse_switches(script.stdout.splitlines()))
    requests = parse_trace(trace.read_text())
    trace.unlink()
    roles = Roles(frozenset(server_tids), frozenset(_tids([os.getpid()])))
    return {
        "achieved_rps": ol["achieved_rps"],
        "p50_us": ol["p50_us"],
        "p99_us": ol["p99_us"],
        "p999_us": ol["p999_us"],
        "written_p99_us": ol["written_p99_us"],
        "slow_answers": classify(tl, roles, requests, args.threshold_ms / 1e3),
        "server_on_cpu": stretches(tl, roles, requests),
        "perf_lost_events": lost,
    }


def _scratch(work: Path) -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else work
    return Path(tempfile.mkdtemp(prefix="bench-tail-", dir=base))


def _max_line(m: dict[str, Any]) -> str:
    ipis = ", ".join(f"{k} {v}" for k, v in m["ipis_per_answer_by_cpu"].items())
    return (
        f"{m['rps']} req/s, server CPU {m['server_cpu_us_per_answer']} us per answer, "
        f"interrupts per answer by core: {ipis}"
    )


def _print(name: str, r: dict[str, Any]) -> None:
    s, c = r["slow_answers"], r["server_on_cpu"]
    cls = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
    print(
        f"  {name}: {r['achieved_rps']:.0f} req/s, p50 {r['p50_us']:.0f} us, p99 "
        f"{r['p99_us']:.0f} us; over {s['threshold_ms']:g} ms: {s['slow']} of {s['requests']} "
        f"({cls}); foreign tasks during them (ms): {s['foreign_tasks_ms']}\n"
        f"    on the cores {c['cpu_us_per_answer']} us per answer; {c['stretches_over_1ms']} "
        f"stretches over 1 ms ({c['stretches_over_5ms']} over 5 ms), median "
        f"{c['us_per_answer_in_stretches_median']} us per answer in them; longest "
        f"{c['longest'][:3]}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--store-dir", type=Path, required=True, help="directory with pki/, store/, crl/ [pop/]"
    )
    p.add_argument("--fraction", type=float, default=0.5, help="of the maximum rate (0.5)")
    p.add_argument("--seconds", type=float, default=20, help="length of each traced load (20)")
    p.add_argument(
        "--threshold-ms", type=float, default=1.0, help="an answer slower than this is slow (1)"
    )
    p.add_argument(
        "--pin", action="store_true", help="server on the last core, generator on the first"
    )
    p.add_argument(
        "--halt-poll-ns",
        type=int,
        help="set the KVM guest's halt-polling for the run, restored after (root)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "tail.json",
        help="the JSON report (default bench/results/tail.json)",
    )
    p.add_argument(
        "--responder",
        default=str(Path(sys.executable).parent / "responder"),
        help="command that runs the responder (default: this venv's `responder`)",
    )
    args = p.parse_args(argv)
    if not 0 < args.fraction < 1:
        p.error("--fraction must be between 0 and 1")
    if args.seconds <= 0 or args.threshold_ms <= 0:
        p.error("--seconds and --threshold-ms must be positive")
    if args.halt_poll_ns is not None and args.halt_poll_ns < 0:
        p.error("--halt-poll-ns must be 0 or more")
    for tool in ("perf", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_tail: {tool} is not installed (make bench-tools)")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("bench_tail: nginx is not installed (make bench-tools)")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench_tail: --pin needs two cores")
    work = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    scratch = _scratch(work)
    started_at = datetime.now(UTC).replace(microsecond=0)
    try:
        ctx = make_ctx(
            args.store_dir, work, seconds=args.seconds, connections=32,
            responder=args.responder, budget=int(4 * args.seconds + 300), tool="bench_tail",
        )  # fmt: skip
        with halt_poll(args.halt_poll_ns) as poll_ns:
            print(f"halt-polling: {poll_ns} ns; pinned: {args.pin}", flush=True)
            with responder(ctx, 1) as (url, proc):
                verify_responder(ctx, url)
                lua = lua_fixed(ctx.work / "max.lua", ctx.requests["revoked"], ctx.headers)
                resp_max = max_rate(url, lua, proc.pid, args.pin)
                max_rps = resp_max["rps"]
                rate = args.fraction * max_rps
                print(f"  responder, 1 worker: max {_max_line(resp_max)}; open loop at "
                      f"{rate:.0f} req/s", flush=True)  # fmt: skip
                resp = traced_load(ctx, url, proc.pid, rate, args, scratch)
            _print("responder", resp)
            with static_nginx(ctx) as (base, proc):
                nginx_max = max_rate(base + "revoked", lua, proc.pid, args.pin)
                print(f"  nginx, 1 worker: max {_max_line(nginx_max)}", flush=True)
                ngx = traced_load(ctx, base + "revoked", proc.pid, rate, args, scratch)
            _print("nginx", ngx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "started_at": started_at.isoformat(),
        "store_dir": str(args.store_dir),
        "fraction": args.fraction,
        "seconds": args.seconds,
        "pinned": args.pin,
        "halt_poll_ns": poll_ns,
        "max_rps": max_rps,
        "nginx_max_rps": nginx_max["rps"],
        "max_rate": {"responder": resp_max, "nginx": nginx_max},
        "rate": round(rate),
        "responder": resp,
        "nginx": ngx,
        "rules": {  # the classification's thresholds
            "foreign_share": FOREIGN_SHARE,
            "busy_share": BUSY_SHARE,
            "stretch_gap_us": STRETCH_GAP * 1e6,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
