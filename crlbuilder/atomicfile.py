"""Files written whole: a temporary file (0600 from creation), fsync, rename; and the sweep of
the temporaries a crashed writer left behind.

Every writer of the builder and the responder that replaces a file goes through `write_whole`
(or `write_new`, which never replaces), so that

- a reader sees the old file, or none, or the new one, never a part;
- the temporary file is new (``O_EXCL|O_NOFOLLOW``: never one left behind, whatever its mode,
  nor a link planted in its place) and readable by its owner only while it is written, with
  any umask; it gets its final ``mode`` only once whole;
- it is removed on any failure, and one that a crash (SIGKILL, OOM, power cut) leaves between
  the write and the rename is `sweep_tmp`'s: each owner sweeps its directory when it starts.

Temporary names are ``.<name>.<pid>.<random>.tmp`` (`TMP_NAME`).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "STALE_TMP_SECONDS",
    "TMP_NAME",
    "fsync_dir",
    "place",
    "staged",
    "sweep_own",
    "sweep_tmp",
    "tmp_path",
    "write_new",
    "write_whole",
]

STALE_TMP_SECONDS: Final = 300
"""A temporary file older than this is a crashed writer's: `sweep_tmp` removes it. A write takes
milliseconds (a few KB to a few MB, one fsync); minutes leave room for a slow disk."""

TMP_NAME: Final = re.compile(r"^\..+\.\d+(\.[0-9a-f]+)?\.tmp$")
"""The temporary names of `tmp_path` (and the older ones without the random part)."""


def tmp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (`TMP_NAME`)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _write_tmp(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> Path:
    """``data`` in a new temporary file beside ``path``, synced, then given ``owner`` (uid,
    gid) when set and ``mode``; an owner this process may not give (not root) leaves the file
    its own and takes the group's and others' bits off ``mode``: never a group it did not
    name."""
    tmp = tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if owner is not None:
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    mode &= 0o700
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_whole(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    *,
    sync_dir: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` with ``data`` (given ``owner`` (uid, gid) when set and ``mode`` once
    whole: `_write_tmp`); ``sync_dir`` also syncs the directory, so that the rename itself
    survives a power cut."""
    tmp = _write_tmp(path, data, mode, owner)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` whole, refusing (`FileExistsError`) to replace one that exists."""
    place(staged(path, data, mode), path, replace=False)


def staged(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """``data`` whole in a new temporary file beside ``path`` (its owner's only while written,
    ``mode`` once whole), for `place` to put in place: a writer that must do something between
    (record what it hands over, `crlbuilder disclose`) knows the file can be written before it
    does, and a failure after removes the temporary (``unlink``) with nothing in place."""
    return _write_tmp(path, data, mode)


def place(tmp: Path, path: Path, *, replace: bool) -> None:
    """Put the temporary ``tmp`` of `staged` at ``path``: replacing what is there
    (``replace``), else refusing (`FileExistsError`) whatever is there; the temporary is gone
    afterwards, on failure too, and the directory synced."""
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists, whatever it is
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make the names just written in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_tmp(
    directory: Path,
    *,
    now: float,
    older_than: float = STALE_TMP_SECONDS,
    name: re.Pattern[str] = TMP_NAME,
) -> int:
    """Remove the temporary files in ``directory`` matching ``name`` last written before
    ``now - older_than`` (epoch seconds, the files' clock): writers that crashed between the
    write and the rename. Returns how many; a missing directory has none."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    swept = 0
    for e in entries:
        if not name.match(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= now - older_than:
                continue
            os.unlink(e.path)
        except OSError:  # renamed or swept by another process meanwhile, or not ours to remove
            continue
        swept += 1
    return swept


def tmp_names_of(path: Path) -> re.Pattern[str]:
    """The temporary names `tmp_path` gives ``path`` (and the older ones without the random
    part): one writer's own, in a directory that others write too."""
    return re.compile(rf"^\.{re.escape(path.name)}\.\d+(\.[0-9a-f]+)?\.tmp$")


def sweep_own(path: Path, *, now: float, older_than: float = STALE_TMP_SECONDS) -> int:
    """`sweep_tmp` of ``path``'s own stale temporaries only (`tmp_names_of`), in its directory:
    what its writer runs before it writes."""
    return sweep_tmp(path.parent, now=now, older_than=older_than, name=tmp_names_of(path))
