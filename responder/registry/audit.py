"""The registry's audit log: one hash-chained JSON line per change and party, and its verification.

The chain (``seq``, ``prev``) is `crlbuilder.auditlog`'s, shared with the key operation log;
the file format is the one this module always wrote. The log keeps no personal data (the
fields in `REDACTED` appear as SHA-256 only). Removing or changing a line breaks the chain; a registry edited outside `responder registry` no longer
matches the last record. `verify_audit` checks both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from crlbuilder.auditlog import ZERO_HASH, ChainError, append_chained, verify_chain
from responder.registry.schema import (
    AnyEntry,
)

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


AuditError = ChainError
"""The audit log cannot be appended to (its last line is partial or not a record)."""


def audit_path_for(registry: Path) -> Path:
    """The default audit log beside a registry: ``registry.toml`` -> ``registry.audit.jsonl``."""
    return registry.with_name(registry.stem + ".audit.jsonl")


def append_audit(
    path: Path, records: Sequence[dict[str, Any]], *, registry_sha256: str, actor: str, action: str
) -> None:
    """Append one chained line per record (party, before, after); the caller holds the lock."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    append_chained(
        path,
        [
            AuditRecord(
                seq=0,  # numbered and chained by append_chained
                at=at,
                actor=actor,
                action=action,
                party=r["party"],
                before=r["before"],
                after=r["after"],
                registry_sha256=registry_sha256,
                prev=ZERO_HASH,
            )
            for r in records
        ],
    )


@dataclass
class AuditReport:
    records: int = 0
    head: str = ZERO_HASH
    problems: list[str] = field(default_factory=list)


def verify_audit(path: Path, registry: Path | None = None) -> AuditReport:
    """Check the hash chain and numbering of every line; and that ``registry`` is the last one
    written through the commands (a hand edit or a lost tail of the log shows here)."""
    chain = verify_chain(path, AuditRecord)
    report = AuditReport(chain.records, chain.head, chain.problems)
    if registry is not None and not report.problems:
        try:
            actual = hashlib.sha256(registry.read_bytes()).hexdigest()
        except OSError as e:
            report.problems.append(f"{registry}: cannot read: {e.strerror}")
        else:
            if chain.last is None or chain.last.registry_sha256 != actual:
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
