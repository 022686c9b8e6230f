"""A value ending in a line feed where a pattern's ``$`` took it (msgspec matches as `re.search`:
``$`` before a final ``\\n`` too).

Records (`crlbuilder.ingest.check_line_ends`): a record whose id, issuer, holder key or birth
date ends in ``\\n`` passed (``"<64 hex digits>\\n"``: another holder than the one without it).
It is refused where records enter: a record file or the spool (quarantined, naming the field,
never the value) and ``crlbuilder publish`` (the file refused, nothing published); a message
of the record stream is decoded as before, so that a node replaying what an earlier release
applied decides alike (`crlbuilder.release`). A token request file's id
(`crlbuilder.tokenrequest.RequestId`, never on the stream) and the birth date /v1/record-info
answers with (`responder.v1.recordinfo.Facts`) are exact now. /v1 serials:
tests/test_v1_recordinfo.py, test_v1_status.py, test_v1_changes.py.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder import cli
from crlbuilder.ingest import Located, Rejected, quarantine_entry, read_file
from crlbuilder.model import Issuance
from crlbuilder.options import run_command
from crlbuilder.stream import H_FILE, H_ID, H_LINE, StreamCipher, decode
from crlbuilder.tokenrequest import TokenRequest, read_request
from responder.v1.recordinfo import Facts

HOLDER = "ab" * 32
BIRTH = "319800102"


def issuance(**change: Any) -> dict[str, Any]:
    """A sign-card issuance record as a feed writes it, with ``change`` (dotted ``facts.x``)."""
    rec: dict[str, Any] = {
        "type": "issuance", "id": "i-000001", "recorded_at": "2026-04-01T09:00:00+09:00",
        "serial": 4660, "family": "sign-card", "issuer": "sign-card-g1",
        "not_before": "2026-04-01T09:00:00+09:00", "not_after": "2031-04-01T09:00:00+09:00",
        "holder": HOLDER,
        "facts": {"name": "山田 太郎", "sex": "1", "birth_date": BIRTH, "address": "東京都千代田区"},
    }  # fmt: skip
    for key, value in change.items():
        if key.startswith("facts."):
            rec["facts"][key.removeprefix("facts.")] = value
        else:
            rec[key] = value
    return rec


CASES = [
    ({"id": "i-000001\n"}, "$.id"),
    ({"issuer": "sign-card-g1\n"}, "$.issuer"),
    ({"holder": HOLDER + "\n"}, "$.holder"),
    ({"facts.birth_date": BIRTH + "\n"}, "$.facts.birth_date"),
]


def _file(tmp_path: Path, *records: dict[str, Any]) -> Path:
    path = tmp_path / "20260401.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    return path


@pytest.mark.parametrize(("change", "field"), CASES, ids=[f for _, f in CASES])
def test_a_record_file_line_ending_a_field_in_a_line_feed_is_refused_naming_the_field(
    tmp_path: Path, change: dict[str, str], field: str
) -> None:
    (good, bad) = read_file(_file(tmp_path, issuance(), issuance(**change)))
    assert isinstance(good, Located) and isinstance(good.record, Issuance)
    assert isinstance(bad, Rejected), bad
    assert "ends in a line feed" in bad.reason and f"`{field}`" in bad.reason
    value = next(iter(change.values())).rstrip("\n")
    assert value not in bad.reason
    entry = quarantine_entry(bad.source, bad.line, bad.reason, bad.record_id)
    assert entry.field == field
    if field != "$.id":  # the quarantine keeps the record's id, never another value of it
        assert value not in msgspec.json.encode(entry).decode()


@pytest.mark.parametrize(("change", "field"), CASES, ids=[f for _, f in CASES])
def test_the_record_stream_replays_such_a_record_as_earlier_releases_applied_it(
    change: dict[str, str], field: str
) -> None:
    """A message a release before this one published is applied as it was: the same record,
    line feed and all (every node of the stream decides alike)."""
    cipher = StreamCipher(bytes(range(32)))
    line = msgspec.json.encode(issuance(**change))
    headers = {H_ID: "i-000001", H_FILE: "20260401.jsonl", H_LINE: "1"}
    got = decode(headers, cipher.seal("i-000001", line), cipher)
    assert isinstance(got, Located), got
    assert isinstance(got.record, Issuance)
    rec = got.record
    assert field.endswith("birth_date") or getattr(rec, field.removeprefix("$.")).endswith("\n")


def _publish(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run_command(cli.parser(), ["publish", *argv])
    return code, err.getvalue()


def test_publish_refuses_a_file_holding_such_a_record_before_anything_is_published(
    tmp_path: Path,
) -> None:
    """The refusal names the file, the line and the field (never the value) and comes before
    the command reaches for the cluster: the source below listens nowhere."""
    key = tmp_path / "facts.key"
    cli.write_facts_key(key)
    path = _file(tmp_path, issuance(), issuance(id="i-000002", holder=HOLDER + "\n"))
    code, err = _publish(
        [str(path), "--source", "nats://127.0.0.1:9", "--facts-key-file", str(key)]
    )  # fmt: skip
    assert code == 2, err
    assert f"{path} line 2: `$.holder` ends in a line feed" in err and "nothing published" in err
    assert HOLDER not in err


def test_a_token_request_file_whose_id_ends_in_a_line_feed_is_not_read(tmp_path: Path) -> None:
    at = datetime(2026, 4, 1, tzinfo=UTC)
    good = TokenRequest(id="0" * 32, party="spec", csr=b"x", requested_at=at)
    path = tmp_path / "request.json"
    path.write_bytes(msgspec.json.encode(good))
    assert read_request(path) == good
    path.write_bytes(msgspec.json.encode(msgspec.structs.replace(good, id="0" * 32 + "\n")))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        read_request(path)


def test_the_record_info_birth_date_is_nine_characters_exactly() -> None:
    """Encoded only by the responder, decoded by a party's client from the OpenAPI document:
    its ``$`` is ECMA-262's there (end of input), Python's before a final line feed; a length
    of 9 says the same in both."""
    good = {"name": "山田 太郎", "sex": "1", "birthDate": BIRTH, "address": "東京都千代田区"}
    assert msgspec.json.decode(msgspec.json.encode(good), type=Facts).birth_date == BIRTH
    with pytest.raises(msgspec.ValidationError, match="birthDate"):
        msgspec.json.decode(msgspec.json.encode(good | {"birthDate": BIRTH + "\n"}), type=Facts)
    schema = msgspec.json.schema(Facts)["$defs"]["Facts"]["properties"]["birthDate"]
    assert (schema["minLength"], schema["maxLength"]) == (9, 9)
