"""`nats_cluster`: three nats-server processes with JetStream, clustered on loopback, for tests;
`nats_server`: one, standalone, on a given port (started after what waits for it);
`Nodes`: jpki-va nodes on it (builder, registry sync, responder each); `haproxy` in front.

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
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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
    extra: str = ""
    """Appended to each server's configuration (an ``authorization`` block, ``tls``)."""
    probe: dict[str, Any] = field(default_factory=dict)
    """nats-py ``connect`` options of the readiness probe (the credential ``extra`` asks for)."""
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
        cluster = (
            f'cluster {{ name: "jpki", listen: "127.0.0.1:{s.route_port}", routes: [{routes}] }}\n'
            if len(self.servers) > 1
            else ""  # one server: standalone JetStream
        )
        conf = s.dir / "nats.conf"
        conf.write_text(
            f'server_name: "{s.name}"\n'
            f'listen: "127.0.0.1:{s.port}"\n'
            "max_payload: 2MB\n"
            f'jetstream {{ store_dir: "{s.dir / "js"}", max_memory_store: 64MB, '
            "max_file_store: 1GB }\n" + cluster + self.extra
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


def wait_jetstream(urls: list[str], timeout: float = 30, **options: Any) -> None:
    """Until the cluster's JetStream has a meta leader: an account info request succeeds."""
    import asyncio

    import nats

    async def probe() -> bool:
        try:
            nc = await nats.connect(
                servers=urls, connect_timeout=1, max_reconnect_attempts=0, **options
            )
        except Exception:
            return False
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    async def bounded() -> bool:  # a server that dies mid-handshake must not hang the probe
        try:
            return await asyncio.wait_for(probe(), 5)
        except TimeoutError:
            return False

    deadline = time.monotonic() + timeout
    while not asyncio.run(bounded()):
        if time.monotonic() > deadline:
            raise procs.ProcessError(f"JetStream not ready within {timeout} s")
        time.sleep(0.2)


AUTH_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "jpki-va-auth.conf"
"""The shipped authorization of the NATS servers (`crlbuilder nats-config` of `USERS`)."""
USERS = AUTH_CONF.with_name("users.toml")
"""The example deployment's NATS users (``$JPKI_NATS_...``: each one's public NKey)."""
ROLES: Final = ("PUBLISHER", "SIGNER", "BUILDER", "SNAPSHOT", "RESPONDER", "WATCH_COMPACT",
                "REGISTRY_ADMIN")  # fmt: skip
"""The roles; `shipped_authorization`'s seeds are named so (BUILDER, RESPONDER: the first node's)."""


def user_keys(d: Path) -> dict[str, str]:
    """A new seed under ``d`` for each ``$JPKI_NATS_...`` key of `USERS`; the servers'
    environment naming their public keys."""
    from crlbuilder.natsauth import new_user_seed
    from crlbuilder.natsconfig import parse_users

    d.mkdir(parents=True, exist_ok=True)
    names = [u.key[1:] for u in parse_users(USERS.read_text()) if u.key.startswith("$")]
    return {n: new_user_seed(d / f"{n.lower()}.seed") for n in names}


@dataclass(frozen=True)
class Shipped:
    """The authorization `crlbuilder.natsconfig` writes, for a seed per role and node: seed
    files (``<role>.seed`` for the single roles and the first node's, ``<role>-<node>.seed``
    keyed ``ROLE/node`` for every node's), the configuration text, and the probe's
    credential (the first responder's)."""

    seeds: dict[str, Path]
    extra: str
    probe: dict[str, Any]
    inboxes: dict[str, str] = field(default_factory=dict)
    """Each seed's user's inbox prefix (``JPKI_VA_NATS_INBOX``), by the same keys."""

    def auth(self, role: str, **more: str) -> Any:
        """The `crlbuilder.natsauth.NatsAuth` of ``role``'s user (its seed and inbox; ``more``:
        its other fields, or another inbox)."""
        from crlbuilder.natsauth import NatsAuth

        fields = {"nkey_seed": str(self.seeds[role]), "inbox": self.inboxes[role], **more}
        return NatsAuth(**fields)

    def env(self, role: str) -> dict[str, str]:
        """The environment variables a process of ``role``'s user sets (seed and inbox)."""
        return {"JPKI_VA_NATS_NKEY_SEED": str(self.seeds[role]),
                "JPKI_VA_NATS_INBOX": self.inboxes[role]}  # fmt: skip


def shipped_authorization(
    d: Path, nodes: tuple[str, ...] = ("node",), signer: str = "signer"
) -> Shipped:
    """As deploy/nats/users.toml, for the test's ``nodes`` (a builder and a responder each, the
    builder's durable consumer the node's name) and its ``signer`` (durable the same)."""
    from crlbuilder.natsauth import new_user_seed
    from crlbuilder.natsconfig import User, authorization

    d.mkdir(parents=True, exist_ok=True)
    users: list[tuple[str, User]] = []
    for role in ("PUBLISHER", "SNAPSHOT", "WATCH_COMPACT", "REGISTRY_ADMIN"):
        seed = d / f"{role.lower().replace('_', '-')}.seed"
        users.append((role, User(role.lower().replace("_", "-"), new_user_seed(seed))))
    seeds = {r: d / f"{r.lower().replace('_', '-')}.seed" for r, _ in users}
    inboxes = {r: u.inbox for r, u in users}
    seeds["SIGNER"] = d / "signer.seed"
    users.append(("SIGNER", User("signer", new_user_seed(seeds["SIGNER"]), signer, signer)))
    inboxes["SIGNER"] = users[-1][1].inbox
    for node in nodes:
        for role in ("builder", "responder"):
            seed = d / f"{role}-{node}.seed"
            durable = node if role == "builder" else ""
            users.append((role, User(role, new_user_seed(seed), node, durable)))
            seeds[f"{role.upper()}/{node}"] = seed
            seeds.setdefault(role.upper(), seed)
            inboxes[f"{role.upper()}/{node}"] = users[-1][1].inbox
            inboxes.setdefault(role.upper(), users[-1][1].inbox)
    extra = authorization([u for _, u in users], "the test")
    probe = {"nkeys_seed_str": seeds["RESPONDER"].read_text().strip(),
             "inbox_prefix": inboxes["RESPONDER"]}  # fmt: skip
    return Shipped(seeds, extra, probe, inboxes)


def need_nats_server() -> None:
    """Skip when nats-server is not installed, or fail under CI (`.ci/run` installs it)."""
    if not os.access(NATS_SERVER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{NATS_SERVER} missing (Debian package nats-server)")
        pytest.skip(f"{NATS_SERVER} missing (Debian package nats-server)")


@contextlib.contextmanager
def nats_cluster(base: Path, n: int = 3) -> Iterator[NatsCluster]:
    """``n`` clustered JetStream servers on loopback under ``base``; stopped on the way out."""
    need_nats_server()
    ports = free_ports(2 * n)
    servers = []
    for i in range(n):
        d = base / f"nats{i}"
        d.mkdir(parents=True)
        servers.append(NatsServer(f"n{i}", ports[2 * i], ports[2 * i + 1], d))
    with _running(NatsCluster(servers, base)) as cluster:
        yield cluster


@contextlib.contextmanager
def nats_server(
    base: Path, port: int, *, extra: str = "", probe: dict[str, Any] | None = None
) -> Iterator[NatsCluster]:
    """One standalone JetStream server on 127.0.0.1:``port`` under ``base`` (a server that
    starts after the command waiting for it); stopped on the way out. ``extra``: more of its
    configuration, ``probe``: how the readiness probe connects then."""
    need_nats_server()
    d = base / "nats"
    d.mkdir(parents=True)
    servers = [NatsServer("n0", port, 0, d)]
    with _running(NatsCluster(servers, base, extra, probe or {})) as cluster:
        yield cluster


@contextlib.contextmanager
def _running(cluster: NatsCluster) -> Iterator[NatsCluster]:
    """Start every server, until each answers and JetStream is ready; stopped by PID after."""
    servers = cluster.servers
    try:
        for s in servers:
            cluster.start(s)
        for s in servers:
            cluster.wait_client(s)
        wait_jetstream(cluster.urls, **cluster.probe)
        yield cluster
    finally:
        cluster.stop_all()


# ---------------------------------------------------------------------------
# jpki-va nodes on the cluster, and haproxy in front
# ---------------------------------------------------------------------------

BIN = Path(sys.executable).parent
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class Node:
    """One jpki-va node: its own store, CRL directory, registry, ledger; its builder on the
    record stream, its registry sync and its responder (each a process stopped by PID)."""

    name: str
    d: Path
    pki: Path
    signer: bool
    facts_key: Path
    consents: Path
    """The registry the builder checks consents against (the same file on every node)."""
    builder: subprocess.Popen[bytes] | None = None
    responder: subprocess.Popen[bytes] | None = None
    sync: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def store(self) -> Path:
        return self.d / "store"

    @property
    def registry(self) -> Path:
        return self.d / "registry.toml"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL its builder and responder (by PID; the responder's workers too)."""
        for p in (self.responder, self.builder):
            if p is not None:
                procs.stop(p, signal.SIGKILL)
        self.responder = self.builder = None


@dataclass
class Nodes:
    """Three (or more) nodes on one NATS cluster; `start`, `kill`, `stop_all`."""

    cluster: NatsCluster
    nodes: list[Node]
    _logs: list[object] = field(default_factory=list)
    responder_flags: list[str] = field(default_factory=list)
    """Further flags of every responder (``--watch-secret-file ...``: the secret every node
    of a service shares)."""

    def _log(self, node: Node, what: str) -> object:
        f = (node.d / f"{what}.log").open("ab")
        self._logs.append(f)
        return f

    def start_builder(self, n: Node) -> None:
        crl = ["--crl", "--tick-seconds", "2"] if n.signer else ["--no-crl"]
        args = [
            str(BIN / "crlbuilder"), "build", "--source", self.cluster.source,
            "--durable", n.name, "--store", str(n.store), "--map-size-gib", "1",
            "--pki", str(n.pki), "--facts-key-file", str(n.facts_key),
            "--crl-dir", str(n.d / "crl"), "--quarantine", str(n.d / "quarantine.jsonl"),
            "--notices", str(n.d / "notices.jsonl"), "--registry", str(n.consents),
            "--sign-workers", "1", "--follow-interval", "0.2", "--no-progress", "--follow", *crl,
        ]  # fmt: skip
        log = self._log(n, "builder")
        n.builder = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)  # type: ignore[arg-type]

    def start_sync(self, n: Node) -> None:
        args = [str(BIN / "responder"), "registry", "sync", "--registry", str(n.registry),
                "--nats", self.cluster.source, "--follow"]  # fmt: skip
        log = self._log(n, "sync")
        n.sync = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)  # type: ignore[arg-type]

    def start_responder(self, n: Node, *, port: int = 0) -> None:
        args = [
            str(BIN / "responder"), "serve", "--store", str(n.store), "--pki", str(n.pki),
            "--registry", str(n.registry), "--crl-dir", str(n.d / "crl"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--trusted-proxy", "127.0.0.1", "--ledger-dir", str(n.d / "ledger"),
            "--ledger-collect-interval", "1", "--no-metrics", "--nats", self.cluster.source,
            "--node", n.name, "--nodes", str(len(self.nodes)), "--max-lag", "0",
            *self.responder_flags,
        ]  # fmt: skip
        err = self._log(n, "responder")
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)  # type: ignore[arg-type]
        n.responder = p
        n.url = procs.wait_line(p, r"listening on (\S+)", 60)

    def stop_all(self) -> None:
        for n in self.nodes:
            for p in (n.responder, n.sync, n.builder):
                if p is not None:
                    procs.stop(p, signal.SIGTERM, 15)
                    if p.stdout is not None:
                        p.stdout.close()
        for f in self._logs:
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[attr-defined]
        self.print_logs()

    def print_logs(self, lines: int = 15) -> None:
        """The last lines of every node's logs, printed: pytest shows them when a test fails."""
        for n in self.nodes:
            for log in sorted(n.d.glob("*.log")):
                tail = log.read_bytes().splitlines()[-lines:]
                print(f"--- {n.name}/{log.name} (last {len(tail)} lines)")
                for line in tail:
                    print(line.decode("utf-8", "replace")[:400])


def haproxy_config(port: int, nodes: list[Node]) -> str:
    """The loopback form of deploy/haproxy/haproxy.cfg: plain HTTP in front (the tests'
    parties use bearer tokens), the same health check on /readyz, checked every 200 ms."""
    servers = "\n".join(
        f"    server {n.name} 127.0.0.1:{n.port} check inter 200ms fall 1 rise 2" for n in nodes
    )
    return f"""global
    maxconn 2000
defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
frontend jpki_va
    bind 127.0.0.1:{port}
    http-request del-header client-cert
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr host jpki-va
    http-check expect status 200
{servers}
"""


@contextlib.contextmanager
def haproxy(d: Path, nodes: list[Node]) -> Iterator[str]:
    """haproxy in front of ``nodes`` on a free loopback port; its URL. Stopped by PID."""
    if not os.access(HAPROXY, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{HAPROXY} missing (Debian package haproxy)")
        pytest.skip(f"{HAPROXY} missing (Debian package haproxy)")
    (port,) = free_ports(1)
    cfg = d / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, nodes))
    with (d / "haproxy.log").open("ab") as log:
        p = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not _listening(port):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise procs.ProcessError(
                        f"haproxy did not start: {(d / 'haproxy.log').read_text()}"
                    )
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            procs.stop(p, signal.SIGTERM, 10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tls_files(d: Path, name: str = "jpki-va test NATS CA") -> dict[str, str]:
    """A CA and a certificate it issued for 127.0.0.1 and localhost (server and client
    authentication: NATS routes are clients of each other), as the Secret nats-tls of
    deploy/kubernetes/nats.yaml holds them: ``ca.crt``, ``tls.crt``, ``tls.key`` (0600)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from tests.support.pki import certificate

    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = certificate("nats", key, ca_key, issuer=ca.subject, ca=False,
                       extensions=[(san, False), (eku, False)])  # fmt: skip
    pem = serialization.Encoding.PEM
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    (d / "tls.crt").write_bytes(cert.public_bytes(pem))
    (d / "tls.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (d / "tls.key").chmod(0o600)
    return {f: str(d / f) for f in ("ca.crt", "tls.crt", "tls.key")}
