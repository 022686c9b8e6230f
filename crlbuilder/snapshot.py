"""Store snapshots in a JetStream object store: how a new node joins without replaying everything.

A node that joins several others (or replaces a lost one) needs the store they hold.
Replaying the record stream from its first record gives it (builds are deterministic), but
takes as long as the stream is long; so a caught-up node puts a snapshot of its store into
the object store bucket (``JPKI_SNAPSHOTS``, `put`: LMDB's consistent copy under one read
transaction, taken while its builder runs), and the new node takes the latest (`get`), then
runs its builder on the stream, which resumes after the snapshot's own stream sequence
(`META_STREAM_SEQ`, in the snapshot: the store says where to resume). Its responder says
not ready (`responder.streamlag`) until it is within the configured lag of the stream.

The snapshot holds what the store holds: statuses, sealed four facts (AES-256-GCM under
the facts key, which every node has), keyed hashes of holders; never a facts key or a
signing key. The stream keeps its records until `crlbuilder.recordcompact` purges those the
latest snapshot holds (less a tail), after a put; `put` refuses a store that stands before
the stream's first message (a node stopped across a compaction): no node could start from it.

A snapshot names the release that made it (`crlbuilder.release`) and the record stream its
store was filled from (`META_FEED_ID`): `get` refuses, nothing made, one put by a newer release
than the node's (upgrade the node first) and one of another stream than the one that stands
under the store's stream's name (deleted and made again since: the snapshot's sequences are
the old stream's, so its builder could not resume in the new one; docs/operations.md, "A
record stream made again"). The command says so by its own exit status
(`crlbuilder.cli.EXIT_SNAPSHOT_REFUSED`), on which a new node's bootstrap fails rather than
leave its builder to fill an empty store from the stream made again. Both are judged from the
object's description before its bytes are read (and again from the store read), so bytes
that cannot be read or opened, which give another status, do not hide them.

Starting empty (the builder applies the stream from its start) is right for a first node
only, so `get` says "no snapshot" (`NoSnapshot`, the command's own status
`crlbuilder.cli.EXIT_NO_SNAPSHOT`) only on JetStream's own answer that there is none: the
bucket's stream does not exist (stream not found), or the bucket holds no description of the
snapshot (no message found, or one saying it was deleted). Everything else that keeps a
snapshot from being taken (no NATS server answering, JetStream refusing or not answering,
a read that fails, bytes that are not a store: `SnapshotDamaged`) is a failure, on which a
new node's bootstrap fails and is tried again: it cannot tell whether the stream was made
again since, and an empty store filled from a stream made again is a rebuild.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import ObjectMeta, ObjectStoreConfig
from nats.js.object_store import ObjectStore

from crlbuilder import release
from crlbuilder.jetstream import Cluster, ClusterError, replicas_for
from crlbuilder.objectread import ObjectGone, ObjectReadError, read_object
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, snapshot_store
from crlbuilder.store.writer import Commit

OBJECT: Final = "store/data.mdb"
READ_IDLE: Final = 30.0
"""Seconds `get` waits for the snapshot's next chunk (`crlbuilder.objectread`): past it the
snapshot was replaced (a node put a newer one, and the old chunks were purged) or deleted."""
READ_ATTEMPTS: Final = 3
"""Reads of a snapshot replaced while read, the newer one each time, before `get` gives up."""


class SnapshotCopyError(Exception):
    """The store could not be copied for a snapshot (no room, a write refused); the message
    says where the copy was made."""


class SnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot is of (its object's description)."""

    stream_seq: int
    """The last record stream sequence applied in it: the builder resumes after it."""
    commit: int
    size: int
    release: str = ""
    """The release that put it (`crlbuilder.release`; empty: one before the field)."""
    feed: str = ""
    """The record stream its store was filled from, `META_FEED_ID` in hex (empty: none named)."""


