"""The CRL files (失効情報ファイル, Act §18(2), §37(2)) a worker serves: memory maps, not copies.

Owns reading the files of ``[store] crl_dir`` for ``GET /crl/{file}``: each file is
mapped once per worker (`mmap`, read-only) and every download of it is a `memoryview`
of that one map, which the HTTP layer writes in slices as the client reads
(`responder.http`). So a worker holds no copy of a CRL per download in flight: 40
pipelined or concurrent downloads of a 10 MiB CRL cost the page cache's one copy of
the file, shared by every worker, not 40 × 10 MiB of the worker's own memory (issue
10, item 7).

Replacement: crlbuilder publishes a CRL by writing a new file and renaming it over
the old one (`crlbuilder.crl.publish`), never by rewriting it in place. Each request
looks at the file's identity (device, inode, mtime, size: one ``stat``); when it
changed, the new file is mapped and the old map is dropped from the cache. A
download still in flight keeps its memoryview, and the view keeps the old map
alive until the last byte is written (the map is never closed explicitly: the last
reference unmaps it), so a replacement never cuts a download short or mixes two
files. The old inode, held by its map, cannot be reused for the new file while the
map lives, so an identity never names two different files.

The cache holds at most one map per file name; the app asks only for the names of
the issuers it serves (``{issuer}.crl``, ``{issuer}-delta.crl``), so it stays bounded.
A file truncated in place (not how crlbuilder writes) would make a read of the
vanished pages fault: publish by rename only.
"""

from __future__ import annotations

import mmap
import os
import stat
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Final

import msgspec

__all__ = ["CrlFile", "CrlFiles", "not_modified"]

_EMPTY: Final = memoryview(b"")
_PRIVATE: Final = (b"cache-control", b"private, no-transform")


class CrlFile(msgspec.Struct, frozen=True):
    """One mapped CRL file: its bytes, its identity and its HTTP validators."""

    body: memoryview
    """A read-only view of the file's map (empty for an empty file, which cannot be mapped)."""
    etag: bytes
    """The ``ETag`` value (quoted), also in ``headers``."""
    mtime: int
    """The file's mtime in whole seconds: its ``Last-Modified``."""
    identity: tuple[int, int, int, int]
    """(st_dev, st_ino, st_mtime_ns, st_size) of the file mapped."""
    headers: tuple[tuple[bytes, bytes], ...]
    """``Last-Modified`` (the file's mtime) and ``ETag`` (mtime in nanoseconds and size, in
    hex: nginx's form with nginx's whole seconds refined, so two CRLs of the same size
    published within one second differ; the same on every host that keeps the mtime), and
    ``Cache-Control: private``: a file goes to a registered party only (Act §18(2), §37(2))
    and each download is counted (帳簿, Act §40), so no shared cache may keep it and hand it
    to others (as `responder.app.caching_headers` says for OCSP answers)."""


def not_modified(headers: dict[bytes, bytes], crl: CrlFile) -> bool:
    """Whether a GET's validators say the party already holds ``crl`` (304, RFC 9110 §13.1).

    ``If-None-Match`` (weak comparison, a list or ``*``) decides when present; otherwise
    ``If-Modified-Since`` against the file's ``Last-Modified`` (whole seconds; an unparsable
    date is ignored, §13.1.3). A party polling its CRL files at its cycle then gets the
    same file once, not again at every poll (millions of entries, tens of MB each).
    """
    etag = crl.etag
    inm = headers.get(b"if-none-match")
    if inm is not None:
        tags = [tag.strip() for tag in inm.split(b",")]
        return any(tag == b"*" or tag.removeprefix(b"W/") == etag for tag in tags)
    ims = headers.get(b"if-modified-since")
    if ims is None:
        return False
    try:
        since = parsedate_to_datetime(ims.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return int(since.timestamp()) >= crl.mtime


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class CrlFiles:
    """The CRL files of one directory, each mapped once per worker (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, CrlFile] = {}
        self.maps = 0
        """Files mapped since start (a replaced file is mapped again)."""

    def get(self, name: str) -> CrlFile | None:
        """The current file ``name`` (a plain file name, checked by the caller), None if absent."""
        path = os.path.join(self.directory, name)
        try:
            st = os.stat(path)
        except OSError:
            self._files.pop(name, None)
            return None
        if not stat.S_ISREG(st.st_mode):  # a directory or a FIFO named like a CRL: no file
            self._files.pop(name, None)
            return None
        cached = self._files.get(name)
        if cached is not None and cached.identity == _identity(st):
            return cached
        try:
            fresh = _map(path)
        except (OSError, ValueError):
            self._files.pop(name, None)
            return None
        self._files[name] = fresh
        self.maps += 1
        return fresh


def _map(path: str) -> CrlFile:
    """Map ``path`` read-only; the identity is the opened file's (it may have been replaced
    between the caller's ``stat`` and this ``open``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        body = (
            memoryview(mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ)) if st.st_size else _EMPTY
        )
    finally:
        os.close(fd)  # the map holds the file
    etag = b'"%x-%x"' % (st.st_mtime_ns, st.st_size)
    last_modified = formatdate(st.st_mtime, usegmt=True).encode("ascii")
    headers = ((b"last-modified", last_modified), (b"etag", etag), _PRIVATE)
    return CrlFile(body, etag, int(st.st_mtime), _identity(st), headers)
