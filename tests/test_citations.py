"""Each family cites its own articles (Act §15(2)(3), §16-14(2)(3), §34(2)(3), §35-14(2)(3),
Ord §23, §58; §6, §16-5, §25, §35-5; §16-2(3), §35-2(1); §16-4, §35-4).

The Act repeats each duty once per family; a notice or a quarantine reason that
cites the sign-card article for an auth or mobile certificate cites the wrong law.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import DUTY_ARTICLES, JPKI_FAMILIES, Duty, Family
from tests.test_apply import H1, H2, World, holder_set, issuance, rid, ts

SERIALS = {  # holder_set(H1): the four families
    Family.SIGN_CARD: ("sign-card-g1", 101),
    Family.AUTH_CARD: ("auth-card-g1", 102),
    Family.SIGN_MOBILE: ("sign-mobile-g1", 103),
    Family.AUTH_MOBILE: ("auth-mobile-g1", 104),
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def notices(world: World) -> list[dict[str, object]]:
    path = world.tmp / "notices.jsonl"
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


def test_every_family_has_each_duty_article_of_the_act() -> None:
    for duty in Duty:
        families = set(DUTY_ARTICLES[duty])
        expected = (
            {Family.SIGN_MOBILE, Family.AUTH_MOBILE}
            if duty is Duty.CARD_CERT_VALID
            else set(JPKI_FAMILIES)  # the Act's duties: not the token (Act §38-3)
        )
        assert families == expected, duty
        assert len(set(DUTY_ARTICLES[duty].values())) == len(families), duty  # none shared


@pytest.mark.parametrize(
    ("family", "article"),
    [
        (Family.SIGN_CARD, "Act §15(2)"),
        (Family.SIGN_MOBILE, "Act §16-14(2)"),
        (Family.AUTH_CARD, "Act §34(2)"),
        (Family.AUTH_MOBILE, "Act §35-14(2)"),
    ],
)
def test_recording_error_notice_cites_the_familys_article(
    world: World, family: Family, article: str
) -> None:
    world.apply(holder_set(H1))
    issuer, serial = SERIALS[family]
    world.apply([{"type": "recording-error", "id": rid(), "recorded_at": ts(9),
                  "serial": serial, "issuer": issuer}])  # fmt: skip
    [n] = notices(world)
    assert n["kind"] == "holder-notification" and n["serial"] == serial
    assert n["article"] == article


@pytest.mark.parametrize(
    ("family", "article"),
    [
        (Family.SIGN_CARD, "Act §15(3), Ord §23"),
        (Family.SIGN_MOBILE, "Act §16-14(3)"),
        (Family.AUTH_CARD, "Act §34(3), Ord §58"),
        (Family.AUTH_MOBILE, "Act §35-14(3)"),
    ],
)
def test_compromise_announcement_cites_the_familys_article(
    world: World, family: Family, article: str
) -> None:
    world.apply(holder_set(H1))
    issuer, _ = SERIALS[family]
    world.apply([{"type": "ca-compromise", "id": rid(), "recorded_at": ts(9), "issuer": issuer}])
    announcements = [n for n in notices(world) if n["kind"] == "public-announcement"]
    assert [n["article"] for n in announcements] == [article]


@pytest.mark.parametrize(
    ("family", "article"),
    [
        (Family.SIGN_CARD, "Act §6"),
        (Family.SIGN_MOBILE, "Act §16-5"),
        (Family.AUTH_CARD, "Act §25"),
        (Family.AUTH_MOBILE, "Act §35-5"),
    ],
)
def test_double_issuance_reason_cites_the_familys_article(
    world: World, family: Family, article: str
) -> None:
    world.apply(holder_set(H1))
    issuer, _ = SERIALS[family]
    card = {Family.SIGN_MOBILE: 101, Family.AUTH_MOBILE: 102}.get(family)
    extra = {"card_serial": card, "not_after": ts(1300)} if card else {}
    world.apply([issuance(900, issuer, H1, day=5, **extra)])
    [q] = world.quarantined()
    assert "二重発行" in str(q["reason"]) and str(q["reason"]).endswith(f"{article})"), q["reason"]


@pytest.mark.parametrize(
    ("family", "article"),
    [(Family.SIGN_MOBILE, "Act §16-2(3)"), (Family.AUTH_MOBILE, "Act §35-2(1)")],
)
def test_mobile_against_a_lost_card_cert_cites_the_familys_article(
    world: World, family: Family, article: str
) -> None:
    card_issuer = "sign-card-g1" if family is Family.SIGN_MOBILE else "auth-card-g1"
    world.apply([issuance(301, card_issuer, H2)])
    world.apply([
        {"type": "revocation-request", "id": rid(), "recorded_at": ts(2), "serial": 301,
         "issuer": card_issuer, "reason": "loss"},
        issuance(302, SERIALS[family][0], H2, day=3, card_serial=301, not_after=ts(1000)),
    ])  # fmt: skip
    [q] = world.quarantined()
    assert "lost effect" in str(q["reason"]) and str(q["reason"]).endswith(f"{article})"), q[
        "reason"
    ]


@pytest.mark.parametrize(
    ("family", "article"), [(Family.SIGN_MOBILE, "Act §16-4"), (Family.AUTH_MOBILE, "Act §35-4")]
)
def test_mobile_outliving_its_card_cert_cites_the_familys_article(
    world: World, family: Family, article: str
) -> None:
    card_issuer = "sign-card-g1" if family is Family.SIGN_MOBILE else "auth-card-g1"
    world.apply([issuance(301, card_issuer, H2)])
    world.apply([issuance(302, SERIALS[family][0], H2, day=3, card_serial=301, not_after=ts(1501))])
    [q] = world.quarantined()
    assert "outlive" in str(q["reason"]) and str(q["reason"]).endswith(f"{article})"), q["reason"]
