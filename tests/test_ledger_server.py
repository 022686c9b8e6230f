"""The ledger (帳簿, Act §40) of a real `responder serve` whose worker is SIGKILLed under load.

Clients keep asking for OCSP answers (nonce requests: each one signed now, the path where
the count comes after the signature and before the answer is written) on two workers; one
worker is killed with SIGKILL in the middle. Every successful answer a client received is
in the yearly report (報告書, Act §41) that ``responder report`` makes afterwards, and the
report holds at most the answers the kill cut off besides (counted, then never written).
"""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.x509 import ocsp

from crlbuilder.model import CertStatus
from crlbuilder.rules import JST
from tests.conftest import Built, run_tool
from tests.support.harness import ocsp_request, sample, start_server
from tests.support.procs import children
from tests.support.wait import until

PARTY = "both-verifier"


def _reported(ledger: Path, years: set[int]) -> int:
    """The report's provisions to ``PARTY`` by OCSP, over ``years``."""
    n = 0
    for year in sorted(years):
        out = run_tool("responder", "report", "--year", str(year), "--format", "json",
                       "--ledger", str(ledger))  # fmt: skip
        doc = msgspec.json.decode(out.stdout)
        assert doc["refused_files"] == 0
        for r in doc["recipients"]:
            if r["party"] == PARTY:
                n += sum(x["count"] for x in r["lines"] if x["method"] == "ocsp")
    return n


@pytest.mark.integration
def test_a_worker_killed_under_load_loses_no_received_answer(built: Built, tmp_path: Path) -> None:
    a = sample(built, CertStatus.GOOD, "sign-card")
    years = {datetime.now(JST).year}
    with start_server(built, tmp_path / "s") as server:
        token = server.token(PARTY)
        received = [0] * 4
        failed = [0] * 4
        stop = threading.Event()

        def client(i: int) -> None:
            while not stop.is_set():
                der = ocsp_request(built, a, nonce=True)  # signed now, never a cached answer
                try:
                    got = server.post(der, token=token)
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    failed[i] += 1  # cut off by the kill: maybe counted, never received
                    continue
                if ocsp.load_der_ocsp_response(got).response_status is (
                    ocsp.OCSPResponseStatus.SUCCESSFUL
                ):
                    received[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            until(lambda: sum(received) >= 100, timeout=60, what="100 answers received")
            workers = children(server.pid)
            victim = sorted(workers)[0]
            os.kill(victim, signal.SIGKILL)  # a worker of the server this test started
            seen = sum(received)
            until(lambda: sum(received) >= seen + 100, timeout=60, what="100 more answers")
            until(
                lambda: len(children(server.pid)) == 2 and victim not in children(server.pid),
                timeout=30,
                what="the killed worker replaced",
            )
        finally:
            stop.set()
            for t in threads:
                t.join()
        years.add(datetime.now(JST).year)
    got = _reported(tmp_path / "s" / "ledger", years)
    assert sum(received) <= got <= sum(received) + sum(failed), (received, failed, got)
