"""What a record file may hold beyond the schema: a UTF-8 byte order mark at its very start
(`ingest.lines`, for every reader: a build's files, the spool, ``crlbuilder publish``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from crlbuilder.ingest import BOM, Located, Rejected, read_file
from crlbuilder.stream import H_RECORD, StreamCipher, messages
from tests.test_apply import H1, KEY, World, issuance


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def line(rec: dict[str, object]) -> bytes:
    return msgspec.json.encode(rec)


def test_a_bom_at_the_start_of_a_file_is_taken_off_the_first_line(tmp_path: Path) -> None:
    first, second = issuance(101, "auth-card-g1", H1), issuance(102, "sign-card-g1", H1)
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + line(first) + b"\r\n" + line(second) + b"\n")
    items = list(read_file(path))
    assert [type(i) for i in items] == [Located, Located]
    assert [i.record.id for i in items if isinstance(i, Located)] == [first["id"], second["id"]]


def test_a_bom_anywhere_else_is_part_of_its_line_and_refused(tmp_path: Path) -> None:
    """Only the file's start: a mark inside a file (two files pasted together) is no JSON."""
    first, second = issuance(101, "auth-card-g1", H1), issuance(102, "sign-card-g1", H1)
    path = tmp_path / "pasted.jsonl"
    path.write_bytes(line(first) + b"\n" + BOM + line(second) + b"\n")
    a, b = read_file(path)
    assert isinstance(a, Located) and isinstance(b, Rejected)
    assert b.reason.startswith("not JSON") and b.line == 2


def test_a_file_with_a_bom_is_applied_whole(world: World) -> None:
    path = world.tmp / "bom.jsonl"
    path.write_bytes(BOM + line(issuance(101, "auth-card-g1", H1)) + b"\n")
    ap = world.apply_file(path)
    assert ap.summary.applied == 1 and world.quarantined() == []


def test_publish_takes_the_bom_off_too(tmp_path: Path) -> None:
    """``crlbuilder publish`` reads its files by the same lines: the first record keeps its id
    (the message names it), and the line sealed on the stream has no mark."""
    rec = issuance(101, "auth-card-g1", H1)
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + line(rec) + b"\n")
    cipher = StreamCipher(KEY)
    (m,) = messages(path, cipher, batch_size=10)
    assert m.headers[H_RECORD] == rec["id"]
    assert cipher.open(m.msg_id, m.payload) == line(rec)
