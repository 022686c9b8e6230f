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

Dead workers (`fold`): a worker's counters and histograms outlive it (its totals must not go
down), but one set of files per worker that ever ran made the directory, and the merge each
scrape does in a worker's event loop, grow without bound: about 0.8 ms per dead worker per
render, so a worker crash-looping at the master's 10 s backoff added seconds to every render
within a day. The master folds a dead worker's ``counter_<pid>.db`` and
``histogram_<pid>.db`` into ``counter_archive.db`` and ``histogram_archive.db`` (their values
added) and removes them, under an exclusive lock on `LOCK` in the directory; every merge holds
the shared lock from its listing to its last read, so no scrape sees the dead worker's counts
twice (in its file and in the archive) or not at all, which Prometheus would read as a
counter reset. The directory holds the archive and the files of the live processes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["ARCHIVE", "HEADER", "LOCK", "MetricsFileError", "WorkerFiles", "fold", "sized"]

HEADER: Final = 8
"""Bytes of a metric file's header (the used length, then padding): a file shorter than
this has been created but not yet sized by its writer."""


LOCK: Final = "merge.lock"
"""The lock file of the directory: shared by each merge, exclusive while `fold` works."""
ARCHIVE: Final = "archive"
"""The name in place of a pid of the files that hold the dead workers' counts."""
FOLDED: Final = ("counter", "histogram")
"""The file types a dead worker leaves whose values must stay (its live gauges are removed
by ``mark_process_dead``)."""


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
        with _locked(self.path, fcntl.LOCK_SH):
            files = self.files()
            try:
                merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise MetricsFileError(_culprit(files, exc)) from exc
        return merged


def fold(path: Path, pid: int) -> int:
    """Add dead worker ``pid``'s counters and histograms to the archive files of ``path`` and
    remove its files, as one step for every merge (under `LOCK`); the files folded.

    Call it once the process is reaped (it writes nothing more). A file of the pid that does
    not read is left where it is and raises `MetricsFileError` (the scrapes report it too).
    """
    folded = 0
    with _locked(path, fcntl.LOCK_EX):
        for typ in FOLDED:
            src = path / f"{typ}_{pid}.db"
            try:
                size = src.stat().st_size
            except FileNotFoundError:
                continue
            if sized(size):
                try:
                    values = MmapedDict.read_all_values_from_file(str(src))  # type: ignore[no-untyped-call]
                except Exception as exc:
                    raise MetricsFileError(f"{src.name}: {type(exc).__name__}: {exc}") from exc
                _add(path / f"{typ}_{ARCHIVE}.db", values)
            src.unlink()
            folded += 1
    return folded


def _add(archive: Path, values: Iterable[tuple[str, float, float, int]]) -> None:
    """Add ``values`` (key, value, timestamp, position) to the file ``archive``, replaced whole
    (a master killed midway leaves the archive as it was)."""
    tmp = archive.with_suffix(".tmp")
    if archive.exists():
        shutil.copyfile(archive, tmp)
    else:
        tmp.unlink(missing_ok=True)
    d = MmapedDict(str(tmp))  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, _ in values:
            had, _ = d.read_value(key)  # type: ignore[no-untyped-call]
            d.write_value(key, had + value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        d.close()  # type: ignore[no-untyped-call]
    os.replace(tmp, archive)


@contextlib.contextmanager
def _locked(path: Path, how: int) -> Iterator[None]:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)


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
