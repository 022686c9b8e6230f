"""How long a 機構 dripping its answer holds each client of the 機構's appliance.

    python -m bench.bench_drip --every 1 --bytes 90
    PYTHONPATH=/path/to/other/tree python -m bench.bench_drip   # another checkout, before/after

A raw server on loopback answers every request with its status line at once, then a header
line one byte every ``--every`` seconds (``--bytes`` of them), then a two-byte body: each
socket read waits ``--every`` seconds, far less than any client's timeout. The four clients
are called the same way in every checkout, with their defaults, at once (one thread each):
the record-info relay's `responder.relayclient.ask` (``--relay-timeout``, the relay's 10 s),
``group pull``'s `fetch`, ``import-crl``'s `read_source` and ``group init``/``group keys``'
`fetch_answer_keys`. Prints, per client, the seconds it was held and how it ended, as JSON.
Nothing heavy: four sleeping connections. Not in `make bench` (a before/after tool).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Callable

import crlbuilder
from crlbuilder.crl.importer import read_source
from crlbuilder.group.init import fetch_answer_keys
from crlbuilder.group.pull import fetch
from responder.relayclient import ask


def serve(every: float, n: int) -> tuple[socket.socket, threading.Event]:
    """The dripping server: one thread per connection; stops when the event is set."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        try:
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for b in b"X-Pad: " + b"p" * max(0, n - 9) + b"\r\n":
                    if stop.is_set():
                        return
                    conn.sendall(bytes([b]))
                    time.sleep(every)
                conn.sendall(b"Content-Length: 2\r\n\r\nok")
        except OSError:
            pass  # the client gave up: what is measured

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, stop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=float, default=1.0, help="seconds between header bytes")
    p.add_argument("--bytes", type=int, default=90, help="header bytes dripped")
    p.add_argument("--relay-timeout", type=float, default=10.0)
    args = p.parse_args()
    listener, stop = serve(args.every, args.bytes)
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    clients: dict[str, Callable[[], object]] = {
        "relay (responder.relayclient.ask)": lambda: ask(
            base + "/v1/record-info", b"{}", "token", timeout=args.relay_timeout, limit=1 << 20
        ),
        "group pull (fetch)": lambda: fetch(base + "/crl/x.crl", "token"),
        "import-crl (read_source)": lambda: read_source(base + "/crl/x.crl"),
        "group init/keys (fetch_answer_keys)": lambda: fetch_answer_keys(base),
    }
    results: dict[str, dict[str, object]] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        t0 = time.monotonic()
        try:
            got: object = call()
            ended = f"returned {type(got).__name__}: {str(got)[:80]}"
        except Exception as e:  # what it ended with is the measure
            ended = f"{type(e).__name__}: {str(e)[:160]}"
        results[name] = {"seconds": round(time.monotonic() - t0, 2), "ended": ended}

    threads = [threading.Thread(target=run, args=item) for item in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    listener.close()
    print(
        json.dumps(
            {"tree": crlbuilder.__file__, "every": args.every, "bytes": args.bytes}
            | {"clients": results},
            ensure_ascii=False,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
