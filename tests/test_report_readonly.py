"""/reports/ on a node of several is read-only (報告書, Act §41; public, Ord §72(2)): a render
neither writes the ledger nor connects to NATS; the exchange with the ledger stream (ship,
then gather) is worker 0's collection cycle's, on its timer (`responder.app.JpkiApp`).

On a real nats-server on loopback (its monitoring port counts the connections it ever
accepted, ``total_connections`` of /varz), with one in-process app as a node's worker and
another node's ledger shipping beside it:

- a render of every format makes no NATS connection and changes no byte of the ledger
  directory, and a count shipped by the other node is not in the report until the
  collection cycle gathers it, then it is (none doubled);
- with the server stopped, the cycle fails (logged, counted) and /reports/ still answers
  200 from what was last gathered, saying in every format since when and that it is
  incomplete;
- worker 0's timer alone (no request, no explicit call) brings the other node's counts in;
  it runs at once at its start, so a restarted node does not report an interval behind.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.rules import JST
from responder import ledgerstream
from responder.app import JpkiApp
from responder.config import ClusterConfig
from responder.http import Request, Response
from responder.ledger import (
    _UPDATED_AT,
    GatheringState,
    Ledger,
    LedgerWriter,
    Method,
    Service,
    peek,
)
from tests.conftest import Built
from tests.support.nats import NatsCluster, free_ports, nats_server
from tests.support.wait import until

pytestmark = [pytest.mark.integration, pytest.mark.real_clock]

YEAR = 2025
AT = datetime(YEAR, 6, 1, 12, tzinfo=JST).timestamp()
"""When the test's provisions are dated: a JST day of `YEAR`, whatever the clock says."""
SRI = Service.SIGN_REVOCATION_INFO
CACHE_AGE = 3600
"""``[ledger] collect_interval``, and so the report cache's ``max_age`` (`ReportCache`)."""
PAST_AGE = CACHE_AGE + 1
"""How far the test moves the cache's clock for a render to be due. Not ``CACHE_AGE``
itself: the clock starts at ``time.monotonic()``, and ``(t + 3600) - t`` is 3600 plus or
minus a rounding error for many a float ``t``, so an answer exactly ``CACHE_AGE`` old was
still fresh (``age < max_age``) in a share of runs, served without a render (the renders
counted one short, or the last report a gathering behind: total 7, not 14)."""


def request(target: bytes) -> Request:
    return Request(b"GET", target, {}, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)


def answer(app: JpkiApp, target: bytes) -> Response:
    async def run() -> Response:
        got = app.handle(request(target))
        return got if isinstance(got, Response) else await got

    return asyncio.run(run())


def report_json(app: JpkiApp) -> dict[str, Any]:
    resp = answer(app, b"/reports/%d.json" % YEAR)
    assert resp.status == 200
    doc: dict[str, Any] = msgspec.json.decode(resp.body)
    return doc


