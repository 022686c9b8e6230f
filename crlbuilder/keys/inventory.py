"""The token's key inventory against the operation log (動作の記録, Ord §73(3); 専用の電子計算機, §73(4); 複数の者, §74(3)).

The PIN the builder and the responder sign with lets one person make a key in the token
without any ceremony (docs/operations.md, "What the two-person rule does not stop"). The
token is what such a key cannot avoid, so each ceremony lists the private keys of every
token it uses and records them (a ``token-inventory`` line: each key's public-key
fingerprint, label and id, nothing secret), and the next ceremony (and ``verify-log
--token``) compares the token with what the log says it holds:

- `expected`: the keys of the token's last ``token-inventory`` line, plus each key a later
  ``key-generated`` line made in it, less each one a later ``key-destroyed`` line destroyed
  (a ceremony that failed part-way undoes its keys by such lines). None when no line
  inventories the token yet: the first ceremony on it records the inventory it finds (the
  baseline, keys from ``pki init`` or from before this version), for the operators to
  examine;
- `compare`: the keys the token holds that the log does not (made outside a ceremony), and
  those the log says it holds that it lacks (destroyed outside one);
- `record_detail` / `recorded`: the inventory as a line's detail and back. A line records
  the keys the log accounts for: at a ceremony's end, the keys found at its check plus
  those it made, less those it destroyed (`fold`); a key made (or destroyed) in the token
  while the ceremony ran, by no line, is recorded as a difference (``differs``), never
  taken in, so the next ceremony is refused until two operators record it examined.

Sans-I/O: records and the token's list (`crlbuilder.keys.pkcs11.token_keys`) in, findings
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from crlbuilder.keys.oplog import OpRecord
from crlbuilder.keys.pkcs11 import TokenKey

__all__ = [
    "INVENTORY_EVENT",
    "Difference",
    "compare",
    "expected",
    "fold",
    "made_by_the_log",
    "record_detail",
    "recorded",
    "token_of",
]

INVENTORY_EVENT: Final = "token-inventory"

_KEY: Final = "key:"
_ID: Final = "id:"


def token_of(key: str) -> tuple[str, str] | None:
    """The token label and key label of a ``pkcs11:`` key reference as the log holds it
    (``pkcs11:token=T;object=K;type=private``), or None for another reference."""
    if not key.startswith("pkcs11:"):
        return None
    attrs: dict[str, str] = {}
    for part in key[len("pkcs11:") :].split("?", 1)[0].split(";"):
        name, eq, value = part.partition("=")
        if eq:
            attrs[name.strip().lower()] = unquote(value)
    if "token" not in attrs or "object" not in attrs:
        return None
    return attrs["token"], attrs["object"]


def record_detail(
    token: str,
    keys: Sequence[TokenKey],
    *,
    baseline: bool,
    accepted: Difference | None = None,
    differs: tuple[Difference, dict[str, str]] | None = None,
) -> dict[str, str | int]:
    """A ``token-inventory`` line's detail: the token, the number of private keys, each one's
    fingerprint to its label (``key:FP``) and id (``id:FP``, when it has one), whether it is
    the token's first inventory in this log (``baseline``), and, for ``keys inventory``, the
    differences two operators examined and accepted (``unexpected:FP``, ``missing:FP``).

    With ``differs`` (the token at a ceremony's end against the keys the log accounts for,
    and those keys): the ``key:`` entries are the keys the log accounts for, not the
    token's, and the difference is recorded as not accepted (``differs``,
    ``differs_unexpected:FP``, ``differs_missing:FP``): the next comparison finds it again."""
    detail: dict[str, str | int] = {"token": token, "private_keys": len(keys)}
    if baseline:
        detail["baseline"] = "first inventory of this token in the log"
    if accepted:
        detail["accepted"] = (
            f"{len(accepted.unexpected)} key(s) no ceremony made, "
            f"{len(accepted.missing)} key(s) missing: examined by the approvers"
        )
        for fp, label in accepted.unexpected:
            detail["unexpected:" + fp] = label
        for fp, label in accepted.missing:
            detail["missing:" + fp] = label
    changed = differs is not None and bool(differs[0])
    if differs is not None and changed:
        detail["differs"] = (
            f"{len(differs[0].unexpected)} key(s) made and {len(differs[0].missing)} key(s) "
            "destroyed in the token while the ceremony ran, by no line of the log: not "
            "accepted (examine them, then keys inventory)"
        )
        for fp, label in differs[0].unexpected:
            detail["differs_unexpected:" + fp] = label
        for fp, label in differs[0].missing:
            detail["differs_missing:" + fp] = label
    ids = {k.fingerprint: k.id_hex for k in keys if k.id_hex}
    held = differs[1] if differs is not None and changed else {k.fingerprint: k.label for k in keys}
    for fp, label in sorted(held.items()):
        detail[_KEY + fp] = label
        if fp in ids:
            detail[_ID + fp] = ids[fp]
    return detail


def recorded(rec: OpRecord) -> dict[str, str]:
    """The keys a ``token-inventory`` line records: fingerprint to label."""
    return {k[len(_KEY) :]: str(v) for k, v in rec.detail.items() if k.startswith(_KEY)}


def fold(records: Sequence[OpRecord], token: str, start: dict[str, str]) -> dict[str, str]:
    """``start`` (fingerprint to label), plus each key a ``key-generated`` line of
    ``records`` made in ``token``, less each one a ``key-destroyed`` line destroyed: by its
    fingerprint where the line names one (``keys destroy``; not when another object of that
    key pair stays, ``objects_left``), else by its label (``retire``, a failed ceremony's
    undo)."""
    keys = dict(start)
    for r in records:
        named = token_of(r.key)
        if named is None or named[0] != token:
            continue
        if r.event == "key-generated" and isinstance(r.detail.get("spki_sha256"), str):
            keys[str(r.detail["spki_sha256"])] = named[1]
        elif r.event == "key-destroyed" and isinstance(r.detail.get("spki_sha256"), str):
            if not r.detail.get("objects_left"):  # else a second object of it went: it stays
                keys.pop(str(r.detail["spki_sha256"]), None)
        elif r.event == "key-destroyed":  # by label (retire, a failed ceremony's undo)
            keys = {fp: label for fp, label in keys.items() if label != named[1]}
    return keys


def expected(records: Sequence[OpRecord], token: str) -> dict[str, str] | None:
    """The keys (fingerprint to label) the log says ``token`` holds: its last inventory line,
    then the keys made and destroyed after it; None where no line inventories it."""
    last = next(
        (
            i
            for i in range(len(records) - 1, -1, -1)
            if records[i].event == INVENTORY_EVENT and records[i].detail.get("token") == token
        ),
        None,
    )
    if last is None:
        return None
    return fold(records[last + 1 :], token, recorded(records[last]))


def made_by_the_log(records: Sequence[OpRecord], token: str) -> dict[str, str]:
    """The keys the log's own ``key-generated`` / ``key-destroyed`` lines leave in ``token``
    (no inventory): what a baseline's keys are held against."""
    return fold(records, token, {})


