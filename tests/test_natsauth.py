"""NATS authentication (`crlbuilder.natsauth`): the credential files are checked before any
connection, a server off loopback is not reached anonymously, and the shipped per-role
authorization (deploy/nats/jpki-va-auth.conf) is valid for nats-server and lets each role do
its part of the record and watch streams, and not another's, on a real server."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import nkeys
import pytest

from crlbuilder.build import Builder
from crlbuilder.cli import main as crlbuilder_main
from crlbuilder.config import BuilderConfig
from crlbuilder.jetstream import Cluster, ClusterError, CredentialError, wait_for_cluster
from crlbuilder.manifest import Manifest
from crlbuilder.natsauth import (
    ENV,
    NatsAuth,
    NatsAuthError,
    check_credential,
    new_user_seed,
    resolve,
)
from crlbuilder.options import ConfigError
from crlbuilder.stream import Consumer, StreamCipher, StreamNames
from responder.config import load_config as responder_config
from responder.v1.watchlog import Stored
from responder.v1.watchstream import StreamUnavailable, WatchStream
from tests.support.builder import builder_config
from tests.support.nats import (
    AUTH_CONF,
    NATS_SERVER,
    USERS,
    NatsCluster,
    Shipped,
    free_ports,
    nats_server,
    need_nats_server,
    shipped_authorization,
    tls_files,
    user_keys,
)

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # Debian ca-certificates


@pytest.fixture(autouse=True)
def _no_credential_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)


def new_seed(path: Path) -> str:
    """A new NKey user seed written to ``path`` (0600, as `crlbuilder nats-key` does); its
    public key."""
    return new_user_seed(path)


def test_nats_key_writes_a_seed_0600_prints_its_public_key_and_replaces_none(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "node.seed"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert crlbuilder_main(["nats-key", "--out", str(seed)]) == 0
        before = seed.read_bytes()
        assert crlbuilder_main(["nats-key", "--out", str(seed)]) == 2
    assert seed.stat().st_mode & 0o777 == 0o600 and seed.read_bytes() == before
    public = nkeys.from_seed(bytearray(before.strip())).public_key.decode()
    assert out.getvalue() == f"{public}\n" and public.startswith("U")
    assert (
        err.getvalue() == f"crlbuilder nats-key: error: {seed} exists; refusing to replace a seed\n"
    )
    assert before.strip().decode() not in out.getvalue() + err.getvalue()


# -- the files, before any connection --------------------------------------------------------


def test_a_seed_readable_by_others_is_refused_naming_the_file_not_its_content(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "node.seed"
    new_seed(seed)
    secret = seed.read_text().strip()
    seed.chmod(0o640)
    with pytest.raises(NatsAuthError) as e:
        resolve(NatsAuth(nkey_seed=str(seed)), ["nats://nats-1.example.jp:4222"])
    assert (
        str(e.value) == f"{seed}: the NATS NKey seed must be readable by its owner only (chmod 600)"
    )
    seed.chmod(0o600)
    got = resolve(NatsAuth(nkey_seed=str(seed)), ["nats://nats-1.example.jp:4222"])
    assert got.kwargs == {"nkeys_seed_str": secret} and not got.warning
    assert secret not in repr(got)  # what a traceback or a log line would show


def test_a_seed_handed_over_by_loadcredential_is_read_despite_its_acl_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd 254+ gives the unit's user its credential by an ACL: stat shows 0440."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    seed = creds / "nats.seed"
    new_seed(seed)
    seed.chmod(0o440)
    auth = NatsAuth(nkey_seed=str(seed))
    with pytest.raises(NatsAuthError, match="owner only"):  # elsewhere: refused
        resolve(auth, ["nats://nats-1.example.jp:4222"])
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve(auth, ["nats://nats-1.example.jp:4222"]).kwargs["nkeys_seed_str"]
    seed.chmod(0o444)  # readable by others: refused there too
    with pytest.raises(NatsAuthError, match="owner only"):
        resolve(auth, ["nats://nats-1.example.jp:4222"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read the NATS NKey seed: No such file or directory"),
     ("SAAJUNKACCOUNTSEEDNOTAUSER", "not an NKey user seed"),
     ("é", "the NATS NKey seed is not ASCII")],
)  # fmt: skip
def test_a_missing_or_wrong_seed_file_is_refused_in_one_line(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    seed = tmp_path / "node.seed"
    if content is not None:
        seed.write_text(content)
        seed.chmod(0o600)
    with pytest.raises(NatsAuthError) as e:
        resolve(NatsAuth(nkey_seed=str(seed)), ["nats://127.0.0.1:4222"])
    assert problem in str(e.value) and "\n" not in str(e.value)
    if content:
        assert content not in str(e.value)


def test_no_credential_is_refused_off_loopback_and_warned_about_on_it() -> None:
    with pytest.raises(NatsAuthError, match=r"no NATS credential for nats://10\.0\.0\.5:4222"):
        resolve(NatsAuth(), ["nats://127.0.0.1:4222", "nats://10.0.0.5:4222"])
    with pytest.raises(NatsAuthError, match="no NATS credential"):  # a CA alone proves nothing
        resolve(NatsAuth(tls_ca=SYSTEM_CAS), ["tls://nats.example.jp:4222"])
    for local in ("nats://127.0.0.1:4222", "nats://localhost:4222", "nats://[::1]:4222"):
        assert "anonymous" in resolve(NatsAuth(), [local]).warning


@pytest.mark.integration
@pytest.mark.real_clock
def test_an_anonymous_connection_on_loopback_is_warned_about_once_a_process(
    tmp_path: Path,
) -> None:
    refused = [f"nats://127.0.0.1:{free_ports(1)[0]}"]  # nothing listens there
    warned: list[str] = []
    with pytest.raises(ClusterError, match=r"\(this node has no NATS credential\)$"):
        Cluster(refused, connect_timeout=1, warn=warned.append)
    assert warned == []  # the error says it: one line, not two
    with nats_server(tmp_path, free_ports(1)[0]) as server:  # no authorization
        for _ in range(3):
            Cluster(server.urls, warn=warned.append).close()
    assert warned == [
        "NATS: no credential configured; anonymous connection accepted on loopback only"
    ]


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(NatsAuthError, match="needs both nats_tls_cert and nats_tls_key"):
        resolve(NatsAuth(tls_cert="/etc/jpki-va/nats.crt"), ["tls://nats.example.jp:4222"])


def test_the_environment_wins_over_the_configuration(tmp_path: Path) -> None:
    a, b = tmp_path / "a.seed", tmp_path / "b.seed"
    new_seed(a)
    new_seed(b)
    got = NatsAuth(nkey_seed=str(a)).with_environ({ENV["nkey_seed"]: str(b)})
    assert got == NatsAuth(nkey_seed=str(b))
    assert check_credential(NatsAuth(nkey_seed=str(a)), "nats-1.example.jp:4222").kwargs


@pytest.mark.parametrize(
    "inbox", ["_INBOX", "_INBOX.>", "_INBOX_", "INBOX_builder_a", "_INBOX" + "_a" * 81]
)
def test_an_inbox_prefix_not_a_users_own_is_refused_in_one_line(tmp_path: Path, inbox: str) -> None:
    """The user's own inbox is one subject token below ``_INBOX_`` (`crlbuilder.natsconfig`
    writes them so): a dot, a wildcard or the shared ``_INBOX`` is refused before connecting."""
    seed = tmp_path / "a.seed"
    new_seed(seed)
    auth = NatsAuth(nkey_seed=str(seed)).with_environ({ENV["inbox"]: inbox})
    with pytest.raises(NatsAuthError, match=r"^NATS inbox prefix .*: not _INBOX_ and") as e:
        resolve(auth, ["nats://nats-1.example.jp:4222"])
    assert "\n" not in str(e.value)
    ok = NatsAuth(nkey_seed=str(seed), inbox="_INBOX_builder_jpki-va-0")
    assert resolve(ok, []).kwargs["inbox_prefix"] == "_INBOX_builder_jpki-va-0"


def test_a_units_inbox_of_its_host_name_is_its_nodes_as_jpki_va_names_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node units set ``_INBOX_<role>_%H``; a host name with dots (``n1.example.jp``) is
    the node ``n1-example-jp`` (`responder.ledgerstream.default_node`, the builder's
    ``node-n1-example-jp``), so the users file names that node and the prefix maps so too
    (it was refused: a dot is a subject's token separator)."""
    import socket

    from crlbuilder.natsconfig import User
    from responder.ledgerstream import default_node

    monkeypatch.setattr(socket, "gethostname", lambda: "n1.example.jp")
    seed = tmp_path / "a.seed"
    new_seed(seed)
    unit = NatsAuth(nkey_seed=str(seed), inbox="_INBOX_builder_n1.example.jp")
    assert resolve(unit, []).kwargs["inbox_prefix"] == User("builder", "$K", default_node()).inbox


