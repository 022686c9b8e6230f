"""The 30-day rule in time (Act §31(2), §34(1)(2)) and the build instant (`--as-of`).

Act §31(2)'s lapse is a record the 機構 writes when time makes it due; the
certificate loses effect when it is written (§34(1)(2)). So the follow loop
writes it when it falls due (a timer, not the periodic refresh), dates it when
written, never earlier, and a build may not go back before the store's last commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.apply import Applier
from crlbuilder.build import AsOfError, Builder
from crlbuilder.cli import main as cli_main
from crlbuilder.crl.publish import AHEAD_AT_MOST
from crlbuilder.ingest import read_file
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category
from crlbuilder.store import format as sf
from tests.support.builder import builder_config
from tests.test_apply import H1, H2, KEY, World, holder_set, issuance, rid, ts

# ---------------------------------------------------------------------------
# The applier: dated when written (Act §34(1)(2)), not at the due instant
# ---------------------------------------------------------------------------

PLANNED = date(2024, 2, 19)  # T0 + 40 days in tests.test_apply
DUE = rules.move_out_lapse(PLANNED)


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def published(world: World) -> None:
    """Mark the store as having completed a build (its answers may have been published)."""
    with world.store.env.begin(write=True) as txn:
        txn.put(sf.META_BUILD, sf.pack_u32(1), db=world.store.dbs[sf.DB_META])


def move_out(holder: str, day_recorded: str = "2024-02-14T00:00:00+00:00") -> dict[str, object]:
    return {"type": "resident-change", "id": rid(), "recorded_at": day_recorded, "holder": holder,
            "change": "move-out-notice", "planned_date": PLANNED.isoformat()}  # fmt: skip


def test_act_34_1_2_lapse_dated_when_written_not_at_the_due_instant(world: World) -> None:
    world.apply([*holder_set(H1), move_out(H1)])
    published(world)
    written = DUE + timedelta(minutes=17, seconds=3)
    ap = world.apply([])
    ap.clock = FakeClock(written)
    assert ap.sweep_lapses(written) == 2  # the auth-card and its mobile (Act §35-13)
    st = world.status("auth-card-g1", 102)
    assert st.revoked and st.category_enum is Category.RESIDENT_CHANGE
    assert st.revoked_at == int(written.timestamp())  # not DUE: never earlier than written
    assert world.status("auth-mobile-g1", 104).revoked_at == st.revoked_at


def test_act_25_new_auth_card_issued_once_the_lapse_fell_due_is_no_double_issuance(
    world: World,
) -> None:
    """A builder catching up on a published store, its clock far past the due instant, writes
    the lapse dated at its clock (Act §34(1)(2)), at the record of a new auth-card certificate
    issued since. For Act §25 the old certificate lost effect when the lapse fell due, not when
    the builder wrote it: the new one issued at the due instant is no double issuance (was:
    quarantined); one issued a second before it is (the old certificate was in effect then).
    The same for the auth-mobile certificate that followed the old card (cascade, Act §35-13):
    a new one on the new card is no double issuance either (Act §35-5)."""
    world.apply([*holder_set(H1), move_out(H1)])
    published(world)
    late = DUE + timedelta(days=349, minutes=5)
    early, at_due = (DUE - timedelta(seconds=1)).isoformat(), DUE.isoformat()
    mobile_at = (DUE + timedelta(hours=1)).isoformat()
    records = [
        issuance(120, "auth-card-g1", H1, 60, not_before=early, recorded_at=early),
        issuance(121, "auth-card-g1", H1, 60, not_before=at_due, recorded_at=at_due),
        issuance(122, "auth-mobile-g1", H1, 60, card_serial=121, not_before=mobile_at,
                 recorded_at=mobile_at, not_after=ts(1400)),
    ]  # fmt: skip
    path = world.tmp / "catch-up.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    ap = Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=FakeClock(late))
    ap.run(read_file(path))
    [refused] = world.quarantined()
    assert refused["line"] == 1 and "二重発行の禁止: Act §25" in str(refused["reason"])
    old = world.status("auth-card-g1", 102)
    assert old.category_enum is Category.RESIDENT_CHANGE
    assert old.revoked_at == int(late.timestamp())  # dated when written, not at DUE
    assert world.status("auth-card-g1", 121).state == sf.STATE_GOOD
    assert world.status("auth-mobile-g1", 104).revoked_at == int(late.timestamp())
    assert world.status("auth-mobile-g1", 122).state == sf.STATE_GOOD
    with world.store.read() as r:
        assert r.status(sf.status_key(4, 120)) is None  # auth-card-g1: the refused one


def test_act_35_5_new_auth_mobile_judged_by_the_lapse_that_took_its_predecessor_s_card(
    world: World,
) -> None:
    """Two lapses written by a builder catching up (Act §31(2), dated when written, §34(1)(2)):
    the first (due DUE) takes the old card 102; card 121 is issued after it with mobile 122;
    the holder moves out again, and the second lapse (due DUE2) takes 121, and 122 follows it
    (cascade, Act §35-13). A new auth-mobile certificate 124 on card 123, issued after DUE2, is
    no double issuance (Act §35-5): 122 lost effect when the second lapse fell due. It is judged
    by the lapse that took its own card, not by the holder's earliest (DUE, before 122 began)."""
    world.apply([*holder_set(H1), move_out(H1)])
    published(world)

    def at(t: datetime) -> dict[str, object]:
        return {"not_before": t.isoformat(), "recorded_at": t.isoformat()}

    planned2 = PLANNED + timedelta(days=40)
    due2 = rules.move_out_lapse(planned2)
    late = due2 + timedelta(days=300)
    made2 = (DUE + timedelta(days=5)).isoformat()
    records = [
        issuance(121, "auth-card-g1", H1, **at(DUE + timedelta(days=1))),
        issuance(122, "auth-mobile-g1", H1, card_serial=121, not_after=ts(1400),
                 **at(DUE + timedelta(days=2))),
        {"type": "resident-change", "id": rid(), "recorded_at": made2, "holder": H1,
         "change": "move-out-notice", "planned_date": planned2.isoformat()},
        issuance(123, "auth-card-g1", H1, **at(due2 + timedelta(days=1))),
        issuance(124, "auth-mobile-g1", H1, card_serial=123, not_after=ts(1400),
                 **at(due2 + timedelta(days=2))),
    ]  # fmt: skip
    path = world.tmp / "catch-up.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    ap = Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=FakeClock(late))
    ap.run(read_file(path))
    assert world.quarantined() == []
    for issuer, serial, category in (
        ("auth-card-g1", 121, Category.RESIDENT_CHANGE),
        ("auth-mobile-g1", 122, Category.CARD_CASCADE),
    ):
        st = world.status(issuer, serial)
        assert st.revoked and st.category_enum is category
        assert st.revoked_at == int(late.timestamp())  # dated when written, not at DUE2
    assert world.status("auth-card-g1", 123).state == sf.STATE_GOOD
    assert world.status("auth-mobile-g1", 124).state == sf.STATE_GOOD


