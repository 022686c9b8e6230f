"""The event loop's time per delivering changes-feed read, alone and while watch batches run.

    python -m bench.bench_v1_marks [--reads 400] [--out bench/results/v1_marks.json]

Each ``GET /v1/changes`` that delivers something reads the party's counted mark when its
answer is made (`responder.v1.routes.V1Api._finish`) and writes it on the event loop, in the
same step as the ledger count, as the answer is written (`responder.http.Provision.sent`,
`responder.v1.markdb`). This measures what that costs the loop, and whether it waits for a
``POST /v1/watch`` of 10,000 entries (which holds the watch lists' write lock in the batch
thread or in another worker):

1. a demo PKI, its registry, and a status store (`Commit`) with 200 losses of effect in one
   commit, all watched by ``sig-verifier``; every read is ``cursor=<before them>&limit=1``: it
   delivers one change and writes the mark;
2. in process (`JpkiApp.handle`, one worker): per read, the whole call (on one node it all
   runs on the loop), the dispatcher's ``_finish`` alone and the answer's ``Provision.sent``
   (the mark's write; both run on the loop on a node of several too); ``--reads`` reads alone, then ``--reads`` while another process applies batches of
   10,000 additions to another party's list without pause (another worker's ``POST
   /v1/watch``), one read every 2 ms;
3. through ``responder serve`` (one worker, access log on): the same reads on one keep-alive
   connection, alone and while a second connection sends ``POST /v1/watch`` of 10,000 new
   certificates without pause (the batch thread), and ``GET /healthz`` on a third connection
   meanwhile: the access log's ``duration_ms`` of each read (its loop time: a read of one node
   runs on the loop) and the client latency of ``/healthz`` (what the loop's other
   connections wait).

4. ``durability``: the mark's write alone (`LmdbMarks.count_once`, 300 writes) under LMDB's
   durability options: fsync, ``metasync=False``, ``sync=False`` (the one chosen), ``writemap``
   with ``sync=False`` (needs `responder.v1.markdb`: skipped on a tree without it).

Median, p99 and max in milliseconds. The machine is shared: run it back to back on the two
trees compared. Nothing asserted about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.procs import stop, wait_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
BATCH = 10_000
CHANGES = 200


def stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "n": len(v),
        "median": round(v[len(v) // 2], 3),
        "p99": round(v[int(0.99 * (len(v) - 1))], 3),
        "max": round(v[-1], 3),
    }


def build(work: Path) -> tuple[str, str, list[int]]:
    """The store, registry and PKI in ``work``: (cursor before the changes, issuer id, serials)."""
    from crlbuilder.build import issuer_table
    from crlbuilder.manifest import load_manifest
    from crlbuilder.model import Category, Family, Reason
    from crlbuilder.store import format as sf
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.store.reader import changes_start
    from crlbuilder.store.writer import Commit
    from responder.v1 import cursor as cursors

    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run(str(BIN / "crlbuilder"), "pki", "init", "--out", str(work / "pki"))
    run(str(BIN / "responder"), "registry", "init", "--pki", str(work / "pki"), "--out",
        str(work / "registry.toml"))  # fmt: skip
    table = issuer_table(load_manifest(work / "pki"))
    sign = next(i for i in table if i.family is Family.SIGN_CARD)
    now = datetime.now(UTC).replace(microsecond=0)
    serials = [(1 << 40) + 7 * n for n in range(CHANGES)]
    store = Store.open(work / "store", readonly=False, map_size=1 << 30)
    t0 = int((now - timedelta(days=400)).timestamp())
    with Commit(store, lambda: now - timedelta(days=2)) as c:
        c.put_issuers(table)
        for n, serial in enumerate(serials):
            st = sf.StatusRecord(
                version=0, state=sf.STATE_GOOD, category=0, reason=0,
                family=Family.SIGN_CARD.code, not_before=t0, not_after=t0 + 1500 * 86400,
                revoked_at=0, holder=n.to_bytes(32, "big"),
            )  # fmt: skip
            c.add_certificate(sf.status_key(sign.index, serial), st, Family.SIGN_CARD, None)
    with store.read() as r:
        before = r.generation().commit
        cursor = cursors.encode(r.store_id(), changes_start(before))
    at = now - timedelta(days=1)
    with Commit(store, lambda: at) as c:
        for serial in serials:
            key = sf.status_key(sign.index, serial)
            st = c.status(key)
            assert st is not None
            c.revoke(
                key, st, category=Category.REQUEST.code, reason=int(Reason.KEY_COMPROMISE),
                at=int(at.timestamp()), recorded_at=int(at.timestamp()),
            )  # fmt: skip
    store.close()
    return cursor, sign.id, serials


def batcher(watch: Path, secret_file: Path, stop_at: float, held: Any) -> None:
    """Another worker: batches of 10,000 additions to another party's list, without pause;
    ``held`` gets each batch's write transaction time (ms)."""
    from responder.v1.watchdb import LmdbWatchSet
    from responder.v1.watchset import WatchKeys, load_secret

    lists = LmdbWatchSet(watch, WatchKeys(load_secret(secret_file, create=False)),
                         map_size=16 << 30)  # fmt: skip
    while time.time() < stop_at:
        add = [secrets.token_bytes(20) for _ in range(BATCH)]
        t = time.perf_counter()
        lists.update("batch-party", add, [], limit=10**8)
        held.append((time.perf_counter() - t) * 1000)
    lists.close()


