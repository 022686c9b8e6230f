"""`nats_cluster`: three nats-server processes with JetStream, clustered on loopback, for tests.

Each server listens on 127.0.0.1 on free ports (client and cluster route), keeps its
JetStream files in its own directory under the test's tmp, and is stopped by its PID
(`procs.stop`) on the way out. `NatsCluster.kill` SIGKILLs one server and `restart`
starts it again on the same ports and directory. Ready means: every server answers on its
client port and the cluster's JetStream has a meta leader (a stream can be created).
The binary is /usr/sbin/nats-server (Debian package nats-server); it is missing, the
fixture skips, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import procs

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound, read, closed together)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False


@dataclass
class NatsServer:
    name: str
    port: int
    route_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsCluster:
    servers: list[NatsServer]
    logs: Path
    _log_files: list[object] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def source(self) -> str:
        """The ``--source`` of the record stream: every server."""
        return ",".join(self.urls)

    def _config(self, s: NatsServer) -> Path:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{o.route_port}"' for o in self.servers if o is not s
        )
        conf = s.dir / "nats.conf"
        conf.write_text(
            f'server_name: "{s.name}"\n'
            f'listen: "127.0.0.1:{s.port}"\n'
            "max_payload: 2MB\n"
            f'jetstream {{ store_dir: "{s.dir / "js"}", max_memory_store: 64MB, '
            "max_file_store: 1GB }\n"
            f'cluster {{ name: "jpki", listen: "127.0.0.1:{s.route_port}", routes: [{routes}] }}\n'
        )
        return conf

    def start(self, s: NatsServer) -> None:
        log = (self.logs / f"{s.name}.log").open("ab")
        self._log_files.append(log)
        s.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self._config(s))],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_client(self, s: NatsServer, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not _answers(s.port):
            assert s.proc is not None
            if s.proc.poll() is not None:
                raise procs.ProcessError(f"nats-server {s.name} exited ({s.proc.returncode})")
            if time.monotonic() > deadline:
                raise procs.ProcessError(f"nats-server {s.name} not answering in {timeout} s")
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (by its PID)."""
        s = self.servers[i]
        assert s.proc is not None
        procs.stop(s.proc, signal.SIGKILL)

    def restart(self, i: int) -> None:
        s = self.servers[i]
        self.start(s)
        self.wait_client(s)

    def stop_all(self) -> None:
        for s in self.servers:
            if s.proc is not None:
                procs.stop(s.proc, signal.SIGTERM, 10)
        for f in self._log_files:
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[attr-defined]


def wait_jetstream(urls: list[str], timeout: float = 30) -> None:
    """Until the cluster's JetStream has a meta leader: an account info request succeeds."""
    import asyncio

    import nats

    async def probe() -> bool:
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, max_reconnect_attempts=0)
        except Exception:
            return False
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(probe()):
        if time.monotonic() > deadline:
            raise procs.ProcessError(f"JetStream not ready within {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def nats_cluster(base: Path, n: int = 3) -> Iterator[NatsCluster]:
    """``n`` clustered JetStream servers on loopback under ``base``; stopped on the way out."""
    if not os.access(NATS_SERVER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{NATS_SERVER} missing (Debian package nats-server)")
        pytest.skip(f"{NATS_SERVER} missing (Debian package nats-server)")
    ports = free_ports(2 * n)
    servers = []
    for i in range(n):
        d = base / f"nats{i}"
        d.mkdir(parents=True)
        servers.append(NatsServer(f"n{i}", ports[2 * i], ports[2 * i + 1], d))
    cluster = NatsCluster(servers, base)
    try:
        for s in servers:
            cluster.start(s)
        for s in servers:
            cluster.wait_client(s)
        wait_jetstream(cluster.urls)
        yield cluster
    finally:
        cluster.stop_all()
