"""Process supervision (responder/server.py): drain, reload, restart, TLS, readiness.

Every test starts the real master (`serve()` in a subprocess) on 127.0.0.1 with
an ephemeral port and stops it by PID in teardown.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.keys.signer import SignerError
from crlbuilder.options import ConfigError
from responder.config import TlsConfig
from responder.server import JsonLineFormatter, _safe_error, make_ssl_context, sd_notify
from tests.support.echo_app import (
    ReplyReader,
    ServerProcess,
    connect,
    wait_closed,
    write_config,
)
from tests.support.pki import certificate
from tests.support.procs import alive, children
from tests.support.wait import until

LIMITS = {"header_timeout": 2.0, "idle_timeout": 10.0, "drain_timeout": 3.0}

pytestmark = pytest.mark.integration  # every test but three starts the real master


def _info(port: int) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/info")
        resp = conn.getresponse()
        assert resp.status == 200
        info: dict[str, object] = json.loads(resp.read())
        return info
    finally:
        conn.close()


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        idle = connect(server.port)
        slow = connect(server.port)
        try:
            idle.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
            assert ReplyReader(idle).read_one().status == 200
            slow.sendall(b"GET /sleep?1.0 HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.2)
            server.signal(signal.SIGTERM)
            assert wait_closed(idle, 2) == b""  # idle keep-alive connections are closed
            reply = ReplyReader(slow).read_one(timeout=5)  # in flight: finishes
            assert reply.status == 200 and reply.body.startswith(b"slept")
            assert reply.headers["connection"] == "close"
            assert server.wait(10) == 0
        finally:
            idle.close()
            slow.close()
        with pytest.raises(OSError):
            connect(server.port, timeout=1).close()
        events = [e["event"] for e in server.events()]
        drained = [e for e in server.events() if e["event"] == "worker_drained"]
        assert [e["cut_connections"] for e in drained] == [0, 0]  # none left at the timeout
        assert events[-1] == "master_exit"
        assert len(list(tmp_path.glob("closed-*"))) == 2  # app.close() in every worker


def test_drain_timeout_cuts_requests_that_take_too_long(tmp_path: Path) -> None:
    limits = {**LIMITS, "drain_timeout": 0.5}
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, limits)
    with ServerProcess(tmp_path, config).start() as server, connect(server.port) as sock:
        sock.sendall(b"GET /sleep?30 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        server.signal(signal.SIGTERM)
        assert wait_closed(sock, 5) == b""
        assert server.wait(10) == 0
        drained = [e for e in server.events() if e["event"] == "worker_drained"]
        assert drained[0]["cut_connections"] == 1


def test_sighup_reloads_every_worker_without_dropping_connections(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        workers = set(children(server.pid))
        assert len(workers) == 2
        with connect(server.port) as sock:
            reader = ReplyReader(sock)
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n" + b"a" * 300
            )
            assert reader.read_one().status == 200
            write_config(
                tmp_path / "r.toml", {"port": 0, "workers": 2}, {**LIMITS, "max_body_bytes": 200}
            )
            server.signal(signal.SIGHUP)
            until(lambda: len(list(tmp_path.glob("reload-*"))) == 2, what="both workers reloaded")
            assert {int(p.name.split("-")[2]) for p in tmp_path.glob("reload-*")} == workers
            sock.sendall(b"GET /info HTTP/1.1\r\nHost: a\r\n\r\n")  # the same connection
            info = json.loads(reader.read_one().body)
            assert info["reloads"] == 1
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n")
            assert reader.read_one().status == 413  # the new limit, on an old connection
        assert set(children(server.pid)) == workers  # nobody was restarted


def test_sighup_with_a_broken_config_keeps_serving(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        config.write_text(config.read_text() + "\n[server.nonsense]\nx = 1\n")
        server.signal(signal.SIGHUP)
        until(lambda: "reload_failed" in server.stderr(), what="reload_failed logged")
        failed = next(e for e in server.events() if e["event"] == "reload_failed")
        assert "r.toml" in failed["error"] and "server" in failed["error"]
        assert not list(tmp_path.glob("reload-*"))
        assert _info(server.port)["reloads"] == 0


def test_killed_worker_is_restarted(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        before = set(children(server.pid))
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        until(
            lambda: (
                len(set(children(server.pid)) - before) == 1
                and server.stderr().count("worker_ready") == 3
            ),
            what="a new worker",
        )
        after = set(children(server.pid))
        assert victim not in after and len(after) == 2
        for _ in range(4):
            assert _info(server.port)["pid"] in after
        events = server.events()
        exit_event = next(e for e in events if e["event"] == "worker_exit")
        assert exit_event["worker_pid"] == victim and exit_event["exit_code"] == -signal.SIGKILL
        assert any(e["event"] == "worker_restart" for e in events)


def _listening_sockets(port: int) -> int:
    """How many IPv4 sockets listen on ``port`` (state 0A in /proc/net/tcp)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            n += 1
    return n


