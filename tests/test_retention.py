"""Retention per family and legal category, and its end (Ord §70(1)(iii)).

A revocation record is kept for the period set by Cabinet order (政令で定める期間) for its
family and category, from the day it was recorded (Act §11-§14, §16-10-§16-13, §30-§33,
§35-10-§35-13). Past it, and once the certificate has expired, it is erased from the store
and taken off the CRL by the next run (tests/test_crl_erasure.py), and OCSP answers what the configuration says: ``unknown``
by default, or ``revoked`` with the time only.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from crlbuilder.apply import past_retention
from crlbuilder.config import ConfigError, add_arguments, load_config
from crlbuilder.crl.publish import prune_crls
from crlbuilder.manifest import Manifest
from crlbuilder.model import Category, Family
from crlbuilder.ocsp.request import parse_request
from crlbuilder.ocsp.response import issuer_hashes
from crlbuilder.periods import RULE, kept_until
from crlbuilder.retention import next_erasure, periods_digest, scanned, stale
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import LmdbReader
from crlbuilder.store.writer import Commit
from responder.config import OcspConfig
from responder.flow import OcspFlow, Unavailable
from responder.ocsp import Ready, load_issuers
from tests.conftest import ROOT, Built, run_tool
from tests.support.builder import builder_config
from tests.support.harness import Server, start_server
from tests.support.idlefollow import ShiftedClock, logged_events, records_builder
from tests.test_apply import H1, World, issuance, rid, ts
from tests.test_ocsp_flow import Quotas

DAY = 86_400
JST = timezone(timedelta(hours=9))
ISSUER = "sign-card-g2"
ERASED, RECORDING_ERROR, VALID = 0x3001, 0x3002, 0x3003
FACTS = {"name": "試験 次郎", "sex": "1", "birth_date": "319850505", "address": "大阪府大阪市1-1"}


# --- configuration ------------------------------------------------------------


def jst(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    """Epoch seconds of a JST wall-clock time (fixed: no test asks for today)."""
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=JST).timestamp())


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "b.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_retention_per_family_and_category_defaults_to_the_family(tmp_path: Path) -> None:
    cfg = load_config(
        _config(
            tmp_path,
            "[crl.retention_days]\nsign-card = 100\n"
            "[crl.retention_days_by_category.sign-card]\nrequest = 30\n",
        )
    )
    crl = cfg.crl
    assert crl.retention_period_days(Family.SIGN_CARD, Category.REQUEST) == 30
    assert crl.retention_period_days(Family.SIGN_CARD, Category.RECORDING_ERROR) == 100
    assert crl.retention_period_days(Family.AUTH_CARD, Category.REQUEST) == 3650
    assert crl.erased_answer == "unknown"  # the documented default
    shipped = load_config(ROOT / "config" / "builder.toml").crl
    for f in Family:
        for c in Category:
            if c.applies_to(f):
                assert shipped.retention_period_days(f, c) == 3650  # today's per-family value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[crl.retention_days_by_category.sign-phone]\nrequest = 1\n", "unknown family"),
        ("[crl.retention_days_by_category.sign-card]\nlost = 1\n", "unknown category"),
        ("[crl.retention_days_by_category.sign-mobile]\nresident-change = 1\n", "does not apply"),
        ("[crl.retention_days_by_category.auth-card]\ncard-cascade = 1\n", "does not apply"),
        ("[crl.retention_days_by_category.auth-card]\nrequest = 0\n", "Expected `int` >= 1"),
        ('[crl]\nerased_answer = "good"\n', "erased_answer"),
    ],
)
def test_bad_retention_configuration_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, text))


def test_erased_answer_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--erased-answer", "revoked"])
    assert load_config(None, args).crl.erased_answer == "revoked"


def test_past_retention_waits_for_the_certificate_to_expire() -> None:
    recorded = jst(2026, 3, 1, 9)
    end = jst(2026, 3, 12)  # 10 days: 2-11 March
    assert past_retention(recorded_at=recorded, not_after=end - 50, now=end, days=10)
    assert not past_retention(recorded_at=recorded, not_after=end - 50, now=end - 1, days=10)
    assert not past_retention(recorded_at=recorded, not_after=end + 1, now=end, days=10)
    assert past_retention(recorded_at=recorded, not_after=end + 1, now=end + 1, days=10)


# --- the store, in process ------------------------------------------------------


def test_ord_70_erasure_in_the_store(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(
        [
            issuance(10, ISSUER, H1, 0, not_after=ts(300)),
            issuance(11, ISSUER, "33" * 32, 0, not_after=ts(300)),
            issuance(12, ISSUER, "44" * 32, 0, not_after=ts(900)),
            {"type": "revocation-request", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
             "serial": 10, "reason": "loss"},
            {"type": "recording-error", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
             "serial": 11},
            {"type": "revocation-request", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
             "serial": 12, "reason": "loss"},
        ]
    )  # fmt: skip
    index = 2  # tests.test_apply.ISSUERS
    with w.store.env.begin(write=True) as txn:  # a stored answer, to be erased with the record
        txn.put(sf.status_key(index, 10), b"x" * 40, db=w.store.dbs[sf.DB_RESPONSES])
    t0 = int(datetime.fromisoformat(ts(0)).timestamp())

    def retention(family: Family, category: Category) -> int:
        return 100 if category is Category.REQUEST else 3650

    ap = w.apply([])
    with w.store.read() as r:
        before = r.generation().commit
    assert ap.erase_past_retention(t0 + 50 * DAY, retention, keep_time=False) == 0
    erased = ap.erase_past_retention(t0 + 400 * DAY, retention, keep_time=False)
    assert erased == 1 and ap.summary.erased == 1
    st = w.status(ISSUER, 10)
    assert st.erased and st.revoked and (st.category, st.reason, st.revoked_at) == (0, 0, 0)
    with w.store.read() as r:
        assert st.version == before + 1 == r.generation().commit
    with w.store.env.begin() as txn:
        assert txn.get(sf.status_key(index, 10), db=w.store.dbs[sf.DB_REVOKED]) is None
        assert txn.get(sf.status_key(index, 10), db=w.store.dbs[sf.DB_RESPONSES]) is None
        # the issuance side is not revocation information: the holder's link stays
    with w.store.read() as r:
        assert r.holder_certs(bytes.fromhex(H1), Family.SIGN_CARD)
        kept = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(index)}
    assert kept == {11, 12}  # another category's period; a certificate not yet expired
    assert w.status(ISSUER, 11).category_enum is Category.RECORDING_ERROR
    # erased stays erased: a second pass changes nothing, a new record cannot revive it
    assert ap.erase_past_retention(t0 + 401 * DAY, retention, keep_time=False) == 0
    w.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(410), "issuer": ISSUER,
              "serial": 10, "reason": "loss"}])  # fmt: skip
    assert w.status(ISSUER, 10).erased


def test_agenda_is_stale_without_a_scan_outside_its_span_after_an_early_entry_or_periods() -> None:
    periods = periods_digest(lambda f, c: 100)
    assert periods == periods_digest(lambda f, c: 100) != periods_digest(lambda f, c: 101)
    at = jst(2026, 1, 5, 7, 13, 20)
    s = scanned(at, periods, lookahead=100 * DAY)  # horizon: 15 April 07:13:20 JST
    assert (s.scanned_at, s.horizon, s.periods) == (at, at + 100 * DAY, periods)
    assert stale(None, at, None, 10, periods)  # never scanned
    assert not stale(s, at, None, 10, periods) and not stale(s, s.horizon - 1, None, 10, periods)
    assert stale(s, s.horizon, None, 10, periods) and stale(s, at - 1, None, 10, periods)
    # written on 5 April: 10 days are 6-15 April, due at 00:00 on the 16th, past the horizon;
    # on 4 April: due at 00:00 on the 15th, before it
    assert not stale(s, at, jst(2026, 4, 5), 10, periods)
    assert stale(s, at, jst(2026, 4, 5) - 1, 10, periods)
    assert stale(s, at, None, 10, periods_digest(lambda f, c: 101))  # other periods
    with pytest.raises(ValueError, match="positive"):
        scanned(0, periods, lookahead=0)


def test_agenda_keys_sort_by_due_instant_before_and_after_1970() -> None:
    dues = [-(2**40), -1, 0, 1, 1_700_000_000, 2**62]
    keys = [sf.retention_key(d, sf.status_key(2, 7)) for d in dues]
    assert sorted(keys) == keys
    assert [sf.split_retention_key(k) for k in keys] == [(d, sf.status_key(2, 7)) for d in dues]


def _no_scan(self: LmdbReader) -> Iterator[tuple[bytes, int]]:
    raise AssertionError("the agenda was not used: every CRL entry was read")


def test_erasure_by_the_agenda_is_what_reading_every_entry_erases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores given the same records, erased at the same instants: one reads every CRL
    entry each time, the other keeps the agenda in the store, and is closed and opened again
    between steps (a builder started again: only the store carries the agenda and the
    watermark over). The same records go at the same instants, including one recorded long
    ago but written after the agenda was made (its due instant falls before the horizon:
    the watermark it wrote in the store makes the agenda stale); while the agenda is not
    stale no CRL entry is read."""
    holders = [f"{i:02x}" * 32 for i in range(0x30, 0x36)]
    base = [
        issuance(10, ISSUER, holders[0], 0, not_after=ts(300)),  # due at day 300 (notAfter)
        issuance(11, ISSUER, holders[1], 0, not_after=ts(120)),  # recording error: 3650 days
        issuance(12, ISSUER, holders[2], 0, not_after=ts(130)),  # due at day 130
        issuance(13, ISSUER, holders[3], 0, not_after=ts(200)),  # due at day 200
        issuance(14, ISSUER, holders[4], 0, not_after=ts(60)),
        issuance(15, ISSUER, holders[5], 0, not_after=ts(1400)),
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
         "serial": 10, "reason": "loss"},
        {"type": "recording-error", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
         "serial": 11},
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(20), "issuer": ISSUER,
         "serial": 12, "reason": "loss"},
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(30), "issuer": ISSUER,
         "serial": 13, "reason": "loss"},
    ]  # fmt: skip
    # written after the first erasure: recorded at day 1 (due at day 101), and at day 135
    late = [{"type": "revocation-request", "id": rid(), "recorded_at": ts(1), "issuer": ISSUER,
             "serial": 14, "reason": "loss"}]  # fmt: skip
    later = [{"type": "revocation-request", "id": rid(), "recorded_at": ts(135),
              "issuer": ISSUER, "serial": 15, "reason": "loss"}]  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept, scanned_every_time = World(tmp_path / "a"), World(tmp_path / "b")
    t0 = int(datetime.fromisoformat(ts(0)).timestamp())

    def retention(family: Family, category: Category) -> int:
        return 100 if category is Category.REQUEST else 3650

    def reopen() -> None:
        kept.store.close()
        kept.store = Store.open(kept.tmp / "store", readonly=False, map_size=1 << 26)

    def agenda() -> tuple[int, int]:
        """The agenda's horizon (days) and entries, as the store holds them."""
        with kept.store.read() as r:
            state = r.retention_state()
            assert state is not None
            return (state.horizon - t0) // DAY, r.count(sf.DB_RETENTION)

    def erase(day: int, *, scan: bool) -> tuple[int, int]:
        now = t0 + day * DAY
        with monkeypatch.context() as m:
            if not scan:
                m.setattr(LmdbReader, "revoked_recorded", _no_scan)
            a = kept.apply([]).erase_past_retention(
                now, retention, keep_time=False, agenda=True, lookahead=100 * DAY
            )
        b = scanned_every_time.apply([]).erase_past_retention(now, retention, keep_time=False)
        return a, b

    for w in (kept, scanned_every_time):
        w.apply(base)
    # serial 12, due at 130; and serial 14's sealed facts, at the second after its notAfter (day
    # 60: `crlbuilder.factskept`), until its late revocation deletes them
    assert erase(50, scan=True) == (0, 0) and agenda() == (150, 2)
    reopen()
    assert erase(60, scan=False) == (0, 0)
    for w in (kept, scanned_every_time):
        w.apply(late)
    reopen()
    assert erase(105, scan=True) == (1, 1)  # serial 14: the watermark made the agenda stale
    assert agenda() == (205, 2)
    for w in (kept, scanned_every_time):
        w.apply(later)  # due in 100 days at the earliest: past the horizon, nothing read
    reopen()
    assert erase(131, scan=False) == (1, 1)  # serial 12, from the agenda
    reopen()
    assert erase(201, scan=False) == (1, 1) and agenda() == (205, 0)  # serial 13
    assert erase(301, scan=True) == (1, 1)  # serial 10, past the horizon: read again
    assert erase(2000, scan=True) == (1, 1)  # serial 15
    for serial in range(10, 16):
        assert kept.status(ISSUER, serial) == scanned_every_time.status(ISSUER, serial)
    erased = [s for s in range(10, 16) if kept.status(ISSUER, s).erased]
    assert erased == [10, 12, 13, 14, 15]  # 11: a recording error, kept 3650 days
    # other periods than the agenda's: read again, whatever the horizon
    with monkeypatch.context() as m:
        m.setattr(LmdbReader, "revoked_recorded", _no_scan)
        with pytest.raises(AssertionError, match="every CRL entry"):
            kept.apply([]).erase_past_retention(
                t0 + 2001 * DAY, lambda f, c: 99, keep_time=False, agenda=True
            )
    kept.store.close()
    scanned_every_time.store.close()


