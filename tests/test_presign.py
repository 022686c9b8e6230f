"""Pre-signing with signing processes: chunks of several issuers in flight at once.

`crlbuilder.presign.Presigner` keeps up to two chunks per signing process in flight and
no longer waits for one issuer's last chunk before the next issuer's first (the signing
processes would idle meanwhile). Each chunk carries its own issuer's signer: every stored
answer must still be its own serial's, signed by its own issuer's delegate.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from crlbuilder import presign
from crlbuilder.build import Builder, BuildReport
from crlbuilder.config import BuilderConfig
from crlbuilder.keys.signer import SignerError
from crlbuilder.manifest import Manifest, load_manifest, ocsp_signer_files
from crlbuilder.model import Category, Reason
from crlbuilder.ocsp.request import CertId
from crlbuilder.ocsp.response import cert_id_der
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader, StoredAnswer
from crlbuilder.store.writer import Commit
from responder.flow import presigned_der
from tests.conftest import BIN, Built
from tests.support.builder import as_of_the_clock, builder_config, events_until, follow_process


def test_every_answer_is_signed_again_by_its_own_issuers_delegate_across_chunks(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "store"
    shutil.copytree(built.store, store_path)
    monkeypatch.setattr(presign, "CHUNK", 7)  # many chunks, and issuers' chunks side by side
    store = Store.open(store_path, readonly=False)
    try:
        with store.read() as r:
            revoked = {i.index: [k for k, _ in r.revocations(i.index)] for i in r.issuers()}
            by_index = {i.index: i for i in r.issuers()}
        assert sum(1 for keys in revoked.values() if len(keys) > 7) >= 2  # several issuers
        now = int(time.time())
        with presign.Presigner(
            store, built.manifest, validity_seconds=3600, refresh_before_seconds=10**9, workers=2
        ) as p:
            result = p.run(now)
        delegates: dict[str, x509.Certificate] = {}  # a compromised issuer's: its successor's
        for issuer in built.manifest.all_issuers():
            files = ocsp_signer_files(
                built.manifest, issuer, by_index[issuer.index].compromised_at > 0
            )
            if files is None:
                continue
            delegates[issuer.id] = x509.load_pem_x509_certificate(
                built.manifest.path(files[1]).read_bytes()
            )
        signed = 0
        with store.read() as r:
            for index, keys in revoked.items():
                issuer_id = by_index[index].id
                if issuer_id not in p._response_signers:
                    continue  # compromised without a successor: nothing signs
                rs = p._response_signers[issuer_id]
                for key in keys:
                    a = r.stored_answer(key)
                    assert a is not None and a.this_update == now, key.hex()
                    assert a.signer_id == rs.signer_id
                    resp = ocsp.load_der_ocsp_response(served(r, p, issuer_id, key))
                    assert resp.serial_number == int.from_bytes(key[2:], "big")
                    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
                    public = delegates[issuer_id].public_key()
                    assert isinstance(public, rsa.RSAPublicKey)
                    assert resp.signature_hash_algorithm is not None
                    public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                                  resp.signature_hash_algorithm)  # fmt: skip
                    signed += 1
        assert signed == result.signed and result.kept == 0
    finally:
        store.close()


def served(r: LmdbReader, p: presign.Presigner, issuer_id: str, key: bytes) -> bytes:
    """The DER a responder sends for ``key``'s stored answer asked with the SHA-1 CertID the
    pre-signer signed (`responder.flow.presigned_der`: the answer rebuilt from its parts)."""
    a, st = r.stored_answer(key), r.status(key)
    assert a is not None and st is not None
    name_hash, key_hash = p._hashes[issuer_id]
    serial = int.from_bytes(key[2:], "big")
    der = cert_id_der("sha1", name_hash, key_hash, serial)
    got = presigned_der(a, st, CertId("sha1", name_hash, key_hash, serial, der),
                        p._response_signers[issuer_id])  # fmt: skip
    assert got is not None
    return got


# ---------------------------------------------------------------------------
# Incremental runs: the revocations since the last run, without reading every CRL entry
# ---------------------------------------------------------------------------

VALIDITY = 86_400
REFRESH = 3_600


@pytest.fixture
def store(built: Built, tmp_path: Path) -> Iterator[Store]:
    """A writable copy of the built store, closed after the test."""
    shutil.copytree(built.store, tmp_path / "store")
    store = Store.open(tmp_path / "store", readonly=False)
    yield store
    store.close()


def _presigner(store: Store, built: Built) -> presign.Presigner:
    return presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                             refresh_before_seconds=REFRESH, workers=1)  # fmt: skip


def _on_a_copy(built: Built, tmp_path: Path, **ocsp: Any) -> BuilderConfig:
    """A builder's configuration on a copy of the built store (``tmp_path/store``), with
    ``ocsp`` settings."""
    shutil.copytree(built.store, tmp_path / "store")
    cfg = builder_config(tmp_path, built.pki)
    return msgspec.structs.replace(
        cfg,
        store=msgspec.structs.replace(cfg.store, path=str(tmp_path / "store")),
        keys=msgspec.structs.replace(cfg.keys, facts_key_file=str(built.facts_key)),
        ocsp=msgspec.structs.replace(cfg.ocsp, **ocsp),
    )


def _no_walk(self: LmdbReader, issuer_index: int | None = None, **_: object) -> Iterator[object]:
    raise AssertionError("every CRL entry read: not an incremental run")


def _revoke_good(store: Store, index: int, n: int, at: int) -> list[bytes]:
    """Revoke ``n`` good certificates of one issuer in one commit (as records would)."""
    with Commit(store, lambda: datetime.fromtimestamp(at, UTC)) as c:
        keys = [k for k, st in c.statuses(index) if st.state == sf.STATE_GOOD][:n]
        for key in keys:
            st = c.status(key)
            assert st is not None
            c.revoke(key, st, category=Category.REQUEST.code, reason=int(Reason.UNSPECIFIED),
                     at=at, recorded_at=at)  # fmt: skip
    assert len(keys) == n
    return keys


def _revoke_behind_a_walk(store: Store, issuers: list[sf.IssuerMeta], at: int) -> list[bytes]:
    """Revoke two good certificates whose keys a walk in progress has passed (only the
    changes feed can bring them to the pre-signer); none when no walk has passed two."""
    with store.read() as r:
        for i in issuers:
            cursor = r.ocsp_state(i.index).walk
            if cursor:
                keys = [k for k, st in r.statuses(i.index)
                        if st.state == sf.STATE_GOOD and k < bytes.fromhex(cursor)][:2]  # fmt: skip
                if len(keys) == 2:
                    break
        else:
            return []
    with Commit(store, lambda: datetime.fromtimestamp(at, UTC)) as c:
        for key in keys:
            st = c.status(key)
            assert st is not None
            c.revoke(key, st, category=Category.REQUEST.code, reason=int(Reason.UNSPECIFIED),
                     at=at, recorded_at=at)  # fmt: skip
    return keys


def _copy_with_four_in_effect(built: Built, path: Path) -> tuple[sf.IssuerMeta, list[bytes]]:
    """The built store copied to ``path``; an auth-card issuer and four of its certificates
    in effect."""
    shutil.copytree(built.store, path)
    store = Store.open(path, readonly=True)
    with store.read() as r:
        issuer = next(i for i in r.issuers() if i.id.startswith("auth-card"))
        now = time.time()
        keys = [k for k, st in r.statuses(issuer.index)
                if st.state == sf.STATE_GOOD and st.not_after > now][:4]  # fmt: skip
    store.close()
    assert len(keys) == 4
    return issuer, keys


def _revocation_requests(issuer: sf.IssuerMeta, keys: list[bytes], prefix: str) -> bytes:
    """A spool file's lines: a revocation request for each key (ids ``prefix-N``)."""
    recorded = datetime.now(UTC).isoformat()
    return b"".join(
        msgspec.json.encode({"type": "revocation-request", "id": f"{prefix}-{n}",
                             "recorded_at": recorded, "issuer": issuer.id,
                             "serial": int.from_bytes(k[2:], "big"), "reason": "application"})
        + b"\n"
        for n, k in enumerate(keys)
    )  # fmt: skip


