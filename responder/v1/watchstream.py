"""The watch stream's I/O in one worker: publish an operation, read one, the last sequence.

The operations of `responder.v1.watchlog` on the JetStream stream ``JPKI_WATCH`` (subject
``jpki.watch``; file storage, replicated like the other streams, no age limit: a node
that joins replays it whole, and an operation the stream lost stops replication rather
than be passed over). Each worker process connects on first use, after the fork, and uses
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
from typing import TYPE_CHECKING, Any, Final, TypeVar

import nats.errors
import nats.js.errors

from crlbuilder.jetstream import Cluster, ClusterError, ensure_stream, parse_servers
from responder.v1.holddown import HoldDown
from responder.v1.watchlog import Gone, catch_up, op_id, stream_id

if TYPE_CHECKING:
    from responder.v1.watchdb import LmdbWatchSet

T = TypeVar("T")

STREAM: Final = "JPKI_WATCH"
SUBJECT: Final = "jpki.watch"


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
    ) -> None:
        self.servers = parse_servers(source)
        self.timeout = timeout
        self.name = name
        self.subject = SUBJECT if name == STREAM else f"jpki.watch.{name}"
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
                cluster = Cluster(self.servers, connect_timeout=self.timeout)
            except ClusterError as e:
                raise StreamUnavailable(str(e)) from None
            try:
                ensure_stream(cluster, self.name, [self.subject], duplicate_window_seconds=120)
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
        except nats.js.errors.NotFoundError:  # the stream answered
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
        return self.state()[0]

    def state(self) -> tuple[int, bytes]:
        """The stream's last sequence and its identity (`watchlog.stream_id`: a stream deleted
        and made again under its name is another)."""
        info = self._call(lambda c: c.js.stream_info(self.name))
        created = info.created
        if created is None:
            raise StreamUnavailable(f"watch stream {self.name}: JetStream gave no creation time")
        return int(info.state.last_seq), stream_id(self.name, created)

    def fetch(self, seq: int) -> bytes | None:
        """Operation ``seq``'s bytes; None when the stream does not hold it (deleted)."""
        try:
            msg = self._call(lambda c: c.js.get_msg(self.name, seq=seq))
        except nats.js.errors.NotFoundError:
            return None
        return bytes(msg.data or b"")

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
    clock. Raises `StreamUnavailable`, `watchlog.Behind`, `watchlog.Gone` (noted in the
    lists for the metrics; `watchlog.OtherStream` when the stream was made again since the
    lists applied it), `watchlog.SecretMismatch`."""
    deadline = time.monotonic() + wait
    last, stream_id = stream.state()
    lists.bind(stream_id)
    if target is None:
        target = last
    now = time.monotonic()
    if now - _noted.get(id(lists), 0.0) >= SEEN_EVERY:
        lists.note_seen(target, int(time.time()))
        _noted[id(lists)] = now
    try:
        return catch_up(lists, stream.fetch, target, deadline=deadline, clock=time.monotonic)
    except Gone as e:
        lists.note_gap(str(e))
        raise
