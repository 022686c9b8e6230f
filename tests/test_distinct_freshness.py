"""Freshness and the ledger under distinct-request load (issue 17's correctness rule).

A real `crlbuilder build --follow` and a real `responder serve` (two workers) share a copy
of the demo store. Client threads ask about hundreds of distinct good certificates over
keep-alive connections, by GET and by POST, a tenth with a nonce (signed fresh), so that
both workers hold good answers in their caches; meanwhile a revocation file for some of
them is dropped into the builder's spool. The test reads the store itself to learn when
the revocation is committed: no answer to a request sent after that instant may say good
(Act §11-§14 and their family counterparts: the certificate lost effect when the record
was made; RFC 6960 answers what the store holds), and the ledger (帳簿, Act §40) counts
exactly the answers the clients received.
"""

from __future__ import annotations

import base64
import http.client
import random
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import OCSPNonce, ocsp

from crlbuilder.model import Family
from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.rules import JST
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store
from responder.ledger import Ledger
from tests.conftest import BIN, Built
from tests.support.harness import start_server
from tests.support.procs import started
from tests.support.wait import until

PARTY = "both-verifier"
DISTINCT = 300
VICTIMS = 30
CLIENTS = 4
NONCE_EVERY = 10


@dataclass(frozen=True)
class Target:
    key: bytes
    issuer: str
    serial: int
    der: bytes
    """The request without a nonce (its answer is cached by the responder)."""
    path: str
    """The same request by GET (RFC 6960 appendix A.1)."""
    name_hash: bytes
    key_hash: bytes


def _targets(store: Path, n: int, seed: int) -> list[Target]:
    """``n`` good sign-card and auth-card certificates, none with a lapse due within a day."""
    from cryptography import x509

    now = int(time.time())
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            issuers = {m.index: m for m in r.issuers()}
            keys = [
                bytes(k)
                for k, st in r.statuses()
                if st.state == sf.STATE_GOOD
                and st.family in (Family.SIGN_CARD.code, Family.AUTH_CARD.code)
                and not issuers[int.from_bytes(k[:2], "big")].compromised_at
                and st.not_after > now + 86_400
                and (not r.lapse_due(st) or r.lapse_due(st) > now + 86_400)
            ]
    finally:
        s.close()
    assert len(keys) >= n, f"the demo store has {len(keys)} good certificates"
    out = []
    for key in random.Random(seed).sample(keys, n):
        meta = issuers[int.from_bytes(key[:2], "big")]
        name_hash, key_hash = issuer_hashes(x509.load_der_x509_certificate(meta.cert_der), "sha1")
        serial = int.from_bytes(key[2:], "big")
        der = _request(name_hash, key_hash, serial, nonce=False)
        path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
        out.append(Target(key, meta.id, serial, der, path, name_hash, key_hash))
    return out


