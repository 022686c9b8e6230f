"""Pre-signing the OCSP answers of revoked serials, and re-signing them before nextUpdate.

A revoked certificate's answer never changes until its nextUpdate, so
crlbuilder signs it once at build time with the issuer generation's delegated
OCSP signer and stores it beside the status record (``responses``, keyed like ``status``,
tagged with the status version it answers) as what its DER cannot be derived from: its times,
its signer and its signature (`sf.pack_response_parts`). The responder rebuilds the DER with
the same encoder (`ResponseSigner.presigned_data`) and sends it; an answer stored by an
earlier version as its DER stem is sent as stored. Answers whose nextUpdate is closer than
``refresh_before`` are signed again. "Good" answers are not stored:
the responder signs them on demand and caches them by status version.

Stored answers use SHA-1 CertIDs, the RFC 5019 §2.1.1 profile that clients
use; a request with SHA-256 CertIDs is signed fresh by the responder.

After a compromise of a generation's CA key (発行者署名符号の漏えい等) its delegate,
certified by that key, signs nothing more: the generation's answers (every one
revoked, cACompromise) are signed by the successor generation's delegate
(`crlbuilder.manifest.ocsp_signer_files`), and by nobody when the manifest names
no successor. Stored answers carry their signer's id, so answers of the old
signer are re-signed; the compromise itself deletes them (`crlbuilder.apply`).

RSA signing is the whole cost (~0.3 ms a signature), so the signatures are
spread over worker processes; the DER around them is built in this process, which
verifies one signature of each chunk with the certificate it frames them with
(`_check_signed_by`: a process loads its key when it starts, maybe after the key changed).

A delegate whose certificate is not valid at the run's instant (expired, or a renewal installed
before its notBefore) signs nothing: every client would reject its answers (RFC 6960 §4.2.2.2,
RFC 5280 §6.1.3; `crlbuilder.ocsp.delegate.validity_problem`). Its issuer is skipped, its state
kept as it was (`PresignResult.skipped`; the builder warns once), and the next run with a valid
delegate signs what was left. The builder does not refuse to start for it, as it does for a
delegate its CA did not issue: records must still be applied.

No answer's nextUpdate passes its delegate's notAfter (`ResponseSigner.capped`): the responder
would serve it until then and every client reject it after the delegate expired. Near the end
of a delegate's life the cap binds, and an answer at the cap is *kept*, not due, however close
its nextUpdate (`Presigner._keep`, `Presigner._incremental`): that delegate cannot sign a later
one, and re-signing it at every run inside the lead would sign every answer in a loop. A new
delegate (its own certificate, so its own signer id) makes every answer due again (not its
signer's) and its issuer read whole. An answer past the cap (stored by an earlier version) is
due at once, and signed again capped (`_not_due`). At the delegate's notAfter the stored answers end; the
responder refuses every answer of the issuer from then (``tryLater``, rule
``signer_expired``, `responder.flow`) until a delegate valid then is installed.

A run is *full* or *incremental*. A full run reads every CRL entry, with its status
record and stored answer (at 10,000,000 holders: 16.4 million entries, 2 to 14 minutes,
mostly the store's pages read from disk), signs what is missing or due, and records per issuer the
commit it covered, the delegate that signed and the earliest nextUpdate stored
(`store.format.OcspState`). An incremental run reads only the changes feed after that
commit (every loss of effect, `store.format.DB_CHANGES`) and signs the revoked serials
there whose answer is missing, giving each the issuer's earliest nextUpdate: the answers
of an issuer then fall due together and one full run re-signs them all. A run is full when
asked (`run(full=True)`, ``crlbuilder build --presign-full``), and for an issuer whose
earliest nextUpdate is within ``refresh_before``, whose delegate changed, whose covered
commit the feed no longer reaches (pruned), or whose state an earlier version wrote (no
commit); else incremental (a build, the follow loop after each file, each refresh).

A follow loop bounds each run in time (``run(seconds=...)``, ``ocsp.presign_slice_seconds``):
a full run of an issuer (a *walk*) then stops where the bound finds it, after at least
`CHECK_EVERY` entries, and records the last key read (`sf.OcspState.walk`); the next run
reads the changes feed since (what the walk passed) and goes on after that key, so that the
loop applies the records that came meanwhile (unless the nextUpdate the walk began with has
passed, a builder stopped meanwhile: it begins again). At 10,000,000 holders a walk that re-signs
every answer takes about 40 minutes; unbounded, no record was applied during it. The answers
a walk signs, and those the feed brings while it goes on, take the nextUpdate fixed when it
began (`walk_next_update`); when it ends, the earliest nextUpdate of what it kept or stored
becomes the issuer's (no second reading of every stored answer).

A walk of answers falling due must end before their nextUpdate, or the answers it has not
reached yet are past it and the responder signs each on demand until it does. Each walk
records how long it took (`sf.OcspState.walk_seconds`, its runs and the follow loop's work
between them), and the next one starts `LEAD_FACTOR` times that before the answers fall due
when that is earlier than ``refresh_before`` (`Presigner.lead`). Only a walk that re-signed
at least as many answers as it kept measures that: one that mostly kept them (asked for
before they were due) read the entries without signing them, and its shorter time would
start the next re-signing too late, so its duration replaces the one kept only when longer.
A run reports the walks that go on while answers are past due (`PresignResult.overdue`) and
how long those that ended took (`PresignResult.ended`); the builder turns both into warnings.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder.keys.signer import Signer, SignerError, load_signer
from crlbuilder.lifecycle import die_with_parent
from crlbuilder.manifest import IssuerFiles, Manifest, ocsp_signer_files
from crlbuilder.ocsp.delegate import validity_problem
from crlbuilder.ocsp.response import (
    ResponseSigner,
    cert_id_der,
    issuer_hashes,
)
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import StoredAnswer, lost_since
from crlbuilder.store.writer import Commit

CHUNK: Final = 2_000
"""Answers per write transaction and per job sent to a signing process."""
CHECK_EVERY = 64
"""CRL entries a walk reads between two looks at its time bound (and at least, per run)."""
LEAD_FACTOR: Final = 1.5
"""A walk re-signing an issuer's answers that fall due starts this many times the issuer's
last walk's duration before they do, when that is earlier than ``refresh_before``
(`Presigner.lead`). A walk longer than ``refresh_before`` (many revoked serials, few signing
cores, a busy follow loop) would otherwise leave the answers it has not reached past their
nextUpdate, and the responder would sign each of them on demand until it reached them."""


def walk_lead(state: sf.OcspState, refresh_before: int) -> int:
    """How long before its stored answers' nextUpdate an issuer's walk re-signs them:
    ``refresh_before``, or `LEAD_FACTOR` times its last walk's duration when longer."""
    return max(refresh_before, math.ceil(LEAD_FACTOR * state.walk_seconds))


