"""A secret given in the environment, taken out of it at start so that no child inherits it.

A process's environment goes to every program it starts (``subprocess``, ``exec``) and, as
the bytes of its initial environment block, to every child it forks: ``/proc/<pid>/environ``
shows that block, which removing a variable from `os.environ` (``unsetenv``) leaves as it
was. `take` reads a variable once, removes it from `os.environ` and libc's environment, and
overwrites with zero bytes every copy of ``NAME=value`` that libc's environment held: no
program started later, no child forked later and no ``/proc/<pid>/environ`` of this process
or of its later children holds it. The caller keeps the value in memory and hands it to the
code that needs it (the builder's facts key, `crlbuilder.seal.take_facts_key`: its forked
children hold it only as the memory they copy).

Where the bytes lie, and why each write stays inside them (decisions of the audit that
followed the first version, which wiped only the entry ``getenv`` found, after ``unsetenv``):

- **The initial block** (the kernel's ``env_start``..``env_end``, fields 50 and 51 of
  ``/proc/self/stat``, the very bytes ``/proc/self/environ`` reads): every entry beginning
  ``NAME=`` is zeroed up to its terminating NUL, after ``unsetenv`` removed every pointer to
  it from ``environ`` (glibc and musl remove every entry of the name). This covers a
  variable given twice by the program that started us (``execve`` takes any list: ``getenv``
  and `os.environ` see the first, the second stayed in the block) and one set again since
  start (``setenv`` points ``environ`` at a new string and leaves the old one in the block:
  the initial value stayed in ``/proc/<pid>/environ``). The bytes are written only when
  the range lies inside one writable mapping of ``/proc/self/maps``; they are read from
  memory, not from ``/proc/self/environ``, which a process that is not root cannot read once
  it made itself non-dumpable, as both commands do before taking the key
  (`crlbuilder.lifecycle.no_core_dumps`).
- **The string libc holds now** (found by ``getenv``; the bytes before the value checked to
  be ``NAME=``): a string ``setenv`` allocated (`os.environ` assignment, ``os.putenv``) or one
  a caller handed to ``putenv(3)``. Its value is zeroed **before** ``unsetenv``, while the
  string is certainly libc's: glibc keeps a string it allocated for ever, but musl frees it in
  ``unsetenv``, so a write after it would be to freed memory. The write is made only when the
  bytes lie in a writable mapping of ``/proc/self/maps`` (a ``putenv`` of a string in
  read-only memory is left as it is rather than crash the process), and it leaves ``NAME=``,
  which ``unsetenv`` then removes. A string handed to ``putenv(3)`` is the caller's and is
  zeroed with the rest: that is what taking the secret means.
- **A value replaced since** by ``setenv`` (the variable set twice after start): glibc keeps
  every string ``setenv`` allocated, unreachable from ``environ`` and not found by ``getenv``,
  so the earlier one stays in the heap. Like the interpreter's own copies of the value, it is
  in the memory a forked child copies, never in an environment or ``/proc/<pid>/environ``.
- **Without libc's ``getenv``** (``ctypes.CDLL(None)`` refused, or no such symbol: a statically
  linked interpreter), the variable is still removed (`os.unsetenv`) and the initial block
  still wiped; a string ``setenv`` allocated is then left in the heap, as a forked child's
  copy of this process's memory holds the value anyway. Without ``/proc`` the initial block
  is left as it was. Neither is refused: the variable is gone from what any program started
  later gets, which is what a refusal would protect.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["take"]

# /proc/<pid>/stat fields (1-based) env_start and env_end, since Linux 3.5; counted after
# the command name's closing parenthesis, which ends field 2.
_ENV_START_FIELD = 50
_FIELDS_BEFORE_STATE = 2


def take(name: str) -> str | None:
    """The value of the environment variable ``name`` (None when unset), removed from this
    process's environment and every copy libc's environment held overwritten with zeros."""
    value = os.environ.get(name)
    held = _held(name)
    if held is not None:  # the value zeroed while libc certainly owns the string
        ctypes.memset(held[0], 0, held[1])
    os.environ.pop(name, None)
    os.unsetenv(name)  # libc's too, when only it held the variable (set through ctypes)
    _wipe_initial_block(os.fsencode(name) + b"=")
    return value


def _held(name: str) -> tuple[int, int] | None:
    """Where the value of libc's current ``NAME=value`` lies (address, length) when it may be
    overwritten in place: libc reached, the entry's ``NAME=`` in front, all of it writable."""
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
    length = len(ctypes.string_at(at))
    if not _writable(start, at + length + 1):
        return None
    return at, length


def _writable(start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one writable mapping of this process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    for line in maps.splitlines():
        span, perms = line.split()[:2]
        low, high = (int(part, 16) for part in span.split("-"))
        if low <= start and end <= high:
            return perms[1] == "w"
    return False


def _initial_block() -> tuple[int, int] | None:
    """The kernel's ``env_start`` and ``env_end`` of this process, or None where ``/proc``
    does not say them."""
    try:
        stat = Path("/proc/self/stat").read_bytes()
        fields = stat[stat.rindex(b")") + 1 :].split()
        at = _ENV_START_FIELD - _FIELDS_BEFORE_STATE - 1
        start, end = int(fields[at]), int(fields[at + 1])
    except (OSError, ValueError, IndexError):
        return None
    return (start, end) if 0 < start < end else None


def _wipe_initial_block(raw: bytes) -> None:
    """Zero every entry of the initial environment block that begins with ``raw``
    (``NAME=``), each up to its NUL: only after ``unsetenv``, when ``environ`` points at none
    of them, and only when the range lies in one writable mapping of ``/proc/self/maps``."""
    span = _initial_block()
    if span is None or not _writable(*span):
        return
    start, end = span
    shown = ctypes.string_at(start, end - start)
    offset = 0
    for entry in shown.split(b"\0"):
        if entry.startswith(raw):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
