"""Fresh signatures on the worker's event loop (responder/loopsigning.py), issue 17 item 3.

Handing each fresh signature to a thread and back costs the worker's threads several
sleeps and wake-ups per answer; ``[ocsp] signing = "loop"`` signs on the event loop
instead, one signature per loop iteration. In process, on a
real loop: the answers are the same bytes the job makes itself and verify; the other
callbacks of the loop (its connections) run between two signatures; the fair queue's
order and share hold (parties in turn, tryLater beyond the share); a job whose
connection went away is never signed; a failing signer fails its own job only; closing
cancels what waits; a key in a token stays on the threads.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from crlbuilder.keys.signer import SHA256_WITH_RSA_DER, PemSigner
from crlbuilder.model import CertStatus, Family
from crlbuilder.ocsp.response import ResponseSigner, SingleAnswer, cert_id_der, issuer_hashes
from responder.loopsigning import LoopSigning, fresh_signing
from responder.ocsp import Ready, SignJob
from responder.signing import SignJobThreads
from tests.support.pki import make_ca

NONCE = b"\x5a" * 16


@dataclass(frozen=True)
class Keys:
    signer: PemSigner
    rs: ResponseSigner
    cert_id: bytes


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = make_ca("loop signing test CA")
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    signer = PemSigner(ca.key, ca.cert)
    return Keys(
        signer, ResponseSigner(signer), cert_id_der("sha1", *issuer_hashes(ca.cert, "sha1"), 7)
    )


def job(keys: Keys, nonce: bytes | None = NONCE) -> SignJob:
    now = int(time.time())
    return SignJob(
        keys.rs, [SingleAnswer(keys.cert_id, CertStatus.GOOD)], now, now + 3600, nonce,
        ("good",), (Family.SIGN_CARD,), None,
    )  # fmt: skip


@dataclass
class Recorded(SignJob):
    """A sign job that notes when it runs (and can fail) in a shared list."""

    name: str = ""
    log: list[str] = field(default_factory=list)
    fail: bool = False

    def run(self) -> Ready:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("the signer failed")
        return super().run()


def recorded(keys: Keys, name: str, log: list[str], *, fail: bool = False) -> Recorded:
    j = job(keys)
    return Recorded(
        j.signer, j.answers, j.produced_at, j.next_update, j.nonce, j.statuses, j.families,
        j.cache_key, name=name, log=log, fail=fail,
    )  # fmt: skip


def test_an_answer_signed_on_the_loop_is_the_jobs_own_and_verifies(keys: Keys) -> None:
    j = job(keys)

    async def scenario() -> Ready:
        signing = LoopSigning(per_party=4)
        got = signing.sign("party", j)
        assert got is not None
        return await got

    ready = asyncio.run(scenario())
    assert ready.der == j.run().der  # PKCS#1 v1.5 is deterministic: the same bytes
    assert ready.signing_seconds > 0 and ready.statuses == ("good",)
    resp = ocsp.load_der_ocsp_response(ready.der)
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    public = keys.signer.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())
    assert keys.signer.signature_algorithm_der == SHA256_WITH_RSA_DER


def test_one_signature_per_loop_iteration_the_connections_are_served_between(
    keys: Keys,
) -> None:
    """The loop's other callbacks (its ready connections) run between two signatures:
    a cached answer waits for one signature at most, never for a party's whole queue."""
    log: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        signing = LoopSigning(per_party=8)
        futures = [signing.sign("party", recorded(keys, f"sign{i}", log)) for i in range(4)]

        def connection(k: int) -> None:  # a connection's callback, once per iteration
            log.append(f"io{k}")
            if k < 4:
                loop.call_soon(connection, k + 1)

        loop.call_soon(connection, 0)
        for f in futures:
            assert f is not None
            await f

    asyncio.run(scenario())
    signs = [i for i, e in enumerate(log) if e.startswith("sign")]
    assert len(signs) == 4
    for a, b in itertools.pairwise(signs):
        assert any(e.startswith("io") for e in log[a + 1 : b]), log  # never two in a row


def test_the_parties_are_signed_in_turn_and_a_full_share_is_refused(keys: Keys) -> None:
    log: list[str] = []

    async def scenario() -> list[bool]:
        signing = LoopSigning(per_party=4)
        got = [signing.sign("flooder", recorded(keys, f"f{i}", log)) for i in range(5)]
        refused = [f is None for f in got]
        victim = signing.sign("victim", recorded(keys, "v", log))
        third = signing.sign("third", recorded(keys, "t", log))
        assert signing.queue.waiting("flooder") == 4
        for f in [*got, victim, third]:
            if f is not None:
                await f
        assert signing.sign("flooder", recorded(keys, "f5", log)) is not None  # room again
        return refused

    refused = asyncio.run(scenario())
    assert refused == [False] * 4 + [True]  # beyond its share: tryLater, nothing queued
    assert log[:6] == ["f0", "v", "t", "f1", "f2", "f3"]


