"""The record stream's gauges (`responder.streamgauges`) and the lag they share with /readyz
(`responder.streamlag.lag`), on a store written as a node's builder writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from responder.streamgauges import StreamCollector
from responder.streamlag import lag, verdict


def test_lag_is_unknown_before_the_stream_was_seen_and_never_negative() -> None:
    assert lag(applied=500, head=0, seen_at=0) is None  # bootstrapped from a snapshot
    assert lag(applied=0, head=0, seen_at=0) is None
    assert lag(applied=10, head=25, seen_at=1_700_000_000) == 15
    assert lag(applied=30, head=25, seen_at=1_700_000_000) == 0  # head seen before a commit
    # the same difference /readyz compares with max_lag
    assert verdict(10, 25, 100, 100, max_lag=15) is None
    assert (
        verdict(10, 26, 100, 100, max_lag=15) == "16 records behind the record stream (at most 15)"
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    try:
        yield s
    finally:
        s.close()


def scrape(store: Store) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamCollector(store, max_lag=250))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_store_whose_builder_never_saw_the_stream_has_a_zero_head_and_no_lag(
    store: Store,
) -> None:
    with Commit(store) as c:
        c.put_stream_seq(500)  # as a snapshot leaves it: applied, the head reset to (0, 0)
        c.put_stream_head(0, 0)
    assert scrape(store) == {
        "jpkiva_stream_head_seen_timestamp_seconds": 0.0,
        "jpkiva_stream_max_lag_records": 250.0,
        "jpkiva_stream_refused": 0.0,
    }


def test_the_gauges_follow_what_the_builder_wrote(store: Store) -> None:
    with Commit(store) as c:
        c.put_stream_seq(1200)
        c.put_stream_head(1500, 1_700_000_123)
    assert scrape(store) == {
        "jpkiva_stream_head_seen_timestamp_seconds": 1_700_000_123.0,
        "jpkiva_stream_lag_records": 300.0,
        "jpkiva_stream_max_lag_records": 250.0,
        "jpkiva_stream_refused": 0.0,
    }
    with Commit(store) as c:  # caught up, seen again later
        c.put_stream_seq(1500)
        c.put_stream_head(1500, 1_700_000_130)
    assert scrape(store) == {
        "jpkiva_stream_head_seen_timestamp_seconds": 1_700_000_130.0,
        "jpkiva_stream_lag_records": 0.0,
        "jpkiva_stream_max_lag_records": 250.0,
        "jpkiva_stream_refused": 0.0,
    }
