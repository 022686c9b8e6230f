"""`make demo` (`crlbuilder.demo`): what it runs is confined to its directory, and it
comes up whatever else listens on its usual ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from crlbuilder.demo import ports
from crlbuilder.demo.__main__ import main, responder_flags
from responder.cli import parser
from responder.config import FIELD_TYPES, load_config, overrides_from_args
from tests.conftest import ROOT
from tests.support.procs import alive, children, started, wait_line
from tests.support.wait import until


def test_the_demo_responder_keeps_every_file_under_the_demo_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from another directory, as `python -m crlbuilder.demo --dir D` may be: nothing
    # the responder writes (its ledger, quota table, watch lists) may land in the cwd
    # (make demo KEYS=softhsm, under var/demo-softhsm, shared var/demo's ledger so)
    d = tmp_path / "demo-softhsm"
    monkeypatch.chdir(tmp_path)
    args = parser().parse_args(["serve", *responder_flags(d, 8080, 9482)])
    cfg = load_config(args.config, overrides_from_args(args), environ={})
    paths = {
        "store.path": cfg.store.path,
        "store.pki": cfg.store.pki,
        "store.crl_dir": cfg.store.crl_dir,
        "store.facts_key_file": cfg.store.facts_key_file,
        "registry.path": cfg.registry.path,
        "ledger.dir": cfg.ledger.dir,
        "token.request_dir": cfg.token.request_dir,
        "token.issued_dir": cfg.token.issued_dir,
    }
    for field, path in paths.items():
        assert path is not None, field
        assert Path(path).is_relative_to(d), (field, path)
    # the fields left to their defaults are derived from the ledger's directory, or private
    assert cfg.watch.dir is None and cfg.watch.secret_file is None
    assert cfg.metrics.dir is None
    # every path-valued field of the configuration is one of the above or derived
    path_fields = {
        name
        for name, kind in FIELD_TYPES.items()
        if "Path" in str(kind) and not name.startswith(("server.tls.", "v1.", "group."))
    }
    assert path_fields <= set(paths) | {"watch.dir", "watch.secret_file", "metrics.dir"}


@contextlib.contextmanager
def occupied(*wanted: int) -> Iterator[list[socket.socket]]:
    """Listen on each of ``wanted`` that is free (the others are in use already: as good)."""
    socks = []
    try:
        for port in wanted:
            s = socket.socket()
            try:
                s.bind((ports.HOST, port))
            except OSError:
                s.close()
                continue
            s.listen()
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def test_choose_takes_the_usual_port_when_free_else_any() -> None:
    free: set[int] = set()

    def taken(port: int) -> bool:
        return port not in free

    assert ports.choose("port", None, taken) == (
        0,
        "127.0.0.1:8080 is in use: a free port instead (--port to choose one)",
    )
    free.add(9482)
    assert ports.choose("metrics_port", None, taken) == (9482, "")
    assert ports.choose("group_port", 0, taken) == (0, "")  # any free: never probed
    assert ports.choose("group_metrics_port", 9482, taken) == (9482, "")  # asked, free
    with pytest.raises(ports.PortTaken, match=r"^demo: 127.0.0.1:8080 \(--port\) is in use;"):
        ports.choose("port", 8080, taken)


def test_in_use_sees_any_listener() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a responder's workers
        s.bind((ports.HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        assert ports.in_use(port)
    assert not ports.in_use(port)


def test_a_port_asked_for_and_taken_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with occupied(0) as (s,):
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as exc:
            main(["--dir", str(tmp_path / "d"), "--group-metrics-port", str(port)])
    assert str(exc.value) == (
        f"demo: 127.0.0.1:{port} (--group-metrics-port) is in use; choose another, "
        "or 0 for any free port"
    )
    assert not (tmp_path / "d").exists()
    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path / "d"), "--port", "65536"])
    assert "not a TCP port (0 to 65535): '65536'" in capsys.readouterr().err


@pytest.mark.integration
def test_the_demo_comes_up_with_its_usual_ports_taken(tmp_path: Path) -> None:
    """Another demo or service on 8080, 9482, 8081 and 9481: the demo serves on free ports,
    says so, and prints where each listener is; each answers there; Ctrl-C stops it."""
    usual = set(ports.USUAL.values())
    args = [sys.executable, "-m", "crlbuilder.demo", "--dir", str(tmp_path / "demo"),
            "--holders", "300"]  # fmt: skip
    with occupied(*usual), started(args, log=tmp_path / "demo.log", sig=signal.SIGINT,
                                   grace=30, cwd=ROOT) as p:  # fmt: skip
        text = wait_line(p, r"(the demo listens on:\n(?:.*\n)+?)Ctrl-C stops everything", 240)
        listening = re.findall(r"http://127\.0\.0\.1:(\d+)(/metrics)?", text)
        assert len(listening) == 4, text
        for port, path in listening:
            assert int(port) not in usual
            health = path or "/healthz"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=10) as r:
                assert r.status == 200
        assert "responder (機構)" in text and "group appliance" in text
    assert p.returncode == 0


def _written(pid: int) -> int:
    """Bytes the process ``pid`` has written so far (/proc/PID/io ``wchar``: files, pipes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


def _quiet(pid: int, seconds: float, timeout: float) -> None:
    """Wait until the process ``pid`` has written nothing for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = _written(pid), time.monotonic()
    while time.monotonic() - since < seconds:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} kept writing for {timeout} s")
        time.sleep(0.1)
        now = _written(pid)
        if now != last:
            last, since = now, time.monotonic()


@pytest.mark.integration
def test_a_child_that_stops_on_its_own_is_named_with_its_status_and_last_lines(
    tmp_path: Path,
) -> None:
    """The builder killed under the demo: the demo says which process stopped, how, and the
    last lines of its error output (they went to /dev/null), stops the responder, and exits
    non-zero (it used to end silently with 0)."""
    args = [sys.executable, "-m", "crlbuilder.demo", "--dir", str(tmp_path / "demo"),
            "--holders", "300", "--no-group", "--port", "0", "--metrics-port", "0"]  # fmt: skip
    log = tmp_path / "demo.log"
    with started(args, log=log, sig=signal.SIGINT, grace=30, cwd=ROOT) as p:
        text = wait_line(p, r"(its processes:\n(?:.*\n)+?)Ctrl-C stops everything", 240)
        pids = {
            name: int(pid) for pid, name in re.findall(r"pid (\d+)\s+(.+)\n", text)
        }  # fmt: skip
        builder = pids["the builder (crlbuilder build --follow)"]
        responder = pids["the responder (responder serve)"]
        assert builder in children(p.pid) and responder in children(p.pid)
        spool = tmp_path / "demo" / "spool"  # a record file (empty): a spool-file event
        (spool / "in.tmp").write_bytes(b"")
        (spool / "in.tmp").rename(spool / "0001.jsonl")
        until(lambda: not (spool / "0001.jsonl").exists(), 60, "the spool file applied")
        # its event is written after the file's CRLs and answers (after_commit), seconds
        # later on a loaded machine: until the builder has written nothing for 2 s
        _quiet(builder, 2.0, 120.0)
        os.kill(builder, signal.SIGKILL)
        assert p.wait(timeout=60) == 1
        assert not alive(responder)  # the others stopped
    err = log.read_text()
    assert (
        "demo: the builder (crlbuilder build --follow) stopped (killed by SIGKILL); "
        "stopping the others. The last lines of its error output:\n" in err
    ), err[-3000:]
    shown = err.split("The last lines of its error output:\n", 1)[1].splitlines()
    assert any(line.startswith('  | {"event":"spool-file"') for line in shown), err[-3000:]
