"""The changes feed's counted marks on disk: an LMDB environment of their own (`LmdbMarks`).

A counted mark (`responder.v1.provision`) is written once per feed read that delivers
something, on the event loop, in the same step as the ledger count, as the answer is written
(`responder.v1.route.Delivery`). In the
watch lists' environment that write waited for a batch of ``POST /v1/watch`` (10,000 entries
hold its write lock for tens of milliseconds) and paid an fsync, stalling every connection
of the worker (the OCSP hot path shares the loop). Here, in ``marks/`` inside the lists'
directory (mode 0700, files 0600), only marks are written: one short transaction each,
whose lock no watch batch holds, and with no fsync (LMDB ``sync=False``).

A party's mark is kept under its tag (`WatchKeys.tag`), hidden (`WatchKeys.hide`: it may
name the status key of a change delivered), with the addition stamp of the party's list it
was written under (`stamp`: written by the lists in the same transaction as every addition,
not by a snapshot load): read under another stamp it is no mark (an entry was added since:
the mark never saw it watched). The stamp is read from the lists inside the marks' write
transaction; an addition that commits between that read and the mark's commit leaves a mark
of the old stamp, never read again. A load of the lists leaves the marks as they were, as
before (its new list generation, `WatchSet.generation`, which a stored mark carries, makes
them cover nothing).

Why no fsync loses no count. Every mark is written after the ledger counted what it covers
(`responder.v1.changes._provided`): the worst a lost mark does is let a later read deliver
those changes again and count them again, an over-count, the direction the design accepts
(`responder.v1.provision`). A process killed (SIGKILL, OOM) loses nothing: its committed
pages are in the page cache, which the kernel writes out. A machine that stops (power cut,
kernel panic) may have written some pages of a transaction and not others (LMDB without
fsync is then not even consistent), and may have lost up to a second of the ledger's counts
(`responder.ledger`: its flusher fsyncs once a second) while keeping marks that cover them.
So the marks do not outlive the boot that wrote them: the environment records the kernel's
boot id (``/proc/sys/kernel/random/boot_id``), and one opened under another boot (the
machine restarted, cleanly or not, or the directory moved to another machine) is removed and
made again, empty: after a reboot each party's next redelivery is counted again. Where no
boot id can be read the marks are written with fsync (durable, as the ledger's counts are
not: the window the fsync'd marks had before this module), and those found written without
it under a boot (its file in ``marks/``) are removed first: that boot cannot be shown to be
this one. Nothing to migrate: marks kept in
the lists' environment by the earlier layout of this feature never shipped.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import lmdb

from responder.v1.watchset import WatchKeys

STAMP_BYTES: Final = 8
"""The addition stamp of a party's list (`LmdbMarks.count_once`)."""
MAP_SIZE: Final = 1 << 28
"""256 MiB of address space (sparse): one mark of at most 160 B per party and node."""
BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")
_BOOT: Final = "boot"
_LOCK: Final = "open.lock"


def boot_id(where: Path = BOOT_ID) -> str | None:
    """This boot of the machine, as the kernel names it; None where it cannot be read."""
    try:
        return where.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


class LmdbMarks:
    """The counted marks of one node (module docstring); one per process, after the fork."""

    def __init__(self, path: Path, keys: WatchKeys, *, boot: str | None) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        lock = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the workers open at once: one removes, once
            written = _read(path / _BOOT)  # the boot the marks were written without fsync in
            if written != boot and (boot is not None or (path / _BOOT).exists()):
                for name in ("data.mdb", "lock.mdb"):  # another boot's: maybe half written
                    (path / name).unlink(missing_ok=True)
                if boot is None:  # written with fsync from now on: no boot to name
                    (path / _BOOT).unlink(missing_ok=True)
            self._env = lmdb.open(
                str(path), map_size=MAP_SIZE, max_dbs=0, readahead=False, meminit=True,
                max_readers=1024, mode=0o600, sync=boot is None, metasync=boot is None,
            )  # fmt: skip
            if boot is not None and _read(path / _BOOT) != boot:
                tmp = path / f".{_BOOT}.{os.getpid()}"
                tmp.write_text(boot + "\n", encoding="ascii")
                os.chmod(tmp, 0o600)
                tmp.replace(path / _BOOT)
        finally:
            os.close(lock)  # the flock with it
        self._env.reader_check()
        self._keys = keys

    def close(self) -> None:
        self._env.close()

    def _kept(self, txn: lmdb.Transaction, tag: bytes, stamp: bytes) -> bytes | None:
        raw = txn.get(tag)
        if raw is None:
            return None
        data = self._keys.reveal(tag, bytes(raw))
        return data[STAMP_BYTES:] if data[:STAMP_BYTES] == stamp else None

    def mark(self, tag: bytes, stamp: Callable[[], bytes]) -> bytes | None:
        """The mark of the party tagged ``tag`` when it was written under ``stamp()``."""
        with self._env.begin() as txn:
            return self._kept(txn, tag, stamp())

    def count_once(
        self, tag: bytes, stamp: Callable[[], bytes], decide: Callable[[bytes | None], bytes | None]
    ) -> None:
        """Pass ``decide`` the party's mark (None: none, or written under another stamp than
        ``stamp()``, read in this transaction) and keep the one it returns (None: none), in
        one write transaction: two workers' reads of one party are serialised here. Raises
        `lmdb.Error`."""
        with self._env.begin(write=True) as txn:
            now = stamp()
            mark = decide(self._kept(txn, tag, now))
            if mark is None:
                txn.delete(tag)
            else:
                txn.put(tag, self._keys.hide(tag, now + mark))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
