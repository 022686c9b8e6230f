"""No value of the input in a decoding error: the quarantine (and the store's outbox that
stages it) and the /v1 problem answers, which are logged as they are, say what is wrong and
where, never the unknown field's name, the enum value or the tag that a record line or a
request body carried (the four facts, 基本4情報, Act §7(1)(3); Act §44, §45)."""

from __future__ import annotations

import msgspec
import pytest

from crlbuilder.decodeerror import fields_at, redact
from crlbuilder.ingest import Rejected, decode_item, quarantine_entry
from crlbuilder.model import Record
from responder.v1 import problem
from tests.support.pki import Ca
from tests.test_v1_recordinfo import Api, cas, population  # noqa: F401  (the CA fixture)

NAME = "監査　花子"
BIRTH = "419990101"

_ISSUANCE = (
    '{"type":"issuance","id":"aud-1","recorded_at":"2026-01-05T00:00:00Z","serial":17,'
    '"family":"sign-card","issuer":"sign-card-g2","not_before":"2026-01-05T00:00:00Z",'
    '"not_after":"2030-01-05T00:00:00Z","holder":"' + "ab" * 32 + '",'
    '"facts":{"name":"' + NAME + '","sex":"2","birth_date":"' + BIRTH + '","address":"a"}'
)


@pytest.mark.parametrize(
    ("line", "reason", "field"),
    [
        # a key of the line that is no field of a record (a fact put as a key)
        (_ISSUANCE + ',"' + NAME + BIRTH + '":1}', "Object contains unknown field (accepted "
         "there: `type`, `id`, `recorded_at`, `serial`, `family`, `issuer`, `not_before`, "
         "`not_after`, `holder`, `facts`, `card_serial`, `renewal`)", None),
        # an enum value: the sex
        (_ISSUANCE.replace('"sex":"2"', '"sex":"' + NAME + '"') + "}",
         "Invalid enum value - at `$.facts.sex`", "$.facts.sex"),
        # the record's tag
        ('{"type":"' + NAME + BIRTH + '","id":"aud-2"}', "Invalid value - at `$.type`", "$.type"),
    ],
)  # fmt: skip
def test_a_quarantined_line_keeps_none_of_its_values(
    line: str, reason: str, field: str | None
) -> None:
    got = decode_item("/feed/9001.jsonl", 3, line.encode())
    assert isinstance(got, Rejected)
    entry = quarantine_entry(got.source, got.line, got.reason, got.record_id)
    text = msgspec.json.encode(entry).decode()
    assert NAME not in text and BIRTH not in text and "監査" not in text, text
    assert entry.reason == reason and entry.field == field and entry.line == 3


def test_redact_keeps_the_path_and_what_names_no_value() -> None:
    assert redact("Object contains unknown field `x` - at `$.entries[0]`") == (
        "Object contains unknown field - at `$.entries[0]`"
    )
    # a key that imitates a path does not leave part of itself behind
    assert redact(f"Object contains unknown field `{NAME}` - at `$x` {BIRTH}` - at `$.a`") == (
        "Object contains unknown field - at `$.a`"
    )
    assert redact(f"Invalid enum value {BIRTH}") == "Invalid enum value"
    for plain in ("Expected `int`, got `str` - at `$.serial`", "Object missing required field `a`"):
        assert redact(plain) == plain


@pytest.mark.parametrize(
    "body",
    [
        {"certificate": {"issuer": "sign-card-g1", "serial": "a2"}, "counterpart": NAME + BIRTH},
        {"certificate": {"issuer": "sign-card-g1", "serial": "a2"}, "counterpart": "sign-mobile",
         NAME: BIRTH},
        {"certificate": {"issuer": "sign-card-g1", "serial": "a2", NAME + BIRTH: 1},
         "counterpart": "sign-mobile"},
    ],
)  # fmt: skip
def test_a_v1_problem_echoes_no_value_of_the_body(
    cas: dict[int, Ca],  # noqa: F811
    body: dict[str, object],
) -> None:
    api = Api(population(cas), None)
    resp, got = api.call(b"/v1/corresponding", msgspec.json.encode(body), "both")
    assert resp.status == 400, got
    raw = bytes(resp.body).decode()
    assert "監査" not in raw and BIRTH not in raw, raw
    assert got["field"].startswith("$") and got["detail"]
    assert api.ledger.counted == []


