"""Tests of crlbuilder.crl.parse: the fast CRL reader against cryptography, and its error handling."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier, SignatureAlgorithmOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crlbuilder.crl.encode import MAX_SERIAL, encode_crl
from crlbuilder.crl.parse import (
    CrlError,
    ParsedCrl,
    _iter_entries,
    parse_crl,
    verify_crl_signature,
)
from crlbuilder.der import der_header
from crlbuilder.keys.signer import PemSigner
from tests.support.pki import REASON_FLAGS, make_ca

THIS_UPDATE = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
NEXT_UPDATE = THIS_UPDATE + timedelta(days=1)
CODE_OF_FLAG = {flag: code for code, flag in REASON_FLAGS.items()} | {
    x509.ReasonFlags.unspecified: 0
}


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


@pytest.fixture(scope="module")
def ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key, cert = make_ca("jpki-va Parse Test CA")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, cert


BOUNDARY_TIMES = [
    epoch(datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC)),  # GeneralizedTime
    epoch(datetime(1950, 1, 1, tzinfo=UTC)),  # UTCTime "50..." is 1950
    epoch(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    epoch(datetime(2000, 1, 1, tzinfo=UTC)),
    epoch(datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),  # the last UTCTime
    epoch(datetime(2050, 1, 1, tzinfo=UTC)),  # the first GeneralizedTime
]


def sample_entries(count: int) -> list[tuple[int, int, int]]:
    """Entries with every reason, serials of every size and the time boundaries first."""
    reasons = [0, 1, 2, 3, 4, 5, 6, 9, 10]
    serials = sorted(
        {1, 127, 128, 2**64, 2**158 + 3, MAX_SERIAL} | {500 + 7919 * i for i in range(count)}
    )
    base = epoch(datetime(2024, 1, 1, tzinfo=UTC))
    times = [*BOUNDARY_TIMES, *(base + 3601 * i for i in range(count))]
    return [
        (serial, times[i], reasons[i % len(reasons)]) for i, serial in enumerate(serials[:count])
    ]


def our_crl(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
    entries: list[tuple[int, int, int]],
    **kwargs: object,
) -> bytes:
    key, cert = ca
    params: dict[str, object] = {
        "issuer": cert,
        "signer": PemSigner(key, cert),
        "number": 12,
        "this_update": THIS_UPDATE,
        "next_update": NEXT_UPDATE,
        "entries": entries,
    }
    params.update(kwargs)
    return encode_crl(**params)  # type: ignore[arg-type]


def cryptography_entries(der: bytes) -> list[tuple[int, int, int]]:
    listed = []
    for revoked in x509.load_der_x509_crl(der):
        try:
            code = CODE_OF_FLAG[
                revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
            ]
        except x509.ExtensionNotFound:
            code = 0
        listed.append((revoked.serial_number, int(revoked.revocation_date_utc.timestamp()), code))
    return listed


# ---------------------------------------------------------------------------
# Agreement with cryptography
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 50, 300])
def test_entries_and_fields_match_cryptography(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate], count: int
) -> None:
    entries = sample_entries(count)
    der = our_crl(ca, entries, idp_url="http://crl.example.jp/full.crl")
    parsed = parse_crl(der)
    reference = x509.load_der_x509_crl(der)
    assert list(parsed.entries()) == entries == cryptography_entries(der)
    assert parsed.version == 2
    assert parsed.number == 12
    assert parsed.delta_base is None
    assert not parsed.is_delta
    assert parsed.this_update == reference.last_update_utc == THIS_UPDATE
    assert parsed.next_update == reference.next_update_utc == NEXT_UPDATE
    assert parsed.this_update.tzinfo is not None
    assert parsed.issuer == reference.issuer == ca[1].subject
    assert parsed.issuer_der == ca[1].subject.public_bytes()
    assert parsed.tbs == reference.tbs_certlist_bytes
    assert parsed.signature == reference.signature
    assert parsed.signature_algorithm_oid == reference.signature_algorithm_oid
    ski = ca[1].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert parsed.authority_key_id == ski.digest
    assert parsed.idp_present
    idp = reference.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    assert parsed.idp_der == idp.public_bytes()
    assert parsed.freshest_crl_der is None
    verify_crl_signature(parsed, ca[1])


def test_delta_crl_fields(ca: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    entries = [(10, epoch(THIS_UPDATE) - 60, 8), (11, epoch(THIS_UPDATE) - 30, 1)]
    parsed = parse_crl(our_crl(ca, entries, number=21, delta_base=20))
    assert parsed.is_delta
    assert parsed.delta_base == 20
    assert parsed.number == 21
    assert not parsed.idp_present
    assert list(parsed.entries()) == entries


def test_full_crl_freshest_crl(ca: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    url = "http://crl.example.jp/delta.crl"
    der = our_crl(ca, [], freshest_crl_url=url)
    parsed = parse_crl(der)
    freshest = x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.FreshestCRL)
    assert parsed.freshest_crl_der == freshest.value.public_bytes()
    assert list(parsed.entries()) == []


def test_entries_with_other_extensions_long_lengths_and_no_extensions(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    """Entries built by cryptography: invalidityDate, a long unknown extension, none at all."""
    key, cert = ca
    at = datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(THIS_UPDATE)
        .next_update(NEXT_UPDATE)
    )
    shapes = [
        [],  # no crlEntryExtensions at all
        [(x509.CRLReason(x509.ReasonFlags.superseded), False), (x509.InvalidityDate(at), False)],
        [
            (x509.InvalidityDate(at), False),
            (x509.CRLReason(x509.ReasonFlags.key_compromise), False),
        ],
        [(x509.UnrecognizedExtension(ObjectIdentifier("1.2.392.200149.99.1"), b"\x05\x00"), False)],
        [(x509.UnrecognizedExtension(ObjectIdentifier("1.2.392.200149.99.2"), bytes(300)), False)],
        [(x509.CRLReason(x509.ReasonFlags.unspecified), False)],
        [(x509.CRLReason(x509.ReasonFlags.aa_compromise), False)],
    ]
    for i, extensions in enumerate(shapes):
        revoked = x509.RevokedCertificateBuilder().serial_number(1000 + i).revocation_date(at)
        for extension, critical in extensions:
            revoked = revoked.add_extension(extension, critical=critical)
        builder = builder.add_revoked_certificate(revoked.build())
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    parsed = parse_crl(der)
    assert parsed.number is None
    assert parsed.authority_key_id is None
    assert list(parsed.entries()) == cryptography_entries(der)
    assert [reason for _, _, reason in parsed.entries()] == [0, 4, 1, 0, 0, 0, 10]
    verify_crl_signature(parsed, cert)


@pytest.mark.parametrize(
    ("extension", "name"),
    [
        (x509.CRLReason(x509.ReasonFlags.key_compromise), "reasonCode (2.5.29.21)"),
        (
            x509.InvalidityDate(datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)),
            "invalidityDate (2.5.29.24)",
        ),
    ],
)
def test_a_critical_reason_code_or_invalidity_date_is_refused(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate], extension: x509.ExtensionType, name: str
) -> None:
    """RFC 5280 §5.3.1, §5.3.2: both are non-critical. Marked critical, the CRL is malformed;
    a critical invalidityDate was read as if it were not (and a critical reasonCode used)."""
    key, cert = ca
    at = datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(1000)
        .revocation_date(at)
        .add_extension(extension, critical=True)
        .build()
    )
    der = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(THIS_UPDATE)
        .next_update(NEXT_UPDATE)
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(CrlError, match=re.escape(f"{name} is marked critical")):
        list(parse_crl(der).entries())


def test_v1_crl_without_extensions(ca: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    """A v1 CRL has no version field and no extensions: derive one from a v2 tbs, re-sign it."""
    key, cert = ca
    entries = [(5, epoch(THIS_UPDATE), 0), (6, epoch(THIS_UPDATE) + 1, 0)]
    v2 = parse_crl(our_crl(ca, entries))
    body = _content(v2.tbs)
    assert body.startswith(b"\x02\x01\x01")
    fields, p = [], 0  # the tbs fields, split by the DER header reader
    while p < len(body):
        tag, _, stop = der_header(body, p, len(body))
        fields.append((tag, body[p:stop]))
        p = stop
    # drop the version and the crlExtensions [0] (found by tag: their bytes may hold 0xa0 too)
    body = b"".join(tlv for tag, tlv in fields[1:] if tag != 0xA0)
    tbs = _sequence(body)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    bit_string = b"\x03" + _length(len(signature) + 1) + b"\x00" + signature
    der = _sequence(tbs + v2.signature_algorithm_der + bit_string)
    parsed = parse_crl(der)
    assert parsed.version == 1
    assert parsed.number is None
    assert list(parsed.entries()) == entries == cryptography_entries(der)
    verify_crl_signature(parsed, cert)


def _content(tlv: bytes) -> bytes:
    """The contents of a DER TLV."""
    n = tlv[1]
    if n < 0x80:
        return tlv[2:]
    return tlv[2 + (n & 0x7F) :]


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _sequence(content: bytes) -> bytes:
    return b"\x30" + _length(len(content)) + content


openssl = shutil.which("openssl")


@pytest.mark.interop
@pytest.mark.skipif(openssl is None, reason="openssl is not installed")
def test_parses_a_crl_made_by_openssl_ca(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    key, cert = ca
    (tmp_path / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ca.key").chmod(0o600)
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "index.txt").write_text(
        "R\t351231000000Z\t250101000000Z,keyCompromise\t0A\tunknown\t/CN=a\n"
        "R\t351231000000Z\t250102030405Z\t0B\tunknown\t/CN=b\n"
        "R\t351231000000Z\t250103000000Z,superseded\t0100\tunknown\t/CN=c\n"
        "V\t351231000000Z\t\t0C\tunknown\t/CN=d\n"
    )
    (tmp_path / "crlnumber").write_text("05\n")
    (tmp_path / "openssl.cnf").write_text(
        f"[ca]\ndefault_ca = test\n[test]\ndir = {tmp_path}\ndatabase = $dir/index.txt\n"
        "certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\ncrlnumber = $dir/crlnumber\n"
        "default_md = sha256\ndefault_crl_days = 1\nunique_subject = no\n"
    )
    subprocess.run(
        [
            "openssl",
            "ca",
            "-gencrl",
            "-config",
            str(tmp_path / "openssl.cnf"),
            "-out",
            str(tmp_path / "crl.pem"),
        ],
        check=True,
        capture_output=True,
    )
    der = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    parsed = parse_crl(der)
    assert parsed.number == 5
    assert (
        list(parsed.entries())
        == cryptography_entries(der)
        == [
            (0x0A, epoch(datetime(2025, 1, 1, tzinfo=UTC)), 1),
            (0x0B, epoch(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)), 0),
            (0x100, epoch(datetime(2025, 1, 3, tzinfo=UTC)), 4),
        ]
    )
    verify_crl_signature(parsed, cert)


# ---------------------------------------------------------------------------
# Signature checks
# ---------------------------------------------------------------------------


def test_verify_rejects_another_issuer_and_tampering(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    der = our_crl(ca, sample_entries(20))
    parsed = parse_crl(der)
    verify_crl_signature(parsed, ca[1])

    _, other = make_ca("jpki-va Parse Test CA")  # same name, another key
    with pytest.raises(CrlError, match="authorityKeyIdentifier does not match"):
        verify_crl_signature(parsed, other)
    _, stranger = make_ca("Someone Else")
    with pytest.raises(CrlError, match="issuer is not the certificate's subject"):
        verify_crl_signature(parsed, stranger)

    # Change one entry's reason: the tbs no longer matches its signature.
    tampered = bytearray(der)
    position = der.index(b"\x06\x03\x55\x1d\x15\x04\x03\x0a\x01\x01") + 9
    tampered[position] = 0x04
    reparsed = parse_crl(bytes(tampered))
    assert list(reparsed.entries()) != list(parsed.entries())
    with pytest.raises(CrlError, match="signature does not verify"):
        verify_crl_signature(reparsed, ca[1])


def test_verify_rejects_certificate_without_crl_sign() -> None:
    key, cert = make_ca("No cRLSign", crl_sign=False)
    assert isinstance(key, rsa.RSAPrivateKey)
    parsed = parse_crl(our_crl((key, cert), []))
    with pytest.raises(CrlError, match="cRLSign"):
        verify_crl_signature(parsed, cert)


def test_verify_accepts_ecdsa_and_refuses_a_mismatched_key_type() -> None:
    ec_key, ec_cert = make_ca("EC CA", ec.generate_private_key(ec.SECP256R1()))
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    der = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ec_cert.subject)
        .last_update(THIS_UPDATE)
        .next_update(NEXT_UPDATE)
        .sign(ec_key, hashes.SHA384())
        .public_bytes(serialization.Encoding.DER)
    )
    parsed = parse_crl(der)
    assert parsed.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    verify_crl_signature(parsed, ec_cert)
    rsa_key, _ = make_ca("EC CA")
    _, rsa_cert_same_name = make_ca("EC CA", rsa_key)
    with pytest.raises(CrlError, match="key type"):
        verify_crl_signature(parsed, rsa_cert_same_name)


# ---------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_der(ca: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> bytes:
    return our_crl(ca, sample_entries(12), idp_url="http://crl.example.jp/x.crl")


def _drain(der: bytes) -> ParsedCrl:
    parsed = parse_crl(der)
    for _ in parsed.entries():
        pass
    return parsed


def test_every_truncation_is_a_crl_error(small_der: bytes) -> None:
    for cut in range(len(small_der)):
        with pytest.raises(CrlError):
            _drain(small_der[:cut])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d + b"\x00", "trailing garbage"),
        (lambda d: d + d, "trailing garbage"),
        (lambda d: b"\x31" + d[1:], "expected CertificateList"),
        (lambda d: d.replace(b"\x02\x01\x01", b"\x02\x01\x02", 1), "unsupported CRL version 3"),
        (lambda d: d.replace(b"\x02\x01\x01", b"\x02\x01\x00", 1), "unsupported CRL version 1"),
        (lambda d: b"\x30\x80" + d[4:] + b"\x00\x00", "indefinite length"),
        (lambda d: b"\x30\x84" + len(d[4:]).to_bytes(4, "big") + d[4:], "non-minimal length"),
        (lambda d: b"\x30\x85" + b"\x00" * 5, "length of more than 4 octets"),
        (lambda d: b"\x1f\x01\x00", "multi-byte tag"),
        (lambda d: b"", "truncated"),
        (lambda d: d[:-257] + b"\x01" + d[-256:], "unused bits"),
        (lambda d: b"-----BEGIN X509 CRL-----\n", "PEM"),
    ],
)
def test_malformed_crls_are_refused_clearly(small_der: bytes, mutate: object, message: str) -> None:
    assert small_der[:2] == b"\x30\x82"
    with pytest.raises(CrlError, match=message):
        _drain(mutate(small_der))  # type: ignore[operator]


def test_signature_algorithm_mismatch_is_refused(small_der: bytes) -> None:
    sha256_rsa = bytes.fromhex("300d06092a864886f70d01010b0500")
    sha384_rsa = bytes.fromhex("300d06092a864886f70d01010c0500")
    tail = small_der.rindex(sha256_rsa)
    with pytest.raises(CrlError, match="differs from signatureAlgorithm"):
        parse_crl(small_der[:tail] + sha384_rsa + small_der[tail + len(sha256_rsa) :])


def test_unknown_critical_entry_extension_and_indirect_entries_are_refused(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = ca
    for extension, message in [
        (
            x509.UnrecognizedExtension(ObjectIdentifier("1.2.392.200149.99.3"), b"\x05\x00"),
            "unsupported critical",
        ),
        (x509.CertificateIssuer([x509.DNSName("other.example.jp")]), "indirect CRL"),
    ]:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(9)
            .revocation_date(THIS_UPDATE)
            .add_extension(extension, critical=True)
            .build()
        )
        der = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(THIS_UPDATE)
            .next_update(NEXT_UPDATE)
            .add_revoked_certificate(revoked)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        with pytest.raises(CrlError, match=message):
            _drain(der)


def test_unknown_critical_crl_extension_is_refused(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = ca
    der = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(THIS_UPDATE)
        .next_update(NEXT_UPDATE)
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("1.2.392.200149.99.4"), b"\x05\x00"),
            critical=True,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(
        CrlError, match=r"unsupported critical CRL extension 1\.2\.392\.200149\.99\.4"
    ):
        parse_crl(der)


def crl_with_raw_entries(*entries: bytes) -> bytes:
    """An (unsigned) CRL around hand-made entry DER, to test the entry walker's checks."""
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Raw")]).public_bytes()
    times = b"\x17\x0d260401000000Z\x17\x0d260402000000Z"
    revoked = _sequence(b"".join(entries)) if entries else b""
    tbs = _sequence(b"\x02\x01\x01" + algorithm + name + times + revoked)
    return _sequence(tbs + algorithm + b"\x03\x01\x00")


