"""POST /v1/verify on a group appliance's store (団体署名検証者, Act §17(5)), imported from CRLs.

The store is a real LMDB store written by `crlbuilder.crl.importer` from CRLs the tests'
issuer signs, as ``crlbuilder import-crl`` and ``group pull`` write it. A CRL says nothing
of a certificate past its notAfter (RFC 5280 §3.3: its entry may be removed once it has
appeared on one CRL issued after the validity period; the 機構's CRLs drop it when the
record's retention has passed, Ord §70(1)(iii), `crlbuilder.crl.publish`), so a serial on no
CRL is ``good`` only while the latest CRL was issued within the certificate's validity.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from crlbuilder.apply import past_retention
from crlbuilder.crl.encode import encode_crl
from crlbuilder.crl.importer import CrlImporter, known_issuer
from crlbuilder.keys.signer import PemSigner
from crlbuilder.model import Family, Reason
from crlbuilder.store.lmdbstore import Store
from responder.validation.path import anchors
from responder.validation.request import CmsItem
from responder.validation.result import ItemResult, ResultCode
from responder.validation.status import Status
from responder.validation.verdict import verify_item
from tests.support.signing import Jpki, cms_signed

NOW = datetime.now(UTC).replace(microsecond=0)
SERIAL = 0x5A17
FAMILY = Family.SIGN_CARD
DOC = "申請書".encode()


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
    j: Jpki, store: Store, number: int, this_update: datetime,
    entries: Iterable[tuple[int, int, int]] = (), *, delta_base: int | None = None,
) -> None:  # fmt: skip
    """One CRL of the sign-card issuer (full, or delta on ``delta_base``), imported as
    ``import-crl`` does."""
    ca = j.cas[FAMILY]
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    der = encode_crl(
        issuer=ca.cert, signer=PemSigner(ca.key, ca.cert), number=number,
        this_update=this_update, next_update=NOW + timedelta(days=1), entries=entries,
        delta_base=delta_base,
    )  # fmt: skip
    meta = j.metas[FAMILY]
    CrlImporter(store, [known_issuer(meta, meta.cert_der)]).import_der(der, as_of=NOW)


def verify(j: Jpki, store: Store, cert: x509.Certificate, signed_at: datetime) -> ItemResult:
    blob = cms_signed(DOC, cert, signing_time=signed_at)
    with store.read() as r:
        assert r.crl_import()
        return verify_item(0, CmsItem(cms=blob), anchors(r.issuers()), r, NOW)


def test_an_expired_key_compromised_certificate_dropped_from_the_crl_is_not_ok(
    jpki: Jpki, store: Store
) -> None:
    """The reader's repro: revoked for keyCompromise, expired, then taken off the CRL; a
    signature made today with the leaked key and a signingTime backdated into the validity
    period. While the CRL lists it: ``revoked``. Once a CRL issued after its notAfter no
    longer lists it, the store cannot say it has not lost effect: never ``ok``."""
    not_before = NOW - timedelta(days=60)
    cert = jpki.issue(FAMILY, SERIAL, not_before=not_before, days=30, record=False)
    revoked_at = int((not_before + timedelta(days=10)).timestamp())
    import_crl(
        jpki, store, 1, not_before + timedelta(days=11),
        [(SERIAL, revoked_at, int(Reason.KEY_COMPROMISE))],
    )  # fmt: skip
    backdated = NOW - timedelta(days=45)
    listed = verify(jpki, store, cert, backdated)
    assert listed.result is ResultCode.REVOKED, listed

    import_crl(jpki, store, 2, NOW - timedelta(hours=1))  # after notAfter, entry dropped
    r = verify(jpki, store, cert, backdated)
    assert r.result is ResultCode.UNKNOWN_CERTIFICATE, r
    assert r.status_now is not None and r.status_at_signing is not None
    assert r.status_now.status is Status.UNKNOWN and r.status_at_signing.status is Status.UNKNOWN
    assert "past its validity period" in r.detail


def test_a_delta_crl_removing_an_expired_entry_leaves_it_unknown(jpki: Jpki, store: Store) -> None:
    """With delta CRLs the 機構 takes the erased entry off by removeFromCRL (8) in a delta
    issued after the notAfter: the same silence."""
    not_before = NOW - timedelta(days=60)
    cert = jpki.issue(FAMILY, SERIAL, not_before=not_before, days=30, record=False)
    revoked_at = int((not_before + timedelta(days=10)).timestamp())
    import_crl(
        jpki, store, 1, not_before + timedelta(days=11),
        [(SERIAL, revoked_at, int(Reason.KEY_COMPROMISE))],
    )  # fmt: skip
    import_crl(
        jpki, store, 2, NOW - timedelta(hours=1),
        [(SERIAL, revoked_at, int(Reason.REMOVE_FROM_CRL))], delta_base=1,
    )  # fmt: skip
    r = verify(jpki, store, cert, NOW - timedelta(days=45))
    assert r.result is ResultCode.UNKNOWN_CERTIFICATE, r


def test_an_unlisted_certificate_expired_since_the_latest_crl_stays_good(
    jpki: Jpki, store: Store
) -> None:
    """A CRL issued while the certificate was valid lists it if it was revoked (RFC 5280
    §3.3: the entry stays until a CRL issued after its notAfter): a signature made within the
    validity period and checked after it has expired is ``expired-after-signing`` (it has
    lost effect since, Act §15(1)(5)), as on the 機構's store, not ``unknown-certificate``."""
    cert = jpki.issue(FAMILY, SERIAL, not_before=NOW - timedelta(days=30), days=29.9, record=False)
    import_crl(jpki, store, 1, NOW - timedelta(days=1))  # before notAfter (now - 2.4 h)
    r = verify(jpki, store, cert, NOW - timedelta(days=2))
    assert r.result is ResultCode.EXPIRED_AFTER_SIGNING, r
    assert "expired since" in r.validity.detail if r.validity else False


