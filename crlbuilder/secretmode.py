"""Whether a secret file's mode keeps it to its reader: mode 0600 (or stricter), or a systemd credential.

A secret read from a file (the facts key, the watch secret) is refused when group or others
may read it. systemd's ``LoadCredential=`` (the jpki-va-node-* units hand both secrets over
so, in ``$CREDENTIALS_DIRECTORY``) writes each credential mode 0400, owned by root, and gives
the unit's user read access by a POSIX ACL entry where the credentials' file system has ACLs
(tmpfs, systemd 254 and later; on ramfs it chowns the file to the user instead). ``stat``
then shows the ACL's mask in the group bits: 0440, although no group can read it. So a file
directly in ``$CREDENTIALS_DIRECTORY`` (a directory systemd makes for the unit alone and
mounts read-only) is refused only for a bit of others or a write bit; any other file for
any bit of group or others.

A path, its mode and the environment in, a verdict out; it opens no file (the two
directories are compared by their resolved paths, ``os.path.realpath``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CREDENTIALS_ENV", "too_open"]

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def too_open(path: Path, mode: int, environ: Mapping[str, str] | None = None) -> bool:
    """True when the secret file ``path`` of ``mode`` (``st_mode``) may be read by others
    than its reader (see the module's docstring for a systemd credential)."""
    env = os.environ if environ is None else environ
    creds = env.get(CREDENTIALS_ENV, "")
    if creds and os.path.realpath(path.parent) == os.path.realpath(creds):
        return bool(mode & 0o027)
    return bool(mode & 0o077)