STREAM_NOT_FOUND: Final = 10059
"""JetStream's error code for "stream not found" (``JSStreamNotFoundErr``): of all answers to
the bucket's stream info, the one that says the bucket is not there."""


class NoSnapshot(ClusterError):
    """The bucket holds no snapshot, as JetStream answered: its stream is not there (stream
    not found), or there is no description of the snapshot object in it (no message found,
    the bucket emptied or its put failed; or the latest description says it was deleted).
    Starting empty is right then (a first node). Never raised for no answer, another error
    of NATS or JetStream, or a snapshot that went while it was read (`ClusterError`)."""


class SnapshotDamaged(Exception):
    """The latest snapshot's bytes are not a store (another format, not LMDB), or not the
    store its description names; nothing made. A new one put from a caught-up node cures it."""


class SnapshotRefused(Exception):
    """The latest snapshot cannot start this node (a newer release's, another stream's), or
    this store is not to be put (its builder refused the stream); the message says why and
    what to do. Nothing was made or put."""


@dataclass(frozen=True)
class Bucket:
    name: str = "JPKI_SNAPSHOTS"
    replicas: int = 0


def _bucket(cluster: Cluster, bucket: Bucket, *, create: bool) -> ObjectStore:
    """The bucket; made when ``create`` (a put), else one that is not there has no snapshot
    (`NoSnapshot`, only when JetStream answered "stream not found" for its stream; a get
    leaves the cluster as it was)."""

    async def go() -> ObjectStore:
        if not create:
            stream = f"OBJ_{bucket.name}"
            try:
                await cluster.js.stream_info(stream)
            except nats.js.errors.NotFoundError as e:
                if e.err_code != STREAM_NOT_FOUND:
                    raise
                raise NoSnapshot(
                    f"no snapshot in {bucket.name}: the bucket is not there (a first node)"
                ) from None
            return ObjectStore(name=bucket.name, stream=stream, js=cluster.js)
        try:
            return await cluster.js.object_store(bucket.name)
        except nats.js.errors.BucketNotFoundError:
            cfg = ObjectStoreConfig(
                bucket=bucket.name,
                replicas=replicas_for(cluster.cluster_size(), bucket.replicas),
            )
            return await cluster.js.create_object_store(bucket.name, config=cfg)

    try:
        return cluster.run(go())
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"object store {bucket.name}: {e}") from None


def put(
    cluster: Cluster, bucket: Bucket, store: Store, *, stream: tuple[bytes, int] | None = None
) -> SnapshotInfo:
    """Copy ``store`` (consistently, while it may be written) and put it in the bucket.

    ``stream``: the record stream as it stands (its `crlbuilder.stream.feed_id` and first
    sequence): a store of that stream standing before its first message but one (the stream
    compacted past it, `crlbuilder.recordcompact`: a node stopped meanwhile) is refused,
    nothing put (`SnapshotRefused`): no node could start from it, and it would replace the
    snapshot they can start from.

    A store whose builder refused the record stream (`META_STREAM_REFUSED`: the stream made
    again, a newer release's message) is refused, nothing put (`SnapshotRefused`): the
    bucket's latest snapshot, perhaps put by a node filled from the new stream for the
    others' bootstrap, stays.

    The copy is made in the temporary directory (``TMPDIR``) and removed afterwards; it needs
    as much room as the store's live pages. `SnapshotCopyError` when it cannot be made,
    before anything is asked of the cluster (the bucket is made only for a copy to put)."""
    with tempfile.TemporaryDirectory(prefix="jpki-va-snapshot-") as tmp:
        copy = Path(tmp) / "store"
        try:
            snapshot_store(store, copy)
        except OSError as e:
            raise SnapshotCopyError(
                f"cannot copy the store into {tmp} for the snapshot: {e} (the copy needs as "
                "much free room there as the store's live data; TMPDIR names another place)"
            ) from None
        snap = Store.open(copy, readonly=True)
        try:
            with snap.read() as r:
                seq, commit, feed = r.stream_seq(), r.generation().commit, r.feed_id()
                refused = r.stream_refused()
        finally:
            snap.close()
        if refused:  # the old stream's store (made again), or one left behind: not the latest
            raise SnapshotRefused(
                f"this store's builder stopped applying the record stream ({refused}); "
                f"not put: {bucket.name} keeps its latest snapshot (put one from a node that "
                "applies the stream)"
            )
        if stream is not None and feed in (stream[0], b"") and stream[1] > seq + 1:
            raise SnapshotRefused(
                f"this store stands at sequence {seq} of the record stream, which no longer "
                f"holds {seq + 1} (its first is {stream[1]}: compacted since): not put, "
                f"{bucket.name} keeps its latest snapshot (put one from a caught-up node)"
            )
        data = copy / "data.mdb"
        info = SnapshotInfo(
            stream_seq=seq, commit=commit, size=data.stat().st_size,
            release=str(release.CURRENT), feed=feed.hex(),
        )  # fmt: skip
        meta = ObjectMeta(name=OBJECT, description=msgspec.json.encode(info).decode())
        obs = _bucket(cluster, bucket, create=True)

        async def go() -> None:
            with data.open("rb") as f:
                await obs.put(OBJECT, f, meta=meta)

        try:
            cluster.run(go())
        except (nats.errors.Error, TimeoutError) as e:
            raise ClusterError(f"putting the snapshot into {bucket.name}: {e}") from None
    return info


