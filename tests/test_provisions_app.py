"""The app's shell under an agreed ``provisions_per_day`` (件数): CRL file downloads (one
provision each, as the ledger counts them), an OCSP signature not made gives its
provisions back, the quota gauge, the OpenAPI 429; the app's clock pinned to one instant
so that no step crosses a Japan midnight."""

from __future__ import annotations

import asyncio
import math
import time
import types
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.rules import JST
from responder.app import JpkiApp
from responder.http import Request, Response
from responder.ledger import Method, read_worker_file
from responder.limits import day_ends
from responder.quotagauges import QuotaCollector
from responder.registry.lookup import Registry
from responder.v1.openapi import document
from responder.v1.table import ROUTES
from tests.conftest import Built, run_tool
from tests.test_ocspreq import a_request

PINNED = time.time()
"""The app's clock in this module: an instant of the run, never a day asked for in UTC."""


@pytest.fixture
def app(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JpkiApp]:
    cfg = built.app_config(tmp_path)
    clock = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    )
    clock.time = lambda: PINNED
    monkeypatch.setattr("responder.app.time", clock)
    a = JpkiApp(cfg, 0)
    yield a
    a.close()


def agree(app: JpkiApp, *flags: str) -> None:
    run_tool("responder", "registry", "update", "--registry", str(app.config.registry.path),
             "--id", "sig-verifier", *flags)  # fmt: skip
    app.registry = Registry.load(app.config.registry.path)


def written(resp: Response) -> Response:
    """``resp`` as the HTTP layer writes it: its `Provision.sent` (the ledger's count) first."""
    if resp.provision is not None:
        resp.provision.sent()
    return resp


def answer(app: JpkiApp, req: Request) -> Response:
    async def run() -> Response:
        got = app.handle(req)
        return got if isinstance(got, Response) else await got

    return written(asyncio.run(run()))


def auth(app: JpkiApp) -> dict[bytes, bytes]:
    token = (app.config.store.pki / "parties" / "sig-verifier.token").read_text().strip()
    return {b"authorization": b"Bearer " + token.encode()}


def crl(app: JpkiApp, name: str, method: bytes = b"GET") -> Response:
    req = Request(method, f"/crl/{name}".encode(), auth(app), b"", ("127.0.0.1", 1), None,
                  b"1.1", True, 1)  # fmt: skip
    return answer(app, req)


def left(app: JpkiApp) -> int | None:
    return app.limits.provisions_left(app.registry.parties["sig-verifier"], PINNED)


def test_crl_downloads_take_one_provision_each(app: JpkiApp) -> None:
    agree(app, "--provisions-per-day", "2")
    assert crl(app, "sign-card-g1.crl").status == 200
    assert crl(app, "sign-card-g1.crl", b"HEAD").status == 200  # provides nothing
    assert left(app) == 1
    assert crl(app, "sign-card-g1-delta.crl").status == 200
    assert left(app) == 0
    for method in (b"GET", b"HEAD"):  # a HEAD answers what a GET would
        got = crl(app, "sign-card-g2.crl", method)
        assert got.status == 429
        problem = msgspec.json.decode(got.body)
        assert problem["title"] == "quota" and "provisions_per_day" in problem["detail"]
        assert problem["remaining"] == 0
        turns = day_ends(PINNED)
        assert problem["resetsAt"] == datetime.fromtimestamp(turns, JST).isoformat()
        assert int(dict(got.extra_headers)[b"retry-after"]) == max(1, math.ceil(turns - PINNED))


def test_a_crl_download_the_cycle_refuses_gives_its_provision_back(app: JpkiApp) -> None:
    agree(app, "--provisions-per-day", "5", "--crl-cycle", "3600")
    assert crl(app, "sign-card-g1.crl").status == 200
    cycle = crl(app, "sign-card-g1.crl")
    assert cycle.status == 429 and msgspec.json.decode(cycle.body)["title"] == "cycle"
    assert left(app) == 4


