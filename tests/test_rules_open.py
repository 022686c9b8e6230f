"""Open findings of the legal rules: each test states what the law (the seed texts) asks of a
record sequence, and is marked strict xfail because the builder decides otherwise today. A fix
changes what the rules decide for records, so it needs a rules bump gated on the record stream
as rules 6 to 8 are (`crlbuilder.release`, `apply._Batch.rules8`): then drop the marker. Each
fails (XPASS) as soon as the behaviour moves, so none can silently go stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from crlbuilder.apply import Applier
from crlbuilder.model import Category
from tests.test_apply import H1, KEY, World, issuance, rid, ts


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


@pytest.mark.xfail(strict=True, reason="open: a first build's lapse dated before its notice came")
def test_act_31_a_first_builds_lapse_is_not_dated_before_the_kikou_knew_of_the_notice(
    world: World,
) -> None:
    """A store's first build dates its history's lapses at their due instants, as the 機構
    records them (Act §31: 知ったときは、直ちに; tests/test_lapse_time.py says why). A move-out
    notice made on day 1 for day 5 but recorded on day 100 (the 機構 learnt of it then) falls
    due on day 36: the 機構 could not record its lapse before day 100, yet the first build dates
    it at day 36 (a published store dates it when written, after day 100). The pending notice
    keeps when it was made, not when it was recorded (`store.format.PendingMoveOut`)."""
    now = datetime.fromisoformat(ts(200))
    world.apply([
        issuance(102, "auth-card-g1", H1, not_after=ts(1000)),
        {"type": "resident-change", "id": rid(), "recorded_at": ts(100), "notified_at": ts(1),
         "holder": H1, "change": "move-out-notice", "planned_date": "2024-01-15"},
    ])  # fmt: skip
    Applier(world.store, facts_key=KEY, quarantine=world.quarantine, clock=lambda: now
            ).sweep_lapses(now)  # fmt: skip
    st = world.status("auth-card-g1", 102)
    assert st.revoked and st.category_enum is Category.RESIDENT_CHANGE
    assert st.revoked_at >= datetime.fromisoformat(ts(100)).timestamp()
