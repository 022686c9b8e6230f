"""The law's vocabulary for parties: titles, services, methods, authentication, suspension articles.

Titles (署名検証者 ... Act §17(1),(5), §36, §38-2), the services an agreement (取決め) names and
which title may receive which (`title_services`), the methods of provision (Ord §31(1)) and
the articles under which provision is suspended (提供の停止, Act §18(6),(7), §37(4)). Pure
data and small pure functions; depends only on `crlbuilder.model`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from crlbuilder.model import Family

# --- the law's vocabulary -------------------------------------------------------------


class Title(enum.Enum):
    """The titles under which a party receives information (DOMAIN.md §5)."""

    SIGNATURE_VERIFIER = "signature-verifier"
    """署名検証者 (Act §17(1), (4))."""
    GROUP_SIGNATURE_VERIFIER = "group-signature-verifier"
    """団体署名検証者 (Act §17(5), (6))."""
    SIGNATURE_CONFIRMER = "signature-confirmer"
    """署名確認者: a member of a group; answered by its group only (Act §20(1))."""
    USER_VERIFIER = "user-verifier"
    """利用者証明検証者 (Act §36)."""
    SPECIFIED_USER_VERIFIER = "specified-user-verifier"
    """特定利用者証明検証者 (Act §38-2)."""


class Service(enum.StrEnum):
    """What the 機構 provides: one value per paragraph of the Act (提供の種類).

    A StrEnum: it hashes as fast as a str, which the ledger's hot path needs."""

    SIGN_REVOCATION_INFO = "sign-revocation-info"
    """保存期間に係る署名用電子証明書失効情報 on request (Act §18(1)): OCSP or JSON status."""
    SIGN_CRL_FILE = "sign-crl-file"
    """保存期間に係る署名用電子証明書失効情報ファイル (Act §18(2)): the sign CRLs."""
    SIGN_RECORD_INFO = "sign-record-info"
    """特定署名用電子証明書記録情報 (Act §18(3)): a holder's current serial and four facts."""
    CORRESPONDING_SIGN_SERIAL = "corresponding-sign-serial"
    """対応署名用電子証明書の発行の番号 (Act §18(4)): card <-> mobile sign serial."""
    CORRESPONDING_SERIAL = "corresponding-serial"
    """対応証明書の発行の番号 (Act §18(5)): card sign <-> card auth serial."""
    AUTH_REVOCATION_INFO = "auth-revocation-info"
    """保存期間に係る利用者証明用電子証明書失効情報 on request (Act §37(1))."""
    AUTH_CRL_FILE = "auth-crl-file"
    """保存期間に係る利用者証明用電子証明書失効情報ファイル (Act §37(2))."""
    CORRESPONDING_AUTH_SERIAL = "corresponding-auth-serial"
    """対応利用者証明用電子証明書の発行の番号 (Act §37(3)): card <-> mobile auth serial."""
    SPECIFIED_VERIFIER_TOKEN = "specified-verifier-token"
    """特定利用者証明検証者証明符号 (Act §38-3(2))."""
    VALIDATION = "validation"
    """署名検証 (電子署名の検証): a signature, its sign certificate's path and its status at the
    signing instant and now, checked in one call, for the confirmation a 署名検証者 owes
    (Act §19(1)) and a group's 署名確認者 owe through it (Act §20(1), §21(1)). Built on the
    sign revocation information of Act §18(1), so it stops with it (§18(6), (7))."""

    @property
    def ja(self) -> str:
        """The Japanese legal name."""
        return SERVICE_JA[self]

    @property
    def article(self) -> str:
        """The article that provides it, e.g. ``"Act §18(1)"``."""
        return SERVICE_ARTICLES[self]


class Method(enum.StrEnum):
    """The concrete method of provision (提供の具体的な方法, Ord §31(1), §33(1), §62(1), §71(5))."""

    OCSP = "ocsp"
    """An OCSP answer (RFC 6960)."""
    CRL_FILE = "crl-file"
    """A CRL file download (RFC 5280)."""
    JSON = "json"
    """A JSON service answer (/v1/...)."""

    @property
    def ja(self) -> str:
        return METHOD_JA[self]


