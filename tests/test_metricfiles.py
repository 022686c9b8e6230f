"""/metrics while workers come and go (responder/metricfiles.py, `MetricsApp`'s failures).

The race: a starting worker creates each metric file, then sizes it; a scrape in between
found an empty file and answered 500 (seen once in tests/test_pkcs11.py right after a
worker restart). Proved three ways: a directory in that state, scraped in process; workers
started in a tight loop (forked, each making its files as a real one does) while this
process scrapes, bounded in time; and the real `responder serve` with a worker's file
left empty in its metrics directory. A corrupt file still gives a 500, logged with why.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

from responder import metrics as m
from responder.config import MetricsConfig
from responder.http import Request, Response
from responder.metricfiles import HEADER, MetricsFileError, WorkerFiles, sized
from tests.conftest import Built
from tests.support.harness import parse_metrics, start_server, total

DEAD_PID = 4_194_305  # above any pid_max (2**22): no process has it
_KEY = '["jpkiva_requests", "jpkiva_requests_total", {"endpoint": "healthz"}, "h"]'


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """The records of the ``responder.metrics`` logger (caplog misses them once the server's
    logging set-up stopped their propagation in this process)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("responder.metrics")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _failures(records: list[logging.LogRecord]) -> list[dict[str, str]]:
    return [r.fields for r in records if r.getMessage() == "metrics_render_failed"]  # type: ignore[attr-defined]


def _get(path: bytes = b"/metrics") -> Request:
    return Request(b"GET", path, {}, b"", ("127.0.0.1", 1), None, b"1.1", True, 1, None)


def _healthz(wm: m.WorkerMetrics, n: int) -> None:
    for _ in range(n):
        wm.on_request_done(_get(b"/healthz"), Response(200, b"", b"text/plain"), 0.0001)


def test_sized() -> None:
    assert not sized(0) and not sized(HEADER - 1)
    assert sized(HEADER) and sized(1 << 16)


def test_files_created_but_not_yet_sized_are_left_out(mp_dir: Path) -> None:
    """The directory as a scrape finds it while a worker starts (or after one was killed
    between creating and sizing its files): empty files beside the live ones."""
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    app = m.MetricsApp(wm)
    _healthz(wm, 3)
    before = parse_metrics(app.handle(_get()).body.decode())
    for prefix in ("counter", "histogram", "gauge_livesum", "gauge_livemax"):
        (mp_dir / f"{prefix}_{DEAD_PID}.db").touch()  # open(..., "a+b"), not yet ftruncate
    resp = app.handle(_get())
    assert resp.status == 200, resp.body
    after = parse_metrics(resp.body.decode())
    assert total(after, "jpkiva_requests_total", endpoint="healthz") == 3
    assert total(after, "jpkiva_metrics_renders_total") == 2
    assert set(after) == set(before)
    # the starting worker goes on: sizes its file and counts; the next scrape has its count
    late = MmapedDict(str(mp_dir / f"counter_{DEAD_PID}.db"))  # type: ignore[no-untyped-call]
    late.write_value(_KEY, 2.0, 0.0)  # type: ignore[no-untyped-call]
    late.close()  # type: ignore[no-untyped-call]
    s = parse_metrics(app.handle(_get()).body.decode())
    assert total(s, "jpkiva_requests_total", endpoint="healthz") == 5
    wm.close()


def _corrupt(path: Path) -> None:
    """A sized file whose first entry claims more bytes than the file says it uses."""
    data = bytearray(1 << 16)
    struct.pack_into("i", data, 0, 64)  # used
    struct.pack_into("i", data, 8, 1000)  # the first key's length: beyond ``used``
    path.write_bytes(bytes(data))


def test_a_corrupt_file_is_a_500_logged_with_its_reason(
    mp_dir: Path, logged: list[logging.LogRecord]
) -> None:
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    app = m.MetricsApp(wm)
    _corrupt(mp_dir / f"counter_{DEAD_PID}.db")
    with pytest.raises(MetricsFileError, match=f"counter_{DEAD_PID}.db: RuntimeError"):
        list(WorkerFiles(mp_dir).collect())
    resp = app.handle(_get())
    assert resp.status == 500
    (fields,) = _failures(logged)
    assert fields["exc_type"] == "MetricsFileError"
    assert fields["reason"].startswith(f"counter_{DEAD_PID}.db: RuntimeError: Read beyond")
    wm.close()


def test_a_collector_failure_is_logged_with_where_not_what(
    mp_dir: Path, logged: list[logging.LogRecord]
) -> None:
    """Another cause (a collector's bug): the type and the code location, not the message."""

    class Broken(Collector):
        def collect(self) -> Iterable[Metric]:
            raise ValueError("holder 1234-5678 data")  # a message must never reach the log

    wm = m.WorkerMetrics(MetricsConfig(render_interval=0), collectors=[Broken()])
    assert m.MetricsApp(wm).handle(_get()).status == 500
    (fields,) = _failures(logged)
    assert fields["exc_type"] == "ValueError"
    assert fields["reason"].startswith("ValueError at ") and fields["reason"].endswith(":collect")
    assert "1234" not in str(fields)
    wm.close()


