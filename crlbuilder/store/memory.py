"""An in-memory `StoreReader`, built from plain records: the store for unit tests.

In the spirit of Boulder's ``InMemorySource``: what a test needs (a status record, a
pre-signed answer, a pending move-out notice, the issuer table...) is put in plain
dicts of `crlbuilder.store.format` records, no LMDB and no bytes. The derived rules
(the 30-day lapse due, Act §31(2); the nextUpdate promised) come from the same
`ReaderRules` as the LMDB reader's, so a test on this reader tests them.

``revision`` stands for LMDB's transaction id (`StoreReader.snapshot`): call
`MemoryReader.changed` after changing the records so a cache keyed on it re-reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

from crlbuilder.model import Family
from crlbuilder.store import format as sf
from crlbuilder.store.reader import (
    CHECKPOINT_EVERY,
    ChangeEntry,
    Generation,
    ReaderRules,
    StoredAnswer,
    StoreReader,
    latest_of,
)

_V = TypeVar("_V")


@dataclass(eq=False)
class MemoryReader(ReaderRules):
    """A store held in dicts; keys are the store's keys (`store.format.status_key`...)."""

    status_records: dict[bytes, sf.StatusRecord] = field(default_factory=dict)
    revoked: dict[bytes, sf.RevokedEntry] = field(default_factory=dict)
    answers: dict[bytes, StoredAnswer] = field(default_factory=dict)
    links: dict[tuple[bytes, Family], list[bytes]] = field(default_factory=dict)
    """(holder, family) → status keys, in the order LMDB would keep them (sorted)."""
    facts: dict[bytes, bytes] = field(default_factory=dict)
    consents: dict[tuple[bytes, str], int] = field(default_factory=dict)
    withdrawals: dict[tuple[bytes, str], int] = field(default_factory=dict)
    pendings: dict[bytes, sf.PendingMoveOut] = field(default_factory=dict)
    kept_taken: dict[bytes, list[sf.Taken]] = field(default_factory=dict)
    """holder → its kept resident changes and lapses (`store.format.DB_TAKEN`)."""
    kept_move_ins: dict[bytes, list[sf.MoveIn]] = field(default_factory=dict)
    """holder → its kept move-in notices (`store.format.DB_MOVE_INS`)."""
    applied_records: dict[str, int] = field(default_factory=dict)
    quarantine: dict[bytes, int] = field(default_factory=dict)
    issuer_table: list[sf.IssuerMeta] = field(default_factory=list)
    crl_states: dict[int, sf.CrlState] = field(default_factory=dict)
    ocsp_states: dict[int, sf.OcspState] = field(default_factory=dict)
    crl_index: dict[bytes, sf.CrlFileEntry] = field(default_factory=dict)
    """`store.format.crl_key` → entry."""
    announced: dict[int, sf.Announcement] = field(default_factory=dict)
    commit: int = 0
    build: int = 0
    vouch: tuple[int, int] = (0, 0)
    """`StoreReader.vouched`: (build number, instant) of the last build run's promise."""
    last_committed_at: int = 0
    imported: bool = False
    """A group appliance's store (`StoreReader.crl_import`)."""
    ident: bytes = b""
    """`StoreReader.store_id`."""
    lost: list[tuple[int, bytes]] = field(default_factory=list)
    """The changes feed: (commit, status key) of every loss of effect kept."""
    commit_times: dict[int, int] = field(default_factory=dict)
    """commit → when it was written (the feed's commit markers)."""
    horizon: int = 0
    """`StoreReader.changes_from`."""
    horizon_at: int | None = None
    """When the horizon commit was written (`store.format.META_CHANGES_FROM_AT`; None: not
    kept, a horizon no prune moved)."""
    groups: dict[int, sf.StreamGroup] = field(default_factory=dict)
    """commit → the record stream's batch it belongs to (the markers of a stream-fed store)."""
    feed: bytes = b""
    """`StoreReader.feed_id`."""
    stream_applied: int = 0
    """`StoreReader.stream_seq`."""
    horizon_seq: int = 0
    """`StoreReader.changes_from_seq`."""
    revision: int = 0

    def changed(self) -> None:
        """Records were changed: a new `snapshot`."""
        self.revision += 1

    def read(self) -> AbstractContextManager[StoreReader]:
        """This reader is its own view (`ReadSource`)."""
        return nullcontext(self)

    # --- meta -------------------------------------------------------------------

    def snapshot(self) -> int:
        return self.revision

    def generation(self) -> Generation:
        return Generation(self.commit, self.build)

    def committed_at(self) -> int:
        return self.last_committed_at

    def vouched(self) -> tuple[int, int]:
        return self.vouch

    def crl_import(self) -> bool:
        return self.imported

    def issuers(self) -> list[sf.IssuerMeta]:
        return list(self.issuer_table)

    def crl_state(self, issuer_index: int) -> sf.CrlState:
        return self.crl_states.get(issuer_index) or sf.CrlState()

    def ocsp_state(self, issuer_index: int) -> sf.OcspState:
        return self.ocsp_states.get(issuer_index) or sf.OcspState()

    # --- per certificate ----------------------------------------------------------

    def status(self, key: bytes) -> sf.StatusRecord | None:
        return self.status_records.get(key)

    def statuses(self, issuer_index: int | None = None) -> Iterator[tuple[bytes, sf.StatusRecord]]:
        return _range(self.status_records, issuer_index)

    def stored_answer(self, key: bytes) -> StoredAnswer | None:
        return self.answers.get(key)

    def stored_answers(self, issuer_index: int) -> Iterator[tuple[bytes, StoredAnswer]]:
        return _range(self.answers, issuer_index)

    def revoked_entry(self, key: bytes) -> sf.RevokedEntry | None:
        return self.revoked.get(key)

    def revocations(
        self, issuer_index: int | None = None, *, after: bytes = b""
    ) -> Iterator[tuple[bytes, sf.RevokedEntry]]:
        return ((k, v) for k, v in _range(self.revoked, issuer_index) if k > after)

    def revoked_counts(
        self, checkpoint: Callable[[], object] | None = None
    ) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = {}
        for n, (key, entry) in enumerate(sorted(self.revoked.items()), 1):
            k = (sf.split_status_key(key)[0], entry.category)
            out[k] = out.get(k, 0) + 1
            if checkpoint is not None and not n % CHECKPOINT_EVERY:
                checkpoint()
        return out

    def count(self, db: bytes) -> int:
        sizes: dict[bytes, int] = {
            sf.DB_STATUS: len(self.status_records),
            sf.DB_REVOKED: len(self.revoked),
            sf.DB_RESPONSES: len(self.answers),
            sf.DB_LINKS: sum(len(v) for v in self.links.values()),
            sf.DB_HOLDERS: len(self.facts),
            sf.DB_CONSENTS: len(self.consents),
            sf.DB_WITHDRAWALS: len(self.withdrawals),
            sf.DB_PENDING: len(self.pendings),
            sf.DB_TAKEN: len(self.kept_taken),
            sf.DB_MOVE_INS: len(self.kept_move_ins),
            sf.DB_APPLIED: len(self.applied_records),
            sf.DB_CRLS: len(self.crl_index),
            sf.DB_ANNOUNCEMENTS: len(self.announced),
            sf.DB_QUARANTINE: len(self.quarantine),
            # an entry, and a marker for each commit whose time is kept (a commit whose
            # marker is gone, in a store written before markers, has its entries alone)
            sf.DB_CHANGES: len(self.lost) + len({c for c, _ in self.lost} & set(self.commit_times)),
        }
        return sizes.get(db, 0)

    # --- holders --------------------------------------------------------------------

    def holder_certs(self, holder: bytes, family: Family) -> list[bytes]:
        return sorted(self.links.get((holder, family), ()))

    def pending(self, holder: bytes) -> sf.PendingMoveOut | None:
        return self.pendings.get(holder)

    def pending_notices(self) -> Iterator[tuple[bytes, sf.PendingMoveOut]]:
        return iter(sorted(self.pendings.items()))

    def consent(self, holder: bytes, verifier: str) -> int | None:
        return self.consents.get((holder, verifier))

    def consents_of(self, holder: bytes) -> list[tuple[str, int]]:
        return sorted(
            ((v, at) for (h, v), at in self.consents.items() if h == holder),
            key=lambda c: c[0].encode(),
        )

    def taken(self, holder: bytes) -> list[sf.Taken]:
        return list(self.kept_taken.get(holder, ()))

    def withdrawals_of(self, holder: bytes) -> list[tuple[str, int]]:
        return sorted(
            ((v, at) for (h, v), at in self.withdrawals.items() if h == holder),
            key=lambda c: c[0].encode(),
        )

    def move_ins(self, holder: bytes) -> list[sf.MoveIn]:
        return list(self.kept_move_ins.get(holder, ()))

    def sealed_facts(self, key: bytes) -> bytes | None:
        return self.facts.get(key)

    def applied(self, record_id: str) -> int | None:
        return self.applied_records.get(record_id)

    def quarantined(self, key: bytes) -> int | None:
        return self.quarantine.get(key)

    # --- CRLs and announcements -----------------------------------------------------

    def crl_files(self) -> list[tuple[bytes, sf.CrlFileEntry]]:
        return sorted(self.crl_index.items())

    def latest_crls(self, issuer_index: int) -> list[sf.CrlFileEntry]:
        mine = [
            (k, e) for k, e in self.crl_index.items() if k[:2] == sf.issuer_prefix(issuer_index)
        ]
        return latest_of(e for _, e in sorted(mine, reverse=True))

    def announcements(self) -> list[sf.Announcement]:
        return sorted(self.announced.values(), key=lambda a: (a.at, a.issuer))

    # --- the changes feed -------------------------------------------------------------

    def store_id(self) -> bytes:
        return self.ident

    def changes_from(self) -> int:
        return self.horizon

    def feed_id(self) -> bytes:
        return self.feed

    def stream_seq(self) -> int:
        return self.stream_applied

    def changes_from_seq(self) -> int:
        return self.horizon_seq

    def changes(self, start: bytes) -> Iterator[ChangeEntry]:
        for commit, key in sorted(self.lost):
            if sf.change_key(commit, key) >= start:
                at = self.commit_times.get(commit, 0)
                yield ChangeEntry(commit, key, at, self.groups.get(commit))

    def last_change(self, commit: int) -> tuple[int, int] | None:
        before = [c for c, _ in self.lost if c <= commit]
        if before:
            return max(before), self.commit_times.get(max(before), 0)
        if self.horizon_at is None or commit < self.horizon:
            return None
        return self.horizon, self.horizon_at  # dropped by retention: the horizon (its time kept)


def _range(records: Mapping[bytes, _V], issuer_index: int | None) -> Iterator[tuple[bytes, _V]]:
    """(key, record) in key order, of one issuer (its key prefix) or of all."""
    prefix = sf.issuer_prefix(issuer_index) if issuer_index is not None else b""
    return iter(sorted((k, v) for k, v in records.items() if k.startswith(prefix)))