METHOD_JA: Final[dict[Method, str]] = {
    Method.OCSP: "OCSP応答",
    Method.CRL_FILE: "失効情報ファイル(CRL)",
    Method.JSON: "JSON応答",
}
SERVICE_JA: Final[dict[Service, str]] = {
    Service.SIGN_REVOCATION_INFO: "署名用電子証明書失効情報",
    Service.SIGN_CRL_FILE: "署名用電子証明書失効情報ファイル",
    Service.SIGN_RECORD_INFO: "特定署名用電子証明書記録情報",
    Service.CORRESPONDING_SIGN_SERIAL: "対応署名用電子証明書の発行の番号",
    Service.CORRESPONDING_SERIAL: "対応証明書の発行の番号",
    Service.AUTH_REVOCATION_INFO: "利用者証明用電子証明書失効情報",
    Service.AUTH_CRL_FILE: "利用者証明用電子証明書失効情報ファイル",
    Service.CORRESPONDING_AUTH_SERIAL: "対応利用者証明用電子証明書の発行の番号",
    Service.SPECIFIED_VERIFIER_TOKEN: "特定利用者証明検証者証明符号",
    Service.VALIDATION: "署名検証(電子署名の検証)",
}


class AuthMethod(enum.Enum):
    """How a party proves who it is (credential kinds)."""

    TOKEN = "token"
    MTLS = "mtls"
    SIGNED_REQUEST = "signed-request"


_SIGN: Final = frozenset({Family.SIGN_CARD, Family.SIGN_MOBILE})
_AUTH: Final = frozenset({Family.AUTH_CARD, Family.AUTH_MOBILE})

TITLE_FAMILIES: Final[dict[Title, frozenset[Family]]] = {
    Title.SIGNATURE_VERIFIER: _SIGN,
    Title.GROUP_SIGNATURE_VERIFIER: _SIGN,
    Title.SIGNATURE_CONFIRMER: frozenset(),
    Title.USER_VERIFIER: _AUTH,
    Title.SPECIFIED_USER_VERIFIER: _AUTH,
}
"""Which families' revocation information each title may receive (Act §18(1), §37(1))."""

SERVICE_FAMILIES: Final[dict[Service, frozenset[Family]]] = {
    Service.SIGN_REVOCATION_INFO: _SIGN,
    Service.SIGN_CRL_FILE: _SIGN,
    Service.SIGN_RECORD_INFO: _SIGN,
    Service.CORRESPONDING_SIGN_SERIAL: _SIGN,
    # Act §18(5) items 1 and 2 name the card certificates only
    Service.CORRESPONDING_SERIAL: frozenset({Family.SIGN_CARD, Family.AUTH_CARD}),
    Service.AUTH_REVOCATION_INFO: _AUTH,
    Service.AUTH_CRL_FILE: _AUTH,
    Service.CORRESPONDING_AUTH_SERIAL: _AUTH,
    Service.SPECIFIED_VERIFIER_TOKEN: frozenset(),
    Service.VALIDATION: _SIGN,  # an auth certificate is refused per item, not per call
}
"""The families a request for each service may be about (the certificate asked about)."""

SERVICE_METHODS: Final[dict[Service, frozenset[Method]]] = {
    Service.SIGN_REVOCATION_INFO: frozenset({Method.OCSP, Method.JSON}),
    Service.SIGN_CRL_FILE: frozenset({Method.CRL_FILE}),
    Service.SIGN_RECORD_INFO: frozenset({Method.JSON}),
    Service.CORRESPONDING_SIGN_SERIAL: frozenset({Method.JSON}),
    Service.CORRESPONDING_SERIAL: frozenset({Method.JSON}),
    Service.AUTH_REVOCATION_INFO: frozenset({Method.OCSP, Method.JSON}),
    Service.AUTH_CRL_FILE: frozenset({Method.CRL_FILE}),
    Service.CORRESPONDING_AUTH_SERIAL: frozenset({Method.JSON}),
    Service.SPECIFIED_VERIFIER_TOKEN: frozenset({Method.JSON}),
    Service.VALIDATION: frozenset({Method.JSON}),
}
"""The methods that can carry each service."""

