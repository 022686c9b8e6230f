"""The changes feed at scale: 1,000,000 watched certificates, a day's changes read back.

    python -m bench.bench_v1_changes --watched 1000000 --day-changes 20000 --out FILE.json

In process, through the responder's own request path (`responder.app.JpkiApp.handle`:
authentication, policy, quota, strict decoding, the handler, the ledger), one worker:

1. a demo PKI (``crlbuilder pki init``) and its registry; a status store written with
   `Commit`: the issuer table, ``--day-changes`` issued sign-card certificates, then
   one day of losses of effect, one commit per ``--commits`` slice (as the builder
   writes a day's records), so the changes feed holds ``--day-changes`` entries;
2. ``register``: the party (``sig-verifier``) watches ``--watched`` certificates with
   ``POST /v1/watch`` in batches of 10,000 (the per-call bound): the serials of the day's
   changes that are "its customers" (``--share`` of them) and others that do not change;
   wall seconds for the whole list and per call;
3. ``read``: ``GET /v1/changes`` from the cursor before the day, ``limit=10000``, until
   ``more`` is false: wall seconds, calls, changes delivered (must equal the watched
   share), feed entries examined per second.

Prints the JSON result and writes it to ``--out``. Everything lives in a temporary
directory removed at the end. Bounded: one pass of each, no load loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
BATCH = 10_000


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "v1_changes.json")
    p.add_argument("--watched", type=int, default=1_000_000)
    p.add_argument("--day-changes", type=int, default=20_000)
    p.add_argument("--share", type=float, default=0.1, help="of the day's changes, watched")
    p.add_argument("--commits", type=int, default=24, help="commits the day's changes come in")
    args = p.parse_args()

    import msgspec

    from crlbuilder.build import issuer_table
    from crlbuilder.manifest import load_manifest
    from crlbuilder.model import Category, Family, Reason
    from crlbuilder.store import format as sf
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.store.reader import changes_start
    from crlbuilder.store.writer import Commit
    from responder.app import JpkiApp
    from responder.config import load_config
    from responder.http import Request, Response
    from responder.v1 import cursor as cursors

    work = Path(tempfile.mkdtemp(prefix="jpki-bench-changes-"))
    try:
        cb, rs = str(BIN / "crlbuilder"), str(BIN / "responder")
        subprocess.run([cb, "pki", "init", "--out", str(work / "pki")], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([rs, "registry", "init", "--pki", str(work / "pki"), "--out",
                        str(work / "registry.toml")], check=True, capture_output=True)  # fmt: skip
        manifest = load_manifest(work / "pki")
        table = issuer_table(manifest)
        sign = next(i for i in table if i.family is Family.SIGN_CARD)
        now = datetime.now(UTC).replace(microsecond=0)
        day = [(1 << 40) + 7 * n for n in range(args.day_changes)]
        store = Store.open(work / "store", readonly=False, map_size=4 << 30)
        with Commit(store, lambda: now - timedelta(days=2)) as c:
            c.put_issuers(table)
            t0 = int((now - timedelta(days=400)).timestamp())
            for n, serial in enumerate(day):
                st = sf.StatusRecord(
                    version=0, state=sf.STATE_GOOD, category=0, reason=0,
                    family=Family.SIGN_CARD.code, not_before=t0, not_after=t0 + 1500 * 86400,
                    revoked_at=0, holder=n.to_bytes(32, "big"),
                )  # fmt: skip
                c.add_certificate(sf.status_key(sign.index, serial), st, Family.SIGN_CARD, None)
        with store.read() as r:
            before = r.generation().commit
        per = -(-len(day) // args.commits)
        for k in range(args.commits):
            at = now - timedelta(days=1) + timedelta(hours=k)
            with Commit(store, lambda at=at: at) as c:  # type: ignore[misc]
                for serial in day[k * per : (k + 1) * per]:
                    key = sf.status_key(sign.index, serial)
                    st = c.status(key)
                    assert st is not None
                    c.revoke(
                        key, st, category=Category.REQUEST.code, reason=int(Reason.KEY_COMPROMISE),
                        at=int(at.timestamp()), recorded_at=int(at.timestamp()),
                    )  # fmt: skip
        with store.read() as r:  # the cursor before the day (the issuance wrote no change)
            cursor = cursors.encode(r.store_id(), changes_start(before))
        store.close()
        cfg = load_config(None, {"store.path": str(work / "store"), "store.pki": str(work / "pki"),
                                 "registry.path": str(work / "registry.toml"),
                                 "ledger.dir": str(work / "ledger"), "server.workers": 1,
                                 "metrics.enabled": False})  # fmt: skip
        app = JpkiApp(cfg, 0)
        token = (work / "pki" / "parties" / "sig-verifier.token").read_text().strip().encode()

        loop = asyncio.new_event_loop()

        stalls: list[float] = []

        async def ticker(gaps: list[float]) -> None:
            last = time.perf_counter()
            while True:  # a probe every millisecond: the gaps are what the loop was held
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last - 0.001)
                last = now

        async def answer(req: Request) -> Response | Any:
            gaps: list[float] = []
            tick = asyncio.ensure_future(ticker(gaps))
            await asyncio.sleep(0)  # the ticker started: what the call holds the loop for
            got = app.handle(req)  # with the loop running: a call for the batch thread
            resp = await got if isinstance(got, asyncio.Future) else got
            await asyncio.sleep(0.005)  # the ticker's next probe says how long it waited
            tick.cancel()
            stalls.append(max(gaps, default=0.0))
            return resp

        def call(method: bytes, target: bytes, body: bytes = b"") -> Any:
            headers = {b"authorization": b"Bearer " + token}
            if body:
                headers[b"content-type"] = b"application/json"
            req = Request(method, target, headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1)
            resp = loop.run_until_complete(answer(req))
            assert isinstance(resp, Response), resp
            assert resp.status == 200, (resp.status, bytes(resp.body)[:300])
            if resp.provision is not None:  # as the HTTP layer writes it: counted
                resp.provision.sent()
            return msgspec.json.decode(bytes(resp.body))

        mine = day[:: max(1, round(1 / args.share))]
        others = (args.watched - len(mine)) if args.watched > len(mine) else 0
        watched = [*mine, *((1 << 50) + n for n in range(others))]
        assert call(b"GET", b"/v1/changes")["changes"] == []  # the route answers
        calls: list[float] = []
        t_reg = time.perf_counter()
        for i in range(0, len(watched), BATCH):
            refs = [{"issuer": sign.id, "serial": f"{s:x}"} for s in watched[i : i + BATCH]]
            body = msgspec.json.encode({"add": refs})
            t = time.perf_counter()
            got = call(b"POST", b"/v1/watch", body)
            calls.append(time.perf_counter() - t)
            assert got["refused"] == []
        register_s = time.perf_counter() - t_reg
        assert got["watching"] == len(watched), got["watching"]
        delivered = reads = 0
        t_read = time.perf_counter()
        read_calls: list[float] = []
        stalls.clear()
        while True:
            t = time.perf_counter()
            page = call(b"GET", f"/v1/changes?cursor={cursor}&limit=10000".encode())
            read_calls.append(time.perf_counter() - t)
            reads += 1
            delivered += len(page["changes"])
            cursor = page["cursor"]
            if not page["more"]:
                break
        read_s = time.perf_counter() - t_read
        assert delivered == len(mine), (delivered, len(mine))
        calls.sort()
        result: dict[str, Any] = {
            "watched": len(watched),
            "day_changes": len(day),
            "commits": args.commits,
            "register": {
                "seconds": round(register_s, 2),
                "calls": len(calls),
                "per_call_ms_median": round(1000 * calls[len(calls) // 2], 1),
                "per_call_ms_max": round(1000 * calls[-1], 1),
                "certificates_per_s": round(len(watched) / register_s),
            },
            "read": {
                "seconds": round(read_s, 3),
                "calls": reads,
                "delivered": delivered,
                "feed_entries_per_s": round(len(day) / read_s),
                "per_call_ms_max": round(1000 * max(read_calls), 1),
                "event_loop_held_ms_max": round(1000 * max(stalls), 1),
            },
            "watch_lists_bytes": (work / "ledger" / "watch" / "data.mdb").stat().st_blocks * 512,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "note": "shared 2-core machine, other jobs running",
            },
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