def test_both_configurations_refuse_a_credential_that_will_not_do(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "node.seed"
    new_seed(seed)
    seed.chmod(0o644)
    with pytest.raises(ConfigError, match="owner only"):
        responder_config(None, {"cluster.nats": "nats://nats-1.example.jp:4222",
                                "cluster.nats_nkey_seed": str(seed)})  # fmt: skip
    with pytest.raises(ConfigError, match="no NATS credential"):
        responder_config(None, {"cluster.nats": "nats://nats-1.example.jp:4222"})
    assert responder_config(None, {"cluster.nats": ""}).cluster.nats == ""  # one node: nothing
    # a server list that is no list is said as such, not as a missing credential (nor raised)
    with pytest.raises(ConfigError, match=r"cluster\.nats: 'nats://': a NATS server is"):
        responder_config(None, {"cluster.nats": "nats://"})
    cfg = builder_config(tmp_path / "b", demo_pki[0])
    toml = tmp_path / "builder.toml"
    toml.write_text(
        f'[store]\npath = "{cfg.store.path}"\n[pki]\nmanifest = "{demo_pki[0]}"\n'
        f'[input]\nsource = "nats://nats-1.example.jp:4222"\n'
    )
    monkeypatch.setenv(ENV["nkey_seed"], str(seed))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = crlbuilder_main(["publish", "--config", str(toml), str(tmp_path)])
    assert rc == 2
    assert err.getvalue().count("\n") == 1 and "owner only (chmod 600)" in err.getvalue()


# -- the shipped server configuration ------------------------------------------------------


@pytest.mark.integration
def test_the_shipped_authorization_is_valid_for_nats_server_and_names_every_user(
    tmp_path: Path,
) -> None:
    need_nats_server()
    # the shipped file is what `crlbuilder nats-config` writes for the shipped users file
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert crlbuilder_main(["nats-config", "--users", str(USERS)]) == 0
    assert out.getvalue().replace(str(USERS), "deploy/nats/users.toml") == AUTH_CONF.read_text()
    shutil.copy(AUTH_CONF, tmp_path / AUTH_CONF.name)
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:4222"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"include ./{AUTH_CONF.name}\n"
    )
    keys = user_keys(tmp_path / "seeds")
    env = {**os.environ, **keys}
    ok = subprocess.run(
        [NATS_SERVER, "-t", "-c", str(conf)], env=env, capture_output=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert len(keys) == 11  # 5 single roles, a builder and a responder per node of 3
    for name in keys:  # a user left out of the server's environment is an error, not open
        less = {k: v for k, v in env.items() if k != name}
        bad = subprocess.run(
            [NATS_SERVER, "-t", "-c", str(conf)], env=less, capture_output=True, check=False
        )
        assert bad.returncode != 0 and name.encode() in bad.stderr


# -- a real server with the shipped authorization -------------------------------------------


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NatsCluster, Shipped]]:
    """One nats-server on loopback with deploy/nats/jpki-va-auth.conf and a seed per role."""
    need_nats_server()
    base = tmp_path_factory.mktemp("natsauth")
    shipped = shipped_authorization(base / "seeds")
    with nats_server(base, free_ports(1)[0], extra=shipped.extra, probe=shipped.probe) as server:
        yield server, shipped


