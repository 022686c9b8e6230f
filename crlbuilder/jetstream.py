"""A blocking connection to the NATS JetStream cluster that carries several nodes' shared state.

Both binaries are synchronous (the builder's LMDB commits, the responder's master), and
nats-py is asyncio: `Cluster` owns one private event loop and runs each operation to
completion on it (`Cluster.run`), so callers stay synchronous and the client's own tasks
(pings, reconnection to another server of the cluster) run while an operation waits.

It owns what every use of the cluster shares and nothing of any one use: parsing the
server list (``nats://HOST:PORT[,nats://HOST:PORT...]``), connecting with reconnection
to the other servers when one dies, and the replication factor of what is created
(three copies when the cluster has three servers or more, one otherwise). The record
stream is `crlbuilder.stream`.

Connecting fails once every server named failed once (`ClusterError`): a one-shot command
(``publish``, ``snapshot``, a registry change) says so and exits. A command that runs until
stopped (``build --source ... --follow``, ``responder registry sync --follow``) connects
through `wait_for_cluster` instead, which tries again until the cluster answers: a node
whose NATS server starts after it, or restarts meanwhile, is not left down.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from crlbuilder.lifecycle import StopRequest
from crlbuilder.natsauth import ConnectOptions, NatsAuth, NatsAuthError, resolve

T = TypeVar("T")

_nats_log = logging.getLogger("nats.aio.client")


def _not_eof_noise(record: logging.LogRecord) -> bool:
    """asyncio's warning at every TLS connection's end (nats-py's stream protocol asks to
    keep a half-closed TLS transport open, which asyncio cannot): it says nothing wrong, and
    as a second stderr line it broke every command's one-line refusal over TLS."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_not_eof_noise)


class ClusterError(Exception):
    """The cluster cannot be reached or refused an operation; the message says which."""


class CredentialError(ClusterError):
    """This node's NATS credential cannot be used (`crlbuilder.natsauth`): nothing was tried,
    and trying again would not help (`wait_for_cluster` lets it through at once)."""


def replicas_for(cluster_size: int, configured: int) -> int:
    """Copies of a stream: ``configured`` when set, else three on a cluster of three or more."""
    if configured:
        return configured
    return 3 if cluster_size >= 3 else 1