def _read(cluster: Cluster, obs: ObjectStore, bucket: Bucket, f: BinaryIO) -> str | None:
    """The latest snapshot's bytes into ``f`` (from its start); returns its description. A
    snapshot replaced while read (a node put a newer one) is read again, the newer one."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        f.seek(0)
        f.truncate()
        try:
            info, _ = cluster.run(
                read_object(cluster.js, obs, bucket.name, OBJECT, idle=READ_IDLE, sink=f.write)
            )
            return info.description
        except ObjectGone as e:
            if attempt == READ_ATTEMPTS:
                raise ClusterError(f"getting the snapshot: {e}; {attempt} reads in a row") from None
        except nats.js.errors.ObjectNotFoundError:  # there when asked: not "no snapshot"
            raise ClusterError(
                f"getting the snapshot from {bucket.name}: it was deleted while read"
            ) from None
        except (nats.errors.Error, TimeoutError, ObjectReadError) as e:
            raise ClusterError(f"getting the snapshot from {bucket.name}: {e}") from None
    raise AssertionError("unreachable")


def get(
    cluster: Cluster, bucket: Bucket, target: Path, *, feed: bytes | None = None
) -> SnapshotInfo:
    """Take the latest snapshot as the store at ``target`` (a new directory; refused when a
    store is there). The object store checks the bytes against their SHA-256 digest; the
    store's format, the release that put it and, given ``feed`` (the record stream's
    `crlbuilder.stream.feed_id` as it stands), the stream it was filled from are checked
    before it is moved into place (`SnapshotRefused`). `NoSnapshot` when the bucket holds
    none, `SnapshotDamaged` for bytes that are not the store described, `ClusterError` when
    the cluster does not answer or fails; nothing is made in each case."""
    if (target / "data.mdb").exists():
        raise sf.StoreFormatError(f"{target}: a store is already there; give a new directory")
    obs = _bucket(cluster, bucket, create=False)
    described = _check_there(cluster, obs, bucket)  # before anything is made on this node
    # refused by its description before its bytes are read: bytes that cannot be read or
    # opened (another status, on which a new node's builder fills an empty store from the
    # stream) do not hide a snapshot of a stream made again, nor a newer release's
    with contextlib.suppress(msgspec.DecodeError):  # none described: judged once read
        _refuse(bucket, msgspec.json.decode(described or "", type=SnapshotInfo), feed)
    made = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except BaseException:
        _remove_dirs(made)
        raise
    try:
        os.chmod(tmp, 0o700)
        fd = os.open(tmp / "data.mdb", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            description = _read(cluster, obs, bucket, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            info = msgspec.json.decode(description or "", type=SnapshotInfo)
        except msgspec.DecodeError:
            raise ClusterError(f"{bucket.name}/{OBJECT}: no snapshot description") from None
        _refuse(bucket, info, feed)  # again: a newer snapshot may have been read
        try:
            snap = Store.open(tmp, readonly=False)
        except sf.StoreFormatError as e:  # another format, or not LMDB
            raise SnapshotDamaged(f"the latest snapshot in {bucket.name}: {e}") from None
        try:
            with snap.read() as r:
                if r.stream_seq() != info.stream_seq:
                    raise SnapshotDamaged(
                        f"the latest snapshot in {bucket.name}: not the store its description "
                        f"names (sequence {r.stream_seq()}, described {info.stream_seq})"
                    )
                if feed is not None and r.feed_id() and r.stream_seq() and r.feed_id() != feed:
                    raise SnapshotRefused(_made_again(bucket, r.stream_seq()))
            with Commit(snap) as c:  # what the snapshot's node saw of the stream is not ours:
                c.put_stream_head(0, 0)  # not ready until this node's builder has seen it
                c.put_stream_refused("")
        finally:
            snap.close()
        (tmp / "lock.mdb").unlink(missing_ok=True)
        if target.exists():
            target.rmdir()  # an empty directory only; a non-empty one raises
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_dirs(made)
        raise
    return info


def _refuse(bucket: Bucket, info: SnapshotInfo, feed: bytes | None) -> None:
    """`SnapshotRefused` when the snapshot ``info`` describes is a newer release's, or was
    filled from another record stream than ``feed`` (the stream as it stands)."""
    refused = release.refusal(f"the latest snapshot in {bucket.name}", info.release or None)
    if refused is not None:
        raise SnapshotRefused(refused)
    if feed is not None and info.feed and info.stream_seq and info.feed != feed.hex():
        raise SnapshotRefused(_made_again(bucket, info.stream_seq))


def _made_again(bucket: Bucket, seq: int) -> str:
    return (
        f"the latest snapshot in {bucket.name} was filled from another record stream than the "
        f"one under its name now (deleted and made again since): it stands at sequence {seq} "
        "of the old one; on a node that adopted the new stream (crlbuilder stream adopt) run "
        "crlbuilder snapshot put, then start this node again; it does not start from an empty "
        "store (docs/operations.md, 'A record stream made again')"
    )


def _check_there(cluster: Cluster, obs: ObjectStore, bucket: Bucket) -> str | None:
    """The latest snapshot's description; `NoSnapshot` when the bucket holds none (a bucket
    whose put failed, emptied, or the snapshot deleted): nats-py's ``ObjectNotFoundError``,
    which it raises for JetStream's 404 to the last description (no message found; stream
    not found, the bucket deleted since) and for a description saying deleted, nothing else."""

    async def go() -> str | None:
        return (await obs.get_info(OBJECT)).description

    try:
        return cluster.run(go())
    except nats.js.errors.ObjectNotFoundError:
        raise NoSnapshot(
            f"no snapshot in {bucket.name}: the bucket holds none (a first node)"
        ) from None
    except (nats.errors.Error, TimeoutError) as e:
        raise ClusterError(f"getting the snapshot from {bucket.name}: {e}") from None


def latest_description(cluster: Cluster, bucket: Bucket) -> str | None:
    """The latest snapshot's description as it stands (`NoSnapshot` when there is none,
    `ClusterError` when the cluster fails): to tell a snapshot replaced since it was read."""
    return _check_there(cluster, _bucket(cluster, bucket, create=False), bucket)


def _remove_dirs(made: list[Path]) -> None:
    """Remove the directories a failed get made for its target (deepest first, empty only)."""
    for d in made:
        with contextlib.suppress(OSError):
            d.rmdir()
