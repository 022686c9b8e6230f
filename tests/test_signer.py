"""Tests of crlbuilder.keys.signer: the PEM signer's file checks, key checks and signatures."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from crlbuilder.keys.signer import SHA256_WITH_RSA_DER, PemSigner, Signer, SignerError
from tests.support.pki import make_ca, rsa_key


@pytest.fixture(scope="module")
def ca_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def ca_cert(ca_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_ca("Signer Test CA", ca_key).cert


def _write_key(
    path: Path,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    mode: int = 0o600,
    password: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, mode)
    return pem


def _write_cert(path: Path, cert: x509.Certificate, encoding: serialization.Encoding) -> None:
    path.write_bytes(cert.public_bytes(encoding))


@pytest.fixture
def files(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> tuple[Path, Path]:
    key_path = tmp_path / "ca.key"
    cert_path = tmp_path / "ca.pem"
    _write_key(key_path, ca_key)
    _write_cert(cert_path, ca_cert, serialization.Encoding.PEM)
    return key_path, cert_path


def test_from_files_signs_sha256_with_rsa_pkcs1(
    files: tuple[Path, Path], ca_cert: x509.Certificate
) -> None:
    signer = PemSigner.from_files(*files)
    assert isinstance(signer, Signer)
    assert signer.certificate == ca_cert
    data = b"tbsCertList bytes" * 100
    signature = signer.sign(data)
    public_key = ca_cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, data + b"x", padding.PKCS1v15(), hashes.SHA256())
    # PKCS#1 v1.5 is deterministic: the same bytes give the same signature.
    assert signer.sign(data) == signature


def test_signature_algorithm_der_is_what_cryptography_emits(ca_cert: x509.Certificate) -> None:
    parsed = asn1_x509.Certificate.load(ca_cert.public_bytes(serialization.Encoding.DER))
    assert parsed["signature_algorithm"].dump() == SHA256_WITH_RSA_DER
    assert parsed["tbs_certificate"]["signature"].dump() == SHA256_WITH_RSA_DER
    assert parsed["signature_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.11"


def test_accepts_der_certificate_and_owner_only_modes(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> None:
    key_path = tmp_path / "ro.key"
    cert_path = tmp_path / "ca.der"
    _write_key(key_path, ca_key, mode=0o400)
    _write_cert(cert_path, ca_cert, serialization.Encoding.DER)
    signer = PemSigner.from_files(str(key_path), str(cert_path))
    assert signer.signature_algorithm_der == SHA256_WITH_RSA_DER
    assert signer.certificate.serial_number == ca_cert.serial_number


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610, 0o601])
def test_refuses_key_readable_by_others(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, mode: int
) -> None:
    key_path = tmp_path / "open.key"
    cert_path = tmp_path / "ca.pem"
    pem = _write_key(key_path, ca_key, mode=mode)
    _write_cert(cert_path, ca_cert, serialization.Encoding.PEM)
    with pytest.raises(SignerError) as info:
        PemSigner.from_files(key_path, cert_path)
    message = str(info.value)
    assert str(key_path) in message
    assert f"{mode:04o}" in message
    assert "0600" in message
    body = pem.decode().splitlines()[1]
    assert body not in message
    assert "PRIVATE KEY" not in message


def test_refuses_encrypted_key(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> None:
    key_path = tmp_path / "enc.key"
    cert_path = tmp_path / "ca.pem"
    _write_key(key_path, ca_key, password=b"secret-pass")
    _write_cert(cert_path, ca_cert, serialization.Encoding.PEM)
    with pytest.raises(SignerError, match="encrypted"):
        PemSigner.from_files(key_path, cert_path)


def test_refuses_key_of_another_certificate(tmp_path: Path, ca_key: rsa.RSAPrivateKey) -> None:
    other = rsa_key()
    key_path = tmp_path / "ca.key"
    cert_path = tmp_path / "other.pem"
    _write_key(key_path, ca_key)
    _write_cert(cert_path, make_ca("Other CA", other).cert, serialization.Encoding.PEM)
    with pytest.raises(SignerError, match="does not match"):
        PemSigner.from_files(key_path, cert_path)


@pytest.mark.parametrize("damage", ["d", "crt", "d-and-crt"])
def test_refuses_a_key_whose_signatures_do_not_verify(
    tmp_path: Path, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, damage: str
) -> None:
    """The PEM load skips its own RSA key check (50-300 ms a key, `from_files`): a key whose
    public part matches the certificate but whose private part is damaged is refused by the
    signature check instead, whichever part is damaged, or loads and signs verifiably where
    OpenSSL's own check of a CRT result falls back to d (damage "crt")."""
    n = ca_key.private_numbers()
    bad_d = n.d + 2 if damage in ("d", "d-and-crt") else n.d
    bad_crt = damage in ("crt", "d-and-crt")
    damaged = rsa.RSAPrivateNumbers(
        p=n.p, q=n.q, d=bad_d,
        dmp1=n.dmp1 + 2 if bad_crt else n.dmp1, dmq1=n.dmq1 + 2 if bad_crt else n.dmq1,
        iqmp=n.iqmp, public_numbers=n.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)  # fmt: skip
    key_path = tmp_path / "ca.key"
    cert_path = tmp_path / "ca.pem"
    _write_key(key_path, damaged)
    _write_cert(cert_path, ca_cert, serialization.Encoding.PEM)
    if damage == "d-and-crt":
        with pytest.raises(SignerError, match="signatures do not verify with the certificate"):
            PemSigner.from_files(key_path, cert_path)
        with pytest.raises(SignerError, match="signatures do not verify"):
            PemSigner(damaged, ca_cert)
        return
    # d alone (CRT used) or the CRT values alone (OpenSSL checks the CRT result and falls
    # back to d): signatures still verify, so the key is usable and accepted
    signer = PemSigner.from_files(key_path, cert_path)
    signature = signer.sign(b"tbs")
    public = ca_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, b"tbs", padding.PKCS1v15(), hashes.SHA256())