class Cluster:
    """One connection to the cluster, used synchronously (see the module docstring)."""

    def __init__(
        self,
        servers: list[str],
        *,
        connect_timeout: float = 5.0,
        warn: Callable[[str], None] | None = None,
        auth: NatsAuth | None = None,
        once: bool = False,
    ) -> None:
        """Connect (`ClusterError` when no server answers, or ``auth`` cannot be used or is
        refused). ``auth``: the credential (`crlbuilder.natsauth`), each path overridden by its
        ``JPKI_VA_NATS_*`` environment variable; None: those variables only. ``warn`` gets a line for each
        error of the connection once made (a server gone, a reconnection refused), the same
        line at most every `WARN_EVERY` seconds; by default nats-py's logger does, without
        its traceback.

        ``once``: a connection for one exchange, made again by the next (the ledger's, on
        worker 0's collection timer): once it is lost, every operation run on it, the one
        under way included, fails at once with `ConnectionLost`, instead of waiting through
        the reconnection (an acknowledgement the lost server owed never comes: its wait
        would never end, and the timer's every later collection with it)."""
        self.servers = servers
        self._lost: asyncio.Event | None = asyncio.Event() if once else None
        try:
            options = resolve((auth or NatsAuth()).with_environ(), servers)
        except NatsAuthError as e:
            raise CredentialError(f"cannot connect to NATS at {','.join(servers)}: {e}") from None
        throttled = _Throttled(warn)
        self.loop = asyncio.new_event_loop()
        try:
            self.nc: Client = self.loop.run_until_complete(
                _connect(servers, connect_timeout, throttled, options, self._lost)
            )
        except (ClusterError, OSError, nats.errors.Error, TimeoutError) as e:
            self._close_loop()
            anonymous = " (this node has no NATS credential)" if options.warning else ""
            if "tls" not in options.kwargs and "SSL" in str(e):  # the servers speak TLS only
                anonymous += (
                    " (the servers speak TLS: set nats_tls_ca or JPKI_VA_NATS_TLS_CA to the "
                    "CA file of their certificates)"
                )
            raise ClusterError(
                f"cannot connect to NATS at {','.join(servers)}: {e}{anonymous}"
            ) from None
        if options.warning and tuple(servers) not in _WARNED_ANONYMOUS:
            # connected without a credential (loopback only): said once a process (a
            # responder connects often); a failure says it in its own line instead
            _WARNED_ANONYMOUS.add(tuple(servers))
            throttled.line(options.warning)
        self.js: JetStreamContext = self.nc.jetstream()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run one operation on the connection's loop to its end, or for at most ``timeout``
        seconds (then `TimeoutError`, the operation cancelled): for an operation that nothing
        else bounds, such as reading an object (nats-py waits for its chunks for ever, and they
        never come when the object was replaced between its description and its chunks)."""
        if self._lost is not None:
            coro = _unless_lost(coro, self._lost)
        if timeout is None:
            return self.loop.run_until_complete(coro)
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def cluster_size(self) -> int:
        """Servers of the cluster as this connection knows them (configured and announced)."""
        info: dict[str, Any] = getattr(self.nc, "_server_info", {}) or {}
        urls = {str(u) for u in info.get("connect_urls", []) or []}
        return max(len(urls), len(self.servers), 1)

    def close(self) -> None:
        """Close at once: every publish and acknowledgement was awaited already (a drain
        would wait for a pull request's expiry)."""
        try:
            if not self.nc.is_closed:  # not `run`: a lost connection of ``once`` is closed too
                self.loop.run_until_complete(self.nc.close())
        except (nats.errors.Error, OSError, TimeoutError):
            pass
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:  # the client's watchers and timers: ended, not left dangling
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


_WARNED_ANONYMOUS: set[tuple[str, ...]] = set()
"""The server lists this process was told it reaches without a credential (loopback only)."""

WARN_EVERY: Final = 10.0
"""Seconds between two identical warnings of one connection (a reconnection loop retries
five times a second)."""


class _Throttled:
    """The connection's errors as one line each, an identical one at most every `WARN_EVERY` s."""

    __slots__ = ("_last", "_warn")

    def __init__(self, warn: Callable[[str], None] | None) -> None:
        self._warn = warn
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, e: Exception) -> None:
        text = str(e) or type(e).__name__
        if 'violation for subscription to "_inbox' in text.lower():  # its replies refused
            text += (
                " (the servers let each NATS user read its own inbox only: set "
                "JPKI_VA_NATS_INBOX to the one `crlbuilder nats-config` wrote beside its user)"
            )
        self.line(f"NATS: {text}")

    def line(self, line: str) -> None:
        """Pass ``line`` on, unless it was the last one, less than `WARN_EVERY` s ago."""
        now = time.monotonic()
        if line == self._last[0] and now - self._last[1] < WARN_EVERY:
            return
        self._last = (line, now)
        if self._warn is not None:
            self._warn(line)
        else:
            _nats_log.warning("%s", line)


async def _connect(
    servers: list[str],
    connect_timeout: float,
    warn: Callable[[Exception], None],
    options: ConnectOptions,
    lost: asyncio.Event | None = None,
) -> Client:
    """A client connected to one of ``servers``, reconnecting to any of them for ever after;
    `ClusterError` once every server failed once (refused, timed out, not NATS).

    nats-py retries its first connection for ever when reconnection is unlimited (and logs a
    traceback at each attempt): a command would then hang, silent but for the tracebacks,
    while no server answers. So its errors are counted until it is connected, and the attempt
    is given up when there are as many as servers, or at the first TLS error (a certificate
    that does not check out: nats-py then hangs rather than try the next server, and trying
    again changes nothing). After that, each error goes to ``warn``, and ``lost`` (when
    given) is set at the first disconnection.
    """
    nc = Client()
    failures: list[Exception] = []
    every_one_failed = asyncio.Event()
    connected = False

    async def on_error(e: Exception) -> None:
        if connected:
            warn(e)
            return
        failures.append(e)
        # a certificate refused is final (and nats-py tries no other server after it)
        if len(failures) >= len(servers) or isinstance(e, ssl.SSLError):
            every_one_failed.set()

    async def on_disconnect() -> None:
        if connected and lost is not None:
            lost.set()

    connecting = nc.connect(
        servers=servers,
        error_cb=on_error,
        connect_timeout=connect_timeout,  # type: ignore[arg-type]  # typed int, used as float
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,  # type: ignore[arg-type]
        allow_reconnect=True,
        name="jpki-va",
        disconnected_cb=on_disconnect,
        **options.kwargs,  # the credential and TLS (`crlbuilder.natsauth`)
    )
    done = await _first(connecting, every_one_failed)
    if done is None:
        await nc.close()
        raise ClusterError(str(failures[-1]) or type(failures[-1]).__name__)
    done.result()  # what nats-py raised, if it did
    connected = True
    return nc


