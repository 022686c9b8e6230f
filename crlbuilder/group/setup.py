"""``group.json``: what a group appliance (団体署名検証者, Act §17(5)) received, written once, read by all.

A group holds no CA key, no 機構 signer key and no record. What it has, and all this
file names, is what the 機構 gave it and its own responder key:

- the issuers' CA certificates (the 機構 publishes them, Ord §74(1); its appliance
  serves them at ``GET /ca/``), each with its SHA-256 fingerprint as received, its
  family and generation, and the URLs of its full and delta CRL files (失効情報ファイル,
  Act §18(2));
- the 機構's appliance base URL and the group's own bearer token for it (a file, 0600;
  the group's credential in the 機構's registry), and the agreed cycle (提供の周期,
  Ord §33(2)) at which the group fetches;
- the group's own OCSP responder key and certificate: the group answers its members
  (署名確認者, Act §20(1)) signed with it, a responder the members trust by
  configuration (RFC 6960 §4.2.2.2), never a delegate of the 機構's CAs;
- the store the CRLs are imported into;
- the 機構's answer keys (its ``GET /v1/keys``, pinned at init): the relay of record
  information checks each answer's signature with them (`crlbuilder.group.answerkeys`).

`crlbuilder group init` writes it; `crlbuilder group pull` and `responder serve`
(``[group] file``) read it. Paths are relative to the file's directory (`GroupSetup.path`);
the key may be an RFC 7512 PKCS#11 URI (`GroupSetup.key_ref`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crlbuilder import atomicfile
from crlbuilder.keyref import resolve_key_ref
from crlbuilder.model import Family

SETUP_VERSION: Final = 1
SETUP_NAME: Final = "group.json"

PartyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}\Z")]
IssuerId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}\Z")]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=2000)]


class GroupIssuer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One issuing CA generation of the 機構, as the group received it."""

    id: IssuerId
    family: Family
    generation: Annotated[int, msgspec.Meta(ge=1)]
    index: Annotated[int, msgspec.Meta(ge=1, le=0xFFFF)]
    """Its code in the group's store (unique in this file)."""
    cert: str
    """The CA certificate (PEM), relative to the file."""
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    """SHA-256 of the certificate's DER, as received: checked on every load."""
    crl_url: Url
    delta_crl_url: Url
    successor_cert: str = ""
    """After a compromise of this generation's CA key (Act §14) its CRLs carry its name
    but are signed by the successor generation's key: the successor certificate the 機構
    published for it (PEM, relative to the file); empty if none."""
    successor_sha256: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?$")] = ""


class GroupSetup(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The whole ``group.json`` (module docstring)."""

    version: int = SETUP_VERSION
    group_id: PartyId
    """The group's party id, in the 機構's registry and in its own."""
    authority: Url
    """The 機構's appliance (base URL): its /ca/ and /crl/ routes."""
    token_file: str
    """The group's bearer token for the 機構 (a file, mode 0600)."""
    cycle_seconds: Annotated[int, msgspec.Meta(ge=1)]
    """The agreed cycle (提供の周期, Ord §33(2)): one fetch of each CRL file per cycle."""
    responder_cert: str
    """The group's own OCSP responder certificate (members trust it: ``-VAfile``)."""
    responder_key: str
    """Its key: a PEM file (0600) or a PKCS#11 URI."""
    store: str = "store"
    """The status store the CRLs are imported into (crl-import mode)."""
    answer_keys: str = ""
    """The 機構's answer keys the group pinned (its ``GET /v1/keys`` as fetched by ``group
    init`` or ``group keys``, `crlbuilder.group.answerkeys`), relative to the file: each
    record-information answer relayed to a member is checked against them. Empty (a
    setup written before): none pinned, and the relay passes no answer on."""
    issuers: list[GroupIssuer]
    directory: str = ""
    """Set on load: the absolute directory of the file (never written)."""

    def path(self, relative: str) -> Path:
        return Path(self.directory) / relative

    def key_ref(self) -> str:
        """The responder key as `crlbuilder.keys.signer.load_signer` takes it."""
        return resolve_key_ref(self.responder_key, self.directory)


class GroupSetupError(Exception):
    """``group.json`` is missing, unreadable or inconsistent (the message names the file)."""


def load_group_setup(file_or_dir: str | Path) -> GroupSetup:
    """Read ``group.json`` (or the one in a directory) and check it, certificates included."""
    p = Path(file_or_dir)
    if p.is_dir():
        p = p / SETUP_NAME
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise GroupSetupError(f"{p}: cannot read the group setup: {e.strerror}") from None
    try:
        setup = msgspec.json.decode(raw, type=GroupSetup)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise GroupSetupError(f"{p}: invalid group setup: {e}") from None
    if setup.version != SETUP_VERSION:
        raise GroupSetupError(f"{p}: version {setup.version}, expected {SETUP_VERSION}")
    if not setup.issuers:
        raise GroupSetupError(f"{p}: issuers: the group knows no issuer")
    for what in ("id", "index"):
        values = [getattr(i, what) for i in setup.issuers]
        if len(set(values)) != len(values):
            raise GroupSetupError(f"{p}: issuers: an issuer {what} is listed twice")
    setup.directory = str(p.parent.resolve())
    for i in setup.issuers:
        if bool(i.successor_cert) != bool(i.successor_sha256):
            raise GroupSetupError(f"{p}: issuer {i.id}: successor_cert and its sha256 go together")
        for rel, want in ((i.cert, i.sha256), (i.successor_cert, i.successor_sha256)):
            if not rel:
                continue
            try:
                pem = setup.path(rel).read_bytes()
                der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
            except (OSError, ValueError) as e:
                raise GroupSetupError(f"{p}: issuer {i.id}: {rel}: {e}") from None
            if hashlib.sha256(der).hexdigest() != want:
                raise GroupSetupError(
                    f"{p}: issuer {i.id}: {rel} is not the certificate received "
                    "(its SHA-256 differs from the one recorded)"
                )
    return setup


def dump_group_setup(setup: GroupSetup, directory: str | Path) -> Path:
    """Write ``group.json`` into ``directory`` atomically (temporary file, fsync, rename)."""
    out = Path(directory) / SETUP_NAME
    data = msgspec.structs.replace(setup, directory="")
    raw = msgspec.json.format(msgspec.json.encode(data), indent=2)
    atomicfile.sweep_own(out, now=time.time())  # a crashed writer's temporary
    atomicfile.write_whole(out, raw + b"\n", 0o644, sync_dir=True)  # no secret: paths, URLs
    return out
