"""The app's routes in process (`responder.app.JpkiApp.handle` on parsed requests, no socket).

A demo population (the session's ``built`` fixture) served by one in-process app: the
report route's odd paths (issue 10.10), quota answers on /crl/ (issue 9.10) and the
signed-request index (issue 10.8) are checked here without a server.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from asn1crypto import ocsp as a_ocsp
from cryptography import x509

from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.rules import JST
from responder import access, ocsppath, report, streamlag
from responder.app import JpkiApp, caching_headers
from responder.http import Request, Response
from responder.limits import LimitsTable
from responder.metrics import endpoint_of
from responder.ocsp import Ready
from responder.outcome import NO_PARTY, Outcome
from responder.registry.lookup import Registry
from responder.registry.party import SuspensionWindow
from responder.registry.vocabulary import Method, Service
from responder.report import YEARS
from responder.v1 import changes
from responder.v1.watchdb import LmdbWatchSet
from tests.conftest import Built, run_tool
from tests.test_ocspreq import a_request


@pytest.fixture(scope="module")
def app(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JpkiApp]:
    d = tmp_path_factory.mktemp("inproc")
    cfg = built.app_config(d)
    a = JpkiApp(cfg, 0)
    yield a
    a.close()


def request(method: bytes, target: bytes, headers: dict[bytes, bytes] | None = None) -> Request:
    return Request(method, target, headers or {}, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)


def answer(app: JpkiApp, req: Request) -> Response:
    """The app's answer, as the HTTP layer gets it (a future resolved on a running loop)."""

    async def run() -> Response:
        got = app.handle(req)
        return got if isinstance(got, Response) else await got

    return asyncio.run(run())


OCSP_TYPE: dict[bytes, bytes] = {b"content-type": b"application/ocsp-request"}


def cert_id(app: JpkiApp, serial: int) -> dict[str, Any]:
    """A SHA-1 CertID of ``serial`` under the store's first issuer, as `a_request` takes it."""
    issuer = x509.load_pem_x509_certificate(
        (app.config.store.pki / app.manifest.issuers[0].cert).read_bytes()
    )
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    return {"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": name_hash,
            "issuer_key_hash": key_hash, "serial_number": serial}  # fmt: skip


def bearer(app: JpkiApp) -> dict[bytes, bytes]:
    """The demo signature and login verifier's bearer token, as a header field."""
    token = (app.config.store.pki / "parties" / "both-verifier.token").read_text().strip()
    return {b"authorization": b"Bearer " + token.encode()}


def spy_counts(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[str, int]], list[int]]:
    """The ledger's counts (party, entries) and the provisions given back, as they happen."""
    counted: list[tuple[str, int]] = []
    given_back: list[int] = []
    monkeypatch.setattr(
        app.ledger, "count", lambda party, service, method, n, at=None: counted.append((party, n))
    )
    monkeypatch.setattr(app, "limits", _GivingBack(app.limits, given_back))
    return counted, given_back