SERVICE_ARTICLES: Final[dict[Service, str]] = {
    Service.SIGN_REVOCATION_INFO: "Act §18(1)",
    Service.SIGN_CRL_FILE: "Act §18(2)",
    Service.SIGN_RECORD_INFO: "Act §18(3)",
    Service.CORRESPONDING_SIGN_SERIAL: "Act §18(4)",
    Service.CORRESPONDING_SERIAL: "Act §18(5)",
    Service.AUTH_REVOCATION_INFO: "Act §37(1)",
    Service.AUTH_CRL_FILE: "Act §37(2)",
    Service.CORRESPONDING_AUTH_SERIAL: "Act §37(3)",
    Service.SPECIFIED_VERIFIER_TOKEN: "Act §38-3(2)",
    Service.VALIDATION: "Act §19(1), §21(1)",
}

TITLE_SERVICES: Final[dict[Title, frozenset[Service]]] = {
    Title.SIGNATURE_VERIFIER: frozenset(
        {
            Service.SIGN_REVOCATION_INFO,
            Service.SIGN_CRL_FILE,
            Service.SIGN_RECORD_INFO,
            Service.CORRESPONDING_SIGN_SERIAL,  # 署名検証者 only, not a group (Act §18(4))
            Service.CORRESPONDING_SERIAL,  # and only if also a 利用者証明検証者 (Act §18(5))
            Service.VALIDATION,  # the confirmation of Act §19(1)
        }
    ),
    # a group receives §18(1)-(3) (Act §18(7) names exactly these for groups), and the
    # validation its members' confirmations need (Act §20(1), §21(1))
    Title.GROUP_SIGNATURE_VERIFIER: frozenset(
        {
            Service.SIGN_REVOCATION_INFO,
            Service.SIGN_CRL_FILE,
            Service.SIGN_RECORD_INFO,
            Service.VALIDATION,
        }
    ),
    Title.SIGNATURE_CONFIRMER: frozenset(),
    Title.USER_VERIFIER: frozenset(
        {
            Service.AUTH_REVOCATION_INFO,
            Service.AUTH_CRL_FILE,
            Service.CORRESPONDING_AUTH_SERIAL,
        }
    ),
    Title.SPECIFIED_USER_VERIFIER: frozenset({Service.SPECIFIED_VERIFIER_TOKEN}),
}
"""The services each title may receive (Act §18, §37, §38-3)."""

SERVICE_REQUIRES_ALL: Final[dict[Service, frozenset[Title]]] = {
    Service.CORRESPONDING_SERIAL: frozenset({Title.SIGNATURE_VERIFIER, Title.USER_VERIFIER}),
}
"""Services that need several titles at once (Act §18(5): a 署名検証者 that is also a
利用者証明検証者)."""

SIGN_SIDE: Final = frozenset(
    {
        Service.SIGN_REVOCATION_INFO,
        Service.SIGN_CRL_FILE,
        Service.SIGN_RECORD_INFO,
        Service.CORRESPONDING_SIGN_SERIAL,
        Service.CORRESPONDING_SERIAL,
        Service.VALIDATION,  # it hands out §18(1) information: it stops with it
    }
)
"""What Act §18(6) lets the 機構 stop for a 署名検証者等."""
GROUP_SIDE: Final = frozenset(
    {
        Service.SIGN_REVOCATION_INFO,
        Service.SIGN_CRL_FILE,
        Service.SIGN_RECORD_INFO,
        Service.VALIDATION,  # it hands out §18(1) information: it stops with it
    }
)
"""What Act §18(7) lets the 機構 stop for a 団体署名検証者 (its members broke the rules)."""
AUTH_SIDE: Final = frozenset(
    {Service.AUTH_REVOCATION_INFO, Service.AUTH_CRL_FILE, Service.CORRESPONDING_AUTH_SERIAL}
)
"""What Act §37(4) lets the 機構 stop for a 利用者証明検証者."""

_SIGN_TITLES: Final = frozenset({Title.SIGNATURE_VERIFIER, Title.GROUP_SIGNATURE_VERIFIER})