def _paused_worker(created: int, go: int, count: int) -> None:
    """In a forked child: a worker that stops after creating each metric file, before sizing
    it (writes its name to ``created``, waits for a byte on ``go``), then counts and exits."""
    import prometheus_client.mmap_dict as mmap_dict

    def open_then_pause(name: str, mode: str = "r", *args: object, **kwargs: object) -> object:
        f = open(name, mode, *args, **kwargs)  # type: ignore[call-overload]  # noqa: SIM115
        if "a" in mode:  # a new file of this process: created, size 0
            os.write(created, os.path.basename(name).encode() + b"\n")
            os.read(go, 1)
        return f

    mmap_dict.open = open_then_pause  # type: ignore[attr-defined]
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    _healthz(wm, count)
    wm.flush()


@pytest.mark.integration  # forks
def test_a_scrape_between_a_starting_worker_creating_and_sizing_each_file(mp_dir: Path) -> None:
    """The race made deterministic: a starting worker is held after creating each of its
    files (before ``ftruncate``) while this process scrapes; every scrape answers 200 with
    the totals so far, and once the worker has counted, its counts are there."""
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    app = m.MetricsApp(wm)
    _healthz(wm, 1)
    created_r, created_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(created_r)
            os.close(go_w)
            _paused_worker(created_w, go_r, 4)
        finally:
            os._exit(0)
    os.close(created_w)
    os.close(go_r)
    held: list[str] = []
    try:
        with os.fdopen(created_r, "rb") as pipe:
            for line in pipe:  # until the worker exits
                name = line.decode().strip()
                assert (mp_dir / name).stat().st_size == 0
                held.append(name)
                resp = app.handle(_get())
                assert resp.status == 200, (name, resp.body)
                s = parse_metrics(resp.body.decode())
                assert total(s, "jpkiva_requests_total", endpoint="healthz") == 1
                os.write(go_w, b"g")
    finally:
        os.close(go_w)
        os.waitpid(child, 0)
    assert {n.rsplit("_", 1)[0] for n in held} >= {"counter", "histogram", "gauge_livesum"}
    s = parse_metrics(app.handle(_get()).body.decode())
    assert total(s, "jpkiva_requests_total", endpoint="healthz") == 5
    wm.close()


def _start_workers(n: int, count: int) -> None:
    """In a forked child: start ``n`` workers one after the other, each making its metric
    files as a real worker does (`WorkerMetrics`), counting ``count`` and exiting."""
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
                _healthz(wm, count)
                wm.flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


@pytest.mark.integration  # forks
def test_scrapes_while_workers_start_in_a_tight_loop_never_fail(mp_dir: Path) -> None:
    """The race itself, not a hand-made directory: 150 workers start one after another while
    this process scrapes without pause (seconds). Before `WorkerFiles`, prometheus_client's
    merge met a file between its creation and its sizing within the first few starts and
    raised struct.error (a 500). Totals never go down from one scrape to the next."""
    wm = m.WorkerMetrics(MetricsConfig(render_interval=0))
    app = m.MetricsApp(wm)
    starts, count = 150, 2
    child = os.fork()
    if child == 0:
        try:
            _start_workers(starts, count)
        finally:
            os._exit(0)
    failures: list[bytes] = []
    seen: list[float] = []
    deadline = time.monotonic() + 60
    done = False
    try:
        while not done:
            done = os.waitpid(child, os.WNOHANG) != (0, 0)
            assert time.monotonic() < deadline, "the workers' starts took over a minute"
            resp = app.handle(_get())
            if resp.status != 200:
                failures.append(resp.body)
                continue
            s = parse_metrics(resp.body.decode())
            seen.append(total(s, "jpkiva_requests_total", endpoint="healthz"))
    finally:
        if not done:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    assert failures == []
    assert len(seen) > 20
    assert seen == sorted(seen)  # never down
    final = parse_metrics(app.handle(_get()).body.decode())
    assert total(final, "jpkiva_requests_total", endpoint="healthz") == starts * count
    wm.close()


def test_the_server_scrapes_past_a_worker_file_never_sized(built: Built, tmp_path: Path) -> None:
    """The real `responder serve`: a worker killed between creating its file and sizing it
    leaves an empty file for good; /metrics still answers 200. A corrupt file is a 500 with
    the reason in the server's log (``metrics_render_failed``), not a bare app error."""
    d = tmp_path / "metrics"
    with start_server(built, tmp_path / "srv", extra=("--metrics-dir", str(d))) as srv:
        assert srv.get("/healthz")[0] == 200
        (d / f"counter_{DEAD_PID}.db").touch()
        (d / f"gauge_livesum_{DEAD_PID}.db").touch()
        status, body = srv.get("/metrics", srv.metrics_url)
        assert status == 200, body
        assert total(parse_metrics(body.decode()), "jpkiva_workers_up") == 2
        _corrupt(d / f"histogram_{DEAD_PID}.db")
        assert srv.get("/metrics", srv.metrics_url)[0] == 500
        (event,) = srv.events("metrics_render_failed")
        assert str(event["reason"]).startswith(f"histogram_{DEAD_PID}.db: RuntimeError")
        assert srv.events("app_error") == []


