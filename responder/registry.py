"""The registry of parties (届出をした署名検証者等): who may receive what, proven how, since when.

One TOML file, read by every worker and changed only through `responder
registry ...` (`responder.registrycli`). Each ``[[party]]`` records what the
law makes the 機構 know about a recipient:

- the notification (届出, Act §17(1),(5), §36(1); Ord §30, §32, §61): name,
  address, representative, the office receiving the data, the provision start
  date, and for a group the range of its members (署名確認者の範囲);
- its titles: 署名検証者 with its Act §17(1) category (1..6), 団体署名検証者
  with its Act §17(5) kind (1, 2) and member range, 利用者証明検証者,
  特定利用者証明検証者 (approved under Act §38-2), or 署名確認者 (a member of a
  group, answered by its group only, Act §20(1));
- the agreement (取決め, Act §17(4),(6), §36(2); Ord §31, §33, §62): the
  services by name, families, methods, the CRL download cycle (周期), quotas,
  the liability text (損害賠償に関する事項), for a group how it answers its
  members;
- credentials: bearer tokens (stored as SHA-256 only), client certificates
  for mutual TLS, certificates for signed OCSP requests; each with an optional
  validity window, so a party can hold two overlapping ones while rotating;
- state: suspensions (提供の停止, Act §18(6),(7), §37(4)), with carry-over to
  the other title (Act §18(6)(6), §37(4)(6)), and the end of provision.

::

    version = 2

    [[party]]
    id = "both-verifier"                  # stable id, [a-z0-9-]
    name = "Demo Bank"                     # 氏名又は名称 (Ord §30(1))

    [party.notification]                   # 届出
    address = "..."                        # 住所 (Ord §30(1))
    representative = "..."                 # 代表者の氏名 (a corporation; always for a group)
    office = "..."                         # 提供を受ける事務所の所在地 (Ord §30(2))
    start = 2024-04-01                     # 提供を開始する日 (Ord §30(3)), a Japan date

    [[party.title]]
    kind = "signature-verifier"            # 署名検証者
    category = 6                           # Act §17(1) item
    certified_until = 2026-03-31           # items 5 and 6 only: the 認定 lapses (Act §17(2))

    [[party.title]]
    kind = "user-verifier"                 # 利用者証明検証者 (Act §36)
    category = 6
    certified_until = 2026-03-31

    [party.agreement]                      # 取決め
    services = ["sign-revocation-info", "sign-crl-file", "corresponding-serial",
                "auth-revocation-info"]
    families = ["sign-card", "sign-mobile", "auth-card", "auth-mobile"]
    methods = ["ocsp", "crl-file", "json"] # 提供の具体的な方法 (Ord §31(1))
    crl_cycle_seconds = 3600               # 周期 (Ord §31(2)): each CRL file at most once per period
    requests_per_second = 200              # quotas (absent: none)
    requests_per_day = 5000000
    liability = "..."                      # 損害賠償に関する事項 (Ord §31(3))

    [[party.credential]]
    kind = "token"                         # or "mtls", "signed-request" (with cert = "path")
    label = "token-2025"
    token_sha256 = "<hex>"
    not_before = 2025-04-01T00:00:00+09:00
    not_after = 2026-04-01T00:00:00+09:00

    [[party.suspension]]                   # 提供の停止
    article = "Act §37(4)(1)"
    since = 2025-06-01T09:00:00+09:00
    reason = "..."
    carry_over = true                      # also stops the sign services (Act §18(6)(6))

Decisions recorded here (the tests hold them):

- Dates (start, certified_until, approved) are Japan calendar days (JST, UTC+9);
  times need an explicit offset.
- A group's member range (署名確認者の範囲, Ord §32(4)) is a list of party ids
  (``members``), an id prefix (``member_prefix``), or both; a member's entry
  must fall inside it. Member entries carry no notification and no agreement
  (the group notifies their range; their agreement is with the group).
- Certificate credentials are valid inside both their own window and the
  certificate's validity. Credentials that expired while the file sat still
  are ignored with a warning when loading (workers never refuse a whole
  registry because time passed); the admin commands refuse to add an expired
  credential or to leave a changed party with expired credentials only.
- A credential belongs to one party: the same token, certificate or public
  key on two parties is refused.
- The old flat format (``titles = [...]``, ``tokens_sha256``, ``certs``,
  ``auth``) is parsed but refused when a registry is built (loaded by a worker,
  checked, changed): it carries no notification (届出) and no agreement (取決め),
  so it would receive every service its titles allow and could not be
  suspended, and no party is served without both (Act §17(1),(4), §36(1),(2)).
  The refusal names the command that migrates the file, `responder registry
  migrate` (`responder.registrycli`), which asks the operator for what the old
  entries lack and invents nothing.

Workers pick up a changed file within a second by calling
`Registry.reload_if_changed` (it compares the file's stat) or on SIGHUP.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import math
import os
import time
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from crlbuilder.der import der_length
from crlbuilder.manifest import Manifest
from crlbuilder.model import Family

FORMAT_VERSION: Final = 2
_log: Final = logging.getLogger("responder.registry")
JST: Final = timezone(timedelta(hours=9), "JST")
"""Dates in the registry are Japan calendar days."""

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
}

TITLE_SERVICES: Final[dict[Title, frozenset[Service]]] = {
    Title.SIGNATURE_VERIFIER: frozenset(
        {
            Service.SIGN_REVOCATION_INFO,
            Service.SIGN_CRL_FILE,
            Service.SIGN_RECORD_INFO,
            Service.CORRESPONDING_SIGN_SERIAL,  # 署名検証者 only, not a group (Act §18(4))
            Service.CORRESPONDING_SERIAL,  # and only if also a 利用者証明検証者 (Act §18(5))
        }
    ),
    # a group receives §18(1)-(3) (Act §18(7) names exactly these for groups)
    Title.GROUP_SIGNATURE_VERIFIER: frozenset(
        {Service.SIGN_REVOCATION_INFO, Service.SIGN_CRL_FILE, Service.SIGN_RECORD_INFO}
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
    }
)
"""What Act §18(6) lets the 機構 stop for a 署名検証者等."""
GROUP_SIDE: Final = frozenset(
    {Service.SIGN_REVOCATION_INFO, Service.SIGN_CRL_FILE, Service.SIGN_RECORD_INFO}
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


_SUSPENSION_ARTICLES: Final[dict[str, tuple[range, SuspensionArticle]]] = {
    "Act §18(6)": (
        range(1, 7),
        SuspensionArticle(
            SIGN_SIDE, _SIGN_TITLES, AUTH_SIDE, frozenset({Title.USER_VERIFIER}), "Act §37(4)(6)"
        ),
    ),
    "Act §18(7)": (
        range(1, 6),
        SuspensionArticle(
            GROUP_SIDE, frozenset({Title.GROUP_SIGNATURE_VERIFIER}), frozenset(), frozenset(), ""
        ),
    ),
    "Act §37(4)": (
        range(1, 7),
        SuspensionArticle(
            AUTH_SIDE, frozenset({Title.USER_VERIFIER}), SIGN_SIDE, _SIGN_TITLES, "Act §18(6)(6)"
        ),
    ),
}


def suspension_article(article: str) -> SuspensionArticle | None:
    """The meaning of ``"Act §18(6)(3)"``, ``"Act §18(7)(1)"`` or ``"Act §37(4)(6)"``."""
    head, sep, rest = article.partition(")(")
    if not sep or not rest.endswith(")") or not rest[:-1].isdigit():
        return None
    known = _SUSPENSION_ARTICLES.get(head + ")")
    if known is None or int(rest[:-1]) not in known[0]:
        return None
    return known[1]


# --- the file ---------------------------------------------------------------------------

PartyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Aware = Annotated[datetime, msgspec.Meta(tz=True)]
Category = Annotated[int, msgspec.Meta(ge=1, le=6)]


class _Table(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    pass


class Notification(_Table, frozen=True, kw_only=True):
    """The notification (届出, Act §17(1),(5), §36(1)): Ord §30, §32, §61 items besides the name."""

    address: Text
    """住所 (Ord §30(1), §32(1), §61(1))."""
    representative: Name | None = None
    """代表者の氏名: for a corporation (Ord §30(1)); always for a group (Ord §32(1))."""
    office: Text
    """提供を受ける事務所の所在地 (Ord §30(2))."""
    start: date
    """提供を開始する日 (Ord §30(3)): nothing is provided before this Japan day."""
    notified: date | None = None
    """The day the 機構 received the notification."""


class SignatureVerifierTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="signature-verifier"
):
    """署名検証者 (Act §17(1), (4))."""

    TITLE: ClassVar[Title] = Title.SIGNATURE_VERIFIER
    category: Category
    """The Act §17(1) item the party falls under (1 行政機関等 ... 6 主務大臣認定)."""
    certified_until: date | None = None
    """Items 5 and 6: the last day of the current certification (認定, renewed, Act §17(2))."""


class GroupSignatureVerifierTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="group-signature-verifier"
):
    """団体署名検証者 (Act §17(5), (6)) and its 署名確認者の範囲 (Ord §32(4))."""

    TITLE: ClassVar[Title] = Title.GROUP_SIGNATURE_VERIFIER
    group_kind: Literal[1, 2]
    """Act §17(5) item: 1 (members act for others before government bodies and courts) or 2."""
    members: list[PartyId] = []
    """Member party ids, listed one by one."""
    member_prefix: PartyId | None = None
    """Or every party id starting with this prefix."""


class SignatureConfirmerTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="signature-confirmer"
):
    """署名確認者: answered by its 団体署名検証者 only (Act §20(1)), never by the 機構."""

    TITLE: ClassVar[Title] = Title.SIGNATURE_CONFIRMER
    group: PartyId


class UserVerifierTitle(_Table, frozen=True, kw_only=True, tag_field="kind", tag="user-verifier"):
    """利用者証明検証者 (Act §36): one of the Act §17(1) items."""

    TITLE: ClassVar[Title] = Title.USER_VERIFIER
    category: Category
    certified_until: date | None = None


class SpecifiedUserVerifierTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="specified-user-verifier"
):
    """特定利用者証明検証者: a 利用者証明検証者 approved by the ministers (Act §38-2(1))."""

    TITLE: ClassVar[Title] = Title.SPECIFIED_USER_VERIFIER
    approved: date
    """The day of the approval (認可)."""
    approval: Text | None = None
    """Reference of the approval."""


TitleEntry = (
    SignatureVerifierTitle
    | GroupSignatureVerifierTitle
    | SignatureConfirmerTitle
    | UserVerifierTitle
    | SpecifiedUserVerifierTitle
)


class Agreement(_Table, frozen=True, kw_only=True):
    """The agreement (取決め, Act §17(4),(6), §36(2), §38-3(3); Ord §31, §33, §62)."""

    services: Annotated[list[Service], msgspec.Meta(min_length=1)]
    """The range of information provided (提供を行う情報の範囲, Act §17(4))."""
    families: list[Family] = []
    methods: Annotated[list[Method], msgspec.Meta(min_length=1)]
    """提供の具体的な方法 (Ord §31(1))."""
    crl_cycle_seconds: Annotated[int, msgspec.Meta(ge=0)] = 0
    """提供の周期 (Ord §31(2)): at most one download of a CRL file per period; 0: no limit."""
    requests_per_second: Annotated[int, msgspec.Meta(ge=1)] | None = None
    requests_per_day: Annotated[int, msgspec.Meta(ge=1)] | None = None
    liability: Text
    """損害賠償に関する事項 (Ord §31(3))."""
    member_answer: Text | None = None
    """For a group: how it answers its members (回答の具体的な方法, Ord §33(4))."""
    concluded: date | None = None


class _Credential(_Table, frozen=True, kw_only=True):
    label: Label | None = None
    """Names the credential for `registry update --remove-credential` (default: kind-N)."""
    not_before: Aware | None = None
    not_after: Aware | None = None


class TokenCredential(_Credential, frozen=True, kw_only=True, tag_field="kind", tag="token"):
    """A bearer token (``Authorization: Bearer``), known by its SHA-256 only."""

    KIND: ClassVar[AuthMethod] = AuthMethod.TOKEN
    token_sha256: Sha256Hex


class MtlsCredential(_Credential, frozen=True, kw_only=True, tag_field="kind", tag="mtls"):
    """A TLS client certificate (file path relative to the registry file)."""

    KIND: ClassVar[AuthMethod] = AuthMethod.MTLS
    cert: Annotated[str, msgspec.Meta(min_length=1)]


class SignedRequestCredential(
    _Credential, frozen=True, kw_only=True, tag_field="kind", tag="signed-request"
):
    """The certificate whose key signs OCSP requests (RFC 6960 §4.1.2)."""

    KIND: ClassVar[AuthMethod] = AuthMethod.SIGNED_REQUEST
    cert: Annotated[str, msgspec.Meta(min_length=1)]


CredentialEntry = TokenCredential | MtlsCredential | SignedRequestCredential


class Suspension(_Table, frozen=True, kw_only=True):
    """提供の停止 (Act §18(6),(7), §37(4)): the article names what stops."""

    article: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    """``"Act §18(6)(N)"`` (sign services), ``"Act §18(7)(N)"`` (a group's, because of its
    members), ``"Act §37(4)(N)"`` (auth services)."""
    since: Aware
    reason: Text
    until: Aware | None = None
    """Set by `registry resume`; absent while the suspension lasts."""
    carry_over: bool = False
    """Also stop the other title's services (Act §18(6)(6), §37(4)(6))."""


