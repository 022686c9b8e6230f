"""The /v1 JSON API against the real server on the demo population (`built`): batch 現況確認
(Act §18(1), §37(1)) answers what OCSP answers, entry by entry."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import Answer, CertStatus, Family
from crlbuilder.rules import JST
from responder.ledger import Ledger
from responder.v1 import jws
from tests.conftest import Built
from tests.support.harness import Server, start_server, total
from tests.support.wait import until

STATUS_NAME = {
    CertStatus.GOOD: "good",
    CertStatus.REVOKED: "revoked",
    CertStatus.UNKNOWN: "unknown",
}


def v1_raw(
    s: Server, path: str, body: object | None = None, party: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST (a body given) or GET ``path``; (status, headers with lower-case names, body bytes)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if party is not None:
        headers["Authorization"] = f"Bearer {s.token(party)}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{s.url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status), {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read()


def v1(
    s: Server, path: str, body: object | None = None, party: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """`v1_raw` with the body decoded from JSON."""
    code, headers, raw = v1_raw(s, path, body, party)
    return code, headers, json.loads(raw)


def ledger_totals(directory: Path) -> dict[tuple[str, ...], int]:
    """The ledger in ``directory`` after merging the workers' files: (party, service, method)."""
    until(lambda: list(directory.glob("*.ledger")), what=f"worker files in {directory}")
    ledger = Ledger.open(directory)
    try:
        ledger.collect()
        today = datetime.now(JST).date()
        return ledger.totals(
            today - timedelta(days=1), today + timedelta(days=1), by=("party", "service", "method")
        )
    finally:
        ledger.close()


def by_serial(a: Answer) -> dict[str, str]:
    return {"issuer": a.issuer, "serial": f"{a.serial:x}"}


def by_certificate(built: Built, a: Answer) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate((built.population / a.cert).read_bytes())
    return {"certificate": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}


def test_batch_status_answers_every_sample_as_ocsp_would(built: Built, tmp_path: Path) -> None:
    answers = built.answers
    with start_server(built, tmp_path) as s:
        refs = [by_serial(a) for a in answers] + [by_certificate(built, a) for a in answers[:20]]
        code, headers, raw = v1_raw(s, "/v1/status", {"entries": refs}, "both-verifier")
        assert code == 200, raw
        assert headers["content-type"] == "application/json"
        # signed (item 7): the detached JWS verifies over the exact bytes received, with the
        # certificate of GET /v1/keys (public), which is the manifest's answer-signing one
        code, _, jwks = v1(s, "/v1/keys")
        assert code == 200
        cert = x509.load_der_x509_certificate(base64.b64decode(jwks["keys"][0]["x5c"][0]))
        manifest_cert = x509.load_pem_x509_certificate(
            built.manifest.path(built.manifest.answer_cert).read_bytes()
        )
        assert cert == manifest_cert
        assert jws.verify(headers["jws-signature"], raw, cert)["kid"] == jwks["keys"][0]["kid"]
        got = json.loads(raw)
        assert got["store"]["commit"] > 0
        for a, e in zip([*answers, *answers[:20]], got["entries"], strict=True):
            assert e["status"] == STATUS_NAME[a.status], (a, e)
            assert e["family"] == a.family.value
            if a.status is CertStatus.REVOKED:
                assert a.revoked_at is not None and a.category is not None
                assert e["revokedAt"] == a.revoked_at.isoformat().replace("+00:00", "Z")
                assert e["category"] == a.category.value
                assert e["article"] == a.category.articles[a.family]
        # a 署名検証者 gets the auth entries refused, one by one, and the sign ones answered
        code, _, got = v1(s, "/v1/status", {"entries": refs}, "sig-verifier")
        assert code == 200
        for a, e in zip([*answers, *answers[:20]], got["entries"], strict=True):
            if a.family in (Family.AUTH_CARD, Family.AUTH_MOBILE):
                assert e["status"] == "refused" and e["refusal"]["article"] == "Act §37(1)"
            else:
                assert e["status"] == STATUS_NAME[a.status]
        code, headers, got = v1(s, "/v1/status", {"entries": refs}, None)
        assert (code, got["rule"]) == (401, "unauthenticated")
        assert "jws-signature" not in headers  # a refusal provides nothing
        code, _, got = v1(s, "/v1/status", {"entries": refs[:1], "x": 1}, "both-verifier")
        assert (code, got["rule"], got["field"]) == (400, "bad_input", "$")

        def counted() -> bool:  # each worker flushes its counts on its own timer
            samples = s.scrape()
            return (
                total(samples, "jpkiva_requests_total", endpoint="v1-status", http_status="200")
                == 2
                and total(samples, "jpkiva_refusals_total", rule="unauthenticated") == 1
                and total(samples, "jpkiva_refusals_total", rule="malformed") == 1
            )

        until(counted, what="two answered calls, one unauthenticated, one malformed in /metrics")


