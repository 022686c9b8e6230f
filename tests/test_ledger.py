"""The ledger (帳簿): per-worker mmap counters, the collector, the durable ledger, 発行件数."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import Family
from crlbuilder.rules import JST_OFFSET
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.ledger import (
    DB_NAME,
    Ledger,
    LedgerError,
    LedgerFileError,
    LedgerWriter,
    Method,
    Service,
    issuance_counts,
    read_worker_file,
)
from responder.registry import vocabulary as registry
from tests.support.wait import until

ROOT = Path(__file__).resolve().parent.parent
EVER = (date(2000, 1, 1), date(2100, 1, 1))
SRI = Service.SIGN_REVOCATION_INFO
ARI = Service.AUTH_REVOCATION_INFO


class Clock:
    """A settable clock for the writer (epoch seconds)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def jst(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0) -> float:
    """Epoch seconds of a Japan Standard Time wall-clock instant."""
    return datetime(y, m, d, hh, mm, ss, tzinfo=UTC).timestamp() - JST_OFFSET


def total(ledger: Ledger) -> int:
    return ledger.totals(*EVER).get((), 0)


# --- the writer and the collector ----------------------------------------------------


def test_counts_reach_the_collector(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 4, 1))
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w, Ledger.open(tmp_path) as ledger:
        for _ in range(7):
            w.count("bank-a", SRI, Method.OCSP)
        w.count("bank-a", SRI, Method.JSON, 5)
        w.count("auth-co", ARI, Method.OCSP, 2)
        result = ledger.collect()
        assert result.files == 1 and result.refused == [] and result.slots_updated == 3
        rows = ledger.rows(*EVER)
        assert [(r.day, r.party, r.service, r.method, r.count) for r in rows] == [
            (date(2025, 4, 1), "auth-co", ARI, Method.OCSP, 2),
            (date(2025, 4, 1), "bank-a", SRI, Method.JSON, 5),
            (date(2025, 4, 1), "bank-a", SRI, Method.OCSP, 7),
        ]
        # more counts after a merge: the collector sees exactly the difference
        w.count("bank-a", SRI, Method.OCSP, 3)
        assert ledger.collect().slots_updated == 1
        assert ledger.totals(*EVER, by=("party",)) == {("auth-co",): 2, ("bank-a",): 15}


