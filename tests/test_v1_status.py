"""POST /v1/status in process: the dispatcher's order (authentication before the body, the
policy per call, quota, strict decoding) and batch 現況確認 per entry (Act §18(1), §37(1)),
over a `MemoryReader`; nothing here starts a process."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.config import GroupConfig, ResponderConfig
from responder.http import Request, Response
from responder.limits import Limit, Wait
from responder.registry.lookup import Registry
from responder.registry.party import Party
from responder.registry.vocabulary import Method, Service
from responder.signing import SigningPool
from responder.v1 import status as v1status
from responder.v1.routes import THREAD_BYTES, Done, V1Api
from responder.v1.table import MEMBER_ROUTES
from tests.support.pki import Ca, make_ca, rsa_key
from tests.support.written import written
from tests.test_policy import GRP, MEM, NOW, SIG, USR, build, party_table

SC, AC = 11, 31  # issuer indexes: sign-card-g1, auth-card-g1
GOOD, REVOKED, ERASED, ERASED_NO_TIME, ABSENT = 0x10, 0x11, 0x12, 0x13, 0x14
HOLDER = b"h" * 32
REVOKED_AT = int(NOW) - 7200


class Ledger:
    def __init__(self) -> None:
        self.counted: list[tuple[str, Service, Method, int]] = []
        self.at: list[float | None] = []
        """The instant each count was dated at (`LedgerWriter.count`'s ``at``)."""

    def count(
        self, party: str, service: Service, method: Method, n: int = 1, *, at: float | None = None
    ) -> None:
        self.counted.append((party, service, method, n))
        self.at.append(at)


class Quotas:
    def __init__(self, used_up: frozenset[str] = frozenset()) -> None:
        self.used_up = used_up

    def admit(self, party: Party, now: float) -> Wait | None:
        return Wait(Limit.DAY, 3600) if party.id in self.used_up else None

    def provisions_left(self, party: Party, now: float) -> int | None:
        return None

    def take_provisions(self, party: Party, n: int, now: float) -> Wait | float:
        return now

    def give_back_provisions(self, party: Party, n: int, now: float) -> None:
        return None


def record(state: int, family: Family, **kw: int) -> sf.StatusRecord:
    fields: dict[str, int] = {"category": 0, "reason": 0, "revoked_at": 0}
    fields.update(kw)
    return sf.StatusRecord(
        version=1, state=state, family=family.code, not_before=int(NOW) - 86400 * 300,
        not_after=int(NOW) + 86400 * 700, holder=HOLDER, **fields,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cas() -> dict[int, Ca]:
    key = rsa_key()
    return {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}


def store(cas: dict[int, Ca], *, promised: int = int(NOW) + 86400) -> MemoryReader:
    fams = {SC: Family.SIGN_CARD, AC: Family.AUTH_CARD}
    return MemoryReader(
        issuer_table=[
            sf.IssuerMeta(
                index=i,
                id=f"{fams[i].value}-g1",
                family=fams[i],
                generation=1,
                cert_der=ca.cert.public_bytes(serialization.Encoding.DER),
            )
            for i, ca in cas.items()
        ],
        crl_states={i: sf.CrlState(next_update=promised) for i in cas},
        status_records={
            sf.status_key(SC, GOOD): record(sf.STATE_GOOD, Family.SIGN_CARD),
            sf.status_key(SC, REVOKED): record(
                sf.STATE_REVOKED,
                Family.SIGN_CARD,
                revoked_at=REVOKED_AT,
                reason=Reason.KEY_COMPROMISE,
                category=Category.REQUEST.code,
            ),
            sf.status_key(SC, ERASED): record(
                sf.STATE_ERASED, Family.SIGN_CARD, revoked_at=REVOKED_AT
            ),
            sf.status_key(SC, ERASED_NO_TIME): record(sf.STATE_ERASED, Family.SIGN_CARD),
            sf.status_key(AC, GOOD): record(sf.STATE_GOOD, Family.AUTH_CARD),
        },
        commit=7,
        last_committed_at=int(NOW) - 60,
    )


def registry(**extra: dict[str, Any]) -> Registry:
    ocsp_only = party_table("ocsp-only", {SIG}, services=["sign-revocation-info"])
    ocsp_only["agreement"]["methods"] = ["ocsp"]  # 提供の具体的な方法: OCSP only
    return build(
        party_table("sig", {SIG}, **extra.get("sig", {})),
        party_table("usr", {USR}),
        party_table("both", {SIG, USR}),
        party_table("g", {GRP}),
        party_table("m-1", {MEM}),
        ocsp_only,
    )


class Api:
    def __init__(self, reader: MemoryReader, reg: Registry, quotas: Quotas | None = None) -> None:
        self.ledger = Ledger()
        self.calls = Ledger()
        self.reader = reader
        self.registry = reg
        self.api = V1Api(
            (v1status.ROUTE,), ResponderConfig(), store=reader, quota=quotas or Quotas(),
            ledger=self.ledger, calls=self.calls, signer=None,
        )  # fmt: skip
        self.last: Request | None = None

    def call(
        self, body: bytes | object, party: str | None = "sig", *, method: bytes = b"POST",
        ctype: bytes = b"application/json", path: bytes = b"/v1/status",
    ) -> tuple[Response, Any]:  # fmt: skip
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        headers = {b"content-type": ctype}
        if party is not None:
            headers[b"authorization"] = b"Bearer " + party.encode()
        req = Request(method, path, headers, raw, ("127.0.0.1", 1), None, b"1.1", True, 1)
        self.last = req
        resp = written(self.api.handle(req, self.registry, NOW))
        return resp, msgspec.json.decode(bytes(resp.body))


def entries(*refs: dict[str, str]) -> dict[str, object]:
    return {"entries": list(refs)}


def ref(index: int, serial: int) -> dict[str, str]:
    return {"issuer": {SC: "sign-card-g1", AC: "auth-card-g1"}[index], "serial": f"{serial:x}"}


def test_each_entry_gets_its_status_category_and_article(cas: dict[int, Ca]) -> None:
    api = Api(store(cas), registry())
    resp, got = api.call(
        entries(
            ref(SC, GOOD),
            ref(SC, REVOKED),
            ref(SC, ERASED),
            ref(SC, ERASED_NO_TIME),
            ref(SC, ABSENT),
        )
    )
    assert resp.status == 200, got
    assert resp.content_type == b"application/json"
    assert got["store"] == {"commit": 7, "committedAt": "2025-06-01T11:59:00Z"}
    good, revoked, erased, erased_no_time, absent = got["entries"]
    assert good == {"status": "good", "family": "sign-card"}
    assert revoked == {
        "status": "revoked", "family": "sign-card",
        "revokedAt": datetime.fromtimestamp(REVOKED_AT, UTC).isoformat().replace("+00:00", "Z"),
        "reason": "keyCompromise", "category": "request",
        "article": Category.REQUEST.articles[Family.SIGN_CARD],
    }  # fmt: skip
    # erased after its retention (Ord §70(1)(iii)): never good; no reason nor category left
    assert erased["status"] == "revoked" and "reason" not in erased and "category" not in erased
    assert erased_no_time == {"status": "unknown", "family": "sign-card"}
    assert absent == {"status": "unknown", "family": "sign-card"}
    # 帳簿 (Act §40): one provision per answered entry, method json
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 5)]
    assert api.last is not None and api.last.note is not None
    assert api.last.note.endpoint == "v1-status" and api.last.note.family == "sign-card"


