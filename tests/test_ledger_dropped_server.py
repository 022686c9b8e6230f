"""The ledger (帳簿, Act §40) of a real `responder serve` counts the /v1 and CRL answers it
writes, never those a client went away before.

A client pipelines a /v1 batch status and a CRL download behind a slower answer (a batch
large enough for the worker's batch thread) and resets the connection at once: the two
answers are made while the slow one is still being worked on, and never written. They are
not counted, and the party's provisions of the day (``provisions_per_day``, 件数) they took
are given back: afterwards the party is given exactly its bound. Answers written (one at a
time, and pipelined on a connection that stays) are counted once each.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import termios
from datetime import datetime, timedelta
from pathlib import Path

from crlbuilder.model import Answer
from crlbuilder.rules import JST
from responder.ledger import Ledger
from tests.conftest import Built, run_tool
from tests.support import tcp
from tests.support.harness import Server, start_server
from tests.support.procs import children

PARTY = "sig-verifier"
FILE = "sign-card-g1.crl"
"""A full CRL that sig-verifier (a 署名検証者, Act §18(1)) may download."""
BOUND = 10
"""The party's agreed provisions per day in this test (件数)."""


def _entries(built: Built, n: int) -> list[dict[str, str]]:
    """``n`` batch-status entries of sign-card certificates (repeated samples)."""
    sign: list[Answer] = [a for a in built.answers if a.family.value == "sign-card"]
    refs = [{"issuer": a.issuer, "serial": f"{a.serial:x}"} for a in sign]
    return (refs * (n // len(refs) + 1))[:n]


def _status(s: Server, entries: list[dict[str, str]]) -> bytes:
    body = json.dumps({"entries": entries}).encode()
    return (
        f"POST /v1/status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {s.token(PARTY)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _crl(s: Server) -> bytes:
    return (
        f"GET /crl/{FILE} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {s.token(PARTY)}\r\n\r\n"
    ).encode()


def _reset_after(s: Server, raw: bytes) -> None:
    """Send ``raw`` (pipelined requests) on a connection a worker serves and reset it (RST:
    SO_LINGER 0), reading nothing, while the workers are stopped, and let them go on only
    once the worker's socket has taken the reset (`tests.support.tcp.reset`): the worker
    then finds the requests and the reset at once, so the slow answer cannot be made before
    the connection is gone however loaded the machine is. Otherwise either could come late:
    the client preempted between its send and its reset, or the kernel leaving the reset
    to its softirq thread until after the workers went on (possible, though not seen: 60
    resets on the loaded machine were all taken before ``close`` returned), and the answers
    behind the slow one be written and rightly counted. Returns once the worker has closed
    the connection (`tests.support.tcp.wait_closed`)."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    workers = children(s.pid)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")  # accepted by a worker
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        for pid in workers:  # the workers of the server this test started
            os.kill(pid, signal.SIGSTOP)
        sock.sendall(raw)
        for _ in range(1_000_000):  # every byte in the worker's receive queue, none unsent
            if struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
                break
            os.sched_yield()
        else:
            raise AssertionError("the requests were not delivered")
        inode = tcp.server_socket(sock)
        tcp.reset(sock)
    finally:
        sock.close()
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    # and return once the worker has dealt with the reset (its answers dropped, what they
    # took given back): else on a loaded machine the worker, woken late, reads the requests
    # and takes their provisions while the test's next calls are answered by the other
    # worker, refused for provisions taken only for a moment (seen: 2 of 25 runs)
    tcp.wait_closed(inode, workers)


def _answers(s: Server, raw: bytes, n: int) -> list[int]:
    """Send ``raw`` (``n`` pipelined requests) on one connection; the statuses, read in turn
    (each answer has a Content-Length)."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.sendall(raw)
        f = sock.makefile("rb")
        out = []
        for _ in range(n):
            status = int(f.readline().split()[1])
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = f.read(length)
            if status != 200:  # shown with a failure: which bound, or what else refused it
                print(status, body[:400])
            out.append(status)
        f.close()
        return out
    finally:
        sock.close()


def _totals(directory: Path) -> dict[str, int]:
    """The party's provisions by method, every worker's files merged (yesterday to tomorrow,
    JST: a run across 00:00 JST counts in both days)."""
    ledger = Ledger.open(directory)
    try:
        ledger.collect()
        today = datetime.now(JST).date()
        got = ledger.totals(
            today - timedelta(days=1), today + timedelta(days=1), by=("party", "method")
        )
    finally:
        ledger.close()
    return {key[1]: n for key, n in got.items() if key[0] == PARTY}


def test_act_40_v1_and_crl_answers_dropped_behind_a_slow_one_are_not_counted(
    built: Built, tmp_path: Path
) -> None:
    d = tmp_path / "s"
    d.mkdir()
    registry = d / "registry.toml"
    run_tool("responder", "registry", "init", "--pki", str(built.pki), "--out", str(registry))
    run_tool(
        "responder", "registry", "update", "--id", PARTY, "--provisions-per-day", str(BOUND),
        "--registry", str(registry), "--actor", "test",
    )  # fmt: skip
    with start_server(built, d) as s:
        slow = _status(s, _entries(built, 600))  # > 32 KiB: the batch thread
        assert len(slow) > 32 << 10
        for _ in range(3):  # every worker may take a connection: each one's drop is undone
            _reset_after(s, slow + _status(s, _entries(built, 2)) + _crl(s))
        # what the drops took is given back: the bound is the party's whole, and every
        # answer written counts once, one at a time or pipelined on a connection that stays
        got = [
            _answers(s, _status(s, _entries(built, 3)), 1),
            _answers(s, _status(s, _entries(built, 2)) + _crl(s) + _crl(s), 3),
            _answers(s, _status(s, _entries(built, 3)), 1),
            _answers(s, _status(s, _entries(built, 1)) + _crl(s), 2),
        ]
    totals = _totals(d / "ledger")
    # the ledger's totals shown with a wrong status too: they tell an answer behind a reset
    # that was written and counted (json 11, crl-file 3: the reset came late) from a
    # provision taken and not given back (the totals as expected)
    assert got == [[200], [200] * 3, [200], [429, 429]], (got, totals)
    assert totals == {"json": 8, "crl-file": 2}, totals
