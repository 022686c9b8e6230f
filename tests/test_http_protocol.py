"""`HttpProtocol` (responder/http.py) in process: its phases driven by a fake transport and clock.

No sockets: `FakeTransport` records what the protocol writes and how it pauses, resumes and
closes; `FakeLoop` is the event loop the protocol and `HttpServer` schedule their timers on
(`HttpServer.loop`), with a clock the test moves by hand, so timeouts are tested without
waiting. Pipelining, back-pressure (``pause_writing``/``resume_writing``), the size limits
(413, 414, 431, 400), the deadlines (408, idle close, linger), keep-alive, ``Connection:
close``, HTTP/1.0, the connection budget, ``early`` and drain: the rows of the transition
table in `HttpProtocol`'s docstring.

The hooks and the trusted proxy's certificate header are tested through a real loopback
socket, in process (`run_in_process`); tests/test_http.py runs the same layer in a real
worker process.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
import uvloop

from responder.config import LimitsConfig
from responder.http import (
    LINGER_AFTER_CLOSE,
    MAX_PIPELINE,
    TICK_SECONDS,
    HttpProtocol,
    HttpServer,
    Request,
    Response,
    decode_forwarded_cert,
    origin_form,
)
from tests.support import tcp
from tests.support.pki import certificate

LIMITS = LimitsConfig(
    max_body_bytes=100,
    max_header_bytes=512,
    header_timeout=2.0,
    body_timeout=3.0,
    idle_timeout=5.0,
)

# -- the fakes ----------------------------------------------------------------------------------


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """What `HttpServer` and `HttpProtocol` ask of their loop, on a clock moved by `advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, FakeHandle, Callable[..., object], tuple[Any, ...]]]
        self._timers = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._timers, (when, next(self._seq), handle, cb, args))
        return handle

    def call_later(self, delay: float, cb: Callable[..., object], *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, cb, *args)

    def call_soon(self, cb: Callable[..., object], *args: Any) -> FakeHandle:
        return self.call_at(self.now, cb, *args)

    def run_due(self) -> None:
        """Run every callback due by now (including those they schedule for now)."""
        while self._timers and self._timers[0][0] <= self.now:
            _, _, handle, cb, args = heapq.heappop(self._timers)
            if not handle.cancelled:
                cb(*args)

    def advance(self, seconds: float) -> None:
        """Move the clock, running the timers due on the way, in order."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            self.now = max(self.now, self._timers[0][0])
            self.run_due()
        self.now = end
        self.run_due()


@dataclass
class FakeTransport:
    """An asyncio.Transport that keeps what is written; ``close`` reaches the protocol at once.

    ``sock``: the socket ``get_extra_info("socket")`` gives (none by default), for the
    protocol's look at a reset its transport has not read yet."""

    loop: FakeLoop
    protocol: HttpProtocol | None = None
    written: bytearray = field(default_factory=bytearray)
    reading: bool = True
    eof_written: bool = False
    closed: bool = False
    aborted: bool = False
    sock: socket.socket | None = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "socket":
            return self.sock
        return ("192.0.2.7", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()


class RecordingApp:
    """Answers each request with its target and body; keeps the requests it was handed."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def handle(self, req: Request) -> Response:
        self.seen.append(req)
        return Response(200, req.target + b":" + req.body, b"text/plain")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Answers:
    """The answers in the bytes a transport received (httptools' response parser)."""

    def __init__(self, data: bytes) -> None:
        self.done: list[Answer] = []
        self._headers: dict[str, str] = {}
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append(Answer(self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


@dataclass
class Conn:
    """One connection of an `HttpServer` on the fakes."""

    loop: FakeLoop
    server: HttpServer
    protocol: HttpProtocol
    transport: FakeTransport
    app: RecordingApp

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)
        self.loop.run_due()

    def answers(self) -> list[Answer]:
        return Answers(bytes(self.transport.written)).done

    @property
    def open(self) -> bool:
        return not self.transport.closed


def connect(limits: LimitsConfig = LIMITS, app: RecordingApp | None = None) -> Conn:
    """A new `HttpServer` on a `FakeLoop`, and one connection to it."""
    loop = FakeLoop()
    server = HttpServer(app or RecordingApp(), limits)
    server.loop = loop  # type: ignore[assignment]  # the injected clock and timers
    server.tick()
    return another(Conn(loop, server, server(), FakeTransport(loop), app or RecordingApp()))


def another(c: Conn) -> Conn:
    """A new connection to ``c``'s server (``c`` itself when it is not connected yet)."""
    protocol = c.protocol if c.transport.protocol is None else c.server()
    transport = FakeTransport(c.loop, protocol)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return Conn(c.loop, c.server, protocol, transport, c.server.app)  # type: ignore[arg-type]


def get(target: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {target} HTTP/{version}", "Host: a", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- pipelining and back-pressure ------------------------------------------------------------


def test_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    c = connect()
    c.send(get("/a") + get("/b") + get("/c"))
    assert [a.body for a in c.answers()] == [b"/a:", b"/b:", b"/c:"]
    assert [r.request_id for r in c.app.seen] == [1, 2, 3]
    assert c.open


def test_a_request_split_over_reads_is_one_request() -> None:
    c = connect()
    raw = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + get("/q")
    for i in range(len(raw)):
        c.send(raw[i : i + 1])
    assert [a.body for a in c.answers()] == [b"/p:hello", b"/q:"]


def test_an_absolute_form_target_reaches_the_app_as_its_path() -> None:
    """RFC 9112 §3.2.2: a server must accept the absolute-form (``GET http://host/ocsp/...``,
    what a client sends through a proxy). The app saw ``http://host/...`` and answered 404
    to an OCSP GET that names the responder's own URL; it gets the path and query now."""
    c = connect()
    c.send(
        get("http://va.example:8080/ocsp/MEow%2BA=?x=1")
        + get("HTTPS://va.example/v1/status")
        + get("http://va.example")
        + get("http://va.example?q")
        + get("/plain")
    )
    assert [r.target for r in c.app.seen] == [
        b"/ocsp/MEow%2BA=?x=1", b"/v1/status", b"/", b"/?q", b"/plain"
    ]  # fmt: skip
    assert origin_form(b"*") == b"*" and origin_form(b"va.example:443") == b"va.example:443"


def test_pipelined_requests_wait_unhandled_while_the_client_does_not_read() -> None:
    """Issue 10 item 7: no work (nothing a real app would count) for answers nobody reads;
    reading pauses until the client reads again, then every request is answered in order."""
    c = connect()
    c.send(get("/first"))
    c.protocol.pause_writing()  # the transport's buffer is full: the client is not reading
    assert not c.transport.reading
    c.send(b"".join(get(f"/{i}") for i in range(5)))
    assert [r.target for r in c.app.seen] == [b"/first"]  # parsed, not handed to the app
    assert len(c.answers()) == 1
    c.protocol.resume_writing()
    c.loop.run_due()
    assert [r.target for r in c.app.seen] == [b"/first", *(f"/{i}".encode() for i in range(5))]
    assert [a.body for a in c.answers()][1:] == [f"/{i}:".encode() for i in range(5)]
    assert c.transport.reading and c.open


def test_a_client_that_never_reads_is_cut_after_idle_timeout() -> None:
    c = connect()
    c.send(get("/a"))
    c.protocol.pause_writing()
    c.loop.advance(LIMITS.idle_timeout + 2 * TICK_SECONDS)
    assert c.transport.aborted


def test_too_many_pipelined_answers_pause_reading() -> None:
    """Past MAX_PIPELINE answers waiting in one connection, reading pauses (a slow app)."""
    c = connect()
    c.protocol.pause_writing()
    c.send(b"".join(get(f"/{i}") for i in range(MAX_PIPELINE + 10)))
    assert not c.transport.reading
    c.protocol.resume_writing()
    c.loop.run_due()
    assert len(c.answers()) == MAX_PIPELINE + 10
    assert c.transport.reading


# -- limits -------------------------------------------------------------------------------------


def test_431_when_the_headers_are_too_large() -> None:
    c = connect()
    c.send(get("/a", "X-Big: " + "b" * LIMITS.max_header_bytes) + get("/b"))
    (answer,) = c.answers()
    assert answer.status == 431 and answer.headers["connection"] == "close"
    assert [r.target for r in c.app.seen] == []
    assert c.transport.eof_written


def test_431_on_a_header_line_that_never_ends() -> None:
    c = connect()
    c.send(b"GET / HTTP/1.1\r\nX-Endless: ")
    for _ in range(LIMITS.max_header_bytes // 64 + 2):
        c.send(b"x" * 64)
    assert [a.status for a in c.answers()] == [431]


def test_414_on_a_long_target() -> None:
    c = connect()
    c.send(get("/" + "t" * LIMITS.max_header_bytes))
    assert [a.status for a in c.answers()] == [414]


def test_413_on_content_length_before_the_body_arrives() -> None:
    c = connect()
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    assert [a.status for a in c.answers()] == [413]
    assert c.app.seen == []


def test_413_when_a_chunked_body_grows_too_big() -> None:
    c = connect()
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert c.answers() == []
    c.send(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert [a.status for a in c.answers()] == [413]


def test_a_body_at_the_limit_is_accepted() -> None:
    c = connect()
    body = b"y" * LIMITS.max_body_bytes
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + body)
    assert [a.body for a in c.answers()] == [b"/p:" + body]


def test_answers_before_an_error_are_sent_first() -> None:
    """A layer-made error takes its turn after the answers already pending, then closes."""
    c = connect()
    c.protocol.pause_writing()
    c.send(get("/a") + b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    c.protocol.resume_writing()
    c.loop.run_due()
    assert [a.status for a in c.answers()] == [200, 413]


def test_400_on_malformed_http() -> None:
    c = connect()
    c.send(b"NOT HTTP AT ALL\r\n\r\n")
    assert [a.status for a in c.answers()] == [400]


# -- deadlines on the injected clock -------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_at_header_timeout() -> None:
    c = connect()
    c.loop.advance(LIMITS.header_timeout - TICK_SECONDS)
    assert c.open
    c.loop.advance(2 * TICK_SECONDS)
    assert not c.open and c.answers() == []  # nothing to answer: closed without a 408


def test_408_when_the_headers_are_too_slow() -> None:
    c = connect()
    c.send(b"GET / HTTP/1.1\r\n")
    c.loop.advance(LIMITS.header_timeout / 2)
    c.send(b"X-Still: coming\r\n")  # activity does not move the deadline
    c.loop.advance(LIMITS.header_timeout / 2 + 2 * TICK_SECONDS)
    assert [a.status for a in c.answers()] == [408]


def test_408_when_the_body_stalls_however_it_trickles() -> None:
    c = connect()
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n")
    for _ in range(int(LIMITS.body_timeout) + 1):
        if c.answers():
            break
        c.send(b"z")  # a byte a second does not move the body's deadline
        c.loop.advance(1.0)
    c.loop.advance(2 * TICK_SECONDS)
    assert [a.status for a in c.answers()] == [408]
    assert c.app.seen == []


def test_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    c = connect()
    c.send(get("/a"))
    c.loop.advance(LIMITS.idle_timeout - TICK_SECONDS)
    assert c.open
    c.send(get("/b"))  # a new request: idle time runs again from its answer
    c.loop.advance(LIMITS.idle_timeout - TICK_SECONDS)
    assert c.open
    c.loop.advance(3 * TICK_SECONDS)
    assert not c.open
    assert [a.status for a in c.answers()] == [200, 200]  # closed, no 408


def test_after_the_last_answer_the_connection_lingers_then_is_aborted() -> None:
    c = connect()
    c.send(get("/a", "Connection: close"))
    assert c.transport.eof_written and c.open  # half-closed: the client reads the answer
    c.loop.advance(LINGER_AFTER_CLOSE + 2 * TICK_SECONDS)
    assert c.transport.aborted


# -- keep-alive, Connection: close and HTTP/1.0 ---------------------------------------------


def test_http11_keeps_the_connection_open_without_saying_so() -> None:
    c = connect()
    c.send(get("/a"))
    (answer,) = c.answers()
    assert "connection" not in answer.headers and c.open and not c.transport.eof_written
    assert answer.headers["content-length"] == "3" and answer.headers["server"] == "jpki-va"


def test_connection_close_is_honoured_and_later_requests_are_ignored() -> None:
    c = connect()
    c.send(get("/a", "Connection: close") + get("/b"))
    assert [(a.body, a.headers["connection"]) for a in c.answers()] == [(b"/a:", "close")]
    assert [r.target for r in c.app.seen] == [b"/a"]
    assert c.transport.eof_written


def test_http10_closes_after_its_answer() -> None:
    c = connect()
    c.send(get("/a", version="1.0"))
    (answer,) = c.answers()
    assert answer.headers["connection"] == "close" and c.transport.eof_written
    assert c.app.seen[0].http_version == b"1.0" and not c.app.seen[0].keep_alive


def test_http10_keep_alive_is_kept_and_said() -> None:
    c = connect()
    c.send(get("/a", "Connection: keep-alive", version="1.0"))
    c.send(get("/b", "Connection: keep-alive", version="1.0"))
    assert [a.headers["connection"] for a in c.answers()] == ["keep-alive", "keep-alive"]
    assert c.open and not c.transport.eof_written


def test_half_close_after_complete_requests_answers_them_then_closes() -> None:
    c = connect()
    c.protocol.pause_writing()
    c.send(get("/a") + get("/b"))
    assert c.protocol.eof_received() is True  # keep the transport open for the answers
    c.protocol.resume_writing()
    c.loop.run_due()
    assert [a.body for a in c.answers()] == [b"/a:", b"/b:"]
    assert c.answers()[-1].headers["connection"] == "close"


# -- the connection budget, early refusal, drain ---------------------------------------------


def test_over_max_connections_a_new_connection_gets_503() -> None:
    c = connect(LimitsConfig(max_connections=1))
    c.protocol.pause_writing()
    c.send(get("/a"))  # an answer waits for its client: c is not displaceable
    d = another(c)
    assert [a.status for a in d.answers()] == [503] and d.transport.eof_written
    assert c.open and c.server.evicted == 0


def test_a_new_connection_displaces_the_oldest_unattributed_idle_one() -> None:
    c = connect(LimitsConfig(max_connections=10, max_unattributed=1))
    d = another(c)
    assert [a.status for a in c.answers()] == [503]  # c waited on its client: displaced
    assert d.answers() == [] and c.server.evicted == 1


class EarlyRefusal(RecordingApp):
    def early(self, req: Request) -> Response | None:
        bad = req.headers.get(b"authorization") == b"Bearer bad"
        return Response(401, b"no\n", b"text/plain") if bad else None


def test_early_refuses_from_the_headers_before_the_body() -> None:
    c = connect(app=EarlyRefusal())
    c.send(
        b"POST /p HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer bad\r\nContent-Length: 90\r\n\r\n"
    )
    assert [a.status for a in c.answers()] == [401] and c.transport.eof_written
    assert c.app.seen == []


class CertRefusal(RecordingApp):
    """Refuses, from the headers, every request carrying a client certificate."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[Request] = []

    def early(self, req: Request) -> Response | None:
        self.asked.append(req)
        return Response(401, b"no\n", b"text/plain") if req.client_cert_der else None


def test_a_json_body_allowed_by_a_certificate_is_judged_before_it_is_read() -> None:
    """A /v1 request with a client certificate may send a body up to ``max_json_body_bytes``
    (24 MiB by default) on the strength of that certificate alone: the app is asked, from the
    headers, whether it proves a party before any of the body is read. It was asked only for
    requests carrying ``Authorization``, so an unregistered certificate had 24 MiB read, held
    and then refused 401."""
    c = connect(LimitsConfig(max_body_bytes=100, max_json_body_bytes=10_000), app=CertRefusal())
    c.protocol._cert = b"an unregistered certificate"
    c.send(b"POST /v1/status HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
    assert [a.status for a in c.answers()] == [401] and c.transport.eof_written
    assert c.app.seen == [] and len(c.app.asked) == 1  # type: ignore[attr-defined]
    # the ordinary limit needs no such look: the body is read as before
    d = connect(app=CertRefusal())
    d.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
    assert [a.status for a in d.answers()] == [200]
    assert d.app.asked == []  # type: ignore[attr-defined]


def test_expect_100_continue_is_answered_before_the_body() -> None:
    c = connect()
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert bytes(c.transport.written) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.send(b"ok")
    assert bytes(c.transport.written).count(b"HTTP/1.1 200 ") == 1


def test_drain_closes_idle_connections_now_and_busy_ones_after_their_answer() -> None:
    idle = connect()
    busy = another(idle)
    busy.protocol.pause_writing()
    busy.send(get("/a"))
    idle.server.draining = True  # what HttpServer.drain does (SIGTERM), without its waiting
    for conn in list(idle.server.connections):
        conn.begin_drain()
    assert not idle.open and busy.open
    busy.protocol.resume_writing()
    busy.loop.run_due()
    assert [a.headers["connection"] for a in busy.answers()] == ["close"]


class _PendingApp:
    """Answers ``/slow`` with an awaitable that only the test finishes (a fresh signature at
    work), everything else at once."""

    def __init__(self, pending: asyncio.Future[Response]) -> None:
        self.pending = pending

    def handle(self, req: Request) -> Response | asyncio.Future[Response]:
        if req.target == b"/slow":
            return self.pending
        return Response(200, req.target, b"text/plain")


def test_a_lost_connection_cancels_the_answers_the_app_is_still_working_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client went away while the app worked on its answer (a fresh OCSP signature in
    the signing threads): nobody will read it, so the app's awaitable is cancelled (the
    signing pool then signs nothing for it, and the app counts nothing in the ledger,
    Act §40), and the cancellation is not an app failure (no app_error log, no 500)."""

    async def main() -> tuple[bool, bool]:
        pending: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        c = connect(app=_PendingApp(pending))  # type: ignore[arg-type]
        c.send(get("/slow") + get("/after"))
        assert c.answers() == []  # /after waits its turn behind /slow
        c.transport.abort()
        await asyncio.sleep(0)  # the done callbacks run
        return pending.cancelled(), c.open

    with caplog.at_level("ERROR", logger="responder.http"):
        cancelled, still_open = asyncio.run(main())
    assert cancelled and not still_open
    assert not [r for r in caplog.records if r.getMessage() == "app_error"]


class _Told:
    """A `responder.http.Provision` that records which of its two calls came."""

    def __init__(self, name: str, events: list[str], transport: FakeTransport | None) -> None:
        self.name = name
        self.events = events
        self.transport = transport

    def sent(self) -> None:
        written = len(Answers(bytes(self.transport.written)).done) if self.transport else 0
        self.events.append(f"sent {self.name} after {written}")

    def dropped(self) -> None:
        self.events.append(f"dropped {self.name}")


class _ProvidingApp:
    """Like `_PendingApp`, each immediate answer with a `_Told` provision."""

    def __init__(self, pending: asyncio.Future[Response], events: list[str]) -> None:
        self.pending = pending
        self.events = events
        self.transport: FakeTransport | None = None
        self.made = 0
        """Immediate answers made."""

    def handle(self, req: Request) -> Response | asyncio.Future[Response]:
        if req.target == b"/slow":
            return self.pending
        told = _Told(req.target.decode(), self.events, self.transport)
        self.made += 1
        return Response(200, req.target, b"text/plain", provision=told)


@pytest.mark.parametrize("finish", ["cancelled", "signed", "signed-after-close"])
def test_an_answer_is_given_when_written_never_when_the_connection_went_first(
    finish: str,
) -> None:
    """帳簿 (Act §40) counts what was provided: an answer made at once but pipelined behind
    a slower one (a fresh signature) is not provided when the client goes away before its
    turn, so its `Provision.dropped` runs (the app gives the party's provisions back) and
    never its ``sent`` (the ledger count); an answer written runs ``sent`` once, just before
    its bytes. The demo showed the gap: 19 provisions counted on a connection reset at once."""

    async def main() -> list[str]:
        events: list[str] = []
        pending: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        app = _ProvidingApp(pending, events)
        c = connect(app=app)  # type: ignore[arg-type]
        app.transport = c.transport
        if finish == "cancelled":
            c.send(get("/slow") + get("/fast"))
            c.transport.abort()
            await asyncio.sleep(0)
        elif finish == "signed":
            c.send(get("/slow") + get("/fast") + get("/last"))
            assert events == []
            told = _Told("slow", events, c.transport)
            pending.set_result(Response(200, b"signed", b"text/plain", provision=told))
            await asyncio.sleep(0)
            assert [a.body for a in c.answers()] == [b"signed", b"/fast", b"/last"]
        else:  # the signature made, its callback not yet run, when the connection goes
            c.send(get("/slow"))
            pending.set_result(
                Response(200, b"signed", b"text/plain", provision=_Told("slow", events, None))
            )
            c.transport.abort()
            await asyncio.sleep(0)
        return events

    events = asyncio.run(main())
    assert (
        events
        == {
            "cancelled": ["dropped /fast"],
            "signed": ["sent slow after 0", "sent /fast after 1", "sent /last after 2"],
            "signed-after-close": ["dropped slow"],
        }[finish]
    )


def test_answers_made_after_the_client_reset_are_not_given_on_a_real_loop() -> None:
    """帳簿 (Act §40), on uvloop and a loopback socket: the client resets the connection
    while the slow answer is made, the two answers behind it made already. The transport
    reads the reset when the loop next polls, and from then on discards what is written,
    but tells the protocol (``connection_lost``) only a callback later, after the slow
    answer's own callback has run. None of the three is given (every provision back);
    before, the three were counted (``sent``) and their bytes discarded: the over-count of
    tests/test_ledger_dropped_server.py's failure, three provisions never provided."""
    events: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[Response] = loop.create_future()
        app = _ProvidingApp(pending, events)
        http_server = HttpServer(app, LimitsConfig(max_body_bytes=100))
        http_server.start()
        server = await loop.create_server(http_server, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        client.sendall(get("/slow") + get("/fast") + get("/last"))
        for _ in range(1000):  # until /fast and /last are made, waiting their turn
            if app.made == 2:
                break
            await asyncio.sleep(0.01)
        tcp.reset(client)  # the kernel took it; the loop has not polled since
        told = _Told("slow", events, None)
        pending.set_result(Response(200, b"signed", b"text/plain", provision=told))
        for _ in range(1000):
            if not http_server.connections:
                break
            await asyncio.sleep(0.01)
        server.close()
        await http_server.drain(1.0)

    uvloop.run(main())
    assert events == ["dropped slow", "dropped /fast", "dropped /last"]


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: the client's socket and the server's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return client, server


def test_a_reset_the_transport_has_not_read_yet_gives_no_answer_made_after_it() -> None:
    """帳簿 (Act §40): the kernel took the client's reset while the slow answer was made, and
    the loop has not polled the socket since (the answer's callback runs first): the
    transport does not know yet, and the first write would fail on the reset (its answer
    counted, its bytes gone). The layer asks the socket (SO_ERROR) before writing an answer
    it waited for: none is given, the connection aborted. Before, the slow answer and the
    one behind it were counted."""
    client, server_side = _tcp_pair()

    async def main() -> tuple[list[str], Conn]:
        events: list[str] = []
        pending: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        app = _ProvidingApp(pending, events)
        c = connect(app=app)  # type: ignore[arg-type]
        c.transport.sock = server_side
        app.transport = c.transport
        c.send(get("/slow") + get("/fast"))
        tcp.reset(client)
        told = _Told("slow", events, c.transport)
        pending.set_result(Response(200, b"signed", b"text/plain", provision=told))
        await asyncio.sleep(0)
        return events, c

    try:
        events, c = asyncio.run(main())
    finally:
        server_side.close()
    assert events == ["dropped slow", "dropped /fast"]
    assert c.transport.aborted and not c.transport.written


def test_a_healthy_connection_is_written_to_after_the_wait() -> None:
    """The look at the socket before an answer waited for finds nothing on a connection
    that is well: the answers are written and given, in order."""
    client, server_side = _tcp_pair()

    async def main() -> tuple[list[str], Conn]:
        events: list[str] = []
        pending: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        app = _ProvidingApp(pending, events)
        c = connect(app=app)  # type: ignore[arg-type]
        c.transport.sock = server_side
        app.transport = c.transport
        c.send(get("/slow") + get("/fast"))
        told = _Told("slow", events, c.transport)
        pending.set_result(Response(200, b"signed", b"text/plain", provision=told))
        await asyncio.sleep(0)
        return events, c

    try:
        events, c = asyncio.run(main())
    finally:
        client.close()
        server_side.close()
    assert events == ["sent slow after 0", "sent /fast after 1"]
    assert c.open and [a.body for a in c.answers()] == [b"signed", b"/fast"]


# -- in process on a loopback socket: hooks and the trusted proxy's certificate header --------


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_connection_open(self) -> None:
        self.calls.append(("open", None))

    def on_connection_close(self) -> None:
        self.calls.append(("close", None))

    def on_request_done(self, req: Request, resp: Response, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(("done", (req.target, resp.status)))

    def on_http_error(self, status: int, peer: str = "") -> None:
        self.calls.append(("error", (status, peer)))


class _CertApp:
    def handle(self, req: Request) -> Response:
        return Response(200, req.client_cert_der or b"-", b"application/octet-stream")


async def _roundtrip(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def run_in_process(
    raw_requests: list[bytes], trusted: tuple[str, ...] = ()
) -> tuple[list[bytes], _Recorder]:
    """Each of ``raw_requests`` on its own connection to an `HttpServer` in this process."""
    recorder = _Recorder()

    async def main() -> list[bytes]:
        http_server = HttpServer(
            _CertApp(),
            LimitsConfig(max_body_bytes=100),
            hooks=recorder,
            trusted_proxies=trusted,
            client_cert_header="client-cert",
        )
        http_server.start()
        server = await asyncio.get_running_loop().create_server(http_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        out = [await _roundtrip(port, raw) for raw in raw_requests]
        server.close()
        await http_server.drain(1.0)
        return out

    return uvloop.run(main()), recorder


def test_hooks_see_connections_requests_and_errors() -> None:
    replies, recorder = run_in_process(
        [
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n",
        ]
    )
    assert replies[0].count(b"HTTP/1.1 200") == 2
    assert replies[1].startswith(b"HTTP/1.1 413")
    calls = recorder.calls
    assert [c for c in calls if c[0] not in ("open", "close")] == [
        ("done", (b"/a", 200)),
        ("done", (b"/b", 200)),
        ("error", (413, "127.0.0.1")),  # layer-made errors name the client (access log)
    ]
    assert calls.count(("open", None)) == calls.count(("close", None)) == 2
    assert calls[0] == ("open", None)  # a connection closes only after it opened
    assert calls[-1] == ("close", None)


def _cert_der() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = certificate("proxy test party", ec.generate_private_key(ec.SECP256R1()), serial=7)
    return cert.public_bytes(serialization.Encoding.DER)


def test_decode_forwarded_cert_formats() -> None:
    der = _cert_der()
    b64 = base64.b64encode(der)
    pem = b"-----BEGIN CERTIFICATE-----\n" + b64 + b"\n-----END CERTIFICATE-----\n"
    assert decode_forwarded_cert(b":" + b64 + b":") == der
    assert decode_forwarded_cert(b64) == der
    assert decode_forwarded_cert(urllib.parse.quote_from_bytes(pem).encode()) == der
    assert decode_forwarded_cert(b"") is None
    for bad in (b":not base64!:", b"%2D%2D%2D%2D%2Dnope", base64.b64encode(b"\x02\x01\x00")):
        with pytest.raises(ValueError):
            decode_forwarded_cert(bad)


def test_certificate_header_believed_only_from_trusted_proxies() -> None:
    der = _cert_der()
    request = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nClient-Cert: :"
        + base64.b64encode(der)
        + b":\r\n\r\n"
    )
    trusted, _ = run_in_process([request, request.replace(b":M", b":!M")], ("127.0.0.0/8",))
    assert trusted[0].endswith(b"\r\n\r\n" + der)
    assert trusted[1].startswith(b"HTTP/1.1 400 ")
    untrusted, _ = run_in_process([request], ("10.0.0.1",))
    assert untrusted[0].endswith(b"\r\n\r\n-")
