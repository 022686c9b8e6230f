"""The several-node deployment files (deploy/kubernetes, deploy/haproxy), checked offline.

- Kubernetes (deploy/kubernetes/*.yaml): every document validates, strictly (no unknown
  field), against the Kubernetes 1.30 OpenAPI schema with kubernetes-validate (PyPI), offline;
  a StatefulSet with a volume per node, the NATS cluster of three with a volume each, the
  Services; every container command of ours parses with the real CLI (``crlbuilder``,
  ``responder``), and the responder's readiness probe is ``/readyz``.
- HAProxy (deploy/haproxy/haproxy.cfg): ``haproxy -c`` accepts it (with the environment it
  names pointed at real files), its health check is ``GET /readyz``, it keeps connections
  alive, and it passes the client certificate in the header the responder reads from a
  trusted proxy (after removing any the client sent); run for real, it sends /v1/token to the
  signer node only and everything else round-robin to the nodes. haproxy missing: skipped,
  except under CI, where it fails.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from crlbuilder.cli import parser as crlbuilder_parser
from responder.cli import parser as responder_parser
from responder.config import MetricsConfig, ServerConfig, load_config, overrides_from_args
from responder.server import KILL_GRACE
from tests.support.pki import make_ca

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
K8S_VERSION = "1.30.0"


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                yield f.name, doc


def test_kubernetes_manifests_validate_offline_against_the_schema() -> None:
    kinds = []
    for name, doc in documents():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.append((name, doc["kind"], doc["metadata"]["name"]))
    assert ("jpki-va.yaml", "StatefulSet", "jpki-va") in kinds
    assert ("jpki-va.yaml", "Service", "jpki-va") in kinds
    assert ("nats.yaml", "StatefulSet", "nats") in kinds


def test_kubernetes_validation_would_catch_a_wrong_field() -> None:
    """The check above can fail: a misspelt field is refused in strict mode."""
    _, doc = next((n, d) for n, d in documents() if d["kind"] == "StatefulSet")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _sets() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == "StatefulSet"}


def test_every_node_and_every_nats_server_has_its_own_volume() -> None:
    sets = _sets()
    for name, replicas in (("jpki-va", 3), ("nats", 3), ("jpki-va-signer", 1)):
        spec = sets[name]["spec"]
        assert spec["replicas"] == replicas
        assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
        assert spec["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]


def _commands() -> Iterator[tuple[str, str, list[str]]]:
    for set_name, doc in _sets().items():
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c.get("command", [""])[0] in ("crlbuilder", "responder"):
                yield set_name, c["name"], c["command"]


def test_container_commands_parse_with_the_real_clis() -> None:
    seen = set()
    for set_name, name, command in _commands():
        argv = [re.sub(r"\$\((\w+)\)", lambda m: {"NATS": "nats://n:4222"}.get(m[1], "x"), a)
                for a in command[1:]]  # fmt: skip
        p = crlbuilder_parser() if command[0] == "crlbuilder" else responder_parser()
        args = p.parse_args(argv)
        seen.add((set_name, name))
        if command[0] == "crlbuilder":
            assert args.source == "nats://n:4222" and args.follow
            # only the signer signs CRLs: the nodes hold no CA key
            assert args.crl is (set_name == "jpki-va-signer"), (set_name, args.crl)
    assert {("jpki-va", "builder"), ("jpki-va", "responder"), ("jpki-va", "registry-sync"),
            ("jpki-va", "watch-compact"), ("jpki-va-signer", "builder")} <= seen  # fmt: skip


def test_the_nodes_are_ready_on_readyz_and_only_the_signer_mounts_ca_keys() -> None:
    sets = _sets()
    pod = sets["jpki-va"]["spec"]["template"]["spec"]
    responder = next(c for c in pod["containers"] if c["name"] == "responder")
    assert responder["readinessProbe"]["httpGet"]["path"] == "/readyz"
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert "jpki-va-ca-keys" not in secrets
    signer = sets["jpki-va-signer"]["spec"]["template"]["spec"]
    assert "jpki-va-ca-keys" in {
        v["secret"]["secretName"] for v in signer["volumes"] if "secret" in v
    }


# ---------------------------------------------------------------------------
# HAProxy
# ---------------------------------------------------------------------------


def _haproxy() -> str:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(exe, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("haproxy missing (Debian package haproxy)")
        pytest.skip("haproxy missing (Debian package haproxy)")
    return exe


@pytest.mark.integration
def test_haproxy_config_is_accepted_by_haproxy(tmp_path: Path) -> None:
    ca = make_ca("jpki-va test TLS", not_before=datetime.now(UTC) - timedelta(days=1))
    cert = ca.cert.public_bytes(serialization.Encoding.PEM)
    key = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = tmp_path / "tls.pem"
    pem.write_bytes(cert + key)
    pem.chmod(0o600)
    (tmp_path / "ca.pem").write_bytes(cert)
    env = {**os.environ, "JPKI_VA_TLS_PEM": str(pem), "JPKI_VA_CLIENT_CA": str(tmp_path / "ca.pem"),
           "JPKI_VA_NODE1": "127.0.0.1:18081", "JPKI_VA_NODE2": "127.0.0.1:18082",
           "JPKI_VA_NODE3": "127.0.0.1:18083", "JPKI_VA_SIGNER": "127.0.0.1:18084"}  # fmt: skip
    out = subprocess.run([_haproxy(), "-c", "-f", str(HAPROXY_CFG)], env=env,
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_haproxy_routes_on_readyz_keeps_alive_and_passes_the_client_cert() -> None:
    text = HAPROXY_CFG.read_text()
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    assert "http-check send meth GET uri /readyz ver HTTP/1.1 hdr host jpki-va" in lines
    assert "http-check expect status 200" in lines
    assert "option http-keep-alive" in lines
    header = ServerConfig().client_cert_header  # what the responder reads from a trusted proxy
    delete = lines.index(f"http-request del-header {header}")
    sets = [i for i, ln in enumerate(lines) if ln.startswith(f"http-request set-header {header} ")]
    assert sets and delete < sets[0]  # a client's own header never reaches a node
    assert ":%[ssl_c_der,base64]:" in lines[sets[0]]  # RFC 9440 :base64-DER:


class _Named(http.server.BaseHTTPRequestHandler):
    """A stand-in node's responder: 200 with its own name for any path (``/readyz`` too)."""

    def _answer(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.real_clock  # haproxy's health checks
def test_haproxy_sends_v1_token_to_the_signer_only(tmp_path: Path) -> None:
    """Token requests are queued where they land and only the signer's builder issues: the
    shipped config, run for real (its bind moved to a free local port, no admin socket), sends
    every /v1/token to the signer and the rest (OCSP) round-robin to the nodes."""
    haproxy = _haproxy()
    ca = make_ca("jpki-va test TLS", not_before=datetime.now(UTC) - timedelta(days=1))
    key = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = tmp_path / "tls.pem"
    pem.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM) + key)
    pem.chmod(0o600)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    env = {**os.environ, "JPKI_VA_TLS_PEM": str(pem), "JPKI_VA_CLIENT_CA": str(tmp_path / "ca.pem")}
    servers = []
    for name in ("node1", "node2", "node3", "signer"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        env[f"JPKI_VA_{name.upper()}"] = f"127.0.0.1:{srv.server_address[1]}"
    port = _free_port()
    text = HAPROXY_CFG.read_text().replace("bind :443 ", f"bind 127.0.0.1:{port} ")
    text = text.replace("maxconn 20000", "maxconn 200")  # under this machine's fd limit
    text = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("stats socket"))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text + "\n")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a CA certificate serves as the TLS one: routing is tested

    def ask(path: str, data: bytes | None = None) -> str:
        req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data)
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return str(r.read().decode())

    try:
        deadline = time.monotonic() + 15
        while True:  # up, and every server seen healthy (rise 2, inter 1s)
            try:
                if (
                    ask("/v1/token", b"{}") == "signer"
                    and len({ask("/ocsp") for _ in range(6)}) == 3
                ):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "haproxy did not route within 15 s"
            time.sleep(0.3)
        assert {ask("/v1/token", b"{}") for _ in range(9)} == {"signer"}
        assert {ask("/v1/token") for _ in range(3)} == {"signer"}
        assert {ask("/ocsp", b"x") for _ in range(9)} == {"node1", "node2", "node3"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def test_haproxy_has_the_admin_socket_the_operations_guide_uses() -> None:
    """docs/operations.md, "Remove a node", takes a node out on haproxy's admin socket."""
    lines = [ln.strip() for ln in HAPROXY_CFG.read_text().splitlines()]
    admin = [ln for ln in lines if ln.startswith("stats socket ") and "level admin" in ln]
    assert admin, "no admin socket"
    socket_path = admin[0].split()[2]
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert f"echo 'disable server nodes/node3' | socat stdio {socket_path}" in guide


def test_the_watch_compaction_sidecar_reads_the_responders_lists_with_its_secret() -> None:
    """Another [watch] dir would snapshot empty lists; another secret, refused ones."""
    pod = _sets()["jpki-va"]["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    shared = ("--ledger-dir=", "--watch-secret-file=", "--nats=", "--config=")

    def flags(name: str) -> set[str]:
        return {a for a in by_name[name]["command"] if a.startswith(shared)}

    assert flags("watch-compact") == flags("responder") and len(flags("responder")) == 4
    assert "--every=3600" in by_name["watch-compact"]["command"]


def test_the_signer_puts_a_store_snapshot_for_new_nodes_daily() -> None:
    """The nodes' bootstrap gets the latest snapshot; without a put, every new node replays
    the whole stream (the manifest said the signer put one, and nothing did). The put runs
    beside the signer's builder, on its volume (ReadWriteOnce: no CronJob can mount it),
    with its temporary copy on that volume, and its command parses with the real CLI."""
    pod = _sets()["jpki-va-signer"]["spec"]["template"]["spec"]
    [snap] = [c for c in pod["containers"] if c["name"] == "snapshot"]
    script = " ".join(snap["args"])
    [put] = re.findall(r"crlbuilder (snapshot put [^|;&]+)", script)
    args = crlbuilder_parser().parse_args(shlex.split(put.replace('"$NATS"', "nats://n:4222")))
    assert (args.source, str(args.store)) == ("nats://n:4222", "/var/lib/jpki-va/store")
    assert "sleep 86400" in script
    assert {"name": "TMPDIR", "value": "/var/lib/jpki-va/snapshot"} in snap["env"]
    assert script.startswith("mkdir -p -m 0700 /var/lib/jpki-va/snapshot")
    mounts = {m["mountPath"]: m for m in snap["volumeMounts"]}
    assert mounts["/var/lib/jpki-va"]["name"] == "data"
    assert "/etc/jpki-va/pki/ca-keys" not in mounts  # it reads the store, signs nothing


def test_the_signer_compacts_the_record_stream_after_each_snapshot_put_only() -> None:
    """The record stream kept every record for ever (an erasure past retention left a copy
    there): the snapshot container compacts it behind the snapshot it put, only once the put
    succeeded (a failed put leaves an older snapshot, which a compaction would rely on), with
    the snapshot role's credential and TMPDIR, its command parsing with the real CLI."""
    pod = _sets()["jpki-va-signer"]["spec"]["template"]["spec"]
    [snap] = [c for c in pod["containers"] if c["name"] == "snapshot"]
    script = " ".join(snap["args"])
    [compact] = re.findall(r"crlbuilder (stream compact [^|;&}]+)", script)
    argv = shlex.split(compact.replace('"$NATS"', "nats://n:4222"))
    args = crlbuilder_parser().parse_args(argv)
    assert (args.command, args.stream_command) == ("stream", "compact")
    assert args.source == "nats://n:4222" and args.keep_days > 0
    put_then = re.search(r"snapshot put [^|;&]+&& crlbuilder stream compact", script)
    assert put_then is not None, script


def _responder_container() -> tuple[dict[str, Any], dict[str, Any]]:
    """The node pod's template and its responder container."""
    template = _sets()["jpki-va"]["spec"]["template"]
    return template, next(c for c in template["spec"]["containers"] if c["name"] == "responder")


def _responder_metrics(container: dict[str, Any]) -> MetricsConfig:
    """The ``[metrics]`` the node's responder runs with: the example configuration (the
    ConfigMap's responder.toml is config/'s) under the container's own flags."""
    argv = [re.sub(r"\$\((\w+)\)", "x", a) for a in container["command"][1:]]
    overrides = overrides_from_args(responder_parser().parse_args(argv))
    mine = {k: v for k, v in overrides.items() if k.startswith("metrics.")}
    return load_config(ROOT / "config" / "responder.toml", mine, environ={}).metrics


def test_prometheus_reaches_each_nodes_metrics_on_its_admin_listener() -> None:
    """The admin listener is on loopback by default, which no Prometheus outside the pod
    reaches: the node's responder listens on the pod's address, declares the port, and the
    pod says where to scrape; the NetworkPolicy lets only Prometheus to that port."""
    template, responder = _responder_container()
    metrics = _responder_metrics(responder)
    assert metrics.enabled
    assert not ipaddress.ip_address(metrics.host).is_loopback, metrics.host
    ports = {p["containerPort"]: p.get("name") for p in responder["ports"]}
    assert ports.get(metrics.port) == "metrics", ports
    notes = template["metadata"].get("annotations", {})
    assert notes.get("prometheus.io/scrape") == "true"
    assert notes.get("prometheus.io/port") == str(metrics.port)
    assert notes.get("prometheus.io/path") == "/metrics"
    policy = next(d for _, d in documents() if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "jpki-va"}
    rules = {r["ports"][0]["port"]: r.get("from") for r in policy["spec"]["ingress"]}
    assert rules.get(metrics.port), "the admin port must be restricted to Prometheus"


def test_only_the_proxy_reaches_the_public_port_it_is_trusted_on() -> None:
    """The responder takes a party's client certificate from the ``client-cert`` header of any
    address in its trusted proxies, here the whole pod network: a NetworkPolicy must keep
    every other pod off its public port, or any pod could present any party's certificate."""
    template, responder = _responder_container()
    argv = [re.sub(r"\$\((\w+)\)", "x", a) for a in responder["command"][1:]]
    trusted = overrides_from_args(responder_parser().parse_args(argv))["server.trusted_proxies"]
    assert isinstance(trusted, list)
    assert any(ipaddress.ip_network(t).is_private for t in trusted), trusted
    policies = [d for _, d in documents() if d["kind"] == "NetworkPolicy"
                and d["spec"]["podSelector"]["matchLabels"].items()
                <= template["metadata"]["labels"].items()]  # fmt: skip
    assert policies, "no NetworkPolicy selects the nodes: every pod may connect"
    port = next(p["containerPort"] for p in responder["ports"] if p["name"] == "http")
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"]["ingress"]:
            ports = {p["port"] for p in rule.get("ports", [{"port": port}])}
            if port in ports:
                assert rule.get("from"), f"{policy['metadata']['name']}: {port} open to every pod"


def test_the_responders_metric_files_are_on_a_writable_volume() -> None:
    """Its root file system is read-only: the metrics directory (by default a new one under
    /tmp, which cannot be made there: the master exits at start) is on a memory volume."""
    template, responder = _responder_container()
    assert responder["securityContext"]["readOnlyRootFilesystem"] is True
    metrics = _responder_metrics(responder)
    assert metrics.dir is not None, "unset: a directory under /tmp, read-only here"
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    mounts = [m for m in responder["volumeMounts"]
              if metrics.dir.is_relative_to(m["mountPath"]) and not m.get("readOnly")]  # fmt: skip
    assert mounts, f"{metrics.dir} is on no writable volume"
    assert "emptyDir" in volumes[mounts[-1]["name"]]  # emptied with the pod, as at a start


def test_every_pod_runs_under_the_restricted_pod_security_profile() -> None:
    """Pod Security "restricted": non-root, the runtime's seccomp profile, no privilege
    escalation, every capability dropped (and our containers' root file systems read-only)."""
    for name, doc in documents():
        if doc["kind"] != "StatefulSet":
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            ctx = pod["securityContext"] | c["securityContext"]  # the container's prevails
            assert ctx["runAsNonRoot"] is True, c["name"]
            assert ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, (name, c["name"])
            assert ctx["allowPrivilegeEscalation"] is False, c["name"]
            assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
            assert ctx["readOnlyRootFilesystem"] is True, c["name"]


def test_a_stopping_node_leaves_the_endpoints_before_it_closes_its_port() -> None:
    """The master closes its listening sockets at SIGTERM: a preStop pause first lets the
    endpoints and the proxy's check drop the pod, and the grace period covers the pause,
    the workers' drain and the master's grace before it kills one."""
    template, responder = _responder_container()
    pause = responder["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 2  # the proxy's check: inter 1s fall 2
    argv = [re.sub(r"\$\((\w+)\)", "x", a) for a in responder["command"][1:]]
    overrides = overrides_from_args(responder_parser().parse_args(argv))
    drain = load_config(ROOT / "config" / "responder.toml", {
        k: v for k, v in overrides.items() if k.startswith("server.limits.")
    }, environ={}).server.limits.drain_timeout  # fmt: skip
    assert template["spec"]["terminationGracePeriodSeconds"] >= pause + drain + KILL_GRACE


def _quantity_bytes(q: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``3Gi``) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(q[: -len(suffix)]) * factor
    return int(q)


def test_every_container_has_a_memory_request_and_limit() -> None:
    """No container of the manifests had a memory limit: one that leaked (or a build larger
    than its node's memory) took the node's memory from every other pod until the kernel
    killed whatever it chose. Each has a request and a limit now (docs/operations.md,
    "Memory of the containers"), the limit no lower than the request, and the responder's
    above what was measured of its own (bench/results/k8s_memory.json) for the number of
    workers the manifest starts: set, since by default it starts one per CPU of the node."""
    seen = []
    for name, doc in documents():
        if doc.get("kind") not in ("StatefulSet", "Deployment", "DaemonSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{name} {doc['metadata']['name']}/{c['name']}"
            memory = {k: (c.get("resources") or {}).get(k, {}).get("memory")
                      for k in ("requests", "limits")}  # fmt: skip
            assert memory["requests"] and memory["limits"], where
            assert _quantity_bytes(memory["limits"]) >= _quantity_bytes(memory["requests"]), where
            seen.append(where)
            if c["name"] == "responder":
                args = responder_parser().parse_args(c["command"][1:])
                workers = overrides_from_args(args).get("server.workers")
                assert isinstance(workers, int) and workers > 0, (
                    f"{where}: --workers set (not one per CPU of the node)"
                )
                measured = json.loads((ROOT / "bench/results/k8s_memory.json").read_text())
                last = measured["stages"][-1]
                own = (
                    last["master_private_kib"] + max(last["workers_private_kib"]) * workers
                ) << 10
                assert _quantity_bytes(memory["limits"]) >= 2 * (own + last["metrics_dir_bytes"])
    assert any(w.endswith("/responder") for w in seen) and len(seen) >= 8, seen
