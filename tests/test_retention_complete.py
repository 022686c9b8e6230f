"""The complete retention agenda (`crlbuilder.retention`): once scanned, never scanned again.

The erasure past retention scanned every CRL entry, lapsed notice, kept entry, consent and sealed
facts entry in its one write transaction whenever its agenda ran out (every 30 days) or a commit
wrote an entry that could fall due before the agenda's horizon; the builder has one writer, so a
revocation read meanwhile waited for the whole scan (bench/bench_scan_wait.py). Now every commit
lists what it writes, whenever it falls due: after the first scan an erasure reads only what the
agenda names by then, and erases what a scan of every entry would erase at that instant.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder import apply
from crlbuilder.apply import from_epoch
from crlbuilder.ingest import read_file
from crlbuilder.model import Category, Family
from crlbuilder.periods import kept_until
from crlbuilder.retention import (
    LOOKAHEAD,
    Periods,
    next_erasure,
    periods_digest,
    scanned,
    scanned_whole,
    stale,
)
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store, copy_store
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit
from tests.support.store import NODE_STATE, agenda, dump_store, node_state
from tests.test_apply import INDEX as INDICES
from tests.test_apply import KEY, World, issuance, rid, ts
from tests.test_apply import T0 as T0_DATE
from tests.test_lapse_time import FakeClock

DAY = 86_400
ISSUER = "sign-card-g2"
INDEX = INDICES[ISSUER]
T0 = int(datetime.fromisoformat(ts(0)).timestamp())
SCANS = (
    "revoked_recorded",
    "sealed_ends",
    "pending_notices",
    "taken_kept",
    "move_ins_kept",
    "consents_kept",
    "withdrawals_kept",
)
"""What a scan of every entry reads (`Applier.erase_past_retention`); an erasure from the agenda
reads none of them."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def retention(family: Family, category: Category) -> int:
    return 100 if category is Category.REQUEST else 200


def _no_scan(self: LmdbReader) -> Iterator[object]:
    raise AssertionError("the agenda was not used: every entry was read")


def _revocation(serial: int, day: float) -> dict[str, object]:
    return {"type": "revocation-request", "id": rid(), "recorded_at": ts(day), "issuer": ISSUER,
            "serial": serial, "reason": "loss"}  # fmt: skip


def _consent(holder: str, day: float) -> dict[str, object]:
    return {"type": "consent", "id": rid(), "recorded_at": ts(day), "holder": holder,
            "verifier": "bank", "granted": True}  # fmt: skip


def _erase(w: World, day: float, monkeypatch: pytest.MonkeyPatch | None = None) -> list[int]:
    """Erase at ``day``; with ``monkeypatch``, any read of every entry fails the test. Returns
    what went: CRL entries, facts, consents."""
    with pytest.MonkeyPatch.context() as m:
        if monkeypatch is not None:
            for name in SCANS:
                m.setattr(LmdbReader, name, _no_scan)
        ap = w.apply([])
        ap.erase_past_retention(int(T0 + day * DAY), retention, keep_time=False, agenda=True)
    return [ap.summary.erased, ap.summary.facts_erased, ap.summary.consents_erased]


def _scan(w: World, day: float) -> list[int]:
    ap = w.apply([])
    ap.erase_past_retention(int(T0 + day * DAY), retention, keep_time=False)
    return [ap.summary.erased, ap.summary.facts_erased, ap.summary.consents_erased]


