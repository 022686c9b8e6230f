"""The /v1 routes under an agreed ``provisions_per_day`` (件数 per Japan day), through the
real dispatcher and a real quota table (`responder.limits.LimitsTable`) on a fixed clock:
a batch that would pass the bound is refused whole (429 naming the rule, what remains and
when the Japan day turns; nothing counted or answered), the changes feed delivers what
remains and says where it stopped, the single answers take one each."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.rules import JST, JST_OFFSET
from crlbuilder.store.reader import changes_start
from responder import access
from responder.config import ResponderConfig
from responder.http import Request, Response
from responder.ledger import Ledger, LedgerWriter
from responder.limits import LimitsTable
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.signing import SigningPool
from responder.v1 import changes
from responder.v1 import status as v1status
from responder.v1.routes import Done, V1Api
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import dropped, written
from tests.test_policy import NOW, SIG, USR, build, party_table
from tests.test_v1_changes import A, B, C, at
from tests.test_v1_changes import Api as ChangesApi
from tests.test_v1_changes import ref as changes_ref
from tests.test_v1_changes import store as changes_store
from tests.test_v1_recordinfo import FAMILY_OF, key_file, population
from tests.test_v1_recordinfo import SC as RI_SC
from tests.test_v1_recordinfo import Api as RecordApi
from tests.test_v1_recordinfo import ref as ri_ref
from tests.test_v1_status import AC, GOOD, REVOKED, SC, Api, entries, ref, store
from tests.test_v1_status import cas as cas  # noqa: PLC0414  (the module's CA fixture)

MIDNIGHT_JST = (int(NOW) + JST_OFFSET) // 86400 * 86400 - JST_OFFSET + 86400
"""The end of NOW's Japan day (00:00 JST the next day): a fixed clock, never "today"."""


def bounded(n: int) -> Registry:
    """``sig`` agreed ``provisions_per_day = n``; ``usr`` and ``both`` unbounded."""
    sig = party_table("sig", {SIG})
    sig["agreement"]["provisions_per_day"] = n
    return build(sig, party_table("usr", {USR}), party_table("both", {SIG, USR}))


def limits(tmp_path: Path, index: int = 0, workers: int = 1) -> LimitsTable:
    path = tmp_path / "limits"
    if not path.exists():
        LimitsTable.create(path, workers)
    return LimitsTable(path, workers, index)


def status_api(cas: dict[int, Ca], tmp_path: Path, n: int) -> tuple[Api, LimitsTable]:
    table = limits(tmp_path)
    return Api(store(cas), bounded(n), table), table  # type: ignore[arg-type]


def assert_provisions_429(resp: Response, got: Any, remaining: int) -> None:
    assert resp.status == 429, got
    assert resp.content_type == b"application/problem+json"
    assert got["rule"] == "quota" and got["type"] == "urn:jpki-va:problem:quota"
    assert "provisions_per_day" in got["detail"]
    assert got["remaining"] == remaining
    assert got["resetsAt"] == datetime.fromtimestamp(MIDNIGHT_JST, JST).isoformat()
    assert got["article"] == "Act §17(4)"
    retry = int(dict(resp.extra_headers)[b"retry-after"])
    assert retry == MIDNIGHT_JST - int(NOW)


def test_a_batch_at_the_bound_is_answered_and_one_past_it_refused_whole(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api, table = status_api(cas, tmp_path, 5)
    resp, got = api.call(entries(ref(SC, GOOD), ref(SC, REVOKED), ref(SC, GOOD)))
    assert resp.status == 200, got
    # 3 taken, 2 remain: a batch of 3 would pass the bound
    resp, got = api.call(entries(ref(SC, GOOD), ref(SC, REVOKED), ref(SC, GOOD)))
    assert_provisions_429(resp, got, 2)
    assert "entries" not in got
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 3)]
    assert api.calls.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    assert api.last is not None and api.last.note is not None
    assert api.last.note.rule == "quota"
    # exactly the 2 that remain
    resp, got = api.call(entries(ref(SC, GOOD), ref(SC, REVOKED)))
    assert resp.status == 200 and len(got["entries"]) == 2
    assert table.provisions_left(api.registry.parties["sig"], NOW) == 0
    # nothing remains: refused before the body is decoded (even a bad one)
    resp, got = api.call(b"not json")
    assert_provisions_429(resp, got, 0)
    # another party's count is its own
    resp, got = api.call(entries(ref(SC, GOOD)), party="both")
    assert resp.status == 200


