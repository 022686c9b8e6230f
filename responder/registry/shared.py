"""The registry shared by several nodes: its file's bytes in one key of a JetStream key-value bucket.

Each node keeps serving its own registry file (workers reload it within a second,
`responder.registry.lookup`); what several nodes share is which file that is. The bucket
(``JPKI_REGISTRY`` unless configured) holds the whole normalized file under one key, so a
change is one atomic value with a revision:

- a change (`responder registry add|update|suspend|resume|end|import|migrate` with
  ``--nats``) first takes the bucket's newest registry into the local file if it differs,
  then writes its result to the bucket only if the bucket is still at the revision it read
  (compare-and-set: two operators on two nodes cannot overwrite each other; the second is
  refused and runs again), and only then audits and writes its local file;
- every node runs `responder registry sync --follow`, which watches the key and writes each
  new value to the node's file, audited there (action ``replicate``), so each node's
  hash-chained audit log (Ord §73(3)'s 動作の記録 of the registry) still accounts for every
  change of its file and `verify-audit` holds on every node.

This module is the bucket's I/O only (`SharedRegistry`); what a change or a replication
writes is `responder.registry.cli`'s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from crlbuilder.jetstream import (
    Cluster,
    ClusterError,
    StreamMissing,
    replicas_for,
    through_election,
)
from crlbuilder.natsservers import parse_servers
from responder.registry.cliargs import DEFAULT_BUCKET

KEY: Final = "registry"
CHECK_EVERY: Final = 2.0
"""Seconds between `SharedRegistry.next`'s direct reads of the key (beside its watch)."""


class Conflict(Exception):
    """The bucket moved past the revision a change started from: it was not written."""


@dataclass(frozen=True, slots=True)
class Shared:
    """The registry as the bucket holds it."""

    revision: int
    data: bytes


class SharedRegistry:
    """One connection to the registry bucket (blocking, `crlbuilder.jetstream.Cluster`)."""

    def __init__(
        self, source: str, bucket: str = DEFAULT_BUCKET, *, replicas: int = 0, create: bool = True
    ) -> None:
        """Connect to the servers of ``source`` and open ``bucket`` (created when missing and
        ``create``: a change, the registry admin's; a sync only reads it, and a bucket not
        made yet is `StreamMissing`, its NATS user may not create it: `crlbuilder.natsconfig`).

        `ClusterError` when no server answers or the bucket cannot be opened now (the cluster
        electing: a command that runs until stopped tries again); `ValueError` when ``source``
        names no NATS server or ``bucket`` is no bucket name (trying again changes nothing).
        """
        servers = parse_servers(source)
        self.cluster = Cluster(servers)
        self.bucket = bucket

        async def open_kv() -> KeyValue:
            try:
                return await through_election(lambda: self.cluster.js.key_value(bucket))
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    raise StreamMissing(
                        f"registry bucket {bucket} does not exist yet: the first change made "
                        "with --nats creates it, this node only reads it"
                    ) from None
                cfg = KeyValueConfig(
                    bucket=bucket,
                    history=16,
                    replicas=replicas_for(self.cluster.cluster_size(), replicas),
                )
                return await self.cluster.js.create_key_value(cfg)

        try:
            self.kv = self.cluster.run(open_kv())
        except nats.js.errors.InvalidBucketNameError:
            self.cluster.close()
            raise ValueError(f"bucket {bucket!r}: not a valid name") from None
        except StreamMissing:
            self.cluster.close()
            raise
        except (nats.errors.Error, TimeoutError) as e:
            self.cluster.close()
            raise ClusterError(f"registry bucket {bucket}: {e}") from None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._seen = 0
        """The newest revision `next` returned."""
        self._checked = 0.0
        """When `next` last read the key directly (monotonic seconds)."""
        self.confirmed = 0.0
        """When `next` last read the key directly and found nothing newer than it returned
        (epoch seconds; 0: not yet): the caller's file is the newest, once it took that."""

    def get(self) -> Shared | None:
        """The newest registry in the bucket; None when none was ever written."""

        async def go() -> Shared | None:
            try:
                e = await through_election(lambda: self.kv.get(KEY))
            except nats.js.errors.KeyNotFoundError:
                return None
            return Shared(int(e.revision or 0), bytes(e.value or b""))

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"registry bucket {self.bucket}: {e}") from None

    def put(self, data: bytes, expected: int) -> int:
        """Write ``data`` if the bucket is still at revision ``expected`` (0: holds none);
        raises `Conflict` otherwise. Returns the new revision.

        A write whose acknowledgement does not come (a server lost, the bucket's stream
        electing its leader, a loaded cluster) is made again for a while (`through_election`);
        when the first one had landed, the retry finds the bucket moved on: if what it holds
        is ``data``, that is this write's revision, not a conflict."""
        tried = False

        async def once() -> int:
            nonlocal tried
            if tried:
                try:
                    e = await self.kv.get(KEY)
                except nats.js.errors.KeyNotFoundError:
                    e = None
                if e is not None and int(e.revision or 0) > expected and e.value == data:
                    return int(e.revision or 0)
            tried = True
            if expected == 0:
                return int(await self.kv.create(KEY, data))
            return int(await self.kv.update(KEY, data, last=expected))

        async def go() -> int:
            return await through_election(once)

        try:
            return self.cluster.run(go())
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            raise Conflict(
                f"the shared registry ({self.bucket}) changed on another node meanwhile; "
                "nothing was written: run the command again"
            ) from None
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"registry bucket {self.bucket}: {e}") from None

    def next(self, timeout: float) -> Shared | None:
        """The next value written to the key (the current one first), waiting at most
        ``timeout`` seconds; None when nothing came.

        The watch is an ordered consumer, which nats-py recreates when a server of the
        cluster goes; when recreating it fails (the cluster electing a leader meanwhile)
        the client only reports the error, and the watch delivers nothing ever after. So
        every `CHECK_EVERY` seconds the key is also read directly: a revision newer than
        any delivered is returned from that read, and the watch started again. A value is
        returned once, in revision order, whichever of the two saw it first.
        """

        async def go() -> Shared | None:
            if self._watcher is None:
                self._watcher = await self.kv.watch(KEY)
            try:
                e = await self._watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
            except (nats.errors.TimeoutError, TimeoutError):
                e = None
            if isinstance(e, KeyValue.Entry) and e.value is not None and e.operation is None:
                # not a delete/purge marker, the end of the initial values (None) or a stop
                return self._newer(int(e.revision or 0), bytes(e.value))
            if time.monotonic() - self._checked < CHECK_EVERY:
                return None
            self._checked = time.monotonic()
            try:
                cur = await self.kv.get(KEY)
            except nats.js.errors.KeyNotFoundError:
                self.confirmed = time.time()  # none written yet: nothing to take
                return None
            got = self._newer(int(cur.revision or 0), bytes(cur.value or b""))
            if got is None:
                self.confirmed = time.time()
            if got is not None:  # the watch missed it: it is dead, start another
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await self._watcher.stop()  # type: ignore[no-untyped-call]
                self._watcher = None
            return got

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"registry bucket {self.bucket}: {e}") from None

    def _newer(self, revision: int, data: bytes) -> Shared | None:
        """The value when its revision is newer than every one `next` returned, else None."""
        if revision <= self._seen:
            return None
        self._seen = revision
        return Shared(revision, data)

    def close(self) -> None:
        self.cluster.close()