_worker_signers: dict[str, Signer | SignerError] = {}


def _init_worker(parent: int, keys: dict[str, tuple[str, str]]) -> None:
    die_with_parent(signal.SIGKILL)  # a builder killed with SIGKILL leaves no signer behind
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)
    for issuer_id, (key, cert) in keys.items():
        # own PKCS#11 session, after fork; the parent checked every key when it was made, so a
        # token gone now is an outage that the signatures report, and so is a key that cannot
        # be used now (a PEM file made readable by others, or removed, since): a failing
        # initializer would break the pool instead (`BrokenProcessPool`, no signing outage
        # to the follow loops: the builder stopped)
        try:
            _worker_signers[issuer_id] = load_signer(key, cert, outage_ok=True)
        except SignerError as exc:
            _worker_signers[issuer_id] = exc


def _sign_many(issuer_id: str, blobs: list[bytes]) -> list[bytes]:
    signer = _worker_signers[issuer_id]
    if isinstance(signer, SignerError):
        raise SignerError(str(signer))
    return [signer.sign(b) for b in blobs]


def _chunks(
    it: Iterator[tuple[bytes, sf.StatusRecord]], n: int
) -> Iterator[list[tuple[bytes, sf.StatusRecord]]]:
    chunk: list[tuple[bytes, sf.StatusRecord]] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class PresignResult:
    signed: int = 0
    kept: int = 0
    walked: int = 0
    """Issuers whose CRL entries were read in this run (a full run of theirs, begun, gone on
    with or ended)."""
    walking: int = 0
    """Issuers whose full run was cut by the time bound: it goes on at the next run."""
    overdue: dict[str, int] = field(default_factory=dict)
    """Issuer id -> seconds its walk has gone on, for walks that read entries while stored
    answers they had not reached were past their nextUpdate (a walk longer than its lead, one
    begun late, or a builder that was stopped); it may have ended in the same run."""
    ended: dict[str, int] = field(default_factory=dict)
    """Issuer id -> seconds its walk took, for walks that ended in this run (0: not known)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Issuer id -> why nothing was signed for it in this run: its delegate's certificate is not
    valid at the run's instant (`crlbuilder.ocsp.delegate.validity_problem`), so every answer
    would fail at the clients. Its state stays as it was: the next run with a valid delegate
    signs what this one left (the changes feed since, or a walk when its answers fell due)."""


