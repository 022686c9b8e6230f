"""Reading record files: JSON Lines decoding, per-record validation, and the quarantine.

Sources are files, directories (every ``*.jsonl`` in file-name order) or a
spool directory that `crlbuilder build --follow` watches. Each line is decoded
into a `model.Record` and checked for what the type system cannot say (aware
times, serial size, the fields each kind of record needs). A line that fails
gets a clear error naming the file, the line and the field, and goes to the
quarantine file with its reason: nothing is dropped silently. Error messages
never quote the line itself (it may hold personal data); the quarantine file,
mode 0600, keeps it for the operator.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final

import msgspec

from crlbuilder.model import (
    ChangeKind,
    Issuance,
    Record,
    ResidentChange,
)

MAX_SERIAL: Final = 2**159
"""RFC 5280 §4.1.2.2: a serial fits in 20 octets (DER INTEGER, positive)."""

MAX_LINE: Final = 1 << 20
"""Longest accepted line (1 MiB); a longer one is quarantined unread."""

_decoder: Final = msgspec.json.Decoder(Record)


class RecordError(ValueError):
    """A record that is well-formed JSON but breaks a rule of the format."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{message} (at `{field}`)")
        self.field = field


@dataclass(frozen=True, slots=True)
class Located:
    """A decoded record and where it came from."""

    source: str
    line: int
    record: Record


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that could not become a record, and why."""

    source: str
    line: int
    reason: str
    raw: bytes


def _aware(field: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise RecordError(
            field, "time must carry a timezone (RFC 3339, e.g. 2025-04-01T09:00:00+09:00)"
        )


def _serial(field: str, value: int | None) -> None:
    if value is not None and value >= MAX_SERIAL:
        raise RecordError(field, "serial longer than 20 octets (RFC 5280 §4.1.2.2)")


def check_record(rec: Record) -> None:
    """Checks beyond the types: raise RecordError naming the field of the first problem."""
    _aware("$.recorded_at", rec.recorded_at)
    match rec:
        case Issuance():
            _aware("$.not_before", rec.not_before)
            _aware("$.not_after", rec.not_after)
            _serial("$.serial", rec.serial)
            _serial("$.card_serial", rec.card_serial)
            if rec.not_after <= rec.not_before:
                raise RecordError("$.not_after", "not_after must be later than not_before")
            if rec.family.is_sign and rec.facts is None:
                raise RecordError(
                    "$.facts", f"a {rec.family.value} certificate carries the four facts"
                )
            if not rec.family.is_sign and rec.facts is not None:
                raise RecordError(
                    "$.facts", f"a {rec.family.value} certificate carries no personal data"
                )
            if rec.family.is_mobile and rec.card_serial is None:
                raise RecordError(
                    "$.card_serial", "a mobile certificate names its card certificate"
                )
            if not rec.family.is_mobile and rec.card_serial is not None:
                raise RecordError(
                    "$.card_serial", "only mobile certificates name a card certificate"
                )
        case ResidentChange():
            _check_change(rec)
        case _:
            _serial("$.serial", getattr(rec, "serial", None))


def _check_change(rec: ResidentChange) -> None:
    _serial("$.serial", rec.serial)
    if (rec.holder is None) == (rec.serial is None):
        raise RecordError(
            "$.holder", "name either the holder or one certificate (serial and issuer)"
        )
    if (rec.serial is None) != (rec.issuer is None):
        raise RecordError("$.issuer", "serial and issuer go together")
    need = {
        ChangeKind.FACT_CHANGE: ("fact", rec.fact),
        ChangeKind.MINOR_CORRECTION: ("correction", rec.correction),
        ChangeKind.RECORD_DELETION: ("cause", rec.cause),
        ChangeKind.MOVE_OUT_NOTICE: ("planned_date", rec.planned_date),
    }
    for kind, (name, value) in need.items():
        if rec.change is kind and value is None:
            raise RecordError(f"$.{name}", f"a {kind.value} record needs `{name}`")
        if rec.change is not kind and value is not None:
            raise RecordError(f"$.{name}", f"`{name}` belongs to {kind.value} records only")
    if rec.abroad and rec.change is not ChangeKind.MOVE_OUT_NOTICE:
        raise RecordError("$.abroad", "`abroad` belongs to move-out-notice records only")


def decode_line(raw: bytes) -> Record:
    """One JSON Lines line to a checked record; raises ValueError with the reason."""
    try:
        rec: Record = _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise ValueError(str(e)) from None
    except msgspec.DecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    check_record(rec)
    return rec


def list_sources(paths: Iterable[str | Path]) -> list[Path]:
    """Files to read, in order: each path as given; a directory's ``*.jsonl`` by name."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix == ".jsonl" and q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such record file or directory")
    return out


def read_file(path: Path, *, start_line: int = 0) -> Iterator[Located | Rejected]:
    """Decode every line of one file (blank lines are skipped), yielding records or rejections."""
    source = str(path)
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n <= start_line:
                continue
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                yield Rejected(source, n, f"line longer than {MAX_LINE} bytes", line[:256])
                continue
            try:
                yield Located(source, n, decode_line(line))
            except ValueError as e:
                yield Rejected(source, n, str(e), line)


class Quarantine:
    """The quarantine file (JSON Lines, mode 0600): every rejected line with its reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._f: IO[bytes] | None = None

    def add(
        self, source: str, line: int, reason: str, raw: bytes, record_id: str | None = None
    ) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._f = os.fdopen(fd, "ab")
        entry = {
            "source": source,
            "line": line,
            "id": record_id,
            "reason": reason,
            "raw": raw.decode("utf-8", "replace"),
        }
        self._f.write(msgspec.json.encode(entry) + b"\n")
        self.count += 1

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self.flush()
            self._f.close()
            self._f = None