def test_act_40_a_crl_download_is_counted_when_written_not_when_decided(app: JpkiApp) -> None:
    """帳簿 (Act §40): a CRL download is counted as its bytes go to the transport
    (`Provision.sent`), as OCSP answers are: one pipelined behind a slower answer on a
    connection that went away was counted though never written, its provision of the day and
    the party's cycle (周期) for the file kept, so its next GET was 429 ``cycle`` for a file
    it never received. Dropped, it counts nothing and gives both back; a 304 and a HEAD
    provide nothing and carry nothing to count."""
    agree(app, "--provisions-per-day", "5", "--crl-cycle", "3600")
    req = Request(b"GET", b"/crl/sign-card-g1.crl", auth(app), b"", ("127.0.0.1", 1), None,
                  b"1.1", True, 1)  # fmt: skip
    first = app.handle(req)
    assert isinstance(first, Response) and first.status == 200 and first.provision is not None
    assert counted(app) == 0 and left(app) == 4
    first.provision.dropped()  # the connection went away before its turn
    assert counted(app) == 0 and left(app) == 5
    got = crl(app, "sign-card-g1.crl")  # not refused by the cycle of a file never received
    assert got.status == 200 and counted(app) == 1 and left(app) == 4
    assert crl(app, "sign-card-g1.crl").status == 429  # the cycle of the file received
    etag = dict(got.extra_headers)[b"etag"]
    held = Request(b"GET", b"/crl/sign-card-g1.crl", {**auth(app), b"if-none-match": etag},
                   b"", ("127.0.0.1", 1), None, b"1.1", True, 1)  # fmt: skip
    same = app.handle(held)
    assert isinstance(same, Response) and same.status == 304 and same.provision is None
    head = app.handle(
        Request(b"HEAD", b"/crl/sign-card-g1-delta.crl", auth(app), b"", ("127.0.0.1", 1),
                None, b"1.1", True, 1)
    )  # fmt: skip
    assert isinstance(head, Response) and head.status == 200 and head.provision is None
    assert counted(app) == 1 and left(app) == 4


def counted(app: JpkiApp) -> int:
    """The CRL files counted for sig-verifier in this worker's ledger file."""
    return sum(
        s.count
        for s in read_worker_file(app.ledger.path).slots
        if s.party == "sig-verifier" and s.method is Method.CRL_FILE
    )


def test_an_ocsp_signature_not_made_gives_its_provisions_back(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agree(app, "--provisions-per-day", "3")
    der = one_certid_request(app)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)
    with monkeypatch.context() as m:  # not monkeypatch.undo(): that unpins the app's clock
        m.setattr(app.signing, "sign", lambda party, job: None)  # the fair share taken
        resp = answer(app, req)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "TRY_LATER"
    assert left(app) == 3
    resp = answer(app, req)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
    assert left(app) == 2


def one_certid_request(app: JpkiApp) -> bytes:
    """An OCSP request about one sign-card serial (signed on demand: no stored answer)."""
    issuer = x509.load_pem_x509_certificate(
        (app.config.store.pki / app.manifest.issuers[0].cert).read_bytes()
    )
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    return a_request(
        [{"hash_algorithm": {"algorithm": "sha1"}, "issuer_name_hash": name_hash,
          "issuer_key_hash": key_hash, "serial_number": 5}]
    )  # fmt: skip


def test_the_gauge_shows_what_remains(app: JpkiApp) -> None:
    agree(app, "--provisions-per-day", "7")
    app.limits.take_provisions(app.registry.parties["sig-verifier"], 5, PINNED)
    families = list(
        QuotaCollector(lambda: app.registry, app.limits, clock=lambda: PINNED).collect()
    )
    (gauge,) = [f for f in families if f.name == "jpkiva_provisions_remaining"]
    assert [(s.labels, s.value) for s in gauge.samples] == [({"party": "sig-verifier"}, 2)]


