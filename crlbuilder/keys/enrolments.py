"""The operation log's account of the operators file (識別符号の管理, Ord §74(2); 複数の者, §74(3)).

Whoever can write the operators file can change it without a command: empty it and enrol two
names of their own as a new bootstrap (and then pass every two-person step alone), or write a
hash in by hand. The file has no memory; the operation log has. Every enrolment, secret
replaced or reset is a line carrying the `fingerprint` of the credential it stores, and every
approved line the fingerprints of its approvers' credentials (`OpRecord.credentials`).

- `ledger` folds the log's lines into each operator's credentials, line by line, and checks
  each approved line against them: an approval by a credential no line before it enrolled (or
  one replaced since) is a problem;
- `approval_refusal` says why a ceremony's approvers are refused before anything is done:
  the operators file holds a credential for one of them that the log did not enrol;
- `bootstrap_refusal` says why a bootstrap (the first two enrolments, approved by no one) is
  not one: the log records approved ceremonies, or enrolments the file no longer holds;
- `review` compares an operators file with the log (`crlbuilder keys verify-log --operators`).

Lines written before fingerprints were recorded stay valid: they are reported as not checked.
Sans-I/O: records and the operators file's contents in, findings out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from crlbuilder.keys.approval import Operators, fingerprint
from crlbuilder.keys.oplog import NO_CEREMONY_EVENTS, OpRecord

__all__ = [
    "ENROLMENT_EVENTS",
    "Credential",
    "Ledger",
    "Review",
    "approval_refusal",
    "bootstrap_refusal",
    "ledger",
    "review",
]

ENROLMENT_EVENTS: Final = frozenset(
    {"operator-enrolled", "operator-secret-replaced", "operator-secret-reset"}
)
"""The lines that store a credential in the operators file (after the line is written)."""


@dataclass
class Credential:
    """A credential a line of the log stored for an operator."""

    line: int
    sha256: str | None
    """Its `fingerprint`; None in a line written before enrolments carried one."""
    failed: bool = False
    """A ``ceremony-failed`` line of the same ceremony follows: the file may not hold it."""


@dataclass
class Ledger:
    """What the log says of the operators and of the approvals they gave."""

    credentials: dict[str, list[Credential]] = field(default_factory=dict)
    """Operator -> the credentials lines stored for them, in order."""
    ceremonies: list[int] = field(default_factory=list)
    """Lines approved by operators (ceremonies, enrolments after the bootstrap, secrets
    changed): a log with one has had operators enrolled."""
    unfingerprinted: list[int] = field(default_factory=list)
    """Approved lines without their approvers' fingerprints (written before they were)."""
    problems: list[str] = field(default_factory=list)
    """Approvals by a credential the log did not enrol at that point."""
    first_logged: int | None = None
    """The first enrolment line carrying a fingerprint (before it, a log begun by a version
    that did not log enrolments has approved lines by operators no line enrols)."""
    legacy: set[str] = field(default_factory=set)
    """Operators named by approved lines written by an older version (no `credentials`)
    before `first_logged`, or recording their credential by their own ``--replace``
    (`self_recorded`): enrolled before enrolments were logged (not checked until a line
    records their credential). A name first seen in a line with fingerprints is not: this
    version enrols through lines."""
    unenrolled: list[int] = field(default_factory=list)
    """Approved lines with fingerprints by `legacy` operators no line enrols (not checked)."""
    self_recorded: dict[str, int] = field(default_factory=dict)
    """Operators whose credential no line recorded until their own ``--replace`` (this line)
    in a log begun before enrolments were logged: the upgrade path (added to `legacy`)."""
    upgraded: int | None = None
    """The first approved line with fingerprints other than such a ``--replace``: the first
    ceremony after the upgrade, which closes the upgrade path."""

    @property
    def upgrading(self) -> bool:
        """The log was begun before enrolments were logged (approved lines before any
        enrolment with a fingerprint, or none yet: operators may be enrolled whom no line
        enrols) and no ceremony has been approved with fingerprints since: an operator no
        line enrols may still record their credential with their own ``--replace``."""
        return (self.first_logged is None or bool(self.legacy)) and self.upgraded is None


@dataclass
class Review:
    """An operators file compared with the log: problems (exit 1) and notes (not checked)."""

    problems: list[str]
    notes: list[str]


def _may_hold(creds: list[Credential]) -> tuple[set[str | None], Credential | None]:
    """The fingerprints the file may hold for an operator after ``creds`` (the last line that
    did not fail, and any failed one after it), and that last line (None: all failed)."""
    last = next((c for c in reversed(creds) if not c.failed), None)
    after = creds[creds.index(last) + 1 :] if last is not None else creds
    return {c.sha256 for c in after} | ({last.sha256} if last else set()), last