def _request(name_hash: bytes, key_hash: bytes, serial: int, *, nonce: bool) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1()
    )
    if nonce:
        b = b.add_extension(OCSPNonce(random.randbytes(16)), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


@dataclass
class Asked:
    sent: float
    """time.monotonic() when the request was sent."""
    target: int
    status: ocsp.OCSPCertStatus


class Client:
    """One keep-alive connection asking about the targets in random order."""

    def __init__(self, url: str, token: str, targets: list[Target], seed: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.targets = targets
        self.rng = random.Random(seed)
        self.asked: list[Asked] = []
        self.n = 0

    def ask(self, i: int) -> Asked:
        t = self.targets[i]
        self.n += 1
        sent = time.monotonic()
        if self.n % NONCE_EVERY == 0:
            body = _request(t.name_hash, t.key_hash, t.serial, nonce=True)
            headers = {**self.auth, "Content-Type": "application/ocsp-request"}
            self.conn.request("POST", "/ocsp", body=body, headers=headers)
        elif self.n % 2:
            self.conn.request("GET", t.path, headers=self.auth)
        else:
            headers = {**self.auth, "Content-Type": "application/ocsp-request"}
            self.conn.request("POST", "/ocsp", body=t.der, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        assert resp.status == 200, (resp.status, data[:200])
        got = ocsp.load_der_ocsp_response(data)
        assert got.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert got.serial_number == t.serial
        a = Asked(sent, i, got.certificate_status)
        self.asked.append(a)
        return a

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.ask(self.rng.randrange(len(self.targets)))


def test_no_good_answer_after_a_committed_revocation_under_distinct_load(
    built: Built, tmp_path: Path
) -> None:
    store, crl_dir, spool = tmp_path / "store", tmp_path / "crl", tmp_path / "spool"
    copy_store(built.store, store)
    shutil.copytree(built.crl_dir, crl_dir)
    spool.mkdir()
    targets = _targets(store, DISTINCT, seed=17)
    victims = list(range(VICTIMS))  # the sample is random: the first ones will do
    follow = [
        str(BIN / "crlbuilder"), "build", "--config", str(Path("config/builder.toml").resolve()),
        "--store", str(store), "--pki", str(built.pki), "--facts-key-file", str(built.facts_key),
        "--registry", str(built.registry), "--quarantine", str(tmp_path / "quarantine.jsonl"),
        "--notices", str(tmp_path / "notices.jsonl"), "--crl-dir", str(crl_dir),
        "--spool", str(spool), "--input", str(spool), "--follow", "--follow-interval", "0.05",
        "--no-progress",
    ]  # fmt: skip
    with (
        started(follow, log=tmp_path / "builder.log") as builder,
        start_server(
            built, tmp_path / "responder", store=store, extra=("--access-log", "off")
        ) as server,
    ):
        token = server.token(PARTY)
        clients = [Client(server.url, token, targets, seed=i) for i in range(CLIENTS + 1)]
        probe = clients.pop()
        for i in range(len(targets)):  # every target good, and cached, before the revocation
            for _ in range(2):
                assert probe.ask(i).status is ocsp.OCSPCertStatus.GOOD
        stop = threading.Event()
        errors: list[BaseException] = []

        def load(c: Client) -> None:
            try:
                c.run(stop)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        try:
            time.sleep(1.0)
            recorded = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
            lines = [
                msgspec.json.encode(
                    {
                        "type": "revocation-request",
                        "id": f"distinct-{time.time_ns()}-{i}",
                        "recorded_at": recorded.isoformat(),
                        "serial": targets[i].serial,
                        "issuer": targets[i].issuer,
                        "reason": "application",
                    }
                )
                for i in victims
            ]
            (spool / ".incoming.tmp").write_bytes(b"\n".join(lines) + b"\n")
            (spool / ".incoming.tmp").rename(spool / "revocations.jsonl")
            view = Store.open(store, readonly=True)
            try:

                def committed() -> bool:
                    with view.read() as r:
                        return all(
                            (st := r.status(targets[i].key)) is not None and st.revoked
                            for i in victims
                        )

                until(committed, timeout=30, what="the revocations committed", interval=0.002)
            finally:
                view.close()
            seen = time.monotonic()  # the commit happened before this instant
            time.sleep(1.5)

            def distinct() -> bool:  # a loaded machine asks fewer in 1.5 s: go on until then
                return len({a.target for c in clients for a in list(c.asked)}) > DISTINCT * 0.9

            until(distinct, timeout=60, what="the clients asked about 90% of the targets")
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=30)
        assert not errors, errors
        assert builder.poll() is None, (tmp_path / "builder.log").read_text()[-2000:]
        for i in victims:  # each victim asked once more after the commit, by every route
            for _ in range(NONCE_EVERY):
                assert probe.ask(i).status is ocsp.OCSPCertStatus.REVOKED
        for c in [*clients, probe]:
            c.conn.close()
    asked = [a for c in [*clients, probe] for a in c.asked]
    after = [a for a in asked if a.sent > seen]
    late_good = [a for a in after if a.target in victims and a.status is ocsp.OCSPCertStatus.GOOD]
    assert not late_good, f"{len(late_good)} good answers to revoked certificates after the commit"
    loaded = [a for c in clients for a in c.asked]
    assert len({a.target for a in loaded}) > DISTINCT * 0.9  # distinct, not one repeated
    assert sum(a.target in victims and a.sent > seen for a in loaded) >= VICTIMS
    assert all(a.status is ocsp.OCSPCertStatus.GOOD for a in asked if a.target not in victims)

    ledger = Ledger.open(tmp_path / "responder" / "ledger")
    try:
        ledger.collect()
        today = datetime.now(JST).date()  # the ledger's days are JST days
        counted = sum(
            r.count for r in ledger.rows(today - timedelta(days=1), today) if r.party == PARTY
        )
    finally:
        ledger.close()
    assert counted == len(asked)
