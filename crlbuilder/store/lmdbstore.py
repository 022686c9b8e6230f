"""Opening the status store (LMDB) and reading it: the part both binaries share.

`Store.open` opens the environment and its named databases, creating them when
opened for writing, and refuses a store of another format version with a clear
message. crlbuilder is the only writer (one write transaction at a time, LMDB
guarantees readers never see half of one); responder workers open the store
read-only after forking. The byte layout itself lives in `store.format`.

`copy_store` rewrites a store record by record into a new environment: the way
to clean a store written before LMDB zeroed its pages (docs/operations.md).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import lmdb

from crlbuilder import rules
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.reader import LmdbReader

DEFAULT_MAP_SIZE: Final = 64 << 30
"""64 GiB of address space: a sparse file, it costs only what is written."""

_LAPSE_FAMILIES: Final = frozenset({Family.AUTH_CARD.code, Family.AUTH_MOBILE.code})
"""The families a 30-day lapse revokes: auth-card (Act §31(2)) and, by cascade, auth-mobile."""


@dataclass(frozen=True, slots=True)
class Store:
    """An open store: the LMDB environment and its named database handles."""

    env: Any
    """The `lmdb.Environment` (untyped library)."""
    dbs: dict[bytes, Any]
    path: Path
    readonly: bool

    @property
    def status(self) -> Any:
        return self.dbs[sf.DB_STATUS]

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = 1024,
    ) -> Store:
        """Open (or, for writing, create) the store at ``path`` and check its format version."""
        p = Path(path)
        if readonly and not (p / "data.mdb").exists():
            raise sf.StoreFormatError(f"{p}: no status store here (run `crlbuilder build` first)")
        if not readonly:
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, 0o700)
        try:
            env = lmdb.open(
                str(p),
                map_size=map_size,
                max_dbs=sf.MAX_DBS,
                readonly=readonly,
                lock=True,
                readahead=False,
                # LMDB zeroes the unused part of every page it writes: without it
                # (meminit=False) a page carries whatever the builder's heap held
                # (raw record lines with the four facts, key files), in data.mdb
                meminit=True,
                max_readers=max_readers,
            )
        except lmdb.Error as e:
            raise sf.StoreFormatError(f"{p}: cannot open the store: {e}") from None
        dbs: dict[bytes, Any] = {}
        if readonly:
            for name in sf.ALL_DBS:
                try:
                    dbs[name] = env.open_db(name, create=False, dupsort=name in sf.DUPSORT_DBS)
                except lmdb.NotFoundError:
                    if name in sf.BUILDER_DBS:
                        continue  # added later; only the builder (which creates them) reads them
                    env.close()
                    raise sf.StoreFormatError(
                        f"{p}: the store lacks database {name.decode()}: "
                        "not a jpki-va store, or from an older version"
                    ) from None
        else:
            with env.begin(write=True) as txn:
                for name in sf.ALL_DBS:
                    dbs[name] = env.open_db(name, txn=txn, dupsort=name in sf.DUPSORT_DBS)
                meta = dbs[sf.DB_META]
                if txn.get(sf.META_FORMAT, db=meta) is None:
                    txn.put(sf.META_FORMAT, sf.pack_u32(sf.FORMAT_VERSION), db=meta)
        store = cls(env=env, dbs=dbs, path=p, readonly=readonly)
        store.check_format()
        return store

    def check_format(self) -> None:
        with self.env.begin() as txn:
            raw = txn.get(sf.META_FORMAT, db=self.dbs[sf.DB_META])
        version = sf.unpack_u32(raw) if raw is not None else None
        if version != sf.FORMAT_VERSION:
            self.env.close()
            raise sf.StoreFormatError(
                f"{self.path}: store format version {version}, this jpki-va reads "
                f"version {sf.FORMAT_VERSION}: rebuild the store with a matching crlbuilder"
            )

    def close(self) -> None:
        self.env.close()

    def read(self) -> _ReadView:
        """One consistent read-only view: ``with store.read() as reader:`` (a `LmdbReader`)."""
        return _ReadView(self.env.begin(), self.dbs)

    # --- reading ------------------------------------------------------------

    def issuers(self, txn: Any = None) -> list[sf.IssuerMeta]:
        """The issuer generations the store knows (empty before the first build)."""
        raw = self._get(sf.DB_META, sf.META_ISSUERS, txn)
        return sf.issuer_meta_list_decoder.decode(raw) if raw else []

    def mode(self, txn: Any = None) -> bytes:
        """``b""`` for a store built from records, `store.format.MODE_CRL_IMPORT` for a group appliance's."""
        return self._get(sf.DB_META, sf.META_MODE, txn) or b""

    def meta_u32(self, key: bytes, txn: Any = None) -> int:
        raw = self._get(sf.DB_META, key, txn)
        return sf.unpack_u32(raw) if raw else 0

    def meta_bytes(self, key: bytes, txn: Any = None) -> bytes | None:
        return self._get(sf.DB_META, key, txn)

    def meta_i64(self, key: bytes, txn: Any = None) -> int:
        raw = self._get(sf.DB_META, key, txn)
        return sf.unpack_i64(raw) if raw else 0

    def crl_state(self, issuer_index: int, txn: Any = None) -> sf.CrlState:
        raw = self._get(sf.DB_META, sf.META_CRL_STATE_PREFIX + sf.pack_u32(issuer_index), txn)
        return sf.crl_state_decoder.decode(raw) if raw else sf.CrlState()

    def ocsp_state(self, issuer_index: int, txn: Any = None) -> sf.OcspState:
        raw = self._get(sf.DB_META, sf.META_OCSP_STATE_PREFIX + sf.pack_u32(issuer_index), txn)
        return sf.ocsp_state_decoder.decode(raw) if raw else sf.OcspState()

    def status_of(self, issuer_index: int, serial: int, txn: Any = None) -> sf.StatusRecord | None:
        raw = self._get(sf.DB_STATUS, sf.status_key(issuer_index, serial), txn)
        return sf.unpack_status(raw) if raw else None

    def revoked_entries(self, issuer_index: int, txn: Any) -> Iterator[tuple[int, sf.RevokedEntry]]:
        """(serial, entry) of every revoked certificate of one issuer, in serial order."""
        prefix = sf.issuer_prefix(issuer_index)
        cur = txn.cursor(db=self.dbs[sf.DB_REVOKED])
        if not cur.set_range(prefix):
            return
        for key, value in cur:
            if key[:2] != prefix:
                break
            yield int.from_bytes(key[2:], "big"), sf.unpack_revoked(value)

    def holder_certs(self, holder: bytes, family_code: int, txn: Any) -> list[bytes]:
        """Status keys of every certificate of one holder in one family (the links database)."""
        cur = txn.cursor(db=self.dbs[sf.DB_LINKS])
        key = holder + bytes((family_code,))
        if not cur.set_key(key):
            return []
        return [bytes(v) for v in cur.iternext_dup()]

    def pending_move_out(self, holder: bytes, txn: Any = None) -> sf.PendingMoveOut | None:
        """The holder's move-out notice (転出届) whose 30-day lapse is not written yet, or None.

        None too once the lapse was written (Act §31(2)): the revocation is then in
        the status records themselves.
        """
        raw = self._get(sf.DB_PENDING, holder, txn)
        if raw is None:
            return None
        pending = sf.pending_decoder.decode(raw)
        return None if pending.lapsed_at else pending

    def lapse_due(self, st: sf.StatusRecord, txn: Any = None) -> int:
        """When the good certificate ``st`` loses effect by its holder's pending 30-day lapse.

        Epoch seconds of the due instant (`rules.move_out_lapse`), 0 when no pending
        lapse will revoke it. Mirrors what the applier writes when the lapse falls
        due (異動等失効情報, Act §31(2), effective when written, §34(1)(2)): an
        auth-card certificate not exempt by the 国外転出届 window (`rules.lapse_revokes`),
        and the holder's auth-mobile certificates when one such auth-card certificate
        goes with it (cascade, Act §35-13, §35-14(1)(4)). Other families have no 30-day
        rule. Costs one read for an auth certificate (a cursor more for a mobile one
        whose holder has a pending notice), none otherwise.
        """
        if st.revoked or st.family not in _LAPSE_FAMILIES:
            return 0
        pending = self.pending_move_out(st.holder, txn)
        if pending is None:
            return 0
        notice = rules.MoveOutNotice(
            notified_at=datetime.fromtimestamp(pending.notified_at, UTC),
            planned_date=date.fromisoformat(pending.planned_date),
            abroad=pending.abroad,
        )
        due = rules.move_out_lapse(notice.planned_date)
        if st.family == Family.AUTH_CARD.code:
            cards = [st]
        else:
            with self._txn(txn) as t:
                cards = [
                    sf.unpack_status(t.get(k, db=self.status))
                    for k in self.holder_certs(st.holder, Family.AUTH_CARD.code, t)
                ]
        due_at = int(due.timestamp())
        for card in cards:
            if (
                not card.revoked
                and card.not_after > due_at
                and rules.lapse_revokes(
                    notice, issued_at=datetime.fromtimestamp(card.not_before, UTC), as_of=due
                )
            ):
                return due_at
        return 0

    def crl_files(self, txn: Any = None) -> list[sf.CrlFileEntry]:
        with self._txn(txn) as t:
            return [sf.crl_file_decoder.decode(v) for _, v in t.cursor(db=self.dbs[sf.DB_CRLS])]

    def announcements(self, txn: Any = None) -> list[sf.Announcement]:
        """Every published issuing-key compromise (公表, Act §15(3) ...), oldest first."""
        with self._txn(txn) as t:
            out = [
                sf.announcement_decoder.decode(v)
                for _, v in t.cursor(db=self.dbs[sf.DB_ANNOUNCEMENTS])
            ]
        return sorted(out, key=lambda a: (a.at, a.issuer))

    def counts(self) -> dict[str, int]:
        """Entries per named database (for summaries and metrics)."""
        with self.env.begin() as txn:
            return {n.decode(): txn.stat(db)["entries"] for n, db in self.dbs.items()}

    def _get(self, db: bytes, key: bytes, txn: Any) -> bytes | None:
        if txn is not None:
            v = txn.get(key, db=self.dbs[db])
        else:
            with self.env.begin() as t:
                v = t.get(key, db=self.dbs[db])
        return bytes(v) if v is not None else None

    def _txn(self, txn: Any) -> Any:
        return _Borrowed(txn) if txn is not None else self.env.begin()