# -- dead workers' files folded into the archive ---------------------------------------------


def _dead_worker(pid: int, requests: int) -> None:
    """The files a worker of ``pid`` leaves after counting ``requests`` /healthz answers of
    0.3 ms each (its counter and its histogram), as `WorkerMetrics` writes them."""
    from prometheus_client import Counter, Histogram, values

    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)  # type: ignore[no-untyped-call]
    counter = Counter("jpkiva_requests", "h", m.REQUEST_LABELS, registry=None)
    hist = Histogram(
        "jpkiva_request_duration_seconds", "h", ("endpoint",), buckets=m.BUCKETS, registry=None
    )
    counter.labels("healthz", "GET", "200", "", "", "", "-").inc(requests)
    for _ in range(requests):
        hist.labels("healthz").observe(0.0003)


def _totals(text: bytes) -> tuple[float, float, float]:
    s = parse_metrics(text.decode())
    return (
        total(s, "jpkiva_requests_total", endpoint="healthz"),
        total(s, "jpkiva_request_duration_seconds_count", endpoint="healthz"),
        total(s, "jpkiva_request_duration_seconds_bucket", endpoint="healthz", le="0.0005"),
    )


def test_the_files_of_dead_workers_are_folded_and_their_counts_kept(
    mp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each dead worker left its counter and histogram files for good: the directory, and the
    merge of every render, grew by one set per worker death (0.8 ms a render per dead worker,
    measured: a crash loop at the 10 s backoff added seconds to each render in a day). Now
    the master folds them into the archive: 60 deaths leave the files of the live processes
    and two archive files, and every total is what it was."""
    monkeypatch.setenv(m.ENV, str(mp_dir))
    master = m.MasterMetrics(MetricsConfig(dir=tmp_path / "dir"), workers=2)
    d = master.dir
    deaths = 60
    for i in range(deaths):
        _dead_worker(DEAD_PID + 1 + i, 3)
    live = m.WorkerMetrics(MetricsConfig(render_interval=0))
    _healthz(live, 2)
    before = _totals(live.render())
    assert before == (3 * deaths + 2, 3 * deaths + 2, 3 * deaths + 2)
    for i in range(deaths):
        master.on_worker_exit(DEAD_PID + 1 + i, restarting=True)
    db = sorted(p.name for p in d.glob("*.db"))
    assert db == sorted(
        [
            "counter_archive.db",
            "histogram_archive.db",
            f"counter_{os.getpid()}.db",  # the master's and the live worker's (one process here)
            f"histogram_{os.getpid()}.db",
            f"gauge_livemax_{os.getpid()}.db",
            f"gauge_livesum_{os.getpid()}.db",
        ]
    ), db
    assert not list(d.glob("*.tmp"))
    assert _totals(live.render()) == before
    s = parse_metrics(live.render().decode())
    assert total(s, "jpkiva_worker_restarts_total") == deaths
    # a later death adds to the archive: nothing counted twice, nothing lost
    _dead_worker(DEAD_PID, 5)
    assert _totals(live.render()) == tuple(v + 5 for v in before)
    master.on_worker_exit(DEAD_PID, restarting=True)
    assert _totals(live.render()) == tuple(v + 5 for v in before)
    assert not list(d.glob(f"*_{DEAD_PID}.db"))
    live.close()
    master.close()


def test_no_scrape_sees_a_dead_worker_twice_or_not_at_all_while_it_is_folded(
    mp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold changes two files (the archive, the dead worker's); a merge reading between the
    two would count the worker twice, or miss it (a counter going down: a reset to
    Prometheus, and ``increase`` jumps by the whole total). The merges hold the lock the fold
    takes: 200 deaths folded in a thread while this one renders without pause, every render
    exact."""
    import threading

    monkeypatch.setenv(m.ENV, str(mp_dir))
    master = m.MasterMetrics(MetricsConfig(dir=tmp_path / "dir"), workers=2)
    deaths = 200
    for i in range(deaths):
        _dead_worker(DEAD_PID + 1 + i, 1)
    live = m.WorkerMetrics(MetricsConfig(render_interval=0))
    app = m.MetricsApp(live)
    want = _totals(live.render())
    assert want == (deaths, deaths, deaths)
    folding = threading.Thread(
        target=lambda: [master.on_worker_exit(DEAD_PID + 1 + i, True) for i in range(deaths)]
    )
    seen: list[tuple[float, float, float] | bytes] = []
    folding.start()
    while folding.is_alive():
        resp = app.handle(_get())
        seen.append(_totals(resp.body) if resp.status == 200 else resp.body)
    folding.join()
    assert len(seen) > 5
    assert [x for x in seen if x != want] == []
    assert _totals(live.render()) == want
    assert len(list(master.dir.glob("counter_*.db"))) == 2  # the archive's, this process's
    live.close()
    master.close()