async def _first(op: Coroutine[Any, Any, T], event: asyncio.Event) -> asyncio.Future[T] | None:
    """Run ``op`` until it ends or ``event`` is set, whichever comes first: ``op``'s task, done
    (its result or exception), or None when ``event`` came first (``op`` cancelled)."""
    task = asyncio.ensure_future(op)
    if event.is_set():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    watch = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    return None if task.cancelled() else task


class ConnectionLost(nats.errors.Error):
    """The connection of a `Cluster` made ``once`` was lost (its operation did not finish)."""

    def __str__(self) -> str:
        return "nats: connection lost"


async def _unless_lost(coro: Coroutine[Any, Any, T], lost: asyncio.Event) -> T:
    """``coro``'s result, or `ConnectionLost` as soon as ``lost`` is set (``coro`` cancelled)."""
    done = await _first(coro, lost)
    if done is None:
        raise ConnectionLost
    return done.result()


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


def wait_for_cluster(
    connect: Callable[[], C], *, interval: float, warn: Callable[[str], None]
) -> C | None:
    """``connect()`` (a `Cluster`, or what opens one), made again every ``interval`` seconds
    while it raises `ClusterError`, each failure passed to ``warn``; None when SIGTERM or
    SIGINT arrives first (then nothing stays connected). For the commands that run until
    stopped, at their start; its own handlers of the two signals hold while it waits, the
    caller's are back when it returns. Anything else ``connect`` raises (a bad address is
    refused before connecting), and a `CredentialError` (a seed file unreadable or too open),
    goes through at once.

    The wait is the caller's own loop interval (the builder's ``input.follow_interval``),
    not a backoff: the servers it waits for are a boot or a restart away, and a node should
    follow them within that interval; a warning per attempt says what it waits for. A stop
    is seen within 0.1 s while it sleeps, and after the connection attempt under way (at
    most the connection timeout per server: a refused connection fails at once).
    """
    with StopRequest() as stop:
        while not stop.requested:
            try:
                got = connect()
            except CredentialError:
                raise
            except ClusterError as e:
                if stop.requested:
                    break
                warn(f"{e}; trying again in {interval:g} s")
                deadline = time.monotonic() + interval
                while not stop.requested and (left := deadline - time.monotonic()) > 0:
                    time.sleep(min(left, 0.1))
                continue
            if stop.requested:  # connected, but asked to stop meanwhile
                got.close()
                break
            return got
        return None


