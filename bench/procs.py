"""What the benchmark scripts share about the servers they start: readiness lines and errors."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time


class BenchError(Exception):
    """A benchmark that cannot go on: a server that did not start, a peer that misbehaved."""


def wait_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """Read ``proc``'s stdout until ``pattern`` matches; return its first group."""
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise BenchError(f"no {pattern!r} from {proc.args!r} within {timeout} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise BenchError(f"{proc.args!r} exited before it was ready")
            buf += chunk
            match = re.search(pattern, buf.decode(errors="replace"))
            if match:
                return match.group(1)
