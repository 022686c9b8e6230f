"""POST /v1/watch and GET /v1/changes: the changes feed, 現況確認 at scale (Act §18(1), §37(1)).

A bank that re-checks its whole customer base each morning should read only what
changed. The party registers the certificates it has verified (its watch list, up
to ``[watch] max_per_party``, 10,000,000 by default), in batches of at most
`MAX_BATCH` additions and removals (``POST /v1/watch``), then reads ``GET
/v1/changes?cursor=…&limit=…``: exactly the watched certificates that lost effect
(失効) after the cursor, each with its revocation time, RFC 5280 reason, legal category
(失効事由) and the article defining it for the certificate's family, as the batch
status answers them (`responder.v1.status`), and the next cursor.

Every loss of effect by a record is a change: a revocation request or report, a resident
record change (including the 30-day lapse, Act §31(2)), a recording error, an issuing-key
compromise and the cascade to mobile certificates (Act §16-13, §35-13), or a listing on
the 機構's CRL for a group appliance. Expiry (有効期間の満了, Act §15(1)(5) ...) writes no
record and is no change: the certificate's notAfter says it. A change whose record passed its
retention and was erased without its time (Ord §70(1)(iii), ``crl.erased_answer`` ``unknown``)
is no longer delivered, nor counted: the Act provides records within their retention only
(保存期間に係る, Act §18(1), §37(1)), and the feed's own keeping (``store.changes_keep_days``)
may outlast a retention period.

How it works: crlbuilder appends every loss of effect to the store's changes feed in
the revoking transaction (`crlbuilder.store.format.DB_CHANGES`: commit ‖ status key);
a read walks the feed from the cursor (`responder.v1.cursor`), keeps the entries of
the families the party may receive, asks the party's watch list which of them it
watches (`responder.v1.watchset.WatchSet`, one probe per entry, in chunks) and reads
the status record of each hit. The watch list is the responder's own state
(`responder.v1.watchdb`), keyed hashes only, kept across restarts and store rebuilds.

- Services: ``sign-revocation-info`` (sign families, Act §18(1)) and
  ``auth-revocation-info`` (auth families, Act §37(1)), method ``json``. A certificate
  of a family the party may not receive is refused per entry at registration (rule and
  article, nothing added); a change of such a family (the agreement changed since) is
  not delivered. While the party may not receive a family its agreement covers (a
  suspension, 提供の停止, Act §18(6), §37(4); a title not in force), the changes of that
  family are passed over, and every answer says so (``passedOver``: family, rule,
  article): they are not delivered later, so once the family may be received again the
  party re-reads the status of its watched certificates of that family (``POST
  /v1/status``) and goes on with the cursor.
- Ledger (帳簿, Act §40; 件数, Ord §71(4)): one provision (提供) per change delivered to the
  party **the first time**, counted under its family's service, method ``json`` (the
  unit a fee per provision would use, Act §67). A change delivered again (a read from an
  older cursor: a retry, a party that lost an answer; a fresh cursor that stands behind
  the node's position over changes this node delivered, below) is delivered and
  not counted again (`responder.v1.provision`): the cursor carries how far the party's changes
  were counted, and each node keeps that mark for the party too, so a retry with an older
  cursor on the same node, or two reads at once, count once; a mark is of the watch list
  as it was (an entry added since: not read, what is delivered again counted again); this
  node's mark moves in the same step as the ledger counts, as the answer is written (its
  day's provisions taken when it was made, `Reply.provide`, `Delivery`): an answer
  refused, abandoned, dropped before its turn on a connection gone, or lost with its
  worker moved nothing; of two reads made at once the one written first counts.
  Registering says nothing about any status and is not a provision; a read that delivers
  nothing provides nothing. Both count against the agreed quotas.
- Cursor: opaque, and bound to the party: an HMAC (keyed from the service's watch
  secret, ``[watch] secret_file``) over the party's id, the position and the counted
  mark. A cursor altered, or sent by another party than the one it was issued to, is 400
  ``bad_input`` naming ``$.cursor``, nothing counted. A cursor issued before cursors were
  bound carries no mark and is read (everything delivered after it is counted unless
  this node counted it already) and answered with a bound one, until the operator turns
  ``[watch] unbound_cursors`` off: then it is 410 ``cursor_expired``.
  ``GET /v1/changes`` without one answers no change and the cursor of
  the store's current commit. A cursor of another store or of a store rebuilt from the
  records, or older than the feed's retention (crlbuilder's ``store.changes_keep_days``),
  is refused 410 (``cursor_expired``); one ahead of the store (restored from an older
  copy), or past commits the restored store has made again since, 409 (``cursor_ahead``):
  a cursor of a node's own store, and the node's mark, carry an anchor of the commits they
  passed (`responder.v1.cursor.Anchor`), and a mark whose anchor the store no longer holds
  is not read (what it covered is counted again). The way back is the same: take a fresh
  cursor (no cursor), re-read the status of the whole list with ``POST /v1/status``, then
  read the changes from that cursor (changes between the two are delivered again, not
  lost).
- A service of several nodes (``[cluster] nats``) serves the feed on every node: a party
  registers through any node and reads through any other. The watch lists are one log of
  operations on the ``JPKI_WATCH`` stream (`responder.v1.watchlog`: keyed digests only,
  every node needs the same ``[watch] secret_file``), applied in stream order by every
  node: ``POST /v1/watch`` answers once its own node applied the batch, with what it did
  there (409 ``watch_full`` decided the same everywhere; a 503 once the batch was sent
  does not say whether it was registered: sending it again is safe, the list ends the same
  and what it added is answered as ``already``); ``GET /v1/changes`` first
  applies every batch registered anywhere before it, for at most ``[watch]
  replication_wait_seconds``, past which (or when the stream cannot be reached) it
  answers 503 with Retry-After, nothing counted; after a failed try the stream is held
  down (`responder.v1.holddown`): the calls answer 503 at once, Retry-After the time left. A store filled from the record stream
  issues cursors that name stream positions (`responder.v1.feedpos`), read alike on every
  node although each numbers its commits alone (``commit`` in a change is the answering
  node's); where two nodes cut a batch differently (one a builder cut by time, its
  publisher gone) a read may deliver some changes again, never pass one (those its
  cursor's mark cannot place are counted again). A node behind the cursor answers no
  change and the same position; a fresh cursor stands ``[cluster] max_lag`` records
  before the node's position, so that ``POST /v1/status`` read next on any ready node is
  not older than it (the changes in between come again, and are counted unless this node
  counted them for the party before: the cursor's mark is its position). Changes delivered are counted on the node that delivers them (its
  ledger is shipped).
- A read stops at ``limit`` changes or after ``[watch] scan_limit`` feed entries
  (a CA-key compromise revokes millions at once); ``more`` is then true and the cursor
  says where to go on. Every read is made in the worker's batch thread, on one node too
  (`_reads`): a party's reads wait in its own fair share there (429 ``fair_share`` past
  it), never on the event loop that serves OCSP. For a party whose agreement bounds its provisions per day
  (``provisions_per_day``, 件数), a read also stops at what remains of them today
  (`responder.v1.route.Context.provisions_left`), ``more`` true and the cursor after the
  last change delivered; with none left the read is 429 (the dispatcher), and the party
  goes on from its cursor once the Japan day turns.

Bad input (400, nothing counted, the watch list unchanged): malformed JSON, unknown
fields, no entry or more than `MAX_BATCH` in one call, an entry with both or neither
form, a serial over 20 octets, an issuer we do not serve, a certificate that does not
parse; a cursor this service did not issue to this party (malformed, altered, another
party's, or, of those issued before cursors were bound, a field no cursor of ours holds
or a change the kept feed never recorded), named ``$.cursor``: pass back the cursor of
your own last answer unchanged. A batch that would take the list past its
bound: 409 ``watch_full``, nothing changed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Generic, Literal, TypeVar

import msgspec

from crlbuilder.model import Category, Family, Reason
from crlbuilder.natsservers import parse_servers
from crlbuilder.store import format as sf
from crlbuilder.store.reader import ChangeEntry, StoreReader
from responder import policy
from responder.config import ResponderConfig, WatchConfig
from responder.registry.vocabulary import Service
from responder.v1 import cursor as cursors
from responder.v1 import feedpos, problem, provision, watchlog, watchstream
from responder.v1.certref import IssuerIndex, from_certificate
from responder.v1.route import Context, Count, Counts, Delivery, Link, Provide, Reply, Route
from responder.v1.status import REASON_NAMES
from responder.v1.watchdb import LmdbWatchSet, WatchDbError
from responder.v1.watchset import (
    GEN_BYTES,
    SecretError,
    WatchFull,
    WatchKeys,
    WatchSet,
    WatchUnavailable,
    WatchUpdate,
    load_secret,
)
from responder.v1.watchstream import StreamUnavailable, WatchStream
from responder.v1.wire import CertRef, Problem, StoreRef, first_bad_serial

MAX_BATCH: Final = 10_000
"""Additions plus removals per ``POST /v1/watch``."""
MAX_LIMIT: Final = 10_000
"""Most changes one ``GET /v1/changes`` delivers."""
DEFAULT_LIMIT: Final = 1_000
PROBE_CHUNK: Final = 1_024
"""Feed entries asked about in one `WatchSet.watched` call."""

_SERIAL_END: Final = 1 << (8 * sf.SERIAL_BYTES)
P = TypeVar("P", cursors.Position, cursors.StreamPosition)
_log: Final = logging.getLogger("responder.v1.changes")

RULE_WATCH_FULL: Final = "watch_full"
RULE_CURSOR_EXPIRED: Final = "cursor_expired"
RULE_CURSOR_AHEAD: Final = "cursor_ahead"
_RESYNC: Final = (
    "take a fresh cursor (GET /v1/changes without one), re-read the status of every "
    "watched certificate with POST /v1/status, then read the changes from that cursor"
)
_NOT_ISSUED: Final = (
    "the query parameter cursor was not issued by this service (malformed or altered): "
    "pass back the cursor of an answer unchanged, or none for the current one"
)
_NOT_YOURS: Final = (
    "the query parameter cursor was not issued to this party by this service, or was altered "
    "since: pass back the cursor of your own last answer unchanged, or none for the current one"
)
_CURSOR_PROBLEMS: Final = {
    cursors.Verdict.MALFORMED: problem.bad_input("$.cursor", _NOT_ISSUED),
    cursors.Verdict.NEVER_RECORDED: problem.bad_input(
        "$.cursor", f"{_NOT_ISSUED} (it names a change this store never recorded)"
    ),
    cursors.Verdict.NOT_GENUINE: problem.bad_input("$.cursor", _NOT_YOURS),
    cursors.Verdict.OTHER_STORE: problem.make(
        410, RULE_CURSOR_EXPIRED,
        f"the cursor is of another store, or of this one before it was rebuilt: {_RESYNC}",
        field="$.cursor",
    ),
    cursors.Verdict.EXPIRED: problem.make(
        410, RULE_CURSOR_EXPIRED,
        f"the cursor is older than the changes kept (the feed's retention): {_RESYNC}",
        field="$.cursor",
    ),
    cursors.Verdict.AHEAD: problem.make(
        409, RULE_CURSOR_AHEAD,
        f"the cursor is ahead of this store, or past commits it has made again since "
        f"(restored from an older copy?): {_RESYNC}",
        field="$.cursor",
    ),
}  # fmt: skip
_UNBOUND: Final = problem.make(
    410, RULE_CURSOR_EXPIRED,
    f"the cursor was issued before cursors were bound to their party, and is no longer read "
    f"here: {_RESYNC}",
    field="$.cursor",
)  # fmt: skip
_UNAVAILABLE: Final = problem.make(
    503, problem.UNAVAILABLE, "the watch lists cannot be read or written now; retry"
)


# --- wire -----------------------------------------------------------------------------


class WatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Certificates to start and stop watching: removals are applied first, all or nothing."""

    add: Annotated[list[CertRef], msgspec.Meta(max_length=MAX_BATCH)] = []
    remove: Annotated[list[CertRef], msgspec.Meta(max_length=MAX_BATCH)] = []


class WatchRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """One ``add`` entry not added: the party may not receive its family (per entry)."""

    index: int
    """Its position in ``add``."""
    rule: str
    article: str


class WatchResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the batch did to the party's list; nothing about any certificate's status."""

    added: int
    already: int
    """Asked to add, already watched."""
    removed: int
    absent: int
    """Asked to remove, not watched."""
    watching: int
    """Certificates on the party's list now."""
    refused: list[WatchRefusal]


class ChangesQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where to read from and how much."""

    cursor: Annotated[str, msgspec.Meta(max_length=cursors.MAX_CURSOR_CHARS)] = ""
    """The cursor of the last answer; empty: the current position, no change."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One watched certificate that lost effect after the cursor, and its status now."""

    issuer: str
    serial: str
    """Hexadecimal, as the request named it (`responder.v1.wire.CertRef`)."""
    commit: int
    """The store commit that recorded the loss of effect."""
    committed_at: datetime | None
    status: Literal["revoked", "unknown", "good"]
    """``revoked`` (without reason or category once the record passed its retention and was
    erased with its time kept, ``crl.erased_answer = "revoked"``; erased without it, the
    change is no longer delivered, Ord §70(1)(iii)); ``good`` on a group appliance whose newer
    CRL no longer lists it; ``unknown`` when the store no longer holds the certificate."""
    family: Family
    revoked_at: datetime | None = None
    reason: str | None = None
    category: Category | None = None
    article: str | None = None


class PassedOver(msgspec.Struct, frozen=True, kw_only=True):
    """A family the agreement covers whose changes this read passed over without delivering
    them: the party may not receive it now (a suspension, 提供の停止, or a title not in
    force). A change passed over is not delivered later: once the party may receive the
    family again, it re-reads the status of its watched certificates of that family
    (``POST /v1/status``)."""

    family: str
    rule: str
    article: str


class ChangesResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The changes after the cursor, in the order they were recorded, and the next cursor."""

    store: StoreRef
    produced_at: datetime
    changes: list[Change]
    cursor: str
    """Read from here next time."""
    more: bool
    """True when the read stopped at ``limit`` or at the scan bound: read again now."""
    passed_over: list[PassedOver]
    """The families the party may not receive now, whose changes in this read's range (if
    any) were passed over (`PassedOver`); empty when it may receive every family of its
    agreement."""


# --- per worker -----------------------------------------------------------------------


@dataclass
class WatchEnv:
    """What the two routes share in a worker: the watch lists (opened on first use) and the
    issuer names for certificates given whole."""

    config: WatchConfig
    lists_dir: Path
    secret_path: Path
    index: IssuerIndex = field(default_factory=IssuerIndex)
    watchset: WatchSet | None = None
    fresh_lag: int = 0
    """Stream records a fresh cursor stands before this node's position (``[cluster]
    max_lag``: `handle_changes` on a store fed by the record stream)."""
    stream: WatchStream | None = None
    """A node of several (``[cluster] nats``): the watch stream every node applies to its
    lists (`responder.v1.watchlog`); None on one node, whose lists are written directly."""
    keys: WatchKeys | None = None
    wall_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    """The clock whose time (milliseconds since the epoch) a watch operation carries when it
    is published (`watchlog.replayed`: compared with the NATS server's)."""
    on_unbound: Callable[[str, bool], None] = field(default=lambda _party, _accepted: None)
    """Told of each cursor issued before cursors were bound (the party's registry id, and
    whether it was read: ``[watch] unbound_cursors``): the worker's metrics
    (``jpkiva_changes_unbound_cursors_total``), from the batch thread too; nothing by default."""
    _cursor_key: bytes | None = field(default=None, repr=False)
    _opening: threading.Lock = field(default_factory=threading.Lock)
    _unavailable: str | None = None
    """Why the lists could not be opened at the last try, as logged (None: opened, or not
    tried): the same cause is logged once, not at each call and each /readyz probe."""

    def lists(self) -> WatchSet | None:
        """The watch lists, opened on first use; None (logged, no secret) when they cannot."""
        with self._opening:  # the batch thread and a metrics scrape: one open per process
            if self.watchset is None:
                # a node of several does not draw a secret of its own: every node needs the
                # service's (its digests travel on the watch stream)
                several = self.stream is not None
                secret_read = False
                try:
                    self.keys = WatchKeys(load_secret(self.secret_path, create=not several))
                    secret_read = True
                    self.watchset = LmdbWatchSet(
                        self.lists_dir, self.keys, map_size=self.config.map_size_gib << 30
                    )
                except (SecretError, WatchDbError, OSError) as e:
                    hint = (  # only where the secret is what failed, not the lists' disk
                        " (a node of several: install the service's [watch] secret_file, the "
                        "same on every node)" if several and not secret_read else ""
                    )  # fmt: skip
                    why = f"{e}{hint}"
                    if why != self._unavailable:  # once per cause: /readyz asks every second
                        _log.error("watch lists unavailable: %s", why)
                        self._unavailable = why
                    return None
                self._unavailable = None
            return self.watchset

    def cursor_key(self) -> bytes | None:
        """The key that binds the cursors to their party (`WatchKeys.cursor_key`, from the
        watch secret every node has); None (logged) when the secret cannot be read."""
        if self.lists() is None:  # they read the secret
            return None
        with self._opening:
            if self.keys is None:  # lists given whole (a `MemoryWatchSet` in tests)
                try:
                    self.keys = WatchKeys(load_secret(self.secret_path, create=self.stream is None))
                except (SecretError, OSError) as e:
                    _log.error("watch secret unavailable: %s", e)
                    return None
            if self._cursor_key is None:
                self._cursor_key = self.keys.cursor_key()
            return self._cursor_key

    def not_replicating(self) -> str | None:
        """Why this node's lists do not follow the watch stream, for good (``[watch]
        ready_requires_replication``): they cannot be opened, or they stopped applying it
        (`LmdbWatchSet.replication`'s note: another secret, a gap, the stream made again);
        None when they follow it, however far behind."""
        lists = self.lists()
        if lists is None:
            return "watch lists unavailable (the log says why)"
        if not isinstance(lists, LmdbWatchSet):  # one node: no replication
            return None
        broken = lists.replication()[3]
        return f"watch lists not replicated: {broken}" if broken else None


def _reads(_env: WatchEnv) -> bool:
    """`Route.blocking` of ``GET /v1/changes``: every read, on one node too, is made in the
    batch thread. On several nodes it waits on the watch stream; on every node it walks up to
    ``[watch] scan_limit`` feed entries (50,000 by default: a mass revocation), probing the
    list for each and reading the status of up to 10,000 hits, which held the event loop
    ~0.7 s per read (bench_v1_changes): a party reading page after page kept OCSP and every
    other connection of the worker waiting. In the batch thread a party's reads queue in its
    own fair share (429 ``fair_share`` past it); the count and the counted mark stay on the
    loop, as the answer is written (`Delivery`)."""
    return True


def _writes(_env: WatchEnv) -> bool:
    """`Route.blocking` of ``POST /v1/watch``: every call, on one node too, is answered in the
    batch thread. A batch of 10,000 resolves, hides and writes each entry (~95 ms): on the
    event loop it held up every other connection of the worker, OCSP too; and even a small
    call takes the lists' write lock, which a batch of this worker's batch thread or of
    another worker may hold that long (the loop would wait for it). `WatchEnv` opens the
    lists under a lock, and LMDB serialises the writes of threads and processes alike."""
    return True


def _retry_after(env: WatchEnv) -> int | None:
    """`Route.retry_after`: while the watch stream is held down after a failure, the seconds
    until the next try (`responder.v1.holddown`), so that a party does not come back sooner
    only to be refused again."""
    return env.stream.retry_after() if env.stream is not None else None


_ENVS: Final[dict[Path, WatchEnv]] = {}
"""One `WatchEnv` per watch directory in a process: both routes share it (LMDB allows one
open of an environment per process)."""


def setup(config: ResponderConfig) -> WatchEnv:
    w = config.watch
    where = w.lists_dir(config.ledger).absolute()
    nats = config.cluster.nats
    auth = config.cluster.nats_auth()
    lag = config.cluster.max_lag if nats else 0
    env = _ENVS.get(where)
    if (
        env is None
        or env.config != w
        or env.fresh_lag != lag
        or (env.stream.servers if env.stream else []) != (parse_servers(nats) if nats else [])
        or (env.stream.auth if env.stream else None) != (auth if nats else None)  # rotated
    ):
        stream = WatchStream(nats, timeout=w.replication_wait_seconds, auth=auth) if nats else None
        env = _ENVS[where] = WatchEnv(
            w, where, w.secret_path(config.ledger), fresh_lag=lag, stream=stream
        )
    return env


# --- helpers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Issuer:
    id: str
    family: Family
    service: Service
    refusal: policy.Refused | None


def _issuers(reader: StoreReader, ctx: Context) -> dict[int, _Issuer]:
    out: dict[int, _Issuer] = {}
    for meta in reader.issuers():
        if not meta.family.is_jpki:  # the token issuer (Act §38-3): no 失効情報 to watch
            continue
        service = policy.service_for_ocsp(meta.family)
        out[meta.index] = _Issuer(meta.id, meta.family, service, ctx.permit(service, meta.family))
    return out


_AGREEMENT_RULES: Final = frozenset(
    {
        policy.Rule.UNAUTHORIZED_SERVICE,
        policy.Rule.UNAUTHORIZED_FAMILY,
        policy.Rule.UNAUTHORIZED_METHOD,
    }
)
"""Refusals by what the agreement covers: a family the party never receives is not passed
over, it is not the party's."""


def _passed_over(issuers: dict[int, _Issuer]) -> list[PassedOver]:
    """The families the party's agreement covers and it may not receive now, one each."""
    out: dict[Family, PassedOver] = {}
    for i in issuers.values():
        r = i.refusal
        if r is not None and _passed(i) and i.family not in out:
            out[i.family] = PassedOver(family=i.family.value, rule=r.rule.value, article=r.article)
    return [out[f] for f in sorted(out, key=list(Family).index)]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class _Receivable:
    """The party's watch list as a read sees it, with what the party may receive now
    folded into its generation (`WatchSet.generation`, which a counted mark carries).

    A counted mark (`responder.v1.provision`) covers the changes of the certificates the
    party watched, up to it: a read moves it past the changes it delivers, and so past the
    changes of a family it passed over (a suspension, 提供の停止, Act §18(6), §37(4); a
    title not in force) that lie before them, which were never delivered. Read again once
    the family may be received, from an older cursor the party kept, such a change is
    delivered for the first time and must be counted (帳簿, Act §40; 件数, Ord §71(4)): so a
    mark made while some families were withheld is of another generation than one made
    while none (or others) were, and is not read then (what it covered is delivered again and
    counted again: an over-count, the side the feed accepts). The same holds for a family the
    agreement (取決め) left out for a while and took in again (an amendment), or that no title
    of the party received for a while (a notification withdrawn, made again): every family
    refused now is withheld, though only those the agreement covers are said to be passed over
    in the answers. With nothing withheld the generation is the list's own."""

    lists: WatchSet
    withheld: bytes
    """The families the party may not receive now, by code (empty: none)."""

    def _gen(self, gen: bytes) -> bytes:
        if not self.withheld:
            return gen
        h = hashlib.blake2b(gen + self.withheld, digest_size=GEN_BYTES, person=b"jpkiva-withheld")
        return h.digest()

    def watched(self, party: str, keys: Sequence[bytes]) -> list[bool]:
        return self.lists.watched(party, keys)

    def update(
        self, party: str, add: Sequence[bytes], remove: Sequence[bytes], *, limit: int
    ) -> WatchUpdate:
        return self.lists.update(party, add, remove, limit=limit)

    def generation(self, party: str) -> bytes:
        return self._gen(self.lists.generation(party))

    def mark(self, party: str) -> bytes | None:
        return self.lists.mark(party)

    def count_once(self, party: str, decide: Callable[[bytes | None, bytes], bytes | None]) -> None:
        self.lists.count_once(party, lambda stored, gen: decide(stored, self._gen(gen)))


def _receivable(lists: WatchSet, issuers: dict[int, _Issuer]) -> _Receivable:
    """``lists`` as a read for a party whose issuers are ``issuers`` sees them."""
    withheld = sorted({i.family.code for i in issuers.values() if i.refusal is not None})
    return _Receivable(lists, bytes(withheld))


def _passed(issuer: _Issuer) -> bool:
    """Are the changes of ``issuer`` passed over now (the agreement covers its family, the
    party may not receive it now: `_passed_over`)?"""
    r = issuer.refusal
    return r is not None and r.rule not in _AGREEMENT_RULES


def _resolve(
    refs: list[CertRef], where: str, by_id: dict[str, int], env: WatchEnv, reader: StoreReader
) -> list[bytes] | Problem:
    """The status key of each reference, or the 400 naming the first bad one."""
    bad = first_bad_serial(refs)
    if bad is not None:
        return problem.bad_input(f"$.{where}[{bad}].serial", "a serial is 1 to 40 hex digits")
    keys: list[bytes] = []
    for i, ref in enumerate(refs):
        at = f"$.{where}[{i}]"
        if ref.form() is None:
            return problem.bad_input(
                at, "name a certificate by issuer and serial, or by certificate"
            )
        if ref.certificate is None:
            assert ref.issuer is not None and ref.serial is not None
            issuer_id, serial = ref.issuer, int(ref.serial, 16)  # hex digits only (above)
            field_name = "issuer"
        else:
            got = from_certificate(ref, at, env.index, reader)
            if isinstance(got, Problem):
                return got
            issuer_id, serial = got
            field_name = "certificate"
        index = by_id.get(issuer_id)
        if index is None:
            return problem.bad_input(f"{at}.{field_name}", "not an issuer served here")
        if not 0 <= serial < _SERIAL_END:
            return problem.bad_input(f"{at}.{field_name}", "a serial of at most 20 octets")
        keys.append(sf.status_key(index, serial))
    return keys


# --- POST /v1/watch ---------------------------------------------------------------------


def handle_watch(request: WatchRequest, ctx: Context) -> Reply[WatchResponse] | Problem:
    """Apply one batch to the party's watch list (module docstring). Counts nothing."""
    env = ctx.env
    assert isinstance(env, WatchEnv)
    n = len(request.add) + len(request.remove)
    if n == 0 or n > MAX_BATCH:
        return problem.bad_input("$", f"give 1 to {MAX_BATCH} entries in add and remove together")
    reader = ctx.reader
    issuers = _issuers(reader, ctx)
    by_id = {i.id: index for index, i in issuers.items()}
    add = _resolve(request.add, "add", by_id, env, reader)
    if isinstance(add, Problem):
        return add
    remove = _resolve(request.remove, "remove", by_id, env, reader)
    if isinstance(remove, Problem):
        return remove
    refused: list[WatchRefusal] = []
    allowed: list[bytes] = []
    for i, key in enumerate(add):
        refusal = issuers[sf.split_status_key(key)[0]].refusal
        if refusal is not None:
            refused.append(WatchRefusal(index=i, rule=refusal.rule.value, article=refusal.article))
        else:
            allowed.append(key)
    lists = env.lists()
    if lists is None:
        return _UNAVAILABLE
    adding, removing = list(dict.fromkeys(allowed)), list(dict.fromkeys(remove))
    if env.stream is not None:
        return _watch_replicated(env, lists, ctx.party.id, adding, removing, refused)
    try:
        done = lists.update(
            ctx.party.id,
            adding,
            removing,
            limit=env.config.max_per_party,
        )
    except WatchFull as e:
        return _watch_full(e.limit)
    except WatchUnavailable:
        return _UNAVAILABLE
    return _watched(done.added, done.removed, done.total, len(allowed), len(remove), refused)


def _watch_full(limit: int) -> Problem:
    return problem.make(
        409, RULE_WATCH_FULL,
        f"the watch list would exceed {limit} certificates; nothing was changed",
        field="$.add",
    )  # fmt: skip


def _watch_replicated(
    env: WatchEnv,
    lists: WatchSet,
    party: str,
    add: list[bytes],
    remove: list[bytes],
    refused: list[WatchRefusal],
) -> Reply[WatchResponse] | Problem:
    """A node of several: the batch as one operation of the watch stream, answered once this
    node's lists applied it, with what it did there (the same on every node).

    The lists first apply what the stream holds: a node whose secret is not the one of the
    operations there (or whose replication stopped) publishes nothing, since every other
    node would stop at an operation made with another secret, for good."""
    assert env.stream is not None and env.keys is not None
    if not isinstance(lists, LmdbWatchSet):
        return _UNAVAILABLE
    refusal = _caught_up(env, lists, None)
    if refusal is not None:
        return refusal
    keys = env.keys
    tag = keys.tag(party)
    op = watchlog.make_op(
        keys.check(), env.config.max_per_party, keys.entries(tag, remove),
        keys.entries(tag, add), tag,
    )  # fmt: skip
    # from here a 503 cannot say whether the batch was registered (`_UNCONFIRMED`)
    try:
        at_ms = env.wall_ms()
        seq = env.stream.publish(watchlog.encode(op._replace(at_ms=at_ms), keys.op_mac))
    except StreamUnavailable as e:  # perhaps stored, its acknowledgement lost
        _unreached("watch batch not confirmed", e)
        return _UNCONFIRMED
    if _caught_up(env, lists, seq) is not None:  # on the stream: every node applies it
        return _UNCONFIRMED
    outcome = lists.outcome(seq)
    if outcome is None:  # passed over, or applied and its outcome dropped (a list moved on)
        return _clock_off(env.stream, seq, at_ms) or _UNCONFIRMED
    if outcome.full:
        return _watch_full(outcome.limit)
    return _watched(outcome.added, outcome.removed, outcome.total, len(add), len(remove), refused)


_NO_FEED: Final = problem.make(
    503, problem.UNAVAILABLE,
    "this node's store does not name the record stream it is filled from yet (its builder "
    "names it when it starts): its cursors would not be read by the other nodes; retry",
)  # fmt: skip
_STREAM_UNAVAILABLE: Final = problem.make(
    503, problem.UNAVAILABLE,
    "the watch lists of the service's nodes cannot be reached now; retry (a batch sent again "
    "changes nothing more: what it added counts as already)",
)  # fmt: skip
_UNCONFIRMED: Final = problem.make(
    503, problem.UNAVAILABLE,
    "this node could not confirm the batch: it may have been registered (then every node "
    "applies it) or not; sending the same batch again is safe: the list ends the same, each "
    "certificate counts once against the bound, and what the first one added is answered as "
    "already; retry",
)  # fmt: skip
"""A 503 of ``POST /v1/watch`` after the batch was sent to the watch stream. A batch applied
twice leaves the list as once (removals then additions of the same digests), so the party's
retry is safe; registering counts nothing in the ledger, either time."""
_BEHIND: Final = problem.make(
    503, problem.UNAVAILABLE,
    "this node is still applying the watch lists registered through the others; retry",
)  # fmt: skip


def _clock_off(stream: WatchStream, seq: int, at_ms: int) -> Problem | None:
    """The 503 of a batch that every node passed over because this node's clock is more than
    `watchlog.REPLAY_WINDOW` from the NATS server's (the time it carries against the one the
    server stored it at: `watchlog.replayed`); None when it was not that (or is not known)."""
    try:
        stored = stream.fetch(seq)
    except StreamUnavailable:
        return None
    if stored is None or watchlog.replayed(at_ms, stored.stamped_ms) is None:
        return None
    off = (stored.stamped_ms - at_ms) / 1000
    _log.error(
        "watch batch passed over by every node: this node's clock is %+.0f s from the NATS "
        "server's (more than %d s): synchronise it (NTP)", off, watchlog.REPLAY_WINDOW,
    )  # fmt: skip
    return problem.make(
        503, problem.UNAVAILABLE,
        f"this node's clock is {abs(off):.0f} s from the watch stream's: the batch was not "
        "registered (every node passed it over); retry (another node may take it)",
    )  # fmt: skip


def _unreached(what: str, e: StreamUnavailable) -> None:
    """Logged once per try of the stream: not for each call refused while it is held down."""
    (_log.debug if e.held else _log.warning)("%s: %s", what, e)


def _caught_up(env: WatchEnv, lists: LmdbWatchSet, target: int | None) -> Problem | None:
    """Apply the watch stream's operations through ``target`` (None: its last one) within
    ``[watch] replication_wait_seconds``; the 503 to answer when that could not be done."""
    assert env.stream is not None
    try:
        watchstream.sync(lists, env.stream, target, env.config.replication_wait_seconds)
    except StreamUnavailable as e:
        _unreached("watch lists not caught up", e)
        return _STREAM_UNAVAILABLE
    except watchlog.Behind:
        return _BEHIND
    except (watchlog.Gone, watchlog.SecretMismatch) as e:
        _log.error("watch lists not replicated: %s", e)
        return _STREAM_UNAVAILABLE
    except WatchUnavailable:
        return _UNAVAILABLE
    return None


# --- GET /v1/changes --------------------------------------------------------------------


def _chunks(entries: Iterator[ChangeEntry], size: int) -> Iterator[list[ChangeEntry]]:
    chunk: list[ChangeEntry] = []
    for e in entries:
        chunk.append(e)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _change(
    e: ChangeEntry, issuer: _Issuer, reader: StoreReader, crl_import: bool
) -> Change | None:
    """The change as delivered: the certificate's status now (as POST /v1/status says it);
    None when its record passed its retention and was erased without its time (Ord
    §70(1)(iii)): no longer provided (Act §18(1), §37(1): 保存期間が経過していない records only),
    though the feed still holds the entry of its loss of effect (``store.changes_keep_days``
    may outlast a retention period): nothing of it is delivered, nor counted."""
    st = reader.status(e.key)
    serial = f"{sf.split_status_key(e.key)[1]:X}"
    at = _at(e.committed_at) if e.committed_at else None
    family = issuer.family
    if st is not None and st.state == sf.STATE_REVOKED:
        category = Category.from_code(st.category) if st.category else None
        return Change(
            issuer=issuer.id, serial=serial, commit=e.commit, committed_at=at, status="revoked",
            family=family, revoked_at=_at(st.revoked_at),
            reason=REASON_NAMES.get(Reason(st.reason), "unspecified"), category=category,
            article=category.articles.get(family) if category is not None else None,
        )  # fmt: skip
    if st is not None and st.state == sf.STATE_ERASED and st.revoked_at:
        return Change(
            issuer=issuer.id, serial=serial, commit=e.commit, committed_at=at, status="revoked",
            family=family, revoked_at=_at(st.revoked_at),
        )  # fmt: skip
    if st is not None and st.state == sf.STATE_ERASED:
        return None  # erased without its time (Ord §70(1)(iii)): no longer provided
    # on a group appliance, a serial its newer CRL no longer lists is good (CRL-import mode)
    status: Literal["good", "unknown"] = "good" if st is None and crl_import else "unknown"
    return Change(
        issuer=issuer.id, serial=serial, commit=e.commit, committed_at=at, status=status,
        family=family,
    )  # fmt: skip


@dataclass
class _Read(Generic[P]):
    """What one read of the feed found: the watched changes, each with its service and the
    position just after it (what `responder.v1.provision` counts by)."""

    changes: list[Change] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    afters: list[P] = field(default_factory=list)
    families: set[Family] = field(default_factory=set)
    full: bool = False
    """It stopped at ``limit`` or at the scan bound (``more``)."""


def _read(
    entries: Iterator[ChangeEntry],
    lists: WatchSet,
    party: str,
    issuers: dict[int, _Issuer],
    reader: StoreReader,
    *,
    limit: int,
    budget: int,
    seen: Callable[[ChangeEntry], None],
    after: Callable[[ChangeEntry], P],
) -> _Read[P]:
    """The watched changes of ``entries`` up to ``limit`` changes or ``budget`` entries;
    ``seen`` is told of every entry read, in order, and ``after`` names the position just
    after each one delivered. Raises `WatchUnavailable`."""
    out: _Read[P] = _Read()
    crl_import = reader.crl_import()
    scanned = 0
    for read in _chunks(entries, PROBE_CHUNK):
        chunk = read[: budget - scanned]
        receivable = [
            e for e in chunk
            if (i := issuers.get(sf.split_status_key(e.key)[0])) is not None
            and i.refusal is None
        ]  # fmt: skip
        hits = lists.watched(party, [e.key for e in receivable])
        watched = {e.key for e, hit in zip(receivable, hits, strict=True) if hit}
        for e in chunk:
            seen(e)
            scanned += 1
            if e.key in watched:
                issuer = issuers[sf.split_status_key(e.key)[0]]
                change = _change(e, issuer, reader, crl_import)
                if change is None:  # erased past its retention: passed, as one not watched
                    continue
                out.changes.append(change)
                out.services.append(issuer.service)
                out.afters.append(after(e))
                out.families.add(issuer.family)
                if len(out.changes) == limit:
                    out.full = True
                    break
        if out.full or scanned >= budget:
            out.full = True
            break
    return out


def _same_feed(kept: cursors.Position | cursors.StreamPosition | None, mark: P) -> P | None:
    """``kept`` when it is a position of ``mark``'s store or feed, else None."""
    if isinstance(mark, cursors.Position) and isinstance(kept, cursors.Position):
        return kept if kept.store_id == mark.store_id else None
    if isinstance(mark, cursors.StreamPosition) and isinstance(kept, cursors.StreamPosition):
        return kept if kept.feed_id == mark.feed_id else None
    return None


@dataclass(frozen=True, slots=True)
class _Provided(Generic[P]):
    """What a read delivered, for the cursor and the dispatcher (`_provided`)."""

    mark: P
    """The counted mark the answer's cursor carries: once the answer is given, every change
    delivered (and every one this node or the cursor had counted before) is counted."""
    provide: Provide | None = None
    """Counts what was not counted before and records it (`Reply.provide`); None when
    nothing was delivered."""


@dataclass
class _Lineage:
    """A read of one node's store feed: the `cursors.Anchor` of each position it may write
    into a cursor or a counted mark, as this view's store holds them. A store restored from
    an older copy numbers its next commits as the lost ones: a mark anchored in the lost
    ones is not read (`cursors.holds`). Checked against the view in the handler only (the
    view is closed when the answer's provisions are counted)."""

    reader: StoreReader
    known: dict[cursors.Position, cursors.Anchor] = field(default_factory=dict)

    def note(self, position: cursors.Position) -> cursors.Anchor:
        """``position``'s anchor in this view, kept."""
        at = self.known[position] = cursors.anchor(self.reader, position)
        return at

    def held(self, position: cursors.Position, at: cursors.Anchor) -> bool:
        """Does this view's store hold ``position`` anchored ``at`` (then kept)?"""
        if not cursors.holds(self.reader, position, at):
            return False
        self.known.setdefault(position, at)
        return True

    def of(self, position: cursors.Position | cursors.StreamPosition) -> cursors.Anchor | None:
        return self.known.get(position) if isinstance(position, cursors.Position) else None


def _stored(
    gen: bytes, mark: cursors.Position | cursors.StreamPosition, lineage: _Lineage | None
) -> bytes:
    """A counted mark as this node keeps it (`WatchSet.count_once`): the list generation it
    is of, then the mark, and of a store position its anchor (`cursors.pack_anchored`;
    without one it is not read again: counted again, never fewer)."""
    at = lineage.of(mark) if lineage is not None else None
    if isinstance(mark, cursors.Position) and at is not None:
        return gen + cursors.pack_anchored(mark, at)
    return gen + cursors.pack(mark)


def _stored_mark(
    stored: bytes | None, gen: bytes, lineage: _Lineage | None
) -> tuple[cursors.Position | cursors.StreamPosition, cursors.Anchor | None] | None:
    """The mark of `_stored` (and its anchor, of a store position) when it is of the list
    generation ``gen``, else None; a store position without an anchor is None too."""
    if stored is None or stored[: len(gen)] != gen:
        return None
    raw = stored[len(gen) :]
    if lineage is None:
        mark = cursors.unpack(raw)
        return (mark, None) if isinstance(mark, cursors.StreamPosition) else None
    return cursors.unpack_anchored(raw)


def _from(mark: P, kept: cursors.Position | cursors.StreamPosition | None, ceiling: P | None) -> P:
    """The mark a read counts from: the later of the cursor's and this node's (``kept``),
    no later than ``ceiling``."""
    same = _same_feed(kept, mark) if kept is not None else None
    m = provision.later(mark, same) if same is not None else mark
    if ceiling is not None and provision.later(m, ceiling) is not ceiling:
        m = ceiling
    return m


def _tally(services: list[Service], fresh: list[bool]) -> Counts:
    counts: dict[Service, int] = {}
    for service, new in zip(services, fresh, strict=True):
        if new:
            counts[service] = counts.get(service, 0) + 1
    return tuple(counts.items())


def _provided(
    lists: WatchSet,
    party: str,
    got: _Read[P],
    mark: P,
    gen: bytes,
    ceiling: P | None = None,
    lineage: _Lineage | None = None,
) -> _Provided[P]:
    """The counted mark after a read, and how its provisions are counted (`Reply.provide`):
    when its answer is made, the changes delivered that neither the cursor's mark nor this
    node's mark of the party covers (`responder.v1.provision`), both of the list's
    generation ``gen`` read before the read (a mark made before an entry was added never saw
    its certificate watched; an entry added since: every change delivered is taken, and no
    mark stored), are taken from the day's provisions; as it is written (`Delivery.record`,
    `WatchSet.count_once`), those of them that no mark covers now either (another read of
    the party's written meanwhile counted them) are counted. This node's mark moves in the
    same step as the ledger counts, after it (a worker killed between them: counted, at
    worst again, never not at all), and only when the answer is written. ``ceiling``: the highest mark this view can have
    counted (a store restored from an older copy numbers its new commits as the lost ones).
    ``lineage``: of a store's own feed, where this node's mark is read only when the store
    still holds the commits it was anchored in (checked in this view), or when another read
    wrote it since (which checked it in its own)."""
    if not got.afters:
        return _Provided(mark)
    seen = lists.mark(party)
    seen_kept = _stored_mark(seen, gen, lineage)
    seen_holds = (
        lineage is None
        or seen_kept is None
        or seen_kept[1] is None
        or not isinstance(seen_kept[0], cursors.Position)
        or lineage.held(seen_kept[0], seen_kept[1])
    )

    def kept(stored: bytes | None) -> cursors.Position | cursors.StreamPosition | None:
        if stored == seen and not seen_holds:
            return None  # anchored in commits the store no longer holds: counted again
        got = _stored_mark(stored, gen, lineage)
        if got is None:
            return None
        mark, at = got
        if lineage is not None and isinstance(mark, cursors.Position) and at is not None:
            lineage.known.setdefault(mark, at)
        return mark

    _new, after = provision.count(got.afters, _from(mark, kept(seen), ceiling))

    def fresh_now(stored: bytes | None) -> tuple[list[bool], P]:
        """Which changes delivered no mark covers, against this node's mark ``stored``
        (of the list's generation ``gen``), and the mark after them."""
        return provision.count(got.afters, _from(mark, kept(stored), ceiling))

    def provide() -> Delivery | None:
        # when the answer is made, after the list was read: an entry added since ``gen`` was
        # read may be among the changes delivered, which then no mark covers
        try:
            made = (
                fresh_now(lists.mark(party))[0]
                if lists.generation(party) == gen
                else [True] * len(got.afters)
            )
        except WatchUnavailable:
            return None  # nothing counted nor given: 503

        def record(count: Count) -> None:
            counted: list[bool] = []

            def decide(stored: bytes | None, now: bytes) -> bytes | None:
                # as the answer is written: what no answer written since it was made counted
                # (a read of the same party's on another connection or worker), of what it
                # decided then; a mark of another generation covers nothing (none stored)
                fresh, upto = fresh_now(stored) if now == gen else (made, mark)
                count(_tally(got.services, [a and b for a, b in zip(made, fresh, strict=True)]))
                counted.append(True)
                return _stored(gen, upto, lineage) if now == gen else stored

            try:
                lists.count_once(party, decide)
            except WatchUnavailable as e:
                if not counted:  # counted as decided: at worst again later, never not at all
                    count(_tally(got.services, made))
                _log.error("the changes feed's counted mark not kept (counted again later): %s", e)

        return Delivery(_tally(got.services, made), record)

    return _Provided(after, provide)


def _reply(
    store: StoreRef,
    now: datetime,
    got: _Read[P],
    provided: _Provided[P],
    cursor: str,
    issuers: dict[int, _Issuer],
) -> Reply[ChangesResponse]:
    body = ChangesResponse(
        store=store, produced_at=now, changes=got.changes, cursor=cursor, more=got.full,
        passed_over=_passed_over(issuers),
    )  # fmt: skip
    family = next(iter(got.families)).value if len(got.families) == 1 else ""
    return Reply(body, (), family, provide=provided.provide)


def _none(store: StoreRef, now: datetime, cursor: str) -> Reply[ChangesResponse]:
    """An answer with no change (nothing read, nothing counted)."""
    return Reply(ChangesResponse(
        store=store, produced_at=now, changes=[], cursor=cursor, more=False, passed_over=[],
    ))  # fmt: skip


def _fresh(
    env: WatchEnv,
    party: str,
    store: StoreRef,
    now: datetime,
    key: bytes,
    fresh: cursors.Bound,
    issuers: dict[int, _Issuer],
) -> Reply[ChangesResponse] | Problem:
    """A fresh cursor of this node's own store: the party resynchronises (it reads the status
    of its whole list next), so this node forgets its counted mark of the party: a mark left
    ahead by a store restored from an older copy (its next commits renumber the lost ones)
    would leave the changes they make uncounted. Forgotten, not set to the fresh cursor's
    position: the changes up to it were not delivered through the feed, and a party that
    took a fresh cursor and then read from an older one of its own would be given them
    uncounted (what follows the older cursor's own mark is counted, at worst again)."""
    found = env.lists()
    if found is None:
        return _UNAVAILABLE
    lists = _receivable(found, issuers)
    gens: list[bytes] = []

    def forget(_kept: bytes | None, gen: bytes) -> None:
        gens.append(gen)

    try:
        lists.count_once(party, forget)
    except WatchUnavailable:
        return _UNAVAILABLE
    return _none(store, now, cursors.seal(key, party, fresh._replace(gen=gens[-1])))


def _opened(env: WatchEnv, key: bytes, party: str, text: str) -> cursors.Bound | Problem:
    """The party's cursor ``text`` opened (its HMAC checked for this party), or the problem
    that refuses it: altered, another party's, or unbound once the transition is over."""
    bound = cursors.unseal(key, party, text)
    if isinstance(bound, cursors.Verdict):
        return _CURSOR_PROBLEMS[bound]
    if not bound.bound:
        accepted = env.config.unbound_cursors
        env.on_unbound(party, accepted)
        if not accepted:
            return _UNBOUND
    return bound


def handle_changes(request: ChangesQuery, ctx: Context) -> Reply[ChangesResponse] | Problem:
    """The watched changes after the cursor (module docstring)."""
    env = ctx.env
    assert isinstance(env, WatchEnv)
    reader = ctx.reader
    committed = reader.committed_at()
    store = StoreRef(
        commit=reader.generation().commit, committed_at=_at(committed) if committed else None
    )
    now = _at(int(ctx.now))
    if reader.feed_id():
        return _changes_of_stream(request, ctx, env, store, now)
    if env.stream is not None:  # a node of several whose builder has not named its stream
        return _NO_FEED
    key = env.cursor_key()
    if key is None:
        return _UNAVAILABLE
    party = ctx.party.id
    here = cursors.at_commit(reader)
    lineage = _Lineage(reader)
    here_at = lineage.note(here)
    if not request.cursor:
        fresh = cursors.Bound(here, here, anchors=(here_at, here_at))
        return _fresh(env, party, store, now, key, fresh, _issuers(reader, ctx))
    bound = _opened(env, key, party, request.cursor)
    if isinstance(bound, Problem):
        return bound
    position, mark = bound.position, bound.mark
    if isinstance(position, cursors.StreamPosition):  # ours, of a store fed by the stream
        return _CURSOR_PROBLEMS[cursors.Verdict.OTHER_STORE]
    anchors = bound.anchors
    verdict = cursors.judge(position, reader, anchors[0] if anchors is not None else None)
    if verdict is not cursors.Verdict.OK:
        return _CURSOR_PROBLEMS[verdict]
    assert isinstance(mark, cursors.Position)
    if anchors is None:
        lineage.note(position)
    else:  # checked by `judge`
        lineage.known.setdefault(position, anchors[0])
    if anchors is None or not lineage.held(mark, anchors[1]):
        # unbound (its mark is its position), issued before anchors, or anchored in commits
        # a store restored from an older copy no longer holds: what it covered is counted
        mark = position
    found = env.lists()
    if found is None:
        return _UNAVAILABLE
    issuers = _issuers(reader, ctx)
    lists = _receivable(found, issuers)
    last: ChangeEntry | None = None

    def seen(e: ChangeEntry) -> None:
        nonlocal last
        last = e

    ident = position.store_id

    def after(e: ChangeEntry) -> cursors.Position:
        p = cursors.Position(ident, e.after)
        lineage.known[p] = cursors.Anchor(e.commit, e.committed_at)
        return p

    try:
        gen = lists.generation(party)  # before the list is read
        if bound.gen != gen:  # entries added since the mark, or other families passed over
            mark = position
        got = _read(
            reader.changes(position.start), lists, party, issuers, reader,
            limit=_limit(request, ctx), budget=env.config.scan_limit, seen=seen, after=after,
        )  # fmt: skip
        provided = _provided(lists, party, got, mark, gen, ceiling=here, lineage=lineage)
    except WatchUnavailable:
        return _UNAVAILABLE
    if got.full and last is not None:
        position = cursors.Position(position.store_id, last.after)
        position_at = cursors.Anchor(last.commit, last.committed_at)
    else:  # read to the end: the next read starts after the view's commit
        position, position_at = here, here_at
    counted = provided.mark
    assert isinstance(counted, cursors.Position)
    mark_at = lineage.of(counted) or lineage.note(counted)  # always known: of this view
    bound = cursors.Bound(position, counted, gen=gen, anchors=(position_at, mark_at))
    cursor = cursors.seal(key, party, bound)
    return _reply(store, now, got, provided, cursor, issuers)


def _limit(request: ChangesQuery, ctx: Context) -> int:
    """The changes one read may deliver: the party's ``limit``, and no more than its
    provisions left today (``provisions_per_day``, 件数) where its agreement bounds them."""
    if ctx.provisions_left is None:
        return request.limit
    return min(request.limit, ctx.provisions_left)


def _changes_of_stream(
    request: ChangesQuery, ctx: Context, env: WatchEnv, store: StoreRef, now: datetime
) -> Reply[ChangesResponse] | Problem:
    """The changes of a store filled from the record stream: positions of the stream, read on
    any node of the service (`responder.v1.feedpos`)."""
    reader = ctx.reader
    feed = reader.feed_id()
    key = env.cursor_key()
    if key is None:
        return _UNAVAILABLE
    party = ctx.party.id
    if not request.cursor:
        # a fresh cursor stands [cluster] max_lag records before this node's position: a
        # POST /v1/status that follows it on another ready node (within max_lag of the
        # stream) is then not older than it; the changes in between come again. Its mark is
        # its position: those changes are counted when delivered unless this node's mark of
        # the party covers them (delivered and counted here before), which it keeps: a mark
        # at the node's position would let a party that takes a fresh cursor before every
        # read, never reading the status, be given every change uncounted
        seq = reader.stream_seq()
        base = max(seq - env.fresh_lag, reader.changes_from_seq(), 0)
        here = cursors.StreamPosition(feed, base)
        found = env.lists()
        if found is None:
            return _UNAVAILABLE
        try:
            gen = _receivable(found, _issuers(reader, ctx)).generation(party)
        except WatchUnavailable:
            return _UNAVAILABLE
        fresh = cursors.Bound(here, here, gen=gen)
        return _none(store, now, cursors.seal(key, party, fresh))
    bound = _opened(env, key, party, request.cursor)
    if isinstance(bound, Problem):
        return bound
    position, mark = bound.position, bound.mark
    if not isinstance(position, cursors.StreamPosition):
        return _CURSOR_PROBLEMS[cursors.Verdict.OTHER_STORE]  # a cursor of one node's store
    assert isinstance(mark, cursors.StreamPosition)
    where = feedpos.locate(position, reader)
    if where is feedpos.Verdict.NOT_YET:  # this node is behind the cursor: nothing new here
        same = cursors.Bound(position, mark, gen=bound.gen)
        return _none(store, now, cursors.seal(key, party, same))
    if isinstance(where, feedpos.Verdict):
        return _CURSOR_PROBLEMS[
            cursors.Verdict.EXPIRED
            if where is feedpos.Verdict.EXPIRED
            else cursors.Verdict.OTHER_STORE
        ]
    lists = env.lists()
    if lists is None:
        return _UNAVAILABLE
    whole: Callable[[], int | None] | None = None
    loads: int | None = None
    if env.stream is not None:  # several nodes: every list registered anywhere, first
        if not isinstance(lists, LmdbWatchSet):
            return _UNAVAILABLE
        refusal = _caught_up(env, lists, None)
        if refusal is not None:
            return refusal
        whole = lists.whole
        loads = whole()
        if loads is None:  # another worker began loading a snapshot since
            return _BEHIND
    issuers = _issuers(reader, ctx)
    seen_as = _receivable(lists, issuers)
    tracker = where.tracker
    stream_made = (e for e in reader.changes(where.start) if e.group is not None)
    try:
        gen = seen_as.generation(party)  # before the list is read
        if bound.gen != gen:  # entries added since the mark, or other families passed over
            mark = position
        got = _read(
            stream_made, seen_as, party, issuers, reader,
            limit=_limit(request, ctx), budget=env.config.scan_limit, seen=tracker.see,
            after=lambda _e: tracker.after_last(),
        )  # fmt: skip
        if whole is not None and whole() != loads:  # the lists emptied by a load while read:
            return _BEHIND  # the changes not found would be lost to the party, its cursor past
        provided = _provided(seen_as, party, got, mark, gen)
    except WatchUnavailable:
        return _UNAVAILABLE
    after = tracker.after_last() if got.full else tracker.at_end(reader.stream_seq())
    cursor = cursors.seal(key, party, cursors.Bound(after, provided.mark, gen=gen))
    return _reply(store, now, got, provided, cursor, issuers)


def _watched(
    added: int,
    removed: int,
    total: int,
    asked_add: int,
    asked_remove: int,
    refused: list[WatchRefusal],
) -> Reply[WatchResponse]:
    """The answer to a batch the lists applied: of ``asked_add`` additions ``added`` were
    new, of ``asked_remove`` removals ``removed`` were watched; ``total`` watched now."""
    return Reply(WatchResponse(
        added=added, already=asked_add - added, removed=removed,
        absent=asked_remove - removed, watching=total, refused=refused,
    ))  # fmt: skip


_SERVICES: Final = (Service.SIGN_REVOCATION_INFO, Service.AUTH_REVOCATION_INFO)

WATCH_ROUTE: Final = Route(
    method="POST",
    path="/v1/watch",
    name="watch",
    summary="Watch list of the changes feed: add and remove certificates (not a provision)",
    description=__doc__ or "",
    request=WatchRequest,
    response=WatchResponse,
    services=_SERVICES,
    handler=handle_watch,
    setup=setup,
    blocking=_writes,
    writes=True,
    retry_after=_retry_after,
    signed=False,
    provides=False,  # registering provides nothing: served when the provisions are used up
    links=(
        Link(
            name="changes",
            operation="changes",
            description="Then the changes feed: without a cursor, the current position (no "
            "change) and its cursor, from which the watched certificates' losses of effect "
            "are read.",
        ),
    ),
    problems=(
        (409, "the batch would take the watch list past its bound; nothing changed"),
        (
            503,
            "The batch may have been registered nonetheless (on a service of several nodes, "
            "once sent to the watch stream every node applies it): sending the same batch "
            "again is safe, the list ends the same, each certificate counts once against the "
            "bound, nothing is counted in the ledger, and what the first one added is "
            "answered as `already`.",
        ),
    ),
)
CHANGES_ROUTE: Final = Route(
    method="GET",
    path="/v1/changes",
    name="changes",
    summary="Changes feed: the watched certificates that lost effect after a cursor, Act §18(1), §37(1)",
    description=__doc__ or "",
    request=ChangesQuery,
    response=ChangesResponse,
    services=_SERVICES,
    handler=handle_changes,
    setup=setup,
    blocking=_reads,
    retry_after=_retry_after,
    follow=(("cursor", "/cursor"),),
    problems=(
        (
            400,
            "A cursor this service did not issue to this party (malformed, altered, or "
            "another party's: `field` is `$.cursor`): pass back the cursor of your own "
            "last answer unchanged.",
        ),
        (
            409,
            "the cursor is ahead of this store, or past commits it has made again since "
            "(restored from an older copy): resynchronise",
        ),
        (
            410,
            "the cursor is past the feed's retention, or of a store rebuilt since, or was "
            "issued before cursors were bound to their party (`[watch] unbound_cursors` "
            "off): resynchronise (see the detail)",
        ),
    ),
)
