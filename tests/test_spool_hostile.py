"""The follow loop against a spool others write to: names swapped between its look and its read,
files removed under it, a second builder on the same spool.

Whoever may write the spool (the feeders' group, docs/operations.md) may rename anything over a
record file's name at any moment: a FIFO (read through the name, the loop waited for a writer for
ever: no file applied, no SIGTERM heard), a symbolic link (the loop read, or narrowed, another
file through it). The loop reads, and narrows, the file it looked at (`spoolfile.open_seen`), and
says once of a name that is no regular file that it is not applied. The swaps are made at the
moment that matters by wrapping `build.look`, which the loop calls before and after reading.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder import build
from crlbuilder.build import Builder, SpoolBusy
from crlbuilder.manifest import Manifest
from crlbuilder.spoolfile import Look
from crlbuilder.store import format as sf
from tests.conftest import BIN, Built
from tests.support.builder import as_of_the_clock, builder_config


def _issuance(i: int) -> bytes:
    return msgspec.json.encode(
        {"type": "issuance", "id": f"h-{i}", "recorded_at": "2026-01-05T09:00:00+09:00",
         "serial": 5000 + i, "family": "auth-card", "issuer": "auth-card-g1",
         "not_before": "2026-01-05T09:00:00+09:00", "not_after": "2030-01-05T09:00:00+09:00",
         "holder": f"{i + 7:064x}"}
    )  # fmt: skip


def _events(log: io.StringIO) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in log.getvalue().splitlines()]


def _good(b: Builder, i: int) -> bool:
    with b.store.read() as r:
        index = next(m.index for m in r.issuers() if m.id == "auth-card-g1")
        return r.status(sf.status_key(index, 5000 + i)) is not None


def _wrap_look(
    monkeypatch: pytest.MonkeyPatch, name: str, nth: int, then: Callable[[Path], None]
) -> None:
    """``then(path)`` right after the loop's ``nth`` look at ``name`` (the look sees the file)."""
    real, calls = build.look, [0]

    def look(p: Path) -> Look | None:
        seen = real(p)
        if p.name == name:
            calls[0] += 1
            if calls[0] == nth:
                then(p)
        return seen

    monkeypatch.setattr(build, "look", look)


def _run(b: Builder, spool: Path, unblock: Callable[[], None]) -> None:
    """``b.follow`` until idle (in this thread: it takes SIGTERM); a loop still running after
    30 s is stuck: ``unblock`` it, and fail."""
    hung = threading.Event()

    def watchdog() -> None:
        hung.set()
        unblock()

    timer = threading.Timer(30.0, watchdog)
    timer.start()
    try:
        b.follow(spool, 0.05, max_idle=0.5)
    finally:
        timer.cancel()
    assert not hung.is_set(), "the follow loop hung on the name swapped in (a FIFO opened)"


@pytest.fixture
def spooled(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> Iterator[tuple[Builder, Path, io.StringIO]]:
    cfg = builder_config(tmp_path, demo_pki[0])
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "0001.jsonl").write_bytes(_issuance(1) + b"\n")
    (spool / "0002.jsonl").write_bytes(_issuance(2) + b"\n")
    (spool / "0003.jsonl").write_bytes(_issuance(3) + b"\n")
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    yield b, spool, log
    b.close()


