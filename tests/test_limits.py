"""Quotas and the CRL cycle across workers: the shared table and its documented error bound."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from responder.limits import LimitsTable
from responder.registry import Party, Service

NOW = 1_800_000_000.25


def party(**kw: object) -> Party:
    return Party(
        id="bank", name="Bank", titles=frozenset(), families=frozenset(), auth=frozenset(),
        cert_public_keys=(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_per_second_quota_in_one_worker(tmp_path: Path) -> None:
    LimitsTable.create(tmp_path / "t", 1)
    t = LimitsTable(tmp_path / "t", 1, 0)
    p = party(requests_per_second=5)
    assert [t.admit(p, NOW) for _ in range(7)] == [None] * 5 + ["second", "second"]
    assert t.admit(p, NOW + 1) is None  # a new second


def test_per_day_quota_turns_at_jst_midnight(tmp_path: Path) -> None:
    LimitsTable.create(tmp_path / "t", 1)
    t = LimitsTable(tmp_path / "t", 1, 0)
    p = party(requests_per_day=3)
    midnight_jst = (int(NOW) + 9 * 3600) // 86400 * 86400 - 9 * 3600
    admitted = [t.admit(p, midnight_jst - 10 + i) for i in range(5)]
    assert admitted == [None, None, None, "day", "day"]
    assert t.admit(p, midnight_jst + 1) is None


def test_no_quota_admits_everything(tmp_path: Path) -> None:
    LimitsTable.create(tmp_path / "t", 1)
    t = LimitsTable(tmp_path / "t", 1, 0)
    assert all(t.admit(party(), NOW) is None for _ in range(1000))


def _worker(path: str, index: int, n: int, q: multiprocessing.Queue[int]) -> None:
    t = LimitsTable(Path(path), 2, index)
    p = party(requests_per_day=500)
    q.put(sum(t.admit(p, NOW) is None for _ in range(n)))


def test_quota_holds_across_workers_within_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "t"
    LimitsTable.create(path, 2)
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), i, 2000, q)) for i in range(2)]
    for p in procs:
        p.start()
    admitted = q.get(timeout=30) + q.get(timeout=30)
    for p in procs:
        p.join(timeout=30)
    assert 500 <= admitted <= 500 + 1  # documented: at most workers - 1 over the quota


def test_crl_cycle_across_workers(tmp_path: Path) -> None:
    LimitsTable.create(tmp_path / "t", 2)
    a = LimitsTable(tmp_path / "t", 2, 0)
    b = LimitsTable(tmp_path / "t", 2, 1)
    p = party(crl_cycle_seconds=3600)
    assert a.admit_crl(p, Service.SIGN_CRL_FILE, NOW)
    assert not b.admit_crl(p, Service.SIGN_CRL_FILE, NOW + 10)  # the other worker sees it
    assert b.admit_crl(p, Service.AUTH_CRL_FILE, NOW + 10)  # another service, its own cycle
    assert b.admit_crl(p, Service.SIGN_CRL_FILE, NOW + 3600)
    assert party().crl_cycle_seconds == 0 and a.admit_crl(party(), Service.SIGN_CRL_FILE, NOW)