@dataclass(frozen=True)
class Difference:
    """The token against the log: keys it holds that the log does not (``unexpected``), keys
    the log says it holds that it lacks (``missing``), each (fingerprint, label)."""

    unexpected: list[tuple[str, str]]
    missing: list[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.unexpected or self.missing)

    def without(self, found: list[tuple[str, str]]) -> Difference:
        """This difference less the keys ``found`` unexpected already (each once)."""
        rest = list(self.unexpected)
        for key in found:
            if key in rest:
                rest.remove(key)
        return Difference(rest, list(self.missing))

    def describe(self, token: str) -> str:
        """One line: what differs, by label and fingerprint."""
        parts = []
        if self.unexpected:
            keys = ", ".join(f"{label!r} (spki {fp[:16]}...)" for fp, label in self.unexpected)
            parts.append(f"holds {len(self.unexpected)} key(s) no ceremony of the log made: {keys}")
        if self.missing:
            keys = ", ".join(f"{label!r} (spki {fp[:16]}...)" for fp, label in self.missing)
            parts.append(f"lacks {len(self.missing)} key(s) the log says it holds: {keys}")
        return f"token {token!r} " + "; ".join(parts)


def compare(want: dict[str, str], keys: Sequence[TokenKey]) -> Difference:
    """The token's keys against those the log says it holds (`expected`)."""
    have: dict[str, str] = {}
    again: list[tuple[str, str]] = []  # a second object of one key pair: not a ceremony's
    for k in keys:
        if k.fingerprint in have:
            again.append((k.fingerprint, k.label))
        else:
            have[k.fingerprint] = k.label
    return Difference(
        unexpected=sorted([(fp, label) for fp, label in have.items() if fp not in want] + again),
        missing=sorted((fp, label) for fp, label in want.items() if fp not in have),
    )
