"""A bearer token read from its file: the group's credential for the 機構 (団体署名検証者, Act §17(5)).

Read by ``crlbuilder group pull`` at each pass, by the group's record-info relay
(`responder.relay`) at each request and by ``crlbuilder import-crl --token-file``/``--group``.
The file is a secret as the facts key and the watch secret are (`crlbuilder.secretmode`):
refused when group or others may read it (``group init`` writes it 0600). It is opened
without blocking and taken only as a regular file of at most `MAX_BYTES`: a path replaced by
a named pipe (a link to one) held a reader in ``open`` for ever (a pass of the pull, a thread
of the relay each request), one to a device was read without end. The token is never in a
message, only the path and why.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from crlbuilder.secretmode import too_open

__all__ = ["MAX_BYTES", "TokenFileError", "read_token_file"]

MAX_BYTES: Final = 4096
"""The most bytes a token file may hold (a token is a few dozen)."""


class TokenFileError(Exception):
    """The token file cannot be used; the message names the file and why, never its bytes."""


def read_token_file(path: Path, environ: Mapping[str, str] | None = None) -> str:
    """The token in ``path`` (white space around it stripped), or TokenFileError."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise TokenFileError(f"{path}: cannot read the token file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"{path}: the token file is not a regular file")
        if too_open(path, st.st_mode, environ):
            raise TokenFileError(
                f"{path}: the token file's mode {stat.S_IMODE(st.st_mode):04o} lets group or "
                "others read it: it must be 0600 or stricter (chmod 600)"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise TokenFileError(f"{path}: cannot read the token file: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise TokenFileError(f"{path}: more than {MAX_BYTES} bytes: not a token file")
    try:
        token = b"".join(chunks).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"{path}: the token file is not UTF-8 text") from None
    if not token:
        raise TokenFileError(f"{path}: the token file is empty")
    return token
