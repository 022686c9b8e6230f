"""Issue 10's HTTP probes, measured: slow body, slowloris, a party under a slow-body flood,
pipelined large downloads on a socket that does not read.

Runs the test support app (`tests/support/echo_app.py`, `EchoApp`) of a source tree under
`responder.server.serve` (one worker, ``header_timeout = 5``, ``max_connections = 50``,
the attack run's settings) and prints one JSON object of figures. ``--root`` names the
tree, so the same probes can be run against an older checkout:

    python -m bench.bench_attack_http                       # this tree
    python -m bench.bench_attack_http --root /tmp/before    # e.g. `git archive` of a base

Loopback only; every probe stops by itself (about a minute in all). Figures are
wall-clock and the machine is shared: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.procs import started, wait_line

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """[server]
port = 0
workers = 1
[server.limits]
header_timeout = 5.0
idle_timeout = 30.0
max_connections = 50
[log]
level = "warning"
"""


@contextlib.contextmanager
def echo_server(root: Path) -> Iterator[int]:
    """`EchoApp` of ``root`` on an ephemeral loopback port; yields the port, stops by PID."""
    app = root / "tests" / "support" / "echo_app.py"
    if not app.exists():  # a checkout from before tests/support
        app = root / "tests" / "test_http_app.py"
    with tempfile.TemporaryDirectory(prefix="attack-") as d:
        (Path(d) / "responder.toml").write_text(CONFIG)
        env = {**os.environ, "PYTHONPATH": str(root), "JPKI_TEST_DIR": d}
        args = [sys.executable, str(app), "responder.toml"]
        with started(args, log=Path(d) / "stderr.log", env=env, cwd=d, grace=20) as proc:
            url = wait_line(proc, r"listening on (\S+)", 30)
            yield int(url.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed(sock: socket.socket) -> tuple[bool, bytes]:
    """(closed, what arrived) without blocking."""
    sock.setblocking(False)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except BlockingIOError:
        return False, data
    except ConnectionResetError:
        pass
    return True, data


def slow_body(port: int, cap: float = 20.0) -> dict[str, object]:
    """Headers, then a 64 KiB body at one byte every 2 s: seconds until the server cuts it."""
    with _connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n")
        start = time.monotonic()
        got = b""
        while time.monotonic() - start < cap:
            with contextlib.suppress(OSError):
                sock.send(b"x")
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                closed, data = _closed(sock)
                got += data
                if closed:
                    return {"cut_after_s": round(time.monotonic() - start, 2), "answer": _line(got)}
                time.sleep(0.05)
    return {"cut_after_s": None, "answer": f"still open after {cap} s"}


def _line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def slowloris(port: int, count: int = 300, cap: float = 16.0) -> dict[str, object]:
    """``count`` connections that send their request line after 4.5 s and a header every 2 s:
    how long the accepted ones stay open (503 within the first second: refused beyond
    max_connections, or displaced by newer ones beyond the unattributed budget)."""
    socks = []
    start = time.monotonic()
    for _ in range(count):
        socks.append(_connect(port))
    cut: dict[int, float] = {}
    refused = 0
    sent_line = False
    next_header = start + 6.5
    while time.monotonic() - start < cap and len(cut) < count:
        now = time.monotonic()
        if not sent_line and now - start >= 4.5:
            sent_line = True
            for i, s in enumerate(socks):
                if i not in cut:
                    with contextlib.suppress(OSError):
                        s.send(b"GET /fixed HTTP/1.1\r\n")
        if sent_line and now >= next_header:
            next_header += 2.0
            for i, s in enumerate(socks):
                if i not in cut:
                    with contextlib.suppress(OSError):
                        s.send(b"X-A: b\r\n")
        for i, s in enumerate(socks):
            if i in cut:
                continue
            closed, data = _closed(s)
            if closed:
                if data.startswith(b"HTTP/1.1 503") and now - start < 1.0:
                    refused += 1
                    cut[i] = -1.0
                else:
                    cut[i] = now - start
        time.sleep(0.05)
    for s in socks:
        s.close()
    times = sorted(t for t in cut.values() if t >= 0)
    still = count - len(cut)
    return {
        "connections": count,
        "refused_or_displaced_at_once": refused,
        "cut": len(times),
        "cut_median_s": round(times[len(times) // 2], 2) if times else None,
        "cut_max_s": round(times[-1], 2) if times else None,
        "open_after_cap": still,
        "cap_s": cap,
    }


def party_under_flood(port: int, attackers: int = 100, requests: int = 200) -> dict[str, object]:
    """``attackers`` slow unauthenticated bodies (a byte every 2 s), then a party's requests,
    each on a new connection: how many got 503, and the p99 of the answered ones."""
    socks = []
    for _ in range(attackers):
        try:
            s = _connect(port)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\nx")
            socks.append(s)
        except OSError:
            pass
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(2.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"x")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(0.5)
    codes: dict[int, int] = {}
    lat: list[float] = []
    try:
        for _ in range(requests):
            t0 = time.perf_counter()
            try:
                with _connect(port) as s:
                    s.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\nX-Party: p\r\n\r\n")
                    s.settimeout(5)
                    data = s.recv(4096)
                code = int(data.split(b" ", 2)[1]) if data else 0
            except OSError:
                code = 0
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                lat.append(time.perf_counter() - t0)
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
    lat.sort()
    return {
        "attackers": attackers,
        "requests": requests,
        "status_counts": {str(k): v for k, v in sorted(codes.items())},
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2) if lat else None,
    }


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    assert match is not None
    return int(match.group(1))


def pipelined_downloads(port: int, size: int = 10 << 20, count: int = 40) -> dict[str, object]:
    """``count`` pipelined ``size``-byte answers on one connection that does not read:
    how much the worker's resident memory grows within 2 s."""
    with _connect(port) as s:
        s.sendall(b"GET /info HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    pid = int(json.loads(data.partition(b"\r\n\r\n")[2])["pid"])
    before = _rss_kib(pid)
    peak = before
    with _connect(port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % size * count)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.05)
    return {"file_mib": size >> 20, "requests": count, "rss_growth_mib": (peak - before) >> 10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="source tree to run")
    args = parser.parse_args()
    out: dict[str, object] = {"root": str(args.root)}
    with echo_server(args.root) as port:
        out["item3_slow_body"] = slow_body(port)
    with echo_server(args.root) as port:
        out["item4_slowloris"] = slowloris(port)
    with echo_server(args.root) as port:
        out["item4_party_under_slow_body_flood"] = party_under_flood(port)
    with echo_server(args.root) as port:
        out["item7_pipelined_downloads"] = pipelined_downloads(port)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