def test_families_the_party_may_not_receive_are_refused_per_entry_act_18_1_37_1(
    cas: dict[int, Ca],
) -> None:
    api = Api(store(cas), registry())
    resp, got = api.call(entries(ref(SC, GOOD), ref(AC, GOOD)))
    assert resp.status == 200
    assert got["entries"][1] == {
        "status": "refused", "family": "auth-card",
        "refusal": {"rule": "unauthorized_service", "article": "Act §37(1)"},
    }  # fmt: skip
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
    api = Api(store(cas), registry())
    resp, got = api.call(entries(ref(SC, GOOD), ref(AC, GOOD)), party="both")
    assert [e["status"] for e in got["entries"]] == ["good", "good"]
    assert set(api.ledger.counted) == {
        ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1),
        ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
    }
    # per call: one call of each service it provided, in the calls' own ledger
    api.call(entries(ref(SC, GOOD), ref(SC, REVOKED), ref(AC, GOOD)), party="both")
    assert (
        api.calls.counted
        == [
            ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1),
            ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
        ]
        * 2
    )
    assert api.ledger.counted[-2:] == [
        ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 2),
        ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
    ]


@pytest.mark.parametrize(
    ("party", "status", "rule", "article"),
    [
        (None, 401, "unauthenticated", "Act §17(1), §36(1)"),
        ("stranger", 401, "unauthenticated", "Act §17(1), §36(1)"),
        ("m-1", 403, "unauthorized_service", "Act §20(1)"),  # answered by its group only
        ("ocsp-only", 403, "unauthorized_method", "Ord §31(1)"),  # agreement: OCSP only
    ],
)
def test_refused_per_call_before_the_body_is_decoded_and_nothing_counted(
    cas: dict[int, Ca], party: str | None, status: int, rule: str, article: str
) -> None:
    api = Api(store(cas), registry())
    resp, got = api.call(b"{not json", party=party)  # the body is never looked at
    assert (resp.status, got["rule"], got["article"]) == (status, rule, article)
    assert resp.content_type == b"application/problem+json"
    assert api.ledger.counted == []
    assert api.last is not None and api.last.note is not None and api.last.note.rule == rule


