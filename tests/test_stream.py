"""The record stream on NATS JetStream (`crlbuilder.stream`): every node converges, a kill loses nothing.

Unit: the batches are cut by the stream alone (`Batcher`), the messages of a file carry
their record ids and batch ends (`messages`), payloads are sealed (no four facts on the
stream in clear), the server list parses.

Integration, on a real three-server JetStream cluster on loopback (`tests.support.nats`):
two nodes that consumed the same stream prefix hold byte-identical stores; records
published twice are applied once; a builder SIGKILLed while it consumes resumes from its
store's sequence and ends with the same bytes as a node never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats.js.errors
import pytest
from cryptography import x509
from nats.js.api import ObjectMeta

from crlbuilder import jetstream, recorddigest, release, snapshot
from crlbuilder.apply import from_epoch
from crlbuilder.build import Builder, BuildReport, NewerRelease, StreamReplaced, StreamTruncated
from crlbuilder.cli import EXIT_NO_SNAPSHOT, EXIT_SNAPSHOT_REFUSED, EXIT_STREAM_REFUSED
from crlbuilder.config import BuilderConfig
from crlbuilder.crl.shipping import Fetcher, Shipment, ShippingError, ship
from crlbuilder.ingest import MAX_LINE, Rejected
from crlbuilder.jetstream import Cluster, ClusterError, replicas_for
from crlbuilder.keys.signer import EXIT_PIN_REFUSED, SignerError
from crlbuilder.manifest import Manifest
from crlbuilder.model import Answer, CertStatus, Family
from crlbuilder.natsservers import parse_servers
from crlbuilder.periods import kept_until
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import changes_start
from crlbuilder.stream import (
    H_END,
    H_ID,
    H_LINE,
    H_TICK,
    MAX_BATCH,
    Batcher,
    Consumer,
    Delivered,
    StreamCipher,
    StreamNames,
    current_feed_id,
    decode,
    messages,
    publish,
    refusal,
    tick_message,
    token_signatures,
)
from responder.streamlag import STALE_AFTER, verdict
from tests.support import procs
from tests.support.builder import builder_config
from tests.support.idlefollow import ShiftedClock
from tests.support.nats import NatsCluster, free_ports, nats_server
from tests.support.softhsm import keys_into_token, make_token
from tests.support.store import dump_store, node_state
from tests.support.synth import synth_population
from tests.support.wait import until

KEY = bytes(range(32))
AT = datetime(2026, 4, 1, tzinfo=UTC)

# ---------------------------------------------------------------------------
# Unit: batches, messages, sealing
# ---------------------------------------------------------------------------


def _d(seq: int, end: bool = False) -> Delivered:
    return Delivered(seq=seq, item=Rejected("f", seq, "x"), at=AT, end=end, pending=0)


def test_batches_cut_at_the_publishers_end_marks_not_by_timing() -> None:
    b = Batcher(after=0, batch_size=MAX_BATCH)
    assert b.add(_d(1)) is None and b.add(_d(2)) is None
    batch = b.add(_d(3, end=True))
    assert batch is not None and [d.seq for d in batch] == [1, 2, 3]
    # however the deliveries were split, the same positions make the same batches
    b2 = Batcher(after=0, batch_size=MAX_BATCH)
    got = [b2.add(d) for d in (_d(1), _d(2), _d(3, end=True))]
    assert [[d.seq for d in x] for x in got if x] == [[1, 2, 3]]


def test_batches_skip_what_is_delivered_again_at_or_before_the_committed_sequence() -> None:
    b = Batcher(after=5, batch_size=MAX_BATCH)
    assert b.add(_d(4, end=True)) is None and b.add(_d(5, end=True)) is None
    assert [d.seq for d in b.add(_d(6, end=True)) or []] == [6]
    assert b.add(_d(6, end=True)) is None  # redelivered after its commit
    assert b.after == 6


def test_batches_cap_at_a_constant_of_the_stream() -> None:
    b = Batcher(after=0, batch_size=3)
    assert b.add(_d(1)) is None and b.add(_d(2)) is None
    assert [d.seq for d in b.add(_d(3)) or []] == [1, 2, 3]
    assert b.add(_d(4)) is None
    assert [d.seq for d in b.cut()] == [4]  # a publisher's tail, cut by time


def _records(tmp: Path, lines: list[bytes]) -> Path:
    p = tmp / "in.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


def test_a_connections_warnings_are_one_line_each_an_identical_one_every_10_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(jetstream.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    warn = jetstream._Throttled(lines.append)
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 4222)")
    for _ in range(5):
        warn(refused)
    clock[0] += jetstream.WARN_EVERY - 0.5
    warn(refused)
    assert lines == [f"NATS: {refused}"]
    clock[0] += 0.5
    warn(refused)  # 10 s since it was said
    warn(TimeoutError())  # another line: said at once, by its type when it has no text
    assert lines == [f"NATS: {refused}"] * 2 + ["NATS: TimeoutError"]


def test_messages_carry_record_ids_and_batch_ends(tmp_path: Path) -> None:
    lines = [b'{"id": "r%d", "type": "nonsense"}' % i for i in range(5)]
    lines.insert(2, b"")  # blank lines are skipped
    lines.append(b"not json, no id")
    out = list(messages(_records(tmp_path, lines), StreamCipher(KEY), batch_size=2))
    ids = [m.msg_id for m in out]
    assert ids[:5] == ["r0", "r1", "r2", "r3", "r4"]
    assert ids[5].startswith("line:")
    assert [bool(m.headers.get(H_END)) for m in out] == [False, True, False, True, False, True]
    assert out[3].headers["Jpki-Line"] == "5"  # the line number in the file, blank counted


def test_act_44_no_four_facts_on_the_stream_in_clear(tmp_path: Path) -> None:
    """A record's line (an issuance carries the four facts) is sealed; it opens with the key."""
    line = b'{"id": "r1", "type": "issuance", "facts": {"name": "\xe5\xb1\xb1\xe7\x94\xb0"}}'
    (m,) = messages(_records(tmp_path, [line]), StreamCipher(KEY), batch_size=10)
    assert b"issuance" not in m.payload and "山田".encode() not in m.payload
    back = decode(m.headers, m.payload, StreamCipher(KEY))
    assert isinstance(back, Rejected) and back.record_id == "r1"  # opened, then refused
    other = decode(m.headers, m.payload, StreamCipher(bytes(32)))
    assert isinstance(other, Rejected) and "facts key" in other.reason
    tampered = decode({**m.headers, H_ID: "r2"}, m.payload, StreamCipher(KEY))
    assert isinstance(tampered, Rejected) and "facts key" in tampered.reason


def test_too_long_line_is_refused_on_every_node_not_published(tmp_path: Path) -> None:
    (m,) = messages(_records(tmp_path, [b"x" * (MAX_LINE + 1)]), StreamCipher(KEY), 10)
    assert len(m.payload) < 64
    back = decode(m.headers, m.payload, StreamCipher(KEY))
    assert isinstance(back, Rejected) and "longer than" in back.reason


