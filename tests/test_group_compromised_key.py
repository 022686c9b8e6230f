"""A group appliance's store after a compromise of an issuing key (発行者署名符号の漏えい等, Act §14).

From the compromise record on, the compromised key signs nothing: the generation's CRLs are
signed by its successor's key under its name (docs/operations.md, "CA key compromise"), and
``group.json`` carries the successor certificate beside the generation's own, so both
verify its CRLs (`crlbuilder.crl.importer.group_issuers`). Whoever holds the compromised key
can sign a CRL under the generation's name too: once a CRL of the generation signed by the
successor's key has been imported, a later one signed by the generation's own key is a
forgery and is refused, the store unchanged; else a CRL emptied by the forger, numbered
above the last, made every certificate of the generation (those revoked cACompromise
included) ``good``.

Generations of one family may share a CA name (told apart by their keys): the successor's
own CRLs then verify with the compromised generation's successor certificate too. Such a
CRL goes to the generation whose URL it came from, and is refused when none is named,
rather than replacing the first generation's revoked set. A real LMDB store, filled by the
real `CrlImporter`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from crlbuilder.crl.encode import encode_crl
from crlbuilder.crl.importer import CrlImporter, ImportRefused, KnownIssuer, known_issuer
from crlbuilder.keys.signer import PemSigner
from crlbuilder.model import Family, Reason
from crlbuilder.store import format as sf
from crlbuilder.store.lmdbstore import Store
from tests.support.pki import Ca, make_ca
from tests.support.signing import Jpki

NOW = datetime.now(UTC).replace(microsecond=0)
FAMILY = Family.SIGN_CARD
SERIAL = 0x5A17
"""A certificate of the compromised generation: revoked cACompromise on the successor's CRL."""


@pytest.fixture
def jpki() -> Jpki:
    return Jpki.make()


@pytest.fixture
def successor(jpki: Jpki) -> Ca:
    """The generation's name, the successor's key (as ``ca/<id>-successor.pem``)."""
    own = jpki.cas[FAMILY].cert
    cn = own.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str)
    succ = make_ca(cn, organization="jpki-va test")
    assert succ.cert.subject.public_bytes() == own.subject.public_bytes()
    return succ


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", readonly=False)
    try:
        yield s
    finally:
        s.close()


def issuers(j: Jpki, succ: Ca) -> list[KnownIssuer]:
    """What `group_issuers` makes of the generation's entry with its ``successor_cert``."""
    meta = j.metas[FAMILY]
    return [
        known_issuer(meta, meta.cert_der),
        known_issuer(meta, succ.cert.public_bytes(Encoding.DER)),
    ]


def crl(
    ca: Ca, number: int, entries: Iterable[tuple[int, int, int]] = (), *, hours: int = 0,
    delta_base: int | None = None,
) -> bytes:  # fmt: skip
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    return encode_crl(
        issuer=ca.cert, signer=PemSigner(ca.key, ca.cert), number=number,
        this_update=NOW - timedelta(hours=5 - hours), next_update=NOW + timedelta(days=1),
        entries=entries, delta_base=delta_base,
    )  # fmt: skip


def revoked(store: Store, j: Jpki) -> bool:
    with store.read() as r:
        st = r.status(sf.status_key(j.metas[FAMILY].index, SERIAL))
        return st is not None and st.state == sf.STATE_REVOKED


def test_after_a_successor_signed_crl_the_compromised_key_is_refused(
    jpki: Jpki, successor: Ca, store: Store
) -> None:
    own = jpki.cas[FAMILY]
    at = int((NOW - timedelta(hours=3)).timestamp())
    importer = CrlImporter(store, issuers(jpki, successor))
    # before the compromise: the generation's own key signs its CRLs
    importer.import_der(crl(own, 1), as_of=NOW)
    # the compromise: the successor's key signs, every certificate revoked cACompromise
    importer.import_der(crl(successor, 2, [(SERIAL, at, Reason.CA_COMPROMISE)], hours=1), as_of=NOW)
    assert revoked(store, jpki)
    with store.read() as r:
        before = r.crl_state(jpki.metas[FAMILY].index)
    # the forger's CRLs, signed by the compromised key: emptied, or taking the entry off
    forged_full = crl(own, 9, hours=2)
    forged_delta = crl(own, 9, [(SERIAL, at, Reason.REMOVE_FROM_CRL)], hours=2, delta_base=2)
    for forged in (forged_full, forged_delta):
        with pytest.raises(ImportRefused, match="compromised"):
            importer.import_der(forged, as_of=NOW)
        assert revoked(store, jpki)
        with store.read() as r:
            assert r.crl_state(jpki.metas[FAMILY].index) == before
    # a new importer (the next `group pull`, a restart) reads the same latch from the store
    with pytest.raises(ImportRefused, match="compromised"):
        CrlImporter(store, issuers(jpki, successor)).import_der(forged_full, as_of=NOW)
    # the successor's next CRL still imports
    importer.import_der(crl(successor, 3, [(SERIAL, at, Reason.CA_COMPROMISE)], hours=3), as_of=NOW)
    assert revoked(store, jpki)