def test_suspended_party_is_refused_citing_the_article(cas: dict[int, Ca]) -> None:
    suspension = {
        "suspension": [
            {"article": "Act §18(6)(1)", "since": datetime(2025, 1, 1, tzinfo=UTC),
             "reason": "test"}
        ]
    }  # fmt: skip
    api = Api(store(cas), registry(sig=suspension))
    resp, got = api.call(entries(ref(SC, GOOD)))
    assert (resp.status, got["rule"], got["article"]) == (403, "suspended", "Act §18(6)(1)")
    assert api.ledger.counted == []


def test_quota_is_429_with_retry_after(cas: dict[int, Ca]) -> None:
    api = Api(store(cas), registry(), Quotas(frozenset({"sig"})))
    resp, got = api.call(entries(ref(SC, GOOD)))
    assert resp.status == 429 and got["rule"] == "quota"
    assert dict(resp.extra_headers)[b"retry-after"] == b"3600"
    assert api.ledger.counted == []


def _too_many() -> dict[str, object]:
    return entries(*[ref(SC, GOOD)] * (v1status.MAX_ENTRIES + 1))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "$"),
        (entries(ref(SC, GOOD)) | {"extra": 1}, "$"),  # unknown field
        ({"entries": []}, "$.entries"),
        (_too_many(), "$.entries"),
        (
            entries(ref(SC, GOOD), {"issuer": "sign-card-g1", "serial": "1" * 41}),
            "$.entries[1].serial",
        ),
        (entries({"issuer": "sign-card-g9", "serial": "01"}), "$.entries[0].issuer"),
        # int(x, 16) would take these; the schema's pattern does not
        (
            entries(ref(SC, GOOD), {"issuer": "sign-card-g1", "serial": "0x1f"}),
            "$.entries[1].serial",
        ),
        (entries({"issuer": "sign-card-g1", "serial": "1_0"}), "$.entries[0].serial"),
        (entries({"issuer": "sign-card-g1", "serial": " 10"}), "$.entries[0].serial"),
        # the pattern's `$` matched before a final line feed: the batch's check raised
        (
            entries(ref(SC, GOOD), {"issuer": "sign-card-g1", "serial": "10\n"}),
            "$.entries[1].serial",
        ),
        (entries({"issuer": "sign-card-g1", "serial": ""}), "$.entries[0].serial"),
        (entries({"issuer": "sign-card-g1"}), "$.entries[0]"),
        (
            entries({"issuer": "sign-card-g1", "serial": "01", "certificate": "AAAA"}),
            "$.entries[0]",
        ),
        (entries({"certificate": "not base64!"}), "$.entries[0].certificate"),
        (
            entries({"certificate": base64.b64encode(b"\x30\x03\x02\x01\x01").decode()}),
            "$.entries[0].certificate",
        ),
        (entries({"serial": "01", "issuer": "x", "colour": "red"}), "$.entries[0]"),
    ],
)
def test_bad_input_is_400_naming_the_field_nothing_counted(
    cas: dict[int, Ca], body: bytes | dict[str, object], field: str
) -> None:
    api = Api(store(cas), registry())
    resp, got = api.call(body)
    assert resp.status == 400, got
    assert got["rule"] == "bad_input" and got["field"] == field, got
    assert api.ledger.counted == []
    assert "0x" not in got["detail"] and "sign-card-g9" not in got["detail"]


def test_a_certificate_given_itself_is_found_by_its_issuer(cas: dict[int, Ca]) -> None:
    leaf = cas[SC].issue("holder", rsa_key(), serial=REVOKED)
    der = leaf.public_bytes(serialization.Encoding.DER)
    api = Api(store(cas), registry())
    resp, got = api.call(entries({"certificate": base64.b64encode(der).decode()}))
    assert resp.status == 200, got
    assert got["entries"][0]["status"] == "revoked"
    stranger = make_ca("not ours").issue("holder", rsa_key(), serial=REVOKED)
    b64 = base64.b64encode(stranger.public_bytes(serialization.Encoding.DER)).decode()
    resp, got = api.call(entries({"certificate": b64}))
    assert resp.status == 400 and got["field"] == "$.entries[0].certificate"


