"""Tests of crlbuilder.crl.encode: the hand-written CRL DER against cryptography's builder and openssl."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crlbuilder.crl.encode import MAX_SERIAL, encode_crl, encode_tbs_certlist, write_crl_file
from crlbuilder.keys.signer import SHA256_WITH_RSA_DER, PemSigner
from crlbuilder.rules import JST
from tests.support.pki import REASON_FLAGS, certificate, make_ca, rsa_key

FULL_REASONS = [0, 1, 2, 3, 4, 5, 6, 9, 10]
THIS_UPDATE = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
NEXT_UPDATE = THIS_UPDATE + timedelta(days=1)


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


class Ca(NamedTuple):
    """A fresh RSA-2048 CA for these tests (not the demo PKI) and its signer."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    signer: PemSigner


@pytest.fixture(scope="module")
def ca() -> Ca:
    key = rsa_key()
    cert = make_ca("jpki-va CRL Test CA", key, organization="jpki-va test", serial=0x1234).cert
    return Ca(key, cert, PemSigner(key, cert))


def reference_crl(
    ca: Ca,
    *,
    number: int,
    entries: list[tuple[int, int, int]],
    this_update: datetime = THIS_UPDATE,
    next_update: datetime = NEXT_UPDATE,
    delta_base: int | None = None,
    freshest_crl_url: str | None = None,
    idp_url: str | None = None,
) -> x509.CertificateRevocationList:
    """The same CRL built by cryptography's (slow) builder, extensions in our order."""
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial, at, reason in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.fromtimestamp(at, UTC))
        )
        if reason:
            revoked = revoked.add_extension(x509.CRLReason(REASON_FLAGS[reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    ).add_extension(x509.CRLNumber(number), critical=False)
    if delta_base is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_base), critical=True)
    if idp_url is not None:
        builder = builder.add_extension(
            x509.IssuingDistributionPoint(
                full_name=[x509.UniformResourceIdentifier(idp_url)],
                relative_name=None,
                only_contains_user_certs=False,
                only_contains_ca_certs=False,
                only_some_reasons=None,
                indirect_crl=False,
                only_contains_attribute_certs=False,
            ),
            critical=True,
        )
    if freshest_crl_url is not None:
        builder = builder.add_extension(
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(freshest_crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(ca.key, hashes.SHA256())


BIG_SERIALS = [
    1,
    127,
    128,
    255,
    256,
    32767,
    32768,
    2**63 - 1,
    2**63,
    2**64,
    2**120 + 7,
    2**152,
    2**158 + 12345,
    MAX_SERIAL,
]
BOUNDARY_TIMES = [
    epoch(datetime(1950, 1, 1, tzinfo=UTC)),
    0,
    epoch(datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    epoch(datetime(2050, 1, 1, tzinfo=UTC)),
    epoch(datetime(2050, 1, 1, 0, 0, 1, tzinfo=UTC)),
    epoch(datetime(2099, 12, 31, 12, 0, tzinfo=UTC)),
    epoch(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
]


def mixed_entries(count: int, *, reasons: list[int] = FULL_REASONS) -> list[tuple[int, int, int]]:
    """``count`` entries with every reason, boundary times and serials of every size."""
    generated = {1000 + 7919 * i for i in range(max(0, count - len(BIG_SERIALS)))}
    serials = sorted(set(BIG_SERIALS) | generated)[:count]
    base = epoch(datetime(2024, 6, 1, tzinfo=UTC))
    times = [*BOUNDARY_TIMES, *(base + 3607 * i for i in range(count))]
    return [
        (serial, times[i % len(times)], reasons[i % len(reasons)])
        for i, serial in enumerate(serials)
    ]


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------
# Byte-identical output
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 300])
def test_full_crl_is_byte_identical_to_cryptography(ca: Ca, count: int) -> None:
    entries = mixed_entries(count)
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=42,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=entries,
    )
    reference = reference_crl(ca, number=42, entries=entries)
    tbs = encode_tbs_certlist(
        issuer=ca.cert,
        signature_algorithm_der=SHA256_WITH_RSA_DER,
        number=42,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=iter(entries),
    )
    assert tbs == reference.tbs_certlist_bytes
    assert x509.load_der_x509_crl(ours).tbs_certlist_bytes == reference.tbs_certlist_bytes
    # PKCS#1 v1.5 signatures are deterministic, so the whole file matches too.
    assert ours == der(reference)


def test_every_reason_serial_size_and_time_boundary_is_covered() -> None:
    entries = mixed_entries(300)
    assert {reason for _, _, reason in entries} == set(FULL_REASONS)
    assert {serial for serial, _, _ in entries} >= set(BIG_SERIALS)
    assert {at for _, at, _ in entries} >= set(BOUNDARY_TIMES)


def test_full_crl_with_freshest_and_idp_is_byte_identical(ca: Ca) -> None:
    entries = mixed_entries(40)
    kwargs: dict[str, str] = {
        "freshest_crl_url": "http://crl.example.jp/sign-card-g1/delta.crl",
        "idp_url": "http://crl.example.jp/sign-card-g1/full.crl",
    }
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=2**100,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=entries,
        **kwargs,  # type: ignore[arg-type]
    )
    assert ours == der(reference_crl(ca, number=2**100, entries=entries, **kwargs))  # type: ignore[arg-type]


