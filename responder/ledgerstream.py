"""The service's ledger across nodes (帳簿, Act §40; 報告書, Act §41): every node's counts on one stream.

Each node counts what it provides in its own ledger (`responder.ledger`): per worker
file (a random file id) and slot, an absolute counter that only grows. Several nodes
make one service, and its 帳簿 and 報告書 are the service's: so each node ships its
counters to one JetStream stream (``JPKI_LEDGER``), one subject per counter,
``jpki.ledger.JPKI_LEDGER.<node>.<file id>.<slot>`` (a host name, a random hex id and a
number: no party or other personal data), and any node gathers the stream into its
ledger's service table (each message taken as its subject's counter: `bound`), from which
``responder report --nats ...`` (and ``/reports/`` on a node of a cluster) reports.

Exact, by construction rather than by care:

- a message is one counter's absolute value, keyed by (node, worker file, slot); the
  service table keeps the ``max`` per key (`Ledger.merge_service`), so a message received
  twice, replayed, or overtaken by a newer value counts once (messages carry no JetStream
  message id: the duplicate window is the whole stream's, where another node could take
  the id of a counter this node will ship and have it dropped);
- a node marks a counter shipped only once JetStream acknowledged it, and a ledger that
  ships keeps each worker file (does not fold it into per-day totals) until its final
  counters are shipped (`Ledger._retire`): a node that crashes loses nothing that its
  worker files hold (every count is in them before its answer is sent, `LedgerWriter`),
  and ships it when it runs again (`ship`: after a restart the master's collection, or
  ``responder report`` on that node's ledger directory);
- nothing is subtracted or re-derived: the service's count is the sum of every node's
  counters at their latest shipped value;
- what a node folded into per-day totals while it ran alone, before its first shipment, is
  shipped then as the counters of one more file (`Ledger.ship_pending`), once.

Bounded: the counters are absolute, so the stream keeps the latest message of each subject
only (``max_msgs_per_subject = 1``, `ensure_stream`): one message per counter that ever
was, whatever the number of collections (a counter is one party's provisions of one kind
by one method on one day in one worker file: ~100 busy ones a day per worker make
36,500 messages, ~12 MB, per worker and year), where every collection used to add one per
grown counter (36,000 messages, ~10 MB, an hour per worker: bench/bench_ledger_stream.py).
Shipments of one node are serialized (`Ledger.ship_lock`), so each subject's last
message is its counter's largest value. A
stream made before this bound keeps everything: it is refused (`StreamUnbounded`, which
says what the operator does); a stream deleted and made again is told by its creation
time (`stream_id`): every node ships its whole ledger to it (`Ledger.ship_pending`) and
gathers it from the start (`Ledger.follow_service_stream`).

Each shipment's outcome is kept in the ledger (`Ledger.mark_shipped` with its time, or
`Ledger.ship_failed`, a connection that could not be made included), from where
`responder.shipgauges` exports it on /metrics (JpkiVaLedgerShippingFailing); so is each
gathering's (`exchange`: `Ledger.gathered`, `Ledger.gather_failed`;
JpkiVaLedgerGatheringStale).

Who exchanges: on a node, worker 0's collection cycle (`responder.app.JpkiApp`, every
``[ledger] collect_interval``), and an operator's ``responder report --nats``. A render of
``/reports/`` does not: anyone may ask for the report, and it reads the service ledger as
last gathered, saying when that was (`responder.report.ledger_as_of`).

So after a node crash and its restart the service report equals what the parties received,
none lost, none doubled. While a node is down, its counts since its last shipment (at most
one collection interval) are missing from the other nodes' reports until it ships them.
No personal data: party ids, services, methods, days and counts only.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from crlbuilder.jetstream import (
    Cluster,
    ClusterError,
    StreamUnbounded,
    ensure_stream,
    through_election,
)
from responder.config import ClusterConfig
from responder.ledger import Ledger, NodeNameChanged, SlotCount, is_counter

DEFAULT_STREAM: Final = "JPKI_LEDGER"
SUBJECT_PREFIX: Final = "jpki.ledger."
_NODE_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class GatherFailed(ClusterError):
    """This node's counters were shipped, but every node's could not be gathered (`exchange`)."""


def default_node() -> str:
    """This node's name on the ledger stream: the host name, in subject-safe characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "node"


