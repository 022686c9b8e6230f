"""The /v1 dispatcher: every JSON route behind the same gate as OCSP, in one order.

`V1Api.handle` takes one `responder.http.Request` whose path starts with ``/v1/`` and:

1. finds the route (`responder.v1.table.ROUTES`; 404 problem) and checks the method
   (405) — or serves a public document (``/v1/openapi.json``, ``/v1/keys``);
2. authenticates (`responder.access.by_transport`: client certificate, forwarded
   client certificate, bearer token), before anything of the body is read: none is
   401 ``unauthenticated`` (Act §17(1), §36(1)), no lookup happened;
3. asks the policy (`responder.policy.decide`, method ``json``) whether the party may
   receive one of the route's services for at least one family: ended, not started,
   not in the agreement (取決め), suspended (提供の停止, Act §18(6),(7), §37(4)) is 403
   citing the article; the families it may not receive are then refused per entry by
   the handler (`responder.v1.route.Context.permit`);
4. counts the request against the agreed quotas (`responder.limits`): 429 with
   Retry-After; for a party whose agreement bounds its provisions per day
   (``provisions_per_day``, 件数) and a route that provides (`Route.provides`), none left
   today is 429 too, saying when the Japan day turns;
5. checks the media type (415) and decodes the body (POST) or the query (GET) into the
   route's request Struct with msgspec, strictly: 400 ``bad_input`` naming the field;
6. runs the handler in one read view of the store (sans-I/O), then its follow-up
   effect if any (503 if that fails) — for a large body (`THREAD_BYTES`) of a route that
   allows it (`Route.threaded`), or a call its route says costs more than its size
   (`Route.offload`, `Route.blocking`), in the worker's batch thread, fed per party in a fair
   queue (`responder.signing.SigningPool`; a party with calls already waiting gets 429
   ``fair_share``), so a batch of 10,000 does not stop the event loop's other
   connections for its ~35 ms — then, on the event loop, for an answer made in the batch
   thread, asks the policy again at that instant under the registry of the moment (a
   suspension or end of provision in force by then is 403, nothing counted: `V1Api._stopped`),
   takes the answer's provisions
   from the party's provisions of the day, all or none (`Quota.take_provisions`: a batch
   that would pass the bound is refused whole, 429 naming the rule, how many remain and
   when the Japan day turns, nothing counted or answered; the changes feed was told
   what remains, `Context.provisions_left`, and delivered no more), and sends the body with
   its JWS (`responder.v1.jws`, header ``JWS-Signature``). The ledger (帳簿, Act §40:
   `LedgerWriter.count(party, service, Method.JSON, n)` for each of `Reply.counts`) and the
   calls' ledger count as the answer is written (`responder.http.Provision.sent`, on the
   event loop, whichever thread made the answer): an answer made and never written
   (pipelined behind a slower answer on a connection the client reset first) counts
   nothing and gives its provisions back (`Provision.dropped`), to the day they were taken
   from. The provisions and the ledger count at one instant (`V1Api.counted_at`): a batch
   asked before 00:00 JST and answered after it counts in the new day in both, whatever
   day this worker's row of the table is on; an answer that does not cross midnight counts
   at its request's instant, as it always did. A reply that decides its provisions against
   its own record of what was provided (the changes feed's counted mark, a token's mark,
   `Reply.provide`) takes them when the answer is made and records them, in the same step
   as the count, only as it is written (`responder.v1.route.Delivery`), counting then what
   no answer written meanwhile counted and giving the rest back: an answer refused,
   abandoned (its connection gone while the batch thread worked, or before its turn),
   whose body or signature failed (503), or lost with its worker, has recorded nothing as
   provided.

Per entry and per call. The 帳簿 (Ord §71) counts provisions (件数): a batch of 10,000
answered entries is 10,000 provisions of its service, the unit a fee per provision would
use (Act §67); its layout, the report (報告書, Act §41, Ord §72) and its formats are
unchanged. The calls are counted in a second ledger of the same kind (the same worker
files and SQLite merge, `responder.ledger`) in the subdirectory `CALLS_DIR` of the ledger
directory: one per answered call and service it provided (a batch holding sign and auth
certificates counts one call of each), keyed by day, party, service and method ``json``.
Summing the provisions over the calls gives the entries per call; the report never reads
the calls, so its totals stay provisions. Read them with ``Ledger.open(dir / "calls")``
(`Ledger.rows`, `Ledger.totals`) or the sqlite3 shell on ``calls/ledger.sqlite3``.

Every path leaves a `responder.outcome.Outcome` in ``Request.note`` (endpoint
``v1-<name>``, family, party, refusal rule) for the metrics and the access log. Nothing
is counted in the ledger for a refusal or bad input.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from crlbuilder.model import Family
from crlbuilder.store.format import StoreCorrupt
from crlbuilder.store.reader import ReadSource
from responder import access, memberbound, policy
from responder.config import ResponderConfig
from responder.http import Request, Response
from responder.limits import Limit, Wait, day_ends, provisions_wait
from responder.outcome import Outcome
from responder.registry.lookup import Registry
from responder.registry.party import Party
from responder.registry.vocabulary import SERVICE_FAMILIES, Method, Service
from responder.signing import SigningPool
from responder.structs import FrozenNoGc
from responder.v1 import openapi, problem
from responder.v1.route import AnyRoute, Context, Count, Counts, Decide, Reply
from responder.v1.wire import Problem

JSON: Final = b"application/json"
SIGNATURE_HEADER: Final = b"jws-signature"
"""The response header carrying the answer's detached JWS (`responder.v1.jws`)."""
MALFORMED: Final = "malformed"
"""The metrics' rule for bad input (the vocabulary OCSP's malformed requests use)."""
UNAVAILABLE_RULE: Final = "unavailable"
FAIR_SHARE: Final = "fair_share"
"""The rule of a call refused because its party's share of the batch thread is taken."""
QUOTA: Final = policy.Rule.QUOTA.value
"""The rule of a call refused by an agreed quota or the provisions per day (取決め)."""
THREAD_BYTES: Final = 32 << 10
"""Bodies this large (about 500 entries of a batch) are answered in the worker's batch
thread (`V1Api.pool`), so the event loop goes on serving the other connections meanwhile."""
CALLS_DIR: Final = "calls"
"""The subdirectory of the ledger directory counting /v1 calls (see the module docstring)."""
_MAX_QUERY_FIELDS: Final = 32
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_NOTE_NOT_FOUND: Final = Outcome("v1")