def test_a_batch_of_10000_needs_a_credential_for_its_size(built: Built, tmp_path: Path) -> None:
    """10,000 entries (about 600 KB) pass the JSON body limit with a credential; without one
    the ordinary body limit (64 KiB) answers 413 before the body is read."""
    refs = [by_serial(a) for a in built.answers]
    refs = (refs * (10_000 // len(refs) + 1))[:10_000]
    with start_server(built, tmp_path) as s:
        code, _, got = v1(s, "/v1/status", {"entries": refs}, "both-verifier")
        assert code == 200 and len(got["entries"]) == 10_000
        code, _, got = v1(s, "/v1/status", {"entries": [*refs, refs[0]]}, "both-verifier")
        assert (code, got["field"]) == (400, "$.entries")
        data = json.dumps({"entries": refs}).encode()
        req = urllib.request.Request(
            f"{s.url}/v1/status", data=data, headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("a 600 KB body without a credential was read")
        except urllib.error.HTTPError as e:
            assert e.code == 413
        except (ConnectionError, urllib.error.URLError):
            pass  # the server may close before the client finished sending


def test_an_unknown_bearer_is_refused_before_the_body_is_read(built: Built, tmp_path: Path) -> None:
    """Authentication comes before anything of the body (brief: before decoding it): a
    token matching no party gets 401 from the headers alone, the body never sent."""
    with start_server(built, tmp_path) as s:
        host, port = s.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer not-a-party\r\nContent-Length: 1000000\r\n\r\n"
            )
            head = sock.recv(65536).decode("latin-1")
        assert head.startswith("HTTP/1.1 401 "), head
        assert "application/problem+json" in head and "unauthenticated" in head


def _head_for_length(s: Server, target: str, length: int, token: str | None) -> tuple[str, bytes]:
    """Send headers announcing a body of ``length`` octets (none sent): the answer's head and
    body, as the server refuses the body from its Content-Length alone."""
    host, port = s.url.removeprefix("http://").rsplit(":", 1)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {length}\r\n\r\n".encode()
        )
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_a_body_over_the_limit_is_a_413_problem_under_v1(built: Built, tmp_path: Path) -> None:
    """A client of the JSON API parses every refusal as the RFC 9457 problem its OpenAPI
    document promises: the 413 of a body over the limit too (with or without a credential),
    not the HTTP layer's plain text. OCSP keeps the plain 413."""
    with start_server(built, tmp_path) as s:
        token = s.token("both-verifier")
        for target, length, who in (
            ("/v1/status", 1 << 20, None),  # over the 64 KiB of a request without credential
            ("/v1/watch", (24 << 20) + 1, token),  # over max_json_body_bytes
        ):
            head, body = _head_for_length(s, target, length, who)
            assert head.startswith("HTTP/1.1 413 "), head
            assert "content-type: application/problem+json" in head.lower(), head
            got = json.loads(body)
            assert (got["status"], got["rule"], got["field"]) == (413, "too_large", "$")
        head, body = _head_for_length(s, "/ocsp", 1 << 20, None)
        assert head.startswith("HTTP/1.1 413 ") and "text/plain" in head, head
