"""`crlbuilder group init`: a group appliance's directory from what the group received, nothing more.

This module does it (and `crlbuilder group keys`); what it writes and refuses is the command's
description, `crlbuilder.group.initcli`'s docstring (``crlbuilder group init --help``), which
builds the commands' flags without importing this module.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.parse
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.deadlinehttp import (
    BodyRefused,
    Deadline,
    NoRedirects,
    loopback_host,
    opener,
    read_body,
)
from crlbuilder.group import answerkeys, initcli
from crlbuilder.group.setup import (
    SETUP_NAME,
    GroupIssuer,
    GroupSetup,
    GroupSetupError,
    IssuerId,
    dump_group_setup,
    load_group_setup,
)
from crlbuilder.keyref import is_pkcs11_uri
from crlbuilder.keys.signer import SignerError, load_signer
from crlbuilder.model import Family
from crlbuilder.tokenfile import TokenFileError, read_token_file

__all__ = [
    "CaEntry", "InitError", "add_cli", "add_keys_cli", "fetch_answer_keys", "fetch_ca_index",
    "init_group", "refresh_keys", "run_init", "run_keys",
]  # fmt: skip

KEYS: Final = "/v1/keys"
"""The 機構 appliance's public JWKS of its answer keys (`responder.v1.jws`)."""
CA_INDEX: Final = "/ca/index.json"
"""The 機構 appliance's public list of its issuers' CA certificates (`responder.app`)."""
MAX_INDEX_BYTES: Final = 1 << 20
TIMEOUT: Final = 30.0
"""Seconds one request to the 機構's public routes may take, whole (`_get`)."""
GROUP_SERVICES: Final = ("sign-revocation-info", "sign-crl-file", "sign-record-info")
"""What a group receives (Act §18(1)-(3), §20)."""


class InitError(Exception):
    """The group directory cannot be made; nothing was written."""


AppliancePath = Annotated[
    str, msgspec.Meta(pattern=r"^/[A-Za-z0-9._~-][A-Za-z0-9._~/-]*$", max_length=500)
]
"""A path on the 機構's appliance, appended to ``--authority``: it starts with one ``/`` and
holds no ``@``, ``:``, ``?``, ``#`` or ``\\``, so the URL it makes names the 機構's host (a
path like ``@elsewhere/x`` would make ``https://va.example@elsewhere/x``, and the pull
would send the group's token there)."""


class CaEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One issuer of the 機構's ``/ca/index.json``, as init accepts it: its id becomes a file
    name under ``ca/`` and its paths parts of URLs the group's token is sent to."""

    id: IssuerId
    family: Family
    generation: int
    cert: AppliancePath
    """Path of its PEM certificate on the 機構's appliance (``/ca/<id>.pem``)."""
    sha256: str
    crl: AppliancePath
    """Path of its full CRL (``/crl/<id>.crl``)."""
    delta_crl: AppliancePath
    successor_cert: AppliancePath | Literal[""] = ""
    """After a compromise of its key (Act §14): the successor certificate its CRLs verify with."""
    successor_sha256: str = ""


class CaIndex(msgspec.Struct, frozen=True, kw_only=True):
    issuers: list[CaEntry]


