"""Gauges read from the status store when /metrics is scraped (`StoreCollector`, `EntryCounts`).

Read through the store's reader (`crlbuilder.store.reader.StoreReader`), in the
worker that answers the scrape, at most once a second: build, commit, last commit
time, each issuer's promised nextUpdate and stale alarm (the ``tryLater`` case of
`responder.ocsp`; on a group's store also a signature issuer no CRL of which was imported;
and an issuer under whose index the store records another), the latest full and delta CRL of each issuer from the
store's CRL index, and each issuer's pre-signed answers (their earliest nextUpdate, the
duration of crlbuilder's last re-signing walk: `crlbuilder.presign`). Revoked entries per family and legal category (`EntryCounts`)
would cost a walk of the whole revoked database (about 0.5 s per million entries),
so they are counted at most once per commit and at most once per ``[metrics]
entries_interval`` for all workers together: in a background thread of the worker
that answers the scrape, the result shared through a file in the metrics
directory; until then /metrics shows the last count. Stores of at most
`INLINE_ENTRIES` entries are counted at once, during the scrape. Category ``good``
(certificates not revoked) is not exposed: it would need a walk of the status
database as well. A better source would be counts kept by crlbuilder in the store's
meta at each commit (not there yet).

Labels: issuer ids, families, legal categories (失効情報の種別) and CRL kinds:
no personal data. `responder.metrics` registers the collector; this module
imports nothing of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import msgspec
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crlbuilder import atomicfile
from crlbuilder.model import Category, Family
from crlbuilder.store import format as sf
from crlbuilder.store.reader import ReadSource, StoreReader, never_fed

__all__ = [
    "ENTRIES_FILES",
    "INLINE_ENTRIES",
    "EntryCounts",
    "IssuerRef",
    "StoreCollector",
    "count_entries",
]

INLINE_ENTRIES: Final = 20_000
"""Revoked databases up to this many entries are counted during the scrape (~10 ms)."""
_ENTRIES_FILE: Final = "store-entries.json"
_ENTRIES_LOCK: Final = "store-entries.lock"
ENTRIES_FILES: Final = (_ENTRIES_FILE, _ENTRIES_LOCK)
"""The files `EntryCounts` keeps in the metrics directory (a new master removes them)."""

_log = logging.getLogger("responder.metrics")


class IssuerRef(msgspec.Struct, frozen=True):
    """One issuer generation the responder answers for."""

    index: int
    id: str
    family: Family


class StoreCollector(Collector):
    """Gauges read from the store when /metrics is scraped (cached for ``max_age`` seconds)."""

    def __init__(
        self,
        store: ReadSource,
        issuers: Iterable[IssuerRef],
        *,
        entries: EntryCounts | None = None,
        clock: Callable[[], float] = time.time,
        max_age: float = 1.0,
    ) -> None:
        self.store = store
        self.issuers = tuple(issuers)
        self.entries = entries
        self.clock = clock
        self.max_age = max_age
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        cached = self._cached
        if cached is not None and 0 <= now - cached[0] < self.max_age:
            return cached[1]
        out = self._read(int(now))
        self._cached = (now, out)
        return out

    def _read(self, now: int) -> list[Metric]:
        build = GaugeMetricFamily("jpkiva_store_build", "crlbuilder build number of the store.")
        commit = GaugeMetricFamily("jpkiva_store_commit", "Commit sequence of the store.")
        committed = GaugeMetricFamily(
            "jpkiva_store_last_commit_timestamp_seconds", "When the last commit was written."
        )
        stale = GaugeMetricFamily(
            "jpkiva_stale_issuer",
            "1 when the issuer's data is past the nextUpdate the builder promised (tryLater).",
            labels=("issuer",),
        )
        next_update = GaugeMetricFamily(
            "jpkiva_issuer_next_update_timestamp_seconds",
            "The nextUpdate the builder promised for the issuer (its last CRL's, else its "
            "pre-signed answers' earliest, else the last build run's).",
            labels=("issuer",),
        )
        crl_time = GaugeMetricFamily(
            "jpkiva_crl_last_produced_timestamp_seconds",
            "thisUpdate of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        crl_bytes = GaugeMetricFamily(
            "jpkiva_crl_bytes",
            "Size of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        crl_entries = GaugeMetricFamily(
            "jpkiva_crl_entries",
            "Entries of the issuer's latest CRL of this kind.",
            labels=("issuer", "kind"),
        )
        presigned = GaugeMetricFamily(
            "jpkiva_presigned_next_update_timestamp_seconds",
            "The earliest nextUpdate of the issuer's pre-signed OCSP answers (crlbuilder "
            "re-signs them before it).",
            labels=("issuer",),
        )
        walk = GaugeMetricFamily(
            "jpkiva_presign_walk_seconds",
            "How long crlbuilder's last re-signing of the issuer's stored OCSP answers took.",
            labels=("issuer",),
        )
        with self.store.read() as r:
            seq, number = r.generation()
            build.add_metric((), number)
            commit.add_metric((), seq)
            committed.add_metric((), r.committed_at())
            table = {m.index: m.id for m in r.issuers()}
            for issuer in self.issuers:
                if table.get(issuer.index, issuer.id) != issuer.id:
                    # the store records another issuer under its index: its answers are
                    # tryLater (`responder.flow.OcspFlow.foreign`), the data there not its own
                    stale.add_metric((issuer.id,), 1)
                    continue
                promised = r.promised_next_update(issuer.index)
                # a group store holding no CRL of a signature issuer, the only CRL files a
                # group receives (Act §18(2), §20(1); `crlbuilder.group.pull.GroupFeed.fed`),
                # answers tryLater for it: stale. An auth issuer's CRL never comes to a group
                # (its members' requests about it are refused): never stale, or the alert
                # would fire for ever.
                unfed = issuer.family.is_sign and never_fed(r, issuer.index)
                stale.add_metric((issuer.id,), 1 if unfed or 0 < promised <= now else 0)
                if promised:
                    next_update.add_metric((issuer.id,), promised)
                ocsp = r.ocsp_state(issuer.index)
                if ocsp.next_update:
                    presigned.add_metric((issuer.id,), ocsp.next_update)
                if ocsp.walk_seconds:
                    walk.add_metric((issuer.id,), ocsp.walk_seconds)
                for e in r.latest_crls(issuer.index):
                    kind = ("delta" if e.delta else "full",)
                    crl_time.add_metric((issuer.id, *kind), e.this_update)
                    crl_bytes.add_metric((issuer.id, *kind), e.size)
                    crl_entries.add_metric((issuer.id, *kind), e.entries)
        out: list[Metric] = [
            build, commit, committed, stale, next_update, crl_time, crl_bytes, crl_entries,
            presigned, walk,
        ]  # fmt: skip
        if self.entries is not None:
            counts = self.entries.get(seq)
            if counts is not None:
                entries = GaugeMetricFamily(
                    "jpkiva_store_entries",
                    "Revoked entries (CRL entries) per family and legal category.",
                    labels=("family", "category"),
                )
                for (family, category), n in sorted(counts.items()):
                    entries.add_metric((family, category), n)
                out.append(entries)
        return out


class _Stopped(Exception):
    """A background count abandoned because the worker is exiting."""


def count_entries(
    r: StoreReader, families: dict[int, Family], *, stop: threading.Event | None = None
) -> dict[tuple[str, str], int]:
    """Revoked entries per (family, category) in one walk of the revoked database.

    Category ``unknown`` is an entry without a legal category (a store imported from
    the 機構's CRLs). With ``stop`` (background counting) the walk yields the GIL now and
    then, and gives up when ``stop`` is set.
    """

    def checkpoint() -> None:
        if stop is not None:
            if stop.is_set():
                raise _Stopped
            time.sleep(0)  # let the worker's event loop run

    raw = r.revoked_counts(checkpoint if stop is not None else None)
    out: dict[tuple[str, str], int] = {}
    for (issuer, code), count in raw.items():
        family = families.get(issuer)
        name = family.value if family is not None else "unknown"
        try:
            category = Category.from_code(code).value
        except KeyError:
            category = "unknown"
        out[(name, category)] = out.get((name, category), 0) + count
    return out


class _Counted(msgspec.Struct):
    commit: int
    at: float
    counts: list[tuple[str, str, int]]


_counted_decoder: Final = msgspec.json.Decoder(_Counted)


_OLD_TMP_NAMES: Final = re.compile(rf"^{re.escape(_ENTRIES_FILE)}\.\d+\.tmp$")
"""The temporary names of this file's writer before `atomicfile` (``<name>.<pid>.tmp``)."""


class EntryCounts:
    """``jpkiva_store_entries``: counted at most once per commit for all workers together.

    `get` returns the counts of the given commit when known, else the last known ones
    (None before any). A recount starts when the commit moved and the last count is
    ``min_interval`` seconds old: inline for a small store (at most `INLINE_ENTRIES`),
    else in a background thread holding an exclusive lock on a file of ``shared_dir``
    (one counting worker at a time). The result is written to ``shared_dir`` so that
    the other workers take it instead of counting again.
    """

    def __init__(
        self,
        store: ReadSource,
        families: dict[int, Family],
        shared_dir: Path,
        *,
        min_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.families = dict(families)
        self.file = shared_dir / _ENTRIES_FILE
        self.lock_file = shared_dir / _ENTRIES_LOCK
        self.min_interval = min_interval
        self.clock = clock
        self._known: _Counted | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # what a worker killed while it wrote the counts left (and the older names)
        atomicfile.sweep_own(self.file, now=time.time())
        atomicfile.sweep_tmp(shared_dir, now=time.time(), name=_OLD_TMP_NAMES)

    def get(self, commit: int) -> dict[tuple[str, str], int] | None:
        known = self._known
        if known is None or known.commit != commit:
            shared = self._read_shared()
            if shared is not None and (known is None or shared.at > known.at):
                self._known = known = shared
        if known is None or known.commit != commit:
            with self.store.read() as r:
                if r.count(sf.DB_REVOKED) <= INLINE_ENTRIES:
                    seq = r.generation().commit
                    known = self._record(seq, count_entries(r, self.families))
            if (known is None or known.commit != commit) and self._due(known):
                self._start()
        return {(f, c): n for f, c, n in known.counts} if known is not None else None

    def wait(self, timeout: float) -> bool:
        """Wait for a background count to end; False if it still runs after ``timeout``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Abandon a background count; False if it still holds a store transaction."""
        self._stop.set()
        return self.wait(timeout)

    def _due(self, known: _Counted | None) -> bool:
        running = self._thread is not None and self._thread.is_alive()
        if running or self._stop.is_set():
            return False
        return known is None or self.clock() - known.at >= self.min_interval

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._count, name="entries", daemon=True)
        self._thread.start()

    def _count(self) -> None:
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another worker is counting
            with self.store.read() as r:
                seq = r.generation().commit
                shared = self._read_shared()
                if shared is not None and shared.commit == seq:
                    self._known = shared
                    return
                self._record(seq, count_entries(r, self.families, stop=self._stop))
        except _Stopped:
            return
        except Exception as exc:  # a failed count leaves the last one in place
            _log.error("entries_count_failed", extra={"fields": {"exc_type": type(exc).__name__}})
        finally:
            os.close(fd)

    def _record(self, commit: int, counts: dict[tuple[str, str], int]) -> _Counted:
        known = _Counted(commit, self.clock(), [(f, c, n) for (f, c), n in sorted(counts.items())])
        self._known = known
        try:
            atomicfile.write_whole(self.file, msgspec.json.encode(known), 0o600)
        except OSError as exc:
            _log.warning("entries_share_failed", extra={"fields": {"error": exc.strerror}})
        return known

    def _read_shared(self) -> _Counted | None:
        try:
            return _counted_decoder.decode(self.file.read_bytes())
        except (OSError, msgspec.DecodeError):
            return None
