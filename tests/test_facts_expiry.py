"""The sealed four facts (基本4情報) go once their certificate's validity period has elapsed.

The store keeps a sign certificate's facts only for 特定署名用電子証明書記録情報 (Act §18(3)):
those of the holder's certificate that has not lost effect (§15(1), §16-14(1)). A certificate
whose validity period elapses loses effect (§15(1)(5), §16-14(1)(5)) with nobody revoking it, and
its facts are then read by nothing: the erasure past retention erases them at the second after
its notAfter (`crlbuilder.factskept`), from the retention agenda (`crlbuilder.retention`) without
reading every certificate at each erasure, by every build, follow-loop timer and stream tick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crlbuilder import factskept
from crlbuilder.apply import Applier, from_epoch, next_erasure
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category, Family, FourFacts, Sex
from crlbuilder.retention import KEPT, NOTICES, periods_digest, scanned
from crlbuilder.seal import FactsCipher
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader, changes_start
from crlbuilder.store.writer import Commit
from tests.support.builder import builder_config
from tests.support.idlefollow import ShiftedClock, logged_events, records_builder
from tests.test_apply import H1, H2, INDEX, KEY, World, issuance, rid, ts, two_holders, world

__all__ = ["world"]

DAY = 86_400
T0 = int(datetime.fromisoformat(ts(0)).timestamp())
NEW_FACTS = {"name": "試験 花子", "sex": "2", "birth_date": "319800915", "address": "東京都港区3-3"}


def retention(family: Family, category: Category) -> int:
    return 100


def sealed(w: World, issuer: str, serial: int) -> bytes | None:
    with w.store.read() as r:
        return r.sealed_facts(sf.status_key(INDEX[issuer], serial))


def erase(w: World, now: int, *, agenda: bool = True) -> Applier:
    ap = w.apply([])
    ap.erase_past_retention(now, retention, keep_time=False, agenda=agenda)
    return ap


def _no_scan(self: LmdbReader) -> Iterator[tuple[bytes, int | None, int]]:
    raise AssertionError("the agenda was not used: every sealed entry was read")


def test_facts_of_a_certificate_nobody_revokes_go_the_second_after_its_notafter(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1's mobile and card sign certificates expire on days 290 and 300, nobody revoking them;
    H2's run on. The first erasure scans (nothing due); the next ones take the agenda alone (no
    sealed entry read): notAfter's own second keeps them (still in effect, RFC 5280 inclusive),
    the next erases them, and moves no commit (nothing answers from them)."""
    two_holders(world)
    assert erase(world, T0 + 280 * DAY).summary.facts_erased == 0  # the scan: horizon day 310
    assert next_erasure(world.store, retention) == from_epoch(T0 + 290 * DAY + 1)
    with world.store.read() as r:
        before = (r.generation(), list(r.changes(changes_start(0))))
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "sealed_ends", _no_scan)
        assert erase(world, T0 + 290 * DAY).summary.facts_erased == 0  # notAfter's second
        assert sealed(world, "sign-mobile-g1", 103) is not None
        ap = erase(world, T0 + 290 * DAY + 1)
        assert ap.summary.facts_erased == 1 and ap.summary.as_dict()["facts_erased"] == 1
        assert sealed(world, "sign-mobile-g1", 103) is None
        assert sealed(world, "sign-card-g1", 101) is not None  # ends on day 300
        assert next_erasure(world.store, retention) == from_epoch(T0 + 300 * DAY + 1)
        assert erase(world, T0 + 300 * DAY).summary.facts_erased == 0
        assert erase(world, T0 + 301 * DAY).summary.facts_erased == 1
        assert sealed(world, "sign-card-g1", 101) is None
    # the status is untouched (it lost effect by its validity, no record), H2's facts open
    assert not world.status("sign-card-g1", 101).revoked
    key = sf.status_key(INDEX["sign-card-g1"], 201)
    facts = sealed(world, "sign-card-g1", 201)
    assert facts is not None and FactsCipher(KEY).open(key, facts).sex is Sex.MALE
    with world.store.read() as r:
        assert (r.generation(), list(r.changes(changes_start(0)))) == before
        # and no lateness bound (`crlbuilder.lateness`): no record is judged by the facts, so a
        # record read after their erasure is applied as before (no rules change)
        assert r.erased_state() is None


