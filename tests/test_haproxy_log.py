"""deploy/haproxy/haproxy.cfg's access log, for real: it names no certificate and holds no
request a reader could send again.

An OCSP GET (RFC 6960 appendix A.1, RFC 5019 §5) carries the whole OCSPRequest in its path,
``/ocsp/{base64}``: the CertIDs (a holder's certificate serial) and, for a signed request
(RFC 6960 §4.1.2), the party's signature, which proves the party to the responder as often
as the request is sent again. The shipped ``option httplog`` logged the request line (``%r``)
whole, so every GET's serial and signature went to haproxy's log (stdout, the journal): the
responder keeps serial numbers out of its logs (`responder.logs`), the proxy in front of it
did not. The log line now has the method and the path, an OCSP GET's request shown as
``/ocsp/{request}`` (``/{request}`` at the root, a responder URL that is the root), and no
query string; the other fields of haproxy's HTTP log are kept.

The nodes are stand-ins answering 200 to everything (`_Node`); the config is the deploy file
with only what loopback needs changed (`tests.support.shippedproxy`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from crlbuilder.ocsp.response import cert_id_der
from tests.support.shippedproxy import shipped_haproxy

pytestmark = pytest.mark.integration

SERIAL = 0x5EC12E7_5E21A1
"""A holder's certificate serial, as a GET's CertID carries it."""


def _get_request() -> bytes:
    """An OCSPRequest of one SHA-1 CertID for SERIAL (the canonical RFC 5019 request)."""
    cid = cert_id_der("sha1", b"\x11" * 20, b"\x22" * 20, SERIAL)
    req = b"\x30" + bytes((len(cid),)) + cid
    lst = b"\x30" + bytes((len(req),)) + req
    tbs = b"\x30" + bytes((len(lst),)) + lst
    return b"\x30" + bytes((len(tbs),)) + tbs


class _Node(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _node() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(lb: tuple[str, int], path: str) -> int:
    conn = http.client.HTTPConnection(*lb, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer t"})
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0  # haproxy not listening yet
    finally:
        conn.close()


def test_the_access_log_names_no_certificate_of_an_ocsp_get(tmp_path: Path) -> None:
    der = _get_request()
    plain = base64.b64encode(der).decode()
    forms = {
        "base64": plain,
        "percent-encoded": urllib.parse.quote(plain, safe=""),
        "base64url": base64.urlsafe_b64encode(der).decode().rstrip("="),
        "after a trailing slash": "/" + plain,
    }
    with _node() as port, shipped_haproxy(tmp_path, [port]) as lb:
        deadline = time.monotonic() + 20
        while _get(lb, "/readyz") != 200:  # the node UP (rise 2)
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.2)
        for form in forms.values():
            assert _get(lb, f"/ocsp/{form}") == 200
            assert _get(lb, f"/{form}") == 200  # a responder URL that is the root
        assert _get(lb, "/v1/changes?cursor=c0ffee-cursor&limit=5") == 200
        time.sleep(0.5)  # haproxy writes its log line as the answer ends
    log = (tmp_path / "haproxy.log").read_text()
    lines = [line for line in log.splitlines() if "/ocsp/" in line]
    assert len(lines) == len(forms), log  # each request still logged, once
    root = [line for line in log.splitlines() if '"GET /{request} HTTP/1.1"' in line]
    assert len(root) == len(forms), log
    for name, form in forms.items():
        assert form not in log, f"the {name} OCSP request is in haproxy's log"
    for text in (plain[8:40], f"{SERIAL:x}", f"{SERIAL:X}", str(SERIAL)):
        assert text not in log
    assert all('"GET /ocsp/{request} HTTP/1.1"' in line for line in lines), lines
    assert "c0ffee-cursor" not in log
    assert '"GET /v1/changes HTTP/1.1"' in log
    assert '"GET /readyz HTTP/1.1"' in log  # other paths as they were