def test_refuses_short_and_non_rsa_keys(tmp_path: Path) -> None:
    short = rsa_key(1024)
    with pytest.raises(SignerError, match="RSA-1024"):
        PemSigner(short, make_ca("Short", short).cert)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    key_path = tmp_path / "ec.key"
    cert_path = tmp_path / "ec.pem"
    _write_key(key_path, ec_key)
    _write_cert(cert_path, make_ca("EC", ec_key).cert, serialization.Encoding.PEM)
    with pytest.raises(SignerError, match="not an RSA"):
        PemSigner.from_files(key_path, cert_path)


def test_refuses_garbage_missing_and_symlinked_files(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    key_path, cert_path = files
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    garbage.chmod(0o600)
    with pytest.raises(SignerError, match="not a readable PEM private key"):
        PemSigner.from_files(garbage, cert_path)
    with pytest.raises(SignerError, match="cannot open"):
        PemSigner.from_files(tmp_path / "missing.key", cert_path)
    link = tmp_path / "link.key"
    link.symlink_to(key_path)
    with pytest.raises(SignerError, match=re.escape(str(link))):
        PemSigner.from_files(link, cert_path)
    bad_cert = tmp_path / "bad.pem"
    bad_cert.write_bytes(b"not a certificate")
    with pytest.raises(SignerError, match=r"not a readable X\.509 certificate"):
        PemSigner.from_files(key_path, bad_cert)


def test_loading_logs_no_key_material(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    key_path, cert_path = files
    pem = key_path.read_bytes().decode()
    with caplog.at_level(logging.DEBUG):
        signer = PemSigner.from_files(key_path, cert_path)
        signer.sign(b"data")
    assert caplog.records, "loading a key should be logged (without the key)"
    for line in pem.splitlines()[1:-1]:
        assert line not in caplog.text
    assert "PRIVATE" not in repr(signer)
