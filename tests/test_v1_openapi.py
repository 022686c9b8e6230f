"""The /v1 OpenAPI 3.1 contract: generated from the route table's Structs, served at
/v1/openapi.json, and the real server's answers conform to it (schemathesis).

The real server runs TLS with optional client certificates, so each documented route is
asked with a registered party's client certificate (``mutualTLS``), with its bearer token
(``bearer``; schemathesis' ``ignored_auth`` then asks again without it and with a wrong
one) and with neither, in positive and negative generation modes, under every check of
`CHECKS` and the two of this file: `problem_details` (RFC 9457: ``type``, ``title``,
``status`` as sent, none of the request's values) and, without a credential,
`refused_unauthenticated` (401 before anything is looked up). An answer given to a client
certificate is asked again without it: 401. The stateful test follows the document's links
(the changes feed's next page, the feed after a watch)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import requests
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crlbuilder.tokenrequest import party_uri
from responder.v1.openapi import document
from responder.v1.table import ROUTES
from tests.conftest import Built
from tests.support.harness import Server, start_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
"""Every schemathesis check the brief names but ``ignored_auth``, which the bearer runs add:
it asks again without the ``Authorization`` the case was sent with, and a client certificate
is not a header (`check` asks again without the certificate instead)."""


def test_the_document_is_generated_from_the_route_table() -> None:
    doc = document(ROUTES)
    assert doc["openapi"] == "3.1.0"
    for r in ROUTES:
        op = doc["paths"][r.path][r.method.lower()]
        assert op["operationId"] == r.name
        # the very schema msgspec derives from the Struct the dispatcher decodes with
        _, components = msgspec.json.schema_components(
            [r.request], ref_template="#/components/schemas/{name}"
        )
        assert doc["components"]["schemas"][r.request.__name__] == components[r.request.__name__]
        assert set(op["responses"]) >= {"200", "400", "401", "403", "429"}
        if r.method == "POST":  # a body over the limit: the problem the server answers
            too_large = op["responses"]["413"]
            assert "application/problem+json" in too_large["content"]
    assert doc["paths"]["/v1/keys"]["get"]["security"] == []
    # the changes feed's answer names the next page's cursor (an OpenAPI link)
    link = doc["paths"]["/v1/changes"]["get"]["responses"]["200"]["links"]["next"]
    assert link["operationId"] == "changes"
    assert link["parameters"] == {"cursor": "$response.body#/cursor"}
    # its 400 says an altered cursor is bad input (not issued here), its 410 is retention's
    feed = doc["paths"]["/v1/changes"]["get"]["responses"]
    assert (
        "did not issue" in feed["400"]["description"] and "`$.cursor`" in feed["400"]["description"]
    )
    assert "retention" in feed["410"]["description"]
    # a cursor is the party's own, and a change delivered again is not counted again
    assert "another party's" in feed["400"]["description"]
    described = doc["paths"]["/v1/changes"]["get"]["description"]
    assert "**the first time**" in described and "not counted again" in described
    # a route's own problem statuses are listed too (a changes feed's 410, say)
    gone = dataclasses.replace(ROUTES[0], path="/v1/x", name="x", problems=((410, "gone"),))
    assert document([gone])["paths"]["/v1/x"]["post"]["responses"]["410"]["description"] == "gone"
    schemathesis.openapi.from_dict(doc)  # a document schemathesis accepts


Identity = tuple[str, str | None, int]
IDENTITIES: tuple[Identity, ...] = (
    ("mtls", "both-verifier", 8),  # every service of 署名検証者 and 利用者証明検証者 titles
    ("mtls", "specified-verifier", 4),  # the 特定利用者証明検証者 (POST /v1/token only)
    ("bearer", "sig-verifier", 4),  # auth entries refused per entry, auth services per call
    ("bearer", "member-1", 2),  # a 署名確認者: refused per call (Act §20(1))
    ("none", None, 4),  # no credential: 401, before any lookup
)
"""(proof, party, generated cases per operation and mode): about 300 requests."""
PROBLEM_TYPE: Final = "urn:jpki-va:problem:"
VOCABULARY: Final = msgspec.json.encode(document(ROUTES)).decode()
"""The document's text: a request value found in it is a word of the rules, not data."""


def problem_details(response: Any, case: Any) -> None:
    """A refusal is an RFC 9457 problem (§3.1): ``application/problem+json`` whose ``type``
    names the rule, ``title`` says it, ``status`` is the status sent; and it repeats none of
    the request's values (a serial, a certificate, a cursor): nothing personal in an error.
    A value that is a word of the document itself (a family's name, an enum's value) is the
    rules' vocabulary, not data."""
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == ["application/problem+json"], response.headers
    got = response.json()
    assert got["status"] == response.status_code, got
    assert got["type"] == PROBLEM_TYPE + got["rule"] and got["title"], got
    text = response.text
    for value in _strings([case.body, case.query]):
        assert value in VOCABULARY or value not in text, (value, got)


