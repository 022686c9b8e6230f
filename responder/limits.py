"""Agreed quotas and the CRL cycle, enforced across all workers together (取決め, Ord §31, §33, §62).

Each worker owns one row of a shared memory-mapped table and writes only its
own row, so workers never race on a counter; a decision reads every worker's
row for the party and sums. The table has a fixed number of party slots; a
party's slot is found by hashing its id (two parties sharing a slot share a
budget: the check errs on refusing, never on over-serving).

Each slot of a row holds, for one party: the current second and the number
of requests admitted in it, the current day (JST) and the requests admitted
that day, and, per CRL-file service, when the last CRL download was admitted.

Bounded error, documented: a worker reads the other rows without a lock, so
when several workers admit a party's requests in the same instant each may
see the others' counts one request late. A party can therefore exceed its
per-second or per-day quota by at most ``workers - 1`` requests per window,
and two workers can admit a CRL download within one cycle at most once each
(``workers`` downloads per cycle at worst). Counts restart when the
responder restarts (the table lives in the run directory), which the ledger,
not this module, is for.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path
from typing import Final

from responder.registry import Party, Service

SLOTS: Final = 4096
"""Party slots per worker row."""

_SLOT = struct.Struct(
    "<qqqqqq"
)  # second, count in second, day, count in day, last sign CRL, last auth CRL
_SLOT_BYTES: Final = _SLOT.size
_JST: Final = 9 * 3600
_CRL_FIELD: Final = {Service.SIGN_CRL_FILE: 4, Service.AUTH_CRL_FILE: 5}


class LimitsTable:
    """The shared table: ``workers`` rows of `SLOTS` slots, one file in the run directory."""

    def __init__(self, path: Path, workers: int, worker_index: int) -> None:
        if not 0 <= worker_index < workers:
            raise ValueError("worker index out of range")
        size = workers * SLOTS * _SLOT_BYTES
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.workers = workers
        self.row = worker_index * SLOTS * _SLOT_BYTES
        self._slots: dict[str, int] = {}

    @staticmethod
    def create(path: Path, workers: int) -> None:
        """Make a fresh zeroed table (the master, before forking)."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, workers * SLOTS * _SLOT_BYTES)
        finally:
            os.close(fd)

    def _slot(self, party_id: str) -> int:
        slot = self._slots.get(party_id)
        if slot is None:
            h = int.from_bytes(hashlib.blake2b(party_id.encode(), digest_size=8).digest(), "little")
            slot = self._slots[party_id] = (h % SLOTS) * _SLOT_BYTES
        return slot

    def admit(self, party: Party, now: float) -> str | None:
        """Count one request of ``party`` if its quotas allow it; else the quota hit ("second" or "day")."""
        if party.requests_per_second is None and party.requests_per_day is None:
            return None
        slot = self._slot(party.id)
        sec, day = int(now), (int(now) + _JST) // 86400
        in_sec = in_day = 0
        for w in range(self.workers):
            s, c, d, cd, _, _ = _SLOT.unpack_from(self._map, w * SLOTS * _SLOT_BYTES + slot)
            if s == sec:
                in_sec += c
            if d == day:
                in_day += cd
        if party.requests_per_second is not None and in_sec >= party.requests_per_second:
            return "second"
        if party.requests_per_day is not None and in_day >= party.requests_per_day:
            return "day"
        own = self.row + slot
        s, c, d, cd, a, b = _SLOT.unpack_from(self._map, own)
        _SLOT.pack_into(
            self._map, own, sec, c + 1 if s == sec else 1, day, cd + 1 if d == day else 1, a, b
        )
        return None

    def admit_crl(self, party: Party, service: Service, now: float) -> bool:
        """Admit a CRL download unless one was admitted less than the agreed cycle ago (周期)."""
        if party.crl_cycle_seconds <= 0:
            return True
        field = _CRL_FIELD[service]
        slot = self._slot(party.id)
        last = max(
            _SLOT.unpack_from(self._map, w * SLOTS * _SLOT_BYTES + slot)[field]
            for w in range(self.workers)
        )
        if last and now - last < party.crl_cycle_seconds:
            return False
        own = self.row + slot
        values = list(_SLOT.unpack_from(self._map, own))
        values[field] = int(now)
        _SLOT.pack_into(self._map, own, *values)
        return True

    def close(self) -> None:
        self._map.close()