def _get(url: str, limit: int = MAX_INDEX_BYTES) -> bytes:
    """One GET of the 機構's public routes, over within `TIMEOUT` whole (connect to last byte,
    `crlbuilder.deadlinehttp`: a 機構 dripping its answer cannot hold init or keys). A redirect
    is not followed (what init pins, the CA certificates and the answer keys, comes from the
    address the operator gave, not from wherever that address points)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InitError(f"{url}: not an http(s) URL")
    deadline = Deadline(TIMEOUT)
    try:
        with opener(deadline, NoRedirects()).open(url) as r:
            return read_body(r, limit)
    except BodyRefused as e:  # over limit (announced or sent), or cut short
        raise InitError(f"{url}: {e}") from None
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise InitError(
                f"{url}: HTTP {e.code}, a redirect: not followed (give the 機構's address "
                "itself), nothing written"
            ) from None
        raise InitError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if deadline.passed or isinstance(reason, TimeoutError):
            raise InitError(
                f"{url}: not received whole within {TIMEOUT:g} s: cut, nothing written"
            ) from None
        raise InitError(f"{url}: cannot fetch: {reason}") from None


def fetch_ca_index(
    authority: str, successors: dict[str, x509.Certificate] | None = None
) -> list[tuple[CaEntry, x509.Certificate]]:
    """The 機構's issuers and their CA certificates, each checked against its listed SHA-256
    (successor certificates, when listed, go into ``successors`` by issuer id)."""
    successors = {} if successors is None else successors
    base = authority.rstrip("/")
    try:
        index = msgspec.json.decode(_get(base + CA_INDEX), type=CaIndex)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise InitError(f"{base}{CA_INDEX}: not a CA index: {e}") from None
    out = []
    for entry in index.issuers:
        try:
            cert = x509.load_pem_x509_certificate(_get(base + entry.cert))
        except ValueError as e:
            raise InitError(f"{base}{entry.cert}: not a PEM certificate: {e}") from None
        der = cert.public_bytes(Encoding.DER)
        if hashlib.sha256(der).hexdigest() != entry.sha256:
            raise InitError(f"{base}{entry.cert}: its SHA-256 is not the index's")
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise InitError(f"{base}{entry.cert}: not a CA certificate (basicConstraints)")
        if entry.successor_cert:
            try:
                succ = x509.load_pem_x509_certificate(_get(base + entry.successor_cert))
            except ValueError as e:
                raise InitError(
                    f"{base}{entry.successor_cert}: not a PEM certificate: {e}"
                ) from None
            if (
                hashlib.sha256(succ.public_bytes(Encoding.DER)).hexdigest()
                != entry.successor_sha256
            ):
                raise InitError(f"{base}{entry.successor_cert}: its SHA-256 is not the index's")
            successors[entry.id] = succ
        out.append((entry, cert))
    if not out:
        raise InitError(f"{base}{CA_INDEX}: lists no issuer")
    return out


def fetch_answer_keys(
    authority: str, pinned: dict[str, Any] | None = None, confirmed: list[str] | None = None
) -> bytes:
    """The 機構's ``/v1/keys``, checked (`answerkeys.refresh`: keys as the 機構 writes them;
    with ``pinned``, sharing a key with them or naming every ``confirmed`` kid)."""
    url = authority.rstrip("/") + KEYS
    raw = _get(url)
    try:
        answerkeys.refresh(pinned or {}, raw, confirmed or ())
    except answerkeys.RotationRefused as e:
        raise InitError(f"{url}: {e}") from None
    return raw


def _check_responder(cert_path: Path, key_ref: str) -> None:
    try:
        signer = load_signer(key_ref, cert_path)
    except (SignerError, OSError, ValueError) as e:
        raise InitError(f"responder key and certificate: {e}") from None
    try:
        eku = signer.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise InitError(f"{cert_path}: the responder certificate lacks the OCSP-signing purpose")


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(type(v).__name__)


def _tables(
    tables: list[tuple[str, dict[str, object]]], header: str, top: dict[str, object] | None = None
) -> str:
    lines = [f"# {h}" for h in header.splitlines()]
    lines += [f"{k} = {_toml(v)}" for k, v in (top or {}).items()]
    for name, fields in tables:
        lines += ["", name]
        lines += [f"{k} = {_toml(v)}" for k, v in fields.items() if v is not None]
    return "\n".join(lines) + "\n"


def registry_skeleton(args: argparse.Namespace) -> str:
    """The group's own registry: the group itself, with its member range and agreement."""
    title: dict[str, object] = {"kind": "group-signature-verifier", "group_kind": args.group_kind}
    if args.member:
        title["members"] = sorted(set(args.member))
    if args.member_prefix:
        title["member_prefix"] = args.member_prefix
    return _tables(
        [
            ("[[party]]", {"id": args.group_id, "name": args.name}),
            (
                "[party.notification]",
                {
                    "address": args.address,
                    "representative": args.representative,
                    "office": args.office,
                    "start": args.start,
                },
            ),
            ("[[party.title]]", title),
            (
                "[party.agreement]",
                {
                    "services": list(GROUP_SERVICES),
                    "families": ["sign-card", "sign-mobile"],
                    "methods": ["ocsp", "crl-file", "json"],
                    "crl_cycle_seconds": args.cycle,
                    "liability": args.liability,
                    "member_answer": args.member_answer,
                },
            ),
        ],
        "The group appliance's registry (団体署名検証者, Act §17(5)): written by "
        "`crlbuilder group init`.\nAdd members (署名確認者) within the range with `responder "
        "registry add --title signature-confirmer\n--group <group id> ...`; refuse one "
        "(Act §20(2)) with `responder registry suspend --article 'Act §20(2)(N)'`.",
        top={"version": 2},
    )


