"""The access decision (提供の可否): may this party receive this service, now? Pure, no I/O.

`decide` reads only the `Party` the registry built and the request's service,
family and method: no store, no clock (the caller passes ``now``), no
counters. It answers `ALLOWED` or a `Refused` naming the rule, the article
and a fixed explanation: a refusal never carries status data, so the caller
can log it and answer ``unauthorized`` (OCSP) or 403 (HTTP) with nothing else.

Order of the checks, first failure wins:

1. ``unauthenticated``: no party (Act §17(1), §36(1): only notified parties receive).
2. ``ended``: provision has ended (届出の廃止 or the title lost).
3. ``not-started``: before the notified start date (提供を開始する日, Ord §30(3), §32(3), §61(3)).
4. ``unauthorized_service``: no title of the party receives the service (Act §18, §37,
   §38-3; a 署名確認者 is answered by its group only, Act §20(1)), or the agreement
   (取決め, Act §17(4),(6), §36(2)) does not include it.
5. ``ended`` again when the titles granting the service have lost their
   certification (認定, Act §17(2)); for a party that delegated its whole verification work
   to a certified contractor (電子署名等確認業務受託者), when the contractor's certification,
   which its deemed one rests on, has lapsed or the contractor's provision ended (Ord §29(1)).
6. ``suspended``: the service is stopped (提供の停止, Act §18(6),(7), §37(4)), possibly
   carried over from the other title (Act §18(6)(6), §37(4)(6)), or stopped for the
   contractor doing the party's work (under the contractor's article).
7. ``unauthorized_family``: the certificate's family is not one the service is about,
   or not in the agreement.
8. ``unauthorized_method``: the method cannot carry the service, or is not the agreed
   one (提供の具体的な方法, Ord §31(1), §33(1), §62(1)).

A delegating party (a principal, 電子署名等確認業務委託者) is decided like any other: the
registry made its `Party` with the agreement that counts for it (its own, or its
contractor's deemed its own, Ord §29(4), §60(2)), its deemed certification and its
contractor's suspensions (`responder.registry.delegation`), so no caller needs to know.

On a group appliance (団体署名検証者, Act §17(5), §20) `decide_member` takes the place
of `decide`: only the group's own members (署名確認者) are answered, about signature
certificates, for what the group gives its members (Act §20(1), §20(4),(5)) and rests
on the group's agreement; a member refused under Act §20(2) or §20(6) (a suspension
of the group's registry) is ``suspended`` with that article.

``quota`` and ``cycle`` are counted by the caller (`responder.limits`: requests
per second and per day; at most one download of each CRL file, that is per
issuer generation and per full or delta CRL, per agreed period, 周期, Ord
§31(2), §33(2), §62(2)): `quota_refusal` and `cycle_refusal` build their
refusals, naming the limit that refused.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

from crlbuilder.model import Family
from responder.limits import Limit
from responder.registry.party import Party
from responder.registry.vocabulary import (
    AUTH_SIDE,
    SERVICE_ARTICLES,
    SERVICE_FAMILIES,
    SERVICE_METHODS,
    SIGN_SIDE,
    Method,
    Service,
    Title,
    title_services,
)
from responder.structs import Frozen


class Rule(enum.Enum):
    """Why a request was refused (the ``rule`` label of ``jpkiva_refusals_total``)."""

    UNAUTHENTICATED = "unauthenticated"
    NOT_STARTED = "not-started"
    ENDED = "ended"
    SUSPENDED = "suspended"
    UNAUTHORIZED_SERVICE = "unauthorized_service"
    UNAUTHORIZED_FAMILY = "unauthorized_family"
    UNAUTHORIZED_METHOD = "unauthorized_method"
    QUOTA = "quota"
    CYCLE = "cycle"


class Allowed(Frozen, frozen=True):
    """The request may be answered."""


ALLOWED: Final = Allowed()


class Refused(Frozen, frozen=True):
    """The request is refused: which rule, under which article, and a fixed explanation."""

    rule: Rule
    article: str
    detail: str


_UNAUTHENTICATED: Final = Refused(
    Rule.UNAUTHENTICATED,
    "Act §17(1), §36(1)",
    "no registered party proved itself (only notified parties receive information)",
)

_CONTRACTOR_LAPSED: Final = Refused(
    Rule.ENDED,
    "Ord §29(1)",
    "this party is deemed certified while the contractor (電子署名等確認業務受託者) doing its "
    "whole verification work is: that contractor's certification (認定, Act §17(2)) has lapsed "
    "or its provision has ended",
)
_CONTRACTOR_SUSPENDED: Final = (
    "provision is suspended (提供の停止): the contractor (電子署名等確認業務受託者, Ord §29) "
    "doing this party's verification work is suspended"
)

_OCSP_SERVICE: Final = {
    Family.SIGN_CARD: Service.SIGN_REVOCATION_INFO,
    Family.SIGN_MOBILE: Service.SIGN_REVOCATION_INFO,
    Family.AUTH_CARD: Service.AUTH_REVOCATION_INFO,
    Family.AUTH_MOBILE: Service.AUTH_REVOCATION_INFO,
}
_CRL_SERVICE: Final = {
    Family.SIGN_CARD: Service.SIGN_CRL_FILE,
    Family.SIGN_MOBILE: Service.SIGN_CRL_FILE,
    Family.AUTH_CARD: Service.AUTH_CRL_FILE,
    Family.AUTH_MOBILE: Service.AUTH_CRL_FILE,
}


def service_for_ocsp(family: Family) -> Service:
    """An OCSP request is a request for revocation information (Act §18(1), §37(1))."""
    return _OCSP_SERVICE[family]


def service_for_crl(family: Family) -> Service:
    """A CRL download is the provision of a 失効情報ファイル (Act §18(2), §37(2))."""
    return _CRL_SERVICE[family]


def decide(
    party: Party | None, *, service: Service, family: Family | None, method: Method, now: float
) -> Allowed | Refused:
    """May ``party`` receive ``service`` about a ``family`` certificate by ``method`` at ``now``?

    ``now`` is epoch seconds. ``family`` is None only for a service about no
    certificate (the 特定利用者証明検証者証明符号, Act §38-3).
    """
    if party is None:
        return _UNAUTHENTICATED
    if now >= party.end:
        return Refused(
            Rule.ENDED,
            party.end_article or _notification_article(party, service),
            "provision to this party has ended",
        )
    if now < party.start:
        return Refused(
            Rule.NOT_STARTED,
            _start_article(party, service),
            "the notified provision start date (提供を開始する日) has not come",
        )
    grant = party.grants.get(service)
    if grant is None:
        return _unauthorized_service(party, service)
    if now >= grant.until:
        if party.contractor is not None:
            return _CONTRACTOR_LAPSED
        return Refused(
            Rule.ENDED,
            "Act §17(2)",
            "the certification (認定) under Act §17(1)(5),(6) this service rests on has lapsed",
        )
    for s in party.suspensions:
        if service in s.services and s.since <= now < s.until:
            detail = _CONTRACTOR_SUSPENDED if s.via else "provision is suspended (提供の停止)"
            return Refused(Rule.SUSPENDED, s.article, detail)
    if family is None:
        if grant.families:
            return Refused(
                Rule.UNAUTHORIZED_FAMILY,
                SERVICE_ARTICLES[service],
                "this service is about a certificate of a given family",
            )
    elif family not in grant.families:
        if family not in SERVICE_FAMILIES[service]:
            return Refused(
                Rule.UNAUTHORIZED_FAMILY,
                SERVICE_ARTICLES[service],
                "this service is not about certificates of this family",
            )
        return Refused(
            Rule.UNAUTHORIZED_FAMILY,
            agreement_article(party, service),
            "the agreement (取決め) does not include this family",
        )
    if method not in grant.methods:
        if method not in SERVICE_METHODS[service]:
            return Refused(
                Rule.UNAUTHORIZED_METHOD,
                SERVICE_ARTICLES[service],
                "this method does not carry this service",
            )
        return Refused(
            Rule.UNAUTHORIZED_METHOD,
            _ord_article(party, service, item=1),
            "the agreement (取決め) does not include this method (提供の具体的な方法)",
        )
    return ALLOWED


MEMBER_SERVICES: Final[dict[Service, str]] = {
    Service.SIGN_REVOCATION_INFO: "Act §20(1)",
    Service.SIGN_RECORD_INFO: "Act §20(4),(5)",
    Service.VALIDATION: "Act §20(1), §21(1)",
}
"""What a group answers its members (署名確認者): the result of its check of a signature
certificate (Act §20(1), asked again later too, §21(3)), the validation of a signature
with it (POST /v1/verify on the group's appliance: the confirmation the member owes, Act
§21(1)), and 特定署名用電子証明書記録情報 asked of the 機構 on a member's behalf (Act
§20(4),(5), §21(4))."""

_GROUP_SOURCES: Final[dict[Service, tuple[Service, ...]]] = {
    # §20(1): the answer rests on the revocation information or CRL files of §18(1),(2)
    Service.SIGN_REVOCATION_INFO: (Service.SIGN_CRL_FILE, Service.SIGN_REVOCATION_INFO),
    Service.SIGN_RECORD_INFO: (Service.SIGN_RECORD_INFO,),
    # the validation a group gives its members (POST /v1/verify on its appliance): the
    # §20(1) confirmation with the signature checked too, from the same information
    Service.VALIDATION: (Service.SIGN_CRL_FILE, Service.SIGN_REVOCATION_INFO),
}
"""The group's own agreed services (with the 機構) each member service rests on."""

