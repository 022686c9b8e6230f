"""The ledger stream's size (帳簿, Act §40) for a given load: messages and bytes JPKI_LEDGER holds.

    python bench/bench_ledger_stream.py [--parties 50] [--collections 360] [--days 1]
    PYTHONPATH=/path/to/other/tree python bench/bench_ledger_stream.py ...   # before/after

One worker counts ``--parties`` parties x 2 kinds (100 busy counters by default), every
counter growing between two collections; each collection (the master's, every
``[ledger] collect_interval``, 10 s: 360 an hour) merges the worker file and ships what
grew (`responder.ledgerstream.ship`) to a stream on one real nats-server started here
(127.0.0.1, stopped by its PID). ``--days`` repeats that on as many JST days (the
ledger's clock is given: new counters each day). Then a node that never gathered before
reads the whole stream (`gather`), and its service ledger's total must equal this node's
ledger (exit 1 otherwise). Prints messages, bytes and bytes per message of the stream.
Not in `make bench` (a before/after tool: run it on each tree with ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path


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
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("nats-server did not start") from None
            time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parties", type=int, default=50)
    p.add_argument("--collections", type=int, default=360, help="per day")
    p.add_argument("--days", type=int, default=1)
    args = p.parse_args()

    from crlbuilder.jetstream import Cluster
    from crlbuilder.rules import JST
    from responder.ledger import Ledger, LedgerWriter, Method, Service
    from responder.ledgerstream import gather, ship

    kinds = [(Service.SIGN_REVOCATION_INFO, Method.OCSP), (Service.AUTH_CRL_FILE, Method.CRL_FILE)]
    stream = "JPKI_LEDGER"
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        work = Path(tmp)
        proc, url = _start(work)
        try:
            c = Cluster([url])
            try:
                node, late = work / "node", work / "late"
                start = datetime(2026, 12, 30, 0, 0, 5, tzinfo=JST).timestamp()
                clock = [start]
                shipped = 0
                with LedgerWriter.open(node, 0, clock=lambda: clock[0]) as w:
                    for day in range(args.days):
                        clock[0] = start + day * 86_400
                        w.tick()
                        for _ in range(args.collections):
                            for i in range(args.parties):
                                for service, method in kinds:
                                    w.count(f"bank-{i:04d}", service, method)
                            clock[0] += 10
                            w.flush()
                            with Ledger.open(node) as ledger:
                                ledger.collect(now=clock[0])
                                shipped += ship(c, ledger, "node-a", stream)
                with Ledger.open(late) as ledger:
                    gather(c, ledger, stream)
                state = c.run(c.js.stream_info(stream)).state
            finally:
                c.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        every = (date(1970, 1, 1), date(9999, 12, 31))
        with Ledger.open(node) as ledger:
            mine = ledger.totals(*every).get((), 0)
        with Ledger.open(late) as ledger:
            ledger.view = "service_ledger"
            gathered = ledger.totals(*every).get((), 0)
    messages, size = int(state.messages), int(state.bytes)
    print(json.dumps({
        "counters": args.parties * len(kinds) * args.days,
        "collections": args.collections * args.days,
        "messages_shipped": shipped,
        "stream_messages": messages,
        "stream_bytes": size,
        "bytes_per_message": round(size / messages, 1) if messages else 0,
        "node_total": mine,
        "gathered_total": gathered,
    }))  # fmt: skip
    return 0 if mine == gathered == args.parties * len(kinds) * args.collections * args.days else 1


if __name__ == "__main__":
    sys.exit(main())
