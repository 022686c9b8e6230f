"""The /v1 dispatcher's contract with route modules (`responder.v1.route`): GET routes take
their Struct from the query string, a handler's effect runs before anything is counted and
its failure counts nothing, a route serving several services counts each, the Context's
per-entry policy. In process, over a `MemoryReader`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from crlbuilder.model import Family
from crlbuilder.store.memory import MemoryReader
from responder.config import ResponderConfig
from responder.http import Request, Response
from responder.registry.vocabulary import Method, Service
from responder.v1 import problem
from responder.v1.route import Context, Reply, Route
from responder.v1.routes import V1Api
from responder.v1.wire import Problem
from tests.support.written import written
from tests.test_policy import NOW, SIG, USR, build, party_table
from tests.test_v1_status import Ledger, Quotas


class FeedQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cursor: Annotated[int, msgspec.Meta(ge=0)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class FeedAnswer(msgspec.Struct, frozen=True):
    cursor: int
    limit: int
    party: str


class EchoBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    n: int


class EchoAnswer(msgspec.Struct, frozen=True):
    n: int
    auth_refused: str | None


def feed(q: FeedQuery, ctx: Context) -> Reply[FeedAnswer] | Problem:
    return Reply(FeedAnswer(q.cursor, q.limit, ctx.party.id), ((Service.SIGN_REVOCATION_INFO, 1),))


effects: list[str] = []


def echo(b: EchoBody, ctx: Context) -> Reply[EchoAnswer] | Problem:
    if b.n < 0:
        return problem.bad_input("$.n", "must not be negative")
    refused = ctx.permit(Service.AUTH_REVOCATION_INFO, Family.AUTH_CARD)

    def effect() -> None:
        if b.n == 13:
            raise OSError("the spool is full")
        effects.append(f"wrote {b.n}")

    return Reply(
        EchoAnswer(b.n, refused.rule.value if refused else None),
        ((Service.SIGN_REVOCATION_INFO, b.n), (Service.AUTH_REVOCATION_INFO, 1)),
        effect=effect,
    )


ROUTES = (
    Route(method="GET", path="/v1/feed", name="feed", summary="", request=FeedQuery,
          response=FeedAnswer, services=(Service.SIGN_REVOCATION_INFO,), handler=feed),
    Route(method="POST", path="/v1/echo", name="echo", summary="", request=EchoBody,
          response=EchoAnswer, services=(Service.SIGN_REVOCATION_INFO,), handler=echo),
)  # fmt: skip


class Api:
    def __init__(self) -> None:
        self.ledger, self.calls = Ledger(), Ledger()
        self.registry = build(party_table("sig", {SIG}), party_table("both", {SIG, USR}))
        self.api = V1Api(
            ROUTES, ResponderConfig(), store=MemoryReader(), quota=Quotas(), ledger=self.ledger,
            calls=self.calls, signer=None,
        )  # fmt: skip

    def call(
        self, method: bytes, target: bytes, body: bytes = b"", party: str = "sig"
    ) -> tuple[Response, Any]:
        headers = {
            b"authorization": b"Bearer " + party.encode(),
            b"content-type": b"application/json",
        }
        req = Request(method, target, headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1)
        resp = written(self.api.handle(req, self.registry, NOW))
        return resp, msgspec.json.decode(bytes(resp.body))


def test_a_get_route_takes_its_struct_from_the_query() -> None:
    api = Api()
    resp, got = api.call(b"GET", b"/v1/feed?cursor=12")
    assert resp.status == 200 and got == {"cursor": 12, "limit": 10, "party": "sig"}
    resp, got = api.call(b"GET", b"/v1/feed?cursor=12&limit=5")
    assert got["limit"] == 5
    assert api.ledger.counted == [("sig", Service.SIGN_REVOCATION_INFO, Method.JSON, 1)] * 2


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (b"/v1/feed", "$"),  # cursor is required
        (b"/v1/feed?cursor=x", "$.cursor"),
        (b"/v1/feed?cursor=-1", "$.cursor"),
        (b"/v1/feed?cursor=1&cursor=2", "$.cursor"),
        (b"/v1/feed?cursor=1&colour=red", "$"),
        (b"/v1/feed?cursor=1&limit=1000", "$.limit"),
        (b"/v1/feed?%zz", "$"),
    ],
)
def test_a_bad_query_is_400_naming_the_parameter(target: bytes, field: str) -> None:
    api = Api()
    resp, got = api.call(b"GET", target)
    assert (resp.status, got["rule"], got["field"]) == (400, "bad_input", field), got
    assert api.ledger.counted == []


def test_an_effect_runs_before_counting_and_its_failure_counts_nothing() -> None:
    api = Api()
    effects.clear()
    resp, got = api.call(b"POST", b"/v1/echo", b'{"n": 3}', party="both")
    assert resp.status == 200 and effects == ["wrote 3"]
    assert got == {"n": 3, "auth_refused": None}
    # one route, two services: each counted, per unit and per call
    assert api.ledger.counted == [
        ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 3),
        ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
    ]
    assert api.calls.counted == [
        ("both", Service.SIGN_REVOCATION_INFO, Method.JSON, 1),
        ("both", Service.AUTH_REVOCATION_INFO, Method.JSON, 1),
    ]
    resp, got = api.call(b"POST", b"/v1/echo", b'{"n": 13}', party="both")
    assert (resp.status, got["rule"]) == (503, "unavailable")
    assert dict(resp.extra_headers)[b"retry-after"] == b"1"
    assert len(api.ledger.counted) == 2 and len(api.calls.counted) == 2  # nothing more
    resp, got = api.call(b"POST", b"/v1/echo", b'{"n": -1}')
    assert (resp.status, got["field"]) == (400, "$.n")
    assert effects == ["wrote 3"]


def test_the_context_permits_per_family() -> None:
    api = Api()
    _, got = api.call(b"POST", b"/v1/echo", b'{"n": 1}', party="sig")
    assert got["auth_refused"] == "unauthorized_service"  # a 署名検証者 gets no auth information
