"""The open-loop load generator (`bench/openloop.c`): built with the C compiler on first use,
run against one URL at a fixed rate, its JSON read.

wrk sends at millisecond ticks (its think time is a millisecond timer), so its latency at a
given rate measures bursts of rate/1000 requests; `openloop` sends each request at its own
instant of a Poisson schedule and counts a request's latency from that instant (the wait for
a free connection included). The benchmarks report both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from bench.procs import BenchError

SOURCE: Final = Path(__file__).resolve().with_name("openloop.c")
CACHE: Final = SOURCE.parent.parent / "var" / "bench-tools"
CONNECTIONS: Final = 64
"""Keep-alive connections: enough that an arrival rarely finds none free at half the rate."""


def binary(cache: Path = CACHE) -> Path:
    """The compiled generator, built again when its source is newer (`cc -O2`)."""
    exe = cache / "openloop"
    if exe.exists() and exe.stat().st_mtime >= SOURCE.stat().st_mtime:
        return exe
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("openloop: no C compiler (bench/tools installs gcc and libc6-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(".new")
    built = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-lm"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if built.returncode != 0:
        raise BenchError(f"openloop: {cc} failed:\n{built.stderr}")
    tmp.replace(exe)
    return exe


def request_bytes(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole HTTP/1.1 POST of ``body`` to ``url`` (keep-alive), as sent for each arrival."""
    u = urlsplit(url)
    lines = [f"POST {u.path or '/'} HTTP/1.1", f"Host: {u.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    rate: float,
    seconds: float,
    work: Path,
    connections: int = CONNECTIONS,
    warmup: float = 1.0,
    seed: int = 1,
    trace: Path | None = None,
) -> dict[str, Any]:
    """POST ``body`` to ``url`` at ``rate`` per second (Poisson arrivals) for ``seconds`` after
    ``warmup``; the generator's JSON (latency percentiles in µs of the measured requests).
    Every answer must be a 200 and no connection may break, or `BenchError`. With ``trace``,
    that file gets each measured request's scheduled instant (s after the start line's
    CLOCK_MONOTONIC instant) and its latency from then and from its write (µs)."""
    u = urlsplit(url)
    if u.hostname is None or u.port is None:
        raise BenchError(f"openloop: {url} names no host and port")
    req = work / f"openloop-{u.port}.http"
    req.write_bytes(request_bytes(url, body, headers))
    cmd = [str(binary()), u.hostname, str(u.port), str(req), f"{rate:.1f}", f"{seconds:g}"]
    cmd += [str(connections), f"{warmup:g}", str(seed)]
    env = None if trace is None else {**os.environ, "OPENLOOP_TRACE": str(trace)}
    done = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=seconds + warmup + 30, env=env
    )
    if done.returncode != 0:
        raise BenchError(f"openloop: exit {done.returncode}: {done.stderr.strip()} {done.stdout}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out
