"""What a /v1 route is made of: `Route` (one table entry), `Context` (what a handler is given)
and `Reply` (what a handler answers). The API of every service module; the dispatcher is
`responder.v1.routes`, the table `responder.v1.table`.

A handler is sans-I/O: ``handler(request, ctx) -> Reply | Problem``. ``request`` is the
route's request Struct, already decoded and validated (the JSON body of a POST, the
query parameters of a GET); ``ctx`` gives the authenticated `Party`, one consistent view
of the store (`StoreReader`), ``now`` and the per-entry policy (`Context.permit`). It
returns the response Struct in a `Reply` saying how many provisions of which service to
count in the ledger (帳簿, Act §40), or a `responder.v1.wire.Problem` (400 naming the
field for bad input: then nothing is counted). A handler that needs an I/O side effect
(a record written to the builder's spool) returns it as `Reply.effect`, a callable the
shell runs before the answer is sent; a route that needs something prepared once per
worker (a spool directory, a signing key) names a ``setup`` function whose result the
handler finds in `Context.env`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import msgspec

from crlbuilder.model import Family
from crlbuilder.store.reader import StoreReader
from responder import policy
from responder.config import ResponderConfig
from responder.registry.party import Party
from responder.registry.vocabulary import Method, Service
from responder.v1.wire import Problem

Decide: TypeAlias = Callable[..., policy.Allowed | policy.Refused]
"""``(party, *, service, family, method, now)``: `responder.policy.decide`'s shape."""
Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)
Counts: TypeAlias = tuple[tuple[Service, int], ...]
"""Provisions per service (`Reply.counts`)."""
Count: TypeAlias = Callable[[Counts], None]
"""What `Delivery.record` hands what an answer provides to: the ledger's count."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What `Reply.provide` decided an answer provides, in two steps: when the answer is made
    and when it is written (`responder.http.Provision`)."""

    counts: Counts
    """The provisions per service the answer gives as decided when it is made (against the
    handler's own record of what was provided already): the dispatcher takes them from the
    party's provisions of the day (all or none: 429) then, and counts nothing yet."""
    record: Callable[[Count], None]
    """Run once, just before the answer's bytes go to the transport (never for an answer
    dropped): reads the record again, hands ``count`` what the answer provides after all
    (per service never more than `counts`: a concurrent answer may have provided some of it
    meanwhile; never less than what no answer written has provided), which the ledger counts
    (帳簿, Act §40), then records it as provided, in one step: the record is never ahead of
    the ledger. The dispatcher gives back to the day's bound what `counts` took beyond what
    was counted. It calls ``count`` exactly once, and raises nothing: a record it cannot
    read or keep is counted as decided (`counts`: at worst counted again later, never not
    at all), and logged."""


Provide: TypeAlias = Callable[[], Delivery | None]
"""``provide()``: `Reply.provide`."""


@dataclass(slots=True)
class Context:
    """What a handler may use: who asks, the store as of one instant, the time, its setup."""

    party: Party
    reader: StoreReader
    now: float
    """Epoch seconds of the request."""
    env: object = None
    """The result of the route's ``setup`` (None without one)."""
    decide: Decide = policy.decide
    """The access decision: `responder.policy.decide`, or on a group appliance
    `responder.policy.decide_member` for the group's own members (Act §20(1))."""
    provisions_left: int | None = None
    """The provisions (件数) the party may still be given today (JST) on this node under its
    agreed ``provisions_per_day`` (at least 1: with none left the dispatcher refused the
    call); None: no bound. A handler that can give less than asked (the changes feed) stops
    there; any other's `Reply.counts` are taken whole or the call is refused 429."""
    _permits: dict[tuple[Service, Family | None], policy.Refused | None] = field(
        default_factory=dict
    )

    def permit(self, service: Service, family: Family | None) -> policy.Refused | None:
        """None when the party may receive ``service`` about a ``family`` certificate by the
        ``json`` method now (`responder.policy.decide`), else the refusal: for refusing one
        entry of a batch (families a party may not receive are refused per entry)."""
        key = (service, family)
        try:
            return self._permits[key]
        except KeyError:
            pass
        verdict = self.decide(
            self.party, service=service, family=family, method=Method.JSON, now=self.now
        )
        got = verdict if isinstance(verdict, policy.Refused) else None
        self._permits[key] = got
        return got


@dataclass(frozen=True, slots=True)
class Reply(Generic[Resp]):
    """A handler's answer: the body and what to count."""

    body: Resp
    counts: Counts = ()
    """Provisions to count in the ledger (帳簿, Act §40), per service, method ``json``;
    the entries of a batch each count one (件数, the unit of a fee per provision, Act §67)."""
    family: str = ""
    """The certificate family the answer was about, for the metrics and the access log
    (`responder.outcome.Outcome.family`); "" for none or several."""
    effect: Callable[[], None] | None = None
    """An I/O side effect the shell runs before the answer is sent (and before anything is
    counted), once the answer is signed (an answer that cannot be signed does nothing); if it
    raises, the party gets 503 ``unavailable`` and nothing is counted. A
    reply with an effect counts nothing (``counts`` empty): the effect runs before the
    dispatcher takes the provisions of the day, which could still refuse the answer."""
    provide: Provide | None = None
    """Instead of ``counts``: run by the dispatcher on the event loop once the answer is made
    (signed, nothing left to fail but the day's provisions), it decides the provisions
    against the handler's own record of what was provided already (the changes feed's
    counted mark, a token's counted mark) and returns them as a `Delivery`, or None when the
    record could not be read (nothing given: 503). The dispatcher takes `Delivery.counts`
    from the day's provisions (or refuses: 429, nothing recorded); the ledger counts (帳簿,
    Act §40) and the record moves only once the answer is written (`Delivery.record`), so an
    answer refused, abandoned, dropped before its turn on a connection gone (pipelined
    behind a slower answer) or lost with its worker leaves nothing counted or recorded as
    provided that was not."""
    status: int = 200
    retry_after: int | None = None
    """Seconds for the answer's ``Retry-After`` header (RFC 9110 §10.2.3): a 202 that asks
    the party to come back, so that an HTTP client's own retry logic reads it too."""


