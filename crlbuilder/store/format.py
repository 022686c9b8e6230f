"""The on-disk format of the status store, defined once: named databases, keys, values.

crlbuilder writes the store and responder reads it; both import this module and
nothing else knows the byte layout. The store is one LMDB environment
(memory-mapped, one writer, many lock-free readers) holding these named
databases (docs/store.md has the same table with examples):

============= ============================== =========================================
database      key                            value
============= ============================== =========================================
status        issuer u16 | serial 20 B       `StatusRecord` (64 B, big-endian): good, revoked, erased
revoked       issuer u16 | serial 20 B       `RevokedEntry` (26 B): CRL entries
responses     issuer u16 | serial 20 B       version | this/nextUpdate | signer id, then
                                             either the DER stem (`pack_response`, first
                                             byte 0x30) or tag 0x01 | check 4 B | signature
                                             (`pack_response_parts`: the DER rebuilt)
links         holder 32 B | family u8        dupsort: status keys (22 B) of the holder
holders       issuer u16 | serial 20 B       AES-GCM(nonce 12 B | sealed FourFacts)
consents      holder 32 B | verifier utf-8   recorded_at i64
withdrawals   holder 32 B | verifier utf-8   recorded_at i64: a withdrawal kept (rules 9)
pending       holder 32 B                    `PendingMoveOut` JSON (30-day rule)
applied       record id utf-8                commit sequence u32 | content digest 16 B
                                             (`pack_applied`; 4 B alone: written before
                                             release 1.5, no digest)
meta          ascii name                     see the META_* keys
crls          issuer u16 | number u64 | kind  `CrlFileEntry` JSON
announcements issuer u16                     `Announcement` JSON: a published CA compromise
outbox        target 1 B | staging no. u64   one JSON line owed to a file (`outbox`)
quarantine    `quarantine_key` of a refusal  commit sequence when first quarantined
changes       commit u32 [| issuer u16 |     commit marker (4 B key): committed_at i64
              serial 20 B]                   [| stream group]; entry (26 B key): one loss
                                             of effect, 1 B
retention     due u64 | issuer u16 |         empty: the retention agenda (`crlbuilder.retention`)
              serial 20 B
lapses        planned date u32 | holder 32 B empty: the move-out notices not lapsed yet
moveins       holder 32 B                    `MoveIn` JSON list: the latest move-in notices
                                             made (at most 8)
taken         holder 32 B                    `Taken` JSON list: resident changes that took
                                             card certificates at once, and lapses written
============= ============================== =========================================

``outbox``, ``quarantine``, ``retention``, ``lapses``, ``moveins``, ``taken`` and ``withdrawals`` are the builder's own
(added without a format version change: an older store gains them at the builder's next
start, and a read-only open does without them).

Serials are fixed-width (20 octets, the RFC 5280 maximum) so that keys sort by
issuer then serial and one issuer's records form one contiguous range. Times are
seconds since the Unix epoch (UTC). The resident record code never appears:
``holder`` is its keyed hash.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import date
from typing import Final, NamedTuple

import msgspec

from crlbuilder import release
from crlbuilder.model import Category, Family, Reason

FORMAT_VERSION: Final = release.STORE_FORMAT
"""Bumped (in `crlbuilder.release`, with the rest of a release) on any incompatible change;
opening another version fails clearly."""

DB_STATUS: Final = b"status"
DB_REVOKED: Final = b"revoked"
DB_RESPONSES: Final = b"responses"
DB_LINKS: Final = b"links"
DB_HOLDERS: Final = b"holders"
DB_CONSENTS: Final = b"consents"
DB_PENDING: Final = b"pending"
DB_WITHDRAWALS: Final = b"withdrawals"
"""The withdrawals of consent (同意の撤回: the Act names none; a consent withdrawn is no 同意 of
Act §18(3)) kept, keyed as `DB_CONSENTS` (`consent_key`),
the withdrawal's recordedAt (i64) as value: a grant recorded no later than it, read after it,
grants nothing (`crlbuilder.apply.Applier._consent`, rules 9). Kept until a consent recorded at
the same instant would be erased (`crlbuilder.consentkept`), then erased by the erasure past
retention, which writes `META_GRANTED_BEFORE` past it. Read by no answer: the builder's own.
Absent from a store a builder of an earlier version wrote (no withdrawal was kept)."""
DB_APPLIED: Final = b"applied"
"""Every record id applied, with the commit that applied it and a digest of what the record said
(`pack_applied`, `crlbuilder.recorddigest`): a record read again under an applied id is skipped
when it says the same, refused when it says otherwise (`crlbuilder.apply`)."""
DB_META: Final = b"meta"
DB_CRLS: Final = b"crls"
DB_ANNOUNCEMENTS: Final = b"announcements"
"""Public announcements of issuing-key compromises (公表, Act §15(3), §16-14(3), §34(3),
§35-14(3); Ord §23, §58), one per issuer generation, written in the compromise's transaction."""
DB_OUTBOX: Final = b"outbox"
"""Notices and quarantine lines staged in the transaction that causes them (`crlbuilder.outbox`)."""
DB_QUARANTINE: Final = b"quarantine"
"""The refusals already quarantined: a replayed input quarantines nothing twice."""
DB_CHANGES: Final = b"changes"
"""The changes feed (現況確認 at scale, Act §18(1), §37(1)): every loss of effect (失効) keyed by
the commit that wrote it, written in that commit's transaction, pruned past a horizon
(`META_CHANGES_FROM`). See `change_key` and `commit_marker_key`."""
DB_RETENTION: Final = b"retention"
"""The builder's retention agenda (`crlbuilder.retention`): the CRL entries (and what else it
lists) that fall due for erasure (Ord §70(1)(iii)), every one not yet due (an agenda an earlier
release made: before `META_RETENTION`'s horizon), keyed `retention_key`, empty values. Rewritten
by the scan that makes it, added to by the commits that write an entry, taken from as entries
fall due (and listed again at their own instant when not due yet)."""
DB_LAPSES: Final = b"lapses"
"""The move-out notices (転出届) whose 30-day lapse (Act §31(2)) is not written yet, in order of
their planned date: `lapse_key`, empty values. `crlbuilder.store.writer.Commit` keeps it with
``pending`` in the same transaction; complete through the commit `META_LAPSES` names, so the
builder finds the next lapse without reading every notice kept."""
DB_MOVE_INS: Final = b"moveins"
"""The move-in notices (転入届) each holder made, a JSON list of `MoveIn` under the holder key,
earliest first: a move-out notice (転出届) whose record arrives after the move-in that followed it
is judged by it and starts no 30-day lapse (Act §31(2)), whatever later moves of the holder were
read first. At most `MAX_MOVE_INS` per holder, the latest made; each erased once no rule needs
it (`crlbuilder.keptfor`), by the erasure past retention. Absent from a store a builder of an earlier version wrote: its
move-outs are judged without it."""
MAX_MOVE_INS: Final = 8
"""The move-in notices kept per holder in `DB_MOVE_INS`: a move-out record read after more than
this many later move-ins of the holder is judged by those kept (and lapses, `docs/records.md`)."""
DB_TAKEN: Final = b"taken"
"""The resident changes (異動) of each holder that took card certificates at once (Act §12,
§31(1), (3)), and the 30-day lapses written (Act §31(2)), a JSON list of `Taken` under the holder
key, earliest first: an issuance record that arrives after the change or lapse that took its
certificate is revoked by it, and a new auth-card certificate issued once a lapse fell due is
no double issuance (Act §25) however late the lapse was written (`crlbuilder.apply`). At
most `MAX_TAKEN` changes and `MAX_TAKEN` lapses per holder, the latest of each (capped apart:
a lapse takes auth-card certificates only, and must not push out a change); each erased once no
rule needs it (`crlbuilder.keptfor`), by the erasure past retention. Absent from a store a builder of an earlier version wrote: an issuance record
read after a change it applied is judged without it (it stays good)."""
MAX_TAKEN: Final = 8
"""The changes, and apart the lapses, kept per holder in `DB_TAKEN`: a certificate issued before
an older one, whose record arrives after all of them, is revoked at the earliest change or lapse
kept that takes it."""
DB_ERASED: Final = b"erased"
"""The CRL entries erased past their retention (Ord §70(1)(iii)) that the issuer's last full CRL
(or a delta CRL on it) lists: status key, `pack_erased` values (the erasing commit and its
instant; nothing of the record). Written in the erasure's transaction by a builder whose store
holds the issuer's CRL state (the signer's, or a fetching node's: `crlbuilder.crl.shipping`);
the next CRL of the issuer is issued at once, a delta listing them removeFromCRL (RFC 5280
§5.3.1) or a full CRL without them (`crlbuilder.crl.publish`), and the commit of a full CRL
(made, or shipped to a fetching node) deletes the issuer's entries it reflects. Absent from a store a builder of an earlier version wrote: nothing erased
before is known, as before."""