def test_a_huge_line_is_not_held_whole_by_the_publisher(tmp_path: Path) -> None:
    p = _records(tmp_path, [b'{"id":"' + b"a" * (8 * MAX_LINE), b'{"id":"r1"}'])
    tracemalloc.start()
    try:
        out = list(messages(p, StreamCipher(KEY), 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE
    assert [m.headers["Jpki-Line"] for m in out] == ["1", "2"]
    assert out[0].headers.get("Jpki-Too-Long") == "1" and out[1].msg_id == "r1"


def test_servers_parse_and_refuse_what_is_no_nats_server() -> None:
    assert parse_servers("nats://a:4222,b:4223") == ["nats://a:4222", "nats://b:4223"]
    for bad in ("", "http://a:1", "nats://a", "nats://a:1/x"):
        with pytest.raises(ValueError):
            parse_servers(bad)
    assert replicas_for(3, 0) == 3 and replicas_for(1, 0) == 1 and replicas_for(3, 1) == 1


# ---------------------------------------------------------------------------
# Integration: a real cluster
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory, demo_pki: tuple[Path, Manifest]) -> Path:
    return synth_population(tmp_path_factory, demo_pki[0], holders=200, seed=3)


def node_config(
    tmp: Path, pki: Path, source: str, stream: str, batch_size: int = 40
) -> BuilderConfig:
    tmp.mkdir()
    cfg = builder_config(tmp, pki)
    # no CRLs, no pre-signing: they move no commit, and what is compared is the records' effect
    return msgspec.structs.replace(
        cfg,
        crl=msgspec.structs.replace(cfg.crl, enabled=False),
        ocsp=msgspec.structs.replace(cfg.ocsp, presign=False),
        input=msgspec.structs.replace(cfg.input, source=source, batch_size=batch_size),
        stream=msgspec.structs.replace(
            cfg.stream, name=stream, subject=f"jpki.{stream}", durable=tmp.name
        ),
    )


def names(cfg: BuilderConfig) -> StreamNames:
    return StreamNames(cfg.stream.name, cfg.stream.subject)


def same_key(a: Path, b: Path) -> None:
    b.write_bytes(a.read_bytes())
    b.chmod(0o600)


def consume(cfg: BuilderConfig, cluster: NatsCluster) -> int:
    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        return b.consume(Consumer(c, names(cfg), cfg.stream.durable, cipher), tail_wait=0.5)
    finally:
        c.close()
        b.close()
        b.log.close()


def publish_files(cfg: BuilderConfig, cluster: NatsCluster, paths: list[Path]) -> int:
    c = Cluster(cluster.urls)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        r = publish(c, names(cfg), paths, cipher, batch_size=cfg.input.batch_size)
        return r.published
    finally:
        c.close()


def feed(cfg: BuilderConfig) -> tuple[bytes, list[tuple[sf.StreamGroup | None, bytes]]]:
    """The store's feed id and its changes by stream batch (`store.format.StreamGroup`)."""
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            return r.feed_id(), [(e.group, e.key) for e in r.changes(changes_start(0))]
    finally:
        s.close()


def dump(cfg: BuilderConfig) -> dict[str, list[tuple[bytes, bytes]]]:
    return node_state(Path(cfg.store.path))


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_two_nodes_hold_the_same_bytes_for_the_same_stream_prefix(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "same")
    b = node_config(tmp_path / "b", demo_pki[0], cluster.source, "same")
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    half = len(files) // 2
    n1 = publish_files(a, cluster, files[:half])
    assert consume(a, cluster) == n1  # a applies the first half
    n2 = publish_files(a, cluster, files[half:])
    assert consume(a, cluster) == n1 + n2
    assert consume(b, cluster) == n1 + n2  # b applies it all at once, later
    assert dump(a) == dump(b)
    assert generation(a) > 2  # one commit per marked batch, not one in all
    # the changes feed by stream position, the same on both (a changes cursor reads anywhere)
    fed = feed(a)
    assert fed == feed(b) and fed[0] and fed[1] and all(g is not None for g, _ in fed[1])
    # published again (another publication: stored, a refused record may apply now): every
    # record applied already is skipped by its id, on both nodes
    assert publish_files(a, cluster, files) == n1 + n2
    assert consume(a, cluster) == consume(b, cluster) == 2 * (n1 + n2)
    assert dump(a) == dump(b)
    assert feed(a) == feed(b) == fed  # nothing changed: no record applied twice


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_refused_record_published_again_reaches_the_nodes(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """docs/records.md: a refused record fed again once what it needs is applied, is applied.
    On the stream its second publication must not be taken for a retry and dropped by
    JetStream's duplicate window (24 h): the revocation would be lost, the certificate good."""
    cfg = node_config(tmp_path / "n", demo_pki[0], cluster.source, "refeed")
    at = "2026-04-01T09:00:00+09:00"
    revoke = tmp_path / "r1.jsonl"
    revoke.write_bytes(msgspec.json.encode(
        {"type": "revocation-request", "id": "refeed-r1", "recorded_at": at, "serial": 4242,
         "issuer": "auth-card-g1", "reason": "application"}) + b"\n")  # fmt: skip
    issue = tmp_path / "i1.jsonl"
    issue.write_bytes(msgspec.json.encode(
        {"type": "issuance", "id": "refeed-i1", "recorded_at": at, "serial": 4242,
         "family": "auth-card", "issuer": "auth-card-g1", "not_before": at,
         "not_after": "2029-04-01T09:00:00+09:00", "holder": "ab" * 32}) + b"\n")  # fmt: skip
    assert publish_files(cfg, cluster, [revoke, issue]) == 2
    consume(cfg, cluster)  # the revocation refused: no issuance yet
    assert publish_files(cfg, cluster, [revoke]) == 1  # fed again, as the quarantine asks
    consume(cfg, cluster)
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            [meta] = [i for i in r.issuers() if i.id == "auth-card-g1"]
            st = r.status(sf.status_key(meta.index, 4242))
    finally:
        s.close()
    assert st is not None and st.revoked


def _status(cfg: BuilderConfig, issuer: str, serial: int) -> sf.StatusRecord | None:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            [meta] = [i for i in r.issuers() if i.id == issuer]
            return r.status(sf.status_key(meta.index, serial))
    finally:
        s.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_record_id_reused_with_other_content_is_refused_alike_on_every_node(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """docs/records.md: record ids are unique. A second revocation request under the id of the
    first, for another certificate, was skipped as a duplicate (its certificate good, nothing
    said); it is refused and quarantined, on both nodes, while the first record published
    again, its line written otherwise (the payload sealed: the decoded record is compared, its
    times as instants), is still a duplicate."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "reuse")
    b = node_config(tmp_path / "b", demo_pki[0], cluster.source, "reuse")
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    at = "2026-04-01T09:00:00+09:00"
    issue = tmp_path / "i.jsonl"
    issue.write_bytes(b"".join(msgspec.json.encode(
        {"type": "issuance", "id": f"reuse-i{n}", "recorded_at": at, "serial": 5150 + n,
         "family": "auth-card", "issuer": "auth-card-g1", "not_before": at,
         "not_after": "2029-04-01T09:00:00+09:00", "holder": f"{n:02}" * 32}) + b"\n"
        for n in (1, 2)))  # fmt: skip
    first = {"type": "revocation-request", "id": "reuse-dup-1", "recorded_at": at,
             "serial": 5151, "issuer": "auth-card-g1", "reason": "application"}  # fmt: skip
    r1, r2, again = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl", tmp_path / "again.jsonl"
    r1.write_bytes(msgspec.json.encode(first) + b"\n")
    r2.write_bytes(msgspec.json.encode({**first, "serial": 5152}) + b"\n")
    # the same record, its line written otherwise: keys in reverse order, spaces, its time
    # the same instant in UTC
    again.write_text(json.dumps(
        dict(reversed({**first, "recorded_at": "2026-04-01T00:00:00Z"}.items())),
        separators=(" , ", " : ")) + "\n")  # fmt: skip
    assert publish_files(a, cluster, [issue, r1, r2, again]) == 5
    consume(a, cluster)
    assert publish_files(a, cluster, [r2, r1]) == 2  # the reuse fed again: quarantined once
    consume(a, cluster)
    consume(b, cluster)
    assert dump(a) == dump(b)
    for node in (a, b):
        first_st, second_st = (
            _status(node, "auth-card-g1", 5151),
            _status(node, "auth-card-g1", 5152),
        )
        assert first_st is not None and first_st.revoked
        assert second_st is not None and not second_st.revoked  # refused, not applied
        lines = Path(node.input.quarantine).read_bytes().splitlines()
        [q] = [msgspec.json.decode(x) for x in lines]
        assert q["id"] == "reuse-dup-1" and q["reason"].startswith(recorddigest.REASON)
        assert "5152" not in q["reason"]


C = TypeVar("C", bound=Consumer)


@contextlib.contextmanager
def follower(
    cfg: BuilderConfig, cluster: NatsCluster, kind: type[C]
) -> Iterator[tuple[Builder, C]]:
    """A builder of ``cfg`` and a ``kind`` consumer of its stream; the builder's events go to
    events.jsonl beside its store."""
    b = Builder(cfg, progress=False, log=(Path(cfg.store.path).parent / "events.jsonl").open("w"))
    c = Cluster(cluster.urls)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        yield b, kind(c, names(cfg), cfg.stream.durable, cipher)
    finally:
        c.close()
        b.close()
        b.log.close()


class RefusedAtFirst(Consumer):
    """The stream's consumer as a node sees it while the cluster elects a leader: opening it
    fails ``failures`` times, then works."""

    failures = 2

    def open(self, after: int) -> None:
        if self.failures:
            self.failures -= 1
            raise ClusterError("consumer: nats: timeout")
        super().open(after)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_that_cannot_open_its_consumer_waits_for_the_cluster(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg = node_config(tmp_path / "late", demo_pki[0], cluster.source, "late")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    with follower(cfg, cluster, RefusedAtFirst) as (b, consumer):
        with pytest.raises(ClusterError):  # without --follow: the error, at once
            b.consume(consumer, tail_wait=0.5)
        consumer.failures = 2
        seq = b.consume(consumer, follow=True, max_idle=1.0, tail_wait=0.5, interval=0.1)
    assert seq == total and consumer.failures == 0
    events = tmp_path / "late" / "events.jsonl"
    waited = [line for line in events.read_text().splitlines() if "consumer: nats" in line]
    assert len(waited) == 2 and all('"warning"' in line for line in waited)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_stopped_while_its_crls_cannot_be_shipped_stops_cleanly(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The CRL signer stopped (SIGTERM) while its object store does not answer (its NATS
    server stopped meanwhile): the last refresh at the stop cannot ship its CRLs either, and
    that is said as a warning, as in the loop, not made the builder's error (it exited 1 and
    its unit failed, though what the store holds is committed)."""
    cfg = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "signer")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    calls: list[int] = []

    def unreachable(report: BuildReport) -> object:
        calls.append(len(report.crl_files))
        if len(calls) == 2:  # the stop comes while the store is away
            os.kill(os.getpid(), signal.SIGTERM)
        raise ClusterError("object store JPKI_CRLS: nats: timeout")

    with follower(cfg, cluster, Consumer) as (b, consumer):
        seq = b.consume(consumer, follow=True, tail_wait=0.5, interval=0.1, ship=unreachable)
    assert seq == total and len(calls) == 3  # the last one at the stop
    events = [json.loads(line) for line in (tmp_path / "signer" / "events.jsonl").open()]
    warned = [e for e in events if e.get("event") == "warning" and "JPKI_CRLS" in e["message"]]
    assert len(warned) == 3


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_started_past_its_promise_renews_it_once_caught_up(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A node started after a stop longer than its last run's promise (no CRL, no stored
    answer: `store.format.META_VOUCHED` is all that vouches for its issuers), with nothing new
    to apply, refreshes as soon as it has caught up, not a `Builder.refresh_every` later:
    until then the responder answers ``tryLater`` for those issuers."""
    cfg = node_config(tmp_path / "stopped", demo_pki[0], cluster.source, "stopped")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    assert consume(cfg, cluster) == total
    store = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with store.read() as r:
            promised = r.vouched_until()
    finally:
        store.close()
    assert promised > 0
    later = from_epoch(promised + 3600)  # started an hour past the promise
    with follower(cfg, cluster, Consumer) as (b, consumer):
        b.clock = lambda: later
        assert b.promise_runs_out()
        seq = b.consume(consumer, follow=True, max_idle=1.0, tail_wait=0.5, interval=0.1)
        assert not b.promise_runs_out()
    assert seq == total
    events = [json.loads(line) for line in (tmp_path / "stopped" / "events.jsonl").open()]
    kinds = [e["event"] for e in events if e["event"] in ("refresh", "stream")]
    assert kinds == ["refresh"], kinds  # renewed in the loop, not only by the exit's refresh


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_caught_up_goes_on_with_a_cut_walk_before_it_idles(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pre-signing cut by its time bound (`crlbuilder.presign`) goes on at the loop's turns
    once the node has caught up; the runs are not idle time."""
    cfg = node_config(tmp_path / "walk", demo_pki[0], cluster.source, "walk")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    left = [8]  # runs until the walk ends

    def presign(self: Builder, report: BuildReport, now: int) -> None:
        time.sleep(0.1)
        left[0] = max(0, left[0] - 1)
        report.presign_walked, report.presign_walking = 1, int(left[0] > 0)

    monkeypatch.setattr(Builder, "presign", presign)
    monkeypatch.setattr(Builder, "walks_in_progress", lambda self: True)
    with follower(cfg, cluster, Consumer) as (b, consumer):
        seq = b.consume(consumer, follow=True, max_idle=0.2, tail_wait=0.5, interval=0.1)
    assert seq == total and left[0] == 0
    events = (tmp_path / "walk" / "events.jsonl").read_text().splitlines()
    assert any('"event":"presign"' in line for line in events)


class SilentUntilOpenedAgain(Consumer):
    """A pull consumer as a node saw it after a NATS server came back: opened, it delivers
    nothing though the stream holds records, until it is opened again."""

    opened = 0

    def open(self, after: int) -> None:
        self.opened += 1
        super().open(after)

    def fetch(self, n: int, timeout: float) -> list[Delivered]:
        if self.opened < 2:
            time.sleep(min(timeout, 0.1))
            return []
        return super().fetch(n, timeout)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_consumer_that_stays_silent_is_opened_again(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg = node_config(tmp_path / "silent", demo_pki[0], cluster.source, "silent")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    with follower(cfg, cluster, SilentUntilOpenedAgain) as (b, consumer):
        seq = b.consume(consumer, follow=True, max_idle=3.0, tail_wait=0.5, interval=0.1,
                        stall_after=1.0)  # fmt: skip
    assert seq == total and consumer.opened == 2
    assert "delivered nothing" in (tmp_path / "silent" / "events.jsonl").read_text()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_max_idle_ends_the_ticking_signer_once_ticks_write_nothing(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The CRL signer publishes a tick every ``tick_seconds`` and reads it back: a tick that
    writes nothing is no work, so ``--max-idle`` ends its loop as it ends any node's (it
    never did: every tick read counted as activity). A SIGINT after 30 s ends a loop that
    would not stop, so the test fails rather than hangs."""
    cfg = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "ticker")
    total = publish_files(cfg, cluster, sorted(population.glob("*.jsonl")))
    watchdog = threading.Timer(30.0, os.kill, (os.getpid(), signal.SIGINT))
    with follower(cfg, cluster, Consumer) as (b, consumer):
        watchdog.start()
        t0 = time.monotonic()
        try:
            seq = b.consume(consumer, follow=True, max_idle=1.5, tail_wait=0.5, interval=0.1,
                            tick_every=0.2)  # fmt: skip
        finally:
            watchdog.cancel()
        took = time.monotonic() - t0
        ticks = consumer.last_seq() - total
    assert seq >= total and took < 30.0, f"max_idle never ended the loop ({took:.1f} s)"
    assert ticks >= 2, ticks  # it did tick meanwhile (a tick every 0.2 s once caught up)


class Shifted(Consumer):
    """The stream's consumer as of a clock shifted by ``shift``, the builder's with it: the
    stream leader's clock (`Delivered.at`) read the same way, and the ticks published noted."""

    shift = timedelta(0)
    ticks: list[datetime]

    def fetch(self, n: int, timeout: float) -> list[Delivered]:
        return [dataclasses.replace(d, at=d.at + self.shift) for d in super().fetch(n, timeout)]

    def tick(self, at: datetime) -> None:
        super().tick(at)
        self.ticks = [*getattr(self, "ticks", []), at]


def _follow_quiet(
    builder: Builder,
    consumer: Shifted,
    clock: ShiftedClock,
    at: datetime,
    *,
    max_idle: float,
    behind: timedelta = timedelta(0),
) -> list[datetime]:
    """The clocks moved to ``at`` (the stream leader's as the consumer reads it ``behind`` the
    builder's), then the builder follows the quiet stream with no periodic tick for an hour
    until ``max_idle`` ends it: the ticks it published (a watchdog interrupts the test after
    40 s)."""
    clock.move_to(at)
    consumer.shift, consumer.ticks = clock.offset - behind, []
    watchdog = threading.Timer(40.0, os.kill, (os.getpid(), signal.SIGINT))
    watchdog.start()
    try:
        builder.consume(consumer, follow=True, max_idle=max_idle, tail_wait=0.5, interval=0.1,
                        tick_every=3600.0)  # fmt: skip
    finally:
        watchdog.cancel()
    return consumer.ticks


def _served(cfg: BuilderConfig, issuer_id: str) -> x509.CertificateRevocationList:
    """The full CRL a node serves for ``issuer_id`` (its current ``<issuer>.crl``)."""
    return x509.load_der_x509_crl((Path(cfg.crl.directory) / f"{issuer_id}.crl").read_bytes())


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
@pytest.mark.parametrize("lag", [0.0, 1.5])
def test_the_signer_ticks_when_an_erasure_falls_due_so_every_node_erases_then(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest], lag: float
) -> None:
    """A revocation record whose retention ends at 00:00 JST after its last day (Ord
    §70(1)(iii)) while the stream is quiet is erased on every node at a tick the signer
    publishes then, not at its next periodic tick (an hour here): the signer ticks when the
    next erasure falls due, as when a lapse does. The clocks (the builder's and the stream
    leader's as the nodes read it) are the real one shifted to just before a JST midnight;
    with the stream leader's ``lag`` seconds behind the signer's, a tick that came too early
    to erase is repeated a second later until one erases."""
    pki, manifest = demo_pki
    behind = timedelta(seconds=lag)
    jst = timezone(timedelta(hours=9))
    one_day = dict.fromkeys(("sign-card", "sign-mobile", "auth-card", "auth-mobile"), 1)
    cfgs = []
    for name in ("signer", "other"):
        c = node_config(tmp_path / name, pki, cluster.source, f"erasetick{int(lag * 10)}")
        cfgs.append(msgspec.structs.replace(
            c, crl=msgspec.structs.replace(c.crl, retention_days=one_day)))  # fmt: skip
    a, b = cfgs
    # the signer makes CRLs (full ones only, hourly): the refresh after the erasing tick
    # issues the next one without the entry (`crlbuilder.crl.publish`), not an hour later
    a = msgspec.structs.replace(
        a, crl=msgspec.structs.replace(a.crl, enabled=True, delta=False, cycle_seconds=3600)
    )
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    issuer = next(i for i in manifest.issuers if i.id.startswith("auth-card"))
    end = datetime.now(jst).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    recorded = end - timedelta(days=2) + timedelta(hours=1)  # kept 1 day, the first not counted
    assert kept_until(int(recorded.timestamp()), 1) == int(end.timestamp())
    issued = recorded - timedelta(days=10)
    recs = [
        {"type": "issuance", "id": "i1", "recorded_at": issued.isoformat(), "serial": 4343,
         "family": "auth-card", "issuer": issuer.id, "not_before": issued.isoformat(),
         "not_after": (recorded + timedelta(minutes=30)).isoformat(),
         "holder": hashlib.sha256(b"erase-tick").hexdigest()},
        {"type": "revocation-request", "id": "r1", "recorded_at": recorded.isoformat(),
         "serial": 4343, "issuer": issuer.id, "reason": "loss"},
    ]  # fmt: skip
    records = tmp_path / "erase.jsonl"
    records.write_bytes(b"\n".join(map(msgspec.json.encode, recs)))
    clock = ShiftedClock(end - timedelta(seconds=30))

    key = sf.status_key(issuer.index, 4343)

    def status(node: Builder) -> sf.StatusRecord:
        with node.store.read() as r:
            st = r.status(key)
        assert st is not None
        return st

    assert publish_files(a, cluster, [records]) == 2
    with follower(a, cluster, Shifted) as (builder, consumer):
        builder.clock = clock
        consumer.shift = clock.offset
        consumer.tick(clock())  # a periodic tick 30 s before the end: the agenda is made
        builder.consume(consumer, tail_wait=0.5)
        assert status(builder).revoked and not status(builder).erased
        before = _served(a, issuer.id)
        assert _crl_number(before) == 1 and before.get_revoked_certificate_by_serial_number(4343)
        # 3 s before the end, no periodic tick for an hour: only a tick when the erasure
        # falls due erases it before max_idle ends the loop
        ticks = _follow_quiet(
            builder, consumer, clock, end - timedelta(seconds=3), max_idle=8.0, behind=behind
        )
        erased = status(builder).erased
    assert erased, "not erased at 00:00 JST: no tick when the erasure fell due"
    served = _served(a, issuer.id)
    assert _crl_number(served) == 2, "the CRL listing the erased entry is still the one served"
    assert served.get_revoked_certificate_by_serial_number(4343) is None
    assert end <= ticks[0] < end + timedelta(seconds=2), ticks
    assert len(ticks) == 1 if not lag else len(ticks) >= 2, ticks
    assert ticks[-1] < end + behind + timedelta(seconds=2), ticks  # a second apart at most
    # another node reads the same stream later: it erases at the same tick, the same bytes
    with follower(b, cluster, Shifted) as (other, consumer):
        other.clock = clock
        consumer.shift = clock.offset - behind
        other.consume(consumer, tail_wait=0.5)
        assert status(other).erased
    assert feed(a) == feed(b)
    assert dump(a) == dump(b)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_facts_of_a_certificate_that_expires_go_at_the_signers_tick_on_every_node(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A sign certificate nobody revokes: its sealed four facts go at the second after its
    notAfter (`crlbuilder.factskept`), at a tick the signer publishes then (the agenda's first
    entry), not at its next periodic tick (an hour here); a node reading the same stream later
    erases them at the same tick, and both hold the same bytes (``holders`` included). The clocks
    are the real one shifted to just before that second."""
    pki, manifest = demo_pki
    a, b = (node_config(tmp_path / n, pki, cluster.source, "factstick") for n in ("s", "o"))
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    issuer = next(i for i in manifest.issuers if i.id.startswith("sign-card"))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
    end = start + timedelta(days=10)  # notAfter: the facts are due a second later
    facts = {"name": "試験 四郎", "sex": "1", "birth_date": "319850505", "address": "京都府1-1"}
    recs = [
        {"type": "issuance", "id": f"i{n}", "recorded_at": start.isoformat(), "serial": serial,
         "family": "sign-card", "issuer": issuer.id, "not_before": start.isoformat(),
         "not_after": na.isoformat(), "facts": facts,
         "holder": hashlib.sha256(f"facts-tick-{n}".encode()).hexdigest()}
        for n, (serial, na) in enumerate([(4646, end), (4647, end + timedelta(days=900))])
    ]  # fmt: skip
    records = tmp_path / "facts.jsonl"
    records.write_bytes(b"\n".join(map(msgspec.json.encode, recs)))
    clock = ShiftedClock(end - timedelta(seconds=30))

    expired, kept = (sf.status_key(issuer.index, s) for s in (4646, 4647))

    def sealed(node: Builder) -> tuple[bool, bool]:
        with node.store.read() as r:
            return r.sealed_facts(expired) is not None, r.sealed_facts(kept) is not None

    assert publish_files(a, cluster, [records]) == 2
    with follower(a, cluster, Shifted) as (builder, consumer):
        builder.clock = clock
        consumer.shift = clock.offset
        consumer.tick(clock())  # a periodic tick 30 s before: the agenda lists the facts
        builder.consume(consumer, tail_wait=0.5)
        assert sealed(builder) == (True, True)
        ticks = _follow_quiet(builder, consumer, clock, end - timedelta(seconds=2), max_idle=6.0)
        left = sealed(builder)
    assert left == (False, True), "not erased when the certificate expired: no tick then"
    due = end + timedelta(seconds=1)
    assert ticks and due <= ticks[0] < due + timedelta(seconds=2), ticks
    with follower(b, cluster, Shifted) as (other, consumer):
        other.clock = clock
        consumer.shift = clock.offset
        other.consume(consumer, tail_wait=0.5)
        assert sealed(other) == (False, True)
    assert dump(a) == dump(b)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_node_killed_while_consuming_resumes_without_loss_or_double_application(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    ref = node_config(tmp_path / "ref", demo_pki[0], cluster.source, "kill", batch_size=4)
    victim = node_config(tmp_path / "victim", demo_pki[0], cluster.source, "kill", batch_size=4)
    same_key(Path(ref.keys.facts_key_file), Path(victim.keys.facts_key_file))
    total = publish_files(ref, cluster, sorted(population.glob("*.jsonl")))
    consume(ref, cluster)
    args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(victim), "--no-progress"]
    log = tmp_path / "victim.log"
    with procs.started([*args, "--follow"], log=log, sig=signal.SIGKILL) as p:
        until(lambda: 0 < stream_seq(victim) < total or p.poll() is not None, 30, "a commit")
        os.kill(p.pid, signal.SIGKILL)  # mid-consume: some batches committed, not all
        p.wait(10)
    killed_at = stream_seq(victim)
    assert 0 < killed_at < total, (
        f"killed at {killed_at} of {total}: not mid-consume; log: {log.read_text()[-2000:]}"
    )
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    assert stream_seq(victim) == total
    assert dump(victim) == dump(ref)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, timed subprocesses
def test_a_full_disk_under_a_followers_store_is_one_clear_line_and_loses_nothing(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The store's disk fills while ``build --source ... --follow`` applies the stream (a file
    size limit stands in for it, as for the spool path in tests/test_spool_kill.py). Before:
    a traceback ending in ``StoreWriteError``. Now one line naming the store, exit 1, as the
    spool path says it; what was committed stays, and the builder started again with room
    applies the rest, once: the store of a node never stopped."""
    files = sorted(population.glob("*.jsonl"))
    assert len(files) > 1
    ref = node_config(tmp_path / "ref", demo_pki[0], cluster.source, "full", batch_size=4)
    node = node_config(tmp_path / "node", demo_pki[0], cluster.source, "full", batch_size=4)
    same_key(Path(ref.keys.facts_key_file), Path(node.keys.facts_key_file))
    first = publish_files(ref, cluster, files[:1])
    args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(node), "--no-progress"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    assert stream_seq(node) == first
    total = first + publish_files(ref, cluster, files[1:])
    consume(ref, cluster)
    store = Path(node.store.path)
    room = (store / "data.mdb").stat().st_size + (16 << 10)

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

    out = subprocess.run(
        [*args, "--follow", "--max-idle", "0.5"], capture_output=True, text=True, timeout=120,
        check=False, preexec_fn=full_disk,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"crlbuilder build: error: {store}: the store could not be written (" in out.stderr
    assert first <= stream_seq(node) < total
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    assert stream_seq(node) == total
    assert dump(node) == dump(ref)


def stream_seq(cfg: BuilderConfig) -> int:
    p = Path(cfg.store.path)
    if not (p / "data.mdb").exists():
        return 0
    try:
        s = Store.open(p, readonly=True)
    except sf.StoreFormatError:  # its builder is creating it
        return 0
    try:
        with s.read() as r:
            return r.stream_seq()
    finally:
        s.close()


def generation(cfg: BuilderConfig) -> int:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            return r.generation().commit
    finally:
        s.close()


def flags(cfg: BuilderConfig) -> list[str]:
    """The command line of a node's builder with ``cfg``."""
    return [
        "--store", cfg.store.path, "--map-size-gib", "1", "--pki", cfg.pki.manifest,
        "--source", cfg.input.source, "--stream", cfg.stream.name,
        "--stream-subject", cfg.stream.subject, "--durable", cfg.stream.durable,
        "--facts-key-file", cfg.keys.facts_key_file, "--quarantine", cfg.input.quarantine,
        "--notices", cfg.input.notices, "--crl-dir", cfg.crl.directory,
        "--batch-size", str(cfg.input.batch_size), "--no-crl", "--no-presign",
    ]  # fmt: skip


# ---------------------------------------------------------------------------
# One signer of CRLs: shipped through the object store, fetched by keyless nodes
# ---------------------------------------------------------------------------


def keyless_pki(pki: Path, to: Path) -> Path:
    """A copy of the PKI without any CA key: what a node that does not sign CRLs holds."""
    shutil.copytree(pki, to)
    gone = list((to / "ca").glob("*.key"))
    assert gone
    for k in gone:
        k.unlink()
    return to


def run_node(
    cfg: BuilderConfig, cluster: NatsCluster, bucket: str
) -> tuple[int, list[sf.CrlFileEntry]]:
    """One catch-up of a node: the signer ships what it signs, a keyless node fetches it."""
    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    directory = Path(cfg.crl.directory)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        consumer = Consumer(c, names(cfg), cfg.stream.durable, cipher)
        if cfg.crl.enabled:
            seq = b.consume(
                consumer, ship=lambda r: ship(c, bucket, b.store, directory, r.crl_files)
            )
            return seq, []
        seq = b.consume(consumer)
        return seq, Fetcher(
            c, bucket, b.store, b.manifest, directory, keep_days=cfg.crl.keep_days
        ).fetch(int(time.time()))
    finally:
        c.close()
        b.close()
        b.log.close()


def crl_index(cfg: BuilderConfig) -> tuple[list[sf.CrlFileEntry], list[sf.CrlState]]:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            issuers = r.issuers()
            return (
                [e for i in issuers for e in r.latest_crls(i.index)],
                [r.crl_state(i.index) for i in issuers],
            )
    finally:
        s.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_only_the_key_holder_signs_crls_and_keyless_nodes_serve_the_same_files(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "crls")
    signer = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=True))
    node = node_config(
        tmp_path / "node", keyless_pki(demo_pki[0], tmp_path / "pki"), cluster.source, "crls"
    )
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    with pytest.raises(SignerError):  # the keyless node cannot sign CRLs: it must not try
        Builder(msgspec.structs.replace(node, crl=signer.crl), progress=False).close()
    publish_files(signer, cluster, sorted(population.glob("*.jsonl")))
    seq, _ = run_node(signer, cluster, "CRLS_T")
    assert seq > 0
    seq_node, placed = run_node(node, cluster, "CRLS_T")
    assert seq_node == seq and placed
    assert crl_index(node) == crl_index(signer)
    for e in placed:  # the archive and the current file, the same bytes as the signer's
        for rel in (e.path, f"{e.issuer}{'-delta' if e.delta else ''}.crl"):
            got = (Path(node.crl.directory) / rel).read_bytes()
            assert got == (Path(signer.crl.directory) / rel).read_bytes()
    assert dump(node) == dump(signer)


def run_signer_as_the_command_does(cfg: BuilderConfig, cluster: NatsCluster) -> int:
    """One catch-up of a signer node wired as ``crlbuilder build --source ... --crl`` wires it
    (`crlbuilder.cli._crl_exchange`: what it does before it signs, and its shipping)."""
    from crlbuilder.cli import _crl_exchange

    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        ship_, fetch_ = _crl_exchange(cfg, b, c)
        assert ship_ is not None and fetch_ is None
        return b.consume(Consumer(c, names(cfg), cfg.stream.durable, cipher), ship=ship_)
    finally:
        c.close()
        b.close()
        b.log.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_new_signer_goes_on_after_the_crl_numbers_already_shipped(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The signer node lost and replaced by one whose store and CRL directory know less than
    what was shipped (a machine rebuilt from the stream, a store restored from an older
    snapshot): its CRLs go on after the numbers already shipped. Before, it numbered them
    from its own store (1, 2, ...): CRL numbers repeated with other contents (RFC 5280
    §5.2.3), the bucket's archive files of those numbers overwritten, and every keyless node
    skipped them silently (a number not above its own) and served its older CRLs until the
    new signer's numbers passed them."""
    bucket = "CRLS_RENUM"

    def signer_cfg(d: str) -> BuilderConfig:
        cfg = node_config(tmp_path / d, demo_pki[0], cluster.source, "renum")
        return msgspec.structs.replace(
            cfg,
            crl=msgspec.structs.replace(cfg.crl, enabled=True),
            stream=msgspec.structs.replace(cfg.stream, crl_bucket=bucket),
        )

    old = signer_cfg("old")
    node = node_config(
        tmp_path / "node", keyless_pki(demo_pki[0], tmp_path / "pki"), cluster.source, "renum"
    )
    same_key(Path(old.keys.facts_key_file), Path(node.keys.facts_key_file))
    publish_files(old, cluster, sorted(population.glob("*.jsonl"))[:2])
    assert run_signer_as_the_command_does(old, cluster) > 0
    assert run_signer_as_the_command_does(old, cluster) > 0  # a second run: numbers past 2
    _, placed = run_node(node, cluster, bucket)
    assert placed
    shipped = {s.number for s in crl_index(old)[1]}
    assert min(shipped) > 2, shipped
    old_files, _ = crl_index(old)
    old_top = {
        e.issuer: max(f.number for f in old_files if f.issuer == e.issuer) for e in old_files
    }

    new = signer_cfg("new")  # another machine: an empty store and CRL directory
    same_key(Path(old.keys.facts_key_file), Path(new.keys.facts_key_file))
    publish_files(old, cluster, sorted(population.glob("*.jsonl"))[2:])
    assert run_signer_as_the_command_does(new, cluster) > 0
    new_files, _ = crl_index(new)
    assert new_files
    for e in new_files:
        assert e.number > old_top[e.issuer], (e.issuer, e.number, old_top[e.issuer])
    new_full = {e.issuer for e in new_files if not e.delta}
    assert new_full == set(old_top)  # its first CRL of each issuer is a full one
    _, placed = run_node(node, cluster, bucket)  # the keyless node takes the new signer's
    assert {(e.issuer, e.number) for e in placed} == {(e.issuer, e.number) for e in new_files}
    assert crl_index(node) == crl_index(new)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_node_that_missed_a_full_crl_takes_it_with_the_next_delta(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A keyless node down (or its fetch failing) while the signer shipped a new full CRL, back
    after a run that made only a delta on it: it serves that full CRL with the delta. Before,
    a pointer named only the last run's files: the node placed the delta, whose BaseCRLNumber
    was no full CRL it served (a relying party cannot apply it, RFC 5280 §5.2.4), beside its
    older full CRL, which then ran past its nextUpdate, until the signer's next full CRL."""
    from crlbuilder.apply import register_issuers
    from crlbuilder.build import issuer_table
    from crlbuilder.config import CrlSection
    from crlbuilder.crl.publish import CrlPublisher

    bucket = "CRLS_MISSED"
    manifest = demo_pki[1]
    issuer = "auth-card-g1"

    def opened(name: str) -> Store:
        s = Store.open(tmp_path / name, readonly=False, map_size=1 << 26)
        register_issuers(s, issuer_table(manifest))
        return s

    def crl(name: str) -> x509.CertificateRevocationList:
        return x509.load_der_x509_crl((tmp_path / "node-crl" / name).read_bytes())

    def number(c: x509.CertificateRevocationList) -> int:
        return c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    signer, node = opened("signer"), opened("node")
    cfg = msgspec.convert({"directory": str(tmp_path / "crl")}, CrlSection)
    publisher = CrlPublisher(signer, manifest, cfg)
    c = Cluster(cluster.urls)
    t0 = int(time.time())
    try:
        fetcher = Fetcher(c, bucket, node, manifest, tmp_path / "node-crl", keep_days=cfg.keep_days)
        shipped = publisher.run(t0).produced  # full 1, delta 2
        ship(c, bucket, signer, tmp_path / "crl", shipped)
        assert fetcher.fetch(t0)
        assert number(crl(f"{issuer}.crl")) == 1
        later = t0 + cfg.full_every_seconds  # a full CRL due: full 3, delta 4; the node is down
        ship(c, bucket, signer, tmp_path / "crl", publisher.run(later).produced)
        produced = publisher.run(later + 600).produced  # delta 5 only
        assert {(e.issuer, e.number, e.delta) for e in produced if e.issuer == issuer} == {
            (issuer, 5, True)
        }
        ship(c, bucket, signer, tmp_path / "crl", produced)
        fetcher.fetch(later + 600)  # the node is back
        delta = crl(f"{issuer}-delta.crl")
        base = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
        assert (number(delta), base) == (5, 3)
        assert number(crl(f"{issuer}.crl")) == base  # the full CRL the delta is on
        with node.read() as r, signer.read() as rs:
            idx = manifest.issuer(issuer).index
            assert r.latest_crls(idx) == rs.latest_crls(idx)
        # the next delta's pointer names that full CRL again: not read again, nothing placed twice
        produced = publisher.run(later + 1200).produced
        ship(c, bucket, signer, tmp_path / "crl", produced)
        placed = fetcher.fetch(later + 1200)
        assert [(e.number, e.delta) for e in placed if e.issuer == issuer] == [(6, True)]
    finally:
        c.close()
        signer.close()
        node.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
@pytest.mark.parametrize("forged", ["state", "entry"])
def test_a_pointer_promising_more_than_its_signed_crls_is_refused(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest], forged: str
) -> None:
    """A node takes the pointer's CRL state as its own, and promises OCSP answers until its
    nextUpdate (`StoreReader.promised_next_update`): a pointer whose state, or whose file
    entries, say a later nextUpdate than the signed CRLs (genuine files, the pointer rewritten
    by a writer of the bucket) is refused and the node keeps its state. Before, only the
    files' bytes, number and kind were checked: a node promised a year of freshness."""
    import asyncio

    import nats

    bucket = f"CRLS_PROMISE_{forged.upper()}"
    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, f"promise{forged}")
    signer = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=True))
    node = node_config(
        tmp_path / "node",
        keyless_pki(demo_pki[0], tmp_path / "pki"),
        cluster.source,
        f"promise{forged}",
    )
    run_node(signer, cluster, bucket)
    entries, _ = crl_index(signer)
    issuer = entries[0].issuer
    mine = sorted((e for e in entries if e.issuer == issuer), key=lambda e: e.number)
    st = Store.open(Path(signer.store.path), readonly=True)
    try:
        with st.read() as r:
            state = r.crl_state(next(i.index for i in r.issuers() if i.id == issuer))
    finally:
        st.close()
    year = 365 * 86400
    if forged == "state":
        files = mine
    else:  # every entry's nextUpdate and the state with them
        files = [msgspec.structs.replace(e, next_update=e.next_update + year) for e in mine]
    pointer = Shipment(
        issuer=issuer,
        state=msgspec.structs.replace(state, next_update=state.next_update + year),
        files=files,
    )

    async def put() -> None:
        nc = await nats.connect(servers=cluster.urls)
        obs = await nc.jetstream().object_store(bucket)
        await obs.put(f"latest/{issuer}", msgspec.json.encode(pointer))
        await nc.close()

    asyncio.run(put())
    b_ = Builder(node, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        with pytest.raises(ShippingError, match=rf"{issuer}(: the pointer's CRL state| CRL)"):
            Fetcher(
                c, bucket, b_.store, b_.manifest, Path(node.crl.directory),
                keep_days=node.crl.keep_days,
            ).fetch(int(time.time()))  # fmt: skip
        with b_.store.read() as r:
            idx = next(i.index for i in r.issuers() if i.id == issuer)
            assert r.crl_state(idx).next_update < state.next_update + year
    finally:
        c.close()
        b_.close()
        b_.log.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_signer_that_knows_of_a_compromise_goes_on_after_a_crl_the_old_key_signed(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """`Fetcher.shipped_numbers` on a store that records a generation's compromise when the
    last CRL shipped for it was signed before, by that generation's own key: the number still
    counts (either key signed that generation's CRLs at some time), so the signer does not
    refuse to start nor repeat it; a fetching node still checks a CRL with the key of now."""
    from crlbuilder.apply import register_issuers
    from crlbuilder.build import issuer_table
    from crlbuilder.config import CrlSection
    from crlbuilder.crl.publish import CrlPublisher
    from crlbuilder.crl.shipping import continue_numbering
    from crlbuilder.store.writer import Commit

    bucket = "CRLS_COMPROMISE"
    manifest = demo_pki[1]
    victim = next(i.id for i in manifest.all_issuers() if i.successor)

    def opened(name: str) -> Store:
        s = Store.open(tmp_path / name, readonly=False, map_size=1 << 26)
        register_issuers(s, issuer_table(manifest))
        return s

    old, new = opened("old"), opened("new")
    cfg = msgspec.convert({"directory": str(tmp_path / "crl")}, CrlSection)
    c = Cluster(cluster.urls)
    t0 = int(time.time())
    try:
        ship(c, bucket, old, tmp_path / "crl", CrlPublisher(old, manifest, cfg).run(t0).produced)
        with new.read() as r:
            issuers = r.issuers()
        with Commit(new) as w:  # what a compromise record writes (crlbuilder.apply)
            w.put_issuers([msgspec.structs.replace(i, compromised_at=t0 + 1)
                           if i.id == victim else i for i in issuers])  # fmt: skip

        def fetcher() -> Fetcher:
            return Fetcher(c, bucket, new, manifest, tmp_path / "new-crl", keep_days=cfg.keep_days)

        with pytest.raises(ShippingError, match=rf"{victim} CRL \d+: .*"):
            fetcher().fetch(t0)  # a node takes only what the key of now signed
        numbers = fetcher().shipped_numbers()
        assert numbers[victim] == 2  # full 1, delta 2, signed by the generation's own key
        assert victim in continue_numbering(new, numbers)
    finally:
        c.close()
        old.close()
        new.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_keyless_node_says_so_when_the_signers_crl_numbers_went_back(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A pointer naming a CRL number below the node's own (a second signer, or one started
    behind on a release without `continue_numbering`): the node keeps its CRLs (never an
    older one) and says so (`ShippingError`, the loop's ``crl-refused``). Before, it skipped
    it silently, and its CRLs aged past their nextUpdate with nothing said."""
    import asyncio

    import nats

    bucket = "CRLS_BACK"
    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "back")
    signer = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=True))
    node = node_config(
        tmp_path / "node", keyless_pki(demo_pki[0], tmp_path / "pki"), cluster.source, "back"
    )
    run_node(signer, cluster, bucket)
    run_node(signer, cluster, bucket)  # full 1, delta 2, then delta 3
    _, placed = run_node(node, cluster, bucket)
    assert placed
    held = crl_index(node)
    first = next(e for e in crl_index(signer)[0] if not e.delta)
    assert first.number == 1
    older = Shipment(
        issuer=first.issuer,
        state=sf.CrlState(number=1, base_number=1, this_update=first.this_update,
                          next_update=first.next_update),
        files=[first],
    )  # fmt: skip

    async def put() -> None:
        nc = await nats.connect(servers=cluster.urls)
        obs = await nc.jetstream().object_store(bucket)
        await obs.put(f"latest/{first.issuer}", msgspec.json.encode(older))
        await nc.close()

    asyncio.run(put())
    b_ = Builder(node, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        fetcher = Fetcher(
            c, bucket, b_.store, b_.manifest, Path(node.crl.directory), keep_days=node.crl.keep_days
        )
        with pytest.raises(ShippingError, match=rf"{first.issuer}: the signer's last CRL number "
                           r"\(1\) is below this node's \(\d+\)"):  # fmt: skip
            fetcher.fetch(int(time.time()))
    finally:
        c.close()
        b_.close()
        b_.log.close()
    assert crl_index(node) == held


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_shipped_crl_that_does_not_check_out_is_refused_and_nothing_is_written(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A shipped CRL whose signature does not verify with the issuer's CA certificate (its
    signature altered, its digest in the pointer made to match) is refused; the node keeps
    what it had."""
    import asyncio

    import nats

    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "bad")
    signer = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=True))
    node = node_config(
        tmp_path / "node", keyless_pki(demo_pki[0], tmp_path / "pki"), cluster.source, "bad"
    )
    run_node(signer, cluster, "CRLS_BAD")
    entries, _ = crl_index(signer)
    a = next(e for e in entries if not e.delta)
    der = bytearray((Path(signer.crl.directory) / a.path).read_bytes())
    der[-1] ^= 1  # the last octet of the signature
    forged = Shipment(
        issuer=a.issuer,
        state=sf.CrlState(number=99, this_update=a.this_update, next_update=a.next_update),
        files=[msgspec.structs.replace(a, size=len(der), sha256=hashlib.sha256(der).hexdigest())],
    )

    async def put() -> None:
        nc = await nats.connect(servers=cluster.urls)
        obs = await nc.jetstream().object_store("CRLS_BAD")
        await obs.put(a.path, bytes(der))
        await obs.put(f"latest/{a.issuer}", msgspec.json.encode(forged))
        await nc.close()

    asyncio.run(put())
    b_ = Builder(node, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    try:
        # the other issuers' CRLs are fetched; this one is refused
        with pytest.raises(ShippingError, match=rf"{a.issuer} CRL {a.number}: .*signature"):
            Fetcher(
                c,
                "CRLS_BAD",
                b_.store,
                b_.manifest,
                Path(node.crl.directory),
                keep_days=node.crl.keep_days,
            ).fetch(int(time.time()))
        assert not (Path(node.crl.directory) / f"{a.issuer}.crl").exists()
        with b_.store.read() as r:
            idx = next(i.index for i in r.issuers() if i.id == a.issuer)
            assert r.crl_state(idx).number != 99
        assert not (Path(node.crl.directory) / a.path).exists()
    finally:
        c.close()
        b_.close()
        b_.log.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_pointer_replaced_while_a_keyless_node_reads_it_is_read_again_not_waited_for(
    tmp_path: Path,
    cluster: NatsCluster,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signer replaces ``latest/<issuer>`` at each run and the object store purges the old
    chunks: a fetcher that took the pointer's description just before waits for chunks that
    never come. Reproduced on a real server (the pointer replaced between the description and
    the chunks): the fetch gives up within its bound with a `ClusterError` (a warning of the
    loop), its subscription ended (the server drops the consumer), and the next fetch places
    the CRLs. Before the bound, the keyless node's builder hung there for good (a cluster
    test's node that stopped applying the stream); with a bound around nats-py's own read, a
    consumer was left behind at each such race."""
    from nats.js.object_store import ObjectStore

    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "race")
    signer = msgspec.structs.replace(signer, crl=msgspec.structs.replace(signer.crl, enabled=True))
    node = node_config(
        tmp_path / "node", keyless_pki(demo_pki[0], tmp_path / "pki"), cluster.source, "race"
    )
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    run_node(signer, cluster, "CRLS_RACE")
    real_info = ObjectStore.get_info
    described: list[str] = []
    replaced: list[str] = []

    async def get_info(self: ObjectStore, name: str, *a: Any, **k: Any) -> Any:
        info = await real_info(self, name, *a, **k)
        described.append(name)
        if described.count(name) == 2 and name.startswith("latest/") and not replaced:
            # the fetcher compared the digest, now it reads the object: the signer's next run
            # replaces the pointer meanwhile (the same shipment, a byte more)
            replaced.append(name)
            old = await self.get(name)
            await self.put(name, (old.data or b"") + b"\n")
        return info  # the description of the pointer as it was: its chunks are gone

    monkeypatch.setattr(ObjectStore, "get_info", get_info)
    b = Builder(node, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    c = Cluster(cluster.urls)
    directory = Path(node.crl.directory)
    outcome: list[object] = []

    def fetch() -> None:
        try:
            outcome.append(Fetcher(c, "CRLS_RACE", b.store, b.manifest, directory, timeout=1.0,
                                   keep_days=node.crl.keep_days)
                           .fetch(int(time.time())))  # fmt: skip
        except ClusterError as e:
            outcome.append(e)

    def consumers() -> int:
        return c.run(c.js.stream_info("OBJ_CRLS_RACE")).state.consumer_count

    try:
        t = threading.Thread(target=fetch, daemon=True)
        started = time.monotonic()
        t.start()
        t.join(20)
        assert not t.is_alive(), "the fetch waited for the replaced pointer's chunks"
        assert replaced and time.monotonic() - started < 10
        assert isinstance(outcome[0], ClusterError), outcome
        assert "no chunk within 1 s (replaced or deleted while read)" in str(outcome[0])
        until(lambda: consumers() == 0, 30, "the abandoned read's consumer to go")
        monkeypatch.undo()
        placed = Fetcher(
            c, "CRLS_RACE", b.store, b.manifest, directory, keep_days=node.crl.keep_days
        ).fetch(int(time.time()))
    finally:
        c.close()
        b.close()
        b.log.close()
    assert placed
    assert crl_index(node) == crl_index(signer)


# ---------------------------------------------------------------------------
# A new node: a snapshot of a store, then the stream after it; /readyz's lag rule
# ---------------------------------------------------------------------------


def test_readyz_not_ready_until_within_the_lag_and_again_when_behind() -> None:
    now = 1_800_000_000
    assert verdict(0, 0, 0, now, max_lag=10) is not None  # never saw the stream
    assert (
        verdict(100, 500, now, now, max_lag=10)
        == "400 records behind the record stream (at most 10)"
    )
    assert verdict(495, 500, now, now, max_lag=10) is None  # caught up within the lag
    assert verdict(495, 520, now, now, max_lag=10) is not None  # fell behind again
    stale = verdict(500, 500, now - STALE_AFTER - 1, now, max_lag=10)
    assert stale is not None and "not seen" in stale  # the builder stopped seeing the stream


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_new_node_starts_from_a_snapshot_and_the_stream_after_it(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "snap")
    files = sorted(population.glob("*.jsonl"))
    half = len(files) // 2
    n1 = publish_files(a, cluster, files[:half])
    consume(a, cluster)
    c = Cluster(cluster.urls)
    store = Store.open(Path(a.store.path), readonly=True)
    try:
        info = snapshot.put(c, snapshot.Bucket("SNAP_T"), store)
    finally:
        store.close()
        c.close()
    assert info.stream_seq == n1
    n2 = publish_files(a, cluster, files[half:])
    consume(a, cluster)
    new = node_config(tmp_path / "new", demo_pki[0], cluster.source, "snap")
    same_key(Path(a.keys.facts_key_file), Path(new.keys.facts_key_file))
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", cluster.source,
         "--store", new.store.path, "--snapshot-bucket", "SNAP_T"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert msgspec.json.decode(out.stdout)["stream_seq"] == n1
    assert stream_seq(new) == n1  # the snapshot's own sequence: the builder resumes after it
    assert oct(Path(new.store.path, "data.mdb").stat().st_mode & 0o777) == "0o600"
    assert consume(new, cluster) == n1 + n2
    assert dump(new) == dump(a)
    fed = feed(new)  # a changes cursor of a reads on the new node alike (stream positions)
    assert fed == feed(a) and fed[0] and all(g is not None for g, _ in fed[1])
    s = Store.open(Path(new.store.path), readonly=True)
    try:
        with s.read() as r:
            head, seen_at = r.stream_head()
    finally:
        s.close()
    assert head == n1 + n2 and abs(seen_at - time.time()) < 60
    again = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", cluster.source,
         "--store", new.store.path, "--snapshot-bucket", "SNAP_T"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2 and "already there" in again.stderr


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_snapshot_replaced_while_a_new_node_reads_it_is_read_again(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node puts a newer snapshot while a new node reads the latest: the old chunks are
    purged, so the read gets no chunk within `snapshot.READ_IDLE` and reads the newer one
    (before, it waited for ever); the abandoned read leaves no consumer on the server."""
    from nats.js.object_store import ObjectStore

    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "resnap")
    publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:2])
    consume(a, cluster)
    c = Cluster(cluster.urls)
    bucket = snapshot.Bucket("SNAP_RACE")
    store = Store.open(Path(a.store.path), readonly=True)
    try:
        put = snapshot.put(c, bucket, store)
    finally:
        store.close()
    real_info = ObjectStore.get_info
    replaced: list[str] = []
    real_check = snapshot._check_there
    checking: list[bool] = []

    def check_there(*args: Any) -> None:  # get's question "is there a snapshot?": not the read
        checking.append(True)
        try:
            real_check(*args)
        finally:
            checking.pop()

    async def get_info(self: ObjectStore, name: str, *args: Any, **kw: Any) -> Any:
        info = await real_info(self, name, *args, **kw)
        if name == snapshot.OBJECT and not replaced and not checking:
            replaced.append(info.nuid)
            newer = await self.get(name)  # the same bytes put again: a new object, the old purged
            await self.put(name, newer.data or b"", meta=info.meta)
        return info

    monkeypatch.setattr(snapshot, "READ_IDLE", 1.0)
    monkeypatch.setattr(snapshot, "_check_there", check_there)
    monkeypatch.setattr(ObjectStore, "get_info", get_info)
    target = tmp_path / "new" / "store"
    try:
        t0 = time.monotonic()
        got: list[snapshot.SnapshotInfo] = []
        t = threading.Thread(target=lambda: got.append(snapshot.get(c, bucket, target)))
        t.daemon = True
        t.start()
        t.join(30)
        took = time.monotonic() - t0
        assert not t.is_alive(), "the read waited for the replaced snapshot's chunks"
        monkeypatch.undo()
        latest = c.run(c.js.object_store("SNAP_RACE"))
        now = c.run(latest.get_info(snapshot.OBJECT))
        assert replaced and replaced[0] != now.nuid  # the first read's object was replaced
        assert got == [put] and 1.0 <= took < 20
        assert dump_store(target, skip=[sf.DB_META]) == dump_store(
            Path(a.store.path), skip=[sf.DB_META]
        )
        until(
            lambda: c.run(c.js.stream_info("OBJ_SNAP_RACE")).state.consumer_count == 0,
            30,
            "the abandoned read's consumer to go",
        )
    finally:
        c.close()


