"""The CRL files' publication cycle (`crlbuilder.crl.publish.CrlPublisher`), run after run.

A relying party refuses a CRL past its nextUpdate (RFC 5280 §6.3.3 (a)(2); ``openssl verify
-crl_check``: "CRL has expired"), and a delta CRL does not make up for an expired base: the
current full CRL (失効情報ファイル, Act §16, §16-15, §35, §35-15) must be replaced before its
nextUpdate by a run of the follow loop, which runs at least every half of the shortest CRL
cycle (`crlbuilder.build.Builder.refresh_every`). A run with nothing due publishes nothing
and keeps the store's CRL state as it was. CRL numbers only grow (RFC 5280 §5.2.3), across
restarts of the builder and a rebuild of the store into the same CRL directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

from crlbuilder.apply import register_issuers
from crlbuilder.build import issuer_table
from crlbuilder.config import CrlSection
from crlbuilder.crl.publish import AHEAD_AT_MOST, CrlPublisher, dated_after, wait_past
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category, Family
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.writer import Commit

T0 = 1_900_000_000
"""An instant of 2030, away from any edge; the publisher is given its clock."""
ISSUER = "sign-card-g2"


@pytest.fixture
def store(tmp_path: Path, demo_pki: tuple[Path, Manifest]) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", readonly=False, map_size=1 << 26)
    register_issuers(s, issuer_table(demo_pki[1]))
    yield s
    s.close()


def section(tmp: Path, **kw: object) -> CrlSection:
    return msgspec.convert({"directory": str(tmp / "crl"), **kw}, CrlSection)


def current(tmp: Path, name: str = ISSUER) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl((tmp / "crl" / f"{name}.crl").read_bytes())


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.mark.parametrize("delta", [True, False])
def test_the_full_crl_is_replaced_before_its_next_update(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path, delta: bool
) -> None:
    """As the defaults (full_every_seconds = cycle_seconds), shorter, with runs as often as
    the follow loop makes them: at every run the current full CRL is still in force."""
    cfg = section(
        tmp_path, delta=delta, cycle_seconds=8000, full_every_seconds=8000, delta_cycle_seconds=1000
    )
    step = (cfg.delta_cycle_seconds if delta else cfg.cycle_seconds) // 2
    publisher = CrlPublisher(store, demo_pki[1], cfg)
    numbers = []
    for now in range(T0, T0 + 3 * cfg.cycle_seconds, step):
        publisher.run(now)
        crl = current(tmp_path)
        assert crl.next_update_utc is not None
        # the next run, at now + step, still finds it in force
        assert crl.next_update_utc.timestamp() > now + step, (now - T0, number(crl))
        numbers.append(number(crl))
    assert numbers == sorted(numbers)
    assert len(set(numbers)) >= 3  # a full CRL each cycle at least, not one each run only


def test_a_run_with_nothing_due_publishes_nothing(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """Without delta CRLs, a run soon after a full CRL has nothing to publish: it returns
    without error and leaves the files and the store's CRL state alone (the builder raised
    ``min() arg is an empty sequence``, at every such run of ``crlbuilder build``)."""
    publisher = CrlPublisher(store, demo_pki[1], section(tmp_path, delta=False))
    first = publisher.run(T0)
    assert {e.issuer for e in first.produced} >= {ISSUER}
    with store.read() as r:
        index = demo_pki[1].issuer(ISSUER).index
        before = r.crl_state(index)
    again = publisher.run(T0 + 60)
    assert again.produced == []
    with store.read() as r:
        assert r.crl_state(index) == before
    assert number(current(tmp_path)) == before.number


def test_a_rebuilt_store_goes_on_after_the_published_numbers(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """A store built again from the records (a new node, a lost store) into the CRL
    directory the parties fetch from: its first CRLs follow the ones already published (they
    restarted at 1, and a party that had number 4 got 1 again), and the archived CRLs, kept for
    their own retention (Act §16), are not overwritten."""
    cfg = section(tmp_path)
    publisher = CrlPublisher(store, demo_pki[1], cfg)
    for now in (T0, T0 + cfg.delta_cycle_seconds):
        publisher.run(now)
    published = number(current(tmp_path, f"{ISSUER}-delta"))
    archive = tmp_path / "crl" / "archive" / ISSUER
    kept = {p.name: p.read_bytes() for p in archive.iterdir()}
    assert published == 3 and len(kept) == 3  # full 1, delta 2, delta 3

    fresh = Store.open(tmp_path / "store-again", readonly=False, map_size=1 << 26)
    try:
        register_issuers(fresh, issuer_table(demo_pki[1]))
        CrlPublisher(fresh, demo_pki[1], cfg).run(T0 + 2 * cfg.delta_cycle_seconds)
    finally:
        fresh.close()
    assert number(current(tmp_path)) == published + 1
    delta = current(tmp_path, f"{ISSUER}-delta")
    assert number(delta) == published + 2
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
    assert indicator.crl_number == published + 1
    assert {p.name: p.read_bytes() for p in archive.iterdir() if p.name in kept} == kept


def test_a_record_and_a_crl_file_are_kept_through_the_last_day_of_their_periods(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """A revocation record made at 00:00:30 JST on 1 March with a period of 30 days (記録を
    した日から, 初日不算入: Civil Code §140-§141) is listed through 31 March and left out
    from 00:00 JST on 1 April; a CRL file made then with ``keep_days = 30`` (これを作成した
    日から) is kept until that instant. Counting ``+ 30 * 86400`` from the instant dropped
    both at 00:00:30 on 31 March. Fixed JST instants: no test depends on today."""
    day, jst = 86_400, timezone(timedelta(hours=9))

    def at(d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
        return int(datetime(2026, 3, 1, hh, mm, ss, tzinfo=jst).timestamp()) + (d - 1) * day

    recorded, expired = at(1, 0, 0, 30), at(15, 23, 59, 59)
    with store.read() as r:
        index = next(i.index for i in r.issuers() if i.id == ISSUER)
    key = sf.status_key(index, 77)
    good = sf.StatusRecord(
        0, sf.STATE_GOOD, 0, 0, Family.SIGN_CARD.code, recorded - 100 * day, expired, 0, b"\1" * 32
    )
    with Commit(store, lambda: datetime.fromtimestamp(recorded, UTC)) as c:
        st = c.add_certificate(key, good, Family.SIGN_CARD, None)
        c.revoke(key, st, category=Category.REQUEST.code, reason=1, at=recorded,
                 recorded_at=recorded)  # fmt: skip
    cfg = section(
        tmp_path, delta=False, keep_days=30, cycle_seconds=7200, full_every_seconds=1,
        retention_days_by_category={"sign-card": {"request": 30}},
    )  # fmt: skip
    publisher = CrlPublisher(store, demo_pki[1], cfg)

    def listed(now: int) -> set[int]:
        assert [e for e in publisher.run(now).produced if e.issuer == ISSUER]  # a new full CRL
        return {c.serial_number for c in current(tmp_path)}

    assert listed(at(1, 0, 0, 30)) == {77}
    assert listed(at(31, 0, 0, 30)) == {77}
    assert listed(at(31, 23, 59, 59)) == {77}
    with store.read() as r:
        first = [e for _, e in r.crl_files() if e.issuer == ISSUER and e.this_update == recorded]
    assert len(first) == 1 and first[0].keep_until == at(32)  # 00:00 on 1 April
    assert listed(at(32)) == set()
    with store.read() as r:
        assert not [e for _, e in r.crl_files() if e.this_update == recorded]  # pruned


def test_a_signer_behind_the_shipped_numbers_goes_on_after_them_with_a_full_crl(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """`continue_numbering` (what a signer does before it signs, with the numbers the bucket
    carries): an issuer whose shipped number is above its store's takes it, keeps its promise
    (nextUpdate), and its next CRL is a full one numbered after it; an issuer shipped below
    its store's is left alone. (tests/test_stream.py runs it against a real bucket.)"""
    from crlbuilder.crl.shipping import continue_numbering

    cfg = section(tmp_path)
    publisher = CrlPublisher(store, demo_pki[1], cfg)
    publisher.run(T0)
    publisher.run(T0 + 600)  # full 1, delta 2, delta 3 for each issuer
    index = demo_pki[1].issuer(ISSUER).index
    other = demo_pki[1].issuer("auth-card-g1").index
    with store.read() as r:
        before, kept = r.crl_state(index), r.crl_state(other)
    assert before.number == 3 and before.base_number == 1
    assert continue_numbering(store, {ISSUER: 9, "auth-card-g1": 2}) == [ISSUER]
    with store.read() as r:
        after = r.crl_state(index)
        assert r.crl_state(other) == kept
    assert (after.number, after.base_number, after.next_update) == (9, 0, before.next_update)
    produced = publisher.run(T0 + 1200).produced
    mine = sorted((e.number, e.delta, e.base_number) for e in produced if e.issuer == ISSUER)
    assert mine == [(10, False, 0), (11, True, 10)]


