"""The record stream's compaction (`crlbuilder.recordcompact`, `crlbuilder stream compact`):
its messages purged through the latest store snapshot, less a tail; never without a snapshot
that is there, complete, verified and of this stream; nodes from the snapshot end where the
others are, nodes behind the purge refuse the stream."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from nats.js.api import ObjectMeta

from crlbuilder import recordcompact, release, snapshot
from crlbuilder.build import StreamTruncated
from crlbuilder.cli import EXIT_COMPACTION_REFUSED
from crlbuilder.config import BuilderConfig
from crlbuilder.jetstream import Cluster
from crlbuilder.manifest import Manifest
from crlbuilder.recordcompact import CompactionRefused, purge_through, tail_start
from crlbuilder.snapshot import SnapshotInfo
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from crlbuilder.stream import Consumer, Delivered
from tests.support.nats import NatsCluster, free_ports
from tests.support.synth import synth_population
from tests.test_stream import (
    consume,
    dump,
    flags,
    names,
    node_config,
    publish_files,
    refused,
    same_key,
    stream_seq,
)

FEED = bytes(range(16))


def _info(seq: int, *, feed: bytes = FEED, rel: str | None = None) -> SnapshotInfo:
    return SnapshotInfo(stream_seq=seq, commit=3, size=4096,
                        release=rel or str(release.CURRENT), feed=feed.hex())  # fmt: skip


# ---------------------------------------------------------------------------
# Sans-I/O: what is purged, what is refused
# ---------------------------------------------------------------------------


def test_the_purge_goes_through_the_snapshot_less_the_tail_never_past_either() -> None:
    assert purge_through(_info(50), feed=FEED, first=1, last=80, tail_from=81) == 50
    assert purge_through(_info(50), feed=FEED, first=1, last=80, tail_from=31) == 30
    assert purge_through(_info(50), feed=FEED, first=31, last=80, tail_from=31) == 0  # done
    assert purge_through(_info(50), feed=FEED, first=51, last=80, tail_from=81) == 0
    assert purge_through(_info(0), feed=FEED, first=1, last=80, tail_from=81) == 0  # empty store
    assert purge_through(_info(80), feed=FEED, first=81, last=80, tail_from=81) == 0  # none held


@pytest.mark.parametrize(
    ("info", "first", "why"),
    [
        (_info(50, feed=bytes(16)), 1, "another instance of the record stream"),
        (_info(50, feed=b""), 1, "names no record stream"),
        (_info(50, rel="99.0"), 1, "newer than this node's"),
        (_info(90), 1, "past the stream's last 80"),
        (_info(40), 42, "purged through 41, past the latest store snapshot"),
    ],
)
def test_a_snapshot_that_cannot_be_relied_on_refuses_the_purge(
    info: SnapshotInfo, first: int, why: str
) -> None:
    with pytest.raises(CompactionRefused, match=why):
        purge_through(info, feed=FEED, first=first, last=80, tail_from=81)


def test_the_tail_is_the_messages_of_the_last_days_before_the_last_one() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = {s: t0 + timedelta(hours=s) for s in range(1, 101) if s not in (70, 71, 72)}
    asked: list[int] = []

    def at(seq: int) -> tuple[int, datetime] | None:  # the next message at or after seq
        asked.append(seq)
        found = min((s for s in times if s >= seq), default=None)
        return None if found is None else (found, times[found])

    assert tail_start(1, 100, at, timedelta(hours=10)) == 90  # 90..100 within 10 h of 100
    assert len(asked) <= 9  # a binary search, not a walk
    # 70..72 deleted (alone, inside the stream): the tail starts at them, its first message 73
    assert tail_start(1, 100, at, timedelta(hours=29)) == 70
    assert tail_start(1, 100, at, timedelta(0)) == 101  # no tail
    assert tail_start(1, 100, at, timedelta(days=30)) == 1  # everything is the tail
    assert tail_start(101, 100, at, timedelta(days=1)) == 101  # nothing held
    for s in (97, 98, 99, 100):  # the last ones deleted alone: measured from 96, the last held
        del times[s]
    asked.clear()
    assert tail_start(1, 100, at, timedelta(hours=10)) == 86
    assert len(asked) <= 18
    assert tail_start(1, 100, at, timedelta(0)) == 101
    times.clear()
    assert tail_start(1, 100, at, timedelta(days=1)) == 101  # every one deleted


# ---------------------------------------------------------------------------
# Integration: a real cluster
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory, demo_pki: tuple[Path, Manifest]) -> Path:
    return synth_population(tmp_path_factory, demo_pki[0], holders=120, seed=5)


def _put(cfg: BuilderConfig, cluster: NatsCluster, bucket: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "put", *flags(cfg),
         "--snapshot-bucket", bucket],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _compact(
    cfg: BuilderConfig, bucket: str, keep_days: str = "0"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "stream", "compact", *flags(cfg),
         "--snapshot-bucket", bucket, "--keep-days", keep_days],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _first(cfg: BuilderConfig, cluster: NatsCluster) -> int:
    c = Cluster(cluster.urls)
    try:
        return int(c.run(c.js.stream_info(names(cfg).name)).state.first_seq)
    finally:
        c.close()


def _refused_alone(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == EXIT_COMPACTION_REFUSED, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == "", out.stderr
    (line,) = [
        ln for ln in out.stderr.splitlines() if "error" in ln
    ]  # beside the no-credential line
    assert "nothing purged" in line and all(w in line for w in words), line


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_compaction_purges_through_the_snapshot_and_nodes_end_where_the_others_are(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Before: every message stayed on the stream for ever. After a put and a compaction the
    stream's first message is the snapshot's sequence + 1 (less the tail: none with 0 days,
    everything with a tail longer than the stream); a new node from the snapshot ends with the
    store of the node that applied everything; a node behind the purge refuses the stream
    (exit 3 of its builder, /readyz says why) and its store is not put as the snapshot."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact")
    lag = node_config(tmp_path / "lag", demo_pki[0], cluster.source, "compact")
    same_key(Path(a.keys.facts_key_file), Path(lag.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    assert len(files) >= 3
    n0 = publish_files(a, cluster, files[:1])
    assert consume(lag, cluster) == n0  # stopped for maintenance from here on
    n1 = n0 + publish_files(a, cluster, files[1:2])
    assert consume(a, cluster) == n1
    put = _put(a, cluster, "SNAP_COMPACT")
    assert put.returncode == 0, put.stderr
    assert msgspec.json.decode(put.stdout)["stream_seq"] == n1
    n2 = n1 + publish_files(a, cluster, files[2:])
    assert consume(a, cluster) == n2

    kept = _compact(a, "SNAP_COMPACT", keep_days="1")  # every message is of the last day
    assert kept.returncode == 0, kept.stderr
    assert msgspec.json.decode(kept.stdout)["purged_through"] == 0 and _first(a, cluster) == 1

    out = _compact(a, "SNAP_COMPACT")
    assert out.returncode == 0, out.stderr
    done = msgspec.json.decode(out.stdout)
    assert done["snapshot_seq"] == n1 and done["purged_through"] == n1
    assert _first(a, cluster) == n1 + 1 and done["first"] == n1 + 1 and done["last"] == n2
    assert consume(a, cluster) == n2 and refused(a) == ""  # a node past the purge goes on
    again = _compact(a, "SNAP_COMPACT")  # nothing more to purge: 0, not an error
    assert again.returncode == 0 and msgspec.json.decode(again.stdout)["purged_through"] == 0

    new = node_config(tmp_path / "new", demo_pki[0], cluster.source, "compact")
    same_key(Path(a.keys.facts_key_file), Path(new.keys.facts_key_file))
    got = subprocess.run(
        [sys.executable, "-m", "crlbuilder.cli", "snapshot", "get", *flags(new),
         "--snapshot-bucket", "SNAP_COMPACT"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert consume(new, cluster) == n2
    assert dump(new) == dump(a)

    with pytest.raises(StreamTruncated, match=f"no longer holds sequence {n0 + 1} "):
        consume(lag, cluster)
    assert stream_seq(lag) == n0 and f"its first is {n1 + 1}" in refused(lag)
    stale = _put(lag, cluster, "SNAP_COMPACT")  # a stopped node's timer: not put over a's
    assert stale.returncode == 2 and "not put" in stale.stderr, stale.stderr
    s = Store.open(Path(lag.store.path), readonly=False)  # even before its builder said so
    try:
        with Commit(s) as w:
            w.put_stream_refused("")
    finally:
        s.close()
    stale = _put(lag, cluster, "SNAP_COMPACT")
    assert stale.returncode == 2 and f"which no longer holds {n0 + 1}" in stale.stderr
    c = Cluster(cluster.urls)
    try:
        info = msgspec.json.decode(
            snapshot.latest_description(c, snapshot.Bucket("SNAP_COMPACT")) or "",
            type=SnapshotInfo,
        )
    finally:
        c.close()
    assert info.stream_seq == n1


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_compaction_without_a_snapshot_or_with_another_streams_purges_nothing(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """No snapshot in the bucket (a purged stream would leave a new node nothing to start
    from: exit 4 of snapshot get, then an empty store on a purged stream), or the latest of
    another instance of the record stream (its sequences are the old stream's): refused, exit
    3, one line, the stream as it was."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_none")
    other = node_config(tmp_path / "other", demo_pki[0], cluster.source, "compact_other")
    files = sorted(population.glob("*.jsonl"))
    n = publish_files(a, cluster, files[:2])
    assert consume(a, cluster) == n
    _refused_alone(_compact(a, "SNAP_COMPACT_NONE"), "no snapshot in SNAP_COMPACT_NONE")
    assert _first(a, cluster) == 1

    m = publish_files(other, cluster, files[:3])  # longer: its snapshot's sequence is past a's
    assert consume(other, cluster) == m
    assert _put(other, cluster, "SNAP_COMPACT_OTHER").returncode == 0
    _refused_alone(_compact(a, "SNAP_COMPACT_OTHER"), "another", "record stream")
    assert _first(a, cluster) == 1


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_snapshot_replaced_while_it_is_verified_purges_nothing(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A put that ends while the compaction reads the snapshot it replaces: what was verified
    is no longer the latest, so nothing is purged (the next run compacts behind the new one).
    Deleted meanwhile: refused as no snapshot (exit 3, as documented; it escaped as a cluster
    failure, exit 1)."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_mid")
    n = publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:2])
    assert consume(a, cluster) == n
    bucket = snapshot.Bucket("SNAP_COMPACT_MID")
    real_get = snapshot.get
    c = Cluster(cluster.urls)

    def put() -> None:
        store = Store.open(Path(a.store.path), readonly=True)
        try:
            snapshot.put(c, bucket, store)
        finally:
            store.close()

    def get_then_put(*args: object, **kw: object) -> SnapshotInfo:
        got = real_get(*args, **kw)  # type: ignore[arg-type]
        publish_files(a, cluster, sorted(population.glob("*.jsonl"))[2:3])
        consume(a, cluster)
        put()  # the newer one, of a later sequence
        return got

    def get_then_delete(*args: object, **kw: object) -> SnapshotInfo:
        got = real_get(*args, **kw)  # type: ignore[arg-type]
        c.run(c.run(c.js.object_store(bucket.name)).delete(snapshot.OBJECT))
        return got

    try:
        put()
        monkeypatch.setattr(snapshot, "get", get_then_delete)  # deleted: refused as none (3)
        with pytest.raises(CompactionRefused, match="deleted while it was verified"):
            recordcompact.compact(c, names(a), bucket, keep=timedelta(0))
        assert _first(a, cluster) == 1
        put()
        monkeypatch.setattr(snapshot, "get", get_then_put)
        with pytest.raises(CompactionRefused, match="replaced while it was verified"):
            recordcompact.compact(c, names(a), bucket, keep=timedelta(0))
        assert _first(a, cluster) == 1
        monkeypatch.setattr(snapshot, "get", real_get)
        done = recordcompact.compact(c, names(a), bucket, keep=timedelta(0))
        assert (
            done.purged_through == stream_seq(a) > n
            and _first(a, cluster) == done.purged_through + 1
        )
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_whose_last_message_was_deleted_alone_is_still_compacted(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The runbook deletes a refused message alone (JpkiVaStreamRefused): when it was the
    stream's last, the tail was measured from a message JetStream no longer holds (nor finds
    as the subject's last, nats-server 2.9), and every compaction with a tail failed (exit 1)
    until another message came. The tail is measured from the last message held."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_rmm")
    n = publish_files(a, cluster, sorted(population.glob("*.jsonl"))[:2])
    assert consume(a, cluster) == n
    assert _put(a, cluster, "SNAP_COMPACT_RMM").returncode == 0
    c = Cluster(cluster.urls)
    try:
        c.run(c.js.delete_msg(names(a).name, n))
        assert int(c.run(c.js.stream_info(names(a).name)).state.last_seq) == n
    finally:
        c.close()
    kept = _compact(a, "SNAP_COMPACT_RMM", keep_days="1")
    assert kept.returncode == 0, kept.stderr
    assert msgspec.json.decode(kept.stdout)["purged_through"] == 0 and _first(a, cluster) == 1
    out = _compact(a, "SNAP_COMPACT_RMM", keep_days="0")
    assert out.returncode == 0 and msgspec.json.decode(out.stdout)["purged_through"] == n


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_node_mid_catch_up_when_the_purge_runs_refuses_the_stream_not_skips_it(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node behind the snapshot, its consumer open and catching up, when a compaction
    purges past it: its durable consumer moves on to the stream's new first message. The
    builder checked the stream held its next message only when it opened the consumer, so it
    applied what came next and passed over the purged records without a word, its store no
    longer the others'. It refuses the stream at the gap (exit 3, /readyz), nothing of it
    written."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_midway")
    lag = node_config(tmp_path / "lag", demo_pki[0], cluster.source, "compact_midway")
    same_key(Path(a.keys.facts_key_file), Path(lag.keys.facts_key_file))
    files = sorted(population.glob("*.jsonl"))
    n0 = publish_files(a, cluster, files[:1])
    assert consume(lag, cluster) == n0
    n1 = n0 + publish_files(a, cluster, files[1:2])
    assert consume(a, cluster) == n1
    assert _put(a, cluster, "SNAP_COMPACT_MIDWAY").returncode == 0
    n2 = n1 + publish_files(a, cluster, files[2:])
    assert consume(a, cluster) == n2

    real_fetch = Consumer.fetch
    fetches = 0

    def fetch_after_purge(self: Consumer, n: int, timeout: float) -> list[Delivered]:
        nonlocal fetches
        fetches += 1
        if fetches == 2:  # the node has its first batch: the daily compaction runs now
            out = _compact(a, "SNAP_COMPACT_MIDWAY")
            assert out.returncode == 0, out.stderr
            assert msgspec.json.decode(out.stdout)["purged_through"] == n1
        return real_fetch(self, min(n, 5), timeout)  # a few at a time: still behind

    monkeypatch.setattr(Consumer, "fetch", fetch_after_purge)
    with pytest.raises(StreamTruncated, match="no longer holds sequence"):
        consume(lag, cluster)
    assert fetches >= 2
    held = stream_seq(lag)
    assert n0 <= held < n1  # what it applied before the purge, nothing after the gap
    assert f"its first is {n1 + 1}" in refused(lag)


