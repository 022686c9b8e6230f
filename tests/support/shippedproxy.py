"""deploy/haproxy/haproxy.cfg run for real on loopback: the shipped file with only what a
test needs changed (plain HTTP in front, since the tests' parties use bearer tokens; the
admin socket in the test's directory; a lower ``maxconn`` for the test's fd limit).

Named for what it runs, not ``haproxy``: ``echo_app.py`` runs with this folder first on
``sys.path`` (see the package docstring).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import procs
from tests.support.nats import free_ports

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


def loopback_config(port: int, sock: Path) -> str:
    """The deploy file, with plain HTTP on loopback in front and the admin socket in ``sock``."""
    text = HAPROXY_CFG.read_text()
    text, n = re.subn(r"(?m)^    bind :443 ssl .*$", f"    bind 127.0.0.1:{port}", text)
    assert n == 1
    text, n = re.subn(r"(?m)^    http-request set-header client-cert .*ssl_c_der.*$", "", text)
    assert n == 1
    text, n = re.subn(r"/run/haproxy/admin\.sock", str(sock), text)
    assert n == 1
    return text.replace("maxconn 20000", "maxconn 2000")  # the test's fd limit


@contextlib.contextmanager
def shipped_haproxy(
    d: Path,
    ports: list[int],
    env: Mapping[str, str] | None = None,
    edit: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """The shipped haproxy in front of the responders on ``ports`` (the first three are
    node1..3; node1 is also the signer); its (host, port). ``env`` adds to the environment
    haproxy reads (its bounds, say); ``edit`` replaces lines of the file (old: new, each
    found exactly once; a shorter timeout, say). Stopped by PID."""
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(exe, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("haproxy missing (Debian package haproxy)")
        pytest.skip("haproxy missing (Debian package haproxy)")
    (port,) = free_ports(1)
    cfg = d / "haproxy.cfg"
    text = loopback_config(port, d / "admin.sock")
    for old, new in (edit or {}).items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    cfg.write_text(text)
    nodes = (ports * 3)[:3]  # fewer than three: the same responder stands for the others
    full = {**os.environ, **{f"JPKI_VA_NODE{i}": f"127.0.0.1:{p}" for i, p in enumerate(nodes, 1)}}
    full["JPKI_VA_SIGNER"] = full["JPKI_VA_NODE1"]
    full.update(env or {})
    with (d / "haproxy.log").open("ab") as log:
        p = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, env=full)  # fmt: skip
        try:
            yield "127.0.0.1", port
        finally:
            procs.stop(p, signal.SIGTERM, 10)
