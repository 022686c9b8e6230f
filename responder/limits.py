"""Agreed quotas and the CRL cycle, enforced across all workers together (取決め, Ord §31, §33, §62).

Each worker owns one row of a shared memory-mapped table and writes only its
own row, so workers never race on a counter; a decision reads every worker's
row for the key and sums. A row is an open-addressing hash table of `SLOTS`
slots: each slot stores its key in full and compares it, so two parties never
share a slot or a budget (a slot, once given to a key, is never reused while
the table lives). Keys:

- ``q/<party>``: the party's requests: the current second and the number of
  requests admitted in it, the current day (JST) and the requests admitted
  that day (the agreed quotas, 要求の数).
- ``p/<party>``: the party's provisions (件数, what the ledger counts, 帳簿 Ord §71(4)):
  the current day (JST) and the provisions taken that day, then the day the row was on
  before and what it took that day (kept when it moved on, for the other workers' takes
  of that day still under way, `_taken_on`), against the agreed
  ``provisions_per_day`` (`LimitsTable.take_provisions`): one request may be many
  provisions (a batch of 10,000 entries, a changes read, an OCSP request of several
  CertIDs), so the requests a day do not bound them.
- ``c/<party>/<issuer index>/<full|delta>``: when the party's last download of
  that CRL file was admitted. The cycle (提供の周期, Ord §31(2), §33(2), §62(2))
  counts per party, per issuer generation and per file kind: one download of
  the full CRL of one generation does not use up the delta, nor another
  generation's files.

``<party>`` of ``q/`` and ``p/`` is `Party.quota_id`: the id of the agreement that counts
for the party. A principal served under its contractor's agreement, deemed its own (Ord
§29(4), §60(2)), counts under the contractor's id, sharing that agreement's quotas with the
contractor and its other principals; ``c/`` keeps the party's own id (each recipient's copy
of a file, `responder.registry.delegation`).

A refusal is a `Wait`: which limit (`Limit`) and how many seconds until it
lets the party through again (the ``Retry-After`` of a refused CRL download).

Bounded error, documented: a worker reads the other rows without a lock, so
when several workers admit a party's requests in the same instant each may
see the others' counts one request late. A party can therefore exceed its
per-second or per-day quota by at most ``workers - 1`` requests per window,
and two workers can admit a CRL download within one cycle at most once each
(``workers`` downloads per cycle at worst). Provisions are taken the other way round,
reserve then check (`LimitsTable.take_provisions`): a worker adds the call's provisions
to its own row first and only then reads every row, undoing its reservation if the sum
passes the bound; so two workers taking at the same instant may both refuse (each sees
the other's reservation). Without a memory fence, x86 may let a worker's read of the
other rows pass its own reservation's store, so two workers could in theory both pass
once, the bound exceeded by one call; in practice the reads come microseconds of
interpreter work after the store, long after it left the CPU's store buffer. A provision taken and then not given (a signature not made, a CRL
download the cycle refuses) is given back (`LimitsTable.give_back_provisions`); a
worker killed in between keeps it taken, erring on refusing. Provisions are taken for the
Japan day of the instant the ledger dates them at (the instant the answer is provided,
Ord §71(3)): a /v1 batch answered after 00:00 JST is taken then; an OCSP signature made
across it moves its provisions to the new day (`LimitsTable.carry_provisions`). A row that
moves on to the new day keeps the day before's count beside it, so a take for the day
before that comes after another worker's first take of the new day (an instant read before
00:00 JST: the microseconds between a /v1 answer's clock read and its take, the
milliseconds of an OCSP decision's lookup) still checks that day with it. A clock set back
across 00:00 JST never puts a row back a day: a take then comes off the row's later day,
and `LimitsTable.take_provisions` returns an instant of that day for the ledger to date it
at. A row that has no free
slot left for a new key refuses it (`Limit.TABLE_FULL`: the check errs on refusing,
never on over-serving; with `SLOTS` keys per row that needs thousands of
parties).

Several nodes (``[cluster] nodes``): the table is each node's own, and each node admits
its share of every quota, ceil(quota / nodes) (`node_share`), so the service admits at
most quota + nodes - 1 per window (plus the per-node bound above on each node). The
bound is for a load balancer that spreads a party's requests over the nodes: a party
whose requests all reach one node is refused past that node's share; the provisions per
day are shared out the same way. A CRL cycle is kept
per node: at most one download of a file per node per cycle. The table file is named after its layout (`FILE_NAME`); the counts
in it outlive a restart of the responder, which the ledger, not this module,
is for. A restart with fewer workers keeps the rows it no longer writes (the file is
grown, never shrunk) and reads them with the others.
"""