def title_services(titles: Collection[Title]) -> frozenset[Service]:
    """Every service the law lets a party holding ``titles`` receive."""
    return _title_services(frozenset(titles))


@functools.cache
def _title_services(titles: frozenset[Title]) -> frozenset[Service]:
    out: set[Service] = set()
    for t in titles:
        out |= TITLE_SERVICES[t]
    return frozenset(s for s in out if SERVICE_REQUIRES_ALL.get(s, frozenset()) <= titles)


@dataclass(frozen=True, slots=True)
class SuspensionArticle:
    """What a suspension article stops, and what its carry-over becomes."""

    services: frozenset[Service]
    needs: frozenset[Title]
    """The party must hold one of these titles."""
    carry_services: frozenset[Service]
    carry_needs: frozenset[Title]
    carry_article: str
    carried_item: int = 0
    """The item whose ground is the other title's suspension (Act §18(6)(6), §37(4)(6)): it
    applies only to a party holding one of ``carry_needs`` too; 0: no such item."""


_SUSPENSION_ARTICLES: Final[dict[str, tuple[range, SuspensionArticle]]] = {
    "Act §18(6)": (
        range(1, 7),
        SuspensionArticle(
            SIGN_SIDE,
            _SIGN_TITLES,
            AUTH_SIDE,
            frozenset({Title.USER_VERIFIER}),
            "Act §37(4)(6)",
            carried_item=6,
        ),
    ),
    "Act §18(7)": (
        range(1, 6),
        SuspensionArticle(
            GROUP_SIDE, frozenset({Title.GROUP_SIGNATURE_VERIFIER}), frozenset(), frozenset(), ""
        ),
    ),
    # A group may refuse its members in the cases of Act §18(7)'s items (Act §20(2): the
    # answer of §20(1); §20(6): the 特定署名用電子証明書記録情報 of §20(5)). Written
    # "Act §20(2)(N)" / "Act §20(6)(N)", N the §18(7) item the member falls under.
    "Act §20(2)": (
        range(1, 6),
        SuspensionArticle(
            # the answer of §20(1), and the validation built on it (POST /v1/verify)
            frozenset({Service.SIGN_REVOCATION_INFO, Service.VALIDATION}),
            frozenset({Title.SIGNATURE_CONFIRMER}),
            frozenset(),
            frozenset(),
            "",
        ),
    ),
    "Act §20(6)": (
        range(1, 6),
        SuspensionArticle(
            frozenset({Service.SIGN_RECORD_INFO}),
            frozenset({Title.SIGNATURE_CONFIRMER}),
            frozenset(),
            frozenset(),
            "",
        ),
    ),
    "Act §37(4)": (
        range(1, 7),
        SuspensionArticle(
            AUTH_SIDE,
            frozenset({Title.USER_VERIFIER}),
            SIGN_SIDE,
            _SIGN_TITLES,
            "Act §18(6)(6)",
            carried_item=6,
        ),
    ),
}


def _item(rest: str) -> int:
    """The item of ``N)``: N written in ASCII digits without a leading zero; 0 otherwise (a
    fullwidth or other script's digit, which `str.isdigit` and `int` take, is not the item)."""
    digits = rest[:-1]
    if not rest.endswith(")") or not digits.isascii() or not digits.isdigit():
        return 0
    return int(digits) if str(int(digits)) == digits else 0


def suspension_item(article: str) -> int:
    """The item number of a suspension article (``"Act §18(6)(3)"``: 3), 0 when none."""
    _, sep, rest = article.partition(")(")
    return _item(rest) if sep else 0


def suspension_article(article: str) -> SuspensionArticle | None:
    """The meaning of ``"Act §18(6)(3)"``, ``"Act §18(7)(1)"``, ``"Act §37(4)(6)"``, or on a
    group appliance ``"Act §20(2)(1)"`` / ``"Act §20(6)(1)"`` (a member refused, §18(7) item 1);
    None for any other writing."""
    head, sep, rest = article.partition(")(")
    item = _item(rest) if sep else 0
    known = _SUSPENSION_ARTICLES.get(head + ")")
    if known is None or item not in known[0]:
        return None
    return known[1]