def _on_one_jst_day(w: World) -> None:
    """Serials 20-22 recorded on 1 March 2026 (JST) at 00:00:00, 00:00:30 and 23:59:30,
    serial 23 at 00:00:00 on 2 March; every certificate expires on 15 March, before the
    periods end."""

    def at(day: int, hh: int, mm: int, ss: int) -> str:
        return f"2026-03-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}+09:00"

    records: list[dict[str, object]] = []
    for n, (day, hh, mm, ss) in enumerate(
        [(1, 0, 0, 0), (1, 0, 0, 30), (1, 23, 59, 30), (2, 0, 0, 0)]
    ):
        records.append(
            issuance(20 + n, ISSUER, f"{0x60 + n:02x}" * 32, 0, not_after=at(15, 23, 59, 59))
        )
        records.append({"type": "revocation-request", "id": rid(), "recorded_at": at(day, hh, mm, ss),
                        "issuer": ISSUER, "serial": 20 + n, "reason": "loss"})  # fmt: skip
    w.apply(records)


def _erased(w: World) -> list[int]:
    return [s for s in range(20, 24) if w.status(ISSUER, s).erased]


@pytest.mark.parametrize("agenda", [False, True])
def test_a_record_is_kept_through_the_last_day_counted_from_the_day_after(
    tmp_path: Path, agenda: bool
) -> None:
    """記録をした日から 30 days (初日不算入, Civil Code §140-§141): recorded on 1 March, at
    any time of that JST day, a record is kept through 31 March and erased from 00:00 JST
    on 1 April; one recorded on 2 March a day later. The rule it replaced,
    ``recorded_at + 30 * 86400``, erased the record of 00:00:30 on 31 March at 00:00:30."""
    w = World(tmp_path)
    _on_one_jst_day(w)

    def erase(now: int) -> int:
        return w.apply([]).erase_past_retention(
            now, lambda f, c: 30, keep_time=False, agenda=agenda, lookahead=40 * DAY
        )

    assert erase(jst(2026, 3, 2)) == 0  # the agenda, when kept, is made here
    assert erase(jst(2026, 3, 31, 0, 0, 30)) == 0
    assert erase(jst(2026, 3, 31, 23, 59, 59)) == 0 and _erased(w) == []
    assert erase(jst(2026, 4, 1)) == 3 and _erased(w) == [20, 21, 22]
    assert erase(jst(2026, 4, 1, 23, 59, 59)) == 0
    assert erase(jst(2026, 4, 2)) == 1 and _erased(w) == [20, 21, 22, 23]


