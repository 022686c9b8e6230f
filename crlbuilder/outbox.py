"""The outbox: lines owed to an output file, staged in the store's transaction, delivered once.

A holder notification (通知, Act §15(2)) or a public announcement (公示, Act
§15(3), Ord §23) is due because of a revocation; a quarantine line because a
record was refused. Written to their files after the commit, a builder killed
in between would lose them for good; written before, a rollback would leave
lines for what never happened. So the applier *stages* each line in the
``outbox`` database inside the write transaction that causes it
(`crlbuilder.store.writer.Commit.stage`), and
`deliver` then appends the staged lines to their file and deletes them.

Delivery is idempotent: each line has a key (`KeyOf`: a notice's record id and
kind, a quarantine line's record id or file and line), and the store remembers
the file's size after the last completed delivery. A delivery cut short after
its append but before its delete finds its lines in the file's tail beyond that
size and does not write them again; a line cut in half by the kill is written
again whole on a line of its own. If the file was replaced in between (pruned through what an
operator read, `crlbuilder.outboxprune`, which the store knows by the file's inode; or rotated
away by hand, then shorter than remembered), the new file is read whole instead; so is a file
the store knows by no inode (its size written by an earlier release), once. The append is
made under an exclusive ``flock`` of the file, the one a prune takes, so a line is never
appended to a file a prune is replacing.

Keys: ``target`` (1 byte) ‖ staging number u64 (`store.format.META_OUTBOX_SEQ`),
so each file's lines are delivered in the order they were staged. The file's
delivered size is kept under `store.format.META_OUTBOX_FILE_PREFIX` ‖ target.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from crlbuilder.outboxprune import open_locked
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit

NOTICES: Final = b"n"
"""Target: the notices file (input.notices)."""
QUARANTINE: Final = b"q"
"""Target: the quarantine file (input.quarantine)."""

SYMLINK_REFUSED: Final = (
    "a symbolic link, not followed: give the path of the file itself (input.notices or "
    "input.quarantine)"
)
"""Why a delivery to a name that is a symbolic link is refused (`OSError` ELOOP's message)."""

KeyOf = Callable[[bytes], bytes | None]
"""The delivery key of one JSON line, or None for a line that is not one of ours."""


def pending(store: Store, target: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, line) pairs staged for ``target`` and not yet delivered, in staging order."""
    with store.read() as r:
        return r.outbox_lines(target)


def deliver(
    store: Store,
    target: bytes,
    path: Path,
    key_of: KeyOf,
    *,
    before_write: Callable[[], object] | None = None,
    before_delete: Callable[[], object] | None = None,
) -> int:
    """Append ``target``'s staged lines to ``path`` (mode 0600, a wider one narrowed) once each;
    returns lines written.

    A symbolic link at ``path`` is not followed (`OSError` ELOOP, `SYMLINK_REFUSED`): the lines
    stay staged, the file it names untouched, as `crlbuilder outbox prune` refuses one.

    ``before_write`` and ``before_delete`` are called at the two moments a crash
    matters (the tests kill the process there).
    """
    todo = pending(store, target)
    if not todo:
        return 0
    with store.read() as r:
        last = r.outbox_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # locked as `crlbuilder outbox prune` locks it, and the file the name names once locked: a
    # prune that replaced the file meanwhile gets no line appended to the file it replaced
    try:
        fd = open_locked(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        # a link at the name is not followed: the lines (holder notifications naming serials)
        # would go to, and the 0600 below narrow, whatever file it names; they stay staged
        raise OSError(errno.ELOOP, SYMLINK_REFUSED, str(path)) from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:  # made before, or by hand: narrowed like the store
            os.fchmod(fd, 0o600)
        size, inode = st.st_size, (st.st_dev, st.st_ino)
        if last is None or last.path != str(path):
            # a file this store never wrote: nothing of ours in it yet; remember where ours
            # start before writing any, so a kill after the write is seen in the tail
            last = sf.OutboxFile(path=str(path), size=size, inode=inode, mtime=st.st_mtime_ns)
            with Commit(store) as c:
                c.put_outbox_file(target, last)
        # another file under the name (pruned: `crlbuilder.outboxprune`), or a shorter one
        # (rotated away by hand, started anew): read whole for the lines already in it. So is
        # one known by no inode (a store an earlier release wrote: pruned while the builder was
        # stopped, it may be as long as remembered and its tail not where ours start), and one
        # modified since (a kill's line; or pruned twice, the new file under the inode reused)
        replaced = (
            last.inode is None
            or last.inode != inode
            or (last.mtime is not None and last.mtime != st.st_mtime_ns)
        )
        start = last.size if last.size <= size and not replaced else 0
        tail = os.pread(fd, size - start, start) if size > start else b""
        present = {key_of(line) for line in tail.split(b"\n") if line}
        present.discard(None)
        out = bytearray()
        if size and os.pread(fd, 1, size - 1) != b"\n":
            out += b"\n"  # a line cut by a kill: ours is written whole on its own line
        written = 0
        for _, line in todo:
            if key_of(line) not in present:
                out += line + b"\n"
                written += 1
        if before_write is not None:
            before_write()
        view = memoryview(bytes(out))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if before_delete is not None:
        before_delete()
    with Commit(store) as c:
        c.unstage(k for k, _ in todo)
        c.put_outbox_file(
            target,
            sf.OutboxFile(path=str(path), size=after.st_size, inode=inode, mtime=after.st_mtime_ns),
        )
    return written
