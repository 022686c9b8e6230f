"""A group appliance's POST /v1/record-info: 特定署名用電子証明書記録情報 asked of the 機構 for a member.

A member (署名確認者) may ask its group for the 特定署名用電子証明書記録情報 of a holder whose
signature certificate it saw lose effect (Act §21(4)); the group must ask the 機構 for
it (§20(4)) and pass what the 機構 provides on to that member (§20(5)), using it for
nothing else (§52(7)); it may refuse in the cases of §18(7)'s items (§20(6)). On a
group appliance (``[group] file``) this is the one /v1 route not answered from the
group's own store (those are `responder.v1.table.MEMBER_ROUTES`; any other /v1 path is
404 naming the routes served), in this order:

1. authenticate the member (`responder.access.by_transport`: bearer token, client
   certificate) before the body is read: none is 401 (Act §17(1));
2. decode the body strictly as the 機構's own request (`responder.v1.recordinfo.
   RecordInfoRequest`: one certificate, by issuer + serial or by the certificate itself;
   400 naming the field), and find the certificate's issuer among the group's
   (`responder.v1.certref.resolve`, the group's store);
3. `responder.policy.decide_member` (service ``sign-record-info``, method ``json``):
   only this group's members, signature certificates only, the group's agreement
   including the service, the member not refused under ``Act §20(6)(N)``: else 403
   citing the article;
4. ask the 機構's ``POST /v1/record-info`` (``group.json``'s authority) with the
   group's own bearer token and the member's request body, byte for byte: the 機構
   learns the group's identity and the certificate asked about, nothing of the member;
   in a thread of the worker's pool, so the event loop never waits for the 機構;
5. pass the 機構's answer on unchanged (status, body, ``JWS-Signature``: the 機構's
   detached signature over those exact bytes, so the member verifies it with the 機構's
   ``/v1/keys``), to that member only (``Cache-Control: no-store``). A 機構 that does
   not answer is 503 ``unavailable`` with Retry-After; nothing is counted.

The group's ledger (帳簿) counts one ``sign-record-info`` / ``json`` provision for the
member when the 機構's answer provides a record (``result`` ``provided``, as the 機構
counts it); every relay is logged (``record_info_relay``: member, HTTP status, result;
never the certificate, never the facts). The body is parsed only for ``result``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Final, Protocol

import msgspec

from crlbuilder.group.setup import GroupSetup
from crlbuilder.store.reader import ReadSource
from responder import access, policy
from responder.http import Request, Response
from responder.outcome import Outcome
from responder.registry.lookup import Registry
from responder.registry.vocabulary import Method, Service
from responder.structs import FrozenNoGc
from responder.v1 import problem
from responder.v1.certref import IssuerIndex, resolve
from responder.v1.recordinfo import RecordInfoRequest
from responder.v1.wire import Problem

__all__ = ["PATH", "RecordInfoRelay"]

PATH: Final = b"/v1/record-info"
_JSON: Final = b"application/json"
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_ENDPOINT: Final = "v1-record-info"
_RELAYED_HEADERS: Final = ("jws-signature", "retry-after")
"""The 機構's answer headers passed on besides its body and content type."""
_MAX_ANSWER: Final = 1 << 20
_log: Final = logging.getLogger("responder.relay")

_UPSTREAM: Final = problem.make(
    503,
    problem.UNAVAILABLE,
    "the 機構 did not answer the group's request; ask again later (Act §20(4))",
)


class Counter(Protocol):
    def count(self, party: str, service: Service, method: Method, n: int = 1) -> None: ...


class _Result(msgspec.Struct):
    result: str = ""