from __future__ import annotations

import enum
import hashlib
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Final, Literal

from crlbuilder.rules import JST_OFFSET
from responder.registry.party import Party
from responder.structs import Frozen

FILE_NAME: Final = "limits-v2.tbl"
"""The table's file in the run (ledger) directory; the name changes with the layout."""
SLOTS: Final = 65536
"""Key slots per worker row (8 MiB of sparse file per row; pages are used as keys arrive)."""

_KEY_BYTES: Final = 96
_SLOT = struct.Struct(f"<{_KEY_BYTES}sqqqq")  # key (NUL-padded), four counters
_SLOT_BYTES: Final = _SLOT.size  # 128
_VALUES_AT: Final = _KEY_BYTES
_ROW_BYTES: Final = SLOTS * _SLOT_BYTES
_DAY: Final = 86400

CrlKind = Literal["full", "delta"]


class Limit(enum.Enum):
    """Which limit refused a request."""

    SECOND = "second"
    """The agreed requests per second (取決め)."""
    DAY = "day"
    """The agreed requests per day (a Japan calendar day)."""
    CYCLE = "cycle"
    """The agreed provision cycle of a CRL file (提供の周期)."""
    PROVISIONS = "provisions"
    """The agreed provisions per day (件数, a Japan calendar day)."""
    TABLE_FULL = "table-full"
    """No slot left in this worker's row for a new key (see the module docstring)."""


class Wait(Frozen, frozen=True):
    """A refusal: the limit that refused and the seconds until it lets the party through."""

    limit: Limit
    retry_after: int
    remaining: int = 0
    """`Limit.PROVISIONS`: the provisions still left today on this node (fewer than asked)."""


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _jst_day(now: float) -> int:
    """The Japan calendar day of ``now``, as days since the epoch: the daily quota's window."""
    return (int(now) + JST_OFFSET) // _DAY


def _taken_on(rows: list[tuple[int, int, int, int]], day: int) -> int:
    """The provisions the rows of a ``p/`` key took on ``day``: each row's count of its
    current day, or of the day before it moved on from (``_write_moved``), never both.

    A row whose day and day before are both ``day`` was read while its worker moved it on:
    `_read` loads the day before ``_write_moved`` stores the new one, and the count after it
    stores the new day's count (the row's day before is always an earlier day than its own).
    Its count of ``day`` is then the day before's, or the new day's if more (too much for
    an instant, never too little): the current count alone lost the day before's."""
    taken = 0
    for d, n, before, before_n in rows:
        if d == day:
            taken += max(n, before_n) if before == day else n
        elif before == day:
            taken += before_n
    return taken


def _quota_key(party_id: str) -> bytes:
    """The table key of a party's quota counters (``party_id``: `Party.quota_id`)."""
    return b"q/" + party_id.encode()


def _provisions_key(party_id: str) -> bytes:
    """The table key of a party's provisions counter (``party_id``: `Party.quota_id`)."""
    return b"p/" + party_id.encode()


def provisions_wait(now: float, remaining: int) -> Wait:
    """The refusal of provisions past the agreed ``provisions_per_day``: until the Japan day
    of ``now`` turns, ``remaining`` still left (fewer than asked)."""
    return Wait(Limit.PROVISIONS, _ceil(day_ends(now) - now), remaining)


def provisions_reset(now: float, wait: Wait) -> int:
    """When the day a `Limit.PROVISIONS` refusal at ``now`` was for ends (00:00 JST): the day
    of ``now``, or the later day its worker's row is on (`LimitsTable.take_provisions`), which
    ``wait.retry_after`` reaches into."""
    return day_ends(now + wait.retry_after - 1)


def day_ends(now: float) -> int:
    """The epoch second the Japan calendar day of ``now`` ends (the next 00:00 JST): when a
    daily quota or the daily provisions bound turns."""
    return (_jst_day(now) + 1) * _DAY - JST_OFFSET


