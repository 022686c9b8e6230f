"""Quotas and the ledger across nodes (取決め; 帳簿, Act §40; 報告書, Act §41).

Unit: each node admits its share of an agreed quota, ceil(quota / nodes), so the nodes
together admit at most quota + nodes - 1 (the documented bound, `responder.limits`).

Integration, on a real three-server JetStream cluster on loopback: two nodes ship their
ledger counts to the ledger stream and either node's service ledger holds the sum; a node
SIGKILLed while counting loses nothing once it ships again, and shipping or gathering twice
counts nothing twice (`responder.ledgerstream`); a file is folded into per-day totals only
once shipped whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js import api

from crlbuilder.jetstream import Cluster, ClusterError, StreamUnbounded, ensure_stream
from crlbuilder.rules import JST
from responder.ledger import Ledger, LedgerWriter, Method, NodeNameChanged, Service, SlotCount
from responder.ledgerstream import bound, gather, ship, stream_id, subject
from responder.limits import Limit, LimitsTable, node_share
from tests.support.nats import NatsCluster
from tests.test_limits import NOW, party

# ---------------------------------------------------------------------------
# Unit: per-node shares of a quota
# ---------------------------------------------------------------------------


def test_agreement_quota_split_in_node_shares_within_the_bound() -> None:
    assert node_share(None, 3) is None
    assert node_share(10, 1) == 10
    assert node_share(10, 3) == 4  # three nodes admit 12 at most: quota + nodes - 1 = 12
    assert node_share(1, 3) == 1  # never zero: a quota of 1 is not refused outright
    for q in range(1, 50):
        for n in range(1, 8):
            share = node_share(q, n)
            assert share is not None and q <= n * share <= q + n - 1


def test_one_node_admits_its_share_of_the_per_second_quota(tmp_path: Path) -> None:
    LimitsTable.create(tmp_path / "t", 1)
    t = LimitsTable(tmp_path / "t", 1, 0, nodes=3)
    p = party(requests_per_second=10)
    got = [t.admit(p, NOW) for _ in range(6)]
    assert got[:4] == [None] * 4
    assert all(w is not None and w.limit is Limit.SECOND for w in got[4:])
    t.close()


# ---------------------------------------------------------------------------
# Integration: the service's ledger on the stream
# ---------------------------------------------------------------------------


def count(d: Path, party_id: str, n: int, worker: int = 0) -> None:
    with LedgerWriter.open(d, worker) as w:
        for _ in range(n):
            w.count(party_id, Service.SIGN_REVOCATION_INFO, Method.OCSP)


def service_total(d: Path) -> int:
    with Ledger.open(d) as ledger:
        ledger.view = "service_ledger"
        today = datetime.now(JST).date()  # the ledger counts JST days
        return sum(ledger.totals(today - timedelta(days=2), today + timedelta(days=2)).values())


def collect_and_ship(c: Cluster, d: Path, node: str, stream: str, **kw: float) -> int:
    with Ledger.open(d) as ledger:
        ledger.collect(**kw)
        return ship(c, ledger, node, stream)


def gather_into(c: Cluster, d: Path, stream: str) -> int:
    with Ledger.open(d) as ledger:
        return gather(c, ledger, stream)


_CRASH = """
import os, signal, sys
from pathlib import Path
from responder.ledger import LedgerWriter, Method, Service
w = LedgerWriter.open(Path(sys.argv[1]), 1)
for _ in range(int(sys.argv[2])):
    w.count("bank-b", Service.AUTH_REVOCATION_INFO, Method.OCSP)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_act_41_report_of_the_whole_service_exact_after_a_node_crash(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    stream = "LEDGER_T1"
    count(a, "bank-a", 7)
    count(b, "bank-b", 5)
    c = Cluster(cluster.urls)
    try:
        assert collect_and_ship(c, a, "node-a", stream) > 0
        assert collect_and_ship(c, b, "node-b", stream) > 0
        gather_into(c, a, stream)
        assert service_total(a) == 12
        # node b is killed while counting: what its worker file holds is shipped on restart
        p = subprocess.run([sys.executable, "-c", _CRASH, str(b), "9"], check=False, timeout=60)
        assert p.returncode == -signal.SIGKILL
        assert collect_and_ship(c, b, "node-b", stream) > 0
        gather_into(c, a, stream)
        assert service_total(a) == 21  # 7 + 5 + 9: none lost
        # shipping and gathering again, and a second gatherer: none doubled
        assert collect_and_ship(c, a, "node-a", stream) == 0
        assert collect_and_ship(c, b, "node-b", stream) == 0
        assert gather_into(c, a, stream) == 0
        gather_into(c, b, stream)
        assert service_total(b) == 21
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_shipping_node_folds_a_file_only_once_it_is_shipped_whole(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    d = tmp_path / "n"
    stream = "LEDGER_T2"
    count(d, "bank-a", 3)
    c = Cluster(cluster.urls)
    try:
        collect_and_ship(c, d, "node-n", stream)
        count(d, "bank-a", 4)  # counted after the shipment, then the writer stops
        with Ledger.open(d) as ledger:
            result = ledger.collect(retire_idle_after=0)
            assert result.retired == []  # its last 4 are not shipped: kept, not folded
        assert collect_and_ship(c, d, "node-n", stream, retire_idle_after=0) == 1
        with Ledger.open(d) as ledger:
            assert ledger.collect(retire_idle_after=0).retired  # shipped whole: folded now
        assert not list(d.glob("*.ledger"))
        gather_into(c, d, stream)
        assert service_total(d) == 7
        assert collect_and_ship(c, d, "node-n", stream) == 0
    finally:
        c.close()
    assert os.path.exists(d / "ledger.sqlite3")


# ---------------------------------------------------------------------------
# Unit: what a ledger message may carry into the service ledger
# ---------------------------------------------------------------------------


def _counter(**changes: object) -> SlotCount:
    good = {"node": "a", "file_id": "0" * 32, "slot": 0, "day": "2028-02-29",
            "party": "bank-a", "service": Service.SIGN_REVOCATION_INFO.value,
            "method": Method.OCSP.value, "count": 5}  # fmt: skip
    return SlotCount(**{**good, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"service": "ocsp"},  # no kind of provision of the Act
        {"method": "get"},
        {"day": "2027-02-29"},  # no such day
        {"day": "2028-1-5"},
        {"party": "Bank A"},  # no registry id
        {"count": -3},  # would subtract from the service's count
        {"count": 2**63 - 1},  # would overflow the report's sums
        {"slot": -1},
        {"file_id": "f"},
    ],
)
def test_a_ledger_message_that_is_no_counter_is_left_out_not_reported(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    """A message on a node's own subject whose body is not a counter the ledger could have
    written (an unknown kind or method, no date, a negative count...) is left out by `bound`:
    merged, it made every node's report of the year raise (Service('ocsp')), or counted
    a negative number of provisions into the 報告書 (Act §41)."""
    good = _counter()
    assert bound(subject("JPKI_LEDGER", good), msgspec.json.encode(good)) == good
    c = _counter(**bad)  # on its own counter's subject: refused for its body only
    assert bound(subject("JPKI_LEDGER", c), msgspec.json.encode(c)) is None


# ---------------------------------------------------------------------------
# Unit: a node that counted alone before it shipped (no NATS: ship = pending, then merged)
# ---------------------------------------------------------------------------


def _ship_into_service(d: Path, node: str) -> int:
    """What `ship` then `gather` do to this node's ledger, without a stream: the pending
    counters merged into the service table and marked shipped; returns how many."""
    with Ledger.open(d) as ledger:
        pending = ledger.ship_pending(node)
        ledger.merge_service(pending, ledger.service_seq() + 1)
        ledger.mark_shipped(pending, 0)
        return len(pending)


def _totals(d: Path) -> tuple[int, int]:
    """(this node's ledger, the service ledger): grand totals of every day."""
    with Ledger.open(d, readonly=True) as ledger:
        local = ledger.totals(date(1970, 1, 1), date(9999, 12, 31)).get((), 0)
        ledger.view = "service_ledger"
        return local, ledger.totals(date(1970, 1, 1), date(9999, 12, 31)).get((), 0)


def test_counts_folded_before_a_node_first_shipped_reach_the_service_ledger(
    tmp_path: Path,
) -> None:
    """A node that ran alone for a year folded its worker files into per-day totals (the
    files deleted); when ``[cluster] nats`` was then set, `ship_pending` shipped only the
    worker files' counters: the service's 帳簿 and every 報告書 on /reports/ (Act §40, §41)
    lost that year, the published report of 2025 falling to zero. The counts folded before
    the first shipment are shipped too, once, and nothing is doubled afterwards."""
    d = tmp_path / "n"
    clock_at = [datetime(2025, 12, 31, 23, 0, tzinfo=JST).timestamp()]
    with LedgerWriter.open(d, 0, clock=lambda: clock_at[0]) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP, 5)
        w.count("bank-b", Service.AUTH_CRL_FILE, Method.CRL_FILE, 2)
    with Ledger.open(d) as ledger:
        assert ledger.collect(retire_idle_after=0).retired  # alone: folded, file deleted
    assert _totals(d) == (7, 0)
    with Ledger.open(d) as ledger:
        assert ledger.shipping_state() is None  # alone: never shipped
        pending = ledger.ship_pending("node-n")
        assert len(pending) == 2  # the cluster set: the folded year is to be shipped
        state = ledger.shipping_state()
        assert state is not None and state.unshipped == 2  # the gauge sees them too
    assert _ship_into_service(d, "node-n") == 2  # shipped (the stream had none of them)
    assert _totals(d) == (7, 7)
    assert _ship_into_service(d, "node-n") == 0  # once
    # counting goes on, shipped as before; a shipped file folded doubles nothing
    clock_at[0] = datetime(2026, 1, 1, 0, 0, 1, tzinfo=JST).timestamp()
    with LedgerWriter.open(d, 0, clock=lambda: clock_at[0]) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP, 3)
    with Ledger.open(d) as ledger:
        ledger.collect()
    assert _ship_into_service(d, "node-n") == 1
    with Ledger.open(d) as ledger:
        assert ledger.collect(retire_idle_after=0).retired
    assert _ship_into_service(d, "node-n") == 0
    assert _totals(d) == (10, 10)


