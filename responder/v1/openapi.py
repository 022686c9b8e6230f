"""The OpenAPI 3.1 document of /v1, generated from the route table and its Structs.

`document` walks `responder.v1.table.ROUTES` (method, path, summary, request and
response Structs, services) and asks msgspec for the JSON Schemas of every Struct
(`msgspec.json.schema_components`): nothing in it is written by hand but the words
around the routes, so the contract cannot drift from what the dispatcher decodes and
encodes. Every operation lists its success answer (with the ``JWS-Signature`` header of
`responder.v1.jws` when signed) and the problem answers the dispatcher can give
(`responder.v1.problem`: 400, 401, 403, 405, 429, 503; 414, 431 for a target or header
fields over the server's limit; and 413, 415 for a body), all with the `Problem`
schema and ``application/problem+json``. A POST takes its Struct as the JSON body, a
GET its Struct's fields as query parameters. Security: a bearer token or a TLS client
certificate (``mutualTLS``), as the registry grants. An answer that feeds a next call says
so with OpenAPI links (`responder.v1.route.Route.follow`: the changes feed's next page;
`Route.links`: the token's status, the feed after a watch). The public documents
(``/v1/openapi.json``, ``/v1/keys``) are listed without security.

Served at ``GET /v1/openapi.json`` (public: the contract is no secret), built once per
worker and served as cached bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from responder.registry.vocabulary import SERVICE_ARTICLES
from responder.v1.route import AnyRoute
from responder.v1.wire import Problem

OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1.0.0"
_REF: Final = "#/components/schemas/{name}"


class JwkEntry(msgspec.Struct, frozen=True):
    """One key of ``GET /v1/keys`` (RFC 7517 §4): the answer-signing key, with its certificate."""

    kty: str
    n: str
    e: str
    use: str
    alg: str
    kid: str
    x5c: list[str]


class Jwks(msgspec.Struct, frozen=True):
    """A JSON Web Key Set (RFC 7517 §5)."""

    keys: list[JwkEntry]


_RETRY_AFTER: Final = {
    "description": "Seconds to wait before asking again (RFC 9110 §10.2.3)",
    "schema": {"type": "integer", "minimum": 1},
    "required": True,
}
_PROBLEMS: Final = {
    400: "Bad input: malformed JSON, an unknown field, a value out of bounds; `field` names it. Nothing is counted.",
    401: "No registered party proved itself (Act §17(1), §36(1)); nothing was looked up.",
    403: "The agreement (取決め) or the law refuses this party this service now (the rule and article are named). Not counted in the ledger.",
    405: "The route does not take this method.",
    413: "The body is over the server's size limit (`too_large`; far less without a credential), refused before it is read: send fewer entries per call.",
    414: "The request target (path and query) is over the server's header size limit (`too_large`, [server.limits] max_header_bytes), refused before it is read whole.",
    415: "The body is not application/json.",
    431: "The header fields are over the server's header size limit (`too_large`, [server.limits] max_header_bytes), refused before they are read whole.",
    429: "The agreed quota is used up (`quota`): requests per second or per day, or provisions per day (`provisions_per_day`, 件数: one per entry answered, change delivered, record or serial list given), for which a call that would pass the bound is refused whole, nothing counted, and the problem says how many remain (`remaining`) and when the Japan day turns (`resetsAt`, 00:00 JST); or the party's earlier large calls still hold its share of the worker's batch thread (`fair_share`); see Retry-After.",
    503: "The answer could not be completed (`unavailable`), or a value it reads from the store is damaged (`store_damaged`: the operator restores the store); nothing is counted; retry, after Retry-After.",
}


def _problem_responses(
    codes: Sequence[int], described: Sequence[tuple[int, str]] = ()
) -> dict[str, Any]:
    words = dict(_PROBLEMS)
    for code, what in described:  # a route's own (`Route.problems`)
        words[code] = f"{words[code]} {what}" if code in words else what
    out: dict[str, Any] = {}
    for code in sorted({*codes, *(c for c, _ in described)}):
        entry: dict[str, Any] = {
            "description": words[code],
            "content": {
                "application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}
            },
        }
        if code in (429, 503):  # a 503 says when to retry (`Route.retry_after`; else 1 s)
            entry["headers"] = {"Retry-After": _RETRY_AFTER}
        if code == 405:
            entry["headers"] = {"Allow": {"schema": {"type": "string"}, "required": True}}
        out[str(code)] = entry
    return out


def _accepted(ok: dict[str, Any], code: int, what: str) -> dict[str, Any]:
    """A success status besides 200 (`Route.accepted`): the answer's schema and headers; a 202
    with ``Retry-After`` (`responder.v1.route.Reply.retry_after`). Not the 200's links: what
    they read (a token's serial) is in a 200 only."""
    entry = {k: v for k, v in ok.items() if k != "links"} | {"description": what}
    if code == 202:
        entry["headers"] = {**ok.get("headers", {}), "Retry-After": _RETRY_AFTER}
    return entry


def document(routes: Sequence[AnyRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` and the public documents."""
    types: list[Any] = [Problem, Jwks]
    for r in routes:
        types += [r.request, r.response]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, Any] = {}
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"mutualTLS": []}]
    for r in routes:
        ok: dict[str, Any] = {
            "description": "The answer.",
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(name=r.response.__name__)}}
            },
        }
        if r.signed:
            ok["headers"] = {
                "JWS-Signature": {
                    "description": "Detached JWS (RFC 7515 appendix F) over the exact body, "
                    f"by {r.signer}",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$"},
                }
            }
        links: dict[str, Any] = {}
        if r.follow:
            links["next"] = {
                "operationId": r.name,
                "description": "The next call reads on from where this answer stopped.",
                "parameters": {name: f"$response.body#{at}" for name, at in r.follow},
            }
        for link in r.links:
            entry: dict[str, Any] = {"operationId": link.operation, "description": link.description}
            if link.parameters:
                entry["parameters"] = dict(link.parameters)
            if link.body is not None:
                entry["requestBody"] = link.body
            links[link.name] = entry
        if links:
            ok["links"] = links
        articles = ", ".join(f"{s.value} ({SERVICE_ARTICLES[s]})" for s in r.services)
        op: dict[str, Any] = {
            "operationId": r.name,
            "summary": r.summary,
            "description": f"{r.description}\n\nServices: {articles}; method `json`.".strip(),
            "security": security,
            "responses": {
                "200": ok,
                **{str(code): _accepted(ok, code, what) for code, what in r.accepted},
                **_problem_responses(
                    (400, 401, 403, 405, 414, 429, 431, 503)
                    + ((413, 415) if r.method == "POST" else ()),
                    r.problems,
                ),
            },
        }
        if r.method == "POST":
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(name=r.request.__name__)}}
                },
            }
        else:
            schema = components[r.request.__name__]
            required = set(schema.get("required", ()))
            op["parameters"] = [
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                for name, prop in schema.get("properties", {}).items()
            ]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    paths["/v1/keys"] = {
        "get": {
            "operationId": "keys",
            "summary": "The answer-signing key and its certificate (JWKS), public",
            "security": [],
            "responses": {
                "200": {
                    "description": "The JSON Web Key Set.",
                    "content": {
                        "application/jwk-set+json": {"schema": {"$ref": _REF.format(name="Jwks")}}
                    },
                }
            },
        }
    }
    paths["/v1/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document, public",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    del refs
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "jpki-va JSON API",
            "version": API_VERSION,
            "description": "The provisions of the 公的個人認証法 (Act §18, §37, §38-3) beyond OCSP "
            "and the CRL files, to registered parties (署名検証者等, 利用者証明検証者) under their "
            "agreements (取決め). Errors are RFC 9457 problem details naming the rule and "
            "the field, never the data.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "mutualTLS": {"type": "mutualTLS"},
            },
        },
    }


def document_bytes(routes: Sequence[AnyRoute]) -> bytes:
    return msgspec.json.encode(document(routes))
