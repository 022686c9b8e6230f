"""Watch stream compaction: a new node's join time before and after, for one large list.

    python -m bench.bench_watch_compact --entries 1000000 --out FILE.json

One nats-server on 127.0.0.1 (a free port, JetStream in a temporary directory, its default
``max_payload`` of 1 MiB), started here and stopped by its PID at the end:

1. ``publish``: one party's list of ``--entries`` certificates registered as operations of
   10,000 (the per-call bound of ``POST /v1/watch``) on ``JPKI_WATCH``, a tenth of them
   removing 1,000 entries an earlier one added (removals must survive compaction);
2. ``join_replay``: node A's empty lists catch up with the whole stream as feed calls do
   (`watchstream.sync`, ``[watch] replication_wait_seconds`` 2 s each; every call that
   ends behind would have answered 503): wall seconds and calls;
3. ``serving``: node A keeps serving while ``responder watch-compact --keep 0`` runs as its
   own process on A's lists (as the Kubernetes sidecar does): a batch of 1,000 entries is
   registered and A catches up with it (a feed call's work), over and over, first without
   the compaction (``alone``), then while it runs (``during``): median and longest catch-up;
   the command's wall seconds and what it printed, the streams' bytes before and after;
4. ``join_snapshot``: node B's empty lists join the compacted stream: the snapshot's parts
   (``snapshot``), then the operations registered after it, during the compaction
   (``after``): wall seconds and calls of each; B's entries and count must equal A's
   (checked, else exit 1).

Prints the JSON result and writes it to ``--out``. Bounded: one pass of each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 10_000
REMOVED = 1_000
WAIT = 2.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    conf = work / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{work / "js"}", max_memory_store: 64MB, max_file_store: 8GB }}\n'
    )
    proc = subprocess.Popen(
        ["nats-server", "-c", str(conf)],
        stdout=(work / "nats.log").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("nats-server did not start") from None
            time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


def _spread(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "calls": len(ordered),
        "median": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else 0.0,
        "max": round(ordered[-1] * 1000, 1) if ordered else 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "watch_compact.json")
    p.add_argument("--entries", type=int, default=1_000_000)
    args = p.parse_args()
    if args.entries < BATCH:
        p.error(f"--entries must be at least {BATCH}")

    from crlbuilder.store import format as sf
    from responder.v1 import watchlog, watchsnap
    from responder.v1.watchdb import LmdbWatchSet
    from responder.v1.watchset import WatchKeys
    from responder.v1.watchstream import WatchStream, sync

    keys = WatchKeys(bytes(range(32)))
    tag = keys.tag("bank")
    work = Path(tempfile.mkdtemp(prefix="bench-watch-compact-"))
    proc, source = _start(work)
    opened: list[Any] = []
    try:

        def node(name: str) -> tuple[LmdbWatchSet, WatchStream]:
            pair = (
                LmdbWatchSet(work / name, keys, map_size=4 << 30),
                WatchStream(source, timeout=WAIT),
            )
            opened.extend(pair)
            return pair

        def join(
            lists: LmdbWatchSet, stream: WatchStream, target: int | None = None
        ) -> dict[str, Any]:
            calls = 0
            t = time.monotonic()
            while True:
                calls += 1
                try:
                    sync(lists, stream, target, WAIT)
                    break
                except watchlog.Behind:
                    continue
            return {"seconds": round(time.monotonic() - t, 2), "calls": calls}

        def digest(lists: LmdbWatchSet) -> tuple[int, str, int]:
            h = hashlib.blake2b()
            with lists.frozen() as (applied, _sid, listed):
                for e in listed:
                    h.update(e)
            return applied, h.hexdigest(), lists.count("bank")

        def stream_bytes(stream: WatchStream, name: str) -> int:
            c = stream._connected()
            return int(c.run(c.js.stream_info(name)).state.bytes)

        a, writer = node("a"), node("writer")[1]
        t = time.monotonic()
        ops = 0
        for start in range(0, args.entries, BATCH):
            serials = range(start, min(start + BATCH, args.entries))
            remove = (
                [sf.status_key(1, s) for s in range(start - BATCH, start - BATCH + REMOVED)]
                if start and (start // BATCH) % 10 == 0
                else []
            )
            add = keys.entries(tag, [sf.status_key(1, s) for s in serials])
            made = watchlog.make_op(keys.check(), 10**9, keys.entries(tag, remove), add, tag)
            writer.publish(watchlog.encode(made))
            ops += 1
        published = time.monotonic() - t
        before = stream_bytes(writer, "JPKI_WATCH")
        replay = join(*a)
        secret = work / "watch.secret"
        secret.write_text(bytes(range(32)).hex() + "\n")
        secret.chmod(0o600)
        conf = work / "responder.toml"
        conf.write_text(
            f'[ledger]\ndir = "{work / "ledger"}"\n'
            f'[watch]\ndir = "{work / "a"}"\nsecret_file = "{secret}"\nmap_size_gib = 4\n'
            f'[cluster]\nnats = "{source}"\n'
        )
        serial = args.entries

        def feed_call() -> float:
            nonlocal serial
            add = keys.entries(tag, [sf.status_key(1, s) for s in range(serial, serial + 1000)])
            serial += 1000
            writer.publish(watchlog.encode(watchlog.make_op(keys.check(), 10**9, [], add, tag)))
            t = time.monotonic()
            sync(a[0], a[1], None, WAIT)
            return time.monotonic() - t

        alone = [feed_call() for _ in range(30)]
        t = time.monotonic()
        cmd = subprocess.Popen(
            [str(Path(sys.executable).parent / "responder"), "watch-compact",
             f"--config={conf}", "--keep=0", "--min-operations=1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        during = []
        while cmd.poll() is None:
            during.append(feed_call())
        compacted = time.monotonic() - t
        said = (cmd.stdout.read() if cmd.stdout else b"").decode().strip()
        if cmd.returncode != 0:
            raise SystemExit(f"watch-compact failed: {said}")
        after = stream_bytes(writer, "JPKI_WATCH")
        snap = stream_bytes(writer, "JPKI_WATCH_SNAP")
        sealed = writer.latest_seal()
        assert sealed is not None
        snapshot_of = watchsnap.decode_seal(keys.snapshot_mac, sealed[1]).seq
        b = node("b")
        last = writer.last_seq()
        loaded = {
            "snapshot": join(*b, snapshot_of),
            "after": {**join(*b), "operations": last - snapshot_of},
        }
        same = digest(a[0]) == digest(b[0])
        result = {
            "host": platform.node(),
            "python": platform.python_version(),
            "entries_registered": args.entries,
            "entries_listed": digest(a[0])[2],
            "operations_before": ops,
            "publish_seconds": round(published, 2),
            "join_replay": replay,
            "serving": {
                "compact_seconds": round(compacted, 2),
                "compact_said": said,
                "watch_stream_bytes_before": before,
                "watch_stream_bytes_after": after,
                "snapshot_stream_bytes": snap,
                "catch_up_ms_alone": _spread(alone),
                "catch_up_ms_during": _spread(during),
            },
            "join_snapshot": loaded,
            "same_lists": same,
        }
    finally:
        for o in opened:
            o.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
