"""``jpkiva_connections_evicted_total``: the displacements of issue 10, item 4, made visible.

Connections not yet attributed to a registered party have a budget of their own
(``[server.limits] max_unattributed``); a new connection beyond it displaces the oldest
one waiting on its client (503 and a close). `responder.http.HttpServer` counted these
(``evicted``) but nothing exported the count, so operators could not see a slowloris
flood being shed. Through the real server: every connection that was displaced (its
client read a 503) is one in the counter, summed over the workers, and one 503 of
endpoint ``shed`` in ``jpkiva_requests_total``, none of them among the failures the
critical error ratio counts (anyone can cause them: tests/test_shedding.py).
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import Built
from tests.support.harness import start_server

METRIC = "jpkiva_connections_evicted_total"
PARTY = "sig-verifier"


def _samples(metrics_url: str) -> list[Sample]:
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _evicted(metrics_url: str) -> float:
    return sum(s.value for s in _samples(metrics_url) if s.name == METRIC)


def test_displaced_unattributed_connections_are_counted(built: Built, tmp_path: Path) -> None:
    limits = ("--max-connections", "50", "--max-unattributed", "4", "--header-timeout", "30")
    with start_server(built, tmp_path, extra=limits) as s:
        assert _evicted(s.metrics_url) == 0  # exported before any displacement
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        socks = []
        try:
            for _ in range(20):  # slowloris: headers begun, never finished
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
                socks.append(sock)
                time.sleep(0.02)  # in order, so that each displaces the oldest
            time.sleep(0.3)
            refused = 0
            for sock in socks:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):  # nothing yet: still held
                    refused += sock.recv(4096).startswith(b"HTTP/1.1 503 ")
        finally:
            for sock in socks:
                sock.close()
        # two workers, four unattributed connections each: at least 20 - 8 displaced
        assert refused >= 12
        deadline = time.monotonic() + 5  # counts reach /metrics within a flush interval (1 s)
        while _evicted(s.metrics_url) != refused and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _evicted(s.metrics_url) == refused
        requests = [x for x in _samples(s.metrics_url) if x.name == "jpkiva_requests_total"]
        shed = [x for x in requests if x.labels["endpoint"] == "shed"]
        assert {x.labels["http_status"] for x in shed} == {"503"}
        assert sum(x.value for x in shed) == refused
        failed = [x.labels for x in requests if x.labels["http_status"][0] == "5" and x not in shed]
        assert failed == []


def test_timed_out_connections_leave_the_budget_to_new_ones(built: Built, tmp_path: Path) -> None:
    """A slowloris connection whose headers time out gets 408 and lingers (up to
    ``LINGER_SECONDS``, its client may still be sending) before it closes. Lingering, it
    kept its place in the unattributed budget but could not be displaced (it no longer
    waits on its client), so for those seconds after each round of timeouts every new
    connection, a registered party's too, was refused 503: a client opening the budget's
    worth of connections every ``header_timeout`` shut parties out for most of the time.
    A connection that has its last answer now leaves the budget."""
    limits = ("--max-connections", "50", "--max-unattributed", "4", "--header-timeout", "1")
    with start_server(built, tmp_path, extra=limits) as s:
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        socks = []
        try:
            for _ in range(24):  # slowloris, never reading, never closing
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
                socks.append(sock)
            time.sleep(1.5)  # every one of them timed out (408) and lingers for 2 s
            answers = []
            for _ in range(6):  # a party's new connections, whichever worker takes them
                req = urllib.request.Request(
                    f"{s.url}/healthz", headers={"Authorization": f"Bearer {s.token(PARTY)}"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        answers.append(r.status)
                except urllib.error.HTTPError as e:
                    answers.append(e.code)
        finally:
            for sock in socks:
                sock.close()
        assert answers == [200] * 6
