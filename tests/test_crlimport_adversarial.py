"""Crafted CRLs against `crlbuilder import-crl` (団体署名検証者, Act §18(2), §20(1)).

Each CRL here is signed with the test PKI's real CA key, so it passes the signature check:
what is attacked is what the importer makes of a validly signed but ill-formed or
out-of-scope CRL. A refused CRL must leave the store exactly as it was, and no serial
the 機構 listed may come out unlisted (answered ``good`` by the responder).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from cryptography import x509

from crlbuilder.crl import importer as crlimport
from crlbuilder.demo.pki import init_pki
from crlbuilder.der import der_header, der_length
from crlbuilder.manifest import Manifest
from tests.support.store import dump_store
from tests.test_crlimport import (
    BASE,
    G1,
    NOW,
    T,
    at,
    index,
    make_crl,
    refused,
    revoked,
    run,
    signer,
    write,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture
def imported(tmp_path: Path, pki: Manifest) -> Path:
    """A store holding full CRL 10 of sign-card-g1 (test_crlimport's BASE entries)."""
    store = tmp_path / "store"
    r = run(store, pki, write(tmp_path, "full10.crl", make_crl(pki, G1, 10, BASE)))
    assert r.rc == 0, r.err
    return store


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + der_length(len(content)) + content


def _utc(t: datetime) -> bytes:
    return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())


def _ext(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    return _tlv(
        0x30,
        core.ObjectIdentifier(oid).dump()
        + (b"\x01\x01\xff" if critical else b"")
        + _tlv(0x04, value),
    )


def _serial(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def reason_ext(code: int) -> bytes:
    return _ext("2.5.29.21", _tlv(0x0A, bytes((code,))))


def invalidity_ext(when: datetime, *, critical: bool = False) -> bytes:
    """An invalidityDate entry extension (RFC 5280 §5.3.2: GeneralizedTime, non-critical)."""
    return _ext("2.5.29.24", _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode()), critical=critical)


def critical_reason_ext(code: int) -> bytes:
    """A reasonCode marked critical (RFC 5280 §5.3.1 makes it non-critical)."""
    return _ext("2.5.29.21", _tlv(0x0A, bytes((code,))), critical=True)


def entry(serial: int, when: int, *exts: bytes) -> bytes:
    t = datetime.fromtimestamp(when, tz=T.tzinfo)
    return _tlv(0x30, _serial(serial) + _utc(t) + (_tlv(0x30, b"".join(exts)) if exts else b""))


def raw_crl(
    pki: Manifest,
    issuer: str,
    number: int,
    entries: list[bytes],
    *,
    delta_base: int | None = None,
    this_update: datetime = T,
    next_update: datetime | None = None,
    idp_url: str | None = None,
) -> bytes:
    """A CRL written byte by byte (entries as given, DER each) and signed by ``issuer``'s key."""
    s = signer(pki, issuer)
    ca = s.certificate
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    exts = [
        _ext(
            "2.5.29.35",
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski).public_bytes(),
        ),
        _ext("2.5.29.20", x509.CRLNumber(number).public_bytes()),
    ]
    if delta_base is not None:
        exts.append(
            _ext("2.5.29.27", x509.DeltaCRLIndicator(delta_base).public_bytes(), critical=True)
        )
    if idp_url is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(idp_url)], relative_name=None,
            only_contains_user_certs=False, only_contains_ca_certs=False,
            only_some_reasons=None, indirect_crl=False, only_contains_attribute_certs=False,
        )  # fmt: skip
        exts.append(_ext("2.5.29.28", idp.public_bytes(), critical=True))
    tbs = _tlv(
        0x30,
        b"\x02\x01\x01"
        + s.signature_algorithm_der
        + ca.subject.public_bytes()
        + _utc(this_update)
        + _utc(next_update or this_update + timedelta(days=1))
        + (_tlv(0x30, b"".join(entries)) if entries else b"")
        + _tlv(0xA0, _tlv(0x30, b"".join(exts))),
    )
    sig = s.sign(tbs)
    return _tlv(0x30, tbs + s.signature_algorithm_der + _tlv(0x03, b"\x00" + sig))


