"""`crlbuilder import-crl`: the 機構's CRLs into a group appliance's store (団体署名検証者, Act §17(5))."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.apply import Applier, register_issuers
from crlbuilder.build import issuer_table
from crlbuilder.crl import importer as crlimport
from crlbuilder.crl.encode import encode_crl, encode_tbs_certlist
from crlbuilder.demo.pki import init_pki
from crlbuilder.ingest import Quarantine, read_file
from crlbuilder.keys.signer import PemSigner
from crlbuilder.manifest import Manifest
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.support.pki import certificate, rsa_key
from tests.support.store import dump_store

T = datetime(2026, 1, 10, tzinfo=UTC)
NOW = T + timedelta(hours=1)
DAY = 86400
TOKEN = "s3cret-bearer-token-for-tests"
G1 = "sign-card-g1"
G2 = "sign-card-g2"


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


def signer(pki: Manifest, issuer: str) -> PemSigner:
    i = pki.issuer(issuer)
    return PemSigner.from_files(pki.path(i.key), pki.path(i.cert))


def index(pki: Manifest, issuer: str) -> int:
    return pki.issuer(issuer).index


def make_crl(
    pki: Manifest,
    issuer: str,
    number: int,
    entries: Iterable[tuple[int, int, int]],
    *,
    delta_base: int | None = None,
    this_update: datetime = T,
    next_update: datetime | None = None,
) -> bytes:
    s = signer(pki, issuer)
    return encode_crl(
        issuer=s.certificate,
        signer=s,
        number=number,
        this_update=this_update,
        next_update=next_update or this_update + timedelta(days=1),
        entries=entries,
        delta_base=delta_base,
    )


def at(days: float) -> int:
    return int((T - timedelta(days=days)).timestamp())


class Run:
    """One `crlbuilder import-crl` invocation: exit code and stderr."""

    def __init__(self, rc: int, err: str) -> None:
        self.rc = rc
        self.err = err
        self.lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]


def run(store: Path, pki: Manifest, *sources: str | Path, extra: Iterable[str] = ()) -> Run:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    crlimport.add_cli(sub)
    args = p.parse_args(
        [
            "import-crl", "--store", str(store), "--pki", pki.directory,
            "--as-of", NOW.isoformat(), *extra, *map(str, sources),
        ]
    )  # fmt: skip
    buf = io.StringIO()
    rc = args.func(args, log=buf)
    return Run(rc, buf.getvalue())


def write(tmp: Path, name: str, der: bytes) -> Path:
    p = tmp / name
    p.write_bytes(der)
    return p


def revoked(store: Path, idx: int) -> dict[int, tuple[int, int]]:
    """serial -> (revoked_at, reason) of one issuer, from the revoked database."""
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            return {
                int.from_bytes(k[2:], "big"): (e.revoked_at, e.reason)
                for k, e in r.revocations(idx)
            }
    finally:
        s.close()


def statuses(store: Path, idx: int) -> dict[int, sf.StatusRecord]:
    prefix = sf.issuer_prefix(idx)
    return {
        int.from_bytes(k[2:], "big"): sf.unpack_status(v)
        for k, v in dump_store(store)["status"]
        if k[:2] == prefix
    }


def meta(store: Path) -> tuple[int, bytes | None]:
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            return r.generation().commit, sf.MODE_CRL_IMPORT if r.crl_import() else None
    finally:
        s.close()


def crl_state(store: Path, idx: int) -> sf.CrlState:
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            return r.crl_state(idx)
    finally:
        s.close()


def put_responses(store: Path, idx: int, serials: Iterable[int]) -> None:
    """Plant stored OCSP answers, as a pre-signer would have."""
    s = Store.open(store, readonly=False)
    try:
        with s.env.begin(write=True) as txn:
            for n in serials:
                txn.put(
                    sf.status_key(idx, n),
                    sf.pack_response(
                        version=1, this_update=0, next_update=0, signer_id=bytes(8), stem=b"answer"
                    ),
                    db=s.dbs[sf.DB_RESPONSES],
                )
    finally:
        s.close()


def response_serials(store: Path, idx: int) -> set[int]:
    prefix = sf.issuer_prefix(idx)
    return {
        int.from_bytes(k[2:], "big") for k, _ in dump_store(store)["responses"] if k[:2] == prefix
    }


BASE = [(101, at(30), 1), (205, at(20), 0), (307, at(10), 4), (4096, at(5), 5)]


@pytest.fixture
def imported(tmp_path: Path, pki: Manifest) -> Path:
    """A store holding full CRL 10 of sign-card-g1 (the BASE entries)."""
    store = tmp_path / "store"
    r = run(store, pki, write(tmp_path, "full10.crl", make_crl(pki, G1, 10, BASE)))
    assert r.rc == 0, r.err
    return store


def refused(r: Run, *words: str) -> None:
    assert r.rc == 1, r.err
    assert r.lines[-1]["status"] == "refused"
    for w in words:
        assert w in r.lines[-1]["error"], r.lines[-1]["error"]


# ---------------------------------------------------------------------------
# full CRLs
# ---------------------------------------------------------------------------


def test_first_full_import(tmp_path: Path, pki: Manifest) -> None:
    store = tmp_path / "store"
    r = run(store, pki, write(tmp_path, "a.crl", make_crl(pki, G1, 10, BASE)))
    assert r.rc == 0, r.err
    [line] = r.lines
    assert line["status"] == "imported" and line["issuer"] == G1 and line["number"] == 10
    assert (line["added"], line["removed"], line["unchanged"], line["delta"]) == (4, 0, 0, False)
    idx = index(pki, G1)
    commit, mode = meta(store)
    assert commit == 1 and mode == sf.MODE_CRL_IMPORT
    st = statuses(store, idx)
    assert sorted(st) == [101, 205, 307, 4096]
    rec = st[307]
    assert rec == sf.StatusRecord(
        version=1, state=sf.STATE_REVOKED, category=0, reason=4, family=1,
        not_before=0, not_after=0, revoked_at=at(10), holder=bytes(32),
    )  # fmt: skip
    assert revoked(store, idx) == {101: (at(30), 1), 205: (at(20), 0), 307: (at(10), 4), 4096: (at(5), 5)}  # fmt: skip
    d = dump_store(store)
    entry = sf.unpack_revoked(dict(d["revoked"])[sf.status_key(idx, 4096)])
    assert entry == sf.RevokedEntry(revoked_at=at(5), reason=5, category=0, commit=1, recorded_at=at(5))  # fmt: skip
    state = crl_state(store, idx)
    t = int(T.timestamp())
    assert (state.number, state.base_number, state.base_commit) == (10, 10, 1)
    assert (state.this_update, state.base_this_update, state.next_update) == (t, t, t + DAY)
    ids = {i.id for i in sf.issuer_meta_list_decoder.decode(dict(d["meta"])[sf.META_ISSUERS])}
    assert ids == {i.id for i in pki.issuers}
    assert statuses(store, index(pki, G2)) == {}


def test_second_full_adds_removes_updates_and_keeps_unchanged(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    idx = index(pki, G1)
    put_responses(imported, idx, [101, 205, 307, 4096, 5000])
    before = statuses(imported, idx)
    # 101 removed, 205 unchanged, 307 reason changed, 4096 unchanged, 150 and 9999 added.
    new = [(150, at(3), 1), (205, at(20), 0), (307, at(10), 1), (4096, at(5), 5), (9999, at(1), 3)]
    r = run(imported, pki, write(tmp_path, "full11.crl", make_crl(pki, G1, 11, new)))
    assert r.rc == 0, r.err
    line = r.lines[-1]
    assert (line["added"], line["updated"], line["removed"], line["unchanged"]) == (2, 1, 1, 2)
    assert line["commit"] == 2
    assert revoked(imported, idx) == {s: (t, rs) for s, t, rs in new}
    after = statuses(imported, idx)
    assert after[205] == before[205] and after[4096] == before[4096]  # version 1 kept
    assert after[307].version == after[150].version == after[9999].version == 2
    assert after[307].reason == 1
    assert 101 not in after
    # Answers of changed serials are gone; unchanged ones and unlisted serials keep theirs.
    assert response_serials(imported, idx) == {205, 4096, 5000}
    assert meta(imported)[0] == 2
    assert crl_state(imported, idx).number == 11


def test_full_import_of_an_empty_crl_clears_the_issuer(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    r = run(imported, pki, write(tmp_path, "empty.crl", make_crl(pki, G1, 11, [])))
    assert r.rc == 0, r.err
    assert r.lines[-1]["removed"] == 4
    assert revoked(imported, index(pki, G1)) == {}
    assert statuses(imported, index(pki, G1)) == {}


def test_issuers_are_independent_and_order_of_first_imports_does_not_matter(
    tmp_path: Path, pki: Manifest
) -> None:
    store = tmp_path / "store"
    g2 = [(7, at(1), 1), (8, at(2), 0)]
    mobile = [(3, at(1), 5)]
    # sign-card-g2 first, then g1 (whose keys sort before g2's: no appending), then sign-mobile.
    r = run(
        store, pki,
        write(tmp_path, "g2.crl", make_crl(pki, G2, 1, g2)),
        write(tmp_path, "g1.crl", make_crl(pki, G1, 10, BASE)),
        write(tmp_path, "m.crl", make_crl(pki, "sign-mobile-g1", 4, mobile)),
    )  # fmt: skip
    assert r.rc == 0, r.err
    assert [x["issuer"] for x in r.lines] == [G2, G1, "sign-mobile-g1"]
    assert revoked(store, index(pki, G2)) == {s: (t, rs) for s, t, rs in g2}
    assert revoked(store, index(pki, G1)) == {s: (t, rs) for s, t, rs in BASE}
    assert statuses(store, index(pki, "sign-mobile-g1"))[3].family == 2
    assert meta(store)[0] == 3
    # A new full CRL of g1 leaves g2 alone.
    r = run(store, pki, write(tmp_path, "g1b.crl", make_crl(pki, G1, 11, [(1, at(1), 1)])))
    assert r.rc == 0, r.err
    assert revoked(store, index(pki, G2)) == {s: (t, rs) for s, t, rs in g2}
    assert revoked(store, index(pki, G1)) == {1: (at(1), 1)}


def test_unsorted_crl_is_sorted_and_duplicates_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """RFC 5280 does not order entries: a CRL in another order imports the same."""
    entries = [(9999, at(1), 3), (101, at(30), 1), (555, at(2), 0)]
    der = library_crl(pki, G1, 11, entries)
    r = run(imported, pki, write(tmp_path, "unsorted.crl", der))
    assert r.rc == 0, r.err
    assert revoked(imported, index(pki, G1)) == {n: (t, rs) for n, t, rs in entries}
    assert (r.lines[-1]["added"], r.lines[-1]["removed"], r.lines[-1]["unchanged"]) == (2, 3, 1)
    before = dump_store(imported)
    twice = library_crl(pki, G1, 12, [(7, at(1), 1), (9, at(1), 1), (7, at(1), 1)])
    refused(run(imported, pki, write(tmp_path, "twice.crl", twice)), "twice")
    assert dump_store(imported) == before


def test_remove_from_crl_in_a_full_crl_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    before = dump_store(imported)
    der = library_crl(pki, G1, 11, [(101, at(30), 8)])
    refused(run(imported, pki, write(tmp_path, "bad.crl", der)), "removeFromCRL")
    assert dump_store(imported) == before


_FLAGS = {r.value: r for r in x509.ReasonFlags}
_CODES = {
    0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged", 4: "superseded",
    5: "cessationOfOperation", 8: "removeFromCRL",
}  # fmt: skip


def library_crl(
    pki: Manifest, issuer: str, number: int, entries: list[tuple[int, int, int]]
) -> bytes:
    """A CRL built by cryptography, which keeps the entries in the order given."""
    files = pki.issuer(issuer)
    ca = x509.load_pem_x509_certificate(pki.path(files.cert).read_bytes())
    key = serialization.load_pem_private_key(pki.path(files.key).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(T)
        .next_update(T + timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for serial, when, reason in entries:
        rb = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.fromtimestamp(when, UTC))
        )
        if reason:
            rb = rb.add_extension(x509.CRLReason(_FLAGS[_CODES[reason]]), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------
# delta CRLs
# ---------------------------------------------------------------------------


def test_delta_on_top_of_the_full(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    idx = index(pki, G1)
    put_responses(imported, idx, [101, 307, 600])
    before = statuses(imported, idx)
    delta = [(205, at(20), 0), (307, at(10), 1), (600, at(0.5), 1)]
    der = make_crl(
        pki, G1, 11, delta, delta_base=10,
        this_update=T + timedelta(minutes=30), next_update=T + timedelta(hours=2),
    )  # fmt: skip
    r = run(imported, pki, write(tmp_path, "d11.crl", der))
    assert r.rc == 0, r.err
    line = r.lines[-1]
    assert line["delta"] is True and line["base_number"] == 10
    assert (line["added"], line["updated"], line["removed"], line["unchanged"]) == (1, 1, 0, 1)
    rev = revoked(imported, idx)
    assert rev[600] == (at(0.5), 1) and rev[307] == (at(10), 1) and rev[101] == (at(30), 1)
    after = statuses(imported, idx)
    assert after[205] == before[205] and after[101] == before[101]
    assert after[600].version == after[307].version == 2
    assert response_serials(imported, idx) == {101}
    state = crl_state(imported, idx)
    t = int(T.timestamp())
    assert (state.number, state.base_number, state.base_this_update) == (11, 10, t)
    assert state.this_update == t + 1800
    # The full CRL stays valid until its own nextUpdate (RFC 5280 §6.3.3).
    assert state.next_update == t + DAY


def test_remove_from_crl(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    idx = index(pki, G1)
    put_responses(imported, idx, [205])
    delta = [(205, at(20), 8), (777, at(1), 8)]  # 777 is not listed: nothing to remove
    r = run(imported, pki, write(tmp_path, "d11.crl", make_crl(pki, G1, 11, delta, delta_base=10)))
    assert r.rc == 0, r.err
    assert (r.lines[-1]["removed"], r.lines[-1]["unchanged"]) == (1, 1)
    assert sorted(revoked(imported, idx)) == [101, 307, 4096]
    assert 205 not in statuses(imported, idx)
    assert response_serials(imported, idx) == set()
    # A later cumulative delta on the same base, then a full CRL of the delta's number.
    r = run(
        imported, pki,
        write(tmp_path, "d12.crl", make_crl(pki, G1, 12, [(205, at(20), 8), (800, at(1), 1)], delta_base=10)),
    )  # fmt: skip
    assert r.rc == 0, r.err
    assert sorted(revoked(imported, idx)) == [101, 307, 800, 4096]
    full12 = [(101, at(30), 1), (307, at(10), 4), (800, at(1), 1), (4096, at(5), 5)]
    r = run(imported, pki, write(tmp_path, "f12.crl", make_crl(pki, G1, 12, full12)))
    assert r.rc == 0, r.err
    assert r.lines[-1]["status"] == "imported" and r.lines[-1]["unchanged"] == 4
    assert (crl_state(imported, idx).number, crl_state(imported, idx).base_number) == (12, 12)


def test_delta_refusals(tmp_path: Path, imported: Path, pki: Manifest) -> None:
    before = dump_store(imported)
    # Based on a full CRL newer than the one imported.
    d = make_crl(pki, G1, 13, [(9, at(1), 1)], delta_base=12)
    refused(run(imported, pki, write(tmp_path, "d13.crl", d)), "RFC 5280 §5.2.4", "12")
    # Numbered below the full CRL imported.
    d = make_crl(pki, G1, 9, [(9, at(1), 1)], delta_base=8)
    refused(run(imported, pki, write(tmp_path, "d9.crl", d)), "going backwards")
    assert dump_store(imported) == before
    # No full CRL of this issuer yet.
    d = make_crl(pki, G2, 3, [(9, at(1), 1)], delta_base=2)
    refused(run(imported, pki, write(tmp_path, "g2d.crl", d)), "no full CRL")
    assert dump_store(imported) == before


# ---------------------------------------------------------------------------
# order, signature, DER, times
# ---------------------------------------------------------------------------


def test_going_backwards_is_refused_and_the_store_unchanged(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    before = dump_store(imported)
    r = run(imported, pki, write(tmp_path, "f9.crl", make_crl(pki, G1, 9, [(1, at(1), 1)])))
    refused(r, "going backwards", "9", "10")
    assert dump_store(imported) == before


def test_same_number_again_changes_nothing(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    before = dump_store(imported)
    again = make_crl(pki, G1, 10, BASE)
    r = run(imported, pki, write(tmp_path, "again.crl", again))
    assert r.rc == 0, r.err
    assert r.lines[-1]["status"] == "already-imported" and r.lines[-1]["commit"] == 0
    assert "already imported" in r.err
    assert dump_store(imported) == before


def test_bad_signature_is_refused(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    """A CRL naming sign-card-g1 (name and key id) but signed with sign-card-g2's key."""
    g1, g2 = signer(pki, G1), signer(pki, G2)
    tbs = encode_tbs_certlist(
        issuer=g1.certificate, signature_algorithm_der=g2.signature_algorithm_der, number=11,
        this_update=T, next_update=T + timedelta(days=1), entries=[(1, at(1), 1)],
    )  # fmt: skip
    sig = g2.sign(tbs)
    body = tbs + g2.signature_algorithm_der + b"\x03\x82\x01\x01\x00" + sig
    der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    before = dump_store(imported)
    refused(run(imported, pki, write(tmp_path, "forged.crl", der)), "signature")
    assert dump_store(imported) == before