def _digest_before_the_rule(table: str) -> str:
    """`periods_digest` as a builder before `crlbuilder.periods` wrote it: no counting named."""
    return hashlib.sha256(table.encode()).hexdigest()[:32]


def _old_table(unit: int) -> str:
    return ",".join(
        f"{f.value}/{c.value}={30 * unit}" for f in Family for c in Category if c.applies_to(f)
    )


@pytest.mark.parametrize(
    "old_periods",
    [
        _digest_before_the_rule(_old_table(DAY)),  # the periods in seconds, as they were
        _digest_before_the_rule(_old_table(1)),  # in days, with no counting named
    ],
    ids=["seconds", "days-unnamed"],
)
def test_an_agenda_made_by_the_old_counting_erases_nothing_early(
    tmp_path: Path, old_periods: str
) -> None:
    """A store whose agenda an earlier builder made: it listed each entry at
    ``recorded_at + period`` (up to a day early). Its digest names no counting
    (`crlbuilder.periods.RULE`), so the agenda is stale: the next question scans again and
    erases each record when the law lets it, neither before (the old agenda's instant)
    nor after (an entry taken off the old agenda and not erased then is not lost)."""
    w = World(tmp_path)
    _on_one_jst_day(w)
    scan = jst(2026, 3, 5)
    with w.store.read() as r:
        index = next(i.index for i in r.issuers() if i.id == ISSUER)
        olds = [(e.recorded_at + 30 * DAY, k) for k, e in r.revocations(index)]
    with Commit(w.store) as c:
        c.rebuild_retention(sf.RetentionState(scanned_at=scan, horizon=scan + 30 * DAY,
                                              periods=old_periods), olds)  # fmt: skip
    assert RULE not in old_periods

    def erase(now: int) -> int:
        return w.apply([]).erase_past_retention(now, lambda f, c: 30, keep_time=False, agenda=True)

    assert erase(jst(2026, 3, 31, 0, 0, 30)) == 0  # the old agenda said three were due
    assert erase(jst(2026, 3, 31, 23, 59, 59)) == 0 and _erased(w) == []
    assert erase(jst(2026, 4, 1)) == 3 and _erased(w) == [20, 21, 22]
    with w.store.read() as r:
        state = r.retention_state()
    assert state is not None and state.periods == periods_digest(lambda f, c: 30)


