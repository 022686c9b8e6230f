"""This node's ledger shipping as metrics (`responder.shipgauges`): the outcome of each
shipment kept in the ledger (`Ledger.mark_shipped`, `Ledger.ship_failed`,
`Ledger.shipping_state`) by `responder.ledgerstream`, and read back when /metrics is scraped.
The shipments themselves, to a real JetStream, are tests/test_opsignals_live.py's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from crlbuilder.jetstream import ClusterError
from responder import ledgerstream
from responder.config import ClusterConfig
from responder.ledger import (
    GatheringState,
    Ledger,
    LedgerWriter,
    Method,
    Service,
    ShippingState,
)
from responder.shipgauges import ShippingCollector
from tests.support.nats import free_ports


def count(d: Path, n: int, party: str = "bank-a") -> None:
    with LedgerWriter.open(d, 0) as w:
        for _ in range(n):
            w.count(party, Service.SIGN_REVOCATION_INFO, Method.OCSP)


def scrape(d: Path) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShippingCollector(d))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


NOT_GATHERED = {
    "jpkiva_ledger_last_gathered_timestamp_seconds": 0.0,
    "jpkiva_ledger_gather_failures_total": 0.0,
}
NONE_YET = {
    "jpkiva_ledger_last_shipped_timestamp_seconds": 0.0,
    "jpkiva_ledger_ship_failures_total": 0.0,
    "jpkiva_ledger_unshipped_counters": 0.0,
    **NOT_GATHERED,
}


def test_a_node_that_has_not_collected_yet_shows_nothing_shipped(tmp_path: Path) -> None:
    assert scrape(tmp_path / "ledger") == NONE_YET


def test_a_ledger_being_created_shows_nothing_shipped_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first collection creates the ledger's tables, then writes its schema row: a scrape
    in between (seen at a node's start) is not an unreadable ledger."""
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.commit()
    assert scrape(tmp_path) == NONE_YET
    assert "ledger_shipping_unreadable" not in caplog.text
    db.close()


def test_a_ledger_file_made_but_empty_is_being_created_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before its tables, the first collection makes the file, empty: a reader then (a scrape,
    a /reports/ render, which no longer collects and reads worker 0's first collection's
    ledger) read "no such table: meta" as an unreadable ledger (a render: a 500)."""
    (tmp_path / "ledger.sqlite3").touch()
    assert scrape(tmp_path) == NONE_YET
    assert "ledger_shipping_unreadable" not in caplog.text


def test_a_ledger_that_never_shipped_has_no_shipping_state(tmp_path: Path) -> None:
    count(tmp_path, 3)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        assert ledger.shipping_state() is None  # a single node's: it never ships
    assert scrape(tmp_path) == NONE_YET


class _Unreachable:
    """Where `ship` would publish; never reached (the stream check fails first)."""


def test_a_failed_shipment_is_counted_and_leaves_the_counters_unshipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count(tmp_path, 3, "bank-a")
    count(tmp_path, 2, "bank-b")

    def no_stream(*args: object, **kwargs: object) -> None:
        raise ClusterError("checking the stream LEDGER: no responders available for request")

    monkeypatch.setattr(ledgerstream, "ensure_stream", no_stream)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        for _ in range(2):
            with pytest.raises(ClusterError, match="no responders"):
                ledgerstream.ship(_Unreachable(), ledger, "node-a", clock=lambda: 1_700_000_000)  # type: ignore[arg-type]
        assert ledger.shipping_state() == ShippingState(shipped_at=0, failures=2, unshipped=2)
    assert scrape(tmp_path) == {
        "jpkiva_ledger_last_shipped_timestamp_seconds": 0.0,
        "jpkiva_ledger_ship_failures_total": 2.0,
        "jpkiva_ledger_unshipped_counters": 2.0,
        **NOT_GATHERED,
    }


def test_a_shipment_marks_its_time_and_the_counters_and_the_time_never_goes_back(
    tmp_path: Path,
) -> None:
    count(tmp_path, 3)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        pending = ledger.ship_pending("node-a")
        assert len(pending) == 1
        ledger.mark_shipped(pending, 1_700_000_100)
        assert ledger.shipping_state() == ShippingState(
            shipped_at=1_700_000_100, failures=0, unshipped=0
        )
        ledger.mark_shipped([], 1_700_000_050)  # a slower shipment that started earlier
        ledger.mark_shipped([], 1_700_000_200)  # nothing grew: still a shipment that succeeded
    count(tmp_path, 1)  # counted after it: unshipped until the next one
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
    assert scrape(tmp_path) == {
        "jpkiva_ledger_last_shipped_timestamp_seconds": 1_700_000_200.0,
        "jpkiva_ledger_ship_failures_total": 0.0,
        "jpkiva_ledger_unshipped_counters": 1.0,
        **NOT_GATHERED,
    }


def test_no_connection_to_nats_is_a_failed_shipment(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there: the connection is refused at once
    count(tmp_path, 1)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        with pytest.raises(ClusterError, match="cannot connect to NATS"):
            ledgerstream.exchange(
                ledger, ClusterConfig(nats=f"nats://127.0.0.1:{port}", node="node-a"), merge=False
            )
        state = ledger.shipping_state()
        assert ledger.gathering_state() == GatheringState(gathered_at=0, failures=0, failing=0)
    # the ledger was never marked as shipping (nothing was read to ship), yet the failure counts
    assert state == ShippingState(shipped_at=0, failures=1, unshipped=1)


def test_no_connection_to_nats_is_a_failed_gathering_too(tmp_path: Path) -> None:
    """The collection cycle's exchange (ship, then gather): no connection fails both, each
    counted, and the gathering's failures since its last success are what /reports/ says."""
    (port,) = free_ports(1)
    count(tmp_path, 1)
    cfg = ClusterConfig(nats=f"nats://127.0.0.1:{port}", node="node-a")
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        for _ in range(2):
            with pytest.raises(ClusterError, match="cannot connect to NATS"):
                ledgerstream.exchange(ledger, cfg)
        assert ledger.gathering_state() == GatheringState(gathered_at=0, failures=2, failing=2)
        ledger.gathered(1_700_000_300)  # a later one succeeds: failing back to 0, failures kept
        ledger.gathered(1_700_000_200)  # a slower one that started earlier: the time stays
        assert ledger.gathering_state() == GatheringState(
            gathered_at=1_700_000_300, failures=2, failing=0
        )
    got = scrape(tmp_path)
    assert got["jpkiva_ledger_last_gathered_timestamp_seconds"] == 1_700_000_300.0
    assert got["jpkiva_ledger_gather_failures_total"] == 2.0
    assert got["jpkiva_ledger_ship_failures_total"] == 2.0


def test_an_unreadable_ledger_leaves_the_series_out_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ledger.sqlite3").write_bytes(b"not a database" * 100)
    assert scrape(tmp_path) == {}
    assert "ledger_shipping_unreadable" in caplog.text