def test_after_its_first_scan_the_agenda_erases_what_every_scan_erases_and_never_scans_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores given the same records, erased at the same instants: one reads every entry
    each time, the other keeps the agenda and reads no entry after its first erasure, across
    the 30-day horizon an earlier release's agenda had, a revocation recorded long ago read
    after the scan (due before that horizon: it made the agenda stale), facts sealed and a
    consent written since. The same go at each instant, and the two hold the same bytes."""
    holders = [f"{i:02x}" * 32 for i in range(0x30, 0x38)]
    base = [
        issuance(10, ISSUER, holders[0], 0, not_after=ts(300)),  # due at day 300 (notAfter)
        issuance(11, ISSUER, holders[1], 0, not_after=ts(120)),  # its facts: day 120
        issuance(12, ISSUER, holders[2], 0, not_after=ts(130)),  # due at day 130
        issuance(13, ISSUER, holders[3], 0, not_after=ts(200)),  # due at day 200
        issuance(14, ISSUER, holders[4], 0, not_after=ts(90)),
        issuance(15, ISSUER, holders[5], 0, not_after=ts(1400)),
        _revocation(10, 10),
        _revocation(12, 20),
        _revocation(13, 30),
    ]
    late = [_revocation(14, 1)]  # recorded at day 1, read at day 60: due at day 102
    since = [
        issuance(16, ISSUER, holders[6], 100, not_after=ts(400)),  # facts due at day 400
        _revocation(15, 135),  # due at day 1400 (notAfter)
        _consent(holders[6], 101),  # due 200 days after serial 16's notAfter
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept, every = World(tmp_path / "a"), World(tmp_path / "b")
    for w in (kept, every):
        w.apply(base)
    assert _erase(kept, 50) == _scan(every, 50) == [0, 0, 0]  # the first: a scan
    kept.store.close()  # a builder started again: only the store carries the agenda
    kept.store = Store.open(kept.tmp / "store", readonly=False, map_size=1 << 26)
    steps: list[tuple[float, list[dict[str, object]]]] = [
        (60, late), (81, []), (100, since), (103, []), (121, []), (131, []), (201, []),
        (301, []), (400, []), (400 + 2 / DAY, []), (600, []), (601, []), (1400, []), (1700, []),
    ]  # fmt: skip
    went: list[list[int]] = []
    for day, records in steps:
        for w in (kept, every):
            w.apply(records)
        got = _erase(kept, day, monkeypatch)
        assert got == _scan(every, day), f"day {day}"
        went.append(got)
    assert went == [
        [0, 0, 0], [0, 0, 0], [0, 0, 0],
        [1, 0, 0],  # serial 14, recorded long ago, read after the scan
        [0, 1, 0],  # serial 11's facts, the second after its notAfter
        [1, 0, 0], [1, 0, 0], [1, 0, 0],  # serials 12, 13, 10
        [0, 0, 0], [0, 1, 0],  # serial 16's facts, the second after its notAfter
        [0, 0, 0], [0, 0, 1],  # the consent: 200 days from the day after serial 16's end
        [1, 0, 0],  # serial 15, at its notAfter (its period ended at day 236)
        [0, 0, 0],
    ]  # fmt: skip
    with kept.store.read() as r:
        state = r.retention_state()
    assert state is not None and state.scanned_at == T0 + 50 * DAY and state.complete
    assert dump_store(kept.store, skip=_not_node_state()) == dump_store(
        every.store, skip=_not_node_state()
    )
    kept.store.close()
    every.store.close()


def _not_node_state() -> list[bytes]:
    return [name for name in sf.ALL_DBS if name not in NODE_STATE]


def test_an_erasure_reads_what_falls_due_not_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait a revocation can suffer behind an erasure: after the first scan, an erasure past
    30-day horizons reads as many entries on a store of 4 revoked certificates as on one of 40
    (none is due): what it reads is bounded by what falls due, not by the store's size."""
    reads: list[int] = []

    def counted(w: World) -> int:
        n = 0
        real_status, real_entry = LmdbReader.status, LmdbReader.revoked_entry

        def status(self: LmdbReader, key: bytes) -> sf.StatusRecord | None:
            nonlocal n
            n += 1
            return real_status(self, key)

        def entry(self: LmdbReader, key: bytes) -> sf.RevokedEntry | None:
            nonlocal n
            n += 1
            return real_entry(self, key)

        with monkeypatch.context() as m:
            m.setattr(LmdbReader, "status", status)
            m.setattr(LmdbReader, "revoked_entry", entry)
            for day in (81, 111, 141, 171):  # each past an earlier release's horizon
                assert _erase(w, day, monkeypatch) == [0, 0, 0]
        return n

    for size in (4, 40):
        (tmp_path / str(size)).mkdir()
        w = World(tmp_path / str(size))
        w.apply(
            [issuance(100 + n, ISSUER, f"{n:064x}", 0, not_after=ts(1000)) for n in range(size)]
            + [_revocation(100 + n, 40) for n in range(size)]
        )
        _erase(w, 50)  # the first erasure scans, once
        with w.store.read() as r:
            assert r.count(sf.DB_REVOKED) == size
        reads.append(counted(w))
        w.store.close()
    assert reads == [0, 0]


