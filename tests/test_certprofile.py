"""Tests of crlbuilder.demo.certprofile: the JPKI end-entity profile and the four facts."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, SignatureAlgorithmOID

from crlbuilder.demo.certprofile import CertProfileError, build_ee_cert, facts_of, facts_other_names
from crlbuilder.demo.pki import init_pki
from crlbuilder.facts import JPKI_FACTS_ARC, OID_BIRTH_DATE, OID_NAME
from crlbuilder.manifest import IssuerFiles, Manifest
from crlbuilder.model import Family, FourFacts, Sex

NB = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
NA = datetime(2030, 4, 1, 14, 59, 59, tzinfo=UTC)

FACTS = FourFacts(
    name="𠮷田　花子",
    name_alt="吉田　花子",
    sex=Sex.FEMALE,
    birth_date="319800102",
    address="東京都千代田区髙砂町一丁目2番3号",
    address_alt="東京都千代田区高砂町一丁目2番3号",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return init_pki(tmp_path_factory.mktemp("pki") / "p")


@pytest.fixture(scope="module")
def subject_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(
    pki: Manifest,
    subject_key: rsa.RSAPrivateKey,
    family: Family,
    facts: FourFacts | None,
    serial: int = 0x1234_5678_9ABC_DEF1,
    issuer: IssuerFiles | None = None,
) -> x509.Certificate:
    files = issuer or pki.issuers_of(family)[-1]
    ca = x509.load_pem_x509_certificate(pki.path(files.cert).read_bytes())
    ca_key = serialization.load_pem_private_key(pki.path(files.key).read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    return build_ee_cert(
        issuer_cert=ca,
        issuer_key=ca_key,
        family=family,
        serial=serial,
        not_before=NB,
        not_after=NA,
        public_key=subject_key.public_key(),
        facts=facts,
        issuer_files=files,
    )


def test_utf8string_values_match_the_library_byte_for_byte() -> None:
    names = facts_other_names(FACTS)
    assert [n.type_id.dotted_string for n in names] == [
        f"{JPKI_FACTS_ARC}.{i}" for i in (1, 2, 3, 4, 5, 6)
    ]
    assert names[2].value == b"\x0c\x012"  # UTF8String "2"
    assert names[0].value == core.UTF8String(FACTS.name).dump()
    assert names[0].value[2:] == FACTS.name.encode()
    short = FourFacts(name="A", sex=Sex.MALE, birth_date="420000101", address="B")
    assert facts_other_names(short)[0].type_id == OID_NAME
    assert len(facts_other_names(short)) == 4


@pytest.mark.parametrize("family", [Family.SIGN_CARD, Family.SIGN_MOBILE])
def test_sign_certificate_profile(
    pki: Manifest, subject_key: rsa.RSAPrivateKey, family: Family
) -> None:
    files = pki.issuers_of(family)[-1]
    c = issue(pki, subject_key, family, FACTS)
    ca = x509.load_pem_x509_certificate(pki.path(files.cert).read_bytes())
    c.verify_directly_issued_by(ca)
    assert c.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert c.serial_number == 0x1234_5678_9ABC_DEF1
    assert c.not_valid_before_utc == NB and c.not_valid_after_utc == NA
    assert facts_of(c) == FACTS
    subject = c.subject.rfc4514_string()
    assert subject == f"CN=123456789abcdef1,OU={family.value},O=JPKI demo,C=JP"
    for word in ("吉田", "花子", "東京", "1980"):
        assert word not in subject
    ext = c.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in aia] == [
        (AuthorityInformationAccessOID.OCSP, files.ocsp_url)
    ]
    dps = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [dp.full_name[0].value for dp in dps if dp.full_name] == [files.crl_url]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key())
    )


@pytest.mark.parametrize("family", [Family.AUTH_CARD, Family.AUTH_MOBILE])
def test_auth_certificate_carries_no_personal_data(
    pki: Manifest, subject_key: rsa.RSAPrivateKey, family: Family
) -> None:
    c = issue(pki, subject_key, family, None)
    assert facts_of(c) is None
    with pytest.raises(x509.ExtensionNotFound):
        c.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.content_commitment
    assert c.subject.rfc4514_string() == f"CN=123456789abcdef1,OU={family.value},O=JPKI demo,C=JP"


@pytest.mark.interop  # openssl x509 -text
def test_openssl_shows_the_jpki_other_names(
    pki: Manifest, subject_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    c = issue(pki, subject_key, Family.SIGN_CARD, FACTS)
    path = tmp_path / "sign.pem"
    path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    text = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for i in range(1, 7):
        assert f"{JPKI_FACTS_ARC}.{i}" in text
    assert "OCSP - URI:" + pki.issuers_of(Family.SIGN_CARD)[-1].ocsp_url in text
    assert pki.issuers_of(Family.SIGN_CARD)[-1].crl_url in text
    assert "Non Repudiation" in text
    assert "Public-Key: (2048 bit)" in text
    asn1 = subprocess.run(
        ["openssl", "asn1parse", "-in", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert "UTF8STRING" in asn1


def test_profile_refuses_what_the_act_forbids(
    pki: Manifest, subject_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CertProfileError, match="no personal data"):
        issue(pki, subject_key, Family.AUTH_CARD, FACTS)
    with pytest.raises(CertProfileError, match="four facts"):
        issue(pki, subject_key, Family.SIGN_CARD, None)
    with pytest.raises(CertProfileError, match="does not issue"):
        issue(pki, subject_key, Family.SIGN_CARD, FACTS, issuer=pki.issuers_of(Family.AUTH_CARD)[0])
    with pytest.raises(CertProfileError, match="20 octets"):
        issue(pki, subject_key, Family.AUTH_CARD, None, serial=2**160)
    with pytest.raises(CertProfileError, match="positive"):
        issue(pki, subject_key, Family.AUTH_CARD, None, serial=0)


def _with_san(
    pki: Manifest, subject_key: rsa.RSAPrivateKey, names: list[x509.GeneralName]
) -> x509.Certificate:
    files = pki.issuers_of(Family.SIGN_CARD)[-1]
    ca_key = serialization.load_pem_private_key(pki.path(files.key).read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(subject_key.public_key())
        .serial_number(1)
        .not_valid_before(NB)
        .not_valid_after(NB + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def test_facts_of_rejects_partial_or_malformed_facts(
    pki: Manifest, subject_key: rsa.RSAPrivateKey
) -> None:
    names = facts_other_names(FACTS)
    partial = _with_san(pki, subject_key, [n for n in names if n.type_id != OID_BIRTH_DATE])
    with pytest.raises(CertProfileError, match="birth_date"):
        facts_of(partial)
    wrong_type = [
        x509.OtherName(n.type_id, core.PrintableString("319800102").dump())
        if n.type_id == OID_BIRTH_DATE
        else n
        for n in names
    ]
    with pytest.raises(CertProfileError, match="not a UTF8String"):
        facts_of(_with_san(pki, subject_key, wrong_type))
    bad_date = [
        x509.OtherName(n.type_id, core.UTF8String("9").dump()) if n.type_id == OID_BIRTH_DATE else n
        for n in names
    ]
    with pytest.raises(CertProfileError) as info:
        facts_of(_with_san(pki, subject_key, bad_date))
    assert str(info.value) == "invalid four facts (at `$.birth_date`)"  # no value quoted
    only_dns = _with_san(pki, subject_key, [x509.DNSName("example.jp")])
    assert facts_of(only_dns) is None