@pytest.mark.parametrize("reuseport", [True, False])
def test_reuseport_gives_each_worker_its_own_listening_socket(
    tmp_path: Path, reuseport: bool
) -> None:
    """With a SO_REUSEPORT socket per worker the kernel spreads new connections over the
    workers (bench/README.md: with one shared socket, one worker took twice the other's share
    under load); the shared socket stays, so a dead worker's port is still served."""
    config = write_config(
        tmp_path / "r.toml", {"port": 0, "workers": 2, "reuseport": reuseport}, LIMITS
    )
    with ServerProcess(tmp_path, config).start() as server:
        assert _listening_sockets(server.port) == (3 if reuseport else 1)
        pids = {_info(server.port)["pid"] for _ in range(40)}
        assert pids <= set(children(server.pid)) and pids


def test_workers_stop_when_the_master_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        workers = children(server.pid)
        assert len(workers) == 2
        try:
            server.signal(signal.SIGKILL)
            server.wait(5)
            until(lambda: not any(alive(p) for p in workers), what="orphaned workers exit")
        finally:
            for pid in workers:  # reparented: the fixture would not find them
                with contextlib.suppress(OSError):
                    if b"echo_app" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)


def test_worker_that_cannot_start_fails_the_master(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    server = ServerProcess(tmp_path, config, env={"JPKI_TEST_FAIL_START": "1"})
    try:
        with pytest.raises(RuntimeError, match="server exited"):
            server.start()
        assert server.wait(10) == 1
        failed = [e for e in server.events() if e["event"] == "worker_start_failed"]
        assert failed and failed[0]["exc_type"] == "RuntimeError"
        assert "cannot start" not in server.stderr()  # exception messages are not logged
    finally:
        server.stop()


def test_bind_failure_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "r.toml", {"port": port, "workers": 1}, LIMITS)
        server = ServerProcess(tmp_path, config)
        try:
            with pytest.raises(RuntimeError):
                server.start()
            assert server.wait(10) == 1
            assert "master_start_failed" in server.stderr()
        finally:
            server.stop()


@pytest.mark.parametrize("reuseport", [True, False])
def test_a_port_another_responder_listens_on_is_refused(tmp_path: Path, reuseport: bool) -> None:
    """Another instance's sockets carry SO_REUSEPORT: with ``reuseport`` this one must not
    join their group (the kernel would share the connections between the two)."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "r.toml", {"port": port, "workers": 1, "reuseport": reuseport}, LIMITS
        )
        server = ServerProcess(tmp_path, config)
        try:
            with pytest.raises(RuntimeError):
                server.start()
            assert server.wait(10) == 1
            failed = [e for e in server.events() if e.get("event") == "master_start_failed"]
            assert failed, server.stderr()
            assert failed[0]["error"] == f"Address already in use: 127.0.0.1:{port}", failed
            assert _listening_sockets(port) == 1
        finally:
            server.stop()


def test_an_unknown_host_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"hosts": ["no-such-host.invalid"]}, LIMITS)
    server = ServerProcess(tmp_path, config)
    try:
        with pytest.raises(RuntimeError):
            server.start()
        assert server.wait(10) == 1
        failed = [e for e in server.events() if e.get("event") == "master_start_failed"]
        assert failed and str(failed[0]["error"]).endswith(": no-such-host.invalid"), failed
    finally:
        server.stop()


def test_admin_listener_bind_failure_exits_1(tmp_path: Path) -> None:
    """[metrics] port taken: the master refuses to start rather than serve without metrics."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
        text = config.read_text()
        assert text.endswith("[metrics]\nport = 0\n")
        config.write_text(text.replace("[metrics]\nport = 0\n", f"[metrics]\nport = {port}\n"))
        server = ServerProcess(tmp_path, config)
        try:
            with pytest.raises(RuntimeError):
                server.start()
            assert server.wait(10) == 1
            failed = [e for e in server.events() if e.get("event") == "master_start_failed"]
            assert failed and "Address already in use" in str(failed[0].get("error")), failed
        finally:
            server.stop()


