"""The HTTP layer (responder/http.py) against the real server on loopback.

Most tests talk to one `serve()` subprocess (one worker, short timeouts) with
raw sockets and http.client. The same mechanisms in process, on a fake transport and
clock (and the hooks and the trusted proxy's certificate header), are in
tests/test_http_protocol.py.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httptools
import pytest

from responder.config import ConfigError, LimitsConfig, load_config
from tests.support.echo_app import (
    ReplyReader,
    ServerProcess,
    connect,
    wait_closed,
    write_config,
)

pytestmark = pytest.mark.integration  # a worker process on loopback

LIMITS = {
    "max_body_bytes": 4096,
    "max_header_bytes": 2048,
    "header_timeout": 1.0,
    "body_timeout": 1.0,
    "idle_timeout": 1.5,
    "max_connections": 100,
    "drain_timeout": 2.0,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("http")
    config = write_config(workdir / "responder.toml", {"port": 0, "workers": 1}, LIMITS)
    proc = ServerProcess(workdir, config)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _stderr_clean(server: ServerProcess) -> None:
    text = server.stderr()
    assert "Traceback" not in text
    assert "SECRET" not in text


def test_keep_alive_with_http_client(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/info")
        first = conn.getresponse()
        info = json.loads(first.read())
        sock = conn.sock
        assert first.status == 200
        assert first.getheader("Server") == "jpki-va"
        assert first.getheader("Content-Length") == str(len(json.dumps(info).encode()))
        date = email.utils.parsedate_to_datetime(first.getheader("Date") or "")
        assert abs(date.timestamp() - time.time()) < 5
        assert info["keep_alive"] is True and info["version"] == "1.1"
        assert info["headers"]["host"] == f"127.0.0.1:{server.port}"
        conn.request("POST", "/echo", body=b"abc", headers={"Content-Type": "x/y"})
        second = conn.getresponse()
        assert second.read() == b"abc"
        assert second.getheader("Content-Type") == "x/y"
        assert int(second.getheader("X-Request-Id") or 0) == info["request_id"] + 1
        conn.request("GET", "/fixed")
        third = conn.getresponse()
        assert third.read() == b"F" * 100
        assert conn.sock is sock  # the same TCP connection all along
    finally:
        conn.close()


def test_repeated_headers_joined_and_lowercased(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"GET /info HTTP/1.1\r\nHost: a\r\nX-Many: 1\r\nx-many: 2\r\nX-MANY: 3\r\n\r\n"
        )
        reply = ReplyReader(sock).read_one()
    info = json.loads(reply.body)
    assert info["headers"]["x-many"] == "1, 2, 3"
    assert info["target"] == "/info"


def test_chunked_request_body_and_head(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        chunks = [b"a" * 1000, b"b" * 1000, b"c" * 5]
        conn.request("POST", "/echo", body=iter(chunks), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.read() == b"".join(chunks)
        conn.request("HEAD", "/fixed")
        head = conn.getresponse()
        assert head.getheader("Content-Length") == "100"
        assert head.read() == b""
        conn.request("GET", "/fixed")  # the HEAD answer carried no body: still in sync
        assert conn.getresponse().read() == b"F" * 100
    finally:
        conn.close()


def test_pipelining_keeps_order_with_slow_first_request(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"GET /sleep?0.4 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /thread-sleep?0.2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /info HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        replies = ReplyReader(sock).read(6)
    assert [r.status for r in replies] == [200, 200, 200, 200, 500, 200]
    assert replies[0].body.startswith(b"slept ")
    assert replies[1].body == b"F" * 100
    assert replies[2].body == b"hello"
    assert replies[3].body == b"thread slept"
    first_id = int(replies[0].body.split()[1])
    assert int(replies[2].headers["x-request-id"]) == first_id + 2
    assert json.loads(replies[5].body)["request_id"] == first_id + 5


@pytest.mark.parametrize("holds", [True, False])
def test_a_request_that_holds_delays_the_pipelined_ones_after_it(
    server: ServerProcess, holds: bool
) -> None:
    """`Request.holds` (a write, POST /v1/watch): the requests pipelined after it are handed
    to the app once its answer is made; without it they are worked on at once, as ever."""
    first = b"/hold-sleep?0.3" if holds else b"/free-sleep?0.3"
    with connect(server.port) as sock:
        sock.sendall(
            b"GET " + first + b" HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /now HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /now HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        replies = ReplyReader(sock).read(3)
    assert [r.status for r in replies] == [200, 200, 200]
    ended, *after = (float(r.body) for r in replies)
    assert all(t >= ended for t in after) is holds, (ended, after)


def test_slow_request_does_not_stall_other_connections(server: ServerProcess) -> None:
    with connect(server.port) as slow, connect(server.port) as fast:
        slow.sendall(b"GET /thread-sleep?1.0 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.1)  # the slow request is in the worker's executor now
        fast.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert ReplyReader(fast).read_one(timeout=0.8).status == 200
        readable, _, _ = select.select([slow], [], [], 0)
        assert not readable  # the slow answer is still being computed
        assert ReplyReader(slow).read_one().body == b"thread slept"


def test_http10_closes_unless_keep_alive(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /info HTTP/1.0\r\n\r\n")
        data = wait_closed(sock, 3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nConnection: close" in head
    info = json.loads(body)
    assert info["version"] == "1.0" and info["keep_alive"] is False
    with connect(server.port) as sock:
        reader = ReplyReader(sock)
        for _ in range(2):
            sock.sendall(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            reply = reader.read_one()
            assert reply.headers["connection"] == "keep-alive"
            assert reply.body == b"F" * 100


def test_connection_close_is_honoured(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"GET /fixed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n"  # after close: never answered
        )
        data = wait_closed(sock, 3)
    assert data.count(b"HTTP/1.1") == 1
    assert b"Connection: close\r\n" in data


def test_413_on_content_length_before_the_body(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4097\r\n\r\n")
        data = wait_closed(sock, 3)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in data


def test_413_when_chunked_body_grows_too_big(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"800\r\n" + b"z" * 0x800 + b"\r\n"
        sock.sendall(chunk * 2)  # exactly the limit: fine so far
        sock.sendall(chunk)
        data = wait_closed(sock, 3)
    assert data.startswith(b"HTTP/1.1 413 ")


def test_body_at_the_limit_is_accepted(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/echo", body=b"q" * 4096)
        assert conn.getresponse().read() == b"q" * 4096
    finally:
        conn.close()


def test_431_on_large_headers(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 2100 + b"\r\n\r\n")
        assert wait_closed(sock, 3).startswith(b"HTTP/1.1 431 ")


def test_431_on_a_header_line_that_never_ends(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        for _ in range(10):
            try:
                sock.sendall(b"v" * 500)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.02)
        assert wait_closed(sock, 3).startswith(b"HTTP/1.1 431 ")


def test_414_on_a_long_target(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /" + b"p" * 3000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert wait_closed(sock, 3).startswith(b"HTTP/1.1 414 ")


def test_408_when_headers_are_too_slow(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n")
        time.sleep(0.5)
        sock.sendall(b"X-Still: coming\r\n")  # activity does not extend the header deadline
        data = wait_closed(sock, 4)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.9 < elapsed < 3.5


def test_408_when_the_body_stalls(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        assert wait_closed(sock, 4).startswith(b"HTTP/1.1 408 ")


def test_silent_connection_is_cut_off(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        start = time.monotonic()
        assert wait_closed(sock, 4) == b""
        assert time.monotonic() - start > 0.9


def test_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        reader = ReplyReader(sock)
        assert reader.read_one().status == 200
        time.sleep(0.8)  # under the idle timeout: still open
        sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert reader.read_one().status == 200
        start = time.monotonic()
        assert wait_closed(sock, 4) == b""
        assert time.monotonic() - start > 1.4


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_400_on_malformed_http(server: ServerProcess, garbage: bytes) -> None:
    with connect(server.port) as sock:
        sock.sendall(garbage)
        data = wait_closed(sock, 3)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in data


def test_client_closing_mid_request_leaves_the_worker_serving(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc")
    with connect(server.port) as sock:
        sock.sendall(b"GET /fix")
    with connect(server.port) as sock:  # closes while its answer is being computed
        sock.sendall(b"GET /sleep?0.2 HTTP/1.1\r\nHost: a\r\n\r\n")
    with connect(server.port) as sock:  # half-close after a complete request: still answered
        sock.sendall(b"GET /sleep?0.1 HTTP/1.1\r\nHost: a\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert wait_closed(sock, 3).startswith(b"HTTP/1.1 200 ")
    time.sleep(0.4)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/fixed")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    _stderr_clean(server)


def test_app_failures_are_500_without_request_data(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ("/boom", "/boom-async", "/not-a-response"):
            conn.request("POST", path, body=b"private-value")
            resp = conn.getresponse()
            assert resp.status == 500
            assert resp.read() == b"Internal Server Error\n"
        conn.request("GET", "/fixed")  # same connection, worker still serving
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    time.sleep(0.1)
    errors = [e for e in server.events() if e["event"] == "app_error"]
    assert {e["exc_type"] for e in errors} >= {"RuntimeError", "ValueError", "TypeError"}
    assert "private-value" not in server.stderr()
    _stderr_clean(server)


def test_expect_100_continue(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.settimeout(3)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert ReplyReader(sock).read_one().body == b"body"


def test_pipelined_flood_with_a_client_that_does_not_read(server: ServerProcess) -> None:
    count, size = 120, 65536
    with connect(server.port, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % size * count)
        time.sleep(0.5)  # the server's write buffer fills; it must stop reading, not grow
        replies = ReplyReader(sock).read(count, timeout=20)
    assert all(r.status == 200 and len(r.body) == size for r in replies)


def test_upgrade_request_is_answered_then_closed(server: ServerProcess) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"GET /fixed HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        )
        data = wait_closed(sock, 3)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.count(b"HTTP/1.1") == 1


def test_max_connections_per_worker(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "responder.toml",
        {"port": 0, "workers": 1},
        {**LIMITS, "max_connections": 2, "max_unattributed": 2},
    )
    with ServerProcess(tmp_path, config).start() as server:
        first, second = connect(server.port), connect(server.port)
        try:
            for sock in (first, second):  # both attributed to a party: never displaced
                sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\nX-Party: p\r\n\r\n")
                assert ReplyReader(sock).read_one().status == 200
            with connect(server.port) as third:
                assert wait_closed(third, 3).startswith(b"HTTP/1.1 503 ")
            first.close()
            time.sleep(0.2)
            with connect(server.port) as fourth:
                fourth.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
                assert ReplyReader(fourth).read_one().status == 200
        finally:
            first.close()
            second.close()


def _sends_slowly(sock: socket.socket, until: float) -> bytes:
    """Send one body byte every 0.2 s until the server answers and closes, or ``until``."""
    data = b""
    sock.setblocking(False)
    while time.monotonic() < until:
        with contextlib.suppress(OSError):  # the server closed (reset after its answer)
            sock.send(b"x")
        if select.select([sock], [], [], 0.2)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
    return data


def test_slow_body_is_cut_at_its_deadline_not_kept_alive_by_each_byte(
    server: ServerProcess,
) -> None:
    """Issue 10 item 3: a body trickling in a byte at a time meets one deadline (408)."""
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4000\r\n\r\n")
        start = time.monotonic()
        data = _sends_slowly(sock, start + 6.0)  # each byte well within body_timeout (1 s)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 "), data[:40]
    assert elapsed < 4.0  # cut near body_timeout, not when the sender gives up (6 s)


def test_first_request_headers_are_due_from_the_connection_opening(
    server: ServerProcess,
) -> None:
    """Issue 10 item 4 (slowloris cut at twice the timeout): a request line sent just before
    header_timeout does not restart the clock; a line now and then does not either."""
    with connect(server.port) as sock:
        start = time.monotonic()
        time.sleep(0.7)
        sock.sendall(b"GET /fixed HTTP/1.1\r\n")
        time.sleep(0.2)
        sock.sendall(b"X-A: b\r\n")
        data = wait_closed(sock, 4)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 1.6  # header_timeout (1 s) after opening; before the fix ~1.7 s or more


def test_unattributed_budget_is_a_part_of_max_connections(tmp_path: Path) -> None:
    assert LimitsConfig(max_connections=100).unattributed_budget == 25  # default: a quarter
    assert LimitsConfig(max_connections=2).unattributed_budget == 1
    assert LimitsConfig(max_connections=100, max_unattributed=100).unattributed_budget == 100
    bad = tmp_path / "bad.toml"
    bad.write_text("[server.limits]\nmax_connections = 10\nmax_unattributed = 11\n")
    with pytest.raises(ConfigError, match="max_unattributed must not exceed max_connections"):
        load_config(bad, {})


def _slow_unattributed(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = connect(port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nx")
        socks.append(sock)
    return socks


def test_unattributed_connections_cannot_take_the_parties_slots(tmp_path: Path) -> None:
    """Issue 10 item 4: slow unauthenticated clients hold at most their own budget; a party's
    new connection displaces the oldest of them and is answered at once."""
    limits = {**LIMITS, "max_connections": 8, "max_unattributed": 4, "body_timeout": 30.0}
    config = write_config(tmp_path / "responder.toml", {"port": 0, "workers": 1}, limits)
    with ServerProcess(tmp_path, config).start() as server:
        slow = _slow_unattributed(server.port, 12)
        try:
            codes = []
            for _ in range(6):  # each on a new connection, as a party with no keep-alive
                with connect(server.port) as sock:
                    sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\nX-Party: p\r\n\r\n")
                    codes.append(ReplyReader(sock).read_one().status)
            assert codes == [200] * 6
            displaced = 0
            for sock in slow:
                sock.settimeout(0.05 if displaced < 8 else 1.0)
                try:
                    first = sock.recv(100)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    first = b"HTTP/1.1 503 "
                displaced += first.startswith(b"HTTP/1.1 503 ")
            assert displaced >= 12 - 4  # no more than the budget still held
        finally:
            for sock in slow:
                sock.close()


def test_a_credential_that_matches_nobody_is_refused_before_its_body(
    server: ServerProcess,
) -> None:
    """Issue 10 item 4: the app refuses from the headers; the body is never waited for."""
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer bad\r\n"
            b"Content-Length: 2000\r\n\r\n"
        )
        start = time.monotonic()
        data = wait_closed(sock, 4)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 401 ")
    assert b"Connection: close" in data
    assert elapsed < 0.9  # not after the body deadline (1 s)


def _worker_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _CountingReader:
    """Reads pipelined answers, counting body bytes instead of keeping them."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.sizes: list[int] = []
        self.statuses: list[int] = []
        self._size = 0

    def on_body(self, body: bytes) -> None:
        self._size += len(body)

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.sizes.append(self._size)
        self._size = 0


