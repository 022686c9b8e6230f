"""Process supervision: one master, N forked workers sharing the listening sockets.

The master binds (SO_REUSEADDR; IPv4 and/or IPv6 as ``[server] hosts`` says),
forks the workers and watches them: a worker that dies is restarted (with an
exponential backoff when it keeps dying young); SIGTERM or SIGINT drains and
stops every worker and the master returns 0.

Reload: SIGHUP, or a connection to the master's reload socket (`responder.reloadctl`,
``responder reload --pid``, systemd's ExecReload), makes the master read the
configuration again and check it (its TLS chain too); it refuses it whole, or keeps
`reloaded` and sends that configuration itself to every worker over the worker's own
control socket (a socket pair made at the fork), numbered by a generation. The workers
never read the file: each applies what the master accepted (new limits, the TLS
certificate loaded again, ``app.reload(config)``, without dropping connections) and
confirms it, with its error if any; a worker still starting finds what was sent
meanwhile waiting on its socket and applies it before it serves, and one forked later
starts with it. Whoever asked through the socket gets the verdict once every worker
confirmed (or the master refused, a worker failed, none answered in
`RELOAD_CONFIRM_TIMEOUT`, or the master began to stop). Reload requests and SIGHUPs
that arrive together make one reload; a worker told several times applies the latest.

Each worker installs uvloop, builds its app with ``app_factory(config,
worker_index)`` *after* the fork (an LMDB environment must be opened in the
process that uses it), wraps it in `responder.http.HttpServer` and serves the
inherited sockets, terminating TLS itself when configured (the app then sees
the client certificate in ``Request.client_cert_der``).

Metrics: each worker's `HttpHooks` come from ``hooks_factory``, else from the
app's ``hooks`` attribute; the worker calls their ``close()`` (when present) as it
exits. The master reports worker starts, deaths and restarts to ``master_hooks``
(`MasterHooks`; by default `responder.metrics.MasterMetrics` when ``[metrics]
enabled``, which makes the workers' shared metrics directory before they fork).

Admin listener: with ``[metrics] enabled`` the master also binds ``[metrics] host``
and ``port`` (loopback by default) and the workers share that socket; each serves it
with the app's ``admin`` attribute (`responder.metrics.MetricsApp`: /metrics only) in an
`HttpServer` of its own, without TLS, hooks or access log, and with at most ``[metrics]
max_connections`` connections per worker. A worker whose app has no ``admin`` closes it.
/metrics is never on the public port, whose time belongs to the registered parties.

Readiness: once every worker is serving, the master prints one line per
address to stdout, ``listening on http://127.0.0.1:8080`` (https when TLS is
on), then ``metrics on http://127.0.0.1:9482`` for the admin listener, and
sends ``READY=1`` to systemd when ``NOTIFY_SOCKET`` is set. Lifecycle events
are one JSON object per line on stderr, never with request data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import ssl
import stat
import struct
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Final, Protocol, TextIO

import msgspec
import uvloop

from crlbuilder.keys import oplog
from crlbuilder.keys.signer import SignerError, read_private_file
from crlbuilder.lifecycle import die_with_parent
from crlbuilder.options import ConfigError
from responder.config import (
    MetricsConfig,
    ResponderConfig,
    ServerConfig,
    TlsConfig,
)
from responder.http import App, HttpHooks, HttpServer
from responder.reloadctl import Verdict, control_address, peer_credentials
from responder.tlsgauges import chain_not_after

__all__ = [
    "EXIT_STARTUP_FAILED",
    "AppFactory",
    "HooksFactory",
    "JsonLineFormatter",
    "MasterHooks",
    "bind_admin",
    "bind_sockets",
    "configure_logging",
    "load_chain",
    "make_ssl_context",
    "reloaded",
    "sd_notify",
    "serve",
    "server_context",
]

AppFactory = Callable[[ResponderConfig, int], App]
HooksFactory = Callable[[ResponderConfig, int], HttpHooks | None]
ConfigLoader = Callable[[], ResponderConfig]
MasterTick = Callable[[], None]


class MasterHooks(Protocol):
    """What the master reports about its workers (metrics); each call must be quick."""

    def on_workers_changed(self, serving: int) -> None:
        """The number of workers started and ready changed."""

    def on_worker_exit(self, pid: int, restarting: bool) -> None:
        """A worker exited; ``restarting``: another takes its place."""

    def close(self) -> None:
        """The master is exiting."""


EXIT_STARTUP_FAILED: Final = 3
"""A worker's exit code when its app or its servers could not start."""
BACKLOG: Final = 1024
MIN_UPTIME: Final = 5.0
"""A worker exiting sooner than this counts as a crash loop (backoff grows)."""
MAX_BACKOFF: Final = 10.0
KILL_GRACE: Final = 5.0
"""Seconds past the drain timeout before the master SIGKILLs a worker that will not stop."""
RELOAD_CONFIRM_TIMEOUT: Final = 20.0
"""Seconds the master waits for every worker to confirm a reload before its verdict says
which did not (within `responder.reloadctl`'s default wait of 30 s, and systemd's)."""
MAX_CONTROL_MESSAGE: Final = 1 << 20
"""The largest configuration message a worker reads (a configuration is a few KiB)."""

_READY: Final = struct.Struct("!HI")  # worker index, pid
_log = logging.getLogger("responder.server")