def test_a_job_whose_connection_went_away_is_never_signed(keys: Keys) -> None:
    log: list[str] = []

    async def scenario() -> bool:
        signing = LoopSigning(per_party=4)
        gone = signing.sign("a", recorded(keys, "gone", log))
        kept = signing.sign("a", recorded(keys, "kept", log))
        assert gone is not None and kept is not None
        gone.cancel()  # the HTTP layer cancels the answer of a closed connection
        await asyncio.wait_for(kept, 10)
        return gone.cancelled()

    assert asyncio.run(scenario())
    assert log == ["kept"]


def test_jobs_abandoned_while_waiting_do_not_hold_the_partys_share(keys: Keys) -> None:
    """A party whose waiting answers were given up (the connections went away before their
    turn) is not answered tryLater (``fair_share``) for its next one because of them, as on
    the signing threads (`responder.signing.SigningPool`)."""
    log: list[str] = []

    async def scenario() -> bool:
        signing = LoopSigning(per_party=2)
        gone = [signing.sign("a", recorded(keys, f"gone{i}", log)) for i in range(2)]
        for f in gone:
            assert f is not None
            f.cancel()  # the HTTP layer cancels the answer of a closed connection
        retried = signing.sign("a", recorded(keys, "retry", log))
        if retried is not None:
            await asyncio.wait_for(retried, 10)
        return retried is not None

    assert asyncio.run(scenario())
    assert log == ["retry"]


def test_a_failing_signature_fails_its_own_job_only(keys: Keys) -> None:
    log: list[str] = []

    async def scenario() -> tuple[type[BaseException] | None, Ready]:
        signing = LoopSigning(per_party=4)
        bad = signing.sign("a", recorded(keys, "bad", log, fail=True))
        good = signing.sign("b", recorded(keys, "good", log))
        assert bad is not None and good is not None
        error: type[BaseException] | None = None
        try:
            await bad
        except RuntimeError as exc:  # the app answers internalError
            error = type(exc)
        return error, await good

    error, ready = asyncio.run(scenario())
    assert error is RuntimeError and ready.der and log == ["bad", "good"]


def test_closing_cancels_the_waiting_jobs_and_refuses_later_ones(keys: Keys) -> None:
    log: list[str] = []

    async def scenario() -> tuple[bool, bool]:
        signing = LoopSigning(per_party=4)
        waiting = signing.sign("a", recorded(keys, "w", log))
        assert waiting is not None
        signing.close()
        await asyncio.sleep(0)  # the loop iterates: nothing is signed
        return waiting.cancelled(), signing.sign("a", recorded(keys, "x", log)) is None

    assert asyncio.run(scenario()) == (True, True)
    assert log == []


def test_a_signing_that_moved_to_another_loop_still_signs(keys: Keys) -> None:
    """A worker has one loop; tests and benchmarks run one loop after another, and a loop
    may close with a signature still due on it."""
    signing = LoopSigning(per_party=4)
    first = asyncio.new_event_loop()

    async def submit_and_stop() -> None:
        assert signing.sign("a", job(keys)) is not None  # due on the first loop
        asyncio.get_running_loop().stop()
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="stopped"):
        first.run_until_complete(submit_and_stop())
    first.close()

    async def once() -> Ready:
        got = signing.sign("a", job(keys))
        assert got is not None
        return await asyncio.wait_for(got, 10)

    assert asyncio.run(once()).der
    assert asyncio.run(once()).der


class TokenKey:
    """Stands for a key in a token (`crlbuilder.keys.pkcs11.Pkcs11Signer`): not in memory."""

    def __init__(self, inner: PemSigner) -> None:
        self.inner = inner

    @property
    def certificate(self) -> x509.Certificate:
        return self.inner.certificate

    @property
    def signature_algorithm_der(self) -> bytes:
        return self.inner.signature_algorithm_der

    def sign(self, data: bytes) -> bytes:
        return self.inner.sign(data)


def test_loop_signing_takes_pem_keys_and_leaves_a_token_on_the_threads(keys: Keys) -> None:
    loop = fresh_signing("loop", 2, 8, [keys.signer])
    token = fresh_signing("loop", 2, 8, [keys.signer, TokenKey(keys.signer)])
    threads = fresh_signing("threads", 3, 8, [keys.signer])
    try:
        assert isinstance(loop, LoopSigning) and loop.mode == "loop"
        assert isinstance(token, SignJobThreads) and token.mode == "threads"
        assert isinstance(threads, SignJobThreads) and threads.threads == 3
        assert loop.queue.per_party == token.queue.per_party == 8
    finally:
        for s in (loop, token, threads):
            s.close()


def test_the_signing_threads_take_sign_jobs_too(keys: Keys) -> None:
    j = job(keys)

    async def scenario() -> Ready:
        threads = SignJobThreads(1, 4)
        try:
            got = threads.sign("party", j)
            assert got is not None
            return await got
        finally:
            threads.close()

    assert asyncio.run(scenario()).der == j.run().der
