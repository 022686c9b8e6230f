"""Open findings of the adversarial read of the rules (report-aurules.md): each test states what
the law (the seed texts) and DOMAIN.md ask of a record sequence, and is marked strict xfail
because the builder decides otherwise today. A fix changes what the rules decide for records, so
it needs a rules bump gated on the record stream as rules 6 and 7 are (`crlbuilder.release`,
`apply._Batch.rules7`): then drop the marker. Each fails (XPASS) as soon as the behaviour moves,
so none can silently go stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crlbuilder.apply import Applier
from crlbuilder.model import Category
from tests.test_apply import H1, KEY, T0, World, issuance, rid, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


@pytest.mark.xfail(strict=True, reason="open: a cascade dated before the mobile's notBefore")
def test_a_cascade_is_not_dated_before_the_mobile_certificate_began(world: World) -> None:
    """A card certificate revoked at day 3 by a request whose record arrives after the issuance
    record of a mobile certificate that began at day 5: the cascade (Act §16-13) revokes the
    mobile one at day 3, before its notBefore (in the other arrival order its issuance is
    refused, `_check_card`). A resident change never dates a revocation before issuance
    (`rules.resident_change_revokes`); a cascade record is written no earlier than the
    certificate it covers exists."""
    world.apply([
        issuance(101, "sign-card-g1", H1, not_after=ts(1000)),
        issuance(103, "sign-mobile-g1", H1, day=5, not_after=ts(900), card_serial=101),
    ])  # fmt: skip
    world.apply([{"type": "revocation-request", "id": rid(), "recorded_at": ts(3), "serial": 101,
                  "issuer": "sign-card-g1", "reason": "loss"}])  # fmt: skip
    mobile = world.status("sign-mobile-g1", 103)
    assert mobile.revoked and mobile.category_enum is Category.CARD_CASCADE
    assert mobile.revoked_at >= mobile.not_before


@pytest.mark.xfail(strict=True, reason="open: Act §35-2(3)'s sign-card check not made")
def test_act_35_2_auth_mobile_needs_a_sign_card_certificate_in_effect(world: World) -> None:
    """Act §35-2(1) lets only a 署名利用者 apply for an auth-mobile certificate, and §35-2(3) has
    the 機構 confirm that the sign-card certificate signing the application has not lost effect
    (§15(1)). An auth-mobile issuance after the holder's only sign-card certificate was revoked
    is applied good; the sign-mobile one in the same place is refused (Act §16-2(3))."""
    world.apply([
        issuance(101, "sign-card-g1", H1, not_after=ts(1000)),
        issuance(102, "auth-card-g1", H1, not_after=ts(1000)),
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(3), "serial": 101,
         "issuer": "sign-card-g1", "reason": "application"},
        issuance(104, "auth-mobile-g1", H1, day=5, not_after=ts(900), card_serial=102),
    ])  # fmt: skip
    assert [q["id"] for q in world.quarantined()] != []


@pytest.mark.xfail(strict=True, reason="open: a first build dates lapses at their due instants")
def test_act_34_1_2_a_lapse_is_never_dated_before_it_is_written(world: World) -> None:
    """DOMAIN.md §3 (and Act §31, §34(1)(2): the record carries the day it is recorded, and the
    certificate loses effect when it is written): the 30-day lapse is never dated earlier than it
    is written. A store's first build (no build completed: ``published`` False) dates it at the
    due instant, here 160 days before the write."""
    now = T0 + timedelta(days=200)
    world.apply([
        issuance(102, "auth-card-g1", H1, not_after=ts(1000)),
        {"type": "resident-change", "id": rid(), "recorded_at": ts(1), "holder": H1,
         "change": "move-out-notice", "planned_date": "2024-01-20"},
    ])  # fmt: skip
    ap = Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=lambda: now)
    ap.sweep_lapses(now)
    st = world.status("auth-card-g1", 102)
    assert st.revoked
    assert datetime.fromtimestamp(st.revoked_at, UTC) >= now
