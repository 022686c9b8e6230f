"""A loopback TCP connection reset on purpose, known to be taken by the server's kernel.

`reset` closes a client's socket with a TCP reset (RST: ``SO_LINGER`` 0) and returns once
the server's side of the connection has taken it: that socket has left the kernel's table
of connections (/proc/net/tcp, /proc/net/tcp6), as a reset socket does; the process that
holds it learns of the reset only when it next reads or writes it. On loopback the reset
is usually taken before the close returns, but a loaded machine may leave it to the
kernel's softirq thread, to be taken after the server has read and answered what came
before it: a test that means "the client was gone before its answers" waits for it.
`server_socket` and `wait_closed` wait for the server's process to have closed its socket of
the connection (what it does only after it has dealt with the reset): a test that goes on
with other connections meanwhile would race it.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def _sockets() -> dict[tuple[int, int], int]:
    """(local port, remote port) -> inode of every TCP socket in the kernel's tables, any state."""
    out: dict[tuple[int, int], int] = {}
    for table in _TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = fields[1], fields[2]
            ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            out[ports] = int(fields[9])
    return out


def reset(sock: socket.socket, timeout: float = 10.0) -> None:
    """Reset ``sock`` (a connected client socket) and wait until the server's socket of the
    connection has taken the reset; AssertionError after ``timeout`` seconds."""
    client = sock.getsockname()[1]
    server = sock.getpeername()[1]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    deadline = time.monotonic() + timeout
    while (server, client) in _sockets():
        if time.monotonic() > deadline:
            raise AssertionError(f"the server's socket did not take the reset in {timeout} s")
        time.sleep(0.001)


def server_socket(sock: socket.socket) -> int:
    """The inode of the server's socket of ``sock``'s connection (a connected loopback
    client socket), from the kernel's table of connections; read it before a `reset`."""
    client = sock.getsockname()[1]
    server = sock.getpeername()[1]
    inode = _sockets().get((server, client))
    if inode is not None:
        return inode
    raise AssertionError("the server's socket of the connection is not in the kernel's tables")


def _holds(pid: int, target: str) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def wait_closed(inode: int, pids: list[int], timeout: float = 30.0) -> None:
    """Wait until none of ``pids`` holds the socket ``inode`` (`server_socket`) open: the
    server has dealt with the connection's end (an asyncio transport closes its socket
    after the protocol's ``connection_lost``); AssertionError after ``timeout`` seconds."""
    target = f"socket:[{inode}]"
    deadline = time.monotonic() + timeout
    while any(_holds(pid, target) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not close the reset connection in {timeout} s")
        time.sleep(0.001)
