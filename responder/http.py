"""HTTP/1.1 for one worker: bytes in, a `Request` to the app, a `Response`'s bytes out.

Owns the wire protocol and nothing above it: an `asyncio.Protocol`
(`HttpProtocol`) driven by httptools' llhttp parser, and the per-worker
`HttpServer` that holds the app, the limits, the shared clock and the open
connections. OCSP, party authentication and routing are the app's business;
the app sees only `Request` and answers with a `Response` (synchronously on
the fast path, or with an awaitable for slow work such as a fresh signature).

What it guarantees: keep-alive and pipelining (answers strictly in request
order, even when an earlier one is still being computed), HTTP/1.0,
``Connection: close``, ``Content-Length``/``Date``/``Server`` on every answer,
one ``transport.write`` of pre-joined bytes per small answer, and the limits of
`responder.config.LimitsConfig`: 413 (body), 414/431 (request line/headers),
408 (headers or body too slow), idle keep-alive close, per-worker connection
cap (503), 400 on malformed HTTP, 500 (logged without request data) when the
app fails. The client certificate comes from the TLS the worker terminated or,
for a peer listed in ``trusted_proxies``, from the proxy's ``client_cert_header``
(RFC 9440); that header is removed from every request before the app sees it.

Deadlines, not sweeps: each connection has one deadline for its current phase
(the first request's headers: ``header_timeout`` from the connection's opening;
a later request's headers: from the read in which it began; its body:
``body_timeout`` from the last header, not moved by each chunk; idle keep-alive:
``idle_timeout``) and one loop timer, moved only when a deadline comes earlier and
re-armed when it fires before a deadline that moved later. A timeout fires at most
`TICK_SECONDS` late, with no timer call and no clock read on the common path (a
request complete in one read).

Back-pressure (a client that does not read its answers): while the transport's
write buffer is above its high-water mark (``pause_writing``) reading pauses,
and requests already parsed are not handed to the app (no work, no counting)
until the client reads (``resume_writing``). Bodies above `STREAM_ABOVE` are
written in `STREAM_CHUNK` slices of a memoryview as the client reads them, so
the worker never holds more than a chunk beyond the app's own body per
connection.

Connections not attributed to a registered party (no request on them proven by a
party's credential yet) have a budget of their own (``max_unattributed``): a new
connection beyond it, or beyond ``max_connections``, displaces the oldest
unattributed connection that is waiting on its client (503 and a close), so slow
unauthenticated clients cannot take the capacity parties need; a connection that has
sent its last answer (a 408, a 401 with a close) leaves that budget while it lingers. A connection becomes attributed when the app names a proven party in a request's
`Request.note` (`responder.outcome.Outcome.attributed`): with a client certificate or bearer token
that is its first request; a signed OCSP request can only be attributed after its
body, so its connection stays in the unattributed budget until then. An app may
also offer ``early(req) -> Response | None``: called after the headers of a
request that has a body and an ``Authorization`` field, or whose body may be larger than
``max_body_bytes`` (below), with the body still unread; a Response is sent at once and
the connection closed without reading the body (a credential that matches no party,
refused before it can hold a slot).
A request to the JSON API (a target under `JSON_PREFIX`) that carries a credential
(an ``Authorization`` field or a client certificate) may have a body of up to
``max_json_body_bytes`` (a batch of 10,000 certificates), once ``early`` let it through;
every other body is bounded by ``max_body_bytes``.

The periodic ``HttpServer.tick`` refreshes the coarse clock that stamps deadlines
and the cached ``Date`` header.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import ipaddress
import logging
import socket
import ssl
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Final, Protocol, cast

import httptools

from responder.config import LimitsConfig, ServerConfig
from responder.outcome import Outcome
from responder.structs import FrozenNoGc, NoGc

__all__ = [
    "SHED_STATUS",
    "App",
    "HttpHooks",
    "HttpProtocol",
    "HttpServer",
    "Provision",
    "Request",
    "Response",
    "decode_forwarded_cert",
    "origin_form",
]

_log = logging.getLogger(__name__)

SERVER_NAME: Final = b"jpki-va"
LINGER_SECONDS: Final = 2.0
"""After an error answer that closes the connection (the client may still be sending), input is
read and discarded for at most this long, so the client reads the answer, not a TCP reset."""
LINGER_AFTER_CLOSE: Final = 0.5
"""The same after an ordinary last answer (Connection: close, HTTP/1.0, drain): the client has
sent its request and normally closes at once; this only bounds one that does not."""
MAX_PIPELINE: Final = 64
"""Answers waiting in one connection before reading pauses."""
STREAM_ABOVE: Final = 256 * 1024
"""Answer bodies larger than this are written in slices as the client reads them."""
STREAM_CHUNK: Final = 256 * 1024
"""One slice of a streamed body."""
TICK_SECONDS: Final = 0.1
"""How often the coarse clock (`HttpServer.now`) and the cached ``Date`` header are refreshed.
Deadlines are stamped from the coarse clock plus one tick (reading the loop's clock costs
more than the rest of a deadline's bookkeeping), so they fire never early and at most one
tick late."""
JSON_PREFIX: Final = b"/v1/"
"""Targets of the JSON API (`responder.v1`), whose credentialed bodies may be larger."""
SHED_STATUS: Final = 503
"""The layer's load-shedding answer, and the only 503 it makes: a connection refused at
``max_connections`` (or while draining), or an unattributed one displaced by a newer one.
Not a failure of the product: the metrics and the access log label it ``shed`` (issue 10,
item 4), so that an unauthenticated client opening many connections cannot page anyone."""
FEED_SLICE: Final = 8192
"""Larger inputs are parsed in slices of this size, with a flow-control check between slices,
so one read of pipelined requests cannot queue an unbounded amount of answers."""


class Request(NoGc):
    """One complete HTTP request, as the app sees it.

    Not tracked by the cyclic garbage collector (``gc=False``, cheaper to create): do not
    put objects that refer back to the request into ``headers``.
    """

    method: bytes
    target: bytes
    """Raw request target: path and query, undecoded (an absolute-form target is given in
    its origin-form, `origin_form`)."""
    headers: dict[bytes, bytes]
    """Lower-cased names; repeated fields joined with ``b", "``."""
    body: bytes
    peer: tuple[str, int]
    """The TCP peer (host, port): the proxy's address when behind one."""
    client_cert_der: bytes | None
    """The client certificate from TLS this worker terminated, or from a trusted proxy's
    header (`responder.config.ServerConfig.client_cert_header`), else None."""
    http_version: bytes
    """``b"1.1"`` or ``b"1.0"``."""
    keep_alive: bool
    request_id: int
    """Per-worker counter, starting at 1."""
    note: Outcome | None = None
    """What the app decided about the request, for the hooks (metrics, access log): set by
    the app. This layer reads only `Outcome.attributed`: a proven party attributes the
    connection (it leaves the unattributed budget)."""
    holds: bool = False
    """Set by the app on a request it answers with an awaitable and whose effect the
    requests after it may read (a write, ``POST /v1/watch``): the requests pipelined after it
    on its connection are handed to the app only once its answer is made, in order (RFC 9112
    §9.3.2: pipelined requests may be worked on at once only when all are safe)."""
    sequence: int = 1
    """The request's place on its connection: 1 for the connection's first request (a
    health check's, which opens a connection per check: `responder.publicbound`)."""


class Response(FrozenNoGc, frozen=True):
    """The app's answer; frozen so one instance can be cached and sent many times."""

    status: int
    body: bytes | memoryview
    """A memoryview (of a memory-mapped file, say) is written from as is, never copied
    whole; the layer keeps it referenced until its last byte is written."""
    content_type: bytes
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    """Further header fields (name, value); the layer adds Server, Date, Content-Type,
    Content-Length and Connection itself."""
    hold: float = 0.0
    """Seconds this connection is not read after this answer, when no party proved itself
    on it and its peer is not a trusted proxy (whose connection carries other clients'
    requests too): a refusal for load (`responder.publicbound`'s 429 and its Retry-After),
    so that a client that does not wait costs the worker nothing until then, instead of
    a refusal per request. Requests already read are still answered, in order, but one
    refused for load again (pipelined behind the first) closes the connection after its
    answer, the rest of that read unparsed."""
    provision: Provision | None = None
    """What the answer gives, told when it is written or dropped (`Provision`)."""


class Provision(Protocol):
    """What an answer gives (`Response.provision`): exactly one of the two is called, once.

    ``sent`` just before the answer's bytes are handed to the transport: what the app counts
    only for an answer given (an OCSP, /v1 or CRL answer in the ledger, 帳簿 Act §40; a CRL
    file streamed is counted then, however much of it the party then reads); an exception from
    it is an app failure, the 500 written instead. ``dropped`` when the answer was made but
    will never be written: the connection went away while it waited its turn (pipelined
    behind a slower answer) or closed before it; the app undoes what it took for it (a
    party's provisions of the day). "Went away" includes a connection the transport already
    knows is lost but has not yet told the protocol of (``connection_lost`` comes a loop
    callback later: a reset read, or a write that failed), whose writes it discards, and a
    reset the kernel took while an answer was being made that the transport has not read
    yet (`HttpProtocol._reset_unread`, checked before the first answer written after a
    wait)."""

    def sent(self) -> None: ...

    def dropped(self) -> None: ...


class App(Protocol):
    """What a worker serves.

    ``handle`` returns a `Response` on the fast path, or an awaitable of one for
    slow work (run it in an executor so the worker's other connections go on).
    Optional methods, called when present: ``reload(config: ResponderConfig) ->
    None`` on SIGHUP, ``close() -> None`` when the worker exits, ``early(req) ->
    Response | None`` after the headers of a request with a body and an
    ``Authorization`` field (``req.body`` empty; a Response is sent at once and the
    connection closed without reading the body); ``too_large(target, status) ->
    Response | None``, the 413 for a body over its limit, the 414 for a target or the 431
    for header fields over ``max_header_bytes``, in the app's own format (the JSON API's
    problem), None for the layer's plain one; ``ready() -> Awaitable[None]``, awaited
    before the worker says it is ready; ``tls_loaded(not_after: datetime | None) -> None``
    each time the worker put a TLS chain in force (at its start and at each reload), with
    its certificate's notAfter (`responder.tlsgauges`); and an optional
    ``hooks`` attribute (`HttpHooks` or None), used when ``responder.server.serve`` was
    given no ``hooks_factory``.
    """

    def handle(self, req: Request) -> Response | Awaitable[Response]: ...


class HttpHooks(Protocol):
    """Callbacks for metrics; `HttpServer` calls none of them when it has no hooks.

    Optional, called when present: ``on_connection_evicted() -> None``, an unattributed
    connection displaced by a newer one (counted in `HttpServer.evicted`), before its 503.
    """

    def on_connection_open(self) -> None: ...

    def on_connection_close(self) -> None: ...

    def on_request_done(self, req: Request, resp: Response, seconds: float) -> None:
        """After the answer was handed to the transport; seconds since the request's first byte."""

    def on_http_error(self, status: int, peer: str = "") -> None:
        """An answer the layer made itself (400, 408, 413, 414, 431, `SHED_STATUS`) without
        the app; ``peer`` is the client's address (the TCP peer's IP)."""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _error_response(status: int) -> Response:
    return Response(status, _reason(status) + b"\n", b"text/plain; charset=utf-8")


_ERRORS: Final = {s: _error_response(s) for s in (400, 408, 413, 414, 431, 500, 503)}
_TOO_LARGE: Final = frozenset((413, 414, 431))
"""The layer's refusals of a request over a limit, which the app may word (`App`'s
``too_large``): body, target, header fields."""
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}

