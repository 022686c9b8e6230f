"""The demo/test PKI: issuing CAs per family and generation, OCSP signers, TLS and demo parties.

`init_pki` (``crlbuilder pki init``) creates, under one directory, everything a
demo or a test needs and describes it in ``pki.json`` (`crlbuilder.manifest`):

- one self-signed issuing CA per family and key generation (発行者署名符号の世代),
  RSA, sha256WithRSAEncryption: ``sign-card`` has two live generations (G1, the
  older one that `crlbuilder.demo.synth` compromises, and G2, current after a key
  rollover on `ROLLOVER`); the other families have one. Each generation has its
  own key and its own subject name, so OCSP tells them apart by issuer name hash
  and key hash;
- a delegated OCSP signer per generation, issued by that CA, with
  id-kp-OCSPSigning and id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2);
- for every generation but a family's last, its successor (the next
  generation) and a successor certificate (made by `crlbuilder.successor`,
  as the `crlbuilder keys successor` ceremony makes it): what
  publishes the generation's revocation information if its key is compromised;
- a demo TLS/client CA (``client_ca``) that issues the responder's TLS server
  certificate (127.0.0.1, ::1, localhost), the parties' client certificates
  (mutual TLS) and the 団体署名検証者 relay's responder certificate;
- the responder's answer-signing key and certificate (``answer_key``, ``answer_cert``),
  issued by the demo root with the extended key usage
  `crlbuilder.manifest.ANSWER_SIGNING_EKU`: it signs the JWS of every /v1 JSON answer
  (`responder.v1.jws`);
- the demo parties: a 署名検証者 (Act §17(1)), a 利用者証明検証者 (Act §36), a party
  holding both titles, a 団体署名検証者 (Act §17(5)) and two of its 署名確認者
  members, each with a client certificate, its key and a random bearer token.

Every private key and token file is created with mode 0600 and never logged.
Certificates are PEM. Paths in the manifest are relative to the directory.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crlbuilder import successor as succ
from crlbuilder.demo import democli
from crlbuilder.demo.certprofile import key_usage
from crlbuilder.demo.democli import DEFAULT_BASE_URL
from crlbuilder.keyref import is_pkcs11_uri
from crlbuilder.keys import oplog
from crlbuilder.keys.certsign import draft_certificate, with_signature
from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import (
    ANSWER_SIGNING_EKU,
    MANIFEST_NAME,
    IssuerFiles,
    Manifest,
    PartyFiles,
    dump_manifest,
    load_manifest,
)
from crlbuilder.model import Family
from crlbuilder.rules import JST

if TYPE_CHECKING:
    from crlbuilder.demo.softhsm import SoftHsmToken

__all__ = [
    "CA_LIFETIME",
    "DEFAULT_BASE_URL",
    "DEMO_PARTIES",
    "FIRST_GENERATION_START",
    "GENERATIONS",
    "MIN_KEY_SIZE",
    "ROLLOVER",
    "DemoParty",
    "PkiError",
    "add_cli",
    "ca_builder",
    "ca_subject",
    "init_pki",
    "issued_builder",
    "issuer_id",
    "issuer_index",
    "load_ca_certificate",
    "ocsp_signer_builder",
    "run_init",
    "write_private",
]

MIN_KEY_SIZE: Final = 2048
"""Ord §2, §38: RSA keys of 2048 bits or more."""

FIRST_GENERATION_START: Final = datetime(2015, 1, 1, tzinfo=JST).astimezone(UTC)
"""notBefore of every first-generation CA: before the synthetic population's first issuance."""

ROLLOVER: Final = datetime(2021, 4, 1, tzinfo=JST).astimezone(UTC)
"""notBefore of ``sign-card-g2``: from this instant the sign-card family issues from G2."""

CA_LIFETIME: Final = timedelta(days=30 * 365)
OCSP_SIGNER_LIFETIME: Final = timedelta(days=2 * 365)
TLS_LIFETIME: Final = timedelta(days=2 * 365)
BACKDATE: Final = timedelta(hours=1)
"""Short-lived certificates start an hour before ``now`` to absorb clock skew."""

ORGANIZATION: Final = "jpki-va demo"

