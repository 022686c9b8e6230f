"""The registry shared by several nodes in a JetStream key-value bucket (`responder.registry.shared`).

On a real three-server cluster on loopback: a change made on one node (with ``--nats``) reaches
another node's file through `responder registry sync --follow`, audited there (its hash chain
and the file agree: `verify-audit` holds on both nodes); a suspension made on one node is the
state of the party on the other; a change made from a stale revision is refused and writes
nothing anywhere.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from crlbuilder.manifest import Manifest
from responder.cli import main as responder_main
from responder.registry.lookup import Registry
from responder.registry.shared import CHECK_EVERY, Conflict, Shared, SharedRegistry
from responder.registry.syncstamp import RegistrySyncCollector, synced_at
from tests.support import procs
from tests.support.nats import NatsCluster, free_ports, nats_server
from tests.support.wait import until

pytestmark = [pytest.mark.integration, pytest.mark.real_clock]

PARTY = "sig-verifier"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def registry(*args: str, check: bool = True) -> Ran:
    """``responder registry ARGS`` in this process (the command's own code, without the cost of
    starting Python again); its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = responder_main(["registry", *args])
    ran = Ran(rc, out.getvalue(), err.getvalue())
    assert rc == 0 or not check, ran
    return ran


def state(path: Path, party: str) -> str:
    return Registry.load(path).parties[party].state(time.time()).value