def test_delta_crl_with_remove_from_crl_is_byte_identical(ca: Ca) -> None:
    entries = mixed_entries(50, reasons=[*FULL_REASONS, 8])
    assert any(reason == 8 for _, _, reason in entries)
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=43,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=entries,
        delta_base=40,
        idp_url="http://crl.example.jp/sign-card-g1/delta.crl",
    )
    reference = reference_crl(
        ca,
        number=43,
        entries=entries,
        delta_base=40,
        idp_url="http://crl.example.jp/sign-card-g1/delta.crl",
    )
    assert ours == der(reference)
    loaded = x509.load_der_x509_crl(ours)
    indicator = loaded.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical
    assert indicator.value.crl_number == 40


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [
        (datetime(2049, 12, 31, 12, tzinfo=UTC), datetime(2050, 1, 1, 12, tzinfo=UTC)),
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2050, 1, 1, tzinfo=UTC)),
        (datetime(2050, 6, 1, tzinfo=UTC), datetime(2050, 6, 8, tzinfo=UTC)),
        # Non-UTC offsets (JST, whatever the machine's zone) are converted; microseconds
        # are dropped, as cryptography does.
        (
            datetime(2026, 4, 1, 18, 30, 15, 999999, tzinfo=UTC).astimezone(JST),
            datetime(2026, 4, 2, 18, 30, 15, 1, tzinfo=UTC),
        ),
    ],
)
def test_update_times_around_2050(ca: Ca, this_update: datetime, next_update: datetime) -> None:
    entries = [(5, epoch(this_update) - 10, 1)]
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=1,
        this_update=this_update,
        next_update=next_update,
        entries=entries,
    )
    reference = reference_crl(
        ca, number=1, entries=entries, this_update=this_update, next_update=next_update
    )
    assert ours == der(reference)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entries=st.dictionaries(
        st.integers(1, MAX_SERIAL),
        st.tuples(
            st.integers(
                epoch(datetime(1950, 1, 1, tzinfo=UTC)), epoch(datetime(9999, 12, 31, tzinfo=UTC))
            ),
            st.sampled_from(FULL_REASONS),
        ),
        max_size=25,
    ),
    number=st.integers(0, MAX_SERIAL),
)
def test_random_crls_are_byte_identical(
    ca: Ca, entries: dict[int, tuple[int, int]], number: int
) -> None:
    rows = [(serial, at, reason) for serial, (at, reason) in sorted(entries.items())]
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=number,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=rows,
    )
    assert ours == der(reference_crl(ca, number=number, entries=rows))


# ---------------------------------------------------------------------------
# What other implementations read
# ---------------------------------------------------------------------------


def test_cryptography_reads_back_serials_reasons_and_dates(ca: Ca) -> None:
    entries = mixed_entries(300)

    def stream() -> Iterator[tuple[int, int, int]]:
        yield from entries

    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=7,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=stream(),
    )
    crl = x509.load_der_x509_crl(ours)
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.cert.subject
    assert crl.last_update_utc == THIS_UPDATE
    assert crl.next_update_utc == NEXT_UPDATE
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    listed = []
    for revoked in crl:
        try:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
            code = next(k for k, v in REASON_FLAGS.items() if v == reason)
        except x509.ExtensionNotFound:
            code = 0
        listed.append((revoked.serial_number, int(revoked.revocation_date_utc.timestamp()), code))
    assert listed == entries


openssl = shutil.which("openssl")