ALL_DBS: Final = (
    DB_STATUS,
    DB_REVOKED,
    DB_RESPONSES,
    DB_LINKS,
    DB_HOLDERS,
    DB_CONSENTS,
    DB_PENDING,
    DB_APPLIED,
    DB_META,
    DB_CRLS,
    DB_ANNOUNCEMENTS,
    DB_OUTBOX,
    DB_QUARANTINE,
    DB_CHANGES,
    DB_RETENTION,
    DB_LAPSES,
    DB_MOVE_INS,
    DB_TAKEN,
    DB_ERASED,
    DB_WITHDRAWALS,
)
BUILDER_DBS: Final = frozenset(
    {
        DB_OUTBOX,
        DB_QUARANTINE,
        DB_RETENTION,
        DB_LAPSES,
        DB_MOVE_INS,
        DB_TAKEN,
        DB_ERASED,
        DB_WITHDRAWALS,
    }
)
"""Databases only crlbuilder reads: a read-only open of a store without them still works."""
OPTIONAL_DBS: Final = frozenset({DB_ANNOUNCEMENTS, DB_CHANGES})
"""Databases added after format 1 that the responder reads: a store a builder of an earlier
version wrote has none, and reads as if they were empty (no announcement published, no
change known: the changes horizon is the current commit) until the next builder run
creates them; the format version stays 1."""
DUPSORT_DBS: Final = frozenset({DB_LINKS})
MAX_DBS: Final = len(ALL_DBS)
"""LMDB's named-database slots of an open (not stored in the file: an open of an earlier
version, with fewer, opens the databases it knows)."""

