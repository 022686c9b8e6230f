"""The changes feed's counted marks in their own environment (`responder.v1.markdb`): written
while a watch batch holds the lists' write lock, without fsync where the boot is known, kept
across a restart of the responder and not across a boot of the machine (a machine that
stopped may have kept marks that cover counts the ledger lost, or half a transaction)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from crlbuilder.store import format as sf
from responder.v1.markdb import boot_id
from responder.v1.watchdb import LmdbWatchSet, WatchDbError
from responder.v1.watchset import WatchKeys

KEYS = WatchKeys(bytes(range(32)))
MARK = b"g" * 8 + sf.status_key(11, 0x7E57_0001)


def _open(where: Path, boot: str | None) -> LmdbWatchSet:
    return LmdbWatchSet(where, KEYS, map_size=1 << 24, boot=lambda: boot)


def _stored(lists: LmdbWatchSet) -> bytes | None:
    seen: list[bytes | None] = []
    lists.count_once("sig", lambda kept, _gen: seen.append(kept) or kept)
    assert lists.mark("sig") == seen[0]
    return seen[0]


def test_a_mark_is_written_while_a_watch_batch_holds_the_lists_write_lock(tmp_path: Path) -> None:
    lists = _open(tmp_path / "watch", "boot-1")
    lists.update("sig", [sf.status_key(11, 1)], [], limit=10)
    gen = lists.generation("sig")
    held, release = threading.Event(), threading.Event()

    def batch() -> None:  # a POST /v1/watch of 10,000 entries, between its begin and commit
        with lists._env.begin(write=True):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=batch)
    holder.start()
    assert held.wait(10)
    gens: list[bytes] = []
    counting = threading.Thread(
        target=lists.count_once, args=("sig", lambda _kept, g: gens.append(g) or MARK)
    )
    counting.start()
    counting.join(10)
    written = not counting.is_alive()
    release.set()
    holder.join()
    counting.join()
    assert written  # did not wait for the batch's commit
    assert gens == [gen] and _stored(lists) == MARK
    lists.close()


def test_the_marks_are_written_without_fsync_only_where_the_boot_is_known(tmp_path: Path) -> None:
    known = _open(tmp_path / "a", "boot-1")
    assert known._marks._env.flags()["sync"] is False
    assert known._env.flags()["sync"] is True  # the lists themselves: durable, as before
    known.close()
    unknown = _open(tmp_path / "b", None)
    assert unknown._marks._env.flags()["sync"] is True
    unknown.close()


def test_a_mark_is_kept_across_a_restart_and_forgotten_at_another_boot(tmp_path: Path) -> None:
    where = tmp_path / "watch"
    lists = _open(where, "boot-1")
    lists.update("sig", [sf.status_key(11, 1)], [], limit=10)
    lists.count_once("sig", lambda _kept, _gen: MARK)
    lists.close()
    lists = _open(where, "boot-1")  # the responder restarted
    assert _stored(lists) == MARK
    lists.close()
    (where / "marks" / "data.mdb").write_bytes(b"\xff" * 8192)  # half written at a power cut
    lists = _open(where, "boot-2")  # the machine restarted
    assert _stored(lists) is None
    assert lists.count("sig") == 1 and lists.watched("sig", [sf.status_key(11, 1)]) == [True]
    lists.count_once("sig", lambda _kept, _gen: MARK)
    lists.close()
    lists = _open(where, "boot-2")
    assert _stored(lists) == MARK
    lists.close()


def test_the_marks_are_private_and_the_boot_is_the_kernels(tmp_path: Path) -> None:
    lists = _open(tmp_path / "watch", "boot-1")
    lists.count_once("sig", lambda _kept, _gen: MARK)
    lists.close()
    marks = tmp_path / "watch" / "marks"
    assert marks.stat().st_mode & 0o777 == 0o700
    for p in marks.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600, p
    assert MARK[8:] not in (marks / "data.mdb").read_bytes()
    assert boot_id(tmp_path / "none") is None
    (tmp_path / "id").write_text("1c3d\n")
    assert boot_id(tmp_path / "id") == "1c3d"


def test_marks_written_without_fsync_are_forgotten_when_the_boot_can_no_longer_be_read(
    tmp_path: Path,
) -> None:
    """Marks written without fsync under a known boot, opened where the boot cannot be read
    (the machine restarted with /proc/sys/kernel/random unreadable to the service: another
    sandbox, another container runtime) cannot be shown to be of this boot: they may be half
    written, or cover counts the ledger lost at the stop. They are forgotten, not trusted."""
    where = tmp_path / "watch"
    lists = _open(where, "boot-1")
    lists.update("sig", [sf.status_key(11, 1)], [], limit=10)
    lists.count_once("sig", lambda _kept, _gen: MARK)
    lists.close()
    lists = _open(where, None)
    assert _stored(lists) is None
    lists.count_once("sig", lambda _kept, _gen: MARK)  # now written with fsync: kept
    lists.close()
    lists = _open(where, None)
    assert lists._marks._env.flags()["sync"] is True and _stored(lists) == MARK
    lists.close()
    (where / "marks" / "data.mdb").write_bytes(b"\xff" * 8192)  # not of a known boot: not wiped
    lists = _open(where, "boot-1")
    assert _stored(lists) is None  # a boot file of none: another boot than this one
    lists.close()


def test_marks_half_written_before_the_boot_became_unreadable_do_not_close_the_lists(
    tmp_path: Path,
) -> None:
    where = tmp_path / "watch"
    lists = _open(where, "boot-1")
    lists.update("sig", [sf.status_key(11, 1)], [], limit=10)
    lists.count_once("sig", lambda _kept, _gen: MARK)
    lists.close()
    (where / "marks" / "data.mdb").write_bytes(b"\xff" * 8192)  # half written at a power cut
    lists = _open(where, None)
    assert _stored(lists) is None
    assert lists.count("sig") == 1
    lists.close()


def test_marks_that_cannot_be_opened_in_the_same_boot_say_they_may_be_removed(
    tmp_path: Path,
) -> None:
    """The lists cannot be used without their marks: the log says the marks alone may go."""
    where = tmp_path / "watch"
    lists = _open(where, "boot-1")
    lists.update("sig", [sf.status_key(11, 1)], [], limit=10)
    lists.close()
    (where / "marks" / "data.mdb").write_bytes(b"\xff" * 8192)  # a disk error, same boot
    try:
        _open(where, "boot-1")
    except WatchDbError as e:
        said = str(e)
    else:
        raise AssertionError("opened")
    assert f"remove {where / 'marks'}" in said and "counted again" in said, said
    shutil.rmtree(where / "marks")  # what it says to do
    lists = _open(where, "boot-1")
    assert lists.count("sig") == 1 and _stored(lists) is None
    lists.close()
