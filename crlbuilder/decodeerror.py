"""What a decoding error may say: msgspec's message less the input it echoes, for both binaries.

msgspec words most errors with the schema only (``Expected `int`, got `str` - at `$.serial```),
but three of its messages quote the input: an unknown field's name (``Object contains
unknown field `X```), an enum or literal value (``Invalid enum value 'X'``) and a tagged
union's tag (``Invalid value 'X'``). A record line or a request body may carry the four
facts (基本4情報, Act §7(1)(3)) or a serial anywhere, a key included, so such a message
would put them in the quarantine file, the store's outbox or a problem answer that is
logged as it is (Act §44, §45). `redact` keeps the message's shape and its ``- at`` path
(msgspec's path names no key of the input: a dict's key is ``[...]``) and drops the
quoted input. Sans-I/O; the builder's quarantine (`crlbuilder.ingest`) and the
responder's /v1 problems (`responder.v1.problem`) both use it.

What the input's author needs from an unknown field's message is where it is and what
would be accepted there. Given the type decoded and the document, `redact` names the
fields the schema accepts at that path (`fields_at`): the schema's names, never the
input's, so the message still quotes nothing of it. Where the path holds a tagged union
(a record's ``type``), the document's tag picks the member, as msgspec did.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
import msgspec.inspect as mi

__all__ = ["fields_at", "redact"]

_ECHOING: Final = ("Object contains unknown field", "Invalid enum value", "Invalid value")
"""The beginnings of msgspec's messages that go on with a value of the input."""
_UNKNOWN_FIELD: Final = _ECHOING[0]
_ACCEPTED: Final = _UNKNOWN_FIELD + " (accepted there: "
"""How `redact` begins the list of fields it adds; msgspec follows "field" with a backtick."""
_PATH: Final = re.compile(r" - at `\$([^`]*)`$")
"""msgspec's path, always last: it names no key of the input (a dict's key is ``[...]``)."""
_STEP: Final = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
"""One step of a path after ``$``: ``.name`` (a field's encoded name), ``[3]``, ``[...]``."""
_MAX_LISTED: Final = 24
"""More fields than this at one place are not listed (the message stays a line)."""


def redact(message: str, schema: object = None, document: bytes | None = None) -> str:
    """``message`` (a msgspec error's text) without any value of the input it quotes: what
    follows an echoing beginning is dropped up to the path, which is kept. For an unknown
    field, with the ``schema`` decoded and the ``document`` (JSON) it was decoded from, the
    message ends with the fields accepted there (`fields_at`)."""
    m = _PATH.search(message)
    head, path = (message[: m.start()], m.group()) if m else (message, "")
    if head.startswith(_ACCEPTED):  # ours, redacted already: msgspec puts a backtick there
        return message
    for plain in _ECHOING:
        if head.startswith(plain):
            if plain is _UNKNOWN_FIELD and schema is not None and document is not None:
                accepted = fields_at(schema, m.group(1) if m else "", document)
                if accepted:
                    listed = ", ".join(f"`{name}`" for name in accepted)
                    return f"{_ACCEPTED}{listed}){path}"
            return plain + path
    return message


def fields_at(schema: object, path: str, document: bytes) -> tuple[str, ...] | None:
    """The encoded names of the fields ``schema`` accepts at ``path`` (msgspec's, less its
    ``$``) in ``document``; None where the path leads to no one object type (a dict, an
    untagged union of objects, a path this walk does not know) or lists too many."""
    try:
        node: object = msgspec.json.decode(document)
        t: mi.Type = mi.type_info(schema)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None
    steps = _STEP.findall(path)
    if "".join(f".{n}" if n else f"[{i}]" for n, i in steps) != path:
        return None
    for name, index in steps:
        t_obj = _object(t, node)
        if name:
            if t_obj is None or not isinstance(node, dict):
                return None
            by_name = {f.encode_name: f.type for f in t_obj.fields}
            if name not in by_name:
                return None
            t, node = by_name[name], node.get(name)
        elif index == "...":
            return None
        else:
            t = _unwrap(t)
            if not isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
                return None
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            t, node = t.item_type, node[int(index)]
    found = _object(t, node)
    if found is None or len(found.fields) > _MAX_LISTED:
        return None
    tag = () if found.tag_field is None else (found.tag_field,)
    return (*tag, *(f.encode_name for f in found.fields))


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _object(t: mi.Type, node: object) -> mi.StructType | None:
    """The one Struct ``t`` decodes ``node`` as: itself, the only Struct of a union, or the
    member a tagged union's tag in ``node`` names."""
    t = _unwrap(t)
    if isinstance(t, mi.StructType):
        return t
    if not isinstance(t, mi.UnionType):
        return None
    structs = [m for m in map(_unwrap, t.types) if isinstance(m, mi.StructType)]
    if len(structs) == 1:
        return structs[0]
    if not isinstance(node, dict):
        return None
    tagged = [s for s in structs if s.tag_field is not None and node.get(s.tag_field) == s.tag]
    return tagged[0] if len(tagged) == 1 else None
