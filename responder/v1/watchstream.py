"""The watch stream's I/O in one worker: publish an operation, read one, the last sequence.

The operations of `responder.v1.watchlog` on the JetStream stream ``JPKI_WATCH`` (subject
``jpki.watch``; file storage, replicated like the other streams, no age limit: only a
compaction purges it, behind a snapshot of the lists on ``JPKI_WATCH_SNAP``, which a node
whose next operation was purged loads first (`sync`, `responder.v1.watchsnap`); an
operation the stream lost that no snapshot holds stops replication rather than be passed
over). Each worker process connects on first use, after the fork, and uses
the connection from the /v1 batch thread only (the routes that wait on it are answered
there: `responder.v1.route.Route.blocking`); a failed call drops the connection, and the
next one connects again. Every call is bounded (``timeout``), and a failed one holds the
stream down (`responder.v1.holddown`): the calls that follow within the interval fail at
once, without trying, so that an outage does not hold the batch thread seconds per call.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

import nats.errors
import nats.js.errors

from crlbuilder.jetstream import Cluster, ClusterError, ensure_stream
from crlbuilder.natsauth import NatsAuth
from crlbuilder.natsservers import parse_servers
from responder.v1 import watchsnap
from responder.v1.holddown import HoldDown
from responder.v1.watchlog import (
    Behind,
    Gone,
    Stored,
    catch_up,
    op_id,
    secret_check,
    stream_id,
)

if TYPE_CHECKING:
    from responder.v1.watchdb import LmdbWatchSet

T = TypeVar("T")

STREAM: Final = "JPKI_WATCH"
SUBJECT: Final = "jpki.watch"
SNAP_SUFFIX: Final = "_SNAP"
"""The snapshot stream is the watch stream's name and this (`responder.v1.watchsnap`)."""
WRONG_LAST_SEQUENCE: Final = 10071
"""JetStream's error code for a publish whose ``Nats-Expected-Last-Subject-Sequence`` no
longer holds."""


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def stamped_ms(at: datetime) -> int:
    """A JetStream message time (UTC, to the microsecond as the client parses it) in whole
    milliseconds since the epoch, exactly (no float)."""
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


class StreamState(NamedTuple):
    last: int
    """The last operation's sequence (0 while it never held one)."""
    id: bytes
    """`watchlog.stream_id`."""
    first: int
    """The first operation it still holds (``last + 1`` when it holds none: all purged)."""


class SealRaced(Exception):
    """Another compaction sealed a snapshot first: this one purges nothing."""


class StreamUnavailable(Exception):
    """The watch stream cannot be reached or refused a call now (the message says which)."""

    def __init__(self, message: str, *, held: bool = False) -> None:
        super().__init__(message)
        self.held = held
        """Not tried: the stream is held down after a failure (`WatchStream.retry_after`)."""


