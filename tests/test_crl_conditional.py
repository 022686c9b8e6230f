"""`responder.crlfiles.not_modified`: when a GET of a CRL file gets 304 (RFC 9110 §13.1);
`responder.crlfiles.behind`: when the party holds a newer CRL than this node's."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from responder.crlfiles import CrlFile, CrlFiles, behind, not_modified
from tests.conftest import Built

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


def test_the_same_crl_has_the_same_validators_on_every_node(built: Built, tmp_path: Path) -> None:
    """Several nodes serve the signer's CRL, each placed by its own fetch
    (`crlbuilder.crl.shipping`): the same bytes with another mtime, inode and device. The
    validators came from the file's mtime, so a party's ETag from one node never matched on
    another (a whole download again, counted again). They come from the CRL itself now: its
    signature and size (ETag) and its thisUpdate (Last-Modified)."""
    name = "sign-card-g2.crl"
    served = []
    for node, mtime in (("a", MTIME), ("b", MTIME + 7)):
        d = tmp_path / node
        d.mkdir()
        shutil.copyfile(built.crl_dir / name, d / name)
        os.utime(d / name, (mtime, mtime))
        got = CrlFiles(d).get(name)
        assert got is not None
        served.append(got)
    a, b = served
    assert a.identity != b.identity and bytes(a.body) == bytes(b.body)
    assert a.etag == b.etag and a.headers == b.headers
    crl = x509.load_der_x509_crl(bytes(a.body))
    this_update = formatdate(crl.last_update_utc.timestamp(), usegmt=True).encode()
    assert dict(a.headers)[b"last-modified"] == this_update
    assert not_modified({b"if-none-match": a.etag}, b)
    assert not_modified({b"if-modified-since": this_update}, b)


def test_another_crl_of_the_same_size_has_another_etag(built: Built, tmp_path: Path) -> None:
    """A file's ETag names its content: the full CRL and a same-sized other CRL differ, and a
    file that is not a CRL (never served: `test_a_file_cut_short_is_not_whole_and_logged_once`) has
    validators of the file itself."""
    full = (built.crl_dir / "sign-card-g2.crl").read_bytes()
    (tmp_path / "x.crl").write_bytes(full)
    other = bytearray(full)
    other[-1] ^= 1  # another signature
    (tmp_path / "y.crl").write_bytes(bytes(other))
    (tmp_path / "z.crl").write_bytes(b"0" * len(full))
    files = CrlFiles(tmp_path)
    x, y, z = (files.get(n) for n in ("x.crl", "y.crl", "z.crl"))
    assert x is not None and y is not None and z is not None
    assert len({x.etag, y.etag, z.etag}) == 3


def test_no_cache_keeps_a_crl_past_a_newer_one(crl: CrlFile) -> None:
    """With only ``private`` and a Last-Modified, a party's own HTTP cache may reuse a CRL for
    a tenth of its age without asking (heuristic freshness, RFC 9111 §4.2.2): a delta CRL
    hours old, after a newer one was published, and up to a tenth of the cycle past the
    file's nextUpdate. ``no-cache`` makes it ask each time; the answer is a 304 while the
    file is the same, which neither counts nor uses the quota or the cycle."""
    directives = {d.strip() for d in dict(crl.headers)[b"cache-control"].split(b",")}
    assert {b"private", b"no-cache"} <= directives
    assert not any(d.startswith((b"max-age", b"s-maxage")) for d in directives)


def test_a_file_cut_short_is_not_whole_and_logged_once(
    built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decision C of the public routes' reading: a file in the CRL directory that is not one
    whole CRL was served and counted. `CrlFile.whole` says so (the app answers 503), the
    file holds no map, and the worker logs it once per version of the file, by name and
    what is wrong with its DER, never its bytes."""
    full = (built.crl_dir / "sign-card-g2.crl").read_bytes()
    (tmp_path / "a.crl").write_bytes(full[:-10])  # cut short
    (tmp_path / "b.crl").write_bytes(full + b"\x00")  # trailing bytes
    (tmp_path / "c.crl").write_bytes(b"")
    (tmp_path / "d.crl").write_bytes(full)
    files = CrlFiles(tmp_path)
    with caplog.at_level(logging.ERROR, logger="responder.crlfiles"):
        for _ in range(3):
            got = {n: files.get(n) for n in ("a.crl", "b.crl", "c.crl", "d.crl")}
    assert {n: (f.whole, len(f.body)) for n, f in got.items() if f is not None} == {
        "a.crl": (False, 0), "b.crl": (False, 0), "c.crl": (False, 0), "d.crl": (True, len(full)),
    }  # fmt: skip
    logged = [(r.getMessage(), r.__dict__["fields"]) for r in caplog.records]
    assert logged == [
        ("crl_file_broken", {"file": "a.crl", "reason": "truncated at offset 0"}),
        ("crl_file_broken", {"file": "b.crl", "reason": "not one CertificateList"}),
        ("crl_file_broken", {"file": "c.crl", "reason": "an empty file"}),
    ]
    caplog.clear()
    (tmp_path / "a.crl.tmp").write_bytes(full[:100])  # another version, still cut short
    os.replace(tmp_path / "a.crl.tmp", tmp_path / "a.crl")
    with caplog.at_level(logging.ERROR, logger="responder.crlfiles"):
        a = files.get("a.crl")
    assert a is not None and not a.whole
    assert [r.__dict__["fields"]["file"] for r in caplog.records] == ["a.crl"]


