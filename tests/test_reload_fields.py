"""What a reload (SIGHUP) does not apply is named by `reload_needs_restart`
(`responder.server.restart_fields`): docs/operations.md, "The units", says hosts, port,
workers, ``[metrics]``, ``[store]``, the client-certificate check, the ledger's directory
and the sections the routes and streams are made with need a restart, and "Signing
fairness" and "Where fresh signatures are made" that ``[ocsp] sign_threads`` and
``signing`` do."""

from __future__ import annotations

import io
import logging
import socket
import ssl
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from responder import server
from responder.app import JpkiApp
from responder.config import ResponderConfig, ServerConfig, TlsConfig, load_config
from responder.server import (
    RELOADED,
    _changed,
    _Worker,
    configure_logging,
    reloaded,
    restart_fields,
)
from responder.v1 import changes
from tests.conftest import Built
from tests.support.pki import make_ca


def _with(tmp_path: Path, toml: str) -> ResponderConfig:
    path = tmp_path / "r.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, {}, environ={})


def test_nothing_changed_names_nothing() -> None:
    assert restart_fields(ResponderConfig(), ResponderConfig()) == []


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[server]\nport = 9000\n", "port"),
        ("[server]\nworkers = 3\n", "workers"),
        ("[metrics]\nport = 9999\n", "metrics.port"),
        ("[metrics]\nrender_interval = 2.0\n", "metrics.render_interval"),
        ("[metrics]\nflush_interval = 2.0\n", "metrics.flush_interval"),
        ("[metrics]\nmax_connections = 4\n", "metrics.max_connections"),
        ("[store]\npki = 'other/pki'\n", "store.pki"),
        ("[ocsp]\nsign_threads = 4\n", "ocsp.sign_threads"),
        ("[ocsp]\nsigning = 'loop'\n", "ocsp.signing"),
        ("[watch]\nscan_limit = 5\n", "watch.scan_limit"),
        ("[watch]\nmax_per_party = 5\n", "watch.max_per_party"),
        ("[watch]\nreplication_wait_seconds = 5\n", "watch.replication_wait_seconds"),
    ],
)
def test_a_field_a_reload_does_not_apply_is_named(tmp_path: Path, toml: str, named: str) -> None:
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == [named]


@pytest.mark.parametrize(
    "toml",
    [
        "[ocsp]\nsign_queue_per_party = 8\nmax_certids = 4\n",
        "[server.limits]\nheader_timeout = 2\n",
        "[log]\naccess_log = 'all'\n",
        "[ledger]\ncollect_interval = 5\n",
        "[watch]\nunbound_cursors = false\nready_requires_replication = true\n",
    ],
)
def test_what_a_reload_applies_is_not_named(tmp_path: Path, toml: str) -> None:
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == []


@pytest.mark.real_clock  # the ledger flusher's timed wait hangs under libfaketime
def test_a_reload_ends_the_unbound_cursor_transition(built: Built, tmp_path: Path) -> None:
    """docs/operations.md ("The changes feed's watch lists") says: turn ``[watch]
    unbound_cursors`` off and reload. The feed's env is made once per worker, so the reload
    must reach it (it did not: the cursors were still read until a restart)."""
    cfg = built.app_config(tmp_path)
    a = JpkiApp(cfg, 0)
    try:
        assert a.v1 is not None
        env = a.v1.env(changes.CHANGES_ROUTE.path)
        assert isinstance(env, changes.WatchEnv) and env.config.unbound_cursors
        off = msgspec.structs.replace(
            cfg, watch=msgspec.structs.replace(cfg.watch, unbound_cursors=False)
        )
        assert restart_fields(cfg, off) == []
        a.reload(off)
        assert env.config == off.watch
        a.reload(cfg)
        assert env.config.unbound_cursors
    finally:
        a.close()


_TLS = TlsConfig(cert=Path("tls/cert.pem"), key=Path("tls/key.pem"))