def as_role(seed: Path) -> NatsAuth:
    return NatsAuth(nkey_seed=str(seed))


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_client_without_credential_is_refused_by_the_server(
    secured: tuple[NatsCluster, Shipped],
) -> None:
    server, _ = secured
    with pytest.raises(ClusterError, match=r"\(this node has no NATS credential\)$"):
        Cluster(server.urls, connect_timeout=2)


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_seed_the_server_does_not_know_is_refused(
    secured: tuple[NatsCluster, Shipped], tmp_path: Path
) -> None:
    server, _ = secured
    stranger = tmp_path / "stranger.seed"
    new_seed(stranger)
    # nats-server says -ERR 'Authorization Violation' and closes; the client reads the
    # error or, when the close wins the race, a reset: refused either way
    with pytest.raises(ClusterError, match=r"Authorization Violation|Connection reset") as e:
        Cluster(server.urls, connect_timeout=2, auth=as_role(stranger))
    assert stranger.read_text().strip() not in str(e.value)


@pytest.mark.integration
@pytest.mark.real_clock
def test_a_follower_is_not_kept_waiting_on_a_credential_that_will_not_do(
    secured: tuple[NatsCluster, Shipped], tmp_path: Path
) -> None:
    server, shipped = secured
    seeds = shipped.seeds
    bad = tmp_path / "b.seed"
    shutil.copy(seeds["BUILDER"], bad)
    bad.chmod(0o604)
    warned: list[str] = []
    with pytest.raises(CredentialError, match="owner only"):
        wait_for_cluster(
            lambda: Cluster(server.urls, auth=as_role(bad)), interval=0.1, warn=warned.append
        )
    assert warned == []  # refused at once, not tried again