class _GivingBack:
    """``app.limits`` as the app's own calls see it, its give-backs recorded and not made: a
    method of the table itself cannot be replaced once the native build compiled it
    (`make test-compiled`); what holds the table (the OCSP flow) keeps the real one."""

    def __init__(self, table: LimitsTable, given_back: list[int]) -> None:
        self._table = table
        self._given_back = given_back

    def give_back_provisions(self, party: object, n: int, now: float) -> None:
        self._given_back.append(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


ODD_REPORT_PATHS: tuple[bytes, ...] = (
    b"/reports/0000",
    b"/reports/0001",
    b"/reports/1969",
    b"/reports/99999",
    b"/reports/10000",
    b"/reports/-1",
    b"/reports/+2026",
    b"/reports/2026.xml",
    b"/reports/2026.json/extra",
    b"/reports/2026/",
    b"/reports/2026.",
    b"/reports/%00",
    b"/reports/2026%00",
    b"/reports/2026%2ejson",
    b"/reports/",
    b"/reports/" + b"9" * 4000,
    b"/reports/" + b"2026" * 1000,
    b"/reports/\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96",  # fullwidth digits
)


def test_odd_report_paths_are_404_never_500(app: JpkiApp) -> None:
    """Issue 10.10: /reports/0000 raised ValueError (a 500, counted by the error-ratio alert).
    A year the ledger cannot hold, or any other odd path, is no report: 404."""
    for path in ODD_REPORT_PATHS:
        assert answer(app, request(b"GET", path)).status == 404, path
    for year in (YEARS[0], YEARS[-1], 2026):  # the edges of what the ledger holds render
        for suffix in (b"", b".csv", b".json"):
            resp = answer(app, request(b"GET", b"/reports/%d%s" % (year, suffix)))
            assert resp.status == 200, (year, suffix)
    assert answer(app, request(b"GET", b"/reports/2026.json?x=1")).status == 200


def test_the_public_report_says_it_misses_refused_ledger_files(app: JpkiApp) -> None:
    """/reports/ published what the collection could read: a worker file the collector refused
    (damaged, truncated) made the published 報告書 (Act §41, Ord §72(2)) short of its counts,
    with nothing on it to say so. It says so now, in every format, as of the last collection
    (worker 0's cycle: a render collects nothing itself)."""
    bad = app.config.ledger.dir / ("w0009-" + "0" * 32 + ".ledger")
    bad.write_bytes(b"\0" * 10)
    try:  # a year no other test asks for: its renderings stay cached
        app._collect_ledger()
        doc = msgspec.json.decode(answer(app, request(b"GET", b"/reports/2031.json")).body)
        assert doc["refused_files"] == 1 and doc["as_of"]["scope"] == "node"
        page = answer(app, request(b"GET", b"/reports/2031")).body.decode()
        assert "Incomplete" in page
    finally:
        bad.unlink()
    app._collect_ledger()
    doc = msgspec.json.decode(answer(app, request(b"GET", b"/reports/2032.json")).body)
    assert doc["refused_files"] == 0


def test_reports_render_on_their_own_threads_not_the_signing_ones(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: a yearly report (報告書, Act §41), open to anyone, renders on the
    ``report`` threads, so a burst of report requests cannot take the threads fresh OCSP
    signatures need (the ``sign`` threads of `responder.signing`)."""
    threads: list[str] = []
    real = report.render_year

    def recording(*args: Any, **kwargs: Any) -> tuple[bytes, bytes]:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr("responder.report.render_year", recording)
    assert answer(app, request(b"GET", b"/reports/%d.csv" % YEARS[1])).status == 200
    assert threads and all(t.startswith("report") for t in threads), threads
    assert app.pool is not app.signing.executor


def test_ocsp_get_answers_are_private_with_rfc5019_max_age() -> None:
    """Issue 9.9: answers to registered parties must not be stored by shared caches (Act
    §18(1), §37(1), §40, §45): ``private``; max-age = nextUpdate - now (RFC 5019 §6.2)."""
    ready = Ready(b"der", this_update=1_000_000, next_update=1_003_600)
    headers = dict(caching_headers(ready, 1_000_600))
    directives = [d.strip() for d in headers[b"cache-control"].split(b",")]
    assert b"private" in directives and b"public" not in directives
    assert b"max-age=3000" in directives
    assert headers[b"expires"] == b"Mon, 12 Jan 1970 14:46:40 GMT"
    assert headers[b"last-modified"] == b"Mon, 12 Jan 1970 13:46:40 GMT"
    past = dict(caching_headers(ready, 1_010_000))[b"cache-control"]
    assert past.startswith(b"max-age=0,")


def test_ocsp_get_fields_kept_per_answer_only_the_max_age_moves() -> None:
    """Issue 17 (hot path): the time-independent RFC 5019 fields are made once per answer and
    kept with it; max-age still follows the clock, and another answer gets its own fields."""
    ready = Ready(b"der-1", this_update=1_000_000, next_update=1_003_600)
    first = dict(caching_headers(ready, 1_000_600))
    later = dict(caching_headers(ready, 1_001_600))
    assert later[b"cache-control"].startswith(b"max-age=2000,")
    assert {k: v for k, v in later.items() if k != b"cache-control"} == {
        k: v for k, v in first.items() if k != b"cache-control"
    }
    other = dict(
        caching_headers(Ready(b"der-2", this_update=2_000_000, next_update=2_000_600), 2_000_000)
    )
    assert other[b"etag"] != first[b"etag"]
    assert other[b"last-modified"] == b"Sat, 24 Jan 1970 03:33:20 GMT"
    assert other[b"cache-control"].startswith(b"max-age=600,")
    assert Ready(b"der-1", 1_000_000, 1_003_600) == ready  # the kept fields are no part of it


def test_ocsp_405_allows_only_the_methods_the_path_serves(app: JpkiApp) -> None:
    """RFC 9110 §15.5.6: a 405's Allow lists the methods the target supports. GET /ocsp
    answered 405 with ``Allow: GET, POST``, naming the very method it refused: a GET's
    request goes in the path below it (/ocsp/{base64}, RFC 6960 appendix A.1.1), so /ocsp
    itself takes POST only, and /ocsp/{base64} GET only (HEAD would sign for nothing)."""
    for method, target, allow in (
        (b"GET", b"/ocsp", b"POST"),
        (b"HEAD", b"/ocsp", b"POST"),
        (b"PUT", b"/ocsp", b"POST"),
        (b"HEAD", b"/ocsp/MAA=", b"GET"),
        (b"POST", b"/ocsp/MAA=", b"GET"),
    ):
        resp = answer(app, request(method, target))
        assert resp.status == 405, (method, target)
        allowed = dict(resp.extra_headers)[b"allow"]
        assert allowed == allow, (method, target, allowed)
        assert method not in allowed.split(b", ")


def test_ocsp_post_to_a_responder_url_ending_in_a_slash(app: JpkiApp) -> None:
    """RFC 6960 appendix A.1.1: a POST goes to the responder's URL; a party given
    ``http://va.example/ocsp/`` posts to /ocsp/, which answered 405 (Allow: GET). It is the
    OCSP POST route, authenticated and counted as /ocsp; GET /ocsp/ stays a GET with no
    request in it (malformedRequest)."""
    der = a_request([cert_id(app, 5)])
    auth = bearer(app)
    req = request(b"POST", b"/ocsp/", {**OCSP_TYPE, **auth})
    req.body = der
    resp = answer(app, req)
    assert (resp.status, resp.content_type) == (200, b"application/ocsp-response")
    assert req.note is not None and req.note.party == "both-verifier"
    assert req.note.ocsp_status == "successful"
    unproven = request(b"POST", b"/ocsp/", OCSP_TYPE)
    unproven.body = der
    assert answer(app, unproven).status == 200
    assert unproven.note is not None and unproven.note.rule == "unauthenticated"
    assert answer(app, request(b"POST", b"/ocsp/", auth)).status == 415
    empty = request(b"GET", b"/ocsp/", auth)
    assert answer(app, empty).status == 200
    assert empty.note is not None and empty.note.rule == "malformed"


def test_act_40_an_ocsp_answer_is_counted_when_written_not_when_decided(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """帳簿 (Act §40): the ledger counts an OCSP answer (one per CertID) as its bytes go to the
    transport (`Provision.sent`), not when it is decided: one pipelined behind a slower
    answer on a connection that went away was counted though never written. A dropped
    answer gives the party's provisions back (`Provision.dropped`) and counts nothing;
    freshly signed or cached, the same."""
    cid = cert_id(app, 7)
    headers = {**OCSP_TYPE, **bearer(app)}
    counted, given_back = spy_counts(app, monkeypatch)
    for der, source in ((a_request([cid]), "signed"), (a_request([cid]), "cached"),
                        (a_request([cid, cid]), "signed")):  # fmt: skip
        req = request(b"POST", b"/ocsp", dict(headers))
        req.body = der
        resp = answer(app, req)
        assert req.note is not None and req.note.source == source
        assert counted == [] and resp.provision is not None
        n = len(a_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"])
        resp.provision.dropped()
        assert (counted, given_back) == ([], [n])
        resp.provision.sent()
        assert counted == [("both-verifier", n)]
        counted.clear()
        given_back.clear()


def test_a_fresh_signature_made_after_its_party_was_suspended_is_not_given(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OCSP answer is provided when it is written, not when its request was decided (the
    ledger dates it then, 帳簿 Act §40): a request decided before a suspension (提供の停止,
    Act §18(6)) whose fresh signature was made after the worker's registry took it was
    answered ``successful`` and counted. Now the party's standing is asked again once the
    signature is made: ``unauthorized`` (rule ``suspended``), its provisions given back,
    nothing counted."""
    cid = cert_id(app, 4242)
    headers = {**OCSP_TYPE, **bearer(app)}
    counted, given_back = spy_counts(app, monkeypatch)
    before = app.registry
    stop = SuspensionWindow(frozenset(Service), 0.0, math.inf, "Act §18(6)(1)")
    after = Registry(
        [msgspec.structs.replace(p, suspensions=(stop,)) if p.id == "both-verifier" else p
         for p in before.parties.values()],
        file=before.file,
    )  # fmt: skip
    real_sign = app.signing.sign

    def sign_then_reload(party: str, job: Any) -> Any:
        got = real_sign(party, job)
        app.registry = after  # the registry thread's swap while the signature is made
        return got

    monkeypatch.setattr(app.signing, "sign", sign_then_reload)
    req = request(b"POST", b"/ocsp", dict(headers))
    req.body = a_request([cid], nonce=b"n" * 16)
    try:
        resp = answer(app, req)
    finally:
        app.registry = before
    assert resp.status == 200 and resp.provision is None
    assert a_ocsp.OCSPResponse.load(resp.body)["response_status"].native == "unauthorized"
    assert req.note is not None and req.note.rule == "suspended"
    assert req.note.party == "both-verifier"
    assert counted == [] and given_back == [1]


def test_crl_files_are_private_to_the_party_that_downloads_them(app: JpkiApp) -> None:
    """A CRL file (失効情報ファイル) goes to a registered party only (Act §18(2), §37(2)) and
    each download is counted (帳簿, Act §40): like an OCSP answer, it must not be kept by a
    shared cache (a TLS-terminating proxy passing the client certificate on), which would
    hand it to anyone and uncounted. It carried Last-Modified and no Cache-Control, which
    lets a shared cache keep it by heuristic freshness (RFC 9111 §4.2.2)."""
    auth = bearer(app)
    for method in (b"GET", b"HEAD"):
        got = answer(app, request(method, b"/crl/sign-card-g1.crl", auth))
        assert got.status == 200
        fields = dict(got.extra_headers)
        directives = [d.strip() for d in fields[b"cache-control"].split(b",")]
        assert b"private" in directives and b"public" not in directives
        assert fields[b"last-modified"] and fields[b"etag"]


def test_crl_refusals_name_the_limit_and_the_real_wait(app: JpkiApp) -> None:
    """Issue 9.10: the cycle (周期, Ord §31(2), §62(2)) counts per CRL file (issuer generation,
    full or delta), and a party whose daily quota ran out is told "per day" with a
    Retry-After until the next Japan midnight (it was told "per second", Retry-After: 1)."""
    run_tool("responder", "registry", "update", "--registry", str(app.config.registry.path),
             "--id", "sig-verifier", "--quota-per-day", "4", "--crl-cycle", "3600")  # fmt: skip
    app.registry = Registry.load(app.config.registry.path)
    token = (app.config.store.pki / "parties" / "sig-verifier.token").read_text().strip()
    auth = {b"authorization": b"Bearer " + token.encode()}

    def get(name: str) -> Response:
        return answer(app, request(b"GET", f"/crl/{name}".encode(), auth))

    assert get("sign-card-g1.crl").status == 200
    cycle = get("sign-card-g1.crl")
    assert cycle.status == 429 and msgspec.json.decode(cycle.body)["title"] == "cycle"
    assert 3598 <= int(dict(cycle.extra_headers)[b"retry-after"]) <= 3600
    # the delta and another generation's files have their own cycles
    assert get("sign-card-g1-delta.crl").status == 200
    assert get("sign-card-g2.crl").status == 200  # the 4th request of the day
    before = time.time()
    day = get("sign-card-g2-delta.crl")
    problem = msgspec.json.decode(day.body)
    assert day.status == 429 and problem["title"] == "quota" and "per day" in problem["detail"]
    midnight = (datetime.fromtimestamp(before, JST) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    wait = int(dict(day.extra_headers)[b"retry-after"])
    assert midnight.timestamp() - before - 2 <= wait <= midnight.timestamp() - before + 2


def test_a_burst_of_report_requests_renders_once_per_interval(app: JpkiApp) -> None:
    """Issue 10.5, "same care for /reports/": every GET /reports/YYYY merged the ledger and
    rendered the year again, so a flood kept the workers' report threads busy. Now one render
    per (year, format) per ``[ledger] collect_interval``; the requests in between are
    answered from it, most without leaving the event loop."""
    now = [time.monotonic()]
    clock, max_renders = app.reports.clock, app.reports.max_renders
    app.reports.clock = lambda: now[0]
    path = b"/reports/2027.csv"  # a year no other test asked for

    async def burst(n: int) -> tuple[list[Response], int]:
        got = [app.handle(request(b"GET", path)) for _ in range(n)]
        sync = sum(isinstance(g, Response) for g in got)
        return [g if isinstance(g, Response) else await g for g in got], sync

    try:
        renders = app.reports.renders
        first, _ = asyncio.run(burst(50))
        assert app.reports.renders == renders + 1
        assert {r.status for r in first} == {200} and len({bytes(r.body) for r in first}) == 1
        again, sync = asyncio.run(burst(50))
        assert sync == 50 and app.reports.renders == renders + 1
        assert again[0].body == first[0].body
        now[0] += app.config.ledger.collect_interval
        asyncio.run(burst(50))
        assert app.reports.renders == renders + 2
        # renders already waiting at the bound: refused with 429 (a 5xx would page operators)
        app.reports.max_renders = 0
        busy = answer(app, request(b"GET", b"/reports/2028.json"))
        assert busy.status == 429 and dict(busy.extra_headers)[b"retry-after"] == b"1"
    finally:
        app.reports.clock = clock
        app.reports.max_renders = max_renders


def test_only_a_proven_party_attributes_the_connection(app: JpkiApp) -> None:
    """The HTTP layer keeps a connection in the unattributed budget until the app's note
    names a proven party (`responder.outcome.Outcome.attributed`). The notes of an
    unauthenticated OCSP request, a malformed one and a health check said party ``"-"``,
    which the layer took for a party: any client escaped the budget that way."""
    der = a_request([cert_id(app, 5)])
    auth = bearer(app)

    def note(req: Request) -> Outcome:
        req.body = der
        answer(app, req)
        assert req.note is not None
        return req.note

    for unproven in (
        request(b"POST", b"/ocsp", OCSP_TYPE),
        request(b"POST", b"/ocsp", {**OCSP_TYPE, b"authorization": b"Bearer guess"}),
        request(b"GET", b"/healthz"),
    ):
        got = note(unproven)
        assert not got.attributed and got.party == NO_PARTY, got
    malformed = request(b"POST", b"/ocsp", {**OCSP_TYPE, **auth})
    malformed.body = b"\x30\x00"
    answer(app, malformed)
    assert malformed.note is not None and not malformed.note.attributed
    proven = note(request(b"POST", b"/ocsp", {**OCSP_TYPE, **auth}))
    assert proven.attributed and proven.party == "both-verifier"


def test_early_proof_serves_its_own_request_once_not_across_a_registry_change(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 (hot path): a bearer token that `early` proved from a request's header
    fields (registered parties only, Act §17(1), §36(1)) is not checked again when the
    body arrives: one check per request, not two. When the registry was replaced in
    between (a suspension, Act §18(6); a removed token), the new one decides."""
    der = a_request([cert_id(app, 5)])
    headers = {**OCSP_TYPE, **bearer(app)}
    calls: list[Registry] = []
    real = access.by_transport

    def counting(registry: Registry, req: Any, now: float | None = None) -> Any:
        calls.append(registry)
        return real(registry, req, now)

    monkeypatch.setattr(access, "by_transport", counting)
    req = request(b"POST", b"/ocsp", dict(headers))
    assert app.early(req) is None  # proven: read the body
    req.body = der
    assert answer(app, req).status == 200
    assert req.note is not None and req.note.party == "both-verifier"
    assert len(calls) == 1

    calls.clear()
    req = request(b"POST", b"/ocsp", dict(headers))
    assert app.early(req) is None
    old = app.registry
    try:
        app.registry = Registry.load(app.config.registry.path)  # the watch thread's swap

        def token_gone(registry: Registry, req: Any, now: float | None = None) -> None:
            calls.append(registry)

        monkeypatch.setattr(access, "by_transport", token_gone)
        req.body = der
        answer(app, req)
        assert calls[-1] is app.registry
        assert req.note is not None and req.note.party == NO_PARTY
        assert req.note.rule == "unauthenticated"
    finally:
        app.registry = old


@pytest.mark.parametrize(
    ("headers", "cert"),
    [
        ({b"authorization": b"Basic Zm9vOmJhcg=="}, None),
        ({b"authorization": b"Bearer "}, None),
        ({b"authorization": b"Bearer"}, None),
        ({b"authorization": b"Token abc"}, None),
        ({}, b"a certificate no party registered"),
        ({b"authorization": b"Basic Zm9vOmJhcg=="}, b"a certificate no party registered"),
    ],
    ids=["basic", "bearer-empty", "bearer-alone", "other-scheme", "cert", "cert-and-basic"],
)
def test_a_v1_request_proving_no_party_is_refused_before_its_body(
    app: JpkiApp, headers: dict[bytes, bytes], cert: bytes | None
) -> None:
    """Every /v1 route authenticates by the transport only (a client certificate or a bearer
    token, Act §17(1), §36(1)): its body proves nothing. Any credential-looking field raises
    the body's limit to ``max_json_body_bytes`` (24 MiB), and `early` judged only a bearer
    token: ``Authorization: Basic ...`` (or an empty bearer, or a certificate no party holds)
    had its whole body read before the 401."""
    req = Request(
        b"POST", b"/v1/status", {b"content-type": b"application/json", **headers}, b"",
        ("127.0.0.1", 1), cert, b"1.1", True, 1,
    )  # fmt: skip
    got = app.early(req)
    assert got is not None and got.status == 401, got
    assert req.note is not None and req.note.rule == "unauthenticated"


def test_a_v1_request_proving_its_party_reads_its_body(app: JpkiApp) -> None:
    req = request(b"POST", b"/v1/status", bearer(app))
    assert app.early(req) is None


def test_readyz_follows_a_broken_watch_replication_only_when_asked(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node of several whose watch lists cannot be opened (no service secret) or stopped
    applying the watch stream (here: an operation the stream lost) answers the feed 503; with
    ``[watch] ready_requires_replication`` its /readyz says so too, and is ready again once
    they follow the stream; without it (the default) the node stays ready."""
    monkeypatch.setattr(streamlag, "verdict", lambda *a, **k: None)  # caught up with the records
    store = tmp_path / "store"  # a copy: the module's app holds the built store open
    shutil.copytree(built.store, store)
    cfg = built.app_config(
        tmp_path,
        **{
            "store.path": str(store),
            "cluster.nats": "nats://127.0.0.1:1",
            "watch.ready_requires_replication": True,
        },
    )
    app = JpkiApp(cfg, 0)
    try:
        with caplog.at_level(logging.ERROR, logger=changes.__name__):
            for _ in range(3):  # a load balancer's probes, one a second
                resp = answer(app, request(b"GET", b"/readyz"))
                assert resp.status == 503 and b"watch lists unavailable" in resp.body, resp.body
        logged = [r for r in caplog.records if "watch lists unavailable" in r.getMessage()]
        assert len(logged) == 1, "the same cause is logged once, not at every probe"
        assert "install the service's [watch] secret_file" in logged[0].getMessage()
        secret = cfg.watch.secret_path(cfg.ledger)
        secret.write_text(bytes(range(32)).hex() + "\n")
        secret.chmod(0o600)
        assert answer(app, request(b"GET", b"/readyz")).status == 200  # applied none: follows
        lists = changes.setup(cfg).lists()
        assert isinstance(lists, LmdbWatchSet)
        lists.note_gap("watch operation 1 is not on the stream (or is not one)")
        resp = answer(app, request(b"GET", b"/readyz"))
        assert resp.status == 503 and b"operation 1 is not on the stream" in resp.body, resp.body
        app.config = msgspec.structs.replace(
            cfg, watch=msgspec.structs.replace(cfg.watch, ready_requires_replication=False)
        )
        assert answer(app, request(b"GET", b"/readyz")).status == 200  # the default: ready
    finally:
        app.close()


def test_watch_lists_whose_disk_fails_are_not_blamed_on_the_secret(
    built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node of several whose service secret is installed but whose lists cannot be opened
    (here their directory is a file: a disk or permission fault) says what failed, without
    the hint to install the secret, which sent operators after the wrong file."""
    cfg = built.app_config(tmp_path, **{"cluster.nats": "nats://127.0.0.1:1"})
    secret = cfg.watch.secret_path(cfg.ledger)
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(bytes(range(32)).hex() + "\n")
    secret.chmod(0o600)
    where = cfg.watch.lists_dir(cfg.ledger)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(b"not a directory")
    try:
        with caplog.at_level(logging.ERROR, logger=changes.__name__):
            assert changes.setup(cfg).lists() is None
        [line] = [
            r.getMessage() for r in caplog.records if "watch lists unavailable" in r.getMessage()
        ]
        assert "secret_file" not in line, line
    finally:
        changes._ENVS.clear()


def test_readyz_says_the_builder_refused_the_record_stream_whatever_the_lag(
    built: Built, tmp_path: Path
) -> None:
    """A node of several whose builder stopped applying the record stream (a newer release's
    message, the stream made again: `META_STREAM_REFUSED`) is not ready, and says why, even
    though the stream it saw is within the lag; ready once its builder applies again."""
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.store.writer import Commit

    store = tmp_path / "store"  # a copy: the module's app holds the built store open
    shutil.copytree(built.store, store)
    cfg = built.app_config(
        tmp_path, **{"store.path": str(store), "cluster.nats": "nats://127.0.0.1:1"}
    )

    def readyz(refused: str) -> Response:
        s = Store.open(store, readonly=False)  # the builder's writes, the app not running
        try:
            with s.read() as r:
                applied = r.stream_seq()
            with Commit(s) as c:  # caught up, the stream seen just now
                c.put_stream_head(applied, int(time.time()))
                c.put_stream_refused(refused)
        finally:
            s.close()
        app = JpkiApp(cfg, 0)
        try:
            return answer(app, request(b"GET", b"/readyz"))
        finally:
            app.close()

    why = "a tick of the record stream (sequence 9) was written by release 1.3, newer"
    resp = readyz(why)
    assert (resp.status, resp.body) == (
        503, b"not caught up: the builder stopped applying the record stream: " + why.encode() + b"\n"
    )  # fmt: skip
    assert readyz("").status == 200


def test_readyz_says_the_store_records_another_issuer_under_an_index(
    built: Built, tmp_path: Path
) -> None:
    """The store's issuer table names another issuer at an index than the manifest does
    (a manifest edited after the store was built): that issuer's OCSP answers would be read
    from the other's data, so they are tryLater (`responder.flow.OcspFlow.foreign`) and the
    node is not ready, saying which."""
    from crlbuilder.store.lmdbstore import Store
    from crlbuilder.store.writer import Commit

    store = tmp_path / "store"  # a copy: the module's app holds the built store open
    shutil.copytree(built.store, store)
    s = Store.open(store, readonly=False)
    try:
        with s.read() as r:
            table = r.issuers()
        a, b, *rest = sorted(table, key=lambda i: i.index)
        swapped = [msgspec.structs.replace(a, id=b.id), msgspec.structs.replace(b, id=a.id), *rest]
        with Commit(s) as c:
            c.put_issuers(swapped)
    finally:
        s.close()
    app = JpkiApp(built.app_config(tmp_path, **{"store.path": str(store)}), 0)
    try:
        resp = answer(app, request(b"GET", b"/readyz"))
    finally:
        app.close()
    assert resp.status == 503, resp.body
    assert (
        resp.body
        == (
            f"issuer table differs from the store's: {a.index} is {a.id} here, {b.id} in the "
            f"store, {b.index} is {b.id} here, {a.id} in the store\n"
        ).encode()
    )


def test_the_registry_watch_outlives_any_failure(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's registry watch (`_registry_loop`, a thread) took only RegistryError: any
    other exception ended the thread, and no later change, a suspension (提供の停止, Act
    §18(6)) included, reached the worker. It logs and keeps the registry in use instead."""
    in_use = app.registry

    def fails(self: Registry, path: Path, *, now: float | None = None) -> None:
        raise ValueError("nothing foresaw this")

    monkeypatch.setattr(Registry, "reload_if_changed", fails)
    with caplog.at_level(logging.ERROR, logger="responder.app"):
        app._reload_registry_if_changed()  # the loop's body: raised before
    assert app.registry is in_use
    assert any(r.getMessage() == "registry_watch_failed" for r in caplog.records)


def test_an_ocsp_get_at_the_root_is_the_ocsp_get(app: JpkiApp) -> None:
    """RFC 5019 §5, RFC 6960 appendix A.1: a client given the root as its responder URL GETs
    ``{url}/{url-encoding of base64(DER)}`` (the JDK does below 255 characters); that was 404.
    It is /ocsp/{base64}'s route now: authenticated, the same answer, the RFC 5019 §6
    caching fields, the endpoint label ``ocsp``; with the slash a root URL ending in one adds,
    URL-encoded, base64url."""
    der = a_request([cert_id(app, 11)])
    b64 = base64.b64encode(der)
    reference = request(b"GET", b"/ocsp/" + b64, bearer(app))
    want = answer(app, reference)
    assert reference.note is not None and reference.note.ocsp_status == "successful"
    fields = {k for k, _ in want.extra_headers}
    assert {b"cache-control", b"etag", b"expires", b"last-modified"} <= fields
    for target in (
        b"/" + b64,
        b"//" + b64,
        b"/" + urllib.parse.quote(b64, safe="").encode(),
        b"/" + base64.urlsafe_b64encode(der).rstrip(b"="),
        b"/" + b64 + b"?q=1",
    ):
        req = request(b"GET", target, bearer(app))
        got = answer(app, req)
        assert (got.status, got.content_type, got.body) == (200, want.content_type, want.body)
        assert {k for k, _ in got.extra_headers} == fields, target
        assert dict(got.extra_headers)[b"etag"] == dict(want.extra_headers)[b"etag"]
        assert req.note is not None, target
        assert (req.note.endpoint, req.note.party, req.note.ocsp_status) == (
            "ocsp",
            "both-verifier",
            "successful",
        ), target
        assert got.provision is not None  # counted when written, as /ocsp/{base64}
    unproven = request(b"GET", b"/" + b64)
    assert answer(app, unproven).status == 200
    assert unproven.note is not None and unproven.note.rule == "unauthenticated"
    assert endpoint_of(b"/" + b64 + b"?x") == endpoint_of(b"//" + b64) == "ocsp"


def test_a_root_get_shadows_no_other_route(app: JpkiApp) -> None:
    """The root's OCSP GETs are the paths that can be a request by their bytes
    (`responder.ocsppath`: ``M`` first, base64 and percent escapes only): every other root
    path answers what it did, browsers' and crawlers' requests included; inside that
    namespace a path that does not decode is malformedRequest, as /ocsp/{garbage} is, and
    HEAD or POST is 405 Allow: GET, as below /ocsp/."""
    auth = bearer(app)
    for target, status, endpoint in (
        (b"/healthz", 200, "healthz"),
        (b"/readyz", None, "readyz"),
        (b"/metrics", 404, "metrics"),
        (b"/ocsp", 405, "ocsp"),
        (b"/", 404, "other"),
        (b"//", 404, "other"),
        (b"/favicon.ico", 404, "other"),
        (b"/robots.txt", 404, "other"),
        (b"/index.html", 404, "other"),
        (b"/Main.php", 404, "other"),  # '.' is no base64: not a request
        (b"/M\xc3\xa9", 404, "other"),
        (b"/%4DEow", 404, "other"),  # 'M' is never escaped (RFC 3986 §2.3)
        (b"/MEow/../healthz", 404, "other"),
        (b"/ca/index.json", 200, "other"),
        (b"/reports/2026.json", None, "other"),
        (b"/announcements", 200, "other"),
        (b"/crl/nothing.crl", None, "crl"),
        (b"/v1/keys", 200, "v1-keys"),
        (b"/v1/nothing", 404, None),
    ):
        req = request(b"GET", target, auth)
        got = answer(app, req)
        if status is not None:
            assert got.status == status, (target, got.status)
        assert got.content_type != b"application/ocsp-response" or target == b"/ocsp", target
        assert req.note is not None, target
        if endpoint is not None:
            assert req.note.endpoint == endpoint, (target, req.note)
    for target in (b"/M", b"/MAA", b"/M%%%", b"/Mail", b"/MEow" + b"A" * 5000):
        req = request(b"GET", target, auth)
        got = answer(app, req)
        assert (got.status, got.content_type) == (200, b"application/ocsp-response"), target
        assert req.note is not None and req.note.rule == "malformed", target
        garbage = request(b"GET", b"/ocsp/" + target[1:], auth)
        assert answer(app, garbage).body == got.body, target
    for method in (b"HEAD", b"POST", b"PUT"):
        got = answer(app, request(method, b"/MAA=", auth))
        assert (got.status, dict(got.extra_headers)[b"allow"]) == (405, b"GET"), method


def test_act_40_a_root_get_is_counted_as_an_ocsp_get(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """帳簿 (Act §40): a root GET's answer is counted in the ledger as /ocsp/{base64}'s: one
    per CertID, for the party, as OCSP, when its bytes are written."""
    counted: list[tuple[str, Service, Method, int]] = []
    monkeypatch.setattr(
        app.ledger,
        "count",
        lambda party, service, method, n, at=None: counted.append((party, service, method, n)),
    )
    der = a_request([cert_id(app, 13)])
    b64 = base64.b64encode(der)
    got: dict[bytes, list[tuple[str, Service, Method, int]]] = {}
    for target in (b"/ocsp/" + b64, b"/" + b64):
        resp = answer(app, request(b"GET", target, bearer(app)))
        assert counted == [] and resp.provision is not None
        resp.provision.sent()
        got[target[:2]] = list(counted)
        counted.clear()
    assert got[b"/M"] == got[b"/o"]
    assert len(got[b"/M"]) == 1 and got[b"/M"][0][0] == "both-verifier"
    assert got[b"/M"][0][2] == Method.OCSP and got[b"/M"][0][3] == 1


def test_the_shipped_proxy_names_the_root_gets_as_the_responder_does() -> None:
    """deploy/haproxy's ``party_route`` ACL and its log rewrite hold `ROOT_REQUEST_PATTERN`
    (tests/test_haproxy_anon.py and test_haproxy_log.py run them)."""
    cfg = (
        Path(__file__).resolve().parent.parent / "deploy" / "haproxy" / "haproxy.cfg"
    ).read_text()
    anchored = f"^{ocsppath.ROOT_REQUEST_PATTERN}$"
    assert f"acl party_route path_reg {anchored}\n" in cfg
    assert f"regsub({anchored},/{{request}})" in cfg
