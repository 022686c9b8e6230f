"""Two operators' approval of a key ceremony (複数の者による作成及び管理, Ord §74(3); 識別符号の管理, §74(2)).

The operators file (TOML, mode 0600) names each operator and a salted scrypt hash of the
operator's secret; it never holds a secret::

    [log]
    path = "/var/lib/jpki-va/oplog.jsonl"
    genesis = "<SHA-256 hex of the log's first line>"

    [operators.alice]
    scrypt = "<salt hex>$<hash hex>"

``[log]`` names the operation log the file belongs to (`crlbuilder.keys.logname`); files
written by earlier versions lack it, and get it at their next ``add-operator``.

An approval is an operator's name and the secret, read from a 0600 file or an environment
variable (``NAME:file:/path`` or ``NAME:env:VAR`` at the command), never from the command
line itself. `check_approvals` is the rule: at least two approvals, by distinct operators,
each known and with the right secret; anything else is refused with the reason, and the
caller does nothing but log the refusal.

`check_enrolment` is the rule for changing the file itself, so that one person cannot
become two: a new operator needs two enrolled operators' approvals (not their own) once two
are enrolled (the first two, the bootstrap, need none); a secret is replaced only with the
operator's current one, or reset (forgotten) with two *other* operators' approvals. Whether
the operation log allows a bootstrap at all is `crlbuilder.keys.enrolments`' question.

Two approvals giving one secret are refused (`check_approvals`: the same approval file or
variable given under two names), and so is a secret, at enrolment or replacement, that another
enrolled operator already has (`check_secret_unshared`): one person holding two names with one
secret. Neither stops one person who keeps two distinct secrets; the bootstrap and the two
approvals of every later enrolment are where that is checked, by people.

`fingerprint` is what the operation log records of a credential: the SHA-256 of the stored
``salt$hash`` (never the secret), for the enrolled operator and for each approver.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import secrets
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder import atomicfile
from crlbuilder.keys.logname import LogName
from crlbuilder.keys.signer import SignerError, read_private_file

__all__ = [
    "MIN_APPROVALS",
    "Approval",
    "ApprovalError",
    "Operators",
    "add_operator",
    "check_approvals",
    "check_enrolment",
    "check_operator",
    "check_secret_unshared",
    "fingerprint",
    "fingerprints",
    "hash_secret",
    "load_log_name",
    "load_operators",
    "operators_locked",
    "parse_approval",
    "read_secret",
    "valid_name",
]

MIN_APPROVALS: Final = 2
"""Distinct operators a ceremony needs (Ord §74(3): 複数の者)."""

_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_MIN_SECRET: Final = 12


class ApprovalError(Exception):
    """An approval is missing, malformed or refused; the message says which and why."""


class _Operator(msgspec.Struct, forbid_unknown_fields=True):
    scrypt: str


class _Log(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    genesis: str


class _OperatorsFile(msgspec.Struct, forbid_unknown_fields=True):
    log: _Log | None = None
    operators: dict[str, _Operator] = {}


Operators = dict[str, str]
"""Operator name -> ``salt$hash`` (hex)."""


@dataclass(frozen=True)
class Approval:
    """An operator's name and the secret given for this ceremony."""

    operator: str
    secret: bytes