# a refusal of a route's service that a party's titles grant says more than the
# refusal of a service they do not (a suspended 署名検証者 asking for a batch that may
# hold auth certificates is told of the suspension, not of its missing title)
_RANK: Final = {
    policy.Rule.UNAUTHORIZED_SERVICE: 0,
    policy.Rule.UNAUTHORIZED_FAMILY: 1,
    policy.Rule.UNAUTHORIZED_METHOD: 2,
}


class Done(NamedTuple):
    """What `V1Api._work` made of a decoded request: a problem, or the reply, its body and
    the body's JWS."""

    problem: Problem | None
    reply: Reply[Any] | None = None
    body: bytes = b""
    signature: bytes | None = None
    retry_after: int | None = None
    """A 503's Retry-After when the route gave one (`Route.retry_after`), else 1; a
    handler's 429 of the provisions per day: until the Japan day turns."""


_log: Final = logging.getLogger("responder.v1.routes")


_EFFECT_FAILED: Final = problem.make(
    503, problem.UNAVAILABLE, "the answer could not be completed; retry"
)
_STORE_DAMAGED: Final = problem.make(
    503,
    problem.STORE_DAMAGED,
    "the store this answer is read from is damaged; the operator restores it; retry later",
)
"""A value the handler read is damaged (`StoreCorrupt`): no answer, nothing counted."""
_FAIR_SHARE_DETAIL: Final = (
    "this party's share of the worker's batch thread is taken by its earlier calls; retry"
)


