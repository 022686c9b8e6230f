"""POST /v1/watch and GET /v1/changes on several nodes, in process: each node's LMDB lists
apply one log of operations (`responder.v1.watchlog`), here a list standing for the watch
stream (the real stream: tests/test_cluster.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.natsauth import NatsAuth
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.config import ClusterConfig, LedgerConfig, ResponderConfig
from responder.http import Request, Response
from responder.registry.vocabulary import Method, Service
from responder.signing import SigningPool
from responder.v1 import changes, openapi, watchlog, watchstream
from responder.v1 import status as v1status
from responder.v1.holddown import HoldDown
from responder.v1.routes import Done, V1Api
from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchgauges import WatchCollector
from responder.v1.watchset import WatchKeys
from responder.v1.watchstream import StreamUnavailable, WatchStream
from tests.support.nats import free_ports, nats_server
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import written
from tests.test_natsauth import data
from tests.test_policy import NOW
from tests.test_v1_changes import AC, SC, A, Api, B, C, D, ref
from tests.test_v1_feedpos import node_a, node_b, pos, serials
from tests.test_v1_status import Quotas

SECRET = bytes(range(32))
KEYS_MAC = WatchKeys(SECRET).op_mac


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}


class Log:
    """The watch stream as `responder.v1.watchstream.WatchStream` is used: publish, last, get."""

    def __init__(self) -> None:
        self.ops: list[bytes] = []
        self.now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
        """The server's clock: when it stores each message published."""
        self.stamps: dict[int, int] = {}
        """When each published message was stored (``now_ms`` at its publish)."""
        self.lost: set[int] = set()
        """Sequences the stream no longer holds (purged)."""
        self.down = False
        self.delay = 0.0
        self.servers = ["nats://127.0.0.1:1"]
        self.auth = NatsAuth()  # no credential (the configuration's default)

    def _up(self) -> None:
        if self.down:
            raise StreamUnavailable("watch stream JPKI_WATCH: no servers available")

    def publish(self, op: bytes) -> int:
        self._up()
        self.ops.append(op)
        self.stamps[len(self.ops)] = self.now_ms()
        return len(self.ops)

    def last_seq(self) -> int:
        self._up()
        return len(self.ops)

    def state(self) -> watchstream.StreamState:
        return watchstream.StreamState(self.last_seq(), b"the log stream16", 1)

    def fetch(self, seq: int) -> watchlog.Stored | None:
        self._up()
        time.sleep(self.delay)
        if seq > len(self.ops) or seq in self.lost:
            return None
        return watchlog.Stored(self.ops[seq - 1], self.stamps.get(seq, self.now_ms()))

    def retry_after(self) -> int | None:
        return None


def replicated(api: Api, log: Log, d: Path, secret: bytes = SECRET) -> LmdbWatchSet:
    """Make ``api`` a node of several on ``log``, its lists in ``d``."""
    env = next(e for e in changes._ENVS.values() if e.watchset is api.watchset)
    env.keys = WatchKeys(secret)
    lists = LmdbWatchSet(d, env.keys, map_size=1 << 24)
    env.watchset = lists
    env.stream = log  # type: ignore[assignment]
    return lists


@pytest.fixture
def nodes(cas: dict[int, Ca], tmp_path: Path) -> Any:
    log = Log()
    a, b = Api(node_a(cas), tmp_path / "a", max_per_party=3), Api(node_b(cas), tmp_path / "b")
    la, lb = replicated(a, log, tmp_path / "a-lists"), replicated(b, log, tmp_path / "b-lists")
    yield log, a, b, la, lb
    la.close()
    lb.close()


