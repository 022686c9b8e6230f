"""The hash-chained log (動作の記録, Ord §73(3)): any edit, deletion or reordering is detected.

One implementation (`crlbuilder.auditlog`) serves the registry's audit log and the key
operation log; a registry audit log written before the move still verifies.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from pathlib import Path

import msgspec
import pytest

from crlbuilder.auditlog import (
    ZERO_HASH,
    Anchor,
    ChainError,
    append_chained,
    line_hash,
    verify_chain,
)
from responder.cli import main as responder_main
from responder.registry.audit import verify_audit


class Rec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    seq: int
    what: str
    prev: str


def write_log(path: Path, n: int) -> Anchor:
    anchor = Anchor(0, ZERO_HASH)
    for i in range(n):
        anchor = append_chained(path, [Rec(seq=0, what=f"op {i}", prev="")])
    return anchor


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_append_numbers_chains_and_keeps_the_file_private(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "ops.jsonl"
    anchor = write_log(log, 3)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    recs = [msgspec.json.decode(x, type=Rec) for x in lines(log)]
    assert [r.seq for r in recs] == [1, 2, 3]
    assert recs[0].prev == ZERO_HASH
    assert recs[2].prev == line_hash(lines(log)[1].rstrip(b"\n"))
    report = verify_chain(log, Rec, anchor)
    assert report.problems == [] and report.records == 3 and report.anchor == anchor
    assert report.last is not None and report.last.what == "op 2"
    assert Anchor.parse(str(anchor)) == anchor


def test_an_edited_line_is_detected(tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    write_log(log, 4)
    ls = lines(log)
    ls[1] = ls[1].replace(b"op 1", b"op 9")
    log.write_bytes(b"".join(ls))
    report = verify_chain(log, Rec)
    assert report.problems and ":3: the chain is broken" in report.problems[0]


def test_a_deleted_line_is_detected(tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    write_log(log, 4)
    ls = lines(log)
    del ls[1]
    log.write_bytes(b"".join(ls))
    report = verify_chain(log, Rec)
    assert report.problems and ":2: the chain is broken" in report.problems[0]


def test_reordered_lines_are_detected(tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    write_log(log, 4)
    ls = lines(log)
    ls[1], ls[2] = ls[2], ls[1]
    log.write_bytes(b"".join(ls))
    report = verify_chain(log, Rec)
    assert report.problems and ":2: the chain is broken" in report.problems[0]


def test_the_tail_is_checked_against_an_anchor_kept_outside(tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    anchor = write_log(log, 3)
    good = log.read_bytes()
    # the last line edited: no later line shows it, the anchor does
    ls = lines(log)
    ls[2] = ls[2].replace(b"op 2", b"op 7")
    log.write_bytes(b"".join(ls))
    assert verify_chain(log, Rec).problems == []
    assert "rewritten" in verify_chain(log, Rec, anchor).problems[0]
    # the tail cut off
    log.write_bytes(b"".join(lines(log)[:2]))
    assert "cut off" in verify_chain(log, Rec, anchor).problems[0]
    # a log that grew after the anchor still verifies against it
    log.write_bytes(good)
    write_log(log, 1)
    assert verify_chain(log, Rec, anchor).problems == []


def test_a_partial_last_line_refuses_appends_and_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "ops.jsonl"
    write_log(log, 2)
    log.write_bytes(log.read_bytes() + b'{"seq":')
    before = log.read_bytes()
    with pytest.raises(ChainError, match="partial line"):
        append_chained(log, [Rec(seq=0, what="x", prev="")])
    assert log.read_bytes() == before
    assert "partial" in verify_chain(log, Rec).problems[0]


def test_a_line_being_appended_is_not_read_as_a_partial_line(tmp_path: Path) -> None:
    """A ceremony (or a review) reading the log while a signing process appended its session
    line could read the line half written and call the log broken ("partial last line"):
    refused, and the security officer sent to set a healthy log aside. The reader waits for
    the append's lock and reads the line whole."""
    log = tmp_path / "ops.jsonl"
    write_log(log, 2)
    line = msgspec.json.encode(Rec(seq=3, what="op 2", prev=line_hash(lines(log)[-1][:-1])))
    half = threading.Event()
    found: list[list[str]] = []

    def writer() -> None:  # what append_chained does, slowed down between two writes
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line[:20])
            half.set()
            time.sleep(0.5)
            os.write(fd, line[20:] + b"\n")
        finally:
            os.close(fd)

    t = threading.Thread(target=writer)
    t.start()
    assert half.wait(10)
    found.append(verify_chain(log, Rec).problems)
    t.join()
    assert found == [[]]
    assert verify_chain(log, Rec).records == 3


OLD_REGISTRY_AUDIT = b"""\
{"seq":1,"at":"2026-12-04T19:23:08.949730+00:00","actor":"tester","action":"add","party":"a","before":null,"after":{"x":1},"registry_sha256":"abababababababababababababababababababababababababababababababab","prev":"0000000000000000000000000000000000000000000000000000000000000000"}
{"seq":2,"at":"2026-12-04T19:23:08.949730+00:00","actor":"tester","action":"add","party":"b","before":{"y":2},"after":null,"registry_sha256":"abababababababababababababababababababababababababababababababab","prev":"4272c01dbe08469383ef004c0ba2e43fd27cb83c37aeccd91b84247a8825720e"}
{"seq":3,"at":"2026-12-04T19:23:08.952891+00:00","actor":"tester","action":"update","party":"a","before":{"x":1},"after":{"x":2},"registry_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","prev":"fc8e59cec4a8dff1cbafa3ffe3f8c30e3a615859be1235a2333b4fd2716df0c9"}
"""
"""Three lines written by `responder.registry.audit` before its chain moved to crlbuilder."""


def test_a_registry_audit_log_written_before_the_move_still_verifies(tmp_path: Path) -> None:
    log = tmp_path / "registry.audit.jsonl"
    log.write_bytes(OLD_REGISTRY_AUDIT)
    report = verify_audit(log)
    assert report.problems == [] and report.records == 3
    assert report.head == line_hash(OLD_REGISTRY_AUDIT.splitlines()[-1])
    assert responder_main(["registry", "verify-audit", "--audit", str(log)]) == 0
    log.write_bytes(
        OLD_REGISTRY_AUDIT.replace(b'"x":2', b'"x":3', 1).replace(b'"x":1}', b'"x":0}', 1)
    )
    assert verify_audit(log).problems
    assert responder_main(["registry", "verify-audit", "--audit", str(log)]) == 1


def test_a_link_or_a_non_file_in_the_logs_place_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    """A symbolic link where the log was would send the chained lines (and their anchor) into
    another file, whose chain the next verify reads as this log's: refused, as a directory."""
    elsewhere = tmp_path / "elsewhere.jsonl"
    write_log(elsewhere, 2)
    before = elsewhere.read_bytes()
    log = tmp_path / "ops.jsonl"
    log.symlink_to(elsewhere)
    with pytest.raises(ChainError, match="symbolic link"):
        append_chained(log, [Rec(seq=0, what="x", prev="")])
    assert elsewhere.read_bytes() == before and log.is_symlink()
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(ChainError, match="symbolic link"):
        append_chained(dangling, [Rec(seq=0, what="x", prev="")])
    assert not (tmp_path / "nowhere.jsonl").exists()
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises((ChainError, IsADirectoryError)):
        append_chained(tmp_path / "dir.jsonl", [Rec(seq=0, what="x", prev="")])