PER_SUBJECT: Final = 1
"""Messages the ledger stream keeps per subject, i.e. per counter: its latest value."""


def _subjects(stream: str) -> str:
    return f"{SUBJECT_PREFIX}{stream}.>"


def subject(stream: str, c: SlotCount) -> str:
    """The subject of counter ``c``: its node, worker file and slot (its identity)."""
    return f"{SUBJECT_PREFIX}{stream}.{c.node}.{c.file_id}.{c.slot}"


def stream_id(cluster: Cluster, stream: str, known: str | None = None) -> str:
    """The ledger stream as it is now, made (`ensure_stream`, bounded) if missing: its
    creation time, which tells a stream deleted and made again from the one shipped to.

    A stream other than ``known`` (the one this ledger already shipped to or gathered from)
    is refused while it holds an earlier release's one-subject-per-node messages (its bound
    set in place). That question walks the server's index of every subject of the stream
    (~40 ms for one node-year's 146,000 counters on nats-server 2.9), so it is asked once
    per stream: once bounded, no such message is added (this release's credentials may not
    publish the bare node subject, and an earlier release refuses a bounded stream)."""
    ensure_stream(cluster, stream, [_subjects(stream)], max_msgs_per_subject=PER_SUBJECT)

    old_format = f"{SUBJECT_PREFIX}{stream}.*"  # an earlier release's: one subject per node

    async def go() -> str:
        sid = _created(await through_election(lambda: cluster.js.stream_info(stream)), stream)
        if sid == known:
            return sid
        info = await through_election(
            lambda: cluster.js.stream_info(stream, subjects_filter=old_format)
        )
        if info.state.subjects:
            raise StreamUnbounded(
                f"stream {stream} still holds an earlier release's messages on {old_format} "
                f"(its bound set in place, nats-server keeps what was there): purge them with "
                f"an admin credential (nats stream purge {stream} --subject '{old_format}'), "
                f"or delete the stream (docs/operations.md, the ledger stream)"
            )
        return sid

    try:
        return cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"stream {stream}: {e}") from None


def _created(info: api.StreamInfo, stream: str) -> str:
    if info.created is None:
        raise ClusterError(f"stream {stream}: the server gave no creation time")
    return info.created.isoformat()


def check_node(node: str) -> str:
    if not _NODE_RE.fullmatch(node):
        raise ValueError(f"node name {node!r}: 1 to 64 of A-Z a-z 0-9 _ -")
    return node


ACK_WAIT: Final = 10.0
"""Seconds a shipment waits for its last publishes' acknowledgements after sending them, and a
publish for a slot among the acknowledgements awaited (nats-py's 4,000)."""


def ship(
    cluster: Cluster,
    ledger: Ledger,
    node: str,
    stream: str = DEFAULT_STREAM,
    *,
    clock: Callable[[], float] = time.time,
) -> int:
    """Publish this node's counters that grew since they were last shipped; returns how many.

    Marked shipped only once every publish was acknowledged, with the time the shipment
    started (every counter merged by then is on the stream, even when none had grown): a
    failure is counted in the ledger (`Ledger.ship_failed`) and raises `ClusterError`, and
    the next call ships them again (a repeat changes nothing). A ``node`` other than the one
    this ledger shipped to ``stream`` as is refused so (`Ledger.shipped_as`): its counters
    would count twice.
    """
    check_node(node)
    started = int(clock())
    with ledger.ship_lock():
        try:
            shipped = _ship(cluster, ledger, node, stream)
        except ClusterError:
            ledger.ship_failed()
            raise
        except NodeNameChanged as e:  # shipped as another node before: refused, counted
            ledger.ship_failed()
            raise ClusterError(str(e)) from None
        ledger.mark_shipped(shipped, started)
    return len(shipped)


