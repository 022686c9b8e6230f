"""The loopback ports `make demo` listens on: the usual ones when free, any free one otherwise.

The demo runs two responders, the 機構's and a group appliance's (団体署名検証者), each
with a public port and an admin listener for /metrics: four ports, `USUAL`. Another demo
or another service on one of them made the demo fail. Now a usual port that is taken
gives way to 0, and the responder binds a free port and prints it (``listening on URL``,
``metrics on URL``), which the demo reads and prints. A port the user names (``--port``
and the like) is theirs: taken, it is refused before anything starts, in one line; 0 asks
for any free port.

`choose` decides (no I/O: whether a port is taken is asked of ``taken``); `in_use` probes,
as the responder does before it binds with SO_REUSEPORT (`responder.server.bind_sockets`):
a bind without SO_REUSEPORT fails on any listener, whatever its options.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Final

__all__ = ["HOST", "USUAL", "PortTaken", "choose", "in_use"]

HOST: Final = "127.0.0.1"
USUAL: Final = {"port": 8080, "metrics_port": 9482, "group_port": 8081, "group_metrics_port": 9481}
"""Each listener's usual port, by the name of its option (``--metrics-port``: ``metrics_port``)."""


class PortTaken(Exception):
    """A port the user asked for is in use: ``str()`` is the one-line message."""


def choose(name: str, asked: int | None, taken: Callable[[int], bool]) -> tuple[int, str]:
    """The port to give listener ``name`` (0: any free one) and a note when it is not the usual.

    ``asked``: the port the user gave (None: none, the usual one if free). Raises
    `PortTaken` when the user's port is in use.
    """
    option = "--" + name.replace("_", "-")
    if asked is not None:
        if asked != 0 and taken(asked):
            raise PortTaken(
                f"demo: {HOST}:{asked} ({option}) is in use; choose another, or 0 for any free port"
            )
        return asked, ""
    usual = USUAL[name]
    if taken(usual):
        return 0, f"{HOST}:{usual} is in use: a free port instead ({option} to choose one)"
    return usual, ""


def in_use(port: int, host: str = HOST) -> bool:
    """Whether something listens on ``host``:``port`` (a probe bind, closed at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False