# Connection phases.
_IDLE: Final = 0  # between requests, nothing of the next one received
_HEAD: Final = 1  # request line or headers incomplete
_BODY: Final = 2  # headers complete, body incomplete
_LINGER: Final = 3  # closing: answer sent, input discarded
_CLOSED: Final = 4

_PAUSE_WRITE: Final = 1  # the transport's write buffer is full
_PAUSE_QUEUE: Final = 2  # too many answers pending in order
_PAUSE_HOLD: Final = 4  # held after a refusal for load (`Response.hold`)


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing this connection's input."""


def decode_forwarded_cert(value: bytes) -> bytes | None:
    """The DER certificate in a trusted proxy's header, None when it says "no certificate".

    Accepts RFC 9440 ``Client-Cert`` (``:base64-DER:``), URL-escaped PEM (nginx
    ``$ssl_client_escaped_cert``), plain PEM, and plain base64 DER (haproxy
    ``ssl_c_der,base64``). Raises ValueError on anything else.
    """
    value = value.strip()
    if not value:
        return None
    if value.startswith((b"%", b"-----")):
        pem = urllib.parse.unquote_to_bytes(value).decode("ascii", "strict")
        try:
            der = ssl.PEM_cert_to_DER_cert(pem.strip())
        except ValueError:
            raise ValueError("not a PEM certificate") from None
    else:
        if len(value) > 2 and value[:1] == b":" and value[-1:] == b":":
            value = value[1:-1]
        try:
            der = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("not base64") from None
    if len(der) < 2 or der[0] != 0x30:
        raise ValueError("not a DER certificate")
    return der