def test_stale_issuer_is_unavailable_never_good(cas: dict[int, Ca]) -> None:
    api = Api(store(cas, promised=int(NOW) - 1), registry())
    _resp, got = api.call(entries(ref(SC, GOOD)))
    assert got["entries"] == [
        {"status": "unavailable", "family": "sign-card",
         "refusal": {"rule": "stale", "article": "Act §18(1)"}}
    ]  # fmt: skip
    assert api.ledger.counted == []


def test_act_31_2_a_lapse_due_and_not_yet_written_is_never_answered_good(
    cas: dict[int, Ca],
) -> None:
    """DOMAIN §3, Act §31(2), §34(1)(2): once a 30-day lapse falls due the auth-card
    certificate loses effect when its record is written, and nothing answers ``good`` for it
    after the due instant, also before the builder wrote it: ``unavailable`` (rule ``stale``,
    the auth article), not counted; before the due instant, ``good``."""
    jst_day = datetime.fromtimestamp(NOW + 9 * 3600, UTC).date()
    for planned_days_ago, expected in ((31, "unavailable"), (30, "good")):
        planned = jst_day - timedelta(days=planned_days_ago)  # due at 00:00 JST of planned + 31
        reader = store(cas)
        reader.pendings[HOLDER] = sf.PendingMoveOut(
            record_id="move-out", notified_at=int(NOW) - 86400 * 60,
            planned_date=planned.isoformat(), abroad=False,
        )  # fmt: skip
        api = Api(reader, registry())
        resp, got = api.call(entries(ref(AC, GOOD)), party="usr")
        assert resp.status == 200, got
        (entry,) = got["entries"]
        assert entry["status"] == expected, (planned, entry)
        if expected == "unavailable":
            assert entry["refusal"] == {"rule": "stale", "article": "Act §37(1)"}
            assert api.ledger.counted == []
        else:
            assert api.ledger.counted == [("usr", Service.AUTH_REVOCATION_INFO, Method.JSON, 1)]


def test_media_type_and_method(cas: dict[int, Ca]) -> None:
    api = Api(store(cas), registry())
    resp, got = api.call(entries(ref(SC, GOOD)), ctype=b"text/plain")
    assert resp.status == 415 and got["field"] == "$"
    resp, got = api.call(b"", method=b"GET")
    assert resp.status == 405 and dict(resp.extra_headers)[b"allow"] == b"POST"
    resp, got = api.call(b"", path=b"/v1/nothing")
    assert resp.status == 404
    assert api.ledger.counted == []


def test_a_large_batch_is_answered_off_the_event_loop_and_fairly(cas: dict[int, Ca]) -> None:
    """A body past THREAD_BYTES goes to the batch thread (the loop serves others meanwhile);
    the ledger is counted on the loop when it is done; a party whose share of the thread
    is taken gets 429 fair_share, nothing counted."""
    big = msgspec.json.encode(entries(*[ref(SC, REVOKED)] * 2000))
    assert len(big) >= THREAD_BYTES
    api = Api(store(cas), registry())
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}

    def request() -> Request:
        return Request(
            b"POST", b"/v1/status", headers, big, ("127.0.0.1", 1), None, b"1.1", True, 1
        )

    async def run() -> list[Response]:
        got = [api.api.handle(request(), api.registry, NOW) for _ in range(3)]
        # one running, one waiting (the party's share), the third refused at once
        assert isinstance(got[2], Response) and got[2].status == 429
        assert not isinstance(got[0], Response) and not isinstance(got[1], Response)
        assert api.ledger.counted == []  # nothing counted before the work is done
        return [written(await got[0]), written(await got[1]), got[2]]

    try:
        first, second, refused = asyncio.run(run())
    finally:
        pool.close()
    assert msgspec.json.decode(bytes(refused.body))["rule"] == "fair_share"
    assert dict(refused.extra_headers)[b"retry-after"] == b"1"
    for resp in (first, second):
        assert resp.status == 200
        assert len(msgspec.json.decode(bytes(resp.body))["entries"]) == 2000
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 2000)] * 2


