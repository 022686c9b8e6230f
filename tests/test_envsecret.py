"""`crlbuilder.envsecret.take` under every way the variable can have come into the process.

Each case runs in a fresh interpreter (the environment is per process, and a wrong write would
corrupt or crash the one that made it): the variable given in the initial environment, set
through `os.environ` (``setenv``), handed to ``putenv(3)`` (through ctypes: `os.putenv` is
``setenv`` too), set again after start, given twice by ``execve``, handed to ``putenv`` in
read-only memory, and libc's ``getenv`` out of reach. Each child prints a JSON verdict: the
value `take` returned, whether `os.environ`, ``getenv`` and ``/proc/self/environ`` (and a
child forked afterwards) still show it, and which bytes of the initial block changed (only
those of the variable's own entries may).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

NAME = "AUDIT_SECRET"

_PRELUDE = """
import ctypes, json, os, sys, time
from pathlib import Path
from crlbuilder import envsecret
NAME = "AUDIT_SECRET"
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_void_p
libc.getenv.argtypes = [ctypes.c_char_p]
libc.putenv.argtypes = [ctypes.c_void_p]
before = Path("/proc/self/environ").read_bytes()
extra = {}
"""

_VERDICT = """
value = envsecret.take(NAME)
after = Path("/proc/self/environ").read_bytes()
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
child = Path(f"/proc/{pid}/environ").read_bytes()
os.kill(pid, 9)
os.waitpid(pid, 0)
spans, offset = [], 0
for entry in before.split(b"\\0"):
    if entry.startswith(NAME.encode() + b"="):
        spans.append((offset, offset + len(entry)))
    offset += len(entry) + 1