def _ship(cluster: Cluster, ledger: Ledger, node: str, stream: str) -> list[SlotCount]:
    """The counters published and acknowledged (not yet marked shipped)."""
    sid = stream_id(cluster, stream, ledger.stream_followed()[0])
    pending = ledger.ship_pending(node, sid)
    if not pending:
        return []

    async def go() -> None:
        # No Nats-Msg-Id: JetStream's duplicate window is the stream's, and every node may set
        # any id on its own subject, so an id this node will ship could be taken first and
        # this counter dropped, acknowledged, as a "duplicate". A repeat is merged once (max).
        futures = []
        for c in pending:
            futures.append(
                await cluster.js.publish_async(
                    subject(stream, c), msgspec.json.encode(c), stream=stream, wait_stall=ACK_WAIT
                )
            )
        # the acknowledgements are awaited for at most ACK_WAIT (and a publish for a free slot
        # among those in flight, ``wait_stall``): one the server never sends (a stream's
        # leader lost meanwhile) would otherwise hold this shipment, and worker 0's every
        # later collection, for ever
        try:
            await asyncio.wait_for(asyncio.gather(*futures), ACK_WAIT)
        except TimeoutError:
            raise ClusterError(
                f"shipping the ledger to {stream}: not acknowledged within {ACK_WAIT:g} s"
            ) from None
        # Acknowledged by the stream ``sid`` still, or by one made again since it was asked
        # (deleted meanwhile: an operator, a restore): not marked shipped then, or a file
        # shipped whole there would be folded and shipped again in its new ``history``
        # beside its own subject; the next shipment rebases on the new stream instead.
        info = await through_election(lambda: cluster.js.stream_info(stream))
        if _created(info, stream) != sid:
            raise ClusterError(
                f"shipping the ledger to {stream}: the stream was made again during the "
                "shipment; the next one ships the whole ledger to it"
            )

    try:
        cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"shipping the ledger to {stream}: {e}") from None
    return pending


FETCH_BATCH: Final = 1000
"""Messages asked of the ledger stream per fetch while gathering."""
FETCH_TIMEOUT: Final = 5.0
"""Seconds one fetch of a gathering waits for its messages."""


def gather(cluster: Cluster, ledger: Ledger, stream: str = DEFAULT_STREAM) -> int:
    """Merge every node's counters from the stream into ``ledger``'s service table, from where
    it stopped last; returns the messages read. Afterwards ``ledger.view = "service_ledger"``
    reports the whole service (the stream replaced since the last time: from its start,
    `Ledger.follow_service_stream`). A read that stops short of the stream's last message when
    it began (a fetch timed out) merges what it read, then raises ClusterError: the gathering
    is not whole, and `exchange` must not say "every node's counts as shipped by then"; the
    next one reads on from there."""
    sid = stream_id(cluster, stream, ledger.stream_followed()[1])
    ledger.follow_service_stream(sid)
    after = ledger.service_seq()

    async def go() -> tuple[list[tuple[int, str, bytes]], int]:
        info = await through_election(lambda: cluster.js.stream_info(stream))
        last = int(info.state.last_seq)
        if last <= after:
            return [], last
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
        )
        sub = await through_election(
            lambda: cluster.js.pull_subscribe(_subjects(stream), stream=stream, config=cfg)
        )
        out: list[tuple[int, str, bytes]] = []
        try:
            while not out or out[-1][0] < last:
                try:
                    msgs = await sub.fetch(batch=FETCH_BATCH, timeout=FETCH_TIMEOUT)
                except (nats.errors.TimeoutError, TimeoutError):
                    break  # short of ``last``: what was read is merged, then refused whole
                out.extend((m.metadata.sequence.stream, m.subject, m.data) for m in msgs)
        finally:
            await sub.unsubscribe()
        # Read from the stream ``sid`` still: one made again since (deleted meanwhile) holds
        # every node's whole ledger, its folded files in its ``history``; read on from the old
        # one's sequence beside the old counters, a file would count twice (or be missed).
        # The next gathering starts the new one afresh (`Ledger.follow_service_stream`).
        info = await through_election(lambda: cluster.js.stream_info(stream))
        if _created(info, stream) != sid:
            raise ClusterError(
                f"gathering the ledger from {stream}: the stream was made again meanwhile; "
                "the next gathering reads it from its start"
            )
        return out, last

    try:
        got, last = cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"gathering the ledger from {stream}: {e}") from None
    if not got:
        return 0
    counts: Sequence[SlotCount] = [
        c for _, subject, data in got if (c := bound(subject, data, stream)) is not None
    ]
    if not ledger.merge_service(counts, max(seq for seq, _, _ in got), sid):
        raise ClusterError(
            f"gathering the ledger from {stream}: the stream was made again meanwhile; "
            "another gathering reads it from its start"
        )
    if got[-1][0] < last:
        raise ClusterError(
            f"gathering the ledger from {stream}: read to message {got[-1][0]} of {last} "
            f"before a fetch timed out ({FETCH_TIMEOUT:g} s); what was read is merged, the "
            "next gathering reads on"
        )
    return len(got)


