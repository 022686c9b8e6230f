"""The JPKI domain model, defined once: families, issuers, revocation categories, records.

Everything that crosses a module or process boundary in jpki-va is one of these
msgspec Structs: the four certificate families (証明書の種類), issuer key
generations, the revocation categories of the Act (失効事由) with their article
references and RFC 5280 reason codes, and the records the 機構 writes:
issuance records (発行記録, Act §8, §16-7, §27, §35-7), revocation requests and reports
(失効申請等情報, §11, §16-10, §30, §35-10), resident record changes (異動等,
§12, §31), recording errors (記録誤り等, §13, §16-11, §32, §35-11), issuing-key
compromise (発行者署名符号の漏えい等, §14, §16-12, §33, §35-12) and consents for
特定署名用電子証明書記録情報 (§18(3)).

The Act states each rule once per family, so every article jpki-va cites comes
from a per-family table: `CATEGORY_ARTICLES` for the revocation categories,
`DUTY_ARTICLES` for the duties around them (notices, announcements, issuance
checks).

The JSON Lines wire format of the records is this module's `Record` union,
tagged by the field ``type``; see docs/records.md for the format with examples.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Final

import msgspec

# ---------------------------------------------------------------------------
# Families (証明書の種類)
# ---------------------------------------------------------------------------


class Family(enum.Enum):
    """The kinds of certificate the 機構 issues and answers for: the four families of the Act
    (`JPKI_FAMILIES`, a resident's certificates) and the 特定利用者証明検証者証明符号 (Act §38-3),
    a certificate the 機構 issues to a registered verifier, not to a resident.

    The token is a family of its own so that its issuer is one more issuer generation of the
    store (its status records, CRLs and delegated OCSP signer are those of any issuer); it
    carries no personal data, has no counterpart and no card/mobile pair, and none of the
    Act's revocation categories but its own (`Category.APPROVAL_WITHDRAWN`). Code that means
    "the Act's four families" iterates `JPKI_FAMILIES`, not `Family`.
    """

    SIGN_CARD = "sign-card"
    """個人番号カード用署名用電子証明書 (Act §3-§16)."""
    SIGN_MOBILE = "sign-mobile"
    """移動端末設備用署名用電子証明書 (Act §16-2-§16-15)."""
    AUTH_CARD = "auth-card"
    """個人番号カード用利用者証明用電子証明書 (Act §22-§35)."""
    AUTH_MOBILE = "auth-mobile"
    """移動端末設備用利用者証明用電子証明書 (Act §35-2-§35-15)."""
    SPECIFIED_VERIFIER_TOKEN = "verifier-token"
    """特定利用者証明検証者証明符号 (Act §38-3): issued to a 特定利用者証明検証者 (`crlbuilder.tokens`)."""

    __hash__ = object.__hash__
    """Members hash by identity, in C: Enum's own ``hash(self._name_)`` is a Python call on
    every lookup of a table keyed by family (the applier does several per record). Equality was
    identity already, so every lookup finds what it found."""

    @property
    def code(self) -> int:
        """A stable one-byte code for binary encodings (1..5)."""
        return _FAMILY_CODES[self]

    @property
    def is_jpki(self) -> bool:
        """True for the Act's four families of a resident's certificates (`JPKI_FAMILIES`)."""
        return self is not Family.SPECIFIED_VERIFIER_TOKEN

    @classmethod
    def from_code(cls, code: int) -> Family:
        return _FAMILY_BY_CODE[code]

    @property
    def is_sign(self) -> bool:
        """True for signature certificates (署名用電子証明書), which carry the four facts."""
        return self in _SIGN_FAMILIES

    @property
    def is_mobile(self) -> bool:
        """True for smartphone certificates (移動端末設備用)."""
        return self in _MOBILE_FAMILIES

    @property
    def card_family(self) -> Family:
        """The card family a mobile family depends on (itself for card families)."""
        return {
            Family.SIGN_MOBILE: Family.SIGN_CARD,
            Family.AUTH_MOBILE: Family.AUTH_CARD,
        }.get(self, self)

    @property
    def mobile_family(self) -> Family:
        """The mobile family that depends on a card family (itself for mobile families)."""
        return {
            Family.SIGN_CARD: Family.SIGN_MOBILE,
            Family.AUTH_CARD: Family.AUTH_MOBILE,
        }.get(self, self)

    @property
    def counterpart(self) -> Family:
        """The family of the other kind on the same medium (sign<->auth, 対応証明書)."""
        return {
            Family.SIGN_CARD: Family.AUTH_CARD,
            Family.AUTH_CARD: Family.SIGN_CARD,
            Family.SIGN_MOBILE: Family.AUTH_MOBILE,
            Family.AUTH_MOBILE: Family.SIGN_MOBILE,
        }[self]

    @property
    def japanese(self) -> str:
        return _FAMILY_JA[self]


_SIGN_FAMILIES: Final = frozenset({Family.SIGN_CARD, Family.SIGN_MOBILE})
_MOBILE_FAMILIES: Final = frozenset({Family.SIGN_MOBILE, Family.AUTH_MOBILE})
"""`Family.is_sign`, `Family.is_mobile`: one set lookup (by identity hash), not a tuple of two
members each looked up on the class and compared (0.21 us a call, several per record)."""

_FAMILY_CODES: Final = {
    Family.SIGN_CARD: 1,
    Family.SIGN_MOBILE: 2,
    Family.AUTH_CARD: 3,
    Family.AUTH_MOBILE: 4,
    Family.SPECIFIED_VERIFIER_TOKEN: 5,
}
JPKI_FAMILIES: Final = (Family.SIGN_CARD, Family.SIGN_MOBILE, Family.AUTH_CARD, Family.AUTH_MOBILE)
"""The four certificate families of the Act (a resident's certificates), in `Family` order."""
_FAMILY_BY_CODE: Final = {v: k for k, v in _FAMILY_CODES.items()}
_FAMILY_JA: Final = {
    Family.SIGN_CARD: "個人番号カード用署名用電子証明書",
    Family.SIGN_MOBILE: "移動端末設備用署名用電子証明書",
    Family.AUTH_CARD: "個人番号カード用利用者証明用電子証明書",
    Family.AUTH_MOBILE: "移動端末設備用利用者証明用電子証明書",
    Family.SPECIFIED_VERIFIER_TOKEN: "特定利用者証明検証者証明符号",
}


class Issuer(msgspec.Struct, frozen=True, kw_only=True):
    """One issuing CA key generation (発行者署名符号の世代) of one family.

    A family's CA key is rolled over from time to time, so several generations
    of one family are alive at once. ``id`` is the stable name used in records
    (e.g. ``sign-card-g2``); ``index`` is its compact code in the store.
    """

    id: str
    family: Family
    generation: int
    index: int


# ---------------------------------------------------------------------------
# Reason codes and revocation categories (失効事由)
# ---------------------------------------------------------------------------


class Reason(enum.IntEnum):
    """RFC 5280 §5.3.1 CRLReason codes, as J-LIS's published practice uses them."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    """Delta CRLs only; never a status of ours, but imported CRLs may carry it."""
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10


class Category(enum.Enum):
    """The legal category of a revocation record (失効事由, DOMAIN.md §3).

    Each category is recorded in its own way and kept alongside the entry's
    RFC 5280 reason code, so that the legal ground of every revocation stays
    known. (The Act §17(1) item a verifier falls under is another thing:
    ``responder.registry.schema.VerifierItem``.)
    """

    REQUEST = "request"
    """失効申請等情報: the holder asked (申請) or reported leak, loss, damage, unusable (届出)."""
    RESIDENT_CHANGE = "resident-change"
    """異動等失効情報: the resident record changed (card families only)."""
    RECORDING_ERROR = "recording-error"
    """記録誤り等に係る情報: a recording error or omission in the certificate."""
    CA_COMPROMISE = "ca-compromise"
    """発行者署名符号の漏えい等に係る情報: the issuing key leaked, was lost or damaged."""
    CARD_CASCADE = "card-cascade"
    """個人番号カード用…電子証明書の失効に係る情報: the holder's card cert lost effect (mobile)."""
    APPROVAL_WITHDRAWN = "approval-withdrawn"
    """特定利用者証明検証者証明符号 only: the party is no longer a 特定利用者証明検証者, so the
    token no longer shows what it says (Act §38-3(1)), whatever the cause
    (`crlbuilder.verifiers.TokenEnd`: the approval revoked, 取消し Act §38-2(6); its period
    ended, §38-2(1); the party's provision ended, §36(2); gone from the registry, §38-2(4)).
    Written by the builder from the registry (`crlbuilder.tokens`), reason privilegeWithdrawn.
    The cause is not kept with the revocation (the store's category byte, the ``token-revoked``
    record), so its article is the one every cause shares, §38-3(1); the builder's report
    gives each revocation's cause and article (``tokens_revoked_by``)."""

    __hash__ = object.__hash__
    """By identity, in C, as `Family.__hash__` (the tables keyed by category)."""

    @property
    def code(self) -> int:
        """A stable one-byte code for binary encodings (1..6; 0 means none)."""
        return _CATEGORY_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Category:
        return _CATEGORY_BY_CODE[code]

    @property
    def articles(self) -> dict[Family, str]:
        """The article of the Act that defines this category, per family it applies to."""
        return CATEGORY_ARTICLES[self]

    def applies_to(self, family: Family) -> bool:
        return family in CATEGORY_ARTICLES[self]

    @property
    def default_reason(self) -> Reason:
        return _CATEGORY_REASON[self]

    @property
    def japanese(self) -> str:
        return _CATEGORY_JA[self]


_CATEGORY_CODES: Final = {
    Category.REQUEST: 1,
    Category.RESIDENT_CHANGE: 2,
    Category.RECORDING_ERROR: 3,
    Category.CA_COMPROMISE: 4,
    Category.CARD_CASCADE: 5,
    Category.APPROVAL_WITHDRAWN: 6,
}
_CATEGORY_BY_CODE: Final = {v: k for k, v in _CATEGORY_CODES.items()}

CATEGORY_ARTICLES: Final[dict[Category, dict[Family, str]]] = {
    Category.REQUEST: {
        Family.SIGN_CARD: "Act §11",
        Family.SIGN_MOBILE: "Act §16-10",
        Family.AUTH_CARD: "Act §30",
        Family.AUTH_MOBILE: "Act §35-10",
    },
    Category.RESIDENT_CHANGE: {
        Family.SIGN_CARD: "Act §12",
        Family.AUTH_CARD: "Act §31",
    },
    Category.RECORDING_ERROR: {
        Family.SIGN_CARD: "Act §13",
        Family.SIGN_MOBILE: "Act §16-11",
        Family.AUTH_CARD: "Act §32",
        Family.AUTH_MOBILE: "Act §35-11",
    },
    Category.CA_COMPROMISE: {
        Family.SIGN_CARD: "Act §14",
        Family.SIGN_MOBILE: "Act §16-12",
        Family.AUTH_CARD: "Act §33",
        Family.AUTH_MOBILE: "Act §35-12",
    },
    Category.CARD_CASCADE: {
        Family.SIGN_MOBILE: "Act §16-13",
        Family.AUTH_MOBILE: "Act §35-13",
    },
    Category.APPROVAL_WITHDRAWN: {  # every cause's common ground, not §38-2(6) (the docstring)
        Family.SPECIFIED_VERIFIER_TOKEN: "Act §38-3(1)",
    },
}


class Duty(enum.Enum):
    """What else the law cites per family, beside the revocation categories (`CATEGORY_ARTICLES`).

    Every citation jpki-va writes (a notice, a quarantine reason) comes from `DUTY_ARTICLES`,
    so that each family cites its own article: the Act repeats each rule once per family.
    """

    HOLDER_NOTIFICATION = "holder-notification"
    """通知: tell the holder of a recording error that the certificate lost effect."""
    PUBLIC_ANNOUNCEMENT = "public-announcement"
    """公表: announce that an issuing-key compromise made certificates lose effect."""
    DOUBLE_ISSUANCE = "double-issuance"
    """二重発行の禁止: no second valid certificate of a family."""
    VALIDITY = "validity"
    """有効期間: the last day a certificate may be valid."""
    CARD_CERT_VALID = "card-cert-valid"
    """A mobile certificate needs a card certificate that has not lost effect."""

    def article(self, family: Family) -> str:
        """The article of ``family`` that imposes this duty."""
        return DUTY_ARTICLES[self][family]


DUTY_ARTICLES: Final[dict[Duty, dict[Family, str]]] = {
    Duty.HOLDER_NOTIFICATION: {
        Family.SIGN_CARD: "Act §15(2)",
        Family.SIGN_MOBILE: "Act §16-14(2)",
        Family.AUTH_CARD: "Act §34(2)",
        Family.AUTH_MOBILE: "Act §35-14(2)",
    },
    Duty.PUBLIC_ANNOUNCEMENT: {
        Family.SIGN_CARD: "Act §15(3), Ord §23",
        Family.SIGN_MOBILE: "Act §16-14(3)",
        Family.AUTH_CARD: "Act §34(3), Ord §58",
        Family.AUTH_MOBILE: "Act §35-14(3)",
    },
    Duty.DOUBLE_ISSUANCE: {
        Family.SIGN_CARD: "Act §6",
        Family.SIGN_MOBILE: "Act §16-5",
        Family.AUTH_CARD: "Act §25",
        Family.AUTH_MOBILE: "Act §35-5",
    },
    Duty.VALIDITY: {
        Family.SIGN_CARD: "Ord §13",
        Family.SIGN_MOBILE: "Act §16-4",
        Family.AUTH_CARD: "Ord §49",
        Family.AUTH_MOBILE: "Act §35-4",
    },
    Duty.CARD_CERT_VALID: {
        # §16-2(3): the card certificate must not have lost effect (§15(1));
        # §35-2(1): only a holder of an auth-card certificate may apply.
        Family.SIGN_MOBILE: "Act §16-2(3)",
        Family.AUTH_MOBILE: "Act §35-2(1)",
    },
}

_CATEGORY_REASON: Final = {
    Category.REQUEST: Reason.CESSATION_OF_OPERATION,
    Category.RESIDENT_CHANGE: Reason.AFFILIATION_CHANGED,
    Category.RECORDING_ERROR: Reason.AFFILIATION_CHANGED,
    Category.CA_COMPROMISE: Reason.CA_COMPROMISE,
    Category.CARD_CASCADE: Reason.CESSATION_OF_OPERATION,
    Category.APPROVAL_WITHDRAWN: Reason.PRIVILEGE_WITHDRAWN,
}

_CATEGORY_JA: Final = {
    Category.REQUEST: "失効申請等情報",
    Category.RESIDENT_CHANGE: "異動等失効情報",
    Category.RECORDING_ERROR: "記録誤り等に係る情報",
    Category.CA_COMPROMISE: "発行者署名符号の漏えい等に係る情報",
    Category.CARD_CASCADE: "個人番号カード用電子証明書の失効に係る情報",
    Category.APPROVAL_WITHDRAWN: "特定利用者証明検証者の認可の取消し等",
}


class RequestReason(enum.Enum):
    """What the holder asked for or reported (申請 / 届出, Act §9, §10, §16-8, §16-9, §28, §29, §35-8,
    §35-9)."""

    APPLICATION = "application"
    """失効の申請: the holder asked for revocation, no longer using it."""
    RENEWAL = "renewal"
    """失効の申請 together with a new issuance (更新): superseded."""
    KEY_COMPROMISE = "key-compromise"
    """署名利用者符号の漏えい: the private key leaked."""
    LOSS = "loss"
    """滅失: the card or device holding the key was lost."""
    DAMAGE = "damage"
    """毀損: the card or device was damaged."""
    UNUSABLE = "unusable"
    """The card lost effect or became unusable (Ord §17, §53 特例)."""
    UNDELIVERED = "undelivered"
    """Destroyed before delivery to the holder (J-LIS practice: unspecified)."""

    @property
    def reason(self) -> Reason:
        return _REQUEST_REASON[self]


_REQUEST_REASON: Final = {
    RequestReason.APPLICATION: Reason.CESSATION_OF_OPERATION,
    RequestReason.RENEWAL: Reason.SUPERSEDED,
    RequestReason.KEY_COMPROMISE: Reason.KEY_COMPROMISE,
    RequestReason.LOSS: Reason.KEY_COMPROMISE,
    RequestReason.DAMAGE: Reason.CESSATION_OF_OPERATION,
    RequestReason.UNUSABLE: Reason.CESSATION_OF_OPERATION,
    RequestReason.UNDELIVERED: Reason.UNSPECIFIED,
}


# ---------------------------------------------------------------------------
# The four facts (基本4情報) and resident record changes (異動)
# ---------------------------------------------------------------------------

# The patterns below end in `$`, which msgspec matches as `re.search` does: before a final line
# feed too. Kept so: the record stream's replay decodes with them, and a node replaying what an
# earlier release applied must decide alike; `crlbuilder.ingest.check_line_ends` refuses such a
# value where records enter (record files, the spool, `crlbuilder publish`).
HolderKey = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
"""A holder key: hex HMAC-SHA256 of the resident record code (住民票コード).

The raw code never enters the model: the exporter (or `rules.holder_key`) hashes
it with the configured secret, Act §44-45 (the code only links certificates).
"""

Serial = Annotated[int, msgspec.Meta(ge=1)]
"""A certificate serial number (発行の番号): positive; at most 20 octets (RFC 5280 §4.1.2.2) is checked by ingest."""

IssuerId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
RecordId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]

EraBirthDate = Annotated[str, msgspec.Meta(pattern=r"^[1-5][0-9]{8}$")]
"""Birth date as JPKI encodes it: one era digit (1 明治 .. 5 令和) then the Gregorian YYYYMMDD."""


class Sex(enum.Enum):
    """性別 as the JPKI sign certificate encodes it."""

    MALE = "1"
    FEMALE = "2"
    UNKNOWN = "3"


class FourFacts(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """基本4情報: name, sex, birth date and address (Act §7(1)(3), §16-6(1)(3)), as in a sign certificate.

    ``name_alt`` and ``address_alt`` are the substitute-character forms (代替文字)
    of OID arcs .2 and .6 under 1.2.392.200149.8.5.5.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    sex: Sex
    birth_date: EraBirthDate
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    name_alt: str | None = None
    address_alt: str | None = None


class Fact(enum.Enum):
    """Which of the four facts changed (Act §12(1))."""

    NAME = "name"
    SEX = "sex"
    BIRTH_DATE = "birth-date"
    ADDRESS = "address"


class MinorCorrection(enum.Enum):
    """The minor corrections of Ord §20 that do not revoke a sign certificate."""

    COMMON_CHARACTERS = "common-characters"
    """Ord §20(1): uncommon characters replaced with 常用平易な文字."""
    CHARACTER_IDENTIFICATION = "character-identification"
    """Ord §20(2): 文字の同定."""
    AREA_RENAMED = "area-renamed"
    """Ord §20(3): 行政区画・郡・区・町字 or their names changed."""
    LOT_NUMBER = "lot-number"
    """Ord §20(4): 地番の変更."""
    RESIDENCE_INDICATION = "residence-indication"
    """Ord §20(5): 住居表示の実施又は変更."""
    BUILDING_NAME = "building-name"
    """Ord §20(6): building name or landlord changed."""
    MINISTER_APPROVED = "minister-approved"
    """Ord §20(7): other corrections the Minister approves."""

    @property
    def article(self) -> str:
        return f"Ord §20({list(MinorCorrection).index(self) + 1})"


class DeletionCause(enum.Enum):
    """Why a resident record (住民票) was deleted (消除)."""

    DEATH = "death"
    """死亡."""
    MOVE_OUT = "move-out"
    """Deleted on a domestic move-out notice (転出届, 住基法 §24): not an auth revocation (Act §31(1))."""
    ABROAD_MOVE_OUT = "abroad-move-out"
    """Deleted on a move-abroad notice (国外転出届)."""
    EX_OFFICIO = "ex-officio"
    """職権消除 and any other deletion."""


class ChangeKind(enum.Enum):
    """The kinds of resident record change (住民票の異動) the 機構 learns of."""

    FACT_CHANGE = "fact-change"
    """A change of one of the four facts (Act §12(1))."""
    MINOR_CORRECTION = "minor-correction"
    """A minor correction of Ord §20: revokes nothing."""
    RECORD_DELETION = "record-deletion"
    """住民票の消除 (Act §12(2), §31(1))."""
    MOVE_OUT_NOTICE = "move-out-notice"
    """転出届 with its planned date (Act §31(2): the 30-day rule starts from it)."""
    MOVE_IN_NOTICE = "move-in-notice"
    """転入届 (住基法 §22(1)): stops the 30-day rule."""
    KOSEKI_ANNEX_DELETION = "koseki-annex-deletion"
    """戸籍の附票の消除 of a person living abroad (Act §12(3), §31(3))."""


# ---------------------------------------------------------------------------
# Records (JSON Lines)
# ---------------------------------------------------------------------------


class _Base(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="type",
):
    id: RecordId
    """Unique record id: replaying a record with a known id changes nothing."""
    recorded_at: datetime
    """When the 機構 recorded it (記録する年月日); timezone-aware, RFC 3339."""


class Issuance(_Base, frozen=True, kw_only=True, tag="issuance"):
    """発行記録: one certificate was issued (Act §8, §16-7, §27, §35-7; what the certificate records:
    §7, §16-6, §26, §35-6)."""

    serial: Serial
    family: Family
    issuer: IssuerId
    not_before: datetime
    not_after: datetime
    holder: HolderKey
    facts: FourFacts | None = None
    """The four facts, for sign certificates only (auth certificates carry none)."""
    card_serial: Serial | None = None
    """For a mobile certificate: the serial of the card certificate of the same kind."""
    renewal: bool = False
    """Issued within three months of the previous one's end (Ord §13(1), §49(1))."""


class RevocationRequest(_Base, frozen=True, kw_only=True, tag="revocation-request"):
    """失効申請等情報: the holder asked for revocation or reported a problem (Act §11...)."""

    serial: Serial
    issuer: IssuerId
    reason: RequestReason


class ResidentChange(_Base, frozen=True, kw_only=True, tag="resident-change"):
    """異動: a change in the holder's resident record (Act §12, §31; Ord §20).

    It names either the holder (the change then applies to each of the holder's
    card certificates as the rules say) or one certificate by ``serial`` and
    ``issuer``, as the 機構 records 異動等失効情報 per certificate (Act §12, §31).
    """

    holder: HolderKey | None = None
    serial: Serial | None = None
    issuer: IssuerId | None = None
    change: ChangeKind
    fact: Fact | None = None
    """For FACT_CHANGE: which fact."""
    correction: MinorCorrection | None = None
    """For MINOR_CORRECTION: which Ord §20 item."""
    cause: DeletionCause | None = None
    """For RECORD_DELETION: why."""
    planned_date: date | None = None
    """For MOVE_OUT_NOTICE: the planned move-out date (転出の予定年月日)."""
    notified_at: datetime | None = None
    """For MOVE_OUT_NOTICE and MOVE_IN_NOTICE: when the holder made the notice (届出), if
    earlier than ``recorded_at``. The 国外転出届 window (Act §12(2), §31(2)) and the
    30-day rule count from the notice, not from its record; defaults to ``recorded_at``."""
    abroad: bool = False
    """For MOVE_OUT_NOTICE: a move-abroad notice (国外転出届)."""


class RecordingError(_Base, frozen=True, kw_only=True, tag="recording-error"):
    """記録誤り等: a recording error or omission in a certificate (Act §13 ...)."""

    serial: Serial
    issuer: IssuerId


class CompromiseCause(enum.Enum):
    LEAK = "leak"
    LOSS = "loss"
    DAMAGE = "damage"


class CaCompromise(_Base, frozen=True, kw_only=True, tag="ca-compromise"):
    """発行者署名符号の漏えい等: an issuing key generation leaked, was lost or damaged (Act §14 ...)."""

    issuer: IssuerId
    cause: CompromiseCause = CompromiseCause.LEAK


class Consent(_Base, frozen=True, kw_only=True, tag="consent"):
    """The holder's consent (同意) to give a verifier 特定署名用電子証明書記録情報 (Act §18(3))."""

    holder: HolderKey
    verifier: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    granted: bool


class TokenIssued(_Base, frozen=True, kw_only=True, tag="token-issued"):
    """特定利用者証明検証者証明符号 issued (提供, Act §38-3(2)): written by the cluster signer's
    builder, which holds the token issuer's key, on the record stream only (`crlbuilder.tokens`),
    so that every node records the same token as good; never a record of the feed.
    ``recorded_at`` is the certificate's notBefore: published again, it is the same record."""

    serial: Serial
    issuer: IssuerId
    not_before: datetime
    not_after: datetime
    holder: HolderKey
    """`crlbuilder.tokenrequest.token_holder` of the party (a digest of its id, nothing personal)."""
    certificate: Annotated[bytes, msgspec.Meta(min_length=1, max_length=16384)]
    """The token certificate (DER; base64 in JSON), signed by the token issuer's key: every
    node records the token only if it verifies against the token issuer's certificate and
    says what the record says (`crlbuilder.tokencert`), so no other publisher on the record
    stream can record a token serial with another party."""


class TokenRevoked(_Base, frozen=True, kw_only=True, tag="token-revoked"):
    """A 特定利用者証明検証者証明符号 revoked because its party is no longer an approved
    特定利用者証明検証者 (Act §38-2(6), `Category.APPROVAL_WITHDRAWN`): written by the cluster
    signer's builder on the record stream only; ``at`` is the revocation's instant, the same on
    every node that applies it, and the same when the signer publishes it again before it
    applied it (`crlbuilder.tokens.TokenIssuer.revoking`)."""

    serial: Serial
    issuer: IssuerId
    at: datetime
    signature: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    """The token issuer's JWS over what the revocation says (`crlbuilder.tokenrevocation`):
    every node applies the record only if it verifies against the token issuer's certificate
    and says what the record says, so no other publisher on the record stream can revoke a
    token. Empty (left out) in a record of a release before 1.6: refused since."""


Record = (
    Issuance
    | RevocationRequest
    | ResidentChange
    | RecordingError
    | CaCompromise
    | Consent
    | TokenIssued
    | TokenRevoked
)
"""Every record of the JSON Lines input format, tagged by ``type`` (the two token records are
the signer builder's, on the record stream: `crlbuilder.apply` refuses them elsewhere)."""

RECORD_TYPES: Final = (
    Issuance,
    RevocationRequest,
    ResidentChange,
    RecordingError,
    CaCompromise,
    Consent,
    TokenIssued,
    TokenRevoked,
)


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of the rules: one certificate loses effect (失効) at ``at``."""

    issuer: str
    serial: int
    category: Category
    reason: Reason
    at: datetime
    record_id: str
    """The record that caused it (for a cascade or compromise, the originating record)."""


class CertStatus(enum.Enum):
    """A certificate's status as OCSP answers it (RFC 6960 §2.2): the one set of statuses.

    `crlbuilder.ocsp.response` encodes it as the SingleResponse certStatus CHOICE
    (RFC 6960 §4.2.1); answers.jsonl, the logs and the metrics carry its value.
    """

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of answers.jsonl: a sample certificate and what every client must be told."""

    cert: str
    issuer_cert: str
    family: Family
    issuer: str
    serial: int
    status: CertStatus
    case: str
    category: Category | None = None
    reason: Reason | None = None
    revoked_at: datetime | None = None
