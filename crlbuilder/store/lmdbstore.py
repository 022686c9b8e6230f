"""Opening the status store (LMDB): the environment both binaries share.

`Store.open` opens the environment and its named databases, creating them when
opened for writing, and refuses a store of another format version with a clear
message; `Store.read` gives one consistent view (`crlbuilder.store.reader.LmdbReader`).
crlbuilder is the only writer (`crlbuilder.store.writer.Commit`: one write
transaction at a time, LMDB guarantees readers never see half of one); responder
workers open the store read-only after forking. The byte layout itself lives in
`store.format`.

`copy_store` rewrites a store record by record into a new environment, in key order
with full pages: the way to clean a store written before LMDB zeroed its pages, and
to compact one (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import lmdb

from crlbuilder import atomicfile
from crlbuilder.store import format as sf
from crlbuilder.store.reader import Db, LmdbReader

_PLACE_WAIT: Final = 10.0
"""Seconds `_place_locked` waits for the directory's lock (others hold it for moments)."""

LmdbError: Final = lmdb.Error
"""What LMDB raises (a full disk at a commit, a full map at a put): the writer (`Commit`)
turns it into `store.format.StoreWriteError` without importing LMDB itself."""
DEFAULT_MAP_SIZE: Final = 64 << 30
"""64 GiB of address space: a sparse file, it costs only what is written."""


