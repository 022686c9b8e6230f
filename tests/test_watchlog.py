"""The watch lists of several nodes: one log of operations applied in order (`watchlog`), by
the in-memory twin and by the LMDB lists alike; nothing here starts a process."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from crlbuilder.store import format as sf
from responder.v1 import watchlog, watchsnap
from responder.v1.watchdb import LmdbWatchSet
from responder.v1.watchlog import (
    Behind,
    Gone,
    MemoryReplica,
    Outcome,
    SecretMismatch,
    Stored,
    WatchOp,
)
from responder.v1.watchset import WatchKeys

SECRET = bytes(range(32))
KEYS = WatchKeys(SECRET)
T0 = 1_780_000_000_000
"""A fixed time (ms since the epoch) the operations here are published and stored at."""


def on_stream(log: list[bytes], stamps: dict[int, int] | None = None) -> Callable[[int], Stored]:
    """``fetch`` of a stream holding ``log``, every message stored at ``T0`` but those of
    ``stamps`` (sequence: when the server stored it)."""
    return lambda s: Stored(log[s - 1], (stamps or {}).get(s, T0))


def op(party: str, add: list[int] = [], remove: list[int] = [], limit: int = 5) -> bytes:  # noqa: B006
    tag = KEYS.tag(party)
    entries = lambda serials: KEYS.entries(tag, [sf.status_key(1, s) for s in serials])  # noqa: E731
    made = watchlog.make_op(KEYS.check(), limit, entries(remove), entries(add), tag)
    return watchlog.encode(made)


LOG = [
    op("bank", add=[1, 2, 3]),
    op("bank", add=[3, 4], remove=[1, 9]),  # 1 removed, 9 absent, 3 already, 4 added
    op("bank", add=[5, 6, 7]),  # 3 + 3 > 5: nothing changed
    op("other", add=[1]),  # another party's list is its own
    op("bank", add=[1, 8], remove=[2, 3]),  # removals first: room for two
]
OUTCOMES = [
    Outcome(False, 3, 0, 3, 5),
    Outcome(False, 1, 1, 3, 5),
    Outcome(True, 0, 0, 3, 5),
    Outcome(False, 1, 0, 1, 5),
    Outcome(False, 2, 2, 3, 5),
]


def test_operations_round_trip_and_hold_only_keyed_digests() -> None:
    raw = op("bank", add=[1, 2], remove=[3])
    got = watchlog.decode(raw)
    assert got is not None and got.tag == KEYS.tag("bank") and len(got.add) == 2
    assert watchlog.encode(got) == raw
    assert b"bank" not in raw and sf.status_key(1, 1) not in raw  # no party, no serial
    assert watchlog.decode(raw[:-1]) is None and watchlog.decode(raw + b"\0") is None
    assert watchlog.decode(b"\x02" + raw[1:]) is None


def test_applied_in_order_every_replica_decides_the_same() -> None:
    """The per-party bound (409 watch_full) decided the same on every node: the decision
    reads only the operation and the list before it."""
    one, two = MemoryReplica(KEYS.check()), MemoryReplica(KEYS.check())
    clock = lambda: 0.0  # noqa: E731
    assert watchlog.catch_up(one, on_stream(LOG), 5, deadline=1, clock=clock) == 5
    watchlog.catch_up(two, on_stream(LOG), 2, deadline=1, clock=clock)  # part now
    watchlog.catch_up(two, on_stream(LOG), 5, deadline=1, clock=clock)  # the rest later
    assert [one.outcome(s) for s in range(1, 6)] == OUTCOMES
    assert one.lists == two.lists and one.outcomes == two.outcomes
    one.apply(3, watchlog.decode(LOG[2]))  # type: ignore[arg-type]  # applied already: passed over
    assert one.outcomes == two.outcomes


def test_a_gap_another_secret_or_the_time_up_stops_without_applying() -> None:
    r = MemoryReplica(KEYS.check())
    clock = lambda: 0.0  # noqa: E731
    with pytest.raises(Gone):
        watchlog.catch_up(r, lambda s: None, 2, deadline=1, clock=clock)
    with pytest.raises(Gone):
        r.apply(2, watchlog.decode(LOG[1]))  # type: ignore[arg-type]
    other = MemoryReplica(WatchKeys(bytes(32 * [7])).check())
    with pytest.raises(SecretMismatch):
        watchlog.catch_up(other, on_stream(LOG), 1, deadline=1, clock=clock)
    assert other.applied() == 0 and other.lists == {}
    ticks = iter([0.0, 0.5, 2.0])
    with pytest.raises(Behind) as behind:
        watchlog.catch_up(r, on_stream(LOG), 5, deadline=1, clock=lambda: next(ticks))
    assert behind.value.applied == 3 and r.applied() == 3  # what was applied stays


def test_the_lmdb_lists_apply_the_log_as_the_twin_does(tmp_path: Path) -> None:
    lists = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)
    twin = MemoryReplica(KEYS.check())
    rng = random.Random(5)
    log = [op(rng.choice(["a", "b"]), add=rng.sample(range(12), rng.randint(0, 4)),
              remove=rng.sample(range(12), rng.randint(0, 4)), limit=6) for _ in range(60)]  # fmt: skip
    for seq, raw in enumerate(log, start=1):
        o = watchlog.decode(raw)
        assert o is not None
        lists.apply(seq, o)
        twin.apply(seq, o)
        assert lists.outcome(seq) == twin.outcome(seq), seq
    assert lists.applied() == 60
    assert any(o.full for o in twin.outcomes.values())  # the bound was reached on the way
    for party in ("a", "b"):
        keys = [sf.status_key(1, s) for s in range(12)]
        digests = {e[len(KEYS.tag(party)) :] for e in KEYS.entries(KEYS.tag(party), keys)}
        mine = twin.lists.get(KEYS.tag(party), set())
        watched = lists.watched(party, keys)
        assert [d in mine for d in (e[8:] for e in KEYS.entries(KEYS.tag(party), keys))] == watched
        assert mine <= digests and lists.count(party) == len(mine)
    lists.apply(60, watchlog.decode(log[-1]))  # type: ignore[arg-type]  # another worker's turn: passed over
    assert lists.applied() == 60
    with pytest.raises(Gone):
        lists.apply(62, watchlog.decode(log[0]))  # type: ignore[arg-type]
    lists.close()
    again = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)  # a restart resumes after it
    assert again.applied() == 60 and again.outcome(60) == twin.outcome(60)
    again.close()


def test_the_lmdb_lists_refuse_an_operation_of_another_secret_and_say_so(tmp_path: Path) -> None:
    lists = LmdbWatchSet(tmp_path / "w", WatchKeys(bytes(32 * [9])), map_size=1 << 24)
    made = watchlog.decode(LOG[0])
    assert made is not None
    with pytest.raises(SecretMismatch):
        lists.apply(1, made)
    applied, _, _, broken = lists.replication()
    assert applied == 0 and "same [watch] secret_file" in broken
    lists.close()


def test_a_full_operation_is_refused_whole(tmp_path: Path) -> None:
    lists = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)
    for seq, raw in enumerate(LOG[:3], start=1):
        got = watchlog.decode(raw)
        assert isinstance(got, WatchOp)
        lists.apply(seq, got)
    assert lists.outcome(3) == Outcome(True, 0, 0, 3, 5)
    assert lists.watched("bank", [sf.status_key(1, s) for s in (5, 6, 7)]) == [False] * 3
    lists.close()


def test_lists_bind_to_one_watch_stream_and_refuse_one_made_again(tmp_path: Path) -> None:
    """Lists that applied operations of one stream refuse another (noted for the metrics);
    lists that applied nothing, or of an earlier version that recorded no stream, take it."""
    old, new = b"o" * 16, b"n" * 16
    lists = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)
    try:
        lists.bind(old)
        lists.bind(new)  # nothing applied yet: the new one is taken
        decoded = watchlog.decode(op("bank", add=[1]))
        assert decoded is not None
        lists.apply(1, decoded)
        lists.bind(new)
        with pytest.raises(watchlog.OtherStream, match="made again"):
            lists.bind(old)
        assert "made again" in lists.replication()[3] and lists.applied() == 1
    finally:
        lists.close()
    again = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)  # a restarted worker too
    try:
        with pytest.raises(watchlog.OtherStream):
            again.bind(old)
        again.bind(new)
    finally:
        again.close()


def signed(
    party: str,
    add: tuple[int, ...] = (),
    remove: tuple[int, ...] = (),
    limit: int = 5,
    at: int = T0,
) -> bytes:
    """An operation as a node of this release publishes it: MAC'd with the watch secret,
    with its publisher's time ``at``."""
    raw = watchlog.decode(op(party, list(add), list(remove), limit))
    assert raw is not None
    return watchlog.encode(raw._replace(at_ms=at), KEYS.op_mac)


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_an_operation_the_watch_secret_does_not_vouch_for_is_passed_over_by_every_node(
    tmp_path: Path, kind: str
) -> None:
    """Every responder's NATS user may publish on the watch subject and read it
    (`crlbuilder.natsconfig`): with a responder node's seed alone, no watch secret, one could
    append bytes that are no operation (every node's lists stopped there for good, `Gone`),
    or copy a genuine operation's secret check, party tag and digests into one that removes
    them (every node emptied that party's list: its changes no longer delivered). From the
    stream's first signed operation on, what the MAC does not vouch for is passed over, alike
    on every node; before it, releases' unsigned operations apply as they did."""
    lists: watchlog.Replica = (
        MemoryReplica(KEYS.check()) if kind == "memory"
        else LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)
    )  # fmt: skip
    genuine = op("bank", add=[1, 2, 3])  # an older release's (unsigned): applied
    bank = KEYS.tag("bank")
    forged_v1 = op("bank", remove=[1, 2, 3])  # the check and tag copied from what it read
    forged_v2 = bytes((watchlog.SIGNED,)) + forged_v1[1:] + bytes(16)  # a MAC it cannot make
    other = WatchKeys(bytes(32 * [9]))
    foreign = watchlog.encode(  # signed, but with another secret than the nodes'
        watchlog.make_op(other.check(), 5, [], other.entries(other.tag("x"), [b"k"]), other.tag("x")),
        other.op_mac,
    )  # fmt: skip
    log = [genuine, signed("bank", add=(4,)), b"junk", forged_v1, forged_v2, foreign,
           signed("bank", add=(5,))]  # fmt: skip
    clock = lambda: 0.0  # noqa: E731
    got = watchlog.catch_up(lists, on_stream(log), len(log), deadline=1, clock=clock,
                            mac=KEYS.op_mac)  # fmt: skip
    assert got == len(log) and lists.applied() == len(log)
    keys = [sf.status_key(1, s) for s in range(1, 6)]
    if isinstance(lists, LmdbWatchSet):
        assert lists.watched("bank", keys) == [True] * 5
        assert lists.count("bank") == 5 and lists.passed()[0] == 4
        with lists.frozen() as (_applied, _sid, _listed, signed_from):
            assert signed_from == 2  # a snapshot's seal carries it
        lists.close()
    else:
        assert len(lists.lists[bank]) == 5 and lists.skipped == [3, 4, 5, 6]
        assert lists.signed_from == 2