@pytest.mark.parametrize(
    ("new", "named"),
    [
        (TlsConfig(cert=_TLS.cert, key=_TLS.key, client_ca=Path("ca.pem"), client_cert="required"),
         ["tls.client_ca", "tls.client_cert"]),
        (TlsConfig(cert=_TLS.cert, key=_TLS.key, client_ca=Path("ca.pem"), client_cert="optional"),
         ["tls.client_ca", "tls.client_cert"]),
    ],
)  # fmt: skip
def test_the_client_certificate_check_is_named(new: TlsConfig, named: list[str]) -> None:
    """The TLS context's verify mode and client CAs are set when the worker starts; a
    reload only loads the server's certificate chain again (`load_chain`). Turning
    ``client_cert = "required"`` on with a SIGHUP left every party unauthenticated, unsaid."""
    old = ResponderConfig(server=ServerConfig(tls=_TLS))
    assert restart_fields(old, ResponderConfig(server=ServerConfig(tls=new))) == named


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[server]\nreuseport = false\n", "reuseport"),
        ("[store]\npath = 'other/store'\n", "store.path"),
        ("[store]\ncrl_dir = 'other/crl'\n", "store.crl_dir"),
        ("[store]\nfacts_key_file = 'other/facts.key'\n", "store.facts_key_file"),
        ("[ledger]\ndir = 'other/ledger'\n", "ledger.dir"),
    ],
)
def test_what_a_worker_opens_at_start_is_named(tmp_path: Path, toml: str, named: str) -> None:
    """The sockets (bound by the master with SO_REUSEPORT or not), the store, the CRL
    directory, the facts key and the ledger are opened once per worker: `app.reload` opens
    none of them again (a changed ledger.dir would have its collector read a directory the
    writers do not write)."""
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == [named]


def test_a_server_certificate_renewed_in_place_is_applied() -> None:
    """The chain is loaded again on SIGHUP (`load_chain`): new files are not named."""
    new = TlsConfig(cert=Path("tls/cert-2027.pem"), key=Path("tls/key-2027.pem"))
    old = ResponderConfig(server=ServerConfig(tls=_TLS))
    assert restart_fields(old, ResponderConfig(server=ServerConfig(tls=new))) == []


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[group]\nunlisted = 'unknown'\n", "group.unlisted"),
        ("[v1]\nverify_max_document_bytes = 1024\n", "v1.verify_max_document_bytes"),
        ("[token]\nrequest_dir = 'other/requests'\n", "token.request_dir"),
        ("[watch]\nscan_limit = 10\n", "watch.scan_limit"),
        ("[cluster]\nmax_lag = 10\n", "cluster.max_lag"),
    ],
)
def test_what_a_route_or_stream_reads_at_start_is_named(
    tmp_path: Path, toml: str, named: str
) -> None:
    """The /v1 routes' environments (status, verify, token, the changes feed's watch lists),
    the group's setup and the streams of several nodes are made once per worker
    (`V1Api(...)`'s ``setup(config)``): a reload does not make them again."""
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == [named]


@pytest.mark.parametrize(
    "toml",
    ["[cluster]\nnodes = 3\n", "[watch]\nready_requires_replication = true\n"],
)
def test_what_a_reload_applies_to_several_nodes_is_not_named(tmp_path: Path, toml: str) -> None:
    """A node's share of the quotas (`LimitsTable.nodes`) follows a reload, as "Add a node"
    says; readiness reads ``ready_requires_replication`` at each probe."""
    assert restart_fields(ResponderConfig(), _with(tmp_path, toml)) == []


def test_a_reload_applies_the_log_level(tmp_path: Path) -> None:
    """docs/operations.md, "The units": a reload applies ``[log]``. Its ``level`` was set
    once, at `responder serve`'s start: a SIGHUP to ``debug`` left the workers at ``info``."""
    loggers = [logging.getLogger(n) for n in ("responder", "crlbuilder.keys")]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    try:
        configure_logging("info", io.StringIO())
        new = _with(tmp_path, "[log]\nlevel = 'debug'\n")
        worker = _Worker(0, ResponderConfig(), [], _no_app, None, -1)
        assert worker.apply(new) is None
        assert [lg.level for lg in loggers] == [logging.DEBUG, logging.DEBUG]
        assert restart_fields(ResponderConfig(), new) == []
    finally:
        for lg, (level, propagate, handlers) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate, lg.handlers = propagate, handlers


def _no_app(config: ResponderConfig, index: int) -> Any:
    raise AssertionError("a reload makes no app")