def test_a_renewed_holder_keeps_the_new_certificates_facts(world: World) -> None:
    """H1's first sign-card certificate expires on day 300 and a new one is issued on day 301:
    the erasure takes the old one's facts, the new one's stay and open to the new facts."""
    world.apply([issuance(101, "sign-card-g1", H1, 0, not_after=ts(300))])
    erase(world, T0 + 200 * DAY)  # an agenda made before the renewal
    world.apply([issuance(150, "sign-card-g2", H1, 301, facts=NEW_FACTS, not_after=ts(1800))])
    assert world.quarantined() == []
    ap = erase(world, T0 + 302 * DAY)
    assert ap.summary.facts_erased == 1
    assert sealed(world, "sign-card-g1", 101) is None
    key = sf.status_key(INDEX["sign-card-g2"], 150)
    facts = sealed(world, "sign-card-g2", 150)
    assert facts is not None
    assert FactsCipher(KEY).open(key, facts) == FourFacts(
        name="試験 花子", sex=Sex.FEMALE, birth_date="319800915", address="東京都港区3-3"
    )


def test_facts_sealed_after_the_scan_that_fall_due_before_its_horizon_are_on_the_agenda(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An issuance read late (its certificate ends inside the agenda's span, or ended already):
    the commit that seals its facts lists them (`Commit.add_certificate`), so the agenda alone
    erases them, at the same instant as a scan of every entry would."""
    world.apply([issuance(201, "sign-card-g1", H2, 0, not_after=ts(1400))])
    erase(world, T0 + 290 * DAY)  # the agenda: horizon day 320
    world.apply([
        issuance(101, "sign-card-g1", H1, 0, not_after=ts(305)),
        issuance(103, "sign-mobile-g1", H1, 1, card_serial=101, not_after=ts(280)),  # ended
        issuance(102, "auth-card-g1", H1, 0, not_after=ts(305)),
    ])  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "sealed_ends", _no_scan)
        assert next_erasure(world.store, retention) == from_epoch(T0 + 280 * DAY + 1)
        assert erase(world, T0 + 291 * DAY).summary.facts_erased == 1  # the mobile's
        assert sealed(world, "sign-mobile-g1", 103) is None
        assert sealed(world, "sign-card-g1", 101) is not None
        assert erase(world, T0 + 305 * DAY + 1).summary.facts_erased == 1
        assert sealed(world, "sign-card-g1", 101) is None
    assert sealed(world, "sign-card-g1", 201) is not None


def test_the_agenda_erases_what_a_scan_of_every_entry_erases(tmp_path: Path) -> None:
    """Two stores of the same records, one erasing from its agenda, the other reading every
    sealed entry each time (as a node replaying the stream's ticks with another agenda would):
    the same facts left after every erasure."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept, every = World(tmp_path / "a"), World(tmp_path / "b")
    try:
        records = [
            issuance(100 + n, "sign-card-g1", f"{n:02x}" * 32, n, not_after=ts(250 + 20 * n))
            for n in range(8)
        ]
        revoked = {"type": "revocation-request", "id": rid(), "recorded_at": ts(260),
                   "serial": 103, "issuer": "sign-card-g1", "reason": "loss"}  # fmt: skip
        for w in (kept, every):
            w.apply(records)
        for day in (200, 250, 251, 260, 275, 300, 331, 360, 400, 500):
            if day == 260:
                for w in (kept, every):
                    w.apply([revoked])
            erase(kept, T0 + day * DAY, agenda=True)
            erase(every, T0 + day * DAY, agenda=False)
            left = [[sealed(w, "sign-card-g1", 100 + n) is not None for n in range(8)]
                    for w in (kept, every)]  # fmt: skip
            assert left[0] == left[1], day
            assert left[0] == [(250 + 20 * n >= day and n != 3) or (n == 3 and day < 260)
                               for n in range(8)], day  # fmt: skip
    finally:
        kept.store.close()
        every.store.close()


def test_a_store_from_before_the_change_opens_and_its_first_erasure_takes_the_backlog(
    tmp_path: Path,
) -> None:
    """A store an earlier release wrote: same format, its agenda's digest without
    `retention.FACTS`, facts of certificates that expired long ago (and of one revoked, kept by
    a release before b3a753b). It opens; the first erasure finds the agenda stale, scans, and
    erases them all; the certificate in effect keeps its facts."""
    w = World(tmp_path)
    try:
        w.apply([
            issuance(101, "sign-card-g1", H1, 0, not_after=ts(300)),
            issuance(103, "sign-mobile-g1", H1, 1, card_serial=101, not_after=ts(300)),
            issuance(201, "sign-card-g1", H2, 0, not_after=ts(1400)),
            issuance(202, "sign-mobile-g1", H2, 1, card_serial=201, not_after=ts(1400)),
        ])  # fmt: skip
        kept = sealed(w, "sign-mobile-g1", 202)
        w.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(10),
                  "serial": 202, "issuer": "sign-mobile-g1", "reason": "loss"}])  # fmt: skip
        now = T0 + 900 * DAY
        earlier = periods_digest(retention, (NOTICES, KEPT))
        assert earlier != periods_digest(retention)
        key = sf.status_key(INDEX["sign-mobile-g1"], 202)
        with Commit(w.store, lambda: from_epoch(now)) as c:  # as the earlier release left it
            c.rebuild_retention(scanned(now - 5 * DAY, earlier), [])
            c._txn.put(key, kept, db=w.store.dbs[sf.DB_HOLDERS])
        w.store.close()
        w.store = Store.open(tmp_path / "store", readonly=False, map_size=1 << 26)
        with w.store.read() as r:
            assert r.count(sf.DB_HOLDERS) == 4
        ap = erase(w, now)
        assert ap.summary.facts_erased == 3 and ap.summary.erased == 0
        assert [sealed(w, i, s) is None for i, s in (
            ("sign-card-g1", 101), ("sign-mobile-g1", 103), ("sign-mobile-g1", 202),
            ("sign-card-g1", 201))] == [True, True, True, False]  # fmt: skip
        with w.store.read() as r:
            state = r.retention_state()
            assert state is not None and state.periods == periods_digest(retention)
    finally:
        w.store.close()