def test_before_the_first_signed_operation_another_secret_still_stops_the_lists() -> None:
    """A node whose own secret differs finds out as before: it cannot verify the others'
    signed operations, and stops at one naming another secret instead of passing every one
    over with its lists empty."""
    wrong = MemoryReplica(WatchKeys(bytes(32 * [7])).check())
    with pytest.raises(SecretMismatch):
        watchlog.catch_up(wrong, on_stream([signed("bank", add=(1,))]), 1, deadline=1,
                          clock=lambda: 0.0, mac=WatchKeys(bytes(32 * [7])).op_mac)  # fmt: skip
    assert wrong.applied() == 0


def test_a_seal_of_the_release_before_the_signed_operations_is_read_with_none() -> None:
    seal = watchsnap.Seal(bytes(16), watchlog.secret_check(KEYS.check()), 7, 1, 3, 1, 5)
    assert (
        watchsnap.decode_seal(KEYS.snapshot_mac, watchsnap.encode_seal(KEYS.snapshot_mac, seal))
        == seal
    )
    head = watchsnap._SEAL_V1.pack(1, *seal[:-1])
    old = watchsnap.decode_seal(KEYS.snapshot_mac, head + KEYS.snapshot_mac(head))
    assert old == seal._replace(signed_from=0)


def test_a_signed_operation_published_again_later_is_passed_over_by_every_node(
    tmp_path: Path,
) -> None:
    """The MAC does not cover the message id: anyone who may publish on the watch subject
    can copy a signed operation from the stream and publish it again, later, under a new
    one. An old "remove 1" published again after the party's later "add 1" would take 1 off
    its list on every node (its changes no longer delivered). The operation carries its
    publisher's time under the MAC; every node compares it with the time the server stored
    that message at (the same for every node): more than `REPLAY_WINDOW` apart, passed over.
    A publisher's clock within the allowance either way is fine."""
    window = watchlog.REPLAY_WINDOW * 1000
    remove = signed("bank", remove=(1,), at=T0 + 1_000)
    log = [
        signed("bank", add=(1, 2), at=T0),  # 1: stored 0.4 s after its publisher's time
        remove,  # 2: the party removes 1
        signed("bank", add=(1,), at=T0 + 5_000),  # 3: and adds it again
        remove,  # 4: 2 copied verbatim, published again just past the window
        remove,  # 5: and ten days later
        signed("bank", add=(3,), at=T0 + 70_000 + window - 1_000),  # 6: a clock 59 s ahead
        signed("bank", add=(4,), at=T0 + 80_000 + window + 1),  # 7: one past the allowance
        signed("bank", add=(5,), at=T0 + 90_000 - window),  # 8: a clock 60 s behind
    ]
    stamps = {1: T0 + 400, 2: T0 + 1_000, 3: T0 + 5_000, 4: T0 + 1_000 + window + 1,
              5: T0 + 10 * 86_400_000, 6: T0 + 70_000, 7: T0 + 80_000, 8: T0 + 90_000}  # fmt: skip
    memory = MemoryReplica(KEYS.check())
    lmdb_lists = LmdbWatchSet(tmp_path / "w", KEYS, map_size=1 << 24)
    try:
        for lists in (memory, lmdb_lists):
            assert watchlog.catch_up(lists, on_stream(log, stamps), len(log), deadline=1,
                                     clock=lambda: 0.0, mac=KEYS.op_mac) == len(log)  # fmt: skip
        keys = [sf.status_key(1, s) for s in range(1, 6)]
        assert lmdb_lists.watched("bank", keys) == [True, True, True, False, True]
        tag = KEYS.tag("bank")
        kept = KEYS.entries(tag, [keys[i] for i in (0, 1, 2, 4)])
        assert memory.lists[tag] == {e[len(tag) :] for e in kept}
        assert memory.skipped == [4, 5, 7]
        count, why = lmdb_lists.passed()
        assert count == 3 and "operation 7:" in why and "publisher's time" in why, why
        assert lmdb_lists.outcome(4) is None and lmdb_lists.outcome(3) is not None
    finally:
        lmdb_lists.close()


def test_a_signed_operations_time_is_under_its_mac() -> None:
    """The publisher's time cannot be changed to bring a copy into the window: the MAC
    covers it (and an operation cut before it is none)."""
    raw = signed("bank", add=(1,), at=T0)
    got = watchlog.decode(raw, KEYS.op_mac)
    assert got is not None and got.signed and got.at_ms == T0
    assert watchlog.encode(got, KEYS.op_mac) == raw
    at = 1 + watchlog.CHECK_BYTES + 8
    moved = raw[:at] + (T0 + 3_600_000).to_bytes(8, "big") + raw[at + 8 :]
    assert watchlog.decode(moved, KEYS.op_mac) is None
    assert watchlog.decode(raw[: at + 4], KEYS.op_mac) is None
    assert watchlog.replayed(T0, T0 + 60_000) is None and watchlog.replayed(T0, T0 - 60_000) is None
    assert watchlog.replayed(T0, T0 + 60_001) is not None
    assert watchlog.replayed(T0, T0 - 60_001) is not None