class Quota(Protocol):
    """The agreed quotas (`responder.limits.LimitsTable`)."""

    def admit(self, party: Party, now: float) -> Wait | None: ...

    def provisions_left(self, party: Party, now: float) -> int | None: ...

    def take_provisions(self, party: Party, n: int, now: float) -> Wait | float: ...

    def give_back_provisions(self, party: Party, n: int, now: float) -> None: ...


class Counter(Protocol):
    """The ledger's hot path (`responder.ledger.LedgerWriter`)."""

    def count(
        self, party: str, service: Service, method: Method, n: int = 1, *, at: float | None = None
    ) -> None: ...


class AnswerSigner(Protocol):
    """Signs an answer's exact body bytes (`responder.v1.jws.AnswerSigner`)."""

    def sign(self, body: bytes) -> bytes: ...


def gate(
    party: Party, services: Iterable[Service], now: float, decide: Decide = policy.decide
) -> policy.Refused | None:
    """None when ``party`` may receive one of ``services`` by ``json`` for some family now;
    else the most telling refusal (see ``_RANK``)."""
    best: policy.Refused | None = None
    for service in services:
        families: tuple[Family | None, ...] = tuple(SERVICE_FAMILIES[service]) or (None,)
        for family in families:
            verdict = decide(party, service=service, family=family, method=Method.JSON, now=now)
            if not isinstance(verdict, policy.Refused):
                return None
            if best is None or _RANK.get(verdict.rule, 9) > _RANK.get(best.rule, 9):
                best = verdict
    return best