META_FORMAT: Final = b"format"
META_BUILD: Final = b"build"
"""The build number: bumped by every build run (pre-signing and CRLs), which may write
new nextUpdates without a new commit."""
META_COMMIT: Final = b"commit"
"""The commit sequence: bumped by every write transaction that changes anything;
a status record's version is the commit that last changed it."""
META_COMMITTED_AT: Final = b"committed_at"
META_ISSUERS: Final = b"issuers"
META_CRL_STATE_PREFIX: Final = b"crl:"
META_OCSP_STATE_PREFIX: Final = b"ocsp:"
META_MODE: Final = b"mode"
"""Absent for a store built from records; ``b"crl-import"`` for a group appliance's store
built from the 機構's CRLs, where a serial absent from the store is not revoked."""
MODE_CRL_IMPORT: Final = b"crl-import"
META_OUTBOX_SEQ: Final = b"outbox-seq"
"""u64: the number of the last line staged in the outbox."""
META_OUTBOX_FILE_PREFIX: Final = b"outbox-file:"
"""+ target byte: JSON (path, size) of that target's file after its last completed delivery."""
META_SPOOL_AT: Final = b"spool-at"
"""`SpoolAt`: how far the follow loop has committed the spool file it is applying, written in
each batch's transaction (`crlbuilder.build`): a loop killed before the file's removal takes it
up after that line, so the lines it judged are not judged again against what later lines
added (a refusal stays a refusal). Builder state: it moves no commit."""
META_STORE_ID: Final = b"store-id"
"""16 random bytes drawn when the store was created (or first opened by a builder that knows
them): names this store, so that a changes cursor of another store, or of a store rebuilt
from the records, is recognised. `copy_store` keeps it (the copy holds the same commits)."""
META_CHANGES_FROM: Final = b"changes-from"
"""u32: the changes feed (`DB_CHANGES`) holds every loss of effect of the commits after this
one. 0 for a store created with it; the commit at the time for an older store that gained
it; moved forward by `crlbuilder.store.writer.Commit.prune_changes` (the retention horizon).
A cursor before it cannot be served: the party resynchronises."""
META_CHANGES_FROM_AT: Final = b"changes-from-at"
"""i64: when the commit `META_CHANGES_FROM` names was written (its dropped marker's time), set
with it by `Commit.prune_changes`; absent: a horizon no prune moved. The last commit at or
before a kept position that recorded a change (`StoreReader.last_change`) may be that one,
dropped: its time still tells it from a commit of the same number that a store restored from
an older copy made again (`responder.v1.cursor.Anchor`)."""
STORE_ID_BYTES: Final = 16
META_FEED_ID: Final = b"feed-id"
"""16 bytes naming the record stream that fills this store (`crlbuilder.stream.feed_id`: its
name and creation instant), written by the builder that consumes it; absent for a store not
fed by the stream. Every store fed by one stream carries the same: a changes cursor that names
positions of the stream (`responder.v1.cursor`) is read on any node of the service."""
META_CHANGES_FROM_SEQ: Final = b"changes-from-seq"
"""u64: the feed's horizon in stream positions: the last stream sequence (`StreamGroup.end`) of
the commits `Commit.prune_changes` dropped from the changes feed, or the stream sequence the
store had applied when `Commit.name_feed` first named its stream, if later (its commits before
name no batch); absent: 0."""
META_STREAM_SEQ: Final = b"stream-seq"
"""u64: the last record stream sequence (`crlbuilder.stream`) whose batch is committed;
written in that batch's own transaction, so the store, not the consumer, says where to resume."""
META_STREAM_HEAD: Final = b"stream-head"
"""u64 ‖ i64: the record stream's last sequence as the builder last saw it, and when (epoch
seconds): the responder's /readyz compares it with `META_STREAM_SEQ` (the lag) and says not
ready when the builder stopped seeing the stream."""
META_STREAM_REFUSED: Final = b"stream-refused"
"""utf-8, one line: why this node's builder stopped applying the record stream (a message of a
newer release, `crlbuilder.release`; another stream under the store's stream's name), nothing
of it applied; the responder's /readyz says it and ``jpkiva_stream_refused`` is 1. Node state,
as `META_STREAM_HEAD`: deleted by the builder's next commit of a batch; absent: none."""
META_TOKEN_SIGNATURES: Final = b"token-signatures-from"
"""u64: the record stream sequence of the stream's first message written by a release that signs
token revocations (`crlbuilder.release.SIGNS_TOKEN_REVOCATIONS`), set in that message's batch's
transaction and never moved or deleted after: from it on, a ``token-revoked`` record without the
token issuer's signature is refused (`crlbuilder.apply`); absent, an unsigned one is applied as
release 1.5 applied it. The other rules of release 1.6 (rules 6) take effect at the same message:
a move-out notice's planned date bounded, and the erasures' lateness bound written
(`crlbuilder.apply._Batch.rules6`, `Applier.erase_past_retention`). Every node of one stream sets it at the same message, so it is part of
what they hold alike. A store that adopts a stream made again keeps it (it names the old
instance's sequence: the stream's signer signed by then). Absent from a store fed by no stream
(its builder applies no token record)."""
META_RULES7_FROM: Final = b"rules7-from"
"""u64: the record stream sequence of the stream's first message written by release 1.7 or later
(`crlbuilder.release.RULES_7`), set in that message's batch's transaction and never moved or
deleted after, as `META_TOKEN_SIGNATURES`: from it on, the records are judged by rules 7 (a
mobile certificate bounded by its card certificate alone, a certificate in effect through its
notAfter's own second: `crlbuilder.apply._Batch.rules7`; the lapse sweeps too);
before it as rules 6 judged them. Every node of one stream sets it at the same message. Absent
from a store fed by no stream (its builder applies rules 7 from its upgrade)."""
META_RULES8_FROM: Final = b"rules8-from"
"""u64: the same for release 1.8 (`crlbuilder.release.RULES_8`): from the record stream's first
message written by release 1.8 or later on, the records are judged by rules 8 (a cascade never
dated before the mobile certificate's notBefore, an auth-mobile issuance needing a sign-card
certificate in effect: `crlbuilder.apply._Batch.rules8`; the lapse sweeps too); before it as
rules 7 judged them. Set, kept and absent as `META_RULES7_FROM`."""
META_RULES9_FROM: Final = b"rules9-from"
"""u64: the same for release 1.9 (`crlbuilder.release.RULES_9`): from the record stream's first
message written by release 1.9 or later on, consents are decided by rules 9 (the latest
recordedAt, grant or withdrawal, wins: `crlbuilder.apply._Batch.rules9`), and the erasures past
retention erase consents and withdrawals past their rule (`crlbuilder.consentkept`); before it
as rules 8 decided them, and no consent erased. Set, kept and absent as `META_RULES7_FROM`."""
META_GRANTED_BEFORE: Final = b"granted-before"
"""i64: a consent grant recorded before this instant is read too late and refused
(`crlbuilder.consentkept.LATE_GRANT`): the first instant whose consent the store's latest erasure
of consents or withdrawals (rules 9) would not yet have erased even for a holder with no sign
certificate since (one instant for the whole store). Written by each such erasure,
never lowered; so a grant older than a withdrawal that erasure took cannot grant again. Absent:
no consent or withdrawal erased yet (by rules 9)."""
META_WRITTEN_BY: Final = b"written-by"
"""ASCII ``FORMAT.RULES``: the newest release of a builder that wrote the store
(`crlbuilder.release`), set when a builder of a newer release than it names starts on it; a
builder of an older release refuses to write the store (its rules would undo the newer's: a
rollback of the package, `crlbuilder.build.Builder`). Absent: written by releases before
1.9 only (which did not set it)."""
META_RETENTION: Final = b"retention"
"""`RetentionState`: the retention agenda's scan (`DB_RETENTION`); absent before the first."""
META_REVOKED_FROM: Final = b"revoked-from"
"""i64: the earliest recordedAt of the CRL entries committed since the retention agenda's
scan (every `crlbuilder.store.writer.Commit` that writes one lowers it; the scan deletes it);
absent when none was."""
META_KEPT_FROM: Final = b"kept-from"
"""i64: the earliest instant at which an entry kept in `DB_TAKEN` or `DB_MOVE_INS` since the
retention agenda's scan can fall due for erasure, whatever the periods (`crlbuilder.keptfor
.taken_due_from`, ``move_in_due_from``: six years and more after its change, due instant or
move-in; every `crlbuilder.store.writer.Commit` that keeps one lowers it, the scan deletes it);
absent when none was."""
META_ERASED: Final = b"erased-state"
"""`ErasedState`: the latest erasure past retention (Ord §70(1)(iii)) that erased anything, and
the event times before which a record may be judged without what it erased
(`crlbuilder.lateness`); written by that erasure's transaction, never lowered; absent before
the first (or in a store whose erasures a builder before rules 6 ran)."""
META_VOUCHED: Final = b"vouched"
"""u32 ‖ i64 (`pack_vouched`): the build number (`META_BUILD`) of the build run that wrote it,
and the instant until which that run vouches for every issuer's data (epoch seconds: its
instant plus ``ocsp.validity_seconds``, the nextUpdate it gives the answers it signs). Written
with the build number, in the same transaction (`crlbuilder.store.writer.Commit.bump_build`), by
every build, spool file and refresh of the builder; builder state, by the node's own clock (the
builder it vouches for is this node's). It is the promise of an issuer no CRL and no stored
answer promises anything for (`crlbuilder.store.reader.ReaderRules.promised_next_update`): a
stopped builder leaves it `good` only until then. Taken only while it names the store's build:
a build run of an earlier release, which does not write it, moves the build past it and the
promise goes with it (as before it existed: no promise), so a builder rolled back never makes
the issuers stale while it runs. Absent: no promise (a store an earlier release wrote, until
the first build run of this one; a group appliance's store, which no build runs on)."""
META_LAPSES: Final = b"lapses"
"""u32: the commit through which `DB_LAPSES` lists every move-out notice not lapsed. Every
commit that changes the store moves it along when it was current; a commit of a builder of
an earlier version, which keeps no index, leaves it behind, and the index is made again from
``pending`` (`crlbuilder.apply.lapse_index`). Absent before the first index."""