def _credential_problem(seen: Ledger, name: str, sha: str) -> str | None:
    """Why ``name`` approving with the credential ``sha`` (its `fingerprint`) is not accounted
    for by the lines folded into ``seen`` so far (None: it is, or cannot be checked):
    ``approved by {name}`` and what is wrong."""
    creds = seen.credentials.get(name, [])
    if not creds:
        if name in seen.legacy:  # enrolled before enrolments were logged
            return None
        return f"approved by {name}, whom no line before it enrols"
    may, _ = _may_hold(creds)
    if sha in may or None in may:
        return None
    older = [c for c in creds if c.sha256 == sha]
    if older:
        later = creds[creds.index(older[-1]) + 1]
        return (
            f"approved by {name} with the credential of line {older[-1].line}, "
            f"replaced at line {later.line}"
        )
    return f"approved by {name} with a credential no line before it enrols ({sha[:16]}...)"


def _approver_problem(seen: Ledger, rec: OpRecord, name: str, sha: str) -> str | None:
    if not seen.credentials.get(name) and name in seen.legacy and rec.seq not in seen.unenrolled:
        seen.unenrolled.append(rec.seq)  # one line, however many of its approvers
    problem = _credential_problem(seen, name, sha)
    return None if problem is None else f"line {rec.seq} ({rec.event}): {problem}"


def _self_recording(seen: Ledger, name: str) -> bool:
    """``name`` replaces their own secret (`--replace`, with the current one) while no line
    enrols them, in a log begun before enrolments were logged: the upgrade path, whose
    line records their credential from then on (not a problem, noted by `review`)."""
    return not seen.credentials.get(name) and seen.upgrading


def approval_refusal(
    seen: Ledger, approvers: Mapping[str, str], replacing: str | None = None
) -> str | None:
    """Why a ceremony approved by ``approvers`` (name -> `fingerprint` of the credential the
    operators file holds for them) is refused, or None: its line would be a problem of
    `review` (a credential the log did not enrol for that operator: written into the file by
    hand, copied from another operator, an old one put back; a name no line enrols). The
    file is checked against the log before anything is done, not only at the next review.
    Operators `review` does not check (lines written before enrolments were logged) pass,
    and so does ``replacing``, the operator of a ``--replace``, when `_self_recording`."""
    legacy = seen.legacy
    if replacing is not None and _self_recording(seen, replacing):
        legacy = legacy | {replacing}
    for name, sha in approvers.items():
        problem = _credential_problem(replace(seen, legacy=legacy), name, sha)
        if problem is not None:
            return (
                f"the operation log does not account for an approver's credential: {problem}; "
                "restore the operators file from its backup and compare it with the log (keys "
                "verify-log --operators)"
            )
    return None


def ledger(records: Iterable[OpRecord]) -> Ledger:
    """Fold the operation log's records (in order) into a `Ledger`."""
    seen = Ledger()
    open_: dict[str, Credential] = {}  # the enrolment line of each ceremony, until it fails
    for rec in records:
        # an enrolment line without authorised_by (the first version that logged them) names
        # the operator enrolled, who approved nothing; a refusal or a signing session is
        # approved by no one, whatever names it carries (one written by hand after the
        # recorded head, which a ceremony allows, would otherwise excuse a name on an old log)
        approved = bool(rec.operators) and rec.event not in NO_CEREMONY_EVENTS
        if rec.event in ENROLMENT_EVENTS and "authorised_by" not in rec.detail:
            approved = False
        operator = str(rec.detail.get("operator", ""))
        own = rec.event == "operator-secret-replaced" and rec.operators == [operator]
        if own and _self_recording(seen, operator):
            seen.legacy.add(operator)
            seen.self_recorded[operator] = rec.seq
        elif approved and rec.credentials and seen.upgraded is None:
            seen.upgraded = rec.seq
        if approved:
            seen.ceremonies.append(rec.seq)
            if not rec.credentials:
                seen.unfingerprinted.append(rec.seq)
            if seen.first_logged is None and not rec.credentials:  # written by an older version
                seen.legacy.update(rec.operators)
        for name, sha in rec.credentials.items():
            problem = _approver_problem(seen, rec, name, sha)
            if problem is not None:
                seen.problems.append(problem)
        if rec.event in ENROLMENT_EVENTS:
            sha_ = rec.detail.get("credential_sha256")
            cred = Credential(rec.seq, sha_ if isinstance(sha_, str) else None)
            if cred.sha256 is not None and seen.first_logged is None:
                seen.first_logged = rec.seq
            seen.credentials.setdefault(str(rec.detail.get("operator", "")), []).append(cred)
            open_[rec.ceremony] = cred
        elif rec.event == "ceremony-failed" and rec.ceremony in open_:
            open_.pop(rec.ceremony).failed = True
    return seen