def total_connections(monitor: int) -> int:
    """Client connections the NATS server accepted since it started (its /varz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as r:
        return int(json.load(r)["total_connections"])


def ledger_bytes(d: Path) -> dict[str, bytes]:
    """Every file of the ledger directory byte for byte (sub-directories left out), but
    SQLite's read-only reader's own: its shared-memory index (``-shm``: no ledger data) and an
    empty ``-wal`` (nothing committed), which it makes when no writer has the ledger open;
    and a worker's counter file's flush stamp (``updated_at``, 8 bytes of its header), which
    the worker's own flusher thread rewrites every second with the second it flushed at
    (`LedgerWriter.start_flusher`: the liveness the collector retires idle files by), not a
    render: a window of renders that crosses a second boundary (slow renders, a loaded
    machine) sees it move. The counts and every other byte of the file are compared."""
    out = {}
    for p in sorted(d.iterdir()):
        if not p.is_file() or p.name.endswith("-shm"):
            continue
        if p.name.endswith("-wal") and p.stat().st_size == 0:
            continue
        data = p.read_bytes()
        if p.name.endswith(".ledger"):
            data = data[:_UPDATED_AT] + bytes(8) + data[_UPDATED_AT + 8 :]
        out[p.name] = data
    return out


class OtherNode:
    """Another node of the service: its own ledger, shipped to the ledger stream."""

    def __init__(self, d: Path, url: str) -> None:
        self.d = d
        self.config = ClusterConfig(nats=url, node="node-b")

    def provide_and_ship(self, n: int) -> None:
        with LedgerWriter.open(self.d, 0) as w:
            w.count("bank-b", SRI, Method.OCSP, n, at=AT)
        with Ledger.open(self.d) as ledger:
            ledger.collect()
            ledgerstream.exchange(ledger, self.config, merge=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[NatsCluster, int]]:
    port, monitor = free_ports(2)
    with nats_server(tmp_path / "nats", port, extra=f'http: "127.0.0.1:{monitor}"\n') as s:
        yield s, monitor


def gathering(d: Path) -> GatheringState | None:
    return peek(d, Ledger.gathering_state)


def test_a_render_neither_writes_nor_connects_and_survives_nats_down(
    built: Built,
    tmp_path: Path,
    server: tuple[NatsCluster, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats, monitor = server
    other = OtherNode(tmp_path / "b", nats.source)
    other.provide_and_ship(3)
    cfg = built.app_config(
        tmp_path / "a",
        **{"cluster.nats": nats.source, "cluster.node": "node-a", "server.workers": 2,
           "ledger.collect_interval": CACHE_AGE},
    )  # fmt: skip
    # worker 1: it renders, and runs no collection cycle (worker 0's), which the test runs
    # itself where the timer would, so that nothing else connects while it counts
    app = JpkiApp(cfg, 1)
    now = [time.monotonic()]
    app.reports.clock = lambda: now[0]
    d = cfg.ledger.dir
    try:
        app._collect_ledger()  # the cycle: collect, ship, gather
        first = gathering(d)
        assert first is not None and first.gathered_at > 0 and first.failing == 0
        app.ledger.count("bank-a", SRI, Method.OCSP, 4, at=AT)
        app._collect_ledger()
        doc = report_json(app)
        assert doc["total"] == 7 and doc["as_of"]["scope"] == "service"
        assert doc["as_of"]["complete"] is True

        # the other node ships 5 more; this node counts 2 more: neither is in a render
        # until the cycle runs, and no render connects to NATS nor writes the ledger
        other.provide_and_ship(5)
        app.ledger.count("bank-a", SRI, Method.OCSP, 2, at=AT)
        app.ledger.flush()
        connections, before = total_connections(monitor), ledger_bytes(d)
        now[0] += PAST_AGE  # past the report cache's age: every request below renders
        renders = app.reports.renders
        for suffix in (b"", b".csv", b".json"):
            assert answer(app, b"/reports/%d%s" % (YEAR, suffix)).status == 200
        assert app.reports.renders == renders + 3
        assert report_json(app)["total"] == 7
        assert total_connections(monitor) == connections
        assert ledger_bytes(d) == before

        # the cycle gathers: every node's counts, once each
        app._collect_ledger()
        assert total_connections(monitor) > connections
        now[0] += PAST_AGE
        doc = report_json(app)
        assert doc["total"] == 14, doc
        by_party = {r["party"]: r["total"] for r in doc["recipients"]}
        assert by_party == {"bank-a": 6, "bank-b": 8}
        last = gathering(d)
        assert last is not None and last.gathered_at >= first.gathered_at

        # NATS down: the cycle fails and says so; /reports/ answers from what was gathered
        nats.stop_all()
        with caplog.at_level(logging.WARNING):
            app._collect_ledger()
        failed = [r for r in caplog.records if getattr(r, "fields", None) is not None]
        assert any(r.getMessage() == "ledger_ship_failed" for r in failed), caplog.text
        assert "bank-" not in caplog.text  # the servers and the reason: no party
        down = gathering(d)
        assert down is not None and down.failing == 1 and down.gathered_at == last.gathered_at
        now[0] += PAST_AGE
        html, csv_text, json_body = (
            answer(app, b"/reports/%d%s" % (YEAR, suffix)) for suffix in (b"", b".csv", b".json")
        )
        assert {html.status, csv_text.status, json_body.status} == {200}
        doc = msgspec.json.decode(json_body.body)
        assert doc["total"] == 14 and doc["as_of"]["complete"] is False
        assert doc["as_of"]["failing"] == 1
        at = datetime.fromisoformat(doc["as_of"]["at"])
        assert int(at.timestamp()) == last.gathered_at
        page = bytes(html.body).decode()
        assert "Incomplete" in page and at.astimezone(JST).strftime("%H:%M:%S JST") in page
        rows = list(csv.reader(io.StringIO(bytes(csv_text.body).decode())))
        assert rows[-2][:5] == ["as-of", "", "", "", "gathered-from-cluster"]
        assert rows[-1][0] == "incomplete" and rows[-1][4] == "cluster-gathering-failing"
    finally:
        app.close()


def test_worker_0s_timer_brings_the_other_nodes_counts_without_a_request(
    built: Built, tmp_path: Path, server: tuple[NatsCluster, int]
) -> None:
    nats, _ = server
    other = OtherNode(tmp_path / "b", nats.source)
    other.provide_and_ship(3)
    cfg = built.app_config(
        tmp_path / "a",
        **{"cluster.nats": nats.source, "cluster.node": "node-a",
           "ledger.collect_interval": 0.3},
    )  # fmt: skip
    app = JpkiApp(cfg, 0)  # worker 0: its collection cycle runs at once, then every 0.3 s
    try:
        d = cfg.ledger.dir
        first = until(lambda: (g := gathering(d)) is not None and g.gathered_at > 0 and g, 20,
                      "the first gathering")  # fmt: skip
        other.provide_and_ship(6)

        def service_total() -> int:
            def read(ledger: Ledger) -> int:
                ledger.view = "service_ledger"
                return sum(
                    ledger.totals(
                        datetime(YEAR, 1, 1).date(), datetime(YEAR, 12, 31).date()
                    ).values()
                )

            return peek(d, read) or 0

        until(lambda: service_total() == 9, 20, "the other node's counts gathered")
        later = gathering(d)
        assert later is not None and later.gathered_at >= first.gathered_at
        time.sleep(0.4)  # past the report cache's age
        doc = report_json(app)
        assert doc["total"] == 9 and doc["as_of"]["complete"] is True
    finally:
        app.close()


def test_worker_0_collects_at_its_start_so_a_report_is_not_a_whole_interval_behind(
    built: Built, tmp_path: Path
) -> None:
    """A render collects nothing itself, so worker 0's cycle starts at once: a node (re)started
    with counts in its worker files (an earlier run's) reports them, as of this start, without
    waiting out a first ``[ledger] collect_interval`` (an hour here) with a report that is
    not yet collected."""
    cfg = built.app_config(tmp_path / "a", **{"ledger.collect_interval": 3600})
    with LedgerWriter.open(cfg.ledger.dir, 5) as w:  # an earlier run's worker, gone since
        w.count("bank-a", SRI, Method.OCSP, 4, at=AT)
    started = time.time()
    app = JpkiApp(cfg, 0)
    try:
        collected = until(lambda: peek(cfg.ledger.dir, Ledger.collected_at), 20,
                          "the first collection")  # fmt: skip
        assert collected >= int(started)
        doc = report_json(app)
        assert doc["total"] == 4 and doc["as_of"]["scope"] == "node"
        assert doc["as_of"]["complete"] is True
    finally:
        app.close()