def test_two_runs_within_one_second_give_crls_a_node_can_order(
    store: Store, demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """The follow loop refreshes after every batch that leaves it caught up, so a trickle of
    records can make two CRL runs within one second: delta N and delta N+1, one thisUpdate.
    A node still holding N cannot tell that a party's N+1 is newer (`behind` compares
    thisUpdate), and serves N, taking the party back; an If-Modified-Since of N's
    Last-Modified gets 304 for N+1 (same second). The second run dates its CRLs a second
    after the first's (`dated_after`; the builder waits that second out: `wait_past`)."""
    from responder.crlfiles import CrlFiles, behind

    publisher = CrlPublisher(store, demo_pki[1], section(tmp_path))
    files = CrlFiles(tmp_path / "crl")
    publisher.run(T0)
    held = files.get(f"{ISSUER}-delta.crl")
    publisher.run(T0)  # the next refresh, the same second
    newer = files.get(f"{ISSUER}-delta.crl")
    assert held is not None and newer is not None and held.etag != newer.etag
    assert newer.this_update > held.this_update
    assert behind({b"if-none-match": newer.etag}, held)
    assert newer.this_update == T0 + 1
    publisher.run(T0 + 600)  # a later run: dated by its clock again
    assert current(tmp_path, f"{ISSUER}-delta").last_update_utc.timestamp() == T0 + 600


def test_a_clock_set_back_dates_the_crls_by_it() -> None:
    """Only the same second (within `AHEAD_AT_MOST`) is dated after the last CRLs: a clock set
    back further dates them by the clock (never minutes or hours ahead of it)."""
    assert dated_after(T0, 0) == T0
    assert dated_after(T0, T0 - 1) == T0
    assert dated_after(T0, T0) == T0 + 1
    assert dated_after(T0, T0 + 3) == T0 + 4
    assert dated_after(T0, T0 + AHEAD_AT_MOST) == T0
    assert dated_after(T0, T0 + 3600) == T0


def test_the_builder_waits_out_the_second_of_the_last_crls() -> None:
    """`wait_past` with the builder's own clock: a run in the second of the last CRLs sleeps
    to the next second and dates its CRLs by it; a run after it, or with a clock far from
    ``now`` (a pinned ``--as-of``), or a clock that does not move, does not wait for ever."""
    t = [T0 + 0.25]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        t[0] += s

    assert wait_past(T0, T0, lambda: t[0], sleep) == T0 + 1
    assert sum(slept) == pytest.approx(0.75) and max(slept) <= 0.05
    slept.clear()
    assert wait_past(T0 - 1, T0, lambda: t[0], sleep) == T0 and not slept
    assert wait_past(T0, T0, lambda: T0 + 86400.0, sleep) == T0 and not slept  # pinned
    assert wait_past(T0, T0, lambda: T0 + 0.5, lambda s: None) == T0  # a clock that is still


@pytest.mark.real_clock  # the builder's own clock: it waits on it
def test_a_build_in_the_second_of_the_last_crls_dates_its_crls_by_the_next(
    demo_pki: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """The builder's CRL run waits out the second of the last CRLs (`Builder.crl_instant`)
    and dates its CRLs by the next second, on its own clock, not after it."""
    from crlbuilder.build import Builder
    from tests.support.builder import builder_config

    cfg = builder_config(tmp_path, demo_pki[0] / "pki.json")
    b = Builder(cfg, progress=False)
    try:
        b.build([])
        index = demo_pki[1].issuer(ISSUER).index
        with b.store.read() as r:
            last = r.crl_state(index).this_update
        assert last
        at = b.crl_instant(last)  # a run dated in that second
        assert last < at <= time.time()
        assert b.crl_instant(at + 1) == at + 1  # after the last ones: no wait, as it is
    finally:
        b.close()
