"""A child process's lifecycle, for tests and benchmarks: start, wait until ready, stop by PID.

Only processes started here are signalled, by their PID, and then their own children
(a responder master's workers) if any outlive them: never anything found by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


class ProcessError(Exception):
    """A child process that did not become ready: it exited, or said nothing in time."""


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a master's workers), from /proc; [] once it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15
) -> int | None:
    """Stop a process started here by its PID, then any child of it still alive; its exit code.

    ``sig`` first, SIGKILL when it has not exited after ``timeout`` seconds (`openssl ocsp
    -multi` ignores SIGTERM while its children spin, so it gets a short one); children that
    outlive their parent by 5 s get SIGKILL.
    """
    kids = children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 5
    for kid in kids:
        while alive(kid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(kid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
    return proc.returncode


def wait_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """Read ``proc``'s stdout until ``pattern`` matches what it printed; return its first group."""
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise ProcessError(f"no {pattern!r} from {proc.args!r} within {timeout} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise ProcessError(f"{proc.args!r} exited before it was ready")
            buf += chunk
            match = re.search(pattern, buf.decode(errors="replace"))
            if match:
                return match.group(1)


@contextlib.contextmanager
def started(
    args: Sequence[str],
    *,
    log: Path,
    sig: int = signal.SIGTERM,
    grace: float = 15,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (stdout piped, stderr appended to ``log``) and stop it by PID on the way out."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            list(args),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
        try:
            yield proc
        finally:
            stop(proc, sig, grace)
            if proc.stdout is not None:
                proc.stdout.close()
