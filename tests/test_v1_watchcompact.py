"""Compaction of the watch stream (`responder.v1.watchsnap`, `watchcompact`): the pure codec and
decisions in process, then nodes' LMDB lists on a real nats-server: a node that loads the
snapshot ends with the lists of a node that replayed everything, removals included; a node
behind the compaction point loads it rather than stop or miss; a node caught by a purge in the
middle of a catch-up goes on; nothing is purged that no seal holds."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crlbuilder.store import format as sf
from responder.v1 import watchlog, watchsnap
from responder.v1.watchcompact import CompactError, compact
from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchlog import Behind, Gone
from responder.v1.watchset import WatchKeys
from responder.v1.watchsnap import BadSnapshot, Compaction, Loading, Part, Seal
from responder.v1.watchstream import SealRaced, WatchStream, sync
from tests.support.nats import free_ports, nats_server

SECRET = bytes(range(32))
KEYS = WatchKeys(SECRET)
MAC = KEYS.snapshot_mac
SID = b"stream identity!"
PARTIES = ("bank", "insurer", "broker")


def entries(party: str, serials: list[int]) -> list[bytes]:
    return KEYS.entries(KEYS.tag(party), [sf.status_key(1, s) for s in serials])


def op(party: str, add: list[int] = [], remove: list[int] = [], limit: int = 1000) -> bytes:  # noqa: B006
    tag = KEYS.tag(party)
    made = watchlog.make_op(KEYS.check(), limit, entries(party, remove), entries(party, add), tag)
    return watchlog.encode(made)


def history(n: int, seed: int = 7) -> list[bytes]:
    """``n`` batches of three parties: additions, removals of what was added (and of what
    never was), re-additions, and batches past the bound (409: nothing changed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        party = rng.choice(PARTIES)
        add = rng.sample(range(1, 400), rng.randint(0, 40))
        remove = rng.sample(range(1, 400), rng.randint(0, 20))
        out.append(op(party, add, remove, limit=rng.choice((60, 1000))))
    return out


# --- pure -----------------------------------------------------------------------------


def test_seals_and_parts_round_trip_and_refuse_another_secret_or_an_alteration() -> None:
    seal = Seal(SID, watchlog.secret_check(KEYS.check()), 42, 3, 40_000, 17)
    raw = watchsnap.encode_seal(MAC, seal)
    assert watchsnap.decode_seal(MAC, raw) == seal
    other = WatchKeys(bytes(32 * [5])).snapshot_mac
    for bad, mac in ((raw, other), (raw[:-1] + bytes([raw[-1] ^ 1]), MAC), (raw[:-1], MAC)):
        with pytest.raises(BadSnapshot):
            watchsnap.decode_seal(mac, bad)
    part = Part(SID, 42, 1, tuple(sorted(entries("bank", [1, 2, 3]))))
    raw = watchsnap.encode_part(MAC, part)
    assert watchsnap.decode_part(MAC, raw) == part
    flipped = bytearray(raw)
    flipped[40] ^= 1
    for bad, mac in ((raw, other), (bytes(flipped), MAC), (raw[:-25] + raw[-16:], MAC)):
        with pytest.raises(BadSnapshot):
            watchsnap.decode_part(mac, bad)


def test_a_snapshot_holds_no_party_id_and_no_serial_in_clear() -> None:
    """Only what the stream's operations already hold: party tags and keyed digests."""
    listed = sorted(entries("bank", list(range(1, 50))))
    raw = b"".join(watchsnap.encode_part(MAC, p) for p in watchsnap.parts(SID, 9, listed, 16))
    assert b"bank" not in raw
    assert not any(sf.status_key(1, s) in raw for s in range(1, 50))


def test_parts_cut_a_list_in_order_and_an_empty_list_is_one_empty_part() -> None:
    listed = [bytes([i]) * 24 for i in range(10)]
    got = list(watchsnap.parts(SID, 5, listed, 4))
    assert [p.number for p in got] == [0, 1, 2] and [len(p.entries) for p in got] == [4, 4, 2]
    assert [e for p in got for e in p.entries] == listed
    assert list(watchsnap.parts(SID, 5, [], 4)) == [Part(SID, 5, 0, ())]
    assert len(list(watchsnap.parts(SID, 5, listed[:8], 4))) == 2  # no empty part after
    loading = Loading(b"seal" * 20, 3, 99, 12_000)
    assert Loading.decode(loading.encode()) == loading


@pytest.mark.parametrize(
    ("applied", "loading", "first", "last", "step"),
    [
        (0, False, 1, 0, watchsnap.CatchUp()),  # an empty stream
        (0, False, 1, 10, watchsnap.CatchUp()),  # never compacted: replay
        (4, False, 5, 10, watchsnap.CatchUp()),  # purged through what it applied
        (3, False, 5, 10, watchsnap.Load()),  # its next operation purged
        (0, False, 11, 10, watchsnap.Load()),  # all purged, a new node
        (10, False, 11, 10, watchsnap.CatchUp()),  # all purged, it applied all
        (0, True, 1, 10, watchsnap.Resume()),
    ],
)
def test_a_node_loads_a_snapshot_only_when_the_stream_lost_its_next_operation(
    applied: int, loading: bool, first: int, last: int, step: watchsnap.Step
) -> None:
    assert watchsnap.next_step(applied, loading, first, last) == step


@pytest.mark.parametrize(
    ("applied", "first", "last", "sealed", "keep", "least", "plan"),
    [
        (100, 1, 100, 0, 10, 50, Compaction(100, 90)),  # the tail of 10 stays
        (100, 1, 100, 0, 10, 95, Compaction(0, 0)),  # fewer than asked: nothing
        (80, 1, 100, 0, 10, 50, Compaction(80, 80)),  # never past what the lists applied
        (100, 1, 100, 100, 10, 50, Compaction(0, 90)),  # the seal holds it: purge only
        (100, 91, 100, 0, 0, 5, Compaction(100, 100)),  # everything, nothing kept
        (100, 91, 100, 90, 10, 1, Compaction(0, 0)),  # nothing left to purge
        (100, 91, 100, 0, 10, 50, Compaction(100, 0)),  # purged, its snapshot lost: one again
        (95, 91, 100, 80, 10, 50, Compaction(95, 0)),  # the latest seal short of the purge
        (100, 1, 100, 0, 10, 500, Compaction(0, 0)),  # never purged: no snapshot needed
    ],
)
def test_a_compaction_snapshots_when_worth_it_and_never_purges_past_a_seal(
    applied: int, first: int, last: int, sealed: int, keep: int, least: int, plan: Compaction
) -> None:
    got = watchsnap.compaction(applied, first, last, sealed, keep=keep, min_operations=least)
    assert got == plan
    assert got.purge <= max(got.snapshot, sealed)


def test_a_snapshot_is_refused_for_another_stream_secret_or_one_older_than_the_purge() -> None:
    check = watchlog.secret_check(KEYS.check())
    seal = Seal(SID, check, 50, 1, 0, 1)
    assert watchsnap.usable(seal, SID, check, 51) is None
    assert "another watch stream" in str(watchsnap.usable(seal, b"x" * 16, check, 51))
    assert "another watch secret" in str(watchsnap.usable(seal, SID, b"y" * 16, 51))
    assert "operations are lost" in str(watchsnap.usable(seal, SID, check, 52))


def test_lists_loading_a_snapshot_apply_no_operation_and_resume_after_a_restart(
    tmp_path: Path,
) -> None:
    listed = sorted(entries("bank", [1, 2, 3]) + entries("broker", [4]))
    seal = Seal(SID, watchlog.secret_check(KEYS.check()), 7, 2, 4, 1)
    raw_seal = watchsnap.encode_seal(MAC, seal)
    one, two = watchsnap.parts(SID, 7, listed, 2)
    lists = LmdbWatchSet(tmp_path / "l", KEYS, map_size=1 << 24)
    lists.apply(1, watchlog.decode(op("bank", [9])))  # type: ignore[arg-type]
    lists.begin_load(Loading(raw_seal, 0, 1, 0))
    assert lists.count("bank") == 0 and lists.applied() == 0
    assert not lists.load_part(seal, one, 1)
    with pytest.raises(Behind):  # another worker: not on half-loaded lists
        lists.apply(1, watchlog.decode(op("bank", [9])))  # type: ignore[arg-type]
    lists.close()
    lists = LmdbWatchSet(tmp_path / "l", KEYS, map_size=1 << 24)  # restarted: goes on
    assert lists.loading() == Loading(raw_seal, 1, 2, 2)
    assert not lists.load_part(seal, one, 1)  # loaded already: passed over
    assert lists.load_part(seal, two, 2)
    assert lists.loading() is None and lists.applied() == 7
    assert (lists.count("bank"), lists.count("broker")) == (3, 1)
    keys = [sf.status_key(1, s) for s in (1, 2, 3, 9)]
    assert lists.watched("bank", keys) == [True, True, True, False]
    lists.close()


def test_a_part_counts_each_party_of_its_entries() -> None:
    listed = sorted(
        entries("bank", [1, 2, 3]) + entries("broker", [4]) + entries("insurer", [5, 6])
    )
    naive: dict[bytes, int] = {}
    for e in listed:
        naive[e[:8]] = naive.get(e[:8], 0) + 1
    assert watchsnap.counts(listed) == naive and len(naive) == 3
    assert watchsnap.counts([]) == {}


def test_a_part_out_of_key_order_is_refused(tmp_path: Path) -> None:
    listed = sorted(entries("bank", [1, 2, 3]))
    seal = Seal(SID, watchlog.secret_check(KEYS.check()), 7, 1, 3, 1)
    lists = LmdbWatchSet(tmp_path / "l", KEYS, map_size=1 << 24)
    lists.begin_load(Loading(watchsnap.encode_seal(MAC, seal), 0, 1, 0))
    with pytest.raises(BadSnapshot):
        lists.load_part(seal, Part(SID, 7, 0, (listed[1], listed[0], listed[2])), 1)
    assert lists.applied() == 0 and lists.count("bank") == 0 and lists.loading() is not None
    assert lists.load_part(seal, Part(SID, 7, 0, tuple(listed)), 1)
    assert lists.count("bank") == 3
    lists.close()


def test_parts_that_do_not_add_up_to_their_seal_are_refused(tmp_path: Path) -> None:
    listed = sorted(entries("bank", [1, 2, 3]))
    seal = Seal(SID, watchlog.secret_check(KEYS.check()), 7, 1, 4, 1)  # says 4, holds 3
    lists = LmdbWatchSet(tmp_path / "l", KEYS, map_size=1 << 24)
    lists.begin_load(Loading(watchsnap.encode_seal(MAC, seal), 0, 1, 0))
    (only,) = watchsnap.parts(SID, 7, listed)
    with pytest.raises(BadSnapshot):
        lists.load_part(seal, only, 1)
    with pytest.raises(BadSnapshot):
        lists.load_part(seal, only._replace(seq=8), 1)
    assert lists.applied() == 0 and lists.count("bank") == 0
    lists.close()


# --- on a real nats-server --------------------------------------------------------------


def contents(lists: LmdbWatchSet) -> tuple[int, list[bytes], list[int]]:
    with lists.frozen() as (applied, _sid, listed, _signed):
        got = list(listed)
    return applied, got, [lists.count(p) for p in PARTIES]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    (port,) = free_ports(1)
    with nats_server(tmp_path, port) as s:
        yield s


@pytest.fixture
def node(
    tmp_path: Path, server: Any
) -> Iterator[Callable[[str], tuple[LmdbWatchSet, WatchStream]]]:
    made: list[tuple[LmdbWatchSet, WatchStream]] = []

    def make(name: str, keys: WatchKeys = KEYS) -> tuple[LmdbWatchSet, WatchStream]:
        pair = (
            LmdbWatchSet(tmp_path / name, keys, map_size=1 << 26),
            WatchStream(server.source, timeout=2.0),
        )
        made.append(pair)
        return pair

    yield make
    for lists, stream in made:
        stream.close()
        lists.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_node_from_the_compacted_stream_ends_with_the_lists_of_one_that_replayed_all(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """A replays everything, B stops at operation 10, C compacts at 120 (a tail of 20 kept);
    then 30 more operations (removals of entries the snapshot holds among them). D, new,
    loads the snapshot in steps (a call bounded by its wait goes on at the next) and
    catches up; B, behind the compaction point, loads it instead of stopping at the gap;
    A goes on by operations. All four end alike."""
    a, b, c, d = (node(n) for n in "abcd")
    log = history(150)
    for raw in log[:120]:
        a[1].publish(raw)
    sync(b[0], b[1], 10, 30.0)
    sync(a[0], a[1], None, 30.0)
    done = compact(c[0], c[1], keep=20, min_operations=50, part_entries=64)
    assert (done.snapshot, done.purged, done.first, done.last) == (120, 100, 1, 120)
    assert done.parts > 2 and done.entries == len(contents(a[0])[1])
    assert a[1].state().first == 101 and a[1].fetch(100) is None
    for raw in log[120:]:
        a[1].publish(raw)
    with pytest.raises(Behind):  # one part per call at least, then its wait is over
        sync(d[0], d[1], None, 0.0)
    assert d[0].loading() is not None and d[0].applied() == 0
    assert sync(d[0], d[1], None, 30.0) == 150
    assert sync(b[0], b[1], None, 30.0) == 150
    assert sync(a[0], a[1], None, 30.0) == 150
    assert contents(d[0]) == contents(b[0]) == contents(a[0])
    assert sum(contents(a[0])[2]) > 0 and b[0].replication()[3] == ""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_purge_during_a_catch_up_makes_the_node_load_the_snapshot_not_stop(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """The node read the stream's first operation, then a compaction purged the next one it
    fetches: it loads the snapshot then goes on, with no gap noted and nothing applied
    twice."""
    a, b, ref = node("a"), node("b"), node("ref")
    log = history(60, seed=3)
    for raw in log:
        a[1].publish(raw)
    sync(ref[0], ref[1], None, 30.0)
    sync(b[0], b[1], 5, 30.0)
    real_fetch = b[1].fetch

    def fetch(seq: int) -> bytes | None:
        if seq == 6 and a[1].state().first == 1:
            compact(a[0], a[1], keep=0, min_operations=1)
        return real_fetch(seq)

    b[1].fetch = fetch  # type: ignore[method-assign]
    assert sync(b[0], b[1], None, 30.0) == 60
    assert b[1].state().first == 61
    assert contents(b[0]) == contents(ref[0]) and b[0].replication()[3] == ""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_snapshot_purged_while_a_node_loads_it_is_followed_by_the_newer_one(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """Two more compactions while a new node loads the first snapshot purge its parts (the
    previous snapshot is kept, not the one before): the node starts again from the latest."""
    a, late, ref = node("a"), node("late"), node("ref")
    log = history(90, seed=5)
    for start in (0, 30, 60):
        for raw in log[start : start + 30]:
            a[1].publish(raw)
        compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
        if start == 0:
            with pytest.raises(Behind):
                sync(late[0], late[1], None, 0.0)  # part 0 of snapshot 30 loaded
    loading = late[0].loading()
    assert loading is not None and watchsnap.decode_seal(MAC, loading.seal).seq == 30
    assert late[1].part_from(30, 1) is None  # purged by the third compaction
    assert sync(late[0], late[1], None, 30.0) == 90
    sync(ref[0], ref[1], None, 30.0)  # loads snapshot 90: the stream holds nothing else
    assert contents(late[0]) == contents(a[0]) == contents(ref[0])
    assert contents(a[0])[0] == 90


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_nothing_purged_without_a_seal_and_a_lost_race_purges_nothing(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """A seal is published only over the latest one (two compactions at once: the slower
    one purges nothing); a node that finds the stream purged with no snapshot reaching it
    stops (noted for the metrics) rather than go on without the lost operations."""
    a, b = node("a"), node("b")
    for raw in history(40, seed=11):
        a[1].publish(raw)
    compact(a[0], a[1], keep=10, min_operations=1)
    sealed = a[1].latest_seal()
    assert sealed is not None
    with pytest.raises(SealRaced):
        a[1].publish_seal(sealed[1], after=sealed[0] - 1)
    with pytest.raises(SealRaced):
        a[1].publish_seal(sealed[1], after=0)
    assert a[1].state().first == 31
    a[1].purge_snapshots(parts_before=10**9, seals_before=10**9)  # an operator's mistake
    with pytest.raises(Gone):
        sync(b[0], b[1], None, 30.0)
    assert "no snapshot" in b[0].replication()[3] and b[0].applied() == 0
    other = WatchKeys(bytes(32 * [5]))
    c2 = node("c2", other)
    with pytest.raises(CompactError):  # lists that refuse the operations compact nothing
        compact(c2[0], c2[1], keep=0, min_operations=1)
    assert a[1].state().first == 31


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_feed_of_a_node_joining_a_compacted_stream_answers_503_then_the_whole_list(
    tmp_path: Path, server: Any
) -> None:
    """Through the routes: batches registered on node A (one removing what another added),
    the stream compacted; node B, new, answers 503 "still applying" while it loads the
    snapshot (a wait too short for it), then reads the changes of the whole list, the
    removed certificate not among them."""
    from tests.support.pki import make_ca, rsa_key
    from tests.test_v1_changes import AC, SC, A, Api, B, C, ref
    from tests.test_v1_feedpos import node_a, node_b, pos, serials
    from tests.test_v1_watchrepl import metrics, replicated

    key = rsa_key()
    cas = {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}
    streams = [WatchStream(server.source, timeout=2.0) for _ in range(3)]
    a = Api(node_a(cas), tmp_path / "a")
    la = replicated(a, streams[0], tmp_path / "a-lists")  # type: ignore[arg-type]
    try:
        assert a.watch(add=[ref(SC, A), ref(SC, B)])[0].status == 200
        assert a.watch(add=[ref(SC, C)], remove=[ref(SC, B)])[0].status == 200
        done = compact(la, streams[1], keep=0, min_operations=1, part_entries=1)
        assert (done.snapshot, done.purged, done.parts) == (2, 2, 2)
        b = Api(node_b(cas), tmp_path / "b", replication_wait_seconds=0)
        lb = replicated(b, streams[2], tmp_path / "b-lists")  # type: ignore[arg-type]
        resp, got = b.changes(f"cursor={pos(0)}")  # one part loaded, its wait is over
        assert resp.status == 503 and "still applying" in got["detail"], got
        assert lb.loading() is not None and not b.ledger.counted
        loading = metrics(lb)
        assert loading["jpkiva_watch_snapshot_loading"] == 1, loading  # the lag is no stop
        assert loading["jpkiva_watch_applied_operations"] == 0
        assert loading["jpkiva_watch_replication_broken"] == 0
        resp, got = b.changes(f"cursor={pos(0)}")
        assert resp.status == 200 and serials(got) == [A, C], got
        assert lb.applied() == 2 and b.ledger.counted
        assert metrics(lb)["jpkiva_watch_snapshot_loading"] == 0
        lb.close()
    finally:
        for s in streams:
            s.close()
        la.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_command_compacts_once_then_has_nothing_to_do(
    tmp_path: Path, server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from responder import cli
    from responder.v1 import changes

    secret = tmp_path / "watch.secret"
    secret.write_text(SECRET.hex() + "\n")
    secret.chmod(0o600)
    config = tmp_path / "responder.toml"
    config.write_text(
        f'[ledger]\ndir = "{tmp_path / "ledger"}"\n[watch]\nsecret_file = "{secret}"\n'
        f'[cluster]\nnats = "{server.source}"\n'
    )
    writer = WatchStream(server.source, timeout=2.0)
    try:
        for raw in history(30, seed=2):
            writer.publish(raw)
        argv = ["watch-compact", "--config", str(config), "--keep", "5", "--min-operations", "20"]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "snapshot of operation 30" in out and "operations 1..25 purged" in out, out
        assert writer.state().first == 26
        changes._ENVS.clear()  # the command's process ends here: its lists are closed
        assert cli.main(argv) == 0
        assert "nothing to compact: the watch stream holds operations 26..30" in (
            capsys.readouterr().out
        )
        config.write_text(config.read_text().replace(server.source, "nats://127.0.0.1:1"))
        changes._ENVS.clear()
        assert cli.main(argv) == 1  # the stream out of reach: said, nothing done
        assert "error: cannot connect to NATS" in capsys.readouterr().err
    finally:
        writer.close()
        changes._ENVS.clear()


def test_the_command_every_n_seconds_goes_on_after_a_failed_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--every``: a round that fails (NATS out of reach) is said, and the next one is
    tried after the interval, instead of the sidecar exiting (and restarting in a loop)."""
    from responder import cli
    from responder.v1 import changes, watchcompact

    secret = tmp_path / "watch.secret"
    secret.write_text(SECRET.hex() + "\n")
    secret.chmod(0o600)
    slept: list[float] = []

    class Stop(Exception):
        pass

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise Stop

    monkeypatch.setattr(watchcompact.time, "sleep", sleep)
    argv = [
        "watch-compact", f"--ledger-dir={tmp_path / 'ledger'}", f"--watch-secret-file={secret}",
        "--nats=nats://127.0.0.1:1", "--every=3600",
    ]  # fmt: skip
    try:
        with pytest.raises(Stop):
            cli.main(argv)
    finally:
        changes._ENVS.clear()
    assert len(slept) == 2 and all(2880 <= s <= 4320 for s in slept), slept
    assert slept[0] != slept[1]  # drawn each round: nodes started together drift apart
    said = capsys.readouterr().err.splitlines()  # the second held down: the clock stood still
    assert len(said) == 2 and all("watch-compact: error:" in line for line in said), said
    assert cli.main([*argv[:-1], "--every=0"]) == 2


def test_every_round_is_drawn_within_a_fifth_of_the_interval() -> None:
    """Compactors started together (every pod at once) would otherwise write a whole snapshot
    each round, all but one losing the seal; a draw apart lets the first leave the others
    nothing to do."""
    from responder.v1.watchcompact import next_round

    assert next_round(3600, lambda: 0.0) == pytest.approx(2880)
    assert next_round(3600, lambda: 0.5) == pytest.approx(3600)
    assert next_round(3600, lambda: 1.0) == pytest.approx(4320)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_compaction_after_the_watch_secret_changed_supersedes_the_old_secrets_snapshot(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]], server: Any
) -> None:
    """The runbook's change of the watch secret: every node's lists moved away and the watch
    stream made again empty (`nats stream rm JPKI_WATCH`), the snapshot stream left as it
    was. The old secret's seal cannot be read with the new secret: the first compaction
    under the new one seals over it (it is no snapshot of these lists) instead of failing
    at every round for ever, and a new node loads the new snapshot."""
    a = node("a")
    for raw in history(20, seed=13):
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1)
    a[1]._call(lambda c: c.js.delete_stream(a[1].name))
    a[1].close()
    new = WatchKeys(bytes(32 * [9]))
    b, late = node("b", new), node("late", new)
    tag = new.tag("bank")
    for i in range(20):
        made = watchlog.make_op(new.check(), 1000, [], new.entries(tag, [bytes([i]) * 8]), tag)
        b[1].publish(watchlog.encode(made))
    done = compact(b[0], b[1], keep=0, min_operations=1)
    assert (done.snapshot, done.purged) == (20, 20)
    assert sync(late[0], late[1], None, 30.0) == 20
    assert late[0].count("bank") == b[0].count("bank") == 20


def _snapshot_message(stream: WatchStream, seq: int, *, drop: bool) -> bytes:
    """The snapshot stream's message ``seq`` (deleted when ``drop``)."""
    msg = stream._call(lambda c: c.js.get_msg(stream.snap_name, seq=seq))
    if drop:
        stream._call(lambda c: c.js.delete_msg(stream.snap_name, seq))
    return bytes(msg.data or b"")


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
@pytest.mark.parametrize("harm", ["lost", "altered"])
def test_a_latest_snapshot_lacking_a_part_stops_the_node_loudly_until_a_newer_one(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]], harm: str
) -> None:
    """A part of the latest snapshot lost (a purge by hand, limits put on JPKI_WATCH_SNAP)
    or altered: no newer snapshot replaces it, so the node does not start the load again at
    every call (503 "still applying" for ever, the lists emptied again and again, no alert):
    it stops, noted for the metrics at every call, its loaded parts kept; the next
    compaction's snapshot is then loaded and the lists end alike."""
    a, late, ref = node("a"), node("late"), node("ref")
    log = history(60, seed=17)
    for raw in log[:40]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    found = a[1].latest_seal()
    assert found is not None
    seal = watchsnap.decode_seal(MAC, found[1])
    assert seal.parts > 3
    raw = _snapshot_message(a[1], seal.first_part + 2, drop=True)
    if harm == "altered":  # a copy with one entry's bit flipped, found after the original
        bad = bytearray(raw)
        bad[40] ^= 1
        a[1].publish_part(seal.seq, bytes(bad))
    with pytest.raises(Gone, match="part 2"):
        sync(late[0], late[1], None, 30.0)
    assert late[0].replication()[3] != ""
    for _ in range(2):  # the next calls: noted again at once, the loaded parts kept
        with pytest.raises(Gone):
            sync(late[0], late[1], None, 0.0)
        loading = late[0].loading()
        assert loading is not None and loading.next_index == 2
        assert late[0].replication()[3] != ""
    for raw in log[40:]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    assert sync(late[0], late[1], None, 30.0) == 60
    sync(ref[0], ref[1], None, 30.0)
    assert contents(late[0]) == contents(a[0]) == contents(ref[0])
    assert late[0].replication()[3] == ""


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_second_compaction_of_a_new_stream_keeps_its_own_snapshot(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """The first snapshot's part 0 is message 1 of the snapshot stream; the second
    compaction purges the parts before it, which is nothing (JetStream would read a purge
    "before 1" with a subject filter as all the subject's messages: every part, the new
    snapshot's too, the watch stream already purged through it). A new node then loads."""
    a, late = node("a"), node("late")
    log = history(60, seed=19)
    for start in (0, 30):
        for raw in log[start : start + 30]:
            a[1].publish(raw)
        compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    found = a[1].latest_seal()
    assert found is not None
    seal = watchsnap.decode_seal(MAC, found[1])
    assert seal.seq == 60 and a[1].part_from(60, seal.first_part) is not None
    assert a[1].part_from(30, 1) == (1, _snapshot_message(a[1], 1, drop=False))  # the previous
    assert sync(late[0], late[1], None, 30.0) == 60
    assert contents(late[0]) == contents(a[0])


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_snapshot_compacted_past_while_loading_is_left_for_the_newer_one_at_once(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """A node loading a snapshot when the next compaction purges the operations after it: the
    rest of it is not loaded (the lists, at its end, would find their next operation gone,
    be emptied and load the newer one: the whole of a 10M list loaded twice); it moves to
    the newer one at once."""
    a, late = node("a"), node("late")
    log = history(60, seed=23)
    for raw in log[:30]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    with pytest.raises(Behind):
        sync(late[0], late[1], None, 0.0)  # part 0 of snapshot 30 loaded
    for raw in log[30:]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    assert a[1].part_from(30, 1) is not None  # the previous snapshot is kept
    asked: list[int] = []
    real = late[1].part_from

    def part_from(snapshot: int, at: int) -> tuple[int, bytes] | None:
        asked.append(snapshot)
        return real(snapshot, at)

    late[1].part_from = part_from  # type: ignore[method-assign]
    assert sync(late[0], late[1], None, 30.0) == 60
    assert set(asked) == {60} and contents(late[0]) == contents(a[0])


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_feed_read_during_which_a_snapshot_load_empties_the_lists_answers_503(
    tmp_path: Path, server: Any
) -> None:
    """The feed call caught its lists up, then read them; meanwhile another worker of the node
    met a purge past them and began loading a snapshot (the lists emptied). The call must not
    answer 200 with the changes it did not find, its cursor past them (lost for the party):
    it answers 503 "still applying", nothing counted."""
    from tests.support.pki import make_ca, rsa_key
    from tests.test_v1_changes import AC, SC, A, Api, C, ref
    from tests.test_v1_feedpos import node_a, pos, serials
    from tests.test_v1_watchrepl import replicated

    key = rsa_key()
    cas = {SC: make_ca("sign-card-g1 CA", key), AC: make_ca("auth-card-g1 CA", key)}
    stream = WatchStream(server.source, timeout=2.0)
    a = Api(node_a(cas), tmp_path / "a")
    la = replicated(a, stream, tmp_path / "a-lists")  # type: ignore[arg-type]
    try:
        assert a.watch(add=[ref(SC, A), ref(SC, C)])[0].status == 200
        resp, got = a.changes(f"cursor={pos(0)}")
        assert resp.status == 200 and serials(got) == [A, C], got
        counted = len(a.ledger.counted)
        real = la.watched

        def watched(party: str, keys: Any) -> list[bool]:
            if la.loading() is None:  # another worker, at this moment
                la.begin_load(Loading(b"a seal" * 10, 0, 1, 0))
            return real(party, keys)

        la.watched = watched  # type: ignore[method-assign]
        resp, got = a.changes(f"cursor={pos(0)}")
        assert resp.status == 503 and "still applying" in got["detail"], got
        assert len(a.ledger.counted) == counted
    finally:
        stream.close()
        la.close()


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_part_not_found_after_another_worker_loaded_it_is_still_applying_not_broken(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """Two workers load one snapshot; this one does not find the part it looked for because
    the other loaded it and went on (its search position moved): 503 "still applying"
    (`Behind`), no gap noted, and the next call finishes the load."""
    a, late = node("a"), node("late")
    for raw in history(40, seed=31):
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    with pytest.raises(Behind):
        sync(late[0], late[1], None, 0.0)  # part 0 loaded
    real = late[1].part_from

    def part_from(snapshot: int, at: int) -> tuple[int, bytes] | None:
        loading = late[0].loading()
        assert loading is not None
        seal = watchsnap.decode_seal(MAC, loading.seal)
        got = real(snapshot, at)  # the other worker, first: it loads this part and goes on
        assert got is not None
        late[0].load_part(seal, watchsnap.decode_part(MAC, got[1]), got[0])
        late[1].part_from = real  # type: ignore[method-assign]
        return None

    late[1].part_from = part_from  # type: ignore[method-assign]
    with pytest.raises(Behind):
        sync(late[0], late[1], None, 30.0)
    assert late[0].replication()[3] == ""
    assert sync(late[0], late[1], None, 30.0) == 40 and contents(late[0]) == contents(a[0])


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_a_compaction_replaces_a_lost_snapshot_even_with_few_operations(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """The snapshot stream lost its snapshots (purged or removed by hand) after the watch
    stream was purged: nodes behind cannot join. The next compaction makes one again though
    fewer than ``min_operations`` would go, and a new node joins."""
    a, late = node("a"), node("late")
    log = history(40, seed=37)
    for raw in log[:30]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=0, min_operations=1)
    a[1].purge_snapshots(parts_before=10**9, seals_before=10**9)
    for raw in log[30:]:
        a[1].publish(raw)
    done = compact(a[0], a[1], keep=0, min_operations=100)
    assert (done.snapshot, done.purged) == (40, 0)
    assert sync(late[0], late[1], None, 30.0) == 40 and contents(late[0]) == contents(a[0])


def signed(party: str, add: list[int] = [], remove: list[int] = [], at: int = 0) -> bytes:  # noqa: B006
    """An operation as a node of this release publishes it: signed, its publisher's time
    ``at`` (ms since the epoch)."""
    read = watchlog.decode(op(party, add, remove))
    assert read is not None
    return watchlog.encode(read._replace(at_ms=at), KEYS.op_mac)


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server's timestamps, a wait of 3 s
def test_a_signed_operation_published_again_later_is_passed_over_by_a_node_and_a_new_one(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """On a real nats-server, the time each message was stored at is the server's, read with
    the message (`WatchStream.fetch`). The party removes 1 through a node whose clock is 58 s
    behind the server's (within the allowance: applied), then adds 1 again; the removal,
    published again verbatim 3 s later (61 s past the time it carries), is passed over by a
    node that applied everything and by a new node that starts from a snapshot sealed
    before the copy (it reads the copy's time from the stream alike)."""
    a, c = node("a"), node("c")
    now = lambda: time.time_ns() // 1_000_000  # noqa: E731
    a[1].publish(signed("bank", add=[1, 2], at=now()))
    removal_at = now() - 58_000
    removal = signed("bank", remove=[1], at=removal_at)
    a[1].publish(removal)
    a[1].publish(signed("bank", add=[1], at=now()))
    assert sync(a[0], a[1], None, 30.0) == 3 and a[0].passed()[0] == 0
    compact(a[0], a[1], keep=0, min_operations=1)  # operations 1-3 in a snapshot, purged
    time.sleep(max(0.0, (removal_at + 61_000 - now()) / 1000))
    assert a[1].publish(removal) == 4  # a new message id: stored again
    a[1].publish(signed("bank", add=[3], at=now()))
    stored = a[1].fetch(4)
    assert stored is not None and stored.data == removal
    assert stored.stamped_ms - removal_at > watchlog.REPLAY_WINDOW * 1000
    assert abs(stored.stamped_ms - now()) < 10_000  # the server's clock: this machine's
    keys = [sf.status_key(1, s) for s in (1, 2, 3)]
    for lists, stream in (a, c):
        assert sync(lists, stream, None, 30.0) == 5
        assert lists.watched("bank", keys) == [True, True, True]
        count, why = lists.passed()
        assert count == 1 and why.startswith("operation 4:"), why


@pytest.mark.integration
@pytest.mark.real_clock  # a real NATS server, asyncio timeouts
def test_the_latest_seal_deleted_alone_leaves_the_previous_snapshot_found(
    node: Callable[..., tuple[LmdbWatchSet, WatchStream]],
) -> None:
    """The latest seal, the snapshot stream's last message, deleted alone (by hand): a
    file-stored stream of nats-server 2.9 then finds no last message of the seal subject,
    though the previous seal is there, and its check of a seal's expected last subject
    sequence reads 0 too. A node that loads found "no snapshot" (stopped) where the previous
    one still reaches the stream's first operation. The previous seal is found by the
    subject's messages from the start; the next compaction seals over it (not refused as a
    race) and keeps it as the previous one."""
    a, late = node("a"), node("late")
    log = history(70, seed=31)
    for raw in log[:30]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=10, min_operations=1, part_entries=16)  # snapshot 30, 21.. stay
    first = a[1].latest_seal()
    for raw in log[30:60]:
        a[1].publish(raw)
    compact(a[0], a[1], keep=35, min_operations=1, part_entries=16)  # snapshot 60, 26.. stay
    latest = a[1].latest_seal()
    assert first is not None and latest is not None and latest[0] > first[0]
    last = a[1]._call(lambda c: c.js.stream_info(a[1].snap_name)).state.last_seq
    assert latest[0] == last
    _snapshot_message(a[1], latest[0], drop=True)  # the stream's last, alone

    assert a[1].latest_seal() == first
    assert sync(late[0], late[1], None, 30.0) == 60  # snapshot 30, then 31..60
    assert contents(late[0]) == contents(a[0])
    for raw in log[60:]:
        a[1].publish(raw)
    done = compact(a[0], a[1], keep=0, min_operations=1, part_entries=16)
    assert done.snapshot == 70
    now = a[1].latest_seal()
    assert now is not None and watchsnap.decode_seal(MAC, now[1]).seq == 70
    assert a[1].part_from(30, 1) is not None  # snapshot 30 kept as the previous one
    assert sync(late[0], late[1], None, 30.0) == 70
    assert contents(late[0]) == contents(a[0])
