"""Tests of crlbuilder.demo.pki: the demo PKI's files, modes, certificates and manifest."""

from __future__ import annotations

import argparse
import ipaddress
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from crlbuilder.demo.pki import (
    GENERATIONS,
    ROLLOVER,
    PkiError,
    add_cli,
    init_pki,
    issuer_id,
    issuer_index,
)
from crlbuilder.manifest import Manifest, load_manifest
from crlbuilder.model import Family

NOW = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:18080"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return init_pki(tmp_path_factory.mktemp("pki") / "demo", base_url=BASE + "/", now=NOW)


def cert(m: Manifest, rel: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(m.path(rel).read_bytes())


def key(m: Manifest, rel: str) -> rsa.RSAPrivateKey:
    k = serialization.load_pem_private_key(m.path(rel).read_bytes(), password=None)
    assert isinstance(k, rsa.RSAPrivateKey)
    return k


def openssl_text(path: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def secret_files(m: Manifest) -> list[str]:
    rels = [m.client_ca_key, m.server_key, m.group_responder_key]
    rels += [i.key for i in m.issuers] + [i.ocsp_key for i in m.issuers]
    rels += [p.key for p in m.parties] + [p.token for p in m.parties]
    return rels


def test_manifest_round_trips_and_names_every_file(pki: Manifest) -> None:
    again = load_manifest(pki.directory)
    assert again == pki
    assert [i.id for i in pki.issuers] == [
        "sign-card-g1",
        "sign-card-g2",
        "sign-mobile-g1",
        "auth-card-g1",
        "auth-mobile-g1",
    ]
    assert len({i.index for i in pki.issuers}) == len(pki.issuers)
    assert all(i.live for i in pki.issuers)
    for f in Family:
        assert pki.issuers_of(f), f
    assert [i.generation for i in pki.issuers_of(Family.SIGN_CARD)] == [1, 2]
    rels = [*secret_files(pki), pki.client_ca, pki.server_cert, pki.group_responder_cert]
    rels += [i.cert for i in pki.issuers] + [i.ocsp_cert for i in pki.issuers]
    rels += [p.cert for p in pki.parties]
    for rel in rels:
        assert pki.path(rel).is_file(), rel


def test_every_secret_file_is_mode_0600(pki: Manifest) -> None:
    for rel in secret_files(pki):
        mode = stat.S_IMODE(pki.path(rel).stat().st_mode)
        assert mode == 0o600, (rel, oct(mode))
    # and certificates are not secret
    assert stat.S_IMODE(pki.path(pki.issuers[0].cert).stat().st_mode) & 0o044


def test_urls_per_issuer(pki: Manifest) -> None:
    assert pki.base_url == BASE
    for i in pki.issuers:
        assert i.ocsp_url == f"{BASE}/ocsp"
        assert i.crl_url == f"{BASE}/crl/{i.id}.crl"
        assert i.delta_crl_url == f"{BASE}/crl/{i.id}-delta.crl"


def test_issuing_cas_are_distinct_rsa_2048_sha256_roots(pki: Manifest) -> None:
    subjects, keys = set(), set()
    for i in pki.issuers:
        c = cert(pki, i.cert)
        k = key(pki, i.key)
        assert k.key_size >= 2048
        assert c.public_key().public_numbers() == k.public_key().public_numbers()
        assert c.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
        c.verify_directly_issued_by(c)
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
        cn = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == f"JPKI {i.family.value} CA G{i.generation}"
        assert i.id == issuer_id(i.family, i.generation)
        assert i.index == issuer_index(i.family, i.generation)
        subjects.add(c.subject.rfc4514_string())
        keys.add(k.public_key().public_numbers().n)
    assert len(subjects) == len(keys) == len(pki.issuers)


def test_generation_starts(pki: Manifest) -> None:
    starts = {(f, g): s for f, g, s in GENERATIONS}
    for i in pki.issuers:
        assert cert(pki, i.cert).not_valid_before_utc == starts[(i.family, i.generation)]
    g2 = pki.issuer("sign-card-g2")
    assert cert(pki, g2.cert).not_valid_before_utc == ROLLOVER


@pytest.mark.integration  # openssl x509 -text
def test_ocsp_signers_are_delegated_with_nocheck(pki: Manifest) -> None:
    for i in pki.issuers:
        ca = cert(pki, i.cert)
        signer = cert(pki, i.ocsp_cert)
        signer.verify_directly_issued_by(ca)
        assert key(pki, i.ocsp_key).key_size >= 2048
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
        signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert signer.not_valid_before_utc < NOW < signer.not_valid_after_utc
        text = openssl_text(pki.path(i.ocsp_cert))
        assert "OCSP No Check" in text
        assert "OCSP Signing" in text
        assert "sha256WithRSAEncryption" in text


def test_tls_server_and_group_responder(pki: Manifest) -> None:
    ca = cert(pki, pki.client_ca)
    server = cert(pki, pki.server_cert)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    relay = cert(pki, pki.group_responder_cert)
    relay.verify_directly_issued_by(ca)
    eku = relay.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.OCSP_SIGNING in eku
    assert (
        relay.public_key().public_numbers()
        == key(pki, pki.group_responder_key).public_key().public_numbers()
    )


def test_demo_parties(pki: Manifest) -> None:
    by_id = {p.id: p for p in pki.parties}
    assert by_id["sig-verifier"].titles == ["signature-verifier"]
    assert by_id["auth-verifier"].titles == ["user-verifier"]
    assert by_id["both-verifier"].titles == ["signature-verifier", "user-verifier"]
    assert by_id["group-verifier"].titles == ["group-signature-verifier"]
    for m in ("member-1", "member-2"):
        assert by_id[m].titles == ["signature-confirmer"]
        assert by_id[m].group == "group-verifier"
    ca = cert(pki, pki.client_ca)
    tokens = set()
    for p in pki.parties:
        c = cert(pki, p.cert)
        c.verify_directly_issued_by(ca)
        assert c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == p.id
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        assert c.public_key().public_numbers() == key(pki, p.key).public_key().public_numbers()
        token = pki.path(p.token).read_bytes()
        assert len(token) >= 32 and token.isascii() and not token.endswith(b"\n")
        tokens.add(token)
    assert len(tokens) == len(pki.parties)


def test_refuses_non_empty_directory_and_small_keys(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(PkiError, match="not empty"):
        init_pki(tmp_path)
    assert (tmp_path / "x").read_text() == "keep me"
    with pytest.raises(PkiError, match="2048"):
        init_pki(tmp_path / "small", key_size=1024)
    assert not (tmp_path / "small").exists()


def test_cli_init_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="crlbuilder")
    add_cli(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "pki"
    args = parser.parse_args(["pki", "init", "--out", str(out), "--base-url", "http://127.0.0.1:9"])
    assert args.func(args) == 0
    first = load_manifest(out)
    assert first.issuers[0].ocsp_url == "http://127.0.0.1:9/ocsp"
    first_ca = first.path(first.issuers[0].cert).read_bytes()
    assert args.func(args) == 2
    assert "not empty" in capsys.readouterr().err
    args = parser.parse_args(["pki", "init", "--out", str(out), "--force"])
    assert args.func(args) == 0
    second = load_manifest(out)
    assert second.path(second.issuers[0].cert).read_bytes() != first_ca
    assert second.issuers[0].ocsp_url == "http://127.0.0.1:8080/ocsp"
    for rel in secret_files(second):
        assert stat.S_IMODE(second.path(rel).stat().st_mode) == 0o600