def _crl_at(directory: Path, name: str, this_update: datetime) -> CrlFile:
    """A CRL of one issuer made at ``this_update``, as file ``name`` of ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .last_update(this_update)
        .next_update(this_update + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(crl.public_bytes(serialization.Encoding.DER))
    got = CrlFiles(directory).get(name)
    assert got is not None and got.whole
    return got


def test_a_node_behind_knows_the_party_holds_a_newer_crl(tmp_path: Path) -> None:
    """Nodes receive a new CRL each by its own fetch (`crlbuilder.crl.shipping`), so for a
    while one serves the new file and another the old. A party that got the new one from the
    first asked the second with its ETag, did not match, and was handed the old file: taken
    back to an older CRL, revocations since missing, until its next cycle. The ETag now
    carries the CRL's thisUpdate, and the node behind sees that the party holds a newer one
    (the app answers 503, retried on another node)."""
    at = datetime(2030, 3, 17, 9, 0, tzinfo=UTC)
    old = _crl_at(tmp_path / "behind", "a.crl", at)
    new = _crl_at(tmp_path / "ahead", "a.crl", at + timedelta(hours=1))
    assert old.this_update == int(at.timestamp())
    assert old.etag.startswith(b'"%x-' % old.this_update)
    for inm, expected in [
        (new.etag, True),
        (b"W/" + new.etag, True),
        (b'"x", ' + new.etag, True),
        (old.etag, False),  # the same file: `not_modified` answers it (304)
        (b"*", False),
        (b'"%x-%s"' % (new.this_update, b"0" * 31), False),  # not this module's form
        (b'"%x-%s"' % (new.this_update, b"g" * 32), True),  # the digest is not read
        (b'"zz-%s"' % (b"0" * 32), False),
        (b'"-5-%s"' % (b"0" * 32), False),
        (b'"%s-%s"' % (b"f" * 17, b"0" * 32), False),  # no thisUpdate that long
        (b'"2f6a1c3b5d7e9f00a1b2c3d4e5f60718"', False),  # an earlier release's tag
    ]:
        assert behind({b"if-none-match": inm}, old) is expected, inm
    assert not behind({}, old)
    assert not behind({b"if-modified-since": b"Mon, 18 Mar 2030 00:00:00 GMT"}, old)
    assert not behind({b"if-none-match": old.etag}, new)  # the newer node: a 200 there


def test_a_file_not_whole_is_never_behind(crl: CrlFile) -> None:
    assert not crl.whole and crl.this_update == 0
    assert not behind({b"if-none-match": b'"%x-%s"' % (2**40, b"0" * 32)}, crl)
