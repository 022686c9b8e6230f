"""A worker's own work per OCSP answer, in process: HTTP parse, app, answer bytes; no kernel.

    python -m bench.bench_hotpath --store-dir DIR [-n 20000] [--only post_distinct]

Drives one worker's `responder.http.HttpServer` and `responder.app.JpkiApp` (metrics on,
ledger on, access log off: as `bench.bench_distinct` runs the responder) with a fake
transport: the raw bytes of keep-alive requests go to ``data_received`` and the answer
bytes are collected from ``write``, so what is measured is the Python-level work a worker
does per answer (httptools parsing, routing, parsing the OCSP request, authenticating the
party, policy, quota, the store read, the ledger count, the metrics hook, the answer's
bytes), without sockets or the event loop's polling. The loads:

- ``post_single`` / ``get_single``: one revoked request (pre-signed answer) repeated;
- ``post_distinct`` / ``get_distinct``: ``--distinct`` different requests in turn (20%
  revoked, 5% unknown, the rest good, every issuer), their answers signed and cached first.

Two measures, because the machine is shared and noisy:

- CPU µs per answer (``time.process_time``, best of 5 rounds of ``-n``);
- instructions per answer, with ``--callgrind``: the script runs itself twice under
  ``valgrind --tool=callgrind`` with ``-n`` and ``5 * -n`` requests and reports the
  difference of the instruction counts (Ir) over the difference of requests, so start-up
  cancels out. Instruction counts do not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from bench.bench_distinct import NONCE_MARK, Pick, build_requests, pick_set
from bench.bench_responder import PARTY
from crlbuilder.store.lmdbstore import Store
from responder.app import JpkiApp
from responder.config import load_config
from responder.flow import Answer, Signing
from responder.http import HttpServer, Request

ROOT: Final = Path(__file__).resolve().parent.parent
LOADS: Final = ("post_single", "get_single", "post_distinct", "get_distinct")
NONCE_LOAD: Final = "post_nonce"
"""Every request with a new nonce: one fresh signature each, on a running loop (the signing
threads need one), ``NONCE_CONNECTIONS`` connections at once; not in the default set."""
NONCE_CONNECTIONS: Final = 4
NONCE_MEASURED: Final = 400
"""Fresh answers measured at least (``-n`` / 20 if more), for a figure steadier than noise."""


class FakeTransport:
    """What `HttpProtocol` asks of a transport; counts the bytes written."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class FakeLoop:
    """The loop calls `HttpServer` and `HttpProtocol` make: a clock and timers never fired."""

    def time(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, cb: Any, *args: Any) -> Any:
        return _Handle()

    def call_later(self, delay: float, cb: Any, *args: Any) -> Any:
        return _Handle()

    def call_soon(self, cb: Any, *args: Any) -> Any:
        return _Handle()


class _Handle:
    def cancel(self) -> None: ...


def _small_map_under_valgrind() -> None:
    """valgrind cannot reserve the store's default map size; a read-only map of the file's
    size is enough (LMDB maps at least the data file)."""
    size = int(os.environ.get("BENCH_HOTPATH_MAP_SIZE", "0"))
    if not size:
        return
    original = Store.open.__func__  # type: ignore[attr-defined]

    def open_small(cls: type[Store], path: str | Path, readonly: bool = False, **kw: Any) -> Store:
        kw["map_size"] = size
        store: Store = original(cls, path, readonly=readonly, **kw)
        return store

    Store.open = classmethod(open_small)  # type: ignore[method-assign, assignment, arg-type]


def http_requests(store_dir: Path, distinct: int, token: str) -> dict[str, list[bytes]]:
    """The raw HTTP/1.1 requests of every load (keep-alive, Host and Authorization)."""
    store = Store.open(store_dir / "store", readonly=True)
    try:
        picks, _ = pick_set(store, distinct, 0.2, 0.05, 0.0, 1)
        with store.read() as r:
            certs = {m.index: x509.load_der_x509_certificate(m.cert_der) for m in r.issuers()}
    finally:
        store.close()
    reqs = build_requests(picks, certs)
    single = next(r for r in reqs if r.pick.expect == "revoked")
    auth = f"Authorization: Bearer {token}\r\n".encode()

    def post(der: bytes) -> bytes:
        return (
            b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
            + b"Content-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % len(der)
            + der
        )  # fmt: skip

    def get(path: str) -> bytes:
        return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"\r\n"

    nonce_reqs = build_requests(
        [Pick(p.issuer_index, p.serial, p.expect, True) for p in picks[:200]], certs
    )
    return {
        "ders": [r.der for r in reqs],
        NONCE_LOAD: [post(r.head + NONCE_MARK + r.tail) for r in nonce_reqs],
        "post_single": [post(single.der)],
        "get_single": [get(single.path)],
        "post_distinct": [post(r.der) for r in reqs],
        "get_distinct": [get(r.path) for r in reqs],
    }


