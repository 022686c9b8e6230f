"""The audit log's pseudonym key: its file, and the keyed hash of a personal field's value.

The registry's audit log (動作の記録, Ord §73(3); `responder.registry.audit`) keeps a party's
name, address, representative and office as a hash only. An unsalted SHA-256 of a natural
person's name is recovered by hashing candidate names until one matches; a keyed hash
(HMAC-SHA256) cannot be tried without the key. The key is 32 random bytes, written as 64 hex
digits to a file of mode 0600 (``registry.audit.secret`` beside the registry unless
``--audit-key``: named as the watch secret is, since it signs nothing and the project's
``*.key`` files are certificates' private keys), drawn by `registry init` or by the first
change that needs it, and refused when group or others may read it (`crlbuilder.secretmode`,
as the project's other secrets).
It is never logged: a line names it by its id only, an HMAC of a fixed label under the key
(`AuditKey.key_id`), so an auditor can tell which key a line was written with.

An auditor holding the key checks a value against the log: ``hmac-sha256:`` followed by
HMAC-SHA256(key, the value's UTF-8 bytes) in hex, what `AuditKey.pseudonym` gives and
``responder registry audit-hash`` prints (the value read from standard input, so that it is
in no shell history or process list); ``openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY``
gives the same hex.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from crlbuilder.secretmode import too_open

KEY_BYTES: Final = 32
PREFIX: Final = "hmac-sha256:"
"""A keyed value in the log; the unkeyed values of lines written before are ``sha256:``."""
_KEY_ID_LABEL: Final = b"jpki-va registry audit key id"


class AuditKeyError(Exception):
    """The key file cannot be used (its mode, its content, or it cannot be read or made)."""


class AuditKey:
    """The key; its bytes stay in this object (never printed, never in a message)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an audit key is {KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return f"AuditKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        """Names the key in the log without revealing it: 16 hex digits of an HMAC of a label."""
        return hmac.new(self._key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def pseudonym(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of ``value``: the same value under the same key, the same text."""
        return PREFIX + hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()


def key_path_for(registry: Path) -> Path:
    """The default key beside a registry: ``registry.toml`` -> ``registry.audit.secret``."""
    return registry.with_name(registry.stem + ".audit.secret")


def load_key(path: Path, *, create: bool) -> AuditKey:
    """The key in ``path``; drawn and written (0600) first when absent and ``create``.

    Raises AuditKeyError when the file may be read by group or others, is not 64 hex digits,
    or cannot be read or made."""
    if create:
        _create(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise AuditKeyError(f"{path}: no audit key") from None
    except OSError as e:
        raise AuditKeyError(f"{path}: cannot read the audit key: {e.strerror}") from None
    except UnicodeDecodeError:
        raise AuditKeyError(f"{path}: the audit key must be {2 * KEY_BYTES} hex digits") from None
    if too_open(path, stat.S_IMODE(st.st_mode)):
        raise AuditKeyError(
            f"{path}: the audit key must be readable by its owner only (chmod 0600)"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"{path}: the audit key must be {2 * KEY_BYTES} hex digits")
    return AuditKey(key)


def _create(path: Path) -> None:
    """Write a fresh key to ``path`` unless one is there: whole under a private name, then
    linked in place, so a racing command reads either no key or the whole of one."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another command drew it first: read that
            os.link(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise AuditKeyError(f"{path}: cannot write the audit key: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
