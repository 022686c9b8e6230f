"""The four facts at rest: AES-GCM sealing (封印) and the key that seals them, for both binaries.

The store keeps each sign certificate's four facts (基本4情報, Act §7(1)(3)) sealed, so
that nothing personal lies in it in clear (Act §44, §45). crlbuilder seals them when it
applies an issuance record (`crlbuilder.apply`); the responder opens them only to
answer a request for 特定署名用電子証明書記録情報 (Act §18(3), `responder.v1.recordinfo`).
This module owns the cipher (`FactsCipher`) and the reading of its key
(`read_facts_key`: ``JPKI_VA_FACTS_KEY``, else a file of 64 hex digits, mode 0600), so
the two binaries cannot drift apart. The key and the facts are never logged.

Both commands take ``JPKI_VA_FACTS_KEY`` out of their environment first thing
(`take_facts_key`, `crlbuilder.envsecret`): no program they start (a responder worker's
signing processes) inherits it, and their forked children (the responder's workers, which
open the facts; the builder's signing processes) hold it only as the memory they copy, never
in their environment. `read_facts_key` reads the key taken.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from crlbuilder import envsecret
from crlbuilder.model import FourFacts
from crlbuilder.options import ConfigError
from crlbuilder.secretmode import too_open

FACTS_KEY_ENV: Final = "JPKI_VA_FACTS_KEY"
"""The environment variable holding the key itself (64 hex digits): it wins over a file."""

_taken: str | None = None
"""``JPKI_VA_FACTS_KEY`` as `take_facts_key` took it out of the environment (None: not set)."""

_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
"""AES-GCM's tag, after the ciphertext."""
_facts_encoder: Final = msgspec.msgpack.Encoder()
_facts_decoder: Final = msgspec.msgpack.Decoder(FourFacts)


class FactsCipher:
    """AES-GCM sealing of the four facts (基本4情報) kept for 特定署名用電子証明書記録情報 (Act §18(3)).

    The nonce is derived from the certificate's key with a separate HMAC key:
    a certificate's facts never change, so each (key, nonce) pair seals one
    plaintext only, and rebuilding the store gives identical bytes. The status key
    is the associated data: sealed facts moved under another certificate do not open.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the facts key must be 32 bytes (AES-256)")
        # imported here, not at the top: `take_facts_key` runs at every command's start
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(hmac.new(key, b"jpki-va facts aead", hashlib.sha256).digest())
        nonce_key = hmac.new(key, b"jpki-va facts nonce", hashlib.sha256).digest()
        # HMAC-SHA256 under the nonce key (RFC 2104) with its two padded-key blocks hashed
        # once: each nonce then costs two hash copies, not an HMAC set up (an OpenSSL
        # digest fetch) per certificate. The same bytes as hmac.new(nonce_key, ...).
        self._nonce_inner = hashlib.sha256(bytes(b ^ 0x36 for b in nonce_key.ljust(64, b"\0")))
        self._nonce_outer = hashlib.sha256(bytes(b ^ 0x5C for b in nonce_key.ljust(64, b"\0")))

    def __repr__(self) -> str:
        return "FactsCipher(<key not shown>)"

    def seal(self, status_key: bytes, facts: FourFacts) -> bytes:
        inner = self._nonce_inner.copy()
        inner.update(status_key)
        outer = self._nonce_outer.copy()
        outer.update(inner.digest())
        nonce = outer.digest()[:12]  # HMAC-SHA256(nonce key, status key), first 12 bytes
        return nonce + self._aead.encrypt(nonce, _facts_encoder.encode(facts), status_key)

    def open(self, status_key: bytes, sealed: bytes) -> FourFacts:
        """The facts sealed under ``status_key``; `cryptography.exceptions.InvalidTag` when
        the key, the status key or the bytes do not match, a value cut short included (one
        shorter than a nonce and a tag: AESGCM raised `ValueError` for a nonce under 8 bytes,
        which a caller refusing what does not open did not expect)."""
        if len(sealed) < _NONCE_BYTES + _TAG_BYTES:
            from cryptography.exceptions import InvalidTag

            raise InvalidTag
        return _facts_decoder.decode(self._aead.decrypt(sealed[:12], sealed[12:], status_key))


def take_facts_key() -> None:
    """Take ``JPKI_VA_FACTS_KEY`` out of this process's environment, keeping it for
    `read_facts_key` (both commands' ``main``, before anything starts a process)."""
    global _taken
    value = envsecret.take(FACTS_KEY_ENV)
    if value is not None:
        _taken = value


def facts_key_given(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``JPKI_VA_FACTS_KEY`` was given: in ``environ`` (default: this process's
    environment, or as `take_facts_key` took it from there)."""
    return bool(_from_environ(environ))


def _from_environ(environ: Mapping[str, str] | None) -> str:
    if environ is not None:
        return environ.get(FACTS_KEY_ENV, "")
    return os.environ.get(FACTS_KEY_ENV, "") or _taken or ""


def read_facts_key(
    path: Path | None, *, field: str, environ: Mapping[str, str] | None = None
) -> bytes:
    """The AES-256 key sealing the four facts: ``JPKI_VA_FACTS_KEY`` (from ``environ``, by
    default this process's environment or as `take_facts_key` took it), else the file
    ``path`` (the configuration field ``field`` names it).

    Raises `ConfigError` naming where it looked (never the key): no key, an unreadable
    file, a file readable by group or others, or not 64 hex digits.
    """
    env = os.environ if environ is None else environ
    raw = _from_environ(environ)
    origin = FACTS_KEY_ENV
    if not raw:
        if path is None:
            raise ConfigError(
                "<configuration>",
                field,
                f"no facts key: set it (a file of 64 hex digits, mode 0600) or {FACTS_KEY_ENV}",
            )
        origin = str(path)
        try:
            st = path.stat()
            raw = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not ASCII"
            raise ConfigError(origin, "", f"cannot read the facts key ({why})") from None
        if too_open(path, st.st_mode, env):
            raise ConfigError(
                origin, "", "the facts key file must not be readable by group or others (chmod 600)"
            )
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(origin, "", "the facts key must be 64 hex digits (32 bytes)")
    return key
