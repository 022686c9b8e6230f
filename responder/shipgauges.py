"""This node's exchange with the service's ledger stream, as metrics (`ShippingCollector`):
the shipping of its ledger counts, and the gathering of every node's.

On a node of several (`[cluster] nats`) each collection ships the node's 帳簿 counters (Act
§40) to the ledger stream (`responder.ledgerstream`), from which every node's ``/reports/``
(報告書, Act §41) reads the whole service. A node whose shipments fail loses nothing (its
worker files stay until shipped), but the service's reports miss its counts meanwhile, and
they are on one node's disk only. The ledger keeps each shipment's outcome in its meta
table (`responder.ledger.Ledger.shipping_state`), so that it survives restarts and every
worker reads the same, whichever shipped (worker 0's collections, ``responder report
--nats``):

- ``jpkiva_ledger_last_shipped_timestamp_seconds``: when the last shipment succeeded, every
  counter merged by then on the stream (0: none yet). A collection ships every ``[ledger]
  collect_interval``, so on a healthy node it is at most that old.
- ``jpkiva_ledger_ship_failures_total``: shipments that failed (no NATS server answered,
  the stream refused or did not acknowledge), since the ledger was created.
- ``jpkiva_ledger_unshipped_counters``: merged counters (per worker file and slot) whose
  present value is not on the stream yet.
- ``jpkiva_ledger_last_gathered_timestamp_seconds``: when the last gathering of every node's
  counts into this node's service ledger that succeeded started (after this node's own
  shipment, `responder.ledgerstream.exchange`; 0: none yet). ``/reports/`` renders from
  what was gathered then, and says so (JpkiVaLedgerGatheringStale past 300 s).
- ``jpkiva_ledger_gather_failures_total``: gatherings that failed (no connection, the
  shipment before it or the reading of the stream failed), since the ledger was created.

Registered only on a node of several: a single node ships nothing, and a last shipment at
0 there would read as shipping failing. Read from the ledger (SQLite, read-only, three small
queries) in the worker that answers the scrape; an unreadable ledger leaves the five out
and says so in the log. No labels: no personal data.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.ledger import GatheringState, Ledger, LedgerError, ShippingState, peek

__all__ = ["ShippingCollector"]

_log = logging.getLogger("responder.metrics")
_NONE_YET = ShippingState(shipped_at=0, failures=0, unshipped=0)
"""A node of several whose ledger has not shipped nor tried to yet."""
_NOT_GATHERED = GatheringState(gathered_at=0, failures=0, failing=0)


class ShippingCollector(Collector):
    """The ledger stream shipments of this node, read from its ledger when /metrics is scraped."""

    def __init__(self, ledger_dir: Path) -> None:
        self.ledger_dir = ledger_dir

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        try:
            state, gathering = self._read()
        except (LedgerError, sqlite3.Error) as e:
            _log.warning("ledger_shipping_unreadable", extra={"fields": {"error": str(e)}})
            return []
        shipped = GaugeMetricFamily(
            "jpkiva_ledger_last_shipped_timestamp_seconds",
            "When this node's ledger counts were last all on the ledger stream (0: never).",
        )
        shipped.add_metric((), state.shipped_at)
        failures = CounterMetricFamily(
            "jpkiva_ledger_ship_failures",
            "Shipments of this node's ledger counts to the ledger stream that failed.",
        )
        failures.add_metric((), state.failures)
        unshipped = GaugeMetricFamily(
            "jpkiva_ledger_unshipped_counters",
            "This node's merged ledger counters whose present value is not on the stream yet.",
        )
        unshipped.add_metric((), state.unshipped)
        gathered = GaugeMetricFamily(
            "jpkiva_ledger_last_gathered_timestamp_seconds",
            "When every node's ledger counts were last gathered into this node's (0: never).",
        )
        gathered.add_metric((), gathering.gathered_at)
        gather_failures = CounterMetricFamily(
            "jpkiva_ledger_gather_failures",
            "Gatherings of every node's ledger counts from the ledger stream that failed.",
        )
        gather_failures.add_metric((), gathering.failures)
        return [shipped, failures, unshipped, gathered, gather_failures]

    def _read(self) -> tuple[ShippingState, GatheringState]:
        def read(ledger: Ledger) -> tuple[ShippingState, GatheringState]:
            # None: no shipment tried yet
            return ledger.shipping_state() or _NONE_YET, ledger.gathering_state()

        # None: no collection yet (no ledger)
        return peek(self.ledger_dir, read) or (_NONE_YET, _NOT_GATHERED)