@pytest.mark.parametrize("swap", ["fifo", "symlink"])
def test_a_name_swapped_between_the_look_and_the_read_is_not_read_through(
    spooled: tuple[Builder, Path, io.StringIO], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, swap: str,
) -> None:  # fmt: skip
    """0002.jsonl is looked at as a record file, then a FIFO (or a link to a record file outside
    the spool) is renamed over it before it is read. Before: the FIFO hung the loop in open(2)
    (SIGTERM retried, not heard); the link had the file outside applied. Now neither is read,
    the name is said once not to be applied, and the files around it are applied."""
    b, spool, log = spooled
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(_issuance(9) + b"\n")
    fifo = spool / ".swap"

    def swap_in(p: Path) -> None:
        if swap == "fifo":
            os.mkfifo(fifo)
        else:
            fifo.symlink_to(outside)
        fifo.rename(p)

    def unblock() -> None:  # a writer that closes at once: the reader blocked in open(2) reads EOF
        os.close(os.open(spool / "0002.jsonl", os.O_WRONLY | os.O_NONBLOCK))

    _wrap_look(monkeypatch, "0002.jsonl", 1, swap_in)
    _run(b, spool, unblock)
    assert not _good(b, 9)  # nothing read through the link
    assert _good(b, 1) and _good(b, 3) and not _good(b, 2)  # 0002's own content was replaced
    assert os.path.lexists(spool / "0002.jsonl")  # left where it is
    assert not (spool / "0001.jsonl").exists() and not (spool / "0003.jsonl").exists()
    said = [str(e["message"]) for e in _events(log)
            if e["event"] == "warning" and "0002" in str(e["message"])]  # fmt: skip
    assert len(said) == 1 and "not applied" in said[0], said


