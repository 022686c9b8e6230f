"""The PKI manifest (``pki.json``): which files make up a PKI, written once, read by all.

`crlbuilder pki init` writes it; `crlbuilder synth`, `crlbuilder build` and
`responder` read it to find issuer certificates, CA keys (crlbuilder only),
delegated OCSP signers, the group relay's responder certificate and the demo
parties' credentials. Paths in the manifest are relative to the manifest's
directory; `Manifest.path()` resolves them. A signing key field (``key``,
``ocsp_key``, ``group_responder_key``) may instead hold an RFC 7512 PKCS#11 URI
(``pkcs11:token=...;object=...;type=private?pin-source=file:/path``) naming a key
in an HSM (Ord §73, §74); `Manifest.key_ref()` resolves either form for
`crlbuilder.keys.signer.load_signer`. Certificates are always files.

``token_issuer`` (optional) is the issuer of the 特定利用者証明検証者証明符号 (Act §38-3):
an issuer generation like the others (its CA key signs the tokens and its CRLs, a
delegated signer its OCSP answers; `crlbuilder.tokens`) whose family is
`Family.SPECIFIED_VERIFIER_TOKEN`. It is kept out of ``issuers`` (the Act's four families,
which the demo population, key ceremonies and CRL import walk); the builder and the
responder walk `Manifest.all_issuers`.

``answer_cert`` and ``answer_key`` are the responder's answer-signing key (応答署名用の鍵):
it signs the JWS of every /v1 JSON answer (`responder.v1.jws`); its certificate carries
the extended key usage `ANSWER_SIGNING_EKU`. The key may be a PKCS#11 URI too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder import atomicfile
from crlbuilder.keyref import resolve_key_ref
from crlbuilder.model import Family

MANIFEST_VERSION: Final = 1
MANIFEST_NAME: Final = "pki.json"
ANSWER_SIGNING_EKU: Final = "2.25.23992150756379134278736048147909983724.2.1"
"""The extended key usage of the responder's answer-signing certificate (JWS over /v1
answers), under the project's arc (the UUID arc 2.25.23992150756379134278736048147909983724)."""
"""A key field starting so is a PKCS#11 URI, not a path (`crlbuilder.keys.pkcs11`)."""


