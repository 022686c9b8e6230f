"""The group appliance's record-info relay (`responder.relay`, Act §20(4),(5),(6)) in process,
against a stand-in 機構 on loopback that answers as told: well, slowly, not at all, with
garbage, too much, a redirect, a 401 or a 5xx.

What is held here: the member is decided (`decide_member`) before its body is read; what
reaches the 機構 is written by the group (nothing of the member: not its credential, not
the way it wrote its request); the 機構's answer is passed on byte for byte with its
signature, anything else is the group's own 502 or 504 within the deadline; the group's
token never follows a redirect nor crosses plain http to another host; one member's flood
is bounded (in flight per worker, its share of the group's agreed quotas) and does not hold
the threads another member's request needs; a failed relay counts nothing and gives its
provisions back.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

from crlbuilder.group.answerkeys import KEYS_NAME, parse_jwks
from crlbuilder.group.setup import GroupSetup
from crlbuilder.model import Family
from crlbuilder.rules import JST
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.http import Request, Response
from responder.ledger import Ledger as LedgerDb
from responder.ledger import LedgerWriter
from responder.limits import LimitsTable
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.relay import MAX_ANSWER, RecordInfoRelay, judge, members_in_force, share
from responder.relayclient import Failed, Upstream, ask
from tests.support.pki import make_ca, rsa_key
from tests.support.written import dropped, written
from tests.test_group_policy import GROUP, group_table, member, suspension
from tests.test_policy import NOW, build


class AnswerKey:
    """A 機構's answer key (`responder.v1.jws` writes answers so): the JWKS of its public
    key as ``/v1/keys`` serves it, and detached RS256 JWS over answer bodies."""

    def __init__(self) -> None:
        self.key = RSAKey.import_key(rsa.generate_private_key(65537, 2048))
        self.kid = self.key.thumbprint()
        jwk = dict(self.key.as_dict(private=False)) | {
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
        }
        self.jwks = json.dumps({"keys": [jwk]}).encode()

    def sign(self, body: bytes, **header: str) -> str:
        head = {"alg": "RS256", "kid": self.kid, "typ": "jpki-va-answer+jws"} | header
        compact = jws.serialize_compact(head, body, self.key)
        first, _, rest = compact.partition(".")
        return f"{first}..{rest.rpartition('.')[2]}"


KIKOU_KEY = AnswerKey()
"""The stand-in 機構's answer key, the one each `Group` pins."""
KEYS = parse_jwks(KIKOU_KEY.jwks)


def signed(body: bytes) -> str:
    """The JWS-Signature the 機構 sends with ``body`` (the relay passes it on unchanged)."""
    return KIKOU_KEY.sign(body)


PROVIDED = b'{"result":"provided","article":"Act \\u00a718(3)","store":{"commit":1},"record":{}}'
NOT_PROVIDED = b'{"result":"not-provided","article":"Act \\u00a718(3)","store":{"commit":1}}'

Behaviour = Callable[[http.server.BaseHTTPRequestHandler], None]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nJWS-Signature: %s\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
"""The head of a chunked 200, its JWS-Signature to be filled in (``CHUNKED % sig``)."""


