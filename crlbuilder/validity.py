"""A certificate's validity period (有効期間): the one convention every check of it uses.

RFC 5280 §4.1.2.5: "the period of time from notBefore through notAfter, inclusive". The Ordinance
says the same of JPKI's certificates (Ord §13, §49: 発行の日から…日までとする, to the end of the last
day, whose 23:59:59 JST is notAfter). Certificate times have a resolution of one second, so an
instant ``t`` is inside the period when ``notBefore <= floor(t) <= notAfter``: notAfter's own
second, fractions included, is still inside; the next second is not.

Every comparison of a certificate's window with an instant in crlbuilder and the responder goes
through these functions (epoch seconds, ``int`` or ``float``, or aware datetimes), so that the
rules, OCSP, the /v1 services, signature validation and the signers' checks agree on the
boundary second. Two places keep the older exclusive end on purpose, gated so that a node
replaying old records decides as the nodes that applied them did: the rules before release 1.7
(`crlbuilder.rules.in_effect_at` without ``through``) and the lateness bound
(`crlbuilder.lateness`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TypeAlias

Instant: TypeAlias = int | float | datetime
"""Epoch seconds (UTC) or an aware datetime."""


def second(t: Instant) -> int:
    """The whole second (epoch, UTC) ``t`` falls in: a certificate's times have no fraction."""
    if isinstance(t, datetime):
        t = t.timestamp()
    return math.floor(t)


def expired_at(not_after: Instant, t: Instant) -> bool:
    """Whether a certificate ending at ``not_after`` has expired at ``t``: only after its
    notAfter's second (RFC 5280 §4.1.2.5: inclusive)."""
    return second(t) > second(not_after)


def not_yet_valid_at(not_before: Instant, t: Instant) -> bool:
    """Whether a certificate beginning at ``not_before`` is not yet valid at ``t``."""
    return second(t) < second(not_before)


def valid_at(not_before: Instant, not_after: Instant, t: Instant) -> bool:
    """Whether ``t`` is inside the validity period, both ends included."""
    return not not_yet_valid_at(not_before, t) and not expired_at(not_after, t)


def end_exclusive(not_after: Instant) -> int:
    """The first second after the period (epoch): for a half-open window ``[start, end)`` that
    a certificate's notAfter bounds (a registry credential's, `responder.registry`)."""
    return second(not_after) + 1
