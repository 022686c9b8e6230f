"""One HTTP exchange bounded, whole, by one deadline (I/O only; the HTTP is http.client's).

The clients that reach the 機構's appliance (the group's record-info relay,
`responder.relayclient`; ``crlbuilder group pull``, ``group init``/``group keys`` and
``import-crl``) must not be held by it: a socket timeout (http.client's and urllib's
``timeout``) bounds each socket operation, so a peer sending one byte of its status line,
of a header line or of its body every few seconds keeps each operation under it and holds
the exchange as long as it likes. Here every operation is given what is left of one
`Deadline` instead:

- the name's resolution (`resolve`): the system resolver's ``getaddrinfo``, which cannot be
  given a timeout nor cancelled, runs in a thread of its own and is waited for in the time
  left (an address is taken as it is, no thread); past the deadline, or stopped, the thread is
  left to end at the resolver's own timeout, its answer unused, and at most
  `RESOLVING` such threads are ever waiting (one more is refused at once, `ResolverBusy`);
- connect: each address of the host tried with the time left;
- the TLS handshake: one call, which CPython's ssl module bounds whole by the socket's
  timeout, set to the time left just before;
- every send, and every read of the answer (status line, header lines, body, through
  http.client's buffered reader), sets the socket's timeout to the time left first.

Past the deadline the operation under way raises `TimeoutError` (an OSError; urllib may
wrap it in a URLError), and `Deadline.passed` says it was the deadline. A deadline may
grant time per byte received (`Deadline` ``per_byte``): a download's whole bound is then a
floor plus its size at a minimum rate, so a large file on a good link is never cut while a
peer that drips is cut as soon as it falls behind that rate.

A deadline may also be given a ``stop`` event (``group pull --follow``'s, set by SIGTERM):
then no blocking step waits longer than `SLICE` at a time (the connection's, the TLS
handshake's and every read's waits are taken in slices, the request's one send excepted), and
once it is set the exchange is given up at the next slice: `Stopped`, within `SLICE` seconds,
however long the deadline still grants a large file.

`read_body` reads a response's body within a bound of bytes: refused at once when its
Content-Length announces more (nothing read), as soon as more arrived otherwise, and failed
when the connection ends before the bytes its Content-Length announced (http.client's
``read1`` and ``read(amt)`` then return what came, without a word). Every client of the
機構 reads its answers with it.

`Connection` is an `http.client.HTTPConnection` (https when given a TLS context) doing so;
`opener` is urllib's opener with it, for callers that use urllib's redirect and error
handling. Neither uses a proxy named by the environment (``http_proxy``, ``https_proxy``):
the 機構's appliance is reached directly, as the relay always did. Nothing here logs.
"""

from __future__ import annotations

import errno
import http.client
import io
import ipaddress
import os
import select
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

__all__ = [
    "RESOLVING",
    "SLICE",
    "BodyRefused",
    "Connection",
    "CutShort",
    "Deadline",
    "NoRedirects",
    "ResolverBusy",
    "Stopped",
    "TooLarge",
    "loopback_host",
    "opener",
    "read_body",
    "resolve",
]

SLICE: Final = 0.25
"""The longest one blocking step waits at a time when its deadline has a ``stop`` event."""

_T = TypeVar("_T")


class Stopped(Exception):
    """The exchange was given up because its deadline's ``stop`` was set. Not an OSError:
    neither urllib nor a caller takes it for the network failing."""


class BodyRefused(Exception):
    """A body not taken (`read_body`); the message says why, sizes only."""


class TooLarge(BodyRefused):
    """More bytes announced or received than accepted."""


class CutShort(BodyRefused):
    """The connection ended before the bytes its Content-Length announced."""


def loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a URL's, as `urllib.parse.urlsplit` gives it) names this machine:
    ``localhost`` or a loopback address (127.0.0.0/8, ::1). The one place that lets a
    credential go over plain http (the group's token: ``group init``, ``group pull``,
    ``import-crl``, the relay). A name is never taken by its look: ``127.0.0.1.example``
    resolves wherever its owner says."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Deadline:
    """The monotonic instant an exchange must be over by: ``seconds`` from now, plus
    ``per_byte`` seconds for each byte received (`credit`), when given."""

    __slots__ = ("_at", "_clock", "per_byte", "received", "seconds", "stop")

    def __init__(
        self,
        seconds: float,
        *,
        per_byte: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ) -> None:
        self._clock = clock
        self._at = clock() + seconds
        self.seconds = seconds
        self.per_byte = per_byte
        self.received = 0
        """Bytes read so far (status line and headers included)."""
        self.stop = stop
        """Set: the exchange is given up (`Stopped`) at its next step or slice (`SLICE`)."""

    def left(self) -> float:
        """Seconds left, > 0; TimeoutError when none is, `Stopped` once ``stop`` is set."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped("given up: the process is stopping")
        left = self._at - self._clock()
        if left <= 0:
            raise TimeoutError("the exchange's deadline passed")
        return left

    def wait(self) -> float:
        """How long the next blocking step may wait: what is `left`, at most `SLICE` when
        there is a ``stop`` to look at again."""
        left = self.left()
        return left if self.stop is None else min(left, SLICE)

    def patiently(self, sock: socket.socket, step: Callable[[], _T]) -> _T:
        """``step()`` (a read, a TLS handshake: a step that may be tried again after its
        timeout) with the socket's timeout set to `wait`, tried again after each slice that
        ran out until the deadline passes (TimeoutError) or ``stop`` is set (`Stopped`)."""
        while True:
            sock.settimeout(self.wait())
            try:
                return step()
            except TimeoutError:
                if self.stop is None:  # it waited all that was left
                    raise

    @property
    def passed(self) -> bool:
        return self._clock() >= self._at

    @property
    def allowed(self) -> float:
        """The seconds the exchange has been allowed so far (the floor and the bytes' credit)."""
        return self.seconds + self.received * self.per_byte

    def credit(self, n: int) -> None:
        """``n`` more bytes received: the deadline moves ``n * per_byte`` seconds later."""
        self.received += n
        self._at += n * self.per_byte


RESOLVING: Final = 4
"""Resolutions at most under way at once in the process (`resolve`): a resolver that hangs
holds no more threads than this however often a caller tries again."""

_resolving = threading.BoundedSemaphore(RESOLVING)

Addresses = Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]
"""What ``getaddrinfo`` gives: (family, type, proto, canonname, sockaddr) per address."""


class ResolverBusy(OSError):
    """`RESOLVING` earlier resolutions have not ended yet: the resolver is not answering."""