class _ReadView:
    """The context of `Store.read`: a read transaction, ended on leaving."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: Any, dbs: dict[bytes, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def __enter__(self) -> LmdbReader:
        return LmdbReader(self._txn, self._dbs)

    def __exit__(self, *exc: object) -> None:
        self._txn.abort()


class _Borrowed:
    """A context manager that hands out a caller's transaction without ending it."""

    def __init__(self, txn: Any) -> None:
        self.txn = txn

    def __enter__(self) -> Any:
        return self.txn

    def __exit__(self, *exc: object) -> None:
        return None


COPY_BATCH: Final = 50_000
"""Entries per write transaction of `copy_store`."""


def copy_store(source: str | Path, target: str | Path, *, map_size: int = DEFAULT_MAP_SIZE) -> int:
    """Copy every entry of every database of ``source`` into a new store at ``target``.

    The copy is logical (each key and value is written again into pages LMDB
    zeroes), so nothing but live data reaches the new ``data.mdb``: neither the
    free pages nor the unused bytes of live pages, which a byte copy, even
    LMDB's compacting copy (``mdb_env_copy2`` with ``MDB_CP_COMPACT``), keeps
    as they are. ``target`` must not hold a store. Returns the entries copied.
    Run it with the builder stopped (it reads one snapshot of ``source``).
    """
    t = Path(target)
    if (t / "data.mdb").exists():
        raise sf.StoreFormatError(f"{t}: a store is already there; give a new directory")
    src = Store.open(source, readonly=True, map_size=map_size)
    try:
        dst = Store.open(t, readonly=False, map_size=map_size)
    except BaseException:
        src.close()
        raise
    copied = 0
    try:
        with src.env.begin(buffers=False) as rtxn:
            for name in src.dbs:
                items = rtxn.cursor(db=src.dbs[name]).iternext(keys=True, values=True)
                while True:
                    chunk = [(bytes(k), bytes(v)) for k, v in itertools.islice(items, COPY_BATCH)]
                    if not chunk:
                        break
                    with dst.env.begin(write=True) as wtxn:
                        wtxn.cursor(db=dst.dbs[name]).putmulti(chunk, dupdata=True)
                    copied += len(chunk)
        src_counts = src.counts()
        dst_counts = {n: c for n, c in dst.counts().items() if n in src_counts}
        if src_counts != dst_counts:
            raise sf.StoreFormatError(
                f"{t}: the copy differs from {source} ({dst_counts} against {src_counts})"
            )
    finally:
        dst.close()
        src.close()
    return copied
