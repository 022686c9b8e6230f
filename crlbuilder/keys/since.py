"""What the operation log records after a reviewed head: the monthly review's list (動作の記録, Ord §73(3)).

The review starts from the head written into the last ceremony record, or the head the last
review noted (`crlbuilder keys verify-log --anchor SEQ:SHA256`), and must see exactly what
was done since: every ceremony line (a key made or destroyed, a certificate, a rollover, an
enrolment or a secret changed, a token's key inventory, a ceremony that failed), every
refusal, and how many signing sessions each key had, to hold against the ceremony records.

`since` picks those lines; `as_json` and `as_text` show them. Each entry carries the line's
number, time, event, approvers, key reference (a PKCS#11 URI without its PIN source, as the
log holds it) and its detail (fingerprints of keys, certificates and credentials, a
refusal's reason): what the log holds, which is never a PIN, a secret or key material.
Sans-I/O: records in, entries out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from crlbuilder.keys.oplog import NO_CEREMONY_EVENTS, OpRecord

__all__ = ["SESSION_EVENTS", "Since", "as_json", "as_text", "since"]

SESSION_EVENTS: Final = frozenset({"signing-session-started", "signing-session-ended"})
"""Lines counted per key, not listed one by one (a signing process writes two per life)."""


@dataclass(frozen=True)
class Since:
    """The lines after line ``after``: those to examine one by one, and the signing sessions
    counted per key (sessions started, signatures the ended ones report)."""

    after: int
    lines: list[OpRecord]
    sessions: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)

    @property
    def ceremonies(self) -> int:
        """How many of `lines` record a ceremony (refusals do not)."""
        return sum(1 for r in self.lines if r.event not in NO_CEREMONY_EVENTS)


def since(records: list[OpRecord], after: int) -> Since:
    """Every line after line ``after`` (a head the chain holds), signing sessions counted."""
    lines: list[OpRecord] = []
    sessions: Counter[str] = Counter()
    signatures: Counter[str] = Counter()
    for r in records[after:]:
        if r.event == "signing-session-started":
            sessions[r.key] += 1
        elif r.event == "signing-session-ended":
            count = r.detail.get("signatures", 0)
            signatures[r.key] += count if isinstance(count, int) else 0
        else:
            lines.append(r)
    return Since(after, lines, dict(sessions), dict(signatures))


def _entry(r: OpRecord) -> dict[str, object]:
    return {
        "seq": r.seq,
        "at": r.at,
        "event": r.event,
        "operators": list(r.operators),
        "key": r.key,
        "ceremony": r.ceremony,
        "detail": dict(r.detail),
    }


def as_json(found: Since) -> dict[str, object]:
    """The list as a JSON-ready value (`verify-log --anchor ... --json`)."""
    return {
        "after": found.after,
        "ceremony_lines": found.ceremonies,
        "lines": [_entry(r) for r in found.lines],
        "signing_sessions": {
            k: {"sessions": found.sessions.get(k, 0), "signatures": found.signatures.get(k, 0)}
            for k in sorted(set(found.sessions) | set(found.signatures))
        },
    }


def _shown(value: object) -> str:
    """A value as one line of text: as it is, or quoted with escapes if it holds a line break
    or another control character (a key label is whatever the token was given: one with a
    line break would otherwise print a line of its own in the review's listing)."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def as_text(found: Since) -> list[str]:
    """The list as lines for a reader: a summary, then one line per entry, each detail
    ``name=value``, then the signing sessions per key."""
    refused = sum(1 for r in found.lines if r.event == "ceremony-refused")
    disclosed = sum(1 for r in found.lines if r.event == "holder-disclosed")
    out = [
        f"since line {found.after} (the head given): {found.ceremonies} ceremony line(s), "
        f"{refused} refusal(s), "
        + (f"{disclosed} disclosure(s) of a holder's records, " if disclosed else "")
        + f"signing sessions on {len(found.sessions)} key(s)"
    ]
    for r in found.lines:
        who = "+".join(r.operators) or "-"
        detail = " ".join(f"{_shown(k)}={_shown(v)}" for k, v in sorted(r.detail.items()))
        line = f"{r.seq} {r.at} {r.event} by {_shown(who)} key {_shown(r.key or '-')} {detail}"
        out.append(f"  {line}".rstrip())
    for k in sorted(set(found.sessions) | set(found.signatures)):
        out.append(
            f"  signing sessions: {k}: {found.sessions.get(k, 0)} started, "
            f"{found.signatures.get(k, 0)} signature(s) in those ended"
        )
    return out