def resolve(host: str, port: int, deadline: Deadline) -> Addresses:
    """``host``'s TCP addresses (``getaddrinfo``), waited for no longer than ``deadline``
    (TimeoutError past it, `Stopped` once its ``stop`` is set, `ResolverBusy`: module docstring).
    An IP address is returned at once, resolved by no one."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name: the resolver's
    deadline.left()
    if not _resolving.acquire(blocking=False):
        raise ResolverBusy(
            f"the name {host!r} was not resolved: {RESOLVING} earlier resolutions have not "
            "ended (the system resolver is not answering)"
        )
    done = threading.Event()
    answer: list[Addresses] = []
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as e:
            failed.append(e)
        finally:
            _resolving.release()
            done.set()

    try:
        threading.Thread(target=ask, name="resolve", daemon=True).start()
    except BaseException:  # no thread (the process's limit): the slot is not left taken
        _resolving.release()
        raise
    while not done.wait(deadline.wait()):
        pass  # the next wait() raises past the deadline, or stopped
    if failed:
        raise failed[0]
    return answer[0]


class _Reader(io.RawIOBase):
    """The socket's bytes, each read given what is left of the deadline (http.client reads
    the status line, the header lines and the body through a buffered reader over this)."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # the socket closes when this closes
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        # the socket's own read, not the reader's (`SocketIO` refuses to read again after a
        # timeout): a slice that ran out read nothing and is tried again (`Deadline.patiently`)
        n = self._deadline.patiently(self._sock, lambda: self._sock.recv_into(buffer))
        if n:
            self._deadline.credit(n)
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Socket:
    """What http.client holds as its socket: it sends and opens its reader through this."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: Any) -> None:
        self._sock.settimeout(self._deadline.left())  # sendall's timeout bounds all of it
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only a binary reader is made here, not {mode!r}")
        return io.BufferedReader(_Reader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()  # the reader, while open, keeps the connection (socket._io_refs)


class Connection(http.client.HTTPConnection):
    """An HTTPConnection, over TLS when ``context`` is given, whose whole exchange ends by
    ``deadline`` (module docstring)."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        deadline: Deadline,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.default_port = http.client.HTTPS_PORT if context is not None else http.client.HTTP_PORT
        super().__init__(host, port)
        self.deadline = deadline
        self.context = context

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        sock = self._connect_any()
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                self.deadline.patiently(sock, sock.do_handshake)
        except BaseException:
            sock.close()
            raise
        self.sock = _Socket(sock, self.deadline)

    def _connect_any(self) -> socket.socket:
        """A connected TCP socket to one of the host's addresses, each tried in the time left."""
        last: OSError | None = None
        for family, kind, proto, _, address in resolve(self.host, self.port, self.deadline):
            self.deadline.left()
            sock = socket.socket(family, kind, proto)
            try:
                self._connect(sock, address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                sock.close()
                last = e
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise last if last is not None else OSError(f"no address for {self.host}")

    def _connect(self, sock: socket.socket, address: Any) -> None:
        """Connect ``sock``, waiting in the deadline's slices (`Deadline.wait`): a connect
        that timed out cannot be tried again, so it is begun without blocking and its end
        waited for."""
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            poll = select.poll()
            poll.register(sock, select.POLLOUT)
            while not poll.poll(max(1, int(self.deadline.wait() * 1000))):
                pass  # the next wait() raises past the deadline, or stopped
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, /, **_: Any) -> Connection:  # urllib's timeout: unused
        return Connection(host, deadline=self._deadline)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._deadline = deadline
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, /, **_: Any) -> Connection:  # urllib's timeout: unused
        if self._tls is None:  # made for an https request only (loading the CAs takes time)
            self._tls = ssl.create_default_context()
        return Connection(host, deadline=self._deadline, context=self._tls)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is never followed: the 3xx is the answer, an `urllib.error.HTTPError`. The
    clients of the 機構 ask fixed paths of the address the operator gave; a redirect would send
    the request (and, for a pull, the group's token) or take what is pinned from elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener(
    deadline: Deadline,
    *handlers: urllib.request.BaseHandler,
    context: ssl.SSLContext | None = None,
) -> urllib.request.OpenerDirector:
    """urllib's opener (with ``handlers``, e.g. a redirect policy) whose every exchange, the
    redirects it follows included, ends by ``deadline``; no proxy of the environment."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _HttpHandler(deadline),
        _HttpsHandler(deadline, context),
        *handlers,
    )


def read_body(resp: http.client.HTTPResponse, limit: int, *, chunk: int = 1 << 20) -> bytes:
    """``resp``'s whole body, at most ``limit`` bytes, read a socket read (``read1``, at most
    ``chunk`` bytes) at a time, within the connection's deadline. `TooLarge` at once when its
    Content-Length announces more than ``limit`` (nothing read) or as soon as more arrived;
    `CutShort` when the connection ends before the bytes its Content-Length announced. The
    bytes are held once (a `io.BytesIO` whose buffer becomes the result, not parts joined)."""
    announced = resp.length
    if announced is not None and announced > limit:
        raise TooLarge(f"the answer announces {announced} bytes, more than the {limit} accepted")
    body = io.BytesIO()
    while got := resp.read1(chunk):
        if body.tell() + len(got) > limit:
            raise TooLarge(f"more than the {limit} bytes accepted")
        body.write(got)
    if announced is not None and resp.length:  # read1 ends at the close, bytes still due
        raise CutShort(
            f"the connection ended {resp.length} bytes short of the {announced} its "
            "Content-Length announced: cut short"
        )
    return body.getvalue()