def test_worker_file_and_database_are_private(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    with LedgerWriter.open(d, 3) as w, Ledger.open(d):
        w.count("bank-a", SRI, Method.OCSP)
        assert stat.S_IMODE(os.stat(w.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(d / DB_NAME).st_mode) == 0o600
        assert w.path.name.startswith("w0003-")


def test_only_registry_party_ids_are_counted(tmp_path: Path) -> None:
    with LedgerWriter.open(tmp_path, 0) as w:
        for bad in ("", "Bank", "a" * 65, "名前", "x/y", "bank-a\n", "-a"):
            with pytest.raises(ValueError, match="registered party ids"):
                w.count(bad, SRI, Method.OCSP)
        with pytest.raises(ValueError):
            w.count("bank-a", "no-such-service", Method.OCSP)  # type: ignore[arg-type]
        assert read_worker_file(w.path).slots == []


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from responder.ledger import LedgerWriter, Method, Service
    w = LedgerWriter.open(sys.argv[1], 0)
    n = int(sys.argv[2])
    stream = sys.argv[3] == "stream"
    for _ in range(n):
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP)
        if stream:
            os.write(1, b"x")   # the "response": written only after the count
    if not stream:
        os.write(1, b"done\\n")
    time.sleep(60)
    """
)


def _child(directory: Path, n: int, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory), str(n), mode],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )


@pytest.mark.integration  # child processes killed with SIGKILL
def test_sigkill_loses_no_count(tmp_path: Path) -> None:
    n = 25_000
    child = _child(tmp_path, n, "batch")
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"done\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    with Ledger.open(tmp_path) as ledger:
        assert ledger.collect().refused == []
        assert total(ledger) == n
        # the restarted worker (new pid, same index) continues the same file
        with LedgerWriter.open(tmp_path, 0) as w:
            assert len(list(tmp_path.glob("*.ledger"))) == 1
            w.count("bank-a", SRI, Method.OCSP, 2)
            assert len(read_worker_file(w.path).slots) == 1
        ledger.collect()
        assert total(ledger) == n + 2


@pytest.mark.integration  # child processes killed with SIGKILL
def test_sigkill_mid_stream_every_received_answer_was_counted(tmp_path: Path) -> None:
    child = _child(tmp_path, 10_000_000, "stream")
    received = 0
    try:
        assert child.stdout is not None
        while received < 30_000:
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk
            received += len(chunk)
    finally:
        child.send_signal(signal.SIGKILL)
    assert child.stdout is not None
    received += len(child.stdout.read())  # what was in the pipe when it died
    child.wait(10)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        counted = total(ledger)
    # counted before written: at most the one count whose answer was never written
    assert received <= counted <= received + 1


def test_merging_twice_or_from_two_collectors_does_not_double(tmp_path: Path) -> None:
    with LedgerWriter.open(tmp_path, 0) as w0, LedgerWriter.open(tmp_path, 1) as w1:
        w0.count("bank-a", SRI, Method.OCSP, 10)
        w1.count("bank-a", SRI, Method.OCSP, 20)
        assert w0.path != w1.path
        with Ledger.open(tmp_path) as a, Ledger.open(tmp_path) as b:
            a.collect()
            a.collect()
            b.collect()
            assert total(a) == total(b) == 30
            w0.count("bank-a", SRI, Method.OCSP, 1)
            b.collect()
            a.collect()  # a's cache is behind b's merge: max() keeps it right
            assert total(a) == 31
            assert b.collect().slots_updated == 0


def test_two_live_writers_of_one_index_get_separate_files(tmp_path: Path) -> None:
    with LedgerWriter.open(tmp_path, 0) as a, LedgerWriter.open(tmp_path, 0) as b:
        assert a.path != b.path  # the flock of the first keeps the second out
        a.count("bank-a", SRI, Method.OCSP)
        b.count("bank-a", SRI, Method.OCSP)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        assert total(ledger) == 2


def test_restarted_worker_continues_its_file(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 5, 5))
    with LedgerWriter.open(tmp_path, 2, clock=clock) as w:
        w.count("bank-a", SRI, Method.OCSP, 5)
        first = (w.path, w.file_id)
    with LedgerWriter.open(tmp_path, 2, clock=clock) as w:
        assert (w.path, w.file_id) == first
        w.count("bank-a", SRI, Method.OCSP, 3)  # same day, same key: same slot
        w.count("bank-a", ARI, Method.JSON)
        slots = read_worker_file(w.path).slots
        assert [(s.slot, s.count) for s in slots] == [(0, 8), (1, 1)]


def test_bad_and_truncated_files_are_refused_and_do_not_stop_the_others(tmp_path: Path) -> None:
    paths = []
    for index in range(5):
        with LedgerWriter.open(tmp_path, index) as w:
            w.count("bank-a", SRI, Method.OCSP, 100 + index)
            w.count("bank-b", ARI, Method.OCSP, 1)
            paths.append(w.path)
    # 0: truncated inside the slot table; 1: bad magic; 2: a corrupt slot key; 3: header only
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) - 1000])
    with paths[1].open("r+b") as f:
        f.write(b"NOTALEDG")
    with paths[2].open("r+b") as f:
        f.seek(4096 + 40)  # inside slot 0's party id
        f.write(b"Z")
    paths[3].write_bytes(paths[3].read_bytes()[:100])
    (tmp_path / "stray.ledger").write_bytes(b"junk")
    with Ledger.open(tmp_path) as ledger:
        result = ledger.collect(retire_idle_after=0)
        reasons = {Path(r.path).name: r.reason for r in result.refused}
        assert "truncated or padded" in reasons[paths[0].name]
        assert "bad magic" in reasons[paths[1].name]
        assert "slot 0: key checksum mismatch" in reasons[paths[2].name]
        assert "truncated: 100 bytes" in reasons[paths[3].name]
        assert "not a worker file name" in reasons["stray.ledger"]
        assert result.files == 1
        assert ledger.totals(*EVER, by=("party",)) == {("bank-a",): 104, ("bank-b",): 1}
        assert result.retired == [str(paths[4])]
        for p in paths[:4]:
            assert p.exists()  # refused files stay for the operator
    for p in paths[:4]:
        with pytest.raises(LedgerFileError, match=p.name):
            read_worker_file(p)
    # a worker whose file is bad starts a new one rather than overwriting it
    with LedgerWriter.open(tmp_path, 1) as w:
        assert w.path != paths[1]


def test_a_slot_rewritten_under_the_collector_is_refused(tmp_path: Path) -> None:
    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", SRI, Method.OCSP)
        path = w.path
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        other = tmp_path / "other"
        with LedgerWriter.open(other, 0) as w2:
            w2.count("bank-b", SRI, Method.OCSP)
        # same file id, different key in slot 0: what a rewritten file would look like
        raw = bytearray(path.read_bytes())
        raw2 = (other / w2.path.name).read_bytes()
        raw[4096 + 8 : 4096 + 128] = raw2[4096 + 8 : 4096 + 128]
        path.write_bytes(bytes(raw))
        result = ledger.collect()
        assert "changed its key" in result.refused[0].reason
        assert total(ledger) == 1


def test_a_refused_merge_leaves_no_count_behind_for_the_next_one(tmp_path: Path) -> None:
    """`_merge` took each slot's new count into its cache before a later slot of the same file
    was refused ("changed its key"): nothing of the file was written, but the cache said the
    earlier slots were, so a `Ledger` kept open merged them no more once the file was
    repaired (here: 2 provisions in the ledger instead of 6)."""
    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", SRI, Method.OCSP)
        w.count("bank-c", SRI, Method.OCSP)
        path = w.path
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        with LedgerWriter.open(tmp_path, 0) as w:  # the restarted worker continues its file
            assert w.path == path
            w.count("bank-a", SRI, Method.OCSP, 4)
        good = path.read_bytes()
        other = tmp_path / "other"
        with LedgerWriter.open(other, 0) as w2:
            w2.count("bank-b", SRI, Method.OCSP)
        raw = bytearray(good)
        slot1 = 4096 + 128  # bank-c's slot, rewritten with another key
        raw[slot1 + 8 : slot1 + 128] = (other / w2.path.name).read_bytes()[4096 + 8 : 4096 + 128]
        path.write_bytes(bytes(raw))
        assert "changed its key" in ledger.collect().refused[0].reason
        path.write_bytes(good)  # repaired
        assert ledger.collect().refused == []
        assert total(ledger) == 6


# --- rotation, retirement, days -----------------------------------------------------


def test_full_file_rotates_and_sealed_files_are_retired(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 6, 1))
    with (
        LedgerWriter.open(tmp_path, 0, capacity=2, clock=clock) as w,
        Ledger.open(tmp_path) as ledger,
    ):
        first = w.path
        w.count("bank-a", SRI, Method.OCSP, 4)
        w.count("bank-b", SRI, Method.OCSP, 5)
        w.count("bank-c", SRI, Method.OCSP, 6)  # no room: seal, new file
        assert w.path != first and read_worker_file(first).sealed
        w.count("bank-a", SRI, Method.OCSP)  # a key of the sealed file: a new slot here
        result = ledger.collect()
        assert result.retired == [str(first)] and not first.exists()
        assert not read_worker_file(w.path).sealed
        assert ledger.totals(*EVER, by=("party",)) == {
            ("bank-a",): 5,
            ("bank-b",): 5,
            ("bank-c",): 6,
        }
        assert ledger.collect().retired == []
        assert total(ledger) == 16
        states = {name: state for _, name, state in ledger.files()}
        assert states == {first.name: "retired", w.path.name: "live"}


def test_idle_files_are_retired_only_once_their_writer_is_gone(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        w = LedgerWriter.open(tmp_path, 0)
        w.count("bank-a", SRI, Method.OCSP, 3)
        assert ledger.collect(retire_idle_after=0).retired == []  # flock held: alive
        w.close()
        assert ledger.collect(retire_idle_after=3600).retired == []  # not idle long enough
        assert ledger.collect(retire_idle_after=0).retired == [str(w.path)]
        assert total(ledger) == 3
        # a retired file that reappears (deleted after the commit failed) is not merged again
        assert ledger.collect(retire_idle_after=0).retired == []
        assert total(ledger) == 3
        with LedgerWriter.open(tmp_path, 0) as w2:
            assert w2.path != w.path
            w2.count("bank-a", SRI, Method.OCSP)
        ledger.collect()
        assert total(ledger) == 4


def test_days_turn_at_local_midnight(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 12, 31, 23, 59, 59))
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w, Ledger.open(tmp_path) as ledger:
        w.count("bank-a", SRI, Method.OCSP, 2)
        clock.t = jst(2026, 1, 1, 0, 0, 0)
        w.tick()
        w.count("bank-a", SRI, Method.OCSP, 3)
        ledger.collect()
        assert ledger.totals(*EVER, by=("day",)) == {("2025-12-31",): 2, ("2026-01-01",): 3}
        assert ledger.totals(date(2026, 1, 1), date(2026, 12, 31)) == {(): 3}
        # 15:00 UTC is already the next day in Japan
        assert datetime.fromtimestamp(clock.t, UTC).hour == 15


def test_a_count_past_midnight_is_dated_by_its_own_instant_without_the_flusher(
    tmp_path: Path,
) -> None:
    # the flusher (which would turn the day) never runs here, as when a slow fsync holds
    # it: the count itself reads the clock (Ord §71(3) 提供を行った年月日)
    clock = Clock(jst(2025, 12, 31, 23, 59, 59))
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w, Ledger.open(tmp_path) as ledger:
        w.count("bank-a", SRI, Method.OCSP, 2)
        clock.t = jst(2026, 1, 1, 0, 0, 0)
        w.count("bank-a", SRI, Method.OCSP, 3)  # the same slot's fast path, yesterday's
        w.count("bank-b", SRI, Method.OCSP, 1)  # a new slot
        ledger.collect()
        assert ledger.totals(*EVER, by=("day", "party")) == {
            ("2025-12-31", "bank-a"): 2,
            ("2026-01-01", "bank-a"): 3,
            ("2026-01-01", "bank-b"): 1,
        }


def test_a_count_at_an_instant_is_dated_by_that_instant_after_the_day_turned(
    tmp_path: Path,
) -> None:
    """``count(at=...)``: the instant a caller took the provisions at (23:59:59.9 JST) dates
    them, though the flusher turned the writer's day at 00:00 JST before the count came;
    the writer's own day is kept for the counts after it, and an instant past the writer's
    day turns it."""
    late = jst(2025, 12, 31, 23, 59, 59) + 0.9
    clock = Clock(late)
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w, Ledger.open(tmp_path) as ledger:
        w.count("bank-a", SRI, Method.OCSP, 2)
        clock.t = jst(2026, 1, 1, 0, 0, 0) + 0.1
        w.tick()  # the flusher
        w.count("bank-a", SRI, Method.OCSP, 3, at=late)  # the slot of the day before
        w.count("bank-b", SRI, Method.OCSP, 4, at=late)  # a new slot of the day before
        w.count("bank-b", SRI, Method.OCSP, 1)  # the writer's day: the new one
        w.count("bank-b", SRI, Method.OCSP, 2, at=clock.t)  # its slot, at an instant
        w.count("bank-c", SRI, Method.OCSP, 5, at=clock.t)  # the writer's day, at an instant
        w.count("bank-c", SRI, Method.OCSP, 6, at=jst(2026, 1, 2, 0, 0, 0))  # turns it
        ledger.collect()
        assert ledger.totals(*EVER, by=("day", "party")) == {
            ("2025-12-31", "bank-a"): 5,
            ("2025-12-31", "bank-b"): 4,
            ("2026-01-01", "bank-b"): 3,
            ("2026-01-01", "bank-c"): 5,
            ("2026-01-02", "bank-c"): 6,
        }


@pytest.mark.real_clock  # the flusher's timed wait hangs under libfaketime
def test_flusher_thread_turns_the_day_and_flushes(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 3, 31, 23, 59, 59))
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w, Ledger.open(tmp_path) as ledger:
        w.count("bank-a", SRI, Method.OCSP)
        clock.t = jst(2025, 4, 1, 0, 0, 1)
        w.start_flusher(interval=0.02)
        until(
            lambda: read_worker_file(w.path).updated_at == int(clock.t),
            5, "the flusher wrote the new day", interval=0.01,
        )  # fmt: skip
        w.count("bank-a", SRI, Method.OCSP)
        assert w.flush_error is None
        ledger.collect()
        assert ledger.totals(*EVER, by=("month",)) == {("2025-03",): 1, ("2025-04",): 1}


@pytest.mark.real_clock  # the flusher's timed wait hangs under libfaketime
def test_a_failing_flush_is_logged_once_and_its_recovery_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Counts not durable (Act §40's 帳簿 would lose them in a crash) must not go unseen."""
    real_fsync = os.fsync
    failing = True
    failed = 0

    def fsync(fd: int) -> None:
        nonlocal failed
        if failing:
            failed += 1
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    caplog.set_level("INFO", logger="responder.ledger")
    with LedgerWriter.open(tmp_path, 0) as w:
        monkeypatch.setattr(os, "fsync", fsync)
        w.start_flusher(interval=0.01)
        until(lambda: failed >= 3, 5, "several flushes failed", interval=0.01)
        failing = False
        until(lambda: w.flush_error is None, 5, "a flush succeeded", interval=0.01)
    events = [r.getMessage() for r in caplog.records if r.name == "responder.ledger"]
    assert events == ["ledger_flush_failed", "ledger_flush_recovered"], events
    assert "No space left on device" in str(caplog.records[0].__dict__["fields"])


def test_old_files_rotate_at_the_turn_of_the_day(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 1, 1))
    with LedgerWriter.open(tmp_path, 0, clock=clock, max_file_days=2) as w:
        first = w.path
        for day in range(1, 4):
            clock.t = jst(2025, 1, day)
            w.tick()
            w.count("bank-a", SRI, Method.OCSP)
        assert w.path != first and read_worker_file(first).sealed
    with Ledger.open(tmp_path) as ledger:
        # the second file's writer is gone, but it flushed "now" (the fake clock): kept
        assert ledger.collect(now=clock.t).retired == [str(first)]
        assert total(ledger) == 3