class WatchStream:
    """One worker's connection to the watch stream (module docstring)."""

    def __init__(
        self,
        source: str,
        *,
        timeout: float = 2.0,
        name: str = STREAM,
        clock: Callable[[], float] = time.monotonic,
        auth: NatsAuth | None = None,
    ) -> None:
        self.servers = parse_servers(source)
        self.auth = auth if auth is not None else NatsAuth()
        """The NATS credential (`crlbuilder.natsauth`; none given: the environment's only)."""
        self.timeout = timeout
        self.name = name
        self.subject = SUBJECT if name == STREAM else f"jpki.watch.{name}"
        self.snap_name = name + SNAP_SUFFIX
        base = "jpki.watchsnap" if name == STREAM else f"jpki.watchsnap.{name}"
        self.snap_subjects = base + ".>"
        self.seal_subject = base + ".seal"
        self.part_subjects = base + ".part.*"
        self._part_base = base + ".part."
        self._cluster: Cluster | None = None
        self.holddown = HoldDown()
        self._clock = clock

    def retry_after(self) -> int | None:
        """Seconds until the next call tries the stream again, for a 503's Retry-After; None
        when it is not held down."""
        return self.holddown.retry_after(self._clock())

    def _connected(self) -> Cluster:
        if self._cluster is None:
            try:
                cluster = Cluster(self.servers, connect_timeout=self.timeout, auth=self.auth)
            except ClusterError as e:
                raise StreamUnavailable(str(e)) from None
            try:
                ensure_stream(cluster, self.name, [self.subject], duplicate_window_seconds=120)
                ensure_stream(
                    cluster, self.snap_name, [self.snap_subjects], duplicate_window_seconds=120,
                    allow_direct=True,
                )  # fmt: skip
            except ClusterError as e:
                cluster.close()
                raise StreamUnavailable(str(e)) from None
            self._cluster = cluster
        return self._cluster

    def _failed(self, e: BaseException) -> StreamUnavailable:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        return StreamUnavailable(f"watch stream {self.name}: {e or type(e).__name__}")

    def _call(self, op: Callable[[Cluster], Coroutine[Any, Any, T]]) -> T:
        """``op`` on the connection, once more on a new one when it fails (a connection
        idle since the last call may have been dropped by the server meanwhile); not tried
        while the stream is held down, and held down when it fails (`HoldDown`)."""
        left = self.holddown.wait(self._clock())
        if left > 0:
            raise StreamUnavailable(
                f"watch stream {self.name}: not reached at the last try; next try in {left:.1f} s",
                held=True,
            )
        try:
            got = self._tried(op)
        except (nats.js.errors.NotFoundError, SealRaced):  # the stream answered
            self.holddown.succeeded()
            raise
        except StreamUnavailable:
            self.holddown.failed(self._clock())
            raise
        self.holddown.succeeded()
        return got

    def _tried(self, op: Callable[[Cluster], Coroutine[Any, Any, T]]) -> T:
        for attempt in (1, 2):
            c = self._connected()
            try:
                return c.run(op(c), timeout=self.timeout * 2)
            except nats.js.errors.NotFoundError:
                raise
            except nats.js.errors.BadRequestError as e:
                if e.err_code == WRONG_LAST_SEQUENCE:  # a seal published over another
                    raise SealRaced("another compaction sealed a watch snapshot first") from None
                failed = self._failed(e)
                if attempt == 2:
                    raise failed from None
            except (nats.errors.Error, TimeoutError, OSError) as e:
                failed = self._failed(e)
                if attempt == 2:
                    raise failed from None
        raise AssertionError("unreachable")

    def publish(self, op: bytes, *, nonce: bytes | None = None) -> int:
        """Store one operation; its stream sequence (JetStream's acknowledgement). Published
        again after a failure (here, on a new connection), it is stored once (its message id,
        `watchlog.op_id`, with ``nonce``: drawn here unless given, once per request)."""
        headers = {"Nats-Msg-Id": op_id(op, secrets.token_bytes(16) if nonce is None else nonce)}
        ack = self._call(
            lambda c: c.js.publish(
                self.subject, op, timeout=self.timeout, stream=self.name, headers=headers
            )
        )
        return int(ack.seq)

    def last_seq(self) -> int:
        """The stream's last sequence (0 while it holds none)."""
        return self.state().last

    def state(self) -> StreamState:
        """The stream's last sequence, its identity (`watchlog.stream_id`: a stream deleted
        and made again under its name is another) and its first sequence."""
        info = self._call(lambda c: c.js.stream_info(self.name))
        created = info.created
        if created is None:
            raise StreamUnavailable(f"watch stream {self.name}: JetStream gave no creation time")
        last = int(info.state.last_seq)
        first = int(info.state.first_seq) if info.state.messages else last + 1
        return StreamState(last, stream_id(self.name, created), first)

    # --- snapshots (`responder.v1.watchsnap`) ----------------------------------------------

    def _get(self, **kw: Any) -> tuple[int, bytes] | None:
        try:
            msg = self._call(lambda c: c.js.get_msg(self.snap_name, **kw))
        except nats.js.errors.NotFoundError:
            return None
        return int(msg.seq or 0), bytes(msg.data or b"")

    def latest_seal(self) -> tuple[int, bytes] | None:
        """The latest snapshot's seal: (its sequence on the snapshot stream, its bytes)."""
        return self.latest_seal_guarded()[0]

    def latest_seal_guarded(self) -> tuple[tuple[int, bytes] | None, int]:
        """`latest_seal`, and the sequence JetStream checks a new seal's expected last subject
        sequence against (`publish_seal`'s ``after``).

        JetStream's last message of the seal subject is asked first. A file-stored stream of
        nats-server 2.9 finds none once the stream's last message was deleted alone and it was
        the subject's last (the latest seal deleted by hand), though earlier seals are there,
        and its check of a seal's expected last subject sequence reads 0 as well: the seal is
        then found from the subject's messages (`_last_of`), and 0 is what a new seal is
        published over (a compaction sealing meanwhile still makes the other's refused)."""
        found = self._get(subject=self.seal_subject)
        if found is not None:
            return found, found[0]
        return self._last_of(self.seal_subject), 0

    def _last_of(self, subject: str) -> tuple[int, bytes] | None:
        """The last message of ``subject`` on the snapshot stream, by next-by-subject gets (a
        binary search over its sequences, a few requests); None when it holds none."""
        info = self._call(lambda c: c.js.stream_info(self.snap_name))
        last = int(info.state.last_seq)
        found = self._get(seq=max(int(info.state.first_seq), 1), subject=subject, next=True)
        if found is None:
            return None
        lo, hi = found[0], last + 1  # a message of the subject at lo, none at or after hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            at = self._get(seq=mid, subject=subject, next=True)
            if at is None:
                hi = mid
            else:
                lo, found = at[0], at
        return found

    def part_from(self, snapshot: int, at: int) -> tuple[int, bytes] | None:
        """The first part of snapshot ``snapshot`` at or after sequence ``at`` of the snapshot
        stream (None: none, purged). Read with a direct get (a third of the time of a 384 KiB
        part through the JSON API); a replica behind may not hold it yet, so its "none" is
        asked again of the stream's leader."""
        subject = f"{self._part_base}{snapshot}"
        found = self._get(seq=at, subject=subject, next=True, direct=True)
        return found if found is not None else self._get(seq=at, subject=subject, next=True)

    def publish_part(self, snapshot: int, raw: bytes) -> int:
        subject = f"{self._part_base}{snapshot}"
        ack = self._call(
            lambda c: c.js.publish(subject, raw, timeout=self.timeout, stream=self.snap_name)
        )
        return int(ack.seq)

    def publish_seal(self, raw: bytes, *, after: int) -> int:
        """Publish a seal only if the latest one is still the one at ``after`` (0: none);
        `SealRaced` when another was published since."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(after)}
        ack = self._call(
            lambda c: c.js.publish(
                self.seal_subject, raw, timeout=self.timeout, stream=self.snap_name,
                headers=headers,
            )
        )  # fmt: skip
        return int(ack.seq)

    def purge_operations(self, through: int) -> None:
        """Purge the watch stream's operations 1..``through`` (a snapshot holds them)."""
        self._call(lambda c: c.js.purge_stream(self.name, seq=through + 1))

    def purge_snapshots(self, parts_before: int, seals_before: int) -> None:
        """Purge the snapshot stream's parts before ``parts_before`` and seals before
        ``seals_before`` (its sequences). Nothing is before sequence 1, and JetStream reads a
        filtered purge "up to sequence 1" as no bound at all (every message of the subject:
        the second compaction of a new stream, whose previous snapshot's part 0 is message
        1, purged its own new parts too): such a purge is not asked for."""
        if parts_before > 1:
            self._call(
                lambda c: c.js.purge_stream(
                    self.snap_name, seq=parts_before, subject=self.part_subjects
                )
            )
        if seals_before > 1:
            self._call(
                lambda c: c.js.purge_stream(
                    self.snap_name, seq=seals_before, subject=self.seal_subject
                )
            )

    def fetch(self, seq: int) -> Stored | None:
        """Operation ``seq``'s bytes and the time JetStream stored it at (the server's, the
        same for that sequence on every node: `watchlog.replayed`); None when the stream does
        not hold it (deleted)."""
        try:
            msg = self._call(lambda c: c.js.get_msg(self.name, seq=seq))
        except nats.js.errors.NotFoundError:
            return None
        if msg.time is None:  # never the local clock: the nodes would decide differently
            raise StreamUnavailable(
                f"watch stream {self.name}: JetStream gave no time for operation {seq}"
            )
        return Stored(bytes(msg.data or b""), stamped_ms(msg.time))

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