@pytest.mark.parametrize("how", ["reloaded-meanwhile", "set-ahead"])
def test_a_batch_made_after_its_party_was_suspended_is_refused_and_not_counted(
    cas: dict[int, Ca], how: str
) -> None:
    """A batch is provided when its answer is written (the ledger dates it then, 帳簿 Act
    §40), not when its call was decided: one decided before a suspension (提供の停止, Act
    §18(6)) and made in the batch thread after it (a reload taking the suspension while the
    thread worked; a suspension set ahead, `registry suspend --since`, whose instant came
    meanwhile) was answered and counted in full. Refused now, 403 citing the article,
    nothing counted."""
    big = msgspec.json.encode(entries(*[ref(SC, REVOKED)] * 2000))
    assert len(big) >= THREAD_BYTES
    since = NOW - 3600 if how == "reloaded-meanwhile" else NOW + 1
    suspended = registry(sig={"suspension": [
        {"article": "Act §18(6)(1)", "since": datetime.fromtimestamp(since, UTC),
         "reason": "test"}
    ]})  # fmt: skip
    api = Api(store(cas), registry() if how == "reloaded-meanwhile" else suspended)
    pool: SigningPool[Done] = SigningPool(1, 1)
    api.api.pool = pool
    if how == "set-ahead":
        api.api.clock = lambda: NOW + 2  # the batch thread took two seconds
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer sig"}
    req = Request(b"POST", b"/v1/status", headers, big, ("127.0.0.1", 1), None, b"1.1", True, 1)

    async def run() -> Response:
        got = api.api.handle(req, api.registry, NOW)
        assert not isinstance(got, Response)  # decided (allowed), in the batch thread
        if how == "reloaded-meanwhile":
            api.api.current = lambda: suspended  # the app's registry, swapped by its reload
        return written(await got)

    try:
        resp = asyncio.run(run())
    finally:
        pool.close()
    got = msgspec.json.decode(bytes(resp.body))
    assert (resp.status, got["rule"], got["article"]) == (403, "suspended", "Act §18(6)(1)")
    assert api.ledger.counted == [] and api.calls.counted == []
    assert req.note is not None and req.note.rule == "suspended"


@pytest.mark.parametrize("unlisted", ["good", "unknown"])
def test_a_group_appliance_answers_its_members_status_act_20_1_21_3(
    cas: dict[int, Ca], unlisted: Literal["good", "unknown"]
) -> None:
    """POST /v1/status on a group appliance (its member routes, `policy.decide_member`): its
    own member gets the status of signature certificates from the group's CRL-fed store, a
    serial on no CRL as the group's OCSP answers it (``[group] unlisted``), counted in the
    group's ledger per answered entry like its OCSP answers; an auth certificate is refused
    per entry (a group answers about signature certificates only), anyone else per call."""
    reader = store(cas)
    reader.imported = True  # a group appliance's store, from the 機構's CRLs
    reader.crl_states = {  # each issuer's CRL imported (one never imported is unavailable)
        i: sf.CrlState(this_update=int(NOW) - 3600, next_update=int(NOW) + 86400) for i in cas
    }
    api = Api(reader, registry())
    api.api = V1Api(
        MEMBER_ROUTES, ResponderConfig(group=GroupConfig(unlisted=unlisted)), store=reader,
        quota=Quotas(), ledger=api.ledger, calls=api.calls, signer=None, group_id="g",
    )  # fmt: skip
    body = entries(ref(SC, GOOD), ref(SC, REVOKED), ref(SC, ABSENT), ref(AC, GOOD))
    resp, got = api.call(body, party="m-1")
    assert resp.status == 200, got
    assert [e["status"] for e in got["entries"]] == ["good", "revoked", unlisted, "refused"]
    assert got["entries"][3]["refusal"] == {"rule": "unauthorized_service", "article": "Act §20(1)"}
    assert api.ledger.counted == [("m-1", Service.SIGN_REVOCATION_INFO, Method.JSON, 3)]
    for outsider in ("sig", "g"):  # a 署名検証者 of the 機構; the group's own entry
        resp, got = api.call(body, party=outsider)
        assert (resp.status, got["article"]) == (403, "Act §20(1)"), got
    assert api.ledger.counted == [("m-1", Service.SIGN_REVOCATION_INFO, Method.JSON, 3)]


TOKEN = 51  # verifier-token-g1: the 特定利用者証明検証者証明符号 issuer (Act §38-3)


