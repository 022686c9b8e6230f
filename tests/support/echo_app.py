"""The HTTP layer and the supervisor served with a trivial app, for tests and bench_attack_http.

A trivial app (`EchoApp`) and `ServerProcess`, which runs the real
`responder.server.serve` in a subprocess on 127.0.0.1 with an ephemeral port:
``python tests/support/echo_app.py CONFIG.toml`` serves `EchoApp` until SIGTERM.
The app writes marker files into ``$JPKI_TEST_DIR`` when it is built,
reloaded and closed, so tests can see what each worker did; ``$JPKI_TEST_SLOW_START`` and
``$JPKI_TEST_RELOAD_SLEEP`` (seconds) make it slow to start or to reload, and
``$JPKI_TEST_FAIL_RELOAD`` (a worker index) makes that worker's reload fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httptools

from responder.config import ResponderConfig, load_config
from responder.http import Request, Response
from responder.outcome import Outcome
from responder.server import serve
from tests.support.procs import stop

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
"""The checkout: on the child's PYTHONPATH, since it runs this file as a script."""
FIXED = Response(200, b"F" * 100, b"application/ocsp-response")
NOT_FOUND = Response(404, b"no such test route\n", b"text/plain")
UNAUTHORIZED = Response(401, b"unauthorized\n", b"text/plain")


class EchoApp:
    """Routes on the path; the query is the argument.

    A request with ``X-Party: NAME`` is attributed to party NAME (in ``Request.note``, as
    the real app does for a proven party); one with a body and ``Authorization: Bearer
    bad`` is refused from its headers by `early`, before its body is read.
    """

    def __init__(self, config: ResponderConfig, index: int) -> None:
        self.index = index
        self.reloads = 0
        self.dir = Path(os.environ["JPKI_TEST_DIR"])
        if os.environ.get("JPKI_TEST_FAIL_START"):
            raise RuntimeError("app cannot start (test)")
        time.sleep(float(os.environ.get("JPKI_TEST_SLOW_START") or 0))
        self._mark("started")

    def _mark(self, what: str) -> None:
        (self.dir / f"{what}-{self.index}-{os.getpid()}").write_text(str(self.reloads))

    def reload(self, config: ResponderConfig) -> None:
        time.sleep(float(os.environ.get("JPKI_TEST_RELOAD_SLEEP") or 0))
        if os.environ.get("JPKI_TEST_FAIL_RELOAD") == str(self.index):
            raise RuntimeError("app cannot reload (test)")
        self.reloads += 1
        self._mark("reload")

    def close(self) -> None:
        self._mark("closed")

    def early(self, req: Request) -> Response | None:
        if req.headers.get(b"authorization") == b"Bearer bad":
            return UNAUTHORIZED
        return None

    def handle(self, req: Request) -> Response | Awaitable[Response]:
        party = req.headers.get(b"x-party")
        if party is not None:
            req.note = Outcome("other", party=party.decode())
        path, _, query = req.target.partition(b"?")
        if path == b"/fixed":
            return FIXED
        if path == b"/echo":
            return Response(
                200,
                req.body,
                req.headers.get(b"content-type", b"application/octet-stream"),
                ((b"X-Request-Id", str(req.request_id).encode()),),
            )
        if path == b"/info":
            info = {
                "method": req.method.decode(),
                "target": req.target.decode(),
                "headers": {k.decode(): v.decode() for k, v in req.headers.items()},
                "peer": list(req.peer),
                "version": req.http_version.decode(),
                "keep_alive": req.keep_alive,
                "request_id": req.request_id,
                "worker": self.index,
                "pid": os.getpid(),
                "reloads": self.reloads,
                "body_len": len(req.body),
                "cert": req.client_cert_der.hex() if req.client_cert_der else None,
            }
            return Response(200, json.dumps(info).encode(), b"application/json")
        if path == b"/sleep":
            return self._sleep(float(query), req.request_id)
        if path in (b"/hold-sleep", b"/free-sleep"):  # the instant it ended, and of /now's
            req.holds = path == b"/hold-sleep"
            return self._timed_sleep(float(query))
        if path == b"/now":
            return Response(200, b"%f" % time.monotonic(), b"text/plain")
        if path == b"/thread-sleep":
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(None, _blocking_sleep, float(query))
        if path == b"/big":
            return Response(200, b"x" * int(query), b"application/octet-stream")
        if path == b"/boom":
            raise RuntimeError("SECRET-" + req.body.decode())
        if path == b"/boom-async":
            return self._boom(req.body)
        if path == b"/not-a-response":
            return 42  # type: ignore[return-value]
        return NOT_FOUND

    async def _sleep(self, seconds: float, request_id: int) -> Response:
        await asyncio.sleep(seconds)
        return Response(200, b"slept %d" % request_id, b"text/plain")

    async def _timed_sleep(self, seconds: float) -> Response:
        await asyncio.sleep(seconds)
        return Response(200, b"%f" % time.monotonic(), b"text/plain")

    async def _boom(self, body: bytes) -> Response:
        await asyncio.sleep(0.01)
        raise ValueError("SECRET-" + body.decode())