def _assert_revoked_with_their_answers(
    path: Path, keys: list[bytes], *, no_walk: bool = False
) -> None:
    """Each of ``keys`` is revoked in the store at ``path`` (a builder process wrote it: it is
    opened here, read-only) and has its stored answer, of its status version; with
    ``no_walk``, no issuer has a walk going on."""
    store = Store.open(path, readonly=True)
    try:
        with store.read() as r:
            for key in keys:
                st, answer = r.status(key), r.stored_answer(key)
                assert st is not None and st.state == sf.STATE_REVOKED
                assert answer is not None and answer.version == st.version
            if no_walk:
                for i in r.issuers():
                    assert r.ocsp_state(i.index).walk is None
    finally:
        store.close()


def _signing_issuers(store: Store, p: presign.Presigner) -> list[sf.IssuerMeta]:
    """The issuers whose answers this pre-signer signs and which have good certificates left."""
    with store.read() as r:
        return [
            i for i in r.issuers()
            if i.id in p._response_signers and i.family.is_jpki and not i.compromised_at
        ]  # fmt: skip


def _verify(store: Store, p: presign.Presigner, issuer: sf.IssuerMeta, key: bytes) -> StoredAnswer:
    with store.read() as r:
        a = r.stored_answer(key)
        st = r.status(key)
        assert a is not None and st is not None and a.version == st.version
        resp = ocsp.load_der_ocsp_response(served(r, p, issuer.id, key))
    assert resp.serial_number == int.from_bytes(key[2:], "big")
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.next_update_utc is not None
    assert int(resp.next_update_utc.timestamp()) == a.next_update
    return a


