"""The spool loop's wait ends when a record file lands in the spool (`crlbuilder.spoolwatch`).

In process: a ``*.jsonl`` renamed into the directory ends `SpoolWatch.wait` at once, a file
of another name does not, and without inotify the wait is a sleep, said once. Through the
real command: `build --follow --follow-interval 30` applies a file dropped while it waits
within seconds, not at its next look 30 s later.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crlbuilder.spoolwatch import SpoolWatch
from tests.conftest import BIN, Built
from tests.support.builder import as_of_the_clock, events_until, follow_process


def _drop_later(d: Path, name: str, after: float) -> threading.Thread:
    """Write ``name`` as operations do (a ``.part`` first, renamed) after ``after`` seconds."""

    def go() -> None:
        time.sleep(after)
        (d / f".{name}.part").write_bytes(b"\n")
        (d / f".{name}.part").rename(d / name)

    t = threading.Thread(target=go)
    t.start()
    return t


# integration: inotify_simple finds libc with `ldconfig -p`, a process
@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_record_file_renamed_into_the_spool_ends_the_wait_and_others_do_not(
    tmp_path: Path,
) -> None:
    with SpoolWatch(tmp_path) as watch:
        assert watch.watching
        t = _drop_later(tmp_path, "a.jsonl", 0.2)
        t0 = time.monotonic()
        assert watch.wait(20.0) is True
        waited = time.monotonic() - t0
        t.join()
        assert 0.15 < waited < 5.0, waited
        # a file of another name (written, closed, renamed) is no record file: the wait runs out
        t = _drop_later(tmp_path, "notes.txt", 0.1)
        t0 = time.monotonic()
        assert watch.wait(1.0) is False
        assert time.monotonic() - t0 >= 0.99
        t.join()
        assert watch.wait(0.0) is False  # nothing to wait for
    assert not watch.watching  # closed


def test_without_inotify_the_wait_is_a_sleep_and_it_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # the import fails
    said: list[str] = []
    watch = SpoolWatch(tmp_path, said.append)
    assert not watch.watching and len(said) == 1 and "not watched" in said[0]
    t = _drop_later(tmp_path, "a.jsonl", 0.05)
    t0 = time.monotonic()
    assert watch.wait(0.5) is False
    assert time.monotonic() - t0 >= 0.49
    t.join()
    watch.close()


@pytest.mark.integration
def test_a_missing_spool_is_not_watched_and_said(tmp_path: Path) -> None:
    said: list[str] = []
    watch = SpoolWatch(tmp_path / "nowhere", said.append)
    assert not watch.watching and str(tmp_path / "nowhere") in said[0]


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_the_follow_loop_applies_a_file_dropped_while_it_waits_without_waiting_its_interval(
    built: Built, tmp_path: Path
) -> None:
    shutil.copytree(built.store, tmp_path / "store")
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    spool = tmp_path / "store-spool"  # builder_args's --spool
    spool.mkdir()
    p = follow_process(args, "--follow-interval", "30")
    assert p.stderr is not None
    events: list[dict[str, object]] = []
    try:
        events_until(p.stderr, "build", events)
        time.sleep(1.0)  # the loop has looked at the empty spool and waits
        (spool / ".drop.part").write_bytes(b"\n")
        (spool / ".drop.part").rename(spool / "drop.jsonl")
        dropped = time.monotonic()
        events_until(p.stderr, "spool-file", events)
        seen = time.monotonic() - dropped
    finally:
        p.kill()  # its wait (30 s) would hold a SIGTERM that long
        p.wait(timeout=60)
    assert events and events[-1].get("event") == "spool-file", events
    assert events[-1]["file"] == "drop.jsonl"
    assert seen < 10.0, f"applied {seen:.1f} s after the drop: at the next look, not woken"


@pytest.mark.integration  # runs the command (where inotify is not, the loop polls: the same)
def test_follow_refuses_a_missing_spool_at_once_and_waits_for_one_removed_meanwhile(
    built: Built, tmp_path: Path
) -> None:
    """No spool directory: `build --follow` says so and exits 2 before its start-up build
    (it used to build, then die with a traceback in its loop). A spool removed while the loop
    runs is said once and waited for; a file dropped once it is back is applied."""
    shutil.copytree(built.store, tmp_path / "store")
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    spool = tmp_path / "store-spool"  # builder_args's --spool
    flags = ["--follow-interval", "0.2"]
    cmd = [str(BIN / "crlbuilder"), "build", *args, "--follow", *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"--follow needs the spool directory {spool}" in out.stderr
    assert '"event":"build"' not in out.stderr and "Traceback" not in out.stderr
    spool.mkdir()
    p = follow_process(args, *flags)
    assert p.stderr is not None
    events: list[dict[str, object]] = []
    try:
        events_until(p.stderr, "build", events)
        spool.rmdir()
        while not any("the spool directory is gone" in str(e.get("message")) for e in events):
            n = len(events)
            events_until(p.stderr, "warning", events)
            assert len(events) > n, "the builder ended"
        time.sleep(1.0)  # a few more looks at the missing directory
        spool.mkdir()
        (spool / ".back.part").write_bytes(b"\n")
        (spool / ".back.part").rename(spool / "back.jsonl")
        events_until(p.stderr, "spool-file", events)
        alive = p.poll() is None
    finally:
        p.kill()
        p.wait(timeout=60)
    gone = [e for e in events if "the spool directory is gone" in str(e.get("message"))]
    assert len(gone) == 1 and alive, events
    assert events[-1].get("event") == "spool-file" and events[-1]["file"] == "back.jsonl"