# --- queries ------------------------------------------------------------------------


def test_queries_and_json_export(tmp_path: Path) -> None:
    clock = Clock(jst(2025, 4, 30))
    with LedgerWriter.open(tmp_path, 0, clock=clock) as w:
        w.count("bank-a", SRI, Method.OCSP, 10)
        w.count("bank-b", Service.SIGN_CRL_FILE, Method.CRL_FILE, 1)
        clock.t = jst(2025, 5, 1)
        w.tick()
        w.count("bank-a", SRI, Method.OCSP, 7)
        w.count("bank-a", SRI, Method.JSON, 2)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect()
        assert ledger.totals(*EVER, by=("month", "service", "method")) == {
            ("2025-04", "sign-crl-file", "crl-file"): 1,
            ("2025-04", "sign-revocation-info", "ocsp"): 10,
            ("2025-05", "sign-revocation-info", "json"): 2,
            ("2025-05", "sign-revocation-info", "ocsp"): 7,
        }
        assert ledger.totals(date(2025, 5, 1), date(2025, 5, 1)) == {(): 9}
        assert ledger.totals(date(2024, 1, 1), date(2024, 12, 31)) == {}
        assert [r.count for r in ledger.rows(*EVER, party="bank-b")] == [1]
        with pytest.raises(ValueError, match="unknown dimension"):
            ledger.totals(*EVER, by=("count; DROP TABLE counts",))  # type: ignore[arg-type]
        doc = msgspec.json.decode(ledger.export_json(date(2025, 4, 1), date(2025, 4, 30)))
        assert doc["total"] == 11 and doc["first"] == "2025-04-01"
        assert {(r["party"], r["count"]) for r in doc["rows"]} == {("bank-a", 10), ("bank-b", 1)}
    with Ledger.open(tmp_path, readonly=True) as ro:
        assert total(ro) == 20
        with pytest.raises(LedgerError, match="read-only"):
            ro.collect()