def test_the_raw_builder_makes_an_importable_crl(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """The builder itself is sound: a well-formed CRL of it imports (so refusals below are
    the importer's doing, not the builder's), a non-critical invalidityDate with it."""
    der = raw_crl(
        pki, G1, 11,
        [entry(101, at(30), reason_ext(1), invalidity_ext(T)), entry(900, at(1))],
    )  # fmt: skip
    r = run(imported, pki, write(tmp_path, "ok.crl", der))
    assert r.rc == 0, r.err
    assert sorted(revoked(imported, index(pki, G1))) == [101, 900]


def test_a_delta_listing_one_serial_twice_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """101 is revoked (keyCompromise) in the base. A delta listing it once revoked and once
    removeFromCRL was applied entry by entry, the last one winning: 101 unlisted, ``good``."""
    before = dump_store(imported)
    der = raw_crl(
        pki, G1, 11,
        [entry(101, at(30), reason_ext(1)), entry(101, at(30), reason_ext(8))],
        delta_base=10,
    )  # fmt: skip
    refused(run(imported, pki, write(tmp_path, "dup.crl", der)), "twice")
    assert dump_store(imported) == before
    assert 101 in revoked(imported, index(pki, G1))


def test_next_update_before_this_update_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """thisUpdate within the clock skew ahead, nextUpdate before it yet after now: neither
    in the future beyond the skew nor expired, so it was taken."""
    before = dump_store(imported)
    der = raw_crl(
        pki, G1, 11, [entry(900, at(1), reason_ext(1))],
        this_update=NOW + timedelta(minutes=4), next_update=NOW + timedelta(minutes=2),
    )  # fmt: skip
    refused(run(imported, pki, write(tmp_path, "inverted.crl", der)), "nextUpdate", "thisUpdate")
    assert dump_store(imported) == before
    # under --force too: the CRL is malformed, not merely expired
    old = raw_crl(
        pki, G1, 11, [entry(900, at(1), reason_ext(1))],
        this_update=NOW - timedelta(hours=1), next_update=NOW - timedelta(hours=2),
    )  # fmt: skip
    refused(run(imported, pki, write(tmp_path, "old.crl", old), extra=["--force"]), "thisUpdate")
    assert dump_store(imported) == before


def test_an_entry_with_two_reason_codes_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """Two reasonCode extensions in one entry (RFC 5280 §5.3: one instance each): which
    one is meant cannot be told; the last one used to win silently."""
    before = dump_store(imported)
    der = raw_crl(pki, G1, 11, [entry(101, at(30), reason_ext(1), reason_ext(6))])
    refused(run(imported, pki, write(tmp_path, "two.crl", der)), "bad CRL entry", "twice")
    assert dump_store(imported) == before


PART2 = "http://kikou.example/crl/sign-card-g1-part2.crl"


def test_a_partition_put_at_the_full_crls_place_is_refused(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """Full CRL 10 covers every certificate of the issuer. CRL 11 names a distribution
    point (RFC 5280 §5.2.5: it lists only the certificates naming that point): taken for
    the whole, it unlisted 101, 205, 307 and 4096, every one then answered ``good``."""
    before = dump_store(imported)
    der = raw_crl(pki, G1, 11, [entry(900, at(1), reason_ext(1))], idp_url=PART2)
    refused(run(imported, pki, write(tmp_path, "part2.crl", der)), "scope", "§5.2.5")
    assert dump_store(imported) == before
    assert sorted(revoked(imported, index(pki, G1))) == [101, 205, 307, 4096]


def test_a_delta_of_another_scope_is_refused(imported: Path, tmp_path: Path, pki: Manifest) -> None:
    before = dump_store(imported)
    der = raw_crl(pki, G1, 11, [entry(101, at(30), reason_ext(8))], delta_base=10, idp_url=PART2)
    refused(run(imported, pki, write(tmp_path, "d11.crl", der)), "scope", "§5.2.4")
    assert dump_store(imported) == before


def test_crls_of_one_scope_follow_each_other_and_a_wider_one_is_taken(
    tmp_path: Path, pki: Manifest
) -> None:
    """A store whose first CRL names a distribution point (the operator's choice of URL):
    its deltas and later full CRLs of that scope are taken, one without the
    issuingDistributionPoint too (it covers every certificate); then a delta of that
    wider scope, and no longer one of the partition's."""
    store = tmp_path / "store"
    one = [entry(101, at(30), reason_ext(1))]
    for name, der in [
        ("f10.crl", raw_crl(pki, G1, 10, one, idp_url=PART2)),
        ("d11.crl", raw_crl(pki, G1, 11, [entry(5, at(1))], delta_base=10, idp_url=PART2)),
        ("f12.crl", raw_crl(pki, G1, 12, [*one, entry(5, at(1))], idp_url=PART2)),
        ("f13.crl", raw_crl(pki, G1, 13, [*one, entry(5, at(1)), entry(7, at(1))])),
        ("d14.crl", raw_crl(pki, G1, 14, [entry(9, at(1))], delta_base=13)),
    ]:
        r = run(store, pki, write(tmp_path, name, der))
        assert r.rc == 0, (name, r.err)
    assert sorted(revoked(store, index(pki, G1))) == [5, 7, 9, 101]
    d = raw_crl(pki, G1, 15, [entry(11, at(1))], delta_base=13, idp_url=PART2)
    refused(run(store, pki, write(tmp_path, "d15.crl", d)), "scope")


def _ber_long_length(der: bytes) -> bytes:
    """The CRL with its outer length in a non-minimal long form (BER, not DER)."""
    _, start, _ = der_header(der, 0, len(der))
    return b"\x30\x84" + (len(der) - start).to_bytes(4, "big") + der[start:]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(0, at(1), reason_ext(1))]),
            ("serial 0",),
            id="serial-0",
        ),
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(-5, at(1), reason_ext(1))]),
            ("serial -5",),
            id="serial-negative",
        ),
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(1 << 160, at(1), reason_ext(1))]),
            ("20 octets",),
            id="serial-21-octets",
        ),
        pytest.param(
            lambda pki: raw_crl(
                pki, G1, 11, [entry(1 << 160, at(1), reason_ext(1))], delta_base=10
            ),
            ("20 octets",),
            id="delta-serial-21-octets",
        ),
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(-5, at(1))], delta_base=10),
            ("serial -5",),
            id="delta-serial-negative",
        ),
        pytest.param(
            lambda pki: raw_crl(
                pki, G1, 11, [entry(900, at(1), _ext("1.2.3.4", b"\x05\x00", critical=True))]
            ),
            ("critical CRL entry extension 1.2.3.4",),
            id="unknown-critical-entry-extension",
        ),
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(900, at(1), critical_reason_ext(1))]),
            ("bad CRL entry", "reasonCode (2.5.29.21) is marked critical"),
            id="critical-reason-code",
        ),
        pytest.param(
            lambda pki: raw_crl(
                pki,
                G1,
                11,
                [entry(900, at(1), reason_ext(1), invalidity_ext(T, critical=True))],
                delta_base=10,
            ),
            ("bad CRL entry", "invalidityDate (2.5.29.24) is marked critical"),
            id="delta-critical-invalidity-date",
        ),
        pytest.param(
            lambda pki: raw_crl(
                pki, G1, 11, [entry(900, at(1), reason_ext(1)), entry(900, at(1), reason_ext(6))]
            ),
            ("twice",),
            id="full-serial-twice",
        ),
        pytest.param(
            lambda pki: raw_crl(pki, G1, 11, [entry(900, at(1), reason_ext(8))]),
            ("removeFromCRL",),
            id="full-remove-from-crl",
        ),
        pytest.param(
            lambda pki: _ber_long_length(raw_crl(pki, G1, 11, [entry(900, at(1))])),
            ("not a usable CRL",),
            id="ber-length",
        ),
    ],
)
def test_crafted_crls_signed_by_the_real_key_are_refused(
    imported: Path, tmp_path: Path, pki: Manifest, make: Any, words: tuple[str, ...]
) -> None:
    """Validly signed, so only the importer's own checks stand between them and the store;
    each refused with a line saying why, the store unchanged (101's keyCompromise kept)."""
    before = dump_store(imported)
    refused(run(imported, pki, write(tmp_path, "crafted.crl", make(pki))), *words)
    assert dump_store(imported) == before