class V1Api:
    """One worker's /v1 routes and the collaborators they share with OCSP."""

    def __init__(
        self,
        routes: Sequence[AnyRoute],
        config: ResponderConfig,
        *,
        store: ReadSource,
        quota: Quota,
        ledger: Counter,
        calls: Counter | None = None,
        pool: SigningPool[Done] | None = None,
        signer: AnswerSigner | None,
        public: dict[bytes, Callable[[], Response]] | None = None,
        group_id: str | None = None,
        clock: Callable[[], float] | None = None,
        current: Callable[[], Registry] | None = None,
    ) -> None:
        self.routes = {r.path.encode(): r for r in routes}
        self.store = store
        self.quota = quota
        self.ledger = ledger
        self.calls = calls
        """The calls' ledger (`CALLS_DIR`); None: calls are not counted (tests)."""
        self.pool = pool
        """The batch thread: large requests are answered there, per party in a fair queue
        (`responder.signing.SigningPool`); None: everything on the event loop."""
        self.signer = signer
        self.public = public or {}
        """Public GET documents (``/v1/openapi.json``, ``/v1/keys``): no party, nothing counted."""
        self._envs = {r.path: r.setup(config) if r.setup is not None else None for r in routes}
        self._decoders = {
            r.path: msgspec.json.Decoder(r.request) for r in routes if r.method == "POST"
        }
        self.group_id = group_id
        """On a group appliance (団体署名検証者): the group whose own members (署名確認者) the
        routes answer, decided by `responder.policy.decide_member` (Act §20(1))."""
        self.sign_failed: Callable[[], None] | None = None
        """Called (from the thread that signs) when an answer could not be signed (the
        answer key's token gone, its certificate expired): the app counts it in
        ``jpkiva_signer_errors_total{signer="answer"}`` (alert JpkiVaSignerErrors)."""
        self.clock = clock
        """The clock `_finish` reads when the answer is provided (the app's ``time.time``):
        the provisions are taken and counted at that instant when its Japan day is not the
        request's (`counted_at`). None: at the request's ``now`` (an answer given at once, or
        a test on a fixed clock)."""
        self.current = current
        """The registry of the moment (the app's, swapped by its reload): an answer made off
        the event loop (the batch thread) is provided when it is written, not when its call
        was decided, so its party's standing is asked again then (`_stopped`). None: the
        registry the call was decided under."""

    def env(self, path: str) -> object | None:
        """What the route at ``path`` made with its ``setup`` in this worker (None: no such
        route, or none made): for the app to hook its metrics to it."""
        return self._envs.get(path)

    def decider(self, registry: Registry) -> Decide:
        """The access decision for this appliance's parties (see ``group_id``)."""
        if self.group_id is None:
            return policy.decide
        return functools.partial(
            policy.decide_member, group_id=self.group_id,
            group=registry.parties.get(self.group_id),
        )  # fmt: skip

    def handle(
        self, req: Request, registry: Registry, now: float
    ) -> Response | asyncio.Future[Response]:
        """Answer one request under /v1 (the order is the module docstring's)."""
        target = req.target
        path, _, query = target.partition(b"?")
        route = self.routes.get(path)
        if route is None:
            doc = self.public.get(path)
            if doc is None:
                req.note = _NOTE_NOT_FOUND
                return problem.response(problem.NO_ROUTE)
            req.note = Outcome("v1-" + path[4:].split(b".", 1)[0].decode("ascii"))
            if req.method not in (b"GET", b"HEAD"):
                return problem.method_not_allowed(b"GET, HEAD")
            page = doc()
            if req.method == b"HEAD":
                return Response(page.status, b"", page.content_type, page.extra_headers)
            return page
        endpoint = route.endpoint
        if req.method != route.method.encode():
            req.note = Outcome(endpoint)
            return problem.method_not_allowed(route.method.encode())
        party = access.by_transport(registry, req, now)
        decide = self.decider(registry)
        if party is None:
            req.note = Outcome(endpoint, rule=policy.Rule.UNAUTHENTICATED.value)
            unauthenticated = decide(
                None, service=route.services[0], family=None, method=Method.JSON, now=now
            )
            assert isinstance(unauthenticated, policy.Refused)
            return problem.response(problem.refused(unauthenticated))
        refusal = gate(party, route.services, now, decide)
        if refusal is not None:
            req.note = Outcome(endpoint, party=party.id, rule=refusal.rule.value)
            return problem.response(problem.refused(refusal))
        wait = self.quota.admit(party, now)
        left: int | None = None
        if wait is None and party.provisions_per_day is not None and route.provides:
            left = self.quota.provisions_left(party, now)
            if left is not None and left < 1:  # none left today
                wait = provisions_wait(now, 0)
        if wait is not None:
            if self.group_id is not None and wait.limit is not Limit.PROVISIONS:
                # a member's only quota here: the group's bound on each member (Ord §33(4))
                req.note = Outcome(endpoint, party=party.id, rule=memberbound.MEMBER_QUOTA)
                limited = memberbound.refusal(wait.limit)
            else:
                req.note = Outcome(endpoint, party=party.id, rule=policy.Rule.QUOTA.value)
                limited = policy.limit_refusal(party, route.services[0], wait.limit)
            return problem.response(problem.quota(limited, wait, now), retry_after=wait.retry_after)
        decoded = self._decode(route, req, query)
        if isinstance(decoded, Problem):
            req.note = Outcome(endpoint, party=party.id, rule=MALFORMED)
            return problem.response(decoded)
        work = functools.partial(self._work, route, party, decoded, now, decide, left)
        large = route.threaded and len(req.body) >= THREAD_BYTES
        waits = route.blocking is not None and route.blocking(self._envs[route.path])
        heavy = route.offload is not None and route.offload(decoded)
        if not (large or waits or heavy) or self.pool is None:
            return self._finish(req, route, party, now, work())
        done = self.pool.submit(party.fair_id, work)  # one share per contractor
        if done is None:  # the party's share of the batch thread is taken
            req.note = Outcome(endpoint, party=party.id, rule=FAIR_SHARE)
            return problem.response(
                problem.make(429, FAIR_SHARE, _FAIR_SHARE_DETAIL), retry_after=1
            )
        req.note = Outcome(endpoint, party=party.id)  # until the work is done
        req.holds = route.writes  # a pipelined read after a write reads what it wrote
        return asyncio.ensure_future(self._after(req, route, party, now, done, registry))

    async def _after(
        self,
        req: Request,
        route: AnyRoute,
        party: Party,
        now: float,
        done: asyncio.Future[Done],
        registry: Registry,
    ) -> Response:
        return self._finish(req, route, party, now, await done, registry)

    def _stopped(
        self, party: Party, counts: Counts, now: float, registry: Registry
    ) -> policy.Refused | None:
        """Whether an answer made off the event loop may still be given: its party, as the
        registry of the moment holds it (`current`), may still receive each service the
        answer provides at the clock's instant (never before ``now``, the call's). A
        suspension (提供の停止, Act §18(6),(7), §37(4)) or an end of provision in force by then,
        set ahead or taken by a reload while the batch thread worked, stops the answer whole:
        it would be provided, and counted in the ledger (帳簿, Act §40), after it."""
        if self.current is not None:
            registry = self.current()
        at = now if self.clock is None else max(now, self.clock())
        decide = self.decider(registry)
        standing = registry.parties.get(party.id)
        if standing is None:
            unknown = decide(None, service=counts[0][0], family=None, method=Method.JSON, now=at)
            assert isinstance(unknown, policy.Refused)
            return unknown
        for service, n in counts:
            if n > 0 and (refusal := gate(standing, (service,), at, decide)) is not None:
                return refusal
        return None

    def _work(
        self,
        route: AnyRoute,
        party: Party,
        decoded: msgspec.Struct,
        now: float,
        decide: Decide,
        left: int | None = None,
    ) -> Done:
        """The handler in one read view of the store, the body encoded and signed, the
        effect run: everything but the counting, so it may run in the batch thread."""
        with self.store.read() as reader:
            ctx = Context(party, reader, now, self._envs[route.path], decide, left)
            try:
                got = route.handler(decoded, ctx)
            except StoreCorrupt as e:  # never an answer; the message names the database only
                _log.error(
                    "store_corrupt", extra={"fields": {"route": route.path, "error": str(e)}}
                )
                return Done(_STORE_DAMAGED)
            if isinstance(got, Problem):
                later = route.retry_after
                env = self._envs[route.path]
                if got.status == 429 and got.resets_at is not None:
                    # the handler found the call past the provisions of the day before its
                    # work (`Context.provisions_left`): until the Japan day turns
                    turns = got.resets_at.timestamp()
                    return Done(got, retry_after=max(1, math.ceil(turns - now)))
                return Done(got, retry_after=later(env) if later and got.status == 503 else None)
            try:
                body = msgspec.json.encode(got.body)
            except Exception:  # no answer, nothing counted (`Reply.provide` not run)
                _log.exception("an answer's body could not be made")
                return Done(_EFFECT_FAILED, got)
        try:
            signature = self.signer.sign(body) if route.signed and self.signer is not None else None
        except Exception as e:  # no answer, nothing counted (`Reply.provide` not run),
            # nothing done: signed before the effect, whose 503 would otherwise follow it
            _log.error("an answer could not be signed: %s", type(e).__name__)
            if self.sign_failed is not None:
                self.sign_failed()
            return Done(_EFFECT_FAILED, got)
        if got.effect is not None:
            try:
                got.effect()
            except Exception as e:  # the shell's I/O failed: nothing provided, nothing counted
                # said once here, for the operator (the party's 503 says only "try again"):
                # the error's kind and text, never the paths or arguments the effect used
                why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
                _log.error("%s: an answer's effect failed (503 unavailable): %s", route.path, why)
                return Done(_EFFECT_FAILED, got)
        return Done(None, got, body, signature)

    def counted_at(self, now: float) -> float:
        """The instant an answer to a request asked at ``now`` is counted at, provisions and
        ledger alike: ``now`` while the clock is still on its Japan day (what a request that
        does not straddle 00:00 JST sees is unchanged), else the clock's instant, the day the
        answer is provided in (提供を行った年月日, Ord §71(3)): a batch asked at 23:59:59 JST
        and answered after 00:00 JST is taken from the new day's provisions, as the ledger
        dates it, whatever day this worker's row of the table is on. A clock set back to an
        earlier Japan day than ``now``'s: ``now``."""
        if self.clock is None:
            return now
        at = self.clock()
        # never a day before the request's: a clock set back across 00:00 JST would date
        # the answer in a day the worker's row (taken from its later day) has left
        return now if at < day_ends(now) else at

    def _finish(
        self,
        req: Request,
        route: AnyRoute,
        party: Party,
        now: float,
        done: Done,
        late: Registry | None = None,
    ) -> Response:
        """On the event loop: the provisions of the day taken, all or none; the note; the
        answer, whose `_V1Provision` counts the ledger as it is written (or gives the
        provisions back when it never is). Both at one instant (`counted_at`), so they count
        the answer on the same Japan day. A reply that decides its provisions itself
        (`Reply.provide`) records them as provided in the same step as they are counted.
        ``late``: the registry a call answered off the event loop was decided under; its
        party's standing is asked again first (`_stopped`: 403, nothing taken or counted)."""
        endpoint = route.endpoint
        reply = done.reply
        family = reply.family if reply is not None else ""
        if done.problem is not None or reply is None:
            refusal = done.problem or _EFFECT_FAILED
            rule = MALFORMED if refusal.status == 400 else refusal.rule
            req.note = Outcome(endpoint, family=family, party=party.id, rule=rule)
            again = refusal is _EFFECT_FAILED or refusal.status == 503
            later = (done.retry_after or 1) if again else done.retry_after
            return problem.response(refusal, retry_after=later)
        at = self.counted_at(now)
        record: Callable[[Count], None] | None = None
        counts = reply.counts
        if reply.provide is not None:
            delivery = reply.provide()
            if delivery is None:  # what was provided already could not be read: nothing given
                rule = _EFFECT_FAILED.rule
                req.note = Outcome(endpoint, family=family, party=party.id, rule=rule)
                return problem.response(_EFFECT_FAILED, retry_after=done.retry_after or 1)
            counts, record = delivery.counts, delivery.record
        n = sum(k for _s, k in counts)
        if late is not None and n > 0 and reply.effect is None:  # made in the batch thread
            stopped = self._stopped(party, counts, now, late)
            if stopped is not None:  # nothing taken, recorded or counted
                req.note = Outcome(endpoint, family=family, party=party.id, rule=stopped.rule.value)
                return problem.response(problem.refused(stopped))
        dated = at
        bounded = party.provisions_per_day is not None
        if bounded:
            taken = self.quota.take_provisions(party, n, at)
            if isinstance(taken, Wait):  # the whole answer would pass the bound: none given
                service = counts[0][0] if counts else route.services[0]
                req.note = Outcome(endpoint, family=family, party=party.id, rule=QUOTA)
                limited = policy.limit_refusal(party, service, taken.limit)
                return problem.response(
                    problem.quota(limited, taken, at), retry_after=taken.retry_after
                )
            dated = taken  # the day taken from (a later one: the clock was set back)
        headers: tuple[tuple[bytes, bytes], ...] = _NO_STORE
        if done.signature is not None:
            headers = (*headers, (SIGNATURE_HEADER, done.signature))
        if reply.retry_after is not None:
            headers = (*headers, (b"retry-after", str(max(1, reply.retry_after)).encode()))
        req.note = Outcome(endpoint, family=family, party=party.id)
        given = None
        if n > 0 or record is not None:
            # 帳簿 (Act §40): counted as the answer is written, on the day taken above
            given = _V1Provision(
                self.ledger, self.calls, self.quota, party, counts, dated,
                n if bounded else 0, record,
            )  # fmt: skip
        return Response(reply.status, done.body, JSON, headers, provision=given)

    def _decode(self, route: AnyRoute, req: Request, query: bytes) -> msgspec.Struct | Problem:
        if route.method == "POST":
            ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if ctype != JSON:
                return problem.UNSUPPORTED
            try:
                decoded: msgspec.Struct = self._decoders[route.path].decode(req.body)
            except msgspec.DecodeError as e:  # ValidationError is a DecodeError
                return problem.from_decode_error(e, route.request, req.body)
            return decoded
        try:
            pairs = urllib.parse.parse_qsl(
                query.decode("ascii"),
                keep_blank_values=True,
                strict_parsing=bool(query),
                max_num_fields=_MAX_QUERY_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            return problem.bad_input("$", "the query string is not well formed")
        fields: dict[str, str] = {}
        for k, v in pairs:
            if k in fields:
                return problem.bad_input(f"$.{k}", "a query parameter is repeated")
            fields[k] = v
        try:
            query_struct: msgspec.Struct = msgspec.convert(fields, route.request, strict=False)
        except msgspec.ValidationError as e:
            return problem.from_decode_error(e, route.request, msgspec.json.encode(fields))
        return query_struct


class _V1Provision(FrozenNoGc, frozen=True):
    """A /v1 answer's provisions (`responder.http.Provision`): ``counts`` to ``party``, dated
    ``at`` (the Japan day ``taken`` provisions were taken from; 0: no bound). Counted in the
    ledger (帳簿, Act §40) and the calls' ledger as the answer is written, after the handler's
    record (`Delivery.record`) said what it provides after all, and what was taken beyond
    that given back; all of it given back when the answer is never written."""

    ledger: Counter
    calls: Counter | None
    quota: Quota
    party: Party
    counts: Counts
    at: float
    taken: int
    record: Callable[[Count], None] | None

    def sent(self) -> None:
        if self.record is None:
            self._count(self.counts)
            return
        counted: list[int] = []

        def count(counts: Counts) -> None:
            counted.append(self._count(counts))

        self.record(count)
        back = self.taken - sum(counted)
        if back > 0:  # provided meanwhile by another answer written first
            self.quota.give_back_provisions(self.party, back, self.at)

    def _count(self, counts: Counts) -> int:
        total = 0
        for service, n in counts:
            if n > 0:
                total += n
                self.ledger.count(self.party.id, service, Method.JSON, n, at=self.at)
                if self.calls is not None:
                    self.calls.count(self.party.id, service, Method.JSON, 1, at=self.at)
        return total

    def dropped(self) -> None:
        if self.taken:
            self.quota.give_back_provisions(self.party, self.taken, self.at)


JWK_SET: Final = b"application/jwk-set+json"
_PUBLIC_CACHE: Final = ((b"cache-control", b"public, max-age=300"),)


def public_documents(
    routes: Sequence[AnyRoute], signer: AnswerSigner | None
) -> dict[bytes, Callable[[], Response]]:
    """The public GET documents, built once per worker; nothing counted, no party needed:
    ``/v1/openapi.json`` (`responder.v1.openapi`) and ``/v1/keys`` (the answer-signing key
    as a JWKS with its certificate, RFC 7517 §5)."""
    spec = Response(200, openapi.document_bytes(routes), JSON, _PUBLIC_CACHE)
    out: dict[bytes, Callable[[], Response]] = {b"/v1/openapi.json": lambda: spec}
    jwks = getattr(signer, "jwks", None)
    if isinstance(jwks, bytes):
        keys = Response(200, jwks, JWK_SET, _PUBLIC_CACHE)
        out[b"/v1/keys"] = lambda: keys
    return out
