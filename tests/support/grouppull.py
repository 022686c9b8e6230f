"""A `crlbuilder group pull` process run against a 機構 played in the test, and what the tests
read of a group directory after it: `pulling`, `wait_asked`, `stop_with_sigterm`,
`crl_number`, `staged_left` (tests/test_group_pull.py, tests/test_group_pull_kill.py)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from crlbuilder.store.lmdbstore import Store
from tests.conftest import BIN


@contextlib.contextmanager
def pulling(group: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`crlbuilder group pull --group GROUP EXTRA...`, running; its stderr (the pass's events)
    piped for `communicate`; killed (SIGKILL) and reaped on the way out if still running."""
    proc = subprocess.Popen(
        [str(BIN / "crlbuilder"), "group", "pull", "--group", str(group), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def wait_asked(gets: Callable[[], list[str]], path: str, seconds: float = 60) -> None:
    """Until ``path`` is among the paths asked (``gets``: the 機構's `Kikou.gets`), at most
    ``seconds``; the caller asserts what was asked."""
    deadline = time.monotonic() + seconds
    while path not in gets() and time.monotonic() < deadline:
        time.sleep(0.02)


def stop_with_sigterm(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """SIGTERM to ``proc`` (`systemctl stop`), then its stderr and how long it took to exit
    (waited for 60 s at most)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err, time.monotonic() - t0


def crl_number(group: Path, index: int = 1) -> int:
    """The CRL number the group's store holds for its issuer ``index``: what the responder
    reads."""
    store = Store.open(group / "store", readonly=True)
    try:
        with store.read() as r:
            return r.crl_state(index).number
    finally:
        store.close()


def staged_left(group: Path) -> list[str]:
    """The staged stores (dot names) left in the group directory."""
    return [p.name for p in group.iterdir() if p.name.startswith(".")]
