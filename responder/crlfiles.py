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

A file that is not one whole CertificateList (`peek_crl`: cut short, trailing bytes,
written in place by hand, an empty file) is never served: `CrlFile.whole` is False, the
app answers 503 and counts nothing (a party would otherwise be handed, and the ledger
count, a file no client can use). Each such file is logged once per worker, by name and
what is wrong with its DER (``crl_file_broken``), when first seen in that state; it
stays in the cache (no map held) until it is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import stat
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder.der import DerError, der_header

__all__ = ["CrlFile", "CrlFiles", "behind", "not_modified", "peek_crl"]

_log: Final = logging.getLogger("responder.crlfiles")
_EMPTY: Final = memoryview(b"")
_PRIVATE: Final = (b"cache-control", b"private, no-cache, no-transform")


class CrlFile(msgspec.Struct, frozen=True):
    """One mapped CRL file: its bytes, its identity and its HTTP validators."""

    body: memoryview
    """A read-only view of the file's map (empty for an empty file, which cannot be mapped)."""
    etag: bytes
    """The ``ETag`` value (quoted), also in ``headers``."""
    modified: int
    """Its ``Last-Modified`` in epoch seconds (see ``headers``)."""
    identity: tuple[int, int, int, int]
    """(st_dev, st_ino, st_mtime_ns, st_size) of the file mapped."""
    whole: bool
    """One whole CertificateList (`peek_crl`); False: not to be served (``body`` empty)."""
    this_update: int
    """The CRL's thisUpdate in epoch seconds (0 for a file that is not ``whole``)."""
    headers: tuple[tuple[bytes, bytes], ...]
    """``Last-Modified``, ``ETag`` and ``Cache-Control: private``. The validators come from
    the CRL itself (`peek_crl`), so that every node serving the
    signer's CRL (each placed by its own fetch, `crlbuilder.crl.shipping`: another mtime)
    gives the same ones, and a party's ``If-None-Match`` from one node gets its 304 on
    another instead of the whole file again, counted again: ETag, the CRL's thisUpdate (in
    hex) and a digest of its size and signature (the signature covers everything the CRL
    says), so that a node can tell a party holds a newer file than its own (`behind`); Last-Modified, its
    thisUpdate (as for OCSP answers, `responder.app.caching_headers`), or the file's mtime
    when earlier (never later than the server's clock, RFC 9110 §8.8.2.1). A file that is
    not a whole CRL (``whole`` False, never served) has the file's own validators (mtime in
    nanoseconds and size, in hex: nginx's form). ``private``: a file goes to a registered
    party only (Act §18(2), §37(2)) and each download is counted (帳簿, Act §40), so no
    shared cache may keep it and hand it to others; ``no-cache``: the party's own cache
    asks before each use (a 304, free, while the file is the same) instead of reusing it
    by heuristic freshness (RFC 9111 §4.2.2) after a newer one, or past its nextUpdate."""


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
    return int(since.timestamp()) >= crl.modified


def behind(headers: dict[bytes, bytes], crl: CrlFile) -> bool:
    """Whether a GET's ``If-None-Match`` names a newer CRL than ``crl``: the party holds a
    file of this name whose thisUpdate is later than the one here, so this node has not yet
    received the newest (another node has, and answered the party; `crlbuilder.crl.shipping`
    places each node's copy by its own fetch). Serving ``crl`` would take the party back to
    an older CRL, revocations since missing, until its next cycle (周期, Ord §31(2)).

    Read from the tags of `CrlFile.etag`'s form (``"<thisUpdate hex>-<digest>"``); any other
    tag (``*``, an earlier release's, another server's) says nothing. Call it after
    `not_modified`. A party that makes up a later tag is only refused its own downloads.
    """
    inm = headers.get(b"if-none-match")
    if inm is None or not crl.whole:
        return False
    for tag in inm.split(b","):
        stamp, dash, digest = tag.strip().removeprefix(b"W/").strip(b'"').partition(b"-")
        if dash and len(digest) == _DIGEST_HEX and 0 < len(stamp) <= 16:
            try:
                if int(stamp, 16) > crl.this_update:
                    return True
            except ValueError:
                continue
    return False


_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02
_BIT_STRING: Final = 0x03
_DIGEST_HEX: Final = 32
"""Hex digits of the digest in a whole CRL's ETag."""
_TIMES: Final = {0x17: (13, "%y%m%d%H%M%SZ"), 0x18: (15, "%Y%m%d%H%M%SZ")}
"""UTCTime and GeneralizedTime as a CRL writes them (RFC 5280 §5.1.2.4): their length, format."""