class Ended(_Table, frozen=True, kw_only=True):
    """The end of provision (届出の廃止, or the title lost): final."""

    at: Aware
    reason: Text
    article: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None


class PartyEntry(_Table, frozen=True, kw_only=True):
    """One ``[[party]]`` of the registry file."""

    id: PartyId
    name: Name
    """氏名又は名称 (Ord §30(1))."""
    notification: Notification | None = None
    """Required except for a 署名確認者."""
    title: Annotated[list[TitleEntry], msgspec.Meta(min_length=1)]
    agreement: Agreement | None = None
    """Required except for a 署名確認者."""
    credential: list[CredentialEntry] = []
    suspension: list[Suspension] = []
    ended: Ended | None = None


class LegacyPartyEntry(_Table, frozen=True, kw_only=True):
    """A ``[[party]]`` in the first, flat format: parsed, so that `responder registry
    migrate` can read it, and refused by `Registry.build` (see the module docstring)."""

    id: PartyId
    name: Name
    titles: Annotated[list[Title], msgspec.Meta(min_length=1)]
    tokens_sha256: list[Sha256Hex] = []
    certs: list[str] = []
    auth: list[AuthMethod] = msgspec.field(default_factory=lambda: list(AuthMethod))
    group: PartyId | None = None


AnyEntry = PartyEntry | LegacyPartyEntry


