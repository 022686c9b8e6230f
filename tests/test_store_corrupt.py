"""A damaged value in the store is a clear refusal, never a wrong answer nor a stray error.

Every length read from the file is checked against what the writer writes
(`crlbuilder.store.format.StoreCorrupt`, naming the database and the sizes, never the key or
the bytes). Before, a status record or CRL entry of another length raised `struct.error` or
`IndexError`; a truncated u32/i64 (the commit sequence, a consent's time, a commit marker's
time) read as a smaller number; a build promise (``meta/vouched``) of another size read as
no promise, so its issuers were never stale; a stored answer of its head alone had an empty
stem; a format version of five bytes read as version 1. A responder asked about a damaged
status record answers OCSP ``internalError`` (it gave an HTTP 500).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from crlbuilder.model import CertStatus, Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader, StoredAnswer
from crlbuilder.store.writer import Commit
from responder.app import JpkiApp
from responder.http import Request, Response
from responder.v1.openapi import document
from responder.v1.table import ROUTES
from tests.conftest import Built
from tests.support.harness import ocsp_request, sample

KEY = sf.status_key(1, 42)
HOLDER = bytes(range(32))
T0 = 1_900_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with one of each value the damage below is done to."""
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    st = sf.StatusRecord(
        1, sf.STATE_REVOKED, 1, 1, Family.SIGN_CARD.code, T0, T0 + 10**8, T0 + 5, HOLDER
    )
    with Commit(s, lambda: datetime(2030, 1, 1, tzinfo=UTC)) as c:
        c.add_certificate(KEY, st, Family.SIGN_CARD, None)
        c.put_consent(HOLDER, "v", T0)
        c.bump_build(T0 + 3600)
    with Commit(s) as c:
        c.put_answer(KEY, StoredAnswer(1, T0, T0 + 60, b"signerid", b"\x30\x03der"))
    try:
        yield s
    finally:
        s.close()


def _damage(s: Store, db: bytes, key: bytes, value: bytes) -> None:
    with s.env.begin(write=True) as txn:
        txn.put(key, value, db=s.dbs[db])


def _ocsp_app(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: Path, party: str
) -> tuple[JpkiApp, Callable[[bytes], tuple[Request, Response]]]:
    """A worker's app in process on the store at ``path``, a minute after the build, and a
    function POSTing an OCSP request to it as ``party`` (its note and its answer)."""
    clock = types.SimpleNamespace(
        time=lambda: built.as_of.timestamp() + 60, monotonic=time.monotonic
    )
    monkeypatch.setattr("responder.app.time", clock)
    app = JpkiApp(built.app_config(tmp_path, **{"store.path": str(path)}), 0)
    token = (app.config.store.pki / "parties" / f"{party}.token").read_text().strip()

    def ask(der: bytes) -> tuple[Request, Response]:
        headers = {
            b"content-type": b"application/ocsp-request",
            b"authorization": b"Bearer " + token.encode(),
        }
        req = Request(b"POST", b"/ocsp", headers, der, ("127.0.0.1", 1), None, b"1.1", True, 1)

        async def run() -> Response:
            got = app.handle(req)
            return got if isinstance(got, Response) else await got

        return req, asyncio.run(run())

    return app, ask