# ---------------------------------------------------------------------------
# No NATS server answers at the start
# ---------------------------------------------------------------------------


def _no_file_over_64_kib() -> None:
    """In the child: a write past 64 KiB fails with EFBIG, as on a full disk (SIGXFSZ
    ignored, so the write returns the error rather than kill the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_snapshot_put_without_room_for_its_copy_says_so_without_a_traceback(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The copy of the store is made in TMPDIR first: no room there is one line naming the
    place and what it needs, exit 1, nothing put, nothing left behind (it was lmdb's
    traceback)."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "nocopy")
    publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:3])
    consume(a, cluster)
    assert Path(a.store.path, "data.mdb").stat().st_size > 64 * 1024
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "put", *flags(a),
         "--snapshot-bucket", "NOCOPY_T"],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(tmp)}, preexec_fn=_no_file_over_64_kib,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    # beside the loopback test server's warning (no NATS credential: crlbuilder.natsauth)
    (line,) = [x for x in out.stderr.strip().splitlines() if "anonymous connection" not in x]
    assert f"cannot copy the store into {tmp}/jpki-va-snapshot-" in line and "room" in line
    assert list(tmp.iterdir()) == []
    c = Cluster(cluster.urls)

    async def bucket_made() -> bool:
        try:
            await c.js.object_store("NOCOPY_T")
        except nats.js.errors.BucketNotFoundError:
            return False
        return True

    try:
        assert not c.run(bucket_made())  # the refused put asked nothing of the cluster
        with pytest.raises(ClusterError, match="no snapshot in NOCOPY_T"):
            snapshot.get(c, snapshot.Bucket("NOCOPY_T"), tmp_path / "got")
        assert not c.run(bucket_made())  # nor did the get that found none
    finally:
        c.close()


def unreachable(tmp: Path, pki: Path) -> tuple[BuilderConfig, int]:
    """A node's configuration naming a NATS server on a free port, where none answers (yet)."""
    (port,) = free_ports(1)
    return node_config(tmp, pki, f"nats://127.0.0.1:{port}", "early"), port


