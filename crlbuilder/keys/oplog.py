"""The key operation log (認証業務実施設備の動作の記録, Ord §73(3)): every key operation, chained.

One hash-chained JSON line (`crlbuilder.auditlog`) per key operation: a key generated in
the token, a certificate issued, a generation rolled over, a key destroyed, the keys a
token holds at the end of a ceremony (`crlbuilder.keys.inventory`), a ceremony
refused (each with the operators who approved it, Ord §74(3): 複数の者による発行者署名符号の
作成及び管理, and the fingerprints of the credentials they approved with), an operator
enrolled or their secret replaced or reset (識別符号, Ord §74(2)), and
each signing session's start and end with its count of signatures (one line per session,
never one per OCSP answer or CRL), and each disclosure of a holder's records made
(``holder-disclosed``, Act §58(2): when, by which operator; nothing of the holder, `crlbuilder
disclose`), which records no ceremony. A line names keys by reference without
its PIN source and never holds a PIN, a secret or a key.

Signing sessions are logged when the process knows its log: `configure(path)`, or the
environment variable ``JPKIVA_OPLOG`` (read on first use). A process without one signs
without session lines (the PEM back end of a newcomer's demo).
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import threading
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder.auditlog import (
    ZERO_HASH,
    Anchor,
    ChainError,
    ChainReport,
    append_chained,
    line_hash,
    verify_chain,
)
from crlbuilder.keyref import is_pkcs11_uri, redact

__all__ = [
    "EVENTS",
    "NO_CEREMONY_EVENTS",
    "OPLOG_ENV",
    "OpRecord",
    "SigningSession",
    "configure",
    "end_all",
    "first_ceremony",
    "genesis",
    "key_name",
    "read_oplog",
    "record",
    "verify_oplog",
]

OPLOG_ENV: Final = "JPKIVA_OPLOG"
"""Environment variable naming the operation log of signing processes."""

EVENTS: Final = frozenset(
    {
        "key-generated",
        "certificate-issued",
        "rollover",
        "successor-named",
        "key-destroyed",
        "token-inventory",
        "ceremony-refused",
        "ceremony-failed",
        "operator-enrolled",
        "operator-secret-replaced",
        "operator-secret-reset",
        "signing-session-started",
        "signing-session-ended",
        "holder-disclosed",
    }
)


NO_CEREMONY_EVENTS: Final = frozenset(
    {"signing-session-started", "signing-session-ended", "ceremony-refused", "holder-disclosed"}
)
"""The lines that record no ceremony done: a log holding only these (signing processes
started before the first enrolment, refusals) may still be begun with ``--new-log``."""


class OpRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One line of the operation log."""

    seq: int
    at: str
    """UTC, ISO 8601 with microseconds."""
    event: str
    """One of `EVENTS`."""
    key: str = ""
    """The key's reference: a PKCS#11 URI without its query (no PIN source) or a file path."""
    operators: list[str] = []
    """The two (or more) operators who approved a ceremony, by name."""
    credentials: dict[str, str] = {}
    """Each approver's name to the SHA-256 of their stored hash when they approved
    (`crlbuilder.keys.approval.fingerprint`), which `crlbuilder.keys.enrolments` checks
    against the enrolments before; empty in lines written before it was recorded."""
    ceremony: str = ""
    """SHA-256 of the ceremony's canonical description (what the operators approved)."""
    detail: dict[str, str | int] = {}
    """What else: a certificate's path, serial and SHA-256; a refusal's reason; a session's
    count of signatures."""
    pid: int = 0
    prev: str


def first_ceremony(records: list[OpRecord], after: int = 0) -> OpRecord | None:
    """The first line after line ``after`` that records a ceremony (an event outside
    `NO_CEREMONY_EVENTS`: a key made or destroyed, a certificate, an enrolment, a ceremony
    that failed part-way), or None. After the head in the last ceremony record, such a line
    is a ceremony the record does not hold: done without being recorded, interrupted before
    it printed its head, or written into the log by hand."""
    return next((r for r in records[after:] if r.event not in NO_CEREMONY_EVENTS), None)


def genesis(log: Path) -> str | None:
    """The SHA-256 of the log's first line (what names the log: `crlbuilder.keys.logname`),
    or None where there is no log (or it cannot be read) or no whole first line."""
    try:
        with log.open("rb") as f:
            first = f.readline()
    except OSError:
        return None
    return line_hash(first[:-1]) if first.endswith(b"\n") else None


def key_name(key_ref: str) -> str:
    """A key reference fit for the log: a ``pkcs11:`` URI without its query (pin-source),
    without any ``pin-value`` attribute (refused as a key reference, but never logged), and
    with the value of any other attribute that may hold a secret redacted (`redact`: a PIN
    under a misspelt name, ``pin=``, refused too, but after a refused ceremony's line)."""
    if not is_pkcs11_uri(key_ref):
        return key_ref
    path = redact(key_ref.split("?", 1)[0])
    return ";".join(a for a in path.split(";") if not a.strip().lower().startswith("pin-value"))


