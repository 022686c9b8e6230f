"""Refusals of the /v1 routes as RFC 9457 problem details (``application/problem+json``).

Every refusal names its rule (``type`` ``urn:jpki-va:problem:<rule>``), the article a
legal refusal rests on and, for bad input, the offending field as a path into the
request (``$.entries[3].serial``, msgspec's notation); never the data asked about (no
serial, no certificate, no holder), so a problem can be logged and shown as it is.

- 400 ``bad_input``: malformed JSON, an unknown field, a value outside its bounds
  (more than 10,000 entries, a serial over 20 octets), an issuer we do not serve, a
  certificate that does not parse. Nothing is counted in the ledger (帳簿, Act §40).
- 401 ``unauthenticated``: no registered party proved itself (Act §17(1), §36(1));
  no lookup happened.
- 403 the `responder.policy` rules (``unauthorized_service``, ``suspended`` ...): the
  article of the agreement (取決め) or of the law; counted as refused in the metrics.
- 429 ``quota`` with ``Retry-After``: the agreed requests per second or per day, or the
  agreed provisions per day (``provisions_per_day``, 件数); for the provisions, the problem
  also says how many remain today (``remaining``) and when the Japan day turns
  (``resetsAt``, 00:00 JST), ``Retry-After`` the seconds until then.
- 404, 405, 415: the HTTP rules (no such route, method, media type).
- 413 ``too_large``: the body is over the server's limit (``[server.limits]
  max_json_body_bytes``, less without a credential), refused by `responder.http` before it
  is read (`BODY_TOO_LARGE`, through the app's ``too_large`` hook); 414 and 431, the same
  rule, for a request target or header fields over ``[server.limits] max_header_bytes``
  (`OVER_LIMIT`).
- 503 ``unavailable``: a follow-up the answer needs could not be carried out.
- 503 ``store_damaged``: a value the answer reads from the store is damaged
  (`crlbuilder.store.format.StoreCorrupt`): no answer is made from it and nothing is
  counted; the detail names neither the key nor the value (the operator's log names the
  database, `responder.v1.routes`). As OCSP answers ``internalError`` for it.

Sans-I/O: functions from a refusal to a `Problem` and to its `responder.http.Response`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Final

import msgspec

from crlbuilder.decodeerror import redact
from crlbuilder.rules import JST_OFFSET
from responder import policy
from responder.http import Response
from responder.limits import Limit, Wait, provisions_reset
from responder.v1.wire import Problem

PROBLEM_JSON: Final = b"application/problem+json"
_NO_STORE: Final = ((b"cache-control", b"no-store"),)

BAD_INPUT: Final = "bad_input"
NOT_FOUND: Final = "not_found"
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
UNAVAILABLE: Final = "unavailable"
STORE_DAMAGED: Final = "store_damaged"
TOO_LARGE: Final = "too_large"

_encoder: Final = msgspec.json.Encoder()
_AT: Final = re.compile(r" - at `(\$[^`]*)`$")
_JST: Final = timezone(timedelta(seconds=JST_OFFSET), "JST")


def make(status: int, rule: str, detail: str, *, article: str = "", field: str = "") -> Problem:
    return Problem(
        type=f"urn:jpki-va:problem:{rule}",
        title=rule,
        status=status,
        detail=detail,
        rule=rule,
        article=article,
        field=field,
    )


def bad_input(field: str, detail: str) -> Problem:
    """400: the request is not one this route accepts; ``field`` says where (``$`` the body)."""
    return make(400, BAD_INPUT, detail, field=field)


def from_decode_error(
    exc: msgspec.DecodeError, schema: object = None, document: bytes | None = None
) -> Problem:
    """400 from msgspec's message: what is wrong and where, never the value (`redact`; an
    unknown field's message lists the fields ``schema`` accepts there in ``document``).

    msgspec words a validation error as ``Expected `int`, got `str` - at `$.a[0]```:
    the path becomes ``field``, the rest ``detail``. A syntax error names a byte offset.
    """
    text = redact(str(exc), schema, document)  # the input's names and values: never echoed
    m = _AT.search(text)
    if m is None:
        return bad_input("$", text)
    return bad_input(m.group(1), text[: m.start()])


def refused(refusal: policy.Refused) -> Problem:
    """401 for ``unauthenticated``, 403 for any other rule of `responder.policy`."""
    status = 401 if refusal.rule is policy.Rule.UNAUTHENTICATED else 403
    return make(status, refusal.rule.value, refusal.detail, article=refusal.article)


def quota(refusal: policy.Refused, wait: Wait | None = None, now: float = 0.0) -> Problem:
    """429: the agreed quota (取決め) is used up; for the provisions per day (``wait`` of
    `Limit.PROVISIONS`, at ``now``), with what remains and when the Japan day turns."""
    if wait is None or wait.limit is not Limit.PROVISIONS:
        return make(429, refusal.rule.value, refusal.detail, article=refusal.article)
    turns = provisions_reset(now, wait)
    return msgspec.structs.replace(
        make(
            429,
            refusal.rule.value,
            f"{refusal.detail}: {wait.remaining} remain today (JST), until {_jst(turns)}",
            article=refusal.article,
        ),
        remaining=wait.remaining,
        resets_at=datetime.fromtimestamp(turns, _JST),
    )


def _jst(t: int) -> str:
    return datetime.fromtimestamp(t, _JST).isoformat()


NO_ROUTE: Final = make(404, NOT_FOUND, "no such route under /v1 (see /v1/openapi.json)")
UNSUPPORTED: Final = make(
    415, UNSUPPORTED_MEDIA_TYPE, "the request body must be application/json", field="$"
)


BODY_TOO_LARGE: Final = make(
    413, TOO_LARGE,
    "the request body is over this server's size limit (far less without a credential): "
    "send fewer entries per call",
    field="$",
)  # fmt: skip


TARGET_TOO_LONG: Final = make(
    414, TOO_LARGE,
    "the request target (path and query) is over this server's header size limit",
)  # fmt: skip
HEADERS_TOO_LARGE: Final = make(
    431, TOO_LARGE,
    "the request's header fields are over this server's header size limit",
)  # fmt: skip
OVER_LIMIT: Final = {413: BODY_TOO_LARGE, 414: TARGET_TOO_LONG, 431: HEADERS_TOO_LARGE}
"""`responder.http`'s refusals of a request over a limit, as problems (the app's
``too_large`` hook), by status."""


def method_not_allowed(allow: bytes) -> Response:
    return response(
        make(405, METHOD_NOT_ALLOWED, "this route does not take this method"),
        ((b"allow", allow),),
    )


def response(
    problem: Problem, extra: tuple[tuple[bytes, bytes], ...] = (), *, retry_after: int | None = None
) -> Response:
    """The HTTP answer carrying ``problem`` (never cached; ``Retry-After`` for a 429)."""
    headers = _NO_STORE + extra
    if retry_after is not None:
        headers = (*headers, (b"retry-after", str(max(1, retry_after)).encode()))
    if problem.status == 401:
        headers = (*headers, (b"www-authenticate", b"Bearer"))
    return Response(problem.status, _encoder.encode(problem), PROBLEM_JSON, headers)