def node_share(quota: int | None, nodes: int) -> int | None:
    """One node's share of an agreed quota among ``nodes``: ceil(quota / nodes), so that the
    nodes together admit at least the quota and at most quota + nodes - 1."""
    if quota is None:
        return None
    return -(-quota // nodes)


def _crl_key(party: Party, issuer_index: int, kind: CrlKind) -> bytes:
    """The key of a party's cycle (周期) for one CRL file (`LimitsTable.admit_crl`)."""
    return f"c/{party.id}/{issuer_index}/{kind}".encode()


class LimitsTable:
    """The shared table: ``workers`` rows of `SLOTS` slots, one file in the run directory."""

    def __init__(self, path: Path, workers: int, worker_index: int, *, nodes: int = 1) -> None:
        if not 0 <= worker_index < workers:
            raise ValueError("worker index out of range")
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        self.nodes = nodes
        """Nodes sharing each quota: this node admits `node_share` of it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # grown, never shrunk: after a restart with fewer workers, the rows no worker
            # writes any more still hold what they admitted today (and their CRL cycles);
            # cutting them off would let a party past its quotas by what they held
            held = -(-os.fstat(fd).st_size // _ROW_BYTES)
            rows = max(workers, held)
            size = rows * _ROW_BYTES
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._q = memoryview(self._map).cast("q")
        """The table as native 8-byte integers: each counter is read and written with one
        aligned 8-byte access (`_read`, `_write`), which another worker never sees half-done.
        ``struct.pack_into`` zeroes its whole span before it writes the fields, so a worker
        reading another's slot meanwhile saw its counters at 0 and admitted past the quota."""
        self.workers = workers
        self.rows = rows
        """Rows read for a decision: ``workers``, or more when an earlier run had more
        workers (their rows are read, never written)."""
        self.index = worker_index
        self._found: dict[tuple[int, bytes], int] = {}
        """(row, key) -> slot offset, for keys already seen: slots never move."""

    @staticmethod
    def create(path: Path, workers: int) -> None:
        """Make a fresh zeroed table (the master, before forking)."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, workers * _ROW_BYTES)
        finally:
            os.close(fd)

    # --- the counters: one 8-byte access each ---------------------------------------

    def _read(self, off: int) -> tuple[int, int, int, int]:
        """The four counters of the slot at ``off``."""
        q, i = self._q, (off + _VALUES_AT) >> 3
        return q[i], q[i + 1], q[i + 2], q[i + 3]

    def _write(self, off: int, a: int, b: int, c: int, d: int) -> None:
        """Set the four counters of the slot at ``off`` (own row only), in order, each in one
        store: a reader between two stores sees a new period (second, day) with the old
        count, which counts too much for an instant, never too little."""
        q, i = self._q, (off + _VALUES_AT) >> 3
        q[i] = a
        q[i + 1] = b
        q[i + 2] = c
        q[i + 3] = d

    def _write_moved(self, off: int, day: int, n: int, before: int, before_n: int) -> None:
        """A provisions slot moving on to ``day`` (own row only), its old day kept as the day
        before's (``before``, ``before_n``), stored in the order that lets a reader between
        two stores count too much for an instant, never too little: the day before's count,
        its day (the old day now read twice, once as each: `_taken_on` takes one), the new
        day, its count. A reader's four loads may straddle these stores too (its day loaded
        before them, its count after): `_taken_on` takes that row's day before's count."""
        q, i = self._q, (off + _VALUES_AT) >> 3
        q[i + 3] = before_n
        q[i + 2] = before
        q[i] = day
        q[i + 1] = n

    # --- the open-addressing rows ----------------------------------------------------

    def _slot(self, row: int, key: bytes, *, allocate: bool) -> int:
        """The offset of ``key``'s slot in ``row``; -1 when absent (or, allocating, no room)."""
        hit = self._found.get((row, key))
        if hit is not None:
            return hit
        padded = key.ljust(_KEY_BYTES, b"\0")
        base = row * _ROW_BYTES
        start = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % SLOTS
        mm = self._map
        for i in range(SLOTS):
            off = base + ((start + i) % SLOTS) * _SLOT_BYTES
            stored = mm[off : off + _KEY_BYTES]
            if stored == padded:
                self._found[(row, key)] = off
                return off
            if stored[0] == 0:  # the end of this key's probe sequence
                if not allocate:
                    return -1
                # own row only: counters first, then the key that publishes the slot
                self._write(off, 0, 0, 0, 0)
                mm[off : off + _KEY_BYTES] = padded
                self._found[(row, key)] = off
                return off
        return -1

    def _values(self, key: bytes) -> list[tuple[int, int, int, int]]:
        """The key's counters in every row that has it."""
        out = []
        for row in range(self.rows):
            off = self._slot(row, key, allocate=False)
            if off >= 0:
                out.append(self._read(off))
        return out

    # --- the decisions ---------------------------------------------------------------

    def admit(self, party: Party, now: float, *, record: bool = True) -> Wait | None:
        """Count one request of ``party`` if its quotas allow it; else which quota and the wait.

        ``record=False`` (a HEAD, which provides nothing): the same answer, nothing counted.
        """
        if party.requests_per_second is None and party.requests_per_day is None:
            return None
        key = _quota_key(party.quota_id)
        sec, day = int(now), _jst_day(now)
        in_sec = in_day = 0
        for s, c, d, cd in self._values(key):
            if s == sec:
                in_sec += c
            if d == day:
                in_day += cd
        per_sec = node_share(party.requests_per_second, self.nodes)
        per_day = node_share(party.requests_per_day, self.nodes)
        if per_sec is not None and in_sec >= per_sec:
            return Wait(Limit.SECOND, _ceil(sec + 1 - now))
        if per_day is not None and in_day >= per_day:
            return Wait(Limit.DAY, _ceil(day_ends(now) - now))
        if not record:
            return None
        own = self._slot(self.index, key, allocate=True)
        if own < 0:
            return Wait(Limit.TABLE_FULL, 60)
        s, c, d, cd = self._read(own)
        self._write(
            own,
            sec,
            c + 1 if s == sec else 1,
            day,
            cd + 1 if d == day else 1,
        )
        return None

    def admitted_today(self, party_id: str, now: float) -> int:
        """Requests counted under ``party_id`` (a `Party.quota_id`) every worker of this node
        admitted on the Japan calendar day of ``now`` (what its ``requests_per_day`` share is
        counted against)."""
        day = _jst_day(now)
        return sum(cd for _s, _c, d, cd in self._values(_quota_key(party_id)) if d == day)

    def provisions_left(self, party: Party, now: float) -> int | None:
        """What ``party`` may still be provided today on this node under its agreed
        ``provisions_per_day`` (its `node_share`, less what every worker took); None: no bound."""
        share = node_share(party.provisions_per_day, self.nodes)
        if share is None:
            return None
        day = _jst_day(now)
        taken = _taken_on(self._values(_provisions_key(party.quota_id)), day)
        return max(0, share - taken)

    def take_provisions(
        self, party: Party, n: int, now: float, *, record: bool = True
    ) -> Wait | float:
        """Take ``n`` provisions of ``party`` for the Japan day of ``now``, all or none: a
        `Wait` (`Limit.PROVISIONS`, until the day turns, with what remains) when they would
        pass its agreed ``provisions_per_day`` share, and then nothing is taken. Reserve,
        then check (the module docstring). Else the instant the ledger is to date them at
        (帳簿, Act §40), of the Japan day they were taken from: ``now`` itself, or 00:00 JST
        of a later day (below). No bound, or ``n`` of 0: ``now``, nothing written.

        ``record=False`` (a HEAD, which provides nothing): the same answer, nothing taken.

        ``now`` is the instant the answer is provided at (`responder.v1.routes.V1Api.
        counted_at`, `carry_provisions` for an OCSP signature waited for across 00:00 JST).
        A worker takes on its event loop only, its instants in the order read, so its row is
        never on a later day than ``now`` unless the clock was set back across 00:00 JST:
        then the row's later day is taken from, rather than put the row back and drop its
        count, and the instant returned is that day's 00:00 JST, so that the ledger counts
        them on the day the bound took them from (not on ``now``'s day before, which the
        bound never saw them in)."""
        share = node_share(party.provisions_per_day, self.nodes)
        if share is None or n <= 0:
            return now
        if not record:
            left = self.provisions_left(party, now)
            return provisions_wait(now, left) if left is not None and left < n else now
        key = _provisions_key(party.quota_id)
        own = self._slot(self.index, key, allocate=True)
        if own < 0:
            return Wait(Limit.TABLE_FULL, 60)
        day, at = _jst_day(now), now
        d, mine, before, before_n = self._read(own)
        if d > day:  # a call of a day this row has left (the clock set back across 00:00
            # JST): the later day, dated at its 00:00 JST; putting the row back a day would
            # drop the later day's count
            day, at = d, float(d * _DAY - JST_OFFSET)
        elif d != day:  # the row moves on: its day stays readable as the day before's
            before, before_n, mine = d, mine, 0
            self._write_moved(own, day, mine, before, before_n)
        self._write(own, day, mine + n, before, before_n)  # reserve
        taken = _taken_on(self._values(key), day)
        if taken <= share:
            return at
        self._write(own, day, mine, before, before_n)  # undo
        return provisions_wait(at, max(0, share - (taken - n)))

    def give_back_provisions(self, party: Party, n: int, now: float) -> None:
        """Undo `take_provisions` of ``n`` that were not provided after all (the signature
        failed, the fair share refused), never below 0. ``now`` is the instant of the take,
        not of the give-back: if this worker's count has moved on to a later Japan day since,
        it comes off the day before's count the row keeps (never off the new day's), or off
        nothing when that day is older."""
        if party.provisions_per_day is None or n <= 0:
            return
        own = self._slot(self.index, _provisions_key(party.quota_id), allocate=False)
        if own < 0:
            return
        d, mine, before, before_n = self._read(own)
        day = _jst_day(now)
        if d == day:
            self._write(own, d, max(0, mine - n), before, before_n)
        elif before == day:
            self._write(own, d, mine, before, max(0, before_n - n))

    def carry_provisions(self, party: Party, n: int, taken_at: float, now: float) -> Wait | float:
        """Provisions taken at ``taken_at`` (the instant `take_provisions` returned) for an
        answer provided at ``now`` (an OCSP signature waited for across 00:00 JST): when
        ``now`` is of a later Japan day, they are given back to the day they were taken in
        and taken for ``now``'s day, all or none, so that the bound counts them on the day
        the ledger dates them (the instant they are provided, 提供を行った年月日 Ord §71(3)).
        A `Wait` when ``now``'s day has fewer than ``n`` left: then none are taken (and those
        of the day before are given back, since nothing is provided). Else the instant the
        ledger dates them at (`take_provisions`); the same Japan day: nothing done, ``now``."""
        if _jst_day(now) <= _jst_day(taken_at):
            return now
        self.give_back_provisions(party, n, taken_at)
        return self.take_provisions(party, n, now)

    def admit_crl(
        self, party: Party, issuer_index: int, kind: CrlKind, now: float, *, record: bool = True
    ) -> Wait | None:
        """Admit a download of one CRL file (an issuer generation's full or delta CRL) unless
        the party downloaded that same file less than the agreed cycle ago (周期).

        ``record=False`` (a HEAD): the same answer, the cycle not used."""
        if party.crl_cycle_seconds <= 0:
            return None
        key = _crl_key(party, issuer_index, kind)
        last = max((v[0] for v in self._values(key)), default=0)
        if last and now - last < party.crl_cycle_seconds:
            return Wait(Limit.CYCLE, _ceil(last + party.crl_cycle_seconds - now))
        if not record:
            return None
        own = self._slot(self.index, key, allocate=True)
        if own < 0:
            return Wait(Limit.TABLE_FULL, 60)
        self._write(own, int(now), 0, 0, 0)
        return None

    def crl_mark(self, party: Party, issuer_index: int, kind: CrlKind) -> int:
        """This worker's mark of ``party``'s last download of that CRL file (epoch seconds;
        0: none), what `give_back_crl` puts back."""
        own = self._slot(self.index, _crl_key(party, issuer_index, kind), allocate=False)
        return self._read(own)[0] if own >= 0 else 0

    def give_back_crl(
        self, party: Party, issuer_index: int, kind: CrlKind, now: float, before: int
    ) -> None:
        """Undo `admit_crl` at ``now`` of a download never provided (its answer dropped before
        it was written): this worker's mark of that file back to ``before`` (`crl_mark` read
        before the admission), unless a later download of this worker has moved it since."""
        own = self._slot(self.index, _crl_key(party, issuer_index, kind), allocate=False)
        if own >= 0 and self._read(own)[0] == int(now):
            self._write(own, before, 0, 0, 0)

    def close(self) -> None:
        self._q.release()
        self._map.close()