def test_from_decode_error_keeps_the_field() -> None:
    class Body(msgspec.Struct, forbid_unknown_fields=True):
        a: int = 0

    try:
        msgspec.json.decode(b'{"' + NAME.encode() + b'":1}', type=Body)
    except msgspec.ValidationError as e:
        got = problem.from_decode_error(e)
    assert got.field == "$" and got.detail == "Object contains unknown field"


class _Entry(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    issuer_id: str
    serial: str = ""


class _Tagged(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="t"):
    x: int = 0


class _Other(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="o"):
    y: int = 0


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    entries: list[_Entry]
    one: _Entry | None = None
    by_key: dict[str, _Entry] = {}
    either: _Tagged | _Other | None = None


def test_an_unknown_field_is_answered_with_the_fields_accepted_there_never_its_name() -> None:
    """Where the field is and what would be accepted there (the schema's names, camelCase as
    encoded), so its author can mend the request without the message quoting it."""
    body = b'{"entries":[{"issuerId":"a"},{"issuerId":"b","' + NAME.encode() + b'":1}]}'
    try:
        msgspec.json.decode(body, type=_Batch)
    except msgspec.ValidationError as e:
        got = problem.from_decode_error(e, _Batch, body)
    assert got.field == "$.entries[1]", got
    assert got.detail == "Object contains unknown field (accepted there: `issuerId`, `serial`)"
    assert NAME not in msgspec.json.encode(got).decode()


@pytest.mark.parametrize(
    ("path", "document", "fields"),
    [
        ("", b'{"entries":[]}', ("entries", "one", "by_key", "either")),
        (".one", b'{"entries":[],"one":{}}', ("issuerId", "serial")),
        (".either", b'{"entries":[],"either":{"kind":"o"}}', ("kind", "y")),
        (".either", b'{"entries":[],"either":{"kind":"t"}}', ("kind", "x")),
        (".entries[0]", b'{"entries":[{}]}', ("issuerId", "serial")),
        # nowhere one object type: a dict's key (msgspec writes [...]), a position past the
        # list, a union's member no tag names, a path the schema does not have
        (".by_key[...]", b'{"entries":[],"by_key":{"k":{}}}', None),
        (".entries[3]", b'{"entries":[{}]}', None),
        (".either", b'{"entries":[],"either":{}}', None),
        (".nowhere", b'{"entries":[]}', None),
        (".entries[0]", b"not json", None),
    ],
)
def test_fields_at_walks_the_schema_beside_the_document(
    path: str, document: bytes, fields: tuple[str, ...] | None
) -> None:
    assert fields_at(_Batch, path, document) == fields


def test_a_record_line_is_told_the_fields_of_its_own_type() -> None:
    """A tagged union (a record's ``type``) lists its member's fields, tag first."""
    doc = b'{"type":"consent","id":"c-1","' + NAME.encode() + b'":true}'
    try:
        msgspec.json.decode(doc, type=Record)
    except msgspec.ValidationError as e:
        text = redact(str(e), Record, doc)
    assert text == (
        "Object contains unknown field (accepted there: `type`, `id`, `recorded_at`, "
        "`holder`, `verifier`, `granted`)"
    )
    assert redact(text) == text  # the quarantine redacts again: the list stays


def test_a_key_that_imitates_the_list_does_not_pass_through() -> None:
    forged = f"Object contains unknown field `) (accepted there: {NAME}` - at `$.a`"
    assert redact(forged) == "Object contains unknown field - at `$.a`"