GENERATIONS: Final[tuple[tuple[Family, int, datetime], ...]] = (
    (Family.SIGN_CARD, 1, FIRST_GENERATION_START),
    (Family.SIGN_CARD, 2, ROLLOVER),
    (Family.SIGN_MOBILE, 1, FIRST_GENERATION_START),
    (Family.AUTH_CARD, 1, FIRST_GENERATION_START),
    (Family.AUTH_MOBILE, 1, FIRST_GENERATION_START),
)
"""(family, generation, CA notBefore): the issuing CA generations of the demo PKI.

A generation issues from its CA's notBefore until the next generation's
(`crlbuilder.demo.synth` reads the notBefore back from the certificates).
"""
TOKEN_GENERATION: Final = (Family.SPECIFIED_VERIFIER_TOKEN, 1, FIRST_GENERATION_START)
"""The issuer of 特定利用者証明検証者証明符号 (Act §38-3), the manifest's ``token_issuer``: a
CA of its own (its key signs the tokens and its CRLs) with a delegated OCSP signer."""


@dataclass(frozen=True, slots=True)
class DemoParty:
    """A demo party (提供を受ける者) and its titles, as the registry will know it."""

    id: str
    name: str
    titles: tuple[str, ...]
    group: str | None = None


DEMO_PARTIES: Final = (
    DemoParty("sig-verifier", "デモ署名検証者 (demo signature verifier)", ("signature-verifier",)),
    DemoParty("auth-verifier", "デモ利用者証明検証者 (demo user verifier)", ("user-verifier",)),
    DemoParty(
        "both-verifier",
        "デモ署名・利用者証明検証者 (demo verifier holding both titles)",
        ("signature-verifier", "user-verifier"),
    ),
    DemoParty(
        "group-verifier",
        "デモ団体署名検証者 (demo group signature verifier)",
        ("group-signature-verifier",),
    ),
    DemoParty(
        "specified-verifier",
        "デモ特定利用者証明検証者 (demo specified user verifier)",
        ("user-verifier", "specified-user-verifier"),
    ),
    DemoParty(
        "member-1",
        "デモ署名確認者 1 (demo signature confirmer)",
        ("signature-confirmer",),
        "group-verifier",
    ),
    DemoParty(
        "member-2",
        "デモ署名確認者 2 (demo signature confirmer)",
        ("signature-confirmer",),
        "group-verifier",
    ),
)
"""Party ids are stable: `crlbuilder.demo.synth` writes consents to the signature verifiers."""


class PkiError(Exception):
    """The PKI cannot be created (directory not empty, key too small, ...)."""


# ---------------------------------------------------------------------------
# Names and ids
# ---------------------------------------------------------------------------


def issuer_id(family: Family, generation: int) -> str:
    """``sign-card-g2``: the stable id of an issuer generation in records and the manifest."""
    return f"{family.value}-g{generation}"


def issuer_index(family: Family, generation: int) -> int:
    """The compact store code of an issuer generation: ``family.code * 10 + generation`` (11..49)."""
    if not 1 <= generation <= 9:
        raise ValueError("generation must be 1..9")
    return family.code * 10 + generation


