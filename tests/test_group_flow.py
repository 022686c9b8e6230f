"""A group appliance's OCSP decision (団体署名検証者, Act §20(1)), in process with `MemoryReader`.

Group mode (`OcspFlow(group_id=...)`): members of the group are answered, about sign
certificates; a 署名検証者 registered there, a member of another group and an auth
certificate are refused ``unauthorized``. What a CRL-fed store cannot know (a serial on
no CRL, docs/operations.md): ``good`` by default (RFC 6960 §2.2), ``unknown`` when the
group configured ``[group] unlisted = "unknown"``; a listed serial is revoked either way.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.x509 import ocsp

from crlbuilder.model import Family
from crlbuilder.ocsp.response import CertStatus, ResponseStatus
from crlbuilder.store import format as sf
from crlbuilder.store.memory import MemoryReader
from responder.flow import STALE, OcspFlow, Refusal, Signing
from responder.ocsp import IssuerView
from responder.registry.lookup import Registry
from responder.registry.party import CredentialInfo, Grant, Party
from responder.registry.vocabulary import AuthMethod, Method, Service, Title
from tests.test_ocsp_flow import (
    AUTH,
    CONFIG,
    GOOD,
    NOW,
    REVOKED,
    SIGN,
    Creds,
    Quotas,
    cert_status,
    key,  # noqa: F401 (its fixtures)
    party,
    request,
    signed,
    store,
    views,  # noqa: F401
)

NEVER_LISTED = 0x5EED


def _token(pid: str) -> tuple[CredentialInfo, ...]:
    return (
        CredentialInfo(label="t", kind=AuthMethod.TOKEN, key=hashlib.sha256(pid.encode()).digest()),
    )


def member(pid: str, group: str) -> Party:
    return Party(
        id=pid, name=pid, titles=frozenset({Title.SIGNATURE_CONFIRMER}), families=frozenset(),
        auth=frozenset({AuthMethod.TOKEN}), cert_public_keys=(), group=group,
        credentials=_token(pid),
    )  # fmt: skip


def group(pid: str) -> Party:
    sign = frozenset({Family.SIGN_CARD, Family.SIGN_MOBILE})
    return Party(
        id=pid, name=pid, titles=frozenset({Title.GROUP_SIGNATURE_VERIFIER}), families=sign,
        auth=frozenset(), cert_public_keys=(),
        grants={Service.SIGN_CRL_FILE: Grant(sign, frozenset({Method.CRL_FILE}))},
    )  # fmt: skip


REGISTRY = Registry(
    [
        group("g"),
        member("m-1", "g"),
        group("h"),
        member("x-1", "h"),
        party("verifier", Family.SIGN_CARD),
    ]
)


def crl_store(views: dict[int, IssuerView]) -> MemoryReader:  # noqa: F811
    """A group's store: what the CRL said (the revoked serial), nothing else; each issuer's
    CRL imported (one never imported is stale: tests/test_group_never_fed.py)."""
    s = store(views)
    s.status_records = {k: v for k, v in s.status_records.items() if v.revoked_at}
    s.crl_states = {i: sf.CrlState(this_update=NOW - 3600, next_update=NOW + 86400) for i in views}
    s.imported = True
    return s


def group_flow(
    views: dict[int, IssuerView],  # noqa: F811
    unlisted: CertStatus = CertStatus.GOOD,
) -> OcspFlow:
    return OcspFlow(views.values(), Quotas(), CONFIG, group_id="g", unlisted=unlisted)


def test_act_20_1_members_of_this_group_only(views: dict[int, IssuerView]) -> None:  # noqa: F811
    fl, s = group_flow(views), crl_store(views)
    got = fl.decide(request(views[SIGN], GOOD), Creds("m-1"), NOW, s, REGISTRY)
    assert isinstance(got, Signing) and got.party.id == "m-1"
    assert got.service is Service.SIGN_REVOCATION_INFO
    for who, der in (
        ("x-1", request(views[SIGN], GOOD)),  # a member of another group
        ("verifier", request(views[SIGN], GOOD)),  # a 署名検証者: the 機構 answers it, not a group
        ("m-1", request(views[AUTH], GOOD)),  # an auth certificate
    ):
        got = fl.decide(der, Creds(who), NOW, s, REGISTRY)
        assert isinstance(got, Refusal) and got.status == ResponseStatus.UNAUTHORIZED, who


@pytest.mark.parametrize("unlisted", [CertStatus.GOOD, CertStatus.UNKNOWN])
def test_a_serial_on_no_crl_is_answered_as_configured(
    views: dict[int, IssuerView],  # noqa: F811
    unlisted: CertStatus,
) -> None:
    """A CRL cannot tell a never-issued serial from a valid one (docs/operations.md)."""
    fl, s = group_flow(views, unlisted), crl_store(views)
    want = ocsp.OCSPCertStatus.GOOD if unlisted is CertStatus.GOOD else ocsp.OCSPCertStatus.UNKNOWN
    for serial in (GOOD, NEVER_LISTED):
        ready = signed(fl.decide(request(views[SIGN], serial), Creds("m-1"), NOW, s, REGISTRY), fl)
        assert cert_status(ready) is want
    ready = signed(fl.decide(request(views[SIGN], REVOKED), Creds("m-1"), NOW, s, REGISTRY), fl)
    assert cert_status(ready) is ocsp.OCSPCertStatus.REVOKED


def test_the_kikou_mode_is_unchanged(views: dict[int, IssuerView]) -> None:  # noqa: F811
    """Without group mode a member is refused and a records-built store says unknown."""
    fl = OcspFlow(views.values(), Quotas(), CONFIG)
    s = store(views)
    got = fl.decide(request(views[SIGN], GOOD), Creds("m-1"), NOW, s, REGISTRY)
    assert isinstance(got, Refusal) and got.status == ResponseStatus.UNAUTHORIZED
    ready = signed(
        fl.decide(request(views[SIGN], NEVER_LISTED), Creds("verifier"), NOW, s, REGISTRY), fl
    )
    assert cert_status(ready) is ocsp.OCSPCertStatus.UNKNOWN


def test_past_the_crls_next_update_members_get_try_later(
    views: dict[int, IssuerView],  # noqa: F811
) -> None:
    """The 機構 unreachable or its CRLs refused: once the last CRL's nextUpdate passes the
    group answers tryLater (rule stale), never an answer from expired data."""
    fl, s = group_flow(views), crl_store(views)
    s.crl_states = {i: sf.CrlState(this_update=NOW - 86400, next_update=NOW - 1) for i in views}
    got = fl.decide(request(views[SIGN], REVOKED), Creds("m-1"), NOW, s, REGISTRY)
    assert isinstance(got, Refusal)
    assert (got.status, got.rule) == (ResponseStatus.TRY_LATER, STALE)