class Presigner:
    """Signs and stores the answers of revoked serials for every issuer of a manifest."""

    def __init__(
        self,
        store: Store,
        manifest: Manifest,
        *,
        validity_seconds: int,
        refresh_before_seconds: int,
        workers: int = 0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.timer = timer
        """The clock of ``run``'s time bound."""
        self.manifest = manifest
        self.validity = validity_seconds
        self.refresh_before = refresh_before_seconds
        self.workers = workers or os.cpu_count() or 1
        self.compromised = self._compromised()
        """The generations compromised when it was made: who signs for whom (`stale`)."""
        self._files: dict[str, tuple[str, str]] = {}
        for i in manifest.all_issuers():
            files = ocsp_signer_files(manifest, i, i.id in self.compromised)
            if files is not None:
                key, cert = files
                self._files[i.id] = (manifest.key_ref(key), str(manifest.path(cert)))
        self._signers = {k: load_signer(*v) for k, v in self._files.items()}
        self._response_signers = {k: ResponseSigner(v) for k, v in self._signers.items()}
        self._hashes = {
            i.id: issuer_hashes(
                x509.load_pem_x509_certificate(manifest.path(i.cert).read_bytes()), "sha1"
            )
            for i in manifest.all_issuers()
        }
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: list[
            tuple[
                str,
                ResponseSigner,
                list[tuple[bytes, sf.StatusRecord]],
                list[bytes],
                Future[list[bytes]],
                int,
                int,
            ]
        ] = []

    def _compromised(self) -> frozenset[str]:
        with self.store.read() as r:
            return frozenset(i.id for i in r.issuers() if i.compromised_at)

    def stale(self) -> bool:
        """Whether a compromise recorded since it was made changed which delegate signs for a
        generation (its successor's, or none): then it must be made again."""
        return self._compromised() != self.compromised

    def lead(self, state: sf.OcspState) -> int:
        """How long before its stored answers' nextUpdate an issuer's walk re-signs them
        (`walk_lead`)."""
        return walk_lead(state, self.refresh_before)

    def close(self) -> None:
        """Stop the signing processes (what is in flight is dropped: a run that ended has
        none). A run after this starts them again."""
        self._inflight.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Presigner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, now: int, *, full: bool = True, seconds: float | None = None) -> PresignResult:
        """Sign every missing or nearly stale answer, as of ``now`` (epoch seconds): reading
        every CRL entry, or with ``full=False`` only the revocations since the last run of
        each issuer that allows it (module docstring).

        With ``seconds``, the reading of every CRL entry stops after about that long and goes
        on at the next run (`sf.OcspState.walk`); the changes feed is read whole every run.

        Streams: at most ``2 × workers`` chunks of `CHUNK` answers are in flight,
        so memory does not grow with the number of revoked serials. The signing processes,
        started by the first run that signs, stay for the next runs (a follow loop's bounded
        runs follow one another every few seconds) until `close`; a run that raises stops them.
        """
        began = self.timer()
        deadline = None if seconds is None else began + seconds
        result = PresignResult()
        with self.store.read() as r:
            commit, reach = r.generation().commit, r.changes_from()
            states = {i.index: r.ocsp_state(i.index) for i in self.manifest.all_issuers()}
        walks: list[_Walk] = []
        at = datetime.fromtimestamp(now, UTC)
        try:
            for issuer in self.manifest.all_issuers():
                if issuer.id not in self._signers:
                    continue  # compromised, no successor: nothing may sign its answers
                problem = validity_problem(self._signers[issuer.id].certificate, at)
                if problem is None and self._response_signers[issuer.id].not_after <= now:
                    problem = "its certificate expires at this instant: its answers would end there"
                if problem is not None:  # expired, or not valid yet: every answer would fail
                    result.skipped[issuer.id] = problem
                    continue
                state = states[issuer.index]
                rs = self._response_signers[issuer.id]
                signer = rs.signer_id.hex()
                if (
                    not full
                    and state.walk is not None
                    and self._walk_goes_on(state, signer, reach, now)
                ):
                    # the feed brings what the walk passed; what it has not read, it will
                    walk = _Walk(
                        issuer,
                        min(state.walk_next_update, rs.not_after),  # begun by an earlier version
                        bytes.fromhex(state.walk),
                        state.walk_earliest,
                        self.lead(state),
                        state.walk_started,
                        n_signed=state.walk_signed,
                        n_kept=state.walk_kept,
                    )
                    walks.append(walk)
                    feed = self._revoked_since(issuer, state.commit, now, walk.lead, result)
                    self._sign_all(issuer, feed, now, walk.next_update, result, walk)
                elif full or not self._incremental(state, rs, reach, now):
                    # a walk starts: it reads every entry of this commit or later, so no feed
                    walks.append(
                        _Walk(issuer, self._next_update(issuer, now), b"", 0, self.lead(state), now)
                    )
                else:
                    feed = self._revoked_since(issuer, state.commit, now, self.lead(state), result)
                    # the issuer's answers fall due together (a first answer starts the date)
                    cohort = state.next_update or self._next_update(issuer, now)
                    self._sign_all(issuer, feed, now, min(cohort, rs.not_after), result)
            for walk in walks:
                if deadline is not None and result.walked and self.timer() >= deadline:
                    break  # the rest goes on at the next run (each run moves one walk on)
                result.walked += 1
                due = self._walk_due(walk, now, deadline, result)
                self._sign_all(walk.issuer, due, now, walk.next_update, result, walk)
                # no drain here: the next issuer's chunks join those in flight, so that no
                # signing process idles while the last chunk of an issuer is signed
            self._drain()
            ran = math.ceil(self.timer() - began)
            result.walking = self._record_state(now, ran, commit, states, walks, result.skipped)
            for w in walks:
                since = now + ran - w.started if w.started else 0
                if 0 < states[w.issuer.index].next_update <= now + ran:  # past due by now
                    result.overdue[w.issuer.id] = since
                if w.done:
                    result.ended[w.issuer.id] = since
        except BaseException:
            self.close()  # a broken pool, a store error: the next run starts afresh
            raise
        return result

    def _next_update(self, issuer: IssuerFiles, now: int) -> int:
        """The nextUpdate of answers signed at ``now`` for ``issuer``: a validity away, no later
        than its delegate's notAfter (`ResponseSigner.capped`)."""
        return self._response_signers[issuer.id].capped(now + self.validity)

    def _incremental(self, state: sf.OcspState, rs: ResponseSigner, reach: int, now: int) -> bool:
        """Whether the changes feed since the last run says all that is to sign for an issuer."""
        return (
            state.commit > 0  # a run that covered every revoked serial, and said up to which commit
            and state.commit >= reach  # the feed still holds every loss of effect after it
            and state.signer == rs.signer_id.hex()  # the same delegate signs
            and (not state.next_update or _not_due(state.next_update, rs, now, self.lead(state)))
        )  # and no stored answer is due (none stored: none due; `_not_due`)

    @staticmethod
    def _walk_goes_on(state: sf.OcspState, signer: str, reach: int, now: int) -> bool:
        """Whether an issuer's walk in progress can go on where it stopped: the same delegate
        signs, the feed still holds every loss of effect since its last run, and the
        nextUpdate the walk began with is still ahead (a builder stopped past it would
        otherwise sign answers whose nextUpdate is before their thisUpdate, which no client
        takes, RFC 6960 §4.2.2.1, and count the stop in the walk's duration: it begins
        again)."""
        return (
            state.commit > 0
            and state.commit >= reach
            and state.signer == signer
            and state.walk_next_update > now
        )

    def _sign_all(
        self,
        issuer: IssuerFiles,
        due: Iterator[tuple[bytes, sf.StatusRecord]],
        now: int,
        next_update: int,
        result: PresignResult,
        walk: _Walk | None = None,
    ) -> None:
        """Sign ``due`` in chunks; with ``walk``, note each key (the walk skips it if it reads
        it before its answer is stored) and the answers' nextUpdate among the walk's earliest."""
        for chunk in _chunks(due, CHUNK):
            if walk is not None:
                walk.signed.update(k for k, _ in chunk)
                walk.n_signed += len(chunk)
                walk.keep(next_update)
            if self._pool is None and self.workers > 1:
                self._pool = ProcessPoolExecutor(
                    self.workers, initializer=_init_worker, initargs=(os.getpid(), self._files)
                )
            self._sign_chunk(issuer, chunk, now, next_update, self._pool, result)

    def _walk_due(
        self, walk: _Walk, now: int, deadline: float | None, result: PresignResult
    ) -> Iterator[tuple[bytes, sf.StatusRecord]]:
        """Revoked serials of one issuer whose stored answer is missing, stale or nearly so,
        read from where its walk stopped until the end (then ``walk.done``) or ``deadline``."""
        rs = self._response_signers[walk.issuer.id]
        with self.store.read() as r:
            for n, (key, _entry) in enumerate(r.revocations(walk.issuer.index, after=walk.last)):
                if deadline is not None and n and not n % CHECK_EVERY and self.timer() >= deadline:
                    return  # walk.last is the last key read: the next run starts after it
                walk.last = key
                if key in walk.signed:
                    continue  # the feed brought it in this run: its answer is on its way
                st = r.status(key)
                assert st is not None, "a CRL entry has a status record"
                stored = r.stored_answer(key)
                if stored is not None and self._keep(stored, st, rs, now, walk.lead):
                    result.kept += 1
                    walk.n_kept += 1
                    walk.keep(stored.next_update)
                    continue
                yield key, st
        walk.done = True

    def _revoked_since(
        self, issuer: IssuerFiles, commit: int, now: int, lead: int, result: PresignResult
    ) -> Iterator[tuple[bytes, sf.StatusRecord]]:
        """The serials of one issuer that lost effect after ``commit`` (the changes feed) and
        are revoked now, whose stored answer is missing or not theirs."""
        rs = self._response_signers[issuer.id]
        with self.store.read() as r:
            for key in lost_since(r, issuer.index, commit):
                st = r.status(key)
                if st is None or st.state != sf.STATE_REVOKED:
                    continue  # unlisted or erased since: no answer to store
                if self._keep(r.stored_answer(key), st, rs, now, lead):
                    result.kept += 1
                    continue
                yield key, st

    @staticmethod
    def _keep(
        stored: StoredAnswer | None, st: sf.StatusRecord, rs: ResponseSigner, now: int, lead: int
    ) -> bool:
        """Whether a stored answer stands: this status version's, this delegate's, not due
        (`_not_due`)."""
        return (
            stored is not None
            and stored.version == st.version
            and stored.signer_id == rs.signer_id
            and _not_due(stored.next_update, rs, now, lead)
        )

    def _sign_chunk(
        self,
        issuer: IssuerFiles,
        chunk: list[tuple[bytes, sf.StatusRecord]],
        now: int,
        next_update: int,
        pool: ProcessPoolExecutor | None,
        result: PresignResult,
    ) -> None:
        rs = self._response_signers[issuer.id]
        name_hash, key_hash = self._hashes[issuer.id]
        data = [
            rs.presigned_data(
                cert_id_der("sha1", name_hash, key_hash, int.from_bytes(key[2:], "big")),
                st.revoked_at,
                st.reason,
                now,
                next_update,
            )
            for key, st in chunk
        ]
        if pool is None:
            signer = self._signers[issuer.id]
            self._store_chunk(rs, chunk, data, [signer.sign(d) for d in data], now, next_update)
        else:
            self._inflight.append(
                (
                    issuer.id, rs, chunk, data, pool.submit(_sign_many, issuer.id, data),
                    now, next_update,
                )
            )  # fmt: skip
            while len(self._inflight) > 2 * self.workers:
                self._finish_oldest()
        result.signed += len(chunk)

    def _finish_oldest(self) -> None:
        issuer_id, rs, chunk, data, fut, now, next_update = self._inflight.pop(0)
        signatures = fut.result()
        _check_signed_by(issuer_id, rs, data[0], signatures[0])
        self._store_chunk(rs, chunk, data, signatures, now, next_update)

    def _drain(self) -> None:
        while self._inflight:
            self._finish_oldest()

    def _store_chunk(
        self,
        rs: ResponseSigner,
        chunk: list[tuple[bytes, sf.StatusRecord]],
        data: list[bytes],
        signatures: list[bytes],
        now: int,
        next_update: int,
    ) -> None:
        """Store the answers whose status did not change meanwhile, as their parts
        (`sf.pack_response_parts`): the signature and a check of what it signs. The rest of
        each is what `ResponseSigner.presigned_data` made of the key, the status record of
        that version and the times, which the responder gives it again."""
        signer_id = rs.signer_id
        check = sf.response_check
        with Commit(self.store) as c:
            for (key, st), d, sig in zip(chunk, data, signatures, strict=True):
                current = c.status(key)
                if current is None or current.version != st.version:
                    continue
                answer = StoredAnswer(
                    st.version, now, next_update, signer_id, b"", sig, check(d, sig)
                )
                c.put_answer(key, answer)

    def _record_state(
        self,
        now: int,
        ran: int,
        commit: int,
        states: dict[int, sf.OcspState],
        walks: list[_Walk],
        skipped: dict[str, str],
    ) -> int:
        """Per issuer: when answers were last signed, the earliest stored nextUpdate, the commit
        covered and the delegate, and where a walk in progress stands (when it began, what it
        signed and kept so far; a walk that ended, how long it took: from its first run's
        ``now`` to this run's, plus the ``ran`` seconds of this run, `_walk_seconds`); returns
        how many walks go on at the next run. An issuer ``skipped`` (its delegate not valid
        now) keeps its state: this run covered none of its revocations.

        The earliest nextUpdate is unchanged by an incremental run (its answers took it) and
        by a walk in progress; a walk that ended gives the earliest of the answers it kept or
        stored. Read from every stored answer only after an incremental run of an issuer that
        had none (only this run's)."""
        walking = 0
        by_index = {w.issuer.index: w for w in walks}
        with Commit(self.store) as c:
            for issuer in self.manifest.all_issuers():
                if issuer.id not in self._signers or issuer.id in skipped:
                    continue
                old = states[issuer.index]
                new = msgspec.structs.replace(
                    old,
                    produced_at=now,
                    commit=commit,
                    signer=self._response_signers[issuer.id].signer_id.hex(),
                )
                if (w := by_index.get(issuer.index)) is None:
                    if not old.next_update:
                        new.next_update = min(
                            (a.next_update for _, a in c.stored_answers(issuer.index)), default=0
                        )
                elif w.done:
                    new.next_update = w.earliest
                    new.walk, new.walk_next_update, new.walk_earliest = None, 0, 0
                    new.walk_seconds = _walk_seconds(old, w, now + ran - w.started)
                    new.walk_started = new.walk_signed = new.walk_kept = 0
                else:
                    walking += 1
                    new.walk = w.last.hex()
                    new.walk_next_update = w.next_update
                    new.walk_earliest = w.earliest
                    new.walk_started = w.started
                    new.walk_signed, new.walk_kept = w.n_signed, w.n_kept
                c.put_ocsp_state(issuer.index, new)
        return walking


