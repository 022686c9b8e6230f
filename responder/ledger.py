"""The ledger (帳簿, Act §40, Ord §71): how many of each provision went to whom, when, and how.

Ord §71 lists what the 帳簿 holds: (1) the number of certificates issued (発行件数,
derived from the status store on demand, see `issuance_counts`), (2) each
recipient (提供先), (3) the date of each provision (提供を行った年月日), (4) how many
(件数) and (5) by which method (提供の方法), for every kind of provision of Act
§18(1)-(5) and §37(1)-(3) (`Service`; the §38-3 token too, which Act §41 reports).
This module owns the counting, in two halves:

* `LedgerWriter`, one per worker process, opened after the fork. It owns one
  memory-mapped file (MAP_SHARED, mode 0600, flock'd) in the ledger directory: a
  4 KiB header, then a fixed table of 128-byte slots, each a 64-bit counter plus
  its key (local day, party id, service, method) and a CRC-32 of the key. The hot
  path, `LedgerWriter.count`, is one dict lookup and one 64-bit add into the
  mapping (a ``memoryview`` cast to ``'Q'``): no system call, no lock. Call it
  *before* the response bytes are written: a worker killed with SIGKILL then loses
  nothing a client received, because its stores are already in the page cache
  that the kernel writes back whatever happens to the process. A machine crash
  loses at most what was counted since the last `LedgerWriter.flush` (an fsync;
  the flusher thread of `LedgerWriter.start_flusher` runs it every second, so
  ≤ 1 s). A restarted worker (same worker index, new pid) reopens its file and
  continues it: the slot keys in the mapping are the index, rebuilt into the
  hot path's dict on open. A full file, or one older than ``max_file_days``, is
  sealed and a new one started (rotation). Not thread-safe: count from the
  event-loop thread. Never truncate a live worker file (a mapping past the end
  of its file faults with SIGBUS).
* `Ledger`, the durable ledger: sqlite3 (stdlib) in WAL mode with
  ``synchronous=FULL``, ``ledger.sqlite3`` in the same directory. sqlite rather
  than LMDB: the report is a GROUP BY over months, parties, services and methods,
  which SQL says in one statement; the write rate is one small transaction per
  collection; several collectors (the master, an operator's ``report`` command)
  may run at once and sqlite serialises them; operators can read it with the
  sqlite3 shell. `Ledger.collect` merges every worker file idempotently: it
  stores each file's *absolute* counter per (file id, slot) and merges with
  ``max`` (counters only grow), so merging twice, or two collectors racing,
  never counts twice. A file that is sealed, or whose writer is gone (no flock)
  and idle for ``retire_idle_after`` seconds, is retired: its final values are
  folded into the per-day ``counts`` table and the file is deleted (compaction),
  all under its flock so no writer can reopen it meanwhile. A bad or truncated
  file is refused with a clear reason in `CollectResult.refused` and does not
  stop the others.

Days are local days (JST, UTC+9, by default): each count reads the clock, or takes
the instant its caller read just before (``count(..., at=t)``: the instant the agreed
provisions per day were taken at, so that the bound and the ledger count a provision on
the same day, `responder.limits`), and turns the day itself at local midnight, so a
provision is dated by the instant it is counted (提供を行った年月日, Ord §71(3)), even when the flusher thread, which turns
the day too, is held up by a slow fsync or waits for the GIL: on 31 December a count
a few milliseconds past midnight belongs to the next year's report. Counters are native 64-bit integers: aligned 64-bit loads and
stores are single-copy atomic on x86-64 and AArch64, so a collector reading a
file while its worker counts sees an old or a new value, never a torn one; the
module refuses to run on a big-endian host. The ledger holds party ids and
counts only: no personal data, no serial numbers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import sqlite3
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, TypeVar

import msgspec

from crlbuilder import atomicfile
from crlbuilder.model import JPKI_FAMILIES, Family
from crlbuilder.rules import JST_OFFSET
from crlbuilder.store.reader import ReadSource
from responder.registry.vocabulary import Method, Service

__all__ = [
    "DB_NAME",
    "DEFAULT_CAPACITY",
    "MAX_SHIPPED_COUNT",
    "CollectResult",
    "CountRow",
    "Dimension",
    "GatheringState",
    "Ledger",
    "LedgerError",
    "LedgerFileError",
    "LedgerWriter",
    "Method",
    "NodeNameChanged",
    "RefusedFile",
    "Service",
    "SlotCount",
    "SlotValue",
    "WorkerFile",
    "is_counter",
    "issuance_counts",
    "peek",
    "read_worker_file",
]


# Stable one-byte codes in the worker files: never renumber, only append.
_SERVICE_CODES: Final[dict[Service, int]] = {
    Service.SIGN_REVOCATION_INFO: 1,
    Service.SIGN_CRL_FILE: 2,
    Service.SIGN_RECORD_INFO: 3,
    Service.CORRESPONDING_SIGN_SERIAL: 4,
    Service.CORRESPONDING_SERIAL: 5,
    Service.AUTH_REVOCATION_INFO: 6,
    Service.AUTH_CRL_FILE: 7,
    Service.CORRESPONDING_AUTH_SERIAL: 8,
    Service.SPECIFIED_VERIFIER_TOKEN: 9,
    Service.VALIDATION: 10,
}
_SERVICE_BY_CODE: Final = {c: s for s, c in _SERVICE_CODES.items()}
_METHOD_CODES: Final[dict[Method, int]] = {Method.OCSP: 1, Method.CRL_FILE: 2, Method.JSON: 3}
_METHOD_BY_CODE: Final = {c: m for m, c in _METHOD_CODES.items()}

DEFAULT_CAPACITY: Final = 16384
"""Slots per worker file (2 MiB): one per (day, party, service, method) the worker saw."""
DB_NAME: Final = "ledger.sqlite3"

_PARTY_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # the registry's PartyId
_FILE_RE: Final = re.compile(r"w(\d{4})-([0-9a-f]{32})\.ledger")
_DAY: Final = 86400
_EPOCH: Final = date(1970, 1, 1)

# --- worker file layout ------------------------------------------------------------
#
# header (one 4 KiB page, little-endian)
#   0  magic 8s | version u32 | slot_size u32 | capacity u32 | worker u32 | file_id 16s
#   40 created_at i64 | utc_offset i32 | crc32 of bytes 0..52 u32        (immutable)
#   56 used u32 | flags u32 | pid u32 | reserved u32 | updated_at i64     (mutable)
# slots from offset 4096, 128 bytes each (32 per page: a slot never spans two pages)
#   0  count u64 (native) | crc32 of bytes 12..128 u32 | day u32 | service u8 | method u8
#   18 party_len u8 | reserved u8 | party 64s | reserved to 128
# A slot is published by writing its key (and a zero count) first, then `used`.

_MAGIC: Final = b"JPKILDG\x01"
_VERSION: Final = 1
_HEADER_SIZE: Final = 4096
_SLOT_SIZE: Final = 128
_Q_PER_SLOT: Final = _SLOT_SIZE // 8
_HEAD_FIXED: Final = struct.Struct("<8sIIII16sqi")
_HEAD_CRC: Final = struct.Struct("<I")
_CRC_AT: Final = _HEAD_FIXED.size  # 52
_USED_AT: Final = 56
_FLAGS_AT: Final = 60
_PID_AT: Final = 64
_UPDATED_AT: Final = 72
_U32: Final = struct.Struct("<I")
_I64: Final = struct.Struct("<q")
_SLOT_KEY: Final = struct.Struct("<IIBBBB64s")  # crc, day, service, method, party_len, 0, party
_SLOT_TAIL: Final = bytes(_SLOT_SIZE - 8 - _SLOT_KEY.size)
_FLAG_SEALED: Final = 1

_log: Final = logging.getLogger("responder.ledger")
"""The flusher's failures: counts not durable (a machine crash would lose them) until it
recovers, said once when it starts failing and once when it recovers."""


class LedgerError(Exception):
    """The ledger cannot be used as asked; the message says why (never with personal data)."""


class LedgerCreating(LedgerError):
    """A ledger whose creation is under way: its tables are there, its schema row not yet
    (a reader that opens it between the two, as a scrape of /metrics may)."""


class NodeNameChanged(LedgerError):
    """`Ledger.ship_pending` under another node name than the one this ledger ships to its
    ledger stream as: every counter already shipped would be counted twice."""


class LedgerFileError(LedgerError):
    """A worker file that is not a valid ledger file (bad magic, truncated, corrupt slot...)."""


def _day_of(t: float, utc_offset: int) -> int:
    return int((t + utc_offset) // _DAY)


def _day_date(day: int) -> date:
    return _EPOCH + timedelta(days=day)


def _file_size(capacity: int) -> int:
    return _HEADER_SIZE + capacity * _SLOT_SIZE


def _check_host() -> None:
    if sys.byteorder != "little":
        raise LedgerError("the ledger's worker files need a little-endian host")


# --- reading a worker file (the collector's side) -----------------------------------


class SlotValue(msgspec.Struct, frozen=True):
    """One counter of a worker file: its key and its absolute value."""

    slot: int
    day: date
    party: str
    service: Service
    method: Method
    count: int


class WorkerFile(msgspec.Struct, frozen=True, kw_only=True):
    """A worker file as read at one instant."""

    path: str
    file_id: str
    """32 hex digits, random at creation: the collector's key for this file."""
    worker: int
    created_at: int
    updated_at: int
    """Last flush (epoch seconds); a dead writer's file stops advancing it."""
    utc_offset: int
    capacity: int
    sealed: bool
    """Sealed files are never written again: the collector may retire them."""
    slots: list[SlotValue]


