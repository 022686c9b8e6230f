"""Applying records to the store: the legal rules turned into write transactions.

`Applier` takes decoded records in order and commits them in batches, one LMDB
write transaction per batch, so a reader never sees half a batch and a builder
killed at any moment leaves the last committed batch readable. Each record is
applied at most once (its id goes into the ``applied`` database in the same
transaction), so replaying any input changes nothing, and a rerun after a kill
converges to the state of an uninterrupted run: batches are cut at fixed input
positions and a batch with nothing new commits nothing. Beside the id goes a digest of
what the record said (`crlbuilder.recorddigest`): a record read again under an applied id
with other content is not a replay but a reused id, refused and quarantined (the first
record under the id stays applied); under an id a release before 1.5 applied (no digest)
it is skipped, as it was then (``skipped_duplicates_unchecked``).

What each record does (the rules themselves are in `rules`):

- issuance (発行記録): a good status, the holder links, the encrypted four facts;
  refused when the serial exists, the issuer is unknown or of another family,
  the holder already holds a valid certificate of the family (Act §6, §16-5,
  §25, §35-5; an auth one a kept lapse took counts as lost when the lapse fell due,
  below), a mobile certificate's card certificate is not the holder's, or (rules 8) an
  auth-mobile certificate's holder had no sign-card certificate in effect (Act §35-2(1), (3));
- revocation request (失効申請等情報), recording error (記録誤り等): revoke one
  serial; refused for an unknown serial or a record earlier than issuance;
- resident change (異動): revoke the holder's card certificates as Act §12 and
  §31 say, keep move-out notices for the 30-day rule (Act §31(2)), and the latest
  move-in notice made, so that a move-out notice whose record arrives after the move-in
  that followed it starts no lapse (`_followed`);
- CA key compromise: revoke every valid certificate of the generation (an issuance read
  later, of a certificate it signed before, is revoked at the compromise's instant), and record
  its public announcement (公表, Act §15(3), §16-14(3), §34(3), §35-14(3); Ord §23,
  §58) in the ``announcements`` database in the same transaction, for the
  responder to publish;
- consent (同意, Act §18(3)): kept per holder and verifier; a grant naming no
  registered 署名検証者等 (`verifiers`), or made with no registry configured,
  is refused, and so is one of a holder with no certificate applied yet; a withdrawal always
  applies (rules 8: only to a holder with a certificate); (rules 9) the latest recordedAt of
  the holder's grants and withdrawals for the verifier decides whatever the order they are read
  in, a withdrawal kept for that (`crlbuilder.consentkept`), and a grant older than the store's
  bound is refused as read too late;
- token issued, token revoked (特定利用者証明検証者証明符号, Act §38-3; records the cluster signer's
  builder writes on the record stream, `crlbuilder.tokens`): a good status of the token issuer,
  or its revocation (Act §38-2(6), `Category.APPROVAL_WITHDRAWN`) at the record's instant, so
  every node holds the same token statuses; refused by an applier not fed by the record stream
  (``token_records``), or not written by the signer's builder (a line of a record file,
  published on the stream by ``crlbuilder publish`` too: `ingest.TOKEN_SOURCE`): a record file
  never issues or revokes a token; a token issued is refused unless the certificate it carries
  is the token issuer's and says what the record says (`crlbuilder.tokencert`: another
  publisher on the stream cannot record a serial with another party);
- every revocation of a card certificate cascades to the holder's mobile
  certificate of the same kind (Act §16-13, §35-13), a mobile certificate whose issuance
  is read after its card certificate lost effect too;
- a record read too late to be judged (made before what an erasure past retention may have
  erased, by the bound that erasure left in the store: `crlbuilder.lateness`) is refused before
  anything of it is written, as is a move-out notice whose planned date is before the day it
  was made or more than a year on (`rules.planned_date_refusal`).

A revocation bumps the status record's version and deletes any stored answer
for that serial in the same transaction, so no worker can serve a stale one:
that bookkeeping, the commit sequence and its time (from this applier's clock)
are `crlbuilder.store.writer.Commit`'s, one per batch; this module decides only
what the law says to write.

The 30-day rule (異動等失効情報, Act §31(2)) is a record the 機構 writes when time
alone makes it due, and the certificate loses effect when it is written (Act
§34(1)(2)). The applier writes it when its clock has passed the due instant: at
the end of a build (`sweep_lapses`, which the follow loop also runs by a timer on
the earliest pending lapse, see `build`), or before the holder's next record
dated after it, so that record sees the lapse. It is dated when written: the
clock's instant, never earlier than the write nor than the due instant. One
exception, the first build of a new store: no answer or CRL was ever published
from it, so the lapses of the history it loads are dated at their due instants,
as the follow loop would have written them then. That is the law's date for them: the 機構
records a lapse 直ちに once it knows the 30 days passed (Act §31: 知ったときは、直ちに), and a
first build loads the 機構's history, every record of it dated when the 機構 recorded it; only a
store that published answers records a lapse by its own write (tests/test_lapse_time.py).

Each lapse written is kept with the holder's changes (`store.format.Taken`, with its due
instant), so that an issuance record read after it is judged by it even once its notice is
gone: a certificate issued before it fell due is revoked by it, at its instant; a new auth-card
certificate issued once it fell due is no double issuance (Act §25), nor a new auth-mobile one
(§35-5: the holder's earlier ones followed the card, §35-13), however late the lapse was written
(a builder catching up on a published store dates it at its clock, Act §34(1)(2)).

Retention and its end (Ord §70(1)(iii)): `Applier.erase_past_retention` erases
the revocation records whose period (per family and legal category,
configuration) has passed, from the store; CRLs leave them out by the same rule
(`past_retention`). A lapsed move-out notice goes with the last record its lapse wrote, and
a 国外転出届 not while the deletion it caused could still take a certificate of its window
(`crlbuilder.lapsed`). The changes, lapses and move-ins kept per holder go once no rule needs
them: past the periods of the records they stand for and the end of validity of every card
certificate issued before them (`crlbuilder.keptfor`).

Notices (the holder notification of Act §15(2), the public announcement of Act
§15(3)) are staged in the store's outbox in the transaction of the revocation
that causes them, and delivered to the notices file after it commits, once
each even across a kill (`crlbuilder.outbox`); a builder that starts delivers
what an earlier one left staged. Quarantine lines go the same way, and each
refusal's key (`ingest.quarantine_key`) is kept in the store, so a replayed
input quarantines nothing twice.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from crlbuilder import (
    consentkept,
    factskept,
    keptfor,
    lapsed,
    lateness,
    outbox,
    recorddigest,
    release,
    rules,
    tokencert,
    tokenrevocation,
)
from crlbuilder import retention as retention_agenda
from crlbuilder.facts import decode_birth_date
from crlbuilder.ingest import (
    TOKEN_SOURCE,
    Located,
    Quarantine,
    Rejected,
    quarantine_entry,
    quarantine_key,
    quarantine_line_key,
)
from crlbuilder.model import (
    CaCompromise,
    Category,
    ChangeKind,
    Consent,
    DeletionCause,
    Duty,
    Family,
    Issuance,
    Reason,
    Record,
    RecordingError,
    ResidentChange,
    RevocationRequest,
    TokenIssued,
    TokenRevoked,
)
from crlbuilder.periods import kept_until
from crlbuilder.recorddigest import RecordDigest
from crlbuilder.seal import FactsCipher
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.validity import expired_at
from crlbuilder.verifiers import Verifiers

_TOKEN_FROM_FILE: Final = (
    "a token record (特定利用者証明検証者証明符号, Act §38-3) is written by the cluster signer's "
    "builder on the record stream only, never read from a record file"
)
"""Why a token record is refused when it is a line of a record file (`ingest.TOKEN_SOURCE`:
a feed's file published on the stream too) or is read by an applier not fed by the stream."""
_TOKEN_RECORDS: Final = (TokenIssued, TokenRevoked)
AGENDA_CHUNK: Final = 1 << 19
"""Entries the retention scan keeps before it lists them on the agenda (`Commit.add_retention`):
a complete agenda lists every entry of the store, some 2 per holder (tens of millions at national
scale), which held at once would need gigabytes; a chunk is some 70 MB."""


class Refused(Exception):
    """A record that breaks a rule against the store's state: quarantined, nothing applied."""


def epoch(t: datetime) -> int:
    return int(t.timestamp())


def from_epoch(s: int) -> datetime:
    return datetime.fromtimestamp(s, UTC)


def _system_clock() -> datetime:
    return datetime.now(UTC)


def lapse_index(store: Store) -> None:
    """Make the store's lapse index (`store.format.DB_LAPSES`) whole again if a commit did
    not keep it: a store written before it, or by a builder of an earlier version. One read
    of every move-out notice kept, then none until that happens again."""
    with store.read() as r:
        if r.lapse_index_current():
            return
    with Commit(store) as c:  # the builder's own state: moves no commit
        c.index_lapses()


def next_lapse(store: Store) -> datetime | None:
    """The earliest instant a pending move-out notice lapses (Act §31(2)), if any."""
    lapse_index(store)
    with store.read() as r:
        for planned, _holder in r.pending_lapses():
            return rules.move_out_lapse(planned)  # the lapse moves with the planned date
    return None


def next_erasure(store: Store, retention: Callable[[Family, Category], int]) -> datetime | None:
    """The earliest instant a revocation record may pass its ``retention`` (days, Ord
    §70(1)(iii)), as the store's retention agenda says (`crlbuilder.retention.next_erasure`),
    if it has one; at once (its scan's instant) when the agenda was made under other periods
    than ``retention``: the erasure then scans, and only a scan knows what is due."""
    shortest = retention_agenda.shortest_period(retention)
    # either listing is trusted: a node of the record stream lists consents from rules 9 on,
    # its first erasure after the flag scanning again by itself (`Applier.erase_past_retention`)
    trusted = {
        retention_agenda.periods_digest(retention, listed)
        for listed in (retention_agenda.LISTED, _LISTED_BEFORE_RULES9)
    }
    with store.read() as r:
        at = retention_agenda.next_erasure(
            r.retention_state(),
            r.first_retention_due(),
            r.revoked_written_from(),
            shortest,
            r.kept_written_from(),
            trusted,
        )
    return None if at is None else from_epoch(at)


@dataclass
class Summary:
    """What a build did, for the closing summary and the tests."""

    read: int = 0
    applied: int = 0
    duplicates: int = 0
    """Records already applied, and refusals already quarantined, by an earlier run."""
    unchecked: int = 0
    """Of ``duplicates``, records under an id a release before 1.5 applied: kept without a
    digest of its content, so a reuse of the id with other content cannot be told (skipped)."""
    quarantined: int = 0
    no_effect: int = 0
    commits: int = 0
    revocations: Counter[str] = field(default_factory=Counter)
    notices: int = 0
    move_in_after_lapse: int = 0
    """Move-in notices made in time whose record came after the lapse was written (Act §31(2))."""
    erased: int = 0
    """Revocation records erased past their retention (Ord §70(1)(iii))."""
    notices_erased: int = 0
    """Lapsed move-out notices erased with the retention of their lapse record (`crlbuilder.lapsed`)."""
    taken_erased: int = 0
    """Kept changes and lapses of holders (``taken``) erased once no rule needs them (`crlbuilder.keptfor`)."""
    move_ins_erased: int = 0
    """Kept move-in notices of holders (``moveins``) erased once no rule needs them (`crlbuilder.keptfor`)."""
    facts_erased: int = 0
    """Sealed four facts of certificates that lost effect, erased (`crlbuilder.factskept`)."""
    consents_erased: int = 0
    """Consents past every sign certificate of the holder they could serve, erased
    (`crlbuilder.consentkept`)."""
    withdrawals_erased: int = 0
    """Withdrawals of consent kept (rules 9), erased at the instant the consent they ended
    would have been (`crlbuilder.consentkept`)."""
    late: int = 0
    """Of ``quarantined``, records read too late to be judged: made before what an erasure past
    retention may have erased (`crlbuilder.lateness`)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "records_read": self.read,
            "applied": self.applied,
            "skipped_duplicates": self.duplicates,
            "skipped_duplicates_unchecked": self.unchecked,
            "quarantined": self.quarantined,
            "applied_without_effect": self.no_effect,
            "commits": self.commits,
            "revocations_by_category": dict(sorted(self.revocations.items())),
            "notices": self.notices,
            "move_in_after_lapse": self.move_in_after_lapse,
            "erased_past_retention": self.erased,
            "lapsed_notices_erased": self.notices_erased,
            "taken_erased": self.taken_erased,
            "move_ins_erased": self.move_ins_erased,
            "facts_erased": self.facts_erased,
            "consents_erased": self.consents_erased,
            "withdrawals_erased": self.withdrawals_erased,
            "refused_late": self.late,
        }


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """Something the 機構 must tell someone: the holder of a recording error (Act §15(2),
    §16-14(2), §34(2), §35-14(2)), or the public of an issuing-key compromise (Act §15(3)
    and Ord §23, §16-14(3), §34(3) and Ord §58, §35-14(3)). ``article`` is the family's
    own, from `model.DUTY_ARTICLES`. No personal data.

    One record causes at most one notice of a kind: (record_id, kind) is its delivery key."""

    kind: str
    article: str
    record_id: str
    issuer: str
    serial: int | None = None
    at: datetime
    certificates: int = 1


class _NoticeKey(msgspec.Struct):
    record_id: str = ""
    kind: str = ""


_notice_key_decoder: Final = msgspec.json.Decoder(_NoticeKey)


def notice_key(line: bytes) -> bytes | None:
    """The delivery key of one line of the notices file: record id and kind."""
    try:
        k = _notice_key_decoder.decode(line)
    except msgspec.DecodeError:
        return None
    return f"{k.record_id}\0{k.kind}".encode() if k.record_id else None


@dataclass
class _Batch:
    c: Commit
    """The batch's write transaction: owns the commit sequence, versions and answers."""
    notices: list[Notice] = field(default_factory=list)
    """Owed to the notices file, staged in ``c`` when the batch changed anything."""
    erased: sf.ErasedState | None = None
    """What the store's erasures past retention may have taken from the batch's records
    (`crlbuilder.lateness`): read once, no erasure runs within a batch."""
    unsigned_before: int = 0
    """The batch's first records among which a ``token-revoked`` may come without the token
    issuer's signature (`tokenrevocation.unsigned_before`)."""
    rules7_before: int = 0
    """The batch's first records judged by rules 6, before the record stream's first message of
    release 1.7 (`release.RULES_7`): none once the store's flag is set, nor outside the stream."""
    rules8_before: int = 0
    """The same for rules 8 (`release.RULES_8`): the batch's first records judged by rules 7."""
    rules9_before: int = 0
    """The same for rules 9 (`release.RULES_9`): the batch's first records judged by rules 8."""
    index: int = 0
    """The position in the batch of the record being applied."""

    @property
    def rules6(self) -> bool:
        """Whether the record being applied is judged by every rule of rules 6: outside the
        record stream, or at or after the stream's first message of release 1.6 (the store's
        flag, `crlbuilder.store.format.META_TOKEN_SIGNATURES`); before it, as release 1.5
        judged it (an unsigned token revocation applied, a move-out's planned date not
        bounded), so that a node replaying the stream decides what the nodes of 1.5 did."""
        return self.index >= self.unsigned_before

    @property
    def rules7(self) -> bool:
        """Whether the record being applied is judged by rules 7 (a mobile certificate bounded
        by its card certificate alone, `Applier._check_validity`; a certificate in effect through
        its notAfter's own second, `rules.in_effect_at`): outside the record stream, or
        at or after the stream's first message of release 1.7 (the store's flag,
        `crlbuilder.store.format.META_RULES7_FROM`); before it as rules 6 judged it, so that a
        node replaying the stream decides what the nodes of 1.6 did."""
        return self.index >= self.rules7_before

    @property
    def rules8(self) -> bool:
        """Whether the record being applied is judged by rules 8 (a cascade never dated before
        the mobile certificate's notBefore, `Applier._revoke`; an auth-mobile issuance needing a
        sign-card certificate in effect, `Applier._check_signer`): outside the record stream,
        or at or after the stream's first message of release 1.8 (the store's flag,
        `crlbuilder.store.format.META_RULES8_FROM`); before it as rules 7 judged it."""
        return self.index >= self.rules8_before

    @property
    def rules9(self) -> bool:
        """Whether the record being applied is judged by rules 9 (a consent decided by the
        latest recordedAt, grant or withdrawal, `Applier._consent`): outside the record stream,
        or at or after the stream's first message of release 1.9 (the store's flag,
        `crlbuilder.store.format.META_RULES9_FROM`); before it as rules 8 judged it."""
        return self.index >= self.rules9_before

    @property
    def seq(self) -> int:
        return self.c.seq


class Applier:
    """Applies records to one store in batches (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        facts_key: bytes,
        quarantine: Quarantine,
        notices_path: Path | None = None,
        batch_size: int = 50_000,
        on_progress: Callable[[int], object] | None = None,
        clock: Callable[[], datetime] = _system_clock,
        verifiers: Verifiers | None = None,
        published: bool | None = None,
        token_records: bool = False,
    ) -> None:
        """``token_records``: the records come from the record stream, whose token records
        (`TokenIssued`, `TokenRevoked`) the cluster signer's builder wrote; otherwise they are
        refused."""
        self.store = store
        self.token_records = token_records
        self.clock = clock
        with store.read() as r:
            self._published = r.generation().build > 0 if published is None else published
            """A build completed on this store, so answers and CRLs may have been published
            (``published``: the caller knows; a node of the record stream dates every lapse
            by the stream's time, as every other node does)."""
            issuers = r.issuers()
        self.cipher = FactsCipher(facts_key)
        self.digests = RecordDigest(facts_key)
        """What each record said, kept beside its applied id (`crlbuilder.recorddigest`)."""
        self.quarantine = quarantine
        self.notices_path = notices_path
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.summary = Summary()
        self.verifiers = verifiers
        self.group: sf.StreamGroup | None = None
        """The record stream's batch being applied (`crlbuilder.stream`): every commit made
        for it (its lapses, erasures and records) is marked with it (`Commit.group`)."""
        """The registered parties a consent may name (None: no registry, consents refused)."""
        self.crash_points: dict[str, Callable[[], object]] = {}
        """Test hooks called where a kill matters (see `outbox.deliver`)."""
        self.stopped = False
        """`run` ended early, asked to (its ``stop``): its input not read to the end."""
        self.on_batch: Callable[[Commit, Located | Rejected], object] | None = None
        """Called in each batch's transaction with its last item: what the caller keeps of how
        far its input is committed (the follow loop's place in a spool file, `build`)."""
        self.undelivered: Callable[[OSError], object] | None = None
        """Told of a quarantine or notices file that could not be written (a full disk, its
        directory made read-only), its lines left staged in the store for the next delivery;
        None: raised (`deliver`)."""
        self._issuers: dict[str, sf.IssuerMeta] = {i.id: i for i in issuers}
        self._by_index: dict[int, sf.IssuerMeta] = {i.index: i for i in self._issuers.values()}
        # pure functions of values that recur from record to record, computed once each
        # (bounded by the calendar: one entry per valid birth date, per last day of validity)
        self._births: dict[str, date] = {}
        """`facts.decode_birth_date` of the era birth dates decoded so far (valid ones only)."""
        self._day_ends: dict[date, datetime] = {}
        """`rules.end_of_day_utc` of the last days of validity met so far."""
        self._plain_ends: dict[tuple[Family, date, bool], date] = {}
        """`rules.latest_validity_end` without a birth date or an auth-card end (an auth
        certificate's), per family, day of issuance and renewal."""

    # --- driving ------------------------------------------------------------

    def run(
        self, items: Iterable[Located | Rejected], *, stop: Callable[[], bool] | None = None
    ) -> Summary:
        """Apply every item, committing every ``batch_size`` input items; with ``stop``, asked
        after each commit, end there when it says so (`stopped`: the items after are not read)."""
        self.deliver()  # what a killed builder staged and did not deliver
        batch: list[Located | Rejected] = []
        for item in items:
            batch.append(item)
            if len(batch) >= self.batch_size:
                self.commit(batch)
                batch = []
                if stop is not None and stop():
                    self.stopped = True
                    return self.summary
        if batch:
            self.commit(batch)
        return self.summary

    def commit(
        self,
        items: list[Located | Rejected],
        *,
        stream_seq: int | None = None,
        token_signatures: tokenrevocation.TokenSignatures | None = None,
        rules7: release.FirstOf | None = None,
        rules8: release.FirstOf | None = None,
        rules9: release.FirstOf | None = None,
    ) -> None:
        """Apply one batch in one write transaction (aborted if it changes nothing).

        ``stream_seq``: the batch is the record stream up to that sequence (`crlbuilder.stream`),
        recorded in the same transaction, so a consumer killed after it resumes past it.
        ``token_signatures``: where the batch's first message of a release that signs token
        revocations stands (`crlbuilder.stream.token_signatures`); its sequence sets the store's
        flag (`Commit.put_token_signatures_from`) in the same transaction, and the records
        before it may be unsigned revocations unless the flag was set already. None (not the
        record stream): every revocation needs its signature.
        ``rules7``: where the batch's first message of release 1.7 or later stands
        (`crlbuilder.stream.rules7_from`): the same for rules 7 (`_Batch.rules7`, the store's
        flag `Commit.put_rules7_from`); None (not the record stream): every record by rules 7.
        ``rules8``: the same for release 1.8 and rules 8 (`_Batch.rules8`,
        `Commit.put_rules8_from`); ``rules9``: for release 1.9 and rules 9 (`_Batch.rules9`,
        `Commit.put_rules9_from`).
        """
        rejected: list[tuple[Located | Rejected, str]] = []
        summary = self.summary
        with Commit(self.store, self.clock) as c:
            c.group = self.group
            if stream_seq is not None:
                c.put_stream_seq(stream_seq)
            flag_set = c.token_signatures_from() is not None
            b = _Batch(
                c,
                erased=c.erased_state(),
                unsigned_before=tokenrevocation.unsigned_before(flag_set, token_signatures),
            )
            if token_signatures is not None and token_signatures.first is not None:
                c.put_token_signatures_from(token_signatures.first)
            if rules7 is not None and c.rules7_from() is None:
                b.rules7_before = rules7.before
                if rules7.first is not None:
                    c.put_rules7_from(rules7.first)
            if rules8 is not None and c.rules8_from() is None:
                b.rules8_before = rules8.before
                if rules8.first is not None:
                    c.put_rules8_from(rules8.first)
            if rules9 is not None and c.rules9_from() is None:
                b.rules9_before = rules9.before
                if rules9.first is not None:
                    c.put_rules9_from(rules9.first)
            claim, keep, release, apply, digest_of = (
                c.claim_applied,
                c.keep_applied,
                c.release_applied,
                self._apply,
                self.digests.of,
            )
            for b.index, item in enumerate(items):
                summary.read += 1
                if isinstance(item, Rejected):
                    rejected.append((item, item.reason))
                    continue
                record = item.record
                if isinstance(record, _TOKEN_RECORDS) and item.source != TOKEN_SOURCE:
                    rejected.append((item, _TOKEN_FROM_FILE))  # a file's line, stream or not
                    continue
                # the idempotence check and the mark in one lookup: marked now, released if refused
                digest = digest_of(record)
                claimed = claim(record.id, digest)
                if not isinstance(claimed, bytes):  # the id applied before
                    if recorddigest.reused(claimed.digest, digest):
                        rejected.append((item, recorddigest.reason(digest)))
                        continue
                    summary.duplicates += 1
                    summary.unchecked += claimed.digest is None
                    continue
                try:
                    effect = apply(b, record)
                except Refused as e:
                    release(claimed)
                    rejected.append((item, str(e)))
                    continue
                keep()
                summary.applied += 1
                if not effect:
                    summary.no_effect += 1
            if c.changed:
                self._stage_notices(b)
                self.summary.commits += 1
            for item, reason in rejected:
                self._reject(b, item, reason)
            if self.on_batch is not None and items:
                self.on_batch(c, items[-1])
        self.deliver()
        if self.on_progress is not None:
            self.on_progress(len(items))

    def sweep_lapses(self, as_of: datetime) -> int:
        """Write every 30-day move-out lapse (Act §31(2)) due by ``as_of``; returns revocations."""
        lapse_index(self.store)
        due: list[bytes] = []
        with self.store.read() as r:
            for planned, holder in r.pending_lapses():
                if rules.move_out_lapse(planned) > as_of:
                    break  # the index is in planned-date order: none later is due
                due.append(holder)
        if not due:
            return 0
        due.sort()  # in holder order, as the notices kept are: the same commit either way
        before = sum(self.summary.revocations.values())
        with Commit(self.store, self.clock) as c:
            c.group = self.group
            r7, r8, r9 = self._rules_before(c)
            b = _Batch(c, rules7_before=r7, rules8_before=r8, rules9_before=r9)
            for holder in due:
                self._lapse_if_due(b, holder, as_of)
            if c.changed:
                self._stage_notices(b)
                self.summary.commits += 1
        self.deliver()
        return sum(self.summary.revocations.values()) - before

    def _rules_before(self, c: Commit) -> tuple[int, int, int]:
        """`_Batch.rules7_before`, `_Batch.rules8_before` and `_Batch.rules9_before` of a batch
        that applies no record (a lapse sweep): on the record stream (``token_records``), the
        rules before each until the store's flag for it is set (`Commit.rules7_from`,
        `Commit.rules8_from`, `Commit.rules9_from`), as every node of the stream judges there;
        else the latest rules."""
        stream = self.token_records
        return (
            1 if stream and c.rules7_from() is None else 0,
            1 if stream and c.rules8_from() is None else 0,
            1 if stream and c.rules9_from() is None else 0,
        )

    def erase_past_retention(
        self,
        now: int,
        retention: Callable[[Family, Category], int],
        *,
        keep_time: bool,
        agenda: bool = False,
        lookahead: int | None = None,
        crls: CrlBase | None = None,
        stream: bool = False,
    ) -> int:
        """Erase the revocation records whose retention has passed (Ord §70(1)(iii)); returns how many.

        A revocation record is kept for the period set by Cabinet order (政令で定める期間)
        for its family and legal category, ``retention(family, category)`` days counted
        from the day it was recorded (Act §11-§14, §16-10-§16-13, §30-§33, §35-10-§35-13:
        記録をした日から), its first day not counted (Civil Code §140,
        `crlbuilder.periods.kept_until`). Past it (`past_retention`),
        in one write transaction: its CRL entry (``revoked``) and its stored answer
        (``responses``) are deleted, and the status record keeps only that the certificate
        lost effect (`store.format.STATE_ERASED`): no category, no reason, and the time only
        when ``keep_time`` (``crl.erased_answer = "revoked"``). The holder's links are not
        revocation information and stay; the sealed four facts went with the revocation
        (`store.writer.Commit.revoke`), and any an earlier release kept go now (`Commit.erase`).

        Which records are due is read from every CRL entry, or, with ``agenda`` (the
        builder's, kept in the store: `crlbuilder.retention`) and while it is not stale, from
        the agenda alone: the same records either way. The scan runs in the erasure's write
        transaction, so that no entry is committed between the scan and its agenda. The agenda
        it makes is complete (every entry not yet due is listed, and every commit lists what it
        writes), so it goes stale only with another digest (an upgrade, a reconfiguration) or a
        commit of an earlier release; with ``lookahead`` (seconds) it is made to a horizon as an
        earlier release made it, and scanned again past it.

        With ``crls`` (a builder whose store holds its issuers' CRL state: the CRL signer's,
        or a node's that fetches the signer's CRLs, `crlbuilder.crl.shipping`; a store that
        never held a CRL keeps nothing), each erased entry that its issuer's last full CRL
        lists (written by the commit that CRL reflects, and not yet past its retention when
        that CRL was made), or with delta CRLs that a delta on it may have listed (written
        after it), is kept in ``erased`` (`store.format.DB_ERASED`) in the same transaction,
        so that the next CRL takes it off at once (`crlbuilder.crl.publish`) rather than at
        the next full CRL's cycle; nothing once that full CRL has passed its nextUpdate (the
        next CRL is then a full one: `listed_since_base`).

        In the same transaction, the lapsed move-out notices (転出届, Act §31(2)) that have
        passed the rule of `crlbuilder.lapsed` by ``now`` are erased from ``pending`` (their
        lapse kept with the holder's changes, `store.format.Taken`), found by the same scan or
        agenda, and counted apart (`Summary.notices_erased`; the returned count is of records).
        So are the holders' kept changes, lapses (``taken``) and move-ins (``moveins``) past the
        rule of `crlbuilder.keptfor` (`Summary.taken_erased`, `Summary.move_ins_erased`), a lapse
        the notices' erasure keeps too. And the sealed four facts of the certificates that lost
        effect by ``now``, above all those whose validity elapsed with nobody revoking them
        (`crlbuilder.factskept`, `Summary.facts_erased`): builder state, they move no commit and
        write no lateness bound, since nothing is judged or answered by them. And the holders'
        consents past every sign certificate they could serve (`crlbuilder.consentkept`,
        `Summary.consents_erased`): deleted as a withdrawal is (the commit moves: record-info
        reads them), no lateness bound (no record is judged by a consent); with them the
        withdrawals kept (`Summary.withdrawals_erased`), and the grants' own bound raised
        (`Commit.put_granted_before`). On the record stream (``stream``), consents and
        withdrawals only from the stream's first message of release 1.9 on (rules 9, the store's
        flag): a node replaying ticks before it erases none (1.8 builds erased them or not, by their
        date: the stream cannot tell which), and the
        agenda made there does not list them, so the first erasure after it scans again.
        """
        shortest = retention_agenda.shortest_period(retention)
        with Commit(self.store, lambda: from_epoch(now)) as c:
            c.group = self.group
            consents_too = not stream or c.rules9_from() is not None
            periods = retention_agenda.periods_digest(
                retention, retention_agenda.LISTED if consents_too else _LISTED_BEFORE_RULES9
            )

            def due_at(key: bytes) -> int | None:
                """When the entry at ``key`` falls due; None when it never does (or is gone)."""
                entry = c.revoked_entry(key)
                meta = self._by_index.get(int.from_bytes(key[:2], "big"))
                if entry is None or meta is None or not entry.category:
                    return None  # a listed entry of a group appliance: no legal category
                days = retention(meta.family, Category.from_code(entry.category))
                st = c.status(key)
                return None if st is None else due_instant(entry.recorded_at, st.not_after, days)

            lapse_days = retention(Family.AUTH_CARD, Category.RESIDENT_CHANGE)
            consent_days = consentkept.longest_sign_period(retention)
            notices: list[bytes] = []
            """The holders whose lapsed move-out notice is erased (`crlbuilder.lapsed`)."""
            kept: set[bytes] = set()
            """The holders some of whose kept changes, lapses or move-ins may be due
            (`crlbuilder.keptfor`)."""
            facts: list[bytes] = []
            """The status keys whose sealed four facts are erased (`crlbuilder.factskept`)."""
            state = c.retention_state() if agenda else None
            if not agenda or retention_agenda.stale(
                state, now, c.revoked_written_from(), shortest, periods, c.kept_written_from()
            ):
                made = (
                    retention_agenda.scanned_whole(now, periods, shortest)
                    if lookahead is None
                    else retention_agenda.scanned(now, periods, lookahead)
                )
                unseen = (
                    None if made.complete else retention_agenda.unseen_from(made.horizon, shortest)
                )
                due: list[bytes] = []
                later: list[tuple[int, bytes]] = []
                """What falls due after ``now`` and before the horizon, not yet on the agenda."""
                if agenda:
                    c.rebuild_retention(made, [])  # emptied, its state written: listed below

                def listed(at: int, key: bytes) -> None:
                    """``key`` on the agenda at ``at``: kept in chunks (`AGENDA_CHUNK`) so that
                    the scan of a complete agenda never holds every entry of the store."""
                    if agenda:
                        later.append((at, key))
                        if len(later) >= AGENDA_CHUNK:
                            c.add_retention(later)
                            later.clear()

                periods_of: dict[tuple[int, int], int | None] = {}
                """Days of each (issuer index, legal category) seen: `due_at`'s, once each."""
                for key, recorded_at, category in c.revoked_recorded():
                    if unseen is not None and recorded_at >= unseen:
                        continue  # past the horizon under every period: most records
                    # `due_at(key)`, from what the pass decoded: the entry's category and
                    # recordedAt, the certificate's notAfter alone (every entry, in a complete
                    # agenda's scan: 47% of its time when each record was decoded whole)
                    index = int.from_bytes(key[:2], "big")
                    if (index, category) not in periods_of:
                        meta = self._by_index.get(index)
                        periods_of[index, category] = (
                            None
                            if meta is None or not category
                            else retention(meta.family, Category.from_code(category))
                        )
                    days = periods_of[index, category]
                    not_after = None if days is None else c.not_after(key)
                    at = (
                        None
                        if days is None or not_after is None
                        else due_instant(recorded_at, not_after, days)
                    )
                    if at is None or at >= made.horizon:
                        continue
                    if at <= now:
                        due.append(key)
                    else:
                        listed(at, key)
                for holder, pending in c.pending_notices():
                    if not pending.lapsed_at or kept_until(pending.lapsed_at, lapse_days) >= (
                        made.horizon
                    ):
                        continue  # not lapsed, or its period alone ends past the horizon: most
                    at = _notice_erasable_at(c, holder, pending, lapse_days)
                    if at is None or at >= made.horizon:
                        continue
                    if at <= now:
                        notices.append(holder)
                    else:
                        listed(at, holder)  # a holder key: 32 bytes, a status key 22
                for holder, at in _kept_first_due(c, retention, made.horizon):
                    if at <= now:
                        kept.add(holder)
                    elif at < made.horizon:
                        listed(at, holder)
                for holder, at in _consents_first_due(c, consent_days, made.horizon, consents_too):
                    if at <= now:
                        kept.add(holder)  # its consents and withdrawals checked below
                    elif at < made.horizon:
                        listed(at, holder)
                for key, sealed_state, not_after in c.sealed_ends():
                    at = factskept.erasable_at(sealed_state, not_after)
                    if at <= now:
                        facts.append(key)
                    elif at < made.horizon:
                        listed(at, key)  # a status key: checked for both when taken
                horizon = made.horizon
                if agenda:
                    c.add_retention(later)
            else:
                due = []
                horizon = state.horizon if state is not None else now
                # a holder key may be listed at several instants (its notice's, its kept
                # entries'): each key is checked once, or its notice would be erased twice
                for k in dict.fromkeys(c.take_retention(now)):
                    if len(k) == sf.HOLDER_BYTES:
                        kept.add(k)  # its kept entries and consents too: checked below
                        # checked again: the notice may be gone or replaced, or held longer by
                        # a certificate whose issuance was read since (never shorter)
                        at = _notice_erasable_at(c, k, c.pending(k), lapse_days)
                        if at is not None and at <= now:
                            notices.append(k)
                        elif at is not None and state is not None and at < state.horizon:
                            c.put_retention(at, k)
                    else:
                        # a status key stands for its CRL entry, its sealed facts, or both;
                        # each not due yet is listed again at its own instant (a commit lists a
                        # CRL entry at the earliest instant its shortest period allows)
                        if (at := due_at(k)) is not None:
                            if at <= now:
                                due.append(k)
                            elif at < horizon:
                                c.put_retention(at, k)
                        if (at := _facts_erasable_at(c, k)) is not None:
                            if at <= now:
                                facts.append(k)
                            elif at < horizon:
                                c.put_retention(at, k)
            due.sort()  # key order, from the agenda as from the scan
            facts.sort()
            notices.sort()
            bases: dict[int, sf.CrlState] = {}
            for key in due:
                st = c.status(key)
                assert st is not None
                if crls is not None:
                    index = int.from_bytes(key[:2], "big")
                    if index not in bases:
                        bases[index] = c.crl_state(index)
                    entry = c.revoked_entry(key)
                    if listed_since_base(entry, due_at(key), bases[index], now, crls):
                        c.keep_erased(key, now)
                c.erase(key, st, keep_time=keep_time)
            # the facts of certificates that lost effect: nothing reads them, nothing decides by
            # them, so they write no lateness bound below either (one an erased CRL entry took
            # with it is not counted twice)
            facts_erased = sum(c.drop_facts(key) for key in facts)
            b = _Batch(c)
            for holder in notices:
                lapsed_notice = c.pending(holder)
                notice = _notice(lapsed_notice)
                assert lapsed_notice is not None and notice is not None
                # the lapse stays kept with the holder's changes, for the issuance records read
                # later (a store whose lapse a builder of an earlier version wrote has none)
                _keep_taken_entry(
                    b, holder, _lapse_entry(notice, lapsed_notice.lapsed_at), watermark=False
                )  # checked below, in this erasure
                c.delete_pending(holder, change=False)  # a lapsed notice bounds no answer
            # the holders' kept changes, lapses and move-ins past their instant (a lapse the
            # notices' erasure just kept too), and the next instant of those left on the agenda
            taken_erased = move_ins_erased = consents_erased = withdrawals_erased = 0
            for holder in sorted(kept.union(notices)):
                gone_taken, gone_move_ins, at = _erase_kept(c, holder, now, retention)
                taken_erased += gone_taken
                move_ins_erased += gone_move_ins
                if agenda and at is not None and at < horizon:
                    c.put_retention(at, holder)
            # the consents past every sign certificate of the holder they could serve: what an
            # answer reads, not what a record is judged by (no lateness bound below), and the
            # withdrawals kept with them (rules 9; on the stream from its first 1.9 message)
            for holder in sorted(kept) if consents_too else ():
                gone, gone_withdrawals, at = _erase_consents(c, holder, now, consent_days)
                consents_erased += gone
                withdrawals_erased += gone_withdrawals
                if agenda and at is not None and at < horizon:
                    c.put_retention(at, holder)
            if consents_erased or withdrawals_erased:
                # a grant older than what went (a withdrawal's outranked grant above all) is
                # read too late from now on (`consentkept.LATE_GRANT`)
                c.put_granted_before(consentkept.granted_before(now, consent_days))
            if (due or notices or taken_erased or move_ins_erased) and (
                not stream or c.token_signatures_from() is not None
            ):
                # records made before what went may be judged without it: read later, they
                # are refused (`crlbuilder.lateness`), by the periods applied here. On the
                # record stream, from its first message of release 1.6 on only (the store's
                # flag, set by every node at that message): an erasure before it wrote no
                # bound on the nodes of 1.5, so a node replaying the stream writes none there
                # either, and refuses as late only what they would all refuse
                c.put_erased_state(lateness.bound(now, shortest, lapse_days, c.erased_state()))
            if (crash := self.crash_points.get("erase-before-commit")) is not None:
                crash()
        gone = (
            len(due) + len(notices) + taken_erased + move_ins_erased + facts_erased
            + consents_erased + withdrawals_erased
        )  # fmt: skip
        if gone:  # a commit that erased anything: a node's loop refreshes after it
            self.summary.commits += 1
        self.summary.erased += len(due)
        self.summary.notices_erased += len(notices)
        self.summary.taken_erased += taken_erased
        self.summary.move_ins_erased += move_ins_erased
        self.summary.facts_erased += facts_erased
        self.summary.consents_erased += consents_erased
        self.summary.withdrawals_erased += withdrawals_erased
        return len(due)

    # --- per record ---------------------------------------------------------

    def _apply(self, b: _Batch, rec: Record) -> bool:
        """Apply one record; True if it changed a certificate's status or the store's links."""
        if (late := lateness.refusal(rec, b.erased)) is not None:
            raise Refused(late)  # before anything of it is written (a lapse due by it too)
        match rec:
            case Issuance():
                return self._issuance(b, rec)
            case RevocationRequest():
                key, st = self._cert(b, rec.issuer, rec.serial, rec.recorded_at)
                # the status just read, unless a lapse written now may have changed it
                now = None if self._lapse_if_due(b, st.holder, rec.recorded_at) else st
                category, reason = rules.request_revocation(rec.reason)
                return self._revoke(b, key, category, reason, rec.recorded_at, rec.recorded_at, now)
            case RecordingError():
                key, st = self._cert(b, rec.issuer, rec.serial, rec.recorded_at)
                now = None if self._lapse_if_due(b, st.holder, rec.recorded_at) else st
                done = self._revoke(
                    b, key, Category.RECORDING_ERROR, Category.RECORDING_ERROR.default_reason,
                    rec.recorded_at, rec.recorded_at, now,
                )  # fmt: skip
                if done:
                    article = Duty.HOLDER_NOTIFICATION.article(st.family_enum)
                    b.notices.append(
                        Notice(kind="holder-notification", article=article, record_id=rec.id,
                               issuer=rec.issuer, serial=rec.serial, at=rec.recorded_at)
                    )  # fmt: skip
                return done
            case ResidentChange():
                return self._resident_change(b, rec)
            case CaCompromise():
                return self._compromise(b, rec)
            case Consent():
                return self._consent(b, rec)
            case TokenIssued():
                return self._token_issued(b, rec)
            case TokenRevoked():
                return self._token_revoked(b, rec)

    def _issuer(self, issuer_id: str) -> sf.IssuerMeta:
        meta = self._issuers.get(issuer_id)
        if meta is None:
            raise Refused(f"unknown issuer {issuer_id!r} (not in the store's issuer table)")
        if not meta.family.is_jpki:
            raise Refused(
                f"issuer {issuer_id!r} issues 特定利用者証明検証者証明符号 (Act §38-3): records name "
                "the Act's certificates; a token is issued and revoked by the builder from the "
                "registry (Act §38-2(6))"
            )
        return meta

    def _token_issuer(self, issuer_id: str) -> sf.IssuerMeta:
        """The token issuer ``issuer_id`` names, for a token record read from the stream."""
        if not self.token_records:
            raise Refused(_TOKEN_FROM_FILE)
        meta = self._issuers.get(issuer_id)
        if meta is None:
            raise Refused(f"unknown issuer {issuer_id!r} (not in the store's issuer table)")
        if meta.family is not Family.SPECIFIED_VERIFIER_TOKEN:
            raise Refused(
                f"issuer {issuer_id!r} does not issue {Family.SPECIFIED_VERIFIER_TOKEN.value}"
            )
        return meta

    def _token_issued(self, b: _Batch, rec: TokenIssued) -> bool:
        """A token's good status (the cluster signer issued it: the record's certificate is
        signed by the token issuer and says what the record says, `crlbuilder.tokencert`); the
        same status again (a node that has it from a snapshot of the signer's store) changes
        nothing."""
        meta = self._token_issuer(rec.issuer)
        why = tokencert.refusal(
            rec.certificate, issuer_der=meta.cert_der, issuer_id=rec.issuer, serial=rec.serial,
            not_before=rec.not_before, not_after=rec.not_after, holder=rec.holder,
        )  # fmt: skip
        if why is not None:  # not the signer's (a forgery on the stream): refused on every node
            raise Refused(why)
        key = sf.status_key(meta.index, rec.serial)
        holder = bytes.fromhex(rec.holder)
        nb, na = epoch(rec.not_before), epoch(rec.not_after)
        cur = b.c.status(key)
        if cur is not None:
            if (cur.holder, cur.not_before, cur.not_after) != (holder, nb, na):
                raise Refused(f"serial already issued by {rec.issuer} with other times or party")
            return False
        st = sf.StatusRecord(
            version=b.seq, state=sf.STATE_GOOD, category=0, reason=0,
            family=Family.SPECIFIED_VERIFIER_TOKEN.code, not_before=nb, not_after=na,
            revoked_at=0, holder=holder,
        )  # fmt: skip
        b.c.add_certificate(key, st, Family.SPECIFIED_VERIFIER_TOKEN, None)
        return True

    def _token_revoked(self, b: _Batch, rec: TokenRevoked) -> bool:
        """The token revoked at the record's instant (Act §38-2(6)), unless it already lost
        effect: only with the token issuer's signature over what the record says, for the
        token's party (the cluster signer wrote it, `crlbuilder.tokenrevocation`), unless it
        stands on the record stream before the stream's first message of a release that signs
        them (release 1.5's signer signed none: applied as then)."""
        meta = self._token_issuer(rec.issuer)
        key = sf.status_key(meta.index, rec.serial)
        st = b.c.status(key)
        if st is None:
            raise Refused(f"unknown serial for issuer {rec.issuer} (no token-issued record)")
        if rec.signature or b.rules6:  # else as release 1.5 applied it
            why = tokenrevocation.refusal(rec, issuer_der=meta.cert_der, holder=st.holder)
            if why is not None:  # not the signer's (a forgery on the stream): refused everywhere
                raise Refused(why)
        if epoch(rec.at) < st.not_before:
            raise Refused("token revoked before its notBefore")
        category = Category.APPROVAL_WITHDRAWN
        return self._revoke(b, key, category, category.default_reason, rec.at, rec.recorded_at, st)

    def _cert(
        self, b: _Batch, issuer_id: str, serial: int, at: datetime
    ) -> tuple[bytes, sf.StatusRecord]:
        meta = self._issuer(issuer_id)
        key = sf.status_key(meta.index, serial)
        st = b.c.status(key)
        if st is None:
            raise Refused(f"unknown serial for issuer {issuer_id} (no issuance record)")
        if epoch(at) < st.not_before:
            raise Refused("revocation recorded before the certificate's issuance")
        return key, st

    def _status(self, b: _Batch, key: bytes) -> sf.StatusRecord:
        st = b.c.status(key)
        assert st is not None, "a linked certificate has a status record"
        return st

    def _issuance(self, b: _Batch, rec: Issuance) -> bool:
        meta = self._issuer(rec.issuer)
        if meta.family is not rec.family:
            raise Refused(f"issuer {rec.issuer} issues {meta.family.value}, not {rec.family.value}")
        if meta.compromised_at and epoch(rec.not_before) >= meta.compromised_at:
            raise Refused(f"issuer {rec.issuer}'s key was compromised before this issuance")
        key = sf.status_key(meta.index, rec.serial)
        if b.c.status(key) is not None:
            raise Refused(f"serial already issued by {rec.issuer} under another record id")
        holder = bytes.fromhex(rec.holder)
        self._lapse_if_due(b, holder, rec.recorded_at)
        card = self._check_card(b, holder, rec) if rec.family.is_mobile else None
        if rec.family is Family.AUTH_MOBILE and b.rules8:
            self._check_signer(b, holder, rec)
        taken = b.c.taken(holder) if rec.family is not Family.SIGN_MOBILE else []
        auth = rec.family in (Family.AUTH_CARD, Family.AUTH_MOBILE)
        pending = b.c.pending(holder) if auth else None
        if pending is not None and pending.lapsed_at and (notice := _notice(pending)):
            # its lapse, also when not in `taken` (written by a builder of an earlier version)
            taken = [*taken, _lapse_entry(notice, pending.lapsed_at)]
        card_lapses = (
            self._card_lapses(b, holder, taken) if rec.family is Family.AUTH_MOBILE else []
        )
        held = []
        for k in b.c.holder_certs(holder, rec.family):
            st = self._status(b, k)
            # lost effect (Act §25, §35-5): when revoked, or when a kept lapse that took it (or,
            # for a mobile one, the card it follows) fell due, however late it was written
            lost = [st.revoked_at] if st.revoked else []
            if rec.family.is_mobile:
                lost += [d for d in card_lapses if st.not_before < d][:1]
            elif (at := _lost_effect_by(taken, rec.family, st.not_before)) is not None:
                lost.append(at)
            held.append(
                rules.HeldCert(
                    serial=int.from_bytes(k[2:], "big"),
                    not_after=from_epoch(st.not_after),
                    revoked_at=from_epoch(min(lost)) if lost else None,
                )
            )
        if rules.double_issuance(held, rec.not_before) is not None:
            raise Refused(
                f"the holder already has a valid {rec.family.value} certificate "
                f"(二重発行の禁止: {Duty.DOUBLE_ISSUANCE.article(rec.family)})"
            )
        self._check_validity(b, holder, rec, held)
        st = sf.StatusRecord(
            version=b.seq,
            state=sf.STATE_GOOD,
            category=0,
            reason=0,
            family=rec.family.code,
            not_before=epoch(rec.not_before),
            not_after=epoch(rec.not_after),
            revoked_at=0,
            holder=holder,
        )
        sealed = self.cipher.seal(key, rec.facts) if rec.facts is not None else None
        b.c.add_certificate(key, st, rec.family, sealed)
        self._lost_before_its_record(b, key, st, meta, card)
        return True

    def _card_lapses(self, b: _Batch, holder: bytes, taken: list[sf.Taken]) -> list[int]:
        """When each kept lapse (Act §31(2)) that took an auth-card certificate of the holder's
        still in effect as it fell due fell due, earliest first: every auth-mobile certificate
        of the holder issued before one of them followed that card (the cascade, Act §35-13,
        §35-14(1)(4)), so for Act §35-5 it lost effect at the earliest such instant after its
        own issuance, however late the lapse was written."""
        dues: list[int] = []
        for k in b.c.holder_certs(holder, Family.AUTH_CARD):
            card = self._status(b, k)
            dues += (
                t.lapse_due
                for t in taken
                if t.lapse_due
                and _takes(t, Family.AUTH_CARD, card.not_before)
                and rules.in_effect_at(card.not_after, t.lapse_due, through=b.rules7)
                and not (card.revoked and card.revoked_at < t.lapse_due)
            )
        return sorted(dues)

    def _lost_before_its_record(
        self,
        b: _Batch,
        key: bytes,
        st: sf.StatusRecord,
        meta: sf.IssuerMeta,
        card: tuple[bytes, sf.StatusRecord] | None,
    ) -> None:
        """Revoke a certificate whose issuance record is read after a record that already took
        its effect: it is never good, whatever order the records arrive in.

        - its issuer's key compromise (Act §14, §16-12, §33, §35-12) was recorded after
          ``not_before`` (a later issuance is refused): that record covers every certificate
          the key signed, this one too, so it lost effect then;
        - for a mobile certificate, its card certificate lost effect after ``not_before`` by
          one of the four recorded categories (earlier is refused, `_check_card`): the cascade
          record (Act §16-13, §35-13) covers it, at the card's instant;
        - for a card certificate, a change of the holder's resident record recorded at or after
          ``not_before`` that took the family's certificates at once (Act §12, §31(1), (3), kept
          in `store.format.DB_TAKEN`, `_taken_by`): it took this one too, when it was recorded;
        - for an auth-card certificate, a 30-day lapse (Act §31(2)) of a move-out notice of the
          holder's was written and takes it (`rules.lapse_revokes`: issued before the lapse fell
          due, outside a 国外転出届's window; the pending notice, or kept in
          `store.format.DB_TAKEN` once it is gone): the lapse record covers every certificate
          the holder had then, this one too, at the lapse's instant.
        The earliest is written (the later find it revoked).
        """
        lost: list[tuple[int, Category, Reason, int]] = []
        if meta.compromised_at:
            cat = Category.CA_COMPROMISE
            lost.append((meta.compromised_at, cat, cat.default_reason, meta.compromised_at))
        if meta.family is Family.AUTH_CARD:
            pending = b.c.pending(st.holder)
            notice = _notice(pending)
            if (
                pending is not None
                and notice is not None
                and pending.lapsed_at
                and rules.lapse_revokes(
                    notice, issued_at=from_epoch(st.not_before), as_of=from_epoch(pending.lapsed_at)
                )
            ):
                cat = Category.RESIDENT_CHANGE
                lost.append((pending.lapsed_at, cat, cat.default_reason, pending.lapsed_at))
        if meta.family in (Family.SIGN_CARD, Family.AUTH_CARD):
            by = _taken_by(b.c.taken(st.holder), meta.family, st.not_before)
            if by is not None:
                at = by.at
                cat = Category.RESIDENT_CHANGE
                lost.append((at, cat, cat.default_reason, at))
        if card is not None:
            card_key, card_st = card
            entry = b.c.revoked_entry(card_key) if card_st.revoked else None
            follow = (
                rules.cascade(card_st.family_enum, Category.from_code(entry.category))
                if entry is not None and entry.category
                else None
            )
            if entry is not None and follow is not None:
                _, cat, reason = follow
                lost.append((entry.revoked_at, cat, reason, entry.recorded_at))
        if lost:
            at, cat, reason, recorded = min(lost, key=lambda x: x[0])
            self._revoke(b, key, cat, reason, from_epoch(at), from_epoch(recorded), st)

    def _check_validity(
        self, b: _Batch, holder: bytes, rec: Issuance, held: list[rules.HeldCert]
    ) -> None:
        """notAfter within what Ord §13 / §49 (Act §16-4, §35-4 for mobiles) allow.

        ``renewal`` (the 6th birthday of Ord §13(1), §49(1)) must be borne out by the
        holder's previous certificate of the family: less than three months left on
        the day of issuance.

        A mobile certificate, from rules 7 (`_Batch.rules7`), is bounded by its card
        certificate's end alone (Act §16-4, §35-4: 個人番号カード用…電子証明書の有効期間の範囲内;
        the seed Ordinance sets no period for mobiles, Ord §13 and §49 being the card
        certificates'), which `_check_card` checks, and its ``renewal`` is not read; by rules 6
        it was held to the birthday bound of its family's card certificates too.
        """
        if rec.family.is_mobile and b.rules7:
            return
        issued = rules.jst_date(rec.not_before)
        if rec.renewal and not any(
            rules.is_renewal(rules.jst_date(h.not_after), issued) for h in held
        ):
            article = Duty.VALIDITY.article(rec.family)
            cite = article if rec.family.is_mobile else f"{article}(1)"
            raise Refused(
                "renewal claimed, but no previous certificate of the holder of this family had "
                f"less than three months left (the 6th birthday of {cite} does not apply)"
            )
        birth = None
        if rec.facts is not None:
            birth = self._births.get(rec.facts.birth_date)
            if birth is None:
                try:
                    birth = decode_birth_date(rec.facts.birth_date)
                except ValueError:
                    raise Refused("facts.birth_date is no valid date") from None
                self._births[rec.facts.birth_date] = birth
        auth_end = None
        if rec.family is Family.SIGN_CARD:
            not_before = epoch(rec.not_before)
            for k in b.c.holder_certs(holder, Family.AUTH_CARD):
                st = self._status(b, k)
                valid = not (st.revoked and st.revoked_at <= not_before)
                if valid and not expired_at(st.not_after, not_before):
                    auth_end = rules.jst_date(from_epoch(st.not_after))
        if birth is None and auth_end is None:
            # an auth certificate's (no facts): a function of its family, day and renewal alone
            plain = (rec.family, issued, rec.renewal)
            last = self._plain_ends.get(plain)
            if last is None:
                last = self._plain_ends[plain] = rules.latest_validity_end(
                    family=rec.family, issued=issued, renewal=rec.renewal, birth_date=None
                )
        else:
            last = rules.latest_validity_end(
                family=rec.family, issued=issued, renewal=rec.renewal, birth_date=birth,
                auth_cert_end=auth_end,
            )  # fmt: skip
        day_end = self._day_ends.get(last)
        if day_end is None:
            day_end = self._day_ends[last] = rules.end_of_day_utc(last)
        if rec.not_after > day_end:
            article = Duty.VALIDITY.article(rec.family)
            if rec.family.is_mobile:
                cite = article
            elif auth_end is not None and last == auth_end:
                cite = f"{article}(2)"  # no later than the holder's auth-card certificate
            else:
                cite = f"{article}(1)"  # the 5th (6th on renewal) birthday after issuance
            # no date: the bound is the holder's birthday (a fact, 基本4情報) or a certificate's
            # end set by it, and a refusal goes to the quarantine file in clear
            raise Refused(f"not_after is later than the validity the rules allow ({cite})")

    def _check_card(self, b: _Batch, holder: bytes, rec: Issuance) -> tuple[bytes, sf.StatusRecord]:
        """A mobile certificate's card certificate must be the holder's, of the same kind
        (sign-mobile Act §16-2, auth-mobile §35-2); returns its key and status."""
        for k in b.c.holder_certs(holder, rec.family.card_family):
            if int.from_bytes(k[2:], "big") == rec.card_serial:
                card = self._status(b, k)
                if card.revoked and card.revoked_at <= epoch(rec.not_before):
                    raise Refused(
                        "the card certificate had lost effect before this issuance "
                        f"({Duty.CARD_CERT_VALID.article(rec.family)})"
                    )
                if epoch(rec.not_after) > card.not_after:
                    raise Refused(
                        "a mobile certificate cannot outlive its card certificate "
                        f"({Duty.VALIDITY.article(rec.family)})"
                    )
                return k, card
        raise Refused(
            f"card_serial names no {rec.family.card_family.value} certificate of this holder"
        )

    def _check_signer(self, b: _Batch, holder: bytes, rec: Issuance) -> None:
        """An auth-mobile certificate is applied for by an auth-card holder who is a 署名利用者
        (Act §35-2(1)), with a notice signed by the holder's 個人番号カード用署名用電子証明書, which
        the 機構 confirms has not lost effect under §15(1) before it goes on (§35-2(2), (3)):
        a sign-card certificate of the holder begun by ``not_before`` and in effect then (not
        revoked by then, `rules.in_effect_at` its notAfter), else refused (rules 8). Which one
        signed is in no record: any such certificate bears it out. The sign-mobile's check is
        its own card certificate's (`_check_card`, §16-2(3))."""
        at = epoch(rec.not_before)
        for k in b.c.holder_certs(holder, Family.SIGN_CARD):
            st = self._status(b, k)
            lost = st.revoked and st.revoked_at <= at
            if st.not_before <= at and rules.in_effect_at(st.not_after, at) and not lost:
                return
        raise Refused(
            "no sign-card certificate of the holder in effect at this issuance: an auth-mobile "
            "certificate is applied for with one that has not lost effect (Act §35-2(1), (3))"
        )

    def _revoke(
        self,
        b: _Batch,
        key: bytes,
        category: Category,
        reason: Reason,
        at: datetime,
        recorded_at: datetime,
        st: sf.StatusRecord | None = None,
    ) -> bool:
        """Revoke one certificate at ``at`` unless it already lost effect; cascade to mobile
        (Act §16-13, §35-13: from rules 8 at `rules.cascade_at`'s instant, never before the
        mobile certificate's notBefore, and not to one issued against a later card certificate;
        rules 7 took every mobile certificate of the holder at the card's instant).

        A certificate is in effect through its notAfter (RFC 5280 §4.1.2.5; Ord §13, §49: to the
        end of its last day, whose 23:59:59 JST is notAfter), so a loss of effect in that very
        second takes it (rules 7, as `rules.double_issuance` counts it valid then); rules 6 held
        it expired from that second (`_Batch.rules7`)."""
        if st is None:
            st = self._status(b, key)
        family = st.family_enum
        if not category.applies_to(family):
            raise Refused(
                f"category {category.value} does not apply to {family.value} certificates "
                "(it has no such article in the Act)"
            )
        t = epoch(at)
        if st.revoked or not rules.in_effect_at(st.not_after, t, through=b.rules7):
            return False
        b.c.revoke(
            key, st, category=category.code, reason=int(reason), at=t,
            recorded_at=epoch(recorded_at),
        )  # fmt: skip
        self.summary.revocations[category.value] += 1
        follow = rules.cascade(family, category)
        if follow is not None:
            mobile_family, cat, rsn = follow
            recorded = epoch(recorded_at)
            for k in b.c.holder_certs(st.holder, mobile_family):
                mobile = self._status(b, k)
                when = (
                    rules.cascade_at(t, st.not_after, mobile.not_before, mobile.not_after)
                    if b.rules8
                    else t  # rules 7: at the card's instant, whenever the mobile one began
                )
                if when is not None:
                    self._revoke(b, k, cat, rsn, from_epoch(when),
                                 from_epoch(max(recorded, when)), mobile)  # fmt: skip
        return True

    def _resident_change(self, b: _Batch, rec: ResidentChange) -> bool:
        if rec.serial is not None and rec.issuer is not None:
            key, st = self._cert(b, rec.issuer, rec.serial, rec.recorded_at)
            family = st.family_enum
            if not Category.RESIDENT_CHANGE.applies_to(family):
                raise Refused(
                    f"category resident-change does not apply to {family.value} certificates "
                    "(a mobile certificate follows its card certificate instead)"
                )
            holder = st.holder
            targets = [(family, [key])]
        else:
            assert rec.holder is not None
            holder = bytes.fromhex(rec.holder)
            targets = [
                (f, b.c.holder_certs(holder, f)) for f in (Family.SIGN_CARD, Family.AUTH_CARD)
            ]
            # no card certificate (yet, or any more) is no error: the change revokes
            # nothing, and a move-out notice still starts its clock
        # a notice counts from when it was made (its record may come later): Act §12(2), §31(2)
        made = rec.recorded_at
        if rec.change in (ChangeKind.MOVE_OUT_NOTICE, ChangeKind.MOVE_IN_NOTICE):
            made = rec.notified_at or rec.recorded_at
            if made > rec.recorded_at:
                raise Refused(
                    "notified_at is later than recorded_at (a notice is made before its record)"
                )
        elif rec.notified_at is not None:
            raise Refused("notified_at belongs to move-out and move-in notices only")
        if rec.planned_date is not None:  # a move-out notice's (`ingest.check_record`)
            why = rules.planned_date_refusal(rec.planned_date, made, bounded=b.rules6)
            if why is not None:
                raise Refused(f"{why} (at `$.planned_date`)")
        self._lapse_if_due(b, holder, made)
        pending = b.c.pending(holder)
        if rec.change is ChangeKind.MOVE_OUT_NOTICE:
            assert rec.planned_date is not None
            this = rules.MoveOutNotice(
                notified_at=made, planned_date=rec.planned_date, abroad=rec.abroad
            )
            return self._move_out(b, holder, pending, this, rec.id)
        if rec.change is ChangeKind.MOVE_IN_NOTICE:
            return self._move_in(b, holder, pending, made)
        notice = _notice(pending)
        if rec.holder is not None:
            self._keep_taken(b, holder, rec, notice)
        changed = False
        for family, keys in targets:
            for key in keys:
                st = self._status(b, key)
                if rules.resident_change_revokes(
                    family, rec, issued_at=from_epoch(st.not_before), notice=notice
                ):
                    changed |= self._revoke(
                        b, key, Category.RESIDENT_CHANGE, Category.RESIDENT_CHANGE.default_reason,
                        rec.recorded_at, rec.recorded_at, st,
                    )  # fmt: skip
        return changed

    def _keep_taken(
        self, b: _Batch, holder: bytes, rec: ResidentChange, notice: rules.MoveOutNotice | None
    ) -> None:
        """Keep a change of the holder's resident record that takes card certificates at once
        (`store.format.Taken`), for their issuance records that arrive after it
        (`_lost_before_its_record`): the latest `store.format.MAX_TAKEN` changes, earliest first."""
        sign = rules.sign_revoked_by(rec, issued_at=rec.recorded_at)
        auth = rules.auth_revoked_by(rec)
        if not (sign or auth):
            return
        spared = (0, 0)
        if rec.cause is DeletionCause.ABROAD_MOVE_OUT and notice is not None and notice.abroad:
            end = rules.end_of_day_utc(notice.planned_date)
            spared = (epoch(notice.notified_at), epoch(end))  # Act §12(2)'s window
        _keep_taken_entry(b, holder, sf.Taken(epoch(rec.recorded_at), sign, auth, *spared))

    def _move_out(
        self,
        b: _Batch,
        holder: bytes,
        pending: sf.PendingMoveOut | None,
        this: rules.MoveOutNotice,
        record_id: str,
    ) -> bool:
        """A move-out notice (転出届), judged with the holder's notices made after it, in whatever
        order their records came (Act §31(2)):

        - a move-in notice, or a move-out notice a move-in ended, made from it until its lapse
          was due (`_followed`): it starts nothing (`_followed_move_out`);
        - the pending notice, made after it but before its lapse was due, replaced it: nothing;
        - the pending notice was made after its lapse was due: it lapsed on its own before that
          (`_lapse_earlier`), and the pending notice stays;
        - else it is the holder's pending notice, its 30-day clock running (its lapse written
          by `_lapse_if_due` once due, at the holder's next record or the sweep: a notice of
          the holder made before the due instant whose record comes first still prevents it),
          and the good answers of the holder's auth certificates are bounded by its lapse
          (`_new_version`).
        """
        made = epoch(this.notified_at)
        kept = b.c.move_ins(holder)
        if _followed(kept, this):
            return self._followed_move_out(b, holder, pending, kept, this.notified_at)
        if pending is not None and pending.notified_at > made:
            if rules.ends_before_lapse(this, from_epoch(pending.notified_at)):
                return False
            return self._lapse_earlier(b, holder, this)
        p = sf.PendingMoveOut(
            record_id=record_id, notified_at=made,
            planned_date=this.planned_date.isoformat(), abroad=this.abroad,
        )  # fmt: skip
        b.c.put_pending(holder, p)
        self._new_version(b, holder, (Family.AUTH_CARD, Family.AUTH_MOBILE))
        return True

    def _move_in(
        self, b: _Batch, holder: bytes, pending: sf.PendingMoveOut | None, made: datetime
    ) -> bool:
        """A move-in notice (転入届) made at ``made``: it ends the pending move-out notice (転出届)
        it follows (Act §31(2)), and is kept (`store.format.MoveIn`, the latest
        `store.format.MAX_MOVE_INS` made, earliest first) for the move-out notices whose records
        arrive after it (`_followed_move_out`). True when it stopped a lapse not yet written."""
        ended = 0
        stopped = False
        if pending is not None and epoch(made) >= pending.notified_at:
            # a move-in notice made before the pending move-out notice is no 転入届 following
            # it (Act §31(2)): by when each was made, not by when their records arrived
            self._end_pending(b, holder, pending, made)
            ended = pending.notified_at
            stopped = not pending.lapsed_at
        _keep_move_ins(b, holder, b.c.move_ins(holder), epoch(made), ended)
        return stopped

    def _followed_move_out(
        self,
        b: _Batch,
        holder: bytes,
        pending: sf.PendingMoveOut | None,
        kept: list[sf.MoveIn],
        made: datetime,
    ) -> bool:
        """A move-out notice (転出届) made at ``made`` that a move-in notice already applied
        followed (`_followed`): its record came after the move-in's, and it starts no 30-day
        lapse (Act §31(2)). Applied as the two would have been in the order they were made: it
        replaces a pending notice made no later than itself, which the move-in then ends too;
        it is kept as ended by the earliest kept move-in made after it. True when that stopped
        a lapse not yet written."""
        stopped = False
        if pending is not None and pending.notified_at <= epoch(made):
            self._end_pending(b, holder, pending, made)
            stopped = not pending.lapsed_at
        after = next(m for m in kept if m.notified_at >= epoch(made))
        _keep_move_ins(b, holder, kept, after.notified_at, epoch(made))
        return stopped

    def _end_pending(
        self, b: _Batch, holder: bytes, pending: sf.PendingMoveOut, made: datetime
    ) -> None:
        """The pending move-out notice ended by a notice made at ``made`` (a move-in notice, or
        a move-out notice a move-in followed): deleted. A lapse already written stands (Act
        §34(1)(2)), counted when the ending notice was made before it was due."""
        if pending.lapsed_at and made < rules.move_out_lapse(
            date.fromisoformat(pending.planned_date)
        ):
            # made in time, but the lapse was written first: it stands (Act §34(1)(2))
            self.summary.move_in_after_lapse += 1
        b.c.delete_pending(holder)

    def _new_version(self, b: _Batch, holder: bytes, families: tuple[Family, ...]) -> None:
        """Give the holder's good certificates of ``families`` a new status version.

        A move-out notice changes no status but bounds the nextUpdate of their good
        answers (Act §31(2), see `StoreReader.lapse_due`): a new version keeps every
        responder worker from serving an answer it cached before the notice.
        """
        for family in families:
            for key in b.c.holder_certs(holder, family):
                st = self._status(b, key)
                if not st.revoked:
                    b.c.new_version(key, st)

    def _holder_known(self, b: _Batch, holder: bytes) -> bool:
        return any(b.c.holder_certs(holder, f) for f in Family)

    def _lapse_if_due(self, b: _Batch, holder: bytes, by: datetime) -> bool:
        """Act §31(2): 30 days after the planned move-out with no move-in, auth-card certs lose effect.

        Written when the lapse is due both by ``by`` (a build instant, or the date of
        the holder's next record) and by the clock, dated when written (`_lapse_written_at`).
        True when it wrote the lapse (a status of the holder's may have changed).
        """
        pending = b.c.pending(holder)
        if pending is None or pending.lapsed_at:
            return False
        notice = _notice(pending)
        assert notice is not None
        due = rules.move_out_lapse(notice.planned_date)
        if due > by or due > self.clock():
            return False
        at = self._lapse_written_at(due)
        lapsed = msgspec.structs.replace(pending, lapsed_at=epoch(at))
        b.c.put_pending(holder, lapsed)
        self._revoke_by_lapse(b, holder, notice, at)
        return True

    def _lapse_earlier(self, b: _Batch, holder: bytes, notice: rules.MoveOutNotice) -> bool:
        """A move-out notice whose record came after the pending one's, made before it, whose
        30-day lapse was due before the pending one was made and that no move-in notice
        followed (Act §31(2)): by the order they were made, it lapsed on its own. Its lapse is
        written now, dated when written (Act §34(1)(2)), for the auth-card certificates it
        takes (`rules.lapse_revokes`: issued before it fell due); the pending notice stays as
        it is. True when it revoked a certificate."""
        due = rules.move_out_lapse(notice.planned_date)
        if due > self.clock():
            raise Refused(
                "move-out notice made before the pending one and lapsed before it was made, "
                "but its 30-day lapse is not due by the builder's clock yet"
            )
        return self._revoke_by_lapse(b, holder, notice, self._lapse_written_at(due))

    def _revoke_by_lapse(
        self, b: _Batch, holder: bytes, notice: rules.MoveOutNotice, at: datetime
    ) -> bool:
        """Revoke at ``at`` the holder's auth-card certificates that ``notice``'s lapse takes
        (`rules.lapse_revokes`), and keep the lapse (`store.format.Taken`, with its due instant)
        for the issuance records that arrive after it: one of a certificate it took
        (`_lost_before_its_record`), and a new one issued once it fell due (Act §25)."""
        _keep_taken_entry(b, holder, _lapse_entry(notice, epoch(at)))
        changed = False
        for key in b.c.holder_certs(holder, Family.AUTH_CARD):
            st = self._status(b, key)
            if rules.lapse_revokes(notice, issued_at=from_epoch(st.not_before), as_of=at):
                changed |= self._revoke(
                    b, key, Category.RESIDENT_CHANGE, Category.RESIDENT_CHANGE.default_reason,
                    at, at, st,
                )  # fmt: skip
        return changed

    def _lapse_written_at(self, due: datetime) -> datetime:
        """The instant a lapse record written now carries (Act §31(2), §34(1)(2)).

        The clock's instant, whole seconds as the store keeps them, never before
        ``due``. A store that never completed a build has published nothing, so
        the history it loads is dated as the follow loop would have written it,
        at the due instant (see the module docstring).
        """
        if not self._published:
            return due
        now = self.clock()
        return max(due, datetime.fromtimestamp(math.ceil(now.timestamp()), UTC))

    def _compromise(self, b: _Batch, rec: CaCompromise) -> bool:
        meta = self._issuer(rec.issuer)
        if meta.compromised_at:
            return False
        t = epoch(rec.recorded_at)
        keys: list[bytes] = []
        for key, st in b.c.statuses(meta.index):
            if rules.compromise_revokes(
                cert_issuer=rec.issuer, compromised_issuer=meta.id,
                not_after=from_epoch(st.not_after), at=rec.recorded_at, through=b.rules7,
            ) and not st.revoked:  # fmt: skip
                # a certificate dated to begin after the compromise was signed by that key
                # all the same (its issuance record came first): it is never good either
                keys.append(key)
        cascaded_before = self.summary.revocations[Category.CARD_CASCADE.value]
        for key in keys:
            self._revoke(b, key, Category.CA_COMPROMISE, Category.CA_COMPROMISE.default_reason,
                         rec.recorded_at, rec.recorded_at)  # fmt: skip
        cascaded = self.summary.revocations[Category.CARD_CASCADE.value] - cascaded_before
        # answers signed by the compromised key's delegate are not served again, even of
        # certificates revoked earlier: the successor's delegate re-signs them (presign)
        b.c.drop_answers(meta.index)
        updated = msgspec.structs.replace(meta, compromised_at=t)
        self._issuers[meta.id] = updated
        self._by_index[meta.index] = updated
        b.c.put_issuers(self._issuers.values())
        announcement = sf.Announcement(
            issuer=meta.id, family=meta.family, generation=meta.generation, at=t,
            certificates=len(keys), cascaded=cascaded,
            articles=Duty.PUBLIC_ANNOUNCEMENT.article(meta.family).split(", "), commit=b.seq,
        )  # fmt: skip
        b.c.put_announcement(meta.index, announcement)
        b.notices.append(
            Notice(kind="public-announcement", record_id=rec.id,
                   article=Duty.PUBLIC_ANNOUNCEMENT.article(meta.family),
                   issuer=rec.issuer, at=rec.recorded_at, certificates=len(keys))
        )  # fmt: skip
        return True

    def _consent(self, b: _Batch, rec: Consent) -> bool:
        """A holder's consent (同意) to one verifier receiving 特定署名用電子証明書記録情報
        (Act §18(3)); the verifier must be a registered 署名検証者等. A withdrawal always applies.

        Rules 9 (`_consent_by_latest`): the latest recordedAt decides; rules 8 (on the record
        stream before its first 1.9 message): a grant wrote its time over the consent's, a
        withdrawal deleted it and left no trace."""
        if rec.granted and b.rules9 and epoch(rec.recorded_at) < b.c.granted_before():
            raise Refused(consentkept.LATE_GRANT)  # before anything of it is written
        if rec.granted:
            if self.verifiers is None:
                raise Refused(
                    "no registry of parties configured (input.registry, --registry): "
                    "a consent cannot be checked against the registered verifiers (Act §18(3))"
                )
            why = self.verifiers.refusal(rec.verifier, epoch(self.clock()))
            if why is not None:
                raise Refused(why)
        holder = bytes.fromhex(rec.holder)
        self._lapse_if_due(b, holder, rec.recorded_at)
        if not self._holder_known(b, holder) and (rec.granted or not b.rules9):
            # a holder with auth certificates only may consent ahead of a sign certificate; a
            # withdrawal (rules 9) is kept even before the holder's first certificate is read,
            # or a grant it outranks, read after that certificate, would grant again
            raise Refused("no certificate of this holder (issuance record missing?)")
        if b.rules9:
            return _consent_by_latest(b.c, holder, rec.verifier, epoch(rec.recorded_at),
                                      granted=rec.granted)  # fmt: skip
        if rec.granted:
            b.c.put_consent(holder, rec.verifier, epoch(rec.recorded_at))
            return True
        return b.c.delete_consent(holder, rec.verifier)

    # --- outputs ------------------------------------------------------------

    def _reject(self, b: _Batch, item: Located | Rejected, reason: str) -> None:
        """Quarantine one refusal, in the batch's transaction, unless it already was."""
        rid = item.record_id if isinstance(item, Rejected) else item.record.id
        entry = quarantine_entry(item.source, item.line, reason, rid)
        key = quarantine_key(entry)
        if b.c.quarantined(key) is not None:
            self.summary.duplicates += 1
            return
        b.c.quarantine(key)
        b.c.stage(outbox.QUARANTINE, msgspec.json.encode(entry))
        self.summary.quarantined += 1
        self.summary.late += reason in lateness.REASONS

    def _stage_notices(self, b: _Batch) -> None:
        """Owe the batch's notices to the notices file, in the batch's own transaction."""
        for n in b.notices:
            b.c.stage(outbox.NOTICES, msgspec.json.encode(n))
        self.summary.notices += len(b.notices)

    def deliver(self) -> int:
        """Write the staged quarantine lines and notices to their files, once each; returns how
        many notices were written.

        Without a notices file (``notices_path`` None) notices stay staged for a builder that has one.
        A file that cannot be written raises `OSError`, or, with `undelivered` set, is told to
        it: its lines stay staged (they are in the store, committed with what caused them) and
        the records go on being applied; the next delivery writes them once each.
        """
        try:
            self.quarantine.count += outbox.deliver(
                self.store,
                outbox.QUARANTINE,
                self.quarantine.path,
                quarantine_line_key,
                before_write=self.crash_points.get("quarantine-before-write"),
                before_delete=self.crash_points.get("quarantine-before-delete"),
            )
        except OSError as e:
            if self.undelivered is None:
                raise
            self.undelivered(e)
        if self.notices_path is None:
            return 0
        try:
            return outbox.deliver(
                self.store,
                outbox.NOTICES,
                self.notices_path,
                notice_key,
                before_write=self.crash_points.get("notices-before-write"),
                before_delete=self.crash_points.get("notices-before-delete"),
            )
        except OSError as e:
            if self.undelivered is None:
                raise
            self.undelivered(e)
            return 0


def past_retention(recorded_at: int, not_after: int, now: int, days: int) -> bool:
    """Whether a revocation record is erased (and left out of CRLs) at ``now``.

    When its retention of ``days`` days has passed (Ord §70(1)(iii), `due_instant`) and the
    certificate has expired: a revoked certificate still within its validity must stay
    listed as revoked whatever the configured period says (erasing it then would make it
    look valid), so a period shorter than the validity keeps the record until the
    certificate's notAfter.
    """
    return due_instant(recorded_at, not_after, days) <= now


@dataclass(frozen=True)
class CrlBase:
    """What an erasure needs to know of the CRLs it keeps erased entries for (``crl``)."""

    deltas: bool
    """Delta CRLs are made (``crl.delta``): one on the base may list an entry written after it."""
    cycle_seconds: int
    """A full CRL's nextUpdate after its thisUpdate (``crl.cycle_seconds``): past it, the next
    CRL is a full one (`crlbuilder.crl.publish.full_lapsing`), which takes off everything."""


def listed_since_base(
    entry: sf.RevokedEntry | None, due: int | None, state: sf.CrlState, now: int, crls: CrlBase
) -> bool:
    """Whether a CRL of the issuer since its last full CRL (``state``: its number, the commit
    it reflects, its thisUpdate) may list the CRL entry ``entry`` that falls due at ``due``,
    so that the next CRL after ``now`` must take it off: not past its retention at that CRL's
    thisUpdate (`crlbuilder.crl.publish`, `past_retention`), and written by the commit it
    reflects (the full CRL lists it) or, with deltas, after it (a delta CRL on that base may
    have listed it: RFC 5280 §5.2.4 lets a delta be combined with a locally constructed
    complete CRL too, the base with the earlier deltas applied, numbered at least its base,
    as a group appliance's store is, `crlbuilder.crl.importer`; so an entry an earlier delta
    added must be taken off with removeFromCRL as well). An entry written after the base that no delta listed
    yet gets a removeFromCRL for a serial on no CRL: harmless (nothing to remove). Never once
    the base has passed its nextUpdate by ``now``: the next CRL is a full one without it, and
    a store whose CRLs stopped (publishing failing, a node no longer fetching them, CRLs
    turned off) keeps no more than one cycle's erasures."""
    if entry is None or due is None or not state.base_number:
        return False
    if now >= state.base_this_update + crls.cycle_seconds:
        return False
    return (crls.deltas or entry.commit <= state.base_commit) and due > state.base_this_update


def due_instant(recorded_at: int, not_after: int, days: int) -> int:
    """When a revocation record recorded at ``recorded_at`` passes its retention of ``days``
    days (`past_retention`): at 00:00 JST after the last day of the period counted from the
    day after the day it was recorded (記録をした日から, 初日不算入: Civil Code §140-§141,
    `crlbuilder.periods.kept_until`), and never before the certificate's notAfter."""
    return max(kept_until(recorded_at, days), not_after)


def _followed(kept: list[sf.MoveIn], notice: rules.MoveOutNotice) -> bool:
    """Whether the move-out notice was ended before its lapse was due by a notice the holder
    made later (`rules.ends_before_lapse`), as far as ``kept`` tells: a kept move-in notice, or
    a move-out notice one of them ended (it replaced this one). Only the latest
    `store.format.MAX_MOVE_INS` move-ins are kept (`store.format.DB_MOVE_INS`): a move-out
    record that arrives after more later moves of the holder than that is judged by those."""
    return any(
        rules.ends_before_lapse(notice, from_epoch(at))
        for m in kept
        for at in (m.notified_at, m.ended)
        if at
    )


def _keep_move_ins(b: _Batch, holder: bytes, kept: list[sf.MoveIn], made: int, ended: int) -> None:
    """Keep the move-in notice made at ``made`` (epoch seconds), which ended the move-out notice
    made at ``ended`` (0: none), with the holder's ``kept`` ones (earliest first): one entry per
    instant, the latest move-out it ended, the latest `store.format.MAX_MOVE_INS` made."""
    by_made = {m.notified_at: m.ended for m in kept}
    by_made[made] = max(by_made.get(made, 0), ended)
    now = [sf.MoveIn(at, by_made[at]) for at in sorted(by_made)][-sf.MAX_MOVE_INS :]
    if now != kept:
        b.c.put_move_ins(holder, now, due_from=keptfor.move_in_due_from(made))


def _takes(t: sf.Taken, family: Family, not_before: int) -> bool:
    """Whether the kept change or lapse ``t`` takes a ``family`` card certificate issued at
    ``not_before``: a change, one issued no later than it was recorded
    (`rules.resident_change_revokes`; a sign-card certificate issued in a 国外転出届's window is
    spared, Act §12(2)); a lapse, an auth-card one issued before it fell due, but not in its
    国外転出届's window (`rules.lapse_revokes`, Act §31(2))."""
    spared = bool(t.spared_to) and t.spared_from <= not_before <= t.spared_to
    if t.lapse_due:
        return family is Family.AUTH_CARD and not_before < t.lapse_due and not spared
    if t.at < not_before:
        return False
    if family is Family.SIGN_CARD:
        return t.sign and not spared
    return t.auth


def _taken_by(taken: Iterable[sf.Taken], family: Family, not_before: int) -> sf.Taken | None:
    """The earliest written (``taken``, earliest first) of the kept changes and lapses that
    take a ``family`` card certificate issued at ``not_before`` (`_takes`), or None: its ``at``
    is when the certificate lost effect."""
    return next((t for t in taken if _takes(t, family, not_before)), None)


def _lost_effect_by(taken: Iterable[sf.Taken], family: Family, not_before: int) -> int | None:
    """When a ``family`` card certificate issued at ``not_before`` lost effect by the kept
    changes and lapses that take it, as the double-issuance rule counts (二重発行の禁止, Act §6,
    §25): a change when it was recorded, a lapse when it fell due (Act §31(2): 30 days passed
    with no 転入届), however late the builder wrote it; or None."""
    return min((t.lapse_due or t.at for t in taken if _takes(t, family, not_before)), default=None)


def _lapse_entry(notice: rules.MoveOutNotice, written_at: int) -> sf.Taken:
    """The kept form (`store.format.Taken`) of ``notice``'s 30-day lapse (Act §31(2)) written
    at ``written_at``: it takes the auth-card certificates issued before it fell due, but not
    those issued in a 国外転出届's window (`rules.lapse_revokes`)."""
    spared = (0, 0)
    if notice.abroad:
        end = rules.end_of_day_utc(notice.planned_date)
        spared = (epoch(notice.notified_at), epoch(end))  # Act §31(2)'s window
    due = epoch(rules.move_out_lapse(notice.planned_date))
    return sf.Taken(written_at, False, True, *spared, due)


def _keep_taken_entry(b: _Batch, holder: bytes, entry: sf.Taken, *, watermark: bool = True) -> None:
    """Keep ``entry`` with the holder's kept changes and lapses (`store.format.DB_TAKEN`): the
    latest `store.format.MAX_TAKEN` changes and the latest `store.format.MAX_TAKEN` lapses
    written, earliest first. Capped apart: a lapse takes auth-card certificates only, so a
    holder's lapses must not push out an older change that took a sign-card certificate (or an
    auth-card one earlier than the lapse would date it)."""
    kept = b.c.taken(holder)
    if entry in kept:
        return
    every = sorted([*kept, entry], key=msgspec.structs.astuple)
    lapses = [t for t in every if t.lapse_due][-sf.MAX_TAKEN :]
    changes = [t for t in every if not t.lapse_due][-sf.MAX_TAKEN :]
    now = sorted([*changes, *lapses], key=msgspec.structs.astuple)
    if now != kept:
        due_from = keptfor.taken_due_from(entry) if watermark else None
        b.c.put_taken(holder, now, due_from=due_from)  # the agenda sees it (`crlbuilder.keptfor`)


def _facts_erasable_at(c: Commit, key: bytes) -> int | None:
    """When the sealed four facts under ``key`` are erased (`crlbuilder.factskept`), checked
    against the store now; None when it keeps none."""
    if c.sealed_facts(key) is None:
        return None
    st = c.status(key)
    return factskept.erasable_at(
        None if st is None else st.state, 0 if st is None else st.not_after
    )


def _notice_erasable_at(
    c: Commit, holder: bytes, pending: sf.PendingMoveOut | None, days: int
) -> int | None:
    """When the holder's move-out notice ``pending`` is erased (`crlbuilder.lapsed.erasable_at`:
    its lapse record's retention of ``days`` days, the notAfter of the holder's auth-card
    certificates its lapse takes, Ord §70(1)(iii), and for a 国外転出届 of the holder's sign-card
    certificates issued in its window, Act §12(2)); None while it is not lapsed (or there is
    none)."""
    notice = _notice(pending)
    if pending is None or notice is None or not pending.lapsed_at:
        return None
    due = rules.move_out_lapse(notice.planned_date)
    held: list[int] = []
    for key in c.holder_certs(holder, Family.AUTH_CARD):
        st = c.status(key)
        if st is not None and rules.lapse_revokes(
            notice, issued_at=from_epoch(st.not_before), as_of=due
        ):
            held.append(st.not_after)
    if notice.abroad:
        for key in c.holder_certs(holder, Family.SIGN_CARD):
            st = c.status(key)
            if st is not None and rules.issued_in_abroad_window(from_epoch(st.not_before), notice):
                held.append(st.not_after)
    return lapsed.erasable_at(pending.lapsed_at, days, held)


def _notice(p: sf.PendingMoveOut | None) -> rules.MoveOutNotice | None:
    if p is None:
        return None
    return rules.MoveOutNotice(
        notified_at=from_epoch(p.notified_at),
        planned_date=date.fromisoformat(p.planned_date),
        abroad=p.abroad,
    )


def merged_issuers(
    known: Iterable[sf.IssuerMeta], issuers: Iterable[sf.IssuerMeta]
) -> list[sf.IssuerMeta] | None:
    """The issuer table ``known`` (the store's) with ``issuers`` recorded in it, or None when
    it already says all of them; an index must keep naming the same issuer (`StoreFormatError`).
    Decides only: `register_issuers`, or the caller's own transaction, writes it."""
    before = {i.index: i for i in known}
    merged = dict(before)
    for new in issuers:
        old = before.get(new.index)
        if old is not None and old.id != new.id:
            raise sf.StoreFormatError(
                f"issuer index {new.index} is {old.id} in the store but {new.id} in the PKI manifest"
            )
        merged[new.index] = (
            msgspec.structs.replace(new, compromised_at=old.compromised_at) if old else new
        )
    ids = [i.id for i in merged.values()]
    if len(set(ids)) != len(ids):
        raise sf.StoreFormatError("one issuer id under two indexes")
    return None if merged == before else list(merged.values())


def register_issuers(store: Store, issuers: list[sf.IssuerMeta]) -> None:
    """Record the issuer table in the store (`merged_issuers`); nothing written when it is."""
    with store.read() as r:
        table = merged_issuers(r.issuers(), issuers)
    if table is None:
        return
    with Commit(store) as c:
        c.put_issuers(table)


def _kept_first_due(
    c: Commit, retention: Callable[[Family, Category], int], horizon: int
) -> Iterator[tuple[bytes, int]]:
    """(holder, earliest instant) of each holder whose kept changes, lapses (``taken``) or
    move-ins (``moveins``) may fall due for erasure before ``horizon`` (`crlbuilder.keptfor`):
    the erasure scan's. An entry whose instant is surely past the horizon is passed over before
    its instant is counted (most)."""
    unseen = horizon - keptfor.VALIDITY_AT_LEAST
    for holder, taken in c.taken_kept():
        ats = [
            keptfor.taken_erasable_at(t, retention) for t in taken if (t.lapse_due or t.at) < unseen
        ]
        if ats:
            yield holder, min(ats)
    for holder, move_ins in c.move_ins_kept():
        ats = [
            keptfor.move_in_erasable_at(m, retention) for m in move_ins if m.notified_at < unseen
        ]
        if ats:
            yield holder, min(ats)


def _consent_by_latest(c: Commit, holder: bytes, verifier: str, at: int, *, granted: bool) -> bool:
    """Rules 9: the holder's grant (``granted``) or withdrawal of consent to ``verifier``,
    recorded at ``at``, decided by the latest recordedAt kept, grant or withdrawal, a withdrawal
    winning a tie (`crlbuilder.consentkept`): a grant no later than the withdrawal kept grants
    nothing, one older than the consent kept leaves its time; a withdrawal older than the consent
    kept withdraws nothing, and one that ends it is kept in its place (a tombstone), unless it is
    older than the grants' bound (`Commit.granted_before`: every grant it could outrank is
    refused as read too late). Returns whether what an answer reads changed (the consent)."""
    kept = c.consent(holder, verifier)
    withdrawn = c.withdrawal(holder, verifier)
    if granted:
        if (withdrawn is not None and withdrawn >= at) or (kept is not None and kept >= at):
            return False  # the holder's later word stands
        if withdrawn is not None:
            c.delete_withdrawal(holder, verifier)  # outranked: this grant is the later word
        c.put_consent(holder, verifier, at)
        return True
    if kept is not None and kept > at:
        return False  # granted again after it
    if at >= c.granted_before() and (withdrawn is None or withdrawn < at):
        c.put_withdrawal(holder, verifier, at)
    return kept is not None and c.delete_consent(holder, verifier)


def _sign_ends(c: Commit, holder: bytes) -> list[int]:
    """The notAfter of each of the holder's sign certificates (card and mobile)."""
    ends: list[int] = []
    for family in consentkept.SIGN_FAMILIES:
        for key in c.holder_certs(holder, family):
            st = c.status(key)
            if st is not None:
                ends.append(st.not_after)
    return ends


_LISTED_BEFORE_RULES9: Final = tuple(
    x for x in retention_agenda.LISTED if x != retention_agenda.CONSENTS
)
"""What an erasure on the record stream lists before the stream's first message of release 1.9
(no consents): its agenda's digest, another than the one after, so that the first erasure after
that message scans again and lists the consents."""


def _consents_first_due(
    c: Commit, days: int, horizon: int, listed: bool = True
) -> Iterator[tuple[bytes, int]]:
    """(holder, earliest instant) of each holder whose earliest consent or withdrawal kept may
    fall due for erasure before ``horizon`` (`crlbuilder.consentkept`); the erasure scan's (none
    unless ``listed``: on the record stream before rules 9). One falls due no earlier than the
    longest sign period from when it was recorded, whatever the certificates
    (`consentkept.erasable_at` only grows with them): a holder whose earliest is younger than
    that at the horizon is passed over without reading its certificates, which is every holder
    for the period's first ten years (the scan's cost, bench/bench_consent_scan.py)."""
    if not listed:
        return
    earliest_of = ((h, min(at for _, at in kept)) for h, kept in c.consents_kept())
    withdrawn_of = ((h, min(at for _, at in kept)) for h, kept in c.withdrawals_kept())
    both = heapq.merge(earliest_of, withdrawn_of, key=lambda e: e[0])  # both in holder order
    for holder, group in itertools.groupby(both, key=lambda e: e[0]):
        earliest = min(at for _, at in group)
        if consentkept.erasable_at(earliest, (), days) >= horizon:
            continue
        yield holder, consentkept.erasable_at(earliest, _sign_ends(c, holder), days)


def _erase_consents(c: Commit, holder: bytes, now: int, days: int) -> tuple[int, int, int | None]:
    """Erase the holder's consents and withdrawals kept whose instant has come by ``now``
    (`crlbuilder.consentkept`), checked against the store now; returns how many of each went and
    the earliest instant of those left (None: none left)."""
    consents = c.consents_of(holder)
    withdrawals = c.withdrawals_of(holder)
    if not consents and not withdrawals:
        return 0, 0, None
    ends = _sign_ends(c, holder)
    gone = gone_withdrawals = 0
    left: list[int] = []
    for verifier, recorded_at in consents:
        at = consentkept.erasable_at(recorded_at, ends, days)
        if at <= now:
            c.delete_consent(holder, verifier)  # what an answer reads: the commit moves
            gone += 1
        else:
            left.append(at)
    for verifier, recorded_at in withdrawals:
        at = consentkept.erasable_at(recorded_at, ends, days)
        if at <= now:
            c.delete_withdrawal(holder, verifier)  # builder state: no commit of its own
            gone_withdrawals += 1
        else:
            left.append(at)
    return gone, gone_withdrawals, min(left, default=None)


def _erase_kept(
    c: Commit, holder: bytes, now: int, retention: Callable[[Family, Category], int]
) -> tuple[int, int, int | None]:
    """Erase the holder's kept changes, lapses and move-ins whose instant has come by ``now``
    (`crlbuilder.keptfor`); returns how many of each went, and the earliest instant of those
    left (None: none left)."""
    gone_taken, later_taken = _erase_due(
        c.taken(holder),
        lambda t: keptfor.taken_erasable_at(t, retention),
        now,
        lambda kept: c.put_taken(holder, kept),
        lambda: c.delete_taken(holder),
    )
    gone_move_ins, later_move_ins = _erase_due(
        c.move_ins(holder),
        lambda m: keptfor.move_in_erasable_at(m, retention),
        now,
        lambda kept: c.put_move_ins(holder, kept),
        lambda: c.delete_move_ins(holder),
    )
    return gone_taken, gone_move_ins, min(later_taken + later_move_ins, default=None)


_E = TypeVar("_E")


def _erase_due(
    entries: list[_E],
    erasable_at: Callable[[_E], int],
    now: int,
    put: Callable[[list[_E]], None],
    delete: Callable[[], None],
) -> tuple[int, list[int]]:
    """Of one holder's ``entries``, keep those not erasable by ``now`` (``put`` them, or
    ``delete`` the holder's row when none is left; nothing written when none is due);
    returns how many went and the instants of those kept."""
    timed = [(erasable_at(e), e) for e in entries]
    kept = [e for at, e in timed if at > now]
    if len(kept) != len(entries):
        if kept:
            put(kept)
        else:
            delete()
    return len(entries) - len(kept), [at for at, _ in timed if at > now]
