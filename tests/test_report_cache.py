"""`responder.report.ReportCache`: a flood of /reports/ requests cannot keep a worker rendering.

The public yearly report (報告書, Act §41, published under Ord §72(2)) was rendered anew
for every request (a ledger merge and a full render each), so anyone could make the
workers' report threads work without end, as /metrics could (issue 10, item 5). Each
(year, format) now renders at most once per interval, requests during a render wait for
it, and the renders waiting at once are bounded. A fake clock and a counting render
stand in for time and the ledger.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from responder.report import Format, ReportCache


class Renders:
    """A render that counts its calls and can be held until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Format]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def __call__(self, year: int, fmt: Format) -> tuple[bytes, bytes]:
        self.calls.append((year, fmt))
        assert self.release.wait(5)
        if self.fail:
            raise OSError("ledger unreadable")
        return b"%d.%s #%d" % (year, fmt.encode(), len(self.calls)), b"text/plain"


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as p:
        yield p


def test_a_burst_renders_once_per_interval(pool: ThreadPoolExecutor) -> None:
    now = [100.0]
    render = Renders()
    cache = ReportCache(render, pool, max_age=10.0, clock=lambda: now[0])

    async def burst(n: int) -> list[tuple[bytes, bytes] | None]:
        return list(await asyncio.gather(*(cache.get(2026, "csv") for _ in range(n))))

    render.release.clear()  # the first render is slow: the whole burst comes while it runs

    async def slow_first() -> list[tuple[bytes, bytes] | None]:
        task = asyncio.ensure_future(burst(200))
        await asyncio.sleep(0.05)
        render.release.set()
        return await task

    first = asyncio.run(slow_first())
    assert render.calls == [(2026, "csv")]
    assert first == [(b"2026.csv #1", b"text/plain")] * 200
    now[0] += 9.9  # within the interval: the same bytes, no render, no task needed
    assert cache.fresh(2026, "csv") == (b"2026.csv #1", b"text/plain")
    assert asyncio.run(burst(200)) == first
    assert len(render.calls) == 1
    now[0] += 0.2  # the interval passed: one render for the next burst
    assert asyncio.run(burst(200)) == [(b"2026.csv #2", b"text/plain")] * 200
    # another format of the same year is another answer
    assert asyncio.run(cache.get(2026, "json")) == (b"2026.json #3", b"text/plain")
    assert cache.renders == len(render.calls) == 3


def test_renders_waiting_at_once_are_bounded(pool: ThreadPoolExecutor) -> None:
    render = Renders()
    cache = ReportCache(render, pool, max_age=10.0, max_renders=3)
    render.release.clear()

    async def many_years() -> list[tuple[bytes, bytes] | None]:
        task = asyncio.gather(*(cache.get(year, "html") for year in range(2000, 2010)))
        await asyncio.sleep(0.05)
        render.release.set()
        return list(await task)

    got = asyncio.run(many_years())
    # three renders; None (the app answers 429) to the rest
    assert [g is not None for g in got] == [True] * 3 + [False] * 7
    assert cache.renders == len(render.calls) == 3


def test_a_failed_render_is_not_kept(pool: ThreadPoolExecutor) -> None:
    render = Renders()
    cache = ReportCache(render, pool, max_age=10.0)
    render.fail = True
    with pytest.raises(OSError, match="ledger unreadable"):
        asyncio.run(cache.get(2026, "html"))
    render.fail = False
    assert asyncio.run(cache.get(2026, "html")) == (b"2026.html #2", b"text/plain")


def test_kept_answers_are_bounded(pool: ThreadPoolExecutor) -> None:
    render = Renders()
    cache = ReportCache(render, pool, max_age=10.0, max_entries=2)
    for year in (2024, 2025, 2026):
        asyncio.run(cache.get(year, "csv"))
    assert cache.fresh(2024, "csv") is None  # the least recently asked for went first
    assert cache.fresh(2025, "csv") is not None and cache.fresh(2026, "csv") is not None


def test_a_client_gone_does_not_cancel_the_render_others_wait_for(
    pool: ThreadPoolExecutor,
) -> None:
    render = Renders()
    cache = ReportCache(render, pool, max_age=10.0)
    render.release.clear()

    async def one_leaves() -> tuple[bytes, bytes] | None:
        leaving = asyncio.ensure_future(cache.get(2026, "csv"))
        staying = asyncio.ensure_future(cache.get(2026, "csv"))
        await asyncio.sleep(0.05)
        leaving.cancel()
        render.release.set()
        return await staying

    assert asyncio.run(one_leaves()) == (b"2026.csv #1", b"text/plain")
    assert cache.fresh(2026, "csv") == (b"2026.csv #1", b"text/plain")