def test_act_25_lapse_an_earlier_builder_wrote_still_counts_from_its_due_instant(
    world: World,
) -> None:
    """A store upgraded from a builder that kept no lapse in `taken` (docs/store.md): its lapse
    was written late, at that builder's clock, and only its pending notice remembers it
    (``lapsed_at``). A new auth-card certificate issued at the due instant, and an auth-mobile
    one on it, are still no double issuance (Act §25, §35-5): the old ones lost effect when the
    lapse fell due."""
    world.apply([*holder_set(H1), move_out(H1)])
    published(world)
    written = DUE + timedelta(days=100)
    ap = world.apply([])
    ap.clock = FakeClock(written)
    assert ap.sweep_lapses(written) == 2
    with world.store.env.begin(write=True) as txn:  # as the earlier builder left it
        assert txn.delete(bytes.fromhex(H1), db=world.store.dbs[sf.DB_TAKEN])
    at_due, mobile_at = DUE.isoformat(), (DUE + timedelta(hours=1)).isoformat()
    ap = world.apply([
        issuance(121, "auth-card-g1", H1, not_before=at_due, recorded_at=at_due),
        issuance(122, "auth-mobile-g1", H1, card_serial=121, not_before=mobile_at,
                 recorded_at=mobile_at, not_after=ts(1400)),
    ])  # fmt: skip
    assert world.quarantined() == []
    assert world.status("auth-card-g1", 121).state == sf.STATE_GOOD
    assert world.status("auth-mobile-g1", 122).state == sf.STATE_GOOD
    assert world.status("auth-card-g1", 102).revoked_at == int(written.timestamp())


