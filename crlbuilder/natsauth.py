"""How a node proves who it is to the NATS cluster, and encrypts what it sends there.

Two methods, each alone or both together (nats-server then checks both):

- an NKey user seed file (``nkey_seed``): the server sends a nonce, the client signs it with
  the Ed25519 seed, and the server knows the user by its public key (``SU...`` seed, its
  ``U...`` public key in the server's ``authorization { users = [ {nkey: U...} ] }``). The
  seed never crosses the wire.
- TLS (``tls_ca``, and ``tls_cert`` + ``tls_key`` for a client certificate): the server's
  certificate is checked against the CA file, and with ``verify: true`` (or
  ``verify_and_map``) the server asks for and checks the client's.

A secret file (the seed, the client key) must be a regular file readable by its owner only
(0600; a systemd credential as `crlbuilder.secretmode` says), as the project's other secret
files; it is checked and read when the configuration is
resolved (`resolve`), never logged, and an error names the file and what is wrong, never its
content. No credential at all: refused unless every server is on this host's loopback (a test
or a single host's own server), then `resolve` gives a warning line to say so.

Configuration: ``[stream]`` of crlbuilder's file, ``[cluster]`` of the responder's, keys
``nats_nkey_seed``, ``nats_tls_ca``, ``nats_tls_cert``, ``nats_tls_key``; the environment
variables ``JPKI_VA_NATS_NKEY_SEED``, ``JPKI_VA_NATS_TLS_CA``, ``JPKI_VA_NATS_TLS_CERT``,
``JPKI_VA_NATS_TLS_KEY`` win over them, and are all the commands without a configuration file
(``responder registry ... --nats``, ``responder watch-compact``) read. ``JPKI_VA_NATS_INBOX``
(environment only) is the user's own inbox prefix, where its replies arrive: the servers of
deploy/nats let each user read below its own prefix only (`crlbuilder.natsconfig`).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from crlbuilder.natsservers import is_loopback, parse_servers
from crlbuilder.secretmode import too_open

if (
    TYPE_CHECKING
):  # imported when a TLS context is made: not by every command that reads a configuration
    import ssl

ENV: Final = {
    "nkey_seed": "JPKI_VA_NATS_NKEY_SEED",
    "tls_ca": "JPKI_VA_NATS_TLS_CA",
    "tls_cert": "JPKI_VA_NATS_TLS_CERT",
    "tls_key": "JPKI_VA_NATS_TLS_KEY",
    "inbox": "JPKI_VA_NATS_INBOX",
}
"""The environment variable of each field (it wins over the configuration's)."""


_INBOX: Final = re.compile(r"_INBOX_[A-Za-z0-9_-]{1,160}")
"""An inbox prefix: one subject token (no ``.``, no wildcard), a user's own."""


class NatsAuthError(ValueError):
    """A NATS credential cannot be used; the message names the file and why, never content."""


@dataclass(frozen=True)
class NatsAuth:
    """Paths of the credential files (empty: not used), and the inbox prefix of the NATS
    user (empty: nats-py's ``_INBOX``)."""

    nkey_seed: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    inbox: str = ""
    """The user's own inbox prefix, ``_INBOX_<role>[_<node>]`` (`crlbuilder.natsconfig`): the
    servers let each user subscribe below its own only, so no user reads another's replies."""

    def with_environ(self, environ: Mapping[str, str] | None = None) -> NatsAuth:
        """These fields, each replaced by its environment variable (`ENV`) when that is set."""
        env = os.environ if environ is None else environ
        return replace(self, **{f: env[v] for f, v in ENV.items() if env.get(v)})

    @property
    def empty(self) -> bool:
        """No credential and no TLS configured."""
        return not (self.nkey_seed or self.tls_ca or self.tls_cert or self.tls_key)


@dataclass(frozen=True)
class ConnectOptions:
    """What `crlbuilder.jetstream` passes to nats-py's ``connect`` (and nothing to log)."""

    kwargs: dict[str, Any]
    warning: str = ""
    """A line to log once: no credential, accepted because every server is on loopback."""

    def __repr__(self) -> str:  # the seed is in kwargs: never in a traceback or a log
        return f"ConnectOptions(keys={sorted(self.kwargs)}, warning={self.warning!r})"


def resolve(auth: NatsAuth, servers: list[str]) -> ConnectOptions:
    """The connection options for ``servers`` under ``auth``, files checked and read.

    Raises `NatsAuthError`: a file unreadable, not a regular file, a secret file readable by
    group or others, a seed that is not an NKey user seed, a certificate without its key (or
    the reverse), TLS files that do not load, or no credential for a server off loopback.
    """
    kwargs: dict[str, Any] = {}
    if auth.nkey_seed:
        seed = _read_secret(auth.nkey_seed, "the NATS NKey seed")
        if not (seed.startswith("SU") and len(seed) == 58 and seed.isalnum()):
            raise NatsAuthError(
                f"{auth.nkey_seed}: not an NKey user seed (one line, 58 characters, SU...)"
            )
        kwargs["nkeys_seed_str"] = seed
    if bool(auth.tls_cert) != bool(auth.tls_key):
        raise NatsAuthError("a NATS client certificate needs both nats_tls_cert and nats_tls_key")
    if auth.tls_ca or auth.tls_cert:
        kwargs["tls"] = _tls_context(auth)
    if auth.inbox:
        kwargs["inbox_prefix"] = _inbox(auth.inbox)
    warning = ""
    if not auth.nkey_seed and not auth.tls_cert:
        off = [s for s in servers if not is_loopback(s)]
        if off:
            raise NatsAuthError(
                f"no NATS credential for {','.join(off)}: set nats_nkey_seed (an NKey seed "
                "file, 0600) or nats_tls_cert and nats_tls_key (a client certificate), or "
                "JPKI_VA_NATS_NKEY_SEED"
            )
        warning = "NATS: no credential configured; anonymous connection accepted on loopback only"
    return ConnectOptions(kwargs, warning)


def _inbox(value: str) -> str:
    """The inbox prefix ``value`` names: ``_INBOX_`` and a user's name, whose characters other
    than A-Z a-z 0-9 _ - become ``-`` as a host name's do in its node's name
    (`responder.ledgerstream.default_node`: a unit's ``_INBOX_<role>_%H`` on the host
    ``n1.example.jp`` is the node ``n1-example-jp``'s); `NatsAuthError` when it is not one."""
    name = value.removeprefix("_INBOX_")
    inbox = "_INBOX_" + re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if name == value or not _INBOX.fullmatch(inbox):
        raise NatsAuthError(
            f"NATS inbox prefix {value[:80]!r}: not _INBOX_ and a user's name (at most 160 of "
            "A-Z a-z 0-9 _ -, as `crlbuilder nats-config` writes it beside each user)"
        )
    return inbox


def new_user_seed(path: Path) -> str:
    """Write a new NKey user seed to ``path`` (created 0600; an existing file is not replaced:
    `FileExistsError`) and return its public key (``U...``), which the server's configuration
    names (deploy/nats/jpki-va-auth.conf)."""
    import nkeys  # type: ignore[import-untyped,unused-ignore]  # nats-py's NKey library

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode("ascii"))