def with_token_issuer(reader: MemoryReader, ca: Ca) -> MemoryReader:
    """``reader`` with the token issuer, a good token (GOOD), a revoked one (REVOKED)."""
    reader.issuer_table.append(
        sf.IssuerMeta(
            index=TOKEN, id="verifier-token-g1", family=Family.SPECIFIED_VERIFIER_TOKEN,
            generation=1, cert_der=ca.cert.public_bytes(serialization.Encoding.DER),
        )
    )  # fmt: skip
    reader.crl_states[TOKEN] = sf.CrlState(next_update=int(NOW) + 86400)
    tok = Family.SPECIFIED_VERIFIER_TOKEN
    reader.status_records[sf.status_key(TOKEN, GOOD)] = record(sf.STATE_GOOD, tok)
    reader.status_records[sf.status_key(TOKEN, REVOKED)] = record(
        sf.STATE_REVOKED, tok, revoked_at=REVOKED_AT, reason=Reason.PRIVILEGE_WITHDRAWN,
        category=Category.APPROVAL_WITHDRAWN.code,
    )  # fmt: skip
    reader.changed()
    return reader


def token_ref(serial: int) -> dict[str, str]:
    return {"issuer": "verifier-token-g1", "serial": f"{serial:x}"}


def test_a_token_s_status_is_answered_as_ocsp_answers_it_not_counted(cas: dict[int, Ca]) -> None:
    """A 特定利用者証明検証者証明符号 (Act §38-3) is answered by /v1/status as by /ocsp
    (`responder.policy.decide_token_status`): to a party whose agreement names other families
    only, by issuer and serial or by the certificate itself, and not counted (no 失効情報 of
    Act §18(1) or §37(1)); the sign entry beside it is counted as ever."""
    ca = make_ca("verifier-token-g1 CA", rsa_key())
    api = Api(with_token_issuer(store(cas), ca), registry())
    leaf = ca.issue("spec", rsa_key(), serial=REVOKED)
    b64 = base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
    body = entries(
        token_ref(GOOD), token_ref(REVOKED), token_ref(ABSENT), {"certificate": b64},
        ref(SC, GOOD),
    )  # fmt: skip
    for party in ("sig", "usr"):  # sign families only; auth families only
        api.ledger.counted.clear()
        resp, got = api.call(body, party=party)
        assert resp.status == 200, got
        good, revoked, absent, by_cert, sign = got["entries"]
        assert good == {"status": "good", "family": "verifier-token"}
        assert revoked == by_cert == {
            "status": "revoked", "family": "verifier-token",
            "revokedAt": datetime.fromtimestamp(REVOKED_AT, UTC).isoformat().replace("+00:00", "Z"),
            "reason": "privilegeWithdrawn", "category": "approval-withdrawn",
            "article": Category.APPROVAL_WITHDRAWN.articles[Family.SPECIFIED_VERIFIER_TOKEN],
        }  # fmt: skip
        assert absent == {"status": "unknown", "family": "verifier-token"}
        if party == "sig":
            assert sign["status"] == "good"
            assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
        else:
            assert sign["status"] == "refused" and api.ledger.counted == []
    # stale like any issuer: unavailable, never good
    api.reader.crl_states[TOKEN] = sf.CrlState(next_update=int(NOW) - 1)
    api.reader.changed()
    _resp, got = api.call(entries(token_ref(GOOD)))
    assert got["entries"][0]["status"] == "unavailable"


def test_a_group_appliance_answers_a_token_it_does_not_hold_unknown(cas: dict[int, Ca]) -> None:
    """A group appliance imports the Act's families' CRLs only: a token it does not hold is
    ``unknown`` there, never ``[group] unlisted = "good"``, as its OCSP answers."""
    reader = with_token_issuer(store(cas), make_ca("verifier-token-g1 CA", rsa_key()))
    reader.imported = True
    reader.crl_states = {
        i: sf.CrlState(this_update=int(NOW) - 3600, next_update=int(NOW) + 86400)
        for i in (*cas, TOKEN)
    }
    api = Api(reader, registry())
    api.api = V1Api(
        MEMBER_ROUTES, ResponderConfig(group=GroupConfig(unlisted="good")), store=reader,
        quota=Quotas(), ledger=api.ledger, calls=api.calls, signer=None, group_id="g",
    )  # fmt: skip
    resp, got = api.call(entries(token_ref(ABSENT), ref(SC, ABSENT)), party="m-1")
    assert resp.status == 200, got
    assert [e["status"] for e in got["entries"]] == ["unknown", "good"]
    assert api.ledger.counted == [("m-1", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)]
