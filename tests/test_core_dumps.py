"""No core dump of a process that holds keys (`crlbuilder.lifecycle.no_core_dumps`).

The builder and the responder hold signing keys (PEM keys in memory), PINs and the facts
key; a crash with core dumps on wrote them to disk for whoever reads the dumps, and a
process of the same user could ptrace them or read a ``pin-source=env:`` PIN from
/proc/<pid>/environ. Both commands now start with RLIMIT_CORE 0 and PR_SET_DUMPABLE 0,
which their forked workers and signing processes inherit. Each check runs in a forked
child: the test process itself keeps its limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import resource
import subprocess
import sys
from collections.abc import Callable

import pytest

from crlbuilder import cli as builder_cli
from crlbuilder.lifecycle import no_core_dumps
from responder import cli as responder_cli
from tests.conftest import ROOT

_PR_GET_DUMPABLE = 3


def _in_child(step: Callable[[], object]) -> tuple[tuple[int, int], int]:
    """(RLIMIT_CORE, PR_GET_DUMPABLE) of a forked child after ``step`` (SystemExit ignored)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            with (
                contextlib.suppress(SystemExit),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                step()
            soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
            dumpable = ctypes.CDLL(None).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
            os.write(write, f"{soft} {hard} {dumpable}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    out = b""
    while chunk := os.read(read, 256):
        out += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    soft, hard, dumpable = (int(x) for x in out.split())
    return (soft, hard), dumpable


def test_no_core_dumps_sets_both_the_limit_and_the_dumpable_flag() -> None:
    assert _in_child(no_core_dumps) == ((0, 0), 0)


@pytest.mark.parametrize(
    "main", [builder_cli.main, responder_cli.main], ids=["crlbuilder", "responder"]
)
def test_every_command_of_both_programs_leaves_no_core_dump(main: Callable[..., int]) -> None:
    """Before anything else: even ``--help`` (nothing read yet) runs with both set."""
    assert _in_child(lambda: main(["--help"])) == ((0, 0), 0)


_SIGNCHILD = """
import contextlib, ctypes, resource, sys
from responder import signchild
with contextlib.suppress(Exception):
    signchild.main(["--pki", "/nonexistent/pki"])
soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
print(soft, hard, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), file=sys.stderr)
"""


@pytest.mark.integration
def test_a_signing_process_leaves_no_core_dump() -> None:
    """A worker's signing process (``[ocsp] signing = "processes"``) holds the OCSP keys and
    PINs alone. Exec'd by its worker, it starts dumpable again (a fresh interpreter here, so
    the check does not lean on this test process's own flags): it sets both first, before
    it reads anything (here it finds no PKI and says so on its pipe)."""
    got = subprocess.run(
        [sys.executable, "-c", _SIGNCHILD], cwd=ROOT, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    err = got.stderr.decode(errors="replace")  # stdout: its binary frame to the worker
    soft, hard, dumpable = (int(x) for x in err.split()[-3:])
    assert (soft, hard, dumpable) == (0, 0, 0), err