# -- logging -------------------------------------------------------------------------------


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ts, level, event (the message), pid and ``extra["fields"]``.

    Exceptions are reduced to their type name: messages may carry request data.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        return msgspec.json.encode(out).decode()


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send the ``responder`` loggers, and ``crlbuilder.keys`` (signing keys: PKCS#11 sessions
    opened, a token not reachable), to ``stream`` (stderr) as JSON lines, once."""
    for name in ("responder", "crlbuilder.keys"):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(h, "_jpki_va", False) for h in logger.handlers):
            handler = logging.StreamHandler(stream or sys.stderr)
            handler.setFormatter(JsonLineFormatter())
            handler._jpki_va = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False


def _event(event: str, level: int = logging.INFO, **fields: object) -> None:
    _log.log(level, event, extra={"fields": fields})


# -- sockets, TLS, systemd -----------------------------------------------------------------


def bind_sockets(server: ServerConfig) -> list[socket.socket]:
    """Bind and listen on every ``server.hosts`` address; port 0 picks one port for all.

    An address another process listens on is refused (OSError ``EADDRINUSE`` naming it),
    also with ``server.reuseport``: SO_REUSEPORT would let this instance join another's
    socket group (another responder's, whatever its data), and the kernel would share the
    connections between the two. An OSError's ``filename`` is the address it is about.
    """
    port = server.port
    sockets: list[socket.socket] = []
    try:
        for host in server.hosts:
            name = host.strip("[]")
            try:
                family, kind, proto, _, addr = socket.getaddrinfo(
                    name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
            except socket.gaierror as exc:
                raise OSError(exc.errno, exc.strerror, host) from None
            where = f"{host}:{port}"
            if server.reuseport and port != 0:
                _refuse_taken(family, kind, proto, addr, where)
            sock = _new_socket(family, kind, proto, reuseport=server.reuseport)
            sockets.append(sock)
            _bind(sock, addr, where)
            sock.listen(BACKLOG)
            sock.setblocking(False)
            if port == 0:
                port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


_SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
"""An address as `socket.getaddrinfo` gives it."""


def _refuse_taken(
    family: socket.AddressFamily, kind: socket.SocketKind, proto: int, addr: _SockAddr, where: str
) -> None:
    """OSError ``EADDRINUSE`` when a socket listens on ``addr`` already: a probe bound
    without SO_REUSEPORT (SO_REUSEADDR only, as a listener's leftover TIME_WAIT
    connections do not count) fails on any listener, whatever its options."""
    with _new_socket(family, kind, proto, reuseport=False) as probe:
        _bind(probe, addr, where)


def _new_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, proto: int, *, reuseport: bool
) -> socket.socket:
    """A listening socket's options set: SO_REUSEADDR, SO_REUSEPORT when asked, IPv6 only."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _bind(sock: socket.socket, addr: _SockAddr, where: str) -> None:
    """``sock.bind(addr)``; an OSError names ``where`` (host:port) as its filename."""
    try:
        sock.bind(addr)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, where) from None


def bind_admin(metrics: MetricsConfig) -> socket.socket:
    """Bind and listen on the admin listener, ``[metrics] host`` and ``port`` (0: any free)."""
    try:
        where = ServerConfig(hosts=(metrics.host,), port=metrics.port, reuseport=False)
    except ValueError as exc:
        raise ConfigError("[metrics]", "metrics.host", str(exc)) from None
    return bind_sockets(where)[0]


