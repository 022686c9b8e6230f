"""The HTTP layer's load shedding is counted as shedding, never as the product failing.

Issue 10, item 4 gave the layer connection budgets: a new connection beyond
``max_unattributed`` or ``max_connections`` displaces the oldest connection not yet
attributed to a party, and when none can be displaced it is refused; both get 503 and a
close. Those 503s were counted as endpoint ``other`` in ``jpkiva_requests_total``, inside
the critical alert on the error ratio (``http_status=~"5.."``), so anyone opening many
connections could page the operators (the class of issue 10, item 10). They count as
endpoint ``shed`` now (`responder.http.SHED_STATUS`, `responder.logs.layer_endpoint`),
which the ratio leaves out and JpkiVaShedding watches (deploy/prometheus/alerts_test.yml
has the rules' side). In process, on loopback: a real `HttpServer` with `WorkerMetrics`
as its hooks, one displacement, one refusal and one oversized header (431, a 4xx that
stays ``other``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import values

from responder import metrics as m
from responder.config import LimitsConfig, LogConfig, MetricsConfig
from responder.http import HttpServer, Request, Response
from responder.logs import AccessLog
from responder.outcome import Outcome
from tests.support.harness import parse_metrics, total

_OK = Response(200, b"ok\n", b"text/plain")


class _PartyApp:
    """Attributes a request to party ``p`` when it says ``X-Party`` (as a credential would)."""

    def handle(self, req: Request) -> Response:
        party = "p" if b"x-party" in req.headers else "-"
        req.note = Outcome("healthz", party=party)
        return _OK


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _shed_one_displaced_and_one_refused(server: HttpServer) -> list[bytes]:
    """max_connections 3, max_unattributed 1: what each client of a shed connection read."""
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_(first: bytes) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        clients.append((reader, writer))
        writer.write(first)
        await writer.drain()
        return reader

    async def attributed() -> None:
        reader = await open_(b"GET /p HTTP/1.1\r\nHost: a\r\nX-Party: 1\r\n\r\n")
        assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200 ")

    shed: list[bytes] = []
    try:
        await attributed()
        await attributed()
        slow = await open_(b"GET /p HTTP/1.1\r\nHost: a\r\n")  # headers never finished
        await _until(lambda: len(server.unattributed) == 1, "the slow connection")
        await attributed()  # over both budgets: displaces the slow one
        shed.append(await slow.read())
        refused = await open_(b"")  # three attributed: nothing to displace
        shed.append(await refused.read())
        clients[0][1].close()  # a slot frees; an oversized header is the client's fault
        await _until(lambda: server.active == 2, "the slot to free")
        big = await open_(b"GET /p HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"x" * 4096 + b"\r\n\r\n")
        shed.append(await big.read())
    finally:
        for _, writer in clients:
            writer.close()
        listener.close()
        await server.drain(1.0)
    return shed


def test_shedding_503s_are_labelled_shed_not_counted_as_the_apps_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(m.ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    access = AccessLog(LogConfig(access_log="all"), 0)
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0), access=access)
    limits = LimitsConfig(max_connections=3, max_unattributed=1, max_header_bytes=1024)
    server = HttpServer(_PartyApp(), limits, hooks=wm)

    async def main() -> list[bytes]:
        server.start()
        return await _shed_one_displaced_and_one_refused(server)

    with caplog.at_level(logging.INFO, logger="responder.access"):
        displaced, refused, oversized = asyncio.run(main())
    assert displaced.startswith(b"HTTP/1.1 503 ") and refused.startswith(b"HTTP/1.1 503 ")
    assert oversized.startswith(b"HTTP/1.1 431 ")

    s = parse_metrics(wm.render().decode())
    requests = "jpkiva_requests_total"
    assert total(s, requests, endpoint="shed", http_status="503", party="-") == 2
    assert total(s, "jpkiva_connections_evicted_total") == 1  # of the two, one displaced
    assert total(s, requests, endpoint="other", http_status="431") == 1
    counted = [dict(ls) for (name, ls), v in s.items() if name == requests and v]
    failures = [x for x in counted if x["http_status"][0] == "5" and x["endpoint"] != "shed"]
    assert failures == []  # what JpkiVaErrorRatioHigh counts: nothing
    assert total(s, requests, endpoint="healthz", http_status="200", party="p") == 3

    lines = [r.fields for r in caplog.records if r.name == "responder.access"]  # type: ignore[attr-defined]
    shed_lines = [f for f in lines if f["http_status"] == 503]
    assert [(f["endpoint"], f["client"]) for f in shed_lines] == [("shed", "127.0.0.1")] * 2
    assert [f["endpoint"] for f in lines if f["http_status"] == 431] == ["other"]