SEEN_EVERY: Final = 1.0
"""Seconds between two notes of the stream's last sequence in the lists (for the metrics)."""
_noted: dict[int, float] = {}


def sync(lists: LmdbWatchSet, stream: WatchStream, target: int | None, wait: float) -> int:
    """Apply the stream's operations to ``lists`` through ``target`` (None: the stream's last)
    for at most ``wait`` seconds: `watchlog.catch_up` with this stream and the monotonic
    clock, or, when the stream no longer holds the lists' next operation (compacted past
    them), the latest snapshot first (`load`). Raises `StreamUnavailable`, `watchlog.Behind`,
    `watchlog.Gone` (noted in the lists for the metrics; `watchlog.OtherStream` when the
    stream was made again since the lists applied it), `watchlog.SecretMismatch`."""
    deadline = time.monotonic() + wait
    state = stream.state()
    lists.bind(state.id)
    if target is None:
        target = state.last
    now = time.monotonic()
    if now - _noted.get(id(lists), 0.0) >= SEEN_EVERY:
        lists.note_seen(target, int(time.time()))
        _noted[id(lists)] = now
    for _ in range(3):  # a compaction during the call: load the newer snapshot, once or twice
        step = watchsnap.next_step(
            lists.applied(), lists.loading() is not None, state.first, state.last
        )
        try:
            if not isinstance(step, watchsnap.CatchUp):
                load(lists, stream, state, deadline)
            return catch_up(lists, stream.fetch, target, deadline=deadline, clock=time.monotonic,
                            mac=lists.keys.op_mac)  # fmt: skip
        except Superseded:
            state = stream.state()
        except Gone as e:
            if not isinstance(e, NoSnapshot):
                state = stream.state()  # purged meanwhile (a compaction): a snapshot has it
                if state.first > lists.applied() + 1 and lists.loading() is None:
                    continue
            lists.note_gap(str(e))
            raise
    raise Behind(lists.applied(), target)