@pytest.mark.integration
@pytest.mark.real_clock  # a timed subprocess
@pytest.mark.parametrize(("command", "code"), [("build", 2), ("publish", 2), ("snapshot", 1)])
def test_a_one_shot_command_fails_at_once_when_no_nats_server_answers(
    command: str, code: int, tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Each server named is tried once, then the error and the exit code. (nats-py alone
    retries a first connection for ever when reconnection is unlimited: these hung, printing
    a traceback every 0.2 s.)"""
    cfg, port = unreachable(tmp_path / "n", demo_pki[0])
    records = tmp_path / "r.jsonl"
    records.write_text('{"id": "r1", "type": "nonsense"}\n')
    argv = {"build": ["build", "--no-progress"], "publish": ["publish", str(records)],
            "snapshot": ["snapshot", "get"]}[command]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", *argv, *flags(cfg)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == code, out.stderr[-2000:]
    assert f"cannot connect to NATS at nats://127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 20


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, timed waits
def test_snapshot_get_with_wait_reaches_a_server_that_starts_meanwhile(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A node's bootstrap (deploy/kubernetes: ``snapshot get --wait``) started before its NATS
    server tries again until the server answers, then says what the cluster says (here: no
    snapshot yet), rather than give up at once and leave the node to replay the whole stream."""
    cfg, port = unreachable(tmp_path / "n", demo_pki[0])
    log = tmp_path / "get.log"
    args = [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", *flags(cfg),
            "--wait", "60"]  # fmt: skip
    with procs.started(args, log=log) as p:
        until(lambda: "trying again" in log.read_text() or p.poll() is not None, 30, "a retry")
        assert p.poll() is None, log.read_text()[-2000:]
        with nats_server(tmp_path / "late-server", port):
            until(lambda: p.poll() is not None, 30, "the command's end")
    text = log.read_text()
    assert p.returncode == EXIT_NO_SNAPSHOT and "no snapshot in" in text, text[-2000:]
    assert "Traceback" not in text


@pytest.mark.integration
@pytest.mark.real_clock  # a timed subprocess
def test_snapshot_get_waits_no_longer_than_asked(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg, port = unreachable(tmp_path / "n", demo_pki[0])
    base = [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", *flags(cfg)]
    t0 = time.monotonic()
    out = subprocess.run([*base, "--wait", "3"], check=False, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    took = time.monotonic() - t0
    assert out.returncode == 1 and 3 <= took < 30, (took, out.stderr[-2000:])
    assert "trying again in 2 s" in out.stderr
    last = out.stderr.rstrip().splitlines()[-1]
    assert f"error: cannot connect to NATS at nats://127.0.0.1:{port}" in last
    bad = subprocess.run([*base, "--wait", "-1"], check=False, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "seconds are a finite number >= 0" in bad.stderr


def warnings_in(log: Path) -> list[str]:
    """The messages of the builder's warning events in ``log`` (its stderr)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = msgspec.json.decode(line)
            if event.get("event") == "warning":
                out.append(str(event["message"]))
    return out


def waiting(log: Path, port: int) -> bool:
    return any(f"cannot connect to NATS at nats://127.0.0.1:{port}" in m for m in warnings_in(log))


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, timed waits
def test_a_follower_started_before_its_nats_server_waits_for_it(
    tmp_path: Path, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg, port = unreachable(tmp_path / "early", demo_pki[0])
    args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(cfg), "--no-progress",
            "--follow", "--follow-interval", "0.2"]  # fmt: skip
    log = tmp_path / "early.log"
    with procs.started(args, log=log) as p:
        until(lambda: waiting(log, port) or p.poll() is not None, 30, "the builder's warning")
        assert p.poll() is None, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
        with nats_server(tmp_path / "late-server", port) as server:
            n = publish_files(cfg, server, sorted(population.glob("*.jsonl"))[:1])
            assert n > 0
            until(lambda: stream_seq(cfg) == n, 30, "the records applied")
            assert procs.stop(p, signal.SIGTERM, 15) == 0, log.read_text()[-2000:]
    assert len(warnings_in(log)) >= 1


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, timed waits
def test_a_follower_whose_nats_server_goes_says_so_in_its_events_without_tracebacks(
    tmp_path: Path, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Once connected, the connection's errors (its server gone, each reconnection refused,
    five times a second) are the builder's warning events, an identical one at most every
    10 s (`jetstream.WARN_EVERY`), not a nats-py traceback each in its JSON-lines stderr."""
    cfg, port = unreachable(tmp_path / "n", demo_pki[0])
    args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(cfg), "--no-progress",
            "--follow", "--follow-interval", "0.2"]  # fmt: skip
    log = tmp_path / "b.log"
    with nats_server(tmp_path / "server", port) as server:
        n = publish_files(cfg, server, sorted(population.glob("*.jsonl"))[:1])
        with procs.started(args, log=log) as p:
            until(lambda: stream_seq(cfg) == n or p.poll() is not None, 60, "the records applied")
            assert p.poll() is None, log.read_text()[-2000:]
            server.stop_all()
            until(lambda: any(m.startswith("NATS: ") for m in warnings_in(log)), 30, "a warning")
            time.sleep(3)  # some 15 reconnections refused meanwhile
            assert p.poll() is None, log.read_text()[-2000:]
            assert procs.stop(p, signal.SIGTERM, 15) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-2000:]
    nats = [m for m in warnings_in(log) if m.startswith("NATS: ")]
    assert 1 <= len(nats) <= 6, nats


@pytest.mark.integration
@pytest.mark.real_clock  # timed waits
def test_a_follower_stopped_while_waiting_for_its_nats_server_exits_0_promptly(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    cfg, port = unreachable(tmp_path / "early", demo_pki[0])
    args = [sys.executable, "-m", "crlbuilder.cli", "build", *flags(cfg), "--no-progress",
            "--follow"]  # fmt: skip
    log = tmp_path / "early.log"
    with procs.started(args, log=log) as p:
        until(lambda: waiting(log, port) or p.poll() is not None, 30, "the builder's warning")
        assert p.poll() is None, log.read_text()[-2000:]
        t0 = time.monotonic()
        assert procs.stop(p, signal.SIGTERM, 5) == 0, log.read_text()[-2000:]
        assert time.monotonic() - t0 < 2
    assert stream_seq(cfg) == 0  # nothing read


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster
def test_snapshot_get_from_a_bucket_without_a_snapshot_makes_no_directory(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """A bucket with no snapshot in it (a put that failed after making it): `get` made the
    target's parent directories, then said there was no snapshot."""
    c = Cluster(cluster.urls)
    try:
        c.run(c.js.create_object_store("EMPTY_T"))
        with pytest.raises(ClusterError, match="no snapshot in EMPTY_T"):
            snapshot.get(c, snapshot.Bucket("EMPTY_T"), tmp_path / "new" / "node" / "store")
        assert not (tmp_path / "new").exists()
    finally:
        c.close()


@pytest.mark.integration  # the command in a process
def test_snapshot_get_help_names_each_exit_status_and_the_two_a_bootstrap_starts_on() -> None:
    """`snapshot get --help` (and `snapshot --help`), in a process: each status and its case,
    the operator's scripts' reference."""
    for argv in (["snapshot", "get", "--help"], ["snapshot", "--help"]):
        out = subprocess.run([sys.executable, "-m", "crlbuilder.cli", *argv], check=True,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        text = " ".join(out.stdout.split())
        for said in ("0 got;", f"{EXIT_NO_SNAPSHOT} no snapshot in the bucket, as JetStream",
                     "1 no NATS server answering", "2 a refused command line",
                     f"{EXIT_SNAPSHOT_REFUSED} the latest snapshot refused",
                     f"lets its builder start on 0 and {EXIT_NO_SNAPSHOT} only"):  # fmt: skip
            assert said in text, (argv, said, text)


@pytest.mark.integration
@pytest.mark.real_clock  # real NATS servers, asyncio timeouts
def test_snapshot_get_says_no_snapshot_only_when_jetstream_answers_that_there_is_none(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """`snapshot get`'s exit status for each case. No snapshot in the bucket, as JetStream
    answered it (the bucket not there; there and empty; its snapshot deleted): its own status
    (`EXIT_NO_SNAPSHOT`), the one besides 0 on which a new node's bootstrap lets its builder
    start empty. Never for what cannot tell whether there is one: no NATS server answering,
    a server without JetStream, a bucket there whose snapshot JetStream does not give (here a
    user not allowed to read it), each 1; nor for bytes that are not a store, 2. Each failure
    says that the node does not start from an empty store, and what to do; nothing made."""
    from crlbuilder.natsauth import NatsAuth, new_user_seed
    from tests.support.nats import NATS_SERVER

    def get(
        bucket: str, source: str = cluster.source, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        target = tmp_path / bucket / "node" / "store"
        out = subprocess.run(
            [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", source,
             "--store", str(target), "--snapshot-bucket", bucket, "--stream", "nostream"],
            env=env, check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in out.stderr and not (tmp_path / bucket).exists(), out.stderr
        return out

    def no_snapshot(out: subprocess.CompletedProcess[str], why: str) -> None:
        assert out.returncode == EXIT_NO_SNAPSHOT, (out.returncode, out.stderr)
        line = out.stderr.splitlines()[-1]  # after the anonymous connection's warning
        assert "no snapshot in" in line and why in line and "error" not in line, line

    def failed(out: subprocess.CompletedProcess[str], code: int, *said: str) -> None:
        assert out.returncode == code, (out.returncode, out.stderr)
        last = out.stderr.splitlines()[-1]
        assert "no snapshot in" not in out.stderr, out.stderr
        assert "does not start from an empty store" in last, last
        assert all(s in last for s in said), last

    c = Cluster(cluster.urls)
    try:
        c.run(c.js.create_object_store("EMPTY_CLI"))

        async def put_then_delete() -> None:
            obs = await c.js.create_object_store("DELETED_CLI")
            await obs.put(snapshot.OBJECT, b"a store once")
            await obs.delete(snapshot.OBJECT)

        c.run(put_then_delete())
        info = snapshot.SnapshotInfo(stream_seq=5, commit=1, size=11, release=str(release.CURRENT))

        async def put_damaged() -> None:
            obs = await c.js.create_object_store("DAMAGED_CLI")
            meta = ObjectMeta(name=snapshot.OBJECT, description=msgspec.json.encode(info).decode())
            await obs.put(snapshot.OBJECT, b"not a store", meta=meta)

        c.run(put_damaged())
    finally:
        c.close()

    no_snapshot(get("ABSENT_CLI"), "the bucket is not there")
    no_snapshot(get("EMPTY_CLI"), "the bucket holds none")
    no_snapshot(get("DELETED_CLI"), "the bucket holds none")
    failed(
        get("DAMAGED_CLI"), 2, "cannot open the store", "put a new snapshot from a caught-up node"
    )

    # no NATS server answering at all
    (port,) = free_ports(1)
    failed(get("ABSENT_CLI", f"nats://127.0.0.1:{port}"), 1, "cannot connect to NATS")

    # a NATS server answering, without JetStream: it cannot say whether there is a snapshot
    plain = tmp_path / "plain.log"
    with procs.started([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)], log=plain):
        until(lambda: "Server is ready" in plain.read_text(), 30, "the server without JetStream")
        failed(get("ABSENT_CLI", f"nats://127.0.0.1:{port}"), 1)

    # the bucket there, JetStream not giving its snapshot (a user that may ask for the
    # bucket's stream info but not read its messages)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    admin_key, blind_key = (new_user_seed(seeds / f"{n}.seed") for n in ("admin", "blind"))
    authz = (
        "authorization { users = [\n"
        f'  {{nkey: "{admin_key}", permissions: {{publish: ">", subscribe: ">"}}}}\n'
        f'  {{nkey: "{blind_key}", permissions: {{publish: {{allow: ["$JS.API.INFO", '
        '"$JS.API.STREAM.INFO.>"]}, subscribe: {allow: ["_INBOX_blind.>"]}}}\n'
        "] }\n"
    )
    admin = {"nkeys_seed_str": (seeds / "admin.seed").read_text().strip()}
    with nats_server(tmp_path / "authz", free_ports(1)[0], extra=authz, probe=admin) as server:
        a = Cluster(server.urls, auth=NatsAuth(nkey_seed=str(seeds / "admin.seed")))
        try:

            async def put_one() -> None:
                obs = await a.js.create_object_store("THERE_CLI")
                await obs.put(snapshot.OBJECT, b"a store")

            a.run(put_one())
        finally:
            a.close()
        env = {**os.environ, "JPKI_VA_NATS_NKEY_SEED": str(seeds / "blind.seed"),
               "JPKI_VA_NATS_INBOX": "_INBOX_blind"}  # fmt: skip
        failed(get("THERE_CLI", server.source, env), 1, "getting the snapshot from THERE_CLI")
        # the same user, a bucket not there: JetStream's answer (stream not found), no snapshot
        no_snapshot(get("ABSENT_CLI", server.source, env), "the bucket is not there")


@pytest.mark.integration
@pytest.mark.real_clock  # real NATS servers, asyncio timeouts
def test_a_bucket_lost_with_the_record_stream_is_no_snapshot_and_the_docs_hold_new_nodes(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """What `snapshot get` cannot tell apart: the record stream made again while the bucket
    kept its old snapshot is refused (3); made again with the bucket gone too (the servers'
    JetStream storage lost, or both deleted) it is no snapshot (4), as for a first node, and
    a new node would fill an empty store from the new stream (a rebuild, lapses dated anew).
    docs/operations.md says so where an operator decides to start a node: row 4 of "Add a
    node" and "A record stream made again" (no node starts from an empty store until the new
    stream's snapshot is put); it said the bootstrap refuses and waits."""
    from crlbuilder.stream import feed_id

    def get() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source",
             cluster.source, "--store", str(tmp_path / "node" / "store"),
             "--snapshot-bucket", "LOST_SNAP", "--stream", "LOSTREC"],
            check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    c = Cluster(cluster.urls)
    try:

        async def stream_then_snapshot() -> None:
            info = await c.js.add_stream(name="LOSTREC", subjects=["lostrec"])
            assert info.created is not None
            old = feed_id("LOSTREC", info.created).hex()
            desc = snapshot.SnapshotInfo(
                stream_seq=1, commit=1, size=7, release=str(release.CURRENT), feed=old
            )
            obs = await c.js.create_object_store("LOST_SNAP")
            meta = ObjectMeta(name=snapshot.OBJECT, description=msgspec.json.encode(desc).decode())
            await obs.put(snapshot.OBJECT, b"a store", meta=meta)
            await c.js.delete_stream("LOSTREC")  # made again: a creation time of its own
            await c.js.add_stream(name="LOSTREC", subjects=["lostrec"])

        c.run(stream_then_snapshot())
        kept = get()
        assert kept.returncode == EXIT_SNAPSHOT_REFUSED, kept.stderr
        c.run(c.js.delete_object_store("LOST_SNAP"))
    finally:
        c.close()
    lost = get()
    assert lost.returncode == EXIT_NO_SNAPSHOT, lost.stderr
    assert "the bucket is not there" in lost.stderr and not (tmp_path / "node").exists()

    ops = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    [row] = [ln for ln in ops.splitlines() if ln.startswith(f"   | {EXIT_NO_SNAPSHOT} |")]
    assert "lost with a record stream made again" in row, row
    made_again = ops.split("### A record stream made again", 1)[1].split("\n### ", 1)[0]
    said = " ".join(made_again.split())
    assert f"`snapshot get` finds no snapshot and exits {EXIT_NO_SNAPSHOT}" in said
    assert "start no new node and no node whose store is lost" in said


@pytest.mark.integration
@pytest.mark.real_clock  # real NATS servers, asyncio timeouts
def test_the_kubernetes_bootstrap_looks_in_the_bucket_its_configuration_names(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """The nodes' `bootstrap` init container (deploy/kubernetes, run by ``sh`` as written)
    in a deployment whose builder.toml names its own record stream and snapshot bucket: the
    latest snapshot there, of the stream's instance before it was made again, is refused
    (3) and the pod does not start. It looked in the default bucket instead, found none
    (4) and let the pod start empty on the stream made again."""
    import yaml

    from crlbuilder.stream import feed_id

    c = Cluster(cluster.urls)
    try:

        async def stream_then_snapshot() -> None:
            info = await c.js.add_stream(name="OWNREC", subjects=["ownrec"])
            assert info.created is not None
            desc = snapshot.SnapshotInfo(
                stream_seq=3, commit=1, size=7, release=str(release.CURRENT),
                feed=feed_id("OWNREC", info.created).hex(),
            )  # fmt: skip
            obs = await c.js.create_object_store("OWN_SNAPS")
            meta = ObjectMeta(name=snapshot.OBJECT, description=msgspec.json.encode(desc).decode())
            await obs.put(snapshot.OBJECT, b"a store", meta=meta)
            await c.js.delete_stream("OWNREC")  # made again: a creation time of its own
            await c.js.add_stream(name="OWNREC", subjects=["ownrec"])

        c.run(stream_then_snapshot())
    finally:
        c.close()
    config = tmp_path / "builder.toml"
    config.write_text(
        '[stream]\nname = "OWNREC"\nsubject = "ownrec"\nsnapshot_bucket = "OWN_SNAPS"\n'
    )
    manifest = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "jpki-va.yaml"
    [sts] = [
        d for d in yaml.safe_load_all(manifest.read_text())
        if d and d["kind"] == "StatefulSet" and d["metadata"]["name"] == "jpki-va"
    ]  # fmt: skip
    [boot] = sts["spec"]["template"]["spec"]["initContainers"]
    script = (
        str(boot["args"][0])
        .replace("/etc/jpki-va/builder.toml", str(config))
        .replace("/var/lib/jpki-va", str(tmp_path / "var"))
        .replace("--wait 300", "--wait 5")
    )
    env = {**os.environ, "NATS": cluster.source,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    out = subprocess.run(["sh", "-c", script], env=env, check=False, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == EXIT_SNAPSHOT_REFUSED, (out.returncode, out.stderr)
    assert "the latest snapshot in OWN_SNAPS" in out.stderr, out.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server and SoftHSM2 token, timed waits
def test_a_stream_follower_outlives_a_token_gone_while_it_signs(
    tmp_path: Path, population: Path, demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`build --source nats://... --follow` with its keys in a token that disappears: the
    records the stream brings meanwhile are committed and acknowledged, pre-signing and CRLs
    warn (the key named, never the PIN) instead of killing the node (it died with a traceback),
    and once the token is back the loop signs by itself: CRLs with the new revocation and its
    pre-signed answer, the process alive throughout (`crlbuilder.signing_retry`)."""
    token = make_token(tmp_path / "hsm", monkeypatch, pin="stream-token-pin-4821")
    tokens, away = token.directory / "tokens", token.directory / "tokens-away"
    try:
        pki = tmp_path / "pki"
        shutil.copytree(demo_pki[0], pki)
        keys_into_token(pki, token)
        (port,) = free_ports(1)
        (tmp_path / "n").mkdir()
        base = builder_config(tmp_path / "n", pki)
        cfg = msgspec.structs.replace(
            base,
            input=msgspec.structs.replace(base.input, source=f"nats://127.0.0.1:{port}"),
            stream=msgspec.structs.replace(base.stream, name="hsm", subject="jpki.hsm",
                                           durable="hsm-node"),
        )  # fmt: skip
        args = [sys.executable, "-m", "crlbuilder.cli", "build", "--no-progress", "--follow",
                "--follow-interval", "0.2", "--sign-workers", "1",
                *(f for f in flags(cfg) if f not in ("--no-crl", "--no-presign"))]  # fmt: skip
        good = next(
            a
            for line in (population.parent / "answers.jsonl").read_bytes().splitlines()
            if (a := msgspec.json.decode(line, type=Answer)).status is CertStatus.GOOD
            and a.family is Family.AUTH_CARD
        )
        rec = {"type": "revocation-request", "id": "stream-token-gone-1", "issuer": good.issuer,
               "recorded_at": datetime.now(UTC).isoformat(), "serial": good.serial,
               "reason": "loss"}  # fmt: skip
        revocation = tmp_path / "revocation.jsonl"
        revocation.write_bytes(msgspec.json.encode(rec) + b"\n")
        log = tmp_path / "b.log"

        def events() -> list[dict[str, Any]]:
            lines = log.read_text(errors="replace").splitlines()
            return [msgspec.json.decode(x) for x in lines if x.startswith("{")]

        def signing_failed() -> list[str]:
            return [m for m in warnings_in(log) if "signing failed" in m]

        with nats_server(tmp_path / "server", port) as server, procs.started(args, log=log) as p:
            n = publish_files(cfg, server, sorted(population.glob("*.jsonl")))
            until(lambda: stream_seq(cfg) == n or p.poll() is not None, 120, "the records")
            until(lambda: any(e.get("crls") for e in events()) or p.poll() is not None, 60,
                  "the first CRLs, signed in the token")  # fmt: skip
            assert p.poll() is None, log.read_text()[-2000:]
            tokens.rename(away)  # the token disappears under the running node
            assert publish_files(cfg, server, [revocation]) == 1
            until(lambda: stream_seq(cfg) == n + 1 or p.poll() is not None, 60, "the revocation")
            until(lambda: bool(signing_failed()) or p.poll() is not None, 60, "a warning")
            assert p.poll() is None, log.read_text()[-2000:]  # alive, not crashed
            assert token.pin not in log.read_text()
            failed = len(events())
            away.rename(tokens)  # back: the node signs again without a restart

            def signed_again() -> bool:
                return any(e.get("crls") and e.get("ocsp_presigned") for e in events()[failed:])

            until(lambda: signed_again() or p.poll() is not None, 60, "CRLs signed again")
            assert p.poll() is None, log.read_text()[-2000:]
            crl_dir = Path(cfg.crl.directory)
            crls = [x509.load_der_x509_crl(f.read_bytes())
                    for f in crl_dir.glob(f"{good.issuer}*.crl")]  # fmt: skip
            assert any(c.get_revoked_certificate_by_serial_number(good.serial) for c in crls)
            assert procs.stop(p, signal.SIGTERM, 30) == 0, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
    finally:
        if away.exists():
            away.rename(tokens)
        token.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_store_filled_from_a_stream_made_again_is_refused_not_resumed_past_its_records(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The record stream deleted and made again under its name numbers from 1 again: a store
    that applied n1 records of the old one must not resume at n1 + 1 of the new one (that
    would pass the new stream's first n1 records: revocations never applied, silently)."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "remade")
    files = sorted(population.glob("*.jsonl"))
    half = len(files) // 2
    n1 = publish_files(a, cluster, files[:half])
    assert consume(a, cluster) == n1
    old_feed, before = feed(a)[0], dump(a)
    c = Cluster(cluster.urls)
    try:
        c.run(c.js.delete_stream("remade"))
    finally:
        c.close()
    n2 = publish_files(a, cluster, files[half:])  # the new stream: sequences 1 .. n2
    assert n2 > n1  # its first n1 records are the ones a resume at n1 + 1 would pass
    with pytest.raises(StreamReplaced, match="not the one this store was filled from"):
        consume(a, cluster)
    assert stream_seq(a) == n1 and feed(a)[0] == old_feed and dump(a) == before  # unchanged
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "build", *flags(a), "--no-progress"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == EXIT_STREAM_REFUSED, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("crlbuilder build: error:")]
    assert len(errors) == 1 and "made again" in errors[0] and "Traceback" not in out.stderr
    assert stream_seq(a) == n1 and dump(a) == before


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_whose_record_stream_is_made_again_stops_rather_than_sit_still(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The stream deleted and made again under a running follower, with fewer records than
    the store applied: the follower neither applies nothing while saying it sees the stream
    (ready, and stale) nor, later, resumes past the new stream's records: it stops."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "remade2")
    files = sorted(population.glob("*.jsonl"))
    n1 = publish_files(a, cluster, files[:-1])
    assert consume(a, cluster) == n1
    published: list[int] = []

    def make_again() -> None:
        time.sleep(1.5)  # the follower caught up and waits
        c = Cluster(cluster.urls)
        try:
            c.run(c.js.delete_stream("remade2"))
        finally:
            c.close()
        published.append(publish_files(a, cluster, files[-1:]))

    t = threading.Thread(target=make_again)
    t.start()
    started = time.monotonic()
    try:
        with follower(a, cluster, Consumer) as (b, consumer), pytest.raises(StreamReplaced):
            b.consume(consumer, follow=True, max_idle=20, interval=0.2)
    finally:
        t.join(timeout=60)
    assert time.monotonic() - started < 15
    assert 0 < published[0] < n1 and stream_seq(a) == n1


# ---------------------------------------------------------------------------
# Nodes on mixed releases (`crlbuilder.release`): refused, not applied by other rules
# ---------------------------------------------------------------------------

NEWER = release.Release(release.STORE_FORMAT, release.RULES + 1)
"""A release after this build's: a node of this build is the one left behind."""


def test_every_message_and_tick_names_the_release_that_published_it(tmp_path: Path) -> None:
    lines = [b'{"id": "r%d", "type": "nonsense"}' % i for i in range(3)]
    out = list(messages(_records(tmp_path, lines), StreamCipher(KEY), batch_size=2))
    tick = tick_message(AT)
    assert {m.headers[release.HEADER] for m in [*out, tick]} == {str(release.CURRENT)}
    assert release.parse(str(release.CURRENT)) == release.CURRENT


def test_a_batch_holding_a_newer_releases_message_is_refused_an_older_or_unnamed_one_taken() -> (
    None
):
    def d(seq: int, rel: str | None, *, tick: bool = False) -> Delivered:
        item = None if tick else Rejected("f", seq, "x")
        return Delivered(seq=seq, item=item, at=AT, end=True, pending=0, release=rel)

    older, newer = "1.1", str(NEWER)
    assert refusal([d(1, None), d(2, older), d(3, str(release.CURRENT))]) is None
    why = refusal([d(4, None), d(5, newer, tick=True)])
    assert why is not None and why.startswith("a tick of the record stream (sequence 5)")
    assert f"release {NEWER}, newer than this node's {release.CURRENT}" in why
    assert "non-signer nodes first, then the signer" in why  # the way out, in the line
    assert "\n" not in why
    # a newer store format is as newer, whatever the rules say
    assert release.Release(release.STORE_FORMAT + 1, 0).newer_than(release.CURRENT)
    odd = refusal([d(6, "2.x")])  # a header altered or not ours: not guessed at
    assert odd is not None and "unreadable release" in odd
    assert "(sequence 6)" in odd and "'JpkiVaStreamRefused'" in odd  # the way out, in the line
    assert release.parse(None) == release.parse("") == release.BEFORE


def test_a_batchs_first_message_of_a_release_that_signs_token_revocations_is_found() -> None:
    """`token_signatures`: the records before the first message of release 1.6 or later (a tick
    as a record, ticks not counted among the records) and that message's sequence."""

    def d(seq: int, rel: str | None, *, tick: bool = False) -> Delivered:
        item = None if tick else Rejected("f", seq, "x")
        return Delivered(seq=seq, item=item, at=AT, end=False, pending=0, release=rel)

    signs = str(release.SIGNS_TOKEN_REVOCATIONS)
    before = str(release.Release(1, release.SIGNS_TOKEN_REVOCATIONS.rules - 1))
    assert token_signatures([d(1, None), d(2, before, tick=True), d(3, before)]) == (2, None)
    assert token_signatures([d(4, before), d(5, signs, tick=True), d(6, before)]) == (1, 5)
    assert token_signatures([d(7, signs), d(8, None)]) == (0, 7)
    # a later release signs too (a newer format's rules may count from 1 again)
    assert token_signatures([d(9, None), d(10, "2.1")]) == (1, 10)
    assert token_signatures([d(11, "bad")]) == (1, None)  # unreadable: refused before anyway


def test_of_two_releases_at_most_one_is_newer_and_the_format_counts_first() -> None:
    """Releases are ordered (format, then rules): a store format's first release, its rules
    counted again from 1, is newer than every release of the format before, not older than
    a late one of it. Else two nodes each refuse the other's messages (and the line names
    1.5 "newer than" 2.1)."""
    late_old, first_new = release.Release(1, 5), release.Release(2, 1)
    assert first_new.newer_than(late_old) and not late_old.newer_than(first_new)
    assert release.refusal("a tick", "1.5", first_new) is None
    assert release.refusal("a tick", "2.1", late_old) is not None
    a, b = release.Release(1, 2), release.Release(1, 3)
    assert b.newer_than(a) and not a.newer_than(b) and not a.newer_than(a)


def test_readyz_and_the_gauge_say_the_builder_refused_the_stream(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from crlbuilder.store.writer import Commit
    from responder.streamgauges import StreamCollector

    now = 1_800_000_000
    assert verdict(500, 500, now, now, max_lag=10) is None
    why = verdict(500, 500, now, now, max_lag=10, refused="a tick ... newer")
    assert why == "the builder stopped applying the record stream: a tick ... newer"
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StreamCollector(s, max_lag=10))

        def gauge() -> str:
            text = generate_latest(registry).decode()
            return next(ln for ln in text.splitlines() if ln.startswith("jpkiva_stream_refused "))

        assert gauge() == "jpkiva_stream_refused 0.0"
        with Commit(s) as c:
            c.put_stream_refused("why\nnot")  # kept on one line
        with s.read() as r:
            assert r.stream_refused() == "why not"
        assert gauge() == "jpkiva_stream_refused 1.0"
        with Commit(s) as c:
            c.put_stream_refused("")
        assert gauge() == "jpkiva_stream_refused 0.0"
    finally:
        s.close()


def publish_tick(cfg: BuilderConfig, cluster: NatsCluster, n: int = 0) -> None:
    """A tick on ``cfg``'s stream, as the signer's builder publishes them (the ``n``th of a
    test: a tick's id is its second, and two in one second are one)."""
    c = Cluster(cluster.urls)
    try:
        cipher = StreamCipher(bytes.fromhex(Path(cfg.keys.facts_key_file).read_text().strip()))
        Consumer(c, names(cfg), "ticker", cipher).tick(datetime.now(UTC) + timedelta(seconds=n))
    finally:
        c.close()


def refused(cfg: BuilderConfig) -> str:
    s = Store.open(Path(cfg.store.path), readonly=True)
    try:
        with s.read() as r:
            return r.stream_refused()
    finally:
        s.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_rolling_upgrade_non_signer_nodes_first_then_the_signer_keeps_every_node_applying(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order docs/operations.md gives: a node upgraded while the signer is not applies the
    older release's records and ticks; the signer upgraded last publishes the newer release,
    which every node (upgraded by then) applies; the stores end alike."""
    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "upgrade")
    node = node_config(tmp_path / "node", demo_pki[0], cluster.source, "upgrade")
    same_key(Path(signer.keys.facts_key_file), Path(node.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    third = len(files) // 3
    n1 = publish_files(signer, cluster, files[:third])  # every node on this release
    assert consume(signer, cluster) == n1 == consume(node, cluster)
    n2 = publish_files(signer, cluster, files[third : 2 * third])
    publish_tick(signer, cluster)  # the signer, not upgraded yet, ticks
    with monkeypatch.context() as m:  # the non-signer node upgraded first
        m.setattr(release, "CURRENT", NEWER)
        assert consume(node, cluster) == n1 + n2 + 1
    with monkeypatch.context() as m:  # then the signer, then the publisher
        m.setattr(release, "CURRENT", NEWER)
        assert consume(signer, cluster) == n1 + n2 + 1
        publish_tick(signer, cluster, 1)
        n3 = publish_files(signer, cluster, files[2 * third :])
        total = n1 + n2 + 1 + 1 + n3
        assert consume(signer, cluster) == total == consume(node, cluster)
    assert refused(signer) == refused(node) == ""
    assert dump(signer) == dump(node)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_node_left_on_an_older_release_stops_at_the_first_newer_message_then_resumes(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signer upgraded first (the wrong order): its first tick carries the newer release.
    The node still on this one applies nothing of that batch (no lapse, no erasure, no record,
    its store as it was), says why in one line, in its store for /readyz and the gauge; once
    upgraded it resumes at that tick and ends with the signer's bytes."""
    signer = node_config(tmp_path / "signer", demo_pki[0], cluster.source, "upgrade2")
    late = node_config(tmp_path / "late", demo_pki[0], cluster.source, "upgrade2")
    same_key(Path(signer.keys.facts_key_file), Path(late.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    half = len(files) // 2
    n1 = publish_files(signer, cluster, files[:half])
    assert consume(signer, cluster) == n1 == consume(late, cluster)
    with monkeypatch.context() as m:
        m.setattr(release, "CURRENT", NEWER)
        publish_tick(signer, cluster)
        n2 = publish_files(signer, cluster, files[half:])
        assert consume(signer, cluster) == n1 + 1 + n2
    before = dump(late)
    with pytest.raises(NewerRelease, match=f"sequence {n1 + 1}.*newer than this node's"):
        consume(late, cluster)
    assert stream_seq(late) == n1 and dump(late) == before
    why = refused(late)
    assert why.startswith(f"a tick of the record stream (sequence {n1 + 1}) was written by "
                          f"release {NEWER}")  # fmt: skip
    ready = verdict(n1, n1 + 1 + n2, int(time.time()), int(time.time()), max_lag=10**6,
                    refused=why)  # fmt: skip
    assert ready is not None and "stopped applying" in ready  # /readyz: 503 whatever the lag
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "build", *flags(late), "--no-progress"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == EXIT_STREAM_REFUSED, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("crlbuilder build: error:")]
    assert len(errors) == 1 and "upgrade this node" in errors[0], out.stderr
    assert "Traceback" not in out.stderr and stream_seq(late) == n1 and dump(late) == before
    with monkeypatch.context() as m:  # upgraded: it resumes at the tick
        m.setattr(release, "CURRENT", NEWER)
        assert consume(late, cluster) == n1 + 1 + n2
    assert refused(late) == "" and dump(late) == dump(signer)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_newer_release_claimed_without_the_stream_key_does_not_stop_the_nodes(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The ``Jpki-Release`` header was taken as it came: one message claiming a release no
    node runs (a tick needs no sealed payload) stopped every node's builder at it for good
    (exit 3, not restarted; upgrading cannot pass it). Anyone who may publish on the record
    subject could send it with no key at all: the signer node's NATS seed alone. A newer
    release is believed only when the message carries its MAC under the stream key (every
    release from this one writes it); an unvouched claim is read as no header, the tick a
    tick, the record refused as a message that does not open."""
    node = node_config(tmp_path / "node", demo_pki[0], cluster.source, "forgedrel")
    files = sorted(population.glob("*.jsonl"))
    half = len(files) // 2
    n1 = publish_files(node, cluster, files[:half])
    assert consume(node, cluster) == n1
    c = Cluster(cluster.urls)  # with the subject's permission, without the facts key
    try:
        for i, (rel, extra) in enumerate([(str(NEWER), {H_TICK: "1"}), ("99.x", {H_LINE: "1"})]):
            headers = {H_ID: f"forged-{i}", H_END: "1", release.HEADER: rel, **extra}
            c.run(c.js.publish(names(node).subject, b"" if i == 0 else b"\0" * 40,
                               headers=headers, stream=names(node).name))  # fmt: skip
    finally:
        c.close()
    n2 = publish_files(node, cluster, files[half:])
    consume(node, cluster)
    assert refused(node) == "" and stream_seq(node) == n1 + 2 + n2


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_that_no_longer_holds_the_next_record_is_refused_not_skipped(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A node whose store stands before the stream's first message (started empty, or from an
    old snapshot, after the stream was purged or given limits) had its consumer start at that
    first message: the records in between were passed over without a word, its store not the
    others'. It refuses the stream now, nothing written, the reason kept for /readyz."""
    old = node_config(tmp_path / "old", demo_pki[0], cluster.source, "purged")
    new = node_config(tmp_path / "new", demo_pki[0], cluster.source, "purged")
    same_key(Path(old.keys.facts_key_file), Path(new.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    n = publish_files(old, cluster, files[:2])
    assert consume(old, cluster) == n
    c = Cluster(cluster.urls)
    try:  # an operator's purge of the first half (no jpki-va role may)
        c.run(c.js.purge_stream(names(old).name, seq=n // 2))
    finally:
        c.close()
    with pytest.raises(
        StreamTruncated, match=f"no longer holds sequence 1 .*its first is {n // 2}"
    ):
        consume(new, cluster)
    assert stream_seq(new) == 0 and "no longer holds sequence 1" in refused(new)
    n2 = publish_files(old, cluster, files[2:3])
    assert consume(old, cluster) == n + n2  # a node past the purge goes on
    assert refused(old) == ""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_snapshot_of_a_newer_release_is_refused_nothing_made(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "snaprel")
    publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:2])
    consume(a, cluster)
    c = Cluster(cluster.urls)
    store = Store.open(Path(a.store.path), readonly=True)
    try:
        with monkeypatch.context() as m:
            m.setattr(release, "CURRENT", NEWER)
            info = snapshot.put(c, snapshot.Bucket("SNAP_REL"), store)
    finally:
        store.close()
        c.close()
    assert info.release == str(NEWER) and info.feed
    target = tmp_path / "new" / "store"
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", cluster.source,
         "--store", str(target), "--snapshot-bucket", "SNAP_REL", "--stream", "snaprel"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # its own status, not "no snapshot" (1): a new node's bootstrap fails on it alone
    assert out.returncode == EXIT_SNAPSHOT_REFUSED, out.stderr
    assert "upgrade this node" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "new").exists()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
@pytest.mark.parametrize("bytes_", [b"not a store", b""], ids=["unreadable", "empty"])
def test_a_snapshot_of_a_stream_made_again_is_refused_by_its_description_whatever_its_bytes(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    bytes_: bytes,
) -> None:
    """The snapshot's description names the stream it was filled from: a snapshot of the old
    stream is refused (exit 3, the bootstrap fails) before its bytes are read, so bytes that
    cannot be read or opened (another exit status, on which the bootstrap lets the builder
    fill an empty store from the stream made again) do not hide it."""
    stream, bucket = f"descfeed{len(bytes_)}", f"SNAP_DESC{len(bytes_)}"  # the cluster is shared
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, stream)
    files = sorted(population.glob("*.jsonl"))[:2]
    n = publish_files(a, cluster, files)
    c = Cluster(cluster.urls)
    try:
        old = current_feed_id(c, stream)
        assert old is not None
        c.run(c.js.delete_stream(stream))
    finally:
        c.close()
    publish_files(a, cluster, files)  # the stream made again, its history republished
    info = snapshot.SnapshotInfo(
        stream_seq=n, commit=1, size=len(bytes_), release=str(release.CURRENT), feed=old.hex()
    )
    c = Cluster(cluster.urls)
    try:
        assert current_feed_id(c, stream) != old

        async def put() -> None:
            obs = await c.js.create_object_store(bucket)
            meta = ObjectMeta(name=snapshot.OBJECT, description=msgspec.json.encode(info).decode())
            await obs.put(snapshot.OBJECT, bytes_, meta=meta)

        c.run(put())
    finally:
        c.close()
    target = tmp_path / "new" / "store"
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", cluster.source,
         "--store", str(target), "--snapshot-bucket", bucket, "--stream", stream],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == EXIT_SNAPSHOT_REFUSED, out.stderr
    assert "made again" in out.stderr and "crlbuilder stream adopt" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "new").exists()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_made_again_the_way_out_is_one_node_rebuilt_then_snapshots_of_it(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """docs/operations.md, "A record stream made again": every node refuses the new stream
    and says so (store, /readyz); the daily snapshot, made from the old stream, is refused
    too (the bootstrap would otherwise install a store that cannot resume); one node's store
    filled again from the new stream (every record republished), its snapshot starts the
    others, and they all end alike."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "again")
    b = node_config(tmp_path / "b", demo_pki[0], cluster.source, "again")
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    n1 = publish_files(a, cluster, files[: len(files) // 2])
    assert consume(a, cluster) == n1 == consume(b, cluster)
    bucket = snapshot.Bucket("SNAP_AGAIN")
    c = Cluster(cluster.urls)
    try:
        store = Store.open(Path(a.store.path), readonly=True)
        try:
            snapshot.put(c, bucket, store)  # the daily snapshot, of the old stream
        finally:
            store.close()
        c.run(c.js.delete_stream("again"))
    finally:
        c.close()
    n2 = publish_files(a, cluster, files)  # the new stream, every record published again
    for cfg in (a, b):
        with pytest.raises(StreamReplaced):
            consume(cfg, cluster)
        assert "made again" in refused(cfg) and stream_seq(cfg) == n1
    # the bootstrap's snapshot get: the old stream's snapshot would not resume; refused
    fresh = tmp_path / "fresh" / "store"
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", "--source", cluster.source,
         "--store", str(fresh), "--snapshot-bucket", bucket.name, "--stream", "again"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # its own status (a new node's bootstrap fails on it, and on no other), what to do in its
    # one line: the node does not start empty (a rebuild from the republished stream)
    assert out.returncode == EXIT_SNAPSHOT_REFUSED, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "another record stream" in errors[0], out.stderr
    assert "crlbuilder snapshot put" in errors[0] and "crlbuilder stream adopt" in errors[0]
    assert not (tmp_path / "fresh").exists()
    # the way out: a's store moved away, its builder fills an empty one from the new stream
    Path(a.store.path).rename(tmp_path / "a-old-store")
    assert consume(a, cluster) == n2 and refused(a) == ""
    c = Cluster(cluster.urls)
    try:
        store = Store.open(Path(a.store.path), readonly=True)
        try:
            snapshot.put(c, bucket, store)
        finally:
            store.close()
        Path(b.store.path).rename(tmp_path / "b-old-store")
        info = snapshot.get(c, bucket, Path(b.store.path), feed=current_feed_id(c, "again"))
    finally:
        c.close()
    assert info.stream_seq == n2
    assert consume(b, cluster) == n2 and refused(b) == ""
    assert dump(a) == dump(b) and feed(a) == feed(b)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_follower_whose_stream_is_made_again_as_long_as_the_old_one_stops_too(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The stream made again under a running follower with exactly as many messages as the
    store applied: no sequence goes back, no record waits past the store's, so nothing but
    the stream's identity tells; the follower must not sit caught up (ready) on the new
    stream, whose records it never applied."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "remade3")
    n1 = publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:1])
    assert consume(a, cluster) == n1
    start = datetime.now(UTC) - timedelta(days=1)

    def make_again() -> None:
        time.sleep(1.5)  # the follower caught up and waits
        c = Cluster(cluster.urls)
        try:
            c.run(c.js.delete_stream("remade3"))
            jetstream.ensure_stream(c, "remade3", ["jpki.remade3"])
            for i in range(n1):  # as many messages as the old stream held
                m = tick_message(start + timedelta(seconds=i))
                c.run(c.js.publish("jpki.remade3", m.payload, headers=m.headers))
        finally:
            c.close()

    t = threading.Thread(target=make_again)
    t.start()
    started = time.monotonic()
    try:
        with follower(a, cluster, Consumer) as (b, consumer), pytest.raises(StreamReplaced):
            b.consume(consumer, follow=True, max_idle=20, interval=0.2)
    finally:
        t.join(timeout=60)
    assert time.monotonic() - started < 19
    assert stream_seq(a) == n1 and "made again" in refused(a)


def prevented_restarts(unit: str) -> set[int]:
    """The exit statuses after which the systemd ``unit`` is not restarted."""
    text = (Path(__file__).parent.parent / "deploy" / "systemd" / unit).read_text()
    return {
        int(v)
        for ln in text.splitlines()
        if ln.startswith("RestartPreventExitStatus=")
        for v in ln.split("=", 1)[1].split()
    }


@pytest.mark.parametrize("unit", ["jpki-va-node-builder.service", "jpki-va-node-signer.service"])
def test_a_builder_whose_token_is_not_there_yet_at_start_is_restarted_a_refused_stream_not(
    tmp_path: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unit: str,
) -> None:
    """The node units stop restarting the builder after a refused record stream (restarting
    says it again) and a PIN the token refused, and after those only: a signing token that is not there yet at boot (an
    HSM or its daemon starting after the node) fails the start as an outage, and systemd
    must keep trying, as it did before, until the token is there."""
    from crlbuilder import cli
    from crlbuilder.keys.pkcs11 import TokenUnavailable

    cfg = node_config(tmp_path / "n", demo_pki[0], "nats://127.0.0.1:9", "tokenlate")

    def absent(self: Builder) -> None:
        raise TokenUnavailable("pkcs11:token=jpki-va;object=ca: token 'jpki-va': not present")

    monkeypatch.setattr(Builder, "check_signers", absent)
    args = [a if a != "--no-crl" else "--crl" for a in flags(cfg)]
    rc = cli.main(["build", *args, "--follow", "--no-progress"])
    assert "not present" in capsys.readouterr().err
    prevented = prevented_restarts(unit)
    assert rc != 0 and rc not in prevented
    # and a PIN the token refused (restarting gives it again, nearer to locking the token)
    assert prevented == {EXIT_STREAM_REFUSED, EXIT_PIN_REFUSED}


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_store_whose_builder_refused_the_stream_is_not_put_as_the_snapshot(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """docs/operations.md, "A record stream made again": the daily snapshot timer runs on
    the signer's node; while its store is the old stream's (its builder refused the new
    one), its put must not replace the snapshot another node, already filled from the new
    stream, put for the others' bootstrap (they would be refused it and fill from empty)."""
    from crlbuilder.store.writer import Commit

    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "snapput")
    publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:1])
    consume(a, cluster)
    s = Store.open(Path(a.store.path), readonly=False)
    try:
        with Commit(s) as c:
            c.put_stream_refused("the record stream snapput is not the one this store was "
                                 "filled from (deleted and made again?)")  # fmt: skip
    finally:
        s.close()
    out = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "put", "--source", cluster.source,
         "--store", a.store.path, "--snapshot-bucket", "SNAP_PUT_REFUSED"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "made again" in errors[0] and "not put" in errors[0], out.stderr
    c = Cluster(cluster.urls)
    try:  # nothing put: not even the bucket made
        with pytest.raises(nats.js.errors.NotFoundError):
            c.run(c.js.object_store("SNAP_PUT_REFUSED"))
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_lapsed_notice_is_erased_at_a_tick_on_every_node_with_the_same_bytes(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A move-out notice (転出届) whose 30-day lapse (Act §31(2)) was written leaves ``pending``
    at the end of its lapse record's retention (`crlbuilder.lapsed`: one day here, counted from
    the day after the lapse's, 初日不算入): the signer ticks when that falls due, though no CRL
    entry does, and a node reading the stream later erases it at the same tick, the same
    bytes. The lapse is written by the holder's next record (a new auth-card certificate,
    issued after the due instant: it holds nothing), in the records' batch."""
    pki, manifest = demo_pki
    jst = timezone(timedelta(hours=9))
    one_day = dict.fromkeys(("sign-card", "sign-mobile", "auth-card", "auth-mobile"), 1)
    cfgs = []
    for name in ("signer", "other"):
        c = node_config(tmp_path / name, pki, cluster.source, "noticetick")
        cfgs.append(msgspec.structs.replace(
            c, crl=msgspec.structs.replace(c.crl, retention_days=one_day)))  # fmt: skip
    a, b = cfgs
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    issuer = next(i for i in manifest.issuers if i.id.startswith("auth-card"))
    mid = datetime.now(jst).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    due = mid - timedelta(days=1)  # 00:00 JST of planned + 31, the day before ``mid``
    planned = (due - timedelta(days=31)).date()
    holder = hashlib.sha256(b"notice-tick").hexdigest()
    recs = [
        {"type": "resident-change", "id": "n1", "recorded_at": (due - timedelta(days=40)).isoformat(),
         "holder": holder, "change": "move-out-notice", "planned_date": planned.isoformat()},
        {"type": "issuance", "id": "i1", "recorded_at": (due + timedelta(hours=2)).isoformat(),
         "serial": 4444, "family": "auth-card", "issuer": issuer.id,
         "not_before": (due + timedelta(hours=2)).isoformat(),
         "not_after": (due + timedelta(days=900)).isoformat(), "holder": holder},
    ]  # fmt: skip
    records = tmp_path / "notice.jsonl"
    records.write_bytes(b"\n".join(map(msgspec.json.encode, recs)))
    clock = ShiftedClock(mid - timedelta(seconds=30))

    def notice(node: Builder) -> sf.PendingMoveOut | None:
        with node.store.read() as r:
            return r.pending(bytes.fromhex(holder))

    assert publish_files(a, cluster, [records]) == 2
    with follower(a, cluster, Shifted) as (builder, consumer):
        builder.clock = clock
        consumer.shift = clock.offset
        builder.consume(consumer, tail_wait=0.5)
        lapsed = notice(builder)
        assert lapsed is not None and lapsed.lapsed_at, "the lapse was not written"
        end = kept_until(lapsed.lapsed_at, 1)
        assert end == int((mid + timedelta(days=1)).timestamp())
        consumer.tick(clock())  # a periodic tick: the agenda is made, the notice on it
        builder.consume(consumer, tail_wait=0.5)
        assert notice(builder) is not None
        with builder.store.read() as r:
            phase_one, first_shift = r.stream_seq(), clock.offset
        # 3 s before the end, no periodic tick for an hour: only a tick when the notice's
        # erasure falls due erases it before max_idle ends the loop
        ticks = _follow_quiet(
            builder, consumer, clock, from_epoch(end) - timedelta(seconds=3), max_idle=8.0
        )
        left = notice(builder)
    assert left is None, "not erased at 00:00 JST: no tick when the notice's erasure fell due"
    assert ticks and from_epoch(end) <= ticks[0] < from_epoch(end) + timedelta(seconds=2), ticks
    # another node reads the same stream later, each message dated as the signer read it
    with follower(b, cluster, _Redated) as (other, replay):
        other.clock = clock
        replay.shifts = [(phase_one, first_shift), (None, clock.offset)]
        other.consume(replay, tail_wait=0.5)
        assert notice(other) is None
    assert feed(a) == feed(b)
    assert dump(a) == dump(b)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_kept_change_is_erased_at_a_tick_on_every_node_with_the_same_bytes(
    tmp_path: Path, cluster: NatsCluster, demo_pki: tuple[Path, Manifest]
) -> None:
    """A change of address (Act §12(1)) kept in ``taken`` leaves it once every card certificate
    issued by then has expired and its records' periods (one day here) have passed
    (`crlbuilder.keptfor`): the signer ticks when that falls due, though no CRL entry does, and a
    node reading the stream later erases it at the same tick, the same bytes."""
    from crlbuilder import keptfor

    pki, _manifest = demo_pki
    one_day = dict.fromkeys(("sign-card", "sign-mobile", "auth-card", "auth-mobile"), 1)
    cfgs = []
    for name in ("signer", "other"):
        c = node_config(tmp_path / name, pki, cluster.source, "takentick")
        cfgs.append(msgspec.structs.replace(
            c, crl=msgspec.structs.replace(c.crl, retention_days=one_day)))  # fmt: skip
    a, b = cfgs
    same_key(Path(a.keys.facts_key_file), Path(b.keys.facts_key_file))
    recorded = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6 * 366 + 20)
    end = keptfor.validity_end(int(recorded.timestamp()))
    mid = from_epoch(end) - timedelta(days=1)
    holder = hashlib.sha256(b"taken-tick").hexdigest()
    recs = [{"type": "resident-change", "id": "c1", "recorded_at": recorded.isoformat(),
             "holder": holder, "change": "fact-change", "fact": "address"}]  # fmt: skip
    records = tmp_path / "change.jsonl"
    records.write_bytes(b"\n".join(map(msgspec.json.encode, recs)))
    clock = ShiftedClock(mid)

    def kept(node: Builder) -> list[sf.Taken]:
        with node.store.read() as r:
            return r.taken(bytes.fromhex(holder))

    assert publish_files(a, cluster, [records]) == 1
    with follower(a, cluster, Shifted) as (builder, consumer):
        builder.clock = clock
        consumer.shift = clock.offset
        builder.consume(consumer, tail_wait=0.5)
        assert [t.at for t in kept(builder)] == [int(recorded.timestamp())]
        consumer.tick(clock())  # a periodic tick: the agenda is made, the holder on it
        builder.consume(consumer, tail_wait=0.5)
        assert kept(builder)
        with builder.store.read() as r:
            phase_one, first_shift = r.stream_seq(), clock.offset
        # 3 s before the end, no periodic tick for an hour: only a tick when the entry's
        # erasure falls due erases it before max_idle ends the loop
        ticks = _follow_quiet(
            builder, consumer, clock, from_epoch(end) - timedelta(seconds=3), max_idle=8.0
        )
        left = kept(builder)
    assert left == [], "not erased at its instant: no tick when the entry's erasure fell due"
    assert ticks and from_epoch(end) <= ticks[0] < from_epoch(end) + timedelta(seconds=2), ticks
    # another node reads the same stream later, each message dated as the signer read it
    with follower(b, cluster, _Redated) as (other, replay):
        other.clock = clock
        replay.shifts = [(phase_one, first_shift), (None, clock.offset)]
        other.consume(replay, tail_wait=0.5)
        assert kept(other) == []
    assert feed(a) == feed(b)
    assert dump(a) == dump(b)


class _Redated(Consumer):
    """The stream's consumer as of the clocks another node read it by: a message up to the
    stream sequence of each ``shifts`` entry (None: any) is shifted by its offset."""

    shifts: list[tuple[int | None, timedelta]]

    def fetch(self, n: int, timeout: float) -> list[Delivered]:
        def shift(seq: int) -> timedelta:
            return next(s for upto, s in self.shifts if upto is None or seq <= upto)

        return [dataclasses.replace(d, at=d.at + shift(d.seq)) for d in super().fetch(n, timeout)]