SERIAL_BYTES: Final = 20
KEY_BYTES: Final = 2 + SERIAL_BYTES
HOLDER_BYTES: Final = 32

STATE_GOOD: Final = 0
STATE_REVOKED: Final = 1
STATE_ERASED: Final = 2
"""The certificate lost effect by a record whose retention has passed and which was erased
(Ord §70(1)(iii)): no category, no reason; ``revoked_at`` is kept only when the builder is
configured to answer ``revoked`` for erased serials (``crl.erased_answer``), else 0."""


class StoreFormatError(Exception):
    """The store is not one this version of jpki-va can read."""


class StoreWriteError(Exception):
    """A write transaction the store could not take (its disk full, or its map,
    ``store.map_size_gib``): aborted, nothing of it written; the store stays at its last
    commit (`crlbuilder.store.writer.Commit`)."""


class StoreCorrupt(StoreFormatError):
    """A value read from the store is not what its database holds (a length no writer
    writes, bytes that do not decode): the file is damaged, never an answer to give. The
    message names the database and the sizes, never the key or the bytes."""


def corrupt(what: str, got: int, expected: str) -> StoreCorrupt:
    """The `StoreCorrupt` of a ``what`` value of ``got`` bytes (``expected``: what is written)."""
    return StoreCorrupt(
        f"the store is damaged: a {what} value of {got} bytes, not what is written there "
        f"({expected}); restore it from a copy or rebuild it"
    )


# --- keys -------------------------------------------------------------------


def status_key(issuer_index: int, serial: int) -> bytes:
    """The 22-byte key of one certificate: issuer index then the serial, both big-endian."""
    return issuer_index.to_bytes(2, "big") + serial.to_bytes(SERIAL_BYTES, "big")


def split_status_key(key: bytes) -> tuple[int, int]:
    return int.from_bytes(key[:2], "big"), int.from_bytes(key[2:], "big")


def issuer_prefix(issuer_index: int) -> bytes:
    return issuer_index.to_bytes(2, "big")


_FAMILY_BYTE: Final = {f: bytes((f.code,)) for f in Family}
"""The family's code as the one byte that ends a link key (made once, not per key)."""


def link_key(holder: bytes, family: Family) -> bytes:
    return holder + _FAMILY_BYTE[family]


def consent_key(holder: bytes, verifier: str) -> bytes:
    return holder + verifier.encode()


def crl_key(issuer_index: int, number: int, delta: bool) -> bytes:
    return issuer_index.to_bytes(2, "big") + number.to_bytes(8, "big") + (b"d" if delta else b"f")


def commit_marker_key(commit: int) -> bytes:
    """The changes feed's marker of one commit (4 bytes: sorts before the commit's entries);
    its value is `commit_marker`."""
    return commit.to_bytes(4, "big")


class StreamGroup(NamedTuple):
    """The record stream's batch a commit belongs to (`crlbuilder.stream`): the batch's
    stream sequences are ``base`` + 1 to ``end``. The lapses written before a batch, dated by
    it, and its erasures belong to it too (the same group, earlier commits)."""

    base: int
    """The last stream sequence committed before the batch (`META_STREAM_SEQ` then)."""
    end: int
    """The batch's last stream sequence."""


def commit_marker(committed_at: int, group: StreamGroup | None) -> bytes:
    """A commit marker's value: the commit's time (i64), then, for a commit made applying the
    record stream, its `StreamGroup` (base u64 ‖ end u64): 8 or 24 bytes."""
    out = pack_i64(committed_at)
    if group is not None:
        out += pack_u64(group.base) + pack_u64(group.end)
    return out


def parse_commit_marker(raw: bytes) -> tuple[int, StreamGroup | None]:
    """(time, stream group or None) of a commit marker's value (`commit_marker`)."""
    if len(raw) not in (8, 24):
        raise corrupt("changes marker", len(raw), "8 or 24 bytes")
    at = unpack_i64(raw[:8])
    if len(raw) >= 24:
        return at, StreamGroup(unpack_u64(raw[8:16]), unpack_u64(raw[16:24]))
    return at, None


def change_key(commit: int, key: bytes) -> bytes:
    """One loss of effect in the changes feed: the commit that wrote it, then the status key."""
    return commit.to_bytes(4, "big") + key


CHANGE_KEY_BYTES: Final = 4 + KEY_BYTES
CHANGE_LOST: Final = b"\x01"
"""The value of a changes entry: the certificate lost effect (revoked, or listed on an
imported CRL, or its listing changed). What it lost effect by is read from its status record
when the change is delivered, so an erasure past retention (Ord §70(1)(iii)) is respected."""


# --- values -----------------------------------------------------------------

_STATUS = struct.Struct(">IBBBBqqq32s")


class StatusRecord(NamedTuple):
    """The status of one certificate, as the responder reads it on every request.

    ``version`` is the commit (`META_COMMIT`) that last changed this record: an answer
    cached for (key, version) can never be served after a revocation, which
    bumps it.
    """

    version: int
    state: int
    category: int
    """`Category.code`, 0 while good."""
    reason: int
    """`Reason` value, 0 while good."""
    family: int
    not_before: int
    not_after: int
    revoked_at: int
    """0 while good."""
    holder: bytes

    @property
    def revoked(self) -> bool:
        """Lost effect by a record (revoked, or revoked and since erased): never good again."""
        return self.state != STATE_GOOD

    @property
    def erased(self) -> bool:
        return self.state == STATE_ERASED

    @property
    def family_enum(self) -> Family:
        return Family.from_code(self.family)

    @property
    def category_enum(self) -> Category | None:
        return Category.from_code(self.category) if self.category else None

    @property
    def reason_enum(self) -> Reason:
        return Reason(self.reason)

    def pack(self) -> bytes:
        return _STATUS.pack(*self)


STATUS_RECORD_BYTES: Final = _STATUS.size


_new_tuple: Final = tuple.__new__


_WRITTEN_REASONS: Final = frozenset(int(r) for r in Reason)
"""The reason bytes a writer writes: RFC 5280 CRLReason codes (0 while good)."""
_LAST_TIME: Final = 253402300799
"""9999-12-31T23:59:59Z, the last instant a GeneralizedTime (an OCSP revocationTime) holds."""


_STATE_AND_END: Final = struct.Struct(">4xB11xq")
"""`_STATUS`'s ``state`` and ``not_after`` alone."""


