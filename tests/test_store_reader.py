"""The store reader: the same assertions on the LMDB reader and the in-memory one.

One set of plain records (`_records`) is written to a real LMDB store and put in a
`MemoryReader`; every test runs on both (the ``reader`` fixture), so the two
implementations of `StoreReader` cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import NamedTuple

import lmdb
import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.model import Category, Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import StoredAnswer, StoreReader

SIGN, AUTH, MOBILE = 1, 2, 3
"""Issuer indexes: sign-card, auth-card, auth-mobile."""
HOLDER = bytes(range(32))
OTHER = bytes(32)
PLANNED = date(2031, 4, 1)
LAPSE_AT = int(rules.move_out_lapse(PLANNED).timestamp())
T0 = 1_900_000_000
"""Issuance time of every certificate (2030): before the planned move-out."""


TAKEN = [sf.Taken(T0 + 60, True, True, 0, 0, 0)]
MOVE_INS = [sf.MoveIn(T0 + 70, T0 + 50)]


def _good(family: Family, holder: bytes = HOLDER, version: int = 1) -> sf.StatusRecord:
    return sf.StatusRecord(
        version=version, state=sf.STATE_GOOD, category=0, reason=0, family=family.code,
        not_before=T0, not_after=T0 + 5 * 365 * 86400, revoked_at=0, holder=holder,
    )  # fmt: skip


class _Records(NamedTuple):
    status: dict[bytes, sf.StatusRecord]
    revoked: dict[bytes, sf.RevokedEntry]
    answers: dict[bytes, StoredAnswer]
    links: dict[tuple[bytes, Family], list[bytes]]
    pending: dict[bytes, sf.PendingMoveOut]
    crls: dict[bytes, sf.CrlFileEntry]
    issuers: list[sf.IssuerMeta]
    announcement: sf.Announcement


def _crl(issuer: str, number: int, delta: bool) -> sf.CrlFileEntry:
    return sf.CrlFileEntry(
        issuer=issuer, number=number, delta=delta, base_number=1, path=f"{issuer}-{number}.crl",
        this_update=T0 + number, next_update=T0 + number + 86400, entries=number, size=100,
        sha256="00", keep_until=T0 + 10**6,
    )  # fmt: skip


def _records() -> _Records:
    sign_good = sf.status_key(SIGN, 10)
    sign_revoked = sf.status_key(SIGN, 11)
    auth = sf.status_key(AUTH, 20)
    mobile = sf.status_key(MOBILE, 30)
    revoked = _good(Family.SIGN_CARD, version=7)._replace(
        state=sf.STATE_REVOKED, category=Category.REQUEST.code, reason=int(Reason.KEY_COMPROMISE),
        revoked_at=T0 + 100,
    )  # fmt: skip
    entry = sf.RevokedEntry(
        revoked_at=T0 + 100, reason=int(Reason.KEY_COMPROMISE), category=Category.REQUEST.code,
        commit=7, recorded_at=T0 + 100,
    )  # fmt: skip
    issuers = [
        sf.IssuerMeta(index=SIGN, id="sign-card-g1", family=Family.SIGN_CARD, generation=1,
                      cert_der=b"sign"),
        sf.IssuerMeta(index=AUTH, id="auth-card-g1", family=Family.AUTH_CARD, generation=1,
                      cert_der=b"auth"),
        sf.IssuerMeta(index=MOBILE, id="auth-mobile-g1", family=Family.AUTH_MOBILE, generation=1,
                      cert_der=b"mobile", compromised_at=T0 + 5),
    ]  # fmt: skip
    return _Records(
        status={
            sign_good: _good(Family.SIGN_CARD, OTHER),
            sign_revoked: revoked,
            auth: _good(Family.AUTH_CARD),
            mobile: _good(Family.AUTH_MOBILE),
        },
        revoked={sign_revoked: entry},
        answers={sign_revoked: StoredAnswer(7, T0 + 200, T0 + 300, b"signerid", b"\x30\x03der")},
        links={(HOLDER, Family.AUTH_CARD): [auth], (HOLDER, Family.AUTH_MOBILE): [mobile]},
        pending={
            HOLDER: sf.PendingMoveOut(
                record_id="r-1",
                notified_at=T0 + 50,
                planned_date=PLANNED.isoformat(),
                abroad=False,
            )
        },
        crls={
            sf.crl_key(SIGN, 1, False): _crl("sign-card-g1", 1, False),
            sf.crl_key(SIGN, 2, True): _crl("sign-card-g1", 2, True),
            sf.crl_key(SIGN, 3, False): _crl("sign-card-g1", 3, False),
            sf.crl_key(SIGN, 4, True): _crl("sign-card-g1", 4, True),
            sf.crl_key(SIGN, 5, True): _crl("sign-card-g1", 5, True),
            sf.crl_key(AUTH, 1, False): _crl("auth-card-g1", 1, False),
        },
        issuers=issuers,
        announcement=sf.Announcement(
            issuer="auth-mobile-g1",
            family=Family.AUTH_MOBILE,
            generation=1,
            at=T0 + 5,
            certificates=1,
            articles=["Act §35-14(3)"],
            commit=7,
        ),
    )


def _lmdb(path: Path, r: _Records) -> Store:
    """The records written byte for byte as crlbuilder lays them out (`store.format`)."""
    store = Store.open(path, readonly=False)
    d = store.dbs
    with store.env.begin(write=True) as txn:
        for k, st in r.status.items():
            txn.put(k, st.pack(), db=d[sf.DB_STATUS])
        for k, e in r.revoked.items():
            txn.put(k, e.pack(), db=d[sf.DB_REVOKED])
        for k, a in r.answers.items():
            txn.put(k, sf.pack_response(a.version, a.this_update, a.next_update, a.signer_id,
                                        a.stem), db=d[sf.DB_RESPONSES])  # fmt: skip
        for (holder, family), keys in r.links.items():
            for k in keys:
                txn.put(sf.link_key(holder, family), k, db=d[sf.DB_LINKS])
        for holder, p in r.pending.items():
            txn.put(holder, msgspec.json.encode(p), db=d[sf.DB_PENDING])
        for k, c in r.crls.items():
            txn.put(k, msgspec.json.encode(c), db=d[sf.DB_CRLS])
        txn.put(sf.announcement_key(MOBILE), msgspec.json.encode(r.announcement),
                db=d[sf.DB_ANNOUNCEMENTS])  # fmt: skip
        txn.put(sf.consent_key(OTHER, "verifier-1"), sf.pack_i64(T0 + 9), db=d[sf.DB_CONSENTS])
        txn.put(sf.consent_key(OTHER, "a-verifier"), sf.pack_i64(T0 + 8), db=d[sf.DB_CONSENTS])
        txn.put(sf.consent_key(HOLDER, "z-verifier"), sf.pack_i64(T0 + 7), db=d[sf.DB_CONSENTS])
        txn.put(HOLDER, msgspec.json.encode(TAKEN), db=d[sf.DB_TAKEN])
        txn.put(HOLDER, msgspec.json.encode(MOVE_INS), db=d[sf.DB_MOVE_INS])
        txn.put(sf.status_key(SIGN, 10), b"sealed", db=d[sf.DB_HOLDERS])
        txn.put(b"r-1", sf.pack_u32(6), db=d[sf.DB_APPLIED])
        txn.put(b"q-key", sf.pack_u32(5), db=d[sf.DB_QUARANTINE])
        meta = d[sf.DB_META]
        txn.put(sf.META_ISSUERS, msgspec.json.encode(r.issuers), db=meta)
        txn.put(sf.META_COMMIT, sf.pack_u32(7), db=meta)
        txn.put(sf.META_BUILD, sf.pack_u32(3), db=meta)
        txn.put(sf.META_VOUCHED, sf.pack_vouched(3, T0 + 3600), db=meta)
        txn.put(sf.META_COMMITTED_AT, sf.pack_i64(T0 + 400), db=meta)
        txn.put(sf.META_CRL_STATE_PREFIX + sf.pack_u32(SIGN),
                msgspec.json.encode(sf.CrlState(number=5, next_update=T0 + 86400)), db=meta)  # fmt: skip
        txn.put(sf.META_OCSP_STATE_PREFIX + sf.pack_u32(AUTH),
                msgspec.json.encode(sf.OcspState(produced_at=T0, next_update=T0 + 600)), db=meta)  # fmt: skip
    return store


def _memory(r: _Records) -> MemoryReader:
    return MemoryReader(
        status_records=dict(r.status), revoked=dict(r.revoked), answers=dict(r.answers),
        links={k: list(v) for k, v in r.links.items()}, pendings=dict(r.pending),
        facts={sf.status_key(SIGN, 10): b"sealed"},
        consents={
            (OTHER, "verifier-1"): T0 + 9,
            (OTHER, "a-verifier"): T0 + 8,
            (HOLDER, "z-verifier"): T0 + 7,
        },
        kept_taken={HOLDER: list(TAKEN)}, kept_move_ins={HOLDER: list(MOVE_INS)},
        applied_records={"r-1": 6}, quarantine={b"q-key": 5}, issuer_table=list(r.issuers),
        crl_states={SIGN: sf.CrlState(number=5, next_update=T0 + 86400)},
        ocsp_states={AUTH: sf.OcspState(produced_at=T0, next_update=T0 + 600)},
        crl_index=dict(r.crls), announced={MOBILE: r.announcement},
        commit=7, build=3, vouch=(3, T0 + 3600), last_committed_at=T0 + 400,
    )  # fmt: skip


@pytest.fixture(params=["lmdb", "memory"])
def reader(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreReader]:
    records = _records()
    if request.param == "memory":
        with _memory(records).read() as view:
            yield view
        return
    store = _lmdb(tmp_path / "store", records)
    try:
        with store.read() as view:
            yield view
    finally:
        store.close()


def test_generation_and_meta(reader: StoreReader) -> None:
    assert reader.generation() == (7, 3)
    assert reader.generation().commit == 7
    assert reader.committed_at() == T0 + 400
    assert not reader.crl_import()
    assert [i.id for i in reader.issuers()] == ["sign-card-g1", "auth-card-g1", "auth-mobile-g1"]
    assert reader.crl_state(SIGN).number == 5
    assert reader.crl_state(AUTH) == sf.CrlState()
    assert reader.ocsp_state(AUTH).produced_at == T0


def test_promised_next_update_is_the_crl_else_the_answers_else_the_builds(
    reader: StoreReader,
) -> None:
    """An issuer with no CRL and no stored answer (no revoked serial, ``[crl] enabled =
    false``) is promised what the last build run vouched for, not nothing."""
    assert reader.promised_next_update(SIGN) == T0 + 86400
    assert reader.promised_next_update(AUTH) == T0 + 600
    assert reader.vouched() == (3, T0 + 3600)
    assert reader.vouched_until() == T0 + 3600
    assert reader.promised_next_update(MOBILE) == T0 + 3600
    assert reader.promised_next_update(9) == T0 + 3600  # any issuer the responder answers for


def test_a_promise_another_build_run_moved_past_is_none(tmp_path: Path) -> None:
    """A build run of an earlier release moves the build number without writing a promise:
    the last one then names an older build and is none (never stale, as before it existed),
    so a builder rolled back never makes its issuers stale while it runs. A store no run
    promised anything in (an earlier release's) has none either."""
    store = _lmdb(tmp_path / "store", _records())
    try:
        with store.env.begin(write=True) as txn:
            txn.put(sf.META_BUILD, sf.pack_u32(4), db=store.dbs[sf.DB_META])
        with store.read() as r:
            assert r.vouched() == (3, T0 + 3600)
            assert r.vouched_until() == 0 and r.promised_next_update(MOBILE) == 0
            assert r.promised_next_update(AUTH) == T0 + 600  # the answers' own, unchanged
        with store.env.begin(write=True) as txn:
            txn.delete(sf.META_VOUCHED, db=store.dbs[sf.DB_META])
        with store.read() as r:
            assert r.vouched() == (0, 0) and r.promised_next_update(MOBILE) == 0
    finally:
        store.close()
    memory = dataclasses.replace(_memory(_records()), build=4)
    assert memory.vouched_until() == 0 and memory.promised_next_update(MOBILE) == 0
    memory = dataclasses.replace(_memory(_records()), vouch=(0, 0))
    assert memory.promised_next_update(MOBILE) == 0


def test_status_records_and_ranges(reader: StoreReader) -> None:
    st = reader.status(sf.status_key(SIGN, 11))
    assert st is not None and st.revoked and st.version == 7
    assert st.category_enum is Category.REQUEST
    assert reader.status(sf.status_key(SIGN, 12)) is None
    assert [sf.split_status_key(k) for k, _ in reader.statuses(SIGN)] == [(SIGN, 10), (SIGN, 11)]
    assert len(list(reader.statuses())) == 4
    assert list(reader.statuses(9)) == []


def test_stored_answer_and_crl_entries(reader: StoreReader) -> None:
    key = sf.status_key(SIGN, 11)
    answer = reader.stored_answer(key)
    assert answer == StoredAnswer(7, T0 + 200, T0 + 300, b"signerid", b"\x30\x03der")
    assert reader.stored_answer(sf.status_key(SIGN, 10)) is None
    assert [k for k, _ in reader.stored_answers(SIGN)] == [key]
    entry = reader.revoked_entry(key)
    assert entry is not None and entry.commit == 7 and entry.recorded_at == T0 + 100
    assert list(reader.revocations(SIGN)) == [(key, entry)]
    assert list(reader.revocations(AUTH)) == []
    assert reader.revoked_counts() == {(SIGN, Category.REQUEST.code): 1}


def test_entry_counts(reader: StoreReader) -> None:
    assert reader.count(sf.DB_STATUS) == 4
    assert reader.count(sf.DB_REVOKED) == 1
    assert reader.count(sf.DB_RESPONSES) == 1
    assert reader.count(sf.DB_CRLS) == 6


def test_holders_consents_facts_records(reader: StoreReader) -> None:
    assert reader.holder_certs(HOLDER, Family.AUTH_CARD) == [sf.status_key(AUTH, 20)]
    assert reader.holder_certs(HOLDER, Family.SIGN_CARD) == []
    assert reader.consent(OTHER, "verifier-1") == T0 + 9
    assert reader.consent(HOLDER, "verifier-1") is None
    assert reader.sealed_facts(sf.status_key(SIGN, 10)) == b"sealed"
    assert reader.sealed_facts(sf.status_key(SIGN, 11)) is None
    assert reader.applied("r-1") == 6
    assert reader.applied("r-2") is None
    assert reader.quarantined(b"q-key") == 5
    assert reader.quarantined(b"other") is None


def test_pending_move_out_and_lapse_due_act_31_2(reader: StoreReader) -> None:
    """A pending 転出届 bounds the holder's auth-card and (by cascade) auth-mobile answers."""
    pending = reader.pending_move_out(HOLDER)
    assert pending is not None and pending.record_id == "r-1"
    assert [h for h, _ in reader.pending_notices()] == [HOLDER]
    auth = reader.status(sf.status_key(AUTH, 20))
    mobile = reader.status(sf.status_key(MOBILE, 30))
    sign = reader.status(sf.status_key(SIGN, 10))
    assert auth is not None and mobile is not None and sign is not None
    assert reader.lapse_due(auth) == LAPSE_AT
    assert reader.lapse_due(mobile) == LAPSE_AT
    assert reader.lapse_due(sign) == 0  # no 30-day rule for sign certificates
    assert reader.pending_move_out(OTHER) is None


def test_crl_index_and_latest(reader: StoreReader) -> None:
    assert len(reader.crl_files()) == 6
    assert reader.crl_files()[0][0] == sf.crl_key(SIGN, 1, False)
    latest = reader.latest_crls(SIGN)
    assert [(e.number, e.delta) for e in latest] == [(5, True), (3, False)]
    assert [(e.number, e.delta) for e in reader.latest_crls(AUTH)] == [(1, False)]
    assert reader.latest_crls(MOBILE) == []


def test_announcements(reader: StoreReader) -> None:
    (a,) = reader.announcements()
    assert a.issuer == "auth-mobile-g1" and a.commit == 7


def test_snapshot_names_the_committed_state(tmp_path: Path) -> None:
    store = _lmdb(tmp_path / "store", _records())
    try:
        with store.read() as a, store.read() as b:
            assert a.snapshot() == b.snapshot()
            first = a.snapshot()
        with store.env.begin(write=True) as txn:
            txn.put(sf.META_BUILD, sf.pack_u32(4), db=store.dbs[sf.DB_META])
        with store.read() as c:
            assert c.snapshot() != first
            assert c.generation().build == 4
    finally:
        store.close()
    memory = _memory(_records())
    before = memory.snapshot()
    memory.changed()
    assert memory.snapshot() != before


def test_a_store_created_but_never_committed_reads_as_no_store(tmp_path: Path) -> None:
    """A builder killed between creating the environment and its first commit leaves a
    data.mdb with no named database: a reader says there is no store yet, as for no file,
    rather than "not a jpki-va store"."""
    lmdb.open(str(tmp_path), max_dbs=sf.MAX_DBS).close()
    assert (tmp_path / "data.mdb").exists()
    with pytest.raises(sf.StoreFormatError, match="no status store here"):
        Store.open(tmp_path, readonly=True)


def test_a_holders_consents_and_kept_changes_and_move_ins(reader: StoreReader) -> None:
    """Read per holder for a disclosure (Act §58, `crlbuilder.disclosure`): every consent under
    the holder's key prefix in verifier order, none of another holder's."""
    assert reader.consents_of(OTHER) == [("a-verifier", T0 + 8), ("verifier-1", T0 + 9)]
    assert reader.consents_of(HOLDER) == [("z-verifier", T0 + 7)]  # after OTHER's keys
    assert reader.consents_of(bytes([255] * 32)) == []
    assert reader.taken(HOLDER) == TAKEN and reader.taken(OTHER) == []
    assert reader.move_ins(HOLDER) == MOVE_INS and reader.move_ins(OTHER) == []