def _paths(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
    out = set()
    for f in msgspec.structs.fields(struct):
        out.add(prefix + f.name)
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out |= _paths(f.type, f"{prefix}{f.name}.")
    return out


def test_what_a_reload_applies_names_real_fields() -> None:
    """`RELOADED` names fields and sections of the configuration (a renamed one would be
    named on every reload that changes it, never silently taken as applied)."""
    assert set(RELOADED) <= _paths(ResponderConfig)


class _Later(msgspec.Struct, frozen=True):
    kept: int = 0
    added_later: int = 0


def test_a_field_added_later_is_named_until_a_reload_applies_it() -> None:
    """Deny by default: a field no one taught the reload about is named, not dropped (the
    list of named fields had been written out by hand, and missed a dozen)."""
    assert _changed(_Later(), _Later(added_later=1), "") == ["added_later"]
    assert _changed(_Later(), _Later(), "") == []


# --- what a reload puts in force --------------------------------------------------------


def test_a_reload_keeps_what_needs_a_restart_as_it_runs(tmp_path: Path) -> None:
    """`reloaded`: the fields a reload applies are the new file's, every other one stays as
    the processes started (they are named by ``reload_needs_restart`` and wait for it)."""
    running = ResponderConfig()
    new = _with(tmp_path, "[server]\nport = 9000\n[server.limits]\nheader_timeout = 2\n"
                "[ledger]\ndir = 'other/ledger'\ncollect_interval = 5\n"
                "[cluster]\nmax_lag = 10\nnodes = 3\n[log]\nlevel = 'debug'\n")  # fmt: skip
    got = reloaded(running, new)
    assert restart_fields(running, new) == ["port", "ledger.dir", "cluster.max_lag"]
    assert restart_fields(running, got) == []  # nothing of those in force
    assert (got.server.port, got.ledger.dir, got.cluster.max_lag) == (
        running.server.port, running.ledger.dir, running.cluster.max_lag,
    )  # fmt: skip
    assert got.server.limits == new.server.limits and got.log == new.log
    assert (got.ledger.collect_interval, got.cluster.nodes) == (5, 3)
    assert reloaded(running, running) is running
    # TLS turned on by a reload is not half-made (a chain without its client check)
    on = ResponderConfig(server=ServerConfig(tls=_TLS))
    assert reloaded(running, on).server.tls == running.server.tls
    assert reloaded(on, running).server.tls == on.server.tls


class _Recorded:
    """`responder.server._event` and `_kill`, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []
        self.signals: list[tuple[int, int]] = []
        monkeypatch.setattr(server, "_event", lambda e, level=0, **f: self.events.append((e, f)))
        monkeypatch.setattr(server, "_kill", lambda pid, sig: self.signals.append((pid, sig)))


def _master(config: ResponderConfig, new: ResponderConfig) -> server._Master:
    master = server._Master(config, _no_app, None, lambda: new, io.StringIO())
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    master.children[4242] = server._Child(0, 0.0, ready=True, control=ours)  # a worker
    _WORKER_ENDS[master] = theirs
    return master


_WORKER_ENDS: dict[server._Master, socket.socket] = {}


def _told(master: server._Master) -> list[ResponderConfig]:
    """The configurations the master sent its worker (4242) since the last call."""
    worker = server._Worker(0, ResponderConfig(), [], _no_app, None, -1,
                            control=_WORKER_ENDS[master])  # fmt: skip
    got = []
    while (message := worker._receive()) is not None:
        got.append(message[1])
    return got


def test_a_worker_the_master_restarts_after_a_reload_runs_what_its_siblings_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master kept the whole new configuration after a reload, so a worker it restarted
    later (a crash) opened the new ledger directory or store while its siblings used the
    old: the counts split between two ledgers, and what the log said "needs a restart" was
    half in force. It keeps `reloaded` now."""
    rec = _Recorded(monkeypatch)
    running = ResponderConfig()
    new = _with(tmp_path, "[ledger]\ndir = 'other/ledger'\ncollect_interval = 5\n"
                "[store]\npath = 'other/store'\n")  # fmt: skip
    master = _master(running, new)
    master._reload([])
    assert master.config.ledger.dir == running.ledger.dir  # what a restarted worker gets
    assert master.config.store.path == running.store.path
    assert master.config.ledger.collect_interval == 5
    assert _told(master) == [master.config]  # and what the running ones are sent
    assert ("reload_needs_restart", {
        "fields_changed": ["store.path", "ledger.dir"], "kept": "running values until a restart",
    }) in rec.events  # fmt: skip


def _tls_pair(tmp_path: Path, cn: str, days: float = 3650) -> tuple[Path, Path]:
    ca = make_ca(cn, days=days)
    cert, key = tmp_path / f"{cn}.pem", tmp_path / f"{cn}.key"
    cert.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(ca.key.private_bytes(serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    key.chmod(0o600)
    return cert, key


def _handshake(server_ctx: ssl.SSLContext) -> str:
    """A TLS handshake in memory against ``server_ctx``: the CN of the certificate it shows."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1])
    srv = server_ctx.wrap_bio(bios[1], bios[0], server_side=True)
    for _ in range(10):
        done = 0
        for side in (client, srv):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            break
    der = client.getpeercert(binary_form=True)
    assert der is not None
    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value)


def test_a_tls_chain_that_does_not_load_on_reload_leaves_the_serving_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload naming a certificate and a key that do not match (a renewal half copied):
    loading them into the serving context failed after the certificate was taken and took
    the key away, so every handshake failed from then on (the log said only
    ``tls_reload_failed``, then ``worker_reloaded``). The chain is loaded aside first; the
    worker keeps serving with the old one, and the master does not pass such a reload on."""
    rec = _Recorded(monkeypatch)
    monkeypatch.setattr(server, "configure_logging", lambda level, stream=None: None)
    one, two = _tls_pair(tmp_path, "one"), _tls_pair(tmp_path, "two")
    running = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=one[0], key=one[1])))
    mixed = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=two[0], key=one[1])))
    live = server.make_ssl_context(running.server.tls)
    worker = _Worker(0, running, [], _no_app, None, -1)
    worker.ssl_context = live
    assert "worker 0" in (worker.apply(mixed) or "")
    assert _handshake(live) == "one"
    assert worker.config == running
    assert [e for e, _ in rec.events] == ["reload_failed"]
    master = _master(running, mixed)
    master._reload([])
    assert master.config == running and _told(master) == []  # the workers are not told
    assert [e for e, _ in rec.events] == ["reload_failed", "reload_failed"]
    # a renewal whose files match is taken
    renewed = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=two[0], key=two[1])))
    assert worker.apply(renewed) is None
    assert _handshake(live) == "two"
    master.reload_config = lambda: renewed
    master._reload([])
    assert _told(master) == [renewed]