_READS: list[tuple[str, bytes, bytes, bytes, Callable[[LmdbReader], object]]] = [
    ("status", sf.DB_STATUS, KEY, bytes(63), lambda r: r.status(KEY)),
    ("status", sf.DB_STATUS, KEY, bytes(65), lambda r: list(r.statuses(1))),
    ("revoked", sf.DB_REVOKED, KEY, bytes(9), lambda r: r.revoked_counts()),
    ("revoked", sf.DB_REVOKED, KEY, bytes(25), lambda r: r.revoked_entry(KEY)),
    ("revoked", sf.DB_REVOKED, KEY, bytes(20), lambda r: list(r.revoked_recorded())),
    (
        "responses",
        sf.DB_RESPONSES,
        KEY,
        bytes(sf.RESPONSE_HEAD_BYTES),
        lambda r: r.stored_answer(KEY),
    ),
    (
        "responses",
        sf.DB_RESPONSES,
        KEY,
        bytes(sf.RESPONSE_HEAD_BYTES) + b"\x01" + bytes(4),  # the parts' tag, no signature
        lambda r: r.stored_answer(KEY),
    ),
    ("meta commit", sf.DB_META, sf.META_COMMIT, b"\x00\x01", lambda r: r.generation()),
    ("meta committed_at", sf.DB_META, sf.META_COMMITTED_AT, bytes(4), lambda r: r.committed_at()),
    ("meta vouched", sf.DB_META, sf.META_VOUCHED, bytes(11), lambda r: r.promised_next_update(1)),
    (
        "consents",
        sf.DB_CONSENTS,
        sf.consent_key(HOLDER, "v"),
        bytes(4),
        lambda r: r.consent(HOLDER, "v"),
    ),
    (
        "withdrawals",
        sf.DB_WITHDRAWALS,
        sf.consent_key(HOLDER, "v"),
        bytes(4),
        lambda r: r.withdrawal(HOLDER, "v"),
    ),
    (
        "withdrawals",
        sf.DB_WITHDRAWALS,
        sf.consent_key(HOLDER, "v"),
        bytes(9),
        lambda r: list(r.withdrawals_kept()),
    ),
    (
        "withdrawals",
        sf.DB_WITHDRAWALS,
        sf.consent_key(HOLDER, "v"),
        bytes(7),
        lambda r: r.withdrawals_of(HOLDER),
    ),
    (
        "meta granted-before",
        sf.DB_META,
        sf.META_GRANTED_BEFORE,
        bytes(4),
        lambda r: r.granted_before(),
    ),
    ("applied", sf.DB_APPLIED, b"r-1", bytes(3), lambda r: list(r.applied_entries("r-"))),
    (
        "changes marker",
        sf.DB_CHANGES,
        sf.commit_marker_key(1),
        bytes(5),
        lambda r: r.last_change(1),
    ),
    ("pending", sf.DB_PENDING, HOLDER, b'{"record_id":', lambda r: r.pending(HOLDER)),
    (
        "meta ocsp",
        sf.DB_META,
        sf.META_OCSP_STATE_PREFIX + sf.pack_u32(1),
        b"{",
        lambda r: r.ocsp_state(1),
    ),
]


@pytest.mark.parametrize(
    ("what", "db", "key", "value", "read"),
    _READS,
    ids=[f"{w}-{len(v)}" for w, _, _, v, _ in _READS],
)
def test_a_value_of_a_length_no_writer_writes_is_refused_naming_the_database(
    store: Store,
    what: str,
    db: bytes,
    key: bytes,
    value: bytes,
    read: Callable[[LmdbReader], object],
) -> None:
    if db == sf.DB_CHANGES:  # the entry whose marker is damaged
        _damage(store, db, sf.change_key(1, KEY), sf.CHANGE_LOST)
    _damage(store, db, key, value)
    with store.read() as r, pytest.raises(sf.StoreCorrupt) as e:
        read(r)
    message = str(e.value)
    assert f"a {what} value of {len(value)} bytes" in message
    assert "restore it from a copy or rebuild it" in message
    assert KEY.hex() not in message and str(42) not in message.split("bytes", maxsplit=1)[0]


def test_a_format_version_of_another_length_is_not_version_1(store: Store) -> None:
    """``00 00 00 00 01`` read as version 1 (`int.from_bytes`): any length was taken."""
    assert sf.FORMAT_VERSION == 1
    _damage(store, sf.DB_META, sf.META_FORMAT, b"\x00\x00\x00\x00\x01")
    path = store.path
    store.close()
    with pytest.raises(sf.StoreFormatError, match="store format version None"):
        Store.open(path, readonly=True)