def test_entries_refused_per_family_take_no_provision(cas: dict[int, Ca], tmp_path: Path) -> None:
    """The bound counts what the ledger counts: an entry refused (a family not agreed) is no
    provision, so a batch of 3 with one refused fits 2 remaining."""
    api, table = status_api(cas, tmp_path, 2)
    resp, got = api.call(entries(ref(SC, GOOD), ref(AC, GOOD), ref(SC, REVOKED)))
    assert resp.status == 200, got
    assert got["entries"][1]["status"] == "refused"
    assert table.provisions_left(api.registry.parties["sig"], NOW) == 0


def test_the_count_turns_at_jst_midnight(cas: dict[int, Ca], tmp_path: Path) -> None:
    api, _ = status_api(cas, tmp_path, 1)
    assert api.call(entries(ref(SC, GOOD)))[0].status == 200
    assert api.call(entries(ref(SC, GOOD)))[0].status == 429

    def at_instant(now: float) -> int:
        body = msgspec.json.encode(entries(ref(SC, GOOD)))
        headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}
        req = Request(
            b"POST", b"/v1/status", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1
        )
        return written(api.api.handle(req, api.registry, now)).status

    assert at_instant(MIDNIGHT_JST - 1) == 429  # 23:59:59 JST: the same Japan day
    assert at_instant(MIDNIGHT_JST) == 200  # 00:00:00 JST: a new day
    assert at_instant(MIDNIGHT_JST + 1) == 429


def test_two_workers_share_the_count(cas: dict[int, Ca], tmp_path: Path) -> None:
    reg = bounded(4)
    one = Api(store(cas), reg, limits(tmp_path, 0, 2))  # type: ignore[arg-type]
    two = Api(store(cas), reg, limits(tmp_path, 1, 2))  # type: ignore[arg-type]
    assert one.call(entries(ref(SC, GOOD), ref(SC, GOOD), ref(SC, GOOD)))[0].status == 200
    resp, got = two.call(entries(ref(SC, GOOD), ref(SC, GOOD)))
    assert_provisions_429(resp, got, 1)
    assert two.call(entries(ref(SC, GOOD)))[0].status == 200
    assert two.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]


# --- the changes feed ---------------------------------------------------------------------


def test_changes_deliver_what_remains_and_say_where_they_stopped(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(2)
    table = limits(tmp_path)
    api.api.quota = table
    assert (
        api.watch(add=[changes_ref(SC, A), changes_ref(SC, B), changes_ref(SC, C)])[0].status == 200
    )
    resp, got = api.changes(f"cursor={at(2)}&limit=3")  # A, B, C: only 2 remain
    assert resp.status == 200, got
    assert [c["serial"] for c in got["changes"]] == [f"{A:X}", f"{B:X}"]
    assert got["more"] is True and got["cursor"] != at(7)
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]
    # nothing remains: 429 (the watch list can still be changed: registering provides nothing)
    resp, got = api.changes(f"cursor={got['cursor']}")
    assert_provisions_429(resp, got, 0)
    assert api.watch(remove=[changes_ref(SC, A)])[0].status == 200
    # the next Japan day (00:00 JST): the read goes on
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={at(2)}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    answer = api.api.handle(req, api.registry, MIDNIGHT_JST)
    assert isinstance(answer, Response) and answer.status == 200