def _own_socket(shared: socket.socket) -> socket.socket:
    """A worker's own listening socket on the shared one's address (SO_REUSEPORT group).

    The kernel spreads new connections over the group by their addresses, so each
    worker gets its share of a burst instead of whichever wakes first taking most
    of it; the inherited shared socket stays too, so a worker that dies leaves the
    port served by the others.
    """
    sock = socket.socket(shared.family, shared.type, shared.proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if shared.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(shared.getsockname()[:2])
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _urls(sockets: list[socket.socket], tls: bool) -> list[str]:
    scheme = "https" if tls else "http"
    urls = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        urls.append(f"{scheme}://{shown}:{port}")
    return urls


def make_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server context of ``[server.tls]``: TLS 1.2+, client certificates as configured."""
    return server_context(tls)[0]


def server_context(tls: TlsConfig) -> tuple[ssl.SSLContext, datetime | None]:
    """`make_ssl_context`, and the notAfter of the certificate it serves (`load_chain`)."""
    if tls.cert is None or tls.key is None:
        raise ValueError("TLS is not configured")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    not_after = load_chain(ctx, tls.cert, tls.key)
    ctx.set_alpn_protocols(["http/1.1"])
    if tls.client_cert != "none":
        try:
            ctx.load_verify_locations(cafile=tls.client_ca)
        except ssl.SSLError as exc:
            why = f" ({exc.reason})" if exc.reason else ""
            problem = f"not a PEM bundle of CA certificates{why}"
            raise ConfigError(str(tls.client_ca), "", problem) from None
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(tls.client_ca)) from None
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return ctx, not_after


def load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> datetime | None:
    """``[server.tls]`` cert and key into ``ctx``; every error names the file. The key file
    must be its owner's only (mode 0600), as every other key file (`SignerError`). Each must
    be a regular file (a symbolic link to one is fine for the certificate): OpenSSL opens the
    certificate itself, and one replaced by a named pipe held the master's loop in it on a
    reload. Returns the notAfter of the chain's first certificate, read from the file just
    before OpenSSL loads it (`responder.tlsgauges`; None when cryptography reads none)."""
    read_private_file(key)
    try:
        if not stat.S_ISREG(os.stat(cert).st_mode):
            raise ConfigError(str(cert), "", "not a regular file")
        not_after = chain_not_after(cert.read_bytes())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(cert)) from None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = f" ({exc.reason})" if exc.reason else ""
        problem = f"not a PEM certificate chain and its private key{why}"
        raise ConfigError(f"{cert}, {key}", "", problem) from None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(cert)) from None
    return not_after


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd's ``NOTIFY_SOCKET``; False when unset."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        _event("sd_notify_failed", logging.WARNING, error=exc.strerror or type(exc).__name__)
        return False
    return True


# -- the worker ----------------------------------------------------------------------------


class _Worker:
    """Everything one worker process does after the fork."""

    def __init__(
        self,
        index: int,
        config: ResponderConfig,
        sockets: list[socket.socket],
        app_factory: AppFactory,
        hooks_factory: HooksFactory | None,
        ready_fd: int,
        admin_socket: socket.socket | None = None,
        control: socket.socket | None = None,
    ) -> None:
        self.index = index
        self.config = config
        self.sockets = sockets
        self.admin_socket = admin_socket
        self.app_factory = app_factory
        self.hooks_factory = hooks_factory
        self.ready_fd = ready_fd
        self.control = control
        """Its end of the socket pair the master sends accepted configurations on."""
        self.ssl_context: ssl.SSLContext | None = None
        self.http: HttpServer | None = None
        self.app: App | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # a reload the master accepted between the fork and now: the app is made with it
        first = self._receive()
        if first is not None:
            self.config = reloaded(self.config, first[1])
        config = self.config
        limits = config.server.limits
        try:
            self.app = app = self.app_factory(config, self.index)
            hooks: HttpHooks | None = (
                self.hooks_factory(config, self.index)
                if self.hooks_factory
                else getattr(app, "hooks", None)
            )
            if config.server.tls.enabled:
                self.ssl_context, not_after = server_context(config.server.tls)
                self._tls_loaded(not_after)
            self.http = http = HttpServer.from_config(app, config.server, hooks=hooks)
            http.start()
            if first is not None:
                self._confirm(first[0], None)
            if self.control is not None:
                self.on_control()  # anything sent while the app was being made
                loop.add_reader(self.control.fileno(), self.on_control)
            if config.server.reuseport:
                self.sockets = self.sockets + [_own_socket(s) for s in self.sockets]
            servers = [
                await loop.create_server(
                    http,
                    sock=sock,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=limits.header_timeout if self.ssl_context else None,
                    backlog=BACKLOG,
                )
                for sock in self.sockets
            ]
            admin = await self._serve_admin(app)
            ready = getattr(app, "ready", None)
            if ready is not None:  # e.g. its signing processes loading their keys
                await ready()
        except Exception as exc:
            _event(
                "worker_start_failed",
                logging.ERROR,
                worker=self.index,
                exc_type=type(exc).__name__,
                error=_safe_error(exc),
            )
            return EXIT_STARTUP_FAILED
        stop: asyncio.Future[None] = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, _resolve, stop)
        os.write(self.ready_fd, _READY.pack(self.index, os.getpid()))
        os.close(self.ready_fd)
        await stop
        for server in servers:
            server.close()
        for sock in self.sockets:
            sock.close()
        if admin is not None:
            admin[0].close()
            await admin[1].drain(0.5)
        left = await http.drain(self.config.server.limits.drain_timeout)
        _event("worker_drained", worker=self.index, cut_connections=left)
        for what, obj in (("hooks", hooks), ("app", app)):
            close = getattr(obj, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:
                    _event(f"{what}_close_failed", logging.ERROR, exc_type=type(exc).__name__)
        return 0

    async def _serve_admin(self, app: App) -> tuple[asyncio.Server, HttpServer] | None:
        """Serve the app's ``admin`` app on the admin socket (none: close the socket)."""
        sock, self.admin_socket = self.admin_socket, None
        if sock is None:
            return None
        admin_app: App | None = getattr(app, "admin", None)
        if admin_app is None:
            sock.close()
            return None
        cfg = self.config
        limits = msgspec.structs.replace(
            cfg.server.limits, max_connections=cfg.metrics.max_connections
        )
        admin = HttpServer(admin_app, limits)
        admin.start()
        server = await asyncio.get_running_loop().create_server(admin, sock=sock, backlog=64)
        return server, admin

    def _receive(self) -> tuple[int, ResponderConfig] | None:
        """The latest (generation, configuration) the master sent and this worker has not
        read; None when none is waiting (or the master is gone: the worker stops with it)."""
        control, latest = self.control, None
        if control is None:
            return None
        while True:
            try:
                data = control.recv(MAX_CONTROL_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return latest
            except OSError:
                data = b""
            if not data:  # the master closed its end
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(control.fileno())
                return latest
            generation, config = pickle.loads(data)  # noqa: S301 (our own master's, a pair)
            assert isinstance(config, ResponderConfig)
            latest = (int(generation), config)

    def on_control(self) -> None:
        """The master sent configurations: the latest is put in force and confirmed."""
        got = self._receive()
        if got is not None:
            self._confirm(got[0], self.apply(got[1]))

    def _tls_loaded(self, not_after: datetime | None) -> None:
        """The serving context holds a new chain: the app's gauge says when it ends."""
        if not_after is None:
            _event("tls_not_after_unread", logging.WARNING, worker=self.index)
        loaded = getattr(self.app, "tls_loaded", None)
        if callable(loaded):
            loaded(not_after)

    def _confirm(self, generation: int, error: str | None) -> None:
        if self.control is None:
            return
        message = msgspec.json.encode({"generation": generation, "error": error})
        with contextlib.suppress(OSError):
            self.control.send(message)

    def apply(self, new: ResponderConfig) -> str | None:
        """Put in force the configuration the master accepted: new log level, limits and TLS
        certificate, then ``app.reload``. What is put in force is `reloaded`: the fields a
        reload applies, the others as this worker started (its siblings and the master run
        with them). A TLS chain that does not load (checked in a context of its own first: a
        failed load into the serving context leaves it without a key, and every handshake
        fails) changes nothing: the running configuration stays. None when in force, else
        why not (for the master's verdict; the log says it too)."""
        config = reloaded(self.config, new)
        tls = config.server.tls
        if self.ssl_context is not None and tls.cert is not None and tls.key is not None:
            try:
                load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls.cert, tls.key)
            except (OSError, ConfigError, SignerError) as exc:
                error = _safe_error(exc)
                _event("reload_failed", logging.ERROR, worker=self.index, error=error)
                return f"worker {self.index}: {error}; it runs the configuration before"
        self.config = config
        configure_logging(config.log.level)
        if self.http is not None:
            self.http.reconfigure(config.server)
        if self.ssl_context is not None and tls.cert is not None and tls.key is not None:
            try:
                not_after = load_chain(self.ssl_context, tls.cert, tls.key)
            except (OSError, ConfigError, SignerError) as exc:
                _event("tls_reload_failed", logging.ERROR, error=_safe_error(exc))
                return f"worker {self.index}: TLS chain: {_safe_error(exc)}"
            self._tls_loaded(not_after)
        reload = getattr(self.app, "reload", None)
        if callable(reload):
            try:
                reload(config)
            except Exception as exc:
                _event("app_reload_failed", logging.ERROR, exc_type=type(exc).__name__)
                return f"worker {self.index}: the app's reload failed ({type(exc).__name__})"
        _event("worker_reloaded", worker=self.index)
        return None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _safe_error(exc: BaseException) -> str:
    """An exception's description for logs: configuration and OS errors only carry paths."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    if isinstance(exc, ConfigError | ssl.SSLError | SignerError):  # SignerError: never a PIN or key
        return str(exc)
    return type(exc).__name__


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """asyncio's unhandled errors as one JSON line, without exception messages."""
    exc = context.get("exception")
    _event(
        "loop_error",
        logging.ERROR,
        message=str(context.get("message", "")),
        exc_type=type(exc).__name__ if exc is not None else None,
    )


def _run_worker(worker: _Worker) -> int:
    die_with_parent(signal.SIGTERM)  # the master died: stop serving
    loop = uvloop.new_event_loop()
    loop.set_exception_handler(_loop_exception)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(worker.run())
    finally:
        loop.close()


# -- the master ----------------------------------------------------------------------------


class _Child(msgspec.Struct):
    index: int
    started: float
    ready: bool = False
    control: socket.socket | None = None
    """The master's end of the worker's control socket pair (None once the worker closed it)."""
    sent: int = 0
    """The generation last sent to it (or it was forked with)."""
    confirmed: int = 0
    """The generation it last confirmed (or was forked with)."""


class _Pending(msgspec.Struct):
    """A reload accepted and sent, waiting for the workers' confirmations."""

    generation: int
    waiting: dict[int, int]
    """pid: worker index, of those told and not yet confirmed."""
    deadline: float
    clients: list[socket.socket]
    needs_restart: list[str]
    errors: list[str] = []
    confirmed: int = 0


RELOADED: Final = frozenset({
    "server.trusted_proxies", "server.client_cert_header", "server.limits",
    "server.tls.cert", "server.tls.key",
    "registry.path",
    "ocsp.max_certids", "ocsp.max_nonce", "ocsp.good_cache_entries",
    "ocsp.good_validity_seconds", "ocsp.sign_queue_per_party",
    "log", "ledger.collect_interval", "cluster.nodes", "watch.ready_requires_replication",
    "watch.unbound_cursors",
})  # fmt: skip
"""The fields (or whole sections) a reload applies: `HttpServer.reconfigure` (the limits,
the proxies, the client-certificate header), the server's chain loaded again, the log
level and access log, and `JpkiApp.reload` (the registry, the OCSP limits, the report's
age, this node's quota share, the changes feed's ``unbound_cursors``; readiness reads
``ready_requires_replication`` at each probe). Every other field is read once, when a
process or its routes start."""


def _changed(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> list[str]:
    """The dotted names of the leaf fields that differ, reloaded ones left out."""
    out: list[str] = []
    for f in msgspec.structs.fields(type(old)):
        path = prefix + f.name
        a, b = getattr(old, f.name), getattr(new, f.name)
        if path in RELOADED or a == b:
            continue
        if isinstance(a, msgspec.Struct):
            out += _changed(a, b, path + ".")
        else:
            out.append(path.removeprefix("server."))
    return out


def reloaded(running: ResponderConfig, new: ResponderConfig) -> ResponderConfig:
    """What a reload puts in force: ``running`` with the fields a reload applies (`RELOADED`)
    taken from ``new``, every other field as the processes started with it (`restart_fields`
    names those that differ: they wait for a restart). So a worker restarted after a reload
    runs what its siblings run, not a store, ledger directory or listener they do not, and the
    app, which reads some fields at each use (the ledger's directory, the cluster's), never
    uses a field the log said needs a restart. TLS turned on or off keeps ``[server.tls]`` as
    it runs."""
    if running.server.tls.enabled != new.server.tls.enabled:
        new = msgspec.structs.replace(
            new, server=msgspec.structs.replace(new.server, tls=running.server.tls)
        )
    merged = _merge(running, new, "")
    assert isinstance(merged, ResponderConfig)
    return merged


def _merge(running: msgspec.Struct, new: msgspec.Struct, prefix: str) -> msgspec.Struct:
    """``running`` with its `RELOADED` fields (dotted under ``prefix``) taken from ``new``."""
    changes: dict[str, object] = {}
    for f in msgspec.structs.fields(type(running)):
        path = prefix + f.name
        a, b = getattr(running, f.name), getattr(new, f.name)
        if a == b:
            continue
        if path in RELOADED:
            changes[f.name] = b
        elif (
            isinstance(a, msgspec.Struct)
            and isinstance(b, msgspec.Struct)
            and (merged := _merge(a, b, path + ".")) is not a
        ):
            changes[f.name] = merged
    return msgspec.structs.replace(running, **changes) if changes else running


def restart_fields(old: ResponderConfig, new: ResponderConfig) -> list[str]:
    """The fields changed from ``old`` to ``new`` that a reload (SIGHUP) does not apply and
    only a restart does (docs/operations.md, "The units"): every field but those it applies
    (`RELOADED`), so a field added later is named until someone makes a reload apply it.
    The ``[server]`` fields are named without their section (``port``, ``tls.client_ca``),
    and TLS turned on or off is ``tls``. Among them: the listeners, the client-certificate
    check (the TLS context's verify mode and CAs are set at start, a reload loads only the
    server's chain again), ``[metrics]``, ``[store]``, the ledger's directory, the signing
    threads, and what the /v1 routes, the group and the streams are made with."""
    fixed = _changed(old, new, "")
    if old.server.tls.enabled != new.server.tls.enabled:
        fixed.insert(0, "tls")
    return fixed


class _Master:
    def __init__(
        self,
        config: ResponderConfig,
        app_factory: AppFactory,
        hooks_factory: HooksFactory | None,
        reload_config: ConfigLoader | None,
        out: TextIO,
        master_hooks: MasterHooks | None = None,
        master_tick: MasterTick | None = None,
    ) -> None:
        self.config = config
        self.master_hooks = master_hooks
        self.master_tick = master_tick
        self.app_factory = app_factory
        self.hooks_factory = hooks_factory
        self.reload_config = reload_config
        self.out = out
        self.n_workers = config.server.worker_count
        self.children: dict[int, _Child] = {}
        self.failures = [0] * self.n_workers
        self.restart_at: dict[int, float] = {}
        self.pending_signals: list[int] = []
        self.sockets: list[socket.socket] = []
        self.admin_socket: socket.socket | None = None
        self.admin_urls: list[str] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.announced = False
        self.exit_code = 0
        self.ready_r = -1
        self.ready_w = -1
        self.generation = 0
        """Reloads accepted so far; what each worker's confirmation names."""
        self.pending: list[_Pending] = []
        self.latest: bytes | None = None
        """The message of the last reload accepted, (generation, configuration) pickled."""
        self.control: socket.socket | None = None
        """The reload socket (`responder.reloadctl`); None when it could not be bound."""

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.pending_signals.append(signum)

    def run(self) -> int:
        tls = self.config.server.tls
        try:
            if tls.enabled:
                make_ssl_context(tls)  # fail here, once, rather than in every worker
            self.sockets = bind_sockets(self.config.server)
            if self.config.metrics.enabled:
                self.admin_socket = bind_admin(self.config.metrics)
        except (OSError, ValueError, ConfigError, SignerError) as exc:  # ssl.SSLError is an OSError
            _event("master_start_failed", logging.ERROR, error=_safe_error(exc))
            self._report("close")
            for sock in self.sockets:
                sock.close()
            return 1
        urls = _urls(self.sockets, tls.enabled)
        self.admin_urls = _urls([self.admin_socket], False) if self.admin_socket else []
        self.ready_r, self.ready_w = os.pipe()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.control = _bind_control()
        _event("master_start", workers=self.n_workers, listen=urls, metrics=self.admin_urls)
        try:
            for index in range(self.n_workers):
                self._spawn(index, (wake_r, wake_w))
            buffer = b""
            while self.children or (not self.stopping and self.restart_at):
                controls = {
                    c.control.fileno(): pid
                    for pid, c in self.children.items()
                    if c.control is not None
                }
                watched = [self.ready_r, wake_r, *controls]
                if self.control is not None:
                    watched.append(self.control.fileno())
                readable, _, _ = select.select(watched, [], [], self._timeout())
                for fd in readable:
                    if fd in controls:
                        self._on_confirmations(controls[fd])
                clients = (
                    self._accept()
                    if self.control is not None and self.control.fileno() in readable
                    else []
                )
                if wake_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 512):
                            pass
                if self.ready_r in readable:
                    buffer += os.read(self.ready_r, 4096)
                    while len(buffer) >= _READY.size:
                        index, pid = _READY.unpack_from(buffer)
                        buffer = buffer[_READY.size :]
                        self._on_ready(index, pid, urls)
                signals, self.pending_signals = self.pending_signals, []
                self._on_master_signals(signals, clients)
                self._settle()
                self._tick()
                self._reap()
                now = time.monotonic()
                if not self.stopping:
                    for index, due in sorted(self.restart_at.items()):
                        if due <= now:
                            del self.restart_at[index]
                            self._spawn(index, (wake_r, wake_w))
                elif now >= self.stop_deadline and self.children:
                    for pid in self.children:
                        _kill(pid, signal.SIGKILL)
                    _event("workers_killed", logging.WARNING, pids=sorted(self.children))
                    self.stop_deadline = now + 3600
        finally:
            self._answer_pending("the responder stopped before every worker confirmed it")
            if self.control is not None:
                self.control.close()
            for child in self.children.values():
                if child.control is not None:
                    child.control.close()
            self._report("close")
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (wake_r, wake_w, self.ready_r, self.ready_w):
                os.close(fd)
            for sock in self.sockets:
                sock.close()
            if self.admin_socket is not None:
                self.admin_socket.close()
        _event("master_exit", code=self.exit_code)
        return self.exit_code

    def _report(self, what: str, *args: object) -> None:
        """Tell the master hooks; their failure is logged, never fatal to the master."""
        hooks = self.master_hooks
        if hooks is None:
            return
        try:
            getattr(hooks, what)(*args)
        except Exception as exc:
            _event("master_hooks_failed", logging.ERROR, call=what, exc_type=type(exc).__name__)

    def _serving(self) -> int:
        return sum(c.ready for c in self.children.values())

    def _timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = list(self.restart_at.values()) if not self.stopping else []
        deadlines += [p.deadline for p in self.pending]
        if self.stopping:
            deadlines.append(self.stop_deadline)
        if not deadlines:
            return 1.0
        return max(0.0, min(min(deadlines) - now, 1.0))

    def _tick(self) -> None:
        """``master_tick`` (about once a second, and before each fork); never fatal."""
        if self.master_tick is None:
            return
        try:
            self.master_tick()
        except Exception as exc:
            _event("master_tick_failed", logging.ERROR, exc_type=type(exc).__name__)

    def _spawn(self, index: int, wake: tuple[int, int]) -> None:
        self._tick()  # the worker inherits what the tick keeps (the last good registry)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:
            _event("fork_failed", logging.ERROR, worker=index, error=_safe_error(exc))
            self.restart_at[index] = time.monotonic() + 1.0
            return
        try:
            pid = os.fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            _event("fork_failed", logging.ERROR, worker=index, error=_safe_error(exc))
            self.restart_at[index] = time.monotonic() + 1.0
            return
        if pid == 0:  # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master turns it into SIGTERM
                # the master tells a worker of a reload on its control socket, never by signal
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for fd in (*wake, self.ready_r):
                    os.close(fd)
                ours.close()
                for other in (c.control for c in self.children.values()):
                    if other is not None:
                        other.close()  # the siblings' (the master's ends)
                if self.control is not None:
                    self.control.close()  # the master's reload socket
                theirs.setblocking(False)
                worker = _Worker(
                    index,
                    self.config,
                    self.sockets,
                    self.app_factory,
                    self.hooks_factory,
                    self.ready_w,
                    self.admin_socket,
                    theirs,
                )
                code = _run_worker(worker)
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    _event(
                        "worker_crashed", logging.ERROR, worker=index, exc_type=type(exc).__name__
                    )
            finally:
                with contextlib.suppress(BaseException):
                    oplog.end_all()  # the worker's signing sessions end, with their counts
                with contextlib.suppress(BaseException):
                    logging.shutdown()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.children[pid] = _Child(
            index, time.monotonic(), control=ours, sent=self.generation, confirmed=self.generation
        )
        _event("worker_start", worker=index, worker_pid=pid)

    def _on_ready(self, index: int, pid: int, urls: list[str]) -> None:
        child = self.children.get(pid)
        if child is None:
            return
        child.ready = True
        _event("worker_ready", worker=index, worker_pid=pid)
        self._report("on_workers_changed", self._serving())
        if not self.announced and self._serving() >= self.n_workers:
            self.announced = True
            for url in urls:
                print(f"listening on {url}", file=self.out, flush=True)
            for url in self.admin_urls:
                print(f"metrics on {url}", file=self.out, flush=True)
            sd_notify("READY=1")

    def _on_master_signals(self, signals: list[int], clients: list[socket.socket]) -> None:
        """The signals taken since the last turn, and the reload requests accepted: SIGTERM
        and SIGINT first (a reload asked with them is not made), then one reload for every
        SIGHUP and request of the turn (a storm of them is one reload, not one each)."""
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._on_master_signal(signum)
        if signal.SIGHUP in signals or clients:
            if self.stopping:
                _answer(clients, Verdict(ok=False, generation=self.generation,
                                         error="the responder is stopping"))  # fmt: skip
            else:
                self._reload(clients)

    def _on_master_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                if signum == signal.SIGINT:  # a second Ctrl-C: do not wait
                    self.stop_deadline = time.monotonic()
                return
            self._stop(signal.Signals(signum).name)
        elif signum == signal.SIGHUP and not self.stopping:
            self._reload([])

    def _accept(self) -> list[socket.socket]:
        """The reload requests waiting on the reload socket, from the master's own account or
        root only (the others closed unanswered, as a SIGHUP from them would fail)."""
        clients: list[socket.socket] = []
        assert self.control is not None
        while True:
            try:
                conn, _ = self.control.accept()
            except (BlockingIOError, InterruptedError):
                return clients
            except OSError as exc:
                _event("reload_request_failed", logging.WARNING, error=_safe_error(exc))
                return clients
            try:
                pid, uid, _ = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid not in (0, os.getuid()):
                _event("reload_request_refused", logging.WARNING, uid=uid)
                conn.close()
                continue
            _event("reload_requested", by_pid=pid)
            clients.append(conn)

    def _on_confirmations(self, pid: int) -> None:
        """Read what worker ``pid`` sent: its confirmations of reloads."""
        child = self.children.get(pid)
        if child is None or child.control is None:
            return
        while True:
            try:
                data = child.control.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the worker is exiting; _reap settles what it left
                child.control.close()
                child.control = None
                return
            try:
                ack = msgspec.json.decode(data, type=dict[str, int | str | None])
                generation = ack["generation"]
                error = ack.get("error")
            except (msgspec.DecodeError, KeyError):
                continue
            if not isinstance(generation, int):
                continue
            child.confirmed = max(child.confirmed, generation)
            for pending in self.pending:
                if pending.generation <= generation and pid in pending.waiting:
                    del pending.waiting[pid]
                    if isinstance(error, str):
                        pending.errors.append(error)
                    else:
                        pending.confirmed += 1
            if child.sent < self.generation and self.latest is not None:
                self._tell(pid, child, self.latest)  # reloads made while it applied one

    def _settle(self) -> None:
        """Answer the reloads every worker told has confirmed, or whose time is up."""
        now = time.monotonic()
        for pending in list(self.pending):
            if pending.waiting and now < pending.deadline:
                continue
            self.pending.remove(pending)
            errors = list(pending.errors)
            if pending.waiting:
                late = ", ".join(str(i) for i in sorted(pending.waiting.values()))
                errors.append(f"worker {late} did not confirm within {RELOAD_CONFIRM_TIMEOUT:g} s")
            verdict = Verdict(
                ok=not errors,
                generation=pending.generation,
                error=None if not errors else "not in force in every worker: " + "; ".join(errors),
                needs_restart=pending.needs_restart,
                workers=pending.confirmed,
            )
            _event(
                "reload_done" if verdict.ok else "reload_incomplete",
                logging.INFO if verdict.ok else logging.ERROR,
                generation=pending.generation,
                workers=pending.confirmed,
                error=verdict.error,
            )
            _answer(pending.clients, verdict)

    def _answer_pending(self, why: str) -> None:
        for pending in self.pending:
            _answer(pending.clients, Verdict(ok=False, generation=pending.generation,
                                             error=why, needs_restart=pending.needs_restart))  # fmt: skip
        self.pending.clear()

    def _stop(self, reason: str) -> None:
        self.stopping = True
        self.restart_at.clear()
        self._answer_pending("the responder is stopping: the reload was not confirmed")
        if self.control is not None:
            self.control.close()
            self.control = None
        sd_notify("STOPPING=1")
        _event("master_stop", reason=reason, workers=len(self.children))
        for sock in self.sockets:
            sock.close()  # the workers keep their copies until they stop accepting
        if self.admin_socket is not None:
            self.admin_socket.close()
            self.admin_socket = None
        self.stop_deadline = time.monotonic() + self.config.server.limits.drain_timeout + KILL_GRACE
        for pid in self.children:
            _kill(pid, signal.SIGTERM)

    def _reload(self, clients: list[socket.socket]) -> None:
        """Read the file, check it and its TLS chain too (as at start), and only then send it
        to the workers; a file or chain that does not load changes nothing (the workers are not
        told; the running configuration stays, ``reload_failed`` says why, and so does the
        verdict to ``clients``). The master keeps `reloaded` (the workers it starts later run
        what the others run) and waits for every worker's confirmation (`_settle`)."""
        fixed: list[str] = []
        if self.reload_config is not None:
            try:
                new = self.reload_config()
                effective = reloaded(self.config, new)
                if effective.server.tls.enabled:
                    make_ssl_context(effective.server.tls)
            except (ConfigError, OSError, SignerError) as exc:  # ssl.SSLError is an OSError
                error = _safe_error(exc)
                _event("reload_failed", logging.ERROR, error=error, kept="running")
                _answer(clients, Verdict(ok=False, generation=self.generation,
                                         error=f"refused, the running configuration kept: {error}"))  # fmt: skip
                return
            fixed = restart_fields(self.config, new)
            if fixed:
                _event(
                    "reload_needs_restart",
                    logging.WARNING,
                    fields_changed=fixed,
                    kept="running values until a restart",
                )
            self.config = effective
            configure_logging(effective.log.level)
        self.generation += 1
        _event("master_reload", workers=len(self.children), generation=self.generation)
        message = self.latest = pickle.dumps((self.generation, self.config))
        waiting: dict[int, int] = {}
        for pid, child in self.children.items():
            if self._tell(pid, child, message):
                waiting[pid] = child.index
        self.pending.append(
            _Pending(
                self.generation, waiting, time.monotonic() + RELOAD_CONFIRM_TIMEOUT,
                clients, fixed,
            )
        )  # fmt: skip
        self._settle()

    def _tell(self, pid: int, child: _Child, message: bytes) -> bool:
        """Send the latest configuration (``message``) to a worker, unless one it has not
        confirmed yet is on its way: then it is sent on that confirmation (one message at a
        time per worker, so a storm of reloads never fills a worker's socket, and it applies
        only the latest). True when the worker is to confirm it. One that cannot be sent to
        is stopped, and its successor starts with the configuration."""
        if child.control is None:
            return False  # exiting: its successor starts with the new configuration
        if child.sent > child.confirmed:
            return True  # sent on its next confirmation (`_on_confirmations`)
        try:
            child.control.send(message)
        except OSError as exc:
            _event("worker_not_told", logging.ERROR, worker=child.index, worker_pid=pid,
                   error=_safe_error(exc))  # fmt: skip
            _kill(pid, signal.SIGTERM)
            return False
        child.sent = self.generation
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.control is not None:
                child.control.close()
            for pending in self.pending:  # its successor starts with the master's configuration
                pending.waiting.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - child.started
            _event(
                "worker_exit",
                logging.INFO if self.stopping else logging.WARNING,
                worker=child.index,
                worker_pid=pid,
                exit_code=code,
                seconds=round(lived, 3),
            )
            restarting = not self.stopping and not (
                code == EXIT_STARTUP_FAILED and not self.announced
            )
            self._report("on_worker_exit", pid, restarting)
            self._report("on_workers_changed", self._serving())
            if self.stopping:
                continue
            if code == EXIT_STARTUP_FAILED and not self.announced:
                self.exit_code = 1
                self._stop("worker_start_failed")
                continue
            index = child.index
            self.failures[index] = self.failures[index] + 1 if lived < MIN_UPTIME else 0
            # 0.1 s doubling to MAX_BACKOFF; the exponent bounded: 2 ** 1024 is no float, and
            # a worker dying young for hours (1,024 times at 10 s) stopped the master with it
            delay = (
                0.0
                if self.failures[index] == 0
                else min(MAX_BACKOFF, 0.1 * 2 ** min(self.failures[index] - 1, 16))
            )
            self.restart_at[index] = time.monotonic() + delay
            _event("worker_restart", worker=index, delay=round(delay, 3))


def _bind_control() -> socket.socket | None:
    """The master's reload socket (`responder.reloadctl.control_address`); None, logged,
    when it cannot be bound (SIGHUP still reloads)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(control_address(os.getpid()))
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        _event("reload_socket_unavailable", logging.WARNING, error=_safe_error(exc))
        return None
    return sock


def _answer(clients: list[socket.socket], verdict: Verdict) -> None:
    """Send ``verdict`` to each waiting ``responder reload`` and close its connection."""
    line = msgspec.json.encode(verdict) + b"\n"
    for conn in clients:
        with contextlib.suppress(OSError):
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(line)
        conn.close()


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def serve(
    config: ResponderConfig,
    app_factory: AppFactory,
    *,
    reload_config: ConfigLoader | None = None,
    hooks_factory: HooksFactory | None = None,
    master_hooks: MasterHooks | None = None,
    master_tick: MasterTick | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the master and its workers until SIGTERM/SIGINT; the process exit code.

    ``app_factory(config, worker_index)`` runs in each worker after the fork.
    ``reload_config`` (e.g. ``lambda: load_config(path, overrides)``) is called by
    the master on SIGHUP or a reload request (`responder.reloadctl`), never by a
    worker: the master sends what it accepted to the workers; without it a reload
    reloads the app with the same configuration. ``hooks_factory(config,
    worker_index)`` gives each worker its `HttpHooks` (metrics; without it the app's
    ``hooks`` attribute, if any). ``master_hooks`` hears of workers starting, dying
    and being restarted, and is closed when the master exits; when None and
    ``[metrics] enabled``, it is `responder.metrics.MasterMetrics`, made here before
    any fork (it prepares the directory the workers' metrics share). ``out`` receives
    the ``listening on URL`` lines (stdout by default). ``master_tick`` runs in the master
    about once a second and just before each fork, so that what it keeps in the master's
    memory is what a new worker inherits (the last good registry, `responder.cli`); its
    failure is logged, never fatal. Returns 0 after a clean
    stop, 1 when the metrics directory, the sockets, TLS or the first start of a
    worker failed.
    """
    configure_logging(config.log.level)
    if master_hooks is None and config.metrics.enabled:
        from responder.metrics import MasterMetrics

        try:
            master_hooks = MasterMetrics(config.metrics, workers=config.server.worker_count)
        except (ConfigError, OSError) as exc:
            _event("master_start_failed", logging.ERROR, error=_safe_error(exc))
            return 1
    master = _Master(
        config,
        app_factory,
        hooks_factory,
        reload_config,
        out or sys.stdout,
        master_hooks,
        master_tick,
    )
    return master.run()
