"""deploy/haproxy/haproxy.cfg run for real in front of three nodes whose changes feed answers
503: the feed's 503s take no node out.

The nodes' backend marks a node down after five 5xx answers in a row (``observe layer7
error-limit 5 on-error mark-down``). The changes feed (``GET /v1/changes``, ``POST
/v1/watch``) answers 503 at once, with Retry-After, while its watch stream is held down
after a failed call, or while the node's watch lists do not replicate
(`responder.v1.changes`; JpkiVaWatchReplicationBroken: "its OCSP is not affected"), and
alike on every node when the stream is at fault: a party polling the feed took the nodes out
one after the other, and every party's OCSP with them. The feed now goes to a backend that
follows the nodes' health checks (``track``) without observing its answers, as the CRL files
do (tests/test_haproxy_crl.py).

The nodes are stand-ins answering as a node does in that state (/readyz 200, the feed 503
with Retry-After, everything else 200): a real node in it needs a NATS cluster whose watch
stream fails while its record stream serves. The config is the deploy file itself, with only
what loopback needs changed (`tests.support.shippedproxy`).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.shippedproxy import shipped_haproxy

pytestmark = pytest.mark.integration


class _Node(http.server.BaseHTTPRequestHandler):
    """A node whose watch stream is held down: the feed 503, the rest served."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        feed = self.path.split("?")[0] in ("/v1/changes", "/v1/watch")
        body = b'{"type":"unavailable"}' if feed else b"ok\n"
        self.send_response(503 if feed else 200)
        if feed:
            self.send_header("Retry-After", "5")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _nodes(n: int) -> Iterator[list[int]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Node) for _ in range(n)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def _ask(lb: tuple[str, int], method: str, path: str) -> int:
    conn = http.client.HTTPConnection(*lb, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None,
                     headers={"Authorization": "Bearer t"})  # fmt: skip
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0  # haproxy not listening yet
    finally:
        conn.close()


def test_the_changes_feeds_503s_take_no_node_out(tmp_path: Path) -> None:
    with _nodes(3) as ports, shipped_haproxy(tmp_path, ports) as lb:
        deadline = time.monotonic() + 20
        while _ask(lb, "POST", "/ocsp") != 200:  # the nodes UP (rise 2)
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.2)
        time.sleep(2.5)  # every node's checks passed
        feed = [_ask(lb, "GET", "/v1/changes?cursor=x") for _ in range(20)]
        feed += [_ask(lb, "POST", "/v1/watch") for _ in range(10)]
        ocsp = [_ask(lb, "POST", "/ocsp") for _ in range(9)]
        log = (tmp_path / "haproxy.log").read_text()
    assert set(feed) == {503}, feed  # the nodes' own answer, passed on
    assert set(ocsp) == {200}, (ocsp, log)
    assert " is DOWN" not in log, log