def test_act_31_2_lapse_not_written_before_the_clock_reaches_it(world: World) -> None:
    """A record dated after the due instant does not make the lapse due while the clock is before it."""
    world.apply(holder_set(H1))
    published(world)
    ap_clock = FakeClock(DUE - timedelta(seconds=1))
    world.apply([move_out(H1)])
    ap = world.apply([])
    ap.clock = ap_clock
    assert ap.sweep_lapses(DUE + timedelta(days=1)) == 0
    assert not world.status("auth-card-g1", 102).revoked


def test_act_31_2_first_build_dates_the_loaded_history_at_the_due_instants(world: World) -> None:
    """A new store published nothing yet: its history's lapses carry their due instants."""
    world.apply([*holder_set(H1), move_out(H1)])
    ap = world.apply([])
    assert ap.sweep_lapses(DUE + timedelta(days=3)) == 2
    assert world.status("auth-card-g1", 102).revoked_at == int(DUE.timestamp())


def test_act_31_34_1_2_a_first_build_dates_its_historys_lapse_when_the_kikou_recorded_it(
    world: World,
) -> None:
    """Decided, not a defect (was a strict xfail of tests/test_rules_open.py, which read DOMAIN.md
    §3's "never date it earlier than it was written" as binding a store's first build too).

    The law's text: the certificate loses effect when the 機構 records the 異動等失効情報 (Act
    §34(1)(2)), a record the 機構 makes 直ちに once it knows the 30 days passed with no 転入届 (Act
    §31 and §31(2): 知ったときは、直ちに), carrying the day it is recorded (記録する年月日). A
    first build loads the 機構's history: every record of it keeps the day the 機構 recorded it
    (a request of day 180 is dated day 180, not the build's day), and the lapse, the one record
    of that history the record format leaves to the builder, is dated as the law has the 機構
    record it: at its due instant, the move-out notice being on record by then (recorded day 1).
    "Never earlier than written" binds a store that has published answers or CRLs: its own write
    is then the 機構's recording, and a lapse dated before it would contradict what it said
    meanwhile (its answers were `tryLater` from the due instant, never good: docs/records.md).
    A new store has published nothing to contradict. Dated at the build's instant instead, the
    history would say the holder's auth-card certificate stayed in effect 160 days past the
    instant the Act ended it, and the store would depend on the day it was built. Once a build
    completed, the same history's lapse is dated when written (the second holder)."""
    now = datetime.fromisoformat(ts(200))
    notice = {"type": "resident-change", "id": rid(), "recorded_at": ts(1),
              "change": "move-out-notice", "planned_date": "2024-01-20"}  # fmt: skip
    world.apply([issuance(102, "auth-card-g1", H1, not_after=ts(1000)), {**notice, "holder": H1}])
    Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=lambda: now
            ).sweep_lapses(now)  # fmt: skip
    first = world.status("auth-card-g1", 102)
    assert first.revoked and first.category_enum is Category.RESIDENT_CHANGE
    assert first.revoked_at == int(rules.move_out_lapse(date(2024, 1, 20)).timestamp())
    assert first.revoked_at < now.timestamp() - 150 * 86_400  # the xfail's "before written"
    published(world)
    world.apply([issuance(202, "auth-card-g1", H2, not_after=ts(1000)), {**notice, "id": rid(),
                 "holder": H2}])  # fmt: skip
    Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=lambda: now
            ).sweep_lapses(now)  # fmt: skip
    assert world.status("auth-card-g1", 202).revoked_at == int(now.timestamp())