def test_unknown_issuer_is_refused(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    key = rsa_key()
    cert = certificate(
        "some other CA", key, serial=1, not_before=T - timedelta(days=1), days=10, ski=True
    )
    der = encode_crl(
        issuer=cert, signer=PemSigner(key, cert), number=11, this_update=T,
        next_update=T + timedelta(days=1), entries=[(1, at(1), 1)],
    )  # fmt: skip
    before = dump_store(imported)
    refused(
        run(imported, pki, write(tmp_path, "other.crl", der)), "unknown issuer", "some other CA"
    )
    assert dump_store(imported) == before


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
        pytest.param(lambda d: d[:-1], id="last-byte-missing"),
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(lambda d: b"not a CRL at all", id="garbage"),
        pytest.param(lambda d: b"", id="empty"),
    ],
)
def test_malformed_der_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest, mangle: Any
) -> None:
    before = dump_store(imported)
    der = mangle(make_crl(pki, G1, 11, [(1, at(1), 1), (2, at(1), 0)]))
    r = run(imported, pki, write(tmp_path, "bad.crl", der))
    refused(r, "not a usable CRL")
    assert dump_store(imported) == before


def test_corrupted_signature_is_refused(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    der = bytearray(make_crl(pki, G1, 11, [(1, at(1), 1)]))
    der[-5] ^= 0x01
    before = dump_store(imported)
    refused(run(imported, pki, write(tmp_path, "flip.crl", bytes(der))), "bad signature")
    assert dump_store(imported) == before


def test_future_this_update(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    before = dump_store(imported)
    future = make_crl(pki, G1, 11, [(1, at(1), 1)], this_update=NOW + timedelta(minutes=6))
    refused(run(imported, pki, write(tmp_path, "future.crl", future)), "in the future")
    assert dump_store(imported) == before
    skewed = make_crl(pki, G1, 11, [(1, at(1), 1)], this_update=NOW + timedelta(minutes=4))
    r = run(imported, pki, write(tmp_path, "skewed.crl", skewed))
    assert r.rc == 0, r.err


def test_expired_next_update_needs_force(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    old = make_crl(
        pki, G1, 11, [(1, at(1), 1)],
        this_update=NOW - timedelta(days=2), next_update=NOW - timedelta(minutes=1),
    )  # fmt: skip
    path = write(tmp_path, "old.crl", old)
    before = dump_store(imported)
    refused(run(imported, pki, path), "expired", "--force")
    assert dump_store(imported) == before
    r = run(imported, pki, path, extra=["--force"])
    assert r.rc == 0, r.err
    assert revoked(imported, index(pki, G1)) == {1: (at(1), 1)}
    state = crl_state(imported, index(pki, G1))
    assert state.next_update == int((NOW - timedelta(minutes=1)).timestamp())


def test_one_refused_source_does_not_stop_the_others(tmp_path: Path, pki: Manifest) -> None:
    store = tmp_path / "store"
    bad = write(tmp_path, "bad.crl", b"\x30\x03\x02\x01")
    good = write(tmp_path, "good.crl", make_crl(pki, G2, 1, [(5, at(1), 1)]))
    missing = tmp_path / "missing.crl"
    r = run(store, pki, bad, good, missing)
    assert r.rc == 1
    assert [x["status"] for x in r.lines] == ["refused", "imported", "refused"]
    assert "cannot read" in r.lines[2]["error"]
    assert revoked(store, index(pki, G2)) == {5: (at(1), 1)}


def test_a_new_store_whose_every_crl_is_refused_is_not_left_behind(
    tmp_path: Path, pki: Manifest
) -> None:
    """An empty store left behind would be taken for a store by the next run and the
    responder; a directory given empty stays, empty."""
    bad = write(tmp_path, "bad.crl", b"\x30\x03\x02\x01")
    expired = write(
        tmp_path, "old.crl",
        make_crl(pki, G1, 10, BASE, this_update=NOW - timedelta(days=3),
                 next_update=NOW - timedelta(days=1)),
    )  # fmt: skip
    store = tmp_path / "new" / "store"
    r = run(store, pki, bad, expired)
    assert r.rc == 1
    assert [x["status"] for x in r.lines] == ["refused", "refused"]
    assert f"no CRL imported: no store made at {store}" in r.err
    assert not store.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, pki, bad).rc == 1
    assert list(empty.iterdir()) == []
    with pytest.raises(sf.StoreFormatError, match="no status store here"):
        Store.open(empty, readonly=True)


def test_refused_crls_leave_the_issuer_table_as_it_was(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """A manifest naming an issuer the store does not list yet: the table is written by the
    first CRL imported, not by a run whose every CRL is refused."""
    s = Store.open(imported, readonly=False)
    try:
        with s.read() as rd:
            kept = [i for i in rd.issuers() if i.id != G2]
        with s.env.begin(write=True) as txn:
            txn.put(sf.META_ISSUERS, msgspec.json.encode(kept), db=s.dbs[sf.DB_META])
    finally:
        s.close()
    before = dump_store(imported)
    refused(run(imported, pki, write(tmp_path, "bad.crl", b"\x30\x03\x02\x01")))
    assert dump_store(imported) == before
    r = run(imported, pki, write(tmp_path, "g2.crl", make_crl(pki, G2, 1, [(5, at(1), 1)])))
    assert r.rc == 0, r.err
    s = Store.open(imported, readonly=True)
    try:
        with s.read() as rd:
            assert G2 in {i.id for i in rd.issuers()}
    finally:
        s.close()


def test_records_built_store_is_refused(tmp_path: Path, pki: Manifest) -> None:
    store_dir = tmp_path / "built"
    s = Store.open(store_dir, readonly=False, map_size=1 << 26)
    try:
        register_issuers(s, issuer_table(pki))
        records = tmp_path / "records.jsonl"
        records.write_bytes(
            msgspec.json.encode(
                {
                    "type": "issuance", "id": "r1", "recorded_at": (T - timedelta(days=9)).isoformat(),
                    "serial": 42, "family": "auth-card", "issuer": "auth-card-g1",
                    "not_before": (T - timedelta(days=9)).isoformat(),
                    "not_after": (T + timedelta(days=900)).isoformat(), "holder": "ab" * 32,
                }
            )
            + b"\n"
        )  # fmt: skip
        ap = Applier(s, facts_key=bytes(32), quarantine=Quarantine(tmp_path / "q.jsonl"))
        assert ap.run(read_file(records)).applied == 1
    finally:
        s.close()
    before = dump_store(store_dir)
    r = run(store_dir, pki, write(tmp_path, "a.crl", make_crl(pki, G1, 10, BASE)))
    assert r.rc == 1
    assert "built from issuance records" in r.err
    assert dump_store(store_dir) == before


# ---------------------------------------------------------------------------
# URL sources
# ---------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.seen: list[str | None] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.seen.append(self.headers.get("Authorization"))
                path = urllib.parse.urlsplit(self.path).path
                if path in ("/moved.crl", "/ftp.crl"):
                    self.send_response(302)
                    target = "/g2.crl" if path == "/moved.crl" else "ftp://127.0.0.1/g2.crl"
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = served.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


def test_url_source_with_bearer_token(server: _Server, tmp_path: Path, pki: Manifest) -> None:
    server.files["/g2.crl"] = make_crl(pki, G2, 1, [(5, at(1), 1), (6, at(2), 4)])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # a credential: refused when group or others may read it
    store = tmp_path / "store"
    url = f"{server.base}/g2.crl?client=appliance-1"
    r = run(store, pki, url, extra=["--token-file", str(token_file)])
    assert r.rc == 0, r.err
    assert server.seen == [f"Bearer {TOKEN}"]
    assert r.lines[-1]["source"] == f"{server.base}/g2.crl"  # no query in logs
    assert TOKEN not in r.err
    assert revoked(store, index(pki, G2)) == {5: (at(1), 1), 6: (at(2), 4)}

    before = dump_store(store)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    wrong.chmod(0o600)
    refused(run(store, pki, url, extra=["--token-file", str(wrong)]), "HTTP 401")
    refused(run(store, pki, url), "HTTP 401")
    refused(run(store, pki, f"{server.base}/nothing.crl", extra=["--token-file", str(token_file)]), "HTTP 404")  # fmt: skip
    # The token is never forwarded on a redirect.
    server.seen.clear()
    refused(run(store, pki, f"{server.base}/moved.crl", extra=["--token-file", str(token_file)]), "HTTP 401")  # fmt: skip
    assert server.seen == [f"Bearer {TOKEN}", None]
    refused(run(store, pki, f"{server.base}/ftp.crl"), "redirect to a non-http(s) URL refused")
    assert dump_store(store) == before
    assert all(TOKEN not in x for x in server.files)


def test_token_is_not_sent_over_plain_http_to_another_host(tmp_path: Path) -> None:
    with pytest.raises(crlimport.ImportRefused, match="plain http"):
        crlimport.read_source("http://crl.example.invalid/x.crl", token=TOKEN)
    assert crlimport.source_label("https://u:p@h.example:8443/a/b.crl?t=1#f") == (
        "https://h.example:8443/a/b.crl"
    )


def test_empty_token_file_is_a_usage_error(tmp_path: Path, pki: Manifest) -> None:
    (tmp_path / "empty").write_text("\n")
    r = run(tmp_path / "store", pki, "x.crl", extra=["--token-file", str(tmp_path / "empty")])
    assert r.rc == 2 and "empty" in r.err


def test_import_commit_is_dated_by_the_import_clock_not_the_wall_clock(
    tmp_path: Path, pki: Manifest
) -> None:
    """The commit's time comes from ``--as-of`` (the import's clock), as a build's does."""
    store = tmp_path / "store"
    assert run(store, pki, write(tmp_path, "a.crl", make_crl(pki, G1, 10, BASE))).rc == 0
    s = Store.open(store, readonly=True)
    try:
        with s.read() as r:
            assert r.committed_at() == int(NOW.timestamp())
    finally:
        s.close()


def test_the_same_full_crl_after_its_delta_is_nothing_to_do(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """A job fetching the full and the delta CRL every cycle: after delta 11 (base 10), full CRL
    10 again is already imported, not "going backwards" (issue 13); so is delta 11 again."""
    delta = make_crl(pki, G1, 11, [(205, at(20), 0)], delta_base=10)
    r = run(imported, pki, write(tmp_path, "d11.crl", delta))
    assert r.rc == 0, r.err
    before = dump_store(imported)
    for name, der in (("f10.crl", make_crl(pki, G1, 10, BASE)), ("d11-again.crl", delta)):
        r = run(imported, pki, write(tmp_path, name, der))
        assert r.rc == 0, r.err
        assert r.lines[-1]["status"] == "already-imported" and r.lines[-1]["commit"] == 0
    assert dump_store(imported) == before
    # older than the base stays a refusal
    refused(
        run(imported, pki, write(tmp_path, "f9.crl", make_crl(pki, G1, 9, BASE))), "going backwards"
    )


def test_imported_losses_of_effect_feed_the_changes_and_are_pruned_past_retention(
    tmp_path: Path, pki: Manifest
) -> None:
    """A group appliance's changes feed (GET /v1/changes): each import's new or changed
    entries, in its own commit; an import prunes the commits older than the retention."""
    s = Store.open(tmp_path / "store", readonly=False)
    try:
        imp = crlimport.CrlImporter(s, pki, changes_keep_days=1)
        first = imp.import_der(make_crl(pki, G1, 10, BASE), as_of=NOW)
        later = T + timedelta(days=3)
        more = [*BASE, (9000, at(1), 1)]
        second = imp.import_der(
            make_crl(pki, G1, 11, more, this_update=later), as_of=later + timedelta(hours=1)
        )
        with s.read() as r:
            feed = [(e.commit, sf.split_status_key(e.key)[1]) for e in r.changes(b"")]
            horizon = r.changes_from()
    finally:
        s.close()
    assert first.added == 4 and second.added == 1
    assert feed == [(second.commit, 9000)]  # the first import's four: older than a day
    assert horizon == first.commit


def test_issuer_option_takes_only_that_issuers_crls(tmp_path: Path, pki: Manifest) -> None:
    """``--issuer``: every source is that generation's CRL (as fetched from its URL); one of
    another issuer is refused, the store unchanged; an id the manifest lacks is bad usage,
    no store made."""
    store = tmp_path / "store"
    r = run(store, pki, write(tmp_path, "a.crl", make_crl(pki, G1, 10, BASE)), extra=["--issuer", "sign-card-g9"])  # fmt: skip
    assert r.rc == 2 and "--issuer sign-card-g9: not one of the PKI manifest" in r.err, r.err
    assert not store.exists()
    r = run(store, pki, write(tmp_path, "a.crl", make_crl(pki, G1, 10, BASE)), extra=["--issuer", G1])  # fmt: skip
    assert r.rc == 0, r.err
    r = run(store, pki, write(tmp_path, "b.crl", make_crl(pki, G2, 10, BASE)), extra=["--issuer", G1])  # fmt: skip
    assert r.rc == 1 and f"is {G2}'s, not {G1}'s" in r.err, r.err
    assert revoked(store, index(pki, G2)) == {}