def origin_form(target: bytes) -> bytes:
    """The origin-form (path and query) of an absolute-form request target, which a server
    must accept (RFC 9112 §3.2.2: ``GET http://host/ocsp/... HTTP/1.1``, as a client sends
    it to a proxy); any other target (``*``, an authority) unchanged. The app routes on
    the path."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    end = len(rest)
    for delimiter in (b"/", b"?"):
        at = rest.find(delimiter)
        if 0 <= at < end:
            end = at
    path = rest[end:]
    return path if path[:1] == b"/" else b"/" + path


class _Slot:
    """An answer waiting for its turn (pipelining), for the app's awaitable, or (``started``
    False) a parsed request not yet handed to the app because the client is not reading."""

    __slots__ = ("close", "fut", "req", "resp", "started", "t0")

    def __init__(
        self,
        req: Request | None,
        resp: Response | None,
        t0: float,
        close: bool,
        started: bool = True,
    ) -> None:
        self.req = req
        self.resp = resp
        self.t0 = t0
        self.close = close
        self.started = started
        self.fut: asyncio.Future[Response] | None = None
        """The app's awaitable while it works (cancelled if the connection goes away)."""


class HttpServer:
    """One worker's HTTP state, shared by its connections; also the protocol factory.

    Call `start` inside the running loop before serving and `drain` to stop.
    """

    def __init__(
        self,
        app: App,
        limits: LimitsConfig,
        *,
        hooks: HttpHooks | None = None,
        trusted_proxies: Iterable[str] = (),
        client_cert_header: str = "client-cert",
    ) -> None:
        self.app = app
        self.hooks = hooks
        self.limits = limits
        self.trusted_networks = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )
        self.client_cert_header = client_cert_header.lower().encode("ascii")
        self.connections: set[HttpProtocol] = set()
        self.active = 0
        """Accepted connections (the ones counted against max_connections)."""
        self.unattributed: dict[HttpProtocol, None] = {}
        """Accepted connections not yet attributed to a party, oldest first."""
        self.evicted = 0
        """Unattributed connections displaced by newer ones (since start)."""
        early = getattr(app, "early", None)
        self.early: Callable[[Request], Response | None] | None = early if callable(early) else None
        too_large = getattr(app, "too_large", None)
        self.too_large: Callable[[bytes, int], Response | None] | None = (
            too_large if callable(too_large) else None
        )
        """The app's 413, 414 or 431 for a request target (see `App`), or None."""
        self.requests = 0
        self.draining = False
        self.now = 0.0
        """Coarse loop time, refreshed by `tick`."""
        self._prefixes: dict[int, bytes] = {}
        self._date = b""
        self._date_second = -1
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._idle_waiter: asyncio.Future[None] | None = None

    @classmethod
    def from_config(
        cls, app: App, server: ServerConfig, *, hooks: HttpHooks | None = None
    ) -> HttpServer:
        """An `HttpServer` with the limits and proxy settings of ``[server]``."""
        return cls(
            app,
            server.limits,
            hooks=hooks,
            trusted_proxies=server.trusted_proxies,
            client_cert_header=server.client_cert_header,
        )

    def __call__(self) -> HttpProtocol:
        if self.loop is None:
            self.start()
        return HttpProtocol(self)

    # -- clock and Date header ------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic refresh of the Date header on the running loop."""
        self.loop = asyncio.get_running_loop()
        self.tick()

    def tick(self) -> None:
        """Refresh the coarse clock and the Date header, re-arm."""
        loop = self.loop
        assert loop is not None
        self.now = loop.time()
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(second, usegmt=True).encode("ascii")
            self._prefixes = {}
        self._tick_handle = loop.call_later(TICK_SECONDS, self.tick)

    # -- connection budget ------------------------------------------------------------------------

    def admit(self, conn: HttpProtocol) -> bool:
        """Count a new connection, displacing an unattributed one when a budget is full."""
        limits = self.limits
        if self.draining:
            return False
        if self.active >= limits.max_connections or (
            len(self.unattributed) >= limits.unattributed_budget
        ):
            for old in self.unattributed:  # oldest first
                if old.waits_on_client():
                    self.evicted += 1
                    on_evicted = getattr(self.hooks, "on_connection_evicted", None)
                    if on_evicted is not None:
                        on_evicted()
                    old.evict()
                    break
            else:
                return False
            if self.active >= limits.max_connections:
                return False
        self.active += 1
        self.unattributed[conn] = None
        return True

    def prefix(self, status: int) -> bytes:
        """Status line plus Server and Date fields for this second (cached per status)."""
        head = self._prefixes.get(status)
        if head is None:
            head = b"HTTP/1.1 %d %b\r\nServer: %b\r\nDate: %b\r\n" % (
                status,
                _reason(status),
                SERVER_NAME,
                self._date,
            )
            self._prefixes[status] = head
        return head

    def is_trusted(self, host: str) -> bool:
        if not self.trusted_networks:
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_networks)

    def reconfigure(self, server: ServerConfig) -> None:
        """New limits and proxy settings (SIGHUP), for open connections too."""
        self.limits = limits = server.limits
        self.trusted_networks = tuple(
            ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies
        )
        self.client_cert_header = server.client_cert_header.lower().encode("ascii")
        for conn in self.connections:
            conn.set_limits(limits)

    # -- lifecycle ---------------------------------------------------------------------------

    def _connection_gone(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        self.unattributed.pop(conn, None)
        waiter = self._idle_waiter
        if waiter is not None and not self.connections and not waiter.done():
            waiter.set_result(None)

    async def drain(self, timeout: float) -> int:
        """Close idle connections, let in-flight requests finish, then cut what is left.

        Stop accepting first (close the listening servers). Returns how many
        connections were still open when ``timeout`` ran out.
        """
        self.draining = True
        for conn in list(self.connections):
            conn.begin_drain()
        if self.connections:
            loop = asyncio.get_running_loop()
            self._idle_waiter = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle_waiter), timeout)
        left = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        return left