changed = [i for i in range(len(before)) if before[i] != after[i]]
print(json.dumps({
    "value": value,
    "os_environ": NAME in os.environ,
    "getenv": bool(libc.getenv(NAME.encode())),
    "shown": [
        e for b in (after, child) for e in b.split(b"\\0")
        if e.startswith(NAME.encode() + b"=") or b"s3cr3t" in e
    ] != [],
    "outside": [i for i in changed if not any(a <= i < b for a, b in spans)],
    "same_length": len(before) == len(after),
    "neighbours": [os.environ.get(n) for n in ("AUDIT_SECRETS", "X_AUDIT_SECRET")],
    **extra,
}))
"""


def run(setup: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The verdict of a fresh interpreter that runs ``setup`` and then `take`."""
    base = {k: v for k, v in os.environ.items() if k != NAME}
    given = {**base, "PYTHONPATH": str(ROOT), "AUDIT_SECRETS": "kept-1", "X_AUDIT_SECRET": "kept-2"}
    got = subprocess.run(
        [sys.executable, "-c", _PRELUDE + setup + _VERDICT], env={**given, **(env or {})}, check=False,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    verdict: dict[str, Any] = json.loads(got.stdout)
    return verdict


def gone(verdict: dict[str, Any], value: str) -> None:
    assert verdict["value"] == value
    assert not verdict["os_environ"] and not verdict["getenv"] and not verdict["shown"]
    assert verdict["outside"] == [] and verdict["same_length"]
    assert verdict["neighbours"] == ["kept-1", "kept-2"]


def test_given_in_the_initial_environment() -> None:
    gone(run("", {NAME: "s3cr3t-initial"}), "s3cr3t-initial")


def test_set_through_os_environ_the_string_setenv_made_is_zeroed() -> None:
    """``setenv`` allocates ``NAME=value``; glibc keeps it after ``unsetenv`` (so reading it
    afterwards is safe here), and `take` zeroed its value before."""
    verdict = run('os.environ[NAME] = "s3cr3t-assigned"\n')
    gone(verdict, "s3cr3t-assigned")
    check = """
os.environ[NAME] = "s3cr3t-assigned"
at = libc.getenv(NAME.encode())
envsecret.take(NAME)
print(ctypes.string_at(at, len("s3cr3t-assigned")).hex())
"""
    got = subprocess.run(
        [sys.executable, "-c", _PRELUDE + check], env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert got.stdout.strip() == "00" * len("s3cr3t-assigned")


def test_handed_to_putenv_the_callers_string_is_zeroed() -> None:
    setup = """
buf = ctypes.create_string_buffer(b"AUDIT_SECRET=s3cr3t-putenv")
libc.putenv(ctypes.addressof(buf))
os.environ._data[NAME.encode()] = b"s3cr3t-putenv"
"""
    verdict = run(setup)
    gone(verdict, "s3cr3t-putenv")
    check = """
buf = ctypes.create_string_buffer(b"AUDIT_SECRET=s3cr3t-putenv")
libc.putenv(ctypes.addressof(buf))
os.environ._data[NAME.encode()] = b"s3cr3t-putenv"
envsecret.take(NAME)
print(buf.raw)
"""
    got = subprocess.run(
        [sys.executable, "-c", _PRELUDE + check], env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "s3cr3t" not in got.stdout


def test_set_again_after_start_the_initial_value_goes_too() -> None:
    """``setenv`` points ``environ`` at a new string; the first value stayed in the initial
    block, shown by ``/proc/<pid>/environ`` (the first version wiped only the new one)."""
    verdict = run('os.environ[NAME] = "s3cr3t-second"\n', {NAME: "s3cr3t-first"})
    gone(verdict, "s3cr3t-second")


def test_given_twice_by_execve_both_entries_go() -> None:
    """``execve`` takes any list: ``getenv`` and `os.environ` see the first entry, ``unsetenv``
    removes both, and the second stayed in the block (the first version wiped the first)."""
    envp = [
        f"{k}={v}" for k, v in os.environ.items() if k not in (NAME, "PYTHONPATH")
    ] + [
        f"PYTHONPATH={ROOT}", "AUDIT_SECRETS=kept-1", "X_AUDIT_SECRET=kept-2",
        f"{NAME}=s3cr3t-one", f"{NAME}=s3cr3t-two",
    ]  # fmt: skip
    inner = _PRELUDE + _VERDICT
    launcher = f"""
import ctypes, sys
libc = ctypes.CDLL(None)
args = [sys.executable.encode(), b"-c", {inner.encode()!r}]
env = [e.encode() for e in {envp!r}]
argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
envv = (ctypes.c_char_p * (len(env) + 1))(*env, None)
libc.execve(args[0], argv, envv)
raise SystemExit("execve failed")
"""
    got = subprocess.run(
        [sys.executable, "-c", launcher], check=False, capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    gone(json.loads(got.stdout), "s3cr3t-one")


def test_handed_to_putenv_in_read_only_memory_it_is_removed_without_a_write() -> None:
    """A string libc holds that cannot be written (a C literal handed to ``putenv``): removed
    from the environment, not written (the first version wrote it after ``unsetenv``: the
    process died of SIGSEGV)."""
    setup = """
import mmap
area = mmap.mmap(-1, 4096)
area.write(b"AUDIT_SECRET=s3cr3t-readonly\\0")
at = ctypes.addressof((ctypes.c_char * 4096).from_buffer(area))
libc.putenv(ctypes.c_void_p(at))
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(ctypes.c_void_p(at), 4096, 1) == 0  # PROT_READ
os.environ._data[NAME.encode()] = b"s3cr3t-readonly"
"""
    verdict = run(setup)
    assert verdict["value"] == "s3cr3t-readonly"
    assert not verdict["os_environ"] and not verdict["getenv"]
    assert verdict["outside"] == []


def test_without_libc_it_is_still_removed_and_the_initial_block_wiped() -> None:
    """``ctypes.CDLL(None)`` refused (no libc to reach, as a static interpreter): the
    variable leaves `os.environ` and libc's ``environ``, and the initial block is wiped (the
    first version wiped nothing then: ``/proc/self/environ`` still showed it)."""
    setup = """
class _NoLibc:
    def __init__(self, *a, **k):
        raise OSError("no libc")
envsecret.ctypes.CDLL = _NoLibc  # type: ignore
"""
    gone(run(setup, {NAME: "s3cr3t-nolibc"}), "s3cr3t-nolibc")


def test_an_unset_variable_gives_none_and_changes_nothing() -> None:
    verdict = run("")
    assert verdict["value"] is None and verdict["outside"] == [] and not verdict["shown"]
    assert verdict["neighbours"] == ["kept-1", "kept-2"]


_UNPRIVILEGED = """
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("envsecret", sys.argv[1])
envsecret = importlib.util.module_from_spec(spec)
spec.loader.exec_module(envsecret)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0, as no_core_dumps does first
os.environ["AUDIT_SECRET"] = "s3cr3t-second"
print(envsecret.take("AUDIT_SECRET"), flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as another user")
def test_a_non_dumpable_process_of_another_user_than_root_wipes_its_initial_block() -> None:
    """The commands run as a service account and make themselves non-dumpable before taking
    the key: ``/proc/self/environ`` is then unreadable to the process itself (root owns it),
    so the block is read from memory. The variable set at start and again since: neither
    value is left in the block (read here as root). The interpreter is the system's, the
    module loaded by path: the test's own may lie where the other user cannot read."""
    child = subprocess.Popen(
        ["/usr/bin/python3", "-c", _UNPRIVILEGED, str(ROOT / "crlbuilder" / "envsecret.py")],
        env={"PATH": "/usr/bin:/bin", NAME: "s3cr3t-first"}, user=65534, group=65534,
        extra_groups=[], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "s3cr3t-second\n"
        block = (Path(f"/proc/{child.pid}/environ")).read_bytes()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert b"PATH=/usr/bin" in block and b"s3cr3t" not in block, block
    assert not [e for e in block.split(b"\0") if e.startswith(NAME.encode() + b"=")]
