"""The bound on what clients proving no party may ask of the public routes, per worker.

The public routes (``/healthz``, ``/readyz``, ``/announcements``, ``/ca/``, ``/reports/``
and any path the responder does not serve) answer without a credential, so without a
bound anyone could keep a worker busy with them and the registered parties' OCSP answers
wait behind (a flood of ``/announcements`` raised a party's p99 six-fold). Each worker
keeps one token bucket (`PublicBucket`, ``[server.limits] public_per_second`` and
``public_burst``) for the requests of clients that prove no party; past it the app
answers 429 with ``Retry-After: 1`` (`responder.app`) and the HTTP layer does not read
that connection for the second (`responder.http.Response.hold`; not a trusted proxy's,
which carries other clients' requests too), so a client that does not wait is refused
once a second per connection, not once per request. Closing the connection instead was
measured worse: the flood then reconnects, and a connection costs the worker more than
a request (a party's p99 under a flood of /announcements 21 ms, against 18 ms with no
bound and 3 ms with the hold; ``python -m bench.bench_public_flood``).

Never charged: a request proving a registered party (client certificate or bearer
token, `responder.access.by_transport`), whatever the route. Never refused, though
charged while tokens last: a probe, the first request of a connection to ``/healthz``
or ``/readyz`` (`is_probe`). Load balancers' and Kubernetes' checks open a connection
for each check (haproxy's ``option httpchk``, the kubelet's HTTP probes), so however
many requests a flood sends on its connections, a check is answered and does not take
a node out. A flood that opens a connection per request is not bounded here: its
/healthz and /readyz are probes, answered, and a connection costs a worker more than
the request it carries (measured, responder reached directly: ``wrk -c40 -H
'Connection: close'`` got 14-17k answers a second, a party's p99 5-12 ms against 1-2 ms
unflooded); the connection budget bounds how many are open, not how fast they come.
Behind a proxy that reuses its connections to the node (deploy/haproxy) the node sees
such requests on old connections, charged like any other.

Sans-I/O: the caller passes the clock (monotonic seconds). Counted by route class
(`route_class`), never by client: ``jpkiva_public_refused_total{route}``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PROBES", "ROUTE_CLASSES", "PublicBucket", "is_probe", "route_class"]

PROBES: Final = frozenset({b"/healthz", b"/readyz"})
"""The probes' routes: a connection's first request to one of them is never refused."""
ROUTE_CLASSES: Final = ("healthz", "readyz", "announcements", "ca", "reports", "other")
"""The ``route`` label of ``jpkiva_public_refused_total``: which public route, never who."""
_PREFIXES: Final = (
    (b"/announcements", "announcements"),
    (b"/ca/", "ca"),
    (b"/reports/", "reports"),
)


def route_class(path: bytes) -> str:
    """The `ROUTE_CLASSES` member of a public request's path (``other``: not served here)."""
    if path == b"/healthz":
        return "healthz"
    if path == b"/readyz":
        return "readyz"
    for prefix, name in _PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


def is_probe(path: bytes, sequence: int) -> bool:
    """Whether a request is a probe's: the first (``sequence`` 1) of its connection, to
    ``/healthz`` or ``/readyz``."""
    return sequence == 1 and path in PROBES


class PublicBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` held; one per request."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs a positive rate and room for one request")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Take one token at ``now`` (monotonic seconds) if one is there; else False."""
        at = self._at
        tokens = self._tokens
        if at is not None and now > at:
            tokens = min(self.burst, tokens + (now - at) * self.rate)
        self._at = now if at is None or now > at else at
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def configure(self, rate: float, burst: float) -> None:
        """New figures (SIGHUP); the tokens held are kept, within the new ``burst``."""
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs a positive rate and room for one request")
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, float(burst))