def test_a_commit_lists_what_it_writes_on_a_complete_agenda_and_lowers_no_watermark(
    world: World,
) -> None:
    """A revocation at the end of the shortest period from its recordedAt (the listing of the
    facts it deletes gone), the facts it seals at the second after notAfter, a consent as a CRL
    entry: on the agenda in the commit that writes them; the watermarks stay unset, so the
    agenda stays good."""
    holder = "3a" * 32
    world.apply([issuance(20, ISSUER, holder, 0, not_after=ts(700))])
    _erase(world, 10)
    world.apply([issuance(21, ISSUER, "3c" * 32, 11, not_after=ts(800)), _revocation(20, 12),
                 _consent(holder, 13)])  # fmt: skip
    with world.store.read() as r:
        assert r.revoked_written_from() is None and r.kept_written_from() is None
    key20, key21 = sf.status_key(INDEX, 20), sf.status_key(INDEX, 21)
    listed = agenda(world.store)
    at = int(datetime.fromisoformat(ts(800)).timestamp()) + 1
    # serial 20's facts went with its revocation, and their listing (day 700) with them: one
    # entry per thing that can still fall due
    revoked_at = kept_until(int(datetime.fromisoformat(ts(12)).timestamp()), 100)
    assert [e for e in listed if e[1] == key20] == [(revoked_at, key20)]
    assert (at, key21) in listed
    holder_at = kept_until(int(datetime.fromisoformat(ts(13)).timestamp()), 100)
    assert (holder_at, bytes.fromhex(holder)) in listed
    # taken at that instant: the CRL entry listed again at its own (notAfter, day 700)
    _erase(world, 113, None)
    listed = agenda(world.store)
    assert (int(datetime.fromisoformat(ts(700)).timestamp()), key20) in listed
    assert (kept_until(int(datetime.fromisoformat(ts(12)).timestamp()), 100), key20) not in listed


def test_a_withdrawal_written_on_a_complete_agenda_is_listed_and_erased_without_a_scan(
    world: World,
) -> None:
    """A withdrawal of consent kept (rules 9, `crlbuilder.consentkept`) is listed under its
    holder key by the commit that writes it, as a consent is (`Commit.put_withdrawal`): no
    watermark lowered, and it goes at its instant by an erasure that reads no store-wide pass."""
    holder = "3d" * 32
    world.apply([issuance(22, ISSUER, holder, 0, not_after=ts(700)), _consent(holder, 1)])
    _erase(world, 10)
    world.apply([{**_consent(holder, 13), "granted": False}])
    with world.store.read() as r:
        assert r.revoked_written_from() is None and r.kept_written_from() is None
        assert r.consent(bytes.fromhex(holder), "bank") is None
        assert r.withdrawal(bytes.fromhex(holder), "bank") is not None
    holder_at = kept_until(int(datetime.fromisoformat(ts(13)).timestamp()), 100)
    assert (holder_at, bytes.fromhex(holder)) in agenda(world.store)
    ap = world.apply([])
    due = kept_until(int(datetime.fromisoformat(ts(700)).timestamp()), 200)
    with pytest.MonkeyPatch.context() as m:
        for name in SCANS:
            m.setattr(LmdbReader, name, _no_scan)
        ap.erase_past_retention(due - 1, retention, keep_time=False, agenda=True)
        assert ap.summary.withdrawals_erased == 0
        ap.erase_past_retention(due, retention, keep_time=False, agenda=True)
    assert ap.summary.withdrawals_erased == 1
    with world.store.read() as r:
        assert r.withdrawal(bytes.fromhex(holder), "bank") is None


class _RecordingTxn:
    """A commit's LMDB transaction that records, in order, every key written to ``db`` (the
    retention agenda) by a put or a cursor's put or putmulti, and does the write."""

    def __init__(self, txn: Any, db: Any, written: list[bytes]) -> None:
        self._txn, self._db, self.written = txn, db, written

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        if kw.get("db") is self._db:
            self.written.append(bytes(key))
        return self._txn.put(key, value, **kw)

    def cursor(self, **kw: Any) -> Any:
        cur = self._txn.cursor(**kw)
        return _RecordingCursor(cur, self.written) if kw.get("db") is self._db else cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