class Kikou:
    """A stand-in 機構's appliance: records each request, answers with ``behaviour``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.behaviour: Behaviour = answer(200, PROVIDED)
        kikou = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                kikou.seen.append((self.command, self.path, headers, body))
                with contextlib.suppress(OSError):
                    kikou.behaviour(self)

            do_POST = do_GET = _any  # noqa: N815 (http.server's names)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the relay hung up on an answer too long or too slow: as it should

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes, ctype: str = "application/json", **headers: str) -> Behaviour:
    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        if status == 200 and "no_jws" not in headers:
            h.send_header("JWS-Signature", signed(body))
        for k, v in headers.items():
            if k != "no_jws":
                h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)

    return go


def raw(data: bytes, *, then_sleep: float = 0.0) -> Behaviour:
    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(data)
        h.wfile.flush()
        time.sleep(then_sleep)
        h.close_connection = True

    return go


def sleeps(seconds: float, then: Behaviour | None = None) -> Behaviour:
    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        if then is not None:
            then(h)

    return go


def drips(body: bytes, every: float) -> Behaviour:
    """Headers at once, then the body a byte at a time: each read waits less than any
    per-read timeout, the whole takes ``len(body) * every`` seconds."""

    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("JWS-Signature", signed(body))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for b in body:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            time.sleep(every)

    return go


def drips_head(every: float, pad: int = 40) -> Behaviour:
    """The status line at once, then a header line a byte every ``every`` seconds (``pad``
    bytes of it), then a signed answer: no single read waits long, the head alone takes
    ``pad * every`` seconds."""

    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        h.wfile.flush()
        for b in b"X-Pad: " + b"p" * pad + b"\r\n":
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            time.sleep(every)
        h.wfile.write(
            b"Content-Type: application/json\r\nJWS-Signature: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (signed(PROVIDED).encode(), len(PROVIDED), PROVIDED)
        )
        h.close_connection = True

    return go


class Ledger:
    def __init__(self) -> None:
        self.counts: list[tuple[str, Service, Method, int]] = []

    def count(
        self, party: str, service: Service, method: Method, n: int = 1, *, at: float | None = None
    ) -> None:
        self.counts.append((party, service, method, n))


SC, AC = 1, 3


def registry(*, quotas: dict[str, int] | None = None, members: int = 2) -> Registry:
    group = group_table(services=["sign-crl-file", "sign-revocation-info", "sign-record-info"])
    group["title"] = [{"kind": "group-signature-verifier", "group_kind": 1, "member_prefix": "m-"}]
    group["agreement"] |= quotas or {}
    others = [member(f"m-{i}") for i in range(1, members + 1)]
    return build(
        group,
        *others,
        member("m-9", suspension=[suspension("Act §20(6)(2)")]),
        group_table("h", title=[{"kind": "group-signature-verifier", "group_kind": 2, "members": ["x-1"]}]),
        member("x-1", group="h"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def store() -> MemoryReader:
    key = rsa_key()
    cas = {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}
    families = {SC: Family.SIGN_CARD, AC: Family.AUTH_CARD}
    return MemoryReader(
        issuer_table=[
            sf.IssuerMeta(
                index=i, id=f"{families[i].value}-g1", family=families[i], generation=1,
                cert_der=cas[i].cert.public_bytes(serialization.Encoding.DER),
            )
            for i in (SC, AC)
        ],
        commit=1,
        last_committed_at=int(NOW) - 60,
    )  # fmt: skip


@pytest.fixture
def kikou() -> Iterator[Kikou]:
    k = Kikou()
    yield k
    k.close()


class Group:
    """The relay of one worker, its quota table, ledger and registry."""

    def __init__(
        self, tmp: Path, store: MemoryReader, url: str, reg: Registry, *, pinned: bool = True,
        **kw: Any,
    ) -> None:  # fmt: skip
        (tmp / "authority.token").write_text("the-groups-token\n")
        (tmp / "authority.token").chmod(0o600)  # as group init writes it
        (tmp / KEYS_NAME).write_bytes(KIKOU_KEY.jwks)  # what group init pinned
        setup = GroupSetup(
            group_id=GROUP, authority=url, token_file="authority.token", cycle_seconds=60,
            responder_cert="group.pem", responder_key="group.key", issuers=[],
            directory=str(tmp), answer_keys=KEYS_NAME if pinned else "",
        )  # fmt: skip
        LimitsTable.create(tmp / "limits.tbl", 1)
        self.limits = LimitsTable(tmp / "limits.tbl", 1, 0)
        self.ledger = Ledger()
        self.registry = reg
        self.relay = RecordInfoRelay(
            setup, store, self.ledger, self.limits, current=lambda: self.registry,
            clock=lambda: NOW, **kw,
        )  # fmt: skip

    def close(self) -> None:
        self.relay.close()
        self.limits.close()

    def request(self, body: object, party: str | None = "m-1") -> Request:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {b"content-type": b"application/json"}
        if party is not None:
            headers[b"authorization"] = b"Bearer " + party.encode()
        return Request(b"POST", b"/v1/record-info", headers, data, ("127.0.0.1", 1), None, b"1.1", True, 1)  # fmt: skip

    async def call(
        self, body: object, party: str | None = "m-1", *, write: bool = True
    ) -> tuple[Response, Any]:
        """The relay's answer, written as the HTTP layer writes it (its provision told), or
        with ``write`` False dropped (its connection gone before its turn)."""
        got = self.relay.handle(self.request(body, party), self.registry, NOW)
        resp = got if isinstance(got, Response) else await got
        resp = written(resp) if write else dropped(resp)
        return resp, bytes(resp.body)

    def run(
        self, body: object, party: str | None = "m-1", *, write: bool = True
    ) -> tuple[Response, bytes]:
        return asyncio.run(self.call(body, party, write=write))


@pytest.fixture
def group(tmp_path: Path, store: MemoryReader, kikou: Kikou) -> Iterator[Group]:
    g = Group(tmp_path, store, kikou.url, registry(), timeout=2.0)
    yield g
    g.close()


ASKED = {"certificate": {"issuer": "sign-card-g1", "serial": "a1"}}


def problem_of(body: bytes) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(body)
    return got


def header(resp: Response, name: bytes) -> bytes | None:
    return next((v for k, v in resp.extra_headers if k == name), None)


# --- what reaches the 機構, what comes back ------------------------------------------------


def test_the_kikou_answer_is_passed_on_unchanged_and_counted_once(
    group: Group, kikou: Kikou
) -> None:
    resp, body = group.run(ASKED)
    assert resp.status == 200 and body == PROVIDED
    assert header(resp, b"jws-signature") == signed(PROVIDED).encode()
    assert header(resp, b"cache-control") == b"no-store"
    assert group.ledger.counts == [("m-1", Service.SIGN_RECORD_INFO, Method.JSON, 1)]
    kikou.behaviour = answer(200, NOT_PROVIDED)
    resp, body = group.run(ASKED)
    assert resp.status == 200 and body == NOT_PROVIDED
    assert len(group.ledger.counts) == 1  # not-provided provides nothing


def test_a_chunked_answer_is_passed_on_whole(group: Group, kikou: Kikou) -> None:
    half = len(PROVIDED) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (PROVIDED[:half], PROVIDED[half:]))
    kikou.behaviour = raw(CHUNKED % signed(PROVIDED).encode() + chunks + b"0\r\n\r\n")
    resp, body = group.run(ASKED)
    assert resp.status == 200 and body == PROVIDED


def test_nothing_of_the_member_reaches_the_kikou(group: Group, kikou: Kikou) -> None:
    """The 機構 gets the group's token and a request the group wrote from what it resolved:
    not the member's token, nor its spacing, key order, letter case or the certificate's
    bytes (any of which could tell one member from another)."""
    written = b'{ "certificate" :{"serial":"00a1" ,  "issuer":"sign-card-g1"}}'
    resp, _ = group.run(written)
    assert resp.status == 200
    method, path, headers, body = kikou.seen[-1]
    assert (method, path) == ("POST", "/v1/record-info")
    assert headers["authorization"] == "Bearer the-groups-token"
    assert body == b'{"certificate":{"issuer":"sign-card-g1","serial":"A1"}}'
    sent = b" ".join(f"{k}: {v}".encode() for k, v in headers.items()) + body
    assert b"m-1" not in sent


def test_the_member_is_decided_before_its_body_is_read(group: Group, kikou: Kikou) -> None:
    """A member refused under Act §20(6), a member of another group, no credential: refused
    whatever the body holds (a malformed one too), nothing asked of the 機構."""
    for party, status, article in (("m-9", 403, "Act §20(6)(2)"), ("x-1", 403, "Act §20(1)")):
        for body in (b"{not json", {"certificate": {"issuer": "nowhere-g9", "serial": "1"}}):
            resp, raw_body = group.run(body, party)
            assert resp.status == status, (party, body, raw_body)
            assert problem_of(raw_body)["article"] == article
    assert group.run(b"{not json", None)[0].status == 401
    assert kikou.seen == []


def test_an_auth_certificate_is_refused_without_asking(group: Group, kikou: Kikou) -> None:
    resp, body = group.run({"certificate": {"issuer": "auth-card-g1", "serial": "a1"}})
    assert resp.status == 403 and problem_of(body)["rule"] == "unauthorized_family"
    assert kikou.seen == []


@pytest.mark.parametrize(
    ("behaviour", "status", "why"),
    [
        (answer(302, b"", Location="http://127.0.0.1:9/elsewhere"), 502, "redirect"),
        (answer(401, b'{"rule":"unauthenticated"}', "application/problem+json"), 502, "credential"),
        (answer(500, b"oops", "text/plain"), 502, "HTTP 500"),
        (answer(200, b"<html>hello</html>", "text/html"), 502, "not a signed"),
        (answer(200, PROVIDED, no_jws="1"), 502, "not a signed"),
        (answer(200, b'{"result":"whatever"}'), 502, "not a signed"),
        (raw(b"this is not HTTP\r\n\r\n"), 502, "not well-formed"),
        (raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"re"), 502, "not well-formed"),
        (answer(200, b" " * (MAX_ANSWER + 1)), 502, "longer than"),
        (raw(CHUNKED % b"x" + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * 17 + b"0\r\n\r\n"), 502, "longer than"),
    ],
    ids=[
        "redirect", "401", "500", "html", "unsigned", "no-result", "garbage", "cut-short",
        "too-large", "too-large-chunked",
    ],
)  # fmt: skip
def test_a_bad_answer_is_the_groups_502_never_passed_on(
    group: Group, kikou: Kikou, behaviour: Behaviour, status: int, why: str
) -> None:
    kikou.behaviour = behaviour
    resp, body = group.run(ASKED)
    assert resp.status == status, body[:200]
    got = problem_of(body)
    assert got["rule"] == "bad_gateway" and why in got["detail"], got
    assert group.ledger.counts == []


def signed_as(body: bytes, signature: str) -> Behaviour:
    """A 200 answer of ``body`` with the JWS-Signature ``signature``."""

    def go(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("JWS-Signature", signature)
        h.end_headers()
        h.wfile.write(body)

    return go


OTHER_KEY = AnswerKey()
"""A key the group never pinned (anyone on the path, or a 機構 key not yet taken)."""
ALTERED = PROVIDED.replace(b'"record":{}', b'"record":{"serial":"A2"}')


@pytest.mark.parametrize(
    ("body", "signature", "why"),
    [
        (PROVIDED, OTHER_KEY.sign(PROVIDED), "a key the group has not pinned"),
        (PROVIDED, OTHER_KEY.sign(PROVIDED, kid=KIKOU_KEY.kid), "does not verify"),
        (ALTERED, signed(PROVIDED), "does not verify"),  # the body changed after signing
        (PROVIDED, signed(NOT_PROVIDED), "does not verify"),  # another answer's signature
        (PROVIDED, KIKOU_KEY.sign(PROVIDED, typ="JWT"), "not an RS256 jpki-va-answer+jws"),
        (PROVIDED, KIKOU_KEY.sign(PROVIDED, x5u="https://elsewhere/"), "fields the 機構 does not write"),
        (PROVIDED, signed(PROVIDED).replace("..", ".e30."), "not a detached compact JWS"),
        (PROVIDED, "eyJhbGciOiJub25lIn0..", "not an RS256"),  # alg none
    ],
    ids=["foreign-key", "foreign-key-pinned-kid", "altered", "swapped", "typ", "x5u",
         "attached", "alg-none"],
)  # fmt: skip
def test_an_answer_whose_signature_fails_is_502_never_passed_on(
    group: Group, kikou: Kikou, body: bytes, signature: str, why: str
) -> None:
    """The 機構's answer passes only with a detached RS256 JWS over its exact bytes by a key
    the group pinned (`crlbuilder.group.answerkeys`); else the group's 502, nothing of the
    answer passed on or counted, the provision given back."""
    kikou.behaviour = signed_as(body, signature)
    resp, got = group.run(ASKED)
    assert resp.status == 502, got[:300]
    prob = problem_of(got)
    assert prob["rule"] == "bad_gateway" and why in prob["detail"], prob
    assert b"serial" not in got and header(resp, b"jws-signature") is None
    assert group.ledger.counts == []
    kikou.behaviour = signed_as(PROVIDED, signed(PROVIDED))  # the 機構's own: passed on
    assert group.run(ASKED)[0].status == 200


def test_nothing_is_passed_on_without_pinned_keys(
    tmp_path: Path, store: MemoryReader, kikou: Kikou, caplog: pytest.LogCaptureFixture
) -> None:
    """A setup that pins no 機構 key (written before keys were pinned): every 200 is 502, and
    the start says so (``record_info_relay_unpinned``) until ``crlbuilder group keys``."""
    with caplog.at_level("ERROR"):
        g = Group(tmp_path, store, kikou.url, registry(), timeout=2.0, pinned=False)
    try:
        assert "record_info_relay_unpinned" in caplog.text
        resp, got = g.run(ASKED)
        assert resp.status == 502 and "not pinned" in problem_of(got)["detail"], got
    finally:
        g.close()


def test_a_new_kikou_key_is_taken_from_the_pinned_file_without_a_restart(
    group: Group, kikou: Kikou, tmp_path: Path
) -> None:
    """Rotation: once ``crlbuilder group keys`` rewrote the pinned file (both keys while the
    機構 publishes both), answers signed with the new key verify at once, and with the old
    one still; after the old key is dropped, its answers are 502."""
    new = AnswerKey()
    kikou.behaviour = signed_as(PROVIDED, new.sign(PROVIDED))
    assert group.run(ASKED)[0].status == 502  # not pinned yet
    both = json.loads(KIKOU_KEY.jwks)["keys"] + json.loads(new.jwks)["keys"]
    (tmp_path / KEYS_NAME).write_bytes(json.dumps({"keys": both}).encode())
    assert group.run(ASKED)[0].status == 200
    kikou.behaviour = signed_as(PROVIDED, signed(PROVIDED))
    assert group.run(ASKED)[0].status == 200  # the old key still valid
    (tmp_path / KEYS_NAME).write_bytes(new.jwks + b"\n")  # the old key withdrawn
    assert group.run(ASKED)[0].status == 502


def test_a_large_answer_without_length_is_refused(group: Group, kikou: Kikou) -> None:
    """No Content-Length, the connection closed at the end: read up to the bound, no further."""
    kikou.behaviour = raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nJWS-Signature: x\r\n"
        b"Connection: close\r\n\r\n" + b" " * (MAX_ANSWER + 10)
    )
    resp, body = group.run(ASKED)
    assert resp.status == 502 and "longer than" in problem_of(body)["detail"]


def test_kikou_problems_about_the_request_are_passed_on(group: Group, kikou: Kikou) -> None:
    """404, 409, 403, 429 and 503 are the 機構's word about the request: passed on as they are."""
    for status in (404, 409, 403, 429, 503):
        body = b'{"rule":"x","status":%d}' % status
        kikou.behaviour = answer(status, body, "application/problem+json", Retry_After="7")
        resp, got = group.run(ASKED)
        assert (resp.status, got) == (status, body)
        assert header(resp, b"retry-after") == b"7"
    assert group.ledger.counts == []