def test_registry_sync_following_refuses_a_loose_seed_at_once_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from responder.cli import main as responder_main

    seed = tmp_path / "responder.seed"
    new_seed(seed)
    seed.chmod(0o640)
    registry = tmp_path / "registry.toml"
    monkeypatch.setenv(ENV["nkey_seed"], str(seed))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = responder_main(["registry", "sync", "--registry", str(registry),
                             "--nats", "nats://127.0.0.1:1", "--follow"])  # fmt: skip
    assert rc == 2 and err.getvalue().count("\n") == 1, err.getvalue()
    assert "owner only (chmod 600)" in err.getvalue() and not registry.exists()


def _records(tmp: Path, pki: Path) -> Path:
    out = tmp / "pop"
    subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "synth", "--pki", str(pki), "--holders", "20",
         "--out", str(out), "--seed", "5", "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "records"


def _node(tmp: Path, pki: Path, source: str) -> BuilderConfig:
    tmp.mkdir()
    cfg = builder_config(tmp, pki)
    return msgspec.structs.replace(
        cfg,
        crl=msgspec.structs.replace(cfg.crl, enabled=False),
        ocsp=msgspec.structs.replace(cfg.ocsp, presign=False),
        input=msgspec.structs.replace(cfg.input, source=source),
        stream=msgspec.structs.replace(cfg.stream, durable=tmp.name),
    )


@pytest.mark.integration
@pytest.mark.real_clock
def test_the_record_stream_runs_through_the_roles_and_only_theirs(
    secured: tuple[NatsCluster, Shipped],
    tmp_path: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, shipped = secured
    cfg = _node(tmp_path / "node", demo_pki[0], server.source)
    records = sorted(_records(tmp_path, demo_pki[0]).glob("*.jsonl"))
    names = StreamNames(cfg.stream.name, cfg.stream.subject)
    cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))

    # the builder's credential may not publish a record: refused, nothing stored
    builder = Cluster(server.urls, auth=shipped.auth("BUILDER"))
    try:
        from crlbuilder.stream import publish

        with pytest.raises((ClusterError, nats.errors.Error)):
            publish(builder, names, records[:1], cipher, batch_size=50, retry_seconds=1)
    finally:
        builder.close()

    # the publisher publishes, through the command and its environment's seed
    for name, value in shipped.env("PUBLISHER").items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = crlbuilder_main(["publish", "--source", server.source,
                              "--facts-key-file", cfg.keys.facts_key_file,
                              *map(str, records)])  # fmt: skip
    assert rc == 0
    published = msgspec.json.decode(out.getvalue())["published"]
    assert published > 0
    monkeypatch.delenv(ENV["nkey_seed"])
    monkeypatch.delenv(ENV["inbox"])

    # the builder applies them all
    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(server.urls, auth=shipped.auth("BUILDER"))
    try:
        assert b.consume(Consumer(c, names, cfg.stream.durable, cipher), tail_wait=0.5) == published
        with pytest.raises(nats.errors.Error):  # and may not purge the stream
            c.run(c.js.purge_stream(names.name))
        assert c.run(c.js.stream_info(names.name)).state.messages >= published
    finally:
        c.close()
        b.close()
        b.log.close()


@pytest.mark.integration
@pytest.mark.real_clock
def test_the_watch_stream_is_written_by_responders_and_purged_by_watch_compact_only(
    secured: tuple[NatsCluster, Shipped],
) -> None:
    server, shipped = secured
    anonymous = WatchStream(server.source, timeout=2.0)
    with pytest.raises(StreamUnavailable, match="this node has no NATS credential"):
        anonymous.publish(b"op-0")
    anonymous.close()

    responder = WatchStream(server.source, timeout=2.0, auth=shipped.auth("RESPONDER"))
    compact = WatchStream(server.source, timeout=2.0, auth=shipped.auth("WATCH_COMPACT"))
    try:
        first = responder.publish(b"op-1")
        second = responder.publish(b"op-2")
        assert data(responder.fetch(second)) == b"op-2"
        with pytest.raises(StreamUnavailable):  # a responder may not purge the stream
            responder.purge_operations(first)
        responder.close()
        assert data(compact.fetch(first)) == b"op-1"
        compact.purge_operations(first)  # watch-compact may
        assert compact.fetch(first) is None and data(compact.fetch(second)) == b"op-2"
    finally:
        responder.close()
        compact.close()