class _TlsApp:
    """An app that only records the TLS chains the worker says it put in force."""

    def __init__(self) -> None:
        self.loaded: list[datetime | None] = []

    def tls_loaded(self, not_after: datetime | None) -> None:
        self.loaded.append(not_after)


def test_the_app_is_told_the_notafter_of_the_chain_in_force_and_only_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`responder.tlsgauges`: the gauge says when the certificate being served ends. The
    worker tells the app at its start and at each reload that put a chain in force; a reload
    whose chain does not load tells nothing (the old certificate is still served), a renewal
    tells the new notAfter, and a chain cryptography cannot read is said unread (None, the
    log says so) without refusing what OpenSSL loads."""
    rec = _Recorded(monkeypatch)
    monkeypatch.setattr(server, "configure_logging", lambda level, stream=None: None)
    one, two = _tls_pair(tmp_path, "one", days=30), _tls_pair(tmp_path, "two", days=400)
    running = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=one[0], key=one[1])))
    ctx, not_after = server.server_context(running.server.tls)
    assert not_after == x509.load_pem_x509_certificate(one[0].read_bytes()).not_valid_after_utc
    worker = _Worker(0, running, [], _no_app, None, -1)
    worker.app = app = _TlsApp()  # type: ignore[assignment]
    worker.ssl_context = ctx
    mixed = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=two[0], key=one[1])))
    assert worker.apply(mixed) is not None
    assert app.loaded == []
    renewed = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=two[0], key=two[1])))
    assert worker.apply(renewed) is None
    end = x509.load_pem_x509_certificate(two[0].read_bytes()).not_valid_after_utc
    assert app.loaded == [end] and end - not_after > timedelta(days=300)
    # a chain OpenSSL loads and cryptography would not read: loaded all the same
    monkeypatch.setattr(server, "chain_not_after", lambda pem: None)
    assert worker.apply(renewed) is None
    assert _handshake(ctx) == "two"
    assert app.loaded == [end, None]
    assert "tls_not_after_unread" in [e for e, _ in rec.events]


def test_a_worker_slow_to_confirm_gets_one_message_then_the_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reloads one after the other (a script sending SIGHUP in a loop) while a worker does
    not read (its loop busy): each was sent, the worker's socket filled (49 configurations)
    and the master stopped the worker. Now a worker has at most one configuration on its
    way; the reloads made meanwhile are sent as one, the latest, on its confirmation, and
    every reload's verdict waits for it."""
    _Recorded(monkeypatch)
    monkeypatch.setattr(server, "configure_logging", lambda level, stream=None: None)
    running = ResponderConfig()
    versions = [ResponderConfig(log=msgspec.structs.replace(running.log, level=level))
                for level in ("debug", "warning", "error")] * 20  # fmt: skip
    master = _master(running, running)
    feed = iter(versions)
    master.reload_config = lambda: next(feed)
    for _ in range(60):
        master._reload([])
    worker = server._Worker(0, running, [], _no_app, None, -1, control=_WORKER_ENDS[master])
    got = worker._receive()
    assert got is not None and got[0] == 1 and worker._receive() is None  # one, not 60
    assert len(master.pending) == 60
    worker._confirm(got[0], None)
    master._on_confirmations(4242)
    master._settle()
    assert len(master.pending) == 59  # the first reload confirmed
    latest = worker._receive()
    assert latest is not None and latest[0] == 60 and latest[1] == master.config
    worker._confirm(latest[0], None)
    master._on_confirmations(4242)
    master._settle()
    assert master.pending == [] and master.children[4242].control is not None  # not stopped