def _index_crl_files(w: World, directory: Path, made: int, ends: tuple[int, ...]) -> None:
    """CRL files numbered from 1, made at ``made``, in ``directory`` and in the store's index
    with the ``keep_until`` of ``ends`` (one file each), as a builder would have kept them."""
    for number, keep_until in enumerate(ends, start=1):
        (directory / f"{number}.crl").write_bytes(b"x")
        entry = sf.CrlFileEntry(
            issuer=ISSUER, number=number, delta=False, base_number=0, path=f"{number}.crl",
            this_update=made, next_update=made + DAY, entries=0, size=1, sha256="00",
            keep_until=keep_until,
        )  # fmt: skip
        with Commit(w.store) as c:
            c.put_crl_file(2, entry)


def test_crl_files_are_kept_through_the_last_day_old_index_entries_too(tmp_path: Path) -> None:
    """A CRL file is kept ``crl.keep_days`` from the day after the day it was made (Act §16:
    これを作成した日から); an index entry an earlier builder wrote (``this_update +
    keep_days * 86400``) is kept to the end of that day too."""
    w = World(tmp_path)
    made = jst(2026, 3, 1, 0, 0, 30)
    (tmp_path / "crl").mkdir()
    _index_crl_files(w, tmp_path / "crl", made, (made + 30 * DAY, kept_until(made, 30)))
    assert kept_until(made, 30) == jst(2026, 4, 1)
    for now in (jst(2026, 3, 31, 0, 0, 30), jst(2026, 3, 31, 23, 59, 59)):
        assert prune_crls(w.store, tmp_path / "crl", now, 30) == 0
    assert prune_crls(w.store, tmp_path / "crl", jst(2026, 4, 1), 30) == 2
    assert not list((tmp_path / "crl").iterdir())