def _header(der: bytes | mmap.mmap, p: int, end: int) -> tuple[int, int, int]:
    """`der_header` at ``der[p]``, given the header's at most six bytes as a copy: the reader
    takes bytes only (compiled with mypyc, it checks), a CRL here is often a memory map."""
    try:
        tag, start, stop = der_header(bytes(der[p : p + 6]), 0, end - p)
    except DerError as e:
        raise DerError(e.reason, e.offset + p) from None
    return tag, start + p, stop + p


def peek_crl(der: bytes | mmap.mmap) -> tuple[int, bytes]:
    """(thisUpdate in epoch seconds, signatureAlgorithm and signatureValue DER) of a DER CRL.

    Reads the outer headers and the tbsCertList up to thisUpdate only, never the entries nor
    a copy of the signed bytes: constant time and memory for a CRL of millions of entries,
    on a memory map too (anything indexed and sliced like bytes). The signature covers
    everything the CRL says, so the pair is the same for the same CRL wherever its bytes
    lie. Raises ValueError (`crlbuilder.der.DerError` among them) when the bytes are not one
    whole CertificateList (truncated, trailing bytes, a field out of place); its message is
    a fixed phrase (and an offset), never the bytes.
    """
    end = len(der)
    tag, start, stop = _header(der, 0, end)
    if tag != _SEQUENCE or stop != end:
        raise ValueError("not one CertificateList")
    tag, tbs, tbs_stop = _header(der, start, stop)
    if tag != _SEQUENCE:
        raise ValueError("no tbsCertList")
    tag, _, alg_stop = _header(der, tbs_stop, stop)
    if tag != _SEQUENCE:
        raise ValueError("no signatureAlgorithm")
    tag, _, sig_stop = _header(der, alg_stop, stop)
    if tag != _BIT_STRING or sig_stop != stop:
        raise ValueError("no signatureValue at the end")
    tag, _, p = _header(der, tbs, tbs_stop)  # the version, or (v1) the signature
    if tag == _INTEGER:
        tag, _, p = _header(der, p, tbs_stop)  # the signature
    tag, _, p = _header(der, p, tbs_stop)  # the issuer
    if tag != _SEQUENCE:
        raise ValueError("no issuer Name")
    tag, t0, t1 = _header(der, p, tbs_stop)
    size, fmt = _TIMES.get(tag, (0, ""))
    if t1 - t0 != size:
        raise ValueError("no thisUpdate")
    try:
        at = datetime.strptime(der[t0:t1].decode("ascii"), fmt).replace(tzinfo=UTC)
    except ValueError:  # its message would quote the bytes: every reason here is a phrase
        raise ValueError("thisUpdate is not a time") from None
    return int(at.timestamp()), bytes(der[tbs_stop:stop])


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
            fresh, broken = _map(path)
        except (OSError, ValueError):
            self._files.pop(name, None)
            return None
        if broken is not None:  # once per file version and worker: it stays cached
            _log.error("crl_file_broken", extra={"fields": {"file": name, "reason": broken}})
        self._files[name] = fresh
        self.maps += 1
        return fresh


def _map(path: str) -> tuple[CrlFile, str | None]:
    """Map ``path`` read-only; the identity is the opened file's (it may have been replaced
    between the caller's ``stat`` and this ``open``). With it, what is wrong with a file
    that is not one whole CRL (then it holds no map), else None."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        mapped = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ) if st.st_size else None
    finally:
        os.close(fd)  # the map holds the file
    modified = int(st.st_mtime)
    etag = b'"%x-%x"' % (st.st_mtime_ns, st.st_size)
    broken: str | None = "an empty file"
    this_update = 0
    if mapped is not None:
        try:  # a map is read like bytes (indexing, slicing): only the headers are read
            this_update, signature = peek_crl(mapped)
        except ValueError as e:  # DerError too: the message names the DER, not the data
            broken = str(e) or type(e).__name__  # not a whole CRL: the file's own validators
            mapped.close()
            mapped = None
        else:
            broken = None
            modified = min(this_update, modified)
            digest = hashlib.sha256(b"%d:" % st.st_size + signature).hexdigest()
            etag = b'"%x-%s"' % (this_update, digest[:_DIGEST_HEX].encode("ascii"))
    last_modified = formatdate(modified, usegmt=True).encode("ascii")
    headers = ((b"last-modified", last_modified), (b"etag", etag), _PRIVATE)
    body = memoryview(mapped) if mapped is not None else _EMPTY
    crl = CrlFile(body, etag, modified, _identity(st), broken is None, this_update, headers)
    return crl, broken