REASON_KEY_COMPROMISE = bytes.fromhex("300c300a0603551d150403 0a0101".replace(" ", ""))
WHEN = b"\x17\x0d260301120000Z"
WHEN_EPOCH = epoch(datetime(2026, 3, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (_sequence(b"\x02\x01\x05" + WHEN), (5, WHEN_EPOCH, 0)),
        (_sequence(b"\x02\x01\x05" + WHEN + REASON_KEY_COMPROMISE), (5, WHEN_EPOCH, 1)),
        # A long-form entry length (an entry over 127 octets) and a GeneralizedTime.
        (
            _sequence(
                b"\x02\x01\x07\x18\x0f20260301120000Z"
                + _sequence(_sequence(b"\x06\x03\x2a\x03\x04\x04\x68" + bytes(104)))
            ),
            (7, WHEN_EPOCH, 0),
        ),
        # reasonCode after another extension.
        (
            _sequence(
                b"\x02\x02\x00\x80"
                + WHEN
                + _sequence(
                    _sequence(b"\x06\x03\x2a\x03\x04\x04\x00")
                    + REASON_KEY_COMPROMISE[2:-1]
                    + b"\x05"
                )
            ),
            (128, WHEN_EPOCH, 5),
        ),
        # A negative serial (non-conforming but seen in the wild) is read as signed.
        (_sequence(b"\x02\x01\xff" + WHEN), (-1, WHEN_EPOCH, 0)),
    ],
)
def test_entry_shapes_are_read(entry: bytes, expected: tuple[int, int, int]) -> None:
    der = crl_with_raw_entries(entry)
    assert (entry[1] & 0x80 != 0) is (expected[0] == 7)
    assert list(parse_crl(der).entries()) == [expected]
    assert cryptography_entries(der) == [expected]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_sequence(b"\x02\x01\x05" + WHEN + REASON_KEY_COMPROMISE + b"\x00"), "trailing bytes"),
        (_sequence(b"\x02\x00" + WHEN), "empty INTEGER"),
        (_sequence(b"\x04\x01\x05" + WHEN), "expected userCertificate"),
        (_sequence(b"\x02\x01\x05" + b"\x17\x0f260301120000.5Z"), "bad time"),
        (_sequence(b"\x02\x01\x05" + b"\x17\x0b2603011200Z"), "bad time"),
        (_sequence(b"\x02\x01\x05" + b"\x17\x0d260301120000+"), "bad time"),
        (_sequence(b"\x02\x01\x05" + b"\x04\x0d260301120000Z"), "expected revocationDate"),
        (_sequence(b"\x02\x01\x05" + WHEN + REASON_KEY_COMPROMISE[:-1] + b"\x07"), "reason code 7"),
        (b"\x30\x81\x10" + b"\x02\x01\x05" + WHEN, "non-minimal length"),
        # Inner lengths that run past their entry, with more bytes physically after it.
        (b"\x30\x02\x02\x05" + b"\x05" * 4 + WHEN, "serial of the CRL entry"),
        (b"\x30\x05\x02\x01\x05" + WHEN, "revocationDate of the CRL entry"),
        (b"\x30\x03\x02\x01\x05" + WHEN, "revocationDate of the CRL entry"),
        (b"\x31\x10" + b"\x02\x01\x05" + WHEN, "expected CRL entry"),
        (
            _sequence(
                b"\x02\x01\x05"
                + WHEN
                + _sequence(_sequence(b"\x06\x03\x55\x1d\x15\x01\x01\x01\x04\x03\x0a\x01\x01"))
            ),
            "malformed BOOLEAN",
        ),
        (
            _sequence(
                b"\x02\x01\x05"
                + WHEN
                + _sequence(_sequence(b"\x06\x03\x2a\x03\x04\x01\x01\x00\x04\x00"))
            ),
            "critical FALSE",
        ),
    ],
)
def test_malformed_entries_are_refused(entry: bytes, message: str) -> None:
    parsed = parse_crl(crl_with_raw_entries(_sequence(b"\x02\x01\x01" + WHEN), entry))
    entries = parsed.entries()
    assert next(entries) == (1, WHEN_EPOCH, 0)
    with pytest.raises(CrlError, match=message):
        next(entries)


