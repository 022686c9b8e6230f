"""The end of the notices and quarantine files: lines an operator has read, taken off the front.

The builder appends to two files beside the store (`crlbuilder.outbox`, mode 0600): the notices
file (holder notifications of a recording error, Act §15(2), §16-14(2), §34(2), §35-14(2),
naming the record id, the issuer and the certificate's serial; public announcements of a key
compromise, Act §15(3), Ord §23) and the quarantine file (refused records: record id, input
file name, line, field, reason; no content of the line). A serial, and a record id when the
feed makes one of personal data, are personal data in clear, outside every erasure of the
store (認証業務情報の消去, Ord §70(1)(iii)). No rule of the Act or the Ordinance keeps these lines:
the notice is the 機構's to-do (the notification itself, and the record of the recording error,
are kept elsewhere: the latter as the CRL entry, for its period, Act §13); the quarantine line
points the operator at a refused line of the feed, which the feed keeps. Both are needed only
until someone has acted on them, and the builder cannot know when that is: the notices file is
the 機構's channel to act on notices, and a line nobody has read must not be dropped.

So the end is an operator's duty, done with a command, never a rotation by the builder: an
operator (or the 機構's system that reads the file) takes a *mark* of the file (`mark_of`: the
number of whole lines in it and a digest of those bytes), reads those lines, and then prunes
through that mark (`pruned`): the first lines, exactly the ones the mark covers, are taken off
and the rest kept. A mark that no longer describes the file's start (lines taken off since,
the file replaced or edited) is refused, nothing changed: a prune can never drop a line that was
not in what was read. A line the builder appends while the operator reads is after the mark and
stays.

The prune writes the rest into a new file (0600, the old file's owner) and renames it over the
old one, under an exclusive ``flock`` of the old file, which `crlbuilder.outbox.deliver` also
takes around its append: a delivery that opened the file before the rename finds, once it holds
the lock, that the name now names another file and opens it again (`open_locked`), so no line is
appended to the file the prune replaced. The delivery then knows the file by its inode
(`store.format.OutboxFile.inode`): a file replaced since its last delivery is read whole for the
lines already in it, however long it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crlbuilder.atomicfile import sweep_own, write_whole

MARK: Final = re.compile(r"(0|[1-9][0-9]{0,11}):([0-9a-f]{32})")
"""A mark as `Mark.__str__` writes it: the number of lines, ``:``, 32 hex digits."""


class PruneRefused(ValueError):
    """A prune that would not take the lines off the file named: nothing is pruned."""


class MarkRefused(PruneRefused):
    """A mark that does not describe the file's start: nothing is pruned."""


@dataclass(frozen=True)
class Mark:
    """The first ``lines`` whole lines of a file, known by the SHA-256 of their bytes (the
    first 16 bytes, hex), line feeds included."""

    lines: int
    digest: str

    def __str__(self) -> str:
        return f"{self.lines}:{self.digest}"


def parse_mark(text: str) -> Mark:
    """The mark an operator gives back; `ValueError` saying what a mark looks like."""
    m = MARK.fullmatch(text)
    if m is None:
        raise ValueError(
            "a mark is the number of lines, ':', and 32 lowercase hex digits, as "
            "'crlbuilder outbox mark' prints it"
        )
    return Mark(lines=int(m.group(1)), digest=m.group(2))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def mark_of(data: bytes) -> Mark:
    """The mark of a file holding ``data``: its whole lines (a last line with no line feed, cut
    by a kill or being written, is not one)."""
    whole = data[: data.rfind(b"\n") + 1]
    return Mark(lines=whole.count(b"\n"), digest=_digest(whole))


def pruned(data: bytes, mark: Mark) -> bytes:
    """What is left of a file holding ``data`` once the lines ``mark`` covers are taken off;
    `MarkRefused` when its first ``mark.lines`` lines are not those the mark was taken of."""
    end = 0
    for n in range(mark.lines):
        at = data.find(b"\n", end)
        if at < 0:
            raise MarkRefused(
                f"the file holds only {n} whole line(s), fewer than the mark's {mark.lines}: it was "
                "pruned or replaced since the mark was taken; take a new mark"
            )
        end = at + 1
    if _digest(data[:end]) != mark.digest:
        raise MarkRefused(
            f"the file's first {mark.lines} lines are not those the mark was taken of (pruned, "
            "replaced or edited since); take a new mark and read the lines it covers"
        )
    return data[end:]


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def open_locked(path: Path, flags: int, mode: int = 0o600, *, shared: bool = False) -> int:
    """``path`` opened with ``flags`` and ``flock``-ed (exclusive unless ``shared``), the file the
    name names once the lock is held: one a prune renamed away meanwhile is closed and the name
    opened again. The caller closes the descriptor (which lets the lock go)."""
    while True:
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def take_mark(path: Path) -> Mark:
    """The mark of the file at ``path`` as it is now (`FileNotFoundError` when there is none)."""
    fd = open_locked(path, os.O_RDONLY, shared=True)
    try:
        return mark_of(_read_all(fd))
    finally:
        os.close(fd)


def read_marked(path: Path, mark: Mark) -> bytes:
    """The lines ``mark`` covers, as they are in the file (`MarkRefused` as `pruned`)."""
    fd = open_locked(path, os.O_RDONLY, shared=True)
    try:
        data = _read_all(fd)
    finally:
        os.close(fd)
    rest = pruned(data, mark)
    return data[: len(data) - len(rest)]


def prune(path: Path, mark: Mark) -> int:
    """Take the lines ``mark`` covers off the front of the file at ``path``; returns how many.
    The rest is written whole into a new file (0600, the old one's owner) renamed over it, under
    the old file's exclusive lock (`open_locked`); `MarkRefused` changes nothing, and so does
    `PruneRefused` for a symbolic link (the new file would replace the link, the lines staying
    in the file it names) and for a file with another hard link (the lines would stay under the
    other name)."""
    if path.is_symlink():
        raise PruneRefused("a symbolic link: give the path of the file it names")
    fd = open_locked(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        if (links := os.fstat(fd).st_nlink) > 1:
            raise PruneRefused(
                f"the file has {links - 1} other hard link(s): the lines would stay under the "
                "other name; remove the other links first"
            )
        data = _read_all(fd)
        rest = pruned(data, mark)
        # a prune killed before its rename left the lines kept in a temporary beside the file
        sweep_own(path, now=time.time())
        if mark.lines:
            held = os.fstat(fd)
            write_whole(path, rest, 0o600, sync_dir=True, owner=(held.st_uid, held.st_gid))
    finally:
        os.close(fd)
    return mark.lines