@dataclass(frozen=True, slots=True)
class Store:
    """An open store: the LMDB environment and its named database handles."""

    env: lmdb.Environment
    """The `lmdb.Environment`: used by `reader` and `writer` only (and by
    tests that corrupt a store on purpose); everything else reads through `read` and
    writes through `crlbuilder.store.writer.Commit`."""
    dbs: dict[bytes, Db]
    path: Path
    readonly: bool
    writer_lock: list[int] = field(default_factory=list)
    """A writer's descriptor of the store directory, holding its exclusive ``flock``
    (`_lock_writer`) until `close`: one writer at a time. Empty when read-only."""
    created: bool = False
    """This open made the store (no data.mdb before): `discard` may take it back."""
    made_dir: bool = False
    """This open made the store's directory too."""
    staged_for: Path | None = None
    """Where this new store goes at `publish` (`open_staged`); None: it is in its place."""
    identity: tuple[int, int] = (0, 0)
    """(st_dev, st_ino) of the data.mdb this open mapped (`replaced`)."""

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = 1024,
    ) -> Store:
        """Open (or, for writing, create) the store at ``path`` and check its format version.

        A writer holds the store alone (`_lock_writer`): a second one is refused, not
        interleaved. A new store is made only in a new or empty directory, never among
        other files. Raises `StoreFormatError` with the reason.
        """
        p = Path(path)
        if readonly:
            data = p / "data.mdb"
            if not data.is_file() or data.stat().st_size == 0:
                raise sf.StoreFormatError(
                    f"{p}: no status store here (run `crlbuilder build` first)"
                )
            return cls._open(p, readonly=True, map_size=map_size, max_readers=max_readers)
        _check_new_place(p)
        _check_own(p)
        made_dir = not p.exists()
        created = not (p / "data.mdb").exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, 0o700)
        except OSError as e:
            raise sf.StoreFormatError(f"{p}: cannot create the store: {e.strerror}") from None
        lock = _lock_writer(p)
        try:
            store = cls._open(
                p, readonly=False, map_size=map_size, max_readers=max_readers, writer_lock=[lock]
            )
        except BaseException:
            os.close(lock)
            if created:  # data.mdb and lock.mdb LMDB made before it refused: not a store
                _remove_store_files(p, made_dir=made_dir)
            raise
        return dataclasses.replace(store, created=created, made_dir=made_dir)

    @classmethod
    def open_staged(cls, path: str | Path, *, map_size: int = DEFAULT_MAP_SIZE) -> Store:
        """A new store for ``path``, made beside it under a hidden name (`STAGED_NAME`) and
        moved into place by `publish`: a writer that may import nothing for a while (a
        ``group pull --follow`` whose passes fail) never shows an empty store to a responder
        or an operator. Staged stores that a crashed writer left (their lock free) are
        removed first, but one that holds a committed CRL import is put in place instead
        (`_sweep_staged`: a writer killed between its first import's commit and its rename)
        and opened there; one whose writer is alive refuses this one, as a store in place does
        (`_lock_writer`: one writer at a time, the two would download and import the same
        files). The look for staged stores, the staging and `publish`'s rename are one step
        each under the place's directory lock (`_place_locked`): two writers started in the
        same instant cannot both stage. A place that holds a store (put there meanwhile) is
        opened as `open` opens it (refused while its writer lives). Refuses a place that holds
        other files."""
        p = Path(path)
        _check_new_place(p)
        with _place_locked(p):
            if not (p / "data.mdb").exists() and (live := _sweep_staged(p)):
                raise sf.StoreFormatError(
                    f"{p}: another process is writing this store (group pull, making it "
                    f"at {live}): one writer at a time; stop it first"
                )
            if (p / "data.mdb").exists():  # a crashed writer's import, or another's publish
                return cls.open(p, readonly=False, map_size=map_size)
            staged = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
            store = cls.open(staged, readonly=False, map_size=map_size)
        return dataclasses.replace(store, staged_for=p)

    def publish(self) -> Store:
        """Move a staged store into its place (the directory is renamed: the environment and
        the writer's lock stay open) and return it there; it is no longer this run's to
        `discard`. A store in its place is returned as it is."""
        if self.staged_for is None:
            return self
        try:
            with _place_locked(self.staged_for):
                os.rename(self.path, self.staged_for)  # onto nothing, or an empty directory
                atomicfile.fsync_dir(self.staged_for.parent)
        except OSError as e:
            raise sf.StoreFormatError(
                f"{self.staged_for}: cannot put the new store in place: {e.strerror}"
            ) from None
        return dataclasses.replace(
            self, path=self.staged_for, staged_for=None, created=False, made_dir=False
        )

    @classmethod
    def _open(
        cls,
        p: Path,
        *,
        readonly: bool,
        map_size: int,
        max_readers: int,
        writer_lock: list[int] | None = None,
    ) -> Store:
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
                mode=0o600,  # data.mdb and lock.mdb: the builder's and responder's user only
            )
        except lmdb.Error as e:
            raise sf.StoreFormatError(f"{p}: cannot open the store: {e}") from None
        try:
            _check_whole(env, p)
        except BaseException:
            env.close()
            raise
        if not readonly:  # a store created before the files were made 0600 becomes so too
            for file in ("data.mdb", "lock.mdb"):
                os.chmod(p / file, 0o600)
        dbs: dict[bytes, Db] = {}
        if readonly and env.stat()["entries"] == 0:
            # created but nothing committed yet (a builder killed before its first commit):
            # no named database at all, the same as no store
            env.close()
            raise sf.StoreFormatError(f"{p}: no status store here (run `crlbuilder build` first)")
        if readonly:
            for name in sf.ALL_DBS:
                try:
                    dbs[name] = env.open_db(name, create=False, dupsort=name in sf.DUPSORT_DBS)
                except lmdb.NotFoundError:
                    if name in sf.BUILDER_DBS:
                        continue  # added later; only the builder (which creates them) reads them
                    if name in sf.OPTIONAL_DBS:
                        continue  # added later; read as empty (`LmdbReader`)
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
                if txn.get(sf.META_STORE_ID, db=meta) is None:
                    txn.put(sf.META_STORE_ID, secrets.token_bytes(sf.STORE_ID_BYTES), db=meta)
                if txn.get(sf.META_CHANGES_FROM, db=meta) is None:
                    # the feed starts now: the losses of effect of earlier commits are not in it
                    commit = txn.get(sf.META_COMMIT, db=meta)
                    txn.put(sf.META_CHANGES_FROM, bytes(commit or sf.pack_u32(0)), db=meta)
        mapped = os.stat(p / "data.mdb")
        store = cls(
            env=env, dbs=dbs, path=p, readonly=readonly, writer_lock=writer_lock or [],
            identity=(mapped.st_dev, mapped.st_ino),
        )  # fmt: skip
        try:
            store.check_format()
        except sf.StoreFormatError:  # refused: the environment closed (`open` lets go of
            env.close()  # the writer's lock)
            raise
        return store

    def check_format(self) -> None:
        """`StoreFormatError` unless the store's format version is the one this code reads.
        The store stays open either way: a responder's readiness check (`/readyz`) on a
        store whose mapped file was changed under it says so, and goes on answering its
        other routes as before (the opening refuses and closes, `open`)."""
        with self.env.begin() as txn:
            raw = txn.get(sf.META_FORMAT, db=self.dbs[sf.DB_META])
        version = sf.unpack_u32(raw) if raw is not None and len(raw) == 4 else None
        if version != sf.FORMAT_VERSION:
            raise sf.StoreFormatError(
                f"{self.path}: store format version {version}, this jpki-va reads "
                f"version {sf.FORMAT_VERSION}: rebuild the store with a matching crlbuilder"
            )

    def close(self) -> None:
        self.env.close()
        while self.writer_lock:  # a second close() finds it empty
            os.close(self.writer_lock.pop())

    def discard(self) -> None:
        """Close a store this open made and delete it (data.mdb, lock.mdb, and its directory
        when made too): a run refused before it wrote anything of its own leaves no store
        behind, where a later run or the responder would take an empty one for a store.
        The writer's lock is held until the files are gone. Refuses a store it did not make."""
        if not self.created or self.readonly:
            raise sf.StoreFormatError(f"{self.path}: not made by this run; not deleted")
        self.env.close()
        try:
            _remove_store_files(self.path, made_dir=self.made_dir)
        finally:
            self.close()

    def replaced(self) -> bool:
        """Whether ``path`` no longer holds the data.mdb this open mapped: the store was moved
        away or another put in its place (`crlbuilder store copy` and a rename, a restore).
        This open still reads the old file, which its builder no longer writes: what the
        builder commits now (a revocation) never shows here, so a reader must stop answering
        from it and be opened again. One ``stat``."""
        try:
            st = os.stat(self.path / "data.mdb")
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def read(self) -> LmdbReader:
        """One consistent read-only view: ``with store.read() as reader:`` (its transaction
        ends on leaving the ``with``)."""
        return LmdbReader(self.env.begin(), self.dbs)


