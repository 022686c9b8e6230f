"""The /v1 OpenAPI 3.1 contract: generated from the route table's Structs, served at
/v1/openapi.json, and the real server's answers conform to it (schemathesis)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from responder.v1.openapi import document
from responder.v1.table import ROUTES
from tests.conftest import Built
from tests.support.harness import start_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


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


CREDENTIALS: dict[str | None, int] = {
    "both-verifier": 40,  # every service of the 署名検証者 and 利用者証明検証者 titles
    "sig-verifier": 10,  # auth entries refused per entry, auth services per call
    "member-1": 10,  # a 署名確認者: refused per call (Act §20(1))
    None: 10,  # no credential: 401
}
"""Generated cases per operation for each credential: a few hundred in all, well under a minute."""


def test_the_real_server_conforms_to_its_openapi_document(built: Built, tmp_path: Path) -> None:
    """No 5xx, and every answer (success or problem) matches its schema, status and headers,
    for valid, example and invalid requests, with and without a registered party."""
    with start_server(built, tmp_path) as s:
        code, served = s.get("/v1/openapi.json")
        assert code == 200
        assert msgspec.json.decode(served) == msgspec.json.decode(
            msgspec.json.encode(document(ROUTES))
        )
        schema = schemathesis.openapi.from_url(f"{s.url}/v1/openapi.json")
        for party, examples in CREDENTIALS.items():
            headers = {"Authorization": f"Bearer {s.token(party)}"} if party else {}
            for result in schema.get_all_operations():
                check(result.ok(), s.url, headers, examples)


def check(operation: Any, url: str, headers: dict[str, str], examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=st.one_of(
            *operation.get_strategies_from_examples(),  # the schema's examples
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),  # invalid on purpose
        )
    )
    def conforms(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=10)
        case.validate_response(response, checks=CHECKS)

    conforms()


def test_the_changes_feed_links_hold_on_the_real_server(built: Built, tmp_path: Path) -> None:
    """Schemathesis' stateful phase follows the document's links (the answer's cursor into
    the next GET /v1/changes): every answer along the way conforms, as in the test above."""
    with start_server(built, tmp_path) as s:
        schema = schemathesis.openapi.from_url(f"{s.url}/v1/openapi.json")
        headers = {"Authorization": f"Bearer {s.token('both-verifier')}"}
        machine = schema.as_state_machine()
        followed: list[str] = []
        answered: set[str] = set()

        class Walk(machine):  # type: ignore[misc, valid-type]
            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                if case.path == "/v1/changes" and case.query and case.query.get("cursor"):
                    followed.append(str(case.query["cursor"]))
                return {"base_url": s.url, "headers": headers, "timeout": 10}

            def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
                case.validate_response(response, checks=CHECKS)
                if case.path == "/v1/changes" and response.status_code == 200:
                    answered.add(response.json()["cursor"])

        Walk.run(
            settings=settings(
                max_examples=15, stateful_step_count=4, deadline=None, database=None,
                derandomize=True, suppress_health_check=list(HealthCheck),
            )
        )  # fmt: skip
        assert answered.intersection(followed), "no call read on from an answer's cursor"