def test_registered_through_one_node_read_through_another(nodes: Any) -> None:
    _log, a, b, la, lb = nodes
    resp, got = a.watch(add=[ref(SC, A), ref(SC, C)])
    assert resp.status == 200 and got["added"] == 2 and got["watching"] == 2, got
    assert la.applied() == 1 and lb.applied() == 0  # a answered after its own copy applied it
    assert a.ledger.counted == []  # registering is not a provision
    resp, got = b.changes(f"cursor={pos(0)}")  # b catches up before it reads
    assert resp.status == 200 and serials(got) == [A, C], got
    assert lb.applied() == 1
    assert b.ledger.counted and not a.ledger.counted  # counted on the node that delivered
    resp, got = a.watch(add=[ref(SC, A)], remove=[ref(SC, C)])
    assert (got["added"], got["already"], got["removed"]) == (0, 1, 1)
    resp, got = b.changes(f"cursor={pos(0)}")
    assert serials(got) == [A]


def test_a_batch_past_the_bound_is_refused_on_every_node(cas: dict[int, Ca], nodes: Any) -> None:
    """The bound travels with the operation (the taking node's ``max_per_party``): every node
    decides 409 the same, and nothing of the batch is applied anywhere."""
    _log, a, b, la, lb = nodes
    assert a.watch(add=[ref(SC, A), ref(SC, B)])[0].status == 200
    resp, got = a.watch(add=[ref(SC, C), ref(SC, 0x30)])
    assert (resp.status, got["rule"]) == (409, "watch_full"), got
    assert b.changes(f"cursor={pos(0)}")[0].status == 200  # b applies both operations
    assert lb.outcome(2) == la.outcome(2) and la.outcome(2).full  # type: ignore[union-attr]
    keys = [sf.status_key(SC, s) for s in (A, B, C, 0x30)]
    assert la.watched("sig", keys) == lb.watched("sig", keys) == [True, True, False, False]


def test_a_node_cut_off_answers_503_and_loses_nothing_when_back(nodes: Any) -> None:
    log, a, b, _la, lb = nodes
    a.watch(add=[ref(SC, A), ref(SC, B)])
    log.down = True
    resp, got = b.changes(f"cursor={pos(0)}")
    assert resp.status == 503 and (b"retry-after", b"1") in resp.extra_headers, got
    resp, got = a.watch(add=[ref(SC, C)])
    assert resp.status == 503 and len(log.ops) == 1, got  # not published: nothing to apply
    assert b.ledger.counted == [] and lb.applied() == 0
    log.down = False
    a.watch(add=[ref(SC, C)])
    env = next(e for e in changes._ENVS.values() if e.watchset is lb)
    log.delay = 0.05
    env.config = env.config.__class__(replication_wait_seconds=0.01)
    resp, got = b.changes(f"cursor={pos(0)}")  # behind past the wait: 503, what it applied stays
    assert resp.status == 503 and "still applying" in got["detail"], got
    assert lb.applied() == 1 and b.ledger.counted == []
    log.delay = 0.0
    resp, got = b.changes(f"cursor={pos(0)}")  # resumed where it stopped
    assert serials(got) == [A, B, C] and lb.applied() == 2


def test_a_node_with_another_secret_refuses_the_operations_rather_than_miss(
    cas: dict[int, Ca], tmp_path: Path, nodes: Any
) -> None:
    log, a, _b, _la, _lb = nodes
    a.watch(add=[ref(SC, A)])
    c = Api(node_b(cas), tmp_path / "c")
    lc = replicated(c, log, tmp_path / "c-lists", secret=bytes(32 * [5]))
    resp, got = c.changes(f"cursor={pos(0)}")
    assert resp.status == 503 and c.ledger.counted == [], got
    assert "same [watch] secret_file" in lc.replication()[3] and lc.applied() == 0
    lc.close()


def test_a_node_with_another_secret_publishes_nothing_the_others_would_stop_at(
    cas: dict[int, Ca], tmp_path: Path, nodes: Any
) -> None:
    """A batch sent to the node with the wrong secret is refused before it reaches the stream:
    published, it would stop the replication of every other node at it, for good (the stream
    keeps it; moving their lists away replays it again)."""
    log, a, b, _la, lb = nodes
    a.watch(add=[ref(SC, A)])
    c = Api(node_b(cas), tmp_path / "c")
    lc = replicated(c, log, tmp_path / "c-lists", secret=bytes(32 * [5]))
    resp, got = c.watch(add=[ref(SC, B)])
    assert resp.status == 503 and len(log.ops) == 1, got  # not published
    assert "same [watch] secret_file" in lc.replication()[3]
    resp, got = b.changes(f"cursor={pos(0)}")  # the others go on
    assert resp.status == 200 and serials(got) == [A] and lb.replication()[3] == "", got
    assert a.watch(add=[ref(SC, C)])[0].status == 200
    lc.close()


