"""One HTTP exchange bounded whole by one deadline (`crlbuilder.deadlinehttp`), against raw
servers on loopback, plain and TLS, that drip their answers.

Each dripping server keeps every single socket read short (well under the deadline), so a
per-operation timeout alone (http.client's, urllib's) never fires: only the whole deadline
cuts the exchange.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from crlbuilder import deadlinehttp
from crlbuilder.deadlinehttp import (
    RESOLVING,
    SLICE,
    Connection,
    Deadline,
    ResolverBusy,
    Stopped,
    opener,
    resolve,
)
from tests.support.pki import certificate, rsa_key

Script = Callable[[socket.socket], None]


class Server:
    """Accepts connections on loopback (over TLS when ``tls`` is given, the handshake done
    in ``script``'s thread); each one is answered by ``script`` after the request's head."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.script = script
        self.tls = tls
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:  # the client gave up first
            conn.settimeout(30)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                got = conn.recv(65536)
                if not got:
                    return
                head += got
            self.script(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> Server:
        servers.append(Server(script, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context (a self-signed certificate for 127.0.0.1) and a client context
    trusting it, checking the name."""
    key = rsa_key()
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = certificate("127.0.0.1", key, extensions=[(san, False)])
    d: Path = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cadata=cert.public_bytes(Encoding.PEM).decode())
    return server, client


def drip_head(every: float, n: int = 40) -> Script:
    """The status line at once, then a header line a byte every ``every`` seconds."""

    def go(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for b in b"X-Pad: " + b"p" * n + b"\r\n\r\n":
            conn.sendall(bytes([b]))
            time.sleep(every)

    return go


def body_at(size: int, chunk: int, every: float) -> Script:
    """A 200 of ``size`` bytes, ``chunk`` bytes every ``every`` seconds."""

    def go(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size:
            conn.sendall(b"x" * min(chunk, size - sent))
            sent += chunk
            time.sleep(every)

    return go


def get(port: int, deadline: Deadline, context: ssl.SSLContext | None = None) -> bytes:
    conn = Connection("127.0.0.1", port, deadline=deadline, context=context)
    try:
        conn.request("GET", "/x")
        return conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "https"])
def test_header_lines_dripped_are_cut_at_the_deadline(
    serve: Callable[..., Server],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    over_tls: bool,
) -> None:
    """A header byte every 0.1 s (about 3 s for the head): http.client's own timeout of 1 s
    per read never fires (the first check below shows it), the 1 s deadline does."""
    server = serve(drip_head(0.1, 25), tls[0] if over_tls else None)
    client = tls[1] if over_tls else None
    t0 = time.monotonic()
    plain: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", server.port, timeout=1.0, context=client)
        if over_tls
        else http.client.HTTPConnection("127.0.0.1", server.port, timeout=1.0)
    )
    try:
        plain.request("GET", "/x")
        assert plain.getresponse().status == 200  # held past 2.5 s by a 1 s timeout
    finally:
        plain.close()
    assert time.monotonic() - t0 > 2.5

    deadline = Deadline(1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        get(server.port, deadline, client)
    took = time.monotonic() - t0
    assert 0.9 < took < 2.0, took
    assert deadline.passed


def test_a_tls_handshake_never_answered_is_cut_at_the_deadline(
    serve: Callable[..., Server],
) -> None:
    """A server that accepts and says nothing: the handshake is cut at what was left."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            get(silent.getsockname()[1], Deadline(1.0), ssl.create_default_context())
        assert time.monotonic() - t0 < 2.0


def test_the_bytes_received_earn_time_at_the_rate_and_a_drip_is_cut(
    serve: Callable[..., Server],
) -> None:
    """``per_byte``: 1 s plus 1 s per 100 kB. A 400 kB body sent at 200 kB/s (2 s, past the
    1 s floor) arrives whole; 1 kB every 0.1 s (10 kB/s, below the rate) is cut soon after the
    floor and the little it earned."""
    fast = serve(body_at(400_000, 20_000, 0.1))
    t0 = time.monotonic()
    assert len(get(fast.port, Deadline(1.0, per_byte=1e-5))) == 400_000
    assert time.monotonic() - t0 > 1.5  # past the floor: the bytes' credit carried it

    slow = serve(body_at(400_000, 1_000, 0.1))
    deadline = Deadline(1.0, per_byte=1e-5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        get(slow.port, deadline)
    took = time.monotonic() - t0
    assert took < 2.0, took
    assert 1.0 < deadline.allowed < 1.5 and deadline.received < 30_000


def test_urllib_through_the_opener_is_bounded_whole_and_takes_no_proxy(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """urllib's redirect and error handling over the deadline connection; the environment's
    proxy is not used (it would never answer)."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(1)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{black_hole.getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        ok = serve(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        with opener(Deadline(5.0)).open(f"http://127.0.0.1:{ok.port}/x") as resp:
            assert resp.read() == b"ok"

        dripping = serve(drip_head(0.1, 40))
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            opener(Deadline(1.0)).open(f"http://127.0.0.1:{dripping.port}/x").read()
        assert time.monotonic() - t0 < 2.0

        moved = serve(
            lambda c: c.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/y\r\n"
                b"Content-Length: 0\r\n\r\n" % dripping.port
            )
        )
        deadline = Deadline(1.0)
        t0 = time.monotonic()
        follows = opener(deadline, urllib.request.HTTPRedirectHandler())
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            follows.open(f"http://127.0.0.1:{moved.port}/x").read()
        assert time.monotonic() - t0 < 2.0 and deadline.passed  # one deadline, both requests


def test_https_through_the_opener_verifies_the_server(
    serve: Callable[..., Server], tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """With the caller's context the server is trusted; without one, the default context
    (the system's CAs) refuses its self-signed certificate."""
    server = serve(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), tls[0])
    url = f"https://127.0.0.1:{server.port}/x"
    assert opener(Deadline(5.0), context=tls[1]).open(url).read() == b"ok"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        opener(Deadline(5.0)).open(url)


@pytest.mark.real_clock  # timed waits (the stop's timer, the server's stall)
@pytest.mark.parametrize("step", ["connect", "handshake", "body-http", "body-https"])
def test_a_stop_gives_up_every_wait_within_a_slice(
    serve: Callable[..., Server], tls: tuple[ssl.SSLContext, ssl.SSLContext], step: str
) -> None:
    """A deadline's ``stop`` (``group pull --follow``'s, set by SIGTERM): whatever the exchange
    waits for, a connection a full backlog leaves unanswered, a TLS handshake never answered,
    a body that stalls over http or https, it is given up (`Stopped`) within `SLICE` of the
    stop, though the deadline grants 30 s more; a slice that ran out is no failure (a TLS
    body read on after it, below). Without a stop every wait takes what is left, as before."""
    server_tls, client_tls = tls
    with contextlib.ExitStack() as stack:
        if step == "connect":  # a backlog of 0 filled: the next SYN goes unanswered
            full = stack.enter_context(socket.socket())
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            port = full.getsockname()[1]
            for _ in range(3):
                filler = stack.enter_context(socket.socket())
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            context = None
        elif step == "handshake":
            silent = stack.enter_context(socket.socket())
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            port, context = silent.getsockname()[1], client_tls
        else:  # half the body at once, the rest after 0.4 s, then nothing for 5 s

            def stall(conn: socket.socket) -> None:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 1000)
                time.sleep(0.4)
                conn.sendall(b"y" * 1000)
                time.sleep(5)

            https = step == "body-https"
            server = serve(stall, server_tls if https else None)
            port, context = server.port, client_tls if https else None
        stop = threading.Event()
        threading.Timer(1.0, stop.set).start()
        deadline = Deadline(30.0, stop=stop)
        t0 = time.monotonic()
        with pytest.raises(Stopped):
            get(port, deadline, context)
        took = time.monotonic() - t0
    assert 0.9 < took < 1.0 + SLICE + 0.3, took
    if step.startswith("body"):
        assert deadline.received > 2000  # the part sent after a slice ran out was read


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The system resolver hung for names (an address still answered at once): each name asked
    is listed, and every hung resolution ends when the test does."""
    real = socket.getaddrinfo
    release = threading.Event()
    asked: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if int(kwargs.get("flags", 0)) & socket.AI_NUMERICHOST:  # type: ignore[call-overload]
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            asked.append(host)
            release.wait(30)
            raise socket.gaierror(
                socket.EAI_AGAIN, "Temporary failure in name resolution"
            ) from None
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()
    # the abandoned resolutions end before the next test: every slot is free again
    slots = [deadlinehttp._resolving.acquire(timeout=5) for _ in range(RESOLVING)]
    for _ in range(sum(slots)):
        deadlinehttp._resolving.release()
    assert all(slots)


@pytest.mark.real_clock  # timed waits on a thread's event (libfaketime holds them for ever)
def test_a_name_the_resolver_never_answers_is_cut_at_the_deadline(
    serve: Callable[..., Server], hung_resolver: list[str]
) -> None:
    """``getaddrinfo`` takes no timeout: a resolver that does not answer held the exchange for
    its own timeouts (seconds to minutes). Now the deadline cuts it, and so does a stop; an
    address never reaches the resolver."""
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        conn = Connection("jpki.example", 80, deadline=Deadline(0.5))
        conn.request("GET", "/x")
    assert 0.4 < time.monotonic() - t0 < 1.5
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        resolve("jpki.example", 80, Deadline(30.0, stop=stop))
    assert time.monotonic() - t0 < 0.3 + SLICE + 0.5
    server = serve(body_at(3, 3, 0))
    assert get(server.port, Deadline(2.0)) == b"xxx"  # 127.0.0.1: no resolver thread
    assert hung_resolver == ["jpki.example", "jpki.example"]


@pytest.mark.real_clock  # timed waits on a thread's event (libfaketime holds them for ever)
def test_resolutions_left_waiting_are_bounded(hung_resolver: list[str]) -> None:
    """A resolver that never answers, asked again and again (a group's pull every cycle):
    at most `RESOLVING` threads wait on it; one more is refused at once, naming why."""
    for _ in range(RESOLVING):
        with pytest.raises(TimeoutError):
            resolve("jpki.example", 443, Deadline(0.05))
    t0 = time.monotonic()
    with pytest.raises(ResolverBusy, match="earlier resolutions have not ended"):
        resolve("jpki.example", 443, Deadline(5.0))
    assert time.monotonic() - t0 < 0.5
    assert len(hung_resolver) == RESOLVING


def test_a_resolution_that_could_not_start_its_thread_leaves_no_slot_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread refused (the process at its limit) is said as such each time, never taken for
    a resolver that does not answer (`ResolverBusy`) once `RESOLVING` such failures came."""

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    for _ in range(RESOLVING + 1):
        with pytest.raises(RuntimeError, match="can't start new thread"):
            resolve("jpki.example", 443, Deadline(5.0))