def test_readonly_open_of_a_missing_ledger_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger here"):
        Ledger.open(tmp_path / "none", readonly=True)


def test_service_names_and_articles() -> None:
    assert [s.value for s in Service][:8] == [
        "sign-revocation-info",
        "sign-crl-file",
        "sign-record-info",
        "corresponding-sign-serial",
        "corresponding-serial",
        "auth-revocation-info",
        "auth-crl-file",
        "corresponding-auth-serial",
    ]
    assert Service.SIGN_RECORD_INFO.ja == "特定署名用電子証明書記録情報"
    assert Service.CORRESPONDING_SERIAL.article == "Act §18(5)"
    assert {m.value for m in Method} == {"ocsp", "crl-file", "json"}
    # one vocabulary with the registry's agreements: the ledger counts the registry's enums
    assert Service is registry.Service and Method is registry.Method


# --- 発行件数 from the status store --------------------------------------------------


def _status(family: Family, not_before: float) -> sf.StatusRecord:
    return sf.StatusRecord(
        1, sf.STATE_GOOD, 0, 0, family.code, int(not_before), int(not_before) + 10**8, 0, bytes(32)
    )


def test_issuance_counts_per_family_and_month() -> None:
    issued = [
        (Family.SIGN_CARD, jst(2025, 1, 1, 0, 0, 0)),  # first second of the year (JST)
        (Family.SIGN_CARD, jst(2025, 1, 31, 23, 59, 59)),
        (Family.SIGN_CARD, jst(2025, 2, 1)),
        (Family.AUTH_MOBILE, jst(2025, 12, 31, 23, 59, 59)),
        (Family.AUTH_CARD, jst(2024, 12, 31, 23, 59, 59)),  # last year
        (Family.AUTH_CARD, jst(2026, 1, 1, 0, 0, 0)),  # next year
    ]
    store = MemoryReader(
        status_records={
            sf.status_key(0, serial): _status(family, t)
            for serial, (family, t) in enumerate(issued, 1)
        }
    )
    counts = issuance_counts(store, date(2025, 1, 1), date(2025, 12, 31))
    assert counts == {
        "sign-card": {"2025-01": 2, "2025-02": 1},
        "sign-mobile": {},
        "auth-card": {},
        "auth-mobile": {"2025-12": 1},
    }
    store.imported = True  # a group appliance's store: the 機構's CRLs, revoked only
    with pytest.raises(LedgerError, match="only revoked certificates"):
        issuance_counts(store, date(2025, 1, 1), date(2025, 12, 31))


def test_every_service_has_a_stable_ledger_code() -> None:
    """A service added to the vocabulary (validation, Act §19(1)) must be countable: the worker
    files store a one-byte code per service, and a missing one failed the first count."""
    from responder.ledger import _SERVICE_CODES

    assert set(_SERVICE_CODES) == set(Service)
    assert len(set(_SERVICE_CODES.values())) == len(Service)


def test_a_ledger_directory_that_cannot_be_locked_refuses_to_ship_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock refused (a network file system's directory: NFS emulates it with a write lock a
    read-only descriptor cannot take): a `LedgerError` naming the directory, as for a directory
    that cannot be opened, not an OSError out of the shipment."""
    import errno

    import responder.ledger as ledger_module

    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP)

    def refused(fd: int, op: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(ledger_module.fcntl, "flock", refused)
    with Ledger.open(tmp_path) as ledger:
        with pytest.raises(LedgerError, match="cannot lock to ship") as e, ledger.ship_lock():
            pass
        assert "\n" not in str(e.value)