def _strings(value: object) -> list[str]:
    """The request's string values long enough to be data rather than a word of the rules."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) and len(value) >= 8 else []


def refused_unauthenticated(response: Any) -> None:
    """Without a credential every documented route refuses before any lookup: 401 with
    ``WWW-Authenticate``, whatever the body (well formed or not)."""
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["www-authenticate"] == ["Bearer"]
    assert response.json()["rule"] == "unauthenticated"


def test_the_real_server_conforms_to_its_openapi_document(built: Built, tmp_path: Path) -> None:
    """No 5xx, and every answer (success or problem) matches its schema, status and headers,
    for valid, example and invalid requests, by client certificate, by bearer token and with
    neither; every refusal a problem naming no data; nothing answered without a credential."""
    with tls_server(built, tmp_path) as (s, ca):
        code, served = s.get("/v1/openapi.json", ca=ca)
        assert code == 200
        assert msgspec.json.decode(served) == msgspec.json.decode(
            msgspec.json.encode(document(ROUTES))
        )
        schema = schemathesis.openapi.from_url(f"{s.url}/v1/openapi.json", verify=ca)
        statuses: dict[tuple[str, str, str], set[int]] = {}
        for identity in IDENTITIES:
            with requests.Session() as session:
                session.verify = ca
                for result in schema.get_all_operations():
                    operation = result.ok()
                    if operation.path in PUBLIC or (
                        identity[1] == "specified-verifier" and operation.path != "/v1/token"
                    ):
                        continue
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        seen = check(operation, s, identity, session, mode)
                        key = (identity[0], identity[1] or "", operation.label)
                        statuses.setdefault(key, set()).update(seen)
        # not vacuous: each route took each proof of a registered party (never 401) and
        # answered past decoding (a success, or a refusal of what was asked), and refused bad
        # input; without a credential, nothing but 401
        for route in ROUTES:
            label = f"{route.method} {route.path}"
            who = "specified-verifier" if route.name == "token" else "both-verifier"
            for proof, party in (("mtls", who), ("bearer", "sig-verifier")):
                seen = statuses[(proof, party, label)]
                assert 401 not in seen and seen - {400}, (proof, party, label, seen)
            assert 400 in statuses[("mtls", who, label)], label
            assert statuses[("none", "", label)] == {401}, (label, statuses)
        for path in ("/v1/status", "/v1/watch", "/v1/changes", "/v1/verify", "/v1/token"):
            party = "specified-verifier" if path == "/v1/token" else "both-verifier"
            [route] = (r for r in ROUTES if r.path == path)
            assert statuses[("mtls", party, f"{route.method} {path}")] & {200, 202}, path
        # what the HTTP layer refuses before the app reads it (a target or header fields over
        # [server.limits] max_header_bytes, a body over its limit) is the API's problem too, with
        # a status the document lists
        oversized(schema, s, session_cert=s.client_cert("both-verifier"))
        # the public documents: no credential needed
        for path in PUBLIC:
            assert s.get(path, ca=ca)[0] == 200


PUBLIC: Final = ("/v1/openapi.json", "/v1/keys")
MAX_HEADER_BYTES: Final = 8192
"""`responder.config.LimitsConfig.max_header_bytes`'s default: the request line and headers."""


def oversized(schema: Any, s: TlsServer, session_cert: tuple[str, str]) -> None:
    """A target over the header limit (414), header fields over it (431), a body over the
    limit (413; without a credential, 64 KiB): each a problem+json the document lists, for
    every documented route."""
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    pad = "A" * MAX_HEADER_BYTES
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in PUBLIC:
            continue
        post = operation.method == "post"
        body: dict[str, Any] = {"media_type": JSON, "body": {}} if post else {}
        cases = [
            (414, operation.Case(query={"cursor": pad}, **body), {}, session_cert),
            (431, operation.Case(**body), {"X-Padding": pad}, session_cert),
        ]
        if post:
            big = operation.Case(body={"csr": "A" * (100 << 10)}, media_type=JSON)
            cases.append((413, big, {}, None))
        for status, case, headers, cert in cases:
            response = case.call(
                base_url=s.url, headers=headers, cert=cert, verify=s.ca, timeout=10
            )
            assert response.status_code == status, (operation.label, status, response.text)
            case.validate_response(response, checks=checks)
            problem_details(response, case)


JSON: Final = "application/json"
CSR: Final = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "specified-verifier")]))
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(party_uri("specified-verifier"))]
        ),
        critical=False,
    )
    .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
    .decode()
)
"""A well-formed PKCS#10 request of an EC P-256 key, bound to the party that sends it
(`crlbuilder.tokenrequest.party_uri`): POST /v1/token queues it (202)."""


