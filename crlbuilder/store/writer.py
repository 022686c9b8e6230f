"""Writing the status store: one write transaction, `Commit`, owning every bookkeeping rule.

crlbuilder is the store's only writer. Every write goes through a `Commit` (one
LMDB write transaction: readers see all of it or none) and the rules that keep
readers right live here, once:

- a write that changes what a reader answers (a status record, a link, a consent,
  a move-out notice, an applied record id, an announcement...) marks the commit
  *changed*: on leaving, the commit sequence (`META_COMMIT`) moves to `Commit.seq`
  and its time (`META_COMMITTED_AT`) is read from the clock the caller gave, never
  from the wall clock behind its back;
- every status record written carries the commit's sequence as its version, so an
  answer cached by (key, version) is never served after it (`Commit.new_version`
  bumps the version alone);
- a revocation (`Commit.revoke`, `Commit.list_revoked` for an imported CRL)
  rewrites the status record, writes the CRL entry (`RevokedEntry`, dated by this
  commit) and deletes the stored pre-signed answer, together; an erasure past
  retention (Ord §70(1)(iii), `Commit.erase`) and a removal from an imported CRL
  (`Commit.unlist`) delete the entry and the answer with it;
- every loss of effect (`Commit.revoke`, `Commit.list_revoked`,
  `Commit.list_revoked_sorted`) is appended to the changes feed (`DB_CHANGES`: commit ‖
  status key) in the same transaction, and the commit's marker (its time) with it, so a
  party reading "changes since cursor" sees a revocation exactly when a status answer
  does; `Commit.prune_changes` drops whole commits past the feed's retention and moves
  its horizon (`META_CHANGES_FROM`);
- a move-out notice written or deleted (`Commit.put_pending`, `delete_pending`) keeps the
  builder's lapse index (`DB_LAPSES`) in the same transaction, and a commit that changes the
  store moves the index's stamp (`META_LAPSES`) to its own number when the index was
  current, so a commit of a builder that keeps no index leaves it behind;
- the builder's own state (pre-signed answers, CRL and OCSP state, the CRL index,
  the build number, quarantine keys, the outbox, the kept move-in notices) is written without moving the
  commit sequence: it changes no status;
- the build number moves only with the promise of the run that moves it (`Commit.bump_build`,
  `META_VOUCHED`): a promise names the build that wrote it.

A commit that wrote nothing is aborted. A `Commit` is also a `StoreReader`
(`LmdbReader` over its own transaction), so a write reads what it already wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Final

import msgspec

from crlbuilder.model import Family
from crlbuilder.periods import kept_until
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import LmdbError, Store
from crlbuilder.store.reader import LmdbReader, StoredAnswer

Clock = Callable[[], datetime]
"""The caller's clock: dates the commit (`META_COMMITTED_AT`)."""

_UNREAD: Final = sf.RetentionState(scanned_at=0, horizon=0, periods="")
"""`Commit._agenda` before this commit read the retention agenda's state."""
_NO_HOLDER: Final = bytes(sf.HOLDER_BYTES)
"""The holder of an imported CRL entry: the 機構's CRL names none."""