def _check_new_place(p: Path) -> None:
    """Refuse to write a store where something else is: a file, or a directory holding
    files but no store (a mistyped ``--store`` would otherwise get its mode narrowed to
    0700 and a store added among its files)."""
    if p.exists() and not p.is_dir():
        raise sf.StoreFormatError(f"{p}: not a directory; a store is a directory of its own")
    if p.is_dir() and not (p / "data.mdb").exists():
        try:
            others = sorted(e.name for e in p.iterdir() if e.name != "lock.mdb")
        except OSError as e:
            raise sf.StoreFormatError(f"{p}: cannot read the directory: {e.strerror}") from None
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise sf.StoreFormatError(
                f"{p}: holds other files ({shown}) but no store: give a new or empty "
                "directory for a new store"
            )


def _check_own(p: Path) -> None:
    """Refuse to write a store whose data.mdb or lock.mdb is a symbolic link (LMDB would
    write, and the open chmod, the file it points at: any file the builder's user may
    write), or whose directory or files another user owns (what they hold, or where they
    point, is that user's to change under the builder). A directory given as a link is
    followed, as any path."""
    me = os.geteuid()
    for f in (p, p / "data.mdb", p / "lock.mdb"):
        try:
            st = f.stat() if f == p else f.lstat()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise sf.StoreFormatError(f"{f}: cannot read it: {e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise sf.StoreFormatError(
                f"{f}: a symbolic link; a store's files are its own (give the store's real "
                "directory)"
            )
        if st.st_uid != me:
            raise sf.StoreFormatError(
                f"{f}: owned by user {st.st_uid}, not by this process's ({me}); run the "
                "writer as the store's owner"
            )


def _staged_name(p: Path) -> re.Pattern[str]:
    """`Store.open_staged`'s hidden names for a store at ``p``."""
    return re.compile(rf"^\.{re.escape(p.name)}\.\d+\.[0-9a-f]+\.new$")