class _RecordingCursor:
    def __init__(self, cur: Any, written: list[bytes]) -> None:
        self._cur, self.written = cur, written

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        self.written.append(bytes(key))
        return self._cur.put(key, value, **kw)

    def putmulti(self, items: Any, **kw: Any) -> Any:
        items = list(items)
        self.written.extend(bytes(k) for k, _ in items)
        return self._cur.putmulti(items, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def test_a_commit_writes_what_it_lists_once_each_in_key_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agenda entries a commit of records lists (facts at notAfter + 1, CRL entries and
    consents from their recordedAt) are written once each, in key order, not one put per listing
    in the order the records came: each such put searched the agenda from its root, among the
    commit's other writes (bench/README.md,
    "Issue 17, tenth pass: the retention scan off the revocations' path"). The agenda holds the
    same entries."""
    holder = "3e" * 32
    world.apply([issuance(20, ISSUER, holder, 0, not_after=ts(700))])
    _erase(world, 10)  # a complete agenda: every commit lists from now on
    written: list[bytes] = []
    retention_db = world.store.dbs[sf.DB_RETENTION]
    made = Commit.__init__

    def recording(self: Commit, *args: Any, **kw: Any) -> None:
        made(self, *args, **kw)
        self._txn = _RecordingTxn(self._txn, retention_db, written)

    monkeypatch.setattr(Commit, "__init__", recording)
    world.apply([
        issuance(21, ISSUER, "3f" * 32, 11, not_after=ts(900)),
        issuance(22, ISSUER, "40" * 32, 11, not_after=ts(800)),
        _consent(holder, 12),
        _consent(holder, 12.5),  # the same JST day: listed at the same instant, written once
        _revocation(20, 12),
        issuance(23, ISSUER, "41" * 32, 12, not_after=ts(750)),
    ])  # fmt: skip
    assert written == sorted(set(written))
    listed = agenda(world.store)
    facts = [(int(datetime.fromisoformat(ts(d)).timestamp()) + 1, sf.status_key(INDEX, n))
             for n, d in ((21, 900), (22, 800), (23, 750))]  # fmt: skip
    assert set(facts) <= set(listed)
    holder_at = kept_until(int(datetime.fromisoformat(ts(12)).timestamp()), 100)
    assert (holder_at, bytes.fromhex(holder)) in listed
    assert sorted(written) == [sf.retention_key(d, k) for d, k in listed if d > T0 + 10 * DAY]


def test_what_a_commit_lists_it_reads_and_empties_in_the_same_commit(world: World) -> None:
    """What a commit lists is on the agenda for its own reads before it ends (the first due
    instant, the count, what is taken as due), an agenda the commit makes again drops it, and a
    certificate issued and revoked in one commit leaves no listing of its facts."""
    holder = "42" * 32
    world.apply([issuance(20, ISSUER, holder, 0, not_after=ts(700))])
    _erase(world, 10)
    a, b = sf.status_key(INDEX, 30), sf.status_key(INDEX, 31)
    with Commit(world.store) as c:
        before = c.count(sf.DB_RETENTION)
        c.put_retention(T0 + 5 * DAY, a)
        c.put_retention(T0 + 3 * DAY, b)
        assert c.count(sf.DB_RETENTION) == before + 2
        c.put_retention(T0 + 2 * DAY, a)
        assert c.take_retention(T0 + 4 * DAY) == [a, b]
        c.put_retention(T0 + DAY, b)
        assert c.first_retention_due() == T0 + DAY
    assert [(d, k) for d, k in agenda(world.store) if d < T0 + 10 * DAY] == [
        (T0 + DAY, b),
        (T0 + 5 * DAY, a),
    ]
    with world.store.read() as r:
        state = r.retention_state()
    assert state is not None
    with Commit(world.store) as c:
        c.put_retention(T0 + 7 * DAY, a)
        c.rebuild_retention(state, [(T0 + 8 * DAY, b)])
    assert agenda(world.store) == [(T0 + 8 * DAY, b)]
    world.apply([issuance(21, ISSUER, "43" * 32, 11, not_after=ts(900)), _revocation(21, 12)])
    key21 = sf.status_key(INDEX, 21)
    revoked_at = kept_until(int(datetime.fromisoformat(ts(12)).timestamp()), 100)
    assert [e for e in agenda(world.store) if e[1] == key21] == [(revoked_at, key21)]


def test_a_commit_of_an_earlier_release_makes_a_complete_agenda_stale(world: World) -> None:
    """A builder of an earlier release lists nothing and lowers a watermark: the next erasure
    scans every entry (and finds what that commit wrote)."""
    holder = "3b" * 32
    world.apply([issuance(30, ISSUER, holder, 0, not_after=ts(50))])
    _erase(world, 10)
    world.apply([_revocation(30, 11)])
    key = sf.status_key(INDEX, 30)
    with world.store.env.begin(write=True) as txn:  # what that release's commit leaves
        for k, _ in list(txn.cursor(db=world.store.dbs[sf.DB_RETENTION])):
            if bytes(k).endswith(key):
                txn.delete(k, db=world.store.dbs[sf.DB_RETENTION])
        txn.put(sf.META_REVOKED_FROM, sf.pack_i64(T0 + 11 * DAY),
                db=world.store.dbs[sf.DB_META])  # fmt: skip
    with pytest.raises(AssertionError, match="every entry was read"):
        _erase(world, 112, pytest.MonkeyPatch())
    assert _erase(world, 112) == [1, 0, 0]
    with world.store.read() as r:
        assert r.revoked_written_from() is None


def test_a_complete_agenda_is_stale_only_for_another_digest_an_earlier_clock_or_a_watermark() -> (
    None
):
    """`retention.stale` and `retention.next_erasure` of a complete agenda: no horizon."""
    periods = periods_digest(retention)
    s = scanned_whole(T0, periods, 100)
    assert s.complete and not scanned(T0, periods).complete
    far = T0 + 100 * LOOKAHEAD
    assert not stale(s, far, None, 100, periods)
    assert stale(s, T0 - 1, None, 100, periods) and stale(s, far, None, 100, "other")
    assert stale(s, far, T0 + 5 * DAY, 100, periods)  # a watermark: an earlier release's commit
    assert stale(s, far, None, 100, periods, kept_since=far + 10**9)
    assert next_erasure(s, None, None, 100) is None  # nothing listed: nothing falls due
    assert next_erasure(s, far, None, 100) == far
    assert next_erasure(s, far, T0, 100) == kept_until(T0, 100)
    with pytest.raises(ValueError, match="shortest period"):
        scanned_whole(T0, periods, 0)


def test_an_earlier_releases_decoder_reads_the_complete_agenda_state() -> None:
    """The state gains a field (``shortest``); msgspec's decoder of the earlier state ignores it
    and sees another digest, so an earlier release scans again rather than use the agenda."""

    class Earlier(msgspec.Struct, frozen=True, kw_only=True):
        scanned_at: int
        horizon: int
        periods: str

    raw = msgspec.json.encode(scanned_whole(T0, periods_digest(retention), 100))
    got = msgspec.json.decode(raw, type=Earlier)
    assert got.periods != periods_digest(retention, ("notices-1", "kept-1", "facts-1",
                                                      "consents-1"))  # fmt: skip


def test_a_scan_lists_in_chunks_what_it_lists_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan of a complete agenda lists every entry of the store: in chunks
    (`apply.AGENDA_CHUNK`), so as not to hold them all in memory; the agenda is the same."""
    records = [issuance(40 + n, ISSUER, f"{0x40 + n:02x}" * 32, 0, not_after=ts(500 + n))
               for n in range(7)] + [_revocation(40 + n, 10 + n) for n in range(0, 7, 2)]  # fmt: skip
    agendas = []
    for chunk in (2, 1 << 19):
        (tmp_path / str(chunk)).mkdir()
        w = World(tmp_path / str(chunk))
        w.apply(records)
        with monkeypatch.context() as m:
            m.setattr(apply, "AGENDA_CHUNK", chunk)
            _erase(w, 20)
        agendas.append(agenda(w.store))
        w.store.close()
    assert agendas[0] == agendas[1] and len(agendas[0]) == 7  # 4 CRL entries, 3 facts