@dataclass
class RegistryFile:
    """The parsed file: its parties in file order."""

    parties: list[AnyEntry] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def find(self, party_id: str) -> AnyEntry | None:
        return next((p for p in self.parties if p.id == party_id), None)


LEGACY_REFUSED: Final = (
    "an entry in the old flat format has no notification (届出) and no agreement (取決め): "
    "it is not served (Act §17(1),(4), §36(1),(2)). Migrate the file with "
    "`responder registry migrate --registry {source} --details DETAILS.toml`, DETAILS.toml "
    "giving each such party's notification, title and agreement (credentials are kept), "
    "or `--drop ID` to leave a party out"
)
"""Why an old-format entry is refused, and how to migrate (``{source}``: the registry file)."""


class RegistryError(Exception):
    """A registry that cannot be used; the message names the file, the party and the field."""


def parse_registry(text: str, *, source: str) -> RegistryFile:
    """Decode a registry file's text (both formats), checking its shape but not its meaning."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"version", "party"})
    if unknown:
        raise RegistryError(f"{source}: unknown top-level field(s): {', '.join(unknown)}")
    version = raw.get("version", 1)
    if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
        raise RegistryError(f"{source}: version: {version!r} is not 1 or {FORMAT_VERSION}")
    raw_parties = raw.get("party", [])
    if not isinstance(raw_parties, list):
        raise RegistryError(f"{source}: party: expected [[party]] tables")
    errors: list[str] = []
    parties: list[AnyEntry] = []
    for i, rp in enumerate(raw_parties):
        pid = rp.get("id") if isinstance(rp, dict) else None
        where = f"{source}: party {pid!r}" if isinstance(pid, str) else f"{source}: party #{i + 1}"
        if not isinstance(rp, dict):
            errors.append(f"{where}: expected a table")
            continue
        kind: type[AnyEntry] = LegacyPartyEntry if "titles" in rp else PartyEntry
        try:
            parties.append(msgspec.convert(rp, kind))
        except msgspec.ValidationError as e:
            errors.append(f"{where}: {str(e).replace('`$.', '`')}")
    if errors:
        raise RegistryError("\n".join(errors))
    return RegistryFile(parties=parties, version=FORMAT_VERSION)


def dump_registry(data: RegistryFile, *, header: str = "") -> str:
    """The TOML text of a registry (parsing it again gives back ``data``)."""
    doc: dict[str, object] = {
        "version": FORMAT_VERSION,
        "party": [entry_to_builtins(p) for p in data.parties],
    }
    return toml_dumps(doc, header=header)


def toml_dumps(doc: Mapping[str, object], *, header: str = "") -> str:
    """TOML text for plain data (str, int, bool, date, datetime, lists, tables), with
    ``header`` as leading comment lines. Only what the registry needs (no floats)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    _toml_table(lines, (), dict(doc), array=False)
    return "\n".join(lines).strip("\n") + "\n"


