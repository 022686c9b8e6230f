"""Reading record files: JSON Lines decoding, per-record validation, and the quarantine.

Sources are files, directories (every ``*.jsonl`` in file-name order) or a
spool directory that `crlbuilder build --follow` watches. Each line is decoded
into a `model.Record` and checked for what the type system cannot say (aware
times, serial size, the fields each kind of record needs). A line that fails
gets a clear error naming the file, the line and the field, and goes to the
quarantine file with its reason: nothing is dropped silently.

The quarantine (`QuarantineEntry`) keeps the record id, the file's name (not
its path), the line number, the field and the reason, and nothing of the line
itself: a record may carry the four facts (基本4情報, Act §7(1)(3)), which exist
at rest only sealed in the store (Act §44, §45); the operator finds the line in
the feed by file and line. Error messages never quote a value from the line.
A refusal is quarantined once (`quarantine_key`: record id and reason, or file,
line and reason for a line with no readable id), however often its input is
replayed; the applier records the keys in the store (`crlbuilder.apply`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, BinaryIO, Final

import msgspec

from crlbuilder.decodeerror import redact
from crlbuilder.model import (
    ChangeKind,
    Issuance,
    Record,
    ResidentChange,
    TokenIssued,
    TokenRevoked,
)

MAX_SERIAL: Final = 2**159
"""RFC 5280 §4.1.2.2: a serial fits in 20 octets (DER INTEGER, positive)."""

BOM: Final = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark, which some editors and Windows tools write at the start of a text
file: taken off the start of a record file's first line (`lines`), and only there (RFC 8259 §8.1:
a parser may ignore one at the start of a JSON text; one elsewhere is part of a line, refused as
not JSON)."""

MAX_LINE: Final = 1 << 20
"""Longest accepted line (1 MiB); a longer one is quarantined unread."""

TOKEN_SOURCE: Final = "token-issuer/"
"""The source (`Located.source`, the stream's ``Jpki-File``) of the token records the cluster
signer's builder publishes (`crlbuilder.stream.record_messages`): a name no record file has
(a file's name holds no ``/``), so a token record read from a record file, published on the
stream by ``crlbuilder publish`` or not, is refused (`crlbuilder.apply`); quarantined, it is
named ``token-issuer``."""

_decoder: Final = msgspec.json.Decoder(Record)


class RecordError(ValueError):
    """A record that is well-formed JSON but breaks a rule of the format."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{message} (at `{field}`)")
        self.field = field


class Located(msgspec.Struct, frozen=True):
    """A decoded record and where it came from.

    A frozen Struct, not a frozen dataclass: one is made per input line, and a frozen
    dataclass sets each field through object.__setattr__ (0.84 against 0.11 us, timeit)."""

    source: str
    line: int
    record: Record


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that could not become a record, and why (the line itself is not kept)."""

    source: str
    line: int
    reason: str
    record_id: str | None = None
    """The line's ``id`` when it has a readable one."""


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
            if not rec.family.is_jpki:
                raise RecordError(
                    "$.family",
                    f"{rec.family.value} certificates (Act §38-3) are issued by the builder from "
                    "a token request (crlbuilder.tokens), never by an issuance record",
                )
            sign, mobile = rec.family.is_sign, rec.family.is_mobile  # once, for two checks each
            if sign and rec.facts is None:
                raise RecordError(
                    "$.facts", f"a {rec.family.value} certificate carries the four facts"
                )
            if not sign and rec.facts is not None:
                raise RecordError(
                    "$.facts", f"a {rec.family.value} certificate carries no personal data"
                )
            if mobile and rec.card_serial is None:
                raise RecordError(
                    "$.card_serial", "a mobile certificate names its card certificate"
                )
            if not mobile and rec.card_serial is not None:
                raise RecordError(
                    "$.card_serial", "only mobile certificates name a card certificate"
                )
        case ResidentChange():
            _check_change(rec)
        case TokenIssued():
            _aware("$.not_before", rec.not_before)
            _aware("$.not_after", rec.not_after)
            _serial("$.serial", rec.serial)
            if rec.not_after <= rec.not_before:
                raise RecordError("$.not_after", "not_after must be later than not_before")
        case TokenRevoked():
            _aware("$.at", rec.at)
            _serial("$.serial", rec.serial)
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