def test_suspension_on_one_node_holds_on_the_other_audited_on_both(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    nats = ["--nats", cluster.source, "--bucket", "REG_T1"]
    # the first shared change: node a's registry goes to the bucket (compare-and-set on none)
    registry("update", "--registry", str(a), "--id", PARTY, "--office", "Tokyo 2", *nats)
    with procs.started(
        [sys.executable, "-m", "responder.cli", "registry", "sync", "--registry", str(b),
         "--follow", *nats],
        log=tmp_path / "sync.log", sig=signal.SIGTERM,
    ):  # fmt: skip
        until(lambda: b.exists() and b.read_bytes() == a.read_bytes(), 20, "b replicated a")
        assert state(b, PARTY) != "suspended"
        registry("suspend", "--registry", str(a), "--id", PARTY, "--article", "Act §18(6)(1)",
                 "--reason", "test", *nats)  # fmt: skip
        assert state(a, PARTY) == "suspended"
        until(lambda: state(b, PARTY) == "suspended", 20, "the suspension on node b")
    for node in (a, b):  # each node's audit accounts for its file
        out = registry("verify-audit", "--registry", str(node))
        assert "intact" in out.stdout
    assert "replicate" in (b.with_name("registry.audit.jsonl")).read_text()


def test_a_change_from_a_stale_revision_is_refused_and_writes_nothing(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    a = tmp_path / "registry.toml"
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    nats = ["--nats", cluster.source, "--bucket", "REG_T2"]
    registry("update", "--registry", str(a), "--id", PARTY, "--office", "Osaka", *nats)
    shared = SharedRegistry(cluster.source, "REG_T2")
    try:
        first = shared.get()
        assert first is not None and first.data == a.read_bytes()
        shared.put(first.data.replace(b"Osaka", b"Kobe"), first.revision)  # another node
        with pytest.raises(Conflict):  # a third node that read the first revision
            shared.put(first.data.replace(b"Osaka", b"Nara"), first.revision)
        now = shared.get()
        assert now is not None and b"Kobe" in now.data and b"Nara" not in now.data
    finally:
        shared.close()
    # node a's next change starts from the bucket's newest registry, not its own file
    registry("update", "--registry", str(a), "--id", "auth-verifier", "--office", "Sendai", *nats)
    text = a.read_text()
    assert "Kobe" in text and "Sendai" in text
    assert "intact" in registry("verify-audit", "--registry", str(a)).stdout


def test_a_shared_registry_that_does_not_load_is_not_taken(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    a = tmp_path / "registry.toml"
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    before = a.read_bytes()
    shared = SharedRegistry(cluster.source, "REG_T3")
    try:
        shared.put(b"[[party]]\nid = 'broken'\n", 0)
    finally:
        shared.close()
    out = registry("sync", "--registry", str(a), "--nats", cluster.source, "--bucket", "REG_T3",
                   check=False)  # fmt: skip
    assert out.returncode == 2 and "does not load here" in out.stderr
    assert a.read_bytes() == before


def test_a_write_whose_acknowledgement_was_lost_is_not_taken_for_a_conflict(
    cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load (a cluster test's full-suite run) a bucket's answer can come after nats-py's
    5 s: a read is made again, and a write is made again unless the first landed, which the
    retry recognises (the bucket moved on to this very registry) instead of refusing it as
    another node's change. A write that truly lost to another node is still a `Conflict`."""
    import nats.errors

    shared = SharedRegistry(cluster.source, "REG_T5")
    kv = shared.kv
    real_get, real_update = kv.get, kv.update
    lost: list[str] = []

    async def get(key: str, *a: object, **k: object) -> object:
        if not lost:  # the first read times out once
            lost.append("get")
            raise nats.errors.TimeoutError
        return await real_get(key)

    async def update(key: str, value: bytes, last: int | None = None) -> int:
        revision = await real_update(key, value, last=last)
        if lost == ["get"]:  # the write lands, its acknowledgement does not come back
            lost.append("update")
            raise nats.errors.TimeoutError
        return revision

    try:
        first = shared.put(b"one", 0)
        monkeypatch.setattr(kv, "get", get)
        monkeypatch.setattr(kv, "update", update)
        got = shared.get()
        assert got == Shared(first, b"one") and lost == ["get"]
        second = shared.put(b"two", first)
        assert lost == ["get", "update"] and second > first
        assert shared.get() == Shared(second, b"two")
        with pytest.raises(Conflict):  # from a revision the bucket has left: refused
            shared.put(b"three", first)
        assert shared.get() == Shared(second, b"two")
    finally:
        shared.close()


def test_a_watch_that_died_does_not_stop_replication(cluster: NatsCluster) -> None:
    """nats-py recreates the watch's consumer when a server goes, and when that fails (the
    cluster electing a leader) it only reports it: the watch then delivers nothing, ever.
    `next` reads the key itself every few seconds, so the follower still gets the change,
    once."""
    follower = SharedRegistry(cluster.source, "REG_T4")
    writer = SharedRegistry(cluster.source, "REG_T4")

    def following(seconds: float) -> list[Shared]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (s := follower.next(0.2)) is not None:
                got.append(s)
        return got

    try:
        first = writer.put(b"one", 0)
        assert following(1.0) == [Shared(first, b"one")]
        watch = follower._watcher
        assert watch is not None
        # the state nats-py leaves it in: its subscription delivers nothing, nothing says so
        follower.cluster.run(watch._sub.unsubscribe())  # type: ignore[attr-defined]
        second = writer.put(b"two", first)
        assert following(CHECK_EVERY + 2.0) == [Shared(second, b"two")]
        third = writer.put(b"three", second)  # and the watch started again carries on
        assert following(1.0) == [Shared(third, b"three")]
    finally:
        follower.close()
        writer.close()


def test_a_revision_that_did_not_load_here_is_taken_once_it_does(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A revision naming a certificate file this node lacks does not load here (the sync says
    so and keeps its file). It was never tried again: once the operator copied the file in, the
    node kept its old registry, a party suspended on node a still served on node b, until some
    later change came. `sync --follow` tries such a revision again until it loads."""
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    nats = ["--nats", cluster.source, "--bucket", "REG_RETRY"]
    registry("update", "--registry", str(a), "--id", PARTY, "--office", "Tokyo 2", *nats)
    log = tmp_path / "sync.log"
    with procs.started(
        [sys.executable, "-m", "responder.cli", "registry", "sync", "--registry", str(b),
         "--follow", *nats],
        log=log, sig=signal.SIGTERM,
    ) as p:  # fmt: skip
        until(lambda: b.exists() and b.read_bytes() == a.read_bytes(), 20, "b replicated a")
        # node a's party certificate kept beside its registry (a path relative to it), then
        # the party suspended there; node b has no such file yet
        pem = demo_pki[0] / "parties" / f"{PARTY}.pem"
        (a.parent / "parties").mkdir()
        shutil.copy(pem, a.parent / "parties" / pem.name)
        shared = SharedRegistry(cluster.source, "REG_RETRY")
        try:
            now = shared.get()
            assert now is not None
            shared.put(now.data.replace(f'"{pem}"'.encode(), f'"parties/{pem.name}"'.encode()),
                       now.revision)  # fmt: skip
        finally:
            shared.close()
        registry("suspend", "--registry", str(a), "--id", PARTY, "--article", "Act §18(6)(1)",
                 "--reason", "test", *nats)  # fmt: skip
        assert state(a, PARTY) == "suspended"
        until(lambda: "does not load here" in log.read_text(), 20, "the sync's refusal")
        assert state(b, PARTY) != "suspended"  # kept what it had
        # the operator copies the certificate to node b: no further change is made
        (b.parent / "parties").mkdir()
        shutil.copy(pem, b.parent / "parties" / pem.name)
        until(lambda: b.read_bytes() == a.read_bytes(), 20, "b took the revision once it loads")
        assert state(b, PARTY) == "suspended"
        assert p.poll() is None
    assert "intact" in registry("verify-audit", "--registry", str(b)).stdout


def test_the_sync_stamps_when_its_file_holds_the_newest_revision_and_not_while_behind(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """Nothing on a node said that its registry sync had stopped taking changes (stopped,
    failing at every start, cut off, or holding a revision that does not load here): the node
    served its old registry, a suspension made elsewhere not held, without an alert. The sync
    stamps each confirmation that its file is the bucket's newest; the responder exports it
    (jpkiva_registry_synced_timestamp_seconds, JpkiVaRegistrySyncStale)."""
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    nats = ["--nats", cluster.source, "--bucket", "REG_STAMP"]
    registry("update", "--registry", str(a), "--id", PARTY, "--office", "Tokyo 2", *nats)
    log = tmp_path / "sync.log"
    gauge = RegistrySyncCollector(b)
    assert [m.samples[0].value for m in gauge.collect()] == [0.0]  # never
    t0 = time.time()
    with procs.started(
        [sys.executable, "-m", "responder.cli", "registry", "sync", "--registry", str(b),
         "--follow", *nats],
        log=log, sig=signal.SIGTERM,
    ):  # fmt: skip
        until(lambda: synced_at(b) >= t0, 20, "the sync's first stamp")
        assert b.read_bytes() == a.read_bytes()
        first = synced_at(b)
        until(lambda: synced_at(b) > first, CHECK_EVERY * 4, "the stamp renewed while quiet")
        # a revision that does not load here: the file is behind, the stamp stops
        shared = SharedRegistry(cluster.source, "REG_STAMP")
        try:
            now = shared.get()
            assert now is not None
            shared.put(now.data.replace(b"version = 2", b"version = 2\n[[party]]\nid = 'x'"),
                       now.revision)  # fmt: skip
        finally:
            shared.close()
        until(lambda: "does not load here" in log.read_text(), 20, "the sync's refusal")
        behind = synced_at(b)
        time.sleep(CHECK_EVERY * 2 + 1)
        assert synced_at(b) == behind
        assert [m.samples[0].value for m in gauge.collect()] == [behind]


# ---------------------------------------------------------------------------
# No NATS server answers at the start
# ---------------------------------------------------------------------------


def sync_args(registry_file: Path, source: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "responder.cli", "registry", "sync", "--registry",
            str(registry_file), "--nats", source, "--bucket", "REG_EARLY", *more]  # fmt: skip


def waiting(log: Path, port: int) -> bool:
    return any(
        line.startswith("responder registry sync: cannot connect to NATS at "
                        f"nats://127.0.0.1:{port}") and "trying again in 1 s" in line
        for line in log.read_text(errors="replace").splitlines()
    )  # fmt: skip


def test_sync_follow_started_before_its_nats_server_waits_for_it(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    (port,) = free_ports(1)
    source = f"nats://127.0.0.1:{port}"
    log = tmp_path / "sync.log"
    with procs.started(sync_args(b, source, "--follow"), log=log) as p:
        until(lambda: waiting(log, port) or p.poll() is not None, 30, "the sync's warning")
        assert p.poll() is None, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
        with nats_server(tmp_path / "late-server", port):
            registry("update", "--registry", str(a), "--id", PARTY, "--office", "Kyoto",
                     "--nats", source, "--bucket", "REG_EARLY")  # fmt: skip
            until(lambda: b.exists() and b.read_bytes() == a.read_bytes(), 20, "b replicated a")
            assert procs.stop(p, signal.SIGTERM, 15) == 0, log.read_text()[-2000:]
    assert "intact" in registry("verify-audit", "--registry", str(b)).stdout


def test_sync_follow_stopped_while_waiting_for_its_nats_server_exits_0_promptly(
    tmp_path: Path,
) -> None:
    b = tmp_path / "registry.toml"
    (port,) = free_ports(1)
    log = tmp_path / "sync.log"
    with procs.started(sync_args(b, f"nats://127.0.0.1:{port}", "--follow"), log=log) as p:
        until(lambda: waiting(log, port) or p.poll() is not None, 30, "the sync's warning")
        assert p.poll() is None, log.read_text()[-2000:]
        t0 = time.monotonic()
        assert procs.stop(p, signal.SIGTERM, 5) == 0, log.read_text()[-2000:]
        assert time.monotonic() - t0 < 2
    assert not b.exists()  # nothing read, nothing written


@pytest.mark.parametrize(
    ("source", "follow", "says"),
    [
        ("unreachable", False, "cannot reach the shared registry: cannot connect to NATS at"),
        ("http://127.0.0.1:1", True, "a record source is nats://HOST:PORT"),  # no waiting
        ("nats://127.0.0.1", True, "a NATS server is nats://HOST:PORT"),
    ],
)
def test_sync_fails_at_once_without_follow_or_with_an_address_that_is_none(
    tmp_path: Path, source: str, follow: bool, says: str
) -> None:
    if source == "unreachable":
        source = f"nats://127.0.0.1:{free_ports(1)[0]}"
    b = tmp_path / "registry.toml"
    t0 = time.monotonic()
    out = subprocess.run(sync_args(b, source, *(["--follow"] if follow else [])),
                         check=False, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("responder registry sync: error: ") and says in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 20
    assert not b.exists()


def test_a_principal_reaches_another_node_only_with_its_contractor(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """Delegation (Ord §29, §60) over the shared registry: the bucket holds whole files, each
    checked before it is put, so a principal is never on a node without the contractor entry
    it rests on. A contractor certified on node a's file alone (no ``--nats``) is not what a
    shared change starts from: the principal is refused there, nothing written anywhere; once
    the certification is shared, principal and contractor reach node b in one revision."""
    a, b = tmp_path / "a" / "registry.toml", tmp_path / "b" / "registry.toml"
    a.parent.mkdir()
    b.parent.mkdir()
    registry("init", "--pki", str(demo_pki[0]), "--out", str(a))
    nats = ["--nats", cluster.source, "--bucket", "REG_T9"]
    registry("update", "--registry", str(a), "--id", "auth-verifier", "--office", "x", *nats)
    certify = ["update", "--registry", str(a), "--id", "both-verifier", "--category", "6",
               "--certified-until", "2099-12-31"]  # fmt: skip
    registry(*certify)  # node a's file only
    add = ["add", "--registry", str(a), "--id", "city-1", "--name", "テスト市", "--address",
           "どこか", "--office", "どこか", "--start", "2024-04-01", "--title",
           "signature-verifier", "--category", "6", "--delegated-to", "both-verifier",
           "--new-token", *nats]  # fmt: skip
    shared = SharedRegistry(cluster.source, "REG_T9")
    try:
        first = shared.get()
        assert first is not None
        out = registry(*add, check=False)
        assert out.returncode == 2 and "is not certified under Act §17(1) item 6" in out.stderr
        assert (now := shared.get()) is not None and now.revision == first.revision
        assert "city-1" not in Registry.load(a).parties
        registry(*certify, *nats)
        registry(*add)
        registry("sync", "--registry", str(b), *nats)
        city = Registry.load(b).parties["city-1"]
        assert city.contractor == "both-verifier" and city.agreement_holder == "both-verifier"
    finally:
        shared.close()
