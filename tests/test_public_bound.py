"""The public routes bounded for clients that prove no party (decision A of the public routes'
reading, report aupublic).

Nothing bounded the requests of clients without a credential on /healthz, /readyz,
/announcements and the other public routes: a flood of them (wrk -c40, 30-60k a second)
raised a registered party's OCSP p99 from 3 ms to 13-18 ms. Now each worker answers
``[server.limits] public_per_second`` of them (``public_burst`` at once) and refuses the
rest 429 with Retry-After and a second's hold of the connection; a party's requests are never counted, and a health
check (the first request of a connection to /healthz or /readyz) is always answered, so
a flood cannot take a node out of its load balancer.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from responder.app import JpkiApp
from responder.http import Request
from responder.publicbound import PublicBucket, is_probe, route_class
from tests.conftest import Built
from tests.support.harness import start_server
from tests.support.nats import haproxy
from tests.test_app_routes import answer

PARTY = "sig-verifier"


def _request(target: bytes, *, sequence: int = 2, token: str | None = None) -> Request:
    headers = {b"authorization": b"Bearer " + token.encode()} if token else {}
    return Request(
        b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1, sequence=sequence
    )


def test_the_bucket_admits_its_burst_then_its_rate() -> None:
    bucket = PublicBucket(rate=8, burst=16)  # instants in 1/64 s: exact in binary
    assert all(bucket.take(100.0) for _ in range(16))
    assert not bucket.take(100.0)
    assert not bucket.take(100.0625)  # half a token
    assert bucket.take(100.125)
    assert not bucket.take(100.125)
    assert sum(bucket.take(100.125 + k / 64) for k in range(1, 65)) == 8  # a second: 8 more
    assert sum(bucket.take(1000.0) for _ in range(50)) == 16  # a quiet spell fills it, no more
    assert not bucket.take(999.0)  # a clock read earlier than the last one adds nothing
    bucket.configure(rate=1, burst=5)
    assert sum(bucket.take(2000.0) for _ in range(50)) == 5


def test_route_classes_and_probes() -> None:
    assert [
        route_class(p)
        for p in (b"/healthz", b"/readyz", b"/announcements.atom", b"/ca/index.json",
                  b"/reports/2026", b"/metrics", b"/nothing", b"/healthz/")
    ] == ["healthz", "readyz", "announcements", "ca", "reports", "other", "other", "other"]  # fmt: skip
    assert is_probe(b"/healthz", 1) and is_probe(b"/readyz", 1)
    assert not is_probe(b"/healthz", 2) and not is_probe(b"/announcements", 1)


@pytest.fixture
def app(built: Built, tmp_path: Path) -> Iterator[JpkiApp]:
    cfg = built.app_config(
        tmp_path, **{"server.limits.public_per_second": 1, "server.limits.public_burst": 3}
    )
    a = JpkiApp(cfg, 0)
    yield a
    a.close()


def test_past_the_bound_anonymous_requests_get_429_and_a_hold(app: JpkiApp) -> None:
    got = [answer(app, _request(b"/announcements")).status for _ in range(3)]
    assert got == [200, 200, 200]  # the burst
    for target in (b"/announcements", b"/ca/index.json", b"/healthz", b"/readyz", b"/nothing"):
        req = _request(target)
        refused = answer(app, req)
        assert refused.status == 429, target
        assert dict(refused.extra_headers)[b"retry-after"] == b"1"
        assert refused.hold == 1.0  # its connection is not read for that second
        assert req.note is not None and req.note.rule == "public_rate"


def test_a_party_is_never_charged_nor_refused(built: Built, app: JpkiApp) -> None:
    token = (built.pki / "parties" / f"{PARTY}.token").read_text().strip()
    for _ in range(20):  # well past the burst: a party's requests take no token
        assert answer(app, _request(b"/announcements", token=token)).status == 200
    assert answer(app, _request(b"/announcements")).status == 200  # the burst is intact
    for _ in range(3):
        answer(app, _request(b"/announcements"))
    assert answer(app, _request(b"/announcements")).status == 429
    assert answer(app, _request(b"/announcements", token=token)).status == 200
    # a token that proves no party is no credential
    assert answer(app, _request(b"/announcements", token="not-a-token")).status == 429


def test_a_probe_is_answered_when_the_bound_is_spent(app: JpkiApp) -> None:
    spent = [answer(app, _request(b"/healthz")).status for _ in range(4)]  # a burst of 3
    assert spent == [200, 200, 200, 429]
    assert answer(app, _request(b"/healthz", sequence=1)).status == 200
    assert answer(app, _request(b"/readyz", sequence=1)).status == 200
    assert answer(app, _request(b"/announcements", sequence=1)).status == 429
    assert answer(app, _request(b"/healthz", sequence=2)).status == 429


def test_a_reload_takes_the_new_bound(built: Built, app: JpkiApp, tmp_path: Path) -> None:
    """SIGHUP re-reads [server.limits]: the worker's bucket takes the new figures."""
    assert [answer(app, _request(b"/ca/index.json")).status for _ in range(4)] == [200] * 3 + [429]
    wider = tmp_path / "wider"
    wider.mkdir()
    app.reload(
        built.app_config(
            wider, **{"server.limits.public_per_second": 1000, "server.limits.public_burst": 1000}
        )
    )
    time.sleep(0.01)  # 10 tokens at the new rate
    assert answer(app, _request(b"/ca/index.json")).status == 200


