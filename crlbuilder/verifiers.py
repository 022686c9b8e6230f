"""Which parties a consent (同意) may name: the 署名検証者等 of the responder's registry (Act §18(3)).

A consent record lets the 機構 give a holder's 特定署名用電子証明書記録情報 to
one verifier (Act §18(3)): a 署名検証者 (Act §17(1)) or a 団体署名検証者 (Act
§17(5)), both "署名検証者等" (Act §18(1)). The builder checks each consent's
``verifier`` against the registry of parties the responder serves
(``input.registry``) and quarantines a consent naming an id that is not there,
not such a verifier, or whose provision has ended, rather than store a consent
nobody can use (a misspelt id, a 利用者証明検証者 who may never receive it).

crlbuilder does not import responder (the builder must run without it): this
module reads only what it needs of the registry file (each ``[[party]]``'s
``id``, its titles' ``kind`` and whether it has ``ended``) with `tomllib`, and
leaves every other check of the file to `responder.registry`, except for what a token's
fate rests on (the approval's dates, ``ended.at``): a value there that the responder
refuses refuses the file here too, and the last good reading is kept. So is an empty file
(nothing but white space: truncated, or created and not yet written): read as a registry
of no party it would revoke every token at the next build, irreversibly. Both registry
formats name titles: ``[[party.title]] kind = ...`` and the flat
``titles = [...]``.

The same reading gives the builder the 特定利用者証明検証者 (Act §38-2(4)) and their
approvals (認可: ``approved``, ``approved_until``, ``revoked`` of a
``specified-user-verifier`` title), for `crlbuilder.tokens`: a token is issued only while
its party's approval is in force, and revoked at the build after it stops (the approval
period ended, the approval was revoked, Act §38-2(6), or the party's provision ended or
it left the registry).

`ConsentVerifiers.current` re-reads the file when it changed (its size and
mtime), so a party registered while ``build --follow`` runs is known to the
next spool file.
"""

from __future__ import annotations

import enum
import math
import os
import time
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Final

from crlbuilder.tokenrequest import approval_window

SPECIFIED_TITLE: Final = "specified-user-verifier"
"""特定利用者証明検証者 (Act §38-2(4)): receives 特定利用者証明検証者証明符号 (Act §38-3)."""
RECORD_INFO_TITLES: Final = frozenset({"signature-verifier", "group-signature-verifier"})
"""Titles that receive 特定署名用電子証明書記録情報: 署名検証者等 (Act §18(1), (3))."""


class TokenEnd(enum.Enum):
    """Why a party's 特定利用者証明検証者証明符号 no longer shows what it says (Act §38-3(1):
    that the party is a 特定利用者証明検証者), each with the article it rests on: what the
    builder revokes its tokens for (`crlbuilder.tokens.TokenIssuer.revoke_withdrawn`)."""

    APPROVAL_REVOKED = "approval-revoked"
    """The ministers revoked the approval (認可の取消し, Act §38-2(6))."""
    APPROVAL_NOT_IN_FORCE = "approval-not-in-force"
    """The approval's period (``approved_until``) ended, or it starts later (認可, §38-2(1))."""
    PROVISION_ENDED = "provision-ended"
    """The party's provision ended (``ended``: 届出の廃止, or the title lost): no longer a
    利用者証明検証者 (Act §36(2): the one who notified), whom alone §38-2(1) approves."""
    NOT_APPROVED = "not-approved"
    """The registry names no approved 特定利用者証明検証者 by that id (left the registry, or
    its ``specified-user-verifier`` title removed; Act §38-2(4))."""

    @property
    def article(self) -> str:
        return _TOKEN_END_ARTICLES[self]


_TOKEN_END_ARTICLES: Final = {
    TokenEnd.APPROVAL_REVOKED: "Act §38-2(6)",
    TokenEnd.APPROVAL_NOT_IN_FORCE: "Act §38-2(1)",
    TokenEnd.PROVISION_ENDED: "Act §36(2), §38-2(1)",
    TokenEnd.NOT_APPROVED: "Act §38-2(4)",
}


