"""Reading every worker's metric files for /metrics while workers come and go.

Owns `WorkerFiles`, the collector that merges the files of prometheus_client's
multiprocess mode (one set per worker pid, and the master's) into the totals of a scrape.

The race it closes: a worker creates each of its files with ``open(..., "a+b")`` and only
then sizes it (``ftruncate`` to 64 KiB, after which it writes the header). A scrape that
lists the directory between the two finds an empty file, and prometheus_client's
``MultiProcessCollector`` fails on it (``struct.error``: the 4-byte header is missing), a
500 for the whole scrape. It happens when a worker starts (the master's restart of a
killed worker), for a few microseconds per file; a worker killed by SIGKILL inside that
gap leaves the empty file for good, and every later scrape would fail.

An empty file holds no value, so leaving it out changes no total (`sized`). While a file
exists its size only grows (0, then 64 KiB, doubled as it fills), so a size read before
the file is read stays true. The files of live gauges that the master removes for a dead
worker (``mark_process_dead``) between the listing and the read are skipped by
prometheus_client itself. Any other failure of a file (a corrupt one) raises
`MetricsFileError` naming the file (named by a pid: no personal data), so that the 500 is
logged with its reason (`responder.metrics.MetricsApp`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["HEADER", "MetricsFileError", "WorkerFiles", "sized"]

HEADER: Final = 8
"""Bytes of a metric file's header (the used length, then padding): a file shorter than
this has been created but not yet sized by its writer."""


class MetricsFileError(Exception):
    """A metric file that cannot be read: ``str()`` names the file and what failed."""


def sized(size: int) -> bool:
    """Whether a metric file of ``size`` bytes has been sized by its writer (else it is empty)."""
    return size >= HEADER


class WorkerFiles(Collector):
    """Every ``*.db`` file of the metrics directory merged (totals of every worker that ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> list[str]:
        """The files to merge: every ``*.db`` file, less those not yet sized (or gone)."""
        out = []
        with os.scandir(self.path) as it:
            for entry in it:
                if not entry.name.endswith(".db"):
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue  # a dead worker's live gauge, removed since the listing
                if sized(size):
                    out.append(entry.path)
        return out

    def collect(self) -> Iterable[Metric]:
        files = self.files()
        try:
            merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise MetricsFileError(_culprit(files, exc)) from exc
        return merged


def _culprit(files: list[str], exc: Exception) -> str:
    """Which file made the merge fail, read again one by one: ``name: what``."""
    for f in files:
        try:
            for _ in MmapedDict.read_all_values_from_file(f):  # type: ignore[no-untyped-call]
                pass
        except FileNotFoundError:
            continue
        except Exception as err:
            return f"{os.path.basename(f)}: {type(err).__name__}: {err}"
    return f"the merge failed ({type(exc).__name__}) but every file reads again"