class IssuerFiles(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One issuing CA key generation and its delegated OCSP signer."""

    id: str
    """e.g. ``sign-card-g2``: family and generation."""
    family: Family
    generation: int
    index: int
    """Compact code in the store (1..65535), unique across the manifest."""
    cert: str
    key: str
    ocsp_cert: str
    ocsp_key: str
    crl_url: str
    """The full CRL's URL, as the certificates' CRL distribution points carry it."""
    delta_crl_url: str
    """The delta CRL's URL (freshestCRL of the full CRL)."""
    ocsp_url: str
    live: bool = True
    """False for a generation that no longer issues (kept for its certificates' lifetime)."""
    successor: str = ""
    """The issuer generation (of the same family) whose keys publish this generation's
    revocation information once its key is compromised (発行者署名符号の漏えい等): its CA key
    signs this generation's CRLs, its delegated OCSP signer this generation's answers.
    Empty: after a compromise nothing is signed for this generation (docs/operations.md)."""
    successor_cert: str = ""
    """The successor certificate: this generation's CA name bound to the successor's CA
    key, issued by the successor CA, cRLSign only. CRLs of this generation signed after
    a compromise carry this generation's issuer name and verify with it."""


class PartyFiles(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A demo party's credentials: client certificate, key and bearer token file."""

    id: str
    name: str
    titles: list[str]
    cert: str
    key: str
    token: str
    """Path of a file (mode 0600) holding the bearer token; the registry stores only its hash."""
    group: str | None = None
    """For a 署名確認者 member: the id of its 団体署名検証者."""


class Manifest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    version: int = MANIFEST_VERSION
    key_size: int
    base_url: str
    issuers: list[IssuerFiles]
    client_ca: str
    """CA certificate that issued the parties' client certificates (mutual TLS)."""
    client_ca_key: str
    server_cert: str
    """TLS server certificate for the responder (127.0.0.1, ::1, localhost)."""
    server_key: str
    group_responder_cert: str
    """Responder certificate of the 団体署名検証者 relay."""
    group_responder_key: str
    answer_cert: str = ""
    """The responder's answer-signing certificate (JWS of /v1 answers); "" in a PKI made
    before it existed (the responder then refuses to start until one is configured)."""
    answer_key: str = ""
    parties: list[PartyFiles] = []
    token_issuer: IssuerFiles | None = None
    """The issuer of 特定利用者証明検証者証明符号 (Act §38-3), family ``verifier-token``."""
    directory: str = ""
    """Set on load: the absolute directory the manifest was read from (never written)."""

    def path(self, relative: str) -> Path:
        return Path(self.directory) / relative

    def key_ref(self, ref: str) -> str:
        """A signing key field as `crlbuilder.keys.signer.load_signer` takes it: a PKCS#11 URI
        unchanged, a file path resolved against the manifest's directory."""
        return resolve_key_ref(ref, self.directory)

    def all_issuers(self) -> list[IssuerFiles]:
        """Every issuer generation the store answers for: ``issuers`` and the token issuer."""
        return [*self.issuers, *([self.token_issuer] if self.token_issuer else [])]

    def issuer(self, issuer_id: str) -> IssuerFiles:
        for issuer in self.all_issuers():
            if issuer.id == issuer_id:
                return issuer
        raise KeyError(issuer_id)

    def issuers_of(self, family: Family) -> list[IssuerFiles]:
        return [i for i in self.all_issuers() if i.family is family]


def ocsp_signer_files(
    manifest: Manifest, issuer: IssuerFiles, compromised: bool
) -> tuple[str, str] | None:
    """(key, certificate) of the delegated OCSP signer that answers for ``issuer``'s certificates.

    Its own delegate, certified by its CA key, until that key is compromised
    (発行者署名符号の漏えい等); then the successor generation's delegate (a Trusted
    Responder in RFC 6960 §4.2.2.2's terms: clients must be told to trust it),
    never one certified by the compromised key; None without a successor.
    """
    if not compromised:
        return issuer.ocsp_key, issuer.ocsp_cert
    if not issuer.successor:
        return None
    successor = manifest.issuer(issuer.successor)
    return successor.ocsp_key, successor.ocsp_cert


class ManifestError(Exception):
    """The manifest is missing, unreadable or inconsistent."""


def load_manifest(directory_or_file: str | Path) -> Manifest:
    """Read ``pki.json`` from a PKI directory (or the file itself) and check it."""
    p = Path(directory_or_file)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ManifestError(f"{p}: cannot read the PKI manifest: {e.strerror}") from None
    try:
        m = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as e:
        raise ManifestError(f"{p}: invalid PKI manifest: {e}") from None
    except msgspec.DecodeError as e:
        raise ManifestError(f"{p}: not JSON: {e}") from None
    if m.version != MANIFEST_VERSION:
        raise ManifestError(f"{p}: manifest version {m.version}, expected {MANIFEST_VERSION}")
    tok = m.token_issuer
    if tok is not None and (tok.family is not Family.SPECIFIED_VERIFIER_TOKEN or tok.successor):
        raise ManifestError(f"{p}: token_issuer: family verifier-token, no successor")
    if any(not i.family.is_jpki for i in m.issuers):
        raise ManifestError(f"{p}: issuers: verifier-token is the token_issuer's family only")
    by_id = {i.id: i for i in m.issuers}
    for i in m.issuers:
        if bool(i.successor) != bool(i.successor_cert):
            raise ManifestError(f"{p}: {i.id}: successor and successor_cert go together")
        nxt = by_id.get(i.successor) if i.successor else None
        if i.successor and (nxt is None or nxt.family is not i.family or nxt.id == i.id):
            raise ManifestError(
                f"{p}: {i.id}: successor {i.successor!r} is not another issuer of its family"
            )
    ids = [i.id for i in m.all_issuers()]
    indexes = [i.index for i in m.all_issuers()]
    if len(set(ids)) != len(ids) or len(set(indexes)) != len(indexes):
        raise ManifestError(f"{p}: issuer ids and indexes must be unique")
    if any(not 1 <= i <= 0xFFFF for i in indexes):
        raise ManifestError(f"{p}: issuer index out of range 1..65535")
    m.directory = str(p.parent.resolve())
    return m


def dump_manifest(manifest: Manifest, directory: str | Path) -> Path:
    """Write ``pki.json`` into ``directory`` (without the runtime ``directory`` field),
    atomically: a temporary file, fsync, rename over the old one (a key rollover's update is
    all or nothing for the builder and the responder that read it)."""
    out = Path(directory) / MANIFEST_NAME
    data = msgspec.structs.replace(manifest, directory="")
    raw = msgspec.json.format(msgspec.json.encode(data), indent=2)
    atomicfile.sweep_own(out, now=time.time())  # a crashed rollover's temporary
    atomicfile.write_whole(out, raw + b"\n", 0o644, sync_dir=True)  # public: names, URLs
    return out