def status_state_and_end(value: bytes) -> tuple[int, int]:
    """(``state``, ``not_after``) of a ``status`` value, the rest not decoded (the retention
    scan's pass over every sealed entry, `crlbuilder.factskept`: half the cost of
    `unpack_status`); `StoreCorrupt` for one of another length."""
    if len(value) != STATUS_RECORD_BYTES:
        raise corrupt("status", len(value), f"{STATUS_RECORD_BYTES} bytes")
    state, not_after = _STATE_AND_END.unpack_from(value)
    return int(state), int(not_after)


def unpack_status(value: bytes) -> StatusRecord:
    """`StatusRecord` of a ``status`` value; `StoreCorrupt` for one of another length, or of
    a state, reason or revocation time no writer writes (a damaged byte: read as it was,
    the OCSP lookup took a state it did not know for ``good``, and a reason outside
    CRLReason or a time before 1970 or past 9999 failed the answer's encoding)."""
    if len(value) != STATUS_RECORD_BYTES:
        raise corrupt("status", len(value), f"{STATUS_RECORD_BYTES} bytes")
    # StatusRecord._make without its length check: the struct gives exactly its nine fields
    record: StatusRecord = _new_tuple(StatusRecord, _STATUS.unpack(value))
    if (
        record[1] > STATE_ERASED
        or record[3] not in _WRITTEN_REASONS
        or not (0 <= record[7] <= _LAST_TIME)
    ):
        raise _corrupt_status(record)
    return record


def _corrupt_status(record: StatusRecord) -> StoreCorrupt:
    if record.state > STATE_ERASED:
        what = f"state {record.state}"
    elif record.reason not in _WRITTEN_REASONS:
        what = f"reason {record.reason}"
    else:
        what = "revocation time out of range"
    return StoreCorrupt(
        f"the store is damaged: a status value of {what}, not one a writer writes "
        f"(states {STATE_GOOD} good, {STATE_REVOKED} revoked, {STATE_ERASED} erased; RFC 5280 "
        "CRLReason codes; times from 1970 to 9999); restore it from a copy or rebuild it"
    )


_REVOKED = struct.Struct(">qBBIqI")


class RevokedEntry(NamedTuple):
    """One CRL entry: revocation time, reason, legal category, the commit that added it."""

    revoked_at: int
    reason: int
    category: int
    commit: int
    """The commit sequence number (`META_COMMIT`) of the write that added it: a delta CRL
    lists the entries added after its base's commit."""
    recorded_at: int
    """When the causing record was recorded: the retention clock starts here."""
    reserved: int = 0

    def pack(self) -> bytes:
        return _REVOKED.pack(*self)


def unpack_revoked(value: bytes) -> RevokedEntry:
    """`RevokedEntry` of a ``revoked`` value; `StoreCorrupt` for one of another length."""
    if len(value) != _REVOKED.size:
        raise corrupt("revoked", len(value), f"{_REVOKED.size} bytes")
    return RevokedEntry._make(_REVOKED.unpack(value))


_NO_HOLDER: Final = bytes(HOLDER_BYTES)
_pack_status_fields: Final = _STATUS.pack
_pack_revoked_fields: Final = _REVOKED.pack


def pack_listed_status(version: int, reason: int, family: int, revoked_at: int) -> bytes:
    """The `StatusRecord` of a serial listed on an imported CRL (a group appliance's store):
    revoked, no category, no validity, no holder. Packed without a NamedTuple: an import
    writes a million of them."""
    return _pack_status_fields(
        version, STATE_REVOKED, 0, reason, family, 0, 0, revoked_at, _NO_HOLDER
    )


def pack_revoked_entry(
    revoked_at: int, reason: int, category: int, commit: int, recorded_at: int
) -> bytes:
    """``RevokedEntry(revoked_at, reason, category, commit, recorded_at).pack()``, the same
    bytes without the NamedTuple: a build writes one per revocation."""
    return _pack_revoked_fields(revoked_at, reason, category, commit, recorded_at, 0)


def pack_listed_entry(commit: int, reason: int, revoked_at: int) -> bytes:
    """The `RevokedEntry` of a serial listed on an imported CRL: no category, recorded when revoked."""
    return _pack_revoked_fields(revoked_at, reason, 0, commit, revoked_at, 0)


_REVOKED_RECORDED_AT: Final = struct.Struct(">q")
_REVOKED_RECORDED_AT_OFFSET: Final = 14


_REVOKED_CATEGORY_AND_RECORDED_AT: Final = struct.Struct(">9xB4xq4x")
"""`_REVOKED`'s ``category`` and ``recorded_at`` alone."""


def revoked_category_and_recorded_at(value: bytes) -> tuple[int, int]:
    """(``category``, ``recorded_at``) of a packed `RevokedEntry`, the rest not decoded (the
    retention scan's pass over every entry); `StoreCorrupt` for one of another length."""
    if len(value) != _REVOKED.size:
        raise corrupt("revoked", len(value), f"{_REVOKED.size} bytes")
    category, at = _REVOKED_CATEGORY_AND_RECORDED_AT.unpack(value)
    return int(category), int(at)


def revoked_recorded_at(value: bytes) -> int:
    """``recorded_at`` of a packed `RevokedEntry`, without unpacking the rest (retention scans)."""
    if len(value) != _REVOKED.size:
        raise corrupt("revoked", len(value), f"{_REVOKED.size} bytes")
    at: int = _REVOKED_RECORDED_AT.unpack_from(value, _REVOKED_RECORDED_AT_OFFSET)[0]
    return at


_RESPONSE_HEAD = struct.Struct(">Iqq8s")
RESPONSE_HEAD_BYTES: Final = _RESPONSE_HEAD.size
SIGNER_ID_BYTES: Final = 8
RESPONSE_PARTS_TAG: Final = 0x01
"""The byte after the head of a `pack_response_parts` value. A stem (`pack_response`) is an
OCSPResponse's DER, a SEQUENCE: it begins with 0x30, never with this."""
RESPONSE_CHECK_BYTES: Final = 4
"""The check of a `pack_response_parts` value (`response_check`)."""


def pack_response(
    version: int, this_update: int, next_update: int, signer_id: bytes, stem: bytes
) -> bytes:
    """A pre-signed OCSP response, stored without its trailing ``certs`` field (the first
    layout: still read and served, no longer written by the pre-signer).

    ``stem`` is the response DER minus the signer-certificate field that ends
    every response of one delegated signer (about 1.3 KB, the same bytes each
    time); ``signer_id`` (8 bytes of the signer certificate's SHA-256) names the
    field the responder appends when it sends the answer. This keeps a
    million revoked answers at about half a gigabyte instead of two. A stem that
    begins with `RESPONSE_PARTS_TAG` would read as the other layout: ValueError.
    """
    if not stem or stem[0] == RESPONSE_PARTS_TAG:
        raise ValueError("a stored answer's stem is the response DER (a SEQUENCE, 0x30...)")
    return _RESPONSE_HEAD.pack(version, this_update, next_update, signer_id) + stem