class Commit(LmdbReader):
    """One write transaction of the store: ``with Commit(store, clock) as c: ...``.

    ``clock`` may be None for a commit that only writes the builder's own state; a
    change then raises (a change must be dated).
    """

    __slots__ = (
        "_agenda",
        "_answers_in",
        "_applied_db",
        "_changes_db",
        "_clock",
        "_env",
        "_holders_db",
        "_kept_from",
        "_links_cur",
        "_links_db",
        "_listed",
        "_path",
        "_retention_db",
        "_revoked_db",
        "_revoked_from",
        "_seq_u32",
        "changed",
        "group",
        "lost",
        "seq",
        "wrote",
    )

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        if store.readonly:
            raise sf.StoreFormatError(f"{store.path}: opened read-only, cannot write")
        self._env = store.env
        self._path = store.path
        super().__init__(store.env.begin(write=True), store.dbs)
        self._clock = clock
        self.seq = self.generation().commit + 1
        """The commit sequence this transaction takes if it changes anything: the version
        of every status record it writes."""
        self.changed = False
        self.wrote = False
        self.group: sf.StreamGroup | None = None
        """The record stream's batch this commit belongs to (`store.format.StreamGroup`), set
        by the builder that applies the stream: written in the commit's marker, so a changes
        cursor can name positions of the stream rather than this store's commit numbers."""
        self._answers_in: dict[bytes, bool] = {}
        self._changes_db = store.dbs[sf.DB_CHANGES]
        # the handles and the packed sequence the per-record writes use, looked up once
        self._links_db = store.dbs[sf.DB_LINKS]
        self._holders_db = store.dbs[sf.DB_HOLDERS]
        self._revoked_db = store.dbs[sf.DB_REVOKED]
        self._applied_db = store.dbs[sf.DB_APPLIED]
        self._retention_db = store.dbs[sf.DB_RETENTION]
        self._links_cur = self._txn.cursor(db=self._links_db)
        """The links cursor `holder_certs` repositions on every call (a read view opens one
        per call; a commit, used by the builder's one thread, keeps one)."""
        self._seq_u32 = sf.pack_u32(self.seq)
        """``seq`` as stored (u32): an applied record's value, a changes entry's prefix."""
        self.lost = 0
        """Losses of effect this commit appended to the changes feed."""
        self._revoked_from: int | None = None
        """The earliest recordedAt of the CRL entries this commit writes (and lapsedAt of the
        lapsed move-out notices, `put_pending`, recordedAt of consents) when the store's
        retention agenda is not complete: lowers `META_REVOKED_FROM` when it commits."""
        self._kept_from: int | None = None
        """The earliest instant an entry this commit keeps in ``taken`` or ``moveins`` can fall
        due (`crlbuilder.keptfor`) when the agenda is not complete: lowers `META_KEPT_FROM`
        when it commits."""
        self._agenda: sf.RetentionState | None = _UNREAD
        """The retention agenda's state, read once by this commit's first write that lists on it
        (`_agenda_state`)."""
        self._listed: set[bytes] = set()
        """The agenda entries (`store.format.retention_key`) this commit listed and has not
        written yet (`_write_listed`): written once each, in key order, when the commit ends or
        before anything reads or empties the agenda, rather than one put per listing scattered
        among the other writes."""
        self._lapses_db = store.dbs[sf.DB_LAPSES]
        self._lapses_whole = False
        """`index_lapses` made the lapse index again in this transaction."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit or abort (`_end`); LMDB's refusal to write (a full disk at the commit, a full
        map at a put) is raised as `store.format.StoreWriteError` naming the store, nothing
        of the transaction written (it was a traceback, ``lmdb.Error: mdb_txn_commit:
        Input/output error``)."""
        try:
            self._end(failed=exc_type is not None)
        except LmdbError as e:
            raise sf.StoreWriteError(self._cannot_write(e)) from e
        if isinstance(exc, LmdbError):
            raise sf.StoreWriteError(self._cannot_write(exc)) from exc

    def _cannot_write(self, e: BaseException) -> str:
        return (
            f"{self._path}: the store could not be written ({e}): is its disk full, or its map "
            "(store.map_size_gib)? Nothing of the transaction was written; the store stays at "
            "its last commit"
        )

    def _end(self, *, failed: bool) -> None:
        """Commit with the bookkeeping, or abort a failed or empty transaction. A failure here
        (no room in the map or on the disk, the caller's clock) aborts it too: left open, the
        transaction would hold LMDB's write lock for as long as anything kept the exception,
        and the next `Commit` of the process would wait for it for ever."""
        if failed or not (self.changed or self.wrote):
            self._txn.abort()
            return
        try:
            self._commit()
        except BaseException:
            self._txn.abort()
            raise

    def _commit(self) -> None:
        """`_end` of a transaction that wrote: the bookkeeping, then LMDB's commit."""
        if self.changed:
            if self._clock is None:
                self._txn.abort()
                raise RuntimeError("a commit that changes the store needs the caller's clock")
            self._txn.put(sf.META_COMMIT, sf.pack_u32(self.seq), db=self._meta_db)
            at = int(self._clock().timestamp())
            self._txn.put(sf.META_COMMITTED_AT, sf.pack_i64(at), db=self._meta_db)
            if self.lost:
                marker = sf.commit_marker_key(self.seq)
                self._txn.put(marker, sf.commit_marker(at, self.group), db=self._changes_db)
            if self._lapses_whole or self._meta(sf.META_LAPSES) == sf.pack_u32(self.seq - 1):
                # the index was complete before this commit, which kept it: still complete
                self._txn.put(sf.META_LAPSES, self._seq_u32, db=self._meta_db)
        elif self._lapses_whole:
            self._txn.put(sf.META_LAPSES, sf.pack_u32(self.seq - 1), db=self._meta_db)
        if self._revoked_from is not None:
            # what the retention agenda has not seen (`crlbuilder.retention`), in the same
            # transaction as the entries: whichever process wrote them
            seen = self.revoked_written_from()
            if seen is None or self._revoked_from < seen:
                self._txn.put(sf.META_REVOKED_FROM, sf.pack_i64(self._revoked_from),
                              db=self._meta_db)  # fmt: skip
        if self._kept_from is not None:
            seen = self.kept_written_from()
            if seen is None or self._kept_from < seen:
                self._txn.put(sf.META_KEPT_FROM, sf.pack_i64(self._kept_from), db=self._meta_db)
        self._write_listed()
        self._txn.commit()

    def _agenda_state(self) -> sf.RetentionState | None:
        if self._agenda is _UNREAD:
            self._agenda = self.retention_state()
        return self._agenda

    def _wrote_revoked(self, key: bytes | None, recorded_at: int) -> None:
        """This commit wrote, under ``key``, an entry that falls due for erasure no earlier than
        the shortest retention period from ``recorded_at`` (a CRL entry, a lapsed notice, a
        consent: `crlbuilder.retention`): listed on a complete agenda at that period's end
        (checked then, and listed again at its own instant), else it lowers `META_REVOKED_FROM`.
        ``key`` None: an entry no erasure takes (an imported CRL's, no legal category), listed
        nowhere; it lowers the watermark of an agenda made to a horizon, as it always did."""
        state = self._agenda_state()
        if state is not None and state.complete:
            if key is not None:
                self.put_retention(kept_until(recorded_at, state.shortest), key)
        elif self._revoked_from is None or recorded_at < self._revoked_from:
            self._revoked_from = recorded_at

    def first_retention_due(self) -> int | None:
        # what this commit listed is written first (`_write_listed`): the agenda as it reads
        self._write_listed()
        return super().first_retention_due()

    def count(self, db: bytes) -> int:
        if db == sf.DB_RETENTION:
            self._write_listed()
        return super().count(db)

    def holder_certs(self, holder: bytes, family: Family) -> list[bytes]:
        # `LmdbReader.holder_certs` on this commit's cursor: set_key positions it afresh each
        # time (LMDB keeps a write transaction's cursors right across its writes), and the
        # list is complete before it returns, so no caller iterates while another call moves it
        cur = self._links_cur
        if not cur.set_key(sf.link_key(holder, family)):
            return []
        return list(cur.iternext_dup())  # bytes already: this transaction has no buffers

    # --- plumbing -------------------------------------------------------------------

    def _put(self, db: bytes, key: bytes, value: bytes, *, change: bool = True) -> None:
        self._txn.put(key, value, db=self._dbs[db])
        self.wrote = True
        self.changed |= change

    def _delete(self, db: bytes, key: bytes, *, change: bool = True) -> bool:
        done = bool(self._txn.delete(key, db=self._dbs[db]))
        self.wrote |= done
        self.changed |= done and change
        return done

    # --- certificates ---------------------------------------------------------------

    def add_certificate(
        self, key: bytes, st: sf.StatusRecord, family: Family, sealed_facts: bytes | None
    ) -> sf.StatusRecord:
        """An issued certificate: its status record (this commit's version), its link under
        its holder and family, and the sealed four facts of a sign certificate; those are listed
        on the retention agenda when they fall due before its horizon (`_list_facts`)."""
        new = st if st.version == self.seq else st._replace(version=self.seq)
        put = self._txn.put
        put(key, new.pack(), db=self._status_db)
        put(sf.link_key(st.holder, family), key, db=self._links_db)
        if sealed_facts is not None:
            put(key, sealed_facts, db=self._holders_db)
            self._list_facts(key, st.not_after + 1)
        self.wrote = self.changed = True
        return new

    def _list_facts(self, key: bytes, due: int) -> None:
        """Facts sealed by this commit that fall due at ``due`` (the second after notAfter,
        `crlbuilder.factskept.erasable_at`): listed on the retention agenda under their status
        key (on one made to a horizon, only when that is before it: a certificate whose record
        is read late), so that the agenda needs no scan for them. No agenda yet: its first scan
        finds them."""
        state = self._agenda_state()
        if state is not None and due < state.horizon:
            self.put_retention(due, key)

    def drop_facts(self, key: bytes) -> bool:
        """Delete the sealed four facts of a certificate that lost effect (`crlbuilder.factskept`):
        builder state, it moves no commit (nothing answers from them any more)."""
        return self._delete(sf.DB_HOLDERS, key, change=False)

    def new_version(self, key: bytes, st: sf.StatusRecord) -> None:
        """Give ``st`` this commit's version, nothing else: every answer cached or stored
        for it before is no longer served (a move-out notice's bound, Act §31(2))."""
        if st.version != self.seq:
            self._put(sf.DB_STATUS, key, st._replace(version=self.seq).pack())

    def revoke(
        self,
        key: bytes,
        st: sf.StatusRecord,
        *,
        category: int,
        reason: int,
        at: int,
        recorded_at: int,
    ) -> sf.StatusRecord:
        """Revoke one certificate: new status version, the CRL entry, the stored answer gone,
        and its sealed four facts (基本4情報) gone: they are kept only to answer
        特定署名用電子証明書記録情報 (Act §18(3)), which names a sign certificate that has not
        lost effect (§15(1), §16-14(1)), and a revoked certificate never is again."""
        new = sf.StatusRecord(
            self.seq,
            sf.STATE_REVOKED,
            category,
            reason,
            st.family,
            st.not_before,
            st.not_after,
            at,
            st.holder,
        )  # fmt: skip  (st._replace(version=, state=, category=, reason=, revoked_at=), direct)
        put = self._txn.put
        put(key, new.pack(), db=self._status_db)
        entry = sf.pack_revoked_entry(at, reason, category, self.seq, recorded_at)
        put(key, entry, db=self._revoked_db)
        if self._txn.delete(key, db=self._holders_db):
            # their listing goes with them (`_list_facts`), before the entry's own is written: a
            # complete agenda keeps one entry per thing that can still fall due (listed by this
            # commit, not written yet, or by an earlier one)
            facts_listed = sf.retention_key(st.not_after + 1, key)
            self._listed.discard(facts_listed)
            self._txn.delete(facts_listed, db=self._retention_db)
        self._wrote_revoked(key, recorded_at)
        self.wrote = self.changed = True
        self._drop_answer(key)
        self._lost(key)
        return new

    def _lost(self, key: bytes) -> None:
        """``key`` lost effect in this commit: one entry of the changes feed."""
        # sf.change_key(self.seq, key), its prefix packed once per commit
        self._txn.put(self._seq_u32 + key, sf.CHANGE_LOST, db=self._changes_db)
        self.lost += 1

    def erase(self, key: bytes, st: sf.StatusRecord, *, keep_time: bool) -> None:
        """A revocation record past its retention (Ord §70(1)(iii)): the status keeps only
        that the certificate lost effect (and its time when ``keep_time``); the CRL
        entry and the stored answer go, and its sealed four facts if a builder of an earlier
        release kept them at the revocation (`revoke`)."""
        erased = st._replace(
            version=self.seq, state=sf.STATE_ERASED, category=0, reason=0,
            revoked_at=st.revoked_at if keep_time else 0,
        )  # fmt: skip
        self._put(sf.DB_STATUS, key, erased.pack())
        self._delete(sf.DB_REVOKED, key)
        self._delete(sf.DB_HOLDERS, key)
        self._drop_answer(key)

    def keep_erased(self, key: bytes, at: int) -> None:
        """``key``'s CRL entry, erased at ``at`` by this commit, is listed by its issuer's last
        full CRL (`DB_ERASED`): the next CRL must take it off (`crlbuilder.crl.publish`)."""
        self._put(sf.DB_ERASED, key, sf.pack_erased(self.seq, at), change=False)

    def drop_erased(self, issuer_index: int, through: int) -> int:
        """Forget the issuer's `DB_ERASED` entries erased by commit ``through`` or before: a full
        CRL reflecting that commit lists none of them. Returns how many went."""
        gone = [k for k, commit, _ in self.erased_listed(issuer_index) if commit <= through]
        for key in gone:
            self._delete(sf.DB_ERASED, key, change=False)
        return len(gone)

    def list_revoked(self, key: bytes, family: int, at: int, reason: int) -> None:
        """A serial listed on an imported CRL (a group appliance): revoked at ``at`` with
        ``reason``, no legal category, no holder, recorded when revoked."""
        self._put(sf.DB_STATUS, key, sf.pack_listed_status(self.seq, reason, family, at))
        self._put(sf.DB_REVOKED, key, sf.pack_listed_entry(self.seq, reason, at))
        self._wrote_revoked(None, at)  # a listed entry is recorded when revoked
        self._drop_answer(key)
        self._lost(key)

    def list_revoked_sorted(
        self, issuer_index: int, family: int, entries: list[tuple[bytes, int, int]]
    ) -> None:
        """`list_revoked` of (key, at, reason) in ascending key order, all of ``issuer_index``,
        written in bulk (appended when no later issuer's keys follow: LMDB's MDB_APPEND)."""
        if not entries:
            return
        seq, prefix = self.seq, sf.issuer_prefix(issuer_index)
        status, entry = sf.pack_listed_status, sf.pack_listed_entry
        self._append(sf.DB_STATUS, [(k, status(seq, r, family, at)) for k, at, r in entries])
        self._append(sf.DB_REVOKED, [(k, entry(seq, r, at)) for k, at, r in entries])
        self._wrote_revoked(None, min(at for _, at, _ in entries))
        lost, head = sf.CHANGE_LOST, sf.pack_u32(seq)
        self._append(sf.DB_CHANGES, [(head + k, lost) for k, _, _ in entries])
        self.lost += len(entries)
        self.wrote = self.changed = True
        if self._has_answers(prefix):
            for key, _, _ in entries:
                self._txn.delete(key, db=self._responses_db)

    def _append(self, db: bytes, items: list[tuple[bytes, bytes]]) -> None:
        """Ascending ``items``; appended (MDB_APPEND) when every stored key sorts before them."""
        cur = self._txn.cursor(db=self._dbs[db])
        append = not cur.last() or bytes(cur.key()) < items[0][0]
        consumed, written = cur.putmulti(items, append=append)
        if written != len(items):
            raise RuntimeError(f"LMDB wrote {written} of {consumed} CRL entries")

    def unlist(self, key: bytes) -> None:
        """A serial no longer on an imported CRL: its status, CRL entry and stored answer go."""
        self._delete(sf.DB_STATUS, key)
        self._delete(sf.DB_REVOKED, key)
        self._drop_answer(key)

    def prune_changes(self, before: int) -> int:
        """Drop from the changes feed every commit written before ``before`` (epoch seconds):
        the feed's retention. Moves its horizon (`META_CHANGES_FROM`) to the last commit
        dropped (its time to `META_CHANGES_FROM_AT`, and `META_CHANGES_FROM_SEQ` to the last stream sequence of those the record
        stream made), so a cursor at or before it is refused and the party resynchronises. Whole
        commits only: a cursor is never left inside a commit whose rest is gone. Changes no
        status (no new commit); returns the entries dropped."""
        cur = self._txn.cursor(db=self._changes_db)
        dropped, last, last_at, last_seq = 0, 0, 0, 0
        found = cur.first()
        while found:
            k = bytes(cur.key())
            if len(k) == 4:
                at, group = sf.parse_commit_marker(bytes(cur.value()))
                if at >= before:
                    break
                last, last_at = sf.unpack_u32(k), at
                if group is not None:
                    last_seq = max(last_seq, group.end)
            elif sf.unpack_u32(k[:4]) > last:  # an entry of a commit not (yet) judged old
                break
            found = cur.delete()
            dropped += 1
        if last > self.meta_u32(sf.META_CHANGES_FROM):
            self._put(sf.DB_META, sf.META_CHANGES_FROM, sf.pack_u32(last), change=False)
            self._put(sf.DB_META, sf.META_CHANGES_FROM_AT, sf.pack_i64(last_at), change=False)
        if last_seq > sf.unpack_u64(self._meta(sf.META_CHANGES_FROM_SEQ) or bytes(8)):
            self._put(sf.DB_META, sf.META_CHANGES_FROM_SEQ, sf.pack_u64(last_seq), change=False)
        self.wrote |= dropped > 0
        return dropped

    # --- the builder's retention agenda (`crlbuilder.retention`) ---------------------

    def rebuild_retention(
        self, state: sf.RetentionState, later: Iterable[tuple[int, bytes]]
    ) -> None:
        """The agenda a scan of every CRL entry in this transaction made: ``later`` holds every
        (due instant, status or holder key) that falls due before ``state.horizon`` (every one
        not due yet, in a complete agenda), in any order. The entries written before it are all
        seen: `META_REVOKED_FROM` and `META_KEPT_FROM` go, and this commit's later writes list
        by ``state``."""
        self._listed.clear()  # what this commit listed goes with what was written
        self._txn.drop(self._retention_db, delete=False)
        self.add_retention(later)
        self._put(sf.DB_META, sf.META_RETENTION, msgspec.json.encode(state), change=False)
        self._agenda = state
        self._txn.delete(sf.META_REVOKED_FROM, db=self._meta_db)
        self._txn.delete(sf.META_KEPT_FROM, db=self._meta_db)

    def add_retention(self, later: Iterable[tuple[int, bytes]]) -> None:
        """List every (due instant, key) of ``later`` on the retention agenda at once: a scan's
        (`rebuild_retention`), in chunks when it lists many, so that it never holds every entry
        of the store in memory; written at once, with what this commit listed before
        (`_write_listed`)."""
        # a set: a status key may be listed for its CRL entry and its facts at one instant
        self._listed.update(sf.retention_key(due, key) for due, key in later)
        self._write_listed()

    def _write_listed(self) -> None:
        """Write the agenda entries this commit listed (`_listed`), each once and in key order:
        appended (full pages) while every key sorts after those already listed (a scan's first
        chunk into the agenda it emptied), else inserted one after another, LMDB's cursor then
        finding most on the page it is on. One put per listing, in the records' order, made the
        listing of a first load a third dearer (bench/README.md,
        "Issue 17, tenth pass: the retention scan off the revocations' path")."""
        if not self._listed:
            return
        keys = sorted(self._listed)
        cur = self._txn.cursor(db=self._retention_db)
        append = not cur.last() or bytes(cur.key()) < keys[0]
        cur.putmulti([(k, b"") for k in keys], append=append)
        self._listed.clear()
        self.wrote = True

    def put_erased_state(self, state: sf.ErasedState) -> None:
        """Record what this erasure past retention may have taken from records read later
        (`META_ERASED`, `crlbuilder.lateness`): builder state, it moves no commit."""
        self._put(sf.DB_META, sf.META_ERASED, msgspec.json.encode(state), change=False)

    def put_retention(self, due: int, key: bytes) -> None:
        """List ``key`` (a status key, or a holder key for a lapsed move-out notice,
        `crlbuilder.lapsed`) on the retention agenda as due at ``due``: written with the rest
        this commit lists (`_write_listed`), by the time anything reads the agenda."""
        self._listed.add(sf.retention_key(due, key))
        self.wrote = True

    def take_retention(self, now: int) -> list[bytes]:
        """The keys the agenda names as due by ``now``, taken off it (check each): status keys
        (22 bytes) of CRL entries, and holder keys (32 bytes) of lapsed move-out notices."""
        self._write_listed()
        cur = self._txn.cursor(db=self._retention_db)
        out: list[bytes] = []
        cur.first()
        while k := cur.key():  # empty once past the last entry
            due, key = sf.split_retention_key(k)
            if due > now:
                break
            out.append(key)
            cur.delete()  # and on to the next
        self.wrote |= bool(out)
        return out

    def mark_crl_import(self) -> None:
        """This store is a group appliance's, built from the 機構's CRLs (`META_MODE`)."""
        self._put(sf.DB_META, sf.META_MODE, sf.MODE_CRL_IMPORT)

    def claim_applied(self, record_id: str, digest: bytes) -> bytes | sf.Applied:
        """A record marked applied by this commit (its id is not applied twice), with the
        digest of what it says (`crlbuilder.recorddigest`), in one lookup: returns its key, or,
        when the id was applied before (by an earlier commit or this one: nothing written), what
        was kept for it (`store.format.Applied`: the caller compares the digests). A claimed
        record is then either applied (`keep_applied`: the mark is this commit's change) or
        refused (`release_applied`: the mark goes, in the same transaction, so a refused record
        is not taken for applied)."""
        key = record_id.encode()
        if self._txn.put(
            key, sf.pack_applied(self._seq_u32, digest), db=self._applied_db, overwrite=False
        ):
            return key
        held = self._txn.get(key, db=self._applied_db)
        assert held is not None  # the put found it, in this transaction
        return sf.unpack_applied(held)

    def keep_applied(self) -> None:
        """The claimed record applied: its mark is this commit's change."""
        self.wrote = self.changed = True

    def release_applied(self, key: bytes) -> None:
        """The claimed record refused: its mark deleted (the state before `claim_applied`)."""
        self._txn.delete(key, db=self._applied_db)

    # --- stored answers ---------------------------------------------------------------

    def _has_answers(self, prefix: bytes) -> bool:
        known = self._answers_in.get(prefix)
        if known is None:
            cur = self._txn.cursor(db=self._responses_db)
            known = bool(cur.set_range(prefix)) and bytes(cur.key()[:2]) == prefix
            self._answers_in[prefix] = known
        return known

    def _drop_answer(self, key: bytes) -> None:
        if self._has_answers(key[:2]):
            self._delete(sf.DB_RESPONSES, key)

    def drop_answers(self, issuer_index: int) -> int:
        """Delete every stored answer of one issuer (its delegate is no longer believed, after
        a compromise of its CA key); returns how many."""
        prefix = sf.issuer_prefix(issuer_index)
        cur = self._txn.cursor(db=self._responses_db)
        n = 0
        if cur.set_range(prefix):
            while cur.key()[:2] == prefix and cur.delete():
                n += 1
        if n:
            self.wrote = self.changed = True
        self._answers_in[prefix] = False
        return n

    def put_answer(self, key: bytes, answer: StoredAnswer) -> None:
        """A pre-signed answer (the builder's: no commit), in its layout: its parts, or (an
        answer given with its stem) the stem."""
        a = answer
        value = (
            sf.pack_response_parts(
                a.version, a.this_update, a.next_update, a.signer_id, a.check, a.signature
            )
            if a.parts
            else sf.pack_response(a.version, a.this_update, a.next_update, a.signer_id, a.stem)
        )
        self._put(sf.DB_RESPONSES, key, value, change=False)
        self._answers_in[key[:2]] = True

    # --- holders ------------------------------------------------------------------------

    def put_pending(self, holder: bytes, pending: sf.PendingMoveOut) -> None:
        """The holder's move-out notice, and its place in the lapse index while not lapsed.
        Once lapsed, the notice falls due for erasure no earlier than its lapse record's
        retention (`crlbuilder.lapsed`): listed on the retention agenda under the holder key as a
        CRL entry recorded at its ``lapsed_at`` is (`_wrote_revoked`, `crlbuilder.retention`)."""
        self._unindex_pending(holder)
        self._put(sf.DB_PENDING, holder, msgspec.json.encode(pending))
        if not pending.lapsed_at:
            self._txn.put(sf.lapse_key(pending.planned_date, holder), b"", db=self._lapses_db)
        else:
            self._wrote_revoked(holder, pending.lapsed_at)

    def delete_pending(self, holder: bytes, *, change: bool = True) -> None:
        """The holder's move-out notice goes (ended by a later notice, or, ``change`` False, a
        lapsed one erased past its lapse record's retention: it bounds no answer,
        `crlbuilder.lapsed`)."""
        self._unindex_pending(holder)
        self._delete(sf.DB_PENDING, holder, change=change)

    def _unindex_pending(self, holder: bytes) -> None:
        old = self.pending(holder)
        if old is not None and not old.lapsed_at:
            self._txn.delete(sf.lapse_key(old.planned_date, holder), db=self._lapses_db)

    def index_lapses(self) -> int:
        """Make the lapse index (`DB_LAPSES`) again from every notice kept, in this
        transaction; it is then complete through this commit. Returns the notices listed."""
        self._txn.drop(self._lapses_db, delete=False)
        items = sorted(
            (sf.lapse_key(p.planned_date, holder), b"")
            for holder, p in self.pending_notices()
            if not p.lapsed_at
        )
        if items:
            self._txn.cursor(db=self._lapses_db).putmulti(items, append=True)
        self._lapses_whole = self.wrote = True
        return len(items)

    def put_move_ins(
        self, holder: bytes, move_ins: list[sf.MoveIn], *, due_from: int | None = None
    ) -> None:
        """The holder's move-in notices the builder keeps (`store.format.DB_MOVE_INS`): its own
        state, read by no answer, so it moves no commit. ``due_from``: the earliest instant the
        move-in added can fall due for erasure (`crlbuilder.keptfor.move_in_due_from`): the
        holder is listed on the retention agenda then (`_wrote_kept`, `crlbuilder.retention`)."""
        self._put(sf.DB_MOVE_INS, holder, msgspec.json.encode(move_ins), change=False)
        if due_from is not None:
            self._wrote_kept(holder, due_from)

    def put_taken(
        self, holder: bytes, taken: list[sf.Taken], *, due_from: int | None = None
    ) -> None:
        """The holder's resident changes that took card certificates (`store.format.DB_TAKEN`):
        the builder's own state, read by no answer, so it moves no commit. ``due_from``: as for
        `put_move_ins` (`crlbuilder.keptfor.taken_due_from`)."""
        self._put(sf.DB_TAKEN, holder, msgspec.json.encode(taken), change=False)
        if due_from is not None:
            self._wrote_kept(holder, due_from)

    def _wrote_kept(self, holder: bytes, due_from: int) -> None:
        """The holder's kept entry written by this commit can fall due from ``due_from``:
        listed there on a complete agenda (checked then, with the holder's other entries),
        else it lowers `META_KEPT_FROM`."""
        state = self._agenda_state()
        if state is not None and state.complete:
            self.put_retention(due_from, holder)
        elif self._kept_from is None or due_from < self._kept_from:
            self._kept_from = due_from

    def delete_taken(self, holder: bytes) -> None:
        """The holder's kept changes and lapses all erased (`crlbuilder.keptfor`)."""
        self._delete(sf.DB_TAKEN, holder, change=False)

    def delete_move_ins(self, holder: bytes) -> None:
        """The holder's kept move-ins all erased (`crlbuilder.keptfor`)."""
        self._delete(sf.DB_MOVE_INS, holder, change=False)

    def put_consent(self, holder: bytes, verifier: str, recorded_at: int) -> None:
        """The holder's consent, listed on the retention agenda under the holder key as a CRL
        entry recorded at ``recorded_at`` is (`_wrote_revoked`): it falls due for erasure no
        earlier than a retention period from it (`crlbuilder.consentkept`), so the agenda sees
        one read late."""
        self._put(sf.DB_CONSENTS, sf.consent_key(holder, verifier), sf.pack_i64(recorded_at))
        self._wrote_revoked(holder, recorded_at)

    def delete_consent(self, holder: bytes, verifier: str) -> bool:
        """The holder's consent to ``verifier`` gone (withdrawn, or erased): what record-info
        reads, so the commit moves; False when there was none."""
        return self._delete(sf.DB_CONSENTS, sf.consent_key(holder, verifier))

    def put_withdrawal(self, holder: bytes, verifier: str, recorded_at: int) -> None:
        """A withdrawal of the holder's consent kept (`DB_WITHDRAWALS`): the builder's own state,
        read by no answer, so it moves no commit; listed on the retention agenda under the holder
        key as a consent recorded at ``recorded_at`` is (`_wrote_revoked`: it falls due as that
        consent would, `crlbuilder.consentkept`)."""
        key = sf.consent_key(holder, verifier)
        self._put(sf.DB_WITHDRAWALS, key, sf.pack_i64(recorded_at), change=False)
        self._wrote_revoked(holder, recorded_at)

    def delete_withdrawal(self, holder: bytes, verifier: str) -> bool:
        """The withdrawal kept gone (erased, or outranked by a later grant): moves no commit."""
        return self._delete(sf.DB_WITHDRAWALS, sf.consent_key(holder, verifier), change=False)

    def put_granted_before(self, at: int) -> None:
        """Raise `META_GRANTED_BEFORE` to ``at`` (never lowered): builder state, no commit."""
        if at > self.granted_before():
            self._put(sf.DB_META, sf.META_GRANTED_BEFORE, sf.pack_i64(at), change=False)

    # --- issuers and announcements ------------------------------------------------------

    def put_issuers(self, issuers: Iterable[sf.IssuerMeta]) -> None:
        """The issuer table (configuration: no commit by itself)."""
        table = sorted(issuers, key=lambda i: i.index)
        self._put(sf.DB_META, sf.META_ISSUERS, msgspec.json.encode(table), change=False)

    def put_announcement(self, issuer_index: int, announcement: sf.Announcement) -> None:
        self._put(
            sf.DB_ANNOUNCEMENTS,
            sf.announcement_key(issuer_index),
            msgspec.json.encode(announcement),
        )

    # --- the builder's own state (no commit) ---------------------------------------------

    def put_crl_state(self, issuer_index: int, state: sf.CrlState) -> None:
        key = sf.META_CRL_STATE_PREFIX + sf.pack_u32(issuer_index)
        self._put(sf.DB_META, key, msgspec.json.encode(state), change=False)

    def put_ocsp_state(self, issuer_index: int, state: sf.OcspState) -> None:
        key = sf.META_OCSP_STATE_PREFIX + sf.pack_u32(issuer_index)
        self._put(sf.DB_META, key, msgspec.json.encode(state), change=False)

    def put_crl_file(self, issuer_index: int, entry: sf.CrlFileEntry) -> None:
        key = sf.crl_key(issuer_index, entry.number, entry.delta)
        self._put(sf.DB_CRLS, key, msgspec.json.encode(entry), change=False)

    def delete_crl_file(self, key: bytes) -> None:
        self._delete(sf.DB_CRLS, key, change=False)

    def bump_build(self, vouched_until: int) -> int:
        """The next build number (`Generation.build`): a build run wrote CRLs and answers, and
        vouches for every issuer's data until ``vouched_until`` (epoch seconds,
        `store.format.META_VOUCHED`, written with the number it names)."""
        build = self.generation().build + 1
        self._put(sf.DB_META, sf.META_BUILD, sf.pack_u32(build), change=False)
        self._put(sf.DB_META, sf.META_VOUCHED, sf.pack_vouched(build, vouched_until), change=False)
        return build

    def name_feed(self, feed_id: bytes) -> None:
        """The record stream that fills this store from now on (`META_FEED_ID`): builder's
        state. The feed in stream positions starts here: `META_CHANGES_FROM_SEQ` moves up to
        the stream sequence applied so far, since the commits before carry no stream group (a
        store filled before this version, or from another stream) and a cursor before it
        cannot be served."""
        self._put(sf.DB_META, sf.META_FEED_ID, feed_id, change=False)
        applied = sf.unpack_u64(self._meta(sf.META_STREAM_SEQ) or bytes(8))
        if applied > sf.unpack_u64(self._meta(sf.META_CHANGES_FROM_SEQ) or bytes(8)):
            self._put(sf.DB_META, sf.META_CHANGES_FROM_SEQ, sf.pack_u64(applied), change=False)

    def adopt_feed(self, feed_id: bytes) -> int:
        """The store follows another instance of its record stream from its first sequence
        (`crlbuilder.streamadopt`: the stream deleted and made again, its history republished):
        `META_FEED_ID` names it, `META_STREAM_SEQ` is 0, and the old stream's head and the
        refusal go (node state). The changes feed starts again here: its entries name the old
        stream's batches (`StreamGroup`), whose sequences a cursor of the new stream would be
        compared with (`responder.v1.feedpos`), so they are dropped and the horizon
        (`META_CHANGES_FROM`) moves to the current commit, `META_CHANGES_FROM_SEQ` back to 0:
        a cursor of the old stream is refused for its feed (the party resynchronises). No
        status, link, record or commit number changes; returns the feed entries dropped."""
        dropped = int(self._txn.stat(self._changes_db)["entries"])
        self._txn.drop(self._changes_db, delete=False)
        self._put(sf.DB_META, sf.META_CHANGES_FROM, sf.pack_u32(self.seq - 1), change=False)
        self._delete(sf.DB_META, sf.META_CHANGES_FROM_SEQ, change=False)
        self._put(sf.DB_META, sf.META_FEED_ID, feed_id, change=False)
        self._delete(sf.DB_META, sf.META_STREAM_SEQ, change=False)
        self._delete(sf.DB_META, sf.META_STREAM_HEAD, change=False)
        self._delete(sf.DB_META, sf.META_STREAM_REFUSED, change=False)
        return dropped

    def rekey_applied(self, record_id: str, digest: bytes) -> bool:
        """Keep ``digest`` beside the applied record id ``record_id``, its commit unchanged
        (`crlbuilder.tokenadopt`: release 1.5's unsigned token revocation, signed on a record
        stream made again); False, nothing written, when the id is not applied. Node state: it
        moves no commit."""
        raw = self._txn.get(record_id.encode(), db=self._applied_db)
        if raw is None:
            return False
        seq_u32 = bytes(raw[:4])
        self._put(sf.DB_APPLIED, record_id.encode(), sf.pack_applied(seq_u32, digest), change=False)
        return True

    def put_stream_seq(self, seq: int) -> None:
        """The record stream is applied up to ``seq`` (`META_STREAM_SEQ`): builder's state,
        written in the batch's transaction whether or not the batch changed anything."""
        self._put(sf.DB_META, sf.META_STREAM_SEQ, sf.pack_u64(seq), change=False)

    def token_signatures_from(self) -> int | None:
        """The stream sequence from which token revocations need the token issuer's signature
        (`META_TOKEN_SIGNATURES`); None: not yet (unsigned ones are applied)."""
        raw = self._meta(sf.META_TOKEN_SIGNATURES)
        return sf.unpack_u64(raw) if raw is not None else None

    def put_token_signatures_from(self, seq: int) -> None:
        """The stream's message at ``seq`` is its first of a release that signs token
        revocations (`META_TOKEN_SIGNATURES`): set once, in that message's batch."""
        if self.token_signatures_from() is None:
            self._put(sf.DB_META, sf.META_TOKEN_SIGNATURES, sf.pack_u64(seq), change=False)

    def rules7_from(self) -> int | None:
        """The stream sequence from which records are judged by rules 7 (`META_RULES7_FROM`);
        None: not yet (by rules 6)."""
        raw = self._meta(sf.META_RULES7_FROM)
        return sf.unpack_u64(raw) if raw is not None else None

    def put_rules7_from(self, seq: int) -> None:
        """The stream's message at ``seq`` is its first of release 1.7 or later
        (`META_RULES7_FROM`): set once, in that message's batch."""
        if self.rules7_from() is None:
            self._put(sf.DB_META, sf.META_RULES7_FROM, sf.pack_u64(seq), change=False)

    def rules8_from(self) -> int | None:
        """The stream sequence from which records are judged by rules 8 (`META_RULES8_FROM`);
        None: not yet (by rules 7)."""
        raw = self._meta(sf.META_RULES8_FROM)
        return sf.unpack_u64(raw) if raw is not None else None

    def put_rules8_from(self, seq: int) -> None:
        """The stream's message at ``seq`` is its first of release 1.8 or later
        (`META_RULES8_FROM`): set once, in that message's batch."""
        if self.rules8_from() is None:
            self._put(sf.DB_META, sf.META_RULES8_FROM, sf.pack_u64(seq), change=False)

    def rules9_from(self) -> int | None:
        """The stream sequence from which consents are decided by rules 9 and erased
        (`META_RULES9_FROM`); None: not yet (by rules 8, none erased)."""
        raw = self._meta(sf.META_RULES9_FROM)
        return sf.unpack_u64(raw) if raw is not None else None

    def put_rules9_from(self, seq: int) -> None:
        """The stream's message at ``seq`` is its first of release 1.9 or later
        (`META_RULES9_FROM`): set once, in that message's batch."""
        if self.rules9_from() is None:
            self._put(sf.DB_META, sf.META_RULES9_FROM, sf.pack_u64(seq), change=False)

    def put_written_by(self, release: str) -> None:
        """Name ``release`` (``FORMAT.RULES``) as the newest that wrote the store: builder state,
        it moves no commit (the caller checked it is newer than the one named)."""
        self._put(sf.DB_META, sf.META_WRITTEN_BY, release.encode("ascii"), change=False)

    def put_stream_head(self, last_seq: int, seen_at: int) -> None:
        """The record stream's last sequence seen at ``seen_at`` (`META_STREAM_HEAD`)."""
        raw = sf.pack_u64(last_seq) + sf.pack_i64(seen_at)
        self._put(sf.DB_META, sf.META_STREAM_HEAD, raw, change=False)

    def put_stream_refused(self, reason: str) -> None:
        """Why the builder stopped applying the record stream (`META_STREAM_REFUSED`); an empty
        ``reason``: it applies it again (the entry goes)."""
        if reason:
            one_line = " ".join(reason.split())
            self._put(sf.DB_META, sf.META_STREAM_REFUSED, one_line.encode(), change=False)
        else:
            self._delete(sf.DB_META, sf.META_STREAM_REFUSED, change=False)

    def quarantine(self, key: bytes) -> None:
        """A refusal quarantined by this commit (it is not quarantined twice)."""
        self._put(sf.DB_QUARANTINE, key, sf.pack_u32(self.seq), change=False)

    def stage(self, target: bytes, line: bytes) -> None:
        """Owe ``line`` to ``target``'s file (`crlbuilder.outbox`), numbered after the last."""
        raw = self._meta(sf.META_OUTBOX_SEQ)
        n = (sf.unpack_u64(raw) if raw is not None else 0) + 1
        self._put(sf.DB_OUTBOX, sf.outbox_key(target, n), line, change=False)
        self._put(sf.DB_META, sf.META_OUTBOX_SEQ, sf.pack_u64(n), change=False)

    def unstage(self, keys: Iterable[bytes]) -> None:
        """Lines delivered: no longer owed."""
        for k in keys:
            self._delete(sf.DB_OUTBOX, k, change=False)

    def put_spool_at(self, at: sf.SpoolAt) -> None:
        """How far this commit takes the spool file being applied (`META_SPOOL_AT`)."""
        self._put(sf.DB_META, sf.META_SPOOL_AT, msgspec.json.encode(at), change=False)

    def put_outbox_file(self, target: bytes, delivered: sf.OutboxFile) -> None:
        key = sf.META_OUTBOX_FILE_PREFIX + target
        self._put(sf.DB_META, key, msgspec.json.encode(delivered), change=False)
