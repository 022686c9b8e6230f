"""A group appliance's bound on each member's requests (`responder.memberbound`, Ord §33(4)), in process.

Members have no agreement with the 機構, so before this bound one member could send the
group's appliance as many OCSP and /v1 requests as it liked. Held here: a member is bound
by its own registry numbers when given, else by ``[group] member_requests_per_second`` and
``member_requests_per_day``; past it, the /v1 routes answer 429 with Retry-After and a
problem naming the member's bound, OCSP ``tryLater``, both noted ``member_quota``; another
member keeps its own count; the 機構's parties are never touched by it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from crlbuilder.model import Family
from crlbuilder.ocsp.response import ResponseStatus
from responder.config import GroupConfig, ResponderConfig
from responder.flow import OcspFlow, Refusal, Signing
from responder.limits import Limit, LimitsTable
from responder.memberbound import MEMBER_QUOTA, MemberQuota, bounded, refusal
from responder.metrics import RULES
from responder.ocsp import IssuerView
from responder.registry.lookup import Registry
from responder.v1.routes import V1Api
from responder.v1.table import MEMBER_ROUTES
from tests.support.pki import Ca
from tests.test_group_flow import crl_store
from tests.test_group_flow import group as group_party
from tests.test_group_flow import member as member_party
from tests.test_group_policy import GROUP, group_table, member
from tests.test_ocsp_flow import CONFIG, SIGN, Creds, key, party, request, views  # noqa: F401
from tests.test_ocsp_flow import GOOD as GOOD_SERIAL
from tests.test_ocsp_flow import NOW as NOW_FLOW
from tests.test_policy import MEM, NOW, build, party_table
from tests.test_v1_status import GOOD, SC, Api, cas, entries, ref, store  # noqa: F401 (fixture)

pytestmark = pytest.mark.unit

FLOW_REGISTRY = Registry(
    [
        group_party("g"),
        member_party("m-1", "g"),
        member_party("m-2", "g"),
        party("verifier", Family.SIGN_CARD),
    ]
)


def confirmer(pid: str, **numbers: int) -> dict[str, Any]:
    """A member whose registry entry gives its own numbers (its signature-confirmer title)."""
    title = {"kind": "signature-confirmer", "group": GROUP, **numbers}
    return party_table(pid, {MEM}, title=[title])


def test_a_member_takes_its_own_numbers_else_the_groups_default() -> None:
    reg = build(
        group_table(),
        member("m-1"),
        confirmer("m-own", requests_per_second=7, requests_per_day=900),
    )
    m1, own, grp = reg.parties["m-1"], reg.parties["m-own"], reg.parties[GROUP]
    assert (own.requests_per_second, own.requests_per_day) == (7, 900)  # the registry's
    assert (m1.requests_per_second, m1.requests_per_day) == (None, None)
    got = bounded(m1, 20, 0)
    assert (got.requests_per_second, got.requests_per_day) == (20, None)  # 0: no daily bound
    assert bounded(own, 20, 5000) is own  # its own numbers win
    assert bounded(m1, 0, 0) is m1  # no bound configured
    assert bounded(grp, 20, 5000) is grp  # not a member: never bound here


def test_the_registry_refuses_a_bad_member_number() -> None:
    from responder.registry.schema import RegistryError

    with pytest.raises(RegistryError):
        build(
            group_table(),
            confirmer("m-1", requests_per_second=0),
        )  # fmt: skip


def group_api(cas: dict[int, Ca], tmp_path: Path, per_second: int, per_day: int = 0) -> Api:  # noqa: F811
    reg = build(group_table("g"), member("m-1", group="g"), member("m-2", group="g"))
    api = Api(store(cas), reg)
    table = LimitsTable(tmp_path / "limits.tbl", 1, 0)
    config = ResponderConfig(
        group=GroupConfig(member_requests_per_second=per_second, member_requests_per_day=per_day)
    )
    api.api = V1Api(
        MEMBER_ROUTES, config, store=api.reader,
        quota=MemberQuota(table, per_second, per_day), ledger=api.ledger, calls=api.calls,
        signer=None, group_id="g",
    )  # fmt: skip
    return api


def test_a_member_past_its_bound_gets_429_naming_it(cas: dict[int, Ca], tmp_path: Path) -> None:  # noqa: F811
    api = group_api(cas, tmp_path, per_second=3)
    body = entries(ref(SC, GOOD))
    for _ in range(3):
        resp, got = api.call(body, party="m-1")
        assert resp.status == 200, got
    resp, got = api.call(body, party="m-1")
    assert resp.status == 429, got
    assert dict(resp.extra_headers)[b"retry-after"] == b"1"
    assert got["article"] == "Ord §33(4)"
    assert "this member's requests per second" in got["detail"]
    assert "member_requests_per_second" in got["detail"]
    assert api.last is not None and api.last.note is not None
    assert api.last.note.rule == MEMBER_QUOTA and api.last.note.party == "m-1"
    # another member keeps its own count: the flooding member took nothing of it
    resp, got = api.call(body, party="m-2")
    assert resp.status == 200, got
    assert len(api.ledger.counted) == 4  # the refused call counted nothing


def test_a_daily_bound_says_so(cas: dict[int, Ca], tmp_path: Path) -> None:  # noqa: F811
    api = group_api(cas, tmp_path, per_second=0, per_day=2)
    body = entries(ref(SC, GOOD))
    assert [api.call(body, party="m-1")[0].status for _ in range(3)] == [200, 200, 429]
    resp, got = api.call(body, party="m-1")
    assert "requests per day" in got["detail"]
    assert int(dict(resp.extra_headers)[b"retry-after"]) > 1  # until 00:00 JST


def test_without_a_bound_a_member_is_not_refused(cas: dict[int, Ca], tmp_path: Path) -> None:  # noqa: F811
    """The control: with both numbers 0 (as before this bound) nothing refuses a flood."""
    api = group_api(cas, tmp_path, per_second=0)
    body = entries(ref(SC, GOOD))
    assert {api.call(body, party="m-1")[0].status for _ in range(50)} == {200}


def test_the_ocsp_flow_refuses_a_member_past_its_bound_try_later(
    views: dict[int, IssuerView],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The OCSP port: `OcspFlow.decide` on a group appliance answers ``tryLater``, noted
    ``member_quota``, once a member passed its bound; another member is answered."""
    table = LimitsTable(tmp_path / "limits.tbl", 1, 0)
    fl = OcspFlow(views.values(), MemberQuota(table, 2, 0), CONFIG, group_id="g")
    s = crl_store(views)
    der = request(views[SIGN], GOOD_SERIAL)
    got = [fl.decide(der, Creds("m-1"), NOW_FLOW, s, FLOW_REGISTRY) for _ in range(3)]
    assert isinstance(got[0], Signing) and isinstance(got[1], Signing), got
    assert isinstance(got[2], Refusal), got[2]
    assert (got[2].status, got[2].rule) == (ResponseStatus.TRY_LATER, MEMBER_QUOTA)
    assert isinstance(fl.decide(der, Creds("m-2"), NOW_FLOW, s, FLOW_REGISTRY), Signing)
    # the 機構's appliance (no group): a party without an agreed quota is never bound
    plain = OcspFlow(views.values(), table, CONFIG)
    for _ in range(5):
        assert not isinstance(plain.decide(der, Creds("verifier"), NOW_FLOW, s, FLOW_REGISTRY),
                              Refusal)  # fmt: skip


def test_the_rule_is_a_metrics_label_and_the_refusal_names_the_bound() -> None:
    assert MEMBER_QUOTA in RULES
    for limit, words in ((Limit.SECOND, "per second"), (Limit.DAY, "per day")):
        r = refusal(limit)
        assert words in r.detail and r.article == "Ord §33(4)"
    assert math.isfinite(NOW)
    assert msgspec.json.encode(GroupConfig()) == (
        b'{"file":null,"unlisted":"good","member_requests_per_second":20,'
        b'"member_requests_per_day":0}'
    )
