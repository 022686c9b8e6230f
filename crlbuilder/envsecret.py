"""A secret given in the environment, taken out of it at start so that no child inherits it.

A process's environment goes to every program it starts (``subprocess``, ``exec``) and, as
the bytes of its initial environment block, to every child it forks: ``/proc/<pid>/environ``
shows that block, which removing a variable from `os.environ` (``unsetenv``) leaves as it
was. `take` reads a variable once, removes it from `os.environ` and libc's environment, then
overwrites ``NAME=value`` where libc's environment held it (the initial block itself, unless
the variable was set again since): no program started later, no child forked later and no
``/proc/<pid>/environ`` of this process or of its later children holds it. The caller keeps
the value in memory and hands it to the code that needs it (the builder's facts key,
`crlbuilder.seal.take_facts_key`: its forked children hold it only as the memory they copy).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["take"]


def take(name: str) -> str | None:
    """The value of the environment variable ``name`` (None when unset), removed from this
    process's environment and wiped from the memory libc's environment kept it in."""
    value = os.environ.get(name)
    if value is None:
        return None
    entry = _entry(name)
    del os.environ[name]  # and unsetenv(3): a program started later does not get it
    if entry is not None:  # no longer in libc's environment: overwritten where it lay
        ctypes.memset(*entry)
    return value


def _entry(name: str) -> tuple[int, int, int] | None:
    """Where libc's environment holds ``NAME=value`` (`ctypes.memset`'s arguments that
    overwrite it with zero bytes); None where libc cannot be reached or does not hold it
    so. The bytes ``/proc/<pid>/environ`` shows and forked children copy, unless the variable
    was set again since the process started."""
    raw = os.fsencode(name) + b"="
    try:
        libc = ctypes.CDLL(None)
        getenv = libc.getenv
        getenv.restype = ctypes.c_void_p
        getenv.argtypes = [ctypes.c_char_p]
        at = getenv(os.fsencode(name))
    except (OSError, AttributeError):
        return None
    if not at:
        return None
    start = at - len(raw)
    if ctypes.string_at(start, len(raw)) != raw:
        return None
    return start, 0, len(raw) + len(ctypes.string_at(at))