def _not_due(next_update: int, rs: ResponseSigner, now: int, lead: int) -> bool:
    """Whether an answer of ``rs`` (or the earliest of an issuer's) with ``next_update``
    stands at ``now``: more than ``lead`` before it (`Presigner.lead`), or at the delegate's
    notAfter, the cap (`ResponseSigner.capped`): that delegate can sign no later one, and
    re-signing it would give the same nextUpdate at every run until the delegate expired.
    One past the notAfter (an earlier version signed it) is due: served until then, it
    would be rejected by clients after it; it is signed again, capped."""
    if next_update > rs.not_after:
        return False
    return next_update - now > lead or next_update == rs.not_after


def _check_signed_by(issuer_id: str, rs: ResponseSigner, data: bytes, signature: bytes) -> None:
    """Raise `SignerError` unless ``signature`` (of a chunk's first answer, made by a signing
    process) verifies with the certificate this process frames the answers with.

    A signing process loads its key when it starts (`_init_worker`), which may be long after
    this process loaded the certificate: a delegate's key replaced in place since (a PEM file
    written over, a token's key made again under the same label) signed every answer with
    one key while they carried the other's certificate and responderID, and every client
    rejected them. One verification per chunk (a process signs a chunk with one key): nothing
    of such a chunk is stored, and the builder's signing warns until it is restarted."""
    public = rs.signer.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)  # `crlbuilder.keys.signer`: RSA keys only
    try:
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignerError(
            f"{issuer_id}'s OCSP signer: a signing process signed with another key than the "
            "certificate's the builder loaded at start (the key replaced since?): nothing it "
            "signed was stored; restart the builder"
        ) from None