def make_worker(
    store_dir: Path, work: Path, cache: int, signing: str | None = None
) -> tuple[JpkiApp, HttpServer]:
    mode: dict[str, Any] = {} if signing is None else {"ocsp.signing": signing}
    cfg = load_config(
        None,
        {
            **mode,
            "store.path": str(store_dir / "store"), "store.pki": str(store_dir / "pki"),
            "store.crl_dir": str(store_dir / "crl"), "registry.path": str(work / "registry.toml"),
            "ledger.dir": str(work / "ledger"), "server.workers": 1, "metrics.enabled": True,
            "metrics.dir": str(work / "metrics"), "log.access_log": "off",
            "ocsp.good_cache_entries": cache,
        },
    )  # fmt: skip
    (work / "metrics").mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")  # what the master sets
    app = JpkiApp(cfg, 0)
    srv = HttpServer.from_config(app, cfg.server, hooks=app.hooks)
    srv.loop = FakeLoop()  # type: ignore[assignment]
    srv.now = time.monotonic()
    srv._date = b"Thu, 01 Jan 2026 00:00:00 GMT"
    srv._date_second = int(time.time())
    return app, srv


def warm(app: JpkiApp, ders: list[bytes], token: str) -> None:
    """Sign and cache every good and unknown answer of the set (the signing threads need a
    running loop; here the jobs run in line)."""
    headers = {b"authorization": b"Bearer " + token.encode()}
    for der in ders:
        req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 0)
        got = app.ocsp.decide(der, req, time.time(), app.store, app.registry)
        if isinstance(got, Signing):
            app.ocsp.remember(got.job, got.job.run())
        elif not isinstance(got, Answer):
            raise SystemExit(f"warm-up: refused ({got.rule})")


def drive(srv: HttpServer, requests: list[bytes], n: int) -> FakeTransport:
    """``n`` requests, in turn from ``requests``, on one keep-alive connection."""
    transport = FakeTransport()
    proto = srv()
    proto.connection_made(transport)  # type: ignore[arg-type]
    k = len(requests)
    feed = proto.data_received
    for i in range(n):
        feed(requests[i % k])
    return transport


class _Waiter(FakeTransport):
    """A transport whose writes wake the coroutine driving its connection."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.event.set()


def drive_nonce(srv: HttpServer, requests: list[bytes], n: int) -> None:
    """``n`` requests with fresh random nonces over `NONCE_CONNECTIONS` connections, each
    waiting for its answer before the next: on a real loop, with the signing threads."""

    async def connection(count: int) -> None:
        t = _Waiter()
        proto = srv()
        proto.connection_made(t)  # type: ignore[arg-type]
        for i in range(count):
            raw = requests[i % len(requests)]
            t.event.clear()
            proto.data_received(raw.replace(NONCE_MARK, os.urandom(len(NONCE_MARK))))
            await t.event.wait()
            if not t.last.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"nonce load: {t.last[:60]!r}")

    async def main() -> None:
        srv.loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(connection(n // NONCE_CONNECTIONS) for _ in range(NONCE_CONNECTIONS))
        )

    asyncio.run(main())


def cpu_with_children() -> float:
    """CPU seconds (user + system) of this process's threads and of its running children
    (the signing processes, `responder.procsigning`: each thread's run time in /proc, in
    nanoseconds)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            for pid in (task / "children").read_text().split():
                for thread in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        total += int((thread / "schedstat").read_text().split()[0]) / 1e9
    return total


