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
from tests.test_apply import H1, KEY, T0, World, issuance, rid, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


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