Handler = Callable[[Req, Context], Reply[Resp] | Problem]


@dataclass(frozen=True, slots=True)
class Link:
    """A value of a route's 200 answer that another route's call takes (an OpenAPI 3.1 Link
    Object, ``responses.200.links``), so a client generator or a stateful test knows what
    comes next: the token handed out, then its status (``POST /v1/token`` to
    ``POST /v1/status``)."""

    name: str
    """The link's key in ``links``."""
    operation: str
    """The route it leads to (its `Route.name`, the operationId)."""
    description: str
    parameters: tuple[tuple[str, str], ...] = ()
    """Query parameters of the next call, as (parameter, runtime expression), e.g.
    ``(("cursor", "$response.body#/cursor"),)``."""
    body: Any = None
    """The next call's JSON body, runtime expressions (``$response.body#/serial``) in place
    of its values; None: the next call's body is its own."""


@dataclass(frozen=True, slots=True)
class Route(Generic[Req, Resp]):
    """One entry of the route table: read by the dispatcher and the OpenAPI generator."""

    method: Literal["GET", "POST"]
    path: str
    """``/v1/<name>``; exact match, no path parameters (a GET takes query parameters)."""
    name: str
    """Short name: the metrics' and access log's endpoint is ``v1-<name>``."""
    summary: str
    request: type[Req]
    """The body Struct of a POST; the query parameters Struct of a GET (flat fields)."""
    response: type[Resp]
    services: tuple[Service, ...]
    """The services the route may provide: a party whose agreement names none of them by the
    ``json`` method (for any family) is refused 403 before the body is decoded."""
    handler: Handler[Req, Resp]
    description: str = ""
    setup: Callable[[ResponderConfig], object] | None = None
    """Run once per worker; its result is `Context.env`."""
    signed: bool = True
    """The answer carries a JWS of the responder's answer-signing key (`responder.v1.jws`)."""
    signer: str = "the answer-signing key of GET /v1/keys"
    """Whose key that JWS is made with, as the OpenAPI document says it: another for an
    answer passed on as it came (a group's relay of the 機構's record-info answer)."""
    threaded: bool = False
    """A large body (`responder.v1.routes.THREAD_BYTES`) is answered in the worker's batch
    thread, off the event loop: only for a handler (and ``setup``'s env, and the effect)
    safe to run in another thread while the loop runs the route's small calls."""
    blocking: Callable[[Any], bool] | None = None
    """Given the route's env (``setup``'s result): whether every call, whatever its size, is
    answered in the batch thread, never on the event loop: the handler waits on I/O beyond
    the store (the watch stream of several nodes, `responder.v1.watchstream`), or a small
    body may cost far more than its size says (``POST /v1/watch``'s writes)."""
    offload: Callable[[Any], bool] | None = None
    """Given the decoded request: whether this call is answered in the batch thread whatever
    its body's size, because what it asks costs more than its size says (``POST /v1/verify``:
    an XML signature's canonicalisation, many RSA verifications); a call it clears stays on
    the event loop unless its body is large (``threaded``). Same thread-safety as
    ``threaded``."""
    writes: bool = False
    """Its calls change what later calls read (``POST /v1/watch``): a call answered off the
    event loop holds the requests pipelined after it on its connection until its answer is
    made (`responder.http.Request.holds`), so that they read what it wrote."""
    retry_after: Callable[[Any], int | None] | None = None
    """Given the route's env, after its handler answered 503: the seconds for the answer's
    ``Retry-After`` when the route knows when to come back (the watch stream held down after a
    failure, `responder.v1.holddown`); None, or no function: 1."""
    problems: tuple[tuple[int, str], ...] = ()
    """Problem statuses the handler may answer beyond the dispatcher's (400, 401, 403, 405,
    415, 429, 503), each with its meaning, e.g. ``((410, "the cursor is past the retention
    horizon: resynchronise"),)``: the OpenAPI document lists them."""
    follow: tuple[tuple[str, str], ...] = ()
    """Parameters of this same operation that its answer gives for the next call, as
    (parameter, JSON pointer into the answer), e.g. ``(("cursor", "/cursor"),)``: the
    OpenAPI document links the answer to the next call (``links.next``), so a client
    generator or a stateful test knows where the next page starts."""
    links: tuple[Link, ...] = ()
    """Other routes its 200 answer leads to (`Link`); the OpenAPI document lists them beside
    ``follow``'s ``next``."""
    provides: bool = True
    """Its answers may count provisions (件数, `Reply.counts`): a party whose agreed
    ``provisions_per_day`` is used up today is refused 429 before the request is decoded.
    False for a route that never provides (``POST /v1/watch``), which is then served."""
    accepted: tuple[tuple[int, str], ...] = ()
    """Success statuses besides 200 the handler may answer (`Reply.status`) with the same
    response Struct, each with its meaning, e.g. ``((202, "queued: ask again"),)``; a 202
    carries ``Retry-After`` (`Reply.retry_after`), and the OpenAPI document says so."""

    @property
    def endpoint(self) -> str:
        return f"v1-{self.name}"


AnyRoute: TypeAlias = Route[Any, Any]
"""A table entry whatever its Structs: the table holds routes of different types."""