def pack_response_parts(
    version: int,
    this_update: int,
    next_update: int,
    signer_id: bytes,
    check: bytes,
    signature: bytes,
) -> bytes:
    """A pre-signed OCSP response stored as what its DER cannot be derived from (the second
    layout): the head, `RESPONSE_PARTS_TAG`, the ``check`` (`response_check`) and the
    signature. The rest of the signed bytes is a function of the head (thisUpdate, which is
    also producedAt, and nextUpdate), the key (the serial), the status record of the head's
    version (revocationTime, reason) and the constants of the signer and the issuer; the
    responder rebuilds the DER with the encoder the builder signed
    (`crlbuilder.ocsp.response.ResponseSigner.presigned_data`). About 290 bytes where the stem
    took about 510."""
    if len(check) != RESPONSE_CHECK_BYTES or not signature:
        raise ValueError("a stored answer's parts: a 4-byte check and a signature")
    head = _RESPONSE_HEAD.pack(version, this_update, next_update, signer_id)
    return head + bytes((RESPONSE_PARTS_TAG,)) + check + signature


def response_check(signed: bytes, signature: bytes) -> bytes:
    """The check of a `pack_response_parts` value: 4 bytes of the SHA-256 of the signed bytes
    (tbsResponseData) and the signature. The responder compares it with the answer it rebuilt
    before sending it: a damaged head, signature or status record, or another encoder than the
    one that signed, would rebuild bytes whose signature does not verify; the check catches
    them, and the answer is signed afresh instead (`responder.flow.PresignedUnusable`)."""
    h = hashlib.sha256(signed)
    h.update(signature)
    return h.digest()[:RESPONSE_CHECK_BYTES]


def unpack_response_head(value: bytes | memoryview) -> tuple[int, int, int, bytes]:
    """(version, thisUpdate, nextUpdate, signer id) of a stored response; the stem or the parts
    follow (`StoreCorrupt` when there are none)."""
    if len(value) <= _RESPONSE_HEAD.size:
        raise corrupt("responses", len(value), f"more than {_RESPONSE_HEAD.size} bytes")
    version, this_update, next_update, signer_id = _RESPONSE_HEAD.unpack_from(value)
    return int(version), int(this_update), int(next_update), bytes(signer_id)


_PARTS_MIN: Final = _RESPONSE_HEAD.size + 1 + RESPONSE_CHECK_BYTES + 1


def unpack_response_parts(value: bytes | memoryview) -> tuple[bytes, bytes] | None:
    """(check, signature) of a `pack_response_parts` value; None for a `pack_response` one (its
    stem follows the head); `StoreCorrupt` for a tagged value too short to hold both."""
    if len(value) <= _RESPONSE_HEAD.size or value[_RESPONSE_HEAD.size] != RESPONSE_PARTS_TAG:
        return None
    if len(value) < _PARTS_MIN:
        raise corrupt("responses", len(value), f"at least {_PARTS_MIN} bytes with its parts")
    at = _RESPONSE_HEAD.size + 1
    return bytes(value[at : at + RESPONSE_CHECK_BYTES]), bytes(value[at + RESPONSE_CHECK_BYTES :])


def pack_u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def unpack_u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


APPLIED_DIGEST_SIZE: Final = 16
"""The bytes of the content digest kept beside an applied record id (`crlbuilder.recorddigest`)."""


class Applied(NamedTuple):
    """An applied record id's value in `DB_APPLIED`."""

    seq: int
    """The commit that applied it."""
    digest: bytes | None
    """The digest of what the record said (`crlbuilder.recorddigest`); None when a builder of a
    release before 1.5 applied it (its value is the commit sequence alone): a record read again
    under that id cannot be compared, and is skipped as a duplicate."""


def pack_applied(seq_u32: bytes, digest: bytes) -> bytes:
    """The value of an applied record id: its commit's packed sequence (`pack_u32`), the digest."""
    return seq_u32 + digest


def unpack_applied(raw: bytes) -> Applied:
    """`Applied` from a value of `DB_APPLIED`, either layout (with or without the digest)."""
    if len(raw) not in (4, 4 + APPLIED_DIGEST_SIZE):
        raise corrupt("applied", len(raw), f"4 or {4 + APPLIED_DIGEST_SIZE} bytes")
    return Applied(int.from_bytes(raw[:4], "big"), bytes(raw[4:]) if len(raw) > 4 else None)


def pack_u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def unpack_u64(b: bytes) -> int:
    return int.from_bytes(b, "big")


def pack_i64(n: int) -> bytes:
    return n.to_bytes(8, "big", signed=True)