def read_worker_file(path: str | Path) -> WorkerFile:
    """Read and validate one worker file; `LedgerFileError` says what is wrong with it."""
    _check_host()
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise LedgerFileError(f"{p}: cannot open: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER_SIZE:
            raise LedgerFileError(
                f"{p}: truncated: {size} bytes, less than the {_HEADER_SIZE}-byte header"
            )
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            return _parse(mm, str(p), size)
    finally:
        os.close(fd)


def _parse(mm: mmap.mmap, name: str, size: int) -> WorkerFile:
    fixed = _HEAD_FIXED.unpack_from(mm, 0)
    magic, version, slot_size, capacity, worker, file_id, created_at, utc_offset = fixed
    if magic != _MAGIC:
        raise LedgerFileError(f"{name}: not a jpki-va ledger worker file (bad magic)")
    if version != _VERSION:
        raise LedgerFileError(f"{name}: ledger file version {version}, this reads {_VERSION}")
    (crc,) = _HEAD_CRC.unpack_from(mm, _CRC_AT)
    if crc != zlib.crc32(mm[:_CRC_AT]):
        raise LedgerFileError(f"{name}: header checksum mismatch (corrupt header)")
    if slot_size != _SLOT_SIZE or capacity < 1:
        raise LedgerFileError(f"{name}: bad geometry (slot size {slot_size}, {capacity} slots)")
    if size != _file_size(capacity):
        raise LedgerFileError(
            f"{name}: truncated or padded: {size} bytes, expected {_file_size(capacity)} "
            f"for {capacity} slots"
        )
    with memoryview(mm).cast("I") as words:  # one 4-byte load: never half of a publish
        used = int(words[_USED_AT >> 2])
    if used > capacity:
        raise LedgerFileError(f"{name}: {used} slots in use, more than its {capacity}")
    (flags,) = _U32.unpack_from(mm, _FLAGS_AT)
    (updated_at,) = _I64.unpack_from(mm, _UPDATED_AT)
    counters = memoryview(mm).cast("Q")
    try:
        slots = [_read_slot(mm, counters, i, name) for i in range(used)]
    finally:
        counters.release()
    return WorkerFile(
        path=name,
        file_id=file_id.hex(),
        worker=worker,
        created_at=created_at,
        updated_at=updated_at,
        utc_offset=utc_offset,
        capacity=capacity,
        sealed=bool(flags & _FLAG_SEALED),
        slots=slots,
    )


def _read_slot(mm: mmap.mmap, counters: memoryview, i: int, name: str) -> SlotValue:
    off = _HEADER_SIZE + i * _SLOT_SIZE
    crc, day, scode, mcode, plen, _, party = _SLOT_KEY.unpack_from(mm, off + 8)
    if crc != zlib.crc32(mm[off + 12 : off + _SLOT_SIZE]):
        raise LedgerFileError(f"{name}: slot {i}: key checksum mismatch (corrupt slot)")
    service = _SERVICE_BY_CODE.get(scode)
    method = _METHOD_BY_CODE.get(mcode)
    if service is None or method is None:
        raise LedgerFileError(f"{name}: slot {i}: unknown service {scode} or method {mcode}")
    try:
        party_id = party[:plen].decode("ascii")
    except UnicodeDecodeError:
        party_id = ""
    if not _PARTY_RE.fullmatch(party_id):
        raise LedgerFileError(f"{name}: slot {i}: not a party id")
    count = int(counters[(off >> 3)])
    return SlotValue(i, _day_date(day), party_id, service, method, count)


# --- the writer (one per worker) -------------------------------------------------------


class _OpenFile:
    """The mapping of the writer's current file; the flock lives as long as ``fd``."""

    __slots__ = ("capacity", "fd", "file_id", "first_day", "mm", "path", "q", "used", "words")

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, capacity: int, file_id: bytes) -> None:
        self.path = path
        self.fd = fd
        self.mm = mm
        self.q = memoryview(mm).cast("Q")
        self.words = memoryview(mm).cast("I")
        """The header's u32 fields: ``used`` is published with one 4-byte store (a reader in
        another process never sees it half written, as ``struct.pack_into``, which zeroes
        its span first, would show it)."""
        self.capacity = capacity
        self.file_id = file_id
        self.used = 0
        self.first_day = -1

    def close(self) -> None:
        self.q.release()
        self.words.release()
        self.mm.close()
        os.close(self.fd)


