"""The store gauges of /metrics (`responder.storegauges`), read through the store reader."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import JPKI_FAMILIES, Category
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit
from responder import storegauges as g
from tests.conftest import Built


def test_count_entries_agrees_with_decoding_every_entry(built: Built) -> None:
    store = Store.open(built.store, readonly=True)
    try:
        families = {i.index: i.family for i in built.manifest.issuers}
        with store.read() as r:
            counted = g.count_entries(r, families)
            expected: dict[tuple[str, str], int] = {}
            for i in built.manifest.issuers:
                for _, e in r.revocations(i.index):
                    key = (i.family.value, Category.from_code(e.category).value)
                    expected[key] = expected.get(key, 0) + 1
        assert counted == expected and sum(counted.values()) > 100
        # every legal category of the Act's families is there (a token's is not: no token in
        # the population, Act §38-3)
        assert {c for _, c in counted} == {
            c.value for c in Category if any(c.applies_to(f) for f in JPKI_FAMILIES)
        }
    finally:
        store.close()


def test_latest_crls_are_the_newest_full_and_delta(built: Built) -> None:
    store = Store.open(built.store, readonly=True)
    try:
        with store.read() as r:
            files = [e for _, e in r.crl_files()]
            for i in built.manifest.issuers:
                latest = r.latest_crls(i.index)
                mine = [f for f in files if f.issuer == i.id]
                full = max((f for f in mine if not f.delta), key=lambda f: f.number)
                deltas = [f for f in mine if f.delta and f.number > full.number]
                want = [max(deltas, key=lambda f: f.number), full] if deltas else [full]
                assert latest == want, i.id
            assert r.latest_crls(999) == []
    finally:
        store.close()


def test_entry_counts_are_shared_between_workers(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(built.store, readonly=True)
    calls: list[int] = []
    real = g.count_entries

    def counting(*args: object, **kwargs: object) -> dict[tuple[str, str], int]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(g, "count_entries", counting)
    monkeypatch.setattr(g, "INLINE_ENTRIES", 0)  # always in the background
    try:
        families = {i.index: i.family for i in built.manifest.issuers}
        with store.read() as r:
            commit = r.generation().commit
        first = g.EntryCounts(store, families, tmp_path, min_interval=3600)
        assert first.get(commit) is None  # counting started in the background
        assert first.wait(10)
        counts = first.get(commit)
        assert counts is not None and sum(counts.values()) > 100 and len(calls) == 1
        second = g.EntryCounts(store, families, tmp_path, min_interval=3600)  # another worker
        assert second.get(commit) == counts and len(calls) == 1  # taken from the shared file
        # a new commit within min_interval: the last count is shown, no recount yet
        assert second.get(commit + 1) == counts
        assert second.wait(1) and len(calls) == 1
        assert oct(stat.S_IMODE((tmp_path / "store-entries.json").stat().st_mode)) == "0o600"
    finally:
        store.close()


def test_pre_signed_answers_earliest_next_update_and_last_walk_per_issuer(
    built: Built, tmp_path: Path
) -> None:
    """Each issuer with stored answers shows their earliest nextUpdate (crlbuilder re-signs
    them before it); one whose last walk was measured shows how long it took."""
    shutil.copytree(built.store, tmp_path / "store")
    store = Store.open(tmp_path / "store", readonly=False)
    try:
        with store.read() as r:
            issuers = r.issuers()
            states = {i.index: r.ocsp_state(i.index) for i in issuers}
        walked = next(i for i in issuers if states[i.index].next_update)
        with Commit(store) as c:
            c.put_ocsp_state(
                walked.index, msgspec.structs.replace(states[walked.index], walk_seconds=5_400)
            )
        refs = [g.IssuerRef(i.index, i.id, i.family) for i in issuers]
        got = {m.name: m for m in g.StoreCollector(store, refs).collect()}
    finally:
        store.close()
    presigned = {
        s.labels["issuer"]: s.value
        for s in got["jpkiva_presigned_next_update_timestamp_seconds"].samples
    }
    assert presigned == {i.id: states[i.index].next_update for i in issuers
                         if states[i.index].next_update}  # fmt: skip
    assert len(presigned) >= 2
    walks = {s.labels["issuer"]: s.value for s in got["jpkiva_presign_walk_seconds"].samples}
    # the build's own walks took a moment each (rounded up to a second)
    measured = {i.id: w for i in issuers if (w := states[i.index].walk_seconds)}
    assert walks == measured | {walked.id: 5_400}
    assert all(0 < states[i.index].walk_seconds < 60 for i in issuers if i.id in presigned)