def unpack_i64(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


_RETENTION_KEY: Final = struct.Struct(">Q")
_RETENTION_BIAS: Final = 1 << 63


def retention_key(due: int, key: bytes) -> bytes:
    """An entry of the retention agenda: its due instant (epoch seconds, biased to sort
    unsigned), then its status key: the agenda in due order."""
    return _RETENTION_KEY.pack(due + _RETENTION_BIAS) + key


def split_retention_key(k: bytes | memoryview) -> tuple[int, bytes]:
    """(due instant, status key) of a `retention_key`."""
    (biased,) = _RETENTION_KEY.unpack_from(k)
    return int(biased) - _RETENTION_BIAS, bytes(k[_RETENTION_KEY.size :])


_ERASED: Final = struct.Struct(">Iq")


def pack_erased(commit: int, erased_at: int) -> bytes:
    """A `DB_ERASED` value: the commit that erased the entry and when (epoch seconds)."""
    return _ERASED.pack(commit, erased_at)


def unpack_erased(value: bytes | memoryview) -> tuple[int, int]:
    """(commit, erased_at) of a `pack_erased` value."""
    commit, at = _ERASED.unpack(value)
    return int(commit), int(at)


_VOUCHED: Final = struct.Struct(">Iq")


def pack_vouched(build: int, until: int) -> bytes:
    """A `META_VOUCHED` value: the build number that wrote it and the instant it vouches until."""
    return _VOUCHED.pack(build, until)


def unpack_vouched(value: bytes | memoryview) -> tuple[int, int]:
    """(build, until) of a `pack_vouched` value; `StoreCorrupt` for a value of another size
    (read as no promise, it made the issuers never stale)."""
    if len(value) != _VOUCHED.size:
        raise corrupt("meta vouched", len(value), f"{_VOUCHED.size} bytes")
    build, until = _VOUCHED.unpack(value)
    return int(build), int(until)


_LAPSE_DAY: Final = struct.Struct(">I")


def lapse_key(planned_date: str, holder: bytes) -> bytes:
    """An entry of the lapse index: the notice's planned date (ISO ``YYYY-MM-DD``) as its
    proleptic Gregorian day number, then the holder: the index in planned-date order."""
    return _LAPSE_DAY.pack(date.fromisoformat(planned_date).toordinal()) + holder


def split_lapse_key(k: bytes | memoryview) -> tuple[date, bytes]:
    """(planned date, holder) of a `lapse_key`."""
    (day,) = _LAPSE_DAY.unpack_from(k)
    return date.fromordinal(day), bytes(k[_LAPSE_DAY.size :])


class RetentionState(msgspec.Struct, frozen=True, kw_only=True):
    """The retention agenda's scan (`META_RETENTION`, `crlbuilder.retention`)."""

    scanned_at: int
    """The instant (epoch seconds) the scan erased what was due by."""
    horizon: int
    """The agenda lists every entry that falls due before it."""
    periods: str
    """The retention periods the scan applied and how it counted them
    (`crlbuilder.retention.periods_digest`, `crlbuilder.periods.RULE`)."""
    shortest: int = 0
    """The shortest of those periods in days, in a complete agenda: a commit lists a CRL entry,
    a lapsed notice or a consent it writes at the end of that period from its recordedAt
    (`crlbuilder.retention`); 0 in an agenda made to a horizon (an earlier release's, which
    does not write it: JSON, its decoder ignores the field)."""

    @property
    def complete(self) -> bool:
        """The agenda lists every entry whenever it falls due, and every commit lists what it
        writes (`crlbuilder.retention.NO_HORIZON`), rather than only what falls due before
        ``horizon``."""
        return self.shortest > 0


class ErasedState(msgspec.Struct, frozen=True, kw_only=True):
    """What the erasures past retention may have taken from a record read since
    (`META_ERASED`, `crlbuilder.lateness`): each field the latest any erasure set."""

    at: int
    """The instant (epoch seconds) of the latest erasure that erased anything."""
    issued_before: int
    """An issuance whose certificate began before it and expired by ``at`` is read too late."""
    made_before: int
    """A move-out or move-in notice made before it is read too late."""


class IssuerMeta(msgspec.Struct, frozen=True, kw_only=True):
    """One issuer generation as the store knows it (META_ISSUERS)."""

    index: int
    id: str
    family: Family
    generation: int
    cert_der: bytes
    """The issuing CA certificate; CertID hashes are derived from it."""
    compromised_at: int = 0
    """Epoch seconds of a recorded key compromise, 0 if none."""


class PulledFile(msgspec.Struct, frozen=True, kw_only=True):
    """A CRL file a group appliance's pull imported (`crlbuilder.group.pull`): the HTTP
    validator the 機構 served it with, and the number of the CRL it carried."""

    etag: str
    """The ``ETag`` of the 機構's answer, sent back as ``If-None-Match`` (a 304 then means the
    file is still the one imported: nothing downloaded, nothing counted, no cycle used)."""
    number: int
    """The CRL's cRLNumber: the validator is trusted only while the store holds this CRL's
    information (the issuer's `CrlState.number` at least this)."""


class CrlState(msgspec.Struct, kw_only=True):
    """Per-issuer CRL numbering (META_CRL_STATE_PREFIX + issuer index)."""

    number: int = 0
    """The last CRL number used (full and delta CRLs share one sequence, RFC 5280 §5.2.3)."""
    base_number: int = 0
    """The number of the last full CRL: delta CRLs point at it."""
    base_commit: int = msgspec.field(default=0, name="base_build")
    """The commit sequence the last full CRL reflected: deltas list entries added after it.
    (Stored under its old JSON name ``base_build``: the bytes do not change.)"""
    base_this_update: int = 0
    """thisUpdate of the last full CRL: a new full CRL is due a cycle after it."""
    this_update: int = 0
    next_update: int = 0
    base_signer: str = ""
    """Hex SHA-256 of the key that signed the last full CRL: a delta CRL is only ever
    signed by the key of its base, so a new signing key (after a compromise) starts with
    a full CRL."""
    pulled_full: PulledFile | None = None
    """A group appliance's store (``mode = crl-import``): the full CRL file its pull last
    imported, or found already imported, written in that import's own transaction; None in
    the 機構's store, and in a store written before it existed (JSON ``null`` or absent: an
    older reader ignores the field, an older store reads as None, so the next pull downloads
    each file once)."""
    pulled_delta: PulledFile | None = None
    """The same for the delta CRL file."""
    base_scope: str | None = None
    """A group appliance's store: the scope of the last full CRL imported, hex SHA-256 of its
    issuingDistributionPoint (DER), "" when it had none (a CRL of the issuer's every
    certificate). A delta CRL of another scope (RFC 5280 §5.2.4, §6.3.3), or a full CRL of
    a narrower one (a partition of the issuer's certificates taken for the whole would
    unlist every serial outside it), is refused. None in the 機構's store, and in a store
    written before it existed: unchecked until its next full CRL."""


class OcspState(msgspec.Struct, kw_only=True):
    """Per-issuer OCSP freshness (META_OCSP_STATE_PREFIX + issuer index)."""

    produced_at: int = 0
    """When the pre-signed answers were last (re)signed."""
    next_update: int = 0
    """The earliest nextUpdate of any stored answer of this issuer."""
    commit: int = 0
    """The commit through which every revoked serial was seen by the pre-signer: a later
    run signs the revocations of the changes feed after it (`crlbuilder.presign`). 0 before
    the first full run of a pre-signer that keeps it."""
    signer: str = ""
    """The delegate (signer id, hex) that signed this issuer's answers in that run."""
    walk: str | None = None
    """A full run still in progress (a follow loop's runs are bounded in time and go on at its
    next turn): the status key, hex, of the last CRL entry it read ("" before the first);
    None when none is in progress. Every key after it is still to be read."""
    walk_next_update: int = 0
    """The nextUpdate that run gives the answers it signs, and those the changes feed brings
    meanwhile."""
    walk_earliest: int = 0
    """The earliest nextUpdate of the answers that run kept or stored so far (0: none): the
    issuer's `next_update` once it ends."""
    walk_started: int = 0
    """When the walk in progress began (epoch seconds; 0: none, or begun by a version that did
    not say)."""
    walk_seconds: int = 0
    """How long the issuer's last walk that re-signed at least as many answers as it kept
    took, from its first run to its last, the follow loop's other work between its runs
    included (0: not measured): the next walk of answers falling due starts at least
    `crlbuilder.presign.LEAD_FACTOR` times this before they do. A walk that mostly kept
    answers (``--presign-full`` before they were due) measured reading, not re-signing: it
    replaces this only when longer."""
    walk_signed: int = 0
    """How many answers the walk in progress signed so far (the changes feed's among them)."""
    walk_kept: int = 0
    """How many stored answers the walk in progress kept so far."""


class PendingMoveOut(msgspec.Struct, frozen=True, kw_only=True):
    """A move-out notice (転出届) awaiting its move-in notice: Act §31(2)'s 30-day clock."""

    record_id: str
    notified_at: int
    planned_date: str
    """ISO date."""
    abroad: bool
    lapsed_at: int = 0
    """When its 30-day lapse was written (0: pending). Kept so that a record arriving
    later (a deletion, a late move-in) is still judged by this notice's dates."""


class MoveIn(msgspec.Struct, frozen=True, array_like=True):
    """A move-in notice (転入届, 住民基本台帳法 §22(1)) the holder made, kept for the move-out
    notices (転出届) whose records arrive after it (Act §31(2), `DB_MOVE_INS`): two instants,
    no record id, no place."""

    notified_at: int
    """When the holder made it (epoch seconds)."""
    ended: int = 0
    """When the latest move-out notice it ended was made (0: none known): a move-out notice
    made before that one and whose lapse was not due by then was replaced by it before lapsing
    (the pending notice is the latest one made), so it starts no lapse of its own when its
    record comes late. Never after ``notified_at``."""


class Taken(msgspec.Struct, frozen=True, array_like=True):
    """A resident change (異動) that took the holder's card certificates at once (Act §12, §31(1)
    and (3)), kept for their issuance records that arrive after it (`DB_TAKEN`): when it was
    recorded and which families it took, no record id, no kind of change, no facts."""

    at: int
    """When the change was recorded (epoch seconds): it took the certificates issued no later."""
    sign: bool
    """It took sign-card certificates (Act §12)."""
    auth: bool
    """It took auth-card certificates (Act §31(1), (3))."""
    spared_from: int = 0
    spared_to: int = 0
    """A deletion by a 国外転出届 (Act §12(2)): the sign-card certificates issued in the notice's
    window (from when it was made to the end of its planned date) are not taken (0: none); for
    a lapse, the auth-card certificates issued in its 国外転出届's window (Act §31(2))."""
    lapse_due: int = 0
    """A 30-day lapse (異動等失効情報, Act §31(2)) when not 0: it fell due then and took the
    auth-card certificates issued before (``auth``; ``at`` is when it was written, its
    revocation instant, Act §34(1)(2)). For Act §25 they lost effect at ``lapse_due``."""


class CrlFileEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One produced CRL file (失効情報ファイル), kept until ``keep_until``."""

    issuer: str
    number: int
    delta: bool
    base_number: int
    path: str
    """Relative to the CRL directory."""
    this_update: int
    next_update: int
    entries: int
    size: int
    sha256: str
    keep_until: int
    """When its own retention ends (`crlbuilder.periods.kept_until`; pruned at the end of
    its JST day, `crlbuilder.periods.day_end`)."""


class Announcement(msgspec.Struct, frozen=True, kw_only=True):
    """The public announcement (公表) of an issuing-key compromise (発行者署名符号の漏えい等).

    Act §15(3) (sign-card, Ord §23), §16-14(3) (sign-mobile), §34(3) (auth-card,
    Ord §58), §35-14(3) (auth-mobile): the 機構 announces "without delay" that the
    certificates signed with a compromised key lost effect. Written by crlbuilder
    in the same write transaction as the compromise record, published by the
    responder (``/announcements``). It names the issuer generation, never a holder
    or a serial: no personal data.
    """

    issuer: str
    """The issuer generation's id, e.g. ``sign-card-g1``."""
    family: Family
    generation: int
    at: int
    """When the compromise was recorded (epoch seconds): the certificates lost effect then."""
    certificates: int
    """How many certificates lost effect by this compromise (cascaded mobiles not included)."""
    cascaded: int = 0
    """Mobile certificates of the same holders that lost effect with them (Act §16-13, §35-13)."""
    articles: list[str]
    """The articles that order the announcement, for this family."""
    commit: int
    """The store commit that recorded the compromise and this announcement."""


def announcement_key(issuer_index: int) -> bytes:
    return issuer_index.to_bytes(2, "big")


def outbox_key(target: bytes, number: int) -> bytes:
    """Target byte ‖ staging number u64: one target's lines sort in staging order."""
    return target + pack_u64(number)


class OutboxFile(msgspec.Struct, frozen=True, kw_only=True):
    """One target's file after its last completed delivery (`META_OUTBOX_FILE_PREFIX` ‖ target)."""

    path: str
    size: int
    inode: tuple[int, int] | None = None
    """The file's device and inode: another file under the path (replaced by ``crlbuilder outbox
    prune``, `crlbuilder.outboxprune`) is read whole for lines already in it, whatever its size.
    None: written by a release before it (an earlier reader ignores the field), known by its
    size alone."""

    mtime: int | None = None
    """The file's mtime (nanoseconds) after that delivery: a file modified since (a line a killed
    delivery appended, or another file under a reused inode: pruned twice while the builder was
    stopped) is read whole too. None: written before it."""


class SpoolAt(msgspec.Struct, frozen=True, kw_only=True):
    """A spool file applied up to ``line`` (`META_SPOOL_AT`): its name and, to know it again,
    its device, inode, ctime, mtime (nanoseconds) and size as it was opened: any other file
    under the name (renamed over it, written to, a reused inode) is read from its first line."""

    name: str
    file: tuple[int, int, int, int, int]
    line: int


spool_at_decoder: Final = msgspec.json.Decoder(SpoolAt)
issuer_meta_list_decoder: Final = msgspec.json.Decoder(list[IssuerMeta])
crl_state_decoder: Final = msgspec.json.Decoder(CrlState)
ocsp_state_decoder: Final = msgspec.json.Decoder(OcspState)
pending_decoder: Final = msgspec.json.Decoder(PendingMoveOut)
move_ins_decoder: Final = msgspec.json.Decoder(list[MoveIn])
taken_decoder: Final = msgspec.json.Decoder(list[Taken])
crl_file_decoder: Final = msgspec.json.Decoder(CrlFileEntry)
announcement_decoder: Final = msgspec.json.Decoder(Announcement)
outbox_file_decoder: Final = msgspec.json.Decoder(OutboxFile)
retention_state_decoder: Final = msgspec.json.Decoder(RetentionState)
erased_state_decoder: Final = msgspec.json.Decoder(ErasedState)


_REVOKED_CATEGORY_OFFSET: Final = 9


def revoked_category(value: bytes) -> int:
    """``category`` of a packed `RevokedEntry`, without unpacking the rest (entry counts)."""
    if len(value) != _REVOKED.size:
        raise corrupt("revoked", len(value), f"{_REVOKED.size} bytes")
    return value[_REVOKED_CATEGORY_OFFSET]