def _blocking_sleep(seconds: float) -> Response:
    time.sleep(seconds)
    return Response(200, b"thread slept", b"text/plain")


def write_config(path: Path, server: dict[str, Any], limits: dict[str, Any] | None = None) -> Path:
    """A TOML config with ``[server]`` and ``[server.limits]`` entries (values as TOML)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = ["[server]"]
    lines += [f"{k} = {value(v)}" for k, v in server.items() if not isinstance(v, dict)]
    for name, table in server.items():
        if isinstance(table, dict):
            lines.append(f"[server.{name}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    if limits:
        lines.append("[server.limits]")
        lines += [f"{k} = {value(v)}" for k, v in limits.items()]
    lines += ["[log]", 'level = "info"', "[metrics]", "port = 0"]
    path.write_text("\n".join(lines) + "\n")
    return path


class ServerProcess:
    """`serve(EchoApp)` in a subprocess; `stop` (or the context manager) ends it by PID."""

    def __init__(self, workdir: Path, config_path: Path, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.config_path = config_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: list[str] = []
        self.stderr_path = workdir / "server.stderr"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.urls[0].rsplit(":", 1)[1])

    def start(self, timeout: float = 15.0, expect_lines: int = 1) -> ServerProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "JPKI_TEST_DIR": str(self.workdir),
            **self.env,
        }
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE), str(self.config_path)],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=self.workdir,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while len(self.urls) < expect_lines:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise TimeoutError("server did not announce itself: " + self.stderr())
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.stop()
                    raise RuntimeError("server exited: " + self.stderr())
                buf += chunk
                self.urls = re.findall(r"listening on (\S+)", buf.decode())
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM by PID, then SIGKILL (master and any worker left) if it does not exit."""
        proc = self.proc
        if proc is None:
            return None
        try:
            return stop(proc)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpReply:
    """One parsed response."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""


class ReplyReader:
    """Reads pipelined responses from a raw socket with httptools' response parser."""

    def __init__(self, sock: socket.socket, head: bool = False) -> None:
        self.sock = sock
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[HttpReply] = []
        self.current = HttpReply()
        self.eof = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.current.status = self.parser.get_status_code()
        self.done.append(self.current)
        self.current = HttpReply()

    def read(self, n: int = 1, timeout: float = 5.0) -> list[HttpReply]:
        """The next ``n`` responses (raises TimeoutError, or EOFError if the server closes)."""
        deadline = time.monotonic() + timeout
        while len(self.done) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.done)} of {n} responses")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"{len(self.done)} of {n} responses") from None
            if not data:
                self.eof = True
                raise EOFError(f"closed after {len(self.done)} of {n} responses")
            self.parser.feed_data(data)
        out, self.done = self.done[:n], self.done[n:]
        return out

    def read_one(self, timeout: float = 5.0) -> HttpReply:
        return self.read(1, timeout)[0]


def wait_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (TimeoutError if it does not)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        if time.monotonic() > deadline:
            raise TimeoutError("still open")


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main() -> int:
    config_path = Path(sys.argv[1])
    config = load_config(config_path, {})
    return serve(config, EchoApp, reload_config=lambda: load_config(config_path, {}))


if __name__ == "__main__":
    sys.exit(main())