def test_a_redirect_is_never_followed_and_the_token_stays_home(group: Group, kikou: Kikou) -> None:
    """A 機構 (or whoever answers at its address) that redirects: the token is not sent to
    the place it names, and nothing from there is passed on."""
    elsewhere = Kikou()
    try:
        elsewhere.behaviour = answer(200, PROVIDED)
        for code in (301, 302, 303, 307, 308):
            kikou.behaviour = answer(code, b"", Location=f"{elsewhere.url}/steal")
            resp, _ = group.run(ASKED)
            assert resp.status == 502, code
        assert elsewhere.seen == []
    finally:
        elsewhere.close()


def test_the_token_never_crosses_plain_http_to_another_host(
    tmp_path: Path, store: MemoryReader
) -> None:
    g = Group(tmp_path, store, "http://192.0.2.1:9", registry(), timeout=2.0)
    try:
        t0 = time.monotonic()
        resp, body = g.run(ASKED)
        assert resp.status == 502 and "may not be sent" in problem_of(body)["detail"]
        assert time.monotonic() - t0 < 1.0  # refused before any connection was tried
    finally:
        g.close()


def test_a_token_file_others_may_read_is_not_sent(
    group: Group, kikou: Kikou, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay read the group's token whatever its mode (every other secret of the product
    is refused when group or others may read it): 502 now, nothing sent, logged with the
    file's path and why, never the token."""
    (tmp_path / "authority.token").chmod(0o640)
    resp, body = group.run(ASKED)
    assert resp.status == 502, body
    assert kikou.seen == []
    logged = [r for r in caplog.records if r.msg == "record_info_relay_no_token"]
    assert logged and "mode 0640 lets group or others read it" in str(logged[0].__dict__)
    assert "the-groups-token" not in caplog.text


