"""The worker files of this node's ledger (帳簿, Act §40) that its collection refused, as a
metric (`RefusedCollector`).

A worker file the collector cannot read (damaged, truncated: `responder.ledger.Ledger.collect`
lists it in ``refused`` and the master logs ``ledger_file_refused``) holds provisions the
ledger and every 報告書 (Act §41) made from it miss: ``responder report`` refuses to write
one, ``/reports/`` says it is incomplete. ``jpkiva_ledger_files_refused`` is how many files
the last collection refused (kept in the ledger's meta table by `Ledger.collect`, so every
worker reads the same), for the alert JpkiVaLedgerFileRefused.

``jpkiva_ledger_last_collected_timestamp_seconds`` is when the last collection ran (the
ledger's ``collected_at``, what a report read from it is as of; 0 before the first). A
collection that fails (the ledger's disk full, its database damaged: worker 0 logs
``ledger_collect_failed`` and nothing else) leaves it where it was, and a ledger that does
not read leaves both gauges out of the scrape: JpkiVaLedgerCollectionStale pages on either,
since the 帳簿 and every report made of it miss the counts of the meantime (they wait in the
worker files). Read from the ledger (SQLite, read-only, two small queries) in the worker
that answers the scrape; an unreadable ledger is said in the log. No labels: no personal
data, no file names.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.ledger import Ledger, LedgerError, peek

__all__ = ["RefusedCollector"]

_log = logging.getLogger("responder.metrics")


class RefusedCollector(Collector):
    """The ledger's refused worker files, read from the ledger when /metrics is scraped."""

    def __init__(self, ledger_dir: Path) -> None:
        self.ledger_dir = ledger_dir

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        try:
            refused, collected_at = self._read()
        except (LedgerError, sqlite3.Error) as e:
            _log.warning("ledger_refused_unreadable", extra={"fields": {"error": str(e)}})
            return []
        gauge = GaugeMetricFamily(
            "jpkiva_ledger_files_refused",
            "Worker files of the ledger the last collection refused: their counts are missing.",
        )
        gauge.add_metric((), refused)
        collected = GaugeMetricFamily(
            "jpkiva_ledger_last_collected_timestamp_seconds",
            "When the ledger's last collection of the worker files ran (0: never).",
        )
        collected.add_metric((), collected_at)
        return [gauge, collected]

    def _read(self) -> tuple[int, int]:
        def read(ledger: Ledger) -> tuple[int, int]:
            return ledger.refused_files(), ledger.collected_at()

        return peek(self.ledger_dir, read) or (0, 0)  # None: no collection yet
