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

import os
import signal
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder.jetstream import Cluster
from crlbuilder.rules import JST
from responder.ledger import Ledger, LedgerWriter, Method, Service, SlotCount
from responder.ledgerstream import bound, gather, ship
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


@pytest.fixture
def cluster(nats: NatsCluster) -> NatsCluster:
    """The session's NATS cluster (tests/conftest.py)."""
    return nats


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
    assert bound("jpki.ledger.JPKI_LEDGER.a", msgspec.json.encode(_counter())) == _counter()
    data = msgspec.json.encode(_counter(**bad))
    assert bound("jpki.ledger.JPKI_LEDGER.a", data) is None


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