# --- a slow, silent or absent 機構 ------------------------------------------------------------


def test_a_silent_kikou_is_504_within_the_deadline(group: Group, kikou: Kikou) -> None:
    kikou.behaviour = sleeps(5)
    t0 = time.monotonic()
    resp, body = group.run(ASKED)
    took = time.monotonic() - t0
    assert resp.status == 504 and problem_of(body)["rule"] == "gateway_timeout"
    assert header(resp, b"retry-after") is not None
    assert took < 3.0, took
    assert group.ledger.counts == []


def test_a_dripping_kikou_cannot_stretch_the_deadline(group: Group, kikou: Kikou) -> None:
    """One byte every 0.3 s keeps every single read under the 2 s timeout; the whole
    exchange is still cut at 2 s."""
    kikou.behaviour = drips(PROVIDED, 0.3)
    t0 = time.monotonic()
    resp, _ = group.run(ASKED)
    took = time.monotonic() - t0
    assert resp.status == 504 and took < 3.0, (resp.status, took)
    assert group.ledger.counts == []


def test_a_kikou_dripping_its_header_lines_cannot_stretch_the_deadline(
    group: Group, kikou: Kikou
) -> None:
    """A header byte every 0.25 s (about 12 s for the head) keeps every socket read under
    the 2 s timeout; http.client's reads of the status and header lines were bounded per
    read only (the relay was held the whole 12 s, its 504 came after). The whole exchange is
    cut at 2 s now."""
    kikou.behaviour = drips_head(0.25, pad=40)
    t0 = time.monotonic()
    resp, body = group.run(ASKED)
    took = time.monotonic() - t0
    assert (resp.status, took < 3.0) == (504, True), (resp.status, took)
    assert problem_of(body)["rule"] == "gateway_timeout"
    assert group.ledger.counts == []


