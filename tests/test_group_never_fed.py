"""A group appliance's store (団体署名検証者, Act §17(5)) holding no CRL of one of its issuers.

The first ``import-crl`` writes the whole issuer table it was given, so an issuer whose CRL
was never imported (its first fetch refused, a new generation added since) sits in the store
with no CRL state. Nothing vouches for its serials: OCSP answers ``tryLater`` (rule
``stale``) and ``/v1/status`` ``unavailable``, never ``good`` (a certificate revoked for
keyCompromise included), until a CRL of it is imported. A real LMDB store, filled by the
real `CrlImporter` as ``crlbuilder import-crl`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.crl.encode import encode_crl
from crlbuilder.crl.importer import CrlImporter, known_issuer
from crlbuilder.keys.signer import PemSigner
from crlbuilder.model import Family, Reason
from crlbuilder.ocsp.request import parse_request
from crlbuilder.ocsp.response import ResponseSigner, ResponseStatus
from crlbuilder.store.lmdbstore import Store
from crlbuilder.store.reader import ReadSource
from responder import storegauges as g
from responder.config import GroupConfig, ResponderConfig
from responder.flow import STALE, OcspFlow, Refusal, Signing
from responder.http import Request
from responder.ocsp import IssuerView, SignJob
from responder.v1.routes import V1Api
from responder.v1.table import MEMBER_ROUTES
from tests.support.signing import Jpki
from tests.test_group_flow import REGISTRY
from tests.test_ocsp_flow import CONFIG, Creds, Quotas, request
from tests.test_v1_status import Ledger, registry
from tests.test_v1_status import Quotas as StatusQuotas

NOW = datetime.now(UTC).replace(microsecond=0)
FED, UNFED = Family.SIGN_MOBILE, Family.SIGN_CARD
"""A group's CRLs: the sign-mobile issuer's imported, the sign-card issuer's never."""
SERIAL = 0x5A17
COMPROMISED = 0x5A18
"""Revoked for keyCompromise: on the sign-card issuer's CRL, once it is imported."""


@pytest.fixture
def jpki() -> Jpki:
    return Jpki.make()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", readonly=False)
    try:
        yield s
    finally:
        s.close()


def import_crl(
    j: Jpki, store: Store, family: Family, entries: Iterable[tuple[int, int, int]] = ()
) -> None:
    """One full CRL of ``family``'s issuer, imported as ``import-crl --pki`` does: the
    importer knows every issuer of the group's setup (both sign families and an auth one)."""
    ca = j.cas[family]
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    der = encode_crl(
        issuer=ca.cert, signer=PemSigner(ca.key, ca.cert), number=1,
        this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=1),
        entries=entries,
    )  # fmt: skip
    issuers = [
        known_issuer(j.metas[f], j.metas[f].cert_der) for f in (FED, UNFED, Family.AUTH_CARD)
    ]
    CrlImporter(store, issuers).import_der(der, as_of=NOW)


def views(j: Jpki) -> dict[Family, IssuerView]:
    out = {}
    for family in (FED, UNFED):
        ca, meta = j.cas[family], j.metas[family]
        assert isinstance(ca.key, rsa.RSAPrivateKey)
        rs = ResponseSigner(PemSigner(ca.key, ca.cert))
        out[family] = IssuerView(meta.index, meta.id, family, rs, ca.cert, rs.certs_suffix)
    return out


def compromised_entry() -> tuple[int, int, int]:
    revoked_at = int((NOW - timedelta(days=2)).timestamp())
    return (COMPROMISED, revoked_at, Reason.KEY_COMPROMISE)


def test_ocsp_answers_try_later_for_an_issuer_no_crl_of_which_was_imported(
    jpki: Jpki, store: Store
) -> None:
    import_crl(jpki, store, FED)
    with store.read() as r:
        assert r.crl_import()
        assert r.crl_state(jpki.metas[UNFED].index).this_update == 0
    v = views(jpki)
    fl = OcspFlow(v.values(), Quotas(), CONFIG, group_id="g")
    now = int(NOW.timestamp())
    for serial in (SERIAL, COMPROMISED):
        got = fl.decide(request(v[UNFED], serial), Creds("m-1"), now, store, REGISTRY)
        assert isinstance(got, Refusal), got
        assert (got.status, got.rule) == (ResponseStatus.TRY_LATER, STALE)
    # the fed issuer answers as before: a serial on no CRL is good
    got = fl.decide(request(v[FED], SERIAL), Creds("m-1"), now, store, REGISTRY)
    assert isinstance(got, Signing) and got.job.statuses == ("good",)
    # once its CRL is imported, the issuer answers again: the compromised serial revoked
    import_crl(jpki, store, UNFED, [compromised_entry()])
    for serial, want in ((SERIAL, "good"), (COMPROMISED, "revoked")):
        got = fl.decide(request(v[UNFED], serial), Creds("m-1"), now, store, REGISTRY)
        assert isinstance(got, Signing) and got.job.statuses == (want,), got


