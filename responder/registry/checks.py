"""Checking a registry file: every rule of the notification (届出) and agreement (取決め) a party must satisfy.

`_Checker` walks a `RegistryFile` and builds the `Party` values, collecting every error
(a file is refused as a whole, naming each problem) and the warnings of credentials that
expired while the file sat still (Act §17(1),(4),(5), §36(1),(2); Ord §30-§33, §61, §62).
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
)

from crlbuilder.model import Family
from crlbuilder.tokenrequest import approval_window
from crlbuilder.validity import end_exclusive
from responder.registry.delegation import contractor_of, principal
from responder.registry.party import (
    Approval,
    CredentialInfo,
    Grant,
    Party,
    SuspensionWindow,
    day_end,
    day_start,
    revocation_families,
)
from responder.registry.schema import (
    LEGACY_REFUSED,
    AnyEntry,
    CredentialEntry,
    GroupSignatureVerifierTitle,
    LegacyPartyEntry,
    PartyEntry,
    RegistryFile,
    SignatureConfirmerTitle,
    SignatureVerifierTitle,
    SpecifiedUserVerifierTitle,
    TitleEntry,
    TokenCredential,
    UserVerifierTitle,
)
from responder.registry.vocabulary import (
    AUTH_SIDE,
    SERVICE_ARTICLES,
    SERVICE_FAMILIES,
    SERVICE_METHODS,
    SERVICE_REQUIRES_ALL,
    TITLE_SERVICES,
    AuthMethod,
    Method,
    Service,
    Title,
    suspension_article,
    suspension_item,
    title_services,
)

# --- checking ------------------------------------------------------------------------------

_HIDDEN: Final = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_NOT_SHOWN: Final = re.compile(f"[{_HIDDEN}]")
"""Characters a text of the registry may not hold: control characters (C0 but tab and line
feed, DEL, C1: a terminal escape in `registry list`) and the bidirectional marks and
overrides, which make it show another text than it holds."""
_NOT_SHOWN_IN_A_LINE: Final = re.compile(f"[{_HIDDEN}\t\n]")
"""The same for a one-line text (a name): no tab or line feed either."""


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

    def warn(self, msg: str) -> None:
        self.warnings.append(f"{self.source}: {msg}")

    def check(self, data: RegistryFile) -> list[Party]:
        parties: list[tuple[PartyEntry, Party]] = []
        seen: set[str] = set()
        for entry in data.parties:
            if entry.id in seen:
                self.err(entry.id, "id", "listed twice")
                continue
            seen.add(entry.id)
            if isinstance(entry, LegacyPartyEntry):
                self.err(entry.id, "titles", LEGACY_REFUSED.format(source=self.source))
            else:
                parties.append((entry, self.entry(entry)))
        by_id = {e.id: e for e in data.parties}
        for entry in data.parties:
            if isinstance(entry, PartyEntry):
                self.membership(entry, by_id)
        # a principal's deemed agreement, certification and suspensions are its contractor's
        # (Ord §29, §60): read once every party is built, in one place for every service path
        built = {p.id: p for _, p in parties}
        return [principal(e, p, by_id, built, self.err, self.warn, self.now) for e, p in parties]

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
            if e.agreement is None and contractor_of(e) is None:
                # a principal's may be its contractor's, deemed (`responder.registry.delegation`)
                self.err(e.id, "agreement", "required (取決め, Act §17(4), §36(2); Ord §31)")
        self.texts(e)
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
            families=revocation_families(grants),
            auth=frozenset(c.kind for c in creds),
            cert_public_keys=tuple(c.spki for c in creds if c.kind is AuthMethod.SIGNED_REQUEST),
            group=confirmer.group if isinstance(confirmer, SignatureConfirmerTitle) else None,
            start=start,
            end=end,
            end_article=end_article,
            grants=grants,
            suspensions=windows,
            credentials=creds,
            requests_per_second=(
                e.agreement.requests_per_second
                if e.agreement
                else confirmer.requests_per_second
                if isinstance(confirmer, SignatureConfirmerTitle)
                else None
            ),
            requests_per_day=(
                e.agreement.requests_per_day
                if e.agreement
                else confirmer.requests_per_day
                if isinstance(confirmer, SignatureConfirmerTitle)
                else None
            ),
            provisions_per_day=e.agreement.provisions_per_day if e.agreement else None,
            crl_cycle_seconds=e.agreement.crl_cycle_seconds if e.agreement else 0,
            approval=_approval(titles.get(Title.SPECIFIED_USER_VERIFIER)),
        )

    def texts(self, e: PartyEntry) -> None:
        """Each text shows what it holds: not blank, no control or bidirectional character
        (the message names the character, never the text: it may be personal data)."""
        n, a = e.notification, e.agreement
        fields: list[tuple[str, str | None, bool]] = [("name", e.name, False)]
        if n is not None:
            fields += [
                ("notification.address", n.address, True),
                ("notification.representative", n.representative, False),
                ("notification.office", n.office, True),
            ]
        if a is not None:
            fields += [("agreement.liability", a.liability, True),
                       ("agreement.member_answer", a.member_answer, True)]  # fmt: skip
        fields += [
            (f"title[{i}].approval", t.approval, True)
            for i, t in enumerate(e.title)
            if isinstance(t, SpecifiedUserVerifierTitle)
        ]
        fields += [(f"suspension[{i}].reason", s.reason, True) for i, s in enumerate(e.suspension)]
        if e.ended is not None:
            fields += [("ended.reason", e.ended.reason, True),
                       ("ended.article", e.ended.article, False)]  # fmt: skip
        for fld, value, lines in fields:
            if value is None:
                continue
            hidden = (_NOT_SHOWN if lines else _NOT_SHOWN_IN_A_LINE).search(value)
            if hidden is not None:
                self.err(
                    e.id, fld, f"holds U+{ord(hidden.group()):04X}, a character not shown as such"
                )
            elif not value.strip():
                self.err(e.id, fld, "blank")

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
                if t.category in (5, 6) and t.certified_until is None and t.delegated_to is None:
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
            elif isinstance(t, SpecifiedUserVerifierTitle) and (
                t.approved_until is not None and t.approved_until < t.approved
            ):
                self.err(
                    e.id,
                    f"{fld}.approved_until",
                    "the approval period (Act §38-2(1)) ends before the day of the approval",
                )
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
                # the certificate's notAfter second is inside its validity (RFC 5280
                # §4.1.2.5, `crlbuilder.validity`): the half-open window ends the second after
                na = min(na, end_exclusive(cert.not_valid_after_utc))
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
        except ValueError:  # a NUL in the path
            self.err(pid, fld, f"cannot read {ref!r}: not a file name")
            return None
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            self.err(pid, fld, f"{path} is not a certificate")
            return None
        try:
            cert.public_key()
        except (UnsupportedAlgorithm, ValueError) as e:
            self.err(pid, fld, f"{path}: its public key cannot be used ({e})")
            return None
        return cert

    def suspensions(self, e: PartyEntry, kinds: frozenset[Title]) -> tuple[SuspensionWindow, ...]:
        out: list[SuspensionWindow] = []
        for i, s in enumerate(e.suspension):
            fld = f"suspension[{i}]"
            meaning = suspension_article(s.article)
            if meaning is None:
                self.err(
                    e.id,
                    f"{fld}.article",
                    "expected 'Act §18(6)(1..6)', 'Act §18(7)(1..5)', 'Act §37(4)(1..6)', "
                    "or for a member 'Act §20(2)(1..5)', 'Act §20(6)(1..5)'",
                )
                continue
            # one lifted already is history: the titles may have changed since
            lifted = s.until is not None and s.until.timestamp() <= self.now
            if not lifted and not meaning.needs & kinds:
                self.err(
                    e.id,
                    f"{fld}.article",
                    f"{s.article} stops what a {_names(meaning.needs)} receives; this party holds none of those titles",
                )
                continue
            if (
                not lifted
                and suspension_item(s.article) == meaning.carried_item
                and not (meaning.carry_needs & kinds)
            ):
                self.err(
                    e.id,
                    f"{fld}.article",
                    f"{s.article} applies only to a party that is also a {_names(meaning.carry_needs)} "
                    "and was suspended under that title; this party holds no such title",
                )
                continue
            if (
                not lifted
                and meaning.needs == {Title.GROUP_SIGNATURE_VERIFIER}
                and Title.SIGNATURE_VERIFIER in kinds
            ):
                # §18(7) stops what the 機構 provides to the group; this party's services are
                # not kept per title, so it would stop its provision as a 署名検証者 too
                self.err(
                    e.id,
                    f"{fld}.article",
                    f"{s.article} stops what the party receives as a group only, and this party "
                    "is a signature-verifier too: register the group title as a party of its own "
                    "(its own credentials) and suspend that one",
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
                    if lifted:
                        continue
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
        if e.ended is not None and e.ended.at.timestamp() <= self.now:
            return  # no longer answered: its group may have narrowed its range since (Ord §32(4))
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
                    f"outside the member range (署名確認者の範囲) {t.group!r} notified (Act §17(5), Ord §32(4)); "
                    f"a member leaving it is ended first (`registry end --id {e.id}`)",
                )
            elif t.item is not None and t.item != gtitle.group_kind:
                self.err(
                    e.id,
                    f"title[{i}].item",
                    f"{t.group!r} is a group of Act §17(5) item {gtitle.group_kind}: its members "
                    "fall under the same item (Act §21(1))",
                )


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
        until = max(until, math.inf if lapse is None else day_end(lapse))
    if s in SERVICE_REQUIRES_ALL:  # every required title must still hold
        for t in SERVICE_REQUIRES_ALL[s]:
            entry = titles[t]
            if (
                isinstance(entry, SignatureVerifierTitle | UserVerifierTitle)
                and entry.certified_until
            ):
                until = min(until, day_end(entry.certified_until))
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


def _approval(t: TitleEntry | None) -> Approval | None:
    """The approval (認可, Act §38-2(1)) of a 特定利用者証明検証者 title, as instants."""
    if not isinstance(t, SpecifiedUserVerifierTitle):
        return None
    start, until = approval_window(t.approved, t.approved_until)
    return Approval(
        start=start,
        until=math.inf if until is None else until,
        revoked=t.revoked.timestamp() if t.revoked else math.inf,
        window=(start, until),
    )