class HttpProtocol(asyncio.Protocol):
    """One client connection (created by `HttpServer`; not used directly).

    A connection is in one phase (``_phase``) at a time; each phase has one deadline (see the
    module docstring). Orthogonal to the phase: answers waiting their turn (``_queue``,
    pipelining), reading paused (``_paused``: the transport's buffer is full, or
    `MAX_PIPELINE` answers wait), and ``_last`` (no request after the current one is read).
    The transitions, states × events → next state and action. tests/test_http_protocol.py
    drives the rows with a fake transport and clock (`HttpServer.loop`); the row of an app
    that answers with an awaitable runs on a real loop (tests/test_http.py):

    ========  ==============================================  ========  ==========================================
    state     event                                           next      action
    ========  ==============================================  ========  ==========================================
    (new)     ``connection_made``, admitted                   IDLE      deadline: ``header_timeout`` from now
    (new)     ``connection_made``, over the budget            LINGER    503, then close
    IDLE      first bytes of a request target (on_url)        HEAD      a new request; its size counted
    IDLE      deadline passes                                 CLOSED    close quietly (no request, no 408)
    IDLE      ``eof_received``, answers still pending         IDLE      answer them, then close
    HEAD      target or headers over ``max_header_bytes``     LINGER    414 / 431 after the pending answers
    HEAD      headers complete                                BODY      Content-Length over the limit: 413;
                                                                        ``early`` may refuse (answer, LINGER);
                                                                        ``Expect: 100-continue`` answered;
                                                                        deadline: ``body_timeout`` from now
    HEAD      deadline passes                                 LINGER    408 after the pending answers
    BODY      body over ``max_body_bytes``                    LINGER    413 after the pending answers
    BODY      message complete                                IDLE      to the app, or deferred while writing
                                                                        is paused or an earlier request that
                                                                        `Request.holds` is worked on (then
                                                                        each in turn once its answer is made);
                                                                        the answer in request order;
                                                                        deadline: ``idle_timeout`` from it
    BODY      deadline passes                                 LINGER    408 after the pending answers
    < LINGER  malformed HTTP                                  LINGER    400 after the pending answers
    < LINGER  last answer written (``Connection: close``,     LINGER    ``write_eof``; input discarded for
              HTTP/1.0 without keep-alive, an error)                    `LINGER_AFTER_CLOSE` (`LINGER_SECONDS`
                                                                        after an error answer)
    LINGER    deadline passes                                 CLOSED    abort
    any       ``pause_writing``                               same      pause reading; parsed requests wait
                                                                        unhandled; deadline: ``idle_timeout``,
                                                                        then abort
    any       ``resume_writing``                              same      resume reading; deferred requests to the
                                                                        app; answers and streamed bodies flushed
    any       deadline passes while the app works             same      nothing: the clock restarts after it
    IDLE      ``begin_drain`` (SIGTERM)                       CLOSED    close (other phases: after the answers)
    < LINGER  ``evict`` (displaced, unattributed)             LINGER    503, then close
    any       ``connection_lost``                             CLOSED    uncounted, timer cancelled; the
                                                                        app's awaitables still pending
                                                                        cancelled (nobody reads them)
    ========  ==============================================  ========  ==========================================
    """

    __slots__ = (
        "_backlog",
        "_body",
        "_body_len",
        "_body_parts",
        "_cert",
        "_deadline",
        "_deferred",
        "_dl_key",
        "_eof",
        "_headers",
        "_holding",
        "_hraw",
        "_hsize",
        "_last",
        "_linger",
        "_loop",
        "_max_body",
        "_max_header",
        "_max_json_body",
        "_out",
        "_out_close",
        "_parser",
        "_paused",
        "_peer",
        "_phase",
        "_queue",
        "_req_cert",
        "_req_max_body",
        "_seq",
        "_served",
        "_srv",
        "_t0",
        "_timer",
        "_timer_at",
        "_transport",
        "_trusted",
        "_upgrade",
        "_url",
        "attributed",
        "counted",
    )

    def __init__(self, server: HttpServer) -> None:
        self._srv = server
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._phase = _IDLE
        self._served = 0
        self._seq = 0
        self._queue: deque[_Slot] | None = None
        self._deferred = 0
        """Parsed requests in the queue not yet handed to the app (the client is not reading)."""
        self._holding: _Slot | None = None
        """A request whose answer the later ones wait for (`Request.holds`), until it is made."""
        self._backlog: bytes | memoryview | None = None
        self._out: memoryview | None = None
        """The rest of a body being streamed (`STREAM_ABOVE`)."""
        self._out_close = False
        self._paused = 0
        self._deadline = 0.0
        self._dl_key = 0
        """Which request and phase the deadline was last set for (seq * 4 + phase)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._eof = False
        self._last = False
        self._linger = LINGER_SECONDS
        self._upgrade = False
        self._peer: tuple[str, int] = ("", 0)
        self._cert: bytes | None = None
        self._req_cert: bytes | None = None
        self._trusted = False
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body = b""
        self._body_parts: list[bytes] | None = None
        self._body_len = 0
        self._hsize = 0
        self._hraw = 0
        self._t0 = 0.0
        self._max_header = server.limits.max_header_bytes
        self._max_body = server.limits.max_body_bytes
        self._max_json_body = server.limits.max_json_body_bytes
        self._req_max_body = self._max_body
        """The body limit of the request being read (`on_headers_complete` chooses it)."""
        self.attributed = False
        """A request on this connection was attributed to a registered party."""
        self.counted = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        srv = self._srv
        self._transport = transport = cast(asyncio.Transport, transport)
        self._loop = loop = srv.loop or asyncio.get_running_loop()
        srv.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        if not srv.admit(self):
            self._error_now(SHED_STATUS)
            return
        self.counted = True
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._cert = ssl_object.getpeercert(binary_form=True)
        self._trusted = srv.is_trusted(self._peer[0])
        if srv.hooks is not None:
            srv.hooks.on_connection_open()
        # The first request's headers are due header_timeout after the connection opened.
        self._set_deadline(loop.time() + srv.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        if self._queue:  # nobody will read these answers: the app stops working on them
            for slot in self._queue:
                if slot.fut is not None:
                    slot.fut.cancel()
            for slot in self._queue:
                _drop(slot.resp)
        self._uncount()
        self._srv._connection_gone(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue = None
        self._backlog = None
        self._out = None
        self._transport = None

    def eof_received(self) -> bool | None:
        if self._phase == _IDLE and (
            self._queue or self._backlog is not None or self._out is not None
        ):
            # Half-closed after complete requests: answer them, then close.
            self._eof = True
            return True
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self._pause(_PAUSE_WRITE)
        srv = self._srv  # a client that reads nothing for idle_timeout is cut
        self._set_deadline(srv.now + TICK_SECONDS + srv.limits.idle_timeout)

    def resume_writing(self) -> None:
        self._resume(_PAUSE_WRITE)
        if self._out is not None:
            self._pump()
            if self._out is not None or self._phase >= _LINGER:
                return
            # The streamed body is all written: close if it was the last answer, else go on.
            if self._out_close or (self._srv.draining and not self._queue and self._phase == _IDLE):
                self._close_gracefully(LINGER_AFTER_CLOSE)
                return
        if self._phase < _LINGER:
            self._flush()
            if self._phase == _IDLE and not self._queue and self._out is None:
                self._restart_clock()  # idle from now, not from when the client stopped reading

    def data_received(self, data: bytes) -> None:
        if self._last:
            return
        if self._backlog is not None or len(data) > FEED_SLICE:
            self._backlog = data if self._backlog is None else bytes(self._backlog) + data
            self._feed_backlog()
        else:
            self._feed(data)

    def _feed_backlog(self) -> None:
        """Parse a large input in slices, stopping while reading is paused (flow control)."""
        data = self._backlog
        if data is None:
            return
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not self._paused and not self._last:
            self._feed(view[pos : pos + FEED_SLICE])
            pos += FEED_SLICE
        self._backlog = view[pos:] if pos < len(view) and not self._last else None
        if (
            self._backlog is None
            and self._eof
            and not self._queue
            and self._out is None
            and self._phase == _IDLE
        ):
            self._close_gracefully()

    def _feed(self, data: bytes | memoryview) -> None:
        seq = self._seq
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._last = True  # the app answered; upgrade refused by closing after it
            return
        except httptools.HttpParserError:
            # Includes callback errors: _Stop, raised after the answer was arranged.
            if not self._last:
                self._error(400)
            return
        phase = self._phase
        if phase == _IDLE:
            return  # the common case: every request in this read is complete
        if phase >= _LINGER:
            return
        if phase == _HEAD and self._seq == seq:
            # Headers still incomplete and begun in an earlier chunk: bound what is buffered.
            self._hraw += len(data)
            if self._hraw > self._max_header:
                self._error(431)
                return
        key = self._seq * 4 + phase
        if key != self._dl_key:
            # A request left incomplete by this read: its headers are due header_timeout
            # from now (the first request's: from the connection's opening, already set),
            # its body body_timeout from its last header (in this read), chunks or not.
            self._dl_key = key
            if phase == _BODY or self._seq > 1:
                srv = self._srv
                limits = srv.limits
                due = limits.body_timeout if phase == _BODY else limits.header_timeout
                self._set_deadline(srv.now + TICK_SECONDS + due)

    # -- httptools callbacks -----------------------------------------------------------------

    # A request begins with its first target bytes (on_url): one callback fewer per request
    # than on_message_begin; the method's few bytes before it count as idle time.

    def on_url(self, url: bytes) -> None:
        if self._phase == _HEAD:  # the target continues in a later read
            self._url += url
            self._hsize += len(url)
            if self._hsize > self._max_header:
                self._reject(414)
            return
        if self._last:
            raise _Stop
        self._phase = _HEAD
        srv = self._srv
        self._seq += 1
        self._url = url
        self._headers = {}
        self._body = b""
        self._body_parts = None
        self._body_len = 0
        self._hsize = len(url)
        self._hraw = 0
        self._upgrade = False
        if srv.hooks is not None:
            self._t0 = time.perf_counter()
        if self._hsize > self._max_header:
            self._reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hsize += len(name) + len(value) + 4
        if self._hsize > self._max_header:
            self._reject(431)
        name = name.lower()
        headers = self._headers
        old = headers.get(name)
        headers[name] = value if old is None else old + b", " + value

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        if self._url[:1] != b"/":
            self._url = origin_form(self._url)
        srv = self._srv
        headers = self._headers
        cert = self._cert
        if srv.client_cert_header in headers:
            forwarded = headers.pop(srv.client_cert_header)
            if self._trusted:
                try:
                    cert = decode_forwarded_cert(forwarded)
                except ValueError:
                    self._reject(400)
        self._req_cert = cert
        limit = self._max_body
        if self._url.startswith(JSON_PREFIX) and (cert is not None or b"authorization" in headers):
            limit = self._max_json_body
        self._req_max_body = limit
        length = headers.get(b"content-length")
        has_body = False
        if length is not None:
            if not length.isdigit():
                self._reject(400)
            size = int(length)
            if size > limit:
                self._reject(413)
            has_body = size > 0
        elif b"transfer-encoding" in headers:
            has_body = True
        # asked too when the body's limit was raised on a credential's strength alone (a
        # client certificate on a /v1 target): a certificate no party holds must not have
        # ``max_json_body_bytes`` read before its 401
        if (
            has_body
            and srv.early is not None
            and (b"authorization" in headers or limit != self._max_body)
        ):
            self._answer_early(srv.early)
        if self._parser.should_upgrade():
            self._upgrade = True
        expect = headers.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and not self._queue
            and self._out is None
            and self._parser.get_http_version() == "1.1"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answer_early(self, early: Callable[[Request], Response | None]) -> None:
        """Let the app refuse a request before its body is read (see the module docstring)."""
        parser = self._parser
        srv = self._srv
        version = parser.get_http_version()
        req = Request(
            parser.get_method(),
            self._url,
            self._headers,
            b"",
            self._peer,
            self._req_cert,
            _VERSIONS.get(version) or version.encode("ascii"),
            False,
            srv.requests + 1,
        )
        try:
            resp = early(req)
        except Exception as exc:
            resp = _app_failed(exc, req)
        if resp is None:
            return
        srv.requests += 1
        self._last = True
        self._phase = _IDLE
        if self._queue or self._out is not None:
            self._enqueue(_Slot(req, resp, self._t0, True))
        else:
            self._send(req, resp, self._t0, True)
        raise _Stop

    def on_body(self, body: bytes) -> None:
        size = self._body_len + len(body)
        if size > self._req_max_body:
            self._reject(413)
        self._body_len = size
        if self._body_parts is not None:
            self._body_parts.append(body)
        elif self._body:
            self._body_parts = [self._body, body]
        else:
            self._body = body

    def on_message_complete(self) -> None:
        parser = self._parser
        srv = self._srv
        self._phase = _IDLE
        keep_alive = parser.should_keep_alive() and not self._upgrade
        if not keep_alive:
            self._last = True
        version = parser.get_http_version()
        srv.requests += 1
        req = Request(
            parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body_parts) if self._body_parts is not None else self._body,
            self._peer,
            self._req_cert,
            _VERSIONS.get(version) or version.encode("ascii"),
            keep_alive,
            srv.requests,
            sequence=self._seq,
        )
        if (
            self._deferred
            or self._holding is not None
            or self._out is not None
            or self._paused & _PAUSE_WRITE
        ):
            # The client is not reading its answers, or an earlier request of this connection
            # is a write still being worked on: no work for it until then.
            self._deferred += 1
            self._enqueue(_Slot(req, None, self._t0, False, started=False))
            return
        result = self._call_app(req)
        if isinstance(result, Response):
            # Refused for load again while held (read in the same read as the refusal that
            # began the hold, `Response.hold`): the connection closes after it, the rest of
            # that read unparsed (on_url); else a client writing hundreds of requests at
            # once is refused each of them in turn, the hold saving nothing.
            close = bool(result.hold and self._paused & _PAUSE_HOLD)
            if close:
                self._last = True
            if self._queue:
                self._enqueue(_Slot(req, result, self._t0, close))
            else:
                self._send(req, result, self._t0, close)
            return
        slot = _Slot(req, None, self._t0, False)
        self._await(slot, result)
        self._enqueue(slot)

    # -- the app -------------------------------------------------------------------------------

    def _call_app(self, req: Request) -> Response | Awaitable[Response]:
        try:
            result = self._srv.app.handle(req)
        except Exception as exc:
            result = _app_failed(exc, req)
        if not self.attributed:
            self._attribute(req)
        return result

    def _attribute(self, req: Request) -> None:
        """After the app's decision: a request attributed to a party attributes the connection."""
        note = req.note
        if note is not None and note.attributed:
            self.attributed = True  # a party proved itself on this connection
            self._srv.unattributed.pop(self, None)

    def _await(self, slot: _Slot, result: Awaitable[Response]) -> None:
        req = slot.req
        assert req is not None
        try:
            fut = asyncio.ensure_future(result)
        except TypeError as exc:
            slot.resp = _app_failed(exc, req)
            return
        slot.fut = fut
        if req.holds:
            self._holding = slot
        fut.add_done_callback(lambda f: self._slot_done(slot, f))

    def _start(self, slot: _Slot) -> None:
        """Hand a deferred request to the app, now that the client reads again."""
        slot.started = True
        self._deferred -= 1
        req = slot.req
        assert req is not None
        result = self._call_app(req)
        if isinstance(result, Response):
            slot.resp = result
        else:
            self._await(slot, result)

    # -- answers ------------------------------------------------------------------------------

    def _slot_done(self, slot: _Slot, fut: asyncio.Future[Response]) -> None:
        slot.fut = None
        if self._holding is slot:
            self._holding = None
        if fut.cancelled() and self._phase == _CLOSED:
            return  # cancelled by connection_lost: nobody to answer, and no app failure
        req = slot.req
        assert req is not None
        try:
            resp = fut.result()
        except asyncio.CancelledError as exc:
            resp = _app_failed(exc, req)
        except Exception as exc:
            resp = _app_failed(exc, req)
        else:
            if not isinstance(resp, Response):
                resp = _app_failed(TypeError(type(resp).__name__), req)
        slot.resp = resp
        queue = self._queue
        if queue is None or slot not in queue:  # discarded while the app worked on it
            _drop(resp)
        elif self._phase != _CLOSED:
            if queue[0] is slot and self._reset_unread():
                # the client reset the connection while this answer was made: nothing
                # written would reach it, so nothing is given; connection_lost drops them all
                self.abort()
                return
            self._flush()

    def _enqueue(self, slot: _Slot) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(slot)
        if len(queue) >= MAX_PIPELINE:
            self._pause(_PAUSE_QUEUE)
        if slot.resp is not None and queue[0] is slot:
            self._flush()

    def _flush(self) -> None:
        queue = self._queue
        while queue and self._out is None:
            slot = queue[0]
            if not slot.started:
                if self._paused & _PAUSE_WRITE:
                    break
                self._start(slot)
            resp = slot.resp
            if resp is None:
                break
            queue.popleft()
            if not self._send(slot.req, resp, slot.t0, slot.close):
                return
        if self._paused & _PAUSE_QUEUE and (not queue or len(queue) < MAX_PIPELINE // 2):
            self._resume(_PAUSE_QUEUE)
        if not queue and self._out is None:
            if self._phase in (_HEAD, _BODY):
                self._restart_clock()  # its time runs from now, not while it waited
            elif self._eof and self._backlog is None and self._transport is not None:
                self._close_gracefully()

    def _send(self, req: Request | None, resp: Response, t0: float, close: bool) -> bool:
        """Write one answer; False when the connection is closing after it."""
        transport = self._transport
        if transport is None or transport.is_closing():
            # gone, or lost with its connection_lost still to come (a reset the transport
            # read, or an earlier answer's write that failed on it): the transport discards
            # what is written, so the answer is not given and its provisions go back
            _drop(resp)
            return False
        if resp.provision is not None:
            try:
                resp.provision.sent()
            except Exception as exc:
                resp = _app_failed(exc, req) if req is not None else _ERRORS[500]
        srv = self._srv
        keep = not close and req is not None and req.keep_alive
        if (
            keep
            and (srv.draining or self._eof)
            and not self._queue
            and self._phase == _IDLE
            and self._backlog is None
        ):
            keep = False
        body = resp.body
        # HEAD and 304 (RFC 9110 §9.3.2, §15.4.5): the 200's Content-Length, no content
        bodiless = resp.status == 304 or (req is not None and req.method == b"HEAD")
        stream = len(body) > STREAM_ABOVE and not bodiless
        # bytes(body): the same object for bytes; a small memoryview's bytes (the join copies anyway)
        payload = b"" if stream or bodiless else bytes(body)
        if keep:
            conn = (
                b"" if req is None or req.http_version != b"1.0" else b"Connection: keep-alive\r\n"
            )
        else:
            conn = b"Connection: close\r\n"
        if resp.extra_headers:
            extra = b"".join([b"%b: %b\r\n" % pair for pair in resp.extra_headers])
            conn = extra + conn
        status = resp.status
        transport.write(
            b"%bContent-Type: %b\r\nContent-Length: %d\r\n%b\r\n%b"
            % (
                srv._prefixes.get(status) or srv.prefix(status),
                resp.content_type,
                len(body),
                conn,
                payload,
            )
        )
        self._served += 1
        hooks = srv.hooks
        if hooks is not None and req is not None:
            hooks.on_request_done(req, resp, time.perf_counter() - t0)
        if resp.hold and not self.attributed and not self._trusted:
            self._hold(resp.hold)
        if stream:
            self._out = memoryview(body)
            self._out_close = not keep
            self._pump()
            if self._out is not None:
                return keep  # the rest as the client reads it (resume_writing)
        if not keep:
            self._close_gracefully(LINGER_SECONDS if req is None else LINGER_AFTER_CLOSE)
            return False
        if not self._queue:
            if self._phase == _IDLE:  # the common case, inlined: idle_timeout from now
                deadline = self._deadline = srv.now + TICK_SECONDS + srv.limits.idle_timeout
                if self._timer is None or deadline < self._timer_at:
                    self._set_deadline(deadline)
            else:
                self._restart_clock()
        return True

    def _pump(self) -> None:
        """Write slices of the streamed body until the transport's buffer is full."""
        out = self._out
        transport = self._transport
        while out is not None and transport is not None and not self._paused & _PAUSE_WRITE:
            chunk = out[:STREAM_CHUNK]
            out = out[STREAM_CHUNK:] if len(out) > STREAM_CHUNK else None
            self._out = out  # before the write, which may call pause_writing
            transport.write(chunk)

    def _reject(self, status: int) -> None:
        """From a parser callback: answer ``status`` (in order) and stop reading."""
        self._error(status)
        raise _Stop

    def _error(self, status: int) -> None:
        """Answer a layer-made error after the answers already pending, then close."""
        if self._last and self._phase >= _LINGER:
            return
        self._last = True
        self._phase = _IDLE
        hooks = self._srv.hooks
        if hooks is not None:
            hooks.on_http_error(status, self._peer[0])
        resp = None
        if status in _TOO_LARGE and self._srv.too_large is not None:
            resp = self._srv.too_large(self._url, status)  # the target (its start: a 414's)
        resp = resp or _ERRORS.get(status) or _error_response(status)
        if self._queue or self._out is not None:
            self._enqueue(_Slot(None, resp, 0.0, True))
        else:
            self._send(None, resp, 0.0, True)

    def _error_now(self, status: int) -> None:
        self._last = True
        hooks = self._srv.hooks
        if hooks is not None:
            hooks.on_http_error(status, self._peer[0])
        self._send(None, _ERRORS[status], 0.0, True)

    def _close_gracefully(self, linger: float = LINGER_AFTER_CLOSE) -> None:
        """Half-close and discard input for a moment, so the peer reads the last answer."""
        transport = self._transport
        self._last = True
        if transport is None or self._phase >= _LINGER:
            return
        self._phase = _LINGER
        # its last answer is sent: lingering, it cannot be displaced (`waits_on_client`), so
        # it gives its place in the unattributed budget to new connections (a round of
        # header timeouts would otherwise shut every new connection out while it lingers)
        self._srv.unattributed.pop(self, None)
        self._linger = linger
        if self._queue:
            for slot in self._queue:
                _drop(slot.resp)
        self._queue = None
        self._deferred = 0
        self._holding = None
        self._backlog = None
        self._out = None
        self._restart_clock()
        if transport.can_write_eof():
            transport.write_eof()
            if self._paused:
                self._paused = 0
                transport.resume_reading()
        else:
            transport.close()

    def _hold(self, seconds: float) -> None:
        """Stop reading for ``seconds`` (`Response.hold`); a hold under way is not moved."""
        loop = self._loop
        if self._paused & _PAUSE_HOLD or loop is None:
            return
        self._pause(_PAUSE_HOLD)
        loop.call_later(seconds, self._resume, _PAUSE_HOLD)

    def _pause(self, reason: int) -> None:
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        transport = self._transport
        if not self._paused and transport is not None and self._phase < _LINGER:
            if not transport.is_closing():
                transport.resume_reading()
            if self._backlog is not None and self._loop is not None:
                self._loop.call_soon(self._feed_backlog)

    # -- deadlines -----------------------------------------------------------------------------

    def _set_deadline(self, deadline: float) -> None:
        """The current phase ends at ``deadline`` (loop time); the timer moves only earlier."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            loop = self._loop
            if loop is None:
                return
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def _restart_clock(self) -> None:
        """The current phase's time runs from now."""
        srv = self._srv
        limits = srv.limits
        phase = self._phase
        if phase == _IDLE:
            seconds = limits.idle_timeout if self._served else limits.header_timeout
        elif phase == _HEAD:
            seconds = limits.header_timeout
        elif phase == _BODY:
            seconds = limits.body_timeout
        elif phase == _LINGER:
            seconds = self._linger
        else:
            return
        self._set_deadline(srv.now + TICK_SECONDS + seconds)

    def _on_timer(self) -> None:
        self._timer = None
        loop = self._loop
        if self._phase == _CLOSED or loop is None:
            return
        deadline = self._deadline
        if deadline > loop.time() + 0.001:  # moved later since the timer was armed
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._on_timer)
            return
        self._expire()

    def _expire(self) -> None:
        """The current phase's deadline passed."""
        phase = self._phase
        if phase == _LINGER or self._paused & _PAUSE_WRITE:
            self.abort()  # lingered long enough, or the client stopped reading its answers
        elif self._queue or self._out is not None:
            return  # the app is working on it; _flush restarts the clock
        elif phase == _IDLE:
            if self._transport is not None:
                self._last = True
                self._phase = _LINGER
                self._transport.close()
        else:
            self._error(408)  # headers or body too slow

    # -- budget, limits and shutdown (called by HttpServer) --------------------------------------

    def _uncount(self) -> None:
        srv = self._srv
        srv.unattributed.pop(self, None)
        if self.counted:
            self.counted = False
            srv.active -= 1
            if srv.hooks is not None:
                srv.hooks.on_connection_close()

    def _reset_unread(self) -> bool:
        """The client reset the connection (or it failed otherwise) while an answer was being
        made, and the transport has not read that yet: the kernel took the reset, but the
        loop reads a socket only when it next polls, after the callbacks already due (the
        answer's among them). Without this, the first answer written would be counted and
        then discarded by a write that fails on the reset. One ``getsockopt(SO_ERROR)``,
        taken only before writing an answer that was waited for (a fresh signature, the
        batch thread), never on the fast path; it clears the error it reads, so the
        connection is aborted when it finds one."""
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return False
        try:
            return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        except OSError:  # closed under it: `_send` sees the transport closing
            return False

    def waits_on_client(self) -> bool:
        """Nothing of this connection is with the app or being written: it waits on its client."""
        return (
            self.counted
            and self._phase < _LINGER
            and not self._queue
            and self._out is None
            and self._transport is not None
        )

    def evict(self) -> None:
        """Displaced by a newer connection: no longer counted; `SHED_STATUS` and a close."""
        self._uncount()
        self._phase = _IDLE
        self._error_now(SHED_STATUS)

    def set_limits(self, limits: LimitsConfig) -> None:
        self._max_header = limits.max_header_bytes
        self._max_body = limits.max_body_bytes
        self._max_json_body = limits.max_json_body_bytes

    def begin_drain(self) -> None:
        """Close now if idle; otherwise close after the answers in flight."""
        if (
            self._phase == _IDLE
            and not self._queue
            and self._out is None
            and self._transport is not None
        ):
            self._last = True
            self._phase = _LINGER
            self._transport.close()

    def abort(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()


def _drop(resp: Response | None) -> None:
    """`Provision.dropped` of an answer made that will never be written (none: nothing)."""
    if resp is None or resp.provision is None:
        return
    try:
        resp.provision.dropped()
    except Exception as exc:  # the connection is gone: logged, without request data
        _log.error("answer_drop_failed", extra={"fields": {"exc_type": type(exc).__name__}})


def _app_failed(exc: BaseException, req: Request) -> Response:
    """Log an app failure without request data (type and code location only); a 500."""
    where = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    _log.error(
        "app_error",
        extra={
            "fields": {"exc_type": type(exc).__name__, "request_id": req.request_id, "at": where}
        },
    )
    return _ERRORS[500]