def test_streamed_bodies_keep_order_and_the_last_one_closes(server: ServerProcess) -> None:
    """Bodies above STREAM_ABOVE are written in slices: small answers wait their turn."""
    big = 1024 * 1024
    with connect(server.port, timeout=10) as sock:
        sock.sendall(
            b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % big
            + b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n"
            + b"HEAD /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % big
            + b"GET /big?%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % big
        )
        data = wait_closed(sock, 10)
    reader = _CountingReader()
    reader.parser.feed_data(data[: data.index(b"HTTP/1.1", 100)])  # the first answer alone
    assert reader.sizes == [big]
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.endswith(b"x" * 1000) and b"F" * 100 + b"HTTP/1.1 200 OK" in data
    assert len(data) > 2 * big and data.count(b"Connection: close") == 1


def test_pipelined_large_downloads_on_a_socket_that_does_not_read(tmp_path: Path) -> None:
    """Issue 10 item 7: answers wait for the client to read; the worker does not grow."""
    size, count = 4 * 1024 * 1024, 24
    config = write_config(
        tmp_path / "responder.toml", {"port": 0, "workers": 1}, {**LIMITS, "idle_timeout": 20.0}
    )
    with ServerProcess(tmp_path, config).start() as server:
        with connect(server.port) as sock:
            sock.sendall(b"GET /info HTTP/1.1\r\nHost: a\r\n\r\n")
            pid = json.loads(ReplyReader(sock).read_one().body)["pid"]
            sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)  # warm up
            assert len(ReplyReader(sock).read_one().body) == size
        before = _worker_rss_kib(pid)
        with connect(server.port, timeout=20) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % size * count)
            time.sleep(1.5)  # the worker would build every answer now if it did not wait
            grown = _worker_rss_kib(pid) - before
            reader = _CountingReader()
            deadline = time.monotonic() + 30
            while len(reader.sizes) < count and time.monotonic() < deadline:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                reader.parser.feed_data(chunk)
        assert reader.statuses == [200] * count and reader.sizes == [size] * count
        assert grown * 1024 < 3 * size, f"worker grew by {grown} KiB"
