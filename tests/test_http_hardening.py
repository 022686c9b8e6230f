"""The attack run of issue 10 against the real responder: what the HTTP layer must hold.

Each test reproduces one probe on loopback, bounded in count and time: HEAD on
``/ocsp/{b64}`` (item 11: nothing provided, nothing signed or counted in the
帳簿, Act §40), slow unauthenticated connections against a registered party
(item 4), and a bearer token that matches no party, refused before its body.
The HTTP layer's own mechanisms (deadlines, displacement, back-pressure) are
tested with a trivial app in ``tests/test_http.py``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crlbuilder.model import CertStatus, Family
from crlbuilder.rules import JST
from responder.ledger import Ledger
from tests.conftest import Built
from tests.support.harness import Server, start_server, status_of


def _nonce_request(built: Built) -> bytes:
    a = next(
        x for x in built.answers if x.family is Family.SIGN_CARD and x.status is CertStatus.GOOD
    )
    pop = built.population
    cert = x509.load_pem_x509_certificate((pop / a.cert).read_bytes())
    issuer = x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes())
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    b = b.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def _counted(ledger_dir: Path, party: str) -> int:
    """What the ledger holds for ``party`` today and yesterday, JST (every worker's counts
    merged): a test run across 00:00 JST of a month's first day counted both months."""
    ledger = Ledger.open(ledger_dir)
    try:
        ledger.collect()
        today = datetime.now(JST).date()
        days = (today - timedelta(days=1), today)
        return sum(r.count for r in ledger.rows(*days) if r.party == party)
    finally:
        ledger.close()


def _request(s: Server, method: str, path: str, token: str) -> http.client.HTTPResponse:
    host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_head_on_ocsp_get_neither_signs_nor_counts(built: Built, tmp_path: Path) -> None:
    """Issue 10 item 11: ten HEADs with a nonce were ten signatures and ten ledger counts."""
    with start_server(built, tmp_path) as s:
        path = "/ocsp/" + urllib.parse.quote(base64.b64encode(_nonce_request(built)).decode())
        token = s.token("sig-verifier")
        for _ in range(10):
            head = _request(s, "HEAD", path, token)
            assert head.status == 405 and head.getheader("Allow") == "GET"
        assert _counted(tmp_path / "ledger", "sig-verifier") == 0
        get = _request(s, "GET", path, token)  # the same request by GET is answered and counted
        assert get.status == 200
        assert _counted(tmp_path / "ledger", "sig-verifier") == 1


@contextlib.contextmanager
def _slow_unauthenticated(s: Server, count: int) -> Iterator[list[socket.socket]]:
    """Connections that send OCSP headers without credentials, then a body that never ends."""
    host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(
                b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\n"
                b"Content-Length: 500\r\n\r\n0"
            )
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_registered_party_answered_while_unattributed_budget_is_exhausted(
    built: Built, tmp_path: Path
) -> None:
    """Issue 10 item 4: slow unauthenticated bodies filled every slot and parties got 503."""
    limits = ("--max-connections", "10", "--max-unattributed", "4", "--body-timeout", "30")
    with start_server(built, tmp_path, extra=limits) as s:
        a = next(x for x in built.answers if x.family is Family.AUTH_CARD)
        pop = built.population
        body = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(
                x509.load_pem_x509_certificate((pop / a.cert).read_bytes()),
                x509.load_pem_x509_certificate((pop / a.issuer_cert).read_bytes()),
                hashes.SHA1(),
            )
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        token = s.token("auth-verifier")
        with _slow_unauthenticated(s, 40):  # twice the two workers' max_connections
            time.sleep(0.3)
            results = []
            for _ in range(20):  # a new connection each time (urllib does not keep-alive)
                try:
                    results.append(status_of(s.post(body, token=token)))
                except urllib.error.HTTPError as e:
                    results.append(e.code)  # type: ignore[arg-type]
        assert results == [ocsp.OCSPResponseStatus.SUCCESSFUL] * 20


def test_a_token_that_matches_no_party_is_refused_before_its_body(
    built: Built, tmp_path: Path
) -> None:
    """Issue 10 item 4: an OCSP POST with a wrong bearer token is answered from its headers."""
    with start_server(built, tmp_path) as s:
        host, port = urllib.parse.urlsplit(s.url).netloc.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /ocsp HTTP/1.1\r\nHost: a\r\nContent-Type: application/ocsp-request\r\n"
                b"Authorization: Bearer not-a-registered-token\r\nContent-Length: 500\r\n\r\n"
            )
            sock.settimeout(3)  # well under header_timeout (5 s): the body is not waited for
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, der = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in head
        assert status_of(der) is ocsp.OCSPResponseStatus.UNAUTHORIZED
