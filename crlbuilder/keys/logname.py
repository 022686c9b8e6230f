"""Which operation log an operators file belongs to (動作の記録, Ord §73(3); 識別符号の管理, §74(2)).

An operators file names its log (`LogName`): the path it was last written with and the log's
genesis, the SHA-256 of its first line (the ``1:...`` head of the first ceremony record of
that log). Without it, ``add-operator --new-log`` given a mistyped ``--log`` started a stray
log there and wrote into the real operators file a credential the real log does not enrol.

`refusal` is the rule, asked before anything is done:

- a ceremony given ``--anchor`` (every one but a log's first): the log's first line must be
  the one the file names, at the path it names (a copy elsewhere would take a ceremony the
  real log never gets: a fork); add-operator alone takes a log that was moved, and names
  its new path; where there is no log, the head given is refused by the ceremony's own
  check;
- ``--new-log``: only at the path the file names (where the security officer set the old log
  aside, or where none was begun yet); elsewhere it is a stray log, refused.

An operators file that names no log (written by an earlier version, or the bootstrap's first
enrolment, before any log exists) is not checked; every ``add-operator`` writes the name of
the log it was recorded in, which is how an older file is upgraded. This guards against
mistakes, not against whoever can write the operators file (they can write its log's name).
Sans-I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogName", "refusal"]


@dataclass(frozen=True)
class LogName:
    """An operators file's log: its absolute path and the SHA-256 of its first line."""

    path: str
    genesis: str


def refusal(
    named: LogName | None, log: str, genesis: str | None, *, new_log: bool, renames: bool = False
) -> str | None:
    """Why the operation log at ``log`` (absolute; its first line's SHA-256 ``genesis``, None
    where there is no log or it is empty) is not the log of an operators file that names
    ``named``, or None (it is, or the file names none). A log that begins as the file's
    but is not at its path is a copy (a ceremony there forks the log: its lines are missing
    from the real one, and the real one's next ceremony, given the same head, passes too),
    or the log moved: only a ceremony that ``renames`` (add-operator, which writes the path
    it was recorded at into the file; a review, which writes nothing) takes it."""
    if named is None:
        return None
    begun = f"the log begun with line 1:{named.genesis}, at {named.path}"
    if new_log:
        if log == named.path:
            return None
        return (
            f"the operators file names its operation log: {begun}; --new-log starts a log only "
            f"at {named.path} (the old one set aside first), not at {log} (a mistyped --log?); "
            "a new operators file starts with its own log"
        )
    if genesis is None:
        return None  # no log here: the head given names a line of one, and is refused
    if genesis == named.genesis:
        if log == named.path or renames:
            return None
        return (
            f"operation log {log} begins as the operators file's log ({begun}) but is not "
            f"at its path: a copy of it (a ceremony there would fork the log, its lines "
            f"missing from {named.path}), or the log moved (an operator's own add-operator "
            f"--replace at {log} names the new path first)"
        )
    return (
        f"operation log {log} is not the operators file's log ({begun}); {log} begins with "
        f"line 1:{genesis}: check --log and --operators"
    )
