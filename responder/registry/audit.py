"""The registry's audit log: one hash-chained JSON line per change and party, and its verification.

The chain (``seq``, ``prev``) is `crlbuilder.auditlog`'s, shared with the key operation log;
the file format is the one this module always wrote, two optional fields added. The log keeps
no personal data: the fields in `REDACTED` appear as a keyed hash only, ``hmac-sha256:<hex>``
under the audit key (`responder.registry.auditkey`), the line's ``key_id`` naming the key.
Lines written before the key was introduced hold ``sha256:<hex>`` (unkeyed) and no
``key_id``; they stay as they are (rewriting them would break the chain) and verify as before:
each value's prefix says how it was made. A change made as a correction of the record (an
instant in the past, `responder.registry.pastinstants`) carries its reason in
``correction``. Removing or changing a line breaks the chain; a registry edited outside
`responder registry` no longer matches the last record. `verify_audit` checks both.
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
from responder.registry.auditkey import AuditKey
from responder.registry.schema import (
    AnyEntry,
)

REDACTED: Final = (
    ("name",),
    ("notification", "address"),
    ("notification", "representative"),
    ("notification", "office"),
)
"""Fields the audit log keeps as a keyed hash only (personal data for a natural person)."""


# --- the audit log -------------------------------------------------------------------


class AuditRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One line of the audit log; ``key_id`` and ``correction`` absent when None (every line
    written before they were introduced)."""

    seq: int
    at: str
    actor: str
    action: str
    party: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    registry_sha256: str
    prev: str
    key_id: str | None = None
    """The audit key (`AuditKey.key_id`) the ``hmac-sha256:`` values of this line are made with."""
    correction: str | None = None
    """Why an instant of this change lies in the past (``--correction``): a record corrected."""


AuditError = ChainError
"""The audit log cannot be appended to (its last line is partial or not a record)."""


def audit_path_for(registry: Path) -> Path:
    """The default audit log beside a registry: ``registry.toml`` -> ``registry.audit.jsonl``."""
    return registry.with_name(registry.stem + ".audit.jsonl")


def append_audit(
    path: Path,
    records: Sequence[dict[str, Any]],
    *,
    registry_sha256: str,
    actor: str,
    action: str,
    key: AuditKey,
    correction: str | None = None,
) -> None:
    """Append one chained line per record (party, before, after: made by `redacted` with
    ``key``); the caller holds the lock."""
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
                key_id=key.key_id,
                correction=correction,
            )
            for r in records
        ],
    )


def check_appendable(path: Path) -> None:
    """Raise as `append_audit` would on the log at ``path`` as it stands (AuditError: its last
    line cut short or no record, a link or no regular file; OSError: it cannot be opened for
    writing), writing nothing: a change that goes elsewhere first (the cluster's bucket,
    `responder.registry.cli.change`) is refused before it does, not after."""
    append_chained(path, [])


@dataclass
class AuditReport:
    records: int = 0
    head: str = ZERO_HASH
    problems: list[str] = field(default_factory=list)
    keys: dict[str | None, int] = field(default_factory=dict)
    """Lines by the audit key their personal fields are hashed with (`AuditRecord.key_id`;
    None: unkeyed ``sha256:``, written before the key), in the order first met: which key
    an auditor needs for which lines."""
    corrections: int = 0
    """Lines of changes made as corrections of the record (``--correction``)."""


class _KeyFields(msgspec.Struct):
    key_id: str | None = None
    correction: str | None = None


def verify_audit(path: Path, registry: Path | None = None) -> AuditReport:
    """Check the hash chain and numbering of every line; and that ``registry`` is the last one
    written through the commands (a hand edit or a lost tail of the log shows here)."""
    chain = verify_chain(path, AuditRecord)
    report = AuditReport(chain.records, chain.head, chain.problems)
    if not report.problems:  # the lines verified: read again for the keys they name
        with path.open("rb") as f:
            for line in f:
                fields = msgspec.json.decode(line, type=_KeyFields)
                report.keys[fields.key_id] = report.keys.get(fields.key_id, 0) + 1
                report.corrections += fields.correction is not None
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


def redacted(entry: AnyEntry | None, key: AuditKey) -> dict[str, Any] | None:
    """``entry`` as builtins, each field of `REDACTED` replaced by its keyed hash."""
    if entry is None:
        return None
    data: dict[str, Any] = msgspec.to_builtins(entry)
    for path in REDACTED:
        holder: Any = data
        for name in path[:-1]:
            holder = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(path[-1]), str):
            holder[path[-1]] = key.pseudonym(holder[path[-1]])
    return data