def test_an_incremental_run_signs_the_revocations_since_without_a_walk(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    p = _presigner(store, built)
    first = p.run(now)  # full: every issuer read, its commit and delegate recorded
    issuers = _signing_issuers(store, p)
    with store.read() as r:
        states = {i.index: r.ocsp_state(i.index) for i in issuers}
        commit = r.generation().commit
    assert first.walked >= len(issuers)
    for i in issuers:
        assert states[i.index].commit == commit
        assert states[i.index].signer == p._response_signers[i.id].signer_id.hex()
    a, b = issuers[0], issuers[1]
    new = {a.index: _revoke_good(store, a.index, 3, now + 10),
           b.index: _revoke_good(store, b.index, 2, now + 20)}  # fmt: skip

    monkeypatch.setattr(LmdbReader, "revocations", _no_walk)
    result = _presigner(store, built).run(now + 60, full=False)
    assert (result.signed, result.walked) == (5, 0)
    for i in (a, b):
        for key in new[i.index]:
            answer = _verify(store, p, i, key)
            assert answer.this_update == now + 60
            # the issuer's answers fall due together: the earliest nextUpdate it had
            assert answer.next_update == states[i.index].next_update
    with store.read() as r:
        for i in issuers:
            state = r.ocsp_state(i.index)
            assert state.commit == r.generation().commit > commit
            assert state.next_update == states[i.index].next_update
            assert state.produced_at == now + 60
    # nothing new: nothing signed, nothing read
    again = _presigner(store, built).run(now + 120, full=False)
    assert (again.signed, again.walked) == (0, 0)


def test_an_issuer_is_read_whole_when_its_answers_fall_due_its_delegate_changed_or_the_feed_is_pruned(
    built: Built, store: Store
) -> None:
    now = int(time.time())
    p = _presigner(store, built)
    p.run(now)
    issuers = _signing_issuers(store, p)
    a = issuers[0]
    with store.read() as r:
        cohort = r.ocsp_state(a.index).next_update
    assert cohort - now > REFRESH

    # the answers fall due: every one re-signed, with a nextUpdate a validity away
    later = cohort - REFRESH
    due = _presigner(store, built).run(later, full=False)
    with store.read() as r:  # those with answers, all signed in the first run: all due
        stored = [i for i in r.issuers() if r.ocsp_state(i.index).next_update]
    assert due.walked == len(stored) >= len(issuers) and due.signed > 0
    with store.read() as r:
        keys = [k for k, _ in r.revocations(a.index)]
        assert r.ocsp_state(a.index).next_update == later + VALIDITY
    assert all(_verify(store, p, a, k).next_update == later + VALIDITY for k in keys)

    # another delegate recorded (a key changed): that issuer alone is read whole
    with Commit(store) as c:
        state = c.ocsp_state(a.index)
        c.put_ocsp_state(a.index, msgspec.structs.replace(state, signer="00" * 8))
    assert _presigner(store, built).run(later + 60, full=False).walked == 1

    # the changes feed no longer reaches the covered commit: read whole
    _revoke_good(store, a.index, 1, later + 100)
    with Commit(store) as c:
        c.prune_changes(later + 10**6)
    with store.read() as r:
        assert r.changes_from() > r.ocsp_state(a.index).commit
    pruned = _presigner(store, built).run(later + 120, full=False)
    assert pruned.walked == len(p._response_signers) and pruned.signed == 1


def test_a_store_presigned_by_an_earlier_version_is_read_whole(built: Built, store: Store) -> None:
    """Its states name no commit (0): an incremental run would not know where to start."""
    p = _presigner(store, built)
    with Commit(store) as c:
        for i in c.issuers():
            state = c.ocsp_state(i.index)
            c.put_ocsp_state(i.index, sf.OcspState(produced_at=state.produced_at,
                                                   next_update=state.next_update))  # fmt: skip
    assert p.run(int(time.time()), full=False).walked == len(p._response_signers)


def test_a_build_reads_every_entry_only_when_asked_and_the_follow_loop_never(
    built: Built, tmp_path: Path
) -> None:
    """`build` goes on from the last run's commit; `build --presign-full --follow` reads every
    CRL entry at its start, then for a spool file only the revocations it brought, each
    answer stored and its own."""
    issuer, keys = _copy_with_four_in_effect(built, tmp_path / "store")
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    again = subprocess.run([str(BIN / "crlbuilder"), "build", *args], capture_output=True,
                           text=True, timeout=300, check=True)  # fmt: skip
    assert msgspec.json.decode(again.stderr.strip().splitlines()[-1])["ocsp_walked"] == 0
    spool = tmp_path / "store-spool"  # builder_args's --spool
    spool.mkdir(mode=0o700)  # closed to others, as the builder wants it (else it warns first)
    p = follow_process([*args, "--presign-full"], "--follow-interval", "0.05", "--max-idle", "30")
    assert p.stderr is not None
    events: list[dict[str, object]] = []
    try:
        events_until(p.stderr, "build", events)
        (spool / "new.tmp").write_bytes(_revocation_requests(issuer, keys, "incremental"))
        (spool / "new.tmp").rename(spool / "new.jsonl")
        events_until(p.stderr, "spool-file", events)
    finally:
        p.terminate()
        p.wait(timeout=60)
    assert len(events) >= 2, p.stderr.read() if p.stderr else ""
    start, file = events[-2], events[-1]
    assert start["event"] == "build" and file["event"] == "spool-file"
    assert start["ocsp_walked"] == len(built.manifest.all_issuers())
    assert file["ocsp_walked"] == 0 and file["ocsp_presigned"] == 4
    _assert_revoked_with_their_answers(tmp_path / "store", keys)


class _Ticks:
    """A clock that moves one second each time it is read: a run's time bound then cuts a
    walk after a number of looks, whatever the machine's speed."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_a_walk_cut_by_its_time_bound_goes_on_where_it_stopped_and_ends_as_a_whole_run(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer falls due; bounded runs re-sign them a few entries at a time while
    revocations are committed between runs. In the end every CRL entry has its own answer,
    all with the nextUpdate fixed when the walks began, and the state says so."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 4)
    now = int(time.time())
    p = _presigner(store, built)
    p.run(now)
    issuers = _signing_issuers(store, p)
    with store.read() as r:
        cohort = min(r.ocsp_state(i.index).next_update for i in issuers)
    later = cohort - REFRESH  # every stored answer is due
    runs: list[presign.PresignResult] = []
    revoked: list[bytes] = []
    cursors: list[dict[int, str | None]] = []
    while not runs or runs[-1].walking:
        at = later + 60 * len(runs)
        if runs and len(revoked) < 4 and len(runs) % 2:  # while the walks go on
            revoked += _revoke_behind_a_walk(store, issuers, at)
        q = presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                              refresh_before_seconds=REFRESH, workers=1, timer=_Ticks())  # fmt: skip
        runs.append(q.run(at, full=False, seconds=12))
        with store.read() as r:
            cursors.append({i.index: r.ocsp_state(i.index).walk for i in r.issuers()})
        assert len(cursors) < 2 or cursors[-1] != cursors[-2], "a run moved no walk on"
        if runs[-1].walking:
            with store.read() as r:  # a cut walk keeps the issuer's promise as it was
                assert any(r.ocsp_state(i.index).walk is not None for i in issuers)
                assert min(r.ocsp_state(i.index).next_update for i in issuers) == cohort
    assert len(runs) > 3 and runs[0].walking > 0 and runs[0].walked >= 1
    assert sum(run.walked for run in runs) > len(issuers)  # walks went on across runs
    with store.read() as r:
        commit = r.generation().commit
        keys = {i.index: [k for k, _ in r.revocations(i.index)] for i in issuers}
        states = {i.index: r.ocsp_state(i.index) for i in issuers}
    assert len(revoked) == 4 and set(revoked) <= {k for ks in keys.values() for k in ks}
    for i in issuers:
        for key in keys[i.index]:
            # signed by the walk or brought by the feed: the nextUpdate the walk began with
            assert _verify(store, p, i, key).next_update == later + VALIDITY
        state = states[i.index]
        assert state.walk is None and (state.walk_next_update, state.walk_earliest) == (0, 0)
        assert state.commit == commit
        assert state.next_update == (later + VALIDITY if keys[i.index] else 0)
    # nothing is due now: an unbounded incremental run reads nothing whole
    assert _presigner(store, built).run(later + 3_600, full=False).walked == 0


def test_a_walk_that_took_long_starts_earlier_the_next_time(built: Built, store: Store) -> None:
    """An issuer whose last walk took two hours walks again 1.5 × two hours before its
    answers fall due, though ``refresh_before`` (one hour) is not reached: every answer of it
    re-signed then, the other issuers' answers kept."""
    now = int(time.time())
    p = _presigner(store, built)
    p.run(now)
    with store.read() as r:
        states = {i.index: r.ocsp_state(i.index) for i in _signing_issuers(store, p)}
    a = next(i for i in _signing_issuers(store, p) if states[i.index].next_update)
    cohort = states[a.index].next_update
    assert cohort - now > REFRESH
    took_long = msgspec.structs.replace(states[a.index], walk_seconds=7_200)
    with Commit(store) as c:
        c.put_ocsp_state(a.index, took_long)
    early = cohort - 3 * 3_600 + 60  # within 1.5 × 2 h of the nextUpdate, not within 1 h
    q = _presigner(store, built)
    assert q.lead(states[a.index]) == REFRESH and q.lead(took_long) == 10_800
    run = q.run(early, full=False)
    with store.read() as r:
        keys = [k for k, _ in r.revocations(a.index)]
        state = r.ocsp_state(a.index)
    assert run.walked == 1 and run.signed == len(keys) > 0 and set(run.ended) == {a.id}
    assert state.next_update == early + VALIDITY and state.walk is None
    assert all(_verify(store, p, a, k).next_update == early + VALIDITY for k in keys)
    assert 0 < state.walk_seconds < 60 and state.walk_started == 0  # this one took a moment
    # refresh_before alone would have kept them all
    assert _presigner(store, built).run(early + 60, full=False).walked == 0


def test_a_walk_that_mostly_kept_its_answers_does_not_shorten_the_lead(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk asked for before the answers fall due (``--presign-full``) reads every entry
    and keeps every answer: its time measured reading, not re-signing, so the duration a
    re-signing walk left stands (a longer one replaces it); the next re-signing walk measures
    again. A cut walk counts what it signed and kept across its runs."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 32)
    now = int(time.time()) + VALIDITY  # every answer the fixture stored is past due
    first = _presigner(store, built).run(now)
    assert first.signed > 0 and first.kept == 0
    with store.read() as r:
        issuers = [i for i in r.issuers() if r.ocsp_state(i.index).next_update]
        a = max(issuers, key=lambda i: sum(1 for _ in r.revocations(i.index)))
        resigned = {i.index: r.ocsp_state(i.index).walk_seconds for i in issuers}
    assert all(took > 0 for took in resigned.values())  # the first walk signed every answer
    with Commit(store) as c:
        c.put_ocsp_state(a.index, msgspec.structs.replace(_state(store, a), walk_seconds=7_200))

    def check_walk(start: int) -> list[presign.PresignResult]:
        """Every entry read, nothing due: bounded runs a minute apart from ``start``."""
        runs: list[presign.PresignResult] = []
        ticks = _Ticks()
        kept_meanwhile: list[int] = []
        while not runs or runs[-1].walking:
            q = presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                                  refresh_before_seconds=REFRESH, workers=1, timer=ticks)  # fmt: skip
            runs.append(q.run(start + 60 * len(runs), full=not runs, seconds=6))
            assert len(runs) < 100, "the walk never ended"
            if (mid := _state(store, a)).walk:  # begun, not ended
                assert mid.walk_signed == 0
                kept_meanwhile.append(mid.walk_kept)
        assert kept_meanwhile and kept_meanwhile[0] > 0 and kept_meanwhile == sorted(kept_meanwhile)
        assert all(run.signed == 0 for run in runs) and sum(run.kept for run in runs) > 0
        return runs

    runs = check_walk(now + 60)
    assert len(runs) > 2 and a.id in {iid for run in runs for iid in run.ended}
    state = _state(store, a)
    assert state.walk_seconds == 7_200  # the re-signing walk's, not the reading's
    assert (state.walk_signed, state.walk_kept, state.walk) == (0, 0, None)
    # a reading that took longer than the duration kept replaces it
    with Commit(store) as c:
        c.put_ocsp_state(a.index, msgspec.structs.replace(state, walk_seconds=1))
    runs = check_walk(now + 7_200)
    took = next(run.ended[a.id] for run in runs if a.id in run.ended)
    assert took >= 120 and _state(store, a).walk_seconds == took
    # a walk that re-signs them measures again, whatever it took
    with Commit(store) as c:
        c.put_ocsp_state(a.index, msgspec.structs.replace(_state(store, a), walk_seconds=7_200))
    due = _state(store, a).next_update - REFRESH + 60
    run = _presigner(store, built).run(due, full=False)
    assert a.id in run.ended and run.signed > 0
    assert _state(store, a).walk_seconds == run.ended[a.id] < 60


def _state(store: Store, issuer: sf.IssuerMeta) -> sf.OcspState:
    with store.read() as r:
        return r.ocsp_state(issuer.index)


def test_a_walk_past_its_answers_nextupdate_is_reported_and_its_duration_kept(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of a cut walk that go on after the answers it has not reached passed their
    nextUpdate report it (`PresignResult.overdue`, with the seconds since the walk began);
    the run where it ends gives its duration, which the state keeps for the next walk."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 32)
    now = int(time.time())
    _presigner(store, built).run(now)
    with store.read() as r:
        cohort = min(s.next_update for i in r.issuers() if (s := r.ocsp_state(i.index)).next_update)
    start = cohort - REFRESH
    ats: list[int] = []
    runs: list[presign.PresignResult] = []
    ticks = _Ticks()
    while not runs or runs[-1].walking:
        # the first run begins the walks; later ones come a minute apart after the cohort
        ats.append(start if not runs else cohort + 60 * len(runs))
        q = presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                              refresh_before_seconds=REFRESH, workers=1, timer=ticks)  # fmt: skip
        before = ticks.t
        runs.append(q.run(ats[-1], full=False, seconds=6))
        ran = math.ceil(ticks.t - before - 1)  # the run reads the clock once before it began
        assert len(runs) < 100, "the walks never ended"
        for iid, since in runs[-1].overdue.items():
            assert len(runs) > 1 and since == ats[-1] + ran - start, (iid, since)
    assert runs[0].walking and not runs[0].overdue  # not past due when it began
    overdue = {iid for run in runs for iid in run.overdue}
    ended = {iid: took for run in runs for iid, took in run.ended.items()}
    assert overdue and overdue <= set(ended)
    with store.read() as r:
        states = {i.id: r.ocsp_state(i.index) for i in r.issuers()}
    for iid, took in ended.items():
        assert states[iid].walk_seconds == took
        assert took > REFRESH if iid in overdue else took > 0
        assert states[iid].walk_started == 0 and states[iid].walk is None
    # a walk begun after its answers expired (a builder stopped meanwhile) that ends in the
    # run it began is past due too
    cohort = min(s.next_update for s in states.values() if s.next_update)
    late = _presigner(store, built).run(cohort + 60, full=False)
    assert late.overdue and set(late.overdue) <= set(late.ended)
    assert all(since == late.ended[iid] for iid, since in late.overdue.items())


def test_the_builder_looks_by_the_longest_lead_and_warns_of_walks_past_due_or_back_to_back(
    built: Built, tmp_path: Path
) -> None:
    cfg = _on_a_copy(built, tmp_path, validity_seconds=10_000, refresh_before_seconds=1_000)
    cfg = msgspec.structs.replace(cfg, crl=msgspec.structs.replace(cfg.crl, enabled=False))
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        # an idle loop looks at the answers every half lead (the lead shorter than the rest
        # of their validity), and the lead is the longest walk's
        assert b.refresh_every() == 1_000 / 2
        with b.store.read() as r:
            issuer = r.issuers()[0]
            state = r.ocsp_state(issuer.index)
        with Commit(b.store) as c:
            c.put_ocsp_state(issuer.index, msgspec.structs.replace(state, walk_seconds=4_000))
        assert b.refresh_every() == (10_000 - 6_000) / 2
        b._walk_warnings(presign.PresignResult(overdue={"sign-card-g1": 700}))
        b._walk_warnings(presign.PresignResult(overdue={"sign-card-g1": 760}))  # the same walk
        b._walk_warnings(presign.PresignResult(ended={"sign-card-g1": 3_999}))  # 2.5 × < 10,000
        b._walk_warnings(presign.PresignResult(overdue={"sign-card-g1": 30}))  # another walk
        b._walk_warnings(presign.PresignResult(ended={"sign-card-g1": 4_000}))
    finally:
        b.close()
    said = [msgspec.json.decode(line) for line in log.getvalue().splitlines()]
    said = [e for e in said if "sign-card-g1" in str(e.get("message"))]
    assert [e["event"] for e in said] == ["warning"] * 3
    first, again, slow = (str(e["message"]) for e in said)
    assert first.startswith("issuer sign-card-g1: stored OCSP answers reached their nextUpdate")
    assert "begun 700 s ago" in first and "begun 30 s ago" in again
    assert "took 4000 s" in slow and "ocsp.validity_seconds = 10000" in slow


def test_a_cut_walk_starts_again_when_its_delegate_changes(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presign, "CHECK_EVERY", 1)
    now = int(time.time())
    p = presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                          refresh_before_seconds=REFRESH, workers=1, timer=_Ticks())  # fmt: skip
    first = p.run(now, full=True, seconds=3)
    assert first.walking == len(p._response_signers)  # one walk read a few entries, cut
    with store.read() as r:
        cut = [i for i in r.issuers() if r.ocsp_state(i.index).walk]
        assert len(cut) == 1
        a = cut[0]
        assert r.ocsp_state(a.index).walk_next_update == now + VALIDITY
    with Commit(store) as c:
        c.put_ocsp_state(a.index, msgspec.structs.replace(c.ocsp_state(a.index), signer="00" * 8))
    p.run(now + 60, full=False, seconds=0)
    with store.read() as r:
        state = r.ocsp_state(a.index)
    assert state.walk_next_update == now + 60 + VALIDITY  # begun again, not gone on
    assert state.signer == p._response_signers[a.id].signer_id.hex()