# ---------------------------------------------------------------------------
# The follow loop: a timer on the earliest pending lapse
# ---------------------------------------------------------------------------


def auth_card_history(manifest: Manifest, clock: datetime, planned: date) -> list[bytes]:
    issuer = next(i for i in manifest.issuers if i.id.startswith("auth-card"))
    holder = hashlib.sha256(b"lapse-holder").hexdigest()
    issued = clock - timedelta(days=60)
    recs: list[dict[str, object]] = [
        {"type": "issuance", "id": "i1", "recorded_at": issued.isoformat(), "serial": 4242,
         "family": "auth-card", "issuer": issuer.id, "not_before": issued.isoformat(),
         "not_after": (issued + timedelta(days=1000)).isoformat(), "holder": holder},
        {"type": "resident-change", "id": "m1", "recorded_at": (issued + timedelta(days=1)).isoformat(),
         "holder": holder, "change": "move-out-notice", "planned_date": planned.isoformat()},
    ]  # fmt: skip
    return [msgspec.json.encode(r) for r in recs]


def test_act_31_2_follow_writes_the_lapse_when_it_falls_due(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki)
    # a clock a minute before a lapse instant (00:00 JST of planned + 31) for the build,
    # then two seconds before it for the loop: however long the build takes on a loaded
    # machine, the lapse falls due in the loop
    planned = (datetime.now(rules.JST) - timedelta(days=40)).date()
    due = rules.move_out_lapse(planned)
    offset = [due - timedelta(seconds=60) - datetime.now(UTC)]

    def clock() -> datetime:
        return datetime.now(UTC) + offset[0]

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.jsonl").write_bytes(
        b"\n".join(auth_card_history(manifest, clock(), planned)) + b"\n"
    )
    (tmp_path / "spool").mkdir()
    log = (tmp_path / "log.jsonl").open("w")
    b = Builder(cfg, progress=False, log=log, clock=clock)
    try:
        report = b.build([tmp_path / "records" / "a.jsonl"])
        assert report.summary.applied == 2 and report.lapses == 0
        with b.store.read() as r:
            index = next(i.index for i in r.issuers() if i.id.startswith("auth-card"))
            st = r.status(sf.status_key(index, 4242))
        assert st is not None and not st.revoked
        offset[0] = due - timedelta(seconds=2) - datetime.now(UTC)
        before = clock()
        # the refresh cycle is half an hour and the spool is polled every 10 s: only the
        # lapse timer wakes the loop before max_idle ends it
        b.follow(tmp_path / "spool", 10.0, max_idle=1.0)
        after = clock()
        with b.store.read() as r:
            st = r.status(sf.status_key(index, 4242))
        assert st is not None and st.revoked, "the lapse was not written when it fell due"
        assert st.category_enum is Category.RESIDENT_CHANGE
        # dated when written: not before the due instant, not before the loop started
        assert int(due.timestamp()) <= st.revoked_at and int(before.timestamp()) <= st.revoked_at
        assert st.revoked_at <= int(after.timestamp()) + 1
    finally:
        b.close()
        log.close()
    events = [
        e
        for line in (tmp_path / "log.jsonl").read_bytes().splitlines()
        if (e := msgspec.json.decode(line))["event"] != "warning"  # no registry: consents refused
    ]
    assert [e["event"] for e in events] == ["lapse"]
    assert events[0]["lapses_applied"] == 1


# ---------------------------------------------------------------------------
# --as-of earlier than the store's last commit: refused, nothing written
# ---------------------------------------------------------------------------