def bound(subject: str, data: bytes, stream: str = DEFAULT_STREAM) -> SlotCount | None:
    """The counter a ledger message carries, when it is its subject's counter: a node's
    credential may publish below its own subject only (`crlbuilder.natsconfig`), so the
    subject says whose counter it is, and a message naming another node, file or slot in its
    body (or on a subject of the unbounded stream's format, one per node), or not a counter a
    worker file could hold (`responder.ledger.is_counter`: an unknown kind of provision
    would make every report of the service raise, a negative count subtract), is left out
    (None) rather than merged or stopping every node's gathering there."""
    prefix = f"{SUBJECT_PREFIX}{stream}."
    if not subject.startswith(prefix):
        return None
    try:
        c = msgspec.json.decode(data, type=SlotCount)
    except msgspec.DecodeError:  # ValidationError included
        return None
    if (
        subject[len(prefix) :] != f"{c.node}.{c.file_id}.{c.slot}"
        or not _NODE_RE.fullmatch(c.node)
        or not is_counter(c)
    ):
        return None  # another counter's, or no counter (an unknown kind, a negative count...)
    return c


def exchange(
    ledger: Ledger,
    cluster_config: ClusterConfig,
    *,
    merge: bool = True,
    clock: Callable[[], float] = time.time,
) -> None:
    """Ship this node's counters and (with ``merge``) gather every node's, as ``[cluster]``
    configures; one connection for both. No connection is a failed shipment too.

    With ``merge`` the outcome is kept in the ledger as the gathering's
    (`Ledger.gathered` with the time the exchange started, or `Ledger.gather_failed`): a
    gathering counts as done only after this node's own shipment, so that "gathered at T"
    means every node's counts as shipped by then, this node's included (a gathering after a
    failed shipment would read the others' newer counts beside this node's older ones).
    What a report rendered from the service ledger says it is as of
    (`responder.report.ledger_as_of`), and jpkiva_ledger_last_gathered_timestamp_seconds."""
    from crlbuilder.natsservers import parse_servers

    try:
        servers = parse_servers(cluster_config.nats)
    except ValueError as e:
        raise ClusterError(str(e)) from None
    started = int(clock())
    try:
        cluster = Cluster(servers, auth=cluster_config.nats_auth(), once=True)
    except ClusterError:
        ledger.ship_failed()
        if merge:
            ledger.gather_failed()
        raise
    try:
        try:
            ship(cluster, ledger, cluster_config.node or default_node(),
                 cluster_config.ledger_stream, clock=lambda: started)  # fmt: skip
            if merge:
                try:
                    gather(cluster, ledger, cluster_config.ledger_stream)
                except ClusterError as e:
                    raise GatherFailed(str(e)) from None
        except ClusterError:
            if merge:
                ledger.gather_failed()
            raise
        if merge:
            ledger.gathered(started)
    finally:
        cluster.close()
