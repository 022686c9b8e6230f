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

from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from crlbuilder.jetstream import Cluster, ClusterError, parse_servers, replicas_for

DEFAULT_BUCKET: Final = "JPKI_REGISTRY"
KEY: Final = "registry"


class Conflict(Exception):
    """The bucket moved past the revision a change started from: it was not written."""


@dataclass(frozen=True, slots=True)
class Shared:
    """The registry as the bucket holds it."""

    revision: int
    data: bytes


class SharedRegistry:
    """One connection to the registry bucket (blocking, `crlbuilder.jetstream.Cluster`)."""

    def __init__(self, source: str, bucket: str = DEFAULT_BUCKET, *, replicas: int = 0) -> None:
        try:
            servers = parse_servers(source)
        except ValueError as e:
            raise ClusterError(str(e)) from None
        self.cluster = Cluster(servers)
        self.bucket = bucket

        async def open_kv() -> KeyValue:
            try:
                return await self.cluster.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                cfg = KeyValueConfig(
                    bucket=bucket,
                    history=16,
                    replicas=replicas_for(self.cluster.cluster_size(), replicas),
                )
                return await self.cluster.js.create_key_value(cfg)

        try:
            self.kv = self.cluster.run(open_kv())
        except (nats.errors.Error, TimeoutError) as e:
            self.cluster.close()
            raise ClusterError(f"registry bucket {bucket}: {e}") from None
        self._watcher: KeyValue.KeyWatcher | None = None

    def get(self) -> Shared | None:
        """The newest registry in the bucket; None when none was ever written."""

        async def go() -> Shared | None:
            try:
                e = await self.kv.get(KEY)
            except nats.js.errors.KeyNotFoundError:
                return None
            return Shared(int(e.revision or 0), bytes(e.value or b""))

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"registry bucket {self.bucket}: {e}") from None

    def put(self, data: bytes, expected: int) -> int:
        """Write ``data`` if the bucket is still at revision ``expected`` (0: holds none);
        raises `Conflict` otherwise. Returns the new revision."""

        async def go() -> int:
            if expected == 0:
                return int(await self.kv.create(KEY, data))
            return int(await self.kv.update(KEY, data, last=expected))

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
        ``timeout`` seconds; None when nothing came."""

        async def go() -> Shared | None:
            if self._watcher is None:
                self._watcher = await self.kv.watch(KEY)
            try:
                e = await self._watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
            except (nats.errors.TimeoutError, TimeoutError):
                return None
            if e is None or e.value is None or e.operation is not None:
                return None  # the end of the initial values, or a delete/purge marker
            return Shared(int(e.revision or 0), bytes(e.value))

        try:
            return self.cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"registry bucket {self.bucket}: {e}") from None

    def close(self) -> None:
        self.cluster.close()