def test_changes_cursor_resumes_after_the_last_change_delivered(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(1)
    api.api.quota = limits(tmp_path)
    api.watch(add=[changes_ref(SC, A), changes_ref(SC, B)])
    _, first = api.changes(f"cursor={at(2)}")
    assert [c["serial"] for c in first["changes"]] == [f"{A:X}"] and first["more"] is True
    api.registry = bounded(10)  # a new agreement: more remain
    _, second = api.changes(f"cursor={first['cursor']}")
    assert [c["serial"] for c in second["changes"]] == [f"{B:X}"]  # nothing lost, nothing twice


def test_changes_refused_after_the_read_leave_them_to_be_counted_when_delivered(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Another call of the party takes the last provisions between the read and its answer:
    the answer is refused whole (429). The changes it would have delivered are counted when
    the party reads them after all, not passed as if counted (`Reply.provide`: nothing recorded as counted until given)."""
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(2)
    table = limits(tmp_path)

    class Raced:
        def __getattr__(self, name: str) -> Any:
            return getattr(table, name)

        def take_provisions(self, party: Any, n: int, now: float) -> Any:
            if n:  # meanwhile, another worker's call of the party took them
                assert table.take_provisions(party, 2, now) == now
                api.api.quota = table
            return table.take_provisions(party, n, now)

    api.api.quota = Raced()  # type: ignore[assignment]
    api.watch(add=[changes_ref(SC, B), changes_ref(SC, C)])
    first = api.sealed(changes_start(3))
    resp, got = api.changes(f"cursor={first}")
    assert_provisions_429(resp, got, 0)
    assert api.ledger.counted == []
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={first}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    answer = written(api.api.handle(req, api.registry, MIDNIGHT_JST))  # the next Japan day
    assert isinstance(answer, Response) and answer.status == 200
    assert len(msgspec.json.decode(bytes(answer.body))["changes"]) == 2
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]


# --- single answers: record information, corresponding serials -----------------------------


@pytest.fixture(scope="module")
def ri_cas() -> dict[int, Ca]:
    key = rsa_key()
    return {i: make_ca(f"{f.value}-g1 CA", key) for i, f in FAMILY_OF.items()}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (b"/v1/record-info", {"certificate": ri_ref(RI_SC, 0xA1)}),
        (b"/v1/corresponding", {"certificate": ri_ref(RI_SC, 0xA2), "counterpart": "sign-mobile"}),
    ],
)
def test_single_answers_take_one_each(
    ri_cas: dict[int, Ca], tmp_path: Path, path: bytes, body: dict[str, Any]
) -> None:
    api = RecordApi(population(ri_cas), key_file(tmp_path))
    api.registry = bounded(1)
    api.api.quota = limits(tmp_path)
    resp, got = api.call(path, body)
    assert resp.status == 200, got
    resp, got = api.call(path, body)
    assert_provisions_429(resp, got, 0)
    assert len(api.ledger.counted) == 1


def test_the_unbounded_party_is_not_asked(cas: dict[int, Ca], tmp_path: Path) -> None:
    api, table = status_api(cas, tmp_path, 1)
    for _ in range(3):
        assert api.call(entries(ref(SC, GOOD)), party="both")[0].status == 200
    assert table.provisions_left(api.registry.parties["both"], NOW) is None


# --- the token route (Act §38-3) ----------------------------------------------------------


def test_a_token_takes_one_when_handed_out_and_its_queueing_none(tmp_path: Path) -> None:
    """The documented behaviour: the queued request (202) provides nothing and takes nothing;
    handing the token out (200) takes one; with none left even the queueing call is 429."""
    from tests import test_v1_token as tok

    ca = tok.make_ca(
        "verifier-token-g1 CA", tok.rsa_key(), not_before=datetime(2020, 1, 1, tzinfo=UTC)
    )
    desk = tok.MemoryDesk(ca)
    spec = tok.spec_table()
    spec["agreement"]["provisions_per_day"] = 1
    table = limits(tmp_path)
    api = tok.Api(spec, desk=desk)
    api.api.quota = table
    party = api.registry.parties["spec"]
    key = tok.ec.generate_private_key(tok.ec.SECP256R1())
    csr = tok.pem(tok.csr_of(key))
    resp, body = api.post({"csr": csr})
    assert resp.status == 202 and table.provisions_left(party, NOW) == 1
    [req] = desk.queued.values()
    cert = tok.token_certificate(
        req, issuer=tok.ISSUER, issuer_cert=ca.cert, approval_window=(0, None),
        validity=tok.timedelta(days=365), signer=tok.CaSigner(ca),  # type: ignore[arg-type]
    )  # fmt: skip
    desk.files[req.id] = cert.public_bytes(tok.serialization.Encoding.PEM)
    api.reader.status_records[tok.sf.status_key(tok.INDEX, tok.token_serial(req.id))] = (
        tok.sf.StatusRecord(
            version=1, state=tok.sf.STATE_GOOD, category=0, reason=0,
            family=tok.Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=0, not_after=2**40,
            revoked_at=0, holder=b"\0" * 32,
        )
    )  # fmt: skip
    api.reader.changed()
    resp, body = api.post({"csr": csr})
    assert resp.status == 200 and body["status"] == "issued"
    assert table.provisions_left(party, NOW) == 0
    assert api.ledger.counted == [("spec", Service.SPECIFIED_VERIFIER_TOKEN, Method.JSON, 1)]
    other = tok.pem(tok.csr_of(tok.ec.generate_private_key(tok.ec.SECP256R1())))
    resp, body = api.post({"csr": other})  # a new request to queue: refused, nothing queued
    assert resp.status == 429 and body["rule"] == "quota" and body["remaining"] == 0
    assert body["article"] == "Act §38-3(3)"  # the token's agreement (取決め)
    assert len(desk.queued) == 1 and len(api.ledger.counted) == 1


# --- a threaded batch across 00:00 JST: the bound and the ledger count the same day ---------

BATCH = 1000
"""Entries of a batch large enough for the batch thread (`responder.v1.routes.THREAD_BYTES`)."""
DAY_OF_NOW = datetime.fromtimestamp(NOW, JST).date()


class Clock:
    """The worker's clock (`V1Api.clock`, `LedgerWriter`'s), set by the test."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Worker:
    """One worker of a node: its /v1 dispatcher with the batch thread, its row of the shared
    quota table and its ledger file, all on one settable clock."""

    def __init__(
        self, cas: dict[int, Ca], tmp_path: Path, reg: Registry, index: int, workers: int
    ) -> None:
        self.clock = Clock(NOW)
        self.registry = reg
        self.table = limits(tmp_path, index, workers)
        self.ledger = LedgerWriter.open(tmp_path / "ledger", index, clock=self.clock)
        self.pool: SigningPool[Done] = SigningPool(1, 2)
        self.api = V1Api(
            (v1status.ROUTE,), ResponderConfig(), store=store(cas), quota=self.table,
            ledger=self.ledger, pool=self.pool, signer=None, clock=self.clock,
        )  # fmt: skip

    def batch(self, n: int, asked: float, answered: float) -> tuple[Response, Any]:
        """A batch of ``n`` asked at ``asked``, answered by the batch thread and counted at
        ``answered`` (the clock when `V1Api` takes its provisions and the ledger counts)."""
        body = msgspec.json.encode(entries(*[ref(SC, GOOD)] * n))
        headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}
        req = Request(b"POST", b"/v1/status", headers, body, ("127.0.0.1", 1), None, b"1.1",
                      True, 1)  # fmt: skip

        async def run() -> Response:
            self.clock.t = asked
            pending = self.api.handle(req, self.registry, asked)
            assert not isinstance(pending, Response), "not the batch thread"
            self.clock.t = answered
            return written(await pending)

        resp = asyncio.run(run())
        return resp, msgspec.json.decode(bytes(resp.body))

    def left(self, at: float) -> int | None:
        return self.table.provisions_left(self.registry.parties["sig"], at)

    def close(self) -> None:
        self.pool.close()
        self.ledger.close()
        self.table.close()


