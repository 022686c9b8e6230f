"""OCSP under an agreed ``provisions_per_day`` (件数): one provision per CertID answered,
what the ledger counts; past the bound tryLater (rule ``quota``), nothing taken."""

from __future__ import annotations

from pathlib import Path

from crlbuilder.model import Family
from crlbuilder.ocsp.response import ResponseStatus
from crlbuilder.rules import JST_OFFSET
from responder.flow import OcspFlow, Refusal, Signing
from responder.limits import LimitsTable
from responder.ocsp import IssuerView
from responder.registry.lookup import Registry
from tests.test_ocsp_flow import (
    CONFIG,
    GOOD,
    NOW,
    REVOKED,
    SIGN,
    Creds,
    key,  # noqa: F401  (a fixture)
    party,
    request,
    store,
    views,  # noqa: F401  (a fixture)
)

BOUNDED = party("bounded", Family.SIGN_CARD, provisions_per_day=3)
FREE = party("free", Family.SIGN_CARD, requests_per_day=10**6)
REG = Registry([BOUNDED, FREE])
MIDNIGHT_JST = (NOW + JST_OFFSET) // 86400 * 86400 - JST_OFFSET + 86400


def flow(views: dict[int, IssuerView], tmp_path: Path) -> tuple[OcspFlow, LimitsTable]:  # noqa: F811
    LimitsTable.create(tmp_path / "t", 1)
    limits = LimitsTable(tmp_path / "t", 1, 0)
    return OcspFlow(views.values(), limits, CONFIG), limits


def test_one_provision_per_certid_and_tryLater_past_the_bound(
    views: dict[int, IssuerView],  # noqa: F811
    tmp_path: Path,
) -> None:
    fl, limits = flow(views, tmp_path)
    src = store(views)
    sign = views[SIGN]
    got = fl.decide(request(sign, GOOD, REVOKED), Creds("bounded"), NOW, src, REG)
    assert isinstance(got, Signing) and len(got.job.answers) == 2
    assert limits.provisions_left(BOUNDED, NOW) == 1
    # two CertIDs where one remains: refused whole, nothing taken
    got = fl.decide(request(sign, GOOD, REVOKED), Creds("bounded"), NOW, src, REG)
    assert isinstance(got, Refusal)
    assert (got.status, got.rule) == (ResponseStatus.TRY_LATER, "quota")
    assert limits.provisions_left(BOUNDED, NOW) == 1
    assert isinstance(fl.decide(request(sign, GOOD), Creds("bounded"), NOW, src, REG), Signing)
    assert limits.provisions_left(BOUNDED, NOW) == 0
    assert isinstance(fl.decide(request(sign, GOOD), Creds("bounded"), NOW, src, REG), Refusal)
    # at 00:00 JST the next Japan day begins
    got = fl.decide(request(sign, GOOD), Creds("bounded"), MIDNIGHT_JST, src, REG)
    assert isinstance(got, Signing)


def test_a_refused_lookup_takes_nothing(
    views: dict[int, IssuerView],  # noqa: F811
    tmp_path: Path,
) -> None:
    """tryLater ``stale`` provides nothing, so it takes no provision."""
    fl, limits = flow(views, tmp_path)
    stale = store(views, promised=NOW - 1)
    got = fl.decide(request(views[SIGN], GOOD), Creds("bounded"), NOW, stale, REG)
    assert isinstance(got, Refusal) and got.rule == "stale"
    assert limits.provisions_left(BOUNDED, NOW) == 3


def test_without_the_field_nothing_is_taken(
    views: dict[int, IssuerView],  # noqa: F811
    tmp_path: Path,
) -> None:
    fl, limits = flow(views, tmp_path)
    src = store(views)
    for _ in range(5):
        assert isinstance(
            fl.decide(request(views[SIGN], GOOD), Creds("free"), NOW, src, REG), Signing
        )
    assert limits.provisions_left(FREE, NOW) is None
