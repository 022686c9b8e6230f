"""The shipped NATS servers' configuration (deploy/kubernetes/nats.yaml's nats.conf, the
model of the hosts' /etc/nats-server.conf in docs/operations.md) run for real: three servers on
loopback, TLS on the client port and mutual TLS on the routes. A server without a
certificate of the CA, or with another CA's, does not join the cluster; a client without
the CA file is refused in one line; a node with the CA and its seed works."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from crlbuilder.jetstream import Cluster, ClusterError
from crlbuilder.natsauth import NatsAuth, resolve
from crlbuilder.natsconfig import parse_users
from tests.support import procs
from tests.support.nats import (
    NATS_SERVER,
    USERS,
    free_ports,
    need_nats_server,
    tls_files,
    user_keys,
    wait_jetstream,
)

NATS_YAML = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "nats.yaml"


def _configmap() -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all(NATS_YAML.read_text()) if d]
    data: dict[str, str] = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    return data


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, f"the shipped nats.conf has no {old!r} any more"
    return text.replace(old, new)


def _loopback_conf(d: Path, i: int, ports: list[tuple[int, int, int]], tls_dir: str) -> Path:
    """Server ``i`` of the shipped nats.conf, its addresses moved to loopback and its files
    under ``d``: nothing else changed."""
    config = _configmap()
    client, route, http = ports[i]
    text = config["nats.conf"]
    text = _swap(text, "listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
    text = _swap(text, "http: 0.0.0.0:8222", f"http: 127.0.0.1:{http}")
    text = _swap(text, "listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
    for j, (_, r, _) in enumerate(ports):
        text = _swap(text, f"nats-route://nats-{j}.nats.$POD_NAMESPACE.svc.cluster.local:6222",
                     f"nats-route://127.0.0.1:{r}")  # fmt: skip
    text = _swap(text, "/etc/nats-tls/", f"{tls_dir}/")
    text = _swap(text, "store_dir: /data/jetstream", f'store_dir: "{d / "js"}"')
    text = _swap(text, "max_file_store: 50GB", "max_file_store: 1GB")
    d.mkdir(parents=True)
    (d / "jpki-va-auth.conf").write_text(config["jpki-va-auth.conf"])
    (d / "nats.conf").write_text(text)
    return d / "nats.conf"


def _routes(http: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/routez", timeout=5) as r:
        return int(json.load(r)["num_routes"])


def js_key(hex_key: str) -> str:
    """The JetStream key as nats.yaml says to make its Secret (``--from-literal=key=...``,
    the hex of ``openssl rand -hex 32`` replaced by ``hex_key``)."""
    line = next(x for x in NATS_YAML.read_text().splitlines() if "--from-literal=key=" in x)
    made = line.split("--from-literal=key=", 1)[1].strip()
    assert "$(openssl rand -hex 32)" in made, line
    return made.replace("$(openssl rand -hex 32)", hex_key)


@pytest.mark.integration
def test_the_jetstream_key_made_as_documented_starts_the_server(tmp_path: Path) -> None:
    """nats-server reads $JS_KEY as a configuration value: a bare hex key beginning 1e5 (about
    one `openssl rand -hex 32` in nine begins with digits, an e and a digit) is a number to it,
    and the server refuses to start; the documented key begins with a letter."""
    need_nats_server()
    text = _configmap()["nats.conf"]
    block = text[text.index("jetstream {") :]
    block = block[: block.index("}") + 1]
    assert "key: $JS_KEY" in block
    conf = tmp_path / "nats.conf"
    conf.write_text(_swap(block, "store_dir: /data/jetstream", f'store_dir: "{tmp_path / "js"}"'))
    bad_hex = "171e7d0e640c0b768cf7628cefe58056105b634355a4f8a65e582ae8a369dd7f"
    for key, ok in ((bad_hex, False), (js_key(bad_hex), True)):
        run = subprocess.run([NATS_SERVER, "-t", "-c", str(conf)], check=False, env={**os.environ, "JS_KEY": key},
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert ("is valid" in run.stdout + run.stderr) is ok, (key[:8], run.stdout, run.stderr)


@contextlib.contextmanager
def _servers(
    confs: list[Path], env: dict[str, str], logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    running: list[subprocess.Popen[bytes]] = []
    try:
        for i, conf in enumerate(confs):
            with (logs / f"{conf.parent.name}.log").open("ab") as log:
                running.append(subprocess.Popen(
                    [NATS_SERVER, "-c", str(conf)], env={**env, "POD_NAME": f"nats-{i}"},
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                ))  # fmt: skip
        yield running
    finally:
        for p in running:
            procs.stop(p, signal.SIGTERM, 10)


@pytest.fixture(scope="module")
def shipped_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Three servers of the shipped nats.conf (and jpki-va-auth.conf) on loopback."""
    need_nats_server()
    base = tmp_path_factory.mktemp("natsroutes")
    tls = tls_files(base / "tls")
    tls_dir = str(Path(tls["ca.crt"]).parent)
    flat = free_ports(9)
    ports = [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in range(3)]
    confs = [_loopback_conf(base / f"nats{i}", i, ports, tls_dir) for i in range(3)]
    keys = user_keys(base / "seeds")
    env = {**os.environ, **keys, "POD_NAMESPACE": "jpki", "JS_KEY": js_key(os.urandom(32).hex())}
    seed = base / "seeds" / "jpki_nats_responder_0.seed"
    (user,) = [u for u in parse_users(USERS.read_text()) if u.key == "$JPKI_NATS_RESPONDER_0"]
    urls = [f"nats://127.0.0.1:{c}" for c, _, _ in ports]
    with _servers(confs, env, base):
        ctx = resolve(NatsAuth(nkey_seed=str(seed), tls_ca=tls["ca.crt"], inbox=user.inbox), urls)
        wait_jetstream(urls, timeout=60, **ctx.kwargs)
        yield {"base": base, "ports": ports, "urls": urls, "tls": tls, "seed": seed, "env": env,
               "inbox": user.inbox}  # fmt: skip


