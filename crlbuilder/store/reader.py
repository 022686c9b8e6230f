"""Reading the status store (状態データベース): the one typed read API of both binaries.

`StoreReader` is what a reader of the store may ask, over one consistent view
(an LMDB read transaction: a reader sees a write transaction all or nothing):
status records (`StatusRecord`), pre-signed answers (`StoredAnswer`), the
store generation (commit sequence and build number), entry counts, CRL entries,
the CRL index, holder links, consents, sealed facts, pending move-out notices and
the 30-day lapse they bring (Act §31(2)), announcements (公表), the issuer table,
per-issuer CRL and OCSP state, and the changes feed (every loss of effect by commit,
with the store's identity and the feed's horizon). Nothing outside `crlbuilder.store` decodes the
stored bytes: every value comes back as a `crlbuilder.store.format` record.

Two implementations: `LmdbReader` (this module; `Store.read` in
`crlbuilder.store.lmdbstore` opens one) and `MemoryReader`
(`crlbuilder.store.memory`: built from plain records, for unit tests). Both
inherit the rules that are derived from stored facts (`ReaderRules`: the lapse
due, the nextUpdate promised), so the two cannot drift. Writing is
`crlbuilder.store.writer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Final, NamedTuple, Protocol, Self, TypeAlias, TypeVar

import lmdb
import msgspec

from crlbuilder import rules
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.validity import expired_at

Db: TypeAlias = "lmdb._Database"
"""A named database handle of the LMDB environment (lmdb's own type)."""

_LAPSE_FAMILIES: Final = frozenset({Family.AUTH_CARD.code, Family.AUTH_MOBILE.code})
"""The families a 30-day lapse revokes: auth-card (Act §31(2)) and, by cascade, auth-mobile."""

CHECKPOINT_EVERY: Final = 1 << 16
"""Entries between two calls of a long scan's ``checkpoint`` (see `StoreReader.revoked_counts`)."""


class Generation(NamedTuple):
    """What changes whenever crlbuilder wrote anything.

    ``commit`` moves with every write of records (a status version is the commit that
    last changed it); ``build`` with every pre-signing and CRL run, which may write
    new nextUpdates without a new commit.
    """

    commit: int
    build: int


class StoredAnswer(NamedTuple):
    """A pre-signed OCSP answer as stored, in either layout: its DER stem
    (`store.format.pack_response`, written before the parts were) or its parts
    (`store.format.pack_response_parts`: the DER is rebuilt, `parts`)."""

    version: int
    """The status version it answers: stale once the status record moved on."""
    this_update: int
    """Its thisUpdate, and its producedAt (the pre-signer signs them equal)."""
    next_update: int
    signer_id: bytes
    """8 bytes of the signer certificate's SHA-256: whose ``certs`` field completes it."""
    stem: bytes
    """The response DER without its final ``certs`` field; empty for an answer stored as its
    parts."""
    signature: bytes = b""
    """An answer stored as its parts: the signature over the tbsResponseData rebuilt from the
    head, the key, the status record of ``version`` and the signer's and issuer's constants
    (`crlbuilder.ocsp.response.ResponseSigner.presigned_data`); empty for a stem."""
    check: bytes = b""
    """An answer stored as its parts: `store.format.response_check` of the bytes it was signed
    for and ``signature``; empty for a stem."""

    @property
    def parts(self) -> bool:
        """Stored as its parts (the DER rebuilt), not as its stem."""
        return not self.stem

    def rebuilt(self, signed: bytes) -> bool:
        """Whether ``signed``, rebuilt from this answer's parts, is the tbsResponseData it was
        signed for (its check matches; `store.format.response_check`)."""
        return sf.response_check(signed, self.signature) == self.check


def decode_answer(value: bytes) -> StoredAnswer:
    """The `StoredAnswer` of a ``responses`` value, either layout; `store.format.StoreCorrupt`
    for one shorter than its layout."""
    version, this_update, next_update, signer_id = sf.unpack_response_head(value)
    parts = sf.unpack_response_parts(value)
    if parts is not None:
        check, signature = parts
        return StoredAnswer(version, this_update, next_update, signer_id, b"", signature, check)
    return StoredAnswer(
        version, this_update, next_update, signer_id, bytes(value[sf.RESPONSE_HEAD_BYTES :])
    )


class ChangeEntry(NamedTuple):
    """One loss of effect in the changes feed (`store.format.DB_CHANGES`)."""

    commit: int
    """The commit that wrote it."""
    key: bytes
    """The status key of the certificate (read its `StatusRecord` for what it lost effect by)."""
    committed_at: int
    """When that commit was written (epoch seconds)."""
    group: sf.StreamGroup | None = None
    """The record stream's batch the commit belongs to (`store.format.StreamGroup`); None
    for a commit the record stream did not make."""

    @property
    def after(self) -> bytes:
        """The feed position just after this entry (`StoreReader.changes`'s ``start``)."""
        return sf.change_key(self.commit, self.key) + b"\x00"


def changes_start(commit: int) -> bytes:
    """The feed position just after every change of ``commit`` and before those of the next."""
    return sf.commit_marker_key(commit + 1)


def lost_since(r: StoreReader, issuer_index: int, commit: int) -> list[bytes]:
    """The status keys of one issuer that lost effect in the commits after ``commit``, each
    once, in key order: from the changes feed, which must still reach ``commit``
    (``commit >= r.changes_from()``)."""
    prefix = sf.issuer_prefix(issuer_index)
    return sorted({c.key for c in r.changes(changes_start(commit)) if c.key[:2] == prefix})


def never_fed(r: StoreReader, issuer_index: int) -> bool:
    """A group appliance's store (CRL-import mode) holding no CRL of the issuer: the first
    import records every issuer it was given (``import-crl --pki``/``--group``), so one whose
    CRL was never imported (its fetch refused, a generation added since) is listed with no
    CRL state. Nothing vouches for its serials: the answers treat it as stale (OCSP
    ``tryLater``, ``/v1/status`` and ``/v1/verify`` unavailable), never ``good``. Always
    False on the 機構's own store, which answers from its issuance records."""
    return r.crl_import() and not r.crl_state(issuer_index).this_update


class StoreReader(Protocol):
    """One consistent view of the store (see the module docstring)."""

    def snapshot(self) -> int:
        """Names the committed state this view reads: equal means nothing was written between."""
        ...

    def generation(self) -> Generation: ...

    def committed_at(self) -> int:
        """When the last commit was written (epoch seconds; 0 before any)."""
        ...

    def crl_import(self) -> bool:
        """A group appliance's store built from the 機構's CRLs (a serial absent is good)."""
        ...

    def issuers(self) -> list[sf.IssuerMeta]:
        """The issuer generations the store knows (empty before the first build)."""
        ...

    def crl_state(self, issuer_index: int) -> sf.CrlState: ...

    def ocsp_state(self, issuer_index: int) -> sf.OcspState: ...

    def promised_next_update(self, issuer_index: int) -> int:
        """The nextUpdate the builder promised for one issuer (0: none yet)."""
        ...

    def vouched(self) -> tuple[int, int]:
        """(build number, instant) of the last build run's promise as stored
        (`store.format.META_VOUCHED`; (0, 0): none)."""
        ...

    def vouched_until(self) -> int:
        """Until when the store's last build run vouches for every issuer's data (0: no
        promise; `ReaderRules.vouched_until`)."""
        ...

    def status(self, key: bytes) -> sf.StatusRecord | None:
        """The status record under a status key (`store.format.status_key`), or None."""
        ...

    def statuses(self, issuer_index: int | None = None) -> Iterator[tuple[bytes, sf.StatusRecord]]:
        """(status key, record) of one issuer's certificates, or of all, in key order."""
        ...

    def stored_answer(self, key: bytes) -> StoredAnswer | None: ...

    def stored_answers(self, issuer_index: int) -> Iterator[tuple[bytes, StoredAnswer]]: ...

    def revoked_entry(self, key: bytes) -> sf.RevokedEntry | None: ...

    def revocations(
        self, issuer_index: int | None = None, *, after: bytes = b""
    ) -> Iterator[tuple[bytes, sf.RevokedEntry]]:
        """(status key, CRL entry) of one issuer's revoked certificates, or of all, in key order;
        with ``after``, only the keys that sort after it (a walk resumed where it stopped)."""
        ...

    def revoked_counts(
        self, checkpoint: Callable[[], object] | None = None
    ) -> dict[tuple[int, int], int]:
        """CRL entries per (issuer index, category code), in one walk.

        ``checkpoint`` is called every `CHECKPOINT_EVERY` entries (to yield, or to
        abandon the walk by raising).
        """
        ...

    def count(self, db: bytes) -> int:
        """Entries of one named database (`store.format.ALL_DBS`; 0 for an absent one)."""
        ...

    def holder_certs(self, holder: bytes, family: Family) -> list[bytes]:
        """Status keys of every certificate of one holder in one family (the links)."""
        ...

    def pending(self, holder: bytes) -> sf.PendingMoveOut | None:
        """The holder's last move-out notice (転出届), lapsed or not."""
        ...

    def pending_notices(self) -> Iterator[tuple[bytes, sf.PendingMoveOut]]:
        """(holder, notice) of every move-out notice kept, lapsed or not."""
        ...

    def pending_move_out(self, holder: bytes) -> sf.PendingMoveOut | None:
        """The holder's move-out notice whose 30-day lapse is not written yet, or None."""
        ...

    def lapse_due(self, st: sf.StatusRecord) -> int:
        """When the good certificate ``st`` loses effect by a pending 30-day lapse (0: none)."""
        ...

    def consent(self, holder: bytes, verifier: str) -> int | None:
        """When the holder's consent to ``verifier`` was recorded (Act §18(3)), or None."""
        ...

    def consents_of(self, holder: bytes) -> list[tuple[str, int]]:
        """(verifier id, when recorded) of every consent the holder gave, in verifier order
        (a disclosure of the holder's records, Act §58: `crlbuilder.disclosure`)."""
        ...

    def withdrawals_of(self, holder: bytes) -> list[tuple[str, int]]:
        """(verifier id, when recorded) of every withdrawal of the holder's consent the builder
        keeps (`store.format.DB_WITHDRAWALS`, rules 9), in verifier order (a disclosure)."""
        ...

    def taken(self, holder: bytes) -> list[sf.Taken]:
        """The holder's resident changes and lapses the builder keeps (`store.format.DB_TAKEN`),
        earliest first."""
        ...

    def move_ins(self, holder: bytes) -> list[sf.MoveIn]:
        """The holder's move-in notices the builder keeps (`store.format.DB_MOVE_INS`),
        earliest first."""
        ...

    def sealed_facts(self, key: bytes) -> bytes | None:
        """The sealed four facts of a sign certificate (AES-GCM; `crlbuilder.facts`)."""
        ...

    def applied(self, record_id: str) -> int | None:
        """The commit that applied a record id, or None (idempotence)."""
        ...

    def quarantined(self, key: bytes) -> int | None:
        """The commit that first quarantined a refusal (`ingest.quarantine_key`), or None."""
        ...

    def crl_files(self) -> list[tuple[bytes, sf.CrlFileEntry]]:
        """(index key, entry) of every CRL file produced and still kept, in key order."""
        ...

    def latest_crls(self, issuer_index: int) -> list[sf.CrlFileEntry]:
        """The issuer's latest full CRL and the latest delta CRL after it (newest first)."""
        ...

    def announcements(self) -> list[sf.Announcement]:
        """Every published issuing-key compromise (公表, Act §15(3) ...), oldest first."""
        ...

    def store_id(self) -> bytes:
        """The store's identity (`META_STORE_ID`; empty for a store no builder gave one)."""
        ...

    def changes_from(self) -> int:
        """The changes feed holds every loss of effect of the commits after this one
        (`META_CHANGES_FROM`); the current commit for a store without the feed."""
        ...

    def feed_id(self) -> bytes:
        """The record stream that fills the store (`META_FEED_ID`); empty when none does."""
        ...

    def stream_seq(self) -> int:
        """The last record stream sequence committed (`META_STREAM_SEQ`; 0 before any)."""
        ...

    def changes_from_seq(self) -> int:
        """The changes feed holds every loss of effect of the record stream's batches that
        end after this stream sequence (`META_CHANGES_FROM_SEQ`; 0: none dropped)."""
        ...

    def changes(self, start: bytes) -> Iterator[ChangeEntry]:
        """The losses of effect at feed position ``start`` and after, in commit then key
        order (``start``: `changes_start` or `ChangeEntry.after`)."""
        ...

    def last_change(self, commit: int) -> tuple[int, int] | None:
        """The last commit at or before ``commit`` whose losses of effect the feed holds, and
        when it was written (its `ChangeEntry.committed_at`: 0 when its marker is gone); when
        the feed holds none there but retention dropped one, the horizon (`changes_from`) and
        its time (`store.format.META_CHANGES_FROM_AT`) for a ``commit`` at or after it; else
        None. A store restored from an older copy numbers its next commits as the lost ones,
        written later: this tells them apart."""
        ...


def latest_of(newest_first: Iterator[sf.CrlFileEntry]) -> list[sf.CrlFileEntry]:
    """The latest full CRL and the latest delta CRL after it, from one issuer's CRL index
    read backwards: stops at the first full CRL (a delta numbered before it is superseded)."""
    out: list[sf.CrlFileEntry] = []
    delta_seen = False
    for entry in newest_first:
        if not entry.delta:
            out.append(entry)
            break
        if not delta_seen:
            out.append(entry)
            delta_seen = True
    return out


class ReadSource(Protocol):
    """Where views come from: `Store` (LMDB) or a `MemoryReader` (which is its own view)."""

    def read(self) -> AbstractContextManager[StoreReader]: ...


class ReaderRules(ABC):
    """What is derived from stored facts, the same over every `StoreReader`: each
    implementation gives the seven primitives, the rules are written once here."""

    @abstractmethod
    def generation(self) -> Generation: ...

    @abstractmethod
    def vouched(self) -> tuple[int, int]: ...

    @abstractmethod
    def crl_state(self, issuer_index: int) -> sf.CrlState: ...

    @abstractmethod
    def ocsp_state(self, issuer_index: int) -> sf.OcspState: ...

    @abstractmethod
    def pending(self, holder: bytes) -> sf.PendingMoveOut | None: ...

    @abstractmethod
    def holder_certs(self, holder: bytes, family: Family) -> list[bytes]: ...

    @abstractmethod
    def status(self, key: bytes) -> sf.StatusRecord | None: ...

    def promised_next_update(self, issuer_index: int) -> int:
        """Its last CRL's nextUpdate, else the earliest nextUpdate of its pre-signed answers,
        else the builder's own promise (`vouched_until`): an issuer with no CRL (``[crl]
        enabled = false`` and no CRL fetched) and no revoked serial is promised what its
        answers would have been.

        Past it the issuer's data is stale: OCSP answers ``tryLater``, ``/readyz`` 503 and the
        metric ``jpkiva_stale_issuer`` is 1. 0: no promise, never stale (a group appliance's
        store, whose never-fed issuers `never_fed` tells; a store no build run of this release
        wrote yet).
        """
        return (
            self.crl_state(issuer_index).next_update
            or self.ocsp_state(issuer_index).next_update
            or self.vouched_until()
        )

    def vouched_until(self) -> int:
        """The instant the last build run vouched for every issuer's data until
        (`store.format.META_VOUCHED`), while that run's build number is still the store's;
        0 otherwise (none written, or a build run of an earlier release since, which does
        not renew it: no promise then, as before it existed)."""
        build, until = self.vouched()
        return until if build and build == self.generation().build else 0

    def pending_move_out(self, holder: bytes) -> sf.PendingMoveOut | None:
        """None too once the lapse was written (Act §31(2)): the revocation is then in
        the status records themselves."""
        pending = self.pending(holder)
        return None if pending is None or pending.lapsed_at else pending

    def lapse_due(self, st: sf.StatusRecord) -> int:
        """Epoch seconds of the due instant (`rules.move_out_lapse`), 0 when no pending
        lapse will revoke ``st``.

        Mirrors what the applier writes when the lapse falls due (異動等失効情報, Act
        §31(2), effective when written, §34(1)(2)): an auth-card certificate not exempt
        by the 国外転出届 window (`rules.lapse_revokes`), and the holder's auth-mobile
        certificates when one such auth-card certificate goes with it (cascade, Act
        §35-13, §35-14(1)(4)). Other families have no 30-day rule. Costs one read for an
        auth certificate (a cursor more for a mobile one whose holder has a pending
        notice), none otherwise.
        """
        if st.revoked or st.family not in _LAPSE_FAMILIES:
            return 0
        pending = self.pending_move_out(st.holder)
        if pending is None:
            return 0
        notice = rules.MoveOutNotice(
            notified_at=datetime.fromtimestamp(pending.notified_at, UTC),
            planned_date=date.fromisoformat(pending.planned_date),
            abroad=pending.abroad,
        )
        due = rules.move_out_lapse(notice.planned_date)
        if st.family == Family.AUTH_CARD.code:
            cards = [st]
        else:
            cards = [
                card
                for k in self.holder_certs(st.holder, Family.AUTH_CARD)
                if (card := self.status(k)) is not None
            ]
        due_at = int(due.timestamp())
        for card in cards:
            if (
                not card.revoked
                and not expired_at(card.not_after, due_at)
                and rules.lapse_revokes(
                    notice, issued_at=datetime.fromtimestamp(card.not_before, UTC), as_of=due
                )
            ):
                return due_at
        return 0


_T = TypeVar("_T")


def _decoded(decoder: msgspec.json.Decoder[_T], raw: bytes, what: str) -> _T:
    """``raw`` decoded; `StoreCorrupt` (naming ``what``, never the bytes) when it does not."""
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        raise sf.corrupt(what, len(raw), "valid JSON") from None


class LmdbReader(ReaderRules):
    """A `StoreReader` over one LMDB transaction (read-only, or a `Commit`'s write one).

    Made by `crlbuilder.store.lmdbstore.Store.read` (or is a `Commit`); valid while
    its transaction is. Its lmdb objects (typed by lmdb's own stubs) stay in here.
    """

    __slots__ = ("_dbs", "_meta_db", "_responses_db", "_status_db", "_txn")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[bytes, Db]) -> None:
        """``txn`` an ``lmdb.Transaction``, ``dbs`` the store's named database handles."""
        self._txn = txn
        self._dbs = dbs
        self._status_db = dbs[sf.DB_STATUS]
        self._responses_db = dbs[sf.DB_RESPONSES]
        self._meta_db = dbs[sf.DB_META]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(failed=exc_type is not None)

    def _end(self, *, failed: bool) -> None:
        """Leaving the ``with``: a read transaction has nothing to commit."""
        self._txn.abort()

    # --- meta -------------------------------------------------------------------

    def _meta(self, key: bytes) -> bytes | None:
        v = self._txn.get(key, db=self._meta_db)
        return bytes(v) if v is not None else None

    def meta_u32(self, key: bytes) -> int:
        """A u32 ``meta`` value (0: absent; `StoreCorrupt` for one of another length)."""
        return self._meta_int(key, 4) or 0

    def _meta_int(self, key: bytes, size: int, *, signed: bool = False) -> int | None:
        """A fixed-size big-endian ``meta`` value, None when absent; `StoreCorrupt` for one of
        another length (a truncated value read as a smaller number is a wrong answer)."""
        raw = self._meta(key)
        if raw is None:
            return None
        if len(raw) != size:
            raise sf.corrupt(f"meta {key.decode('ascii', 'replace')}", len(raw), f"{size} bytes")
        return int.from_bytes(raw, "big", signed=signed)

    def snapshot(self) -> int:
        snapshot: int = self._txn.id()
        return snapshot

    def generation(self) -> Generation:
        return Generation(self.meta_u32(sf.META_COMMIT), self.meta_u32(sf.META_BUILD))

    def committed_at(self) -> int:
        return self._meta_int(sf.META_COMMITTED_AT, 8, signed=True) or 0

    def vouched(self) -> tuple[int, int]:
        raw = self._meta(sf.META_VOUCHED)
        return sf.unpack_vouched(raw) if raw else (0, 0)

    def stream_seq(self) -> int:
        """The last record stream sequence committed (`META_STREAM_SEQ`; 0 before any)."""
        return self._meta_int(sf.META_STREAM_SEQ, 8) or 0

    def stream_head(self) -> tuple[int, int]:
        """The record stream's last sequence as the builder last saw it, and when (epoch
        seconds); (0, 0) when no builder of the stream wrote it (`META_STREAM_HEAD`)."""
        raw = self._meta(sf.META_STREAM_HEAD)
        if not raw or len(raw) != 16:
            return (0, 0)
        return sf.unpack_u64(raw[:8]), sf.unpack_i64(raw[8:])

    def stream_refused(self) -> str:
        """Why the builder stopped applying the record stream (`META_STREAM_REFUSED`); empty
        while it applies it."""
        raw = self._meta(sf.META_STREAM_REFUSED)
        return raw.decode("utf-8", "replace") if raw else ""

    def crl_import(self) -> bool:
        return self._meta(sf.META_MODE) == sf.MODE_CRL_IMPORT

    def written_by(self) -> str | None:
        """The newest release that wrote the store, as written (`META_WRITTEN_BY`); None: none
        named (releases before 1.9 only). Read by the builder before it writes anything."""
        raw = self._meta(sf.META_WRITTEN_BY)
        return None if raw is None else raw.decode("ascii", "replace")

    def issuers(self) -> list[sf.IssuerMeta]:
        raw = self._meta(sf.META_ISSUERS)
        return _decoded(sf.issuer_meta_list_decoder, raw, "meta issuers") if raw else []

    def crl_state(self, issuer_index: int) -> sf.CrlState:
        raw = self._meta(sf.META_CRL_STATE_PREFIX + sf.pack_u32(issuer_index))
        return _decoded(sf.crl_state_decoder, raw, "meta crl") if raw else sf.CrlState()

    def ocsp_state(self, issuer_index: int) -> sf.OcspState:
        raw = self._meta(sf.META_OCSP_STATE_PREFIX + sf.pack_u32(issuer_index))
        return _decoded(sf.ocsp_state_decoder, raw, "meta ocsp") if raw else sf.OcspState()

    # --- per certificate ----------------------------------------------------------

    def status(self, key: bytes) -> sf.StatusRecord | None:
        raw = self._txn.get(key, db=self._status_db)
        return sf.unpack_status(raw) if raw is not None else None

    def statuses(self, issuer_index: int | None = None) -> Iterator[tuple[bytes, sf.StatusRecord]]:
        for key, value in self._range(sf.DB_STATUS, issuer_index):
            yield key, sf.unpack_status(value)

    def stored_answer(self, key: bytes) -> StoredAnswer | None:
        raw = self._txn.get(key, db=self._responses_db)
        return decode_answer(raw) if raw is not None else None

    def stored_answers(self, issuer_index: int) -> Iterator[tuple[bytes, StoredAnswer]]:
        for key, value in self._range(sf.DB_RESPONSES, issuer_index):
            yield key, decode_answer(value)

    def revoked_entry(self, key: bytes) -> sf.RevokedEntry | None:
        raw = self._txn.get(key, db=self._dbs[sf.DB_REVOKED])
        return sf.unpack_revoked(raw) if raw is not None else None

    def revocations(
        self, issuer_index: int | None = None, *, after: bytes = b""
    ) -> Iterator[tuple[bytes, sf.RevokedEntry]]:
        for key, value in self._range(sf.DB_REVOKED, issuer_index, after):
            yield key, sf.unpack_revoked(value)

    def revoked_recorded(self) -> Iterator[tuple[bytes, int, int]]:
        """(status key, recordedAt, legal category) of every CRL entry: the retention scan's
        pass, the rest of each entry not decoded."""
        for key, value in self._range(sf.DB_REVOKED, None):
            category, recorded_at = sf.revoked_category_and_recorded_at(value)
            yield key, recorded_at, category

    def not_after(self, key: bytes) -> int | None:
        """The notAfter of the certificate at status ``key`` (None: no status record), the rest
        of its record not decoded (the retention scan's, `crlbuilder.apply.due_instant`)."""
        raw = self._txn.get(key, db=self._status_db)
        return None if raw is None else sf.status_state_and_end(raw)[1]

    def sealed_ends(self) -> Iterator[tuple[bytes, int | None, int]]:
        """(status key, state or None when it has no status record, notAfter) of every
        certificate whose sealed four facts the store keeps (`DB_HOLDERS`): the retention scan's
        pass over them (`crlbuilder.factskept`), the sealed bytes never read."""
        status = self._status_db
        get = self._txn.get
        cur = self._txn.cursor(db=self._dbs[sf.DB_HOLDERS])
        for key in cur.iternext(keys=True, values=False):
            raw = get(key, db=status)
            if raw is None:
                yield bytes(key), None, 0
            else:
                state, not_after = sf.status_state_and_end(raw)
                yield bytes(key), state, not_after

    # --- the builder's retention agenda (`crlbuilder.retention`) ---------------------

    def retention_state(self) -> sf.RetentionState | None:
        """The retention agenda's last scan (`META_RETENTION`), None before the first."""
        raw = self._meta(sf.META_RETENTION)
        return _decoded(sf.retention_state_decoder, raw, "meta retention") if raw else None

    def erased_state(self) -> sf.ErasedState | None:
        """What the erasures past retention may have taken from a record read now
        (`META_ERASED`, `crlbuilder.lateness`), None before the first that erased anything."""
        raw = self._meta(sf.META_ERASED)
        return _decoded(sf.erased_state_decoder, raw, "meta erased-state") if raw else None

    def first_retention_due(self) -> int | None:
        """The earliest due instant the retention agenda lists (`DB_RETENTION`), None when it
        lists none (or a read-only open of a store made before the agenda)."""
        db = self._dbs.get(sf.DB_RETENTION)
        if db is None:
            return None
        cur = self._txn.cursor(db=db)
        return sf.split_retention_key(cur.key())[0] if cur.first() else None

    def erased_listed(self, issuer_index: int) -> list[tuple[bytes, int, int]]:
        """(status key, erasing commit, erased at) of the issuer's CRL entries erased past
        their retention that its last full CRL or a delta on it lists (`DB_ERASED`), in key
        order; none in a store made before it."""
        if self._dbs.get(sf.DB_ERASED) is None:
            return []
        return [
            (key, *sf.unpack_erased(value))
            for key, value in self._range(sf.DB_ERASED, issuer_index)
        ]

    def revoked_written_from(self) -> int | None:
        """The earliest recordedAt of the CRL entries committed since the agenda's scan
        (`META_REVOKED_FROM`), None when none was."""
        return self._meta_int(sf.META_REVOKED_FROM, 8, signed=True)

    def granted_before(self) -> int:
        """A consent grant recorded before this instant is read too late
        (`store.format.META_GRANTED_BEFORE`, rules 9); 0: no erasure of consents yet."""
        return self._meta_int(sf.META_GRANTED_BEFORE, 8, signed=True) or 0

    def kept_written_from(self) -> int | None:
        """The earliest instant an entry kept in ``taken`` or ``moveins`` since the agenda's scan
        can fall due (`META_KEPT_FROM`), None when none was kept."""
        return self._meta_int(sf.META_KEPT_FROM, 8, signed=True)

    # --- the builder's lapse index (`DB_LAPSES`) and kept move-ins (`DB_MOVE_INS`) -----

    def lapse_index_current(self) -> bool:
        """Whether the lapse index lists every move-out notice not lapsed (`META_LAPSES`
        names the last commit)."""
        raw = self._meta(sf.META_LAPSES)
        return raw is not None and sf.unpack_u32(raw) == self.generation().commit

    def pending_lapses(self) -> Iterator[tuple[date, bytes]]:
        """(planned date, holder) of the move-out notices not lapsed, earliest planned date
        first, from the lapse index: all of them only while `lapse_index_current`."""
        db = self._dbs.get(sf.DB_LAPSES)
        if db is None:  # a read-only open of a store made before the index
            return
        for k in self._txn.cursor(db=db).iternext(values=False):
            yield sf.split_lapse_key(k)

    def move_ins(self, holder: bytes) -> list[sf.MoveIn]:
        """The holder's move-in notices the builder keeps (`store.format.DB_MOVE_INS`), earliest
        first; empty when none (or a read-only open of a store made before it)."""
        db = self._dbs.get(sf.DB_MOVE_INS)
        raw = None if db is None else self._txn.get(holder, db=db)
        return _decoded(sf.move_ins_decoder, raw, "moveins") if raw is not None else []

    def taken(self, holder: bytes) -> list[sf.Taken]:
        """The holder's resident changes that took card certificates (`store.format.DB_TAKEN`),
        earliest first; empty when none (or a read-only open of a store made before it)."""
        db = self._dbs.get(sf.DB_TAKEN)
        raw = None if db is None else self._txn.get(holder, db=db)
        return _decoded(sf.taken_decoder, raw, "taken") if raw is not None else []

    def consents_kept(self) -> Iterator[tuple[bytes, list[tuple[str, int]]]]:
        """(holder, its consents as `consents_of` gives them) of every holder that gave one, in
        holder order: the erasure scan's (`crlbuilder.consentkept`)."""
        return self._per_holder(sf.DB_CONSENTS)

    def withdrawals_kept(self) -> Iterator[tuple[bytes, list[tuple[str, int]]]]:
        """(holder, its withdrawals as `withdrawals_of` gives them) of every holder with one
        kept, in holder order: the erasure scan's (`crlbuilder.consentkept`)."""
        return self._per_holder(sf.DB_WITHDRAWALS)

    def _per_holder(self, name: bytes) -> Iterator[tuple[bytes, list[tuple[str, int]]]]:
        """(holder, [(verifier, recorded_at)]) of a database keyed `store.format.consent_key`,
        in holder order (none when absent: a read-only open of a store made before it)."""
        db = self._dbs.get(name)
        if db is None:
            return
        holder = b""
        out: list[tuple[str, int]] = []
        for key, raw in self._txn.cursor(db=db):
            if len(raw) != 8:
                raise sf.corrupt(name.decode(), len(raw), "8 bytes")
            who = bytes(key[: sf.HOLDER_BYTES])
            if who != holder and out:
                yield holder, out
                out = []
            holder = who
            out.append(
                (bytes(key[sf.HOLDER_BYTES :]).decode("utf-8", "replace"), sf.unpack_i64(raw))
            )
        if out:
            yield holder, out

    def taken_kept(self) -> Iterator[tuple[bytes, list[sf.Taken]]]:
        """(holder, kept changes and lapses) of every holder in `store.format.DB_TAKEN`, in
        holder order: the erasure scan's (`crlbuilder.keptfor`)."""
        db = self._dbs.get(sf.DB_TAKEN)
        if db is not None:
            for holder, raw in self._txn.cursor(db=db):
                yield bytes(holder), _decoded(sf.taken_decoder, raw, "taken")

    def move_ins_kept(self) -> Iterator[tuple[bytes, list[sf.MoveIn]]]:
        """(holder, kept move-ins) of every holder in `store.format.DB_MOVE_INS`, in holder
        order: the erasure scan's (`crlbuilder.keptfor`)."""
        db = self._dbs.get(sf.DB_MOVE_INS)
        if db is not None:
            for holder, raw in self._txn.cursor(db=db):
                yield bytes(holder), _decoded(sf.move_ins_decoder, raw, "moveins")

    def revoked_counts(
        self, checkpoint: Callable[[], object] | None = None
    ) -> dict[tuple[int, int], int]:
        raw: dict[tuple[bytes, int], int] = {}
        category = sf.revoked_category
        cur = self._txn.cursor(db=self._dbs[sf.DB_REVOKED])
        for n, (key, value) in enumerate(cur.iternext(), 1):
            k = (key[:2], category(value))
            raw[k] = raw.get(k, 0) + 1
            if checkpoint is not None and not n % CHECKPOINT_EVERY:
                checkpoint()
        return {(int.from_bytes(i, "big"), c): n for (i, c), n in raw.items()}

    def count(self, db: bytes) -> int:
        handle = self._dbs.get(db)
        if handle is None:
            return 0
        entries: int = self._txn.stat(handle)["entries"]
        return entries

    def counts(self) -> dict[str, int]:
        """Entries per named database (summaries)."""
        return {name.decode(): self.count(name) for name in self._dbs}

    # --- holders --------------------------------------------------------------------

    def holder_certs(self, holder: bytes, family: Family) -> list[bytes]:
        cur = self._txn.cursor(db=self._dbs[sf.DB_LINKS])
        if not cur.set_key(sf.link_key(holder, family)):
            return []
        return [bytes(v) for v in cur.iternext_dup()]

    def pending(self, holder: bytes) -> sf.PendingMoveOut | None:
        raw = self._txn.get(holder, db=self._dbs[sf.DB_PENDING])
        return _decoded(sf.pending_decoder, raw, "pending") if raw is not None else None

    def pending_notices(self) -> Iterator[tuple[bytes, sf.PendingMoveOut]]:
        for holder, raw in self._txn.cursor(db=self._dbs[sf.DB_PENDING]):
            yield bytes(holder), _decoded(sf.pending_decoder, raw, "pending")

    def consent(self, holder: bytes, verifier: str) -> int | None:
        raw = self._txn.get(sf.consent_key(holder, verifier), db=self._dbs[sf.DB_CONSENTS])
        if raw is None:
            return None
        if len(raw) != 8:
            raise sf.corrupt("consents", len(raw), "8 bytes")
        return sf.unpack_i64(raw)

    def consents_of(self, holder: bytes) -> list[tuple[str, int]]:
        """(verifier id, when recorded) of every consent the holder gave (Act §18(3)), in
        verifier order: the keys under the holder's prefix (`store.format.consent_key`)."""
        return self._of_holder(sf.DB_CONSENTS, holder)

    def withdrawal(self, holder: bytes, verifier: str) -> int | None:
        """When the withdrawal kept of the holder's consent to ``verifier`` was recorded
        (`store.format.DB_WITHDRAWALS`, rules 9), or None."""
        db = self._dbs.get(sf.DB_WITHDRAWALS)
        raw = None if db is None else self._txn.get(sf.consent_key(holder, verifier), db=db)
        if raw is None:
            return None
        if len(raw) != 8:
            raise sf.corrupt("withdrawals", len(raw), "8 bytes")
        return sf.unpack_i64(raw)

    def withdrawals_of(self, holder: bytes) -> list[tuple[str, int]]:
        """(verifier id, when recorded) of every withdrawal of the holder's consent kept
        (`store.format.DB_WITHDRAWALS`), in verifier order; empty when none (or a read-only open
        of a store made before it)."""
        return self._of_holder(sf.DB_WITHDRAWALS, holder)

    def _of_holder(self, name: bytes, holder: bytes) -> list[tuple[str, int]]:
        db = self._dbs.get(name)
        out: list[tuple[str, int]] = []
        if db is None:
            return out
        cur = self._txn.cursor(db=db)
        if not cur.set_range(holder):
            return out
        for key, raw in cur:
            if bytes(key[: len(holder)]) != holder:
                break
            if len(raw) != 8:
                raise sf.corrupt(name.decode(), len(raw), "8 bytes")
            out.append((bytes(key[len(holder) :]).decode("utf-8", "replace"), sf.unpack_i64(raw)))
        return out

    def sealed_facts(self, key: bytes) -> bytes | None:
        raw = self._txn.get(key, db=self._dbs[sf.DB_HOLDERS])
        return bytes(raw) if raw is not None else None

    def applied(self, record_id: str) -> int | None:
        raw = self._txn.get(record_id.encode(), db=self._dbs[sf.DB_APPLIED])
        return sf.unpack_applied(raw).seq if raw is not None else None

    def applied_ids(self) -> Iterator[str]:
        """Every record id this store applied (`DB_APPLIED`), in key order: what a record
        stream must carry for the store to follow it (`crlbuilder.streamadopt`)."""
        for key in self._txn.cursor(db=self._dbs[sf.DB_APPLIED]).iternext(values=False):
            yield bytes(key).decode()

    def applied_entries(self, prefix: str) -> Iterator[tuple[str, sf.Applied]]:
        """The record ids this store applied that start with ``prefix``, in key order, each
        with what is kept beside it (its commit and digest: `store.format.Applied`)."""
        start = prefix.encode()
        cur = self._txn.cursor(db=self._dbs[sf.DB_APPLIED])
        if not cur.set_range(start):
            return
        for key, value in cur:
            if not bytes(key).startswith(start):
                return
            yield bytes(key).decode(), sf.unpack_applied(bytes(value))

    def quarantined(self, key: bytes) -> int | None:
        db = self._dbs.get(sf.DB_QUARANTINE)
        raw = self._txn.get(key, db=db) if db is not None else None
        if raw is None:
            return None
        if len(raw) != 4:
            raise sf.corrupt("quarantine", len(raw), "4 bytes")
        return sf.unpack_u32(raw)

    # --- CRLs and announcements -----------------------------------------------------

    def crl_files(self) -> list[tuple[bytes, sf.CrlFileEntry]]:
        return [
            (bytes(k), _decoded(sf.crl_file_decoder, v, "crls"))
            for k, v in self._txn.cursor(db=self._dbs[sf.DB_CRLS])
        ]

    def latest_crls(self, issuer_index: int) -> list[sf.CrlFileEntry]:
        return latest_of(self._crls_backwards(issuer_index))

    def _crls_backwards(self, issuer_index: int) -> Iterator[sf.CrlFileEntry]:
        prefix = sf.issuer_prefix(issuer_index)
        cur = self._txn.cursor(db=self._dbs[sf.DB_CRLS])
        found = (
            cur.set_range(sf.issuer_prefix(issuer_index + 1)) and cur.prev()
            if issuer_index + 1 < 1 << 16
            else False
        ) or cur.last()
        while found and bytes(cur.key()[:2]) == prefix:
            yield _decoded(sf.crl_file_decoder, cur.value(), "crls")
            found = cur.prev()

    def announcements(self) -> list[sf.Announcement]:
        db = self._dbs.get(sf.DB_ANNOUNCEMENTS)
        if db is None:  # a store from a builder before announcements (`OPTIONAL_DBS`)
            return []
        out = [
            _decoded(sf.announcement_decoder, v, "announcements")
            for _, v in self._txn.cursor(db=db)
        ]
        return sorted(out, key=lambda a: (a.at, a.issuer))

    # --- the changes feed -------------------------------------------------------------

    def store_id(self) -> bytes:
        return self._meta(sf.META_STORE_ID) or b""

    def changes_from(self) -> int:
        if self._dbs.get(sf.DB_CHANGES) is None:
            return self.generation().commit
        return self.meta_u32(sf.META_CHANGES_FROM)

    def feed_id(self) -> bytes:
        return self._meta(sf.META_FEED_ID) or b""

    def changes_from_seq(self) -> int:
        return self._meta_int(sf.META_CHANGES_FROM_SEQ, 8) or 0

    def changes(self, start: bytes) -> Iterator[ChangeEntry]:
        db = self._dbs.get(sf.DB_CHANGES)
        if db is None:
            return
        cur = self._txn.cursor(db=db)
        prefix, commit, at = b"", 0, 0
        group: sf.StreamGroup | None = None
        if len(start) > 4:  # inside a commit: its marker comes before ``start``
            raw = self._txn.get(start[:4], db=db)
            prefix, commit = start[:4], sf.unpack_u32(start[:4])
            at, group = sf.parse_commit_marker(bytes(raw or bytes(8)))
        if not cur.set_range(start):
            return
        for k, v in cur.iternext():
            if len(k) == 4:
                prefix, commit = k, sf.unpack_u32(k)
                at, group = sf.parse_commit_marker(bytes(v))
                continue
            if k[:4] != prefix:  # an entry whose marker is gone: its time is unknown
                prefix, commit, at, group = k[:4], sf.unpack_u32(k[:4]), 0, None
            yield ChangeEntry(commit, k[4:], at, group)

    def last_change(self, commit: int) -> tuple[int, int] | None:
        db = self._dbs.get(sf.DB_CHANGES)
        if db is None:
            return None
        cur = self._txn.cursor(db=db)
        found = cur.prev() if cur.set_range(sf.commit_marker_key(commit + 1)) else cur.last()
        if not found:
            horizon = self.meta_u32(sf.META_CHANGES_FROM)
            at = self._meta_int(sf.META_CHANGES_FROM_AT, 8, signed=True)
            return (horizon, at) if at is not None and horizon <= commit else None
        prefix = bytes(cur.key()[:4])
        raw = self._txn.get(prefix, db=db)
        return sf.unpack_u32(prefix), sf.parse_commit_marker(bytes(raw))[0] if raw else 0

    # --- the builder's own ----------------------------------------------------------

    def outbox_lines(self, target: bytes) -> list[tuple[bytes, bytes]]:
        """(outbox key, line) of every line staged for ``target`` and not yet delivered, in
        staging order (`crlbuilder.outbox`)."""
        db = self._dbs.get(sf.DB_OUTBOX)
        if db is None:
            return []
        cur = self._txn.cursor(db=db)
        out: list[tuple[bytes, bytes]] = []
        if cur.set_range(target):
            for k, v in cur:
                if k[:1] != target:
                    break
                out.append((bytes(k), bytes(v)))
        return out

    def spool_at(self) -> sf.SpoolAt | None:
        """How far the follow loop committed the spool file it was applying (`META_SPOOL_AT`)."""
        raw = self._meta(sf.META_SPOOL_AT)
        return _decoded(sf.spool_at_decoder, raw, "meta spool-at") if raw else None

    def outbox_file(self, target: bytes) -> sf.OutboxFile | None:
        """``target``'s file after its last completed delivery, or None."""
        raw = self._meta(sf.META_OUTBOX_FILE_PREFIX + target)
        return _decoded(sf.outbox_file_decoder, raw, "meta outbox-file") if raw else None

    def _range(
        self, db: bytes, issuer_index: int | None, after: bytes = b""
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in key order, of one issuer (its key prefix) or of all; only the keys
        after ``after`` when given."""
        cur = self._txn.cursor(db=self._dbs[db])
        prefix = sf.issuer_prefix(issuer_index) if issuer_index is not None else b""
        if not cur.set_range(max(prefix, after)):
            return
        for key, value in cur:
            if key[: len(prefix)] != prefix:
                break
            if key == after:
                continue
            yield bytes(key), value