def _name(common_name: str, organization: str = ORGANIZATION) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ca_subject(family: Family, generation: int) -> x509.Name:
    """``CN=JPKI sign-card CA G1, O=jpki-va demo, C=JP``: distinct per generation."""
    return _name(f"JPKI {family.value} CA G{generation}")


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from the start (an existing file is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _CertKey(Protocol):
    """A key that certificates can be made for and signed with: a PEM key or a token key."""

    def public_key(self) -> rsa.RSAPublicKey: ...


@dataclass(frozen=True, slots=True)
class TokenKey:
    """A key generated inside a PKCS#11 token (Ord §74(3)): its reference and public half."""

    ref: str
    """RFC 7512 URI (``pkcs11:token=...;object=...;type=private?pin-source=file:...``)."""
    public: rsa.RSAPublicKey

    def public_key(self) -> rsa.RSAPublicKey:
        return self.public

    def certify(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """``builder``'s certificate signed in the token (CKM_SHA256_RSA_PKCS).

        `crlbuilder.keys.pkcs11.Pkcs11Signer` holds a certificate beside its key: while
        this key signs, it holds the draft it signs (a self-signed CA has no other yet).
        """
        from crlbuilder.keys.pkcs11 import Pkcs11Signer, module_path, parse_key_uri

        uri = parse_key_uri(self.ref)
        draft = draft_certificate(builder)
        signer = Pkcs11Signer(uri, draft, uri.read_pin(), module_path())
        return with_signature(draft, signer.sign(draft.tbs_certificate_bytes))


_SETUP: Final[dict[str, str | int]] = {
    "by": "crlbuilder pki init --keys softhsm (demo, no ceremony)"
}
"""What the operation log says of the demo's keys: made by the set-up, not by a two-operator
ceremony (`crlbuilder keys`, Ord §74(3)), which a production token's keys go through."""


def _signed(builder: x509.CertificateBuilder, key: _CertKey) -> x509.Certificate:
    """``builder``'s certificate signed sha256WithRSAEncryption by ``key``, wherever it lives."""
    if isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(key, hashes.SHA256())
    if isinstance(key, TokenKey):
        return key.certify(builder)
    raise TypeError(f"cannot sign with {type(key).__name__}")


def load_ca_certificate(manifest: Manifest, issuer: IssuerFiles) -> x509.Certificate:
    """The CA certificate of one issuer generation of a manifest."""
    return x509.load_pem_x509_certificate(manifest.path(issuer.cert).read_bytes())


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

_CA_USAGE: Final = key_usage("digital_signature", "key_cert_sign", "crl_sign")


def ca_builder(
    public_key: rsa.RSAPublicKey, subject: x509.Name, not_before: datetime, not_after: datetime
) -> x509.CertificateBuilder:
    """The self-signed issuing CA profile, unsigned (a key ceremony signs it in the token)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )


def _self_signed_ca(
    key: _CertKey, subject: x509.Name, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    return _signed(ca_builder(key.public_key(), subject, not_before, not_after), key)


def issued_builder(
    *,
    ca_cert: x509.Certificate,
    public_key: rsa.RSAPublicKey,
    subject: x509.Name,
    not_before: datetime,
    not_after: datetime,
    usage: x509.KeyUsage,
    eku: list[x509.ObjectIdentifier],
    extra: list[x509.ExtensionType] | None = None,
) -> x509.CertificateBuilder:
    """An end-entity certificate issued by ``ca_cert``, unsigned."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return builder


def _issued(
    *,
    ca_cert: x509.Certificate,
    ca_key: _CertKey,
    key: _CertKey,
    subject: x509.Name,
    not_before: datetime,
    not_after: datetime,
    usage: x509.KeyUsage,
    eku: list[x509.ObjectIdentifier],
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    builder = issued_builder(
        ca_cert=ca_cert,
        public_key=key.public_key(),
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        usage=usage,
        eku=eku,
        extra=extra,
    )
    return _signed(builder, ca_key)


def ocsp_signer_builder(
    ca_cert: x509.Certificate,
    public_key: rsa.RSAPublicKey,
    family: Family,
    generation: int,
    now: datetime,
) -> x509.CertificateBuilder:
    """The delegated OCSP signer profile of a CA generation (id-kp-OCSPSigning, ocsp-nocheck,
    RFC 6960 §4.2.2.2), unsigned: valid from an hour before ``now`` for `OCSP_SIGNER_LIFETIME`."""
    return issued_builder(
        ca_cert=ca_cert,
        public_key=public_key,
        subject=_name(f"JPKI {family.value} CA G{generation} OCSP signer"),
        not_before=now - BACKDATE,
        not_after=now + OCSP_SIGNER_LIFETIME,
        usage=key_usage("digital_signature"),
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        extra=[x509.OCSPNoCheck()],
    )


# ---------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------


def init_pki(
    out: Path,
    *,
    key_size: int = 2048,
    base_url: str = DEFAULT_BASE_URL,
    now: datetime | None = None,
    force: bool = False,
    keys: str = "pem",
) -> Manifest:
    """Create the demo PKI under ``out`` and return its manifest (also written as ``pki.json``).

    What it makes and refuses, as ``crlbuilder pki init --help`` says it:
    `crlbuilder.demo.democli.INIT_DESCRIPTION`.
    """
    if key_size < MIN_KEY_SIZE:
        raise PkiError(f"RSA keys must have {MIN_KEY_SIZE} bits or more (Ord §2, §38)")
    if keys not in ("pem", "softhsm"):
        raise PkiError(f"keys {keys!r}: pem or softhsm")
    if not base_url.startswith(("http://", "https://")):
        raise PkiError("base URL must start with http:// or https://")
    base_url = base_url.rstrip("/")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PkiError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PkiError(f"{out} exists and is not empty; refusing to overwrite (use --force)")
    out.mkdir(parents=True, exist_ok=True)
    token: SoftHsmToken | None = None
    if keys == "softhsm":
        from crlbuilder.demo.softhsm import SoftHsmError, init_token

        try:
            token = init_token(out / "softhsm")
        except SoftHsmError as e:
            raise PkiError(str(e)) from None
        # SoftHSM2 reads its configuration when the module is loaded, in this process too
        os.environ.update(token.env)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    short_start = now - BACKDATE

    def new_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)

    def signing_key(label: str, pem: str) -> tuple[rsa.RSAPrivateKey | TokenKey, str]:
        """A signing key: in the token when there is one (its URI), else a PEM file ``pem``."""
        if token is None:
            key = new_key()
            _write_key(out / pem, key)
            return key, pem
        from crlbuilder.keys.pkcs11 import generate_rsa_key

        ref = token.key_uri(label)
        public = generate_rsa_key(ref, key_size, module=token.module)
        oplog.record(token.oplog, "key-generated", key=ref, detail={"bits": key_size, **_SETUP})
        return TokenKey(ref, public), ref

    def write_cert(rel: str, cert: x509.Certificate, key_ref: str) -> None:
        """Write a certificate; one of a token key is recorded in the operation log."""
        _write_cert(out / rel, cert)
        if token is not None and is_pkcs11_uri(key_ref):
            oplog.record(
                token.oplog, "certificate-issued", key=key_ref,
                detail={"certificate": rel, "serial": f"{cert.serial_number:x}", **_SETUP},
            )  # fmt: skip

    issuers: list[IssuerFiles] = []
    cas: dict[str, tuple[x509.Certificate, rsa.RSAPrivateKey | TokenKey]] = {}
    for family, generation, start in (*GENERATIONS, TOKEN_GENERATION):
        iid = issuer_id(family, generation)
        ca_key, ca_key_ref = signing_key(f"ca-{iid}", f"ca/{iid}.key")
        ca_cert = _self_signed_ca(
            ca_key, ca_subject(family, generation), start, max(start, now) + CA_LIFETIME
        )
        signer_key, signer_key_ref = signing_key(f"ocsp-{iid}", f"ocsp/{iid}.key")
        signer = _signed(
            ocsp_signer_builder(ca_cert, signer_key.public_key(), family, generation, now), ca_key
        )
        files = IssuerFiles(
            id=iid,
            family=family,
            generation=generation,
            index=issuer_index(family, generation),
            cert=f"ca/{iid}.pem",
            key=ca_key_ref,
            ocsp_cert=f"ocsp/{iid}.pem",
            ocsp_key=signer_key_ref,
            crl_url=f"{base_url}/crl/{iid}.crl",
            delta_crl_url=f"{base_url}/crl/{iid}-delta.crl",
            ocsp_url=f"{base_url}/ocsp",
            live=True,
        )
        write_cert(files.cert, ca_cert, ca_key_ref)
        write_cert(files.ocsp_cert, signer, signer_key_ref)
        issuers.append(files)
        cas[iid] = (ca_cert, ca_key)
    token_issuer = issuers.pop()  # TOKEN_GENERATION: kept apart from the Act's four families
    client_ca_key = new_key()
    client_ca = _self_signed_ca(
        client_ca_key,
        _name("jpki-va demo client and TLS CA"),
        short_start,
        now + CA_LIFETIME,
    )
    _write_cert(out / "tls/client-ca.pem", client_ca)
    _write_key(out / "tls/client-ca.key", client_ca_key)

    server_key = new_key()
    server = _issued(
        ca_cert=client_ca,
        ca_key=client_ca_key,
        key=server_key,
        subject=_name("localhost"),
        not_before=short_start,
        not_after=now + TLS_LIFETIME,
        usage=key_usage("digital_signature", "key_encipherment"),
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        extra=[
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            )
        ],
    )
    _write_cert(out / "tls/server.pem", server)
    _write_key(out / "tls/server.key", server_key)

    relay_key, relay_key_ref = signing_key("group-responder", "tls/group-responder.key")
    relay = _issued(
        ca_cert=client_ca,
        ca_key=client_ca_key,
        key=relay_key,
        subject=_name("jpki-va demo group relay responder"),
        not_before=short_start,
        not_after=now + TLS_LIFETIME,
        usage=key_usage("digital_signature"),
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        extra=[x509.OCSPNoCheck()],
    )
    write_cert("tls/group-responder.pem", relay, relay_key_ref)

    answer_key, answer_key_ref = signing_key("answer-signer", "v1/answer-signer.key")
    answer = _issued(
        ca_cert=client_ca,
        ca_key=client_ca_key,
        key=answer_key,
        subject=_name("jpki-va demo answer signer"),
        not_before=short_start,
        not_after=now + TLS_LIFETIME,
        usage=key_usage("digital_signature"),
        eku=[x509.ObjectIdentifier(ANSWER_SIGNING_EKU)],
    )
    write_cert("v1/answer-signer.pem", answer, answer_key_ref)

    parties: list[PartyFiles] = []
    for party in DEMO_PARTIES:
        key = new_key()
        cert = _issued(
            ca_cert=client_ca,
            ca_key=client_ca_key,
            key=key,
            subject=_name(party.id, f"{ORGANIZATION} parties"),
            not_before=short_start,
            not_after=now + TLS_LIFETIME,
            usage=key_usage("digital_signature"),
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
            extra=[
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:jpki-va:party:{party.id}")]
                )
            ],
        )
        party_files = PartyFiles(
            id=party.id,
            name=party.name,
            titles=list(party.titles),
            cert=f"parties/{party.id}.pem",
            key=f"parties/{party.id}.key",
            token=f"parties/{party.id}.token",
            group=party.group,
        )
        _write_cert(out / party_files.cert, cert)
        _write_key(out / party_files.key, key)
        write_private(out / party_files.token, secrets.token_urlsafe(32).encode())
        parties.append(party_files)

    manifest = Manifest(
        key_size=key_size,
        base_url=base_url,
        issuers=issuers,
        client_ca="tls/client-ca.pem",
        client_ca_key="tls/client-ca.key",
        server_cert="tls/server.pem",
        server_key="tls/server.key",
        group_responder_cert="tls/group-responder.pem",
        group_responder_key=relay_key_ref,
        answer_cert="v1/answer-signer.pem",
        answer_key=answer_key_ref,
        parties=parties,
        token_issuer=token_issuer,
        directory=str(out.resolve()),
    )
    # each generation but a family's last has its successor named, with the successor
    # certificate a compromise needs, made as `crlbuilder.successor` makes it (in
    # production at the ceremony that follows the compromise)
    for n, files in enumerate(issuers):
        nxt = next((i for i in issuers[n + 1 :] if i.family is files.family), None)
        if nxt is None:
            continue
        try:
            plan = succ.plan(manifest, files.id, nxt.id)
            cert = succ.issue(manifest, plan)
        except (succ.SuccessorPlanError, SignerError) as e:
            raise PkiError(f"{files.id}: successor certificate: {e}") from None
        write_cert(plan.cert, cert, nxt.key)
        manifest = succ.named(manifest, plan)
    dump_manifest(manifest, out)
    return load_manifest(out / MANIFEST_NAME)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_cli(subparsers: Any) -> None:
    """``pki init`` (`crlbuilder.demo.democli.add_pki_cli`), run by `run_init`."""
    democli.add_pki_cli(subparsers, run_init)


def run_init(args: argparse.Namespace) -> int:
    """``crlbuilder pki init``: create the PKI and print where its manifest is."""
    try:
        manifest = init_pki(
            args.out,
            key_size=args.key_size,
            base_url=args.base_url,
            force=args.force,
            keys=args.keys,
        )
    except PkiError as e:
        print(f"crlbuilder pki init: error: {e}", file=sys.stderr)
        return 2
    ids = ", ".join(i.id for i in manifest.issuers)
    print(f"{manifest.path(MANIFEST_NAME)}: issuers {ids}; {len(manifest.parties)} parties")
    return 0