def test_hold_is_revoked_and_a_later_release_unlists(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """certificateHold (6) is stored as revoked with its reason (the responder answers
    revoked, reason certificateHold); a later delta's removeFromCRL releases it (RFC 5280
    §5.3.1), and a full CRL without it unlists it."""
    idx = index(pki, G1)
    d11 = raw_crl(pki, G1, 11, [entry(900, at(1), reason_ext(6))], delta_base=10)
    assert run(imported, pki, write(tmp_path, "d11.crl", d11)).rc == 0
    assert revoked(imported, idx)[900] == (at(1), 6)
    d12 = raw_crl(pki, G1, 12, [entry(900, at(1), reason_ext(8))], delta_base=10)
    assert run(imported, pki, write(tmp_path, "d12.crl", d12)).rc == 0
    assert 900 not in revoked(imported, idx)
    assert 101 in revoked(imported, idx)


def test_a_delta_based_on_itself_or_later_is_malformed_not_ahead(
    imported: Path, tmp_path: Path, pki: Manifest
) -> None:
    """A delta CRL's number is above its BaseCRLNumber (RFC 5280 §5.2.4). One based on a
    number at or past its own was taken for a delta "based on a newer full CRL"
    (`BaseAhead`): `group pull` then downloaded the full CRL again, without its ETag, at
    every pass (each download counted against the group), to refuse the delta again."""
    store = crlimport.Store.open(imported, readonly=False)
    try:
        importer = crlimport.CrlImporter(store, pki)
        for number, base in [(11, 12), (11, 11)]:
            der = raw_crl(pki, G1, number, [entry(900, at(1))], delta_base=base)
            with pytest.raises(crlimport.ImportRefused, match="its own number") as e:
                importer.import_der(der, as_of=NOW)
            assert not isinstance(e.value, crlimport.BaseAhead)
    finally:
        store.close()