def test_the_openapi_429_and_problem_say_it() -> None:
    doc = document(ROUTES)
    status = doc["paths"]["/v1/status"]["post"]["responses"]["429"]["description"]
    assert "provisions_per_day" in status and "resetsAt" in status
    problem = doc["components"]["schemas"]["Problem"]["properties"]
    assert {"remaining", "resetsAt"} <= set(problem)


def test_a_signature_failing_after_midnight_gives_back_to_the_day_it_was_taken_in(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken at 23:59:59 JST, the signer fails at 00:00:01 JST after this worker took 2 for
    the new day: the give-back belongs to the day before, so today's 2 stay taken."""
    import responder.app as app_module

    agree(app, "--provisions-per-day", "3")
    party = app.registry.parties["sig-verifier"]
    turns = day_ends(PINNED) - 86400  # today's 00:00 JST: the data is fresh on both sides
    clock = [turns - 1.0]
    monkeypatch.setattr(app_module.time, "time", lambda: clock[0])
    der = one_certid_request(app)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def run() -> Response:
        signed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        monkeypatch.setattr(app.signing, "sign", lambda party, job: signed)
        pending = app.handle(req)
        assert not isinstance(pending, Response)
        assert app.limits.provisions_left(party, turns - 1.0) == 2
        clock[0] = turns + 1.0
        assert app.limits.take_provisions(party, 2, turns + 1.0) == turns + 1.0
        signed.set_exception(RuntimeError("the HSM went away"))
        return await pending

    resp = asyncio.run(run())
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "INTERNAL_ERROR"
    assert app.limits.provisions_left(party, turns + 1.0) == 1
    assert app.limits.provisions_left(party, turns - 1.0) == 3


def test_an_ocsp_request_whose_connection_went_away_gives_its_provisions_back(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection closes while its signature is waited for: the http layer cancels the
    app's awaitable (`responder.http`, ``connection_lost``), the signature is never sent or
    counted, so its provisions come back; a later answer takes its own."""
    agree(app, "--provisions-per-day", "3")
    der = one_certid_request(app)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def run() -> None:
        signed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        with monkeypatch.context() as m:
            m.setattr(app.signing, "sign", lambda party, job: signed)
            pending = app.handle(req)
            assert isinstance(pending, asyncio.Future)
            await asyncio.sleep(0)  # the answer waits for its signature
            assert left(app) == 2
            pending.cancel()  # connection_lost
            with pytest.raises(asyncio.CancelledError):
                await pending

    asyncio.run(run())
    assert left(app) == 3
    resp = answer(app, req)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
    assert left(app) == 2


def sign_across_midnight(
    app: JpkiApp,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[float], None] = lambda t: None,
    *,
    set_back: bool = False,
) -> tuple[Response, float]:
    """One OCSP request asked at 23:59:59 JST whose fresh signature (made by the real
    signer) is handed back at 00:00:01 JST; ``before(t)`` runs at that instant, just before.
    The answer and the instant. ``set_back``: the other way round (asked at 00:00:01 JST,
    the clock set back across 00:00 JST while the signature was made)."""
    import responder.app as app_module

    turns = day_ends(PINNED) - 86400  # today's 00:00 JST: the data is fresh on both sides
    asked, handed_at = (turns + 1.0, turns - 1.0) if set_back else (turns - 1.0, turns + 1.0)
    clock = [asked]
    monkeypatch.setattr(app_module.time, "time", lambda: clock[0])
    der = one_certid_request(app)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)
    real = app.signing.sign

    async def run() -> Response:
        handed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        made: list[asyncio.Future[Any]] = []

        def sign(party: str, job: Any) -> asyncio.Future[Any]:
            made.append(real(party, job))
            return handed

        monkeypatch.setattr(app.signing, "sign", sign)
        pending = app.handle(req)
        assert not isinstance(pending, Response)
        ready = await made[0]
        clock[0] = handed_at
        before(clock[0])
        handed.set_result(ready)
        return await pending

    return written(asyncio.run(run())), handed_at


def ocsp_counted(app: JpkiApp) -> list[tuple[date, int]]:
    """The days and counts of this worker's ledger file for the party's OCSP provisions."""
    return [
        (s.day, s.count)
        for s in read_worker_file(app.ledger.path).slots
        if s.party == "sig-verifier" and s.method is Method.OCSP and s.count
    ]


def test_a_signature_made_across_midnight_is_taken_from_the_day_it_is_counted_in(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken at 23:59:59 JST, the signature handed back at 00:00:01 JST: the answer is
    provided, and the ledger dates it, in the new day, so its provision moves there (once,
    the day before kept it and the new day's bound never saw it)."""
    agree(app, "--provisions-per-day", "3")
    party = app.registry.parties["sig-verifier"]
    resp, after = sign_across_midnight(app, monkeypatch)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
    assert app.limits.provisions_left(party, after) == 2
    assert app.limits.provisions_left(party, after - 2.0) == 3  # given back to the day before
    assert ocsp_counted(app) == [(datetime.fromtimestamp(after, JST).date(), 1)]


def test_a_signature_made_across_midnight_into_a_day_used_up_is_not_given(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new day's 3 were taken (another worker, just after 00:00 JST) while the signature
    was made: the answer would be a fourth provision of that day, so it is tryLater (quota),
    nothing counted (once, it was sent and the ledger's day held 4 of 3)."""
    agree(app, "--provisions-per-day", "3")
    party = app.registry.parties["sig-verifier"]

    def used_up(t: float) -> None:
        assert app.limits.take_provisions(party, 3, t) == t

    resp, after = sign_across_midnight(app, monkeypatch, used_up)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "TRY_LATER"
    assert app.limits.provisions_left(party, after) == 0
    assert ocsp_counted(app) == []


def test_a_signature_made_while_the_clock_is_set_back_across_midnight_is_counted_where_taken(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken at 00:00:01 JST, the signature handed back with the clock set back to 23:59:59
    JST (an NTP step): the provision stays in the day it was taken from, and the ledger
    dates it in that day too (once, the ledger dated it in the day before, which the bound
    never saw: the two disagreed on both days)."""
    agree(app, "--provisions-per-day", "3")
    party = app.registry.parties["sig-verifier"]
    resp, back = sign_across_midnight(app, monkeypatch, set_back=True)
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
    assert app.limits.provisions_left(party, back + 2.0) == 2
    assert app.limits.provisions_left(party, back) == 3
    assert ocsp_counted(app) == [(datetime.fromtimestamp(back + 2.0, JST).date(), 1)]


def test_a_crl_download_is_counted_on_the_day_its_provision_was_taken(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's clock at 23:59:59 JST, the ledger writer's own clock already on a later day
    (the machine's): the download is dated by the instant its provision was taken at."""
    import responder.app as app_module

    agree(app, "--provisions-per-day", "2")
    late = day_ends(PINNED) - 86400 - 1.0  # the day before the machine's
    monkeypatch.setattr(app_module.time, "time", lambda: late)
    assert crl(app, "sign-card-g1.crl").status == 200
    assert app.limits.provisions_left(app.registry.parties["sig-verifier"], late) == 1
    counted = [
        (s.day, s.count)
        for s in read_worker_file(app.ledger.path).slots
        if s.party == "sig-verifier" and s.method is Method.CRL_FILE
    ]
    assert counted == [(datetime.fromtimestamp(late, JST).date(), 1)]


def step_back(app: JpkiApp, monkeypatch: pytest.MonkeyPatch) -> tuple[float, float]:
    """This worker's row moved on to today's Japan day (2 taken at 00:00:01 JST), then the
    clock set back to 23:59:59 JST (an NTP step) before the next request is asked: today's
    00:00 JST and the instant the clock now reads."""
    import responder.app as app_module

    party = app.registry.parties["sig-verifier"]
    turns = day_ends(PINNED) - 86400  # today's 00:00 JST: the data is fresh on both sides
    app.limits.take_provisions(party, 2, turns + 1.0)
    assert app.limits.provisions_left(party, turns + 1.0) == 3
    back = turns - 1.0
    monkeypatch.setattr(app_module.time, "time", lambda: back)
    return turns, back


def test_ocsp_answers_asked_after_the_clock_is_set_back_are_counted_on_the_day_taken(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked after the step, signed then answered from the cache: the bound takes both from
    the row's later day, and the ledger dates them there too (once, it dated them by the
    clock, in the day before, which the bound never took them from)."""
    agree(app, "--provisions-per-day", "5")
    party = app.registry.parties["sig-verifier"]
    turns, back = step_back(app, monkeypatch)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, one_certid_request(app), ("127.0.0.1", 1), None,
                  b"1.1", True, 1)  # fmt: skip
    for source in ("signed", "cached"):
        resp = answer(app, req)
        assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "SUCCESSFUL"
        assert req.note is not None and req.note.source == source
    assert app.limits.provisions_left(party, turns + 1.0) == 1
    assert app.limits.provisions_left(party, back) == 5
    assert ocsp_counted(app) == [(datetime.fromtimestamp(turns, JST).date(), 2)]


def test_a_signature_asked_after_the_clock_is_set_back_that_fails_gives_back_to_that_day(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signer fails: the provision goes back to the row's later day it was taken from
    (once, the give-back named the clock's day before, and the later day kept it)."""
    agree(app, "--provisions-per-day", "5")
    party = app.registry.parties["sig-verifier"]
    turns, back = step_back(app, monkeypatch)
    headers = {b"content-type": b"application/ocsp-request", **auth(app)}
    req = Request(b"POST", b"/ocsp", headers, one_certid_request(app), ("127.0.0.1", 1), None,
                  b"1.1", True, 1)  # fmt: skip

    async def run() -> Response:
        signed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        monkeypatch.setattr(app.signing, "sign", lambda party, job: signed)
        pending = app.handle(req)
        assert not isinstance(pending, Response)
        assert app.limits.provisions_left(party, turns + 1.0) == 2
        signed.set_exception(RuntimeError("the HSM went away"))
        return await pending

    resp = asyncio.run(run())
    assert ocsp.load_der_ocsp_response(resp.body).response_status.name == "INTERNAL_ERROR"
    assert app.limits.provisions_left(party, turns + 1.0) == 3
    assert app.limits.provisions_left(party, back) == 5


def test_a_crl_download_asked_after_the_clock_is_set_back_is_counted_on_the_day_taken(
    app: JpkiApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    agree(app, "--provisions-per-day", "5")
    party = app.registry.parties["sig-verifier"]
    turns, back = step_back(app, monkeypatch)
    assert crl(app, "sign-card-g1.crl").status == 200
    assert app.limits.provisions_left(party, turns + 1.0) == 2
    assert app.limits.provisions_left(party, back) == 5
    counted = [
        (s.day, s.count)
        for s in read_worker_file(app.ledger.path).slots
        if s.party == "sig-verifier" and s.method is Method.CRL_FILE and s.count
    ]
    assert counted == [(datetime.fromtimestamp(turns, JST).date(), 1)]


def test_a_reload_applies_a_changed_number_of_nodes(app: JpkiApp) -> None:
    """docs/operations.md ("Add a node"): `[cluster] nodes` raised on every node, then
    `systemctl reload`: each node's share of every quota follows at once (once, the table
    kept the share it was made with until a restart, and the nodes together admitted
    more than the agreement)."""
    agree(app, "--provisions-per-day", "10")
    assert left(app) == 10
    cluster = msgspec.structs.replace(app.config.cluster, nodes=2)
    app.reload(msgspec.structs.replace(app.config, cluster=cluster))
    assert left(app) == 5
