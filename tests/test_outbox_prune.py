"""The notices and quarantine files end by an operator's prune through what was read.

`crlbuilder.outboxprune`: a mark (whole lines and their digest) is taken, the lines it covers
read, then taken off the front; a stale mark changes nothing; a delivery of the builder
(`crlbuilder.outbox.deliver`) never appends to a file a prune replaced, and reads a replaced
file whole for the lines already in it.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

import msgspec
import pytest

from crlbuilder import outbox, outboxprune
from crlbuilder.cli import main as crlbuilder_main
from crlbuilder.outboxprune import Mark, MarkRefused, mark_of, parse_mark, pruned
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from tests.test_apply import H1, H2, World, holder_set, run_killed, ts


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.apply(holder_set(H1) + holder_set(H2, base=200))
    return w


def _error(rid: str, serial: int) -> dict[str, object]:
    """A recording error (記録誤り, Act §13) of a sign-card certificate: one holder notification."""
    return {"type": "recording-error", "id": rid, "recorded_at": ts(9), "serial": serial,
            "issuer": "sign-card-g1"}  # fmt: skip


def _marked_then_killed(world: World, late: str) -> tuple[Path, Mark]:
    """A notice delivered and marked (the mark returned), the store closed, then a builder
    killed after appending the notice ``late`` to the file and before the store knew of it."""
    notices = world.tmp / "notices.jsonl"
    world.apply([_error("err-1", 101)])
    mark = outboxprune.take_mark(notices)
    world.store.close()
    (world.tmp / "late.jsonl").write_bytes(msgspec.json.encode(_error(late, 201)) + b"\n")
    run_killed(world.tmp, "notices-before-delete", "late.jsonl")
    return notices, mark


def _notices(path: Path) -> list[str]:
    return [str(msgspec.json.decode(line)["record_id"]) for line in path.read_bytes().splitlines()]


def test_a_mark_covers_whole_lines_only_and_is_refused_once_the_start_changed() -> None:
    data = b'{"a":1}\n{"b":2}\n{"c":'  # the last line cut by a kill (or being written)
    mark = mark_of(data)
    assert mark.lines == 2 and parse_mark(str(mark)) == mark
    assert pruned(data, mark) == b'{"c":'
    assert pruned(data + b'3}\n{"d":4}\n', mark) == b'{"c":3}\n{"d":4}\n'  # appended since: kept
    with pytest.raises(MarkRefused, match="fewer than the mark's 2"):
        pruned(b'{"b":2}\n', mark)  # pruned already
    with pytest.raises(MarkRefused, match="not those the mark was taken of"):
        pruned(b'{"a":1}\n{"x":2}\n{"c":3}\n', mark)  # edited, same number of lines
    assert pruned(b"", mark_of(b"")) == b""
    for bad in ("", "2", "2:abc", "-1:" + "0" * 32, "02:" + "0" * 32, "2:" + "A" * 32):
        with pytest.raises(ValueError, match="a mark is"):
            parse_mark(bad)


def test_prune_takes_off_what_was_read_and_keeps_a_notice_delivered_after_the_mark(
    world: World, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """The notices file is the 機構's channel: a notice the builder delivers after the mark was
    taken is not in what was read and stays; the file stays 0600."""
    notices = world.tmp / "notices.jsonl"
    world.apply([_error("err-1", 101), _error("err-2", 201)])
    assert crlbuilder_main(["outbox", "mark", "--file", str(notices)]) == 0
    mark = capsysbinary.readouterr().out.decode().strip()
    world.apply([{**_error("err-3", 202), "issuer": "auth-card-g1"}])
    assert _notices(notices) == ["err-1", "err-2", "err-3"]
    assert crlbuilder_main(["outbox", "read", "--file", str(notices), "--mark", mark]) == 0
    read = capsysbinary.readouterr().out
    assert [msgspec.json.decode(x)["record_id"] for x in read.splitlines()] == ["err-1", "err-2"]
    assert crlbuilder_main(["outbox", "prune", "--file", str(notices), "--mark", mark]) == 0
    assert b"2 lines pruned" in capsysbinary.readouterr().out
    assert _notices(notices) == ["err-3"]
    assert stat.S_IMODE(notices.stat().st_mode) == 0o600
    # the same mark again: the file's start is another now; refused, nothing changed
    before = notices.read_bytes()
    assert crlbuilder_main(["outbox", "prune", "--file", str(notices), "--mark", mark]) == 2
    assert b"nothing pruned" in capsysbinary.readouterr().err
    assert notices.read_bytes() == before
    # and the builder goes on: a replay delivers nothing again, a new notice is appended
    world.apply([_error("err-1", 101)])
    assert _notices(notices) == ["err-3"]
    world.apply([{**_error("err-5", 102), "issuer": "auth-card-g1"}])
    assert _notices(notices) == ["err-3", "err-5"]


def test_the_quarantine_file_is_pruned_the_same_way(world: World) -> None:
    quarantine = world.tmp / "quarantine.jsonl"
    world.apply([{"type": "revocation-request", "id": f"q-{i}", "recorded_at": ts(9),
                  "serial": 9000 + i, "issuer": "auth-card-g1", "reason": "loss"}
                 for i in range(3)])  # fmt: skip
    mark = outboxprune.take_mark(quarantine)
    assert mark.lines == 3
    assert outboxprune.prune(quarantine, mark) == 3
    assert quarantine.read_bytes() == b""
    world.apply([{"type": "revocation-request", "id": "q-9", "recorded_at": ts(9),
                  "serial": 9999, "issuer": "auth-card-g1", "reason": "loss"}])  # fmt: skip
    assert [e["id"] for e in world.quarantined()] == ["q-9"]


def test_a_delivery_that_opened_the_file_before_a_prune_replaced_it_appends_to_the_new_file(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune renames a new file over the old one; a delivery that had the old one open
    appended its notice there, to a file no longer under the name: the notice was lost (deleted
    from the store's outbox as delivered). Now it takes the file's lock and opens the name again."""
    notices = world.tmp / "notices.jsonl"
    world.apply([_error("err-1", 101)])
    mark = outboxprune.take_mark(notices)
    real_open = os.open
    raced: list[bool] = []

    def open_then_prune(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if not raced and os.fspath(path) == os.fspath(notices):
            raced.append(True)  # the delivery has the file open: the operator prunes now
            outboxprune.prune(notices, mark)
        return fd

    monkeypatch.setattr(os, "open", open_then_prune)
    world.apply([_error("err-2", 201)])
    monkeypatch.undo()
    assert raced
    assert _notices(notices) == ["err-2"]


@pytest.mark.integration  # a builder process killed mid-delivery
def test_a_delivery_cut_by_a_kill_and_then_pruned_is_not_written_twice(world: World) -> None:
    """Killed after appending a notice, before the store knew: the restart finds it in the file.
    A prune in between replaced the file by one as long as the store remembered: known by its
    size alone, the new file's lines were taken for lines of the old, the notice not seen in
    it, and written a second time. The store now knows the file by its inode as well."""
    notices, mark = _marked_then_killed(world, "err-2")
    assert _notices(notices) == ["err-1", "err-2"]  # written, still staged in the store
    assert outboxprune.prune(notices, mark) == 1
    world.store = Store.open(world.tmp / "store", readonly=False, map_size=1 << 26)
    world.apply([])  # the restart delivers what is staged
    assert _notices(notices) == ["err-2"]


@pytest.mark.real_clock  # waits a moment on a lock
def test_a_prune_waits_for_the_lock_a_delivery_holds(tmp_path: Path) -> None:
    path = tmp_path / "notices.jsonl"
    path.write_bytes(b'{"record_id":"a"}\n{"record_id":"b"}\n')
    mark = outboxprune.take_mark(path)
    path.write_bytes(path.read_bytes() + b'{"record_id":"c"}\n')
    held = os.open(path, os.O_RDWR | os.O_APPEND)
    fcntl.flock(held, fcntl.LOCK_EX)  # a delivery appending
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(outboxprune.prune(path, mark)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not done
    os.write(held, b'{"record_id":"d"}\n')  # the delivery's line, appended under its lock
    os.close(held)
    t.join(10)
    assert done == [2]
    assert path.read_bytes() == b'{"record_id":"c"}\n{"record_id":"d"}\n'


def test_a_symbolic_link_is_refused_nothing_pruned(tmp_path: Path) -> None:
    """Renamed over, the link would be replaced and the lines stay in the file it names."""
    target = tmp_path / "real.jsonl"
    target.write_bytes(b"x\ny\n")
    link = tmp_path / "notices.jsonl"
    link.symlink_to(target)
    mark = outboxprune.take_mark(link)
    assert crlbuilder_main(["outbox", "prune", "--file", str(link), "--mark", str(mark)]) == 2
    assert link.is_symlink() and target.read_bytes() == b"x\ny\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another user")
def test_the_pruned_file_keeps_its_owner(tmp_path: Path) -> None:
    """Pruned by root, the file stays the builder's (uid 65534 here), or the builder could no
    longer append to it."""
    path = tmp_path / "quarantine.jsonl"
    path.write_bytes(b"x\ny\n")
    os.chown(path, 65534, 65534)
    path.chmod(0o600)
    outboxprune.prune(path, Mark(lines=1, digest=mark_of(b"x\n").digest))
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
    assert path.read_bytes() == b"y\n"


@pytest.mark.integration  # a builder process killed mid-delivery
def test_a_delivery_of_an_earlier_release_cut_by_a_kill_then_pruned_is_not_written_twice(
    world: World,
) -> None:
    """The upgrade path: a store an earlier release wrote knows the file by its size alone (no
    inode). That release killed after appending a notice, the operator prunes while the builder
    is stopped for the upgrade, and the pruned file is still as long as the size remembered: the
    first delivery of this release read it from that size, in the middle of the notice, did not
    see it, and wrote it a second time. A file known by no inode is now read whole."""
    notices, mark = _marked_then_killed(world, "err-2-of-a-longer-record-id")
    world.store = Store.open(world.tmp / "store", readonly=False, map_size=1 << 26)
    with world.store.read() as r:
        delivered = r.outbox_file(outbox.NOTICES)
    assert delivered is not None and delivered.inode is not None
    with Commit(world.store) as c:  # as the earlier release wrote it: no inode
        c.put_outbox_file(outbox.NOTICES, sf.OutboxFile(path=delivered.path, size=delivered.size))
    assert outboxprune.prune(notices, mark) == 1
    assert notices.stat().st_size >= delivered.size  # the case: not shorter than remembered
    world.apply([])  # the restart delivers what is staged
    assert _notices(notices) == ["err-2-of-a-longer-record-id"]


def test_a_file_with_another_hard_link_is_refused_nothing_pruned(tmp_path: Path) -> None:
    """As a symbolic link: the new file renamed over this name, the lines read stay in the file
    under the other name (a copy the operator may not know of, or the name the builder
    appends to), personal data in clear the prune was to take off."""
    path = tmp_path / "notices.jsonl"
    path.write_bytes(b"x\ny\n")
    other = tmp_path / "notices.copy"
    os.link(path, other)
    mark = outboxprune.take_mark(path)
    with pytest.raises(outboxprune.PruneRefused, match="hard link"):
        outboxprune.prune(path, mark)
    assert crlbuilder_main(["outbox", "prune", "--file", str(path), "--mark", str(mark)]) == 2
    assert path.read_bytes() == b"x\ny\n" and os.path.samefile(path, other)


@pytest.mark.integration  # a builder process killed mid-delivery
def test_a_delivery_cut_by_a_kill_then_pruned_into_a_reused_inode_is_not_written_twice(
    world: World,
) -> None:
    """Pruned twice while the builder was stopped after a kill, the file may come back under the
    inode the store remembers (a filesystem reuses a freed inode number): known by its inode and
    size, the new file's tail was read from the size remembered, in the middle of the killed
    delivery's notice, and the notice written twice. The store now knows the file's mtime too."""
    notices, mark = _marked_then_killed(world, "err-2-of-a-longer-record-id")
    assert outboxprune.prune(notices, mark) == 1
    world.store = Store.open(world.tmp / "store", readonly=False, map_size=1 << 26)
    with world.store.read() as r:
        delivered = r.outbox_file(outbox.NOTICES)
    assert delivered is not None
    reused = os.stat(notices)
    with Commit(world.store) as c:  # the pruned file under the inode remembered
        c.put_outbox_file(
            outbox.NOTICES,
            sf.OutboxFile(path=delivered.path, size=delivered.size,
                          inode=(reused.st_dev, reused.st_ino), mtime=delivered.mtime),
        )  # fmt: skip
    assert reused.st_size >= delivered.size
    world.apply([])  # the restart delivers what is staged
    assert _notices(notices) == ["err-2-of-a-longer-record-id"]


def test_a_prune_sweeps_the_temporary_a_killed_prune_left(tmp_path: Path) -> None:
    """A prune killed between writing the new file and renaming it left it beside the file
    (``.notices.jsonl.PID.HEX.tmp``: the lines kept, serials in clear) for good: nothing swept
    it. The next prune removes its own stale temporaries first, as the product's other writers
    do (`atomicfile.sweep_own`); another file's are not touched."""
    path = tmp_path / "notices.jsonl"
    path.write_bytes(b"x\ny\n")
    left = tmp_path / ".notices.jsonl.4242.0badcafe.tmp"
    left.write_bytes(b"y\n")
    other = tmp_path / ".quarantine.jsonl.4242.0badcafe.tmp"
    other.write_bytes(b"q\n")
    for p in (left, other):
        os.utime(p, (0, 0))  # long before any clock this test runs under
    assert outboxprune.prune(path, outboxprune.take_mark(path)) == 2
    assert not left.exists() and other.exists()


def test_a_delivery_does_not_follow_a_symbolic_link_and_keeps_its_lines_staged(
    world: World,
) -> None:
    """A link at the notices file's name: the file it names is neither written nor narrowed
    (a root builder would append serials to, and chmod, whatever it names); the notice stays
    staged and goes out once the name is a file again."""
    notices = world.tmp / "notices.jsonl"
    victim = world.tmp / "victim"
    victim.write_bytes(b"kept\n")
    victim.chmod(0o644)
    notices.symlink_to(victim)
    with pytest.raises(OSError, match="a symbolic link, not followed") as refused:
        world.apply([_error("err-1", 101)])
    assert refused.value.filename == str(notices)
    assert victim.read_bytes() == b"kept\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert len(outbox.pending(world.store, outbox.NOTICES)) == 1
    notices.unlink()
    world.apply([])
    assert _notices(notices) == ["err-1"] and not outbox.pending(world.store, outbox.NOTICES)
