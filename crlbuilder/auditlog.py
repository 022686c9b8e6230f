"""The hash-chained log (動作の記録, Ord §73(3)): append-only JSON lines, each chained to the last.

One implementation for every tamper-evident log of the project: the registry's audit log
(`responder.registry.audit`) and the key operation log (`crlbuilder.keys.oplog`). A log is a
file of JSON lines; each line is one msgspec ``Struct`` with at least two fields:

- ``seq``: the line's number, 1 for the first line;
- ``prev``: the SHA-256 (hex) of the previous line's bytes (without its newline), or
  64 zeros on the first line.

Editing a line breaks the next line's ``prev``; deleting or reordering lines breaks ``prev``
and ``seq``. What the chain alone cannot show is a change to its own end (the last line
edited, or the tail cut off): `verify_chain` reports the head (hash of the last line) and
its number, which the caller anchors outside the file (the registry's last record names the
registry's SHA-256; a key ceremony prints the head for the operators to record) and checks
again with ``anchor``.

The file is created mode 0600, opened O_APPEND (never through a symbolic link: a link put
where the log was is refused, as a directory or device is) and never rewritten; an append holds an
exclusive ``flock`` on the log from reading its last line to the fsync of the new lines, so
several processes (builder, responder workers, ceremonies) may append to the same log, and
`verify_chain` reads it under a shared one (it never sees a line half written).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Generic, TypeVar

import msgspec

__all__ = [
    "ZERO_HASH",
    "Anchor",
    "ChainError",
    "ChainReport",
    "append_chained",
    "line_hash",
    "verify_chain",
    "write_synced",
]

ZERO_HASH: Final = "0" * 64
"""The ``prev`` of a log's first line."""


R = TypeVar("R", bound=msgspec.Struct)


class ChainError(Exception):
    """The log cannot be appended to (its last line is partial or not a record)."""


class _Link(msgspec.Struct):
    """The two chain fields of any record (other fields ignored)."""

    seq: int
    prev: str


@dataclass(frozen=True)
class Anchor:
    """A head recorded outside the log: line ``seq`` had the SHA-256 ``head``."""

    seq: int
    head: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``SEQ:HEX`` (as `ChainReport.anchor` prints it) to an `Anchor`; ValueError if not."""
        seq, sep, head = text.partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1:
            raise ValueError(f"{text!r}: expected SEQ:SHA256 (as printed by the last append)")
        if len(head) != 64 or any(c not in "0123456789abcdef" for c in head):
            raise ValueError(f"{text!r}: the hash must be 64 lower-case hex digits")
        return cls(int(seq), head)

    def __str__(self) -> str:
        return f"{self.seq}:{self.head}"


@dataclass
class ChainReport(Generic[R]):
    """What `verify_chain` found: how many lines hold, the head, the last record, problems."""

    records: int = 0
    head: str = ZERO_HASH
    last: R | None = None
    problems: list[str] = field(default_factory=list)
    anchor_held: bool | None = None
    """With an anchor and an intact chain: whether the log holds it (False: `problems` says
    why); None otherwise."""

    @property
    def anchor(self) -> Anchor:
        return Anchor(self.records, self.head)


def line_hash(line: bytes) -> str:
    """SHA-256 (hex) of one line's bytes without its newline: the next line's ``prev``."""
    return hashlib.sha256(line).hexdigest()


def write_synced(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd``, fsync it, close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(fd: int, path: Path) -> bytes | None:
    """The log's last line (without its newline), read from the open descriptor ``fd``, or
    None for an empty log."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    buf = b""
    pos = size
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        if b"\n" in buf[:-1]:
            break
    if not buf.endswith(b"\n"):
        raise ChainError(f"{path}: ends with a partial line (verify the log)")
    body = buf[:-1]
    return body[body.rfind(b"\n") + 1 :]


def append_chained(path: Path, records: Sequence[R]) -> Anchor:
    """Append ``records`` to the log at ``path``, each given the next ``seq`` and the ``prev``
    of the line before it (whatever the caller put there is replaced); fsync; return the new
    head. Raises ChainError (nothing written) when the log's last line is partial or not a
    record, or the path is a symbolic link or not a regular file, OSError when the file cannot
    be written. The lines read and written are those of the one file opened (a rename meanwhile
    changes nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW: a link put where the log was
            raise ChainError(f"{path}: is a symbolic link, not the log (verify the log)") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ChainError(f"{path}: is not a regular file, not the log (verify the log)")
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd, path)
        if last is None:
            seq, prev = 0, ZERO_HASH
        else:
            try:
                seq = msgspec.json.decode(last, type=_Link).seq
            except msgspec.DecodeError:
                raise ChainError(
                    f"{path}: the last line is not a record of this log (verify the log)"
                ) from None
            prev = line_hash(last)
        out = bytearray()
        for r in records:
            seq += 1
            line = msgspec.json.encode(msgspec.structs.replace(r, seq=seq, prev=prev))
            out += line + b"\n"
            prev = line_hash(line)
    except BaseException:
        os.close(fd)
        raise
    write_synced(fd, out)  # closing the descriptor releases the lock
    return Anchor(seq, prev)


def verify_chain(path: Path, record_type: type[R], anchor: Anchor | None = None) -> ChainReport[R]:
    """Check every line of the log at ``path``: a ``record_type``, numbered in order, chained to
    the line before. Stops at the first problem. With ``anchor``, also checks that line
    ``anchor.seq`` still exists and hashes to ``anchor.head`` (an edited or cut-off tail)."""
    report: ChainReport[R] = ChainReport()
    anchored: str | None = None
    try:
        f = path.open("rb")
    except OSError as e:
        report.problems.append(f"{path}: cannot read the log: {e.strerror}")
        return report
    with f:
        # an append holds LOCK_EX from its read of the last line to its fsync: a reader that
        # waits for it sees the line whole (not a write in progress taken for a partial line,
        # which would call a healthy log broken); one a crash left partial is still partial
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                report.problems.append(f"{path}:{n}: partial last line")
                break
            line = raw[:-1]
            try:
                rec = msgspec.json.decode(line, type=record_type)
                link = msgspec.json.decode(line, type=_Link)
            except msgspec.DecodeError as e:
                report.problems.append(f"{path}:{n}: not a record of this log: {e}")
                break
            if link.prev != report.head:
                report.problems.append(
                    f"{path}:{n}: the chain is broken: this line does not follow line {n - 1} as written"
                )
                break
            if link.seq != n:
                report.problems.append(f"{path}:{n}: sequence number {link.seq}, expected {n}")
                break
            report.records = n
            report.head = line_hash(line)
            report.last = rec
            if anchor is not None and n == anchor.seq:
                anchored = report.head
    if anchor is not None and not report.problems:
        report.anchor_held = anchored == anchor.head
        if anchored is None:
            report.problems.append(
                f"{path}: has {report.records} lines, the anchor names line {anchor.seq}: the tail was cut off"
            )
        elif anchored != anchor.head:
            report.problems.append(
                f"{path}:{anchor.seq}: differs from the anchored head {anchor.head}: the log was rewritten"
            )
    return report