def data(stored: Stored | None) -> bytes | None:
    """The bytes of a message read back from the watch stream (None: not held)."""
    return None if stored is None else stored.data


# -- TLS: the server's certificate checked, the client's asked for (verify: true) ------------


def _pem(path: Path, obj: object, *, secret: bool = False) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(obj, ec.EllipticCurvePrivateKey):
        data = obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        data = obj.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]
    path.write_bytes(data)
    path.chmod(0o600 if secret else 0o644)
    return str(path)


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NatsCluster, dict[str, str]]]:
    """A nats-server on loopback that speaks TLS only and asks every client for a certificate
    of its CA; the files of a client it accepts."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.support.pki import certificate

    need_nats_server()
    base = tmp_path_factory.mktemp("natstls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("jpki-va test NATS CA", ca_key, ca=True)

    def leaf(cn: str, *ext: tuple[x509.ExtensionType, bool]) -> tuple[object, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        return key, certificate(cn, key, ca_key, issuer=ca.subject, ca=False, extensions=ext)

    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    s_key, s_cert = leaf("nats-1", (san, False))
    c_key, c_cert = leaf("jpki-va-node-1")
    files = {
        "ca": _pem(base / "ca.pem", ca),
        "server_cert": _pem(base / "server.pem", s_cert),
        "server_key": _pem(base / "server.key", s_key, secret=True),
        "cert": _pem(base / "client.pem", c_cert),
        "key": _pem(base / "client.key", c_key, secret=True),
    }
    extra = (
        f'tls {{ cert_file: "{files["server_cert"]}", key_file: "{files["server_key"]}", '
        f'ca_file: "{files["ca"]}", verify: true, timeout: 2 }}\n'
    )
    ctx = resolve(NatsAuth(tls_ca=files["ca"], tls_cert=files["cert"], tls_key=files["key"]), [])
    with nats_server(base, free_ports(1)[0], extra=extra, probe=ctx.kwargs) as server:
        yield server, files


@pytest.mark.integration
@pytest.mark.real_clock
def test_over_tls_a_client_certificate_of_the_ca_is_needed_and_enough(
    tls_server: tuple[NatsCluster, dict[str, str]], tmp_path: Path
) -> None:
    server, f = tls_server
    # a CA alone (no client certificate): refused by the server, however near it is
    with pytest.raises(ClusterError, match="this node has no NATS credential"):
        Cluster(server.urls, connect_timeout=2, auth=NatsAuth(tls_ca=f["ca"]))
    # a client key readable by others: refused before connecting
    loose = tmp_path / "client.key"
    shutil.copy(f["key"], loose)
    loose.chmod(0o644)
    with pytest.raises(CredentialError, match="NATS client key must be readable by its owner"):
        Cluster(server.urls, auth=NatsAuth(tls_ca=f["ca"], tls_cert=f["cert"], tls_key=str(loose)))
    # the right files: the watch stream works through the TLS connection
    auth = NatsAuth(tls_ca=f["ca"], tls_cert=f["cert"], tls_key=f["key"])
    stream = WatchStream(server.source, timeout=2.0, auth=auth)
    try:
        seq = stream.publish(b"op-tls")
        assert data(stream.fetch(seq)) == b"op-tls"
        info = stream._connected().nc._server_info  # what the server announced: TLS only
        assert info.get("tls_required") and info.get("tls_verify")
    finally:
        stream.close()


# -- Kubernetes: the servers include the same authorization, each container its role's seed -


def _manifests(name: str) -> list[dict[str, Any]]:
    import yaml

    path = ROOT / "deploy" / "kubernetes" / name
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.integration  # nats-server -t
def test_the_kubernetes_nats_servers_run_the_shipped_authorization(tmp_path: Path) -> None:
    need_nats_server()
    config = next(d for d in _manifests("nats.yaml") if d["kind"] == "ConfigMap")["data"]
    assert config["jpki-va-auth.conf"] == AUTH_CONF.read_text()
    assert "include ./jpki-va-auth.conf" in config["nats.conf"]
    tls = tls_files(tmp_path / "tls")  # the Secret nats-tls, mounted at /etc/nats-tls
    for name, text in config.items():
        (tmp_path / name).write_text(text.replace("/etc/nats-tls/", f"{tmp_path / 'tls'}/"))
    assert all(Path(f).exists() for f in tls.values())
    keys = user_keys(tmp_path / "seeds")
    env = {**os.environ, **keys, "POD_NAME": "nats-0", "POD_NAMESPACE": "jpki", "JS_KEY": "k"}
    ran = subprocess.run(
        [NATS_SERVER, "-t", "-c", str(tmp_path / "nats.conf")],
        env=env, capture_output=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    server = next(d for d in _manifests("nats.yaml") if d["kind"] == "StatefulSet")
    (container,) = server["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": "nats-users"}} in container["envFrom"]


def test_every_kubernetes_container_on_nats_mounts_its_roles_seed_only() -> None:
    """A container mounts its role's seeds only; a node's builder and responder use their
    pod's own (its POD_NAME), the user deploy/nats/users.toml binds to that node."""
    from crlbuilder.natsconfig import parse_users

    docs = _manifests("jpki-va.yaml")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    seed_path = config[ENV["nkey_seed"]]
    expected = {"bootstrap": "builder", "builder": "builder", "registry-sync": "responder",
                "watch-compact": "watch-compact", "responder": "responder"}  # fmt: skip
    users = parse_users(USERS.read_text())
    nodes = {(u.role, u.node): u for u in users}
    seen = 0
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        pods = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod.get("initContainers", []) + pod["containers"]:
            mounts = [m for m in c["volumeMounts"] if m["name"].startswith("nats-")]
            (mount,) = mounts  # one volume, its role's seeds
            assert mount["mountPath"] == str(Path(seed_path).parent) and mount["readOnly"]
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "jpki-va-nats" and secret["defaultMode"] == 0o400
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if sts["metadata"]["name"] == "jpki-va-signer":
                signer_roles = {"bootstrap": "signer", "builder": "signer", "snapshot": "snapshot"}
                role = signer_roles[c["name"]]
            else:
                role = expected[c["name"]]
            # its user's own inbox, in every pod (the only one the servers let it read)
            inboxes = {env[ENV["inbox"]].replace("$(POD_NAME)", p) for p in pods}
            assert inboxes == {u.inbox for u in users if u.role == role}, c["name"]
            if role in ("builder", "responder"):  # per node: each pod its own, by name
                assert env[ENV["nkey_seed"]] == f"{Path(seed_path).parent}/$(POD_NAME).seed"
                items = {i["key"]: i["path"] for i in secret["items"]}
                assert items == {f"{role}-{p}.seed": f"{p}.seed" for p in pods}, c["name"]
                assert all((role, p) in nodes for p in pods), (role, pods)
                assert all(nodes["builder", p].consumer == p for p in pods if role == "builder")
            else:
                assert ENV["nkey_seed"] not in env
                (item,) = secret["items"]
                assert item == {"key": f"{role}.seed", "path": Path(seed_path).name}
                assert any(u.role == role for u in users)
                if role == "signer":  # its durable consumer is the pod's name (--durable)
                    (signer,) = [u for u in users if u.role == "signer"]
                    assert signer.node == signer.consumer == pods[0]
            assert {"configMapRef": {"name": "jpki-va-config"}} in c["envFrom"]
            seen += 1
    assert seen == 8


def test_a_responder_reloaded_with_another_seed_uses_it_for_the_watch_stream(
    tmp_path: Path,
) -> None:
    from responder.config import ClusterConfig, LedgerConfig, ResponderConfig
    from responder.v1 import changes

    a, b = tmp_path / "a.seed", tmp_path / "b.seed"
    new_seed(a)
    new_seed(b)

    def config(seed: Path) -> ResponderConfig:
        cluster = ClusterConfig(nats="nats://127.0.0.1:1", nats_nkey_seed=str(seed))
        return ResponderConfig(ledger=LedgerConfig(dir=tmp_path / "ledger"), cluster=cluster)

    first = changes.setup(config(a))
    assert first.stream is not None and first.stream.auth == NatsAuth(nkey_seed=str(a))
    assert changes.setup(config(a)) is first  # the same: kept
    again = changes.setup(config(b))  # SIGHUP after the seed was rotated
    assert again is not first and again.stream is not None
    assert again.stream.auth == NatsAuth(nkey_seed=str(b))