# --- random records and erasures: the agenda against a scan of every entry ----------------

SEED = 20261207
"""The random sequences' seed: fixed, so a failure is repeated as it was."""
STEPS = 120
"""Batches of records per sequence (each followed by an erasure): a few seconds."""
SEQUENCE_ISSUERS = ("sign-card-g1", "sign-card-g2", "auth-card-g1")


def _short(family: Family, category: Category) -> int:
    """Periods far shorter than a certificate's validity, so that entries fall due within the
    sequence, one category shorter than the rest."""
    return 40 if category is Category.REQUEST else 70


def _read_at(w: World, now: int, records: list[dict[str, object]]) -> None:
    """Apply ``records`` with the builder's clock at ``now`` (lapses written then too)."""
    w.files += 1
    path = w.tmp / f"r{w.files:04}.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    ap = apply.Applier(w.store, facts_key=KEY, quarantine=w.quarantine, verifiers=w.verifiers,
                       notices_path=w.tmp / "notices.jsonl", clock=FakeClock(from_epoch(now)))  # fmt: skip
    ap.run(read_file(path))
    ap.sweep_lapses(from_epoch(now))


def _other(family: Family, category: Category) -> int:
    """Another configuration of the periods (another digest, another shortest period)."""
    return 55 if category is Category.REQUEST else 60