def test_sd_notify_ready_and_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(5)
        config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
        with ServerProcess(tmp_path, config, env={"NOTIFY_SOCKET": address}).start() as server:
            assert notify.recv(100) == b"READY=1"
            server.signal(signal.SIGTERM)
            assert notify.recv(100) == b"STOPPING=1"
            assert server.wait(10) == 0


def test_sd_notify_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv4_and_ipv6_on_one_port(tmp_path: Path) -> None:
    server_cfg = {"hosts": ["127.0.0.1", "::1"], "port": 0, "workers": 1}
    config = write_config(tmp_path / "r.toml", server_cfg, LIMITS)
    with ServerProcess(tmp_path, config).start(expect_lines=2) as server:
        port = server.port
        assert server.urls == [f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]
        conn = http.client.HTTPConnection("::1", port, timeout=5)
        try:
            conn.request("GET", "/info")
            assert json.loads(conn.getresponse().read())["peer"][0] == "::1"
        finally:
            conn.close()
        assert _info(port)["peer"][0] == "127.0.0.1"  # type: ignore[index]


# -- TLS -------------------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if server:
        extensions = [
            (
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            ),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ]
    elif not ca:
        extensions = [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]
    return certificate(
        subject, key, issuer_key, issuer=issuer.subject if issuer else None,
        not_before=datetime.now(UTC) - timedelta(minutes=5), days=1, ca=ca, extensions=extensions,
    )  # fmt: skip


def _pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test client CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("127.0.0.1", server_key, ca, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("test party", client_key, ca, ca_key)
    files = {}
    for name, cert, key in (
        ("ca", ca, ca_key),
        ("server", server, server_key),
        ("client", client, client_key),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[name + "_key"] = tmp_path / f"{name}.key"
        _write_key(files[name + "_key"], key)
    files["client_der"] = tmp_path / "client.der"
    files["client_der"].write_bytes(client.public_bytes(serialization.Encoding.DER))
    return files


def _tls_server(tmp_path: Path, mode: str) -> tuple[ServerProcess, dict[str, Path]]:
    files = _pki(tmp_path)
    tls = {
        "cert": str(files["server"]),
        "key": str(files["server_key"]),
        "client_ca": str(files["ca"]),
        "client_cert": mode,
    }
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1, "tls": tls}, LIMITS)
    return ServerProcess(tmp_path, config), files


def _client_context(files: dict[str, Path], with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    if with_cert:
        ctx.load_cert_chain(str(files["client"]), str(files["client_key"]))
    return ctx


def _https_info(port: int, ctx: ssl.SSLContext) -> dict[str, object]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/info")
        info: dict[str, object] = json.loads(conn.getresponse().read())
        conn.request("GET", "/info")  # keep-alive over TLS
        assert json.loads(conn.getresponse().read())["request_id"] == info["request_id"] + 1  # type: ignore[operator]
        return info
    finally:
        conn.close()


def test_tls_required_client_certificate_reaches_the_app(tmp_path: Path) -> None:
    server, files = _tls_server(tmp_path, "required")
    with server.start():
        assert server.urls[0].startswith("https://127.0.0.1:")
        info = _https_info(server.port, _client_context(files, with_cert=True))
        assert info["cert"] == files["client_der"].read_bytes().hex()
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.HTTPException)):
            _https_info(server.port, _client_context(files, with_cert=False))
        assert _https_info(server.port, _client_context(files, with_cert=True))["cert"]


def test_tls_optional_client_certificate(tmp_path: Path) -> None:
    server, files = _tls_server(tmp_path, "optional")
    with server.start():
        assert _https_info(server.port, _client_context(files, with_cert=False))["cert"] is None
        info = _https_info(server.port, _client_context(files, with_cert=True))
        assert info["cert"] == files["client_der"].read_bytes().hex()