@pytest.mark.integration
@pytest.mark.real_clock  # timed subprocesses
@pytest.mark.parametrize("command", ["compact", "adopt"])
def test_compact_and_adopt_say_why_nats_is_not_reached_and_exit_as_their_help_says(
    command: str, tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """The two commands connect alike (`crlbuilder.cli._connected`): no NATS server answering,
    exit 1 and one line naming the server (compact's adding that nothing was purged); a NATS
    credential that will not do (an NKey seed file others may read), exit 2 and one line
    naming the file, no server asked. Adopt gets that far only with a store that follows a
    record stream."""
    nowhere = f"nats://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    cfg = node_config(tmp_path / "n", demo_pki[0], nowhere, "unreached")
    s = Store.open(Path(cfg.store.path), readonly=False)
    try:
        with Commit(s) as w:
            w.name_feed(FEED)
    finally:
        s.close()
    argv = [sys.executable, "-m", "crlbuilder.cli", "stream", command, *flags(cfg)]
    if command == "compact":
        argv += ["--snapshot-bucket", "SNAP_UNREACHED"]
    what = f"crlbuilder stream {command}: error: "

    def one_error(env: dict[str, str], code: int) -> str:
        out = subprocess.run(argv, env=env, check=False, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        errors = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
        assert out.returncode == code and len(errors) == 1, (out.returncode, out.stderr)
        assert errors[0].startswith(what) and "Traceback" not in out.stderr, out.stderr
        assert out.stdout == "", out.stdout
        return errors[0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("JPKI_VA_NATS_")}
    line = one_error(env, 1)
    assert f"cannot connect to NATS at {nowhere}" in line, line
    assert line.endswith("; nothing purged") == (command == "compact"), line
    seed = tmp_path / "nats.seed"
    seed.write_text("not read: refused for its mode\n")
    seed.chmod(0o644)
    line = one_error({**env, "JPKI_VA_NATS_NKEY_SEED": str(seed)}, 2)
    assert f"{seed}: " in line and "readable by its owner only" in line, line
    assert "nothing purged" not in line and "cannot connect" not in line, line


def test_a_last_message_stored_in_the_future_does_not_shorten_the_tail() -> None:
    """A stream leader whose clock ran a year ahead when it stored the last message (a tick):
    measured from that time alone, the tail was empty and the purge went through the snapshot,
    nodes stopped for a day refused. The tail is measured from the earlier of the last
    message's time and the compacting host's: a clock in the past only lengthens it."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = {s: t0 + timedelta(hours=s) for s in range(1, 101)}
    times[100] = t0 + timedelta(days=365)

    def at(seq: int) -> tuple[int, datetime] | None:
        found = min((s for s in times if s >= seq), default=None)
        return None if found is None else (found, times[found])

    now = t0 + timedelta(hours=99, minutes=30)
    assert tail_start(1, 100, at, timedelta(hours=10), now=now) == 90
    assert tail_start(1, 100, at, timedelta(hours=10), now=now + timedelta(days=400)) == 100
    behind = t0 + timedelta(hours=50)  # the host's clock behind: a longer tail, the safe side
    assert tail_start(1, 100, at, timedelta(hours=10), now=behind) == 40


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_snapshot_described_past_what_its_store_applied_purges_nothing(
    tmp_path: Path, cluster: NatsCluster, population: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A snapshot whose description names a later sequence than its store applied (put by
    hand, or by a release that described it wrongly): a purge through the description would
    take messages no store that starts from it holds. The store's own sequence is read and
    compared before anything is purged: refused, nothing purged."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_desc")
    files = sorted(population.glob("*.jsonl"))
    n = publish_files(a, cluster, files[:2])
    assert consume(a, cluster) == n
    m = n + publish_files(a, cluster, files[2:3])  # on the stream, not in a's store
    bucket = snapshot.Bucket("SNAP_COMPACT_DESC")
    c = Cluster(cluster.urls)
    try:
        store = Store.open(Path(a.store.path), readonly=True)
        try:
            info = snapshot.put(c, bucket, store)
        finally:
            store.close()
        assert info.stream_seq == n
        copy = tmp_path / "copy"
        snapshot.get(c, bucket, copy)
        claimed = msgspec.json.encode(msgspec.structs.replace(info, stream_seq=m)).decode()
        obs = c.run(c.js.object_store(bucket.name))

        async def put_claimed() -> None:
            with (copy / "data.mdb").open("rb") as f:
                await obs.put(snapshot.OBJECT, f, meta=ObjectMeta(name=snapshot.OBJECT,
                                                                  description=claimed))  # fmt: skip

        c.run(put_claimed())
        with pytest.raises(CompactionRefused, match=f"sequence {n}, described {m}"):
            recordcompact.compact(c, names(a), bucket, keep=timedelta(0))
        assert _first(a, cluster) == 1
    finally:
        c.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS cluster, asyncio timeouts
def test_a_stream_made_again_while_the_snapshot_is_verified_is_not_purged(
    tmp_path: Path,
    cluster: NatsCluster,
    population: Path,
    demo_pki: tuple[Path, Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record stream deleted and made again (its history republished) while the
    compaction reads the snapshot: the stream's instance was read once, before, so the purge
    went to the new stream through the old snapshot's sequence, records that no store of the
    new stream holds. The instance is read again with the state the purge is computed from."""
    a = node_config(tmp_path / "a", demo_pki[0], cluster.source, "compact_again")
    files = sorted(population.glob("*.jsonl"))
    n = publish_files(a, cluster, files[:2])
    assert consume(a, cluster) == n
    assert _put(a, cluster, "SNAP_COMPACT_AGAIN").returncode == 0
    real_get = snapshot.get
    c = Cluster(cluster.urls)

    def get_then_made_again(*args: object, **kw: object) -> SnapshotInfo:
        got = real_get(*args, **kw)  # type: ignore[arg-type]
        c.run(c.js.delete_stream(names(a).name))
        publish_files(a, cluster, files)  # the history republished on a new stream
        return got

    try:
        monkeypatch.setattr(snapshot, "get", get_then_made_again)
        with pytest.raises(CompactionRefused, match="another instance of the record stream"):
            recordcompact.compact(
                c, names(a), snapshot.Bucket("SNAP_COMPACT_AGAIN"), keep=timedelta(0)
            )
        assert _first(a, cluster) == 1
    finally:
        c.close()