def test_entry_walk_stays_within_its_bounds() -> None:
    """Entries cut short by the list's end raise CrlError though more bytes follow in memory."""
    first = _sequence(b"\x02\x01\x05" + WHEN + REASON_KEY_COMPROMISE)
    second = _sequence(b"\x02\x01\x06" + WHEN)
    data = first + second + first
    boundaries = {0, len(first), len(first) + len(second)}
    for end in range(len(first) + len(second) + 1):
        walk = _iter_entries(data, 0, end)
        if end in boundaries:
            assert len(list(walk)) == sorted(boundaries).index(end)
        else:
            with pytest.raises(CrlError):
                list(walk)


@pytest.mark.parametrize(
    "data",
    [b"\x30", b"\x30\x00", b"\x30\x01\x02", b"\x30\x03\x02\x01\x05", b"\x30\x04\x02\x01\x05\x17"],
)
def test_entry_ending_at_the_buffer_end_is_a_crl_error(data: bytes) -> None:
    with pytest.raises(CrlError):
        list(_iter_entries(data, 0, len(data)))


def _tbs_with(extra: bytes, extensions: bytes) -> bytes:
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Raw")]).public_bytes()
    times = b"\x17\x0d260401000000Z\x17\x0d260402000000Z"
    tbs = _sequence(b"\x02\x01\x01" + algorithm + name + times + extensions + extra)
    return _sequence(tbs + algorithm + b"\x03\x01\x00")