def test_json_line_formatter_keeps_exception_messages_out() -> None:
    import logging

    try:
        raise ValueError("private detail")
    except ValueError:
        record = logging.LogRecord("responder.x", logging.ERROR, __file__, 1, "evt", (), None)
        import sys

        record.exc_info = sys.exc_info()
    record.fields = {"worker": 3}
    line = JsonLineFormatter().format(record)
    data = json.loads(line)
    assert data["event"] == "evt" and data["worker"] == 3 and data["exc_type"] == "ValueError"
    assert "private detail" not in line and "\n" not in line


def _tls(files: dict[str, Path], **changed: Path) -> TlsConfig:
    paths = {"cert": files["server"], "key": files["server_key"], "client_ca": files["ca"]}
    return TlsConfig(**(paths | changed), client_cert="optional")


def test_tls_files_are_named_when_they_cannot_be_used(tmp_path: Path) -> None:
    """A missing, unreadable or wrong [server.tls] file is named, as the master logs it."""
    files = _pki(tmp_path)
    missing = tmp_path / "missing.pem"
    assert make_ssl_context(_tls(files))
    for changed, said in (
        ({"cert": missing}, f"No such file or directory: {missing}"),
        ({"key": missing}, f"{missing}: cannot open the key file (No such file or directory)"),
        ({"cert": files["ca_key"]}, f"{files['ca_key']}, {files['server_key']}: not a PEM"),
        ({"client_ca": files["server_key"]}, f"{files['server_key']}: not a PEM bundle"),
        ({"client_ca": missing}, f"No such file or directory: {missing}"),
    ):
        with pytest.raises((OSError, ConfigError, SignerError)) as err:
            make_ssl_context(_tls(files, **changed))
        assert _safe_error(err.value).startswith(said), (changed, _safe_error(err.value))


def test_a_tls_key_others_may_read_is_refused(tmp_path: Path) -> None:
    files = _pki(tmp_path)
    files["server_key"].chmod(0o640)
    with pytest.raises(SignerError, match=r"server\.key: the key file's mode 0640"):
        make_ssl_context(_tls(files))


# --- reload: the verdict (responder reload), what a worker runs, signals ----------------


