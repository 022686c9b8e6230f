"""The record stream as this node's builder sees it, as gauges (`StreamCollector`).

On a node of several (`[cluster] nats`) the builder fills the store from the record stream
and writes into it what it saw of the stream and when (`META_STREAM_HEAD`, beside the last
sequence applied, `META_STREAM_SEQ`; `responder.streamlag`). ``/readyz`` turns them into
503 or 200; these gauges let Prometheus page on them (JpkiVaStreamLost, JpkiVaStreamLagging:
deploy/prometheus/alerts.yml):

- ``jpkiva_stream_head_seen_timestamp_seconds``: when the builder last saw the stream
  (it writes it about every second while it is connected); 0 while it never has. Its age
  grows when the builder is stopped or cut off from every NATS server.
- ``jpkiva_stream_lag_records``: records of the stream, as last seen, not yet applied to
  the store (`responder.streamlag.lag`); no series while the builder never saw the stream
  (the lag is unknown, not 0).
- ``jpkiva_stream_max_lag_records``: this node's ``[cluster] max_lag``, the lag past which
  ``/readyz`` answers 503: JpkiVaStreamLagging compares each node with its own setting.
- ``jpkiva_stream_refused``: 1 while the builder has stopped applying the stream (a message of
  a newer release, another stream under its name: `META_STREAM_REFUSED`), else 0
  (JpkiVaStreamRefused).

Registered only on a node of several: a single node has no record stream, and a
timestamp of 0 there would read as a stream lost. Read from the store in the worker that
answers the scrape (two meta reads). No labels: no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crlbuilder.store.lmdbstore import Store
from responder.streamlag import lag

__all__ = ["StreamCollector"]


class StreamCollector(Collector):
    """When the builder last saw the record stream, and how far the store is behind it."""

    def __init__(self, store: Store, max_lag: int) -> None:
        self.store = store
        self.max_lag = max_lag

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        seen = GaugeMetricFamily(
            "jpkiva_stream_head_seen_timestamp_seconds",
            "When this node's builder last saw the record stream (0: never).",
        )
        behind = GaugeMetricFamily(
            "jpkiva_stream_lag_records",
            "Records of the record stream, as the builder last saw it, not yet applied to "
            "this node's store.",
        )
        limit = GaugeMetricFamily(
            "jpkiva_stream_max_lag_records",
            "This node's [cluster] max_lag: records behind the stream past which /readyz is 503.",
        )
        refused = GaugeMetricFamily(
            "jpkiva_stream_refused",
            "1 while this node's builder has stopped applying the record stream (a newer "
            "release's message, or another stream under its name), else 0.",
        )
        limit.add_metric((), self.max_lag)
        with self.store.read() as r:
            head, seen_at = r.stream_head()
            applied = r.stream_seq()
            refused.add_metric((), 1 if r.stream_refused() else 0)
        seen.add_metric((), seen_at)
        records = lag(applied, head, seen_at)
        if records is not None:
            behind.add_metric((), records)
        return [seen, behind, limit, refused]
