"""The registry file's schema: the msgspec tables of a ``[[party]]``, `RegistryFile`, TOML parse and dump.

What the file may hold and how it is written back (normalized, comments not kept); the
rules that tie fields together live in `responder.registry.checks`. The package docstring
(`responder.registry`) shows the format.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from crlbuilder.model import Family
from responder.registry.vocabulary import (
    AuthMethod,
    Method,
    Service,
    Title,
)

FORMAT_VERSION: Final = 2


# --- the file ---------------------------------------------------------------------------

# ``\Z``, not ``$``: msgspec matches with Python's `re`, whose ``$`` also matches before a
# final line feed, so ``"bank-a\n"`` was a party id: it loaded beside ``"bank-a"``, was
# answered, and the ledger (帳簿, Act §40), which takes ``[a-z0-9][a-z0-9-]{0,63}`` whole,
# refused to count it (every answer to it a 500 after its provisions were taken)
PartyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}\Z")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")]
Aware = Annotated[datetime, msgspec.Meta(tz=True)]
COUNT_MAX: Final = 2**63 - 1
"""The largest number an agreement may hold (a quota, a cycle): what a signed 64-bit counter
holds (`responder.limits` keeps them so, shared between workers); larger is refused."""
Count = Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)]
"""A bound of an agreement: 1 or more (absent: no bound), at most `COUNT_MAX`."""
VerifierItem = Annotated[int, msgspec.Meta(ge=1, le=6)]
"""The Act §17(1) item (第十七条第一項各号, 1 行政機関等 ... 6 主務大臣認定) a 署名検証者 or
利用者証明検証者 falls under: the registry's ``category`` field. Not the revocation category
(失効事由, `crlbuilder.model.Category`)."""


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
    filed_by: PartyId | None = None
    """The party's contractor (電子署名等確認業務受託者), when it filed this notification in
    the party's place (Ord §29(3) for the sign side, §60(1) for the auth side): the id its
    titles' ``delegated_to`` names, nothing else."""


class SignatureVerifierTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="signature-verifier"
):
    """署名検証者 (Act §17(1), (4))."""

    TITLE: ClassVar[Title] = Title.SIGNATURE_VERIFIER
    category: VerifierItem
    """The Act §17(1) item the party falls under (1 行政機関等 ... 6 主務大臣認定)."""
    certified_until: date | None = None
    """Items 5 and 6: the last day of the current certification (認定, renewed, Act §17(2));
    absent on a delegated title (``delegated_to``), whose certification is its contractor's."""
    delegated_to: PartyId | None = None
    """Category 6 only: the party entrusted its whole verification work (電子署名等確認業務) to
    this registered contractor (電子署名等確認業務受託者), certified under Act §17(1) item 6,
    and is deemed certified under that item while the contractor is (Ord §29(1));
    `responder.registry.delegation` says what follows."""


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
    item: Literal[1, 2] | None = None
    """The Act §17(5) item the member falls under, its group's: 1 (procedures before
    government bodies and courts on others' behalf), 2 (records needed for them); §21(1)."""
    requests_per_second: Count | None = None
    requests_per_day: Count | None = None
    """What the group and this member agreed of the requests it may send the group's
    appliance (the group-member arrangement, 団体署名検証者と署名確認者との間での取決め,
    Ord §33(4)): per second and per Japan calendar day; absent: the group's ``[group]
    member_requests_per_second`` and ``member_requests_per_day`` (`responder.memberbound`)."""


class UserVerifierTitle(_Table, frozen=True, kw_only=True, tag_field="kind", tag="user-verifier"):
    """利用者証明検証者 (Act §36): one of the Act §17(1) items."""

    TITLE: ClassVar[Title] = Title.USER_VERIFIER
    category: VerifierItem
    certified_until: date | None = None
    delegated_to: PartyId | None = None
    """As on a 署名検証者's title (`SignatureVerifierTitle.delegated_to`): the same contractor,
    whose agreement, when it is a 利用者証明検証者 itself, is deemed this party's (Ord §60(2))."""


class SpecifiedUserVerifierTitle(
    _Table, frozen=True, kw_only=True, tag_field="kind", tag="specified-user-verifier"
):
    """特定利用者証明検証者: a 利用者証明検証者 approved by the ministers (Act §38-2(1))."""

    TITLE: ClassVar[Title] = Title.SPECIFIED_USER_VERIFIER
    approved: date
    """The day of the approval (認可): its 特定利用者証明検証者証明符号 (Act §38-3) is valid
    from this Japan day on."""
    approval: Text | None = None
    """Reference of the approval."""
    approved_until: date | None = None
    """The last Japan day of the approval period, when one was set; absent (the default of
    files written before it): no end but a revocation. A token is valid until this day's end
    at the latest, and is revoked by the builder once it has passed (`crlbuilder.tokens`)."""
    revoked: Aware | None = None
    """When the ministers revoked the approval (認可の取消し, Act §38-2(6)): the party is no
    longer a 特定利用者証明検証者; its tokens are revoked at the next build."""


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
    crl_cycle_seconds: Annotated[int, msgspec.Meta(ge=0, le=COUNT_MAX)] = 0
    """提供の周期 (Ord §31(2)): at most one download of a CRL file per period; 0: no limit."""
    requests_per_second: Count | None = None
    requests_per_day: Count | None = None
    provisions_per_day: Count | None = None
    """At most this many provisions (件数, what the 帳簿 counts, Ord §71(4)) per Japan
    calendar day, whatever the number of requests: one per OCSP CertID answered, per entry
    of a batch answered, per change delivered, per CRL file downloaded. Absent: no bound."""
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
    members; refused on a party that is a 署名検証者 too, whose provision as such it would
    stop as well: the group title is registered as a party of its own), ``"Act §37(4)(N)"``
    (auth services)."""
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
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise RegistryError(f"{source}: not valid here: nested too deeply") from None
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