def test_a_cut_walk_whose_nextupdate_passed_while_the_builder_was_stopped_starts_again(
    built: Built, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk cut by its time bound, then the builder stopped past the nextUpdate the walk
    began with: going on would sign answers whose nextUpdate is before their thisUpdate
    (RFC 5019 §2.2.4, RFC 6960 §4.2.2.1: no client takes them, the responder never sends
    them and signs each on demand instead). The walk begins again with a new nextUpdate."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 4)
    now = int(time.time())
    _presigner(store, built).run(now)
    p = presign.Presigner(store, built.manifest, validity_seconds=VALIDITY,
                          refresh_before_seconds=REFRESH, workers=1, timer=_Ticks())  # fmt: skip
    issuers = _signing_issuers(store, p)
    with store.read() as r:
        cohort = min(r.ocsp_state(i.index).next_update for i in issuers)
    start = cohort - REFRESH  # every stored answer is due: walks begin
    assert p.run(start, full=False, seconds=12).walking
    with store.read() as r:
        cut = [i for i in issuers if r.ocsp_state(i.index).walk is not None]
        assert cut and all(r.ocsp_state(i.index).walk_next_update == start + VALIDITY
                           for i in cut)  # fmt: skip
    later = start + 2 * VALIDITY  # the builder was stopped for two days
    _presigner(store, built).run(later, full=False)
    with store.read() as r:
        for i in issuers:
            state = r.ocsp_state(i.index)
            assert state.walk is None and state.next_update in (0, later + VALIDITY), i.id
            for key, a in r.stored_answers(i.index):
                assert a.next_update > a.this_update, (i.id, key.hex())
                assert a.next_update == later + VALIDITY, (i.id, key.hex())


def test_a_delegate_key_replaced_under_a_running_builder_signs_nothing_that_is_stored(
    built: Built, tmp_path: Path
) -> None:
    """The signing processes load the delegate's key when they start, the builder its
    certificate when it is made: a key replaced in place in between (a PEM file written
    over, a token's key made again under the same label) signed every answer with the new
    key inside the old certificate's frame (responderID, certs), and clients rejected every
    one. The run refuses (`SignerError`, which the follow loop warns of and retries) and no
    such answer is stored."""
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    m = load_manifest(pki)
    shutil.copytree(built.store, tmp_path / "store")
    store = Store.open(tmp_path / "store", readonly=False)
    try:
        with Commit(store, lambda: datetime.now(UTC)) as c:
            for i in c.issuers():
                c.drop_answers(i.index)
        p = presign.Presigner(store, m, validity_seconds=VALIDITY,
                              refresh_before_seconds=REFRESH, workers=2)  # fmt: skip
        issuer = m.issuer("auth-card-g1")
        assert issuer.id in p._response_signers
        old = x509.load_pem_x509_certificate(m.path(issuer.ocsp_cert).read_bytes())
        ca = x509.load_pem_x509_certificate(m.path(issuer.cert).read_bytes())
        ca_key = serialization.load_pem_private_key(m.path(issuer.key).read_bytes(), None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        b = (
            x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(old.not_valid_before_utc).not_valid_after(old.not_valid_after_utc)
        )  # fmt: skip
        for e in old.extensions:
            if not isinstance(e.value, x509.SubjectKeyIdentifier):
                b = b.add_extension(e.value, e.critical)
        m.path(issuer.ocsp_key).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
        m.path(issuer.ocsp_cert).write_bytes(
            b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        with pytest.raises(SignerError, match="auth-card-g1's OCSP signer: a signing process"):
            p.run(int(time.time()))
        p.close()
        with store.read() as r:
            index = next(i.index for i in r.issuers() if i.id == issuer.id)
            for key, _ in r.stored_answers(index):
                resp = ocsp.load_der_ocsp_response(served(r, p, issuer.id, key))
                public = resp.certificates[0].public_key()
                assert isinstance(public, rsa.RSAPublicKey)
                assert resp.signature_hash_algorithm is not None
                public.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                              resp.signature_hash_algorithm)  # fmt: skip
    finally:
        store.close()


def test_the_signing_processes_stay_across_a_walks_runs_and_a_compromise_remakes_them(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follow loop's bounded runs follow one another every few seconds: the builder keeps
    its pre-signer (the delegates' keys) and its signing processes from one run to the next,
    rather than start them again each time (0.45 s of every 5 s run at 1,000,000 holders).
    A compromise recorded since changes who signs for the generation: the pre-signer is made
    again. Closing the builder stops the processes."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 1)
    cfg = _on_a_copy(built, tmp_path, sign_workers=2, refresh_before_seconds=10**9)
    made: list[presign.Presigner] = []
    init = presign.Presigner.__init__

    def counted(self: presign.Presigner, *a: Any, **k: Any) -> None:
        made.append(self)
        init(self, *a, **k)

    monkeypatch.setattr(presign.Presigner, "__init__", counted)
    b = Builder(cfg, progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    try:
        b.presign_full, b.presign_seconds = True, 0.0  # every run: one walk, a few entries
        runs = [b.presign_step() for _ in range(3)]
        assert all(r.presigned and r.presign_walking for r in runs), runs
        p = b._presigner
        assert p is not None and p._pool is not None
        processes = dict(p._pool._processes)  # type: ignore[attr-defined]
        assert len(processes) == 2 and made == [p]  # made once, its pool started once
        b.presign_step()
        assert b._presigner is p and dict(p._pool._processes) == processes  # type: ignore[attr-defined]
        with b.store.read() as r:
            victim = next(i for i in r.issuers() if i.id in p._files and not i.compromised_at)
            issuers = r.issuers()
        with Commit(b.store) as c:  # what a compromise record writes (crlbuilder.apply)
            c.put_issuers([msgspec.structs.replace(i, compromised_at=int(time.time()))
                           if i.id == victim.id else i for i in issuers])  # fmt: skip
        assert p.stale()
        b.presign_step()
        q = b._presigner
        assert q is not None and made == [p, q] and p._pool is None
        # its successor's delegate signs for it now, or nobody when the manifest names none
        assert victim.id in q.compromised and q._files.get(victim.id) != p._files[victim.id]
    finally:
        b.close()
        b.log.close()
    assert b._presigner is None
    for pid in processes:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_follow_loop_applies_a_file_between_two_runs_of_a_walk(
    built: Built, tmp_path: Path
) -> None:
    """`build --presign-full --follow` with a bound too short for any walk: each run moves one
    walk on; the spool file waiting is applied after the start-up build's run, its
    revocations signed from the feed, and the walks end in the runs that follow."""
    issuer, keys = _copy_with_four_in_effect(built, tmp_path / "store")
    spool = tmp_path / "store-spool"  # builder_args's --spool
    spool.mkdir()
    (spool / "new.jsonl").write_bytes(_revocation_requests(issuer, keys, "walking"))
    args = as_of_the_clock(built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl"))
    done = subprocess.run(
        [str(BIN / "crlbuilder"), "build", *args, "--presign-full", "--follow",
         "--presign-slice-seconds", "0.000001", "--follow-interval", "0.05", "--max-idle", "2"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    events = [msgspec.json.decode(x) for x in done.stderr.splitlines() if x.startswith("{")]
    kinds = [e["event"] for e in events if e["event"] != "warning"]
    assert kinds[:2] == ["build", "spool-file"], kinds
    start, file, *steps = (e for e in events if e["event"] != "warning")
    # the start-up build moved one walk on and left the others (every issuer's) for later
    assert start["ocsp_walked"] == 1 and start["ocsp_walking"] >= len(built.manifest.issuers)
    # the file came next, the walks still going on; its revocations signed from the feed
    assert file["ocsp_walked"] == 1 and 1 <= file["ocsp_walking"] <= start["ocsp_walking"]
    assert file["ocsp_presigned"] >= 4
    # then runs of pre-signing alone, one walk moved on each, until none is left
    assert steps and {e["event"] for e in steps} == {"presign"}
    walking = [file["ocsp_walking"]] + [e["ocsp_walking"] for e in steps]
    assert walking == sorted(walking, reverse=True) and walking[-1] == 0
    assert all(e["ocsp_walked"] == 1 for e in steps)
    _assert_revoked_with_their_answers(tmp_path / "store", keys, no_walk=True)


def test_the_follow_loop_refreshes_crls_while_a_walk_goes_on(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk can go on for most of an hour at national scale: the loop's refreshes (CRLs
    before their nextUpdate) still come at their cycle between its runs, and the loop does
    not count the runs as idle time."""
    pki, _ = demo_pki
    cfg = builder_config(tmp_path, pki, cycle_seconds=2, delta_cycle_seconds=2)
    (tmp_path / "spool").mkdir()
    left = [12]  # runs until the walk ends

    def presign(self: Builder, report: BuildReport, now: int) -> None:
        time.sleep(0.25)  # a run's time bound
        left[0] = max(0, left[0] - 1)
        report.presign_walked, report.presign_walking = 1, int(left[0] > 0)

    monkeypatch.setattr(Builder, "presign", presign)
    monkeypatch.setattr(Builder, "walks_in_progress", lambda self: True)
    log = (tmp_path / "log.jsonl").open("w")
    b = Builder(cfg, progress=False, log=log)
    try:
        assert b.refresh_every() == 1.0
        b.follow(tmp_path / "spool", 0.05, max_idle=0.1)
    finally:
        b.close()
        log.close()
    kinds = [
        e["event"]
        for line in (tmp_path / "log.jsonl").read_bytes().splitlines()
        if (e := msgspec.json.decode(line))["event"] != "warning"
    ]
    assert left[0] == 0, kinds  # max_idle did not end the loop while the walk went on
    last_run = max(i for i, k in enumerate(kinds) if k == "presign")
    assert "refresh" in kinds[:last_run], kinds  # refreshed while walking


def test_a_delegate_not_valid_at_the_run_signs_nothing_and_the_builder_says_why_once(
    built: Built, tmp_path: Path
) -> None:
    """A delegated OCSP signer whose certificate has expired (or is not valid yet: a renewal
    installed early) would sign answers every client rejects (RFC 6960 §4.2.2.2, RFC 5280
    §6.1.3): pre-signing skips its issuer, its state and stored answers as they were, the
    run lists it (``ocsp_skipped``) and one ``warning`` says why, not one per run; records
    are still applied (the builder does not stop)."""
    cfg = _on_a_copy(built, tmp_path, validity_seconds=VALIDITY, refresh_before_seconds=REFRESH)
    certs = {
        i.id: x509.load_pem_x509_certificate(built.manifest.path(i.ocsp_cert).read_bytes())
        for i in built.manifest.all_issuers()
    }
    expired = max(c.not_valid_after_utc for c in certs.values()) + timedelta(minutes=1)
    store = Store.open(tmp_path / "store", readonly=True)
    try:
        with store.read() as r:
            before = {i.id: r.ocsp_state(i.index) for i in r.issuers()}
            answers = {i.id: dict(r.stored_answers(i.index)) for i in r.issuers()}
    finally:
        store.close()
    assert any(answers.values())
    log = io.StringIO()
    b = Builder(cfg, progress=False, log=log)
    try:
        first = b.build([], as_of=expired).as_dict()
        second = b.build([], as_of=expired + timedelta(minutes=1)).as_dict()
        with b.store.read() as r:
            after = {i.id: r.ocsp_state(i.index) for i in r.issuers()}
            kept = {i.id: dict(r.stored_answers(i.index)) for i in r.issuers()}
            assert r.generation().build == second["build"]  # the rest of the runs went on
        early = presign.Presigner(b.store, built.manifest, validity_seconds=VALIDITY,
                                  refresh_before_seconds=REFRESH, workers=1)  # fmt: skip
        try:
            soon = min(c.not_valid_before_utc for c in certs.values()) - timedelta(minutes=1)
            too_early = early.run(int(soon.timestamp()))
        finally:
            early.close()
    finally:
        b.close()
    issuers = sorted(certs)  # the demo PKI's delegates share their dates
    assert first["ocsp_skipped"] == second["ocsp_skipped"] == issuers
    assert first["ocsp_presigned"] == second["ocsp_presigned"] == 0
    assert after == before
    for iid, stored in kept.items():  # none signed or re-signed (the erasures took some off)
        assert stored.items() <= answers[iid].items(), iid
    warned = [
        e["message"]
        for line in log.getvalue().splitlines()
        if (e := msgspec.json.decode(line))["event"] == "warning"
        and "delegated OCSP signer was not used" in e["message"]
    ]
    assert len(warned) == len(issuers)  # once each, not again at the second run
    assert all("its certificate is expired" in m for m in warned)
    assert sorted(too_early.skipped) == issuers and too_early.signed == 0
    assert all("not valid yet" in why for why in too_early.skipped.values())


def delegate_valid(pki: Path, issuer_id: str, begins: int, ends: int) -> Manifest:
    """The manifest of ``pki`` (a copy) with ``issuer_id``'s delegated OCSP signer certificate
    re-issued by its CA, its key and extensions kept, valid from ``begins`` to ``ends``."""
    m = load_manifest(pki)
    issuer = m.issuer(issuer_id)
    old = x509.load_pem_x509_certificate(m.path(issuer.ocsp_cert).read_bytes())
    ca = x509.load_pem_x509_certificate(m.path(issuer.cert).read_bytes())
    ca_key = serialization.load_pem_private_key(m.path(issuer.key).read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    b = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(begins, UTC))
        .not_valid_after(datetime.fromtimestamp(ends, UTC))
    )
    for ext in old.extensions:
        b = b.add_extension(ext.value, critical=ext.critical)
    m.path(issuer.ocsp_cert).write_bytes(
        b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    return load_manifest(pki)


def test_no_answer_outlives_its_delegate_nor_is_re_signed_in_a_loop_near_its_end(
    built: Built, store: Store, tmp_path: Path
) -> None:
    """RFC 6960 §4.2.2.2: a client rejects an answer once its delegate's certificate has
    expired, so no stored answer's nextUpdate passes the delegate's notAfter (the responder
    would serve it until then). Near that end the cap binds and an answer at it is kept:
    the delegate can sign none later, and treating it as due inside the lead re-signed every
    answer of the issuer at every run until the delegate expired. A revocation meanwhile is
    signed up to the cap; at the notAfter nothing is signed; a new delegate installed makes
    every answer of the issuer due again, with a full validity."""
    now = int(time.time())  # the store was built as of now: any instant near it does
    shutil.copytree(built.pki, tmp_path / "pki")
    p0 = _presigner(store, built)
    x = next(i for i in _signing_issuers(store, p0) if i.id in p0._signers)
    with store.read() as r:
        n_x = sum(1 for _ in r.revocations(x.index))
    assert n_x > 1
    ends = now + VALIDITY // 2  # the delegate expires within one validity of now
    short = delegate_valid(tmp_path / "pki", x.id, now - 86_400, ends)
    p = presign.Presigner(store, short, validity_seconds=VALIDITY, refresh_before_seconds=REFRESH,
                          workers=1)  # fmt: skip
    first = p.run(now)
    assert not first.skipped and first.signed >= n_x
    with store.read() as r:
        assert r.ocsp_state(x.index).next_update == ends  # what the promise falls back on
        stored = dict(r.stored_answers(x.index))
        others = [a.next_update for i in r.issuers() if i.index != x.index
                  for _, a in r.stored_answers(i.index)
                  if a.signer_id != p._response_signers[x.id].signer_id]  # fmt: skip
    assert len(stored) == n_x
    for key in stored:  # capped at the notAfter, in the signed bytes too
        assert _verify(store, p, x, key).next_update == ends
    # the cap is its delegate's (which signs for a compromised predecessor too), no other's
    assert others and min(others) > ends

    # inside the lead before the cap: nothing is due, at an incremental run or a walk
    inside = ends - REFRESH // 2
    assert (p.run(inside, full=False).signed, p.run(inside + 10, full=False).walked) == (0, 0)
    whole = p.run(inside + 20, full=True)
    assert whole.signed == 0 and whole.kept >= n_x
    with store.read() as r:
        assert dict(r.stored_answers(x.index)) == stored
        assert r.ocsp_state(x.index).next_update == ends
    # a revocation meanwhile is signed, up to the cap, and alone
    (new,) = _revoke_good(store, x.index, 1, inside + 30)
    again = p.run(inside + 40, full=False)
    assert (again.signed, again.walked) == (1, 0)
    assert _verify(store, p, x, new).next_update == ends

    # at the notAfter: nothing signed for the issuer (an answer would end as it begins)
    at_end = p.run(ends, full=False)
    assert x.id in at_end.skipped and at_end.signed == 0  # (and a predecessor it signs for)
    assert "expires at this instant" in at_end.skipped[x.id]
    p.close()

    # a new delegate (renewed, its key kept): every answer of the issuer signed again
    renewed = delegate_valid(tmp_path / "pki", x.id, now, now + 10 * VALIDITY)
    with presign.Presigner(store, renewed, validity_seconds=VALIDITY,
                           refresh_before_seconds=REFRESH, workers=1) as q:  # fmt: skip
        after = q.run(ends - 60, full=False)
        rs = q._response_signers[x.id]
    assert after.signed >= n_x + 1 and not after.skipped
    with store.read() as r:
        assert r.ocsp_state(x.index).next_update == ends - 60 + VALIDITY
        for key, a in r.stored_answers(x.index):
            assert a.signer_id == rs.signer_id != p._response_signers[x.id].signer_id
            assert a.next_update == ends - 60 + VALIDITY, key.hex()


def test_answers_an_earlier_version_signed_past_the_delegates_notafter_are_signed_again(
    built: Built, store: Store, tmp_path: Path
) -> None:
    """Answers stored before the cap existed may end after their delegate's notAfter; kept,
    the responder would serve them until it expired and clients then reject them. The first
    run signs them again, capped (one walk), and the next run keeps them."""
    now = int(time.time())
    shutil.copytree(built.pki, tmp_path / "pki")
    p0 = _presigner(store, built)
    x = next(i for i in _signing_issuers(store, p0) if i.id in p0._signers)
    ends = now + VALIDITY // 2
    short = delegate_valid(tmp_path / "pki", x.id, now - 86_400, ends)
    with presign.Presigner(store, short, validity_seconds=VALIDITY,
                           refresh_before_seconds=REFRESH, workers=1) as p:  # fmt: skip
        p.run(now)
        with Commit(store) as c:  # as an earlier version stored them: a validity on
            for key, a in list(c.stored_answers(x.index)):
                c.put_answer(key, a._replace(next_update=now + VALIDITY))
            c.put_ocsp_state(x.index, msgspec.structs.replace(
                c.ocsp_state(x.index), next_update=now + VALIDITY))  # fmt: skip
        with store.read() as r:
            n_x = sum(1 for _ in r.stored_answers(x.index))
        first = p.run(now + 60, full=False)
        assert first.walked >= 1 and first.signed >= n_x
        with store.read() as r:
            assert r.ocsp_state(x.index).next_update == ends
            assert all(a.next_update == ends for _, a in r.stored_answers(x.index))
        again = p.run(now + 120, full=False)
        assert (again.signed, again.walked) == (0, 0)


def test_a_cut_walk_an_earlier_version_began_goes_on_capped_at_the_delegates_notafter(
    built: Built, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk cut by its time bound keeps the nextUpdate it began with; one begun before the
    cap existed carries a nextUpdate past its delegate's notAfter, and going on with it
    stored answers clients reject after the delegate expired. It goes on capped."""
    monkeypatch.setattr(presign, "CHECK_EVERY", 1)
    now = int(time.time())
    shutil.copytree(built.pki, tmp_path / "pki")
    p0 = _presigner(store, built)
    x = next(i for i in _signing_issuers(store, p0) if i.id in p0._signers)
    ends = now + VALIDITY // 2
    short = delegate_valid(tmp_path / "pki", x.id, now - 86_400, ends)
    with presign.Presigner(store, short, validity_seconds=VALIDITY, refresh_before_seconds=REFRESH,
                           workers=1, timer=_Ticks()) as p:  # fmt: skip
        p.run(now, full=True, seconds=3)
        with store.read() as r:
            state = r.ocsp_state(x.index)
        for _ in range(100):  # cut walks go on one at a time: until x's is cut
            if state.walk is not None:
                break
            p.run(now, full=False, seconds=3)
            with store.read() as r:
                state = r.ocsp_state(x.index)
        assert state.walk_next_update == ends
        with Commit(store) as c:  # as an earlier version began it: a validity on
            c.put_ocsp_state(x.index, msgspec.structs.replace(
                state, walk_next_update=now + VALIDITY))  # fmt: skip
        p.run(now + 60, full=False)  # unbounded: every walk ends
    with store.read() as r:
        assert r.ocsp_state(x.index).walk is None
        late = [a.next_update for _, a in r.stored_answers(x.index) if a.this_update == now + 60]
    assert late and all(nu == ends for nu in late)


def test_a_delegate_key_file_unreadable_when_the_signing_processes_start_is_a_signing_outage(
    built: Built, tmp_path: Path
) -> None:
    """The signing processes read the delegate's PEM key when they start, maybe long after
    the builder checked it: a key file made readable by others (or removed) meanwhile failed
    their initializer, and the run raised `BrokenProcessPool`, which no follow loop takes as
    a signing outage (`crlbuilder.signing_retry` takes `SignerError` only: it ends the loop).
    It is `SignerError` naming the file now (the follow loop warns and tries again); nothing
    of that delegate is stored."""
    pki = tmp_path / "pki"
    shutil.copytree(built.pki, pki)
    m = load_manifest(pki)
    shutil.copytree(built.store, tmp_path / "store")
    store = Store.open(tmp_path / "store", readonly=False)
    try:
        with Commit(store, lambda: datetime.now(UTC)) as c:
            for i in c.issuers():
                c.drop_answers(i.index)
        p = presign.Presigner(store, m, validity_seconds=VALIDITY,
                              refresh_before_seconds=REFRESH, workers=2)  # fmt: skip
        issuer = m.issuer("auth-card-g1")
        key = m.path(issuer.ocsp_key)
        key.chmod(0o644)
        with pytest.raises(SignerError, match=f"{key}: the key file's mode 0644"):
            p.run(int(time.time()))
        p.close()
        with store.read() as r:  # nothing of that delegate's (other issuers' may be)
            assert not list(r.stored_answers(issuer.index))
        key.chmod(0o600)  # put right: the next run signs
        assert p.run(int(time.time())).signed > 0
        p.close()
    finally:
        store.close()
