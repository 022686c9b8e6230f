"""Key references: how a configuration names a signing key, defined once.

A key reference is either an RFC 7512 PKCS#11 URI (``pkcs11:token=...;object=...``, the key
stays in its token: `crlbuilder.keys.pkcs11`) or the path of a PEM file (mode 0600:
`crlbuilder.keys.signer.PemSigner`). The PKI manifest (`crlbuilder.manifest`), a group's
set-up (`crlbuilder.group.setup`), the key operation log and the signers all tell the two
apart, and resolve a relative path against the file that names it, with these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PKCS11_SCHEME: Final = "pkcs11:"
"""A key reference starting with this (in any case) is a PKCS#11 URI, anything else a path."""


def is_pkcs11_uri(ref: str) -> bool:
    """True for a ``pkcs11:`` URI (RFC 7512), False for a PEM file path."""
    return ref[: len(PKCS11_SCHEME)].lower() == PKCS11_SCHEME


def resolve_key_ref(ref: str, directory: str | Path) -> str:
    """A key reference as `crlbuilder.keys.signer.load_signer` takes it: a PKCS#11 URI
    unchanged, a file path resolved against ``directory`` (where the file naming it lives)."""
    return ref if is_pkcs11_uri(ref) else str(Path(directory) / ref)