def entry_to_builtins(entry: AnyEntry) -> dict[str, Any]:
    """A party entry as plain data (dates kept as `date`/`datetime`, enums as their values)."""
    out = msgspec.to_builtins(entry, builtin_types=(datetime, date))
    assert isinstance(out, dict)
    return out


def _toml_table(lines: list[str], path: tuple[str, ...], table: object, *, array: bool) -> None:
    assert isinstance(table, dict)
    if path:
        dotted = ".".join(_toml_key(k) for k in path)
        lines += ["", f"[[{dotted}]]" if array else f"[{dotted}]"]
    nested: list[tuple[str, object]] = []
    for k, v in table.items():
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
            nested.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in nested:
        if isinstance(v, dict):
            _toml_table(lines, (*path, k), v, array=False)
        else:
            assert isinstance(v, list)
            for item in v:
                _toml_table(lines, (*path, k), item, array=True)


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _toml_str(key)


def _toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


# --- what the workers use --------------------------------------------------------------


def directory_name(name_der: bytes) -> bytes:
    """The DER of GeneralName ``directoryName`` ([4], explicit: a Name is a CHOICE) holding
    the Name ``name_der``: how a signed OCSP request's requestorName names a certificate
    subject (RFC 6960 §4.1.1, RFC 5280 §4.2.1.6)."""
    return b"\xa4" + der_length(len(name_der)) + name_der


def day_start(d: date) -> float:
    """The first second (epoch) of a Japan calendar day."""
    return datetime.combine(d, dtime(0), tzinfo=JST).timestamp()


class CredentialInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One usable credential: what to match and when it is valid."""

    label: str
    kind: AuthMethod
    key: bytes
    """SHA-256 of the token, or of the certificate's DER."""
    not_before: float = -math.inf
    not_after: float = math.inf
    """Valid while ``not_before <= now < not_after`` (epoch seconds)."""
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


class SuspensionWindow(msgspec.Struct, frozen=True):
    """Services stopped from ``since`` until ``until`` under ``article``."""

    services: frozenset[Service]
    since: float
    until: float
    article: str


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
    crl_cycle_seconds: int = 0
    """At most one download of each CRL file (issuer generation, full or delta) per this many
    seconds (周期, Ord §31(2)); 0: no limit."""

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


_FileSignature = tuple[int, int, int, int, int]


def _signature(st: os.stat_result) -> _FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Registry:
    """Lookup tables built from a registry file: token hash, cert fingerprint -> party."""

    def __init__(
        self,
        parties: Iterable[Party],
        *,
        file: RegistryFile | None = None,
        source: str = "",
        warnings: Iterable[str] = (),
    ) -> None:
        self.parties: dict[str, Party] = {p.id: p for p in parties}
        self.file = file if file is not None else RegistryFile()
        self.source = source
        self.warnings: tuple[str, ...] = tuple(warnings)
        self._stat: _FileSignature | None = None
        self._failed: _FileSignature | None = None
        self._tokens: dict[bytes, tuple[Party, CredentialInfo]] = {}
        self._certs: dict[bytes, tuple[Party, CredentialInfo]] = {}
        self._signers: list[tuple[Party, CredentialInfo, PublicKeyTypes]] = []
        self._signers_by_name: dict[bytes, list[tuple[Party, CredentialInfo, PublicKeyTypes]]] = {}
        self._signers_by_cert: dict[bytes, tuple[Party, CredentialInfo, PublicKeyTypes]] = {}
        for p in self.parties.values():
            for c in p.credentials:
                if c.kind is AuthMethod.TOKEN:
                    self._tokens[c.key] = (p, c)
                elif c.kind is AuthMethod.MTLS:
                    self._certs[c.key] = (p, c)
                else:
                    signer = (p, c, load_der_public_key(c.spki))
                    self._signers.append(signer)
                    self._signers_by_cert[c.key] = signer
                    name = directory_name(c.subject)
                    self._signers_by_name.setdefault(name, []).append(signer)

    # --- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, *, now: float | None = None) -> Registry:
        """Read, parse and check a registry file (RegistryError names what is wrong)."""
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
        except UnicodeDecodeError:
            raise RegistryError(f"{path}: not UTF-8 text") from None
        reg = cls.build(
            parse_registry(text, source=str(path)), base=path.parent, source=str(path), now=now
        )
        reg._stat = _signature(st)
        return reg

    def reload_if_changed(self, path: Path) -> Registry | None:
        """A new Registry if ``path`` changed since this one was loaded, else None.

        Cheap (one stat): call it every second in each worker. A changed file that does
        not load raises RegistryError once (log it and keep serving with this registry);
        later calls return None until the file changes again.
        """
        try:
            sig = _signature(path.stat())
        except OSError as e:
            if self._failed is None:
                self._failed = (0, 0, 0, 0, 0)
                raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
            return None
        if sig in (self._stat, self._failed):
            return None
        try:
            return Registry.load(path)
        except RegistryError:
            self._failed = sig
            raise

    @classmethod
    def build(
        cls, data: RegistryFile, *, base: Path, source: str, now: float | None = None
    ) -> Registry:
        """Check every rule of the module docstring and build the lookup tables."""
        checker = _Checker(base=base, source=source, now=time.time() if now is None else now)
        parties = checker.check(data)
        if checker.errors:
            raise RegistryError("\n".join(checker.errors))
        return cls(parties, file=data, source=source, warnings=checker.warnings)

    # --- authentication lookups ------------------------------------------------------

    def by_token(self, token: bytes, now: float | None = None) -> Party | None:
        """The party whose bearer token this is (compared by SHA-256), within its window."""
        hit = self._tokens.get(hashlib.sha256(token).digest())
        if hit is None or not hit[1].valid_at(time.time() if now is None else now):
            return None
        return hit[0]

    def by_certificate(self, cert_der: bytes, now: float | None = None) -> Party | None:
        """The party a TLS client certificate belongs to (by SHA-256 fingerprint)."""
        hit = self._certs.get(hashlib.sha256(cert_der).digest())
        if hit is None or not hit[1].valid_at(time.time() if now is None else now):
            return None
        return hit[0]

    def signing_keys(self, now: float | None = None) -> list[tuple[Party, PublicKeyTypes]]:
        """(party, public key) for each signed-request credential valid now."""
        t = time.time() if now is None else now
        return [(p, key) for p, c, key in self._signers if c.valid_at(t)]

    def request_signers(
        self,
        requestor_name: bytes | None,
        certs: Iterable[bytes] = (),
        now: float | None = None,
    ) -> list[tuple[Party, PublicKeyTypes]]:
        """The signed-request keys, valid now, that a signed OCSP request can be checked
        against: found by index, never by trying every registered key (O(1)).

        By the requestorName (RFC 6960 §4.1.2: a signed request names its requestor): the
        certificates whose subject it is; among them, one the request attached (its
        SHA-256) comes first. Without a requestorName, the attached certificate that is
        registered, if any. Several candidates only when one party holds two certificates
        with the same subject (a rotation), or parties share a subject.
        """
        t = time.time() if now is None else now
        attached = [self._signers_by_cert.get(hashlib.sha256(c).digest()) for c in certs]
        if requestor_name is not None:
            named = self._signers_by_name.get(requestor_name, [])
            found = [x for x in attached if x is not None and any(x is y for y in named)]
            found += [y for y in named if not any(y is x for x in found)]
        else:
            found = [x for x in attached[:1] if x is not None]
        return [(p, key) for p, c, key in found if c.valid_at(t)]

    def signing_parties(self, now: float | None = None) -> list[Party]:
        """Parties holding a signed-request credential valid now."""
        seen: dict[str, Party] = {}
        for p, _ in self.signing_keys(now):
            seen.setdefault(p.id, p)
        return list(seen.values())