class RecordInfoRelay:
    """One worker's relay (module docstring): the group, its store, its ledger, a thread pool."""

    def __init__(
        self,
        setup: GroupSetup,
        store: ReadSource,
        ledger: Counter,
        pool: Executor,
        *,
        served: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        """``served``: the other /v1 routes of the appliance (``POST /v1/verify`` ...), named
        by the 404 for a path it does not serve."""
        self.setup = setup
        self.store = store
        self.ledger = ledger
        self.pool = pool
        self.timeout = timeout
        self.index = IssuerIndex()
        self.url = setup.authority.rstrip("/") + PATH.decode()
        routes = ", ".join([*served, f"POST {PATH.decode()} (relayed to the 機構)"])
        self.not_here = problem.make(
            404,
            problem.NOT_FOUND,
            f"a group appliance serves its members OCSP (POST /ocsp, GET /ocsp/{{base64}}) "
            f"and {routes} only (Act §20)",
        )

    def handle(
        self, req: Request, registry: Registry, now: float
    ) -> Response | asyncio.Future[Response]:
        """The member's request, decided here; the 機構's answer, awaited in a pool thread."""
        if req.target.split(b"?", 1)[0] != PATH:
            req.note = Outcome("v1")
            return problem.response(self.not_here)
        if req.method != b"POST":
            req.note = Outcome(_ENDPOINT)
            return problem.method_not_allowed(b"POST")
        party = access.by_transport(registry, req, now)
        if party is None:
            req.note = Outcome(_ENDPOINT, rule=policy.Rule.UNAUTHENTICATED.value)
            return problem.response(problem.refused(_unauthenticated()))
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != _JSON:
            req.note = Outcome(_ENDPOINT, party=party.id)
            return problem.response(problem.UNSUPPORTED)
        try:
            asked = msgspec.json.decode(req.body, type=RecordInfoRequest)
        except msgspec.DecodeError as e:
            req.note = Outcome(_ENDPOINT, party=party.id, rule="malformed")
            return problem.response(problem.from_decode_error(e, RecordInfoRequest, req.body))
        with self.store.read() as reader:
            found = resolve(asked.certificate, "$.certificate", self.index, reader)
        if isinstance(found, Problem):
            req.note = Outcome(_ENDPOINT, party=party.id, rule="malformed")
            return problem.response(found)
        family = found.issuer.family
        verdict = policy.decide_member(
            party, self.setup.group_id, registry.parties.get(self.setup.group_id),
            service=Service.SIGN_RECORD_INFO, family=family, method=Method.JSON, now=now,
        )  # fmt: skip
        if verdict is not policy.ALLOWED:
            assert isinstance(verdict, policy.Refused)
            req.note = Outcome(
                _ENDPOINT, family=family.value, party=party.id, rule=verdict.rule.value
            )
            return problem.response(problem.refused(verdict))
        req.note = Outcome(_ENDPOINT, family=family.value, party=party.id)
        loop = asyncio.get_running_loop()
        answer = loop.run_in_executor(self.pool, self._ask, req.body)
        return asyncio.ensure_future(self._pass_on(req, party.id, answer))

    def _ask(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """The 機構's answer to the group's request (None: no answer); in a pool thread."""
        token = self.setup.path(self.setup.token_file).read_text(encoding="utf-8").strip()
        req = urllib.request.Request(  # noqa: S310 (the authority is an http(s) URL, GroupSetup)
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310
                return (
                    int(r.status),
                    {k.lower(): v for k, v in r.headers.items()},
                    r.read(_MAX_ANSWER),
                )
        except urllib.error.HTTPError as e:
            return int(e.code), {k.lower(): v for k, v in e.headers.items()}, e.read(_MAX_ANSWER)
        except (urllib.error.URLError, OSError, ValueError) as e:
            _log.warning(
                "record_info_relay_failed",
                extra={"fields": {"error": str(getattr(e, "reason", e))}},
            )
            return None

    async def _pass_on(
        self,
        req: Request,
        member: str,
        answer: asyncio.Future[tuple[int, dict[str, str], bytes] | None],
    ) -> Response:
        t0 = time.monotonic()
        got = await answer
        if got is None:
            return problem.response(_UPSTREAM, retry_after=5)
        status, headers, body = got
        result = ""
        given: _Passed | None = None
        if status == 200:
            try:
                result = msgspec.json.decode(body, type=_Result).result
            except msgspec.DecodeError:
                result = ""
            if result == "provided":  # 帳簿 (Act §40): one provision passed on (§20(5)),
                given = _Passed(self.ledger, member)  # counted as it is written
        _log.info(
            "record_info_relay",
            extra={"fields": {"party": member, "status": status, "result": result,
                              "seconds": round(time.monotonic() - t0, 3)}},
        )  # fmt: skip
        ctype = headers.get("content-type", "application/octet-stream").encode("latin-1")
        extra = tuple(
            (name.encode(), headers[name].encode("latin-1"))
            for name in _RELAYED_HEADERS
            if name in headers
        )
        return Response(status, body, ctype, _NO_STORE + extra, provision=given)


class _Passed(FrozenNoGc, frozen=True):
    """A record passed on to ``member`` (`responder.http.Provision`): counted in the group's
    ledger (帳簿, Act §40) as the answer is written, not when the connection went away before
    its turn (the relay takes none of the member's provisions of the day: nothing to give
    back)."""

    ledger: Counter
    member: str

    def sent(self) -> None:
        self.ledger.count(self.member, Service.SIGN_RECORD_INFO, Method.JSON, 1)

    def dropped(self) -> None:
        return None


def _unauthenticated() -> policy.Refused:
    refused = policy.decide_member(
        None, "", None, service=Service.SIGN_RECORD_INFO, family=None, method=Method.JSON, now=0
    )
    assert isinstance(refused, policy.Refused)
    return refused