def check(
    operation: Any, s: TlsServer, identity: Identity, session: Any, mode: GenerationMode
) -> set[int]:
    """Generated cases of ``operation`` as ``identity`` in ``mode``: the statuses seen."""
    proof, party, examples = identity
    headers: dict[str, str] = {}
    if proof == "bearer" and party is not None:
        headers = {"Authorization": f"Bearer {s.token(party)}"}
    cert = s.client_cert(party) if proof == "mtls" and party is not None else None
    checks = [*CHECKS, ignored_auth] if proof == "bearer" else CHECKS
    transport = {"base_url": s.url, "headers": headers, "verify": s.ca, "timeout": 10}
    seen: set[int] = set()
    strategies = [operation.as_strategy(mode)]
    if mode is GenerationMode.POSITIVE:
        strategies += operation.get_strategies_from_examples()  # the schema's examples
        if operation.path == "/v1/token":  # a CSR is not generated at random: one made here
            strategies.append(st.just(operation.Case(body={"csr": CSR}, media_type=JSON)))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*strategies))
    def conforms(case: Any) -> None:
        response = case.call(
            base_url=s.url, session=session, headers=headers, cert=cert, verify=s.ca, timeout=10
        )
        seen.add(response.status_code)
        case.validate_response(response, checks=checks, headers=headers, transport_kwargs=transport)
        problem_details(response, case)
        if proof == "none":
            refused_unauthenticated(response)
        if cert is not None and response.status_code < 300:
            # the same request without the client certificate: refused, nothing looked up
            bare = case.call(base_url=s.url, headers=headers, verify=s.ca, timeout=10)
            refused_unauthenticated(bare)

    conforms()
    return seen


@dataclasses.dataclass(frozen=True)
class TlsServer:
    """`tests.support.harness.Server` behind TLS, client certificates optional."""

    server: Server
    ca: str
    """The demo client-and-TLS CA (PEM): verifies the server, issued the parties' certificates."""

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, party: str) -> str:
        return self.server.token(party)

    def client_cert(self, party: str) -> tuple[str, str]:
        d = self.server.built.pki / "parties"
        return (str(d / f"{party}.pem"), str(d / f"{party}.key"))

    def get(self, path: str, *, ca: str) -> tuple[int, bytes]:
        r = requests.get(f"{self.url}{path}", verify=ca, timeout=10)
        return r.status_code, r.content


@contextlib.contextmanager
def tls_server(built: Built, tmp_path: Path) -> Iterator[tuple[TlsServer, str]]:
    """`start_server` with TLS (the demo server certificate), client certificates asked for
    and optional (the parties' demo certificates, registered as their ``mtls`` credential),
    and the token directories (POST /v1/token queues a request: 202)."""
    tls = built.pki / "tls"
    requests_dir = tmp_path / "token-requests"
    requests_dir.mkdir()
    extra = (
        "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key"),
        "--tls-client-ca", str(tls / "client-ca.pem"), "--tls-client-cert", "optional",
        "--token-requests", str(requests_dir), "--token-issued", str(tmp_path / "token-issued"),
    )  # fmt: skip
    with start_server(built, tmp_path / "server", extra=extra) as s:
        assert s.url.startswith("https://")
        ca = str(tls / "client-ca.pem")
        yield TlsServer(s, ca), ca


def test_the_links_hold_on_the_real_server(built: Built, tmp_path: Path) -> None:
    """Schemathesis' stateful phase follows the document's links (the answer's cursor into
    the next GET /v1/changes; a watch, then the feed), by a client certificate: every answer
    along the way conforms, as in the test above."""
    with tls_server(built, tmp_path) as (s, ca):
        schema = schemathesis.openapi.from_url(f"{s.url}/v1/openapi.json", verify=ca)
        kwargs = {"base_url": s.url, "cert": s.client_cert("both-verifier"), "verify": ca}
        machine = schema.as_state_machine()
        followed: list[str] = []
        answered: set[str] = set()
        links: set[tuple[str, int]] = set()
        statuses: list[tuple[str, int]] = []
        watched = [{"issuer": a.issuer, "serial": f"{a.serial:x}"} for a in built.answers[:3]]

        class Walk(machine):  # type: ignore[misc, valid-type]
            def step(self, input: Any) -> Any:
                out = super().step(input)
                if input.transition is not None and input.is_applied:
                    links.add((input.transition.id, out.response.status_code))
                statuses.append((input.case.path, out.response.status_code))
                return out

            def before_call(self, case: Any) -> None:
                if case.path == "/v1/watch":  # certificates it serves: a watch that is taken
                    case.body = {"add": watched, "remove": []}

            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                if case.path == "/v1/changes" and case.query and case.query.get("cursor"):
                    followed.append(str(case.query["cursor"]))
                return {**kwargs, "timeout": 10}

            def validate_response(self, response: Any, case: Any, **kw: Any) -> None:
                case.validate_response(response, checks=CHECKS, transport_kwargs=kw)
                problem_details(response, case)
                if case.path == "/v1/changes" and response.status_code == 200:
                    answered.add(response.json()["cursor"])

        Walk.run(
            settings=settings(
                max_examples=15, stateful_step_count=4, deadline=None, database=None,
                derandomize=True, suppress_health_check=list(HealthCheck),
            )
        )  # fmt: skip
        assert answered.intersection(followed), ("no call read on from a cursor", links, statuses)
        assert ("GET /v1/changes -> [200] next -> GET /v1/changes", 200) in links, links
        assert ("POST /v1/watch -> [200] changes -> GET /v1/changes", 200) in links, links
