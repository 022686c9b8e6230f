"""The registry of parties (届出をした署名検証者等): who may ask, proven how, about which families.

A TOML file lists each registered party with its titles (Act §17, §36, §38-2)
and credentials: bearer tokens stored only as SHA-256 hashes, and client
certificates (mutual TLS, or signed OCSP requests, Act §18(1), §37(1)) named by
file and known by their SHA-256 fingerprint. What a title may receive follows
DOMAIN.md §5: a 署名検証者 or 団体署名検証者 receives sign revocation
information, a 利用者証明検証者 auth revocation information; a 署名確認者
(member of a group) receives answers only from its group (Act §20(1)), never
from the 機構 directly.

    [[party]]
    id = "sig-verifier"                   # stable id, [a-z0-9-]
    name = "Demo Bank"                     # the notified name (届出の名称)
    titles = ["signature-verifier"]
    tokens_sha256 = ["<hex>"]              # SHA-256 of each bearer token
    certs = ["../pki/parties/sig-verifier.pem"]   # relative to this file
    auth = ["token", "mtls", "signed-request"]    # ways this party may prove itself

`responder registry init` writes one from a demo PKI. The agreements issue
grows this file (services, methods, quotas, suspension).
"""

from __future__ import annotations

import enum
import hashlib
import tomllib
from pathlib import Path
from typing import Annotated, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crlbuilder.manifest import Manifest
from crlbuilder.model import Family


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


TITLE_FAMILIES: Final[dict[Title, frozenset[Family]]] = {
    Title.SIGNATURE_VERIFIER: frozenset({Family.SIGN_CARD, Family.SIGN_MOBILE}),
    Title.GROUP_SIGNATURE_VERIFIER: frozenset({Family.SIGN_CARD, Family.SIGN_MOBILE}),
    Title.SIGNATURE_CONFIRMER: frozenset(),
    Title.USER_VERIFIER: frozenset({Family.AUTH_CARD, Family.AUTH_MOBILE}),
    Title.SPECIFIED_USER_VERIFIER: frozenset({Family.AUTH_CARD, Family.AUTH_MOBILE}),
}
"""Which families' revocation information each title may receive (Act §18(1), §37(1))."""


_SPKI: Final = PublicFormat.SubjectPublicKeyInfo


class AuthMethod(enum.Enum):
    TOKEN = "token"
    MTLS = "mtls"
    SIGNED_REQUEST = "signed-request"


PartyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class PartyEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One [[party]] table of the registry file."""

    id: PartyId
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    titles: Annotated[list[Title], msgspec.Meta(min_length=1)]
    tokens_sha256: list[Sha256Hex] = []
    certs: list[str] = []
    auth: list[AuthMethod] = msgspec.field(default_factory=lambda: list(AuthMethod))
    """How the party may prove itself (default: any of the three)."""
    group: PartyId | None = None
    """For a 署名確認者: its 団体署名検証者's id."""


class RegistryFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    party: list[PartyEntry] = []


class Party(msgspec.Struct, frozen=True, kw_only=True):
    """A registered party as the workers use it."""

    id: str
    name: str
    titles: frozenset[Title]
    families: frozenset[Family]
    auth: frozenset[AuthMethod]
    cert_public_keys: tuple[bytes, ...]
    """SubjectPublicKeyInfo DER of each registered certificate (signed requests)."""

    def may_receive(self, family: Family) -> bool:
        return family in self.families


class RegistryError(Exception):
    """A registry file that cannot be used; the message names the file and the problem."""