def test_an_ipv6_kikou_without_a_port_is_asked_at_its_default_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http://[::1]/``: http.client read the bare ``::1`` as host ``:`` and port 1."""
    asked: list[tuple[object, object]] = []

    def getaddrinfo(host: object, port: object, *args: object, **kw: object) -> list[Any]:
        asked.append((host, port))
        raise OSError("not resolved in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    got = ask("http://[::1]/v1/record-info", b"{}", "token", timeout=1.0, limit=1024)
    assert (got, asked) == (Failed.UNREACHABLE, [("::1", 80)])


def test_an_absent_kikou_is_502(tmp_path: Path, store: MemoryReader) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = Group(tmp_path, store, f"http://127.0.0.1:{port}", registry(), timeout=2.0)
    try:
        resp, body = g.run(ASKED)
        assert resp.status == 502 and "could not be reached" in problem_of(body)["detail"]
        assert header(resp, b"retry-after") is not None
    finally:
        g.close()


# --- bounds: one member's flood --------------------------------------------------------------


def test_one_member_cannot_hold_every_thread(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The 機構 takes 1 s an answer. m-1 sends 6 at once: 2 go, 4 are 429 fair_share at once;
    m-2's request, sent after, is answered with m-1's first two, not after all six."""
    kikou.behaviour = sleeps(1.0, answer(200, NOT_PROVIDED))
    g = Group(tmp_path, store, kikou.url, registry(), timeout=5.0)

    async def flood() -> tuple[list[int], float]:
        t0 = time.monotonic()
        floods = [asyncio.ensure_future(g.call(ASKED, "m-1")) for _ in range(6)]
        await asyncio.sleep(0.05)
        other, _ = await g.call(ASKED, "m-2")
        took = time.monotonic() - t0
        statuses = [r.status for r, _ in await asyncio.gather(*floods)]
        assert other.status == 200
        return statuses, took

    try:
        statuses, took = asyncio.run(flood())
        assert sorted(statuses) == [200, 200, 429, 429, 429, 429], statuses
        assert took < 1.8, took
    finally:
        g.close()


def test_a_member_that_hangs_up_keeps_its_place_until_the_kikou_answers(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """Abandoning requests (the connection closed) does not free the member's place while
    its thread still waits on the 機構: it cannot take every thread by hanging up."""
    kikou.behaviour = sleeps(1.0, answer(200, NOT_PROVIDED))
    g = Group(tmp_path, store, kikou.url, registry(), timeout=5.0)

    async def hang_up() -> int:
        for _ in range(2):
            got = g.relay.handle(g.request(ASKED, "m-1"), g.registry, NOW)
            assert isinstance(got, asyncio.Future)
            await asyncio.sleep(0.1)  # its thread is asking
            got.cancel()
        await asyncio.sleep(0.05)
        third, _ = await g.call(ASKED, "m-1")
        return third.status

    try:
        assert asyncio.run(hang_up()) == 429
    finally:
        g.close()


def test_a_members_share_of_the_groups_quota(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The group agreed 4 requests a day with the 機構, it has 2 members in force: each
    member's share is 2, the third is 429 naming the share, and the 機構 is not asked."""
    g = Group(tmp_path, store, kikou.url, registry(quotas={"requests_per_day": 4}), timeout=2.0)
    try:
        assert [g.run(ASKED, "m-1")[0].status for _ in range(3)] == [200, 200, 429]
        _, body = g.run(ASKED, "m-1")
        got = problem_of(body)
        assert got["rule"] == "quota" and "share" in got["detail"], got
        assert len(kikou.seen) == 2
        assert [g.run(ASKED, "m-2")[0].status for _ in range(3)] == [200, 200, 429]
        assert len(kikou.seen) == 4
    finally:
        g.close()


def test_a_request_the_groups_quota_refuses_costs_the_member_nothing(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The group's 4 requests a day used up (by other workers' relays, counted in the shared
    table): m-1's request is 429 naming the group's quota, the 機構 not asked, and m-1's own
    share (2 of 4) untouched."""
    reg = registry(quotas={"requests_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg)
    try:
        for _ in range(4):
            assert g.limits.admit(reg.parties[GROUP], NOW) is None
        resp, body = g.run(ASKED, "m-1")
        got = problem_of(body)
        assert resp.status == 429 and got["detail"].startswith("the group's"), got
        assert g.limits.admitted_today("m-1/relay", NOW) == 0
        assert kikou.seen == []
    finally:
        g.close()


def test_provisions_are_taken_for_provided_answers_only(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """provisions_per_day 4 for the group, 2 members in force (m-1, and m-9 refused the record
    information but still a member): m-1's share is 2. Failed relays and not-provided answers
    give their provision back; two provided answers use the share, the third is refused."""
    reg = registry(quotas={"provisions_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    try:
        for behaviour in (answer(500, b"x"), answer(200, NOT_PROVIDED), sleeps(3)):
            kikou.behaviour = behaviour
            assert g.run(ASKED)[0].status in (200, 502, 504)
        kikou.behaviour = answer(200, PROVIDED)
        assert [g.run(ASKED)[0].status for _ in range(3)] == [200, 200, 429]
        assert len(g.ledger.counts) == 2
    finally:
        g.close()


def test_a_provided_answer_never_written_counts_nothing_and_gives_its_provisions_back(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """A provided answer whose connection went away before its turn (`Provision.dropped`):
    nothing in the ledger (帳簿, Act §40), and the member's share and the group's provisions it
    took are given back, so the member's next two answers are still provided."""
    reg = registry(quotas={"provisions_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    try:
        kikou.behaviour = answer(200, PROVIDED)
        assert [g.run(ASKED, write=False)[0].status for _ in range(3)] == [200, 200, 200]
        assert g.ledger.counts == []
        assert [g.run(ASKED)[0].status for _ in range(3)] == [200, 200, 429]
        assert len(g.ledger.counts) == 2
    finally:
        g.close()


def test_a_suspension_takes_effect_at_once(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The group's own stop (Act §18(7)(1)) refuses the relay with the next request."""
    reg = registry()
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    try:
        assert g.run(ASKED)[0].status == 200
        stopped = group_table(
            services=["sign-crl-file", "sign-revocation-info", "sign-record-info"],
            suspension=[suspension("Act §18(7)(1)")],
        )
        stopped["title"] = [
            {"kind": "group-signature-verifier", "group_kind": 1, "member_prefix": "m-"}
        ]
        g.registry = build(stopped, member("m-1"))
        resp, body = g.run(ASKED)
        assert resp.status == 403 and problem_of(body)["article"] == "Act §18(7)(1)"
        assert len(kikou.seen) == 1
    finally:
        g.close()


def test_a_stop_recorded_while_the_kikou_answers_withholds_the_answer(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """m-1 is refused the record information (Act §20(6)(2)) while its request waits on the
    機構: the answer that then arrives is not passed on (403 citing the article), nothing is
    counted."""
    kikou.behaviour = sleeps(0.6, answer(200, PROVIDED))
    g = Group(tmp_path, store, kikou.url, registry(), timeout=3.0)

    async def stopped_meanwhile() -> tuple[Response, bytes]:
        pending = asyncio.ensure_future(g.call(ASKED, "m-1"))
        await asyncio.sleep(0.2)
        g.registry = build(
            group_table(
                services=["sign-crl-file", "sign-revocation-info", "sign-record-info"],
                title=[{"kind": "group-signature-verifier", "group_kind": 1, "member_prefix": "m-"}],
            ),
            member("m-1", suspension=[suspension("Act §20(6)(2)")]),
        )  # fmt: skip
        return await pending

    try:
        resp, body = asyncio.run(stopped_meanwhile())
        assert resp.status == 403 and problem_of(body)["article"] == "Act §20(6)(2)", body
        assert len(kikou.seen) == 1 and g.ledger.counts == []
    finally:
        g.close()


@pytest.mark.parametrize(
    ("status", "passed_on"),
    [(200, True), (204, False), (301, False), (400, True), (401, False), (403, True),
     (404, True), (407, False), (409, True), (429, True), (500, False), (502, False),
     (503, True), (504, False)],
)  # fmt: skip
def test_judge_passes_on_answers_and_problems_about_the_request_only(
    status: int, passed_on: bool
) -> None:
    """`judge`, pure: what of the 機構's answers the member gets as they are."""
    body = PROVIDED if status == 200 else b'{"rule":"x"}'
    headers = {"content-type": "application/json", "jws-signature": signed(body)}
    resp, result = judge(Upstream(status, headers, body), KEYS)
    assert (resp.status == status and bytes(resp.body) == body) is passed_on, resp
    assert result == ("provided" if status == 200 else "")
    if not passed_on:
        assert resp.status == 502 and problem_of(bytes(resp.body))["rule"] == "bad_gateway"
    for failed, want in ((Failed.TIMEOUT, 504), (Failed.UNREACHABLE, 502), (Failed.TOO_LARGE, 502)):
        assert judge(failed, KEYS)[0].status == want


def test_a_members_share() -> None:
    assert [share(None, 3), share(10, 3), share(10, 0), share(1, 50)] == [None, 4, 10, 1]
    assert members_in_force(registry(members=3), GROUP, NOW) == 4  # m-1..m-3, and m-9


def test_nothing_personal_in_the_log(
    group: Group, kikou: Kikou, caplog: pytest.LogCaptureFixture
) -> None:
    facts = b'{"result":"provided","record":{"facts":{"name":"\\u5c71\\u7530 \\u592a\\u90ce"}}}'
    kikou.behaviour = answer(200, facts)
    with caplog.at_level("DEBUG"):
        assert group.run(ASKED)[0].status == 200
        kikou.behaviour = answer(500, facts)
        group.run(ASKED)
    text = " ".join(
        f"{r.getMessage()} {msgspec.json.encode(getattr(r, 'fields', {})).decode()}"
        for r in caplog.records
    )
    assert "record_info_relay" in text
    for secret in ("山田", "5c71", "a1", "A1", "the-groups-token", "facts"):
        assert secret not in text, secret


def _midnight_after(t: float) -> float:
    day = datetime.fromtimestamp(t, JST).date()
    return datetime(day.year, day.month, day.day, tzinfo=JST).timestamp() + 86400


def _asked_at(g: Group, asked: float) -> Response:
    async def go() -> Response:
        got = g.relay.handle(g.request(ASKED), g.registry, asked)
        resp = got if isinstance(got, Response) else await got
        return written(resp)

    return asyncio.run(go())


def test_a_record_the_kikou_answers_after_midnight_is_taken_and_counted_on_the_new_day(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """Asked at 23:59:59.9 JST, the 機構's answer passed on after 00:00: the relay took the
    member's and the group's provision from the day it was asked, while the ledger dated it by
    its own clock as it was written, the next day (on 31 December: the next year's 報告書).
    Every other route takes and dates a provision on the day it is provided (提供を行った年月日,
    Ord §71(3); OCSP carries a signature waited for across 00:00, `carry_provisions`): the
    relay moves it to the new day too, and counts it there."""
    reg = registry(quotas={"provisions_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    midnight = _midnight_after(NOW)
    asked, provided = midnight - 0.1, midnight + 0.5
    g.relay.clock = lambda: provided  # the 機構 answered after 00:00 JST
    group_party = reg.parties[GROUP]
    try:
        with LedgerWriter.open(tmp_path / "ledger", 0, clock=lambda: provided) as writer:
            g.relay.ledger = writer
            assert _asked_at(g, asked).status == 200
        assert g.limits.provisions_left(group_party, asked) == 4  # the day before: given back
        assert g.limits.provisions_left(group_party, provided) == 3  # taken the day provided
        with LedgerDb.open(tmp_path / "ledger") as ledger:
            ledger.collect(now=provided + 1)
            rows = ledger.rows(date(1970, 1, 1), date(9999, 12, 31))
        new_day = datetime.fromtimestamp(provided, JST).date()
        assert [(r.day, r.party, r.count) for r in rows] == [(new_day, "m-1", 1)]
    finally:
        g.close()


def test_a_record_answered_on_a_day_with_no_provisions_left_is_not_passed_on(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The group's provisions of the new day used up (by another worker, after 00:00): a
    record asked before 00:00 and answered after it is refused (429, nothing counted), and
    the provisions it took the day before are given back, as an OCSP signature waited for
    across 00:00 with none left there is answered tryLater."""
    reg = registry(quotas={"provisions_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    g.limits.close()
    LimitsTable.create(tmp_path / "two.tbl", 2)
    g.limits = g.relay.quota = LimitsTable(tmp_path / "two.tbl", 2, 0)
    other = LimitsTable(tmp_path / "two.tbl", 2, 1)
    midnight = _midnight_after(NOW)
    g.relay.clock = lambda: midnight + 0.5
    group_party = reg.parties[GROUP]
    try:
        assert other.take_provisions(group_party, 4, midnight + 0.2) == midnight + 0.2
        resp = _asked_at(g, midnight - 0.1)
        assert resp.status == 429, bytes(resp.body)
        assert g.ledger.counts == []
        assert g.limits.provisions_left(group_party, midnight - 0.1) == 4
        assert g.limits.provisions_left(group_party, midnight + 0.5) == 0
    finally:
        other.close()
        g.close()


def test_a_record_asked_after_the_clock_stepped_back_across_midnight_is_counted_on_the_later_day(
    tmp_path: Path, store: MemoryReader, kikou: Kikou
) -> None:
    """The quota table takes a provision asked after the clock stepped back across 00:00 JST
    (an NTP step) from the later day its row is on, and says so (the instant
    `take_provisions` returns): the relay ignored it, counted the record in the ledger on the
    earlier day (which the bound never took it from) and gave it back to that day when
    dropped, where nothing came off. It dates and gives back by the instant taken now."""
    reg = registry(quotas={"provisions_per_day": 4}, members=1)
    g = Group(tmp_path, store, kikou.url, reg, timeout=2.0)
    midnight = _midnight_after(NOW)
    group_party = reg.parties[GROUP]
    try:
        with LedgerWriter.open(tmp_path / "ledger", 0, clock=lambda: midnight + 0.5) as writer:
            g.relay.ledger = writer
            g.relay.clock = lambda: midnight + 0.5
            assert _asked_at(g, midnight + 0.2).status == 200  # the row is on the new day
            g.relay.clock = lambda: midnight - 0.05  # stepped back: 23:59:59.95 JST
            assert _asked_at(g, midnight - 0.1).status == 200
        assert g.limits.provisions_left(group_party, midnight + 0.5) == 2  # both taken there
        with LedgerDb.open(tmp_path / "ledger") as ledger:
            ledger.collect(now=midnight + 1)
            rows = ledger.rows(date(1970, 1, 1), date(9999, 12, 31))
        new_day = datetime.fromtimestamp(midnight, JST).date()
        assert [(r.day, r.party, r.count) for r in rows] == [(new_day, "m-1", 2)]
    finally:
        g.close()


@pytest.mark.parametrize(
    "field",
    [b"Retry-After: 7\r\n X-Injected: 1", b"Content-Type: application/problem+json\r\n\tX-A: 1",
     b"Retry-After: 7\x00"],
    ids=["folded-retry-after", "folded-content-type", "nul"],
)  # fmt: skip
def test_a_folded_or_control_header_field_is_502_never_passed_on(
    group: Group, kikou: Kikou, field: bytes
) -> None:
    """http.client keeps an obs-fold (a line begun with SP or HTAB) in the field's value, CR
    LF included; the relay passed a 4xx/503's Content-Type, Retry-After and JWS-Signature on
    as they came, so the 機構's line break went into the member's answer (a NUL too). RFC 9112
    §5.2: a gateway answers 502 for a folded field (or unfolds it): 502 now, nothing passed on."""
    body = b'{"rule":"x","status":429}'
    head = b"HTTP/1.1 429 Too Many Requests\r\n"
    if not field.startswith(b"Content-Type"):
        head += b"Content-Type: application/problem+json\r\n"
    kikou.behaviour = raw(
        head + field + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    resp, got = group.run(ASKED)
    assert resp.status == 502, (resp, got)
    assert "not well-formed HTTP" in problem_of(got)["detail"]
    assert b"X-" not in b"".join(v for _, v in resp.extra_headers) + resp.content_type
    assert group.ledger.counts == []


def test_the_tls_context_is_made_once_not_per_request(
    tmp_path: Path, store: MemoryReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each relayed request made a TLS context (`ssl.create_default_context`), loading the
    system's CA bundle: about 85 ms here, the GIL held through much of it (a busy thread
    beside it saw gaps of 250 ms), so every record-info a member asked stalled the worker's
    event loop, OCSP answers included. Made once per relay now."""
    import ssl

    made: list[int] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kw: Any) -> ssl.SSLContext:
        made.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = Group(tmp_path, store, f"https://127.0.0.1:{port}", registry(), timeout=2.0)
    try:
        for _ in range(3):
            assert g.run(ASKED)[0].status == 502
    finally:
        g.close()
    assert len(made) == 1