def _erased(
    w: World,
    now: int,
    *,
    agenda: bool,
    periods: Periods = _short,
    scans: bool = True,
    lookahead: int | None = None,
) -> tuple[int, ...]:
    """Erase at ``now``; ``scans`` False: any read of every entry fails the test; ``lookahead``:
    an agenda made to a horizon, as an earlier release made it."""
    ap = apply.Applier(w.store, facts_key=KEY, quarantine=w.quarantine, verifiers=w.verifiers,
                       notices_path=w.tmp / "notices.jsonl", clock=FakeClock(from_epoch(now)))  # fmt: skip
    with pytest.MonkeyPatch.context() as m:
        if not scans:
            for name in SCANS:
                m.setattr(LmdbReader, name, _no_scan)
        ap.erase_past_retention(now, periods, keep_time=False, agenda=agenda, lookahead=lookahead)
    s = ap.summary
    return (s.erased, s.facts_erased, s.notices_erased, s.taken_erased, s.move_ins_erased,
            s.consents_erased, s.withdrawals_erased)  # fmt: skip


def _random_batch(rng: random.Random, day: float, issued: list[tuple[str, int, str, float]],
                  serials: list[int]) -> list[dict[str, object]]:  # fmt: skip
    """One to four records read at ``day``: issuances (some recorded late), revocations of
    several categories (some recorded long before they are read, some of a certificate
    revoked already), resident changes (a move-out notice that lapses, a move-in, a fact
    change, a deletion), consents granted and withdrawn."""
    holders = [f"{0x50 + n:02x}" * 32 for n in range(6)]
    out: list[dict[str, object]] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        late = rng.choice([0.0, 0.0, 0.5, 5.0, 35.0, 65.0])
        at = max(0.0, day - late)
        holder = rng.choice(holders)
        if kind < 0.3 or not issued:
            issuer = rng.choice(SEQUENCE_ISSUERS)
            serials[0] += 1
            end = at + rng.choice([20, 45, 90, 200, 400])
            extra: dict[str, object] = {}
            cards = [(s, e) for i, s, h, e in issued if h == holder and i == "sign-card-g1"]
            if cards and cards[-1][1] > at + 2 and rng.random() < 0.5:
                # a mobile one, within its card's validity: revoked by its card's cascade
                issuer, extra["card_serial"] = "sign-mobile-g1", cards[-1][0]
                end = rng.uniform(at + 1, cards[-1][1])
            issued.append((issuer, serials[0], holder, end))
            out.append(issuance(serials[0], issuer, holder, at, not_after=ts(end), **extra))
        elif kind < 0.55:
            issuer, serial, _, _ = rng.choice(issued)
            if rng.random() < 0.5:
                out.append({"type": "revocation-request", "id": rid(), "recorded_at": ts(at),
                            "issuer": issuer, "serial": serial, "reason": "loss"})  # fmt: skip
            else:
                out.append({"type": "recording-error", "id": rid(), "recorded_at": ts(at),
                            "issuer": issuer, "serial": serial})  # fmt: skip
        elif kind < 0.8:
            change: dict[str, object] = {"type": "resident-change", "id": rid(),
                                         "recorded_at": ts(at), "holder": holder}  # fmt: skip
            what = rng.choice(["move-out-notice", "move-out-notice", "move-in-notice",
                               "fact-change", "record-deletion"])  # fmt: skip
            change["change"] = what
            if what == "move-out-notice":
                change["planned_date"] = (T0_DATE + timedelta(days=at + rng.randint(0, 10))).date(
                ).isoformat()  # fmt: skip
            elif what == "fact-change":
                change["fact"] = "address"
            elif what == "record-deletion":
                change["cause"] = rng.choice(["death", "move-out", "abroad-move-out"])
            out.append(change)
        else:
            out.append({**_consent(holder, at), "granted": rng.random() < 0.7})
    return out


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_random_records_and_erasures_leave_the_agenda_store_as_a_scan_of_every_entry(
    tmp_path: Path, seed: int
) -> None:
    """Two stores given the same random records (issuances, revocations of two periods, some
    recorded long before read, recording errors, move-out notices that lapse, move-ins, fact
    changes, deletions, consents granted and withdrawn) and erased at the same random instants
    (steps of hours to months, the clock sometimes set back, the periods reconfigured and back
    now and then, the agenda made to a horizon for the first third of the steps, the agenda's
    store replaced by its `crlbuilder store copy` halfway): one from its agenda, the other by a scan of every entry each time. The same go at every instant, the
    agenda's store reads no entry but when its agenda cannot be trusted (another digest, a clock
    before its scan), and the two end with the same bytes in every database two nodes share
    (`NODE_STATE`)."""
    rng = random.Random(seed)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept, every = World(tmp_path / "a"), World(tmp_path / "b")
    issued: list[tuple[str, int, str, float]] = []
    serials = [1000]
    day = 1.0
    periods = scanned_with = _short
    went: list[tuple[int, ...]] = []
    for step in range(STEPS):
        records = _random_batch(rng, day, issued, serials)
        now = int(T0 + day * DAY)
        for w in (kept, every):
            _read_at(w, now, records)
        day += rng.choice([1 / 24, 0.5, 1.0, 3.0, 10.0, 30.0, 45.0, 400.0])
        if rng.random() < 0.05:
            day -= rng.choice([1 / 24, 2.0])  # the clock set back
        now = int(T0 + day * DAY)
        if rng.random() < 0.05:
            periods = _other if periods is _short else _short  # reconfigured, or back
        with kept.store.read() as r:
            state = r.retention_state()
        trusted = (
            state is not None
            and state.complete
            and periods is scanned_with
            and state.scanned_at <= now
        )
        # the first third with an agenda made to a 30-day horizon, its commits lowering the
        # watermarks (an earlier release's way): then made complete, mid-life
        horizon = LOOKAHEAD if step < STEPS // 3 else None
        got = _erased(kept, now, agenda=True, periods=periods, scans=not trusted, lookahead=horizon)
        scanned_with = periods
        assert got == _erased(every, now, agenda=False, periods=periods), f"step {step}, {day}"
        went.append(got)
        if step == STEPS // 2:  # compacted: `crlbuilder store copy`, the copy put in its place
            kept.store.close()
            copy_store(kept.tmp / "store", kept.tmp / "copy")
            kept.store = Store.open(kept.tmp / "copy", readonly=False, map_size=1 << 26)
        if step % 20 == 19:
            assert node_state(kept.store) == node_state(every.store), f"step {step}"
    assert node_state(kept.store) == node_state(every.store)
    # every kind went at some instant: CRL entries, facts, notices, kept changes and lapses,
    # move-ins, consents, withdrawals
    assert all(sum(g[kind] for g in went) for kind in range(7)), went
    kept.store.close()
    every.store.close()