def registry_dir(d: Path, prefix: str) -> Path:
    """A new temporary directory holding a registry made from the store's PKI (the caller
    removes it: it holds the parties' token digests)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(
        [str(Path(sys.executable).parent / "responder"), "registry", "init", "--pki",
         str(d / "pki"), "--out", str(work / "registry.toml")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return work


def _token(d: Path) -> str:
    return (d / "pki" / "parties" / f"{PARTY}.token").read_text().strip()


def request_set(d: Path, distinct: int, token: str) -> dict[str, list[bytes]]:
    """The loads' requests, made once per store and ``distinct`` and saved beside it: the
    callgrind runs read the same set (made before them: made inside the first, its making
    would be counted in that run's instructions)."""
    saved = d / f"hotpath-requests-{distinct}.json"
    loads = {}
    if saved.exists():
        loads = {k: [bytes.fromhex(x) for x in v] for k, v in json.loads(saved.read_text()).items()}
    if set(loads) != {"ders", NONCE_LOAD, *LOADS}:
        loads = http_requests(d, distinct, token)
        saved.write_text(json.dumps({k: [x.hex() for x in v] for k, v in loads.items()}))
    return loads


def run(args: argparse.Namespace) -> dict[str, Any]:
    d: Path = args.store_dir.resolve()
    work = registry_dir(d, "bench-hotpath-")
    token = _token(d)
    loads = request_set(d, args.distinct, token)
    app, srv = make_worker(d, work, args.distinct + 1000, args.signing)
    out: dict[str, Any] = {}
    try:
        warm(app, loads["ders"], token)
        # every answer once first: good answers signed and cached, everything checked
        for name in args.only or LOADS:
            reqs = loads[name]
            if name == NONCE_LOAD:
                drive_nonce(srv, reqs, NONCE_CONNECTIONS * 4)
                if args.count is not None:
                    drive_nonce(srv, reqs, args.count)
                    continue
                n = max(NONCE_MEASURED, args.n // 20)
                c0 = cpu_with_children()
                drive_nonce(srv, reqs, n)
                cpu = cpu_with_children() - c0
                out[name] = round(cpu / n * 1e6, 2)
                print(
                    f"  {name:<14} {out[name]:>7.2f} µs CPU per answer (all threads and "
                    f"signing processes; "
                    f"signing on the {app.signing.mode})",
                    flush=True,
                )
                continue
            t = drive(srv, reqs, len(reqs))
            if not t.last.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"{name}: {t.last[:80]!r}")
            if args.count is not None:
                drive(srv, reqs, args.count)  # the measured part, under callgrind
                continue
            best = float("inf")
            for _ in range(5):
                c0 = time.process_time()
                drive(srv, reqs, args.n)
                best = min(best, time.process_time() - c0)
            out[name] = round(best / args.n * 1e6, 2)
            print(f"  {name:<14} {out[name]:>7.2f} µs CPU per answer", flush=True)
    finally:
        app.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def counted_instructions(module: str, argv: list[str], n: int) -> int:
    """Instructions per request of ``python -m module argv --count N``: run under callgrind
    with ``n`` and ``5 n`` requests, the difference of the counts over the difference of
    requests (start-up cancels out). What the runs read must exist before them (a request set
    made inside the first would be counted in it)."""
    irs = []
    for count in (n, 5 * n):
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "cg.out"
            cmd = [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={f}",
                sys.executable, "-m", module, *argv, "--count", str(count),
            ]  # fmt: skip
            env = {**os.environ, "BENCH_HOTPATH_MAP_SIZE": str(1 << 30)}
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=env)
            m = re.search(r"^(?:summary|totals): (\d+)", f.read_text(), re.M)
            assert m is not None
            irs.append(int(m.group(1)))
    return round((irs[1] - irs[0]) / (4 * n))


def callgrind(args: argparse.Namespace) -> dict[str, Any]:
    """Instructions per answer of each load (`counted_instructions`)."""
    d: Path = args.store_dir.resolve()
    request_set(d, args.distinct, _token(d))  # made here, not in the first counted run
    out: dict[str, Any] = {}
    for name in args.only or LOADS:
        argv = ["--store-dir", str(args.store_dir), "--distinct", str(args.distinct)]
        out[name] = counted_instructions("bench.bench_hotpath", [*argv, "--only", name], args.n)
        print(f"  {name:<14} {out[name]:>9,} instructions per answer", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-dir", type=Path, required=True)
    p.add_argument("-n", type=int, default=20_000, help="requests per round (callgrind: base)")
    p.add_argument("--distinct", type=int, default=2000)
    p.add_argument("--only", action="append", choices=(*LOADS, NONCE_LOAD))
    p.add_argument("--callgrind", action="store_true", help="instructions per answer")
    p.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--signing",
        choices=("loop", "threads", "processes"),
        default=None,
        help="the worker's [ocsp] signing (default: the configuration's default)",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    _small_map_under_valgrind()
    if args.callgrind:
        result = {"instructions_per_answer": callgrind(args)}
    else:
        result = {"cpu_us_per_answer": run(args)}
    if args.out is not None and args.count is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