def in_process(
    work: Path, cursor: str, issuer: str, serials: list[int], reads: int
) -> dict[str, Any]:
    import msgspec

    from responder.app import JpkiApp
    from responder.config import load_config
    from responder.http import Request, Response
    from responder.v1 import routes

    cfg = load_config(None, {"store.path": str(work / "store"), "store.pki": str(work / "pki"),
                             "registry.path": str(work / "registry.toml"),
                             "ledger.dir": str(work / "ledger"), "server.workers": 1,
                             "metrics.enabled": False})  # fmt: skip
    app = JpkiApp(cfg, 0)
    token = (work / "pki" / "parties" / "sig-verifier.token").read_text().strip().encode()
    finish_ms: list[float] = []
    sent_ms: list[float] = []
    original = routes.V1Api._finish

    def timed(self: routes.V1Api, *a: Any) -> Response:
        t = time.perf_counter()
        try:
            return original(self, *a)
        finally:
            finish_ms.append((time.perf_counter() - t) * 1000)

    routes.V1Api._finish = timed  # type: ignore[method-assign]

    def call(method: bytes, target: bytes, body: bytes = b"") -> Any:
        headers = {b"authorization": b"Bearer " + token}
        if body:
            headers[b"content-type"] = b"application/json"
        req = Request(method, target, headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1)
        resp = app.handle(req)
        assert isinstance(resp, Response), resp
        assert resp.status == 200, (resp.status, bytes(resp.body)[:300])
        if resp.provision is not None:  # as the HTTP layer writes it: counted, the mark written
            t = time.perf_counter()
            resp.provision.sent()
            sent_ms.append((time.perf_counter() - t) * 1000)
        return msgspec.json.decode(bytes(resp.body))

    refs = [{"issuer": issuer, "serial": f"{s:x}"} for s in serials]
    body = msgspec.json.encode({"add": refs})
    headers = {b"authorization": b"Bearer " + token, b"content-type": b"application/json"}
    watch = Request(b"POST", b"/v1/watch", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def register() -> Response:  # every POST /v1/watch runs in the batch thread (a future)
        got = app.handle(watch)
        return got if isinstance(got, Response) else await got

    loop = asyncio.new_event_loop()
    try:
        registered = loop.run_until_complete(register())
    finally:
        loop.close()
    assert registered.status == 200, (registered.status, bytes(registered.body)[:300])
    target = f"/v1/changes?cursor={cursor}&limit=1".encode()

    def phase(pause: float) -> dict[str, Any]:
        finish_ms.clear()
        sent_ms.clear()
        whole: list[float] = []
        for _ in range(reads):
            t = time.perf_counter()
            page = call(b"GET", target)
            whole.append((time.perf_counter() - t) * 1000)
            assert len(page["changes"]) == 1
            if pause:
                time.sleep(pause)
        return {"call_ms": stats(whole), "finish_ms": stats(finish_ms), "sent_ms": stats(sent_ms)}

    for _ in range(20):  # warm-up
        call(b"GET", target)
    alone = phase(0.0)
    with multiprocessing.Manager() as mgr:
        held = mgr.list()
        proc = multiprocessing.get_context("spawn").Process(
            target=batcher, args=(work / "ledger" / "watch", work / "ledger" / "watch.secret",
                                  time.time() + 3600, held),
        )  # fmt: skip
        proc.start()
        while not held:  # the first batch went through
            if not proc.is_alive():
                raise RuntimeError(f"the batching process ended: {proc.exitcode}")
            time.sleep(0.05)
        during = phase(0.002)
        proc.kill()
        proc.join()
        during["batch_txn_ms"] = stats(list(held))
    routes.V1Api._finish = original  # type: ignore[method-assign]
    return {"alone": alone, "during_watch_batches": during}


def server_ms(log: Path, endpoint: str) -> list[float]:
    out = []
    for line in log.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("event") == "request" and obj.get("endpoint") == endpoint:
            out.append(float(obj["duration_ms"]))
    return out


def through_server(work: Path, cursor: str, issuer: str, reads: int) -> dict[str, Any]:
    log = work / "serve.log"
    argv = [
        str(BIN / "responder"), "serve", "--store", str(work / "store"), "--pki", str(work / "pki"),
        "--registry", str(work / "registry.toml"), "--port", "0", "--workers", "1",
        "--ledger-dir", str(work / "ledger-server"), "--no-metrics", "--access-log", "all",
    ]  # fmt: skip
    token = (work / "pki" / "parties" / "sig-verifier.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    try:
        url = wait_line(proc, r"listening on (\S+)", 60).split()[-1]
        host, port = url.removeprefix("http://").rsplit(":", 1)

        def conn() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(host, int(port), timeout=120)

        def post(c: http.client.HTTPConnection, body: bytes) -> None:
            c.request("POST", "/v1/watch", body,
                      {**headers, "Content-Type": "application/json"})  # fmt: skip
            r = c.getresponse()
            data = r.read()
            assert r.status == 200, data[:300]

        feed = conn()
        refs = [{"issuer": issuer, "serial": f"{(1 << 40) + 7 * n:x}"} for n in range(CHANGES)]
        post(feed, json.dumps({"add": refs}).encode())
        target = f"/v1/changes?cursor={cursor}&limit=1"

        def run(n: int, pause: float, probe: list[float]) -> None:
            stop_probe = threading.Event()

            def probing() -> None:
                c = conn()
                while not stop_probe.is_set():
                    t = time.perf_counter()
                    c.request("GET", "/healthz")
                    c.getresponse().read()
                    probe.append((time.perf_counter() - t) * 1000)
                    time.sleep(0.002)
                c.close()

            prober = threading.Thread(target=probing, daemon=True)
            prober.start()
            for _ in range(n):
                feed.request("GET", target, headers=headers)
                r = feed.getresponse()
                data = r.read()
                assert r.status == 200 and len(json.loads(data)["changes"]) == 1, data[:300]
                if pause:
                    time.sleep(pause)
            stop_probe.set()
            prober.join(30)

        run(20, 0.0, [])  # warm-up
        time.sleep(0.3)
        skip = len(server_ms(log, "v1-changes"))
        probe_alone: list[float] = []
        run(reads, 0.002, probe_alone)
        time.sleep(0.3)
        alone = server_ms(log, "v1-changes")[skip:]
        skip += len(alone)
        stop_batches = threading.Event()
        batches = [0]

        def batching() -> None:
            c = conn()
            base = 1 << 52
            while not stop_batches.is_set():
                refs = [{"issuer": issuer, "serial": f"{base + BATCH * batches[0] + n:x}"}
                        for n in range(BATCH)]  # fmt: skip
                post(c, json.dumps({"add": refs}).encode())
                batches[0] += 1
            c.close()

        batcher_thread = threading.Thread(target=batching, daemon=True)
        batcher_thread.start()
        while not batches[0]:
            if not batcher_thread.is_alive():
                raise RuntimeError("the batching connection failed")
            time.sleep(0.05)
        probe_during: list[float] = []
        run(reads, 0.002, probe_during)
        stop_batches.set()
        batcher_thread.join(120)
        time.sleep(0.3)
        during = server_ms(log, "v1-changes")[skip:]
        watch = server_ms(log, "v1-watch")[1:]
    finally:
        stop(proc)
    return {
        "alone": {"read_server_ms": stats(alone), "healthz_client_ms": stats(probe_alone)},
        "during_watch_batches": {
            "read_server_ms": stats(during),
            "healthz_client_ms": stats(probe_during),
            "watch_batches": batches[0],
            "watch_server_ms": stats(watch) if watch else {},
        },
    }


def durability(work: Path) -> dict[str, Any]:
    try:
        from responder.v1 import markdb
    except ImportError:  # a tree from before the marks' own environment
        return {}
    import lmdb

    from responder.v1.watchset import WatchKeys

    keys, real = WatchKeys(bytes(range(32))), lmdb.open
    variants: dict[str, dict[str, bool]] = {
        "fsync": {"sync": True, "metasync": True},
        "metasync=False": {"sync": True, "metasync": False},
        "sync=False": {"sync": False, "metasync": False},
        "writemap, sync=False": {"sync": False, "metasync": False, "writemap": True},
    }
    out: dict[str, Any] = {}
    for n, (name, opts) in enumerate(variants.items()):

        def opener(path: str, opts: dict[str, bool] = opts, **kw: Any) -> Any:
            return real(path, **{**kw, **opts})

        markdb.lmdb.open = opener
        try:
            marks = markdb.LmdbMarks(work / f"marks-{n}", keys, boot="bench")
        finally:
            markdb.lmdb.open = real
        tag, ms = keys.tag("sig-verifier"), []
        for i in range(300):
            t = time.perf_counter()
            marks.count_once(tag, lambda: bytes(8), lambda _kept, i=i: i.to_bytes(8, "big") * 7)
            ms.append((time.perf_counter() - t) * 1000)
        marks.close()
        out[name] = stats(ms)
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reads", type=int, default=400)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "v1_marks.json")
    p.add_argument("--only", choices=["in-process", "server", "durability"], default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jpki-bench-marks-"))
    result: dict[str, Any] = {}
    try:
        cursor, issuer, serials = build(work)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("in_process", lambda: in_process(work, cursor, issuer, serials, args.reads)),
            ("server", lambda: through_server(work, cursor, issuer, args.reads)),
            ("durability", lambda: durability(work)),
        ]
        for name, step in steps:
            if args.only is None or name.replace("_", "-") == args.only:
                result[name] = step()
        result["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
            "note": "shared 2-core machine, other jobs running",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