def check_credential(auth: NatsAuth, source: str) -> ConnectOptions:
    """`resolve` for the server list as configured (``nats://h:p,h:p``), the environment's
    paths winning: what a configuration loader calls to refuse a credential before any
    connection (`NatsAuthError`)."""
    return resolve(auth.with_environ(), parse_servers(source))


def _check_owner_only(path: str, what: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as e:
        raise NatsAuthError(f"{path}: cannot read {what}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NatsAuthError(f"{path}: {what} is not a regular file")
    if too_open(Path(path), stat.S_IMODE(st.st_mode)):  # a systemd credential's ACL mask aside
        raise NatsAuthError(f"{path}: {what} must be readable by its owner only (chmod 600)")
    return st


def _read_secret(path: str, what: str) -> str:
    _check_owner_only(path, what)
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError as e:
        raise NatsAuthError(f"{path}: cannot read {what}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise NatsAuthError(f"{path}: {what} is not ASCII") from None


def _tls_context(auth: NatsAuth) -> ssl.SSLContext:
    import ssl

    for path, what in (
        (auth.tls_ca, "the NATS CA file"),
        (auth.tls_cert, "the NATS client certificate"),
    ):
        if path and not os.access(path, os.R_OK):
            raise NatsAuthError(f"{path}: cannot read {what}")
    if auth.tls_key:
        _check_owner_only(auth.tls_key, "the NATS client key")
    try:
        ctx = ssl.create_default_context(cafile=auth.tls_ca or None)
    except (OSError, ssl.SSLError) as e:
        raise NatsAuthError(f"{auth.tls_ca}: not a CA certificate file ({_why(e)})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if auth.tls_cert:
        try:
            ctx.load_cert_chain(auth.tls_cert, auth.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise NatsAuthError(
                f"{auth.tls_cert}: the NATS client certificate and key do not load ({_why(e)})"
            ) from None
    return ctx


def _why(e: OSError | ssl.SSLError) -> str:
    return str(getattr(e, "reason", None) or e.strerror or type(e).__name__)
