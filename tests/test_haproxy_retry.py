"""deploy/haproxy/haproxy.cfg run for real: a request that reached a node is never sent to
another one (an OCSP answer signed twice, a provision counted on two nodes' ledgers, Act §40).

The shipped defaults retried on ``empty-response`` and ``response-timeout``: haproxy sent the
request again to the next node when the first one had read it and answered nothing in
``timeout server`` or closed without an answer, so both nodes signed (and counted) it. Only
``conn-failure`` (the request never left haproxy) is retried now in the nodes' backend; the CRL
files also retry a node's 503 (a GET of a file, nothing counted: tests/test_haproxy_crl.py).

The nodes are stand-ins that count what reaches them: /readyz 200, ``POST /ocsp`` read whole
then held past the proxy's server timeout (or its connection closed with no answer). The
config is the deploy file with only what loopback needs changed (`tests.support.shippedproxy`)
and ``timeout server`` lowered from 10 s to 1 s so that the test is short.
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

_seen: list[str] = []
_lock = threading.Lock()


class _Node(http.server.BaseHTTPRequestHandler):
    """Ready; ``/ocsp?hold`` answered after 3 s, ``/ocsp?close`` never (connection closed)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        path, _, how = self.path.partition("?")
        if path == "/ocsp":
            with _lock:
                _seen.append(how)
            if how == "close":
                self.close_connection = True
                return
            time.sleep(3)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _nodes(n: int) -> Iterator[list[int]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Node) for _ in range(n)]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def _ask(lb: tuple[str, int], method: str, path: str) -> int:
    conn = http.client.HTTPConnection(*lb, timeout=15)
    try:
        conn.request(method, path, body=b"x" * 10 if method == "POST" else None,
                     headers={"Authorization": "Bearer t"})  # fmt: skip
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0  # haproxy not listening yet
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["hold", "close"])
def test_a_request_a_node_read_is_not_sent_to_another(tmp_path: Path, how: str) -> None:
    timeouts = {"timeout server 10s": "timeout server 1s"}
    with _nodes(3) as ports, shipped_haproxy(tmp_path, ports, edit=timeouts) as lb:
        deadline = time.monotonic() + 20
        while _ask(lb, "GET", "/readyz") != 200:  # the nodes UP (rise 2)
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.2)
        time.sleep(2.5)  # every node's checks passed
        with _lock:
            _seen.clear()
        status = _ask(lb, "POST", f"/ocsp?{how}")
        time.sleep(0.5)
        with _lock:
            seen = list(_seen)
    assert seen == [how], f"the request reached {len(seen)} nodes"
    assert status == (504 if how == "hold" else 502)