def test_the_next_erasure_after_the_periods_are_shortened_is_at_once(world: World) -> None:
    """Serial 51, valid to day 60 and revoked on day 1 at the holder's request, is due at the
    end of 100 days from its recordedAt under `retention` (day 102, 00:00 JST) and at its
    notAfter under `_short` (40 days end first). A complete agenda made under `retention` lists
    it at day 102; the operator then shortens the periods. At day 80 an erasure under `_short`
    erases it (its scan: another digest), but `apply.next_erasure`, by which the follow loop
    sleeps, still says day 102: it should say at once (the agenda's digest is not that of the
    periods: only a scan knows). After that erasure's scan the agenda is of the new periods and
    the next erasure is no longer at once (the follow loop does not spin)."""
    holder = "3e" * 32
    world.apply([issuance(51, ISSUER, holder, 0, not_after=ts(60)), _revocation(51, 1)])
    _erase(world, 10)  # the scan, under `retention`: serial 51 listed at day 102
    assert apply.next_erasure(world.store, retention) == from_epoch(T0 + 102 * DAY - 9 * 3600)
    at = apply.next_erasure(world.store, _short)
    ap = world.apply([])
    ap.erase_past_retention(T0 + 80 * DAY, _short, keep_time=False, agenda=True)
    assert ap.summary.erased == 1  # due by then under the new periods
    assert at is not None and at.timestamp() <= T0 + 80 * DAY, at
    after = apply.next_erasure(world.store, _short)
    assert after is None or after.timestamp() > T0 + 80 * DAY, after
