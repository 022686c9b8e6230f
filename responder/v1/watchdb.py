"""The watch lists on disk: an LMDB environment of the responder's own (`LmdbWatchSet`).

The durable `responder.v1.watchset.WatchSet`: one LMDB environment in the directory
``[watch] dir`` (mode 0700), apart from the builder's status store (which the responder
never writes). Every worker opens it after the fork and writes to it: LMDB serialises
the write transactions of all processes with its own lock, and readers never wait. A
batch (`update`) is one write transaction: all of it or none, across a kill.

Databases: ``watch`` holds one empty value per watched certificate, under its keyed
hash (`WatchKeys.entries`: party tag ‖ digest, 24 bytes: no serial, no party id in
clear); ``meta`` holds ``check`` (`WatchKeys.check`: the secret the lists were
written with; another secret is refused at open, not silently read as empty lists)
and ``count`` ‖ party tag → u64, the size of each list (its bound, 10,000,000 by
default, is checked in the same transaction).

The lists survive restarts of the responder and rebuilds of the status store: they
name certificates, not store positions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import lmdb

from responder.v1.watchset import WatchFull, WatchKeys, WatchUnavailable, WatchUpdate

_DB_WATCH: Final = b"watch"
_DB_META: Final = b"meta"
_META_CHECK: Final = b"check"
_META_COUNT: Final = b"count"


class WatchDbError(Exception):
    """The watch environment cannot be opened (another secret, not a watch directory)."""


class LmdbWatchSet:
    """The watch lists in LMDB (module docstring); open one per process, after the fork."""

    def __init__(self, path: Path, keys: WatchKeys, *, map_size: int) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        env: lmdb.Environment | None = None
        try:
            env = lmdb.open(
                str(path), map_size=map_size, max_dbs=2, readahead=False, meminit=True,
                max_readers=1024, mode=0o600,  # data.mdb, lock.mdb: 0600 from creation
            )  # fmt: skip
            for name in ("data.mdb", "lock.mdb"):  # made wider by an older version
                os.chmod(path / name, 0o600)
            with env.begin(write=True) as txn:
                self._watch = env.open_db(_DB_WATCH, txn=txn)
                self._meta = env.open_db(_DB_META, txn=txn)
                check = keys.check()
                txn.put(_META_CHECK, check, db=self._meta, overwrite=False)
                raw = txn.get(_META_CHECK, db=self._meta)
                stored = bytes(raw) if raw is not None else b""
        except (lmdb.Error, OSError) as e:
            if env is not None:
                env.close()
            raise WatchDbError(f"{path}: cannot open the watch lists: {e}") from None
        self._env = env
        if stored != check:
            self._env.close()
            raise WatchDbError(
                f"{path}: the watch lists were written with another secret "
                "([watch] secret_file): restore that secret, or move the lists away"
            )
        self._env.reader_check()  # free the reader slots of workers that died (SIGKILL)
        self._keys = keys
        self._tags: dict[str, bytes] = {}

    def close(self) -> None:
        self._env.close()

    def _tag(self, party: str) -> bytes:
        tag = self._tags.get(party)
        if tag is None:
            tag = self._tags[party] = self._keys.tag(party)
        return tag

    def watched(self, party: str, keys: Sequence[bytes]) -> list[bool]:
        entries = self._keys.entries(self._tag(party), keys)
        try:
            with self._env.begin(db=self._watch) as txn:
                get = txn.get
                return [get(e) is not None for e in entries]
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None

    def count(self, party: str) -> int:
        """How many certificates ``party`` watches."""
        with self._env.begin() as txn:
            raw = txn.get(_META_COUNT + self._tag(party), db=self._meta)
        return int.from_bytes(raw, "big") if raw is not None else 0

    def update(
        self, party: str, add: Sequence[bytes], remove: Sequence[bytes], *, limit: int
    ) -> WatchUpdate:
        tag = self._tag(party)
        gone, new = self._keys.entries(tag, remove), self._keys.entries(tag, add)
        new.sort()  # in key order: neighbouring pages, fewer page splits
        count_key = _META_COUNT + tag
        try:
            with self._env.begin(write=True) as txn:
                raw = txn.get(count_key, db=self._meta)
                before = int.from_bytes(raw, "big") if raw is not None else 0
                cur = txn.cursor(db=self._watch)
                removed = sum(1 for e in gone if cur.set_key(e) and cur.delete())
                put = cur.put
                added = sum(1 for e in new if put(e, b"", overwrite=False))
                total = before - removed + added
                if total > limit:  # raising aborts the transaction: nothing changed
                    raise WatchFull(before, limit)
                txn.put(count_key, total.to_bytes(8, "big"), db=self._meta)
        except lmdb.Error as e:
            raise WatchUnavailable(str(e)) from None
        return WatchUpdate(
            added=added,
            already=len(add) - added,
            removed=removed,
            absent=len(remove) - removed,
            total=total,
        )