_ASKED_OF_THE_KIKOU: Final = frozenset({Service.SIGN_RECORD_INFO})
"""The member services the group asks of the 機構 at the member's request (Act §20(4)): a
stop of the 機構's provision to the group (提供の停止, Act §18(6),(7)) refuses them. The others
the group answers from the CRL files it already received (Act §20(1): 提供を受けた...を基に),
whatever the 機構 provides from then on, until their nextUpdate passes (tryLater); only
Act §20(2) lets the group refuse, a member at a time."""


def decide_member(
    party: Party | None,
    group_id: str,
    group: Party | None,
    *,
    service: Service,
    family: Family | None,
    method: Method,
    now: float,
) -> Allowed | Refused:
    """On a group appliance: may this member (署名確認者) receive ``service`` from its group?

    ``group_id`` is the appliance's group (団体署名検証者, Act §17(5)) and ``group`` its
    entry in the group's own registry (None: not registered there). Only the group's own
    members are answered (Act §20(1)); a member's entry falls within the notified range
    (checked when the registry loads, Ord §32(4)). Order, first failure wins: the party is
    a member of this group; the member's and the group's provision have started and not
    ended; the service is one a group gives its members and rests on a service of the
    group's agreement (Act §17(6)); the member is not refused (Act §20(2),(6): `responder
    registry suspend`) nor, for what the group asks of the 機構 on the member's behalf
    (record information, Act §20(4)), the group suspended (`_ASKED_OF_THE_KIKOU`); signature
    certificates only, of a family the group's agreement includes; a method that carries
    the service.
    """
    if party is None:
        return _UNAUTHENTICATED
    if Title.SIGNATURE_CONFIRMER not in party.titles or party.group != group_id:
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            "Act §20(1)",
            "a group answers its own members (署名確認者) only",
        )
    if group is None or Title.GROUP_SIGNATURE_VERIFIER not in group.titles:
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            "Act §17(5)",
            "the group is not in its own registry as a 団体署名検証者",
        )
    for who in (party, group):
        if now >= who.end:
            return Refused(
                Rule.ENDED, who.end_article or "Act §17(5)", "provision to this party has ended"
            )
        if now < who.start:
            return Refused(
                Rule.NOT_STARTED,
                "Ord §32(3)",
                "the notified provision start date (提供を開始する日) has not come",
            )
    article = MEMBER_SERVICES.get(service)
    if article is None:
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            "Act §20(1)",
            "a group gives its members no such service",
        )
    grants = [g for s in _GROUP_SOURCES[service] if (g := group.grants.get(s)) is not None]
    if not grants:
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            "Act §17(6)",
            "the group's agreement (取決め) does not include what this service rests on",
        )
    window = party.suspended(service, now)
    if window is None and service in _ASKED_OF_THE_KIKOU:
        window = next((w for s in _GROUP_SOURCES[service] if (w := group.suspended(s, now))), None)
    if window is not None:
        return Refused(Rule.SUSPENDED, window.article, "provision is suspended (提供の停止)")
    if family is None or family not in SERVICE_FAMILIES[service]:
        return Refused(
            Rule.UNAUTHORIZED_FAMILY,
            article,
            "a group answers about signature certificates (署名用電子証明書) only",
        )
    if not any(family in g.families for g in grants):
        return Refused(
            Rule.UNAUTHORIZED_FAMILY,
            "Act §17(6)",
            "the group's agreement (取決め) does not include this family",
        )
    if method not in SERVICE_METHODS[service]:
        return Refused(Rule.UNAUTHORIZED_METHOD, article, "this method does not carry this service")
    return ALLOWED