def test_reruns_at_one_pinned_instant_go_on_while_their_crls_can_be_dated_after(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """Each rerun at one pinned instant (a build killed and run again, as often as it was
    killed) dates its CRLs a second after the last ones (`dated_after`), so the CRLs stand
    ahead of the instant: the next rerun at it was refused as "earlier than the store's last
    commit" (seen: tests/test_build.py's kill test, whose killed runs had reached the CRLs
    twice). It goes on while its CRLs can still be dated after them (`AHEAD_AT_MOST`), and is
    refused once they cannot; the instant is an hour before the clock, so that `wait_past`
    does not date by the clock instead."""
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki)
    then = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.jsonl").write_bytes(
        b"\n".join(auth_card_history(manifest, then - timedelta(days=1), then.date())) + b"\n"
    )
    files = [tmp_path / "records" / "a.jsonl"]
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        dated = []
        for _ in range(AHEAD_AT_MOST + 1):
            b.build(files, then)
            with b.store.read() as r:
                dated.append(max(r.crl_state(i.index).this_update for i in r.issuers()))
        t = int(then.timestamp())
        assert dated == [t + k for k in range(AHEAD_AT_MOST + 1)]
        with pytest.raises(AsOfError, match="the thisUpdate of its CRLs"):
            b.build(files, then)
        b.build(files, then + timedelta(seconds=1))  # a second on: dated after them again
    finally:
        b.close()


def test_as_of_before_the_last_commit_refused_and_nothing_written(
    tmp_path: Path, demo_pki: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    pki, manifest = demo_pki
    cfg = builder_config(tmp_path, pki)
    now = datetime.now(UTC).replace(microsecond=0)
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.jsonl").write_bytes(
        b"\n".join(auth_card_history(manifest, now - timedelta(days=1), now.date())) + b"\n"
    )
    b = Builder(cfg, progress=False, log=(tmp_path / "log").open("w"))
    try:
        b.build([tmp_path / "records" / "a.jsonl"], now)
        # the same instant again is no step back (a rerun after a kill)
        b.build([tmp_path / "records" / "a.jsonl"], now)
        with pytest.raises(AsOfError, match="earlier than the store's last commit"):
            b.build([tmp_path / "records" / "a.jsonl"], now - timedelta(seconds=1))
        # a build with nothing new still publishes CRLs dated as of its instant: the next
        # build may not be dated between the two (a delta CRL before the full one)
        later = now + timedelta(minutes=5)
        assert b.build([tmp_path / "records" / "a.jsonl"], later).summary.commits == 0
        with pytest.raises(AsOfError, match="earlier than the store's last commit"):
            b.build([tmp_path / "records" / "a.jsonl"], later - timedelta(minutes=1))
    finally:
        b.close()
    data = (tmp_path / "store" / "data.mdb").read_bytes()
    crls = sorted((p.name, p.read_bytes()) for p in (tmp_path / "crl").rglob("*") if p.is_file())
    (tmp_path / "records" / "b.jsonl").write_bytes(
        msgspec.json.encode({"type": "revocation-request", "id": "late", "recorded_at":
                             (now - timedelta(hours=1)).isoformat(), "serial": 4242,
                             "issuer": manifest.issuers[0].id, "reason": "loss"}) + b"\n"
    )  # fmt: skip
    flags = ["--store", cfg.store.path, "--pki", cfg.pki.manifest, "--input", str(tmp_path / "records"),
             "--facts-key-file", cfg.keys.facts_key_file, "--crl-dir", cfg.crl.directory,
             "--quarantine", cfg.input.quarantine, "--notices", cfg.input.notices, "--no-progress",
             "--map-size-gib", "1"]  # fmt: skip
    rc = cli_main(["build", *flags, "--as-of", (now - timedelta(days=1)).isoformat()])
    assert rc == 2
    err = capsys.readouterr().err
    assert "earlier than the store's last commit" in err and "nothing was written" in err
    assert (tmp_path / "store" / "data.mdb").read_bytes() == data
    assert (
        sorted((p.name, p.read_bytes()) for p in (tmp_path / "crl").rglob("*") if p.is_file())
        == crls
    )
    assert not (tmp_path / "quarantine.jsonl").exists()


def test_as_of_documented_in_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "earlier than the store's last commit" in text and "nothing written" in text
