"""The in-memory twin (`MemoryReader`) and the LMDB reader answer every read alike.

A property test: hypothesis draws a store's content (status records, CRL entries, stored
answers, links, move-out notices, consents, sealed facts, applied ids, quarantine keys, the
CRL index, announcements, the changes feed with its markers and stream groups, the meta
values), writes it into a real LMDB store byte for byte as `crlbuilder.store.format` lays it
out, and puts the same records in a `MemoryReader`; then every read of `StoreReader` is
asked of both, over every key written and some that were not, every range and feed
position, and the answers must be equal. tests/test_store_reader.py runs fixed assertions on
both; this one looks for where they part.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crlbuilder.model import Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.memory import MemoryReader
from crlbuilder.store.reader import StoredAnswer, StoreReader, changes_start

ISSUERS = (1, 2, 3)
FAMILIES = (Family.SIGN_CARD, Family.AUTH_CARD, Family.AUTH_MOBILE)
"""Issuer index i is of family FAMILIES[i - 1]."""
HOLDERS = tuple(bytes([h]) * 32 for h in range(1, 5))
T0 = 1_900_000_000

_keys = st.builds(sf.status_key, st.sampled_from(ISSUERS), st.integers(1, 40))
_times = st.integers(T0 - 10**8, T0 + 10**8)


@st.composite
def _status(draw: st.DrawFn, key: bytes) -> sf.StatusRecord:
    # what a writer writes: the three states, RFC 5280 CRLReason codes (7 is unused)
    state = draw(st.sampled_from((sf.STATE_GOOD, sf.STATE_REVOKED, sf.STATE_ERASED)))
    nb = draw(_times)
    return sf.StatusRecord(
        version=draw(st.integers(1, 50)),
        state=state,
        category=0 if state == sf.STATE_GOOD else draw(st.integers(1, 6)),
        reason=0 if state == sf.STATE_GOOD else int(draw(st.sampled_from(Reason))),
        family=FAMILIES[sf.split_status_key(key)[0] - 1].code,
        not_before=nb,
        not_after=nb + draw(st.integers(0, 6 * 365 * 86400)),
        revoked_at=0 if state == sf.STATE_GOOD else draw(_times),
        holder=draw(st.sampled_from(HOLDERS)),
    )


_pending = st.builds(
    sf.PendingMoveOut,
    record_id=st.text("abc-123", min_size=1, max_size=6),
    notified_at=_times,
    planned_date=st.dates().map(lambda d: d.isoformat()),
    abroad=st.booleans(),
    lapsed_at=st.one_of(st.just(0), _times),
)


@st.composite
def _model(draw: st.DrawFn) -> MemoryReader:
    keys = draw(st.lists(_keys, unique=True, max_size=25))
    status = {k: draw(_status(k)) for k in keys}
    revoked = {
        k: sf.RevokedEntry(
            s.revoked_at, s.reason, s.category, draw(st.integers(1, 50)), draw(_times)
        )
        for k, s in status.items()
        if s.revoked and draw(st.booleans())
    }
    answers = {
        k: StoredAnswer(
            s.version,
            draw(_times),
            draw(_times),
            draw(st.binary(min_size=8, max_size=8)),
            *draw(
                st.one_of(
                    # the DER stem (a SEQUENCE), or the parts: no stem, a signature, a check
                    st.tuples(st.binary(max_size=40).map(lambda b: b"\x30" + b)),
                    st.tuples(
                        st.just(b""),
                        st.binary(min_size=1, max_size=40),
                        st.binary(min_size=4, max_size=4),
                    ),
                )
            ),
        )
        for k, s in status.items()
        if s.revoked and draw(st.booleans())
    }
    links: dict[tuple[bytes, Family], list[bytes]] = {}
    for k, s in status.items():
        links.setdefault((s.holder, Family.from_code(s.family)), []).append(k)
    commits = draw(st.integers(0, 12))
    lost = (
        sorted(
            {
                (c, k)
                for c, k in draw(
                    st.lists(st.tuples(st.integers(1, max(commits, 1)), _keys), max_size=20)
                )
            }
        )
        if commits
        else []
    )
    lost_commits = sorted({c for c, _ in lost})
    # a commit's marker may be gone while entries of it are kept (the reader dates them 0)
    times = {c: draw(_times) for c in lost_commits if draw(st.integers(0, 3))}
    groups = {
        c: sf.StreamGroup(draw(st.integers(0, 100)), draw(st.integers(0, 100)))
        for c in times
        if draw(st.booleans())
    }
    crls = {
        sf.crl_key(i, n, d): sf.CrlFileEntry(
            issuer=f"i{i}",
            number=n,
            delta=d,
            base_number=1,
            path=f"{i}-{n}.crl",
            this_update=T0 + n,
            next_update=T0 + n + 60,
            entries=n,
            size=1,
            sha256="00",
            keep_until=T0,
        )
        for i, n, d in draw(
            st.lists(
                st.tuples(st.sampled_from(ISSUERS), st.integers(1, 9), st.booleans()), max_size=10
            )
        )
    }
    horizon = draw(st.integers(0, commits))
    return MemoryReader(
        status_records=status,
        revoked=revoked,
        answers=answers,
        links={hf: sorted(ks) for hf, ks in links.items()},
        facts={k: draw(st.binary(min_size=1, max_size=30)) for k in keys if draw(st.booleans())},
        consents=draw(
            st.dictionaries(
                st.tuples(st.sampled_from(HOLDERS), st.text("vwxyz", min_size=1, max_size=4)),
                _times,
                max_size=5,
            )
        ),
        pendings=draw(st.dictionaries(st.sampled_from(HOLDERS), _pending, max_size=4)),
        applied_records=draw(
            st.dictionaries(
                st.text("rst0123", min_size=1, max_size=5), st.integers(1, 2**32 - 1), max_size=5
            )
        ),
        quarantine=draw(
            st.dictionaries(
                st.binary(min_size=1, max_size=10), st.integers(0, 2**32 - 1), max_size=4
            )
        ),
        issuer_table=[
            sf.IssuerMeta(
                index=i,
                id=f"i{i}",
                family=FAMILIES[i - 1],
                generation=1,
                cert_der=b"c",
                compromised_at=draw(st.one_of(st.just(0), _times)),
            )
            for i in ISSUERS
        ],
        crl_states={
            i: sf.CrlState(number=2, next_update=draw(_times))
            for i in ISSUERS
            if draw(st.booleans())
        },
        ocsp_states={
            i: sf.OcspState(produced_at=T0, next_update=draw(_times))
            for i in ISSUERS
            if draw(st.booleans())
        },
        crl_index=crls,
        announced={
            i: sf.Announcement(
                issuer=f"i{i}",
                family=FAMILIES[i - 1],
                generation=1,
                at=draw(_times),
                certificates=1,
                articles=["Act §15(3)"],
                commit=1,
            )
            for i in ISSUERS
            if draw(st.booleans())
        },
        commit=commits,
        build=draw(st.integers(0, 9)),
        vouch=draw(st.tuples(st.integers(0, 9), _times)),
        last_committed_at=draw(_times),
        imported=draw(st.booleans()),
        ident=draw(st.binary(min_size=16, max_size=16)),
        lost=lost,
        commit_times=times,
        horizon=horizon,
        horizon_at=draw(st.one_of(st.none(), _times)),
        groups=groups,
        feed=draw(st.binary(max_size=16)),
        stream_applied=draw(st.integers(0, 2**40)),
        horizon_seq=draw(st.integers(0, 2**40)),
    )


def _write(path: Path, m: MemoryReader) -> Store:
    """``m`` written byte for byte as crlbuilder lays the store out (`store.format`)."""
    store = Store.open(path, readonly=False, map_size=1 << 24)
    d = store.dbs
    with store.env.begin(write=True) as txn:
        for k, s in m.status_records.items():
            txn.put(k, s.pack(), db=d[sf.DB_STATUS])
        for k, e in m.revoked.items():
            txn.put(k, e.pack(), db=d[sf.DB_REVOKED])
        for k, a in m.answers.items():
            head = (a.version, a.this_update, a.next_update, a.signer_id)
            value = (
                sf.pack_response_parts(*head, a.check, a.signature)
                if a.parts
                else sf.pack_response(*head, a.stem)
            )
            txn.put(k, value, db=d[sf.DB_RESPONSES])
        for (holder, family), ks in m.links.items():
            for k in ks:
                txn.put(sf.link_key(holder, family), k, db=d[sf.DB_LINKS])
        for k, v in m.facts.items():
            txn.put(k, v, db=d[sf.DB_HOLDERS])
        for (holder, verifier), at in m.consents.items():
            txn.put(sf.consent_key(holder, verifier), sf.pack_i64(at), db=d[sf.DB_CONSENTS])
        for holder, p in m.pendings.items():
            txn.put(holder, msgspec.json.encode(p), db=d[sf.DB_PENDING])
        for rid, seq in m.applied_records.items():
            txn.put(rid.encode(), sf.pack_applied(sf.pack_u32(seq), bytes(16)), db=d[sf.DB_APPLIED])
        for qk, seq in m.quarantine.items():
            txn.put(qk, sf.pack_u32(seq), db=d[sf.DB_QUARANTINE])
        for ck, entry in m.crl_index.items():
            txn.put(ck, msgspec.json.encode(entry), db=d[sf.DB_CRLS])
        for i, a in m.announced.items():
            txn.put(sf.announcement_key(i), msgspec.json.encode(a), db=d[sf.DB_ANNOUNCEMENTS])
        for c, k in m.lost:
            txn.put(sf.change_key(c, k), sf.CHANGE_LOST, db=d[sf.DB_CHANGES])
        for c, at in m.commit_times.items():
            txn.put(
                sf.commit_marker_key(c), sf.commit_marker(at, m.groups.get(c)), db=d[sf.DB_CHANGES]
            )
        meta: dict[bytes, bytes] = {
            sf.META_COMMIT: sf.pack_u32(m.commit),
            sf.META_BUILD: sf.pack_u32(m.build),
            sf.META_VOUCHED: sf.pack_vouched(*m.vouch),
            sf.META_COMMITTED_AT: sf.pack_i64(m.last_committed_at),
            sf.META_ISSUERS: msgspec.json.encode(m.issuer_table),
            sf.META_STORE_ID: m.ident,
            sf.META_CHANGES_FROM: sf.pack_u32(m.horizon),
            sf.META_STREAM_SEQ: sf.pack_u64(m.stream_applied),
            sf.META_CHANGES_FROM_SEQ: sf.pack_u64(m.horizon_seq),
        }
        if m.feed:
            meta[sf.META_FEED_ID] = m.feed
        if m.imported:
            meta[sf.META_MODE] = sf.MODE_CRL_IMPORT
        if m.horizon_at is not None:
            meta[sf.META_CHANGES_FROM_AT] = sf.pack_i64(m.horizon_at)
        for i, cs in m.crl_states.items():
            meta[sf.META_CRL_STATE_PREFIX + sf.pack_u32(i)] = msgspec.json.encode(cs)
        for i, os_ in m.ocsp_states.items():
            meta[sf.META_OCSP_STATE_PREFIX + sf.pack_u32(i)] = msgspec.json.encode(os_)
        for k, v in meta.items():
            txn.put(k, v, db=d[sf.DB_META])
    return store


_MODELLED = (
    sf.DB_STATUS,
    sf.DB_REVOKED,
    sf.DB_RESPONSES,
    sf.DB_LINKS,
    sf.DB_HOLDERS,
    sf.DB_CONSENTS,
    sf.DB_PENDING,
    sf.DB_APPLIED,
    sf.DB_CRLS,
    sf.DB_ANNOUNCEMENTS,
    sf.DB_QUARANTINE,
    sf.DB_CHANGES,
)
"""The databases the twin holds (the builder's own it does not)."""


def _reads(r: StoreReader, m: MemoryReader) -> dict[str, Any]:
    """Every read of ``r``, over the keys of ``m`` and some others."""
    keys = sorted(set(m.status_records) | {sf.status_key(i, 99) for i in (0, *ISSUERS, 4)})
    out: dict[str, Any] = {
        "generation": r.generation(),
        "committed_at": r.committed_at(),
        "vouched": r.vouched(),
        "vouched_until": r.vouched_until(),
        "crl_import": r.crl_import(),
        "issuers": r.issuers(),
        "store_id": r.store_id(),
        "changes_from": r.changes_from(),
        "feed_id": r.feed_id(),
        "stream_seq": r.stream_seq(),
        "changes_from_seq": r.changes_from_seq(),
        "statuses": list(r.statuses()),
        "revocations": list(r.revocations()),
        "revoked_counts": r.revoked_counts(),
        "crl_files": r.crl_files(),
        "announcements": r.announcements(),
        "pending_notices": list(r.pending_notices()),
        "counts": {db: r.count(db) for db in _MODELLED},
    }
    for i in (0, *ISSUERS, 4):
        out[f"issuer {i}"] = (
            r.crl_state(i),
            r.ocsp_state(i),
            r.promised_next_update(i),
            list(r.statuses(i)),
            list(r.stored_answers(i)),
            list(r.revocations(i)),
            r.latest_crls(i),
            [list(r.revocations(i, after=k)) for k in keys],
        )
    for k in keys:
        s = r.status(k)
        out[f"key {k.hex()}"] = (
            s,
            r.stored_answer(k),
            r.revoked_entry(k),
            r.sealed_facts(k),
            r.lapse_due(s) if s is not None else None,
            list(r.revocations(after=k)),
        )
    for h in (*HOLDERS, bytes(32)):
        out[f"holder {h[0]}"] = (
            [r.holder_certs(h, f) for f in Family],
            r.pending(h),
            r.pending_move_out(h),
            [r.consent(h, v) for v in ("v", "w", "vw", "x")],
            r.consents_of(h),
        )
    for (h, v), _ in m.consents.items():
        out[f"consent {h[0]} {v}"] = r.consent(h, v)
    for rid in (*m.applied_records, "none"):
        out[f"applied {rid}"] = r.applied(rid)
    for qk in (*m.quarantine, b"none"):
        out[f"quarantined {qk.hex()}"] = r.quarantined(qk)
    top = m.commit + 2
    for c in range(top):
        out[f"changes from {c}"] = list(r.changes(changes_start(c)))
        out[f"last change {c}"] = r.last_change(c)
    for e in list(r.changes(changes_start(0))):
        out[f"changes after {e.after.hex()}"] = list(r.changes(e.after))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_model())
def test_the_memory_twin_answers_every_read_as_lmdb(m: MemoryReader) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = _write(Path(d) / "store", m)
        try:
            with store.read() as r:
                lmdb_reads = _reads(r, m)
        finally:
            store.close()
    memory_reads = _reads(m, m)
    assert lmdb_reads.keys() == memory_reads.keys()
    differ = {
        k: (lmdb_reads[k], memory_reads[k]) for k in lmdb_reads if lmdb_reads[k] != memory_reads[k]
    }
    assert differ == {}