def test_an_old_index_entry_made_at_00_00_00_jst_is_kept_through_its_last_day(
    tmp_path: Path,
) -> None:
    """An earlier builder stored ``this_update + keep_days * 86400``: for a file made at
    exactly 00:00:00 JST that is itself a midnight, one day before the end counted from the
    day after its day (初日不算入, `kept_until`). The file is kept to the later of the two;
    an end stored later than the one ``crl.keep_days`` gives now (the days since lowered)
    is kept too."""
    w = World(tmp_path)
    (tmp_path / "crl").mkdir()
    made = jst(2026, 3, 1)  # 00:00:00 JST
    _index_crl_files(w, tmp_path / "crl", made, (made + 30 * DAY, made + 40 * DAY))
    assert made + 30 * DAY == jst(2026, 3, 31) and kept_until(made, 30) == jst(2026, 4, 1)
    for now in (jst(2026, 3, 31), jst(2026, 3, 31, 23, 59, 59)):
        assert prune_crls(w.store, tmp_path / "crl", now, 30) == 0, "pruned a day early"
    assert prune_crls(w.store, tmp_path / "crl", jst(2026, 4, 1), 30) == 1
    assert [p.name for p in (tmp_path / "crl").iterdir()] == ["2.crl"]
    assert made + 40 * DAY == jst(2026, 4, 10)
    assert prune_crls(w.store, tmp_path / "crl", jst(2026, 4, 9, 23, 59, 59), 30) == 0
    assert prune_crls(w.store, tmp_path / "crl", jst(2026, 4, 10), 30) == 1


def test_a_retention_in_seconds_is_refused_for_days(tmp_path: Path) -> None:
    """The periods are whole days (the law counts days): a key in seconds is refused, with
    where the days go, not read as another number."""
    with pytest.raises(ConfigError, match=r"retention_seconds.*retention_days"):
        load_config(_config(tmp_path, "[crl]\nretention_seconds = 864000\n"))