def decide_token_status(party: Party | None, *, now: float) -> Allowed | Refused:
    """May ``party`` learn the status of a 特定利用者証明検証者証明符号 (Act §38-3) by OCSP now?

    Any registered party whose provision has started and not ended: a token exists to be
    shown to others as proof of its holder's status (Act §38-3(1)), it carries nothing
    personal, and its status is no 失効情報 of Act §18(1) or §37(1), so no agreement names
    it and the ledger (帳簿, Act §40) does not count it as such a provision.
    """
    if party is None:
        return _UNAUTHENTICATED
    if now >= party.end:
        return Refused(
            Rule.ENDED,
            party.end_article or "Act §17(1), §36(1)",
            "provision to this party has ended",
        )
    if now < party.start:
        return Refused(
            Rule.NOT_STARTED,
            "Ord §30(3), §32(3), §61(3)",
            "the notified provision start date (提供を開始する日) has not come",
        )
    return ALLOWED


def quota_refusal(party: Party, service: Service, *, per: Literal["second", "day"]) -> Refused:
    """The refusal when the party's agreed requests per second or per day are used up."""
    return Refused(
        Rule.QUOTA,
        agreement_article(party, service),
        f"the agreed number of requests per {per} is used up",
    )


_FULL_TABLE: Final = (
    "the responder cannot count this party's requests now (its quota table is full)"
)


