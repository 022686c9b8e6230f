"""The worker files of this node's ledger (帳簿, Act §40) that its collection refused, as a
metric (`RefusedCollector`).

A worker file the collector cannot read (damaged, truncated: `responder.ledger.Ledger.collect`
lists it in ``refused`` and the master logs ``ledger_file_refused``) holds provisions the
ledger and every 報告書 (Act §41) made from it miss: ``responder report`` refuses to write
one, ``/reports/`` says it is incomplete. ``jpkiva_ledger_files_refused`` is how many files
the last collection refused (kept in the ledger's meta table by `Ledger.collect`, so every
worker reads the same), for the alert JpkiVaLedgerFileRefused. Read from the ledger
(SQLite, read-only, one small query) in the worker that answers the scrape; an unreadable
ledger leaves it out and says so in the log. No labels: no personal data, no file names.
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
            refused = self._read()
        except (LedgerError, sqlite3.Error) as e:
            _log.warning("ledger_refused_unreadable", extra={"fields": {"error": str(e)}})
            return []
        gauge = GaugeMetricFamily(
            "jpkiva_ledger_files_refused",
            "Worker files of the ledger the last collection refused: their counts are missing.",
        )
        gauge.add_metric((), refused)
        return [gauge]

    def _read(self) -> int:
        return peek(self.ledger_dir, Ledger.refused_files) or 0  # None: no collection yet