def test_an_unlisted_certificate_within_its_validity_is_good(jpki: Jpki, store: Store) -> None:
    cert = jpki.issue(FAMILY, SERIAL, record=False)
    import_crl(jpki, store, 1, NOW - timedelta(hours=1))
    r = verify(jpki, store, cert, NOW - timedelta(days=1))
    assert r.result is ResultCode.OK, r


def test_a_crl_issued_exactly_at_the_notafter_may_have_dropped_the_entry(
    jpki: Jpki, store: Store
) -> None:
    """The 機構 drops an expired entry once ``due_instant <= now`` (`apply.past_retention`),
    so a CRL whose thisUpdate is the certificate's notAfter may already lack it: the forgery
    is not ``ok`` there. One second earlier the certificate was still valid (notAfter is
    inclusive, RFC 5280 §4.1.2.5) and such a CRL lists it if it was revoked: a genuine
    signature is ``expired-after-signing`` (it has lost effect since by its expiry, Act
    §15(1)(5)), not ``unknown-certificate``."""
    not_before = NOW - timedelta(days=60)
    cert = jpki.issue(FAMILY, SERIAL, not_before=not_before, days=30, record=False)
    not_after = int(cert.not_valid_after_utc.timestamp())
    revoked_at = int((not_before + timedelta(days=10)).timestamp())
    assert past_retention(revoked_at, not_after, not_after, 1)  # dropped at that very second
    assert not past_retention(revoked_at, not_after, not_after - 1, 1)
    import_crl(jpki, store, 1, cert.not_valid_after_utc - timedelta(seconds=1))
    genuine = verify(jpki, store, cert, NOW - timedelta(days=45))
    assert genuine.result is ResultCode.EXPIRED_AFTER_SIGNING, genuine
    import_crl(jpki, store, 2, cert.not_valid_after_utc)
    forged = verify(jpki, store, cert, NOW - timedelta(days=45))
    assert forged.result is ResultCode.UNKNOWN_CERTIFICATE, forged


def test_an_issuer_never_fed_a_crl_vouches_for_nothing(jpki: Jpki, store: Store) -> None:
    """A group store that imported another issuer's CRLs but none of this issuer's (``import-crl
    --group`` of one file records every issuer of ``group.json``; a first pull refused, a
    generation added later): no CRL says anything of its certificates, revoked for
    keyCompromise or not, expired or not. Never ``ok``: the status is unavailable, as for
    data past its nextUpdate, until a CRL of the issuer is imported."""
    other = Family.SIGN_MOBILE
    ca = jpki.cas[other]
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    der = encode_crl(
        issuer=ca.cert, signer=PemSigner(ca.key, ca.cert), number=1,
        this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=1), entries=(),
    )  # fmt: skip
    issuers = [known_issuer(jpki.metas[f], jpki.metas[f].cert_der) for f in (FAMILY, other)]
    CrlImporter(store, issuers).import_der(der, as_of=NOW)
    with store.read() as r:
        assert r.crl_state(jpki.metas[FAMILY].index).this_update == 0
        assert jpki.metas[FAMILY].index in {i.index for i in r.issuers()}
    valid = jpki.issue(FAMILY, SERIAL, record=False)
    expired = jpki.issue(
        FAMILY, SERIAL + 1, not_before=NOW - timedelta(days=60), days=30, record=False
    )  # fmt: skip
    for cert, signed_at in ((valid, NOW - timedelta(days=1)), (expired, NOW - timedelta(days=45))):
        r = verify(jpki, store, cert, signed_at)
        assert r.result is ResultCode.STATUS_UNAVAILABLE, r
        assert r.status_now is not None and r.status_now.status is Status.UNAVAILABLE
        assert "no CRL of the issuer" in r.status_now.detail
    import_crl(jpki, store, 1, NOW - timedelta(hours=1))
    assert verify(jpki, store, valid, NOW - timedelta(days=1)).result is ResultCode.OK