def hash_secret(secret: bytes, salt: bytes | None = None) -> str:
    """``salt$hash`` (hex) of a secret: scrypt with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(secret, salt=salt, **_SCRYPT)
    return f"{salt.hex()}${digest.hex()}"


def fingerprint(stored: str) -> str:
    """SHA-256 (hex) of a stored ``salt$hash``: what the operation log records of a credential
    (it shows which credential approved, never what the secret is)."""
    return hashlib.sha256(stored.encode()).hexdigest()


def fingerprints(operators: Operators, names: list[str]) -> dict[str, str]:
    """Each of ``names`` (enrolled, as an approval rule returned them) to the `fingerprint` of
    their stored hash, in the order given."""
    return {n: fingerprint(operators[n]) for n in names}


def _matches(secret: bytes, stored: str) -> bool:
    salt_hex, _, digest_hex = stored.partition("$")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return hmac.compare_digest(hash_secret(secret, salt), stored) and bool(digest_hex)


def _load(path: Path) -> _OperatorsFile:
    try:
        raw = read_private_file(path, "operators file")
    except SignerError as e:
        raise ApprovalError(str(e)) from None
    try:
        return msgspec.convert(tomllib.loads(raw.decode()), type=_OperatorsFile)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.ValidationError) as e:
        raise ApprovalError(f"{path}: not an operators file: {e}") from None


def load_operators(path: Path) -> Operators:
    """Read the operators file; refuse one others may read or write."""
    return {name: op.scrypt for name, op in _load(path).operators.items()}


def load_log_name(path: Path) -> LogName | None:
    """The operation log the operators file names (`crlbuilder.keys.logname`), or None: no
    file yet, or one written before files named their log."""
    if not path.exists():
        return None
    log = _load(path).log
    return None if log is None else LogName(log.path, log.genesis)


def read_secret(source: str) -> bytes:
    """A secret from ``file:/path`` (mode 0600) or ``env:VAR``; never the text itself."""
    kind, _, where = source.partition(":")
    if kind == "file" and where:
        try:
            secret = read_private_file(Path(where), "secret file").strip()
        except SignerError as e:
            raise ApprovalError(str(e)) from None
    elif kind == "env" and where:
        value = os.environ.get(where)
        if value is None:
            raise ApprovalError(f"environment variable {where} is not set")
        secret = value.strip().encode()
    else:  # the text may be the secret itself, typed in its source's place: never shown
        raise ApprovalError(
            "a secret source is file:/path or env:VAR (the secret itself is never given on "
            "the command line)"
        )
    if len(secret) < _MIN_SECRET:
        raise ApprovalError(f"the secret from {kind}:{where} is shorter than {_MIN_SECRET} bytes")
    return secret


def parse_approval(text: str) -> Approval:
    """``NAME:file:/path`` or ``NAME:env:VAR`` to an `Approval` (the secret read now)."""
    name, sep, source = text.partition(":")
    if not sep or not name:  # no name: the text may be a secret, and is not shown
        raise ApprovalError("an approval is NAME:file:/path or NAME:env:VAR")
    return Approval(name, read_secret(source))


def check_approvals(operators: Operators, approvals: list[Approval]) -> list[str]:
    """The approving operators' names, or ApprovalError: fewer than two, one operator twice,
    an unknown operator or a wrong secret (the message names the operator, never the secret)."""
    names = [a.operator for a in approvals]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ApprovalError(f"operator {', '.join(twice)} approved twice: two distinct operators")
    if len(names) < MIN_APPROVALS:
        raise ApprovalError(
            f"{len(names)} approval(s) given; a ceremony needs {MIN_APPROVALS} distinct operators"
        )
    for i, a in enumerate(approvals):
        for b in approvals[:i]:
            if hmac.compare_digest(a.secret, b.secret):
                raise ApprovalError(
                    f"operators {b.operator} and {a.operator} gave one secret: two operators "
                    "are two people, each with their own secret (the same approval file or "
                    "variable given twice?)"
                )
    for a in approvals:
        stored = operators.get(a.operator)
        if stored is None:
            raise ApprovalError(f"operator {a.operator!r} is not in the operators file")
        if not _matches(a.secret, stored):
            raise ApprovalError(f"operator {a.operator!r}: the secret does not match")
    return names


def check_operator(operators: Operators, approval: Approval) -> str:
    """The operator's name when ``approval`` is an enrolled operator's with the right secret
    (one operator acting alone: a disclosure, `crlbuilder disclose`); ApprovalError otherwise
    (naming the operator, never the secret)."""
    stored = operators.get(approval.operator)
    if stored is None:
        raise ApprovalError(f"operator {approval.operator!r} is not in the operators file")
    if not _matches(approval.secret, stored):
        raise ApprovalError(f"operator {approval.operator!r}: the secret does not match")
    return approval.operator


def check_secret_unshared(operators: Operators, name: str, secret: bytes) -> None:
    """ApprovalError when ``secret``, about to be stored for ``name``, is another enrolled
    operator's (each stored hash tried with its salt): two names sharing a secret are one
    person's, and would pass the two-person rule alone. The message names neither the other
    operator nor the secret."""
    if any(_matches(secret, stored) for n, stored in operators.items() if n != name):
        raise ApprovalError(
            f"the secret given for {name} is another enrolled operator's: each operator "
            "chooses their own secret"
        )


def check_enrolment(
    operators: Operators,
    name: str,
    approvals: list[Approval],
    *,
    replace: bool,
    current_secret: bytes | None,
    reset: bool = False,
) -> list[str]:
    """Who authorises enrolling ``name`` (or, with ``replace`` / ``reset``, a new secret for
    ``name``), or ApprovalError saying why not (識別符号の管理, Ord §74(2); 複数の者, §74(3)).

    - replace: ``name`` is enrolled and ``current_secret`` is theirs: ``[name]``; no
      approvals (a colleague's secret is not replaced by anyone else).
    - reset (a forgotten secret): ``name`` is enrolled, and two *other* enrolled operators
      approve (`check_approvals`); no current secret (the operator has none to give).
    - a new name while fewer than `MIN_APPROVALS` operators are enrolled (the bootstrap):
      ``[]``; no approvals (there is no one to give them).
    - a new name otherwise: `check_approvals` of approvals by enrolled operators, none of them
      ``name`` (one person approving their own second name would be two operators alone).
    """
    _check_name(name)
    if replace and reset:
        raise ApprovalError("--replace (with the current secret) or --reset (forgotten), not both")
    if replace:
        if name not in operators:
            raise ApprovalError(f"operator {name} is not enrolled: nothing to replace")
        if approvals:
            raise ApprovalError(
                "--replace takes the operator's current secret, not approvals (a forgotten "
                "secret: --reset, approved by two other operators)"
            )
        if current_secret is None:
            raise ApprovalError(
                f"--replace needs {name}'s current secret (--current-secret file:/path|env:VAR)"
            )
        if not _matches(current_secret, operators[name]):
            raise ApprovalError(f"operator {name!r}: the current secret does not match")
        return [name]
    if current_secret is not None:
        raise ApprovalError("--current-secret is for --replace only")
    if reset:
        if name not in operators:
            raise ApprovalError(f"operator {name} is not enrolled: nothing to reset")
        if any(a.operator == name for a in approvals):
            raise ApprovalError(f"operator {name} cannot approve the reset of their own secret")
        others = len(operators) - 1
        if others < MIN_APPROVALS:
            raise ApprovalError(
                f"a reset of {name}'s secret needs {MIN_APPROVALS} other enrolled operators; "
                f"only {others} other is enrolled (keep at least {MIN_APPROVALS + 1} operators "
                "enrolled)"
            )
        return check_approvals(operators, approvals)
    if name in operators:
        raise ApprovalError(
            f"operator {name} is enrolled already: give --replace (with {name}'s current "
            f"secret) to set a new secret for {name}, or --reset if it is forgotten"
        )
    if len(operators) < MIN_APPROVALS:
        if approvals:
            raise ApprovalError(
                f"{len(operators)} operator(s) enrolled: the first {MIN_APPROVALS} enrol "
                "without approvals (bootstrap), none is taken"
            )
        return []
    if any(a.operator == name for a in approvals):
        raise ApprovalError(f"operator {name} cannot approve their own enrolment")
    return check_approvals(operators, approvals)


_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""An operator's name: what a TOML bare key holds (the operators file's ``[operators.NAME]``),
ASCII only (no two names that look alike to the reviewer of the log)."""


def valid_name(name: str) -> bool:
    """Whether ``name`` may name an operator (`_NAME`)."""
    return _NAME.fullmatch(name) is not None


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise ApprovalError(
            f"operator name {name!r}: ASCII letters, digits, - and _ only (at most 64)"
        )


@contextmanager
def operators_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``FILE.lock`` beside the operators file (created 0600,
    kept: removing it would let a later process lock another file): what a ceremony checks
    and what it writes (its log lines, the file, keys) are one step, and two ceremonies at
    once cannot both pass a check the other's lines would have failed. OSError if it cannot be
    created (the directory missing or not writable)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def add_operator(
    path: Path, name: str, stored: str, *, replace: bool = False, log: LogName | None = None
) -> None:
    """Write ``name``'s ``salt$hash`` (`hash_secret`) into the operators file, created mode
    0600; replace one enrolled already only when ``replace`` (--replace or --reset; a name typed by mistake would
    otherwise take over a colleague's approvals, and the two-person rule with them). Who may
    do so is `check_enrolment`'s question, asked before. With ``log``, the file names that
    operation log from now on (`crlbuilder.keys.logname`); without, it keeps the one it
    names."""
    _check_name(name)
    held = _load(path) if path.exists() else _OperatorsFile()
    current = {n: op.scrypt for n, op in held.operators.items()}
    if name in current and not replace:
        raise ApprovalError(
            f"operator {name} is enrolled already: give --replace to set a new secret for "
            f"{name} (only {name} should)"
        )
    current[name] = stored
    named = log or (None if held.log is None else LogName(held.log.path, held.log.genesis))
    lines = [
        "# jpki-va key ceremony operators (Ord §74(2)(3)): name -> scrypt salt$hash; no secrets"
    ]
    if named is not None:  # a TOML basic string is a JSON string (escapes included)
        lines += [
            "",
            "# the operation log this file belongs to: its path and its first line's SHA-256",
            "[log]",
            f"path = {msgspec.json.encode(named.path).decode()}",
            f'genesis = "{named.genesis}"',
        ]
    for n in sorted(current):
        lines += ["", f"[operators.{n}]", f'scrypt = "{current[n]}"']
    data = ("\n".join(lines) + "\n").encode()
    # no half-written copy of the operators' hashes left behind, nor one a crash left
    atomicfile.sweep_own(path, now=time.time())
    atomicfile.write_whole(path, data, 0o600, sync_dir=True)