def _reload(pid: int, timeout: float = 30) -> tuple[int, str, str]:
    """`responder reload --pid PID` as the units' ExecReload runs it: exit code, out, err."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "responder", "reload", "--pid", str(pid),
         "--timeout", str(timeout)],
        check=False, capture_output=True, text=True, timeout=timeout + 30,
    )  # fmt: skip
    return out.returncode, out.stdout, out.stderr


def _post_300(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n" + b"a" * 300)
        return ReplyReader(sock).read_one(timeout=5).status


def test_responder_reload_says_in_force_only_once_every_worker_runs_it(tmp_path: Path) -> None:
    """``systemctl reload`` ran ``kill -HUP`` and said success whatever came of it. The units'
    ExecReload is `responder reload --pid $MAINPID` now: it exits 0 once every worker
    confirmed the new configuration, and names what changed but needs a restart."""
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        assert _post_300(server.port) == 200
        write_config(tmp_path / "r.toml", {"port": 1, "workers": 2},
                     {**LIMITS, "max_body_bytes": 200})  # fmt: skip
        code, out, err = _reload(server.pid)
        assert code == 0, err
        assert out == "reloaded: generation 1, 2 workers\n"
        assert "applied at the next restart only: port" in err
        assert len(list(tmp_path.glob("reload-*"))) == 2  # both workers, before the verdict
        assert _post_300(server.port) == 413
        events = [e["event"] for e in server.events()]
        assert "reload_done" in events


def test_responder_reload_fails_with_the_reason_when_the_file_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        config.write_text(config.read_text() + "\n[server.nonsense]\nx = 1\n")
        code, out, err = _reload(server.pid)
        assert code == 1 and out == ""
        assert "refused, the running configuration kept" in err and "r.toml" in err, err
        assert not list(tmp_path.glob("reload-*"))
        assert _info(server.port)["reloads"] == 0
        # fixed, the next one is taken
        write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
        assert _reload(server.pid)[0] == 0


def test_responder_reload_fails_when_a_worker_could_not_apply_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 2}, LIMITS)
    env = {"JPKI_TEST_FAIL_RELOAD": "1"}
    with ServerProcess(tmp_path, config, env=env).start() as server:
        code, _, err = _reload(server.pid)
        assert code == 1
        assert "worker 1: the app's reload failed (RuntimeError)" in err, err


def test_responder_reload_of_no_master_or_not_ours_fails(tmp_path: Path) -> None:
    """No master at that pid; a process holding the name of another pid's socket (taken
    before that master started) is not taken for it."""
    from responder.reloadctl import ReloadError, control_address, request

    with pytest.raises(ReloadError, match="no responder master with pid"):
        request(2**22 + 7, 2)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        squatter.bind(control_address(2**22 + 8))
        squatter.listen(1)
        with pytest.raises(ReloadError, match=f"held by pid {os.getpid()}"):
            request(2**22 + 8, 2)
    finally:
        squatter.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another account")
def test_a_reload_request_from_another_account_is_not_served(tmp_path: Path) -> None:
    """As a SIGHUP from another account would fail: the connection is closed unanswered."""
    import subprocess
    import sys

    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
    with ServerProcess(tmp_path, config).start() as server:
        probe = (
            "import os\nfrom responder.reloadctl import request, ReloadError\n"
            "os.setgid(65534); os.setuid(65534)\n"
            f"try:\n    request({server.pid}, 5)\nexcept ReloadError as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert "closed without a verdict" in out.stdout, out.stdout + out.stderr
        assert "reload_request_refused" in server.stderr()
        assert _info(server.port)["reloads"] == 0


def test_a_worker_starting_during_a_reload_runs_what_the_master_accepted(tmp_path: Path) -> None:
    """A worker forked before a reload and still making its app ignored the SIGHUP sent
    meanwhile (its loop did not handle it yet) and then served the configuration before for
    as long as it lived. The master sends what it accepted on the worker's own socket: the
    worker finds it there and applies it before serving."""
    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
    env = {"JPKI_TEST_SLOW_START": "2"}
    with ServerProcess(tmp_path, config, env=env).start() as server:
        (first,) = children(server.pid)
        os.kill(first, signal.SIGKILL)
        until(lambda: [p for p in children(server.pid) if p != first], what="a new worker")
        time.sleep(0.3)  # forked, making its app (2 s)
        assert not list(tmp_path.glob(f"started-0-{children(server.pid)[0]}"))
        write_config(tmp_path / "r.toml", {"port": 0, "workers": 1},
                     {**LIMITS, "max_body_bytes": 200})  # fmt: skip
        server.signal(signal.SIGHUP)
        until(lambda: sum(e["event"] == "worker_ready" for e in server.events()) == 2,
              timeout=15, what="the new worker ready")  # fmt: skip
        assert _post_300(server.port) == 413


def test_sigterm_during_a_reload_answers_the_waiting_reload_at_once(tmp_path: Path) -> None:
    """A reload waiting for a worker (its app slow to reload) when SIGTERM comes: the
    waiting `responder reload` is told the responder is stopping (exit 1), not left to
    time out, and the master drains and exits 0."""
    import subprocess
    import sys

    config = write_config(tmp_path / "r.toml", {"port": 0, "workers": 1}, LIMITS)
    with ServerProcess(tmp_path, config, env={"JPKI_TEST_RELOAD_SLEEP": "10"}).start() as server:
        started = time.monotonic()
        waiting = subprocess.Popen(
            [sys.executable, "-m", "responder", "reload", "--pid", str(server.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            until(lambda: "master_reload" in server.stderr(), what="the reload begun")
            server.signal(signal.SIGTERM)
            _, err = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        assert waiting.returncode == 1 and "stopping" in err, err
        assert time.monotonic() - started < 10  # before the worker's reload ended
        assert server.wait(30) == 0


def test_a_storm_of_sighups_is_one_reload_per_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SIGHUP taken in one turn of the master's loop made a reload of its own: the file
    read, the TLS chain loaded and every worker told, as many times. One reload per turn."""
    import io

    from responder import server as srv
    from responder.config import ResponderConfig

    reads: list[int] = []

    def load() -> ResponderConfig:
        reads.append(1)
        return ResponderConfig()

    monkeypatch.setattr(srv, "_event", lambda *a, **k: None)
    master = srv._Master(ResponderConfig(), lambda c, i: None, None, load, io.StringIO())  # type: ignore[arg-type,return-value]
    for _ in range(50):
        master._on_signal(signal.SIGHUP, None)
    signals, master.pending_signals = master.pending_signals, []
    master._on_master_signals(signals, [])
    assert len(reads) == 1 and master.generation == 1