def test_a_responder_answers_internal_error_for_a_damaged_status_record(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker asked about a certificate whose status record is cut short: OCSP
    internalError (RFC 6960 §2.3), logged ``store_corrupt``, no provision counted; it was an
    HTTP 500 (a `struct.error` out of the app). The other certificates still answer."""
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    a, other = sample(built, CertStatus.GOOD, "sign-card"), sample(built, CertStatus.REVOKED)
    s = Store.open(path, readonly=False)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == a.issuer)
            key = sf.status_key(index, a.serial)
            good = r.status(key)
            assert good is not None and not good.revoked
        _damage(s, sf.DB_STATUS, key, good.pack()[:40])
    finally:
        s.close()
    app, ask = _ocsp_app(built, tmp_path, monkeypatch, path, "sig-verifier")
    try:
        req, resp = ask(ocsp_request(built, a, nonce=True))
        assert resp.status == 200
        assert ocsp.load_der_ocsp_response(bytes(resp.body)).response_status is (
            ocsp.OCSPResponseStatus.INTERNAL_ERROR
        )
        assert req.note is not None and req.note.ocsp_status == "internalError"
        _, fine = ask(ocsp_request(built, other, nonce=True))
        answered = ocsp.load_der_ocsp_response(bytes(fine.body))
        assert answered.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answered.certificate_status is ocsp.OCSPCertStatus.REVOKED
    finally:
        app.close()


def _verified_revoked(body: bytes) -> ocsp.OCSPResponse:
    """``body``, an OCSP answer saying revoked whose signature verifies with its signer's key."""
    answered = ocsp.load_der_ocsp_response(body)
    assert answered.certificate_status is ocsp.OCSPCertStatus.REVOKED
    public = answered.certificates[0].public_key()
    assert isinstance(public, rsa.RSAPublicKey) and answered.signature_hash_algorithm
    public.verify(answered.signature, answered.tbs_response_bytes, padding.PKCS1v15(),
                  answered.signature_hash_algorithm)  # fmt: skip
    return answered


def test_a_presigned_answer_whose_parts_were_damaged_is_signed_afresh(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The built store holds its pre-signed answers as their parts: a revoked certificate's
    answer, rebuilt, is the one signed (its signature verifies with the delegate's key). One
    byte of its stored signature flipped: never the rebuilt bytes, whose signature would not
    verify, but a fresh answer from the status record (its signature verifies, a later
    producedAt), the worker saying so once in its log. (An earlier draft answered internalError:
    an encoder changed by an upgrade would have made every revoked answer an error until the
    builder signed them again.)"""
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    a = sample(built, CertStatus.REVOKED, "sign-card")
    s = Store.open(path, readonly=False)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == a.issuer)
        key = sf.status_key(index, a.serial)
        with s.env.begin() as txn:
            value = bytes(txn.get(key, db=s.dbs[sf.DB_RESPONSES]))
        assert value[sf.RESPONSE_HEAD_BYTES] == sf.RESPONSE_PARTS_TAG  # stored as its parts
    finally:
        s.close()
    app, ask = _ocsp_app(built, tmp_path, monkeypatch, path, "sig-verifier")
    try:
        _, fine = ask(ocsp_request(built, a))
        stored = _verified_revoked(bytes(fine.body))
    finally:
        app.close()
    s = Store.open(path, readonly=False)
    try:
        _damage(s, sf.DB_RESPONSES, key, value[:-1] + bytes((value[-1] ^ 1,)))
    finally:
        s.close()
    (tmp_path / "again").mkdir()  # a worker started on the damaged store: nothing cached
    app, ask = _ocsp_app(built, tmp_path / "again", monkeypatch, path, "sig-verifier")
    try:
        with caplog.at_level(logging.WARNING, logger="responder.flow"):
            for _ in range(2):
                req, resp = ask(ocsp_request(built, a))
                assert resp.status == 200
                fresh = _verified_revoked(bytes(resp.body))
                assert req.note is not None and req.note.ocsp_status == "successful"
        assert fresh.produced_at_utc > stored.produced_at_utc  # signed now, not the stored one
        assert (fresh.revocation_time_utc, fresh.revocation_reason) == (
            stored.revocation_time_utc,
            stored.revocation_reason,
        )
        said = [r for r in caplog.records if r.getMessage() == "presigned_answer_unusable"]
        assert len(said) == 1  # once per worker (the second answer came from its cache anyway)
    finally:
        app.close()


_JSON_READS: list[tuple[str, bytes, bytes, Callable[[LmdbReader], object]]] = [
    ("crls", sf.DB_CRLS, sf.issuer_prefix(1) + bytes(8), lambda r: r.crl_files()),
    ("crls", sf.DB_CRLS, sf.issuer_prefix(1) + bytes(8), lambda r: r.latest_crls(1)),
    ("announcements", sf.DB_ANNOUNCEMENTS, b"a", lambda r: r.announcements()),
    ("taken", sf.DB_TAKEN, HOLDER, lambda r: r.taken(HOLDER)),
    ("taken", sf.DB_TAKEN, HOLDER, lambda r: list(r.taken_kept())),
    ("moveins", sf.DB_MOVE_INS, HOLDER, lambda r: r.move_ins(HOLDER)),
    ("moveins", sf.DB_MOVE_INS, HOLDER, lambda r: list(r.move_ins_kept())),
    ("pending", sf.DB_PENDING, HOLDER, lambda r: list(r.pending_notices())),
    ("meta retention", sf.DB_META, sf.META_RETENTION, lambda r: r.retention_state()),
    ("meta erased-state", sf.DB_META, sf.META_ERASED, lambda r: r.erased_state()),
    ("meta spool-at", sf.DB_META, sf.META_SPOOL_AT, lambda r: r.spool_at()),
    (
        "meta outbox-file",
        sf.DB_META,
        sf.META_OUTBOX_FILE_PREFIX + b"q",
        lambda r: r.outbox_file(b"q"),
    ),
    ("meta issuers", sf.DB_META, sf.META_ISSUERS, lambda r: r.issuers()),
]


@pytest.mark.parametrize("damage", [b"{", b'"a string"'], ids=["cut", "mistyped"])
@pytest.mark.parametrize(
    ("what", "db", "key", "read"),
    _JSON_READS,
    ids=[f"{w}-{n}" for n, (w, _, _, _) in enumerate(_JSON_READS)],
)
def test_a_json_value_that_does_not_decode_is_refused_naming_the_database(
    store: Store,
    what: str,
    db: bytes,
    key: bytes,
    read: Callable[[LmdbReader], object],
    damage: bytes,
) -> None:
    """Every JSON value the reader decodes (CRL index, announcements, ``taken``,
    ``moveins``, pending notices, the builder's meta states): damaged bytes are
    `StoreCorrupt` naming the database, never the key nor the bytes; they were a bare
    `msgspec.DecodeError` (no database named, and no refusal a caller knows)."""
    _damage(store, db, key, damage)
    with store.read() as r, pytest.raises(sf.StoreCorrupt) as e:
        read(r)
    message = str(e.value)
    assert f"a {what} value of {len(damage)} bytes" in message
    assert "restore it from a copy or rebuild it" in message
    assert key.hex() not in message and HOLDER.hex() not in message


def test_a_v1_route_answers_503_store_damaged_for_a_damaged_status_record(
    built: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """POST /v1/status of a certificate whose status record is cut short: 503
    ``application/problem+json``, rule ``store_damaged`` (the 503 every route lists in the
    OpenAPI document), nothing provided nor counted, neither the serial nor the bytes in the
    answer; logged ``store_corrupt`` naming the database. It was an HTTP 500 (`StoreCorrupt`
    out of the handler, ``app_error``). Another certificate's batch still answers."""
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    a, other = sample(built, CertStatus.GOOD, "sign-card"), sample(built, CertStatus.REVOKED)
    s = Store.open(path, readonly=False)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == a.issuer)
            key = sf.status_key(index, a.serial)
            good = r.status(key)
            assert good is not None
        _damage(s, sf.DB_STATUS, key, good.pack()[:40])
    finally:
        s.close()
    clock = types.SimpleNamespace(
        time=lambda: built.as_of.timestamp() + 60, monotonic=time.monotonic
    )
    monkeypatch.setattr("responder.app.time", clock)
    app = JpkiApp(built.app_config(tmp_path, **{"store.path": str(path)}), 0)
    try:
        token = (app.config.store.pki / "parties" / "sig-verifier.token").read_text().strip()

        def ask(*refs: object) -> tuple[Request, Response]:
            body = msgspec.json.encode(
                {"entries": [{"issuer": x.issuer, "serial": f"{x.serial:x}"} for x in refs]}
            )
            headers = {
                b"content-type": b"application/json",
                b"authorization": b"Bearer " + token.encode(),
            }
            req = Request(
                b"POST", b"/v1/status", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1
            )

            async def run() -> Response:
                got = app.handle(req)
                return got if isinstance(got, Response) else await got

            return req, asyncio.run(run())

        with caplog.at_level(logging.ERROR, logger="responder.v1.routes"):
            req, resp = ask(a, other)
        logged = [r for r in caplog.records if r.name == "responder.v1.routes"]
        assert resp.status == 503, bytes(resp.body)
        assert resp.content_type == b"application/problem+json"
        assert resp.provision is None  # nothing to count in the ledger (帳簿, Act §40)
        got = msgspec.json.decode(bytes(resp.body))
        assert got["rule"] == "store_damaged" and got["status"] == 503
        assert f"{a.serial:x}" not in bytes(resp.body).decode() and key.hex() not in got["detail"]
        assert req.note is not None and req.note.rule == "store_damaged"
        for path, ops in document(ROUTES)["paths"].items():  # every route lists the rule
            for op in ops.values():
                if path not in ("/v1/keys", "/v1/openapi.json"):
                    assert "`store_damaged`" in op["responses"]["503"]["description"], path
        assert [r.getMessage() for r in logged] == ["store_corrupt"]
        fields = logged[0].fields  # type: ignore[attr-defined]
        assert fields["route"] == "/v1/status" and "a status value of 40 bytes" in fields["error"]
        assert key.hex() not in fields["error"]
        _, fine = ask(other)
        assert fine.status == 200
        assert msgspec.json.decode(bytes(fine.body))["entries"][0]["status"] == "revoked"
    finally:
        app.close()


_STATE_OFFSET = 4
"""The state byte of a packed status record (``>IBBBB...``: version u32, then state)."""
_REASON_OFFSET = 6
_REVOKED_AT_OFFSET = 24
"""The revocation time's first byte (after version, four bytes, notBefore and notAfter)."""


@pytest.mark.parametrize(
    ("offset", "byte", "what"),
    [
        (_STATE_OFFSET, 0x81, "state 129"),
        (_STATE_OFFSET, 3, "state 3"),
        (_REASON_OFFSET, 7, "reason 7"),
        (_REASON_OFFSET, 0x41, "reason 65"),
        (_REVOKED_AT_OFFSET, 0x80, "revocation time out of range"),
        (_REVOKED_AT_OFFSET, 0x01, "revocation time out of range"),
    ],
    ids=["state-bitflip", "state-3", "reason-7", "reason-65", "time-negative", "time-past-9999"],
)
def test_a_status_record_of_a_state_or_reason_no_writer_writes_is_refused(
    store: Store, offset: int, byte: int, what: str
) -> None:
    """A status record of the right length whose state, reason or revocation time no
    writer writes (a flipped bit): `StoreCorrupt` naming what, never the key. It was read
    as it was: the OCSP lookup takes any state but revoked (1) and erased (2) as ``good``,
    so a revoked certificate's damaged record was answered good; a reason outside RFC
    5280's CRLReason, or a time before 1970 or past 9999 (no GeneralizedTime), failed the
    fresh signature, reported as a signer failure (jpkiva_signer_errors_total)."""
    with store.read() as r:
        st = r.status(KEY)
        assert st is not None
    value = bytearray(st.pack())
    value[offset] = byte
    _damage(store, sf.DB_STATUS, KEY, bytes(value))
    for read in (lambda r: r.status(KEY), lambda r: list(r.statuses(1))):
        with store.read() as r, pytest.raises(sf.StoreCorrupt) as e:
            read(r)
        message = str(e.value)
        assert f"a status value of {what}" in message, message
        assert "restore it from a copy or rebuild it" in message
        assert KEY.hex() not in message


def test_a_revoked_certificate_whose_state_byte_flipped_is_never_answered_good(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The responder asked about a revoked certificate whose status record's state byte
    lost its low bit (1 revoked -> 0x80): it answered ``good``, fresh and cached (the
    lookup's fall-through branch); now OCSP internalError, nothing counted, as for any
    damaged value. The other certificates still answer."""
    path = tmp_path / "store"
    shutil.copytree(built.store, path)
    a, other = sample(built, CertStatus.REVOKED, "sign-card"), sample(built, CertStatus.GOOD)
    s = Store.open(path, readonly=False)
    try:
        with s.read() as r:
            index = next(i.index for i in r.issuers() if i.id == a.issuer)
            key = sf.status_key(index, a.serial)
            revoked = r.status(key)
            assert revoked is not None and revoked.state == sf.STATE_REVOKED
        value = bytearray(revoked.pack())
        value[_STATE_OFFSET] ^= 0x81
        _damage(s, sf.DB_STATUS, key, bytes(value))
    finally:
        s.close()
    app, ask = _ocsp_app(built, tmp_path, monkeypatch, path, "both-verifier")
    try:
        for nonce in (False, True, False):  # fresh, and the cached path after it
            req, resp = ask(ocsp_request(built, a, nonce=nonce))
            answer = ocsp.load_der_ocsp_response(bytes(resp.body))
            assert answer.response_status is ocsp.OCSPResponseStatus.INTERNAL_ERROR, (
                answer.certificate_status
                if answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
                else answer.response_status
            )
            assert resp.provision is None  # nothing to count (帳簿, Act §40)
            assert req.note is not None and req.note.ocsp_status == "internalError"
        _, fine = ask(ocsp_request(built, other, nonce=True))
        answered = ocsp.load_der_ocsp_response(bytes(fine.body))
        assert answered.certificate_status is ocsp.OCSPCertStatus.GOOD
    finally:
        app.close()