@pytest.mark.interop
@pytest.mark.skipif(openssl is None, reason="openssl is not installed")
@pytest.mark.parametrize("delta", [False, True])
def test_openssl_verifies_the_crl(ca: Ca, tmp_path: Path, delta: bool) -> None:
    entries = mixed_entries(120, reasons=[*FULL_REASONS, 8] if delta else FULL_REASONS)
    ours = encode_crl(
        issuer=ca.cert,
        signer=ca.signer,
        number=9,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        entries=entries,
        delta_base=8 if delta else None,
        freshest_crl_url=None if delta else "http://crl.example.jp/delta.crl",
        idp_url="http://crl.example.jp/crl",
    )
    crl_path = tmp_path / "test.crl"
    ca_path = tmp_path / "ca.pem"
    write_crl_file(crl_path, ours)
    ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    cmd = ["openssl", "crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(ca_path)]
    result = subprocess.run(
        [*cmd, "-noout", "-verify"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    text = subprocess.run(
        [*cmd, "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert text.count("Serial Number:") == len(entries)
    assert "Key Compromise" in text
    assert "X509v3 Issuing Distribution Point: critical" in text
    assert ("X509v3 Delta CRL Indicator: critical" in text) is delta

    tampered = bytearray(ours)
    tampered[-1] ^= 0x01
    crl_path.write_bytes(bytes(tampered))
    result = subprocess.run(
        [*cmd, "-noout", "-verify"], capture_output=True, text=True, check=False
    )
    assert "verify OK" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def _encode(ca: Ca, entries: list[tuple[int, int, int]], **kwargs: object) -> bytes:
    params: dict[str, object] = {
        "issuer": ca.cert,
        "signer": ca.signer,
        "number": 3,
        "this_update": THIS_UPDATE,
        "next_update": NEXT_UPDATE,
        "entries": entries,
    }
    params.update(kwargs)
    return encode_crl(**params)  # type: ignore[arg-type]


AT = epoch(THIS_UPDATE)


@pytest.mark.parametrize(
    ("entries", "kwargs", "message"),
    [
        ([(2, AT, 1), (1, AT, 1)], {}, "sorted by serial"),
        ([(2, AT, 1), (2, AT, 1)], {}, "appears twice"),
        ([(0, AT, 1)], {}, "not positive"),
        ([(-5, AT, 1)], {}, "not positive"),
        ([(MAX_SERIAL + 1, AT, 1)], {}, "longer than 20 octets"),
        ([(1, AT, 7)], {}, "not an RFC 5280 reason code"),
        ([(1, AT, 11)], {}, "not an RFC 5280 reason code"),
        ([(1, AT, 8)], {}, "removeFromCRL"),
        ([], {"number": -1}, "CRL number"),
        ([], {"number": MAX_SERIAL + 1}, "CRL number"),
        ([], {"delta_base": 3}, "greater than its base"),
        ([], {"delta_base": 2, "freshest_crl_url": "http://x/d.crl"}, "freshestCRL"),
        ([], {"this_update": datetime(2026, 4, 1)}, "timezone-aware"),
        ([], {"next_update": THIS_UPDATE}, "later than this_update"),
    ],
)
def test_refuses_bad_input(
    ca: Ca, entries: list[tuple[int, int, int]], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _encode(ca, entries, **kwargs)


def test_refuses_a_signer_of_another_key(ca: Ca) -> None:
    key = rsa_key()
    other = PemSigner(key, make_ca("Other CA", key).cert)
    with pytest.raises(ValueError, match="signer's key is not the issuer"):
        _encode(ca, [], signer=other)


def test_issuer_without_ski_gets_aki_from_its_key(ca: Ca) -> None:
    cert = certificate("No SKI CA", ca.key, serial=9, not_before=THIS_UPDATE)
    crl = x509.load_der_x509_crl(
        encode_crl(
            issuer=cert,
            signer=PemSigner(ca.key, cert),
            number=1,
            this_update=THIS_UPDATE,
            next_update=NEXT_UPDATE,
            entries=[],
        )
    )
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    expected = x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()).digest
    assert aki.key_identifier == expected
    assert crl.issuer == cert.subject


# ---------------------------------------------------------------------------
# write_crl_file
# ---------------------------------------------------------------------------


def test_write_crl_file_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sign-card-g1.crl"
    write_crl_file(path, b"first")
    write_crl_file(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["sign-card-g1.crl"]
    write_crl_file(path, b"public", mode=0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_crl_file_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    (target / "occupied").write_bytes(b"x")
    with pytest.raises(OSError):
        write_crl_file(target, b"data")  # cannot replace a non-empty directory with a file
    assert sorted(os.listdir(tmp_path)) == ["a-directory"]
