"""Fair share of fresh signing (responder/signqueue.py, responder/signing.py), issue 10 item 6.

A party whose agreement sets no quota forced thousands of fresh signatures a second (a
new nonce in each request) and every other party's fresh answers waited behind them. In
process: the fair queue's order (round-robin between parties) and bounds (a party's
share is refused beyond ``per_party``, nothing else changes), and the signing pool that
feeds threads from it. Against the real server: one party floods nonce requests on
many connections while another asks for fresh answers one at a time; the flooder gets
tryLater beyond its share, the other is answered every time, and the per-party
signature counter shows who consumed the signing threads.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crlbuilder.model import CertStatus
from responder.signing import SigningPool
from responder.signqueue import FairQueue
from tests.conftest import Built
from tests.support.harness import sample, start_server, total
from tests.support.wait import until

# -- the fair queue (pure) ---------------------------------------------------------------------


def _drain(q: FairQueue[str]) -> list[str]:
    out = []
    while (nxt := q.pop()) is not None:
        out.append(nxt[1])
    return out


def test_parties_are_served_in_turn_not_in_arrival_order() -> None:
    q: FairQueue[str] = FairQueue(per_party=8)
    for i in range(5):
        assert q.push("flooder", f"f{i}")
    assert q.push("b", "b0") and q.push("b", "b1")
    assert q.push("c", "c0")
    assert len(q) == 8
    assert _drain(q) == ["f0", "b0", "c0", "f1", "b1", "f2", "f3", "f4"]
    assert len(q) == 0 and q.pop() is None


def test_a_late_party_waits_for_one_job_of_each_other_party_at_most() -> None:
    q: FairQueue[str] = FairQueue(per_party=100)
    for i in range(100):
        q.push("flooder", f"f{i}")
    assert q.pop() == ("flooder", "f0")  # running
    q.push("victim", "v")
    order = _drain(q)
    assert order.index("v") == 1  # after one more of the flooder's, not after its 99
    # each party's own jobs stay in their order
    assert [x for x in order if x != "v"] == [f"f{i}" for i in range(1, 100)]


def test_a_party_beyond_its_share_is_refused_and_nothing_changes() -> None:
    q: FairQueue[str] = FairQueue(per_party=3)
    assert all(q.push("flooder", f"f{i}") for i in range(3))
    assert not q.push("flooder", "f3")  # refused: the caller answers tryLater
    assert q.waiting("flooder") == 3 and len(q) == 3
    assert q.push("other", "o0")  # another party's share is its own
    assert q.waiting("other") == 1
    assert q.pop() == ("flooder", "f0")
    assert q.push("flooder", "f4")  # room again once one of its jobs left
    assert not q.push("flooder", "f5")
    assert _drain(q) == ["o0", "f1", "f2", "f4"]
    assert q.waiting("flooder") == 0 and q.waiting("nobody") == 0


def test_the_share_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        FairQueue(per_party=0)


# -- the signing pool (threads fed from the fair queue) ----------------------------------------


def test_signing_pool_runs_jobs_fairly_and_refuses_beyond_the_share() -> None:
    async def scenario() -> tuple[list[str], list[bool], type[BaseException] | None]:
        pool: SigningPool[str] = SigningPool(threads=1, per_party=4)
        gate = threading.Event()
        ran: list[str] = []

        def job(name: str) -> str:
            if name == "f0":
                gate.wait(5)  # hold the only thread until every job is queued
            if name == "bad":
                raise RuntimeError("signer failed")
            ran.append(name)
            return name

        futures = [pool.submit("flooder", lambda n=f"f{i}": job(n)) for i in range(5)]
        refused = [f is None for f in futures]
        extra = pool.submit("flooder", lambda: job("f5"))  # f0 runs, f1..f4 wait: full
        refused.append(extra is None)
        victim = pool.submit("victim", lambda: job("v"))
        bad = pool.submit("third", lambda: job("bad"))
        assert victim is not None and bad is not None
        gate.set()
        assert await victim == "v"
        error: type[BaseException] | None = None
        try:
            await bad
        except RuntimeError as e:
            error = type(e)
        for f in futures:
            assert f is not None
            await f
        pool.close()
        return ran, refused, error

    ran, refused, error = asyncio.run(scenario())
    assert refused == [False] * 5 + [True]
    assert ran.index("v") <= 2  # after the running f0 and at most one waiting f1
    assert ran == ["f0", "f1", "v", "f2", "f3", "f4"]
    assert error is RuntimeError  # a signer failure reaches the request (internalError)


def test_closing_the_pool_cancels_waiting_jobs() -> None:
    async def scenario() -> tuple[bool, bool]:
        pool: SigningPool[int] = SigningPool(threads=1, per_party=4)
        gate = threading.Event()
        running = pool.submit("a", lambda: int(gate.wait(5)))
        waiting = pool.submit("a", lambda: 2)
        assert running is not None and waiting is not None
        pool.close()
        gate.set()
        after = pool.submit("a", lambda: 3)
        return waiting.cancelled(), after is None

    assert asyncio.run(scenario()) == (True, True)


def test_jobs_abandoned_while_waiting_do_not_hold_the_partys_share() -> None:
    """A party whose waiting calls were given up (their connections went away: a client's
    timeout while the batch thread served others' large batches) is not refused its next
    call for them (429 ``fair_share`` for a small ``POST /v1/watch`` retried), and the
    abandoned jobs are never run."""

    async def scenario() -> tuple[bool, list[str]]:
        pool: SigningPool[str] = SigningPool(threads=1, per_party=2)
        gate = threading.Event()
        ran: list[str] = []

        def job(name: str) -> str:
            if name == "big":
                gate.wait(5)  # another party's batch holds the only thread
            ran.append(name)
            return name

        big = pool.submit("other", lambda: job("big"))
        gone = [pool.submit("party", lambda n=f"gone{i}": job(n)) for i in range(2)]
        assert big is not None and all(f is not None for f in gone)
        for f in gone:
            assert f is not None
            f.cancel()  # the connections went away
        retried = pool.submit("party", lambda: job("retry"))
        gate.set()
        if retried is not None:
            await retried
        await big
        pool.close()
        return retried is not None, ran

    accepted, ran = asyncio.run(scenario())
    assert accepted
    assert ran == ["big", "retry"]


def test_the_fair_queue_drops_a_partys_jobs_that_are_gone() -> None:
    q: FairQueue[str] = FairQueue(per_party=2)
    assert q.push("a", "a1") and q.push("a", "a2") and q.push("b", "b1")
    assert q.drop("a", lambda job: job == "a1") == 1
    assert q.waiting("a") == 1 and len(q) == 2
    assert q.drop("a", lambda _job: True) == 1 and q.waiting("a") == 0
    assert q.drop("nobody", lambda _job: True) == 0
    assert q.push("a", "a3") and _drain(q) == ["b1", "a3"]


# -- against the real server ---------------------------------------------------------------------


def _nonce_template(built: Built) -> bytes:
    a = sample(built, CertStatus.GOOD, "sign-card")
    pop = built.population
    cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
    issuer = x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes())
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    b = b.add_extension(x509.OCSPNonce(b"\xa5" * 16), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("signing", ["loop", "threads"])
def test_a_flooding_party_gets_try_later_and_another_party_is_still_answered(
    built: Built, tmp_path: Path, signing: str
) -> None:
    """sig-verifier (no quota) floods nonce requests; both-verifier is answered every time,
    whether the workers sign on their event loop or on a signing thread."""
    template = _nonce_template(built)
    flags = ("--signing", signing, "--sign-threads", "1", "--sign-queue-per-party", "2")
    with start_server(built, tmp_path / "srv", extra=flags) as srv:
        port = srv.port
        flooder_token, victim_token = srv.token("sig-verifier"), srv.token("both-verifier")
        stop = threading.Event()
        flooded: dict[str, int] = {}
        lock = threading.Lock()

        def ask(conn: http.client.HTTPConnection, token: str) -> ocsp.OCSPResponse:
            body = template.replace(b"\xa5" * 16, os.urandom(16))
            conn.request("POST", "/ocsp", body=body, headers={
                "Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}"})  # fmt: skip
            r = conn.getresponse()
            assert r.status == 200
            return ocsp.load_der_ocsp_response(r.read())

        def flood() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                for _ in range(2000):  # bounded in count, and stopped after a few seconds
                    if stop.is_set():
                        return
                    name = ask(conn, flooder_token).response_status.name
                    with lock:
                        flooded[name] = flooded.get(name, 0) + 1
            finally:
                conn.close()

        threads = [threading.Thread(target=flood) for _ in range(16)]
        for t in threads:
            t.start()
        victim: dict[str, int] = {}
        try:
            time.sleep(0.3)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            deadline = time.monotonic() + 6
            asked = 0
            while asked < 25 or (not flooded.get("TRY_LATER") and time.monotonic() < deadline):
                resp = ask(conn, victim_token)
                asked += 1
                name = resp.response_status.name
                victim[name] = victim.get(name, 0) + 1
                if resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
                    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
            conn.close()
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        # the other party was answered every time, during the flood
        assert victim == {"SUCCESSFUL": asked}, victim
        # the flooder got its share, and tryLater beyond it (before: never refused)
        assert flooded.get("SUCCESSFUL", 0) > 0 and flooded.get("TRY_LATER", 0) > 0, flooded
        assert set(flooded) <= {"SUCCESSFUL", "TRY_LATER"}, flooded

        def counted() -> bool:
            s = srv.scrape()
            return (
                total(s, "jpkiva_fresh_signatures_total", party="both-verifier") == asked
                and total(s, "jpkiva_fresh_signatures_total", party="sig-verifier")
                == flooded["SUCCESSFUL"]
                and total(s, "jpkiva_refusals_total", rule="fair_share") == flooded["TRY_LATER"]
            )

        until(counted, 8, "fresh signatures per party and refusals counted")