def check_line_ends(rec: Record) -> None:
    """Refuse a record whose id, issuer, holder key or birth date ends in a line feed: raise
    RecordError naming the first such field (never its value).

    The model's patterns (`model.RecordId`, `IssuerId`, `HolderKey`, `EraBirthDate`) end in
    ``$``, which msgspec matches as Python's `re.search` does: before a final ``\n`` too, so
    ``"<64 hex digits>\n"`` passed as a holder key, another holder than the one without it.
    Their other characters exclude a line feed, so a value they take holds one only at its
    end. Checked where records enter (`decode_line`: record files, the spool, and
    ``crlbuilder publish``, `first_line_end`), not on the record stream's replay
    (`crlbuilder.stream.decode`): a message a node of an earlier release published and
    applied is applied alike by a node replaying it (`crlbuilder.release`), and from this
    release on no such record enters the stream."""
    fields: list[tuple[str, str | None]] = [
        ("$.id", rec.id),
        ("$.issuer", getattr(rec, "issuer", None)),
        ("$.holder", getattr(rec, "holder", None)),
    ]
    if isinstance(rec, Issuance) and rec.facts is not None:
        fields.append(("$.facts.birth_date", rec.facts.birth_date))
    for field, value in fields:
        if value is not None and value.endswith("\n"):
            raise RecordError(field, "ends in a line feed, which the field's format does not hold")


def decode_line(raw: bytes, *, replayed: bool = False) -> Record:
    """One JSON Lines line to a checked record; raises ValueError with the reason.

    ``replayed``: a line read back from the record stream, where `check_line_ends` is not
    applied (what the stream's earlier releases applied is applied alike)."""
    try:
        rec: Record = _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise ValueError(redact(str(e), Record, raw)) from None
    except msgspec.DecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    check_record(rec)
    if not replayed:
        check_line_ends(rec)
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


class _IdOnly(msgspec.Struct):
    id: Annotated[str, msgspec.Meta(pattern=r"^[\x21-\x7e]{1,128}$")] | None = None


_id_decoder: Final = msgspec.json.Decoder(_IdOnly)


def _record_id(raw: bytes) -> str | None:
    """The ``id`` of a line that is no valid record, if it has a well-formed one."""
    try:
        return _id_decoder.decode(raw).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def read_file(
    path: Path, *, start_line: int = 0, limit: int | None = None
) -> Iterator[Located | Rejected]:
    """Decode every line of one file (blank lines are skipped), yielding records or rejections.

    With ``limit``, only the file's first ``limit`` bytes are read (the size the spool loop saw:
    `crlbuilder.spoolfile`)."""
    with path.open("rb") as f:
        yield from read_open(f, str(path), start_line=start_line, limit=limit)


def read_open(
    f: BinaryIO, source: str, *, start_line: int = 0, limit: int | None = None
) -> Iterator[Located | Rejected]:
    """`read_file` of a file already open (the spool loop's, opened once: `spoolfile.open_seen`),
    named ``source``; the caller closes it."""
    for n, line in lines(f, limit=limit):
        if n <= start_line:
            continue
        if line is None:
            yield Rejected(source, n, f"line longer than {MAX_LINE} bytes")
        elif line and not line.isspace():  # blank: `not line.strip()`, without a copy
            yield decode_item(source, n, line)


