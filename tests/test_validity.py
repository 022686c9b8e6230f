"""Issuance records checked against the validity rules (有効期間): Ord §13, §49, Act §16-4, §35-4.

FACTS' birth date is 1980-09-15; issuances on 2024-01-10 (T0) reach the 5th birthday
after issuance on 2028-09-15, the 6th (a renewal, Ord §13(1), §49(1)) on 2029-09-15.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import msgspec
import pytest

from crlbuilder import rules
from crlbuilder.model import Family
from crlbuilder.store import format as sf
from tests.test_apply import FACTS, H1, World, issuance, rid, ts

FIFTH = rules.end_of_day_utc(date(2028, 9, 15)).isoformat()
SIXTH = rules.end_of_day_utc(date(2029, 9, 15)).isoformat()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def test_ord_13_latest_end_is_the_fifth_birthday_or_the_sixth_on_renewal() -> None:
    kw = {"family": Family.SIGN_CARD, "issued": date(2024, 1, 10), "birth_date": date(1980, 9, 15)}
    assert rules.latest_validity_end(renewal=False, **kw) == date(2028, 9, 15)  # type: ignore[arg-type]
    assert rules.latest_validity_end(renewal=True, **kw) == date(2029, 9, 15)  # type: ignore[arg-type]
    # Ord §13(2): no later than the holder's auth-card certificate
    assert rules.latest_validity_end(
        renewal=False,
        auth_cert_end=date(2027, 1, 1),
        **kw,  # type: ignore[arg-type]
    ) == date(2027, 1, 1)


def test_ord_49_without_a_birth_date_bounds_by_the_anniversary() -> None:
    """Auth certificates carry no facts: the n-th birthday is no later than the n-th anniversary."""
    for issued in (date(2024, 1, 10), date(2023, 2, 28), date(2024, 2, 29)):
        bound = rules.latest_validity_end(
            family=Family.AUTH_CARD, issued=issued, renewal=False, birth_date=None
        )
        for birth in (date(1980, 2, 29), date(1990, 1, 10), date(2000, 12, 31), date(1970, 3, 1)):
            assert rules.nth_birthday_after(birth, issued, 5) <= bound, (issued, birth)


def test_ord_13_1_issuance_past_the_fifth_birthday_quarantined(world: World) -> None:
    world.apply([issuance(101, "sign-card-g1", H1, not_after=SIXTH)])
    [q] = world.quarantined()
    assert "later than the validity the rules allow (Ord §13(1))" in str(q["reason"])
    # the bound is the holder's birthday: the quarantine file holds none of the four facts
    assert "09-15" not in msgspec.json.encode(q).decode()
    with world.store.read() as r:
        assert r.status(sf.status_key(1, 101)) is None
    world.apply([issuance(102, "sign-card-g1", H1, not_after=FIFTH)])
    assert not world.status("sign-card-g1", 102).revoked


def test_ord_49_1_auth_issuance_past_the_fifth_anniversary_quarantined(world: World) -> None:
    world.apply([issuance(102, "auth-card-g1", H1, not_after=ts(5 * 366 + 2))])
    [q] = world.quarantined()
    assert "Ord §49(1))" in str(q["reason"])


def test_ord_13_2_sign_card_no_later_than_the_auth_card(world: World) -> None:
    world.apply([issuance(102, "auth-card-g1", H1, not_after=ts(900))])
    world.apply([issuance(101, "sign-card-g1", H1, not_after=ts(901))])
    [q] = world.quarantined()
    assert "Ord §13(2)" in str(q["reason"])


def test_ord_13_1_renewal_flag_allows_the_sixth_birthday_when_borne_out(world: World) -> None:
    # the previous certificate ends 2028-09-15: renewed on 2028-07-01, under three months before
    world.apply([issuance(101, "sign-card-g1", H1, not_after=FIFTH)])
    renew_day = (date(2028, 7, 1) - date(2024, 1, 10)).days
    birth6 = rules.end_of_day_utc(date(2033, 9, 15)).isoformat()  # 6th birthday after 2028-07-01
    world.apply([
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(renew_day), "serial": 101,
         "issuer": "sign-card-g1", "reason": "renewal"},
        issuance(103, "sign-card-g2", H1, day=renew_day + 0.01, not_after=birth6, renewal=True),
    ])  # fmt: skip
    assert world.quarantined() == []
    assert not world.status("sign-card-g2", 103).revoked
    # without the flag the same end is refused: the 5th birthday (2032-09-15) applies
    world.apply([
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(renew_day + 1),
         "serial": 103, "issuer": "sign-card-g2", "reason": "application"},
        issuance(104, "sign-card-g2", H1, day=renew_day + 1.01, not_after=birth6),
    ])  # fmt: skip
    assert "rules allow (Ord §13(1))" in str(world.quarantined()[-1]["reason"])


def test_ord_13_1_renewal_flag_refused_without_a_certificate_near_its_end(world: World) -> None:
    world.apply([issuance(101, "sign-card-g1", H1, not_after=SIXTH, renewal=True, facts=FACTS)])
    [q] = world.quarantined()
    assert "renewal claimed" in str(q["reason"]) and "Ord §13(1)" in str(q["reason"])