def test_an_operation_the_stream_lost_stops_replication(nodes: Any) -> None:
    log, a, b, _la, lb = nodes
    a.watch(add=[ref(SC, A)])
    a.watch(add=[ref(SC, B)])
    log.lost.add(1)
    resp, _got = b.changes(f"cursor={pos(0)}")
    assert resp.status == 503 and lb.applied() == 0
    assert "not on the stream" in lb.replication()[3]
    assert watchlog.decode(log.ops[1], KEYS_MAC) is not None


def test_bytes_that_no_node_signed_are_passed_over_not_stopped_at(nodes: Any) -> None:
    """Every responder's NATS user may publish on the watch subject: bytes that are no
    operation, or one copied from the stream with its removals, stopped or emptied every
    node's lists. Passed over now, every node alike; the lists go on."""
    log, a, b, _la, lb = nodes
    a.watch(add=[ref(SC, A)])
    log.ops.append(b"not an operation")
    read = watchlog.decode(log.ops[0], KEYS_MAC)  # its check, tag and digest, read back
    assert read is not None
    log.ops.append(watchlog.encode(read._replace(add=(), remove=read.add)))  # an unsigned removal
    a.watch(add=[ref(SC, B)])
    resp, got = b.changes(f"cursor={pos(0)}")
    assert resp.status == 200 and lb.applied() == 4 and lb.replication()[3] == "", got
    assert lb.passed()[0] == 2
    gauges = {m.name: m.samples[0].value for m in WatchCollector(lambda: lb).collect()}
    assert gauges["jpkiva_watch_passed_over_operations"] == 2  # JpkiVaWatchForgedOperation
    with lb.frozen() as (_applied, _sid, listed, signed_from):
        assert len(list(listed)) == 2 and signed_from == 1  # A still watched


def env_of(lists: LmdbWatchSet) -> changes.WatchEnv:
    return next(e for e in changes._ENVS.values() if e.watchset is lists)


def test_an_operation_published_again_later_is_passed_over_on_every_node(nodes: Any) -> None:
    """A signed operation copied from the stream and published again later (a new message
    id, which the MAC does not cover): the party's old removal of A, after it added A again,
    would take A off every node's list (its changes no longer delivered). The time it
    carries is more than a minute before the one the server stored the copy at: every node
    passes it over. A node whose clock is 59 s off still registers; 61 s off, every node
    passes its batch over and the node answers 503 saying why."""
    log, a, b, la, lb = nodes
    now = [1_780_000_000_000]  # the servers' clock (ms), and the publishing node's below
    log.now_ms = lambda: now[0]
    env_a = env_of(la)
    env_a.wall_ms = lambda: now[0]
    assert a.watch(add=[ref(SC, A), ref(SC, B)])[0].status == 200
    now[0] += 1_000
    assert a.watch(remove=[ref(SC, A)])[0].status == 200
    now[0] += 1_000
    assert a.watch(add=[ref(SC, A)])[0].status == 200
    now[0] += watchlog.REPLAY_WINDOW * 1000  # 61 s after the removal was published
    assert log.publish(log.ops[1]) == 4  # the removal again, verbatim
    assert b.changes(f"cursor={pos(0)}")[0].status == 200
    assert a.changes(f"cursor={pos(0)}")[0].status == 200
    keys = [sf.status_key(SC, s) for s in (A, B, C, D)]
    assert la.applied() == lb.applied() == 4
    assert la.watched("sig", keys) == lb.watched("sig", keys) == [True, True, False, False]
    assert la.passed()[0] == lb.passed()[0] == 1 and "publisher's time" in lb.passed()[1]
    assert lb.outcome(2) is not None and lb.outcome(2).removed == 1  # type: ignore[union-attr]
    env_a.wall_ms = lambda: now[0] - 59_000  # within the allowance
    resp, got = a.watch(add=[ref(SC, C)])
    assert resp.status == 200 and got["added"] == 1, got
    env_a.wall_ms = lambda: now[0] - 61_000
    resp, got = a.watch(add=[ref(SC, D)])
    assert resp.status == 503 and "clock is 61 s from" in got["detail"], got
    assert b.changes(f"cursor={pos(0)}")[0].status == 200
    assert la.watched("sig", keys) == lb.watched("sig", keys) == [True, True, True, False]
    assert la.passed()[0] == lb.passed()[0] == 2


