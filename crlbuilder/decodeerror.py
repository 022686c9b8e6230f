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
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["redact"]

_ECHOING: Final = ("Object contains unknown field", "Invalid enum value", "Invalid value")
"""The beginnings of msgspec's messages that go on with a value of the input."""
_PATH: Final = re.compile(r" - at `\$[^`]*`$")
"""msgspec's path, always last: it names no key of the input (a dict's key is ``[...]``)."""


def redact(message: str) -> str:
    """``message`` (a msgspec error's text) without any value of the input it quotes: what
    follows an echoing beginning is dropped up to the path, which is kept."""
    m = _PATH.search(message)
    head, path = (message[: m.start()], m.group()) if m else (message, "")
    for plain in _ECHOING:
        if head.startswith(plain):
            return plain + path
    return message