def responder_toml(out: Path, port: int, metrics_port: int, unlisted: str) -> str:
    return _tables(
        [
            ("[server]", {"hosts": ["127.0.0.1"], "port": port}),
            ("[store]", {"path": str(out / "store")}),
            ("[registry]", {"path": str(out / "registry.toml")}),
            ("[ledger]", {"dir": str(out / "ledger")}),
            ("[metrics]", {"port": metrics_port}),
            ("[group]", {"file": str(out / SETUP_NAME), "unlisted": unlisted}),
        ],
        "The group appliance's responder (group mode): written by `crlbuilder group init`.\n"
        "responder serve --config THIS_FILE",
    )


def init_group(args: argparse.Namespace) -> GroupSetup:
    """Make ``args.out`` (module docstring); InitError leaves nothing behind."""
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        raise InitError(f"{out}: exists and is not empty (a group directory is made once)")
    authority = urllib.parse.urlsplit(args.authority)
    if authority.scheme == "http" and not loopback_host(authority.hostname):
        raise InitError(
            f"{args.authority}: plain http to a host other than loopback: the CA certificates "
            "and the answer keys would be fetched, and the group's token sent, in clear; give "
            "the 機構's https address"
        )
    cert_path: Path = args.responder_cert.resolve()
    key_ref = str(args.responder_key)
    if not is_pkcs11_uri(key_ref):
        key_ref = str(Path(key_ref).resolve())
    _check_responder(cert_path, key_ref)
    try:  # the operator's copy is checked as the group's own (a regular file, 0600)
        token = read_token_file(args.token_file)
    except TokenFileError as e:
        raise InitError(f"--token-file {e}") from None
    successors: dict[str, x509.Certificate] = {}
    cas = fetch_ca_index(args.authority, successors)
    keys = fetch_answer_keys(args.authority, confirmed=args.answer_kid)
    pins = {p.lower() for p in args.ca_sha256 or []}
    if pins:
        # every certificate CRLs will be verified with: a successor's key signs its
        # generation's CRLs after a compromise (Act §14), so it is pinned as well
        got = {entry.id: entry.sha256 for entry, _ in cas}
        got |= {f"{e.id}'s successor": e.successor_sha256 for e, _ in cas if e.id in successors}
        unpinned = [who for who, sha in got.items() if sha not in pins]
        if unpinned:
            raise InitError(
                f"not one of --ca-sha256: the certificate of {', '.join(unpinned)} as served "
                f"({', '.join(got[w] for w in unpinned)}): refused"
            )
        if unserved := sorted(pins - set(got.values())):
            raise InitError(
                f"--ca-sha256 {', '.join(unserved)}: no such certificate served by the 機構: "
                "refused"
            )
    base = args.authority.rstrip("/")
    issuers = [
        GroupIssuer(
            id=entry.id,
            family=entry.family,
            generation=entry.generation,
            index=n,
            cert=f"ca/{entry.id}.pem",
            sha256=entry.sha256,
            crl_url=base + entry.crl,
            delta_crl_url=base + entry.delta_crl,
            successor_cert=f"ca/{entry.id}-successor.pem" if entry.id in successors else "",
            successor_sha256=entry.successor_sha256 if entry.id in successors else "",
        )
        for n, (entry, _) in enumerate(cas, start=1)
    ]
    setup = GroupSetup(
        group_id=args.group_id,
        authority=base,
        token_file="authority.token",
        cycle_seconds=args.cycle,
        responder_cert="group.pem",
        responder_key=key_ref,
        issuers=issuers,
        answer_keys=answerkeys.KEYS_NAME,
    )
    created = not out.exists()
    try:
        (out / "ca").mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        for entry, cert in cas:
            (out / "ca" / f"{entry.id}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
            if entry.id in successors:
                (out / "ca" / f"{entry.id}-successor.pem").write_bytes(
                    successors[entry.id].public_bytes(Encoding.PEM)
                )
        shutil.copyfile(cert_path, out / "group.pem")
        answerkeys.write(out, keys)
        fd = os.open(out / "authority.token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        (out / "registry.toml").write_text(registry_skeleton(args), encoding="utf-8")
        (out / "responder.toml").write_text(
            responder_toml(out, args.port, args.metrics_port, args.unlisted), encoding="utf-8"
        )
        dump_group_setup(setup, out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return setup


def add_cli(subparsers: Any) -> None:
    """The command's flags (`crlbuilder.group.initcli.add_cli`), run by `run_init`."""
    initcli.add_cli(subparsers, run_init)


def run_init(args: argparse.Namespace) -> int:
    """0 made, 1 refused (nothing written), 2 bad usage."""
    if not args.member and not args.member_prefix:
        print(
            "crlbuilder group init: error: the member range (署名確認者の範囲, Ord §32(4)): "
            "give --member or --member-prefix",
            file=sys.stderr,
        )
        return 2
    try:
        setup = init_group(args)
    except InitError as e:
        print(f"crlbuilder group init: error: {e}", file=sys.stderr)
        return 1
    out = args.out.resolve()
    print(f"made {out}:", file=sys.stderr)
    for i in setup.issuers:
        print(f"  {i.id}: CA certificate SHA-256 {i.sha256}", file=sys.stderr)
        if i.successor_cert:
            print(f"  {i.id}: successor certificate SHA-256 {i.successor_sha256}", file=sys.stderr)
    _print_kids(setup, out)
    print(
        f"compare the fingerprints with the ones the 機構 published, then:\n"
        f"  crlbuilder group pull --group {out} --follow\n"
        f"  responder serve --config {out / 'responder.toml'}\n"
        f"members trust {out / 'group.pem'} (openssl ocsp -VAfile)",
        file=sys.stderr,
    )
    return 0


def _print_kids(setup: GroupSetup, out: Path) -> None:
    raw = (out / setup.answer_keys).read_bytes()
    for kid in answerkeys.parse_jwks(raw):
        print(f"  the 機構's answer key pinned: kid {kid}", file=sys.stderr)


def refresh_keys(group: Path, confirmed: list[str] | None = None) -> tuple[set[str], set[str]]:
    """`crlbuilder group keys`: the 機構's ``/v1/keys`` pinned anew in the group directory
    (`answerkeys.refresh`: taken on the word of a key pinned now, or of ``confirmed``); the
    kids added and dropped. InitError (GroupSetupError: no group there): nothing written."""
    setup = load_group_setup(group)
    pinned: dict[str, Any] = {}
    if setup.answer_keys:
        try:
            pinned = dict(answerkeys.parse_jwks(setup.path(setup.answer_keys).read_bytes()))
        except (OSError, ValueError) as e:
            if not confirmed:  # nothing to take a new set on the word of
                raise InitError(
                    f"{setup.path(setup.answer_keys)}: the pinned keys are not readable ({e}): "
                    "give --answer-kid with the key ids received from the 機構 out of band"
                ) from None
    raw = fetch_answer_keys(setup.authority, pinned, confirmed)
    served = answerkeys.parse_jwks(raw)
    answerkeys.write(Path(setup.directory), raw)
    if setup.answer_keys != answerkeys.KEYS_NAME:
        setup.answer_keys = answerkeys.KEYS_NAME
        dump_group_setup(setup, setup.directory)
    return set(served) - set(pinned), set(pinned) - set(served)


def add_keys_cli(subparsers: Any) -> None:
    """The command's flags (`crlbuilder.group.initcli.add_keys_cli`), run by `run_keys`."""
    initcli.add_keys_cli(subparsers, run_keys)


def run_keys(args: argparse.Namespace) -> int:
    """0 pinned, 1 refused (nothing written), 2 no group directory there (its group.json)."""
    try:
        added, dropped = refresh_keys(args.group, args.answer_kid)
    except GroupSetupError as e:
        print(f"crlbuilder group keys: error: {e}", file=sys.stderr)
        return 2
    except InitError as e:
        print(f"crlbuilder group keys: error: {e}", file=sys.stderr)
        return 1
    for kid in sorted(added):
        print(f"pinned the 機構's answer key {kid}", file=sys.stderr)
    for kid in sorted(dropped):
        print(f"dropped the 機構's answer key {kid} (no longer published)", file=sys.stderr)
    if not added and not dropped:
        print("the 機構's answer keys are unchanged", file=sys.stderr)
    return 0