def test_a_node_of_several_whose_store_names_no_stream_refuses_the_feed(
    cas: dict[int, Ca], nodes: Any, tmp_path: Path
) -> None:
    """Its cursors would name its own commits, which the other nodes number otherwise."""
    log, *_ = nodes
    d = Api(MemoryReader(**{**node_a(cas).__dict__, "feed": b""}), tmp_path / "d")
    replicated(d, log, tmp_path / "d-lists").close()
    resp, got = d.changes("")
    assert resp.status == 503 and "does not name the record stream" in got["detail"], got


def metrics(lists: LmdbWatchSet) -> dict[str, float]:
    return {m.name: m.samples[0].value for m in WatchCollector(lambda: lists).collect()}


def test_the_replication_is_on_metrics_and_a_stopped_one_says_so(
    cas: dict[int, Ca], tmp_path: Path, nodes: Any
) -> None:
    log, a, b, _la, lb = nodes
    a.watch(add=[ref(SC, A)])
    a.watch(add=[ref(SC, B)])
    b.changes(f"cursor={pos(0)}")
    got = metrics(lb)
    assert got["jpkiva_watch_applied_operations"] == 2
    assert got["jpkiva_watch_stream_operations"] == 2
    assert got["jpkiva_watch_stream_seen_timestamp_seconds"] > 0
    assert got["jpkiva_watch_replication_broken"] == 0
    c = Api(node_b(cas), tmp_path / "c")
    lc = replicated(c, log, tmp_path / "c-lists", secret=bytes(32 * [5]))
    c.changes(f"cursor={pos(0)}")
    assert metrics(lc)["jpkiva_watch_replication_broken"] == 1
    assert metrics(lc)["jpkiva_watch_applied_operations"] == 0
    lc.close()
    assert list(WatchCollector(lambda: None).collect()) == []  # not opened: no series


def test_a_node_of_several_draws_no_secret_of_its_own(tmp_path: Path) -> None:
    """Each node drawing its own would make digests no other node matches: it waits for the
    service's secret (and says so) instead."""
    config = ResponderConfig(
        ledger=LedgerConfig(dir=tmp_path / "ledger"), cluster=ClusterConfig(nats="nats://127.0.0.1:1")
    )  # fmt: skip
    env = changes.setup(config)
    assert env.lists() is None and not (tmp_path / "ledger" / "watch.secret").exists()
    one = changes.setup(ResponderConfig(ledger=LedgerConfig(dir=tmp_path / "one")))
    assert one.lists() is not None and (tmp_path / "one" / "watch.secret").exists()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_watch_stream_on_a_real_server_stores_once_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    """Publish, read back by sequence, a repeat of one request stored once (its message id);
    the same bytes sent by another request are another operation; the server restarted
    between two calls: the next call connects again instead of failing."""
    (port,) = free_ports(1)
    with nats_server(tmp_path, port) as server:
        stream = WatchStream(server.source, timeout=2.0)
        try:
            raw = op_bytes()
            once = b"one request nonce"[:16]
            assert stream.publish(raw, nonce=once) == 1 and stream.publish(raw, nonce=once) == 1
            assert (
                stream.last_seq() == 1 and data(stream.fetch(1)) == raw and stream.fetch(2) is None
            )
            server.kill(0)
            server.restart(0)
            assert stream.last_seq() == 1  # a new connection, no 503 for the party
            assert stream.publish(raw, nonce=once) == 1 and data(stream.fetch(1)) == raw
            assert stream.publish(raw) == 2 and data(stream.fetch(2)) == raw  # another request
        finally:
            stream.close()


