"""Whether a record file in the spool is whole: the follow loop takes it, and removes it, only then.

docs/operations.md has feeders write a file under a name not ending in ``.jsonl`` and rename
it into the spool. A file written in place instead can be seen by the loop half written:
read then, its cut last line was quarantined as "not JSON", the file removed once committed,
and every line the writer added after that went into the removed file, lost (revocations
among them) with nothing said. So:

- a file whose last byte is not a line end is still being written (`Settling.whole` is False)
  until the loop has seen it unchanged (size, mtime, inode) for ``settle`` seconds of its
  monotonic clock; then it is taken as it is (a feeder that leaves the last line end out), its
  cut line quarantined as before. Files after it in name order wait with it: records are
  applied in the order of the files. Not its mtime against the wall clock: a clock stepped
  ahead (or a writer's clock behind, on a shared file system) made a file being written look
  settled at once, and it was taken cut;
- the loop reads a file only up to the size it had when looked at (`ingest.read_file`'s
  ``limit``), and removes it only if it is `unchanged` after its records are committed; a file
  that grew meanwhile, or another renamed in under its name, stays and is read again at the
  next turn (what it applied already is a duplicate by id and changes nothing).

A writer that pauses at a line end while the loop reads and removes the file still loses
what it writes after: nothing short of a rename can tell that it is not done. The loop says
once per file, in a ``warning`` event, that a file was written in place.

Whoever writes the spool may also rename anything over a name the loop looked at: the loop
opens a name only as a regular file of its own (never through a symbolic link, never waiting:
a FIFO opened for reading waits for a writer), and reads and narrows the file it looked at
through one descriptor (`open_seen`), never its name again.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

SETTLE_SECONDS: Final = 2.0
"""How long a file that does not end with a line end must be left unchanged to be taken."""


@dataclass(frozen=True, slots=True)
class Look:
    """What the loop saw of one file: its size, its mtime and whether it ends with a line end."""

    size: int
    mtime_ns: int
    ends_line: bool
    """The last byte is ``\\n`` (or the file is empty)."""
    inode: tuple[int, int] = (0, 0)
    """Its device and inode: a file of the same name renamed in meanwhile is another file."""


_OPEN: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
"""How the loop opens a spool file: never through a symbolic link (``O_NOFOLLOW``), and never
waiting (``O_NONBLOCK``: a FIFO opened for reading without it waits for a writer, for ever)."""


def _open_regular(path: Path) -> int | None:
    """A descriptor of the regular file ``path`` names itself, or None when it is gone, a
    symbolic link, a FIFO, a directory or a device (someone with write access to the spool
    may put any of them under a record file's name, or rename one over a file looked at)."""
    try:
        fd = os.open(path, _OPEN)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symbolic link (O_NOFOLLOW)
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def look(path: Path) -> Look | None:
    """The file as it is now, or None when it is gone (or no regular file any more)."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        ends = st.st_size == 0 or os.pread(fd, 1, st.st_size - 1) == b"\n"
    finally:
        os.close(fd)
    return Look(
        size=st.st_size, mtime_ns=st.st_mtime_ns, ends_line=ends, inode=(st.st_dev, st.st_ino)
    )


def open_seen(path: Path, seen: Look) -> BinaryIO | None:
    """The file the loop looked at (``seen``), open for reading: what is read, and narrowed
    (`fchmod`) when kept, is that file whatever happens to its name meanwhile. None when
    ``path`` names another file now (renamed over it, or a link, a FIFO, a directory put in
    its place between the look and the read: a FIFO read through the name hung the loop for
    good, a link had another file read, or narrowed through it) or nothing: the loop looks
    again at its next turn."""
    fd = _open_regular(path)
    if fd is None:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != seen.inode:
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class Settling:
    """The spool's files seen not ending with a line end, each with what was seen of it and
    since when (the loop's monotonic clock) it has been seen so."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[tuple[int, int, tuple[int, int]], float]] = {}

    def whole(self, name: str, seen: Look, *, now: float, settle: float) -> bool:
        """Whether the file ``name``, as ``seen`` now, may be read: it ends with a line end, or
        has been seen unchanged for ``settle`` seconds (``now``: a monotonic clock)."""
        if seen.ends_line:
            self._since.pop(name, None)
            return True
        key = (seen.size, seen.mtime_ns, seen.inode)
        was = self._since.get(name)
        if was is None or was[0] != key:  # first seen so, or changed since: from now
            self._since[name] = (key, now)
            return settle <= 0
        return now - was[1] >= settle

    def keep_only(self, names: set[str]) -> None:
        """Forget the files no longer in the spool."""
        for name in self._since.keys() - names:
            del self._since[name]


def unchanged(before: Look, after: Look | None) -> bool:
    """Whether the file read as ``before`` may be removed: it is as it was, the same file (not
    one renamed in under its name meanwhile), or gone already."""
    return after is None or (after.size, after.mtime_ns, after.inode) == (
        before.size, before.mtime_ns, before.inode
    )  # fmt: skip