CRL_NUMBER_7 = _sequence(b"\x06\x03\x55\x1d\x14\x04\x03\x02\x01\x07")


def test_crl_extension_block_checks() -> None:
    assert (
        parse_crl(
            _tbs_with(
                b"", b"\xa0" + _length(len(_sequence(CRL_NUMBER_7))) + _sequence(CRL_NUMBER_7)
            )
        ).number
        == 7
    )
    twice = _sequence(CRL_NUMBER_7 + CRL_NUMBER_7)
    with pytest.raises(CrlError, match=r"duplicate CRL extension 2\.5\.29\.20"):
        parse_crl(_tbs_with(b"", b"\xa0" + _length(len(twice)) + twice))
    once = _sequence(CRL_NUMBER_7)
    with pytest.raises(CrlError, match="unexpected field"):
        parse_crl(_tbs_with(b"\x05\x00", b"\xa0" + _length(len(once)) + once))


def test_bad_entry_time_is_refused(small_der: bytes) -> None:
    parsed = parse_crl(small_der)
    at = next(at for _, at, _ in parsed.entries() if at >= epoch(datetime(2024, 1, 1, tzinfo=UTC)))
    stamp = datetime.fromtimestamp(at, UTC).strftime("%y%m%d%H%M%SZ").encode()
    assert small_der.count(b"\x17\x0d" + stamp) == 1
    for bad, message in [
        (stamp[:6] + b"2460" + stamp[10:], "time of day"),
        (b"241332" + stamp[6:], "not a valid date"),
    ]:
        with pytest.raises(CrlError, match=message):
            _drain(small_der.replace(stamp, bad, 1))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_crls_raise_only_crl_error(
    small_der: bytes, ca: tuple[rsa.RSAPrivateKey, x509.Certificate], data: st.DataObject
) -> None:
    mutated = bytearray(small_der)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]), label="kind")
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1), label="at")
        if kind == "flip":
            mutated[at] ^= data.draw(st.integers(1, 255), label="xor")
        elif kind == "truncate":
            del mutated[at:]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4), label="bytes")
        else:
            del mutated[at : at + data.draw(st.integers(1, 4), label="length")]
    with contextlib.suppress(CrlError):
        parsed = _drain(bytes(mutated))
        _ = (parsed.issuer, parsed.this_update, parsed.number)
        verify_crl_signature(parsed, ca[1])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_crl_error(blob: bytes) -> None:
    with contextlib.suppress(CrlError):
        _drain(blob)