class NoSnapshot(Gone):
    """The stream was compacted past the lists and no usable snapshot has what it purged."""


class Superseded(Gone):
    """The snapshot being loaded was purged (a newer one replaced it): load that one."""


def load(lists: LmdbWatchSet, stream: WatchStream, state: StreamState, deadline: float) -> None:
    """Load the latest snapshot into ``lists`` (the one being loaded, when one is), one part
    per transaction, until ``deadline`` (`watchlog.Behind`: the next call goes on). Raises
    `watchlog.Gone` when no snapshot reaches the stream's first operation, or one is not of
    this stream and secret (`watchsnap.BadSnapshot`: nothing of it loaded)."""
    keys = lists.keys
    loading = lists.loading()
    if loading is None:
        found = stream.latest_seal()
        if found is None:
            raise NoSnapshot(
                f"the watch stream holds operations from {state.first} only, and no snapshot"
            )
        try:
            seal = watchsnap.decode_seal(keys.snapshot_mac, found[1])
        except watchsnap.BadSnapshot as e:
            raise NoSnapshot(str(e)) from None
        why = watchsnap.usable(seal, state.id, secret_check(keys.check()), state.first)
        if why is not None:
            raise NoSnapshot(why)
        loading = watchsnap.Loading(found[1], 0, seal.first_part, 0)
        lists.begin_load(loading)
        loading = lists.loading()
        if loading is None:  # another worker loaded it all meanwhile
            return
    seal = watchsnap.decode_seal(keys.snapshot_mac, loading.seal)
    if seal.seq + 1 < state.first:  # compacted past it since: done, it would be emptied again
        _newer_sealed(lists, stream, loading.seal, f"operation {state.first - 1} purged")
    at, index = loading.search_from, loading.next_index
    while True:
        searched, found = at, stream.part_from(seal.seq, at)
        if found is None:
            missing = f"watch snapshot {seal.seq}: part {index} is not on {stream.snap_name}"
            _unless_superseded(lists, stream, loading.seal, index, missing)
            raise Behind(0, seal.seq)  # another worker went on meanwhile: the next call goes on
        at, raw = found
        try:
            part = watchsnap.decode_part(keys.snapshot_mac, raw)
            if lists.load_part(seal, part, at, searched=searched):
                return
        except watchsnap.BadSnapshot as e:
            _unless_superseded(lists, stream, loading.seal, index, str(e))
            raise Behind(0, seal.seq) from None
        now = lists.loading()  # another worker may be ahead, or done
        if now is None:
            return
        at, index = max(at + 1, now.search_from), now.next_index
        if time.monotonic() > deadline:
            raise Behind(0, seal.seq)


def _newer_sealed(lists: LmdbWatchSet, stream: WatchStream, sealed: bytes, why: str) -> None:
    """`Superseded` (the lists emptied, to load it) when the latest snapshot is not the one
    being loaded (``sealed``: its seal); ``why`` it was asked."""
    latest = stream.latest_seal()
    if latest is not None and latest[1] != sealed:
        lists.abandon_load()
        raise Superseded(f"a newer watch snapshot was sealed while one was loaded ({why})")


def _unless_superseded(
    lists: LmdbWatchSet, stream: WatchStream, sealed: bytes, index: int, why: str
) -> None:
    """Part ``index`` of the snapshot being loaded (``sealed``: its seal) is missing or
    refused (``why``). A newer snapshot sealed since (a compaction purged this one):
    `Superseded`, the lists emptied to load that one. This one still the latest (a purge by
    hand, limits put on the snapshot stream, an altered message): `NoSnapshot`, noted, the
    parts loaded kept; starting it again at every call would never end, each call a 503
    "still applying" with no alert, the lists emptied again and again. Returns when another
    worker went past that part meanwhile (the caller answers "still applying")."""
    _newer_sealed(lists, stream, sealed, why)
    now = lists.loading()
    if now is None or now.seal != sealed or now.next_index != index:
        return
    raise NoSnapshot(
        f"{why}, and no newer snapshot: the lists cannot be loaded until a compaction seals "
        "another (responder watch-compact on a node whose lists are whole)"
    )