class LedgerWriter:
    """One worker's counters in its memory-mapped file (see the module docstring).

    Open it in the worker *after* the fork (a writer must not be shared by two
    processes), call `count` from the event-loop thread before each answer is
    written, `start_flusher` once, and `close` when the worker stops.
    """

    def __init__(
        self,
        directory: Path,
        worker_index: int,
        *,
        capacity: int,
        utc_offset: int,
        max_file_days: int,
        clock: Callable[[], float],
    ) -> None:
        self.directory = directory
        self.worker_index = worker_index
        self.capacity = capacity
        self.utc_offset = utc_offset
        self.max_file_days = max_file_days
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rotate_due = False
        self.flush_error: str | None = None
        """The last failed background flush (an OSError's text), None while flushes succeed;
        logged (``ledger_flush_failed``, then ``ledger_flush_recovered``)."""
        self.on_flush_state: Callable[[bool], None] | None = None
        """Told True when background flushes start failing and False when one succeeds again
        (from the flusher's thread): the worker's ``jpkiva_ledger_flush_failing``."""
        self._day = _day_of(clock(), utc_offset)
        self._day_end = (self._day + 1) * _DAY - utc_offset
        self._index: dict[tuple[int, str, Service, Method], int] = {}
        self._today: dict[tuple[str, Service, Method], int] = {}
        self._dated = (self._day, self._today)
        """``_day`` and ``_today`` in one tuple, swapped in one store: `count`'s ``at`` path
        reads a day and that day's slots together, never a day with the next day's slots."""
        # a file of this index that a crash left before its rename (by the files' clock)
        own = re.compile(rf"^\.w{worker_index:04d}-[0-9a-f]{{32}}\.ledger\.tmp$")
        atomicfile.sweep_tmp(directory, now=time.time(), name=own)
        self._file = self._open_or_create()
        self._q = self._file.q

    @classmethod
    def open(
        cls,
        directory: str | Path,
        worker_index: int,
        *,
        capacity: int = DEFAULT_CAPACITY,
        utc_offset: int = JST_OFFSET,
        max_file_days: int = 7,
        clock: Callable[[], float] = time.time,
    ) -> LedgerWriter:
        """Continue this worker index's file in ``directory`` (created 0700), or start one.

        ``capacity`` applies to new files only. A file is sealed and replaced when
        it is full or, at the turn of a day, when its oldest day is ``max_file_days``
        old. Files of this index that are sealed, refused (bad) or locked by a
        live process are left alone. Raises `LedgerError` when the directory
        cannot be used.
        """
        _check_host()
        if not 0 <= worker_index <= 9999:
            raise LedgerError(f"worker index {worker_index} is outside 0..9999")
        if capacity < 1:
            raise LedgerError("capacity must be at least one slot")
        if not -14 * 3600 <= utc_offset <= 14 * 3600:
            raise LedgerError(f"utc_offset {utc_offset} s is not a time zone's")
        d = Path(directory)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"{d}: cannot create the ledger directory: {e.strerror}") from None
        return cls(
            d,
            worker_index,
            capacity=capacity,
            utc_offset=utc_offset,
            max_file_days=max_file_days,
            clock=clock,
        )

    @property
    def path(self) -> Path:
        """The worker file currently written."""
        return self._file.path

    @property
    def file_id(self) -> str:
        return self._file.file_id.hex()

    # --- the hot path -------------------------------------------------------------

    def count(
        self, party: str, service: Service, method: Method, n: int = 1, *, at: float | None = None
    ) -> None:
        """Count ``n`` provisions of ``service`` by ``method`` to ``party`` today.

        A clock read, one dict lookup and one add into the shared mapping; past local
        midnight the day is turned first (`tick`); the first time a
        (party, service, method) is seen on a day it takes the slow path, which
        allocates a slot (and raises `ValueError` for a party id that is not a
        registry id). Call it before the answer is written to the transport.
        Pass `Service` and `Method` members (their string values work too, but
        compare slower); ``responder.registry``'s enums have the same values.

        ``at``: the instant the caller provided at, read from its clock just before, instead
        of this writer's clock: the provisions are dated on its local day, even when the
        flusher has turned the day since (a caller that took them from the agreed provisions
        per day at ``at``, `responder.limits.LimitsTable.take_provisions`, so that the bound
        and the ledger count them on the same day). No clock read; the slot of ``at``'s day
        looked up in the day's slots read together with their day (``_dated``), so a day the
        flusher turns meanwhile is never mixed with the next one's slots.
        """
        if at is not None:
            day, today = self._dated
            if (at + self.utc_offset) // _DAY == day:
                i = today.get((party, service, method))
                if i is not None:
                    self._q[i] += n
                    return
            self._count_at(at, party, service, method, n)
            return
        if self._clock() >= self._day_end:
            self.tick()
        i = self._today.get((party, service, method))
        if i is None:
            self._count_new(party, service, method, n)
            return
        self._q[i] += n

    def _count_at(self, at: float, party: str, service: Service, method: Method, n: int) -> None:
        """`count` at ``at`` off its fast path (another day than the writer's, or a new slot):
        under the lock, so the flusher cannot turn the day between the look-up and the add."""
        day = _day_of(at, self.utc_offset)
        with self._lock:
            if day > self._day:
                self._roll(at)
            key = (party, service, method)
            i = self._today.get(key) if day == self._day else self._index.get((day, *key))
            if i is not None:
                self._q[i] += n
                return
        self._count_new(party, service, method, n, at)

    # --- the slow path ------------------------------------------------------------

    def _count_new(
        self, party: str, service: Service, method: Method, n: int, at: float | None = None
    ) -> None:
        if not isinstance(party, str) or not _PARTY_RE.fullmatch(party):
            raise ValueError("the ledger counts provisions to registered party ids only")
        try:
            service = Service(service)
            method = Method(method)
        except ValueError:
            raise ValueError(
                f"not a ledger service/method: {service!r}, {method!r} "
                "(pass responder.ledger.Service and Method members, or their string values)"
            ) from None
        with self._lock:
            if at is None:
                self._roll(self._clock())
            elif _day_of(at, self.utc_offset) > self._day:
                self._roll(at)
            if self._rotate_due:
                self._rotate_locked()
            # ``at`` of a day this writer has turned from: that day's slot, ``_today`` kept
            day = self._day if at is None else _day_of(at, self.utc_offset)
            key = (party, service, method)
            i = self._today.get(key) if day == self._day else self._index.get((day, *key))
            if i is None:
                if self._file.used >= self._file.capacity:
                    self._rotate_locked()
                i = self._allocate(day, party, service, method)
                if day == self._day:
                    self._today[key] = i
            self._q[i] += n

    def _allocate(self, day: int, party: str, service: Service, method: Method) -> int:
        f = self._file
        slot = f.used
        off = _HEADER_SIZE + slot * _SLOT_SIZE
        raw = party.encode("ascii")
        key = _SLOT_KEY.pack(
            0, day, _SERVICE_CODES[service], _METHOD_CODES[method], len(raw), 0, raw
        )
        body = key[4:] + _SLOT_TAIL  # bytes 12..128 of the slot
        f.mm[off + 8 : off + _SLOT_SIZE] = _U32.pack(zlib.crc32(body)) + body
        f.q[off >> 3] = 0
        f.used = slot + 1
        f.words[_USED_AT >> 2] = f.used  # publish: the key is complete before this
        if f.first_day < 0 or day < f.first_day:
            f.first_day = day
        self._index[(day, party, service, method)] = off >> 3
        return off >> 3

    def tick(self, now: float | None = None) -> None:
        """Turn the day if local midnight has passed (the flusher thread calls this)."""
        with self._lock:
            self._roll(self._clock() if now is None else now)

    def _roll(self, now: float) -> None:
        day = _day_of(now, self.utc_offset)
        if day == self._day:
            return
        self._day = day
        self._day_end = (day + 1) * _DAY - self.utc_offset
        # a fresh dict (swapped in one store) for the new day; a clock set back finds its slots
        self._today = {k[1:]: i for k, i in self._index.items() if k[0] == day}
        self._dated = (day, self._today)
        f = self._file
        if f.first_day >= 0 and day - f.first_day >= self.max_file_days:
            self._rotate_due = True  # done by the counting thread, never under its feet

    def rotate(self) -> None:
        """Seal the current file (the collector then retires it) and start a new one."""
        with self._lock:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        old = self._file
        _U32.pack_into(old.mm, _FLAGS_AT, _FLAG_SEALED)
        _I64.pack_into(old.mm, _UPDATED_AT, int(self._clock()))
        os.fsync(old.fd)
        new = self._create()
        self._file = new
        self._q = new.q
        self._index = {}
        self._today = {}
        self._dated = (self._day, self._today)
        self._rotate_due = False
        old.close()

    # --- durability -----------------------------------------------------------------

    def flush(self) -> None:
        """fsync the worker file: what was counted so far survives a machine crash.

        On Linux, fsync writes back the pages dirtied through a shared mapping, like
        msync(MS_SYNC), and, unlike ``mmap.flush``, releases the GIL while it waits.
        """
        with self._lock:
            _I64.pack_into(self._file.mm, _UPDATED_AT, int(self._clock()))
            os.fsync(self._file.fd)

    def start_flusher(self, interval: float = 1.0) -> None:
        """Start a daemon thread: `flush` every ``interval`` seconds and turn days at midnight."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._flusher, args=(interval,), name="ledger-flush", daemon=True
        )
        self._thread.start()

    def _flusher(self, interval: float) -> None:
        while True:
            wait = min(interval, max(0.0, self._day_end - self._clock()) + 0.001)
            if self._stop.wait(wait):
                return
            try:
                self.tick()
                self.flush()
            except OSError as e:
                error = e.strerror or type(e).__name__
                if self.flush_error is None:  # once per failure, not once a second
                    _log.error(
                        "ledger_flush_failed",
                        extra={"fields": {"file": self._file.path.name, "error": error}},
                    )
                    self._tell(failing=True)
                self.flush_error = error
                continue
            if self.flush_error is not None:
                _log.info(
                    "ledger_flush_recovered", extra={"fields": {"file": self._file.path.name}}
                )
                self._tell(failing=False)  # before flush_error says so: one order to watch
                self.flush_error = None

    def _tell(self, *, failing: bool) -> None:
        hook = self.on_flush_state
        if hook is None:
            return
        try:
            hook(failing)
        except Exception as exc:  # a metric that cannot be set never stops the flushes
            _log.error(
                "ledger_flush_state_unset", extra={"fields": {"exc_type": type(exc).__name__}}
            )

    def close(self) -> None:
        """Stop the flusher, flush, unmap and unlock; the file stays for the collector."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            f = self._file
            if f.mm.closed:
                return
            _I64.pack_into(f.mm, _UPDATED_AT, int(self._clock()))
            os.fsync(f.fd)
            f.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files ------------------------------------------------------------------------

    def _open_or_create(self) -> _OpenFile:
        mine = sorted(self.directory.glob(f"w{self.worker_index:04d}-*.ledger"))
        candidates: list[tuple[int, Path]] = []
        for p in mine:
            with contextlib.suppress(LedgerFileError):
                wf = read_worker_file(p)
                if not wf.sealed and wf.worker == self.worker_index:
                    candidates.append((wf.created_at, p))
        for _, p in sorted(candidates, reverse=True):
            opened = self._try_continue(p)
            if opened is not None:
                return opened
        return self._create()

    def _try_continue(self, path: Path) -> _OpenFile | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            if st.st_nlink == 0 or os.stat(path).st_ino != st.st_ino:
                raise LedgerFileError(f"{path}: retired meanwhile")
            wf = read_worker_file(path)  # again, under the lock
            if wf.sealed:
                raise LedgerFileError(f"{path}: sealed meanwhile")
            mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, LedgerFileError):
            os.close(fd)
            return None
        f = _OpenFile(path, fd, mm, wf.capacity, bytes.fromhex(wf.file_id))
        f.used = len(wf.slots)
        for s in wf.slots:
            day = (s.day - _EPOCH).days
            q = (_HEADER_SIZE + s.slot * _SLOT_SIZE) >> 3
            self._index[(day, s.party, s.service, s.method)] = q
            if day == self._day:
                self._today[(s.party, s.service, s.method)] = q
            if f.first_day < 0 or day < f.first_day:
                f.first_day = day
        _U32.pack_into(mm, _PID_AT, os.getpid())
        _I64.pack_into(mm, _UPDATED_AT, int(self._clock()))
        return f

    def _create(self) -> _OpenFile:
        file_id = os.urandom(16)
        name = f"w{self.worker_index:04d}-{file_id.hex()}.ledger"
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        size = _file_size(self.capacity)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise LedgerError(f"{tmp}: cannot create a ledger file: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            now = int(self._clock())
            fixed = _HEAD_FIXED.pack(
                _MAGIC,
                _VERSION,
                _SLOT_SIZE,
                self.capacity,
                self.worker_index,
                file_id,
                now,
                self.utc_offset,
            )
            mm[: _CRC_AT + 4] = fixed + _HEAD_CRC.pack(zlib.crc32(fixed))
            _U32.pack_into(mm, _PID_AT, os.getpid())
            _I64.pack_into(mm, _UPDATED_AT, now)
            os.fsync(fd)
            os.rename(tmp, final)  # the flock follows the inode
            atomicfile.fsync_dir(self.directory)
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LedgerError(f"{final}: cannot create a ledger file: {e.strerror}") from None
        return _OpenFile(final, fd, mm, self.capacity, file_id)


# --- the durable ledger ----------------------------------------------------------------

Dimension = Literal["day", "month", "party", "service", "method"]
"""A column of `Ledger.totals`: ``month`` is ``"YYYY-MM"`` of the local day."""

_DIMENSION_SQL: Final[dict[str, str]] = {
    "day": "day",
    "month": "substr(day, 1, 7)",
    "party": "party",
    "service": "service",
    "method": "method",
}

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    worker INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'retired')),
    first_merged INTEGER NOT NULL,
    last_merged INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE TABLE IF NOT EXISTS live (
    file_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    day TEXT NOT NULL,
    party TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (file_id, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (
    day TEXT NOT NULL,
    party TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, party, service, method)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS ledger AS
    SELECT day, party, service, method, count FROM counts
    UNION ALL SELECT day, party, service, method, count FROM live;
CREATE TABLE IF NOT EXISTS shipped (
    file_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (file_id, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_live (
    node TEXT NOT NULL,
    file_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    day TEXT NOT NULL,
    party TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (node, file_id, slot)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS service_ledger AS
    SELECT day, party, service, method, count FROM service_live;
CREATE TABLE IF NOT EXISTS history (
    slot INTEGER PRIMARY KEY,
    day TEXT NOT NULL,
    party TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    count INTEGER NOT NULL
);
"""
# `shipped` and `service_live` (several nodes, `responder.ledgerstream`) came after schema 1
# without changing it: CREATE ... IF NOT EXISTS adds them to an older ledger when it is next
# opened for writing; a single node never fills them. `history` (the per-day totals folded
# before the first shipment, shipped as counters of one more file: `Ledger.ship_pending`) too.
_SCHEMA_VERSION: Final = "1"


class SlotCount(msgspec.Struct, frozen=True, kw_only=True):
    """One counter of one worker file of one node, absolute (counters only grow): what a node
    ships to the service's ledger stream and what the service ledger merges with ``max``."""

    node: str
    file_id: str
    slot: int
    day: str
    party: str
    service: str
    method: str
    count: int


MAX_SHIPPED_COUNT: Final = 2**48
"""No counter on the ledger stream is this large (nine million provisions a second for a
year); below it, the sums of the report over 32768 counters stay within sqlite's 64 bits."""
_FILE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


def is_counter(c: SlotCount) -> bool:
    """``c`` is a counter a `LedgerWriter` could have written: a file id, a slot, a date, a
    registry party id, a `Service` and a `Method` of the ledger, a count from 0 (what a
    message of the ledger stream must be before the service ledger merges it)."""
    try:
        date.fromisoformat(c.day)
    except ValueError:
        return False
    return (
        len(c.day) == 10
        and _FILE_ID_RE.fullmatch(c.file_id) is not None
        and 0 <= c.slot < 2**32
        and _PARTY_RE.fullmatch(c.party) is not None
        and c.service in _SERVICE_VALUES
        and c.method in _METHOD_VALUES
        and 0 <= c.count < MAX_SHIPPED_COUNT
    )


_SERVICE_VALUES: Final = frozenset(s.value for s in _SERVICE_CODES)
_METHOD_VALUES: Final = frozenset(m.value for m in _METHOD_CODES)


class CountRow(msgspec.Struct, frozen=True):
    """One line of the ledger: provisions of one kind, by one method, to one party, on one day."""

    day: date
    party: str
    service: Service
    method: Method
    count: int


class RefusedFile(msgspec.Struct, frozen=True):
    """A worker file the collector would not merge, and why."""

    path: str
    reason: str


class CollectResult(msgspec.Struct, kw_only=True):
    """What one `Ledger.collect` did."""

    files: int = 0
    """Worker files read and merged."""
    slots_updated: int = 0
    """Counters whose merged value grew."""
    retired: list[str] = msgspec.field(default_factory=list)
    """Worker files folded into the per-day table and deleted."""
    refused: list[RefusedFile] = msgspec.field(default_factory=list)


class GatheringState(msgspec.Struct, frozen=True, kw_only=True):
    """This node's gathering of every node's counts from the service's ledger stream into its
    service ledger (`responder.ledgerstream.exchange`), as the ledger's meta table keeps it:
    `Ledger.gathering_state`."""

    gathered_at: int
    """When the last exchange that shipped this node's counts and then gathered every node's
    started (Unix seconds; 0: none yet): the service ledger holds this node's counts merged
    by then and every other node's as they had shipped them when it was read."""
    failures: int
    """Gatherings that failed since the ledger was created (only grows)."""
    failing: int
    """Gatherings that failed since the last one that succeeded (0: the last succeeded)."""


class ShippingState(msgspec.Struct, frozen=True, kw_only=True):
    """This node's shipping to the service's ledger stream (`responder.ledgerstream`), as the
    ledger's meta table keeps it (so it survives restarts): `Ledger.shipping_state`."""

    shipped_at: int
    """When the last shipment succeeded (Unix seconds; 0: none yet): every counter merged by
    then was on the stream."""
    failures: int
    """Shipments that failed since the ledger was created (only grows)."""
    unshipped: int
    """Merged counters whose present value is not on the stream yet."""


_SlotKey = tuple[str, str, str, str]  # day, party, service, method


@dataclass(frozen=True, slots=True)
class _Seen:
    key: _SlotKey
    count: int


class Ledger:
    """The durable ledger (帳簿): sqlite3 in WAL mode, ``DB_NAME`` in the ledger directory.

    ``Ledger.open(dir)`` creates it (directory 0700, database 0600) if needed.
    `collect` merges the worker files of the same directory; the queries read
    what has been collected. One `Ledger` per thread (sqlite3 connections are
    not shared between threads).
    """

    def __init__(self, directory: Path, conn: sqlite3.Connection, *, readonly: bool) -> None:
        self.directory = directory
        self.readonly = readonly
        self._db = conn
        self._seen: dict[str, dict[int, _Seen]] = {}
        self.view = "ledger"
        """What `rows` and `totals` read: ``ledger`` (this node's counts) or ``service_ledger``
        (every node's, gathered from the ledger stream: `responder.ledgerstream`)."""

    @classmethod
    def open(cls, directory: str | Path, *, readonly: bool = False) -> Ledger:
        """Open (or, unless ``readonly``, create) the ledger of ``directory``."""
        d = Path(directory)
        path = d / DB_NAME
        try:
            if readonly:
                if not path.exists():
                    raise LedgerError(f"{path}: no ledger here")
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                if (
                    conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
                    is None
                ):
                    conn.close()  # the first collection made the file, not its tables yet
                    raise LedgerCreating(f"{path}: the ledger is being created")
            else:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not path.exists():
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except (OSError, sqlite3.Error) as e:
            raise LedgerError(f"{path}: cannot open the ledger: {e}") from None
        if row is None and readonly:
            conn.close()
            raise LedgerCreating(f"{path}: the ledger is being created")
        if row is None or row[0] != _SCHEMA_VERSION:
            conn.close()
            raise LedgerError(
                f"{path}: ledger schema {row and row[0]}, this reads {_SCHEMA_VERSION}"
            )
        return cls(d, conn, readonly=readonly)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- collecting -------------------------------------------------------------------

    def collect(
        self, *, retire_idle_after: float = 3600.0, now: float | None = None
    ) -> CollectResult:
        """Merge every worker file of the directory; retire sealed or abandoned ones.

        Idempotent: counters are merged as absolute values per (file id, slot)
        with ``max``, so running it twice, or in two processes at once, never
        counts twice. A file is retired (folded into the per-day table, then
        deleted) when it is sealed, or when no writer holds it and its last
        flush is ``retire_idle_after`` seconds old. Bad files are listed in
        ``refused`` and left in place; the others are merged regardless.
        """
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot collect")
        t = time.time() if now is None else now
        result = CollectResult()
        read: list[WorkerFile] = []
        for p in sorted(self.directory.glob("*.ledger")):
            if not _FILE_RE.fullmatch(p.name):
                result.refused.append(RefusedFile(str(p), "not a worker file name"))
                continue
            try:
                read.append(read_worker_file(p))
            except LedgerFileError as e:
                if p.exists():
                    result.refused.append(RefusedFile(str(p), str(e)))
        with self._transaction():
            for wf in read:
                try:
                    result.slots_updated += self._merge(wf, t)
                    result.files += 1
                except LedgerFileError as e:
                    result.refused.append(RefusedFile(wf.path, str(e)))
        for wf in read:
            if any(r.path == wf.path for r in result.refused):
                continue
            if wf.sealed or t - wf.updated_at >= retire_idle_after:
                try:
                    if self._retire(Path(wf.path), t):
                        result.retired.append(wf.path)
                except LedgerFileError as e:
                    result.refused.append(RefusedFile(wf.path, str(e)))
        self._db.execute(  # `refused_files`: what /metrics says (jpkiva_ledger_files_refused)
            "INSERT OR REPLACE INTO meta VALUES ('refused_files', ?)", (str(len(result.refused)),)
        )
        self._db.execute(  # `collected_at`: what a report read from this ledger is as of
            "INSERT INTO meta VALUES ('collected_at', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (str(int(t)),),
        )
        return result

    def collected_at(self) -> int:
        """When the last `collect` ran (Unix seconds; 0: never, or a ledger of a version that
        did not record it): a report read from this ledger holds the counts as of then."""
        return int(self._meta("collected_at") or 0)

    def refused_files(self) -> int:
        """How many files the last `collect` refused (0 before the first): their counts are
        missing from the ledger until the files are repaired or restored."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'refused_files'").fetchone()
        return 0 if row is None else int(row[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            self._seen.clear()  # the cache may hold values that were rolled back
            raise
        db.execute("COMMIT")

    def _state(self, file_id: str) -> str | None:
        row = self._db.execute("SELECT state FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return None if row is None else str(row[0])

    def _merge(self, wf: WorkerFile, t: float) -> int:
        """Upsert one file's absolute counters (inside the caller's transaction)."""
        db = self._db
        state = self._state(wf.file_id)
        if state == "retired":
            return 0  # folded already; `_retire` deletes the leftover file
        name = Path(wf.path).name
        if state is None:
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, 'live', ?, ?, NULL)",
                (wf.file_id, wf.worker, name, int(t), int(t)),
            )
        seen = self._seen.get(wf.file_id)
        if seen is None:
            seen = self._seen[wf.file_id] = {
                slot: _Seen((day, party, service, method), count)
                for slot, day, party, service, method, count in db.execute(
                    "SELECT slot, day, party, service, method, count FROM live WHERE file_id = ?",
                    (wf.file_id,),
                )
            }
        updates: list[tuple[str, int, str, str, str, str, int]] = []
        grown: dict[int, _Seen] = {}
        for s in wf.slots:
            key: _SlotKey = (s.day.isoformat(), s.party, s.service.value, s.method.value)
            old = seen.get(s.slot)
            if old is not None and old.key != key:
                raise LedgerFileError(  # nothing of this file merged, nor cached as merged
                    f"{wf.path}: slot {s.slot} changed its key since the last merge "
                    "(the file was rewritten)"
                )
            if old is None or s.count > old.count:
                updates.append((wf.file_id, s.slot, *key, s.count))
                grown[s.slot] = _Seen(key, s.count)
        seen.update(grown)  # the caller's transaction writes them (a rollback clears the cache)
        db.executemany(
            "INSERT INTO live VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (file_id, slot) "
            "DO UPDATE SET count = max(count, excluded.count)",
            updates,
        )
        db.execute("UPDATE files SET last_merged = ? WHERE file_id = ?", (int(t), wf.file_id))
        return len(updates)

    def _retire(self, path: Path, t: float) -> bool:
        """Seal, merge the final values, fold and delete one file, all under its flock.

        A node that ships its counts (`ship_pending`) keeps a file until every final
        counter of it was shipped: folding would lose which file and slot a count was."""
        if self._shipping() and self._unshipped_file(path):
            return False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise LedgerFileError(f"{path}: cannot open to retire: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # its writer is alive
                raise
            if os.fstat(fd).st_nlink == 0:
                return False
            wf = read_worker_file(path)  # final: no writer can hold it while we hold the lock
            if not wf.sealed:
                with mmap.mmap(fd, _HEADER_SIZE, mmap.MAP_SHARED) as mm:
                    _U32.pack_into(mm, _FLAGS_AT, _FLAG_SEALED)  # no writer may reopen it
                os.fsync(fd)
            with self._transaction():
                if self._state(wf.file_id) != "retired":
                    self._merge(wf, t)
                    if self._shipping() and self._unshipped_file(path):
                        # shipping began since the check above (`ship_pending`, another
                        # process): folded now, these counts would reach no stream
                        return False
                    db = self._db
                    db.execute(
                        "INSERT INTO counts SELECT day, party, service, method, sum(count) "
                        "FROM live WHERE file_id = ? GROUP BY day, party, service, method "
                        "ON CONFLICT (day, party, service, method) "
                        "DO UPDATE SET count = count + excluded.count",
                        (wf.file_id,),
                    )
                    db.execute("DELETE FROM live WHERE file_id = ?", (wf.file_id,))
                    db.execute(
                        "UPDATE files SET state = 'retired', retired_at = ? WHERE file_id = ?",
                        (int(t), wf.file_id),
                    )
            self._seen.pop(wf.file_id, None)
            path.unlink()
            atomicfile.fsync_dir(path.parent)
            return True
        except OSError as e:
            raise LedgerFileError(f"{path}: cannot retire: {e.strerror}") from None
        finally:
            os.close(fd)

    # --- several nodes: shipping and the service ledger --------------------------------

    def _shipping(self) -> bool:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'shipping'").fetchone()
        return row is not None and row[0] == "1"

    def _unshipped_file(self, path: Path) -> bool:
        """The file's counters as last merged are not all shipped (or it was never merged)."""
        m = _FILE_RE.fullmatch(path.name)
        if m is None:
            return True
        row = self._db.execute(
            "SELECT count(*) FROM live LEFT JOIN shipped USING (file_id, slot) "
            "WHERE live.file_id = ? AND live.count > coalesce(shipped.count, -1)",
            (m.group(2),),
        ).fetchone()
        try:
            final = read_worker_file(path)
        except LedgerFileError:
            return True
        merged = {
            int(slot): int(count)
            for slot, count in self._db.execute(
                "SELECT slot, count FROM shipped WHERE file_id = ?", (final.file_id,)
            )
        }
        return bool(row[0]) or any(merged.get(s.slot, -1) < s.count for s in final.slots)

    def ship_pending(self, node: str, stream_id: str = "") -> list[SlotCount]:
        """This node's merged counters not yet shipped at their present value to the ledger
        stream ``stream_id`` (its creation time: a stream deleted and made again is another
        one), and marks the ledger as shipping: from now on a file is retired only once
        shipped whole.

        The first call for a stream also takes the per-day totals folded so far (worker
        files gone: folded while the node ran alone, or once shipped to a stream since
        deleted) as the counters of one more file, ``history``, and forgets what was shipped
        before (`_begin_shipping`): so a new stream (the first, or one that replaced a stream
        made before it kept only each counter's latest value) gets this node's whole ledger,
        and the service's 帳簿 and 報告書 hold it once. Call it under `ship_lock`.

        The ``node`` of a shipment acknowledged is kept (`mark_shipped`, `shipped_as`): on
        the same stream another name then raises
        `NodeNameChanged`, as the counters' subjects name their node and the service ledger
        keeps one counter per node, file and slot (shipped again as another node, each would
        count twice: a ``responder report --nats`` without ``--node`` on a node whose
        ``[cluster] node`` is not its host name did so)."""
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot ship")
        with self._transaction():
            if not self._shipping() or self._meta("ship_stream") != stream_id:
                self._begin_shipping(stream_id)
            else:
                shipped_as = self._meta("ship_node")
                if shipped_as is not None and shipped_as != node:
                    # its counters are on the stream under ``shipped_as``'s subjects: shipped
                    # again under another name they would be counted beside them, twice
                    raise NodeNameChanged(
                        f"this ledger ships to the ledger stream as node {shipped_as!r}, not "
                        f"{node!r}: under two names every counter would count twice in the "
                        f"service's 帳簿 and 報告書 (give the node's name: [cluster] node, or "
                        f"responder report --node {shipped_as})"
                    )
            rows = self._db.execute(
                "SELECT live.file_id, live.slot, day, party, service, method, live.count "
                "FROM live LEFT JOIN shipped USING (file_id, slot) "
                "WHERE live.count > coalesce(shipped.count, -1) ORDER BY live.file_id, live.slot"
            ).fetchall()
            history = self._history_id()
            if history is not None:
                rows += self._db.execute(
                    "SELECT ?, history.slot, day, party, service, method, history.count "
                    "FROM history LEFT JOIN shipped "
                    "ON shipped.file_id = ? AND shipped.slot = history.slot "
                    "WHERE history.count > coalesce(shipped.count, -1) ORDER BY history.slot",
                    (history, history),
                ).fetchall()
        return [
            SlotCount(node=node, file_id=f, slot=int(sl), day=d, party=p, service=sv, method=m,
                      count=int(c))
            for f, sl, d, p, sv, m, c in rows
        ]  # fmt: skip

    @contextlib.contextmanager
    def ship_lock(self) -> Iterator[None]:
        """One shipment of this ledger at a time (held from `ship_pending` until
        `mark_shipped`): the stream keeps each counter's last message
        only, so two shipments of one node crossing could leave an older value last (a
        smaller count than one already marked shipped, lost to every node that gathers
        afterwards). Under the lock each counter's messages only grow. The lock is the
        ledger directory's own (no file to create: one made by ``responder report`` run as
        another user would shut the responder out)."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise LedgerError(f"{self.directory}: cannot lock to ship: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:  # a network file system's directory (NFS: a write lock)
                raise LedgerError(
                    f"{self.directory}: cannot lock to ship: {e.strerror} (the ledger "
                    "directory must be on a local file system)"
                ) from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _begin_shipping(self, stream_id: str) -> None:
        """Mark the ledger as shipping to ``stream_id`` and take what was folded until now as
        ``history``, a file of its own id, forgetting what was shipped to any stream before
        (inside the caller's transaction, so no collector folds a file between the two:
        `_retire` checks `_shipping` in its own). Once a stream: what is folded afterwards
        was shipped to it first (counted in ``shipped`` under its own file).

        The id is kept when the totals are those of the present ``history``, slot for slot:
        this file then carries the same counters, and a shipment of them that reached the
        new stream already (it was made again while the node shipped to the one before) is
        replaced by the same subjects, not counted a second time beside a new id."""
        db = self._db
        before = db.execute("SELECT * FROM history ORDER BY slot").fetchall()
        db.execute("DELETE FROM history")
        db.execute("DELETE FROM shipped")
        db.execute(
            "INSERT INTO history SELECT row_number() OVER (ORDER BY day, party, service, method)"
            " - 1, day, party, service, method, count FROM counts"
        )
        after = db.execute("SELECT * FROM history ORDER BY slot").fetchall()
        if after != before or self._history_id() is None:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('history', ?)", (os.urandom(16).hex(),))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('shipping', '1')")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('ship_stream', ?)", (stream_id,))
        db.execute("DELETE FROM meta WHERE key = 'ship_node'")  # nothing on this stream yet

    def _history_id(self) -> str | None:
        """The file id the counts folded before the first shipment are shipped as (None: a
        ledger that began shipping before ``history`` was; its earlier folds are not on the
        stream, docs/operations.md)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'history'").fetchone()
        return None if row is None else str(row[0])

    def mark_shipped(self, counts: Sequence[SlotCount], at: int) -> None:
        """``counts`` are on the ledger stream (acknowledged by JetStream), and with them every
        counter merged by then: the shipment of ``at`` (Unix seconds) succeeded, ``counts``
        empty when nothing had grown (`shipping_state`). The node they were shipped as is
        kept (`shipped_as`): only a name whose counters are on the stream binds the ledger
        (a shipment refused by the servers, e.g. under a name its credential may not
        publish, leaves it free)."""
        with self._transaction():
            if counts:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('ship_node', ?)", (counts[0].node,)
                )
            self._db.executemany(
                "INSERT INTO shipped VALUES (?, ?, ?) ON CONFLICT (file_id, slot) "
                "DO UPDATE SET count = max(count, excluded.count)",
                [(c.file_id, c.slot, c.count) for c in counts],
            )
            self._db.execute(
                "INSERT INTO meta VALUES ('shipped_at', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (str(int(at)),),
            )

    def ship_failed(self) -> None:
        """A shipment to the ledger stream failed (`shipping_state`: ``failures`` grows by one)."""
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot ship")
        self._db.execute(
            "INSERT INTO meta VALUES ('ship_failures', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def shipping_state(self) -> ShippingState | None:
        """How this node's shipping to the ledger stream stands; None when this ledger never
        shipped nor tried to (a single node's)."""
        meta = dict(
            self._db.execute(
                "SELECT key, value FROM meta WHERE key IN ('shipping', 'shipped_at', 'ship_failures')"
            ).fetchall()
        )
        if not meta:
            return None
        (unshipped,) = self._db.execute(
            "SELECT count(*) FROM live LEFT JOIN shipped USING (file_id, slot) "
            "WHERE live.count > coalesce(shipped.count, -1)"
        ).fetchone()
        history = self._history_id()
        if history is not None:  # the counts folded before the first shipment, not all on it
            (more,) = self._db.execute(
                "SELECT count(*) FROM history LEFT JOIN shipped "
                "ON shipped.file_id = ? AND shipped.slot = history.slot "
                "WHERE history.count > coalesce(shipped.count, -1)",
                (history,),
            ).fetchone()
            unshipped += more
        return ShippingState(
            shipped_at=int(meta.get("shipped_at", 0)),
            failures=int(meta.get("ship_failures", 0)),
            unshipped=int(unshipped),
        )

    def gathered(self, at: int) -> None:
        """A gathering (after this node's shipment, started at ``at``, Unix seconds) succeeded:
        the service ledger holds every node's counts as of then (`gathering_state`)."""
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot gather")
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta VALUES ('gathered_at', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (str(int(at)),),
            )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('gather_failing', '0')")

    def gather_failed(self) -> None:
        """A gathering from the ledger stream failed, or its shipment before it (`gathering_state`:
        ``failures`` and ``failing`` grow by one)."""
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot gather")
        with self._transaction():
            for key in ("gather_failures", "gather_failing"):
                self._db.execute(
                    "INSERT INTO meta VALUES (?, '1') ON CONFLICT (key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                    (key,),
                )

    def gathering_state(self) -> GatheringState:
        """How this node's gathering from the ledger stream stands (all 0: none tried yet)."""
        meta = dict(
            self._db.execute(
                "SELECT key, value FROM meta "
                "WHERE key IN ('gathered_at', 'gather_failures', 'gather_failing')"
            ).fetchall()
        )
        return GatheringState(
            gathered_at=int(meta.get("gathered_at", 0)),
            failures=int(meta.get("gather_failures", 0)),
            failing=int(meta.get("gather_failing", 0)),
        )

    def service_seq(self) -> int:
        """The last ledger stream sequence merged into the service ledger (0: none)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'service_seq'").fetchone()
        return int(row[0]) if row is not None else 0

    def shipped_as(self) -> str | None:
        """The node name this ledger's counters are on its ledger stream as (None: none
        acknowledged there yet, or only under a version that did not record it):
        `ship_pending` refuses another name on the same stream (`NodeNameChanged`)."""
        return self._meta("ship_node")

    def stream_followed(self) -> tuple[str | None, str | None]:
        """The ledger streams (their creation times) this ledger last shipped to and gathered
        from (None: none yet, or a version that did not record it)."""
        return self._meta("ship_stream"), self._meta("service_stream")

    def follow_service_stream(self, stream_id: str) -> None:
        """Gather from the ledger stream ``stream_id`` (its creation time): when it is not the
        one the service ledger was gathered from (deleted and made again, or gathered by a
        version that did not record it), the service ledger is emptied and read again from
        the stream's first message, as every node ships its whole ledger to a new stream
        (`ship_pending`): kept, the old stream's counters would count twice beside them."""
        if self.readonly:
            raise LedgerError("this ledger was opened read-only: it cannot gather")
        with self._transaction():
            if self._meta("service_stream") == stream_id:
                return
            self._db.execute("DELETE FROM service_live")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('service_seq', '0')")
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('service_stream', ?)", (stream_id,)
            )

    def merge_service(
        self, counts: Sequence[SlotCount], seq: int, stream_id: str | None = None
    ) -> bool:
        """Merge counters of any node into the service ledger, ``max`` per (node, file, slot):
        a counter received twice, or an older value after a newer one, changes nothing.
        With ``stream_id``, the stream they were read from: merged only if the service ledger
        still follows it (False: another gathering emptied it for a stream made again since,
        `follow_service_stream`, and the old stream's counters would count beside the new
        one's)."""
        with self._transaction():
            if stream_id is not None and self._meta("service_stream") != stream_id:
                return False
            self._db.executemany(
                "INSERT INTO service_live VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (node, file_id, slot) DO UPDATE SET count = max(count, excluded.count)",
                [(c.node, c.file_id, c.slot, c.day, c.party, c.service, c.method, c.count)
                 for c in counts],
            )  # fmt: skip
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('service_seq', ?)", (str(int(seq)),)
            )
        return True

    # --- queries --------------------------------------------------------------------

    def rows(self, first: date, last: date, *, party: str | None = None) -> list[CountRow]:
        """Counts per day × party × service × method, ``first`` to ``last`` inclusive."""
        sql = (
            f"SELECT day, party, service, method, sum(count) FROM {self._view()} "  # noqa: S608
            "WHERE day BETWEEN ? AND ? AND (? IS NULL OR party = ?) "
            "GROUP BY day, party, service, method ORDER BY day, party, service, method"
        )
        args = (first.isoformat(), last.isoformat(), party, party)
        return [
            CountRow(date.fromisoformat(d), p, Service(s), Method(m), int(c))
            for d, p, s, m, c in self._db.execute(sql, args)
        ]

    def totals(
        self, first: date, last: date, by: Sequence[Dimension] = ()
    ) -> dict[tuple[str, ...], int]:
        """Sums from ``first`` to ``last`` inclusive grouped by ``by`` (``()``: the grand total).

        Keys are tuples of the ``by`` values as strings, e.g. ``by=("month", "party")``
        gives ``{("2025-04", "bank-a"): 1234, ...}``; the grand total's key is ``()``.
        """
        cols = []
        for dim in by:
            if dim not in _DIMENSION_SQL:
                raise ValueError(f"unknown dimension {dim!r}")
            cols.append(_DIMENSION_SQL[dim])
        select = ", ".join([*cols, "sum(count)"])
        sql = f"SELECT {select} FROM {self._view()} WHERE day BETWEEN ? AND ?"  # noqa: S608 (whitelisted)
        if cols:
            sql += " GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)
        out: dict[tuple[str, ...], int] = {}
        for row in self._db.execute(sql, (first.isoformat(), last.isoformat())):
            if row[-1] is not None:
                out[tuple(str(v) for v in row[:-1])] = int(row[-1])
        return out

    def _view(self) -> str:
        if self.view not in ("ledger", "service_ledger"):
            raise ValueError(f"unknown ledger view {self.view!r}")
        return self.view

    def export_json(self, first: date, last: date) -> bytes:
        """The ledger lines from ``first`` to ``last`` as one JSON document."""
        rows = self.rows(first, last)
        return msgspec.json.encode(
            {
                "ledger": "帳簿 (Act §40, Ord §71)",
                "first": first,
                "last": last,
                "rows": rows,
                "total": sum(r.count for r in rows),
            }
        )

    def files(self) -> list[tuple[str, str, str]]:
        """(file id, file name, state) of every worker file ever merged."""
        return [
            (str(a), str(b), str(c))
            for a, b, c in self._db.execute(
                "SELECT file_id, name, state FROM files ORDER BY first_merged, file_id"
            )
        ]


_T = TypeVar("_T")


def peek(directory: str | Path, read: Callable[[Ledger], _T]) -> _T | None:
    """``read`` of the ledger of ``directory`` opened read-only (closed after), or None while
    there is none yet: no collection has run, or the first is creating it (`LedgerCreating`).
    For what reads the meta table at a scrape (`responder.ledgergauges`,
    `responder.shipgauges`); `LedgerError` and `sqlite3.Error` go to the caller."""
    if not (Path(directory) / DB_NAME).exists():
        return None
    try:
        ledger = Ledger.open(directory, readonly=True)
    except LedgerCreating:
        return None
    try:
        return read(ledger)
    finally:
        ledger.close()


# --- 発行件数 (Ord §71(1)) -------------------------------------------------------------


def issuance_counts(
    store: ReadSource, first: date, last: date, *, utc_offset: int = JST_OFFSET
) -> dict[str, dict[str, int]]:
    """Certificates issued (発行件数, Ord §71(1)) per family and local month, from the store.

    ``{"sign-card": {"2025-04": 1234, ...}, ...}`` counting each status record whose
    ``not_before`` (taken as the issuance time) falls on a local day from ``first`` to
    ``last`` inclusive; every family of the Act appears, months without issuance do not
    (tokens of 特定利用者証明検証者, Act §38-3, are not counted here: the ledger counts each
    provision of one). This is
    a full scan of the status database, about two seconds per million certificates:
    fine for a yearly report, not for a request path. A group appliance's store
    (built from CRLs) holds only revoked certificates, so it is refused.
    """
    lo = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp() - utc_offset
    hi = datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp() - utc_offset + _DAY
    by_code: dict[tuple[int, int], int] = {}
    with store.read() as r:
        if r.crl_import():
            raise LedgerError(
                "a group appliance's store holds only revoked certificates: "
                "issuance counts (発行件数) are the 機構's"
            )
        for _key, rec in r.statuses():
            nb = rec.not_before
            if lo <= nb < hi:
                k = (rec.family, _day_of(nb, utc_offset))
                by_code[k] = by_code.get(k, 0) + 1
    out: dict[str, dict[str, int]] = {f.value: {} for f in JPKI_FAMILIES}
    for (code, day), n in sorted(by_code.items()):
        fam = Family.from_code(code).value
        if (
            fam not in out
        ):  # a 特定利用者証明検証者証明符号 (Act §38-3) is no 電子証明書 of Ord §71(1)
            continue
        m = _day_date(day).isoformat()[:7]
        out[fam][m] = out[fam].get(m, 0) + n
    return out