class LastGoodRegistry:
    """The last registry that loaded, kept by the master and inherited by every worker.

    The master makes it from the registry it checked at start, calls `refresh`
    about once a second and before each fork (`responder.server.serve`'s
    ``master_tick``), and each worker, after the fork, calls `for_worker`: the
    file on disk if it loads, else this copy, which the worker received with the
    fork. So a worker restarted while the file is broken serves the registry the
    master last loaded (the file as it stood before the bad edit) instead of
    failing to start; its own once-a-second check then picks the file up when it
    is fixed. A path that never loaded has no last good registry: the master
    refuses to start (`responder.cli`).
    """

    def __init__(self, path: Path, registry: Registry) -> None:
        self.path = path
        self.registry = registry
        self.error: str | None = None
        """Why the file on disk does not load now (None: it does)."""

    def refresh(self) -> None:
        """Load the file if it changed; a file that does not load keeps the last good one."""
        try:
            fresh = self.registry.reload_if_changed(self.path)
        except RegistryError as e:
            self.error = str(e)
            _log.error(
                "registry_file_bad",
                extra={"fields": {"error": self.error, "kept": "the last good registry"}},
            )
            return
        if fresh is not None:
            self.registry, self.error = fresh, None

    def for_worker(self) -> tuple[Registry, str | None]:
        """The registry a new worker serves, and why the file did not load (None: it did)."""
        try:
            return Registry.load(self.path), None
        except RegistryError as e:
            return self.registry, str(e)


# --- checking ------------------------------------------------------------------------------


