"""`responder reload`: ask a running master to reload its configuration and wait for its verdict.

``systemctl reload`` ran ``kill -HUP $MAINPID`` and said success as soon as the signal was
sent, whatever the master then made of the file (a refusal was in the journal only). The
master (`responder.server`) also listens on an abstract Unix socket named after its pid
(`control_address`): a connection is one request to reload, answered, once every worker has
put the new configuration in force (or the master refused it), by one JSON line, a `Verdict`,
after which the master closes it. `responder reload --pid PID` (the units' ExecReload) makes
that request and exits 0 only when the configuration was accepted and applied by every
worker, else 1 with the reason on stderr.

Only the master's own account or root may ask (the kernel's SO_PEERCRED, checked by the
master, as for a SIGHUP), and the command checks that the socket's owner is the pid it was
given (another process cannot stand in for the master by taking its name first).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from typing import Final

import msgspec

__all__ = ["ReloadError", "Verdict", "add_cli", "control_address", "peer_credentials", "request"]

_CRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_VERDICT_BYTES: Final = 64 << 10


class Verdict(msgspec.Struct, forbid_unknown_fields=False):
    """The master's answer to one reload request."""

    ok: bool
    """The configuration was accepted and every worker put it in force."""
    generation: int
    """The master's reload count once done (unchanged when refused)."""
    error: str | None = None
    """Why not, when not ``ok``."""
    needs_restart: list[str] = []
    """Fields changed in the file that only a restart applies (`responder.server`)."""
    workers: int = 0
    """The workers that confirmed it."""


class ReloadError(Exception):
    """No verdict: no such master, not ours, or no answer in time."""


def control_address(pid: int) -> bytes:
    """The abstract Unix socket address the master of process ``pid`` listens on."""
    return b"\0jpki-va-responder/%d/reload" % pid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """The (pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


def request(pid: int, timeout: float) -> Verdict:
    """Ask the master of process ``pid`` to reload; its `Verdict` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(control_address(pid))
        except OSError as exc:
            raise ReloadError(
                f"no responder master with pid {pid} answers reload requests ({exc.strerror})"
            ) from None
        owner = peer_credentials(sock)[0]
        if owner != pid:
            raise ReloadError(f"the reload socket of pid {pid} is held by pid {owner}")
        data = b""
        while b"\n" not in data and len(data) < MAX_VERDICT_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReloadError(f"no verdict from pid {pid} within {timeout:g} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                raise ReloadError(f"no verdict from pid {pid} within {timeout:g} s") from None
            except OSError as exc:
                raise ReloadError(f"pid {pid}: {exc.strerror}") from None
            if not chunk:
                break
            data += chunk
    try:
        return msgspec.json.decode(data.split(b"\n", 1)[0], type=Verdict)
    except msgspec.DecodeError:
        raise ReloadError(f"pid {pid} closed without a verdict (stopping?)") from None


def _run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        verdict = request(args.pid, args.timeout)
    except ReloadError as exc:
        print(f"responder reload: error: {exc}", file=err)
        return 1
    if not verdict.ok:
        print(f"responder reload: error: {verdict.error}", file=err)
        return 1
    print(f"reloaded: generation {verdict.generation}, {verdict.workers} workers")
    if verdict.needs_restart:
        fields = ", ".join(verdict.needs_restart)
        print(f"responder reload: warning: changed, applied at the next restart only: {fields}",
              file=err)  # fmt: skip
    return 0


def add_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``responder reload``."""
    p = sub.add_parser(
        "reload",
        help="reload a running server's configuration and wait for its verdict",
        description="Asks the master of `responder serve` (its pid: systemd's $MAINPID) to "
        "read its configuration again, as SIGHUP does, and waits until every worker runs it. "
        "Exit 0: in force (a warning names what changed but needs a restart); 1: refused (the "
        "running configuration kept), not applied by every worker, or no answer.",
    )
    p.add_argument("--pid", type=int, required=True, help="the master's process id")
    p.add_argument(
        "--timeout", type=float, default=30.0,
        help="seconds to wait for the verdict (default 30)",
    )  # fmt: skip
    p.set_defaults(func=_run)
