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
2. `responder.policy.decide_member` for the service (``sign-record-info``, method
   ``json``, any sign family; `responder.v1.routes.gate`) before anything of the body is
   read or looked up: only this group's members, the group's agreement including the
   service, neither the member (``Act §20(6)(N)``) nor the group (``Act §18(7)(N)``)
   suspended: else 403 citing the article;
3. decode the body strictly as the 機構's own request (`responder.v1.recordinfo.
   RecordInfoRequest`: one certificate, by issuer + serial or by the certificate itself;
   400 naming the field), find the certificate's issuer among the group's
   (`responder.v1.certref.resolve`, the group's store), and decide again with its family:
   signature certificates only, of a family the group's agreement includes (403);
4. the bounds (`Bounds`): the group's own agreed quotas with the 機構 (requests per
   second and per day, provisions per day: its entry in its own registry, the same
   numbers the 機構 holds it to) and each member's share of them, ceil(quota / members in
   force), so that one member cannot use up what the group may ask of the 機構 (and with
   it the group's CRL downloads, counted in the same quota there): 429 ``quota`` naming
   which, nothing sent; and at most `PER_MEMBER` requests of one member in flight in this
   worker (429 ``fair_share``), the worker's `THREADS` threads served round-robin among
   the members (`responder.signing.SigningPool`), so one member's flood neither waits in
   front of another member's request nor touches OCSP (its own signing threads);
5. ask the 機構's ``POST /v1/record-info`` (``group.json``'s authority) with the
   group's own bearer token and a request the group writes itself from what it
   resolved, ``{"certificate": {"issuer": ID, "serial": "HEX"}}``: the 機構 learns the
   group's identity and the certificate asked about, nothing of the member (not its
   credential, not the way its request was written, not the certificate's bytes);
   in a thread of the relay's pool (`responder.relayclient.ask`: one deadline for the
   whole exchange, a bounded answer, no redirect followed, the token over https or to
   loopback only);
6. `judge` the 機構's answer: a 200 ``application/json`` record-info answer carrying its
   ``JWS-Signature``, which verifies with one of the 機構's answer keys the group pinned
   (``group.json``'s ``answer_keys``, fetched from the 機構's ``/v1/keys`` by ``crlbuilder
   group init``, renewed by ``crlbuilder group keys``: `crlbuilder.group.answerkeys`; a
   detached RS256 JWS over the body's exact bytes, RFC 7515 appendix F), a 4xx problem about the request (400, 403, 404, 409, 429 ...) and a
   503 (with its Retry-After) are passed on unchanged (status, body, ``JWS-Signature``:
   the 機構's detached signature over those exact bytes, so the member verifies it with
   the 機構's ``/v1/keys``), to that member only (``Cache-Control: no-store``). Anything
   else is the group's own problem, never the 機構's bytes: 504 ``gateway_timeout`` when
   no answer came within `TIMEOUT` seconds, 502 ``bad_gateway`` for a 機構 that cannot
   be reached, answers a redirect, refuses the group's credential (401: the member's is
   fine), fails (another 5xx), answers more than `MAX_ANSWER` bytes, or not HTTP, or a
   200 that is not a signed record-info answer, or whose signature does not verify with a
   pinned key (none pinned: none verifies; ``record_info_relay_unpinned`` is logged at
   start). The member is decided again when the
   answer arrives (the registry in force then): one stopped or ended meanwhile gets the
   403 of its refusal, not the answer.

The group's ledger (帳簿) counts one ``sign-record-info`` / ``json`` provision for the
member when the 機構's answer provides a record (``result`` ``provided``, as the 機構
counts it), as that answer is written to the member (`responder.http.Provision`); an answer
that provides none, one whose connection went away before its turn, a refusal and a failed
relay count nothing and give back the provisions taken in step 4. Every relay is logged (``record_info_relay``:
member, the status sent, the 機構's status or why none, result, seconds; never the
certificate, never the facts). The answer is held in memory only while it is sent;
nothing of it is written anywhere (Act §52(7)).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import msgspec
from joserfc.jwk import RSAKey

from crlbuilder.group import answerkeys
from crlbuilder.group.setup import GroupSetup
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.reader import ReadSource
from crlbuilder.tokenfile import TokenFileError, read_token_file
from responder import access, policy
from responder.http import Request, Response
from responder.limits import Wait
from responder.outcome import Outcome
from responder.registry.lookup import Registry
from responder.registry.party import Party
from responder.registry.vocabulary import Method, Service, Title
from responder.relayclient import Failed, Upstream, ask, token_url_refusal
from responder.signing import SigningPool
from responder.structs import FrozenNoGc
from responder.v1 import problem
from responder.v1.certref import IssuerIndex, resolve
from responder.v1.recordinfo import ROUTE as KIKOU_ROUTE
from responder.v1.recordinfo import RecordInfoRequest, Result
from responder.v1.routes import gate
from responder.v1.wire import CertRef, Problem

__all__ = ["PATH", "RecordInfoRelay", "judge"]

PATH: Final = b"/v1/record-info"
THREADS: Final = 4
"""Threads per worker asking the 機構 (each holds one request for at most `TIMEOUT`)."""
PER_MEMBER: Final = 2
"""Requests of one member in flight in one worker (waiting or asked), at most."""
TIMEOUT: Final = 10.0
"""Seconds for the whole exchange with the 機構 (connect to the answer's last byte)."""
MAX_ANSWER: Final = 1 << 20
"""Bytes of the 機構's answer accepted (a record-info answer is about 1 KiB)."""
RETRY_AFTER: Final = 5
_JSON: Final = b"application/json"
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_ENDPOINT: Final = "v1-record-info"
_RELAYED_HEADERS: Final = ("jws-signature", "retry-after")
"""The 機構's answer headers passed on besides its body and content type."""
_RESULTS: Final = frozenset(r.value for r in Result)
FAIR_SHARE: Final = "fair_share"
BAD_GATEWAY: Final = "bad_gateway"
GATEWAY_TIMEOUT: Final = "gateway_timeout"
_log: Final = logging.getLogger("responder.relay")


class Counter(Protocol):
    """The worker's ledger (`responder.ledger.LedgerWriter`)."""

    def count(
        self, party: str, service: Service, method: Method, n: int = 1, *, at: float | None = None
    ) -> None: ...


class Quota(Protocol):
    """The agreed quotas across the workers (`responder.limits.LimitsTable`)."""

    def admit(self, party: Party, now: float, *, record: bool = True) -> Wait | None: ...

    def take_provisions(self, party: Party, n: int, now: float) -> Wait | float: ...

    def give_back_provisions(self, party: Party, n: int, now: float) -> None: ...

    def carry_provisions(
        self, party: Party, n: int, taken_at: float, now: float
    ) -> Wait | float: ...


class _Result(msgspec.Struct):
    result: str = ""


def _bad_gateway(detail: str) -> Problem:
    return problem.make(502, BAD_GATEWAY, f"{detail} (Act §20(4)); nothing was counted")


_FAILED: Final[dict[Failed, tuple[Problem, int | None]]] = {
    Failed.TIMEOUT: (
        problem.make(
            504,
            GATEWAY_TIMEOUT,
            f"the 機構 did not answer the group's request within {TIMEOUT:g} s (Act §20(4)); "
            "nothing was counted, ask again later",
        ),
        RETRY_AFTER,
    ),
    Failed.UNREACHABLE: (_bad_gateway("the 機構 could not be reached"), RETRY_AFTER),
    Failed.MALFORMED: (_bad_gateway("the 機構's answer was not well-formed HTTP"), RETRY_AFTER),
    Failed.TOO_LARGE: (
        _bad_gateway(f"the 機構's answer was longer than the {MAX_ANSWER} bytes accepted"),
        None,
    ),
    Failed.INSECURE: (
        _bad_gateway("the group's setup names a 機構 URL its token may not be sent to"),
        None,
    ),
}


def judge(got: Upstream | Failed, keys: Mapping[str, RSAKey]) -> tuple[Response, str]:
    """The member's answer to what the 機構 answered (module docstring, step 6), and the
    ``result`` of a record-info answer passed on (empty otherwise); a 200 is passed on only
    when its ``JWS-Signature`` verifies with one of ``keys`` (the 機構's answer keys the
    group pinned, `crlbuilder.group.answerkeys`). Pure."""
    if isinstance(got, Failed):
        prob, retry = _FAILED[got]
        return problem.response(prob, retry_after=retry), ""
    status, headers, body = got
    ctype = headers.get("content-type", "")
    if status == 200:
        result = ""
        if ctype.split(";", 1)[0].strip().lower() == "application/json":
            try:
                result = msgspec.json.decode(body, type=_Result).result
            except msgspec.DecodeError:
                result = ""
        signature = headers.get("jws-signature", "")
        if result not in _RESULTS or not signature:
            why = "the 機構's answer was not a signed record-info answer"
            return problem.response(_bad_gateway(why)), ""
        unverified = answerkeys.verify(signature, body, keys)
        if unverified is not None:  # not the 機構's answer as it signed it: never passed on
            why = f"the 機構's answer failed the group's check of its signature: {unverified}"
            return problem.response(_bad_gateway(why)), ""
        return _passed_on(got), result
    if 300 <= status < 400:
        why = f"the 機構 answered a redirect (HTTP {status}), which is not followed"
        return problem.response(_bad_gateway(why)), ""
    if status == 401:
        why = "the 機構 did not accept the group's own credential (HTTP 401; the member's is fine)"
        return problem.response(_bad_gateway(why)), ""
    if (400 <= status < 500 and status != 407) or status == 503:
        return _passed_on(got), ""
    why = f"the 機構 failed to answer the group's request (HTTP {status})"
    return problem.response(_bad_gateway(why), retry_after=RETRY_AFTER), ""


def _passed_on(got: Upstream) -> Response:
    """The 機構's answer, unchanged: its status, body, content type, signature, Retry-After."""
    ctype = got.headers.get("content-type", "application/octet-stream").encode("latin-1")
    extra = tuple(
        (name.encode(), got.headers[name].encode("latin-1"))
        for name in _RELAYED_HEADERS
        if name in got.headers
    )
    return Response(got.status, got.body, ctype, _NO_STORE + extra)


def share(quota: int | None, members: int) -> int | None:
    """One member's share of a group's quota: ceil(quota / members in force), at least 1."""
    if quota is None:
        return None
    return max(1, math.ceil(quota / max(1, members)))


def members_in_force(registry: Registry, group_id: str, now: float) -> int:
    """The group's members (署名確認者) whose provision has started and not ended."""
    return sum(
        1
        for p in registry.parties.values()
        if Title.SIGNATURE_CONFIRMER in p.titles and p.group == group_id and p.start <= now < p.end
    )


class Bounds:
    """Who a relayed request is counted against in the quota table: the group itself (its
    agreement with the 機構) and the member's share of it (key ``<member>/relay``)."""

    def __init__(self, group: Party, member: Party, members: int) -> None:
        self.group = group
        self.member = msgspec.structs.replace(
            member,
            id=f"{member.id}/relay",
            requests_per_second=share(group.requests_per_second, members),
            requests_per_day=share(group.requests_per_day, members),
            provisions_per_day=share(group.provisions_per_day, members),
        )
        self.taken: list[tuple[Party, float]] = []
        """The provisions taken, with the instant each was taken for (`take`, `carry`)."""

    def take(self, quota: Quota, now: float) -> tuple[str, Wait] | None:
        """Count the request and take its one provision (given back unless provided), the
        member's share first, then the group's, all or none; else whose bound refused. Each
        is kept with the instant the quota table dated it at (`taken`): ``now``, or 00:00 JST
        of the later day a row was on (a clock stepped back across midnight)."""
        both = (("member", self.member), ("group", self.group))
        for who, party in both:  # neither counted unless both admit it
            wait = quota.admit(party, now, record=False)
            if wait is not None:
                return who, wait
        for who, party in both:
            wait = quota.admit(party, now)
            if wait is not None:  # another worker took the last one meanwhile
                return who, wait
        for who, party in both:
            got = quota.take_provisions(party, 1, now)
            if isinstance(got, Wait):
                self.give_back(quota)
                return who, got
            self.taken.append((party, got))
        return None

    @property
    def at(self) -> float:
        """The instant the ledger dates the provision at: the latest of those it was taken at."""
        return max(at for _, at in self.taken)

    def give_back(self, quota: Quota) -> None:
        """The provisions taken (`take`, `carry`) given back, each to the day it was taken from."""
        for party, at in self.taken:
            quota.give_back_provisions(party, 1, at)
        self.taken = []

    def carry(self, quota: Quota, now: float) -> tuple[str, Wait] | None:
        """The provision taken (`take`) for a record provided at ``now`` (the 機構's answer
        passed on): moved to ``now``'s Japan day when the day turned while the 機構 answered,
        the member's share and the group's, all or none
        (`responder.limits.LimitsTable.carry_provisions`), so that the bound takes it from the
        day the ledger dates it (提供を行った年月日, Ord §71(3)), `at` then. Else whose bound
        has none left that day, nothing taken on either day."""
        moved: list[tuple[Party, float]] = []
        for i, (party, taken_at) in enumerate(self.taken):
            got = quota.carry_provisions(party, 1, taken_at, now)
            if isinstance(got, Wait):  # this one's given back; the others', on their day
                self.taken = moved + self.taken[i + 1 :]
                self.give_back(quota)
                return ("member" if party is self.member else "group"), got
            moved.append((party, got))
        self.taken = moved
        return None


class _Claim:
    """One request's place among its member's `PER_MEMBER`: given back once, by the thread
    when it asked the 機構 (a request abandoned meanwhile keeps the place until the thread
    is done, so a member cannot hold every thread by hanging up), or by the request when
    no thread ever took it."""

    __slots__ = ("lock", "loop", "member", "state")

    def __init__(self, member: str, loop: asyncio.AbstractEventLoop) -> None:
        self.member = member
        self.loop = loop
        self.lock = threading.Lock()
        self.state = "waiting"  # -> "asking" (a thread took it) or "abandoned" (none will)

    def start(self) -> bool:
        """In the thread: False when the request was abandoned before (nothing to ask)."""
        with self.lock:
            if self.state == "abandoned":
                return False
            self.state = "asking"
            return True

    def abandon(self) -> bool:
        """On the event loop: True when no thread took it (the caller gives the place back)."""
        with self.lock:
            if self.state == "waiting":
                self.state = "abandoned"
                return True
            return False


ROUTE: Final = dataclasses.replace(
    KIKOU_ROUTE,
    summary="特定署名用電子証明書記録情報 of a member's certificate, asked of the 機構 and "
    "passed on (Act §20(4),(5), §21(4))",
    description=__doc__ or "",
    signer="the 機構's answer-signing key (the 機構's GET /v1/keys; the group passes its "
    "answer and signature on unchanged)",
    problems=(
        *KIKOU_ROUTE.problems,
        (502, "`bad_gateway`: the 機構 could not be reached or its answer was not one the "
        "group can pass on (unsigned, a signature no pinned key verifies); nothing counted."),
        (504, "`gateway_timeout`: the 機構 did not answer in time; nothing counted, ask again."),
    ),
)  # fmt: skip
"""``POST /v1/record-info`` on a group appliance, as its OpenAPI document describes it (the
group answers it by `RecordInfoRelay`, not by the route's handler): the 機構's route,
passed on, and the relay's own failures."""


class RecordInfoRelay:
    """One worker's relay (module docstring): the group, its store, its ledger, its quotas."""

    def __init__(
        self,
        setup: GroupSetup,
        store: ReadSource,
        ledger: Counter,
        quota: Quota,
        *,
        served: Sequence[str] = (),
        threads: int = THREADS,
        per_member: int = PER_MEMBER,
        timeout: float = TIMEOUT,
        current: Callable[[], Registry] | None = None,
        clock: Callable[[], float] = time.time,
        keys: answerkeys.PinnedKeys | None = None,
    ) -> None:
        """``served``: the other /v1 routes of the appliance (``POST /v1/verify`` ...), named
        by the 404 for a path it does not serve. ``current``: the registry in force now (the
        app's, which its watch replaces), read again when the 機構's answer arrives, at
        ``clock``'s instant; None: not read again (tests)."""
        self.setup = setup
        self.store = store
        self.ledger = ledger
        self.quota = quota
        self.timeout = timeout
        self.per_member = per_member
        self.current = current
        self.clock = clock
        self.pool: SigningPool[Upstream | Failed] = SigningPool(threads, per_member)
        self.in_flight: dict[str, int] = {}
        """Requests per member in flight in this worker (`PER_MEMBER`), on the event loop."""
        self.index = IssuerIndex()
        self.keys = keys or answerkeys.PinnedKeys(
            setup.path(setup.answer_keys) if setup.answer_keys else None
        )
        """The 機構's answer keys the group pinned (``group.json``'s ``answer_keys``), read
        again when ``crlbuilder group keys`` rewrites them."""
        if not self.keys.keys():
            _log.error("record_info_relay_unpinned", extra={"fields": {"error": self.keys.problem}})
        self.url = setup.authority.rstrip("/") + PATH.decode()
        self.tls = ssl.create_default_context() if self.url.startswith("https:") else None
        """The TLS context of every request to the 機構, made once: loading the system's CA
        bundle takes tens of milliseconds, much of it holding the GIL, which made per request
        stalled this worker's event loop (its OCSP answers too) at each record-info asked."""
        refusal = token_url_refusal(self.url)
        if refusal is not None:
            _log.error("record_info_relay_insecure", extra={"fields": {"error": refusal}})
        self._members: tuple[int, int, int] = (0, -1, 0)
        """(id of the registry, minute, members in force) of the last count."""
        routes = ", ".join([*served, f"POST {PATH.decode()} (relayed to the 機構)"])
        self.not_here = problem.make(
            404,
            problem.NOT_FOUND,
            f"a group appliance serves its members OCSP (POST /ocsp, GET /ocsp/{{base64}}) "
            f"and {routes} only (Act §20)",
        )

    def close(self) -> None:
        self.pool.close()

    def members(self, registry: Registry, now: float) -> int:
        """`members_in_force`, counted again for a new registry or each minute."""
        key = (id(registry), int(now) // 60)
        if self._members[:2] != key:
            self._members = (*key, members_in_force(registry, self.setup.group_id, now))
        return self._members[2]

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
        group = registry.parties.get(self.setup.group_id)
        decide = functools.partial(policy.decide_member, group_id=self.setup.group_id, group=group)
        if party is None:
            req.note = Outcome(_ENDPOINT, rule=policy.Rule.UNAUTHENTICATED.value)
            return problem.response(problem.refused(_unauthenticated()))
        refusal = gate(party, (Service.SIGN_RECORD_INFO,), now, decide)
        if refusal is not None:  # nothing of the body read, nothing looked up
            req.note = Outcome(_ENDPOINT, party=party.id, rule=refusal.rule.value)
            return problem.response(problem.refused(refusal))
        assert group is not None  # decide_member refuses a group missing from its registry
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
        verdict = decide(
            party, service=Service.SIGN_RECORD_INFO, family=family, method=Method.JSON, now=now
        )
        if verdict is not policy.ALLOWED:
            assert isinstance(verdict, policy.Refused)
            req.note = Outcome(
                _ENDPOINT, family=family.value, party=party.id, rule=verdict.rule.value
            )
            return problem.response(problem.refused(verdict))
        note = functools.partial(Outcome, _ENDPOINT, family=family.value, party=party.id)
        if self.in_flight.get(party.id, 0) >= self.per_member:
            req.note = note(rule=FAIR_SHARE)
            return problem.response(_FAIR_SHARE_PROBLEM, retry_after=1)
        bounds = Bounds(group, party, self.members(registry, now))
        limited = bounds.take(self.quota, now)
        if limited is not None:
            req.note = note(rule=policy.Rule.QUOTA.value)
            who, wait = limited
            return problem.response(
                problem.quota(_quota_refusal(who, wait), wait, now), retry_after=wait.retry_after
            )
        # what the 機構 is sent: written here from what was resolved, never the member's bytes
        _, serial = sf.split_status_key(found.key)
        body = msgspec.json.encode(
            RecordInfoRequest(certificate=CertRef(issuer=found.issuer.id, serial=f"{serial:X}"))
        )
        claim = _Claim(party.id, asyncio.get_running_loop())
        answer = self.pool.submit(party.id, functools.partial(self._ask, claim, body))
        if answer is None:  # the pool is closing
            bounds.give_back(self.quota)
            req.note = note(rule=FAIR_SHARE)
            return problem.response(_FAIR_SHARE_PROBLEM, retry_after=1)
        self.in_flight[party.id] = self.in_flight.get(party.id, 0) + 1
        req.note = note()
        return asyncio.ensure_future(self._pass_on(party.id, family, answer, claim, bounds))

    def _ask(self, claim: _Claim, body: bytes) -> Upstream | Failed:
        """In a pool thread: the 機構's answer to the group's request, or why none."""
        if not claim.start():
            return Failed.UNREACHABLE  # abandoned before its turn: nothing sent, nobody waits
        try:
            try:
                token = read_token_file(self.setup.path(self.setup.token_file))
            except TokenFileError as e:  # its path and why, never its bytes
                _log.error("record_info_relay_no_token", extra={"fields": {"error": str(e)}})
                return Failed.UNREACHABLE
            return ask(
                self.url, body, token, timeout=self.timeout, limit=MAX_ANSWER, context=self.tls
            )
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: the worker is exiting
                claim.loop.call_soon_threadsafe(self._release, claim.member)

    def still_allowed(self, member: str, family: Family) -> policy.Refused | None:
        """The refusal of ``member`` by the registry in force now (`current`), if any: a
        stop (Act §20(6), §18(7)) or an end recorded while the 機構 answered takes effect on
        the answer too, which is then not passed on (§20(6): the group may withhold it)."""
        if self.current is None:
            return None
        registry = self.current()
        verdict = policy.decide_member(
            registry.parties.get(member), self.setup.group_id,
            registry.parties.get(self.setup.group_id), service=Service.SIGN_RECORD_INFO,
            family=family, method=Method.JSON, now=self.clock(),
        )  # fmt: skip
        return verdict if isinstance(verdict, policy.Refused) else None

    def _release(self, member: str) -> None:
        n = self.in_flight.get(member, 0) - 1
        if n > 0:
            self.in_flight[member] = n
        else:
            self.in_flight.pop(member, None)

    async def _pass_on(
        self,
        member: str,
        family: Family,
        answer: asyncio.Future[Upstream | Failed],
        claim: _Claim,
        bounds: Bounds,
    ) -> Response:
        t0 = time.monotonic()
        try:
            got = await answer
        except BaseException:  # abandoned (the connection went away) or the pool closed
            bounds.give_back(self.quota)
            if claim.abandon():
                self._release(member)
            raise
        resp, result = judge(got, self.keys.keys())
        stopped = self.still_allowed(member, family)
        if stopped is not None:  # suspended or ended while the 機構 answered: not passed on
            resp, result = problem.response(problem.refused(stopped)), ""
        if result == Result.PROVIDED.value:  # 帳簿 (Act §40): one provision passed on
            # (§20(5)), counted as it is written to the member; given back if it never is.
            # Provided now, not when asked: an answer that came after 00:00 JST is taken
            # from, and dated in, the new day (none left there: refused, as OCSP's tryLater)
            provided = max(self.clock(), bounds.at)
            refused = bounds.carry(self.quota, provided)
            if refused is not None:
                who, wait = refused
                resp, result = (
                    problem.response(
                        problem.quota(_quota_refusal(who, wait), wait, provided),
                        retry_after=wait.retry_after,
                    ),
                    "",
                )
            else:
                resp = msgspec.structs.replace(
                    resp, provision=_Passed(self.ledger, member, bounds, self.quota)
                )
        else:  # nothing provided: the provisions taken for it are given back
            bounds.give_back(self.quota)
        _log.info(
            "record_info_relay",
            extra={"fields": {
                "party": member, "status": resp.status,
                "upstream": got.value if isinstance(got, Failed) else got.status,
                "result": result, "seconds": round(time.monotonic() - t0, 3),
            }},
        )  # fmt: skip
        return resp  # a 502 or 504 is no refusal: the metrics see it by its HTTP status


_FAIR_SHARE_PROBLEM: Final = problem.make(
    429,
    FAIR_SHARE,
    f"this member has {PER_MEMBER} requests for record information in flight already; "
    "ask again when one is answered",
)


def _quota_refusal(who: str, wait: Wait) -> policy.Refused:
    whose = "this member's share of the group's" if who == "member" else "the group's"
    what = {
        "second": "requests per second",
        "day": "requests per day",
        "provisions": "provisions per day (件数)",
    }.get(wait.limit.value, "requests")
    return policy.Refused(
        policy.Rule.QUOTA,
        "Act §17(6)",
        f"{whose} agreed {what} with the 機構 (取決め) are used up",
    )


class _Passed(FrozenNoGc, frozen=True):
    """A record passed on to ``member`` (`responder.http.Provision`): counted in the group's
    ledger (帳簿, Act §40) as the answer is written; when the connection went away before its
    turn, nothing is counted and the provisions `Bounds.take` took for it are given back."""

    ledger: Counter
    member: str
    bounds: Bounds
    quota: Quota

    def sent(self) -> None:
        # dated on the day its provisions were taken from, the day it was provided
        # (`Bounds.carry`; 提供を行った年月日, Ord §71(3)), as every other route's
        self.ledger.count(self.member, Service.SIGN_RECORD_INFO, Method.JSON, 1, at=self.bounds.at)

    def dropped(self) -> None:
        self.bounds.give_back(self.quota)


def _unauthenticated() -> policy.Refused:
    refused = policy.decide_member(
        None, "", None, service=Service.SIGN_RECORD_INFO, family=None, method=Method.JSON, now=0
    )
    assert isinstance(refused, policy.Refused)
    return refused
