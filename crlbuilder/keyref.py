"""Key references: how a configuration names a signing key, defined once.

A key reference is either an RFC 7512 PKCS#11 URI (``pkcs11:token=...;object=...``, the key
stays in its token: `crlbuilder.keys.pkcs11`) or the path of a PEM file (mode 0600:
`crlbuilder.keys.signer.PemSigner`). The PKI manifest (`crlbuilder.manifest`), a group's
set-up (`crlbuilder.group.setup`), the key operation log and the signers all tell the two
apart, and resolve a relative path against the file that names it, with these functions;
`redact` makes a reference fit for a message or a log (the signers' errors, the operation
log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

MIN_RSA_BITS: Final = 2048
"""The smallest RSA modulus accepted (Ord §2, §38: 2048 bits or more): the signers
(`crlbuilder.keys.signer`, `crlbuilder.keys.pkcs11`) refuse a smaller key, and ``crlbuilder keys
--bits`` a smaller size."""

PKCS11_SCHEME: Final = "pkcs11:"
"""A key reference starting with this (in any case) is a PKCS#11 URI, anything else a path."""


def is_pkcs11_uri(ref: str) -> bool:
    """True for a ``pkcs11:`` URI (RFC 7512), False for a PEM file path."""
    return ref[: len(PKCS11_SCHEME)].lower() == PKCS11_SCHEME


def resolve_key_ref(ref: str, directory: str | Path) -> str:
    """A key reference as `crlbuilder.keys.signer.load_signer` takes it: a PKCS#11 URI
    unchanged, a file path resolved against ``directory`` (where the file naming it lives)."""
    return ref if is_pkcs11_uri(ref) else str(Path(directory) / ref)


_SHOWN_ATTRS: Final = frozenset(
    {"token", "object", "type", "pin-source", "id", "library-description",
     "library-manufacturer", "library-version", "manufacturer", "model", "module-name",
     "module-path", "serial", "slot-description", "slot-id", "slot-manufacturer"}
)  # fmt: skip
"""RFC 7512's attributes that hold no secret: a message shows their values (`redact`)."""


def redact(key_ref: str) -> str:
    """``key_ref`` fit for a message or a log: the value of every attribute but RFC 7512's
    that hold no secret removed (a ``pin-value``, and a misspelt one, ``pin_value=``,
    ``pin%2Dvalue=``, ``pin=``), and any part that is no ``name=value`` (a PIN written
    after the ``?``)."""
    if not is_pkcs11_uri(key_ref):
        return key_ref
    out = []
    for i, (text, sep) in enumerate(_split_any(key_ref)):
        name, eq, _ = text.partition("=")
        name = name.strip().lower()
        if i == 0:  # the scheme and the first path attribute: "pkcs11:token=..."
            scheme, _, name = name.partition(":")
            if name in _SHOWN_ATTRS or (not name and not eq):
                out.append(text + sep)
            else:
                shown = f"{name}=<redacted>" if eq else "<redacted>"
                out.append(f"{text[: len(scheme) + 1]}{shown}{sep}")
        elif name in _SHOWN_ATTRS or not text:
            out.append(text + sep)
        else:
            out.append((f"{name}=<redacted>" if eq and name else "<redacted>") + sep)
    return "".join(out)


def _split_any(text: str) -> list[tuple[str, str]]:
    """Split on ; ? & keeping each separator after its piece (for `redact`)."""
    pieces: list[tuple[str, str]] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in ";?&":
            pieces.append((text[start:i], ch))
            start = i + 1
    pieces.append((text[start:], ""))
    return pieces
