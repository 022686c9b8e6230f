"""Fresh OCSP signatures in signing processes (responder/procsigning.py, responder/signchild.py), issue 17 item 3.

``[ocsp] signing = "processes"``: a worker's fresh answers are signed by signing
processes that alone load the keys (the demo PKI's PEM keys, 0600), fed over pipes. In
process, on a real loop, against real signing processes: the answers are the bytes the
job makes itself and verify; a party's share beyond what the processes hold is refused
(tryLater) while another party is still taken; a signing process killed with jobs in
flight fails those jobs with `SignerLost` (tryLater), is counted and replaced, and the
next job signs; a process that cannot load its keys fails its jobs the same way instead
of hanging them; closing cancels what waits and reaps every process. Through a real
server: the same, with the answers' statuses and the exit counter read from outside.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import OCSPNonce, ocsp

from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import Manifest
from crlbuilder.model import CertStatus, Family
from crlbuilder.ocsp.response import SingleAnswer, cert_id_der, issuer_hashes
from responder.app import JpkiApp
from responder.loopsigning import fresh_signing, signing_processes
from responder.ocsp import IssuerView, KeyElsewhere, Ready, SignJob, load_issuers
from responder.procsigning import DEPTH, ProcessSigningPool, SignerLost
from responder.signchild import child_command
from tests.conftest import Built
from tests.support.harness import ocsp_request, sample, start_server, total
from tests.support.procs import alive, children
from tests.support.wait import until

NONCE = b"\x3c" * 32


@pytest.fixture(scope="module")
def views(demo_pki: tuple[Path, Manifest]) -> list[IssuerView]:
    """The issuers as a worker signing in processes loads them: certificates, no key."""
    return load_issuers(demo_pki[1], keys=False)


def job(view: IssuerView, serial: int = 7, nonce: bytes | None = NONCE) -> SignJob:
    now = int(time.time())
    cid = cert_id_der("sha1", *issuer_hashes(view.certificate, "sha1"), serial)
    return SignJob(
        view.signer, [SingleAnswer(cid, CertStatus.GOOD)], now, now + 3600, nonce,
        ("good",), (Family.SIGN_CARD,), None,
    )  # fmt: skip


@pytest.fixture
def pool(demo_pki: tuple[Path, Manifest]) -> Iterator[tuple[ProcessSigningPool, list[int]]]:
    exits: list[int] = []
    p = ProcessSigningPool(1, 8, child_command(pki=demo_pki[0], group=None), on_exit=exits.append)
    try:
        yield p, exits
    finally:
        p.close()


def test_answers_signed_in_the_processes_are_the_jobs_own_and_verify(
    demo_pki: tuple[Path, Manifest], views: list[IssuerView]
) -> None:
    keyed = load_issuers(demo_pki[1])  # what the threads sign with, for the same bytes
    jobs = [job(views[i % len(views)], serial=i + 1) for i in range(6)]
    p = ProcessSigningPool(2, 8, child_command(pki=demo_pki[0], group=None))

    async def scenario() -> list[Ready]:
        got = [p.sign(f"party-{i % 2}", j) for i, j in enumerate(jobs)]
        assert all(g is not None for g in got)
        return list(await asyncio.gather(*[g for g in got if g is not None]))

    try:
        readies = asyncio.run(scenario())
    finally:
        p.close()
    assert p.sent == len(jobs) and p.exits == 0
    for serial, (j, ready) in enumerate(zip(jobs, readies, strict=True), start=1):
        with pytest.raises(SignerError, match="holds no signing key"):
            j.run()  # the worker's side has no key to sign with
        same = dataclasses.replace(j, signer=keyed[(serial - 1) % len(keyed)].signer)
        assert same.signer.signer_id == j.signer.signer_id
        assert ready.der == same.run().der  # PKCS#1 v1.5 is deterministic: the same bytes
        assert ready.signing_seconds > 0 and ready.statuses == ("good",)
        resp = ocsp.load_der_ocsp_response(ready.der)
        assert resp.serial_number == serial
        assert resp.extensions.get_extension_for_class(OCSPNonce).value.nonce == NONCE
        public = j.signer.signer.certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_a_partys_full_share_is_refused_and_another_party_still_taken(
    pool: tuple[ProcessSigningPool, list[int]], views: list[IssuerView]
) -> None:
    p, _ = pool
    p.queue.per_party = 2
    (pid,) = p.pids()
    os.kill(pid, signal.SIGSTOP)  # nothing is signed: what is sent stays in flight

    async def scenario() -> None:
        held = [p.sign("flood", job(views[0], serial=i)) for i in range(1, DEPTH + 3)]
        assert all(h is not None for h in held)  # DEPTH in the pipe, two waiting
        assert p.sign("flood", job(views[0], serial=99)) is None  # its share is full
        other = p.sign("other", job(views[0], serial=100))
        assert other is not None
        os.kill(pid, signal.SIGCONT)
        done = await asyncio.wait_for(asyncio.gather(*held, other), 30)
        assert len(done) == DEPTH + 3

    try:
        asyncio.run(scenario())
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_killed_signing_process_fails_its_jobs_try_later_and_is_replaced(
    pool: tuple[ProcessSigningPool, list[int]], views: list[IssuerView]
) -> None:
    p, exits = pool
    (pid,) = p.pids()
    os.kill(pid, signal.SIGSTOP)

    async def scenario() -> Ready:
        held = [p.sign("party", job(views[0], serial=i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)  # a signing process this test's pool started
        for h in held:
            assert h is not None
            with pytest.raises(SignerLost):
                await asyncio.wait_for(h, 10)
        await asyncio.sleep(0)
        while not p.pids():  # replaced at once, or after its back-off when it died young
            await asyncio.sleep(0.05)
        nxt = p.sign("party", job(views[0], serial=3))
        assert nxt is not None
        return await asyncio.wait_for(nxt, 30)

    ready = asyncio.run(scenario())
    assert ocsp.load_der_ocsp_response(ready.der).serial_number == 3
    assert exits == [2] and p.exits == 1 and p.restarts == 1
    assert p.pids() != [pid] and not alive(pid)


def test_a_pool_made_in_a_running_loop_replaces_a_process_dead_before_any_job(
    demo_pki: tuple[Path, Manifest],
) -> None:
    """A worker makes its pool in its running loop: a signing process that dies before the
    worker's first fresh answer is noticed and replaced then, not by that answer's tryLater."""

    async def scenario() -> tuple[list[int], int, list[int]]:
        exits: list[int] = []
        p = ProcessSigningPool(
            1, 8, child_command(pki=demo_pki[0], group=None), on_exit=exits.append
        )
        try:
            (pid,) = p.pids()
            os.kill(pid, signal.SIGKILL)  # a signing process this test's pool started
            deadline = time.monotonic() + 10
            while (not exits or not p.pids()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return exits, pid, p.pids()
        finally:
            p.close()

    exits, pid, now = asyncio.run(scenario())
    assert exits == [0]  # counted, no job lost
    assert now and now != [pid]


def test_started_waits_for_the_keys_of_every_process_and_is_bounded(
    demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """What a worker awaits before it says it is ready: every signing process has loaded its
    keys (or failed to, and is being replaced); a stopped one makes it give up at its bound."""
    cmd = child_command(pki=demo_pki[0], group=None)

    async def scenario() -> None:
        p = ProcessSigningPool(2, 8, cmd)
        try:
            assert not any(c is not None and c.hello for c in p.children)  # a Python start
            assert await p.started(30)
            assert all(c is not None and c.hello for c in p.children)
        finally:
            p.close()
        bad = ProcessSigningPool(1, 8, child_command(pki=tmp_path, group=None))
        try:
            assert await bad.started(30)  # it said it failed: no wait for a key never loaded
        finally:
            bad.close()
        stuck = ProcessSigningPool(1, 8, cmd)
        (pid,) = stuck.pids()
        os.kill(pid, signal.SIGSTOP)  # a signing process this test's pool started
        try:
            t0 = time.monotonic()
            assert not await stuck.started(0.5)
            assert time.monotonic() - t0 < 5
        finally:
            os.kill(pid, signal.SIGCONT)
            stuck.close()

    asyncio.run(scenario())


def test_a_signing_process_that_cannot_load_its_keys_fails_its_jobs_not_hangs(
    tmp_path: Path, views: list[IssuerView], demo_pki: tuple[Path, Manifest]
) -> None:
    exits: list[int] = []
    p = ProcessSigningPool(1, 8, child_command(pki=tmp_path, group=None), on_exit=exits.append)

    async def scenario() -> None:
        got = p.sign("party", job(views[0]))
        assert got is not None
        with pytest.raises(SignerLost):
            await asyncio.wait_for(got, 30)

    try:
        asyncio.run(scenario())
    finally:
        p.close()
    assert exits and p.exits >= 1


def test_closing_cancels_what_waits_reaps_the_processes_and_refuses_later_jobs(
    demo_pki: tuple[Path, Manifest], views: list[IssuerView]
) -> None:
    p = ProcessSigningPool(2, 8, child_command(pki=demo_pki[0], group=None))
    pids = p.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    async def scenario() -> None:
        held = [p.sign("party", job(views[0], serial=i)) for i in range(1, 7)]
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        p.close()
        for h in held:
            assert h is not None and h.cancelled()
        assert p.sign("party", job(views[0])) is None

    asyncio.run(scenario())
    assert not any(alive(pid) for pid in pids)
    assert p.pids() == []


def test_the_processes_mode_is_sized_to_the_cores(
    demo_pki: tuple[Path, Manifest], views: list[IssuerView]
) -> None:
    assert signing_processes(2, 1) == 2
    assert signing_processes(2, 2) == 1
    assert signing_processes(4, 3) == 1
    assert signing_processes(1, 4) == 1
    assert signing_processes(8, 2) == 4
    cmd = child_command(pki=demo_pki[0], group=None)
    s = fresh_signing("processes", 2, 8, [], processes=0, workers=64, command=cmd)
    try:
        assert isinstance(s, ProcessSigningPool) and s.mode == "processes"
        assert s.processes == 1 and s.queue.per_party == 8
    finally:
        s.close()
    with pytest.raises(ValueError, match="command"):
        fresh_signing("processes", 2, 8, [])


def test_a_worker_signing_in_processes_loads_no_key(built: Built, tmp_path: Path) -> None:
    cfg = built.app_config(tmp_path, **{"ocsp.signing": "processes", "ocsp.sign_processes": 1})
    app = JpkiApp(cfg, 0)
    try:
        assert isinstance(app.signing, ProcessSigningPool) and app.signing.processes == 1
        signers = [rs for v in app.ocsp.issuers.values() for rs in (v.signer, v.successor) if rs]
        assert signers and all(isinstance(rs.signer, KeyElsewhere) for rs in signers)
    finally:
        app.close()
    threads = JpkiApp(built.app_config(tmp_path / "t"), 0)
    try:
        assert not any(
            isinstance(v.signer.signer, KeyElsewhere) for v in threads.ocsp.issuers.values()
        )
    finally:
        threads.close()


def _signing_children(master: int) -> list[int]:
    """The signing processes under ``master``'s workers."""
    out = []
    for worker in children(master):
        for pid in children(worker):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"responder.signchild" in cmd:
                out.append(pid)
    return out