async def through_election(request: Callable[[], Awaitable[T]], seconds: float = 30) -> T:
    """One JetStream API request, made again while it times out or the service is unavailable
    (a cluster that lost or regained a server elects a stream's leader again meanwhile), for
    at most ``seconds``; then the last error."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await request()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.25)


class StreamMissing(ClusterError):
    """A stream this node reads was not created yet by its writer (a wait may end it)."""


class StreamUnbounded(ClusterError):
    """A stream that must keep only its subjects' latest messages keeps every one (made before
    jpki-va bounded it): it grows until the servers' disks are full. Its operator replaces it
    (the message says how); nothing is written to it meanwhile."""


def foreign(
    config: api.StreamConfig,
    subjects: list[str],
    *,
    allow_direct: bool,
    max_msgs_per_subject: int = 0,
) -> str:
    """Why an existing stream's ``config`` is not one `ensure_stream` makes for ``subjects``
    (empty: it is). A stream is created by the first credential allowed to create it, with
    the settings it chose (NATS permissions name the stream, not its settings): other
    subjects (another stream's taken, its own refused), memory storage, or limits that drop
    messages (the ledger's counts, records) would otherwise be kept silently. Replicas and
    the duplicate window are the operator's to change and not judged. ``max_msgs_per_subject``
    (0: unlimited) must be the stream's exactly: a stream of latest values (the ledger's
    counters) kept with a larger limit, or none, would grow with every message."""
    unlimited = (None, -1, 0)
    if sorted(config.subjects or []) != sorted(subjects):
        return f"subjects {config.subjects}, not {subjects}"
    if config.storage not in (None, api.StorageType.FILE):
        return f"storage {_plain(config.storage)}, not file"
    if config.retention not in (None, api.RetentionPolicy.LIMITS):
        return f"retention {_plain(config.retention)}, not limits"
    for limit in ("max_msgs", "max_bytes", "max_age"):
        if getattr(config, limit) not in unlimited:
            return f"{limit} {getattr(config, limit)}, not unlimited"
    per_subject = config.max_msgs_per_subject
    if max_msgs_per_subject and per_subject != max_msgs_per_subject:
        if per_subject in unlimited:
            return f"max_msgs_per_subject unlimited, not {max_msgs_per_subject}"
        return f"max_msgs_per_subject {per_subject}, not {max_msgs_per_subject}"
    if not max_msgs_per_subject and per_subject not in unlimited:
        return f"max_msgs_per_subject {per_subject}, not unlimited"
    if allow_direct and not config.allow_direct:
        return "no direct get"
    return ""


def _plain(value: object) -> object:
    """An enum's value (nats-py gives a stream's settings as enums or as their strings)."""
    return getattr(value, "value", value)


def ensure_stream(
    cluster: Cluster,
    name: str,
    subjects: list[str],
    *,
    replicas: int = 0,
    duplicate_window_seconds: float = 86_400,
    allow_direct: bool = False,
    create: bool = True,
    max_msgs_per_subject: int = 0,
) -> None:
    """Create the stream when it does not exist (an existing one is left as it is, but one
    with other subjects, storage or limits is refused: `foreign`; one that keeps every
    message where ``max_msgs_per_subject`` is wanted raises `StreamUnbounded`): file
    storage, limits retention, replicated (`replicas_for`), deduplicated by message id;
    ``allow_direct``: its messages may be read with JetStream's direct get (any replica
    answers, raw bytes: no JSON, no base64). Not ``create`` (a reader, whose credential may
    not create it: `crlbuilder.natsconfig`): a missing stream raises `StreamMissing`."""

    async def go() -> None:
        try:
            info = await through_election(lambda: cluster.js.stream_info(name))
        except nats.js.errors.NotFoundError:
            if not create:
                raise StreamMissing(
                    f"stream {name} does not exist yet: its writer creates it, this node only "
                    "reads it"
                ) from None
        else:
            why = foreign(
                info.config,
                subjects,
                allow_direct=allow_direct,
                max_msgs_per_subject=max_msgs_per_subject,
            )
            if why and not foreign(info.config, subjects, allow_direct=allow_direct):
                # as jpki-va made it but for the bound: an earlier release's
                raise StreamUnbounded(
                    f"stream {name} keeps every message (no max_msgs_per_subject: made before "
                    f"jpki-va kept only the latest of each subject) and grows until the NATS "
                    f"disks are full; nothing is written to it. Once every node runs this "
                    f"version, delete it with an admin credential (nats stream rm {name}): "
                    f"the nodes make it again and each ships its whole ledger to it "
                    f"(docs/operations.md, the ledger stream)"
                )
            if why:
                raise ClusterError(
                    f"stream {name} is not as jpki-va makes it ({why}): made by another hand "
                    "(a credential allowed to create it chose its settings first); delete it "
                    "and let its writer make it again (docs/operations.md, NATS credentials)"
                )
            return
        cfg = api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=replicas_for(cluster.cluster_size(), replicas),
            duplicate_window=float(duplicate_window_seconds),
            discard=api.DiscardPolicy.OLD,
            allow_direct=allow_direct,
            max_msgs_per_subject=max_msgs_per_subject or -1,
        )
        await cluster.js.add_stream(cfg)

    try:
        cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"stream {name}: {e}") from None