@dataclass
class _Checker:
    base: Path
    source: str
    now: float
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token_owner: dict[bytes, str] = field(default_factory=dict)
    cert_owner: dict[bytes, str] = field(default_factory=dict)
    key_owner: dict[bytes, str] = field(default_factory=dict)

    def err(self, party: str, fld: str, msg: str) -> None:
        self.errors.append(f"{self.source}: party {party!r}: {fld}: {msg}")

    def check(self, data: RegistryFile) -> list[Party]:
        parties: list[Party] = []
        seen: set[str] = set()
        for entry in data.parties:
            if entry.id in seen:
                self.err(entry.id, "id", "listed twice")
                continue
            seen.add(entry.id)
            if isinstance(entry, LegacyPartyEntry):
                self.err(entry.id, "titles", LEGACY_REFUSED.format(source=self.source))
            else:
                parties.append(self.entry(entry))
        by_id = {e.id: e for e in data.parties}
        for entry in data.parties:
            if isinstance(entry, PartyEntry):
                self.membership(entry, by_id)
        return parties

    # one entry

    def entry(self, e: PartyEntry) -> Party:
        titles: dict[Title, TitleEntry] = {}
        for i, t in enumerate(e.title):
            if t.TITLE in titles:
                self.err(e.id, f"title[{i}]", f"{t.TITLE.value} is listed twice")
            titles[t.TITLE] = t
        kinds = frozenset(titles)
        self.titles(e, titles)
        member_only = kinds == {Title.SIGNATURE_CONFIRMER}
        start = -math.inf
        if member_only:
            for fld, value in (("notification", e.notification), ("agreement", e.agreement)):
                if value is not None:
                    self.err(
                        e.id,
                        fld,
                        "a 署名確認者 (signature-confirmer) has none: its group notifies its range (Act §17(5)) and agrees how it answers (Ord §33(4))",
                    )
        else:
            if e.notification is None:
                self.err(e.id, "notification", "required (届出, Act §17(1), §36(1); Ord §30)")
            else:
                start = day_start(e.notification.start)
                if (
                    Title.GROUP_SIGNATURE_VERIFIER in kinds
                    and e.notification.representative is None
                ):
                    self.err(
                        e.id, "notification.representative", "required for a group (Ord §32(1))"
                    )
            if e.agreement is None:
                self.err(e.id, "agreement", "required (取決め, Act §17(4), §36(2); Ord §31)")
        grants = self.agreement(e, kinds, titles) if e.agreement is not None else {}
        creds = self.credentials(e.id, e.credential, ended=e.ended is not None)
        windows = self.suspensions(e, kinds)
        end, end_article = math.inf, ""
        if e.ended is not None:
            end = e.ended.at.timestamp()
            end_article = e.ended.article or ""
        confirmer = titles.get(Title.SIGNATURE_CONFIRMER)
        return Party(
            id=e.id,
            name=e.name,
            titles=kinds,
            families=_revocation_families(grants),
            auth=frozenset(c.kind for c in creds),
            cert_public_keys=tuple(c.spki for c in creds if c.kind is AuthMethod.SIGNED_REQUEST),
            group=confirmer.group if isinstance(confirmer, SignatureConfirmerTitle) else None,
            start=start,
            end=end,
            end_article=end_article,
            grants=grants,
            suspensions=windows,
            credentials=creds,
            requests_per_second=e.agreement.requests_per_second if e.agreement else None,
            requests_per_day=e.agreement.requests_per_day if e.agreement else None,
            crl_cycle_seconds=e.agreement.crl_cycle_seconds if e.agreement else 0,
        )

    def titles(self, e: PartyEntry, titles: Mapping[Title, TitleEntry]) -> None:
        kinds = set(titles)
        if Title.SIGNATURE_CONFIRMER in kinds and len(kinds) > 1:
            self.err(
                e.id,
                "title",
                "a 署名確認者 (signature-confirmer) holds no other title: the 機構 does not answer it (Act §20(1))",
            )
        if Title.SPECIFIED_USER_VERIFIER in kinds and Title.USER_VERIFIER not in kinds:
            self.err(
                e.id,
                "title",
                "a 特定利用者証明検証者 is a 利用者証明検証者 approved under Act §38-2(1): add the user-verifier title",
            )
        for i, t in enumerate(e.title):
            fld = f"title[{i}]"
            if isinstance(t, SignatureVerifierTitle | UserVerifierTitle):
                if t.category in (5, 6) and t.certified_until is None:
                    self.err(
                        e.id,
                        f"{fld}.certified_until",
                        f"required for category {t.category}: the certification lapses unless renewed (Act §17(2))",
                    )
                if t.category not in (5, 6) and t.certified_until is not None:
                    self.err(
                        e.id,
                        f"{fld}.certified_until",
                        f"only categories 5 and 6 are certified (Act §17(1)); this is {t.category}",
                    )
            elif isinstance(t, GroupSignatureVerifierTitle):
                if not t.members and t.member_prefix is None:
                    self.err(
                        e.id,
                        fld,
                        "a group notifies the range of its members (署名確認者の範囲, Ord §32(4)): give members or member_prefix",
                    )
                if len(set(t.members)) != len(t.members):
                    self.err(e.id, f"{fld}.members", "a member is listed twice")
                if e.id in t.members or (t.member_prefix and e.id.startswith(t.member_prefix)):
                    self.err(e.id, fld, "a group is not its own member")
            elif isinstance(t, SignatureConfirmerTitle) and t.group == e.id:
                self.err(e.id, f"{fld}.group", "a member cannot be its own group")

    def agreement(
        self, e: PartyEntry, kinds: frozenset[Title], titles: Mapping[Title, TitleEntry]
    ) -> dict[Service, Grant]:
        a = e.agreement
        assert a is not None
        allowed = title_services(kinds)
        ok = True
        for fld, values in (
            ("services", a.services),
            ("families", a.families),
            ("methods", a.methods),
        ):
            if len(set(values)) != len(values):
                self.err(e.id, f"agreement.{fld}", "a value is listed twice")
        for s in a.services:
            if s not in allowed:
                ok = False
                self.err(e.id, "agreement.services", _not_allowed(s, kinds))
        agreed_families = frozenset(a.families)
        agreed_methods = frozenset(a.methods)
        used_families: set[Family] = set()
        used_methods: set[Method] = set()
        grants: dict[Service, Grant] = {}
        for s in a.services:
            if s not in allowed:
                continue
            fams = SERVICE_FAMILIES[s] & agreed_families
            meths = SERVICE_METHODS[s] & agreed_methods
            if SERVICE_FAMILIES[s] and not fams:
                ok = False
                self.err(
                    e.id,
                    "agreement.families",
                    f"{s.value} is about {_names(SERVICE_FAMILIES[s])}: agree at least one of them",
                )
            if not meths:
                ok = False
                self.err(
                    e.id,
                    "agreement.methods",
                    f"{s.value} is provided by {_names(SERVICE_METHODS[s])}: agree at least one of them",
                )
            used_families |= fams
            used_methods |= meths
            grants[s] = Grant(fams, meths, _title_until(s, kinds, titles))
        for f in agreed_families - used_families:
            ok = False
            self.err(
                e.id, "agreement.families", f"{f.value} is received by none of the agreed services"
            )
        for m in agreed_methods - used_methods:
            ok = False
            self.err(e.id, "agreement.methods", f"{m.value} carries none of the agreed services")
        is_group = Title.GROUP_SIGNATURE_VERIFIER in kinds
        if is_group and a.member_answer is None:
            self.err(
                e.id,
                "agreement.member_answer",
                "required for a group: how it answers its members (Ord §33(4))",
            )
        if not is_group and a.member_answer is not None:
            self.err(e.id, "agreement.member_answer", "only a group answers members (Ord §33(4))")
        return grants if ok else {}

    def credentials(
        self, pid: str, entries: list[CredentialEntry], *, ended: bool
    ) -> tuple[CredentialInfo, ...]:
        out: list[CredentialInfo] = []
        labels: set[str] = set()
        mine: set[tuple[AuthMethod, bytes]] = set()
        counts: dict[AuthMethod, int] = {}
        for i, c in enumerate(entries):
            fld = f"credential[{i}]"
            counts[c.KIND] = counts.get(c.KIND, 0) + 1
            label = c.label or f"{c.KIND.value}-{counts[c.KIND]}"
            if label in labels:
                self.err(pid, f"{fld}.label", f"{label!r} is used twice")
            labels.add(label)
            nb = c.not_before.timestamp() if c.not_before else -math.inf
            na = c.not_after.timestamp() if c.not_after else math.inf
            spki = subject = b""
            if isinstance(c, TokenCredential):
                key = bytes.fromhex(c.token_sha256)
                self.owner(self.token_owner, key, pid, fld, "token")
            else:
                cert = self.load_cert(pid, f"{fld}.cert", c.cert)
                if cert is None:
                    continue
                key = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
                spki = cert.public_key().public_bytes(
                    Encoding.DER, PublicFormat.SubjectPublicKeyInfo
                )
                subject = cert.subject.public_bytes()
                self.owner(self.cert_owner, key, pid, fld, "certificate")
                self.owner(self.key_owner, hashlib.sha256(spki).digest(), pid, fld, "public key")
                nb = max(nb, cert.not_valid_before_utc.timestamp())
                na = min(na, cert.not_valid_after_utc.timestamp())
            if (c.KIND, key) in mine:
                self.err(pid, fld, "the same credential is listed twice")
            mine.add((c.KIND, key))
            if nb >= na:
                self.err(
                    pid,
                    fld,
                    "its window is empty (not_before is not before not_after, or outside the certificate's validity)",
                )
                continue
            out.append(
                CredentialInfo(
                    label=label,
                    kind=c.KIND,
                    key=key,
                    not_before=nb,
                    not_after=na,
                    spki=spki,
                    subject=subject,
                )
            )
        if not ended:
            if not entries:
                self.warnings.append(
                    f"{self.source}: party {pid!r}: no credential: it cannot authenticate"
                )
            elif out and all(c.not_after <= self.now for c in out):
                self.warnings.append(
                    f"{self.source}: party {pid!r}: every credential has expired: it cannot authenticate"
                )
        return tuple(out)

    def owner(self, table: dict[bytes, str], key: bytes, pid: str, fld: str, what: str) -> None:
        other = table.setdefault(key, pid)
        if other != pid:
            self.err(
                pid,
                fld,
                f"this {what} is also party {other!r}'s (a credential belongs to one party)",
            )

    def load_cert(self, pid: str, fld: str, ref: str) -> x509.Certificate | None:
        path = self.base / ref
        try:
            data = path.read_bytes()
        except OSError as e:
            self.err(pid, fld, f"cannot read {path}: {e.strerror}")
            return None
        try:
            return (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            self.err(pid, fld, f"{path} is not a certificate")
            return None

    def suspensions(self, e: PartyEntry, kinds: frozenset[Title]) -> tuple[SuspensionWindow, ...]:
        out: list[SuspensionWindow] = []
        for i, s in enumerate(e.suspension):
            fld = f"suspension[{i}]"
            meaning = suspension_article(s.article)
            if meaning is None:
                self.err(
                    e.id,
                    f"{fld}.article",
                    "expected 'Act §18(6)(1..6)', 'Act §18(7)(1..5)' or 'Act §37(4)(1..6)'",
                )
                continue
            if not meaning.needs & kinds:
                self.err(
                    e.id,
                    f"{fld}.article",
                    f"{s.article} stops what a {_names(meaning.needs)} receives; this party holds none of those titles",
                )
                continue
            since = s.since.timestamp()
            until = s.until.timestamp() if s.until else math.inf
            if until <= since:
                self.err(e.id, f"{fld}.until", "must come after since")
                continue
            out.append(SuspensionWindow(meaning.services, since, until, s.article))
            if s.carry_over:
                if not meaning.carry_needs & kinds:
                    self.err(
                        e.id,
                        f"{fld}.carry_over",
                        "carries over only to another title the party holds (Act §18(6)(6), §37(4)(6))",
                    )
                    continue
                out.append(
                    SuspensionWindow(meaning.carry_services, since, until, meaning.carry_article)
                )
        return tuple(out)

    def membership(self, e: PartyEntry, by_id: Mapping[str, AnyEntry]) -> None:
        for i, t in enumerate(e.title):
            if not isinstance(t, SignatureConfirmerTitle):
                continue
            group = by_id.get(t.group)
            gtitle = (
                next((g for g in group.title if isinstance(g, GroupSignatureVerifierTitle)), None)
                if isinstance(group, PartyEntry)
                else None
            )
            if gtitle is None:
                self.err(
                    e.id,
                    f"title[{i}].group",
                    f"{t.group!r} is not a registered 団体署名検証者 (group-signature-verifier)",
                )
            elif e.id not in gtitle.members and not (
                gtitle.member_prefix and e.id.startswith(gtitle.member_prefix)
            ):
                self.err(
                    e.id,
                    f"title[{i}].group",
                    f"outside the member range (署名確認者の範囲) {t.group!r} notified (Act §17(5), Ord §32(4))",
                )


def _revocation_families(grants: Mapping[Service, Grant]) -> frozenset[Family]:
    out: set[Family] = set()
    for s in (
        Service.SIGN_REVOCATION_INFO,
        Service.SIGN_CRL_FILE,
        Service.AUTH_REVOCATION_INFO,
        Service.AUTH_CRL_FILE,
    ):
        if s in grants:
            out |= grants[s].families
    return frozenset(out)


def _title_until(s: Service, kinds: frozenset[Title], titles: Mapping[Title, TitleEntry]) -> float:
    """When the titles granting ``s`` lose their certification (Act §17(2)), if they do."""
    until = -math.inf
    for t in kinds:
        if s not in TITLE_SERVICES[t]:
            continue
        entry = titles[t]
        lapse = (
            entry.certified_until
            if isinstance(entry, SignatureVerifierTitle | UserVerifierTitle)
            else None
        )
        until = max(until, math.inf if lapse is None else day_start(lapse + timedelta(days=1)))
    if s in SERVICE_REQUIRES_ALL:  # every required title must still hold
        for t in SERVICE_REQUIRES_ALL[s]:
            entry = titles[t]
            if (
                isinstance(entry, SignatureVerifierTitle | UserVerifierTitle)
                and entry.certified_until
            ):
                until = min(until, day_start(entry.certified_until + timedelta(days=1)))
    return until


def _names(values: Iterable[enum.Enum]) -> str:
    return " or ".join(sorted(str(v.value) for v in values))


def _not_allowed(s: Service, kinds: frozenset[Title]) -> str:
    if s is Service.CORRESPONDING_SERIAL:
        return "corresponding-serial is provided to a 署名検証者 that is also a 利用者証明検証者 (Act §18(5)): it needs both the signature-verifier and user-verifier titles"
    if s is Service.CORRESPONDING_SIGN_SERIAL and Title.GROUP_SIGNATURE_VERIFIER in kinds:
        return "corresponding-sign-serial is provided to a 署名検証者, not to a group (Act §18(4))"
    if s in AUTH_SIDE:
        return f"{s.value} is provided to a 利用者証明検証者 (user-verifier) only ({SERVICE_ARTICLES[s]})"
    if s is Service.SPECIFIED_VERIFIER_TOKEN:
        return f"{s.value} is provided to a 特定利用者証明検証者 (specified-user-verifier) only (Act §38-3)"
    return f"{s.value} is provided to a 署名検証者等 (signature-verifier or group) only ({SERVICE_ARTICLES[s]}); a 利用者証明検証者 never receives sign information by that title"


# --- the demo registry ------------------------------------------------------------------------

DEMO_START: Final = date(2016, 1, 1)
"""The demo parties' provision start date (the My Number card's first year)."""


def registry_from_manifest(manifest: Manifest, out: Path) -> str:
    """A registry TOML for a demo PKI's parties, granting what their titles allow.

    Token hashes are read from the parties' token files; certificate paths are
    written relative to ``out``'s directory when possible.
    """
    members: dict[str, list[str]] = {}
    for p in manifest.parties:
        if p.group:
            members.setdefault(p.group, []).append(p.id)
    entries: list[AnyEntry] = []
    for p in manifest.parties:
        token = manifest.path(p.token).read_text(encoding="ascii").strip()
        cert = manifest.path(p.cert).resolve()
        try:
            cert_ref = str(cert.relative_to(out.parent.resolve()))
        except ValueError:
            cert_ref = str(cert)
        titles = [_demo_title(t, p.group, members.get(p.id, [])) for t in p.titles]
        kinds = frozenset(t.TITLE for t in titles)
        credentials: list[CredentialEntry] = [
            TokenCredential(
                label="token-1", token_sha256=hashlib.sha256(token.encode()).hexdigest()
            ),
            MtlsCredential(label="mtls-1", cert=cert_ref),
            SignedRequestCredential(label="signed-request-1", cert=cert_ref),
        ]
        if kinds == {Title.SIGNATURE_CONFIRMER}:
            entries.append(PartyEntry(id=p.id, name=p.name, title=titles, credential=credentials))
            continue
        services = sorted(title_services(kinds), key=list(Service).index)
        families: set[Family] = set()
        methods: set[Method] = set()
        for s in services:
            families |= SERVICE_FAMILIES[s]
            methods |= SERVICE_METHODS[s]
        group = Title.GROUP_SIGNATURE_VERIFIER in kinds
        entries.append(
            PartyEntry(
                id=p.id,
                name=p.name,
                title=titles,
                notification=Notification(
                    address="demo address (架空の住所)",
                    office="demo office (架空の事務所)",
                    representative="demo representative (架空の代表者)",
                    start=DEMO_START,
                ),
                agreement=Agreement(
                    services=services,
                    families=sorted(families, key=list(Family).index),
                    methods=sorted(methods, key=list(Method).index),
                    liability="demo: no liability (デモ用、損害賠償の定めなし)",
                    member_answer="demo: OCSP answers signed by the group's relay responder"
                    if group
                    else None,
                ),
                credential=credentials,
            )
        )
    return dump_registry(
        RegistryFile(parties=entries),
        header="Registry of parties: generated from the demo PKI by `responder registry init`.\n"
        "Change it with `responder registry add|update|suspend|resume|end`.",
    )


def _demo_title(name: str, group: str | None, members: list[str]) -> TitleEntry:
    title = Title(name)
    if title is Title.SIGNATURE_VERIFIER:
        return SignatureVerifierTitle(category=4)
    if title is Title.USER_VERIFIER:
        return UserVerifierTitle(category=4)
    if title is Title.GROUP_SIGNATURE_VERIFIER:
        return GroupSignatureVerifierTitle(group_kind=1, members=members)
    if title is Title.SIGNATURE_CONFIRMER:
        assert group is not None
        return SignatureConfirmerTitle(group=group)
    return SpecifiedUserVerifierTitle(approved=DEMO_START)
