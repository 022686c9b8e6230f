"""The follow loop takes a spool file only whole: one still being written in place (not renamed
in, as docs/operations.md asks) is neither half applied nor removed with its later lines."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import msgspec
import pytest

from crlbuilder import build
from crlbuilder.build import Builder
from crlbuilder.ingest import MAX_LINE, Located, Rejected, read_file
from crlbuilder.manifest import Manifest
from crlbuilder.spoolfile import Look, Settling, unchanged
from tests.support.builder import builder_config


def _issuance(i: int) -> bytes:
    return msgspec.json.encode(
        {"type": "issuance", "id": f"w-{i}", "recorded_at": "2026-01-05T09:00:00+09:00",
         "serial": 1000 + i, "family": "auth-card", "issuer": "auth-card-g1",
         "not_before": "2026-01-05T09:00:00+09:00", "not_after": "2030-01-05T09:00:00+09:00",
         "holder": f"{i:064x}"}
    )  # fmt: skip


def _events(log: io.StringIO) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in log.getvalue().splitlines()]


def test_a_file_cut_mid_line_waits_until_whole(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg = builder_config(tmp_path, demo_pki[0])
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    lines = [_issuance(i) for i in range(4)]
    f = spool / "0001.jsonl"
    f.write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + lines[2][:30])  # a writer mid-line
    later = spool / "0002.jsonl"
    later.write_bytes(lines[3] + b"\n")  # renamed in whole, but after 0001 in name order
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    b.spool_settle = 3600.0  # the writer is still at it however slow this machine is
    try:
        b.follow(spool, 0.05, max_idle=0.3)
        assert f.exists() and later.exists()  # nothing removed, 0002 not taken before 0001
        assert not Path(cfg.input.quarantine).exists()  # the cut line is not quarantined
        warned = [e for e in _events(log) if e["event"] == "warning" and "0001" in str(e)]
        assert len(warned) == 1 and "still being written" in str(warned[0]["message"])
        with f.open("ab") as w:  # the writer finishes
            w.write(lines[2][30:] + b"\n")
        b.follow(spool, 0.05, max_idle=0.3)
    finally:
        b.close()
    assert not f.exists() and not later.exists()
    files = [e for e in _events(log) if e["event"] == "spool-file"]
    assert [(e["file"], e["applied"]) for e in files] == [("0001.jsonl", 3), ("0002.jsonl", 1)]
    assert not Path(cfg.input.quarantine).exists()


def test_a_file_with_no_last_line_end_is_taken_once_seen_unchanged_long_enough() -> None:
    """Settled by the loop's own monotonic clock from when it first saw the file so, never by
    the file's mtime against the wall clock: an mtime long past (a clock stepped ahead, a
    writer's clock behind, libfaketime's shifted suite) made a file being written look settled
    at once, and it was taken cut."""
    s = Settling()
    cut = Look(size=10, mtime_ns=1_000_000_000, ends_line=False)  # an mtime in 2001
    assert not s.whole("a.jsonl", cut, now=100.0, settle=2.0)  # first seen: not yet
    assert not s.whole("a.jsonl", cut, now=101.9, settle=2.0)
    assert s.whole("a.jsonl", cut, now=102.0, settle=2.0)
    grown = Look(size=20, mtime_ns=1_000_000_001, ends_line=False)
    assert not s.whole("a.jsonl", grown, now=103.0, settle=2.0)  # changed: from now again
    assert s.whole("a.jsonl", grown, now=105.0, settle=2.0)
    s.keep_only(set())  # gone from the spool: a file renamed in later under the name starts anew
    assert not s.whole("a.jsonl", grown, now=200.0, settle=2.0)
    assert s.whole("b.jsonl", Look(size=10, mtime_ns=1, ends_line=True), now=0.0, settle=2.0)
    assert s.whole("c.jsonl", Look(size=0, mtime_ns=1, ends_line=True), now=0.0, settle=2.0)


def test_a_file_that_changed_while_read_is_not_removed() -> None:
    before = Look(size=10, mtime_ns=5, ends_line=True)
    assert unchanged(before, Look(size=10, mtime_ns=5, ends_line=True))
    assert not unchanged(before, Look(size=20, mtime_ns=6, ends_line=True))
    assert not unchanged(before, Look(size=10, mtime_ns=6, ends_line=True))  # rewritten
    assert unchanged(before, None)  # gone meanwhile: nothing left to remove


def test_a_file_renamed_in_again_while_the_first_was_read_is_not_removed_unread() -> None:
    """The same name renamed in twice: the second file (another inode, even of the same size
    and time) is read at the next turn, not removed in place of the first."""
    first = Look(size=10, mtime_ns=5, ends_line=True, inode=(1, 100))
    assert unchanged(first, Look(size=10, mtime_ns=5, ends_line=True, inode=(1, 100)))
    assert not unchanged(first, Look(size=10, mtime_ns=5, ends_line=True, inode=(1, 101)))


def test_read_file_stops_at_the_size_it_was_given(tmp_path: Path) -> None:
    """Lines written after the loop looked at the file are left for its next reading."""
    p = tmp_path / "x.jsonl"
    p.write_bytes(_issuance(0) + b"\n" + _issuance(1) + b"\n" + _issuance(2)[:20])
    size = len(_issuance(0)) + 1
    items = list(read_file(p, limit=size))
    assert [i.line for i in items] == [1] and isinstance(items[0], Located)


def test_a_huge_line_is_refused_without_being_held_in_memory(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    with p.open("wb") as w:
        w.write(b'{"id":"' + b"a" * (8 * MAX_LINE) + b"\n")
        w.write(_issuance(1) + b"\n")
    tracemalloc.start()
    try:
        items = list(read_file(p))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE
    assert isinstance(items[0], Rejected) and items[0].line == 1
    assert items[0].reason == f"line longer than {MAX_LINE} bytes"
    assert isinstance(items[1], Located) and items[1].line == 2


def _revocation_file(spool: Path, name: str, i: int) -> Path:
    p = spool / name
    p.write_bytes(_issuance(i) + b"\n")
    return p


def test_a_symlink_in_the_spool_is_left_alone_and_blocks_nothing(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A link is not followed: not read, not chmod-ed through (with done/ kept) nor moved."""
    cfg = builder_config(tmp_path, demo_pki[0])
    cfg.input.spool_keep_seconds = 3600
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    target = _revocation_file(tmp_path, "elsewhere.jsonl", 0)
    target.chmod(0o644)
    (spool / "0001.jsonl").symlink_to(target)
    _revocation_file(spool, "0002.jsonl", 1)
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        b.follow(spool, 0.05, max_idle=0.3)  # several turns, said once
    finally:
        b.close()
    assert (spool / "0001.jsonl").is_symlink() and target.stat().st_mode & 0o777 == 0o644
    files = [(e["file"], e["applied"]) for e in _events(log) if e["event"] == "spool-file"]
    assert files == [("0002.jsonl", 1)]
    warned = [str(e["message"]) for e in _events(log) if e["event"] == "warning"
              and "0001" in str(e["message"])]  # fmt: skip
    assert warned == ["0001.jsonl: a symbolic link, not applied: rename record files into the "
                      "spool (docs/operations.md)"]  # fmt: skip


def test_an_unreadable_spool_file_is_said_and_blocks_nothing(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feeder's file the builder may not read (mode 0600 under the feeder's user) stops
    neither the loop nor the files after it. The refusal is the kernel's; as root the test
    cannot provoke it, so `spoolfile.look` meets it as it would."""
    cfg = builder_config(tmp_path, demo_pki[0])
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    _revocation_file(spool, "0001.jsonl", 0)
    _revocation_file(spool, "0002.jsonl", 1)
    real = build.look

    def look(p: Path) -> Look | None:
        if p.name == "0001.jsonl":
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(build, "look", look)
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        b.follow(spool, 0.05, max_idle=0.3)
    finally:
        b.close()
    assert (spool / "0001.jsonl").exists() and not (spool / "0002.jsonl").exists()
    warned = [str(e["message"]) for e in _events(log) if e["event"] == "warning"
              and "0001" in str(e["message"])]  # fmt: skip
    assert warned == ["0001.jsonl: cannot be read (Permission denied), not applied: the "
                      "builder's user reads the spool's files (docs/operations.md)"]  # fmt: skip
