"""``JPKI_VA_FACTS_KEY`` reaches only the processes that open the four facts (`crlbuilder.seal`).

The key sealing the four facts (基本4情報, Act §44, §45) may be given in the environment. It
stayed there: every process the builder and the responder started inherited it (a worker's
signing processes, exec'd with the worker's environment), and every child they forked showed
it in ``/proc/<pid>/environ`` (the builder's signing processes copy the initial environment
block, which removing a variable from `os.environ` leaves as it was). Both commands now take
it out first thing (`crlbuilder.envsecret`): the responder's workers, which answer
/v1/record-info, keep it as the memory they were forked with; nothing else gets it. Each test
reads the processes' ``/proc/<pid>/environ`` (root only under PR_SET_DUMPABLE 0: the suite
runs as root) and checks that the feature works with the key given by the environment alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import Family, Issuance, Record
from crlbuilder.seal import FACTS_KEY_ENV, FactsCipher
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from responder.procsigning import _child_env
from tests.conftest import ROOT, Built
from tests.support.builder import as_of_the_clock, events_until, follow_process
from tests.support.harness import start_server
from tests.support.procs import children
from tests.support.wait import until
from tests.test_procsigning import _signing_children
from tests.test_v1_records_server import cases, check, population


def environ(pid: int) -> bytes:
    """``/proc/<pid>/environ``: the block the process started with, as it is now."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def without_key(key: str, pids: dict[str, list[int]]) -> None:
    """No process of ``pids`` (by role) shows the variable or the key in its environment (and
    each one was read: its environment holds PATH)."""
    showing = []
    for role, group in pids.items():
        assert group, role
        for pid in group:
            block = environ(pid)
            assert b"PATH=" in block, (role, pid)
            if FACTS_KEY_ENV.encode() + b"=" in block or key.encode() in block:
                showing.append((role, pid))
    assert showing == [], "these processes show the facts key in /proc/<pid>/environ"


_TAKE = """
import os, subprocess, sys, time
from pathlib import Path
from crlbuilder.seal import read_facts_key, take_facts_key
take_facts_key()
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
started = subprocess.Popen(["sleep", "30"])
key = read_facts_key(None, field="keys.facts_key_file").hex()
def environ(p):
    # Popen returns once exec began; the new image's block is empty until the kernel has
    # written it (seen under load), so wait for it to be there
    deadline = time.monotonic() + 10
    while not (b := Path(f"/proc/{p}/environ").read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return b
blocks = [environ(p) for p in (os.getpid(), pid, started.pid)]
started.kill()
os.kill(pid, 9)
shown = [key.encode() in b or b"JPKI_VA_FACTS_KEY=" in b for b in blocks]
print(key, *(b"PATH=" in b for b in blocks), *shown, "JPKI_VA_FACTS_KEY" in os.environ)
"""


def test_a_signing_process_is_started_without_the_key_even_when_the_worker_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app made without `responder serve` (which took it out already) may still hold the
    variable: the signing processes' environment leaves it out all the same."""
    monkeypatch.setenv(FACTS_KEY_ENV, "00" * 32)
    monkeypatch.setenv("JPKI_VA_STORE", "/kept")
    env = _child_env()
    assert FACTS_KEY_ENV not in env and env["JPKI_VA_STORE"] == "/kept"


@pytest.mark.integration
def test_taking_the_key_wipes_it_from_the_process_its_forks_and_what_it_starts() -> None:
    """`take_facts_key` in a fresh interpreter given the key: its own environment block, a
    child it forks and a program it starts afterwards show no key; `read_facts_key` still
    reads it."""
    key = os.urandom(32).hex()
    env = {**os.environ, FACTS_KEY_ENV: key, "PYTHONPATH": str(ROOT)}
    got = subprocess.run(
        [sys.executable, "-c", _TAKE], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert got.stdout.split() == [key, *["True"] * 3, *["False"] * 3, "False"]


@pytest.mark.integration
def test_the_responder_gives_the_facts_with_the_key_from_the_environment_no_child_shows_it(
    built: Built, tmp_path: Path
) -> None:
    """`responder serve` given the key by ``JPKI_VA_FACTS_KEY`` only (no facts_key_file) and
    signing in processes: /v1/record-info gives the four facts; neither the master, nor its
    workers, nor their signing processes (exec'd: they inherited it) show the key."""
    key = built.facts_key.read_text().strip()
    env = {**os.environ, FACTS_KEY_ENV: key}
    now = time.time()
    consented = [c for c in cases(population(built), Family.SIGN_CARD, now)
                 if c.expected is not None]  # fmt: skip
    assert consented, "the demo population has a consented holder with a record to give"
    with start_server(
        built, tmp_path / "s", extra=("--signing", "processes", "--sign-processes", "1"), env=env
    ) as server:
        check(server, consented[0])  # 200, "provided", the expected facts
        until(lambda: len(_signing_children(server.pid)) == 2, timeout=30, what="2 signers")
        workers = children(server.pid)
        assert len(workers) == 2
        signers = _signing_children(server.pid)
        without_key(key, {"signing": signers, "worker": workers, "master": [server.pid]})


@pytest.mark.integration
def test_the_builder_seals_with_the_key_from_the_environment_no_child_shows_it(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crlbuilder build --follow` given a new key by ``JPKI_VA_FACTS_KEY`` only (the flag
    naming a file left out): its signing processes (forked: they copied the environment
    block) and the builder itself show no key; the facts it sealed open with the key."""
    key = os.urandom(32).hex()
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    at = args.index("--facts-key-file")
    args = args[:at] + args[at + 2 :]
    (tmp_path / "store-spool").mkdir(mode=0o700)  # builder_args's --spool, closed to others
    monkeypatch.setenv(FACTS_KEY_ENV, key)  # follow_process starts it with this environment
    p = follow_process(args, "--follow-interval", "30", "--max-idle", "300", "--sign-workers", "2")
    monkeypatch.delenv(FACTS_KEY_ENV)
    assert p.stderr is not None
    events: list[dict[str, object]] = []
    try:
        events_until(p.stderr, "build", events)
        assert events and events[-1]["event"] == "build", p.stderr.read()
        signers = children(p.pid)
        assert len(signers) >= 2, signers  # the pre-signing pool, kept for the next run
        without_key(key, {"signing": signers, "builder": [p.pid]})
    finally:
        p.terminate()
        p.wait(timeout=60)
    cipher = FactsCipher(bytes.fromhex(key))
    decoder = msgspec.json.Decoder(Record)
    store = Store.open(tmp_path / "store", readonly=True)
    opened = 0
    try:
        with store.read() as r:
            index = {m.id: m.index for m in r.issuers()}
            for path in sorted((built.population / "records").glob("*.jsonl")):
                for line in path.read_bytes().splitlines():
                    rec = decoder.decode(line)
                    if not isinstance(rec, Issuance) or rec.facts is None:
                        continue
                    status_key = sf.status_key(index[rec.issuer], rec.serial)
                    sealed = r.sealed_facts(status_key)
                    if sealed is not None:
                        assert cipher.open(status_key, sealed) == rec.facts
                        opened += 1
    finally:
        store.close()
    assert opened > 0