def test_before_any_successor_signed_crl_the_generations_own_key_is_its_signer(
    jpki: Jpki, successor: Ca, store: Store
) -> None:
    """A successor certificate made in advance (docs/operations.md: "as soon as a successor
    generation exists") changes nothing while the generation's own key signs."""
    own = jpki.cas[FAMILY]
    at = int((NOW - timedelta(hours=3)).timestamp())
    importer = CrlImporter(store, issuers(jpki, successor))
    importer.import_der(crl(own, 1), as_of=NOW)
    importer.import_der(crl(own, 2, [(SERIAL, at, Reason.KEY_COMPROMISE)], hours=1), as_of=NOW)
    importer.import_der(crl(own, 3, [(SERIAL, at, Reason.KEY_COMPROMISE)], hours=2), as_of=NOW)
    importer.import_der(
        crl(own, 4, [(SERIAL + 1, at, Reason.KEY_COMPROMISE)], hours=3, delta_base=3), as_of=NOW
    )
    assert revoked(store, jpki)


@dataclass(frozen=True)
class SameName:
    """Two generations of one family under one CA name (told apart by their keys, as OCSP's
    name hash + key hash do, DOMAIN.md), the first with a successor certificate: its name,
    the second generation's key (made in advance, or after a compromise of the first)."""

    g1: Ca
    g2: Ca
    issuers: list[KnownIssuer]


def meta(n: int, ca: Ca) -> sf.IssuerMeta:
    der = ca.cert.public_bytes(Encoding.DER)
    return sf.IssuerMeta(index=n, id=f"sign-card-g{n}", family=FAMILY, generation=n, cert_der=der)


@pytest.fixture
def same_name() -> SameName:
    g1 = make_ca("JPKI sign-card CA", organization="jpki-va test")
    g2 = make_ca("JPKI sign-card CA", organization="jpki-va test", serial=2)
    metas = [meta(n, ca) for n, ca in ((1, g1), (2, g2))]
    # the successor certificate: g1's name, g2's key (its subjectKeyIdentifier too)
    succ = g2.cert.public_bytes(Encoding.DER)
    return SameName(
        g1, g2,
        [known_issuer(metas[0], metas[0].cert_der), known_issuer(metas[0], succ),
         known_issuer(metas[1], metas[1].cert_der)],
    )  # fmt: skip


def test_a_crl_two_generations_would_verify_goes_where_its_url_says(
    same_name: SameName, store: Store
) -> None:
    """The second generation's CRL verifies with the first one's successor certificate too:
    fetched from the second's URL (``group pull``, ``--issuer``) it is the second's."""
    at = int((NOW - timedelta(hours=3)).timestamp())
    importer = CrlImporter(store, same_name.issuers)
    importer.import_der(crl(same_name.g1, 1, [(SERIAL, at, Reason.KEY_COMPROMISE)]), as_of=NOW)
    g2_crl = crl(same_name.g2, 1, [(SERIAL + 1, at, Reason.KEY_COMPROMISE)])
    got = importer.import_der(g2_crl, as_of=NOW, expect="sign-card-g2")
    assert got.issuer == "sign-card-g2"
    with store.read() as r:
        assert r.status(sf.status_key(1, SERIAL)) is not None  # g1's entry kept
        assert r.status(sf.status_key(2, SERIAL + 1)) is not None


def test_a_crl_two_generations_would_verify_is_refused_without_its_url(
    same_name: SameName, store: Store
) -> None:
    """``import-crl`` of a file, no issuer named: which generation's it is cannot be told, so
    it is refused, rather than taken for the first's (whose revoked serials it would unlist:
    every one of them ``good``)."""
    at = int((NOW - timedelta(hours=3)).timestamp())
    importer = CrlImporter(store, same_name.issuers)
    importer.import_der(crl(same_name.g1, 1, [(SERIAL, at, Reason.KEY_COMPROMISE)]), as_of=NOW)
    g2_crl = crl(same_name.g2, 2, [(SERIAL + 1, at, Reason.KEY_COMPROMISE)], hours=1)
    with pytest.raises(
        ImportRefused,
        match="ambiguous issuer: the CRL verifies as sign-card-g1's and as sign-card-g2's",
    ):
        importer.import_der(g2_crl, as_of=NOW)
    with store.read() as r:
        st = r.status(sf.status_key(1, SERIAL))
        assert st is not None and st.state == sf.STATE_REVOKED