def record(
    log: Path,
    event: str,
    *,
    key: str = "",
    operators: list[str] | None = None,
    credentials: dict[str, str] | None = None,
    ceremony: str = "",
    detail: dict[str, str | int] | None = None,
) -> Anchor:
    """Append one event to the operation log; return the new head (for the operators' record)."""
    if event not in EVENTS:
        raise ValueError(f"unknown operation log event {event!r}")
    rec = OpRecord(
        seq=0,
        at=datetime.now(UTC).isoformat(timespec="microseconds"),
        event=event,
        key=key_name(key),
        operators=list(operators or []),
        credentials=dict(credentials or {}),
        ceremony=ceremony,
        detail=dict(detail or {}),
        pid=os.getpid(),
        prev=ZERO_HASH,
    )
    return append_chained(log, [rec])


def verify_oplog(log: Path, anchor: Anchor | None = None) -> ChainReport[OpRecord]:
    """Check the operation log's chain (and its head against ``anchor``)."""
    return verify_chain(log, OpRecord, anchor)


def read_oplog(log: Path, anchor: Anchor | None = None) -> list[OpRecord]:
    """Every record of the operation log, in order (none if there is no log yet, unless
    ``anchor`` names a line of it); ChainError if its chain does not hold, or if it does not
    extend ``anchor`` (the head in the last ceremony record: the tail cut off, the log
    rewritten or replaced by another): what it says cannot be relied on."""
    if not log.exists():
        if anchor is None:
            return []
        raise ChainError(
            f"no operation log here, but the ceremony record's head names its line "
            f"{anchor.seq} (a new log is started only by add-operator --new-log)"
        )
    report = verify_oplog(log, anchor)
    if report.anchor_held is False:  # the chain holds; the head given is not in it
        raise ChainError(
            f"the operation log does not hold the head given ({report.problems[0]}): check it "
            "against the ceremony record (a digit copied wrong?); if it is the record's, this "
            "is not the log of the ceremony record (cut off, rewritten or replaced): verify-log"
        )
    if report.problems:
        what = "broken" if anchor is None else "broken, or not the log of the ceremony record"
        raise ChainError(f"the operation log is {what} ({report.problems[0]}): verify-log")
    with log.open("rb") as f:  # the lines verified (one appended since is not read)
        return [msgspec.json.decode(line, type=OpRecord) for line in islice(f, report.records)]


# --- signing sessions -------------------------------------------------------------------

_configured: Path | None = None
_env_read = False
_lock = threading.Lock()
_open: dict[int, SigningSession] = {}


def configure(path: Path | None) -> None:
    """Log this process's signing sessions to ``path`` (None: not at all)."""
    global _configured, _env_read
    with _lock:
        _configured, _env_read = path, True


def _log_path() -> Path | None:
    global _configured, _env_read
    with _lock:
        if not _env_read:
            env = os.environ.get(OPLOG_ENV)
            _configured, _env_read = (Path(env) if env else None), True
        return _configured


class SigningSession:
    """One process's signing session on one key: a line when it starts, one when it ends with
    the number of signatures made (`ended` is called at close or at the process's exit)."""

    __slots__ = ("_count", "_ended", "_key", "_lock", "_log", "_pid")

    def __init__(self, key_ref: str) -> None:
        self._key = key_ref
        self._count = 0
        self._ended = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._log = _log_path()
        if self._log is not None:
            record(self._log, "signing-session-started", key=key_ref)
            with _lock:
                _open[id(self)] = self
                _end_at_exit()

    def signed(self, n: int = 1) -> None:
        """Count ``n`` signatures made in this session."""
        with self._lock:
            self._count += n

    @property
    def count(self) -> int:
        return self._count

    def current(self) -> bool:
        """True while this session is this process's and has not ended (a forked child
        starts its own)."""
        return not self._ended and os.getpid() == self._pid

    def ended(self) -> None:
        """Log the session's end and its count (once; not in a forked child of its process)."""
        with self._lock:
            if self._ended or os.getpid() != self._pid:
                return
            self._ended = True
            count = self._count
        with _lock:
            _open.pop(id(self), None)
        if self._log is not None:
            record(self._log, "signing-session-ended", key=self._key, detail={"signatures": count})


@atexit.register
def end_all() -> None:
    """End this process's open signing sessions (at exit, at `close_all`, or before a
    worker's ``os._exit``): one line each with its count."""
    with _lock:
        sessions = list(_open.values())
    for s in sessions:
        s.ended()


_finalizer_pid = 0


def _end_at_exit() -> None:
    """Have this process end its sessions as it exits: atexit for a process that returns
    from its main, a multiprocessing finalizer for a pool worker (the builder's signing
    processes leave through ``os._exit`` after running those; their registry is emptied at
    fork, so each process registers its own). Called with ``_lock`` held."""
    global _finalizer_pid
    if _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        multiprocessing.util.Finalize(None, end_all, exitpriority=10)


def _after_fork() -> None:
    """A forked child does not own its parent's sessions (their lines are the parent's)."""
    global _lock
    _lock = threading.Lock()
    _open.clear()


os.register_at_fork(after_in_child=_after_fork)