class Registry:
    """Lookup tables built from a registry file: token hash, cert fingerprint -> party."""

    def __init__(
        self, parties: list[Party], tokens: dict[bytes, Party], certs: dict[bytes, Party]
    ) -> None:
        self.parties = {p.id: p for p in parties}
        self._tokens = tokens
        self._certs = certs

    @classmethod
    def load(cls, path: Path) -> Registry:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise RegistryError(f"{path}: not valid TOML: {e}") from None
        try:
            data = msgspec.convert(raw, RegistryFile)
        except msgspec.ValidationError as e:
            raise RegistryError(f"{path}: {e}") from None
        return cls.build(data, base=path.parent, source=str(path))

    @classmethod
    def build(cls, data: RegistryFile, *, base: Path, source: str) -> Registry:
        parties: list[Party] = []
        tokens: dict[bytes, Party] = {}
        certs: dict[bytes, Party] = {}
        seen: set[str] = set()
        for entry in data.party:
            if entry.id in seen:
                raise RegistryError(f"{source}: party {entry.id!r} is listed twice")
            seen.add(entry.id)
            loaded = [_load_cert(base / c, source, entry.id) for c in entry.certs]
            families: frozenset[Family] = frozenset().union(
                *(TITLE_FAMILIES[t] for t in entry.titles)
            )
            party = Party(
                id=entry.id,
                name=entry.name,
                titles=frozenset(entry.titles),
                families=families,
                auth=frozenset(entry.auth),
                cert_public_keys=tuple(
                    c.public_key().public_bytes(Encoding.DER, _SPKI) for c in loaded
                ),
            )
            parties.append(party)
            for h in entry.tokens_sha256:
                if bytes.fromhex(h) in tokens:
                    raise RegistryError(
                        f"{source}: a token of {entry.id!r} is also another party's"
                    )
                tokens[bytes.fromhex(h)] = party
            for c in loaded:
                fp = hashlib.sha256(c.public_bytes(Encoding.DER)).digest()
                if fp in certs:
                    raise RegistryError(
                        f"{source}: a certificate of {entry.id!r} is also another party's"
                    )
                certs[fp] = party
        return cls(parties, tokens, certs)

    def by_token(self, token: bytes) -> Party | None:
        """The party whose bearer token this is (compared by SHA-256, never stored in clear)."""
        party = self._tokens.get(hashlib.sha256(token).digest())
        if party is None or AuthMethod.TOKEN not in party.auth:
            return None
        return party

    def by_certificate(self, cert_der: bytes) -> Party | None:
        """The party a TLS client certificate belongs to (by SHA-256 fingerprint)."""
        party = self._certs.get(hashlib.sha256(cert_der).digest())
        if party is None or AuthMethod.MTLS not in party.auth:
            return None
        return party

    def signing_parties(self) -> list[Party]:
        return [
            p
            for p in self.parties.values()
            if AuthMethod.SIGNED_REQUEST in p.auth and p.cert_public_keys
        ]


def _load_cert(path: Path, source: str, party: str) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RegistryError(
            f"{source}: party {party!r}: cannot read certificate {path}: {e.strerror}"
        ) from None
    try:
        return (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise RegistryError(f"{source}: party {party!r}: {path} is not a certificate") from None


def registry_from_manifest(manifest: Manifest, out: Path) -> str:
    """A registry TOML for a demo PKI's parties (token hashes read from their token files)."""
    lines = ["# Registry of parties: generated from the demo PKI by `responder registry init`.", ""]
    for p in manifest.parties:
        token = manifest.path(p.token).read_text(encoding="ascii").strip()
        cert = manifest.path(p.cert).resolve()
        try:
            cert_ref = str(cert.relative_to(out.parent.resolve()))
        except ValueError:
            cert_ref = str(cert)
        lines += [
            "[[party]]",
            f"id = {_q(p.id)}",
            f"name = {_q(p.name)}",
            f"titles = [{', '.join(_q(t) for t in p.titles)}]",
            f"tokens_sha256 = [{_q(hashlib.sha256(token.encode()).hexdigest())}]",
            f"certs = [{_q(cert_ref)}]",
        ]
        if p.group:
            lines.append(f"group = {_q(p.group)}")
        lines.append("")
    return "\n".join(lines)


def _q(s: str) -> str:
    return msgspec.json.encode(s).decode()