@pytest.mark.integration  # a real child for the master to reap
def test_a_worker_dying_young_for_hours_does_not_stop_the_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restart backoff was ``0.1 * 2 ** (failures - 1)``: past 1,024 deaths in a row (a
    worker that cannot start, restarted every 10 s: under three hours) the float overflowed
    and the master died of it, every worker with it. The backoff stays at its bound."""
    import subprocess

    _Recorded(monkeypatch)
    master = server._Master(ResponderConfig(), _no_app, None, None, io.StringIO())
    master.announced = True
    child = subprocess.Popen(["true"])
    pid = child.pid
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # exited, not yet reaped
    master.children[pid] = server._Child(0, time.monotonic())
    master.failures[0] = 1100
    master._reap()
    child.returncode = 0  # reaped by the master
    assert 0 in master.restart_at
    assert master.restart_at[0] - time.monotonic() <= server.MAX_BACKOFF
    assert master.failures[0] == 1101


@pytest.mark.parametrize("which", ["cert", "key"])
def test_a_tls_file_replaced_by_a_named_pipe_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """The master loads the TLS chain of a new configuration in its supervising loop: a
    certificate replaced by a symbolic link to a named pipe (OpenSSL opens it itself), or
    a key replaced by a pipe, held the master in open() for ever (no worker restarted, no
    SIGTERM handled). Refused at once, the running configuration kept, the workers not told."""
    import os
    import threading

    rec = _Recorded(monkeypatch)
    monkeypatch.setattr(server, "configure_logging", lambda level, stream=None: None)
    cert, key = _tls_pair(tmp_path, "one")
    running = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=cert, key=key)))
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe, 0o600)
    if which == "cert":
        bad = tmp_path / "renewed.pem"
        bad.symlink_to(pipe)
        new = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=bad, key=key)))
    else:
        new = ResponderConfig(server=ServerConfig(tls=TlsConfig(cert=cert, key=pipe)))
    master = _master(running, new)
    done = threading.Event()
    threading.Thread(target=lambda: (master._reload([]), done.set()), daemon=True).start()
    finished = done.wait(5)
    if not finished:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # release the reader
    assert finished, "the reload still blocked after 5 s"
    assert master.config == running and _told(master) == []
    failed = [f for e, f in rec.events if e == "reload_failed"]
    assert failed and "regular file" in str(failed[0]["error"]), rec.events