def test_a_kept_file_is_narrowed_as_read_never_through_a_link_put_in_its_place(
    spooled: tuple[Builder, Path, io.StringIO], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``done/`` kept, an applied file is narrowed to 0600 before it is moved there. A link
    renamed over it after its last look had the link's target narrowed (chmod follows links):
    a file of another's, or the responder's, made unreadable. Now the file read is narrowed."""
    b, spool, _ = spooled
    b.cfg.input.spool_keep_seconds = 3600
    target = tmp_path / "someone-elses"
    target.write_bytes(b"x\n")
    target.chmod(0o644)
    first = spool / "0001.jsonl"
    first.chmod(0o644)
    held = os.open(first, os.O_RDONLY)  # the file as read, whatever its name names after
    link = spool / ".link"

    def swap_in(p: Path) -> None:
        link.symlink_to(target)
        link.rename(p)

    _wrap_look(monkeypatch, "0001.jsonl", 2, swap_in)  # 2nd look: after the read, before the move
    try:
        _run(b, spool, lambda: None)
        assert target.stat().st_mode & 0o777 == 0o644
        assert os.fstat(held).st_mode & 0o777 == 0o600
    finally:
        os.close(held)
    assert _good(b, 1)


@pytest.mark.parametrize("when", [1, 2])  # after the look before the read; after the read
def test_a_file_removed_while_it_is_applied_stops_nothing(
    spooled: tuple[Builder, Path, io.StringIO], monkeypatch: pytest.MonkeyPatch, when: int
) -> None:
    """An operator (or another process) removes a spool file the loop is taking. Before, the
    loop died (FileNotFoundError from its open, or from its own removal afterwards) and every
    file after it waited for a restart. Now the file is taken as far as it was read and the
    loop goes on."""
    b, spool, _ = spooled
    _wrap_look(monkeypatch, "0002.jsonl", when, lambda p: p.unlink())
    _run(b, spool, lambda: None)
    assert _good(b, 1) and _good(b, 3)
    assert _good(b, 2) == (when == 2)  # read before it went
    assert not list(spool.glob("*.jsonl"))


def test_a_second_builder_on_the_same_spool_is_refused(
    spooled: tuple[Builder, Path, io.StringIO], tmp_path: Path,
    demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Two builders of two stores (two configurations naming one spool) took turns at its files:
    each file applied to one store or the other (or to both, or the loop died removing a file
    the other removed), each store missing records with nothing said. The spool is locked by
    the loop that follows it; a second one is refused at once, naming the spool."""
    b, spool, _ = spooled
    other = tmp_path / "other"
    other.mkdir()
    second = Builder(builder_config(other, demo_pki[0]), progress=False, log=io.StringIO())
    real = build.SpoolWatch
    refused: list[SpoolBusy] = []
    started: list[Builder] = []

    def watch(*args: Any, **kw: Any) -> build.SpoolWatch:
        # the first loop holds the spool and has applied nothing yet: the second one starts
        if not started:
            started.append(second)
            try:
                second.follow(spool, 0.05, max_idle=0.3)
            except SpoolBusy as e:
                refused.append(e)
        return real(*args, **kw)

    monkeypatch.setattr(build, "SpoolWatch", watch)
    try:
        b.follow(spool, 0.05, max_idle=0.3)
        assert not _good(second, 1)  # the second read nothing
    finally:
        second.close()
    assert len(refused) == 1 and str(spool) in str(refused[0])
    assert not list(spool.glob("*.jsonl"))  # the first loop applied them all
    assert _good(b, 1) and _good(b, 2) and _good(b, 3)


@pytest.mark.integration  # runs the command
def test_build_follow_on_a_spool_another_builder_holds_exits_2_naming_it(
    built: Built, tmp_path: Path
) -> None:
    shutil.copytree(built.store, tmp_path / "store")
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    spool = tmp_path / "store-spool"  # builder_args's --spool
    spool.mkdir()
    held = os.open(spool, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another builder's loop holds it
        out = subprocess.run(
            [str(BIN / "crlbuilder"), "build", *args, "--follow", "--max-idle", "1"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        os.close(held)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"crlbuilder build: error: {spool}: another builder follows this spool" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_full_disk_under_the_quarantine_stops_no_record_and_its_lines_come_later(
    spooled: tuple[Builder, Path, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarantine file's disk is full (ENOSPC; the store's is not). Before, the loop died
    after the first commit that refused a line, and every start after died delivering it:
    no record of any later file was applied until someone freed the disk. Now the records go
    on being applied, the loop says once that the file cannot be written, and the lines it
    owes, staged in the store, are written once each when the disk has room again."""
    b, spool, log = spooled
    quarantine = b.quarantine.path
    (spool / "0002.jsonl").write_bytes(b'{"type":"issuance","id":"bad-1"}\n' + _issuance(2) + b"\n")
    real_write, full = os.write, [True]

    def write(fd: int, data: bytes | memoryview) -> int:
        if full[0] and os.readlink(f"/proc/self/fd/{fd}") == str(quarantine):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(quarantine))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    b.follow(spool, 0.05, max_idle=0.5)
    assert _good(b, 1) and _good(b, 2) and _good(b, 3)  # every file applied
    assert not list(spool.glob("*.jsonl"))
    said = [str(e["message"]) for e in _events(log)
            if e["event"] == "warning" and "written" in str(e["message"])]  # fmt: skip
    assert said == [f"{quarantine}: cannot be written (No space left on device): its lines stay "
                    "staged in the store and are written once it can be; records go on being "
                    "applied"], said  # fmt: skip
    assert not quarantine.exists() or b"bad-1" not in quarantine.read_bytes()
    full[0] = False  # room again: the next idle turn writes what is owed, once
    b.follow(spool, 0.05, max_idle=0.5)
    b.follow(spool, 0.05, max_idle=0.3)
    lines = [msgspec.json.decode(line) for line in quarantine.read_bytes().splitlines()]
    assert [(q["id"], q["file"], q["line"]) for q in lines] == [("bad-1", "0002.jsonl", 1)]


def test_a_file_made_unreadable_while_it_is_applied_stops_nothing(
    spooled: tuple[Builder, Path, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feeder narrows its file (chmod 0600, its own user) while the loop applies it: the look
    after the read is refused. Before, the loop died (PermissionError) and every file after it
    waited for a restart; now that file is left in the spool, said once, and the others go on.
    (As root the kernel refuses nothing: the look meets the refusal as it would.)"""
    b, spool, log = spooled
    real, calls = build.look, [0]

    def look(p: Path) -> Look | None:
        if p.name == "0002.jsonl":
            calls[0] += 1
            if calls[0] >= 2:
                raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(build, "look", look)
    _run(b, spool, lambda: None)
    assert _good(b, 1) and _good(b, 2) and _good(b, 3)
    assert (spool / "0002.jsonl").exists() and not (spool / "0003.jsonl").exists()
    said = [str(e["message"]) for e in _events(log)
            if e["event"] == "warning" and "0002" in str(e["message"])]  # fmt: skip
    assert len(said) == 1 and "cannot be read (Permission denied)" in said[0], said