def _walk_seconds(old: sf.OcspState, walk: _Walk, took: int) -> int:
    """The duration an issuer keeps after ``walk`` ended in ``took`` seconds (0: its start not
    known): a walk that re-signed at least as many answers as it kept measured re-signing and
    replaces the duration kept; one that mostly kept them replaces it only when it took
    longer (its start not known: the duration kept stands)."""
    if not walk.started:
        return old.walk_seconds if walk.n_signed < walk.n_kept else 0
    if walk.n_signed >= walk.n_kept:
        return took
    return max(old.walk_seconds, took)


@dataclass
class _Walk:
    """One issuer's reading of every CRL entry, from where it stopped (`sf.OcspState.walk`)."""

    issuer: IssuerFiles
    next_update: int
    """The nextUpdate its answers take, fixed when it began (`sf.OcspState.walk_next_update`)."""
    last: bytes
    """The last key read (b"": none yet)."""
    earliest: int
    """The earliest nextUpdate of the answers kept or signed so far (0: none)."""
    lead: int
    """A stored answer closer than this to its nextUpdate is signed again (`Presigner.lead`)."""
    started: int
    """When it began (`sf.OcspState.walk_started`; 0: not known)."""
    done: bool = False
    """Every entry after the walk's start was read."""
    signed: set[bytes] = field(default_factory=set)
    """Keys the changes feed brought in this run: the walk skips them."""
    n_signed: int = 0
    """Answers signed since it began (`sf.OcspState.walk_signed`)."""
    n_kept: int = 0
    """Stored answers kept since it began (`sf.OcspState.walk_kept`)."""

    def keep(self, next_update: int) -> None:
        self.earliest = min(self.earliest, next_update) if self.earliest else next_update