def limit_refusal(party: Party, service: Service, limit: Limit) -> Refused:
    """The refusal for what `responder.limits` said: which quota, or the CRL file's cycle."""
    if limit is Limit.CYCLE:
        return cycle_refusal(party, service)
    if limit is Limit.TABLE_FULL:
        return Refused(Rule.QUOTA, agreement_article(party, service), _FULL_TABLE)
    if limit is Limit.PROVISIONS:
        return Refused(
            Rule.QUOTA,
            agreement_article(party, service),
            "the agreed number of provisions per day (provisions_per_day, 件数) would be passed",
        )
    return quota_refusal(party, service, per="second" if limit is Limit.SECOND else "day")


def cycle_refusal(party: Party, service: Service) -> Refused:
    """The refusal of a CRL download before the agreed cycle (提供の周期) has passed."""
    return Refused(
        Rule.CYCLE,
        _ord_article(party, service, item=2),
        "the agreed provision cycle (提供の周期) has not passed since the last download of this CRL file",
    )


def agreement_article(party: Party, service: Service) -> str:
    """The article requiring the agreement that covers ``service`` for this party (and, for
    its contractor's agreement deemed its own, the provision that deems it)."""
    if service in AUTH_SIDE:
        deemed = Title.USER_VERIFIER in party.deemed
        return "Act §36(2), Ord §60(2)" if deemed else "Act §36(2)"
    if service in SIGN_SIDE:
        if Title.SIGNATURE_VERIFIER not in party.titles:
            return "Act §17(6)"
        deemed = Title.SIGNATURE_VERIFIER in party.deemed
        return "Act §17(4), Ord §29(4)" if deemed else "Act §17(4)"
    return "Act §38-3(3)"


def _ord_article(party: Party, service: Service, *, item: int) -> str:
    """Ord §31 (署名検証者), §33 (団体署名検証者) or §62 (利用者証明検証者), item ``item``."""
    if service in AUTH_SIDE:
        return f"Ord §62({item})"
    if service in SIGN_SIDE:
        signer = Title.SIGNATURE_VERIFIER in party.titles
        return f"Ord §31({item})" if signer else f"Ord §33({item})"
    return "Act §38-3(3)"


def _start_article(party: Party, service: Service) -> str:
    if service in SIGN_SIDE and Title.SIGNATURE_VERIFIER not in party.titles:
        return "Ord §32(3)"
    return "Ord §61(3)" if service in AUTH_SIDE else "Ord §30(3)"


def _notification_article(party: Party, service: Service) -> str:
    if service in AUTH_SIDE:
        return "Act §36(1)"
    if (
        Title.GROUP_SIGNATURE_VERIFIER in party.titles
        and Title.SIGNATURE_VERIFIER not in party.titles
    ):
        return "Act §17(5)"
    return "Act §17(1)"


def _unauthorized_service(party: Party, service: Service) -> Refused:
    if party.titles == {Title.SIGNATURE_CONFIRMER}:
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            "Act §20(1)",
            "a 署名確認者 is answered by its 団体署名検証者, not by the 機構",
        )
    if service in title_services(party.titles):
        return Refused(
            Rule.UNAUTHORIZED_SERVICE,
            agreement_article(party, service),
            "the agreement (取決め) does not include this service",
        )
    return Refused(
        Rule.UNAUTHORIZED_SERVICE,
        SERVICE_ARTICLES[service],
        "no title of this party receives this service",
    )