# ---------------------------------------------------------------------------
# Integration: the ledger stream is bounded (one message per counter), losing no count
# ---------------------------------------------------------------------------

_PARTIES = [f"bank-{i:02d}" for i in range(10)]
_KINDS = [(Service.SIGN_REVOCATION_INFO, Method.OCSP), (Service.AUTH_CRL_FILE, Method.CRL_FILE)]


def _stream_state(c: Cluster, stream: str) -> tuple[int, int]:
    """(messages, bytes) the ledger stream holds."""
    state = c.run(c.js.stream_info(stream)).state
    return int(state.messages), int(state.bytes)


def _report_json(d: Path, view: str, year: int) -> bytes:
    """The 報告書 (Act §41) of ``year`` from ``d``'s ledger, as /reports/YYYY.json gives it."""
    from responder.report import build_report, to_json

    with Ledger.open(d) as ledger:
        ledger.view = view
        report = build_report(
            ledger, year, registry_names={}, issuance_counts=None,
            generated_at=datetime(2000, 1, 1, tzinfo=JST),
        )  # fmt: skip
    return to_json(report)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts; the ledger's clock is given
def test_the_ledger_stream_keeps_one_message_per_counter_and_the_report_loses_nothing(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """Every collection shipped every counter that grew, and the stream kept every message:
    ~36,000 an hour per busy worker, the NATS disks full within weeks and the whole cluster
    stopped. Now the stream keeps each counter's latest value only: its size follows the
    counters (parties x kinds x days x worker files), not the collections; a worker restart
    (a new file), a day and a year rollover lose nothing; the report of a node that gathered
    only at the end equals the one of a node that gathered every message as it came (what
    an unbounded stream gave), and this node's own ledger."""
    d, early, late = tmp_path / "n", tmp_path / "early", tmp_path / "late"
    stream = "LEDGER_BOUND"
    clock_at = [datetime(2026, 12, 31, 23, 50, tzinfo=JST).timestamp()]
    c = Cluster(cluster.urls)
    try:
        w = LedgerWriter.open(d, 0, clock=lambda: clock_at[0])
        for step in range(40):
            if step == 10:  # the worker restarts: its file continued
                w.close()
                w = LedgerWriter.open(d, 0, clock=lambda: clock_at[0])
            if step == 20:  # a new worker file: the old one sealed, folded once shipped whole
                w.rotate()
            if step == 25:  # past midnight JST: a new day and a new year
                clock_at[0] = datetime(2027, 1, 1, 0, 0, 5, tzinfo=JST).timestamp()
                w.tick()
            for p in _PARTIES:
                for service, method in _KINDS:
                    w.count(p, service, method, step + 1)
            clock_at[0] += 10
            w.flush()
            with Ledger.open(d) as ledger:  # the master's collection: ship what grew
                ledger.collect(retire_idle_after=3600, now=clock_at[0])
                assert ship(c, ledger, "node-n", stream) > 0
            gather_into(c, early, stream)
        w.close()
        assert len(list(d.glob("*.ledger"))) == 1  # the sealed one folded: its counts in `counts`
        # 20 counters (10 parties x 2 kinds) in the first file, 20 in the second before
        # midnight, 20 there on the new day (and year)
        counters = 20 * 3
        messages, size = _stream_state(c, stream)
        assert messages == counters  # not 40 collections x 20 counters
        assert size < counters * 400, size  # ~300 bytes a counter
        gather_into(c, late, stream)
        for year in (2026, 2027):
            mine = _report_json(d, "ledger", year)
            assert _report_json(early, "service_ledger", year) == mine
            assert _report_json(late, "service_ledger", year) == mine
        with Ledger.open(late) as ledger:
            ledger.view = "service_ledger"
            total = ledger.totals(date(2026, 1, 1), date(2027, 12, 31)).get((), 0)
        assert total == 20 * sum(range(1, 41))
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_ledger_stream_made_before_the_bound_is_refused_then_replaced_losing_nothing(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """A stream made by the earlier version keeps every message: it is refused with what
    to do (nothing written to it, the shipment counted as failed, the counts kept in the
    node's files); deleted by the operator, it is made again bounded, the node ships its
    whole ledger to it (what it had folded too) and a node that had gathered the old one
    reads the new one from its start: the service's report neither short nor doubled."""
    d, g = tmp_path / "n", tmp_path / "g"
    stream = "LEDGER_OLD"
    c = Cluster(cluster.urls)
    try:
        # as the earlier version made and used it: no per-subject limit, one subject per node
        ensure_stream(c, stream, [f"jpki.ledger.{stream}.>"])
        count(d, "bank-a", 4)
        with Ledger.open(d) as ledger:
            ledger.collect()
            pending = ledger.ship_pending("node-n")
            for p in pending:
                c.run(c.js.publish(f"jpki.ledger.{stream}.node-n", msgspec.json.encode(p)))
            ledger.mark_shipped(pending, 0)
            assert ledger.collect(retire_idle_after=0).retired  # shipped whole: folded
        with Ledger.open(g) as ledger:  # a node that gathered it then
            ledger.merge_service(pending, 1)
        count(d, "bank-a", 3)  # a new worker file
        with Ledger.open(d) as ledger:
            ledger.collect()
            with pytest.raises(StreamUnbounded, match=f"nats stream rm {stream}") as e:
                ship(c, ledger, "node-n", stream)
            assert "\n" not in str(e.value)
            state = ledger.shipping_state()
            assert state is not None and state.failures == 1 and state.unshipped == 1
        with pytest.raises(StreamUnbounded), Ledger.open(g) as ledger:
            gather(c, ledger, stream)
        assert _stream_state(c, stream)[0] == 1  # nothing written to it
        c.run(c.js.delete_stream(stream))  # the operator, with an admin credential
        assert collect_and_ship(c, d, "node-n", stream) == 2  # the folded 4 and the live 3
        gather_into(c, g, stream)
        gather_into(c, tmp_path / "new", stream)
        for where in (g, tmp_path / "new"):
            with Ledger.open(where) as ledger:
                ledger.view = "service_ledger"
                assert ledger.totals(date(1970, 1, 1), date(9999, 12, 31)) == {(): 7}
        assert collect_and_ship(c, d, "node-n", stream) == 0
        assert _stream_state(c, stream)[0] == 2
        # every server of the cluster tells the same stream (no spurious "made again")
        ids = set()
        for url in cluster.urls:
            one = Cluster([url])
            try:
                ids.add(stream_id(one, stream))
            finally:
                one.close()
        assert len(ids) == 1
        assert gather_into(c, g, stream) == 0
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_one_shipment_of_a_node_at_a_time(tmp_path: Path, cluster: NatsCluster) -> None:
    """The stream keeps a counter's last message only: two shipments of one node crossing
    (worker 0's collection, `responder report --nats` run beside it) could leave an
    older, smaller value last, lost to every node gathering afterwards, while the node
    marked the larger one shipped. A shipment waits for the one under way."""
    d = tmp_path / "n"
    stream = "LEDGER_LOCK"
    count(d, "bank-a", 2)
    c = Cluster(cluster.urls)
    try:
        done: list[int] = []
        with Ledger.open(d) as held, held.ship_lock():
            t = threading.Thread(target=lambda: done.append(collect_and_ship(c, d, "n", stream)))
            t.start()
            t.join(1.5)
            assert t.is_alive() and not done  # waits for the shipment under way
        t.join(30)
        assert done == [1]
    finally:
        c.close()


def test_the_ledger_streams_bound_is_judged_exactly() -> None:
    """A ledger stream is kept only with one message per subject: none (an earlier
    release's, growing for ever) or more (made by another hand) is not the stream jpki-va
    makes, and a per-subject limit on a stream that must keep every message (records) is
    refused as before."""
    from crlbuilder.jetstream import foreign

    subjects = ["jpki.ledger.JPKI_LEDGER.>"]

    def with_bound(n: int) -> api.StreamConfig:
        return api.StreamConfig(name="JPKI_LEDGER", subjects=subjects, max_msgs_per_subject=n)

    assert foreign(with_bound(1), subjects, allow_direct=False, max_msgs_per_subject=1) == ""
    assert foreign(with_bound(-1), subjects, allow_direct=False, max_msgs_per_subject=1) == (
        "max_msgs_per_subject unlimited, not 1"
    )
    assert foreign(with_bound(5), subjects, allow_direct=False, max_msgs_per_subject=1) == (
        "max_msgs_per_subject 5, not 1"
    )
    assert foreign(with_bound(1), subjects, allow_direct=False) == (
        "max_msgs_per_subject 1, not unlimited"
    )
    assert foreign(with_bound(-1), subjects, allow_direct=False) == ""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_ledger_stream_bounded_in_place_is_refused_until_its_old_messages_are_purged(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """An operator who sets the bound on the earlier release's stream in place (`nats stream
    edit --max-msgs-per-subject 1`) frees nothing: nats-server keeps the messages already
    there. Refused with the purge to run; once purged, the node ships its whole ledger and
    the service's total is right."""
    d, g = tmp_path / "n", tmp_path / "g"
    stream = "LEDGER_EDITED"
    c = Cluster(cluster.urls)
    try:
        ensure_stream(c, stream, [f"jpki.ledger.{stream}.>"])
        for _ in range(3):  # three collections of the earlier release, one subject per node
            count(d, "bank-a", 2)
            with Ledger.open(d) as ledger:
                ledger.collect()
                pending = ledger.ship_pending("node-n")
                for p in pending:
                    c.run(c.js.publish(f"jpki.ledger.{stream}.node-n", msgspec.json.encode(p)))
                ledger.mark_shipped(pending, 0)
        config = c.run(c.js.stream_info(stream)).config
        config.max_msgs_per_subject = 1
        c.run(c.js.update_stream(config))  # the operator, in place
        assert _stream_state(c, stream)[0] == 3  # nothing freed
        with Ledger.open(d) as ledger, pytest.raises(StreamUnbounded, match="stream purge"):
            ship(c, ledger, "node-n", stream)
        c.run(c.js.purge_stream(stream, subject=f"jpki.ledger.{stream}.*"))
        assert collect_and_ship(c, d, "node-n", stream) == 1
        gather_into(c, g, stream)
        with Ledger.open(g) as ledger:
            ledger.view = "service_ledger"
            assert ledger.totals(date(1970, 1, 1), date(9999, 12, 31)) == {(): 6}
        assert _stream_state(c, stream)[0] == 1
    finally:
        c.close()


def _replaced_once(
    monkeypatch: pytest.MonkeyPatch,
    c: Cluster,
    stream: str,
    then: Callable[[], object] = lambda: None,
) -> None:
    """The next shipment or gathering learns the stream's id, then the stream is deleted and
    made again (an operator's `nats stream rm`, another node's next collection: ``then``)
    before it publishes or reads."""
    import responder.ledgerstream as ls

    real = ls.stream_id
    fired: list[bool] = []

    def replacing(cluster: Cluster, name: str, known: str | None = None) -> str:
        sid = real(cluster, name, known)
        if not fired:
            fired.append(True)
            c.run(c.js.delete_stream(name))
            ensure_stream(c, name, [f"jpki.ledger.{name}.>"], max_msgs_per_subject=1)
            then()
        return sid

    monkeypatch.setattr(ls, "stream_id", replacing)


def _fresh_total(c: Cluster, tmp: Path, stream: str) -> int:
    g = tmp / "fresh"
    gather_into(c, g, stream)
    with Ledger.open(g) as ledger:
        ledger.view = "service_ledger"
        return ledger.totals(date(1970, 1, 1), date(9999, 12, 31)).get((), 0)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_made_again_during_a_shipment_doubles_no_folded_file(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipment that published to a stream made again since it learned the stream's id
    is not marked shipped: marked, its file would be folded and shipped a second time in the
    new stream's ``history`` beside its own subject there (the service's 報告書 doubled)."""
    d = tmp_path / "n"
    stream = "LEDGER_RACE1"
    c = Cluster(cluster.urls)
    try:
        count(d, "bank-a", 4)
        collect_and_ship(c, d, "node-n", stream)
        count(d, "bank-a", 3)  # the same worker file, now 7
        _replaced_once(monkeypatch, c, stream)
        with contextlib.suppress(ClusterError):  # told: nothing marked shipped
            collect_and_ship(c, d, "node-n", stream)
        monkeypatch.undo()
        with Ledger.open(d) as ledger:
            ledger.collect(retire_idle_after=0)
        for _ in range(2):
            collect_and_ship(c, d, "node-n", stream, retire_idle_after=0)
        assert _totals(d)[0] == 7
        assert _fresh_total(c, tmp_path, stream) == 7
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_made_again_during_the_first_shipment_doubles_no_history(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-day totals a node folded before shipping reach a new stream as one more
    file (``history``); a shipment of them that landed on a stream made again meanwhile is
    shipped again under the same id, the same subjects, not beside them under a new one."""
    d = tmp_path / "n"
    stream = "LEDGER_RACE2"
    count(d, "bank-a", 4)
    with Ledger.open(d) as ledger:
        assert ledger.collect(retire_idle_after=0).retired  # alone: folded
    c = Cluster(cluster.urls)
    try:
        _replaced_once(monkeypatch, c, stream)
        with contextlib.suppress(ClusterError):
            collect_and_ship(c, d, "node-n", stream)
        monkeypatch.undo()
        for _ in range(2):
            collect_and_ship(c, d, "node-n", stream)
        assert _totals(d)[0] == 4
        assert _fresh_total(c, tmp_path, stream) == 4
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_made_again_during_a_gathering_is_not_mixed_into_the_old_ones_counts(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gathering reads on from where it stopped in the stream it learned; when that stream
    was made again meanwhile, the new stream's messages past that point (a node's whole
    ledger shipped again, its folded files in its ``history``) are not merged beside the
    old stream's counters: the service's 報告書 would count a file twice, or miss one."""
    d, g = tmp_path / "n", tmp_path / "g"
    stream = "LEDGER_RACE3"
    c = Cluster(cluster.urls)
    try:
        count(d, "bank-a", 4)
        collect_and_ship(c, d, "node-n", stream)
        gather_into(c, g, stream)
        with Ledger.open(d) as ledger:
            assert ledger.collect(retire_idle_after=0).retired  # shipped whole: folded
        count(d, "bank-a", 3)  # a new worker file
        _replaced_once(monkeypatch, c, stream, lambda: collect_and_ship(c, d, "node-n", stream))
        with contextlib.suppress(ClusterError):
            gather_into(c, g, stream)
        monkeypatch.undo()
        with Ledger.open(g) as ledger:
            ledger.view = "service_ledger"
            mixed = ledger.totals(date(1970, 1, 1), date(9999, 12, 31)).get((), 0)
        assert mixed in (4, 7)  # the old stream's, or the new one's: never a mix
        gather_into(c, g, stream)
        with Ledger.open(g) as ledger:
            ledger.view = "service_ledger"
            assert ledger.totals(date(1970, 1, 1), date(9999, 12, 31)) == {(): 7}
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_gathering_of_a_replaced_stream_merges_nothing_beside_the_new_ones(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gatherings into one service ledger (worker 0's collection, `responder report
    --nats` beside it): one read the old stream; before it merges, the stream is made again and
    the other empties the service ledger and reads the new one. The first merges nothing
    then: its old counters beside the new stream's (a node's folded files again in its
    ``history``) would count twice, and no later gathering would empty them."""
    d, g = tmp_path / "n", tmp_path / "g"
    stream = "LEDGER_RACE4"
    c = Cluster(cluster.urls)
    try:
        count(d, "bank-a", 4)
        collect_and_ship(c, d, "node-n", stream)
        with Ledger.open(d) as ledger:
            assert ledger.collect(retire_idle_after=0).retired  # shipped whole: folded
        count(d, "bank-a", 3)  # a new worker file

        real = Ledger.merge_service
        fired: list[bool] = []

        def late(self: Ledger, *args: object, **kw: object) -> object:
            if not fired:
                fired.append(True)
                c.run(c.js.delete_stream(stream))
                collect_and_ship(c, d, "node-n", stream)  # made again, the whole ledger
                gather_into(c, g, stream)  # the other gathering: afresh
            return real(self, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(Ledger, "merge_service", late)
        with contextlib.suppress(ClusterError):
            gather_into(c, g, stream)
        monkeypatch.undo()
        assert fired
        gather_into(c, g, stream)
        with Ledger.open(g) as ledger:
            ledger.view = "service_ledger"
            assert ledger.totals(date(1970, 1, 1), date(9999, 12, 31)) == {(): 7}
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_the_earlier_release_check_walks_the_subjects_once_per_stream(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """Asking a stream for its subjects of the earlier release's format walks every subject
    it holds on the server (one node-year: ~146,000): asked when a ledger meets a stream,
    not at every shipment and gathering (every collection of every node)."""
    d = tmp_path / "n"
    stream = "LEDGER_ONCE"
    count(d, "bank-a", 2)
    c = Cluster(cluster.urls)
    try:
        real = c.js.stream_info
        filters: list[str | None] = []

        async def recording(name: str, subjects_filter: str | None = None) -> api.StreamInfo:
            filters.append(subjects_filter)
            return await real(name, subjects_filter=subjects_filter)

        c.js.stream_info = recording  # type: ignore[method-assign]
        for _ in range(3):
            collect_and_ship(c, d, "node-n", stream)
            gather_into(c, d, stream)
        assert filters.count(f"jpki.ledger.{stream}.*") == 2  # the first shipment, gathering
        assert service_total(d) == 2
        c.run(c.js.delete_stream(stream))  # made again: asked again
        collect_and_ship(c, d, "node-n", stream)
        gather_into(c, d, stream)
        assert filters.count(f"jpki.ledger.{stream}.*") == 4
        assert service_total(d) == 2
    finally:
        c.close()


# ---------------------------------------------------------------------------
# A node ships under one name: another would count every counter twice
# ---------------------------------------------------------------------------


def test_a_ledger_shipped_as_one_node_is_refused_under_another_name(tmp_path: Path) -> None:
    """The service ledger keeps one counter per (node, worker file, slot): a ledger shipped as
    ``node-a`` and then as ``other-host`` (a ``responder report --nats`` without ``--node``
    on a node whose ``[cluster] node`` is not its host name) had each counter twice in the
    service's 帳簿 and 報告書 (Act §40, §41). Refused now; the same name goes on."""
    d = tmp_path / "n"
    at = datetime(2026, 3, 1, 12, 0, tzinfo=JST).timestamp()
    with LedgerWriter.open(d, 0, clock=lambda: at) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP, 4)
    with Ledger.open(d) as ledger:
        ledger.collect(now=at)
        # a shipment the servers refused (not acknowledged, not marked): binds no name
        assert len(ledger.ship_pending("host-name")) == 1
        assert ledger.shipped_as() is None
    assert _ship_into_service(d, "node-a") == 1
    with LedgerWriter.open(d, 0, clock=lambda: at) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP, 1)
    with Ledger.open(d) as ledger:
        ledger.collect(now=at)
        with pytest.raises(NodeNameChanged, match="'node-a'"):
            ledger.ship_pending("other-host")
        assert ledger.shipped_as() == "node-a"
    assert _totals(d) == (5, 4)  # nothing shipped under the other name
    assert _ship_into_service(d, "node-a") == 1
    assert _totals(d) == (5, 5)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_report_nats_without_node_ships_as_the_ledgers_node_doubling_nothing(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """``responder report --nats`` without ``--node`` shipped under the host name: on a node
    whose responder ships as ``[cluster] node = "node-a"``, the report of the service counted
    the node's provisions twice. It ships as the name the ledger ships as now."""
    d = tmp_path / "a"
    stream = "LEDGER_NODE_NAME"
    count(d, "bank-a", 3)
    c = Cluster(cluster.urls)
    try:
        assert collect_and_ship(c, d, "node-a", stream) > 0  # the responder's exchange
    finally:
        c.close()
    count(d, "bank-a", 2)
    with Ledger.open(d, readonly=True) as ledger:
        days = ledger.rows(date(1970, 1, 1), date(9999, 12, 31))
    year = days[0].day.year  # the counts' JST day (the writer read the real clock)
    p = subprocess.run(
        [sys.executable, "-m", "responder", "report", "--year", str(year), "--format", "json",
         "--ledger", str(d), "--nats", ",".join(cluster.urls), "--ledger-stream", stream],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr.decode()
    assert msgspec.json.decode(p.stdout)["total"] == 5
    with Ledger.open(d, readonly=True) as ledger:
        ledger.view = "service_ledger"
        nodes = {r[0] for r in ledger._db.execute("SELECT DISTINCT node FROM service_live")}
    assert nodes == {"node-a"}


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_act_41_a_gathering_cut_short_by_a_fetch_timeout_is_not_whole(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch that timed out ended the read quietly: the gathering merged part of the stream
    and `exchange` marked it gathered, so a report said "every node's counts as shipped by
    then" while some were not in it. What was read is merged, the gathering fails (the report
    keeps its older as-of), and the next one reads on, losing and doubling nothing."""
    import nats.errors
    from nats.js.client import JetStreamContext

    import responder.ledgerstream as ls

    a, g = tmp_path / "a", tmp_path / "g"
    stream = "LEDGER_SHORT"
    for i, n in enumerate((3, 4, 5)):
        count(a, f"bank-{i}", n)
    c = Cluster(cluster.urls)
    try:
        assert collect_and_ship(c, a, "node-a", stream) >= 3
        real = JetStreamContext.PullSubscription.fetch
        calls = []

        async def first_only(self: JetStreamContext.PullSubscription, *args: object,
                             **kw: object) -> object:  # fmt: skip
            calls.append(1)
            if len(calls) > 1:
                raise nats.errors.TimeoutError
            return await real(self, *args, **kw)

        monkeypatch.setattr(ls, "FETCH_BATCH", 1)
        monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", first_only)
        with pytest.raises(ClusterError, match="before a fetch timed out"):
            gather_into(c, g, stream)
        assert 0 < service_total(g) < 12
        monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", real)
        gather_into(c, g, stream)
        assert service_total(g) == 12
    finally:
        c.close()


def _acks_never_come(monkeypatch: pytest.MonkeyPatch, c: Cluster, then: Callable[[], None]) -> None:
    """Every publish of ``c`` goes out, its acknowledgement never comes back to the shipment
    (as when the server died after reading it); ``then`` runs after the first."""
    real = c.js.publish_async

    async def unanswered(*args: Any, **kw: Any) -> asyncio.Future[object]:
        await real(*args, **kw)
        then()
        return asyncio.get_running_loop().create_future()

    monkeypatch.setattr(c.js, "publish_async", unanswered)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, stopped; asyncio timeouts
def test_a_shipment_whose_server_stops_under_it_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange's connection (``once``) lost while a shipment awaits its acknowledgements:
    the shipment fails as soon as the connection is lost, counted, instead of waiting through
    the reconnection for an acknowledgement the stopped server never sends (worker 0's
    collection timer stood still with it, and the ledger was collected no more: seen as the
    live test's failed shipments never counted)."""
    from crlbuilder.jetstream import ConnectionLost
    from tests.support.nats import free_ports, nats_server

    d = tmp_path / "n"
    count(d, "bank-a", 3)
    (port,) = free_ports(1)
    with nats_server(tmp_path / "nats", port) as server:
        c = Cluster(server.urls, once=True)
        try:
            with Ledger.open(d) as ledger:
                ledger.collect()
                stream_id(c, "LEDGER_LOST")  # made before, so the shipment only publishes
                _acks_never_come(monkeypatch, c, server.stop_all)
                started = time.monotonic()
                with pytest.raises(ClusterError, match="connection lost"):
                    ship(c, ledger, "n", "LEDGER_LOST")
                assert time.monotonic() - started < 8  # not the ACK_WAIT, not for ever
                state = ledger.shipping_state()
                assert state is not None and state.failures == 1 and state.shipped_at == 0
            with pytest.raises(ConnectionLost):  # and so does every later use of it
                c.run(asyncio.sleep(0))
        finally:
            c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_shipment_never_acknowledged_fails_after_the_ack_wait(
    tmp_path: Path, cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected, but the acknowledgements never come (a stream's leader lost meanwhile):
    the shipment fails after `ACK_WAIT` and is counted, nothing marked shipped, as it does
    when a publish waits as long for a slot among those awaited (nats-py's 4,000 in flight);
    the next one, acknowledged, ships it all."""
    import responder.ledgerstream as ls

    d = tmp_path / "n"
    stream = "LEDGER_UNACKED"
    count(d, "bank-a", 2)
    c = Cluster(cluster.urls, once=True)
    try:
        with Ledger.open(d) as ledger:
            ledger.collect()
            monkeypatch.setattr(ls, "ACK_WAIT", 0.5)
            with monkeypatch.context() as m:
                _acks_never_come(m, c, lambda: None)
                with pytest.raises(ClusterError, match=r"not acknowledged within 0\.5 s"):
                    ship(c, ledger, "n", stream)
            with monkeypatch.context() as m:  # nor a publish for a slot among those awaited
                m.setattr(c.js, "_publish_async_pending_semaphore", asyncio.Semaphore(0))
                with pytest.raises(ClusterError, match="stalled with too many outstanding"):
                    ship(c, ledger, "n", stream)
            state = ledger.shipping_state()
            assert state is not None and state.failures == 2 and state.shipped_at == 0
            assert ship(c, ledger, "n", stream) == 1
        assert _fresh_total(c, tmp_path, stream) == 2
    finally:
        c.close()