def ledger_days(tmp_path: Path) -> dict[str, int]:
    """The ledger's provisions per Japan day, the workers' files merged."""
    with Ledger.open(tmp_path / "ledger") as ledger:
        ledger.collect()
        got = ledger.totals(DAY_OF_NOW, DAY_OF_NOW + timedelta(days=1), by=("day",))
    return {day: n for (day,), n in got.items()}


def test_a_batch_asked_before_midnight_and_answered_after_counts_in_the_new_day(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Asked at 23:59:59.5 JST in a worker whose row is on that day (1000 of 1250 taken),
    answered at 00:00:00.5 JST: taken from the new day, where the ledger dates it, so the
    new day's next batch of 1000 is refused (once, the day before's bound refused the batch
    and the new day's let 2000 through)."""
    w = Worker(cas, tmp_path, bounded(1250), 0, 1)
    try:
        assert w.batch(BATCH, NOW, NOW)[0].status == 200
        resp, got = w.batch(BATCH, MIDNIGHT_JST - 0.5, MIDNIGHT_JST + 0.5)
        assert resp.status == 200, got
        assert w.left(MIDNIGHT_JST + 0.5) == 250
        resp, got = w.batch(BATCH, MIDNIGHT_JST + 1, MIDNIGHT_JST + 1)
        assert resp.status == 429 and got["remaining"] == 250, got
        assert ledger_days(tmp_path) == {
            DAY_OF_NOW.isoformat(): BATCH,
            (DAY_OF_NOW + timedelta(days=1)).isoformat(): BATCH,
        }
    finally:
        w.close()


def test_a_late_batch_sees_the_new_day_of_a_worker_already_on_it(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Worker one took 1000 on each side of 00:00 JST (its row is on the new day); worker
    two's batch asked at 23:59:59.5 and answered at 00:00:00.5 is counted with one's new day
    (once, it checked the day before without one's count, and the new day's bound never saw
    it though the ledger dated it there)."""
    reg = bounded(2500)
    one = Worker(cas, tmp_path, reg, 0, 2)
    two = Worker(cas, tmp_path, reg, 1, 2)
    try:
        assert one.batch(BATCH, NOW, NOW)[0].status == 200
        assert one.batch(BATCH, MIDNIGHT_JST + 0.1, MIDNIGHT_JST + 0.1)[0].status == 200
        resp, got = two.batch(BATCH, MIDNIGHT_JST - 0.5, MIDNIGHT_JST + 0.5)
        assert resp.status == 200, got
        assert one.left(MIDNIGHT_JST + 1) == two.left(MIDNIGHT_JST + 1) == 500
        resp, got = one.batch(BATCH, MIDNIGHT_JST + 1, MIDNIGHT_JST + 1)
        assert resp.status == 429 and got["remaining"] == 500, got
        assert ledger_days(tmp_path) == {
            DAY_OF_NOW.isoformat(): BATCH,
            (DAY_OF_NOW + timedelta(days=1)).isoformat(): 2 * BATCH,
        }
    finally:
        one.close()
        two.close()


def test_a_batch_answered_later_the_same_day_sees_what_it_saw(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """No midnight between asking and answering: taken and refused at the asked instant, as
    before the clock was read (the Retry-After and resetsAt of the instant asked)."""
    w = Worker(cas, tmp_path, bounded(1250), 0, 1)
    try:
        assert w.batch(BATCH, NOW, NOW + 30)[0].status == 200
        resp, got = w.batch(BATCH, NOW, NOW + 60)
        assert_provisions_429(resp, got, 250)
        assert ledger_days(tmp_path) == {DAY_OF_NOW.isoformat(): BATCH}
    finally:
        w.close()


def test_a_batch_answered_with_the_clock_set_back_across_midnight_counts_where_asked(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The worker's row is on the new day (1000 taken at 00:00:00.1 JST); a batch asked at
    00:00:00.5 JST is answered with the clock set back to 23:59:59.5 JST (an NTP step): it
    is taken from the new day (the row's), and the ledger dates it there too (once, it
    dated it in the day before, which the bound never took it from)."""
    w = Worker(cas, tmp_path, bounded(2500), 0, 1)
    try:
        assert w.batch(BATCH, MIDNIGHT_JST + 0.1, MIDNIGHT_JST + 0.1)[0].status == 200
        resp, got = w.batch(BATCH, MIDNIGHT_JST + 0.5, MIDNIGHT_JST - 0.5)
        assert resp.status == 200, got
        assert w.left(MIDNIGHT_JST + 1) == 500
        assert w.left(MIDNIGHT_JST - 1) == 2500
        assert ledger_days(tmp_path) == {(DAY_OF_NOW + timedelta(days=1)).isoformat(): 2 * BATCH}
    finally:
        w.close()


def test_a_batch_asked_after_the_clock_is_set_back_across_midnight_counts_on_the_day_taken(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The worker's row is on the new day (1000 taken at 00:00:00.1 JST), then the clock is
    set back (an NTP step) and a batch is asked at 23:59:59.5 JST: the bound takes it from
    the row's later day, and the ledger dates it there too (once, the ledger dated it by the
    request's instant, in the day before, which the bound never took it from)."""
    w = Worker(cas, tmp_path, bounded(2500), 0, 1)
    try:
        assert w.batch(BATCH, MIDNIGHT_JST + 0.1, MIDNIGHT_JST + 0.1)[0].status == 200
        resp, got = w.batch(BATCH, MIDNIGHT_JST - 0.5, MIDNIGHT_JST - 0.4)
        assert resp.status == 200, got
        assert w.left(MIDNIGHT_JST + 1) == 500
        assert w.left(MIDNIGHT_JST - 1) == 2500
        assert ledger_days(tmp_path) == {(DAY_OF_NOW + timedelta(days=1)).isoformat(): 2 * BATCH}
    finally:
        w.close()


# --- a changes read in the batch thread whose answer is never given ------------------------


class SlowSigner:
    """An answer signer that signs when the test lets it (an HSM slow to answer)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()
        self.fail = False

    def sign(self, body: bytes) -> bytes:
        self.entered.set()  # the read is done, its answer made
        assert self.go.wait(10)
        if self.fail:
            raise RuntimeError("the token went away")
        return b"h..s"


def _threaded_changes(
    cas: dict[int, Ca], tmp_path: Path, signer: SlowSigner
) -> tuple[ChangesApi, V1Api, str]:
    """The changes feed answered in the batch thread (as on a node of several), the party
    watching B and C, and a cursor before them; the in-line dispatcher kept for re-reads."""
    api = ChangesApi(changes_store(cas), tmp_path)
    inline = api.api
    api.watch(add=[changes_ref(SC, B), changes_ref(SC, C)])  # in line (no batch thread yet)
    route = dataclasses.replace(changes.CHANGES_ROUTE, blocking=lambda _env: True)
    api.api = V1Api(
        (changes.WATCH_ROUTE, route), api.config, store=api.reader, quota=inline.quota,
        ledger=api.ledger, pool=SigningPool(1, 2), signer=signer,  # type: ignore[arg-type]
    )  # fmt: skip
    return api, inline, api.sealed(changes_start(3))


def _reread(api: ChangesApi, inline: V1Api, cursor: str) -> list[Any]:
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={cursor}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    answer = written(inline.handle(req, api.registry, NOW))
    assert answer.status == 200
    changes_got: list[Any] = msgspec.json.decode(bytes(answer.body))["changes"]
    return changes_got


@pytest.mark.parametrize("when", ["signing", "signing-waited-on", "signed"])
def test_a_changes_read_whose_connection_went_away_leaves_them_to_be_counted(
    cas: dict[int, Ca], tmp_path: Path, when: str
) -> None:
    """The party's connection goes away while the batch thread works on its read
    (`responder.http` cancels the answer, whether or not it already waits on the thread, and
    whether or not the thread has finished): nothing is counted nor delivered, so the read
    again from the same cursor counts them (the read recorded nothing as counted)."""
    signer = SlowSigner()
    if when == "signed":
        signer.go.set()
    api, inline, first = _threaded_changes(cas, tmp_path, signer)
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={first}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def gone() -> None:
        pending = api.api.handle(req, api.registry, NOW)
        assert isinstance(pending, asyncio.Future), "not the batch thread"
        deadline = time.monotonic() + 10
        while not signer.entered.is_set():  # the thread has read and made its answer
            assert time.monotonic() < deadline
            if when == "signed":  # the event loop held all along: the thread's outcome
                time.sleep(0.01)  # is not taken before the answer is cancelled
            else:
                await asyncio.sleep(0.01)
        if when == "signing-waited-on":
            await asyncio.sleep(0)  # the answer starts waiting on the thread
        if when == "signed":
            time.sleep(0.2)  # the thread finishes
        pending.cancel()  # the connection went away while the answer was being signed
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        signer.go.set()
        while api.api.pool is not None and api.api.pool.running:  # the thread is done
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    asyncio.run(gone())
    assert api.ledger.counted == []
    assert len(_reread(api, inline, first)) == 2
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]


def test_a_changes_read_whose_answer_could_not_be_signed_leaves_them_to_be_counted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The answer's signature fails after the read (the token went away): 503, nothing
    counted nor delivered, so the read again counts them."""
    signer = SlowSigner()
    signer.fail = True
    signer.go.set()
    api, inline, first = _threaded_changes(cas, tmp_path, signer)
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={first}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def failed() -> None:
        pending = api.api.handle(req, api.registry, NOW)
        assert isinstance(pending, asyncio.Future), "not the batch thread"
        resp = await pending
        assert resp.status == 503 and resp.content_type == b"application/problem+json"

    asyncio.run(failed())
    assert api.ledger.counted == []
    assert len(_reread(api, inline, first)) == 2
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]


def test_a_read_that_relied_on_another_reads_count_is_counted_when_that_one_is_refused(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """Two reads of one party from one cursor at once: the first has read B and C; the
    second is answered meanwhile; then the first is refused 429 (another call took the
    day's last provisions). B and C were delivered by the second: they must be counted
    (the first must not have recorded them as counted before it was given)."""
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(10)
    table = limits(tmp_path)
    api.watch(add=[changes_ref(SC, B), changes_ref(SC, C)])
    first = api.sealed(changes_start(3))
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={first}".encode()

    def call() -> Response:
        req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
        return written(api.api.handle(req, api.registry, NOW))

    second: list[Response] = []

    class Raced:
        def __getattr__(self, name: str) -> Any:
            return getattr(table, name)

        def take_provisions(self, party: Any, n: int, now: float) -> Any:
            if n and not second:  # the first read, between its handler and its count
                api.api.quota = table
                second.append(call())  # the second read, answered whole meanwhile
                left = table.provisions_left(party, now)
                assert left is not None and left >= n
                assert table.take_provisions(party, left - n + 1, now) == now  # another call
            return table.take_provisions(party, n, now)

    api.api.quota = Raced()  # type: ignore[assignment]
    refused = call()
    assert refused.status == 429
    assert second[0].status == 200
    delivered = msgspec.json.decode(bytes(second[0].body))["changes"]
    assert len(delivered) == 2
    counted = sum(n for *_k, n in api.ledger.counted)
    assert counted == 2, api.ledger.counted


def test_a_changes_read_whose_worker_died_before_its_count_leaves_them_to_be_counted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """The worker is killed (SIGKILL, an OOM) after the read made and signed its answer and
    before the dispatcher counted it (`V1Api._work` done, `V1Api._finish` never run): nothing
    was given, so nothing may be recorded as counted, and the read again (on another worker
    of the node) counts B and C. The counted mark moves only in the step that counts."""
    signer = SlowSigner()
    signer.go.set()
    api, inline, first = _threaded_changes(cas, tmp_path, signer)
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={first}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    party = access.by_transport(api.registry, req, NOW)
    assert party is not None
    query = changes.ChangesQuery(cursor=first)
    work = api.api._work(changes.CHANGES_ROUTE, party, query, NOW, api.api.decider(api.registry))
    assert work.problem is None and work.body and work.signature == b"h..s"
    # the worker dies here
    assert api.ledger.counted == []
    assert len(_reread(api, inline, first)) == 2
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]


def _made(api: ChangesApi, cursor: str) -> Response:
    """The answer to a read of the changes from ``cursor``, made and not yet written."""
    headers = {b"authorization": b"Bearer sig"}
    target = f"/v1/changes?cursor={cursor}".encode()
    req = Request(b"GET", target, headers, b"", ("127.0.0.1", 1), None, b"1.1", True, 1)
    answer = api.api.handle(req, api.registry, NOW)
    assert isinstance(answer, Response) and answer.status == 200
    return answer


def test_act_40_a_v1_answer_is_counted_when_written_not_when_decided(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """帳簿 (Act §40): a /v1 answer is counted (provisions and call) as its bytes go to the
    transport (`Provision.sent`), as OCSP answers are: one pipelined behind a slower answer
    on a connection that went away was counted though never written, and its provisions of
    the day stayed taken. Dropped (`Provision.dropped`), it counts nothing and gives them
    back; written, it counts once."""
    api, table = status_api(cas, tmp_path, 5)
    sig = api.registry.parties["sig"]
    body = msgspec.json.encode(entries(ref(SC, GOOD), ref(SC, REVOKED), ref(SC, GOOD)))
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}

    def made() -> Response:
        req = Request(b"POST", b"/v1/status", headers, body, ("127.0.0.1", 1), None, b"1.1",
                      True, 1)  # fmt: skip
        answer = api.api.handle(req, api.registry, NOW)
        assert isinstance(answer, Response) and answer.status == 200
        return answer

    first = made()
    assert table.provisions_left(sig, NOW) == 2  # taken when decided, the bound checked then
    assert api.ledger.counted == [] and api.calls.counted == []
    dropped(first)
    assert table.provisions_left(sig, NOW) == 5
    assert api.ledger.counted == [] and api.calls.counted == []
    written(made())
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 3)]
    assert api.calls.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    assert table.provisions_left(sig, NOW) == 2