class RegistryReadError(Exception):
    """The registry file cannot be read as a list of parties; the message says where."""


@dataclass(frozen=True)
class TokenApproval:
    """A 特定利用者証明検証者's approval (認可, Act §38-2(1)) as the builder reads it."""

    window: tuple[int, int | None]
    """`crlbuilder.tokenrequest.approval_window`: start, end (None: no end set)."""
    revoked: float | None = None
    """When the approval was revoked (取消し, Act §38-2(6)), epoch seconds."""
    ended: float | None = None
    """When the party's provision ends (its ``ended.at``, which may lie ahead), epoch seconds."""

    def end(self) -> float:
        """When the approval stops being in force (inf: not foreseen)."""
        ends = [e for e in (self.window[1], self.revoked, self.ended) if e is not None]
        return min(ends) if ends else math.inf

    def in_force(self, now: float) -> bool:
        return self.window[0] <= now < self.end()

    def ended_by(self, now: float) -> TokenEnd | None:
        """Why the approval is not in force at ``now`` (None: it is): the first of its ends
        reached (a revocation and a provision end at one instant: the revocation)."""
        if self.in_force(now):
            return None
        if self.revoked is not None and self.revoked <= now and self.revoked == self.end():
            return TokenEnd.APPROVAL_REVOKED
        if self.ended is not None and self.ended <= now and self.ended == self.end():
            return TokenEnd.PROVISION_ENDED
        return TokenEnd.APPROVAL_NOT_IN_FORCE


@dataclass(frozen=True)
class Verifiers:
    """The parties of one registry file, as consents and tokens see them."""

    eligible: frozenset[str]
    """Parties that may receive 特定署名用電子証明書記録情報 (as of the reading; one whose
    provision ends later, until then: `ended`)."""
    other: dict[str, str] = field(default_factory=dict)
    """Registered parties that may not, and why."""
    approvals: dict[str, TokenApproval] = field(default_factory=dict)
    """The 特定利用者証明検証者, by party id (an ended provision ends the approval: `TokenApproval.ended`)."""
    ended: dict[str, float] = field(default_factory=dict)
    """When each party with an ``ended`` stops being provided (epoch seconds; it may lie ahead:
    ``registry end --at``)."""

    def refusal(self, verifier: str, now: float) -> str | None:
        """Why a consent naming ``verifier`` cannot be accepted at ``now`` (None: it can)."""
        if verifier in self.ended and now >= self.ended[verifier]:
            return f"consent names {verifier!r}, whose provision has ended (Act §18(3))"
        if verifier in self.eligible:
            return None
        why = self.other.get(verifier)
        if why is not None:
            return f"consent names {verifier!r}, {why} (Act §18(3))"
        return (
            f"consent names {verifier!r}, which is no party of the registry "
            "(Act §18(3): only a registered 署名検証者等 receives 特定署名用電子証明書記録情報)"
        )


