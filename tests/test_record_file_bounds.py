"""What a record file may hold beyond the schema: a UTF-8 byte order mark at its very start
(`ingest.lines`, for every reader: a build's files, the spool, ``crlbuilder publish``), and a
move-out notice's planned date (転出の予定年月日) within bounds (`rules.planned_date_refusal`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.ingest import BOM, Located, Rejected, read_file
from crlbuilder.rules import MAX_PLANNED_AHEAD_DAYS
from crlbuilder.stream import H_RECORD, StreamCipher, messages
from tests.test_apply import H1, KEY, World, issuance, rid, ts


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


def move_out(planned: date, made: str, recorded: str | None = None) -> dict[str, object]:
    rec: dict[str, object] = {
        "type": "resident-change", "id": rid(), "recorded_at": recorded or made, "holder": H1,
        "change": "move-out-notice", "planned_date": planned.isoformat(),
    }  # fmt: skip
    if recorded is not None:
        rec["notified_at"] = made
    return rec


def jst_day(at: str) -> date:
    return rules.jst_date(datetime.fromisoformat(at))


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (-rules.MAX_PLANNED_BEHIND_DAYS - 1, False),
        (-rules.MAX_PLANNED_BEHIND_DAYS, True),  # a 転出届 made after the move
        (-1, True),
        (0, True),
        (14, True),
        (MAX_PLANNED_AHEAD_DAYS, True),
        (MAX_PLANNED_AHEAD_DAYS + 1, False),
    ],
)
def test_the_planned_date_is_from_two_weeks_before_the_notice_to_a_year_on(
    world: World, offset: int, ok: bool
) -> None:
    """Counted from the JST day the notice was made (``notified_at``, its record read a month
    later), not from its record: 23:30 UTC is the next JST day."""
    made = ts(0.98)  # 2024-01-10T23:31Z: 2024-01-11 in Japan
    rec = move_out(jst_day(made) + timedelta(days=offset), made, recorded=ts(30))
    ap = world.apply([rec])
    assert ap.summary.applied == int(ok)
    refused = world.quarantined()
    assert [q["field"] for q in refused] == ([] if ok else ["$.planned_date"])
    if not ok:
        assert "planned move-out date" in str(refused[0]["reason"])


def test_a_planned_date_at_the_calendars_end_is_refused_not_left_to_crash_the_sweep(
    world: World,
) -> None:
    """A notice planned on 9999-12-31 was applied and then every lapse sweep (each build)
    failed on its lapse's instant, which is no date: refused at the record now."""
    made = "9999-12-20T10:00:00+09:00"
    ap = world.apply([move_out(date(9999, 12, 31), made)])
    assert ap.summary.applied == 0
    assert [q["field"] for q in world.quarantined()] == ["$.planned_date"]
    ap.sweep_lapses(datetime.fromisoformat(ts(2)))  # nothing pending: nothing to fail on
