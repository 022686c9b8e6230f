"""A delta CRL's entries from the changes feed (`crlbuilder.crl.publish.crl_candidates`).

A delta CRL lists the CRL entries written after its base's commit. It was found by reading
every CRL entry of the issuer (16.4 million at 10,000,000 holders, for a delta of a few
thousand, at every build and every turn of the follow loop). Every CRL entry is written in
the commit of a loss of effect, which the changes feed records, so the feed after the base
names them all: the same entries, unless the feed no longer reaches the base (then every
entry is read, as before).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crlbuilder.crl.publish import crl_candidates
from crlbuilder.store import format as sf
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit
from tests.test_apply import INDEX, T0, World, holder_set, rid, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def revoke(serial: int, issuer: str, day: float) -> dict[str, object]:
    return {"type": "revocation-request", "id": rid(), "recorded_at": ts(day),
            "serial": serial, "issuer": issuer, "reason": "loss"}  # fmt: skip


def walked(world: World, index: int, since: int) -> list[tuple[bytes, sf.RevokedEntry]]:
    """What reading every CRL entry gives for a delta after ``since``."""
    with world.store.read() as r:
        return [(k, e) for k, e in r.revocations(index) if e.commit > since]


def from_feed(world: World, index: int, since: int) -> list[tuple[bytes, sf.RevokedEntry]]:
    with world.store.read() as r:
        assert since >= r.changes_from()
        return [(k, e) for k, e in crl_candidates(r, index, since) if e.commit > since]


def _no_walk(self: LmdbReader, issuer_index: int | None = None) -> Iterator[object]:
    raise AssertionError("every CRL entry read")


def test_a_delta_from_the_feed_lists_what_reading_every_entry_lists(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(6):
        world.apply(holder_set(f"{n + 1:02x}" * 32, base=100 + 10 * n))
    with world.store.read() as r:
        commits = [r.generation().commit]
    # revocations over several commits, several issuers, cascades to mobile certificates
    for batch in (
        [[revoke(101, "sign-card-g1", 5)], [revoke(111, "sign-card-g1", 6), revoke(122, "auth-card-g1", 6)],
         [revoke(131, "sign-card-g1", 7)], [revoke(142, "auth-card-g1", 8), revoke(151, "sign-card-g1", 8)]]
    ):  # fmt: skip
        world.apply(batch)
        with world.store.read() as r:
            commits.append(r.generation().commit)
    # an entry erased (Ord §70(1)(iii)) after it was written: on no CRL any more
    with Commit(world.store, lambda: T0) as c:
        key = sf.status_key(INDEX["sign-card-g1"], 131)
        st = c.status(key)
        assert st is not None
        c.erase(key, st, keep_time=False)
    expected = {
        (issuer, since): walked(world, INDEX[issuer], since)
        for issuer in INDEX
        for since in commits
    }
    assert sum(map(len, expected.values())) > 0
    monkeypatch.setattr(LmdbReader, "revocations", _no_walk)
    for (issuer, since), entries in expected.items():
        assert from_feed(world, INDEX[issuer], since) == entries, (issuer, since)


def test_a_base_the_feed_no_longer_reaches_reads_every_entry(world: World) -> None:
    world.apply(holder_set("01" * 32))
    world.apply([revoke(101, "sign-card-g1", 5)])
    with world.store.read() as r:
        base = r.generation().commit - 1
    with Commit(world.store) as c:
        c.prune_changes(2**40)  # the feed's horizon moves past every commit
    with world.store.read() as r:
        assert r.changes_from() > base
        listed = [
            (k, e) for k, e in crl_candidates(r, INDEX["sign-card-g1"], base) if e.commit > base
        ]
    assert listed == walked(world, INDEX["sign-card-g1"], base) != []
