"""A checked party as workers see it (届出をした署名検証者等): `Party`, its `Grant`s, credentials, suspensions.

The values `responder.registry.checks` builds from the file and `responder.registry.lookup`
indexes; immutable, so every worker shares them. Japan calendar days (JST) become instants here.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping
from datetime import date, datetime
from datetime import time as dtime
from typing import Final

import msgspec

from crlbuilder.der import der_length
from crlbuilder.model import Family
from crlbuilder.rules import JST
from responder.registry.vocabulary import (
    AuthMethod,
    Method,
    Service,
    Title,
)

# --- what the workers use --------------------------------------------------------------


def directory_name(name_der: bytes) -> bytes:
    """The DER of GeneralName ``directoryName`` ([4], explicit: a Name is a CHOICE) holding
    the Name ``name_der``: how a signed OCSP request's requestorName names a certificate
    subject (RFC 6960 §4.1.1, RFC 5280 §4.2.1.6)."""
    return b"\xa4" + der_length(len(name_der)) + name_der


def day_start(d: date) -> float:
    """The first second (epoch) of a Japan calendar day."""
    return datetime.combine(d, dtime(0), tzinfo=JST).timestamp()


def day_end(d: date) -> float:
    """The first second (epoch) after a Japan calendar day: JST keeps no daylight saving, so
    every day is 86,400 seconds (and the last day a date can hold has an end too)."""
    return day_start(d) + 86_400


class CredentialInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One usable credential: what to match and when it is valid."""

    label: str
    kind: AuthMethod
    key: bytes
    """SHA-256 of the token, or of the certificate's DER."""
    not_before: float = -math.inf
    not_after: float = math.inf
    """Valid while ``not_before <= now < not_after`` (epoch seconds): half-open. A certificate
    credential's ``not_after`` is at most the second after its certificate's notAfter, which is
    inside the certificate's validity (`crlbuilder.validity.end_exclusive`)."""
    spki: bytes = b""
    """The certificate's SubjectPublicKeyInfo DER (certificate kinds)."""
    subject: bytes = b""
    """The certificate's subject Name DER (certificate kinds): the requestorName a signed
    OCSP request names it by (RFC 6960 §4.1.2)."""

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now < self.not_after


class Grant(msgspec.Struct, frozen=True):
    """An agreed service: for which families, by which methods, until when."""

    families: frozenset[Family]
    methods: frozenset[Method]
    until: float = math.inf
    """The lapse of the Act §17(1)(5),(6) certification (Act §17(2)), if any."""


def revocation_families(grants: Mapping[Service, Grant]) -> frozenset[Family]:
    """The families ``grants`` let a party receive revocation information or CRL files about
    (`Party.families`)."""
    out: set[Family] = set()
    for s in _REVOCATION:
        if s in grants:
            out |= grants[s].families
    return frozenset(out)


_REVOCATION: Final = (
    Service.SIGN_REVOCATION_INFO,
    Service.SIGN_CRL_FILE,
    Service.AUTH_REVOCATION_INFO,
    Service.AUTH_CRL_FILE,
)


class SuspensionWindow(msgspec.Struct, frozen=True):
    """Services stopped from ``since`` until ``until`` under ``article``."""

    services: frozenset[Service]
    since: float
    until: float
    article: str
    via: str = ""
    """The contractor (電子署名等確認業務受託者, Ord §29) whose suspension this is, when the
    party inherits it (`responder.registry.delegation`); "" for the party's own."""


class Approval(msgspec.Struct, frozen=True):
    """A 特定利用者証明検証者's approval (認可, Act §38-2(1)), as epoch seconds.

    In force while ``start <= now < min(until, revoked)``: from the approval day's first
    second (JST) to the end of its period's last day (``approved_until``), unless the
    ministers revoked it (取消し, Act §38-2(6)) earlier."""

    start: float
    until: float = math.inf
    """The end of the approval period (the first second after its last Japan day)."""
    revoked: float = math.inf
    """When the approval was revoked (Act §38-2(6))."""
    window: tuple[int, int | None] = (0, None)
    """The approval period as `crlbuilder.tokenrequest.approval_window` gives it (a token
    request's id rests on it)."""

    @property
    def end(self) -> float:
        """When the approval stops being in force, for whichever reason."""
        return min(self.until, self.revoked)

    def in_force(self, now: float) -> bool:
        return self.start <= now < self.end