def test_erasure_keeps_the_time_when_configured(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.apply(
        [
            issuance(10, ISSUER, H1, 0, not_after=ts(300)),
            {"type": "revocation-request", "id": rid(), "recorded_at": ts(10), "issuer": ISSUER,
             "serial": 10, "reason": "loss"},
        ]
    )  # fmt: skip
    revoked_at = w.status(ISSUER, 10).revoked_at
    t0 = int(datetime.fromisoformat(ts(0)).timestamp())
    ap = w.apply([])
    assert ap.erase_past_retention(t0 + 400 * DAY, lambda f, c: 100, keep_time=True) == 1
    st = w.status(ISSUER, 10)
    assert st.erased and st.revoked_at == revoked_at and (st.category, st.reason) == (0, 0)


# --- builds, CRLs and the responder ------------------------------------------------


@dataclass(frozen=True)
class Erased:
    store: Path
    crl: Path
    full_before: bytes
    summary: dict[str, object]


def _build(built: Built, d: Path, erased_answer: str) -> Erased:
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(days=400)

    def at(days: int) -> str:
        return (now + timedelta(days=days)).isoformat()

    def cert(n: int, serial: int, not_after: int) -> bytes:
        return msgspec.json.encode(
            {"type": "issuance", "id": f"r-{n}", "recorded_at": at(-800), "serial": serial,
             "family": "sign-card", "issuer": ISSUER, "not_before": at(-800),
             "not_after": at(not_after), "holder": f"{n:02x}" * 32, "facts": FACTS}
        )  # fmt: skip

    inputs = d / "records"
    inputs.mkdir()
    (inputs / "a.jsonl").write_bytes(
        b"\n".join(
            [
                cert(1, ERASED, -450),
                cert(2, RECORDING_ERROR, -450),
                cert(3, VALID, 300),
                msgspec.json.encode({"type": "revocation-request", "id": "r-4", "recorded_at": at(-700),
                                     "issuer": ISSUER, "serial": ERASED, "reason": "loss"}),
                msgspec.json.encode({"type": "recording-error", "id": "r-5", "recorded_at": at(-700),
                                     "issuer": ISSUER, "serial": RECORDING_ERROR}),
                msgspec.json.encode({"type": "revocation-request", "id": "r-6", "recorded_at": at(-700),
                                     "issuer": ISSUER, "serial": VALID, "reason": "loss"}),
            ]
        )
        + b"\n"
    )  # fmt: skip
    config = d / "builder.toml"
    config.write_text(
        (ROOT / "config" / "builder.toml")
        .read_text(encoding="utf-8")
        .replace(
            "[crl.retention_days_by_category.sign-card]\nrequest = 3650",
            "[crl.retention_days_by_category.sign-card]\nrequest = 365",
        ),
        encoding="utf-8",
    )

    def build(as_of: datetime) -> dict[str, object]:
        out = run_tool(
            "crlbuilder", "build", "--config", str(config), "--store", str(d / "store"),
            "--pki", str(built.pki), "--input", str(inputs), "--facts-key-file", str(built.facts_key),
            "--quarantine", str(d / "q.jsonl"), "--notices", str(d / "n.jsonl"),
            "--crl-dir", str(d / "crl"), "--spool", str(d / "spool"), "--sign-workers", "1",
            "--erased-answer", erased_answer, "--as-of", as_of.isoformat(), "--no-progress",
        )  # fmt: skip
        summary: dict[str, object] = msgspec.json.decode(out.stderr.strip().splitlines()[-1])
        return summary

    first_summary = build(first)
    assert first_summary["quarantined"] == 0 and first_summary["erased_past_retention"] == 0
    full_before = (d / "crl" / f"{ISSUER}.crl").read_bytes()
    # the second build's instant is taken after the first build's commit, whenever that was
    return Erased(d / "store", d / "crl" / f"{ISSUER}.crl", full_before, build(datetime.now(UTC)))


@pytest.fixture(scope="module")
def erased_unknown(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Erased:
    return _build(built, tmp_path_factory.mktemp("erase-unknown"), "unknown")


@pytest.fixture(scope="module")
def erased_revoked(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Erased:
    return _build(built, tmp_path_factory.mktemp("erase-revoked"), "revoked")


def _listed(der: bytes, ca: Path, tmp: Path) -> set[int]:
    (tmp / "x.crl").write_bytes(der)
    out = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(tmp / "x.crl"), "-CAfile", str(ca), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "verify OK" in out.stdout + out.stderr
    return {int(x.split(":", 1)[1], 16) for x in out.stdout.splitlines() if "Serial Number:" in x}


def test_ord_70_erased_record_absent_from_next_full_crl_and_store(
    built: Built, erased_unknown: Erased, tmp_path: Path
) -> None:
    ca = built.pki / built.manifest.issuer(ISSUER).cert
    assert _listed(erased_unknown.full_before, ca, tmp_path) == {ERASED, RECORDING_ERROR, VALID}
    assert erased_unknown.summary["erased_past_retention"] == 1
    after = erased_unknown.crl.read_bytes()
    assert x509.load_der_x509_crl(after).extensions.get_extension_for_class(x509.CRLNumber)
    assert _listed(after, ca, tmp_path) == {RECORDING_ERROR, VALID}
    store = Store.open(erased_unknown.store, readonly=True)
    try:
        with store.read() as r:
            index = next(i.index for i in r.issuers() if i.id == ISSUER)
            listed = {int.from_bytes(k[2:], "big") for k, _ in r.revocations(index)}
            assert listed == {RECORDING_ERROR, VALID}
            st = r.status(sf.status_key(index, ERASED))
        assert st is not None and st.erased and st.revoked_at == 0 and st.category == 0
    finally:
        store.close()


def _ask(built: Built, store_path: Path, serial: int) -> ocsp.OCSPResponse:
    """The in-process responder's answer to one SHA-1 CertID of ``ISSUER``."""
    issuer = x509.load_pem_x509_certificate(
        (built.pki / built.manifest.issuer(ISSUER).cert).read_bytes()
    )
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
        .build()
    )
    store = Store.open(store_path, readonly=True)
    try:
        flow = OcspFlow(load_issuers(built.manifest), Quotas(), OcspConfig())
        parsed = parse_request(
            req.public_bytes(serialization.Encoding.DER), max_certids=4, max_nonce=32
        )
        view = flow.issuer_of(parsed)
        assert view is not None
        with store.read() as reader:
            answer = flow.lookup(parsed, view, int(time.time()), reader)
        assert not isinstance(answer, Unavailable), answer
        ready = answer if isinstance(answer, Ready) else answer.run()
        return ocsp.load_der_ocsp_response(ready.der)
    finally:
        store.close()


def test_ord_70_erased_serial_answers_unknown_by_default(
    built: Built, erased_unknown: Erased
) -> None:
    resp = _ask(built, erased_unknown.store, ERASED)
    assert resp.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    kept = _ask(built, erased_unknown.store, VALID)
    assert kept.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_ord_70_erased_serial_answers_revoked_when_configured(
    built: Built, erased_revoked: Erased
) -> None:
    resp = _ask(built, erased_revoked.store, ERASED)
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is None  # the reason and the category were erased
    want = datetime.now(UTC) - timedelta(days=700)
    assert resp.revocation_time_utc is not None
    assert abs((resp.revocation_time_utc - want).total_seconds()) < 3600


@pytest.fixture
def server(built: Built, erased_unknown: Erased, tmp_path: Path) -> Iterator[Server]:
    with start_server(built, tmp_path, store=erased_unknown.store) as s:
        yield s


def test_ord_70_erased_serial_through_the_real_server(built: Built, server: Server) -> None:
    ca = str(built.pki / built.manifest.issuer(ISSUER).cert)
    out = subprocess.run(
        ["openssl", "ocsp", "-url", f"{server.url}/ocsp", "-issuer", ca, "-serial", str(ERASED),
         "-CAfile", ca, "-no_nonce", "-header", f"Authorization=Bearer {server.token('both-verifier')}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Response verify OK" in out.stderr, out.stderr
    assert ": unknown" in out.stdout and ": good" not in out.stdout, out.stdout


def test_recorded_at_read_in_place_agrees_with_the_entry() -> None:
    for at in (0, 1, -1, 1_700_000_000, 2**62):
        e = sf.RevokedEntry(revoked_at=7, reason=1, category=2, commit=3, recorded_at=at)
        assert sf.revoked_recorded_at(e.pack()) == sf.unpack_revoked(e.pack()).recorded_at == at


def test_status_command_says_erased(erased_unknown: Erased) -> None:
    out = run_tool(
        "crlbuilder", "status", "--store", str(erased_unknown.store), "--issuer", ISSUER,
        "--serial", str(ERASED),
    )  # fmt: skip
    doc = msgspec.json.decode(out.stdout)
    assert doc["status"] == "erased" and "category" not in doc and "revoked_at" not in doc


# ---------------------------------------------------------------------------
# The follow loop: a timer on the agenda, not the periodic refresh
# ---------------------------------------------------------------------------


def test_an_idle_follow_loop_erases_at_00_00_jst_after_the_last_day(
    tmp_path: Path, demo_pki: tuple[Path, Manifest]
) -> None:
    """A record whose period ends while `build --follow` is idle is erased at 00:00 JST after
    its last day (Civil Code §141), by the loop's timer on the agenda, not at the next file or
    refresh (half an hour here): until then the responder answers revoked and the next CRL
    lists it; then the same turn issues a CRL without it. The clock is the real one shifted,
    before and after a JST midnight."""
    pki, manifest = demo_pki
    one_day = dict.fromkeys(("sign-card", "sign-mobile", "auth-card", "auth-mobile"), 1)
    cfg = builder_config(tmp_path, pki, delta=False, cycle_seconds=3600, retention_days=one_day)
    issuer = next(i for i in manifest.issuers if i.id.startswith("auth-card"))
    # the end of the period: the second JST midnight after a day a few days back
    midnight = datetime.now(JST).replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight - timedelta(days=3)
    recorded = end - timedelta(days=2) + timedelta(hours=1)  # 01:00 JST: 1 day, first not counted
    assert kept_until(int(recorded.timestamp()), 1) == int(end.timestamp())
    issued = recorded - timedelta(days=10)
    holder = hashlib.sha256(b"retention-follow").hexdigest()
    recs = [
        {"type": "issuance", "id": "i1", "recorded_at": issued.isoformat(), "serial": 4343,
         "family": "auth-card", "issuer": issuer.id, "not_before": issued.isoformat(),
         "not_after": (recorded + timedelta(minutes=30)).isoformat(), "holder": holder},
        {"type": "revocation-request", "id": "r1", "recorded_at": recorded.isoformat(),
         "serial": 4343, "issuer": issuer.id, "reason": "loss"},
    ]  # fmt: skip
    clock = ShiftedClock(end - timedelta(seconds=60))
    with records_builder(tmp_path, cfg, recs, clock) as b:
        report = b.build([tmp_path / "records" / "a.jsonl"])
        assert report.summary.applied == 2 and report.summary.erased == 0
        key = sf.status_key(issuer.index, 4343)
        with b.store.read() as r:
            assert (st := r.status(key)) is not None and st.revoked
        clock.move_to(end - timedelta(seconds=2))
        # the spool is polled every 10 s and refreshes come every half hour: only a timer on
        # the agenda wakes the loop before max_idle ends it
        b.follow(tmp_path / "spool", 10.0, max_idle=1.5)
        after = clock()
        with b.store.read() as r:
            st = r.status(key)
        assert st is not None and st.erased, "not erased when its period ended"
        assert after >= end
    events = logged_events(tmp_path / "log.jsonl")
    assert [(e["event"], e["erased_past_retention"]) for e in events] == [("retention", 1)]
    assert events[0]["due"] == int(end.timestamp())
    # the same turn issues the next full CRL without it (no deltas here), a day before its cycle
    made = [(c["number"], c["delta"]) for c in events[0]["crls"] if c["issuer"] == issuer.id]
    assert made == [(2, False)], "the CRL being served still lists the erased record"
    served = x509.load_der_x509_crl((tmp_path / "crl" / f"{issuer.id}.crl").read_bytes())
    assert served.get_revoked_certificate_by_serial_number(4343) is None


def test_the_next_erasure_is_the_agendas_first_entry_its_horizon_or_an_entry_written_since() -> (
    None
):
    """What an idle loop may sleep to (`crlbuilder.retention.next_erasure`): an entry written
    after the scan may fall due before the agenda's first entry, at the end of its shortest
    period counted from the day after its day (00:00 JST), never later."""
    state = scanned(jst(2026, 3, 1, 12), "p")  # horizon 31 March 12:00 JST
    assert next_erasure(None, None, None, 30) is None  # no scan yet: the next build scans
    assert next_erasure(state, None, None, 30) == state.horizon
    assert next_erasure(state, jst(2026, 3, 5), None, 30) == jst(2026, 3, 5)
    assert next_erasure(state, jst(2026, 4, 5), None, 30) == state.horizon
    # written at 00:00:30 JST on 1 March: 2-30 March for 29 days, due 00:00 on 31 March
    assert next_erasure(state, None, jst(2026, 3, 1, 0, 0, 30), 29) == jst(2026, 3, 31)
    assert next_erasure(state, jst(2026, 3, 5), jst(2026, 3, 1, 0, 0, 30), 29) == jst(2026, 3, 5)
    # made under other periods than an erasure now would trust: at once (its scan's instant)
    assert next_erasure(state, jst(2026, 3, 5), None, 30, None, {"p", "o"}) == jst(2026, 3, 5)
    assert next_erasure(state, jst(2026, 3, 5), None, 30, None, {"q"}) == state.scanned_at