def _sweep_staged(p: Path) -> str:
    """Clear the staged stores for ``p`` whose writer is gone (their directory's lock can be
    taken): a crash before `Store.publish`. The first of them (by name) that holds a
    committed CRL import (`_holds_import`: the writer was killed between its first import's
    commit and its rename) is put in ``p``, as that writer would have done: it is what that
    writer downloaded and verified, and the 機構 refuses a second download within the agreed
    cycle. The others are removed. A live writer's is left alone, and named: the returned
    name ("" when none). Called under `_place_locked`."""
    pattern = _staged_name(p)
    try:
        entries = sorted(
            (e for e in os.scandir(p.parent) if pattern.match(e.name)), key=lambda e: e.name
        )
    except FileNotFoundError:
        return ""
    live = ""
    for e in entries:
        try:
            fd = os.open(e.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            live = e.name
            continue
        except OSError:  # not ours to remove
            continue
        else:
            with contextlib.suppress(OSError):  # not ours to remove, or to put in place
                if not (p / "data.mdb").exists() and _holds_import(Path(e.path)):
                    os.rename(e.path, p)  # onto nothing, or an empty directory
                    atomicfile.fsync_dir(p.parent)
                else:
                    _remove_store_files(Path(e.path), made_dir=True)
        finally:
            os.close(fd)
    return live


def _holds_import(staged: Path) -> bool:
    """Whether a staged store holds a committed CRL import (`StoreReader.crl_import`, what
    `crlbuilder.group.pull` publishes a staged store at)."""
    try:
        store = Store._open(staged, readonly=True, map_size=DEFAULT_MAP_SIZE, max_readers=8)
    except sf.StoreFormatError:  # nothing committed, or not a store
        return False
    try:
        with store.read() as r:
            return r.crl_import()
    finally:
        store.close()


@contextlib.contextmanager
def _place_locked(p: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory holding the store's place ``p`` (made if need
    be), held while a staged store for ``p`` is looked for and made (`Store.open_staged`) or
    renamed into place (`Store.publish`): each of those is one step to another writer doing
    the same. Held for moments; waited for at most `_PLACE_WAIT` seconds."""
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise sf.StoreFormatError(f"{p.parent}: cannot lock the directory: {e.strerror}") from None
    try:
        give_up = time.monotonic() + _PLACE_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise sf.StoreFormatError(
                        f"{p.parent}: another process has held the directory's lock for "
                        f"{_PLACE_WAIT:g} s; a new store is not made under it"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # the lock with it


def _remove_store_files(p: Path, *, made_dir: bool) -> None:
    for name in ("data.mdb", "lock.mdb"):
        (p / name).unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):  # something else was put there meanwhile: kept
            p.rmdir()


def _lock_writer(p: Path) -> int:
    """An exclusive ``flock`` on the store directory, held until `Store.close` (or the
    process ends): LMDB serialises write transactions, not writers, and a second builder
    on the same store would pre-sign, publish CRLs and write the quarantine and notices
    alongside the first. Returns the descriptor holding the lock."""
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise sf.StoreFormatError(
            f"{p}: another process is writing this store (crlbuilder build, import-crl, "
            "group pull or store copy): one writer at a time; stop it first"
        ) from None
    return fd


def _check_whole(env: lmdb.Environment, p: Path) -> None:
    """Refuse a data.mdb shorter than its last committed page (cut short by a copy, a full
    disk, a truncation): LMDB maps the file, and reading a page past its end kills the
    process with SIGBUS, no message. Only the meta pages are read here."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (p / "data.mdb").stat().st_size
    if size < needed:
        raise sf.StoreFormatError(
            f"{p}: the store is truncated: data.mdb has {size} bytes, its last commit "
            f"needs {needed}; restore it from a copy or rebuild it"
        )


def snapshot_store(store: Store, target: str | Path) -> None:
    """One consistent copy of ``store`` (it may be written meanwhile) as ``target/data.mdb``:
    LMDB's compacting copy under one read transaction. ``target`` must be a new, empty
    directory. The bytes are the store's live pages (zeroed when written: ``meminit``).
    A copy that cannot be written (no room) raises `OSError`."""
    t = Path(target)
    t.mkdir(mode=0o700, parents=True, exist_ok=False)
    try:
        store.env.copy(str(t), compact=True)
    except lmdb.Error as e:  # mdb_env_copy3's errno, as lmdb reports it
        raise OSError(str(e)) from None
    (t / "data.mdb").chmod(0o600)


def _check_known_dbs(store: Store) -> None:
    """Refuse a store holding a named database this release does not know (`sf.ALL_DBS`):
    a later release added it, and only a release that knows it can copy it."""
    with store.env.begin() as txn:
        names = [bytes(k) for k in txn.cursor().iternext(values=False)]
    unknown = sorted(n for n in names if n not in sf.ALL_DBS)
    if unknown:
        shown = ", ".join(n.decode("utf-8", "replace") for n in unknown)
        raise sf.StoreFormatError(
            f"{store.path}: holds databases this release does not know ({shown}): a later "
            "release wrote them; copy the store with that release"
        )


COPY_BATCH: Final = 50_000
"""Entries per write transaction of `copy_store`."""


def copy_store(source: str | Path, target: str | Path, *, map_size: int = DEFAULT_MAP_SIZE) -> int:
    """Copy every entry of every database of ``source`` into a new store at ``target``.

    The copy is logical (each key and value is written again into pages LMDB
    zeroes), so nothing but live data reaches the new ``data.mdb``: neither the
    free pages nor the unused bytes of live pages, which a byte copy, even
    LMDB's compacting copy (``mdb_env_copy2`` with ``MDB_CP_COMPACT``), keeps
    as they are. Each database is appended in key order (``MDB_APPEND``), so its pages
    are full: about a quarter smaller than a store built from the records, whose pages
    split as random serials arrive. ``target`` must not hold a store. Returns the entries
    copied. A copy that fails (`StoreFormatError`, or `OSError`) leaves no store at ``target``.

    Refused while a writer holds ``source`` (a builder, an import, a pull: the writer's
    ``flock``, held here for the copy so that none starts meanwhile): the copy reads one
    snapshot, and what a writer committed after it would be missing from the copy put in
    its place. Refused too when ``source`` holds a database this release does not know (a
    later release's): it would be left out without a word.
    """
    t = Path(target)
    if (t / "data.mdb").exists():
        raise sf.StoreFormatError(f"{t}: a store is already there; give a new directory")
    src = Store.open(source, readonly=True, map_size=map_size)
    try:
        src.writer_lock.append(_lock_writer(src.path))  # released by `src.close`
        _check_known_dbs(src)
        dst = Store.open(t, readonly=False, map_size=map_size)
    except BaseException:
        src.close()
        raise
    copied = 0
    done = False
    try:
        with src.env.begin(buffers=False) as rtxn:
            for name in src.dbs:
                items = rtxn.cursor(db=src.dbs[name]).iternext(keys=True, values=True)
                while True:
                    chunk = [(bytes(k), bytes(v)) for k, v in itertools.islice(items, COPY_BATCH)]
                    if not chunk:
                        break
                    with dst.env.begin(write=True) as wtxn:
                        cur = wtxn.cursor(db=dst.dbs[name])
                        # appended (MDB_APPEND) wherever the target holds only smaller keys
                        # (every database but meta, which the open seeded): full pages
                        append = not cur.last() or bytes(cur.key()) < chunk[0][0]
                        consumed, written = cur.putmulti(chunk, dupdata=True, append=append)
                        if written != len(chunk):
                            raise sf.StoreFormatError(
                                f"{t}: LMDB wrote {written} of {consumed} entries of {name!r}"
                            )
                    copied += len(chunk)
        with src.env.begin() as rtxn, dst.env.begin(write=True) as wtxn:
            # a source written before the changes feed: the copy's feed starts at its commit
            # too, and the copy is named by the id it drew (the source had none to keep)
            meta_src, meta_dst = src.dbs[sf.DB_META], dst.dbs[sf.DB_META]
            gained = 0
            if rtxn.get(sf.META_CHANGES_FROM, db=meta_src) is None:
                commit = rtxn.get(sf.META_COMMIT, db=meta_src)
                wtxn.put(sf.META_CHANGES_FROM, bytes(commit or sf.pack_u32(0)), db=meta_dst)
                gained += 1
            gained += rtxn.get(sf.META_STORE_ID, db=meta_src) is None
        with src.read() as r:
            src_counts = r.counts()
            src_counts[sf.DB_META.decode()] += gained
        with dst.read() as w:
            dst_counts = {n: c for n, c in w.counts().items() if n in src_counts}
        if src_counts != dst_counts:
            raise sf.StoreFormatError(
                f"{t}: the copy differs from {source} ({dst_counts} against {src_counts})"
            )
        done = True
    except lmdb.Error as e:  # no room in the map or on the disk, mid-copy
        raise sf.StoreFormatError(f"{t}: the copy failed: {e}") from None
    finally:
        if not done:  # a part of a store would open as a store: nothing is left
            dst.discard()
        dst.close()
        src.close()
    return copied