def parse_verifiers(text: str, *, source: str, now: float | None = None) -> Verifiers:
    """The parties of a registry file's text (the minimal reading described above), as of
    ``now`` (default: the clock): a party whose provision ends later is eligible until then."""
    if now is None:
        now = time.time()
    if not text.strip():  # read as "no party", it would revoke every token, for ever
        raise RegistryReadError(
            f"{source}: empty: not a registry (truncated, or not yet written); no tool "
            "writes one without at least its version"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryReadError(f"{source}: not valid TOML: {e}") from None
    parties = raw.get("party", [])
    if not isinstance(parties, list):
        raise RegistryReadError(f"{source}: party: expected [[party]] tables")
    eligible: set[str] = set()
    other: dict[str, str] = {}
    approvals: dict[str, TokenApproval] = {}
    ended: dict[str, float] = {}
    for i, p in enumerate(parties):
        pid = p.get("id") if isinstance(p, dict) else None
        if not isinstance(p, dict) or not isinstance(pid, str) or not pid:
            raise RegistryReadError(f"{source}: party #{i + 1}: no id")
        kinds = _title_kinds(p)
        where = f"{source}: party {pid!r}"
        approval = _approval(p, where)
        end = _ended_at(p, where)
        if end is not None:
            ended[pid] = end
        if approval is not None:
            # a provision end set ahead (``registry end --at``) stops the approval at its
            # instant, as the responder's `Party.end` stops serving the party then
            approvals[pid] = replace(approval, ended=end)
        if end is not None and end <= now:
            other[pid] = "whose provision has ended"
        elif kinds & RECORD_INFO_TITLES:
            eligible.add(pid)  # until its end, when one is set ahead (`Verifiers.refusal`)
        else:
            other[pid] = (
                "which is not a 署名検証者 or 団体署名検証者 "
                f"(titles: {', '.join(sorted(kinds)) or 'none'})"
            )
    return Verifiers(eligible=frozenset(eligible), other=other, approvals=approvals, ended=ended)


def _approval(party: dict[str, object], where: str) -> TokenApproval | None:
    """The ``specified-user-verifier`` title's approval, if the party holds one.

    A value the responder's checks refuse (`responder.registry.schema`: ``approved`` and
    ``approved_until`` dates, ``revoked`` a time with its offset; `responder.registry.checks`:
    a period that ends before its approval's day) refuses the whole file
    (`RegistryReadError`: the last good reading is kept, as the responder keeps its own):
    read as "no approval" it would revoke the party's tokens for good, read as "not revoked"
    it would keep issuing them."""
    titles = party.get("title", [])
    if not isinstance(titles, list):
        return None
    for t in titles:
        if not isinstance(t, dict) or t.get("kind") != SPECIFIED_TITLE:
            continue
        approved, until, revoked = t.get("approved"), t.get("approved_until"), t.get("revoked")
        if type(approved) is not date:
            raise RegistryReadError(f"{where}: approved: expected a date (YYYY-MM-DD)")
        if until is not None and type(until) is not date:
            raise RegistryReadError(f"{where}: approved_until: expected a date (YYYY-MM-DD)")
        if until is not None and until < approved:  # never in force: all its tokens revoked
            raise RegistryReadError(
                f"{where}: approved_until: the approval period (Act §38-2(1)) ends before "
                "the day of the approval"
            )
        if revoked is not None and not (
            isinstance(revoked, datetime) and revoked.tzinfo is not None
        ):
            raise RegistryReadError(
                f"{where}: revoked: expected a time with its offset (2026-12-04T15:00:00+09:00)"
            )
        return TokenApproval(
            window=approval_window(approved, until),
            revoked=revoked.timestamp() if revoked is not None else None,
        )
    return None


def _ended_at(party: dict[str, object], where: str) -> float | None:
    """When the party's provision ends (``ended.at``, a time with its offset), None when it
    has no ``ended``; anything else refuses the file, as in `_approval`."""
    ended = party.get("ended")
    if ended is None:
        return None
    at = ended.get("at") if isinstance(ended, dict) else None
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise RegistryReadError(
            f"{where}: ended.at: expected a time with its offset (2026-12-04T15:00:00+09:00)"
        )
    return at.timestamp()


def _title_kinds(party: dict[str, object]) -> set[str]:
    kinds: set[str] = set()
    titles = party.get("title", [])
    if isinstance(titles, list):
        kinds |= {
            t["kind"] for t in titles if isinstance(t, dict) and isinstance(t.get("kind"), str)
        }
    flat = party.get("titles", [])
    if isinstance(flat, list):
        kinds |= {t for t in flat if isinstance(t, str)}
    return kinds


class ConsentVerifiers:
    """The registry file the builder checks consents against, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._verifiers = Verifiers(eligible=frozenset())
        self.current()

    @property
    def last_good(self) -> Verifiers:
        """The parties of the last reading that succeeded."""
        return self._verifiers

    def current(self) -> Verifiers:
        """The parties as the file says now; raises RegistryReadError if it cannot be read
        (`last_good` then still holds the previous reading)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                text = self.path.read_text(encoding="utf-8")
                self._verifiers = parse_verifiers(text, source=str(self.path))
                self._stamp = stamp
        except OSError as e:
            raise RegistryReadError(
                f"{self.path}: cannot read the registry: {e.strerror}"
            ) from None
        return self._verifiers