def _rogue(base: Path, ports: list[tuple[int, int, int]], tls: dict[str, str] | None) -> Path:
    """A server that reaches the cluster's route ports: in clear, or with ``tls`` files."""
    client, route, http = free_ports(3)
    d = base / f"rogue-{'tls' if tls else 'plain'}"
    d.mkdir()
    routes = ", ".join(f'"nats-route://127.0.0.1:{r}"' for _, r, _ in ports)
    block = (
        f'tls {{ cert_file: "{tls["tls.crt"]}", key_file: "{tls["tls.key"]}", '
        f'ca_file: "{tls["ca.crt"]}", verify: true, timeout: 2 }}'
        if tls
        else ""
    )
    (d / "nats.conf").write_text(
        f'server_name: "{d.name}"\nlisten: "127.0.0.1:{client}"\nhttp: "127.0.0.1:{http}"\n'
        f'jetstream {{ store_dir: "{d / "js"}" }}\n'
        f'cluster {{\n name: jpki\n listen: "127.0.0.1:{route}"\n routes: [{routes}]\n {block}\n}}\n'
    )
    (d / "http").write_text(str(http))
    return d / "nats.conf"


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_server_without_a_certificate_of_the_ca_does_not_join_the_routes(
    shipped_cluster: dict[str, Any],
) -> None:
    base, ports = shipped_cluster["base"], shipped_cluster["ports"]
    deadline = time.monotonic() + 30
    while any(_routes(h) != 2 for _, _, h in ports):  # the three joined each other, over TLS
        assert time.monotonic() < deadline, [_routes(h) for _, _, h in ports]
        time.sleep(0.2)
    rogues = [_rogue(base, ports, None), _rogue(base, ports, tls_files(base / "other", "other CA"))]
    with _servers(rogues, dict(os.environ), base):
        time.sleep(4)  # a route is tried at once, then every second
        assert [_routes(h) for _, _, h in ports] == [2, 2, 2]
        assert [_routes(int((r.parent / "http").read_text())) for r in rogues] == [0, 0]


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_client_needs_the_servers_ca_and_its_seed(shipped_cluster: dict[str, Any]) -> None:
    urls, tls, seed = shipped_cluster["urls"], shipped_cluster["tls"], shipped_cluster["seed"]
    with pytest.raises(ClusterError) as e:  # the seed without the CA: one line, says why
        Cluster(urls, connect_timeout=2, auth=NatsAuth(nkey_seed=str(seed)))
    assert "\n" not in str(e.value), str(e.value)
    assert str(e.value).endswith("(the servers speak TLS: set nats_tls_ca or JPKI_VA_NATS_TLS_CA "
                                 "to the CA file of their certificates)"), str(e.value)  # fmt: skip
    inbox = shipped_cluster["inbox"]
    c = Cluster(urls, auth=NatsAuth(nkey_seed=str(seed), tls_ca=tls["ca.crt"], inbox=inbox))
    try:
        assert c.run(c.js.account_info()) is not None
    finally:
        c.close()
