"""Which private key a ``keys destroy`` ceremony destroys, and whether it may (its 管理 by several people: 複数の者による発行者署名符号の作成及び管理, Ord §74(3); recorded: 動作を記録する機能, §73(3)).

``retire`` destroys a key named by its certificate. A key that has none (made outside a
ceremony, a second object of one key pair, a key a failed ceremony could not take back)
is named by what the token inventory shows (`crlbuilder.keys.inventory`): the token and the
SHA-256 of its SubjectPublicKeyInfo, narrowed by label or CKA_ID where one key pair is
stored twice, so the operators name exactly the object they examined, never a label two
objects may share.

- `choose`: the one private key object the fingerprint (and ``label`` / ``id_hex``, when
  given) names among the token's, or a refusal (none, or several);
- `in_use`: a refusal when the object is the key a certificate of the log names (a CA or
  OCSP signer key issued by a ceremony, not destroyed since), or one the PKI manifest's
  certificates name (``--pki``: keys from before the log), and no other object of it under
  its label stays in the token (one a signer loads: not leakable, unless the target is
  leakable too): such a key goes through ``retire``, which records its certificate;
- `left_differing`: how the token, less that object, differs from what the log says it
  holds, less that key (when no other object of it stays): the ceremony goes on only where
  this is empty, so the token it leaves matches the log again (no ``keys inventory``).

Sans-I/O: records and the token's list in, a choice or a refusal out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from crlbuilder.keys.inventory import Difference, compare, token_of
from crlbuilder.keys.oplog import OpRecord
from crlbuilder.keys.pkcs11 import TokenKey

__all__ = ["certified", "choose", "in_use", "left_differing", "parse_fingerprint", "remaining"]

_FINGERPRINT: Final = re.compile(r"(other-)?[0-9a-f]{64}")


def parse_fingerprint(text: str) -> str:
    """The fingerprint as the inventory lists it (64 hex digits, or ``other-`` and 64 for a
    key of another type), lower-cased, colons allowed between bytes; ValueError otherwise."""
    fp = text.strip().lower().replace(":", "")
    if not _FINGERPRINT.fullmatch(fp):
        raise ValueError(
            "--spki must be a key's SPKI SHA-256 as verify-log --token lists it (64 hex digits)"
        )
    return fp


def choose(
    keys: Sequence[TokenKey], fingerprint: str, label: str | None = None, id_hex: str | None = None
) -> TokenKey | str:
    """The one private key object named, or why not (one line, nothing secret)."""
    same = [k for k in keys if k.fingerprint == fingerprint]
    if not same:
        return f"the token holds no private key with spki {fingerprint}"
    named = [
        k
        for k in same
        if (label is None or k.label == label) and (id_hex is None or k.id_hex == id_hex.lower())
    ]
    if not named:
        return (
            f"no private key with spki {fingerprint[:16]}... has the --label/--id given "
            f"(it has {_objects(same)})"
        )
    if len(named) > 1:
        return (
            f"{len(named)} private key objects have spki {fingerprint[:16]}... "
            f"({_objects(named)}): name one with --label or --id"
            + ("" if len({(k.label, k.id_hex) for k in named}) == len(named) else
               "; they cannot be told apart by label and id: no ceremony destroys one of them")
        )  # fmt: skip
    return named[0]


def _objects(keys: Sequence[TokenKey]) -> str:
    return ", ".join(f"label {k.label!r} id {k.id_hex or '-'}" for k in keys)


def remaining(keys: Sequence[TokenKey], target: TokenKey) -> list[TokenKey]:
    """The token's keys once ``target`` (one object of them) is destroyed."""
    rest = list(keys)
    rest.remove(target)
    return rest


def certified(records: Sequence[OpRecord], token: str) -> dict[str, str]:
    """The keys in ``token`` a certificate of the log names: label to fingerprint, for each
    key a ``key-generated`` line made that a later ``certificate-issued`` line names, and no
    ``key-destroyed`` line destroyed since."""
    made: dict[str, str] = {}
    issued: dict[str, str] = {}
    for r in records:
        named = token_of(r.key)
        if named is None or named[0] != token:
            continue
        label = named[1]
        if r.event == "key-generated" and isinstance(r.detail.get("spki_sha256"), str):
            made[label] = str(r.detail["spki_sha256"])
        elif r.event == "certificate-issued" and label in made:
            issued[label] = made[label]
        elif r.event == "key-destroyed" and not r.detail.get("objects_left"):
            fp = r.detail.get("spki_sha256")  # none: destroyed by label (retire, undone)
            if fp is None or made.get(label) == fp:
                made.pop(label, None)
                issued.pop(label, None)
    return issued


def in_use(
    records: Sequence[OpRecord],
    token: str,
    keys: Sequence[TokenKey],
    target: TokenKey,
    manifest: dict[str, str] | None = None,
) -> str | None:
    """Why ``target`` may not be destroyed by fingerprint, or None: it is the key a
    certificate of the log names (`certified`), or one the manifest's certificates name
    (``manifest``: label to the fingerprint of the certificate's public key, for the keys
    of ``token`` it names), and no other object of it stays under that label."""
    rest = remaining(keys, target)
    for named, by in ((certified(records, token), "a certificate of the log names (a CA or "
                       "OCSP signer key)"), (manifest or {}, "the manifest signs with")):  # fmt: skip
        for label, fp in named.items():
            if fp != target.fingerprint:
                continue
            stays = [k for k in rest if k.fingerprint == fp and k.label == label]
            if stays and (target.leakable or any(not k.leakable for k in stays)):
                continue  # a second object of it goes; one a signer loads stays under the label
            if stays:
                return (
                    f"spki {fp[:16]}... is key {label!r}, which {by}: the other object(s) of "
                    "it under that label can leave the token (CKA_EXTRACTABLE, or not "
                    "CKA_SENSITIVE) and no signer loads them: destroy those (--id), not this one"
                )
            return (
                f"spki {fp[:16]}... is key {label!r}, which {by}: destroy it with keys retire "
                "--cert (once no manifest names it), which records its certificate"
            )
    return None


def left_differing(
    want: dict[str, str] | None, keys: Sequence[TokenKey], target: TokenKey
) -> Difference:
    """The token less ``target`` against what the log says it holds less ``target``'s key
    (where no other object of it stays); empty for a token no line inventories yet (its first
    inventory, at the ceremony's end, takes it as found)."""
    if want is None:
        return Difference([], [])
    rest = remaining(keys, target)
    held = dict(want)
    if not any(k.fingerprint == target.fingerprint for k in rest):
        held.pop(target.fingerprint, None)
    return compare(held, rest)
