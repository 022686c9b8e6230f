"""The lapse index (`store.format.DB_LAPSES`): the builder's next 30-day lapse without a walk.

The builder asks for the earliest pending lapse (Act §31(2)) after every spool file and at
every turn of the record stream's loop, and sweeps the due ones after every commit. It read
every move-out notice kept for that (175,608 on the 10,000,000-holder store, lapsed ones
included: 0.12-0.20 s each time). The index lists the notices not lapsed by
planned date, kept by `Commit` in the transaction that writes the notice, and is made again
from the notices when a commit did not keep it (a builder of an earlier version).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.apply import lapse_index, next_lapse
from crlbuilder.store import format as sf
from crlbuilder.store.reader import LmdbReader
from tests.test_apply import T0, World, holder_set, rid

HOLDERS = [f"{n:02x}" * 32 for n in range(0xA1, 0xA7)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def move(
    holder: str, change: str, planned: date | None = None, day: float = 1
) -> dict[str, object]:
    rec: dict[str, object] = {"type": "resident-change", "id": rid(), "holder": holder,
                              "recorded_at": (T0 + timedelta(days=day)).isoformat(), "change": change}  # fmt: skip
    if planned is not None:
        rec["planned_date"] = planned.isoformat()
    return rec


_read_every_notice = LmdbReader.pending_notices


def walked(world: World) -> list[tuple[date, bytes]]:
    """What reading every notice kept gives: the notices not lapsed, by planned date."""
    with world.store.read() as r:
        return sorted(
            (date.fromisoformat(p.planned_date), holder)
            for holder, p in _read_every_notice(r)
            if not p.lapsed_at
        )


def indexed(world: World) -> list[tuple[date, bytes]]:
    with world.store.read() as r:
        assert r.lapse_index_current()
        return list(r.pending_lapses())


def _no_walk(self: LmdbReader) -> Iterator[tuple[bytes, sf.PendingMoveOut]]:
    raise AssertionError("every notice read: the lapse index was not used")


def test_lapse_keys_sort_by_planned_date_then_holder() -> None:
    days = [date(1999, 12, 31), date(2000, 1, 1), date(2026, 5, 7), date(2026, 12, 31)]
    keys = [sf.lapse_key(d.isoformat(), h) for d in days for h in (b"\x00" * 32, b"\xff" * 32)]
    assert sorted(keys) == keys
    assert [sf.split_lapse_key(k) for k in keys] == [
        (d, h) for d in days for h in (b"\x00" * 32, b"\xff" * 32)
    ]


def test_the_index_is_what_reading_every_notice_gives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, h in enumerate(HOLDERS):
        world.apply(holder_set(h, base=100 + 10 * n))
    lapse_index(world.store)  # the store's first index: no notice yet
    assert indexed(world) == walked(world) == []
    monkeypatch.setattr(LmdbReader, "pending_notices", _no_walk)
    assert next_lapse(world.store) is None

    d = date(2024, 2, 19)
    steps = [
        # notices with planned dates out of holder order, two on one day
        [move(HOLDERS[0], "move-out-notice", d + timedelta(days=5)),
         move(HOLDERS[1], "move-out-notice", d),
         move(HOLDERS[2], "move-out-notice", d),
         move(HOLDERS[3], "move-out-notice", d + timedelta(days=40))],
        # a second notice replaces the first: its old date leaves the index
        [move(HOLDERS[0], "move-out-notice", d - timedelta(days=3), day=2)],
        # a move-in notice deletes the pending one
        [move(HOLDERS[1], "move-in-notice", day=3)],
        # a notice for a holder with no certificates of the lapse's family still counts
        [move(HOLDERS[4], "move-out-notice", d + timedelta(days=90), day=4)],
    ]  # fmt: skip
    for records in steps:
        world.apply(records)
        assert indexed(world) == walked(world)
        first = walked(world)[0][0]
        assert next_lapse(world.store) == rules.move_out_lapse(first)
    assert [p for p, _ in indexed(world)] == [
        d - timedelta(days=3),
        d,
        d + timedelta(days=40),
        d + timedelta(days=90),
    ]

    # the sweep lapses what is due, and only that; the lapsed notices leave the index
    as_of = rules.move_out_lapse(d)
    ap = world.apply([])
    ap.clock = lambda: as_of
    assert ap.sweep_lapses(as_of) == 4  # two holders: auth-card and auth-mobile each
    assert world.status("auth-card-g1", 102).revoked  # HOLDERS[0], planned d - 3
    assert world.status("auth-card-g1", 122).revoked  # HOLDERS[2], planned d
    assert not world.status("auth-card-g1", 112).revoked  # HOLDERS[1] moved in
    assert not world.status("auth-card-g1", 132).revoked  # HOLDERS[3], not due
    assert (
        indexed(world)
        == walked(world)
        == [
            (d + timedelta(days=40), bytes.fromhex(HOLDERS[3])),
            (d + timedelta(days=90), bytes.fromhex(HOLDERS[4])),
        ]
    )
    assert ap.sweep_lapses(as_of) == 0
    assert next_lapse(world.store) == rules.move_out_lapse(d + timedelta(days=40))


def _earlier_builder_writes(world: World, holder: str, planned: date) -> None:
    """A commit of a builder that keeps no lapse index: the notice and the commit only."""
    dbs = world.store.dbs
    with world.store.env.begin(write=True) as txn:
        meta = dbs[sf.DB_META]
        commit = sf.unpack_u32(bytes(txn.get(sf.META_COMMIT, db=meta) or b"")) + 1
        notice = sf.PendingMoveOut(record_id=rid(), notified_at=int(T0.timestamp()),
                                   planned_date=planned.isoformat(), abroad=False)  # fmt: skip
        txn.put(bytes.fromhex(holder), msgspec.json.encode(notice), db=dbs[sf.DB_PENDING])
        txn.put(sf.META_COMMIT, sf.pack_u32(commit), db=meta)


def test_a_commit_that_kept_no_index_has_it_made_again(world: World) -> None:
    world.apply(holder_set(HOLDERS[0], base=100))
    world.apply(holder_set(HOLDERS[1], base=110))
    late, early = date(2024, 3, 30), date(2024, 2, 19)
    world.apply([move(HOLDERS[0], "move-out-notice", late)])
    assert next_lapse(world.store) == rules.move_out_lapse(late)
    _earlier_builder_writes(world, HOLDERS[1], early)
    with world.store.read() as r:
        assert not r.lapse_index_current()  # the index is behind the store's commit
        assert [p for p, _ in r.pending_lapses()] == [late]  # and misses the notice
    # the builder's next question makes it again, and finds the earlier lapse
    assert next_lapse(world.store) == rules.move_out_lapse(early)
    assert indexed(world) == walked(world)
    # and the sweep lapses it: a notice another builder wrote is not forgotten
    as_of = rules.move_out_lapse(early)
    ap = world.apply([])
    ap.clock = lambda: as_of
    assert ap.sweep_lapses(as_of) == 2
    assert world.status("auth-card-g1", 112).revoked
    assert indexed(world) == walked(world)


def test_a_store_made_before_the_index_gains_it(world: World) -> None:
    world.apply(holder_set(HOLDERS[0], base=100))
    world.apply([move(HOLDERS[0], "move-out-notice", date(2024, 2, 19))])
    with world.store.env.begin(write=True) as txn:  # as a store of an earlier version
        txn.drop(world.store.dbs[sf.DB_LAPSES], delete=False)
        txn.delete(sf.META_LAPSES, db=world.store.dbs[sf.DB_META])
    with world.store.read() as r:
        assert not r.lapse_index_current()
        generation = r.generation()
    lapse_index(world.store)
    assert indexed(world) == walked(world) != []
    with world.store.read() as r:
        assert r.generation() == generation  # the index is the builder's: no commit moved


def test_next_lapse_of_a_past_planned_date(world: World) -> None:
    """A notice with a planned date long past (made before it, its record read late) still
    comes first (keys of early days sort first)."""
    world.apply(holder_set(HOLDERS[0], base=100))
    world.apply(holder_set(HOLDERS[1], base=110))
    late = move(HOLDERS[1], "move-out-notice", date(2023, 12, 1))
    late["notified_at"] = "2023-11-20T10:00:00+09:00"  # a planned date before it is refused
    world.apply([move(HOLDERS[0], "move-out-notice", date(2024, 2, 19)), late])
    assert next_lapse(world.store) == rules.move_out_lapse(date(2023, 12, 1))