def test_a_flood_on_a_real_server_is_held_and_probes_and_parties_answered(
    built: Built, tmp_path: Path
) -> None:
    """Through the HTTP layer: a refused client's connection is not read for the second of
    its Retry-After, the request's place on its connection is what makes a probe, and the
    refusals are counted by route class."""
    limits = ("--public-per-second", "1", "--public-burst", "2")
    with start_server(built, tmp_path, extra=limits) as s:
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        # a trusted proxy's connection (the server trusts 127.0.0.1) carries other clients'
        # requests too: refused, it is never held
        proxy = http.client.HTTPConnection(host, int(port), timeout=10)
        statuses = _until_refused(proxy)
        t0 = time.monotonic()
        second = _get(proxy, "/announcements")
        assert time.monotonic() - t0 < 0.5 and second in (200, 429)
        proxy.close()
        # from 127.0.0.2, any other client: not read for the second of its Retry-After
        flood = http.client.HTTPConnection(
            host, int(port), timeout=10, source_address=("127.0.0.2", 0)
        )
        statuses += _until_refused(flood)
        t0 = time.monotonic()
        flood.request("GET", "/announcements")  # sent at once: read only after the hold
        for _ in range(3):  # meanwhile a health check, a connection for each, is answered
            assert s.get("/healthz") == (200, b"ok\n")
            assert s.get("/readyz")[0] == 200
        party = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(6):  # and a party, whose requests take nothing from the bound
            auth = {"Authorization": f"Bearer {s.token(PARTY)}"}
            party.request("GET", "/announcements", headers=auth)
            got = party.getresponse()
            got.read()
            assert got.status == 200
        party.close()
        r = flood.getresponse()
        r.read()
        assert time.monotonic() - t0 >= 0.5  # held for a second, not answered at once
        flood.close()
        refused = statuses.count(429) + (second == 429) + (r.status == 429)
        deadline = time.monotonic() + 5  # counts reach /metrics within a flush interval (1 s)
        while _public_refused(s.metrics_url) != {"announcements": refused}:
            if time.monotonic() > deadline:
                raise AssertionError(_public_refused(s.metrics_url))
            time.sleep(0.2)


def _get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def _until_refused(conn: http.client.HTTPConnection) -> list[int]:
    """Anonymous GETs of /announcements on one connection (one worker) until one is refused."""
    statuses = [_get(conn, "/announcements")]
    while statuses[-1] != 429 and len(statuses) < 5:
        statuses.append(_get(conn, "/announcements"))
    assert statuses[-1] == 429, statuses
    return statuses


