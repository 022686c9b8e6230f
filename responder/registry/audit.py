"""The registry's audit log: one hash-chained JSON line per change and party, and its verification.

The log keeps no personal data (the fields in `REDACTED` appear as SHA-256 only). Removing or
changing a line breaks the chain; a registry edited outside `responder registry` no longer
matches the last record. `verify_audit` checks both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from responder.registry.schema import (
    AnyEntry,
)

ZERO_HASH: Final = "0" * 64
REDACTED: Final = (
    ("name",),
    ("notification", "address"),
    ("notification", "representative"),
    ("notification", "office"),
)
"""Fields the audit log keeps as a SHA-256 only (personal data for a natural person)."""


# --- the audit log -------------------------------------------------------------------


class AuditRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One line of the audit log."""

    seq: int
    at: str
    actor: str
    action: str
    party: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    registry_sha256: str
    prev: str


class AuditError(Exception):
    """The audit log cannot be appended to or does not verify."""


def audit_path_for(registry: Path) -> Path:
    """The default audit log beside a registry: ``registry.toml`` -> ``registry.audit.jsonl``."""
    return registry.with_name(registry.stem + ".audit.jsonl")


def write_synced(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd``, fsync it, close it (the registry and its audit log)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The audit log's last line (without its newline), or None for an empty or missing log."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        buf = b""
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            if b"\n" in buf[:-1]:
                break
    if not buf.endswith(b"\n"):
        raise AuditError(
            f"{path}: ends with a partial line (run `responder registry verify-audit`)"
        )
    body = buf[:-1]
    return body[body.rfind(b"\n") + 1 :]


def append_audit(
    path: Path, records: Sequence[dict[str, Any]], *, registry_sha256: str, actor: str, action: str
) -> None:
    """Append one chained line per record (party, before, after); the caller holds the lock."""
    last = _last_line(path)
    if last is None:
        seq, prev = 0, ZERO_HASH
    else:
        try:
            seq = msgspec.json.decode(last, type=AuditRecord).seq
        except msgspec.DecodeError:
            raise AuditError(
                f"{path}: the last line is not an audit record (run verify-audit)"
            ) from None
        prev = _line_hash(last)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    out = bytearray()
    for r in records:
        seq += 1
        line = msgspec.json.encode(
            AuditRecord(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                party=r["party"],
                before=r["before"],
                after=r["after"],
                registry_sha256=registry_sha256,
                prev=prev,
            )
        )
        out += line + b"\n"
        prev = _line_hash(line)
    write_synced(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), out)


@dataclass
class AuditReport:
    records: int = 0
    head: str = ZERO_HASH
    problems: list[str] = field(default_factory=list)


def verify_audit(path: Path, registry: Path | None = None) -> AuditReport:
    """Check the hash chain and numbering of every line; and that ``registry`` is the last one
    written through the commands (a hand edit or a lost tail of the log shows here)."""
    report = AuditReport()
    last: AuditRecord | None = None
    try:
        f = path.open("rb")
    except OSError as e:
        report.problems.append(f"{path}: cannot read the audit log: {e.strerror}")
        return report
    with f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                report.problems.append(f"{path}:{n}: partial last line")
                break
            line = raw[:-1]
            try:
                rec = msgspec.json.decode(line, type=AuditRecord)
            except msgspec.DecodeError as e:
                report.problems.append(f"{path}:{n}: not an audit record: {e}")
                break
            if rec.prev != report.head:
                report.problems.append(
                    f"{path}:{n}: the chain is broken: this line does not follow line {n - 1} as written"
                )
                break
            if rec.seq != n:
                report.problems.append(f"{path}:{n}: sequence number {rec.seq}, expected {n}")
                break
            report.records = n
            report.head = _line_hash(line)
            last = rec
    if registry is not None and not report.problems:
        try:
            actual = hashlib.sha256(registry.read_bytes()).hexdigest()
        except OSError as e:
            report.problems.append(f"{registry}: cannot read: {e.strerror}")
        else:
            if last is None or last.registry_sha256 != actual:
                report.problems.append(
                    f"{registry}: differs from the registry the last audited change wrote (edited outside `responder registry`, or the log lost its tail)"
                )
    return report


def _redacted(entry: AnyEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    data: dict[str, Any] = msgspec.to_builtins(entry)
    for path in REDACTED:
        holder: Any = data
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(path[-1]), str):
            value = holder[path[-1]]
            holder[path[-1]] = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return data
