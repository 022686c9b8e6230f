"""An in-process builder whose clock is the real one shifted, given records of its own, to
show what `build --follow` does when idle (a timer on the retention agenda): `ShiftedClock`,
`records_builder`, `logged_events` (tests/test_retention.py, tests/test_facts_expiry.py;
`ShiftedClock` also for the stream's signer and its consumer, tests/test_stream.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from crlbuilder.build import Builder
from crlbuilder.config import BuilderConfig


class ShiftedClock:
    """The real clock shifted so that it reads ``at`` now; `move_to` shifts it again. It runs
    on at the real pace, which the follow loop's timed waits need."""

    def __init__(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move_to(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)


@contextlib.contextmanager
def records_builder(
    tmp: Path, cfg: BuilderConfig, records: list[dict[str, Any]], clock: ShiftedClock
) -> Iterator[Builder]:
    """``records`` written to ``tmp``/records/a.jsonl, an empty spool ``tmp``/spool, and a
    builder of ``cfg`` on ``clock`` logging to ``tmp``/log.jsonl; closed on the way out."""
    (tmp / "records").mkdir()
    (tmp / "records" / "a.jsonl").write_bytes(b"\n".join(map(msgspec.json.encode, records)))
    (tmp / "spool").mkdir()
    with (tmp / "log.jsonl").open("w") as log:
        b = Builder(cfg, progress=False, log=log, clock=clock)
        try:
            yield b
        finally:
            b.close()


def logged_events(log: Path) -> list[dict[str, Any]]:
    """The builder's log lines but its warnings and build summaries."""
    return [
        e
        for line in log.read_bytes().splitlines()
        if (e := msgspec.json.decode(line))["event"] not in ("warning", "build")
    ]