def _public_refused(metrics_url: str) -> dict[str, float]:
    """``jpkiva_public_refused_total`` by route class, the classes at 0 left out."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jpkiva_public_refused_total" and sample.value:
                route = sample.labels["route"]
                got[route] = got.get(route, 0.0) + sample.value
    return got


def test_haproxy_keeps_the_node_while_anonymous_clients_flood_the_probes(
    built: Built, tmp_path: Path
) -> None:
    """deploy/haproxy's check (``option httpchk``, GET /readyz, here every 200 ms and out at
    the first failure) opens a connection per check: while anonymous clients keep each
    worker's bound spent by asking /readyz and /healthz on their own connections, the
    checks are still answered 200 and a party's requests through haproxy are served. With
    the probes charged like any request, the node was taken out within a second."""
    limits = ("--public-per-second", "1", "--public-burst", "1")
    with start_server(built, tmp_path, extra=limits) as s:
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        node = SimpleNamespace(name="node1", port=int(port))
        lb_dir = tmp_path / "lb"
        lb_dir.mkdir()
        with haproxy(lb_dir, [cast(Any, node)]) as lb:
            lb_host, lb_port = urllib.parse.urlsplit(lb).netloc.split(":")
            auth = {"Authorization": f"Bearer {s.token(PARTY)}"}

            def through_lb() -> int:
                conn = http.client.HTTPConnection(lb_host, int(lb_port), timeout=10)
                try:
                    conn.request("GET", "/announcements", headers=auth)
                    r = conn.getresponse()
                    r.read()
                    return r.status
                finally:
                    conn.close()

            deadline = time.monotonic() + 20
            while through_lb() != 200:  # the node UP after `rise 2` checks
                assert time.monotonic() < deadline, "haproxy never routed to the node"
                time.sleep(0.2)
            stop = threading.Event()

            def flood(path: str) -> None:
                conn = http.client.HTTPConnection(
                    host, int(port), timeout=10, source_address=("127.0.0.2", 0)
                )
                while not stop.is_set():
                    conn.request("GET", path)
                    conn.getresponse().read()
                conn.close()

            floods = [
                threading.Thread(target=flood, args=(path,), daemon=True)
                for path in ("/readyz", "/healthz") * 8
            ]
            for t in floods:
                t.start()
            try:
                statuses = []
                until = time.monotonic() + 4  # 20 checks, each alone enough to take it out
                while time.monotonic() < until:
                    statuses.append(through_lb())
                    time.sleep(0.1)
            finally:
                stop.set()
                for t in floods:
                    t.join(timeout=5)
        log = (lb_dir / "haproxy.log").read_text()
    assert set(statuses) == {200}, statuses
    assert " is DOWN" not in log, log


def test_requests_pipelined_past_a_refusal_are_not_answered_one_by_one(
    built: Built, tmp_path: Path
) -> None:
    """The hold stops reading the connection, but requests already read (a client pipelining
    hundreds of them in one write) were each handed to the app and refused 429 in turn: a
    flood that pipelines got ~450 answers per connection per second (one 8 KiB read), not
    one. A request refused again on a held connection now closes it after its 429; a party's
    request pipelined behind a refusal is answered and does not."""
    limits = ("--public-per-second", "1", "--public-burst", "1")
    one = b"GET /announcements HTTP/1.1\r\nHost: x\r\n\r\n"
    with start_server(built, tmp_path, extra=limits) as s:
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        with socket.create_connection(
            (host, int(port)), timeout=10, source_address=("127.0.0.2", 0)
        ) as c:
            c.sendall(one * 150)  # one write: 6 KiB, inside one read of the server
            got = b""
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    chunk = c.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break  # closed by the server
                got += chunk
                c.settimeout(max(0.1, deadline - time.monotonic()))
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)]
        assert statuses[0] == 200 and set(statuses[1:]) == {429}
        assert len(statuses) <= 3, len(statuses)  # the burst, the refusal, the close
        assert b"connection: close" in got.lower()
        # a party's request pipelined behind the refusal is never refused: answered, no close
        auth = b"GET /announcements HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n\r\n"
        time.sleep(1.1)  # a token back
        with socket.create_connection(
            (host, int(port)), timeout=3, source_address=("127.0.0.2", 0)
        ) as c:
            c.sendall(one * 2 + auth % s.token(PARTY).encode())
            got = b""
            while got.count(b"HTTP/1.1 ") < 3 or not got.endswith(b"</html>\n"):
                chunk = c.recv(65536)
                assert chunk, got[-200:]
                got += chunk
            assert [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)] == [200, 429, 200]
            assert b"connection: close" not in got.lower()