def test_erasable_at() -> None:
    assert factskept.erasable_at(sf.STATE_GOOD, 1000) == 1001
    assert factskept.erasable_at(sf.STATE_REVOKED, 1000) == 0
    assert factskept.erasable_at(sf.STATE_ERASED, 1000) == 0
    assert factskept.erasable_at(None, 0) == 0


def test_an_idle_follow_loop_erases_the_facts_when_the_certificate_expires(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """`build --follow`, idle, wakes when a sign certificate's validity ends (its timer on the
    agenda, as for a record's retention) and erases its facts then, not at its next file or
    refresh; event ``retention`` with ``facts_erased``. The builder's clock is injected: the
    real one shifted to 2 s before the end."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki)
    issuer = next(i for i in manifest.issuers if i.id.startswith("sign-card"))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
    end = start + timedelta(days=10)  # notAfter
    holder = hashlib.sha256(b"facts-expiry").hexdigest()
    recs = [
        {"type": "issuance", "id": "i1", "recorded_at": start.isoformat(), "serial": 4545,
         "family": "sign-card", "issuer": issuer.id, "not_before": start.isoformat(),
         "not_after": end.isoformat(), "holder": holder,
         "facts": {"name": "試験 三郎", "sex": "1", "birth_date": "319850505",
                   "address": "大阪府大阪市1-1"}},
    ]  # fmt: skip
    clock = ShiftedClock(end - timedelta(seconds=60))
    key = sf.status_key(issuer.index, 4545)
    with records_builder(tmp_path, cfg, recs, clock) as b:
        report = b.build([tmp_path / "records" / "a.jsonl"])
        assert report.summary.applied == 1 and report.summary.facts_erased == 0
        with b.store.read() as r:
            assert r.sealed_facts(key) is not None
        assert b.next_erasure() == end + timedelta(seconds=1)
        clock.move_to(end - timedelta(seconds=1))
        b.follow(tmp_path / "spool", 10.0, max_idle=1.5)
        after = clock()
        with b.store.read() as r:
            assert r.sealed_facts(key) is None, "not erased when its validity ended"
            st = r.status(key)
        assert st is not None and st.state == sf.STATE_GOOD
        assert after > end
    events = logged_events(tmp_path / "log.jsonl")
    assert [(e["event"], e["facts_erased"]) for e in events] == [("retention", 1)]
    assert events[0]["due"] == int(end.timestamp()) + 1


def test_the_scans_partial_decoding_of_a_status_record_agrees_with_the_whole() -> None:
    for st in (
        sf.StatusRecord(7, sf.STATE_REVOKED, 1, 1, 1, 100, 2_000_000_000, 5, b"h" * 32),
        sf.StatusRecord(1, sf.STATE_GOOD, 0, 0, 3, -5, -1, 0, bytes(32)),
    ):
        assert sf.status_state_and_end(st.pack()) == (st.state, st.not_after)
    with pytest.raises(sf.StoreCorrupt):
        sf.status_state_and_end(bytes(10))