class PartyState(enum.Enum):
    ACTIVE = "active"
    NOT_STARTED = "not-started"
    """Before the notified start date (提供を開始する日)."""
    SUSPENDED = "suspended"
    """Some service stopped (提供の停止)."""
    ENDED = "ended"


class Party(msgspec.Struct, frozen=True, kw_only=True):
    """A registered party as the workers use it (read by `responder.policy.decide`)."""

    id: str
    name: str
    titles: frozenset[Title]
    families: frozenset[Family]
    """Families it may receive revocation information or CRL files about."""
    auth: frozenset[AuthMethod]
    """The kinds of credential it holds."""
    cert_public_keys: tuple[bytes, ...]
    """SubjectPublicKeyInfo DER of each signed-request certificate."""
    group: str | None = None
    """For a 署名確認者: its 団体署名検証者's id."""
    start: float = -math.inf
    end: float = math.inf
    end_article: str = ""
    grants: dict[Service, Grant] = msgspec.field(default_factory=dict)
    suspensions: tuple[SuspensionWindow, ...] = ()
    credentials: tuple[CredentialInfo, ...] = ()
    requests_per_second: int | None = None
    """Agreed quota (取決め), across all workers; None: no limit."""
    requests_per_day: int | None = None
    provisions_per_day: int | None = None
    """Agreed provisions (件数, Ord §71(4)) per Japan calendar day, across all workers; None:
    no bound (`responder.limits.LimitsTable.take_provisions`)."""
    approval: Approval | None = None
    """A 特定利用者証明検証者's approval (Act §38-2(1)); None for every other party."""
    crl_cycle_seconds: int = 0
    """At most one download of each CRL file (issuer generation, full or delta) per this many
    seconds (周期, Ord §31(2)); 0: no limit."""
    contractor: str | None = None
    """The 電子署名等確認業務受託者 its titles delegate its whole verification work to (Ord
    §29(1)): its deemed certification lasts while the contractor's does, and what stops the
    contractor stops it (`responder.registry.delegation`). None: it does its own work."""
    agreement_holder: str | None = None
    """The party whose agreement (取決め) is deemed this one's on the sides of `deemed`: its
    contractor (Ord §29(4), §60(2)). Its grants on those sides are that agreement's, its
    quotas and cycle that agreement's (or the tighter of it and its own, which covers the
    other side), and its requests count against that agreement's quotas (`quota_id`). None:
    its own agreement only."""
    deemed: frozenset[Title] = frozenset()
    """The delegated titles whose agreement is its contractor's, deemed its own (Ord §29(4)
    for the 署名検証者 title, §60(2) for the 利用者証明検証者 one): those whose kind the
    contractor holds. Empty: every agreement of it is its own."""

    @property
    def quota_id(self) -> str:
        """The id whose counters its agreed quotas are counted under (`responder.limits`): its
        own, or the holder of the agreement deemed its own (shared with the contractor and
        every other party it counts for)."""
        return self.agreement_holder or self.id

    @property
    def fair_id(self) -> str:
        """The id its turn in a worker's fair queues (`responder.signqueue.FairQueue`: the
        signing threads, the /v1 batch thread) is taken under: the body whose systems make
        its requests, its contractor's for a principal (Ord §29(1): the contractor does its
        whole work), so that a contractor with many principals has one share, as any party."""
        return self.contractor or self.id

    def may_receive(self, family: Family, now: float | None = None) -> bool:
        """True if it may now receive revocation information or a CRL file about ``family``."""
        t = time.time() if now is None else now
        if not self.start <= t < self.end:
            return False
        services = (
            (Service.SIGN_REVOCATION_INFO, Service.SIGN_CRL_FILE)
            if family.is_sign
            else (Service.AUTH_REVOCATION_INFO, Service.AUTH_CRL_FILE)
        )
        for s in services:
            g = self.grants.get(s)
            if g is not None and family in g.families and t < g.until and not self.suspended(s, t):
                return True
        return False

    def suspended(self, service: Service, now: float) -> SuspensionWindow | None:
        for s in self.suspensions:
            if service in s.services and s.since <= now < s.until:
                return s
        return None

    def state(self, now: float) -> PartyState:
        if now >= self.end:
            return PartyState.ENDED
        if now < self.start:
            return PartyState.NOT_STARTED
        if any(s.since <= now < s.until for s in self.suspensions):
            return PartyState.SUSPENDED
        return PartyState.ACTIVE