def test_a_server_signing_in_processes_answers_replaces_a_killed_one_and_stops_them(
    built: Built, tmp_path: Path
) -> None:
    a = sample(built, CertStatus.GOOD, "sign-card")
    with start_server(
        built, tmp_path / "s", extra=("--signing", "processes", "--sign-processes", "1")
    ) as server:
        token = server.token("sig-verifier")
        der = server.post(ocsp_request(built, a, nonce=True), token=token)
        resp = ocsp.load_der_ocsp_response(der)
        assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
        until(lambda: len(_signing_children(server.pid)) == 2, timeout=30, what="2 signers")
        signers = _signing_children(server.pid)
        for pid in signers:
            os.kill(pid, signal.SIGSTOP)  # the signing processes this test's server started
        answers: list[bytes | BaseException] = []

        def ask() -> None:
            try:
                answers.append(server.post(ocsp_request(built, a, nonce=True), token=token))
            except (urllib.error.URLError, OSError) as exc:
                answers.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(1.0)  # the request is in a stopped process's pipe
        for pid in signers:
            os.kill(pid, signal.SIGKILL)
        asker.join(30)
        assert not asker.is_alive()
        (held,) = answers
        assert isinstance(held, bytes), held
        assert (
            ocsp.load_der_ocsp_response(held).response_status is ocsp.OCSPResponseStatus.TRY_LATER
        )
        until(
            lambda: len(set(_signing_children(server.pid)) - set(signers)) == 2,
            timeout=30,
            what="two new signing processes",
        )
        assert total(server.scrape(), "jpkiva_signing_process_exits_total") == 2

        def signs() -> bool:
            got = server.post(ocsp_request(built, a, nonce=True), token=token)
            return ocsp.load_der_ocsp_response(got).response_status is (
                ocsp.OCSPResponseStatus.SUCCESSFUL
            )

        until(signs, timeout=30, what="a fresh answer after the replacement")
        running = _signing_children(server.pid)
    assert running and not any(alive(pid) for pid in running)
