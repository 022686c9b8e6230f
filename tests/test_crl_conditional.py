"""`responder.crlfiles.not_modified`: when a GET of a CRL file gets 304 (RFC 9110 §13.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responder.crlfiles import CrlFile, CrlFiles, not_modified

MTIME = 1_900_000_000  # 2030-03-17T17:46:40Z


@pytest.fixture
def crl(tmp_path: Path) -> CrlFile:
    (tmp_path / "a.crl").write_bytes(b"0" * 100)
    os.utime(tmp_path / "a.crl", (MTIME, MTIME))
    got = CrlFiles(tmp_path).get("a.crl")
    assert got is not None
    return got


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, False),
        ({b"if-none-match": b"ETAG"}, True),
        ({b"if-none-match": b"W/ETAG"}, True),  # weak comparison (§13.1.2)
        ({b"if-none-match": b'"a", ETAG ,"b"'}, True),
        ({b"if-none-match": b"*"}, True),
        ({b"if-none-match": b'"a"'}, False),
        # If-None-Match decides: If-Modified-Since is then ignored (§13.1.3)
        ({b"if-none-match": b'"a"', b"if-modified-since": b"Sun, 17 Mar 2030 17:46:40 GMT"}, False),
        ({b"if-modified-since": b"Sun, 17 Mar 2030 17:46:40 GMT"}, True),
        ({b"if-modified-since": b"Mon, 18 Mar 2030 00:00:00 GMT"}, True),
        ({b"if-modified-since": b"Sun, 17 Mar 2030 17:46:39 GMT"}, False),
        ({b"if-modified-since": b"yesterday"}, False),
        ({b"if-modified-since": b"Sun, 17 Mar 2030 17:46:40"}, False),  # no zone: ignored
    ],
)
def test_not_modified(crl: CrlFile, headers: dict[bytes, bytes], expected: bool) -> None:
    headers = {k: v.replace(b"ETAG", crl.etag) for k, v in headers.items()}
    assert not_modified(headers, crl) is expected


def test_the_validators_are_the_served_header_fields(crl: CrlFile) -> None:
    fields = dict(crl.headers)
    assert fields[b"etag"] == crl.etag
    assert fields[b"last-modified"] == b"Sun, 17 Mar 2030 17:46:40 GMT"
