"""A group appliance's bound on each member's requests to the routes it answers from its own store.

A 団体署名検証者 (Act §17(5)) answers its members (署名確認者, Act §20(1)) OCSP, ``POST
/v1/status`` and ``POST /v1/verify`` from its own store. Members have no agreement with
the 機構 (a member's registry entry holds none: the group notifies their range, Ord
§32(4)), so nothing bounded one member's requests there, and one member's flood took the
workers' time from every other member. What the group and a member agree of how the group
answers it is the group-member arrangement (団体署名検証者と署名確認者との間での取決め,
Ord §33(4)); this module applies its bound:

- the member's own ``requests_per_second`` and ``requests_per_day`` when its registry entry
  gives them (its ``signature-confirmer`` title, `responder.registry.schema.
  SignatureConfirmerTitle`);
- else the group's default for every member, ``[group] member_requests_per_second``
  (default 20) and ``member_requests_per_day`` (default 0: none); 0 is no bound.

They are counted in the node's quota table (`responder.limits.LimitsTable`, key
``q/<member>``: every worker's requests together, per node as every quota,
`responder.limits.node_share`), the same table and the same error bound as the agreed
quotas. The relay of record information keeps its own key (``<member>/relay``,
`responder.relay.Bounds`), so a member's OCSP does not use up its share of what the group
may ask of the 機構, nor the reverse.

`MemberQuota` is the `Quota` port `responder.flow.OcspFlow` and `responder.v1.routes.V1Api`
are given on a group appliance: a member past its bound gets OCSP ``tryLater`` or the /v1
429 with Retry-After, whose problem names this bound (`refusal`), and the rule
``member_quota`` in the metrics (``jpkiva_refusals_total{rule}``, and the request's
``party`` label, bounded by the registry). Fresh signatures were already shared fairly
among parties, members included (`responder.signing.SigningPool`: ``[ocsp]
sign_queue_per_party`` per member in the signing threads' queue, round-robin); this bound
caches nothing, so a member within its bound is answered from the cache or the store as
before. Provisions (件数) stay the group's business: a member has no ``provisions_per_day``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from responder.limits import Limit, LimitsTable, Wait
from responder.policy import Refused, Rule
from responder.registry.party import Party
from responder.registry.vocabulary import Title

__all__ = ["MEMBER_QUOTA", "MemberQuota", "bounded", "refusal"]

MEMBER_QUOTA: Final = "member_quota"
"""The refusal rule of a member past its bound (`responder.metrics.RULES`)."""
ARTICLE: Final = "Ord §33(4)"
"""The group-member arrangement (団体署名検証者と署名確認者との間での取決め)."""


def bounded(party: Party, per_second: int, per_day: int) -> Party:
    """``party`` with the bound it is held to on a group appliance: a member's own numbers
    when its entry gives them, else the group's defaults (0: none); anyone else unchanged."""
    if Title.SIGNATURE_CONFIRMER not in party.titles:
        return party
    second = party.requests_per_second
    day = party.requests_per_day
    if second is None and per_second > 0:
        second = per_second
    if day is None and per_day > 0:
        day = per_day
    if second == party.requests_per_second and day == party.requests_per_day:
        return party
    return msgspec.structs.replace(party, requests_per_second=second, requests_per_day=day)


def refusal(limit: Limit) -> Refused:
    """The refusal a member past its bound is told (the /v1 429's problem): which bound."""
    what = {
        Limit.SECOND: "requests per second",
        Limit.DAY: "requests per day (a Japan calendar day)",
    }.get(limit, "requests (the quota table is full)")
    return Refused(
        Rule.QUOTA,
        ARTICLE,
        f"this member's {what} on the group's appliance are used up: the group's bound on "
        "each member (its registry entry's, else [group] member_requests_per_second and "
        "member_requests_per_day)",
    )


class MemberQuota:
    """The quota table as a group appliance's member routes see it: `admit` holds a member
    to its bound (`bounded`); the provisions go to the table unchanged."""

    def __init__(self, table: LimitsTable, per_second: int, per_day: int) -> None:
        self.table = table
        self.per_second = per_second
        self.per_day = per_day

    def admit(self, party: Party, now: float, *, record: bool = True) -> Wait | None:
        return self.table.admit(bounded(party, self.per_second, self.per_day), now, record=record)

    def provisions_left(self, party: Party, now: float) -> int | None:
        return self.table.provisions_left(party, now)

    def take_provisions(
        self, party: Party, n: int, now: float, *, record: bool = True
    ) -> Wait | float:
        return self.table.take_provisions(party, n, now, record=record)

    def give_back_provisions(self, party: Party, n: int, now: float) -> None:
        self.table.give_back_provisions(party, n, now)
