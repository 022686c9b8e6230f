"""The watch lists' replication on a node of several, as gauges (`WatchCollector`).

On a node of several (``[cluster] nats``) the watch lists are applied from the watch stream
(`responder.v1.watchlog`) by the calls that need them: ``POST /v1/watch`` through its own
batch, ``GET /v1/changes`` through the stream's last operation. These gauges, read from the
lists in the worker that answers the scrape (`responder.v1.watchdb.LmdbWatchSet.replication`),
let Prometheus page on a replication that stopped (JpkiVaWatchReplicationBroken,
deploy/prometheus/alerts.yml):

- ``jpkiva_watch_applied_operations``: the last operation of the watch stream this node's
  lists applied;
- ``jpkiva_watch_stream_operations``: the stream's last operation as a call last saw it, and
  ``jpkiva_watch_stream_seen_timestamp_seconds`` when (0: never); the difference with the
  applied one is what a read here would apply first;
- ``jpkiva_watch_snapshot_loading``: 1 while the lists load a snapshot of the watch stream
  (`responder.v1.watchsnap`: a new node, or one a compaction went past), 0 otherwise; the
  applied operation reads 0 meanwhile, so the lag above is not a stop;
- ``jpkiva_watch_replication_broken``: 1 when applying stopped for good (an operation made
  with another watch secret, one the stream no longer holds, or the stream made again since
  the lists applied it): the feed answers 503 on
  this node until an operator acts (docs/operations.md), 0 otherwise;
- ``jpkiva_watch_passed_over_operations``: operations of the watch stream these lists passed
  over, not vouched for by the watch secret (forged: `responder.v1.watchlog`), since they were
  made; a new one is someone publishing on the watch subject without the secret
  (JpkiVaWatchForgedOperation).

Registered only on a node of several. No labels: no personal data (the lists hold keyed
hashes; these are counts of operations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchset import WatchSet

__all__ = ["WatchCollector"]


class WatchCollector(Collector):
    """How far this node's watch lists applied the watch stream, and whether they stopped."""

    def __init__(self, lists: Callable[[], WatchSet | None]) -> None:
        self.lists = lists

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        lists = self.lists()
        if not isinstance(lists, LmdbWatchSet):  # cannot be opened: logged by the opener
            return []
        applied, last, seen_at, broken = lists.replication()
        loading = lists.loading() is not None
        passed = lists.passed()[0]
        out = []
        for name, doc, value in (
            ("jpkiva_watch_applied_operations",
             "The last operation of the watch stream this node's watch lists applied.", applied),
            ("jpkiva_watch_stream_operations",
             "The watch stream's last operation as this node last saw it.", last),
            ("jpkiva_watch_stream_seen_timestamp_seconds",
             "When this node last saw the watch stream's last operation (0: never).", seen_at),
            ("jpkiva_watch_snapshot_loading",
             "1 while this node's watch lists load a snapshot of the watch stream (the "
             "applied operation reads 0 until it is done), 0 otherwise.", int(loading)),
            ("jpkiva_watch_replication_broken",
             "1 when this node's watch lists stopped applying the watch stream (another "
             "watch secret, an operation the stream lost, or the stream made again).",
             int(bool(broken))),
            ("jpkiva_watch_passed_over_operations",
             "Operations of the watch stream this node's watch lists passed over: not vouched "
             "for by the watch secret (forged).", passed),
        ):  # fmt: skip
            g = GaugeMetricFamily(name, doc)
            g.add_metric((), value)
            out.append(g)
        return out
