"""deploy/haproxy/haproxy.cfg bounds anonymous clients per address, for real.

Behind haproxy every node sees every anonymous client as the proxy itself (a trusted proxy,
whose connection is refused but never held), so a node's public bound ([server.limits]
public_per_second, per worker) is one bucket shared by all anonymous clients: one address
flooding `/healthz` had every other anonymous client refused with it. The frontend now
tracks, per address, the requests that prove no party to the proxy (a public route without a
client certificate, whatever Authorization header it carries; a party's route with none) and
the 401s: past ``JPKI_VA_ANON_PER_SECOND`` of the first a second, or
``JPKI_VA_REFUSED_PER_10S`` of the second in 10 s, haproxy answers 429 itself. Other
addresses, and a party's bearer token on its routes, are served as before.

Each client here has an address of its own on loopback (127.0.0.x), so the per-address
tables are seen apart.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import time
import urllib.parse
from pathlib import Path

from crlbuilder.model import CertStatus
from tests.conftest import Built
from tests.support.harness import ocsp_request, sample, start_server
from tests.support.shippedproxy import shipped_haproxy

PARTY = "sig-verifier"
BOUNDS = {"JPKI_VA_ANON_PER_SECOND": "5", "JPKI_VA_REFUSED_PER_10S": "5"}


UNAUTHORIZED = bytes.fromhex("30030a0106")
"""OCSP's own refusal of a credential (RFC 6960 §2.3), in an HTTP 200."""


def _ask(
    conn: http.client.HTTPConnection, path: str, token: str | None, body: bytes
) -> tuple[int | str, str]:
    """One request; its status (``"unauthorized"`` for OCSP's) and Retry-After."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body:
        json = path.startswith("/v1/")
        headers["Content-Type"] = "application/json" if json else "application/ocsp-request"
    conn.request("POST" if body else "GET", path, body=body or None, headers=headers)
    r = conn.getresponse()
    got = r.read()
    status: int | str = "unauthorized" if r.status == 200 and got == UNAUTHORIZED else r.status
    return status, r.getheader("Retry-After") or ""


def _statuses(
    lb: tuple[str, int], source: str, path: str, n: int, token: str | None = None, body: bytes = b""
) -> list[int | str]:
    """What ``n`` requests in a row from address ``source`` got (a new connection whenever
    the responder closed one: it does after a refused credential)."""
    got: list[int | str] = []
    conn = http.client.HTTPConnection(*lb, timeout=10, source_address=(source, 0))
    try:
        for _ in range(n):
            try:
                status, retry_after = _ask(conn, path, token, body)
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()  # reopened by the next request
                status, retry_after = _ask(conn, path, token, body)
            if status == 429:
                assert retry_after == "1"
            got.append(status)
    finally:
        conn.close()
    return got


def test_one_anonymous_address_flooding_is_refused_at_the_proxy_and_nobody_else(
    built: Built, tmp_path: Path
) -> None:
    with start_server(built, tmp_path / "node", extra=("--workers", "1")) as node:
        token = node.token(PARTY)
        ocsp = ocsp_request(built, sample(built, CertStatus.GOOD))
        port = int(urllib.parse.urlsplit(node.url).port or 0)
        lb_dir = tmp_path / "lb"
        lb_dir.mkdir()
        with shipped_haproxy(lb_dir, [port], env=BOUNDS) as lb:
            deadline = time.monotonic() + 20
            while True:  # the node UP (rise 2): asked by a party, tracked by nobody
                with contextlib.suppress(OSError):
                    if _statuses(lb, "127.0.0.9", "/announcements", 1, token) == [200]:
                        break
                assert time.monotonic() < deadline, (lb_dir / "haproxy.log").read_text()
                time.sleep(0.2)

            flood = _statuses(lb, "127.0.0.2", "/healthz", 40)
            other = _statuses(lb, "127.0.0.3", "/healthz", 3)  # meanwhile, another address
            party = _statuses(lb, "127.0.0.2", "/ocsp", 40, token, ocsp)  # a party's token
            # its OCSP GETs at the root (RFC 5019 §5, a responder URL that is the root) too
            root = _statuses(lb, "127.0.0.8", "/" + base64.b64encode(ocsp).decode(), 40, token)
            # a made-up header buys no way round on a public route (the node answers it
            # whoever asks, charging its shared bound) ...
            posing = _statuses(lb, "127.0.0.4", "/healthz", 40, "made-up")
            # ... and on a party's route it is a 401, again and again
            made_up = _statuses(lb, "127.0.0.5", "/ocsp", 20, "made-up", ocsp)
            made_up_v1 = _statuses(lb, "127.0.0.7", "/v1/status", 20, "made-up", b"{}")
            after = _statuses(lb, "127.0.0.6", "/ocsp", 3, token, ocsp)
            log = (lb_dir / "haproxy.log").read_text()

    # 40 requests are far below the node's own bound (100 a second, burst 200): every 429
    # here is the proxy's
    assert flood[:5] == [200] * 5, flood
    assert set(flood) == {200, 429} and flood.count(429) >= 20, flood
    assert other == [200] * 3, other
    assert party == [200] * 40, party  # a party's route with a credential: not anonymous
    assert root == [200] * 40, root
    assert posing[:5] == [200] * 5, posing
    assert set(posing) == {200, 429} and posing.count(429) >= 20, posing
    assert made_up[:5] == ["unauthorized"] * 5, made_up
    assert set(made_up) == {"unauthorized", 429} and made_up.count(429) >= 10, made_up
    assert made_up_v1[:5] == [401] * 5, made_up_v1
    assert set(made_up_v1) == {401, 429} and made_up_v1.count(429) >= 10, made_up_v1
    assert after == [200] * 3, (after, log)
