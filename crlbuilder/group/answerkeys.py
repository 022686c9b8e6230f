"""The 機構's answer keys a group pinned, and the check of a relayed answer's signature against them.

The 機構 signs every /v1 answer that provides information with a detached JWS
(``JWS-Signature``: RFC 7515 §7.1 compact serialization, the payload left out as in
appendix F, ``b64`` true: the signing input is the header segment, ".", and the
BASE64URL of the body exactly as sent; ``alg`` RS256, ``kid`` the key's RFC 7638
thumbprint, ``typ`` ``jpki-va-answer+jws``) and publishes its keys at ``GET /v1/keys`` (a
JWKS: the key signing now, then any published for a rollover; `responder.v1.jws`). A group
(団体署名検証者) passes the 機構's record-information answers on to its members (Act
§20(5)); before it does, it checks each one's signature with the keys it pinned, so a
substituted or altered answer is never passed on as the 機構's.

Pinning: ``crlbuilder group init`` fetches ``/v1/keys`` from the 機構 and writes it, as
received and checked (`parse_jwks`), to `KEYS_NAME` beside ``group.json``, which names it
(``answer_keys``); ``--answer-kid`` pins the key ids the group received out of band
(each must be served). Rotation (`refresh`, ``crlbuilder group keys --group DIR``): the
keys served now replace the pinned set only when they include a key pinned now (the 機構
publishes its next key beside the current one before it signs with it, so a group that
refreshes during that overlap takes the new key on the word of the old set; the old key
stays pinned while it is published, and answers signed with either verify), or a key id
given with ``--answer-kid``; a set sharing no key with the pinned one is refused, nothing
written (a new set on its own word is not trusted).

`PinnedKeys` is the relay's view: the file read again when it changes on disk (a
refresh takes effect with the next answer, no restart), and `verify` (pure: the
signature, the body, the keys) says why an answer fails, or None.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from crlbuilder import atomicfile

__all__ = ["KEYS_NAME", "PinnedKeys", "RotationRefused", "parse_jwks", "refresh", "verify"]

KEYS_NAME: Final = "kikou-keys.json"
"""The pinned JWKS, beside ``group.json``."""
ALG: Final = "RS256"
TYP: Final = "jpki-va-answer+jws"
MAX_KEYS: Final = 16
MIN_BITS: Final = 2048
_MAX_HEADER: Final = 8192
_MAX_PAYLOAD: Final = 1 << 20


class RotationRefused(Exception):
    """The keys served cannot be pinned (the message says why); nothing was written."""


class _Jwk(msgspec.Struct, frozen=True):
    kty: str
    n: str
    e: str
    kid: str
    alg: str = ALG
    use: str = "sig"


class _Jwks(msgspec.Struct, frozen=True):
    keys: list[_Jwk]


def _registry() -> JWSRegistry:
    reg = JWSRegistry(algorithms=[ALG])
    reg.max_header_length = _MAX_HEADER  # the header carries the certificate (x5c)
    reg.max_payload_length = _MAX_PAYLOAD
    return reg


def parse_jwks(raw: bytes) -> dict[str, RSAKey]:
    """The RSA signature keys of a JWKS by ``kid`` (ValueError naming what is wrong): each
    ``kty`` RSA, ``alg`` RS256, ``use`` sig, of at least `MIN_BITS` bits, its ``kid`` its
    RFC 7638 thumbprint (so a kid names one key only), at least one, at most `MAX_KEYS`."""
    try:
        got = msgspec.json.decode(raw, type=_Jwks)
    except msgspec.DecodeError as e:
        raise ValueError(f"not a JWKS of the 機構's answer keys: {e}") from None
    if not 1 <= len(got.keys) <= MAX_KEYS:
        raise ValueError(f"a JWKS of 1 to {MAX_KEYS} keys expected, got {len(got.keys)}")
    keys: dict[str, RSAKey] = {}
    for i, k in enumerate(got.keys):
        if (k.kty, k.alg, k.use) != ("RSA", ALG, "sig"):
            raise ValueError(f"keys[{i}]: not an RSA {ALG} signature key")
        try:
            key = RSAKey.import_key({"kty": "RSA", "n": k.n, "e": k.e})
        except (JoseError, ValueError, TypeError) as e:
            raise ValueError(f"keys[{i}]: not an RSA public key ({e})") from None
        public = key.public_key
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < MIN_BITS:
            raise ValueError(f"keys[{i}]: an RSA key of at least {MIN_BITS} bits expected")
        if key.thumbprint() != k.kid:
            raise ValueError(f"keys[{i}]: its kid is not its RFC 7638 thumbprint")
        keys[k.kid] = key
    return keys


def _header(signature: str) -> dict[str, Any]:
    head = signature.split(".", 1)[0]
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, msgspec.DecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def verify(signature: str, body: bytes, keys: Mapping[str, RSAKey]) -> str | None:
    """Why the detached JWS ``signature`` over ``body`` is not the 機構's by one of ``keys``
    (a header that is not RS256 of the answer type, a kid not pinned, a signature that does
    not verify), or None when it is. Pure."""
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        return "its JWS-Signature is not a detached compact JWS"
    header = _header(signature)
    if header.get("alg") != ALG or header.get("typ") != TYP:
        return f"its JWS-Signature is not an {ALG} {TYP}"
    if set(header) - {"alg", "kid", "typ", "x5c"}:
        return "its JWS-Signature header has fields the 機構 does not write"
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return "its JWS-Signature names a key the group has not pinned (crlbuilder group keys)"
    try:
        jws.deserialize_compact(signature, key, payload=body, registry=_registry())
    except (JoseError, ValueError) as e:
        return f"its JWS-Signature does not verify ({type(e).__name__})"
    return None


def refresh(
    pinned: Mapping[str, RSAKey], served_raw: bytes, confirmed: Iterable[str] = ()
) -> dict[str, RSAKey]:
    """The keys to pin from the 機構's ``/v1/keys`` (``served_raw``): all the keys served,
    when they include a key pinned now or every kid in ``confirmed`` (ids the group
    received out of band); else `RotationRefused`. A first pinning (``pinned`` empty)
    needs no overlap; ``confirmed`` must then be served too."""
    try:
        served = parse_jwks(served_raw)
    except ValueError as e:
        raise RotationRefused(str(e)) from None
    wanted = set(confirmed)
    if missing := sorted(wanted - set(served)):
        raise RotationRefused(f"--answer-kid {', '.join(missing)}: not served by the 機構")
    if pinned and not wanted and not set(pinned) & set(served):
        raise RotationRefused(
            "the 機構 serves no key the group pinned: a new key is taken on the word of a "
            "pinned one (while the 機構 publishes both) or with --answer-kid, the key id "
            "received from the 機構 out of band"
        )
    return served


def write(directory: Path, raw: bytes) -> Path:
    """Write the JWKS ``raw`` (checked by the caller) as `KEYS_NAME` in ``directory``,
    atomically; public keys, no secret: 0644."""
    out = directory / KEYS_NAME
    atomicfile.write_whole(out, raw, 0o644, sync_dir=True)
    return out


class PinnedKeys:
    """The pinned keys of a group directory's `KEYS_NAME` file, read again when it changes
    (its inode, size or mtime): a `refresh` takes effect without a restart. A file missing
    or unreadable pins nothing (every answer is refused: `keys` empty, `problem` says why)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._keys: dict[str, RSAKey] = {}
        self.problem: str | None = None

    def keys(self) -> dict[str, RSAKey]:
        if self.path is None:
            self.problem = "group.json pins no 機構 answer key (crlbuilder group keys)"
            return {}
        try:
            st = os.stat(self.path)
        except OSError as e:
            self.problem = f"the pinned 機構 answer keys cannot be read: {e.strerror}"
            return {}
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp != self._seen:
                try:
                    self._keys = parse_jwks(self.path.read_bytes())
                    self.problem = None
                except (OSError, ValueError) as e:
                    self._keys = {}
                    self.problem = f"the pinned 機構 answer keys are not usable: {e}"
                self._seen = stamp
            return self._keys