def _file_problems(seen: Ledger, operators: Operators) -> list[str]:
    """Operators whose credential in the file no line accounts for, and operators the log
    enrols that the file no longer holds."""
    out = []
    for name in sorted(operators):
        creds = seen.credentials.get(name)
        sha = fingerprint(operators[name])
        if not creds:
            if name not in seen.legacy:  # else `review` notes it as not checked
                hint = (
                    " (enrolled before enrolments were logged? add-operator --replace records "
                    "their credential)"
                    if seen.upgrading
                    else ""
                )
                out.append(
                    f"{name}: in the operators file, but no line of the log enrols them{hint}"
                )
            continue
        may, _ = _may_hold(creds)
        if sha in may or None in may:
            continue
        older = [c for c in creds if c.sha256 == sha]
        if older:
            later = creds[creds.index(older[-1]) + 1]
            out.append(
                f"{name}: the operators file holds the credential of line {older[-1].line}, "
                f"replaced at line {later.line} (put back by hand)"
            )
        else:
            out.append(
                f"{name}: the operators file holds a credential no line of the log enrols "
                f"({sha[:16]}...; written by hand)"
            )
    for name in sorted(seen.legacy - set(operators) - set(seen.credentials)):
        out.append(
            f"{name}: approved ceremonies before enrolments were logged, not in the operators "
            "file (removed by hand)"
        )
    for name, creds in sorted(seen.credentials.items()):
        _, last = _may_hold(creds)
        if name not in operators and last is not None:
            out.append(
                f"{name}: enrolled at line {last.line}, not in the operators file (removed by "
                "hand, or the file write after that line was cut short)"
            )
    return out


def bootstrap_refusal(seen: Ledger, operators: Operators) -> str | None:
    """Why a bootstrap enrolment (approved by no one) is refused, or None: the log records an
    approved ceremony, or the file does not hold what the log enrolled (it was emptied or
    edited), or holds what it did not. The first bootstrap's own lines (operators still in
    the file with their credentials) do not stop the second."""
    found = _file_problems(seen, operators)
    if seen.ceremonies:
        c = seen.ceremonies
        found.insert(0, f"{len(c)} approved ceremony line(s) from line {c[0]}")
    if not found:
        return None
    more = f"; {len(found) - 1} more finding(s)" if len(found) > 1 else ""
    return (
        f"no bootstrap: operators were enrolled under this operation log ({found[0]}{more}); "
        "restore the operators file from its backup and compare it with the log (keys "
        "verify-log --operators); a forgotten secret is reset by two other operators (--reset)"
    )


def review(seen: Ledger, operators: Operators) -> Review:
    """The operators file against the log: `Ledger.problems`, then the file's problems; notes
    for what lines written before fingerprints were recorded leave unchecked."""
    notes = [
        f"{name}: enrolled at line {c.line} without a credential fingerprint (written before "
        "they were recorded): not checked"
        for name, creds in sorted(seen.credentials.items())
        if (c := _may_hold(creds)[1]) is not None and c.sha256 is None
    ]
    if bare := sorted(seen.legacy & set(operators) - set(seen.credentials)):
        notes.append(
            f"{', '.join(bare)}: approved ceremonies before any enrolment was logged, and no "
            "line enrols them: not checked (add-operator --replace records their credential)"
        )
    notes += [
        f"{name}: no line enrols them before their own --replace at line {line} (enrolled "
        "before enrolments were logged, or written in by hand): their credential before "
        "that line is not checked"
        for name, line in sorted(seen.self_recorded.items())
    ]
    if seen.unenrolled:
        notes.append(
            f"{len(seen.unenrolled)} approved line(s) (lines {seen.unenrolled[0]}"
            f"-{seen.unenrolled[-1]}) by operators enrolled before enrolments were logged: "
            "their approvals are not checked"
        )
    if seen.unfingerprinted:
        notes.append(
            f"{len(seen.unfingerprinted)} approved line(s) (lines {seen.unfingerprinted[0]}"
            f"-{seen.unfingerprinted[-1]}) carry no approvers' fingerprints (written before "
            "they were recorded): their approvals are not checked"
        )
    return Review(seen.problems + _file_problems(seen, operators), notes)