def status_call(store: Store, now: float, *refs: dict[str, str]) -> Any:
    api = V1Api(
        MEMBER_ROUTES, ResponderConfig(group=GroupConfig(unlisted="good")), store=store,
        quota=StatusQuotas(), ledger=Ledger(), calls=Ledger(), signer=None, group_id="g",
    )  # fmt: skip
    headers = {b"content-type": b"application/json", b"authorization": b"Bearer m-1"}
    raw = msgspec.json.encode({"entries": list(refs)})
    req = Request(b"POST", b"/v1/status", headers, raw, ("127.0.0.1", 1), None, b"1.1", True, 1)
    resp = api.handle(req, registry(), now)
    got = msgspec.json.decode(bytes(resp.body))
    assert resp.status == 200, got
    return got


def test_v1_status_is_unavailable_for_an_issuer_no_crl_of_which_was_imported(
    jpki: Jpki, store: Store
) -> None:
    import_crl(jpki, store, FED)
    unfed, fed = jpki.metas[UNFED].id, jpki.metas[FED].id
    now = NOW.timestamp()
    refs = (
        {"issuer": unfed, "serial": f"{SERIAL:x}"},
        {"issuer": unfed, "serial": f"{COMPROMISED:x}"},
        {"issuer": fed, "serial": f"{SERIAL:x}"},
    )
    got = status_call(store, now, *refs)
    assert [e["status"] for e in got["entries"]] == ["unavailable", "unavailable", "good"]
    assert got["entries"][0]["refusal"]["rule"] == "stale"
    import_crl(jpki, store, UNFED, [compromised_entry()])
    got = status_call(store, now, *refs)
    assert [e["status"] for e in got["entries"]] == ["good", "revoked", "good"]


def test_the_kikou_store_is_unchanged_an_issuer_with_no_crl_state_answers(jpki: Jpki) -> None:
    """The 機構's own store (records mode) answers from its issuance records: an issuer of
    which no CRL state is stored yet is not thereby stale."""
    reader = jpki.reader
    assert not reader.crl_import() and not reader.crl_states
    v = views(jpki)
    fl = OcspFlow(v.values(), Quotas(), CONFIG)
    req = parse_request(
        request(v[UNFED], SERIAL), max_certids=CONFIG.max_certids, max_nonce=CONFIG.max_nonce
    )
    got = fl.lookup(req, v[UNFED], int(NOW.timestamp()), reader)
    assert isinstance(got, SignJob) and got.statuses == ("unknown",), got


def stale_gauge(source: ReadSource, j: Jpki, families: Iterable[Family]) -> dict[Family, float]:
    refs = [g.IssuerRef(j.metas[f].index, j.metas[f].id, f) for f in families]
    collector = g.StoreCollector(source, refs, clock=NOW.timestamp, max_age=0)
    (metric,) = (m for m in collector.collect() if m.name == "jpkiva_stale_issuer")
    by_id = {s.labels["issuer"]: s.value for s in metric.samples}
    return {f: by_id[j.metas[f].id] for f in families}


def test_the_stale_gauge_is_1_for_a_signature_issuer_never_fed_never_for_an_auth_one(
    jpki: Jpki, store: Store
) -> None:
    """A group receives the signature families' CRL files only (Act §18(2), §20(1)): a
    signature issuer with no CRL imported is stale (its answers are tryLater); an auth
    issuer, listed in the same setup, is never fed and never alarms."""
    families = (FED, UNFED, Family.AUTH_CARD)
    import_crl(jpki, store, FED)
    assert stale_gauge(store, jpki, families) == {FED: 0, UNFED: 1, Family.AUTH_CARD: 0}
    import_crl(jpki, store, UNFED)
    assert stale_gauge(store, jpki, families) == {FED: 0, UNFED: 0, Family.AUTH_CARD: 0}
    # the 機構's own store: an issuer with no CRL state yet is not stale
    assert not jpki.reader.crl_import()
    assert stale_gauge(jpki.reader, jpki, families) == dict.fromkeys(families, 0)