def test_act_40_a_changes_read_dropped_before_its_turn_leaves_them_to_be_counted(
    cas: dict[int, Ca], tmp_path: Path
) -> None:
    """A read's answer made (its provisions taken) and dropped, never written: nothing is
    counted, the provisions are given back, and this node's counted mark of the party did
    not move (`Delivery.record` runs as the answer is written), so the read again from the
    same cursor delivers B and C and counts them. Before, the mark moved when the answer was
    made: the changes a party never received were then delivered uncounted."""
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(10)
    table = limits(tmp_path)
    api.api.quota = table
    sig = api.registry.parties["sig"]
    api.watch(add=[changes_ref(SC, B), changes_ref(SC, C)])
    first = api.sealed(changes_start(3))
    dropped(_made(api, first))
    assert api.ledger.counted == [] and table.provisions_left(sig, NOW) == 10
    assert api.watchset.marks == {}
    again = written(_made(api, first))
    assert len(msgspec.json.decode(bytes(again.body))["changes"]) == 2
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]
    assert table.provisions_left(sig, NOW) == 8


@pytest.mark.parametrize("order", ["in-turn", "second-first"])
def test_two_reads_made_at_once_count_a_change_once_whichever_is_written_first(
    cas: dict[int, Ca], tmp_path: Path, order: str
) -> None:
    """Two reads of one party from one cursor (two connections) both made before either is
    written: each takes B and C from the day's provisions (neither knows the other's answer
    will be written). The first written counts them and moves the mark; the other, written
    after, counts none and gives its 2 back: counted once, the bound left as one answer
    used it."""
    api = ChangesApi(changes_store(cas), tmp_path)
    api.registry = bounded(10)
    table = limits(tmp_path)
    api.api.quota = table
    sig = api.registry.parties["sig"]
    api.watch(add=[changes_ref(SC, B), changes_ref(SC, C)])
    first = api.sealed(changes_start(3))
    one, two = _made(api, first), _made(api, first)
    assert table.provisions_left(sig, NOW) == 6
    for answer in (one, two) if order == "in-turn" else (two, one):
        written(answer)
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2)]
    assert table.provisions_left(sig, NOW) == 8
    # and a read again from that cursor delivers them, counted already
    written(_made(api, first))
    assert sum(n for *_k, n in api.ledger.counted) == 2
    assert table.provisions_left(sig, NOW) == 8