def lines(f: BinaryIO, *, limit: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """Each line of ``f`` (numbered from 1, without its line end, the first without a leading
    `BOM`), None for one longer than `MAX_LINE`: that one is skipped in pieces, never held whole
    in memory. With ``limit``, only the first ``limit`` bytes are read."""
    cap = MAX_LINE + 2  # a longest line and its CR LF

    def more(size: int) -> bytes:
        nonlocal limit
        if limit is not None:
            size = min(size, limit)
            if size == 0:
                return b""
        raw = f.readline(size)
        if limit is not None:
            limit -= len(raw)
        return raw

    n = 0
    while raw := more(cap):
        n += 1
        if len(raw) == cap and raw[-1:] != b"\n":  # longer than any line accepted
            while raw and raw[-1:] != b"\n":
                raw = more(1 << 16)
            yield n, None
            continue
        line = raw.rstrip(b"\r\n")
        if n == 1 and line.startswith(BOM):
            line = line[len(BOM) :]  # an editor's mark of the file, not the record's
        yield n, (None if len(line) > MAX_LINE else line)


def decode_item(source: str, n: int, line: bytes, *, replayed: bool = False) -> Located | Rejected:
    """Line ``n`` of ``source`` (without its line end) as a record, or its rejection
    (``replayed``: read back from the record stream, `decode_line`)."""
    if len(line) > MAX_LINE:
        return Rejected(source, n, f"line longer than {MAX_LINE} bytes")
    try:
        return Located(source, n, decode_line(line, replayed=replayed))
    except ValueError as e:
        return Rejected(source, n, str(e), _record_id(line))


def first_line_end(path: Path) -> tuple[int, str] | None:
    """The first line of the record file ``path`` that is a record but for `check_line_ends`,
    and the field it names; None when there is none (``crlbuilder publish`` refuses such a
    file before it publishes anything: on the stream, the record would be applied). A line
    refused for another reason is published as before, and every node quarantines it."""
    with path.open("rb") as f:
        for n, line in lines(f):
            if not line or line.isspace():
                continue
            try:
                rec = decode_line(line, replayed=True)
            except ValueError:
                continue
            try:
                check_line_ends(rec)
            except RecordError as e:
                return n, e.field
    return None


def record_id(line: bytes) -> str | None:
    """The well-formed ``id`` of a line, if it has one, without decoding the rest."""
    return _record_id(line)


_FIELD: Final = re.compile(r"at `(\$[^`]*)`")


class QuarantineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the quarantine file: where the refused line is and why, none of its content."""

    id: str | None
    """The record id (None for a line with no readable id)."""
    file: str
    """The input file's name, without its directory."""
    line: int
    field: str | None
    """The JSON path of the offending field (``$.recorded_at``), when the refusal names one."""
    reason: str


def quarantine_entry(source: str, line: int, reason: str, record_id: str | None) -> QuarantineEntry:
    """The entry for one refusal; the reason loses any value of the line it would echo."""
    reason = redact(reason)
    m = _FIELD.search(reason)
    return QuarantineEntry(
        id=record_id, file=Path(source).name, line=line, field=m.group(1) if m else None,
        reason=reason,
    )  # fmt: skip


def quarantine_key(entry: QuarantineEntry) -> bytes:
    """What makes a refusal the same refusal: the record id (or, with none, the file and line)
    and the reason, so a replay quarantines nothing twice and a new reason is still reported."""
    digest = hashlib.sha256(entry.reason.encode()).digest()[:8]
    where = entry.id.encode() if entry.id else b"\0" + f"{entry.file}:{entry.line}".encode()
    return where + b"\0" + digest


_entry_decoder: Final = msgspec.json.Decoder(QuarantineEntry)


def quarantine_line_key(line: bytes) -> bytes | None:
    """`quarantine_key` of one line of the quarantine file (None if it is not an entry)."""
    try:
        return quarantine_key(_entry_decoder.decode(line))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class Quarantine:
    """The quarantine file (JSON Lines of `QuarantineEntry`, mode 0600).

    The applier stages its lines in the store's outbox in the transaction that
    refuses them and delivers them here (`crlbuilder.outbox`); ``count`` is the
    number of lines this process wrote.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