def op_bytes() -> bytes:
    keys = WatchKeys(SECRET)
    tag = keys.tag("bank")
    made = watchlog.make_op(keys.check(), 5, [], keys.entries(tag, [sf.status_key(SC, A)]), tag)
    return watchlog.encode(made)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_watch_stream_made_again_stops_the_lists_that_applied_the_old_one(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """JPKI_WATCH deleted (lost, or removed by an operator who moved only some nodes' lists
    away) is made again empty by the next call, numbering from 1: lists that applied the old
    one must not pass the new one's operations as applied, nor answer an old outcome."""
    (port,) = free_ports(1)
    with nats_server(tmp_path, port) as server:
        streams = [WatchStream(server.source, timeout=2.0) for _ in range(4)]
        a, b = Api(node_a(cas), tmp_path / "a"), Api(node_b(cas), tmp_path / "b")
        la = replicated(a, streams[0], tmp_path / "a-lists")  # type: ignore[arg-type]
        lb = replicated(b, streams[1], tmp_path / "b-lists")  # type: ignore[arg-type]
        try:
            assert a.watch(add=[ref(SC, A)])[1]["watching"] == 1
            assert a.watch(add=[ref(SC, B)])[1]["watching"] == 2
            assert b.changes(f"cursor={pos(0)}")[0].status == 200 and lb.applied() == 2
            c = streams[2]._connected()
            c.run(c.js.delete_stream(watchstream.STREAM))
            # b's lists moved away (the runbook), a's not: b started again is a new node
            b2 = Api(node_b(cas), tmp_path / "b2")
            lb2 = replicated(b2, streams[3], tmp_path / "b-lists-new")  # type: ignore[arg-type]
            resp, got = b2.watch(add=[ref(SC, C)])  # the stream made again: operation 1
            assert resp.status == 200 and got["watching"] == 1, got
            resp, got = b2.changes(f"cursor={pos(0)}")
            assert serials(got) == [C], got
            resp, got = a.changes(f"cursor={pos(0)}")  # a would miss C: refused instead
            assert resp.status == 503 and a.ledger.counted == [], got
            assert "made again" in la.replication()[3]
            resp, got = a.watch(add=[ref(SC, 0x30)])  # not old operation 2's outcome
            assert resp.status == 503, got
            assert streams[3].last_seq() == 1  # a published nothing either
            assert b2.changes(f"cursor={pos(0)}")[0].status == 200 and lb2.applied() == 1
        finally:
            for s in streams:
                s.close()
            la.close()
            lb.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_batch_sent_again_after_another_is_applied_again_not_taken_for_a_repeat(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Add X, remove X, add X within the stream's duplicate window (120 s): the third batch
    has the bytes of the first, but is another request: it must be applied (X watched),
    not dropped as a repeat of the first and answered with the first one's outcome."""
    (port,) = free_ports(1)
    with nats_server(tmp_path, port) as server:
        streams = [WatchStream(server.source, timeout=2.0) for _ in range(2)]
        a, b = Api(node_a(cas), tmp_path / "a"), Api(node_b(cas), tmp_path / "b")
        la = replicated(a, streams[0], tmp_path / "a-lists")  # type: ignore[arg-type]
        lb = replicated(b, streams[1], tmp_path / "b-lists")  # type: ignore[arg-type]
        try:
            assert a.watch(add=[ref(SC, A)])[1]["added"] == 1
            assert a.watch(remove=[ref(SC, A)])[1]["removed"] == 1
            resp, got = a.watch(add=[ref(SC, A)])
            assert resp.status == 200 and (got["added"], got["watching"]) == (1, 1), got
            resp, got = b.changes(f"cursor={pos(0)}")
            assert serials(got) == [A], got  # watched on the other node too
            keys = [sf.status_key(SC, A)]
            assert la.watched("sig", keys) == lb.watched("sig", keys) == [True]
            assert streams[0].last_seq() == 3
        finally:
            for s in streams:
                s.close()
            la.close()
            lb.close()


def test_a_hold_down_grows_while_the_stream_fails_and_ends_when_a_call_succeeds() -> None:
    h = HoldDown(first=2.0, longest=16.0)
    assert h.wait(100.0) == 0 and h.retry_after(100.0) is None  # never failed: try
    assert [h.failed(t) for t in (100.0, 110.0, 120.0, 130.0, 140.0)] == [2, 4, 8, 16, 16]
    assert h.wait(141.5) == 14.5 and h.retry_after(141.5) == 15  # whole seconds, rounded up
    assert h.retry_after(155.9) == 1 and h.wait(156.0) == 0  # the next call tries
    h.succeeded()
    assert h.wait(141.5) == 0 and h.failed(200.0) == 2  # from the first interval again


def test_a_hold_down_through_an_outage_of_days_stays_at_its_longest_interval() -> None:
    """Failures in a row past a thousand (a day of outage at 16 s) do not overflow: the
    interval was first * 2.0**failures, and 2.0**1024 raises OverflowError in the batch
    thread of every feed call."""
    h = HoldDown(first=2.0, longest=16.0)
    intervals = [h.failed(16.0 * i) for i in range(6000)]
    assert intervals[:5] == [2, 4, 8, 16, 16] and set(intervals[4:]) == {16.0}


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server stopped by its PID, asyncio timeouts
def test_a_stream_out_of_reach_is_held_down_so_feed_calls_do_not_hold_the_batch_thread(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """NATS hung (its server stopped, SIGSTOP: connections accepted, nothing answered): the
    first feed call spends its connection timeout and answers 503; the calls that follow
    within the hold-down answer 503 at once with the hold-down's Retry-After, so a large
    POST /v1/status queued behind several of them in the worker's one batch thread is not
    held; once the server is back, the first call after the interval reads again."""
    (port,) = free_ports(1)
    with nats_server(tmp_path, port) as server:
        a = Api(node_a(cas), tmp_path / "a", nats=server.source, replication_wait_seconds=1)
        stream = WatchStream(server.source, timeout=1.0)
        lists = replicated(a, stream, tmp_path / "a-lists")  # type: ignore[arg-type]
        pool: SigningPool[Done] = SigningPool(1, 2)
        a.api = V1Api(
            (v1status.ROUTE, changes.WATCH_ROUTE, changes.CHANGES_ROUTE), a.config,
            store=a.reader, quota=Quotas(), ledger=a.ledger, signer=None,
        )  # fmt: skip
        proc = server.servers[0].proc
        assert proc is not None
        try:
            assert a.watch(add=[ref(SC, A)])[0].status == 200
            stream.close()  # the next call connects: one connection timeout, not two calls'
            os.kill(proc.pid, signal.SIGSTOP)
            t = time.monotonic()
            resp, got = a.changes(f"cursor={pos(0)}")
            first = time.monotonic() - t
            assert resp.status == 503 and first >= 1.0, (first, got)
            assert dict(resp.extra_headers)[b"retry-after"] == b"2"  # the hold-down's first
            t = time.monotonic()
            resp, got = a.changes(f"cursor={pos(0)}")
            held = time.monotonic() - t
            assert resp.status == 503 and held < 0.2, (held, got)
            assert dict(resp.extra_headers)[b"retry-after"] in (b"1", b"2"), resp.extra_headers
            a.api.pool = pool
            big = msgspec.json.encode({"entries": [ref(AC, D)] * 2000})

            def call(method: bytes, target: bytes, party: str, body: bytes = b"") -> Request:
                headers = {b"authorization": f"Bearer {party}".encode()}
                if body:
                    headers[b"content-type"] = b"application/json"
                return Request(method, target, headers, body, ("127.0.0.1", 1), None, b"1.1",
                               True, 1)  # fmt: skip

            async def burst() -> tuple[list[Response], float]:
                feed = f"/v1/changes?cursor={pos(0)}".encode()
                queued = [
                    a.api.handle(call(b"GET", feed, party), a.registry, NOW)
                    for party in ("sig", "both", "sig", "both")
                ]
                t = time.monotonic()
                status = a.api.handle(call(b"POST", b"/v1/status", "usr", big), a.registry, NOW)
                assert not isinstance(status, Response)  # queued behind the feed calls
                done = written(await status)  # as the layer writes it: counted
                waited = time.monotonic() - t
                return [
                    done,
                    *[await q if not isinstance(q, Response) else q for q in queued],
                ], waited

            (status, *feed), waited = asyncio.run(burst())
            assert status.status == 200 and waited < 0.5, waited
            assert len(msgspec.json.decode(bytes(status.body))["entries"]) == 2000
            assert [r.status for r in feed] == [503] * 4 and a.ledger.counted == [
                ("usr", Service.AUTH_REVOCATION_INFO, Method.JSON, 2000)
            ]
            a.api.pool = None
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            pool.close()
        time.sleep(stream.holddown.wait(time.monotonic()))
        resp, got = a.changes(f"cursor={pos(0)}")  # tried again: the server answers
        assert resp.status == 200 and serials(got) == [A], got
        assert stream.retry_after() is None
        stream.close()
        lists.close()


def test_a_batch_retried_after_a_503_that_registered_it_ends_the_same(nodes: Any) -> None:
    """The batch reached the stream, then the node lost it before it could apply it (503:
    it cannot say whether the batch was registered; the other nodes apply it). The party
    sends it again: answered 200, the list holds each certificate once, the bound counts
    them once (a's bound is 3: counted twice, 4 would be refused 409), nothing is counted in
    the ledger, and the changes are delivered once."""
    log, a, b, la, lb = nodes
    publish = log.publish

    def lost_after(op: bytes) -> int:
        seq = publish(op)
        log.down = True  # stored; the node cannot read it back
        return seq

    log.publish = lost_after  # type: ignore[method-assign]
    resp, got = a.watch(add=[ref(SC, A), ref(SC, B)])
    assert resp.status == 503 and len(log.ops) == 1, got
    assert "may have been registered" in got["detail"] and "again is safe" in got["detail"]
    log.publish = publish  # type: ignore[method-assign]
    log.down = False
    assert b.changes(f"cursor={pos(0)}")[0].status == 200 and lb.applied() == 1  # registered
    resp, got = a.watch(add=[ref(SC, A), ref(SC, B)])  # the party's retry
    assert resp.status == 200, got
    assert (got["added"], got["already"], got["watching"]) == (0, 2, 2), got
    assert la.count("sig") == 2 and la.outcome(2) == lb.outcome(1)._replace(added=0)  # type: ignore[union-attr]
    keys = [sf.status_key(SC, s) for s in (A, B)]
    assert la.watched("sig", keys) == [True, True] and a.ledger.counted == []
    resp, got = b.changes(f"cursor={pos(0)}")
    assert serials(got) == [A, B] and lb.applied() == 2, got  # each once
    # two reads from the same cursor: the second delivers A and B again, not counted again
    assert [n for _p, _s, _m, n in b.ledger.counted] == [2]


def test_the_openapi_document_says_a_watch_503_may_have_registered_and_a_retry_is_safe() -> None:
    doc = openapi.document((changes.WATCH_ROUTE, changes.CHANGES_ROUTE))
    said = doc["paths"]["/v1/watch"]["post"]["responses"]["503"]["description"]
    assert "may have been registered" in said and "again is safe" in said, said
    read = doc["paths"]["/v1/changes"]["get"]["responses"]["503"]["description"]
    assert "registered" not in read, read
    for op in (doc["paths"]["/v1/watch"]["post"], doc["paths"]["/v1/changes"]["get"]):
        assert op["responses"]["503"]["headers"]["Retry-After"]["required"] is True
