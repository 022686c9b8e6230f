"""The NATS server list a node is given (``nats://HOST:PORT[,...]``): parsed, and whether a server is on loopback.

`parse_servers` is the one reading of ``input.source`` / ``[cluster] nats`` (every
connection, `crlbuilder.jetstream.Cluster`, and the credential check before it,
`crlbuilder.natsauth.check_credential`); `is_loopback` says which servers may be reached
without a credential. Pure functions of strings.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback", "parse_servers"]


def parse_servers(source: str) -> list[str]:
    """``nats://h:p[,nats://h:p...]`` (or ``nats://h:p,h:p``) to a list of server URLs.

    Raises `ValueError` naming what is wrong: another scheme, a missing host or port.
    """
    out: list[str] = []
    for raw in source.split(","):
        part = raw.strip()
        if not part:
            continue
        url = part if "://" in part else f"nats://{part}"
        u = urlsplit(url)
        if u.scheme not in ("nats", "tls"):
            raise ValueError(f"{part!r}: a record source is nats://HOST:PORT")
        try:
            port = u.port
        except ValueError:
            port = None
        if not u.hostname or port is None:
            raise ValueError(f"{part!r}: a NATS server is nats://HOST:PORT")
        if u.path not in ("", "/") or u.query:
            raise ValueError(f"{part!r}: a NATS server URL has no path or query")
        out.append(f"{u.scheme}://{u.hostname}:{port}")
    if not out:
        raise ValueError("no NATS server named (nats://HOST:PORT[,nats://HOST:PORT...])")
    return out


def is_loopback(server: str) -> bool:
    """The server URL's host is this host's loopback (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
