"""Tests of crlbuilder.ocsp.response: OCSP response bytes.

The hand-written DER is compared byte for byte with cryptography's
OCSPResponseBuilder (single responses: RSA PKCS#1 v1.5 signatures are
deterministic, so whole responses can be equal), decoded with asn1crypto and
cryptography (several SingleResponses), and verified by `openssl ocsp`
through a delegated OCSP signer (id-kp-OCSPSigning, ocsp-nocheck) issued by
the test CA, with statuses, reasons, times and the nonce checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from asn1crypto import core as a_core
from asn1crypto import ocsp as a_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from crlbuilder.demo.certprofile import key_usage
from crlbuilder.model import CertStatus
from crlbuilder.ocsp.request import parse_request
from crlbuilder.ocsp.response import (
    ResponseSigner,
    ResponseStatus,
    SingleAnswer,
    cert_id_der,
    der_integer,
    error_response,
    issuer_hashes,
)
from tests.support.pki import REASON_FLAGS, make_ca, rsa_key

OPENSSL = shutil.which("openssl")
SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
OPENSSL_REASON = {1: "keyCompromise", 3: "affiliationChanged", 5: "cessationOfOperation"}


class KeySigner:
    """A test signer of the crlbuilder.keys.signer shape: an in-memory RSA key."""

    signature_algorithm_der = SHA256_RSA

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.certificate = cert
        self.calls = 0

    def sign(self, data: bytes) -> bytes:
        self.calls += 1
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Pki:
    """A CA, a delegated OCSP signer it issued, and leaf certificates."""

    def __init__(self) -> None:
        self.ca_key = rsa_key()
        self.signer_key = rsa_key()
        ca = make_ca(
            "Test CA", self.ca_key, organization="jpki-va test",
            not_before=_now() - dt.timedelta(days=1), days=366, path_length=None, ski=False,
        )  # fmt: skip
        self.ca = ca.cert
        self.signer_cert = ca.issue(
            "Test OCSP signer", self.signer_key, serial=2,
            usage=key_usage("digital_signature"),
            extensions=[
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), True),
                (x509.OCSPNoCheck(), False),
            ],
        )  # fmt: skip
        self.leaves = [
            ca.issue(f"leaf {s}", self.signer_key, serial=s) for s in (0x1001, 0x80, 2**150 + 7)
        ]

    def signer(self) -> KeySigner:
        return KeySigner(self.signer_key, self.signer_cert)

    def cert_id(self, leaf: x509.Certificate, alg: str = "sha1") -> bytes:
        return cert_id_der(alg, *issuer_hashes(self.ca, alg), leaf.serial_number)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def rs(pki: Pki) -> ResponseSigner:
    return ResponseSigner(pki.signer())


def ts(d: dt.datetime) -> int:
    return int(d.timestamp())


# --- small pieces ------------------------------------------------------------------


@pytest.mark.parametrize("status", [1, 2, 3, 5, 6])
def test_error_responses(status: int) -> None:
    der = error_response(status)
    assert der == a_ocsp.OCSPResponse({"response_status": status}).dump()
    assert ocsp.load_der_ocsp_response(der).response_status.value == status
    assert error_response(ResponseStatus(status)) is der  # constant bytes


@pytest.mark.parametrize("status", [0, 4, 7, -1])
def test_error_response_rejects_non_errors(status: int) -> None:
    with pytest.raises(ValueError):
        error_response(status)


@given(st.one_of(st.integers(-(2**200), 2**200), st.sampled_from([0, 127, 128, -128, -129, 255])))
def test_der_integer_matches_asn1crypto(value: int) -> None:
    assert der_integer(value) == a_core.Integer(value).dump()


@pytest.mark.parametrize("alg", ["sha1", "sha256"])
def test_issuer_hashes_and_cert_id_match_cryptography(pki: Pki, alg: str) -> None:
    algorithm = hashes.SHA1() if alg == "sha1" else hashes.SHA256()
    name_hash, key_hash = issuer_hashes(pki.ca, alg)
    assert name_hash == hashlib.new(alg, pki.ca.subject.public_bytes()).digest()
    for leaf in pki.leaves:
        req = ocsp.OCSPRequestBuilder().add_certificate(leaf, pki.ca, algorithm).build()
        assert (req.issuer_name_hash, req.issuer_key_hash) == (name_hash, key_hash)
        der = req.public_bytes(serialization.Encoding.DER)
        parsed = a_ocsp.OCSPRequest.load(der)
        expected = parsed["tbs_request"]["request_list"][0]["req_cert"].dump()
        assert cert_id_der(alg, name_hash, key_hash, leaf.serial_number) == expected
    # the key hash is the responderID byKey rule too (RFC 5280 §4.2.1.2 method 1 for SHA-1)
    if alg == "sha1":
        ski = x509.SubjectKeyIdentifier.from_public_key(pki.ca.public_key())
        assert key_hash == ski.digest


def test_cert_id_der_rejects() -> None:
    with pytest.raises(ValueError):
        cert_id_der("md5", b"a" * 16, b"b" * 16, 1)
    with pytest.raises(ValueError):
        cert_id_der("sha1", b"a" * 19, b"b" * 20, 1)
    with pytest.raises(ValueError):
        cert_id_der("sha256", b"a" * 32, b"b" * 20, 1)


# --- byte equality with cryptography -------------------------------------------------


CASES = [
    ("good", None),
    ("unknown", None),
    ("revoked", None),
    *[("revoked", r) for r in REASON_FLAGS],
]


@pytest.mark.parametrize(("status", "reason"), CASES)
@pytest.mark.parametrize("alg", ["sha1", "sha256"])
@pytest.mark.parametrize("nonce", [None, b"\x00", bytes(range(32)), b"N" * 128])
def test_byte_equal_to_cryptography(
    pki: Pki, rs: ResponseSigner, status: str, reason: int | None, alg: str, nonce: bytes | None
) -> None:
    leaf = pki.leaves[2]
    now = _now()
    revoked_at = now - dt.timedelta(days=40, seconds=17)
    cert_status = getattr(ocsp.OCSPCertStatus, status.upper())
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=pki.ca,
            algorithm=hashes.SHA1() if alg == "sha1" else hashes.SHA256(),
            cert_status=cert_status,
            this_update=now,
            next_update=now + dt.timedelta(hours=6),
            revocation_time=revoked_at if status == "revoked" else None,
            revocation_reason=REASON_FLAGS[reason] if reason is not None else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.signer_cert)
        .certificates([pki.signer_cert])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    expected = builder.sign(pki.signer_key, hashes.SHA256())
    answer = SingleAnswer(
        pki.cert_id(leaf, alg),
        CertStatus[status.upper()],
        ts(revoked_at) if status == "revoked" else 0,
        reason,
    )
    got = rs.sign_response(
        [answer],
        produced_at=ts(expected.produced_at_utc),
        this_update=ts(now),
        next_update=ts(now + dt.timedelta(hours=6)),
        nonce=nonce,
    )
    assert got == expected.public_bytes(serialization.Encoding.DER)


def test_unspecified_reason_is_omitted(pki: Pki, rs: ResponseSigner) -> None:
    t = ts(_now())
    cid = pki.cert_id(pki.leaves[0])
    kw = {"produced_at": t, "this_update": t, "next_update": t + 60}
    with_zero = rs.sign_response([SingleAnswer(cid, CertStatus.REVOKED, t - 10, 0)], **kw)
    with_none = rs.sign_response([SingleAnswer(cid, CertStatus.REVOKED, t - 10, None)], **kw)
    assert with_zero == with_none
    single = ocsp.load_der_ocsp_response(with_zero)
    assert single.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert single.revocation_reason is None


# --- several SingleResponses ---------------------------------------------------------------


def multi_answers(pki: Pki, revoked_at: int) -> list[SingleAnswer]:
    return [
        SingleAnswer(pki.cert_id(pki.leaves[0]), CertStatus.GOOD),
        SingleAnswer(pki.cert_id(pki.leaves[1]), CertStatus.REVOKED, revoked_at, 1),
        SingleAnswer(pki.cert_id(pki.leaves[2]), CertStatus.UNKNOWN),
        SingleAnswer(
            cert_id_der("sha256", *issuer_hashes(pki.ca, "sha256"), 0x7777),
            CertStatus.REVOKED,
            revoked_at + 1,
            None,
        ),
    ]


def test_multi_decodes_with_asn1crypto_and_cryptography(pki: Pki, rs: ResponseSigner) -> None:
    now = ts(_now())
    revoked_at = now - 86400 * 3
    answers = multi_answers(pki, revoked_at)
    der = rs.sign_response(
        answers, produced_at=now, this_update=now - 5, next_update=now + 3600, nonce=b"x" * 20
    )
    # asn1crypto: structure and every field
    resp = a_ocsp.OCSPResponse.load(der)
    assert resp["response_status"].native == "successful"
    assert resp["response_bytes"]["response_type"].native == "basic_ocsp_response"
    basic = resp.basic_ocsp_response
    data = basic["tbs_response_data"]
    assert data["version"].native == "v1"
    assert data["responder_id"].name == "by_key"
    assert data["responder_id"].native == rs.key_hash
    assert ts(data["produced_at"].native) == now
    singles = list(data["responses"])
    assert len(singles) == 4
    for single, answer in zip(singles, answers, strict=True):
        assert single["cert_id"].dump() == answer.cert_id_der
        assert ts(single["this_update"].native) == now - 5
        assert ts(single["next_update"].native) == now + 3600
        assert single["single_extensions"].native is None
    assert singles[0]["cert_status"].name == "good"
    assert singles[1]["cert_status"].name == "revoked"
    assert ts(singles[1]["cert_status"].chosen["revocation_time"].native) == revoked_at
    assert singles[1]["cert_status"].chosen["revocation_reason"].native == "key_compromise"
    assert singles[2]["cert_status"].name == "unknown"
    assert singles[3]["cert_status"].chosen["revocation_reason"].native is None
    assert [e["extn_id"].native for e in data["response_extensions"]] == ["nonce"]
    assert data["response_extensions"][0]["critical"].native is False
    assert data["response_extensions"][0]["extn_value"].parsed.native == b"x" * 20
    assert basic["signature_algorithm"].dump() == SHA256_RSA
    assert [c.dump() for c in basic["certs"]] == [
        pki.signer_cert.public_bytes(serialization.Encoding.DER)
    ]
    # cryptography: parse and verify the signature with the signer's key
    parsed = ocsp.load_der_ocsp_response(der)
    assert parsed.responder_key_hash == rs.key_hash
    assert parsed.certificates == [pki.signer_cert]
    assert parsed.tbs_response_bytes == data.dump()
    pki.signer_cert.public_key().verify(  # type: ignore[union-attr]
        parsed.signature, parsed.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
    )
    statuses = [r.certificate_status for r in parsed.responses]
    assert statuses == [
        ocsp.OCSPCertStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED,
        ocsp.OCSPCertStatus.UNKNOWN,
        ocsp.OCSPCertStatus.REVOKED,
    ]
    assert [r.serial_number for r in parsed.responses] == [
        *(leaf.serial_number for leaf in pki.leaves),
        0x7777,
    ]
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"x" * 20


def test_echoes_request_cert_ids(pki: Pki, rs: ResponseSigner) -> None:
    """A fresh answer echoes the request's CertID bytes, whatever their parameters encoding."""
    absent = bytes.fromhex("300706052b0e03021a")  # sha1 without NULL parameters
    name_hash, key_hash = issuer_hashes(pki.ca, "sha1")
    body = absent + b"\x04\x14" + name_hash + b"\x04\x14" + key_hash + der_integer(5)
    cert_id = b"\x30" + bytes((len(body),)) + body
    request = b"\x30" + bytes((len(cert_id) + 6,)) + b"\x30" + bytes((len(cert_id) + 4,))
    request += b"\x30" + bytes((len(cert_id) + 2,)) + b"\x30" + bytes((len(cert_id),)) + cert_id
    parsed = parse_request(request, max_certids=1)
    t = ts(_now())
    der = rs.sign_response(
        [SingleAnswer(parsed.cert_ids[0].der, CertStatus.GOOD)],
        produced_at=t,
        this_update=t,
        next_update=t + 1,
    )
    assert cert_id in der
    assert ocsp.load_der_ocsp_response(der).serial_number == 5


def test_response_data_and_assemble(pki: Pki) -> None:
    signer = pki.signer()
    rs = ResponseSigner(signer, include_certificate=False)
    t = ts(_now())
    answers = [SingleAnswer(pki.cert_id(pki.leaves[0]), CertStatus.GOOD)]
    kw = {"produced_at": t, "this_update": t, "next_update": t + 10}
    data = rs.response_data(answers, **kw)
    der = rs.sign_response(answers, **kw)
    assert signer.calls == 1
    assert der == rs.assemble(data, signer.sign(data))
    parsed = ocsp.load_der_ocsp_response(der)
    assert parsed.certificates == []
    assert parsed.tbs_response_bytes == data


@pytest.mark.parametrize(
    ("answers", "kw"),
    [
        ([], {}),
        ([SingleAnswer(b"", 3)], {}),  # type: ignore[arg-type]  # not a CertStatus
        ([SingleAnswer(b"", "good")], {}),  # type: ignore[arg-type]  # its value, not the member
        ([SingleAnswer(b"", CertStatus.REVOKED, 0, 7)], {}),
        ([SingleAnswer(b"", CertStatus.REVOKED, 0, 11)], {}),
        ([SingleAnswer(b"", CertStatus.REVOKED, -1, 1)], {}),
        ([SingleAnswer(b"", CertStatus.GOOD)], {"nonce": b""}),
        ([SingleAnswer(b"", CertStatus.GOOD)], {"next_update": 253402300800}),
    ],
)
def test_rejects(rs: ResponseSigner, answers: list[SingleAnswer], kw: dict[str, object]) -> None:
    args: dict[str, object] = {"produced_at": 0, "this_update": 0, "next_update": 0, **kw}
    with pytest.raises(ValueError):
        rs.response_data(answers, **args)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sha1", "sha256"]),
            st.integers(1, 2**159),
            st.sampled_from(list(CertStatus)),
            st.integers(0, 253402300799),
            st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 253402300799),
    st.none() | st.binary(min_size=1, max_size=128),
)
def test_generated_responses_decode(
    rs: ResponseSigner,
    rows: list[tuple[str, int, CertStatus, int, int | None]],
    when: int,
    nonce: bytes | None,
) -> None:
    answers = [
        SingleAnswer(cert_id_der(alg, b"\x01" * n, b"\x02" * n, serial), status, at, reason)
        for (alg, serial, status, at, reason), n in (
            (row, 20 if row[0] == "sha1" else 32) for row in rows
        )
    ]
    data = rs.response_data(
        answers, produced_at=when, this_update=when // 2, next_update=when, nonce=nonce
    )
    der = rs.assemble(data, b"\x55" * 256)
    basic = a_ocsp.OCSPResponse.load(der).basic_ocsp_response
    assert basic["tbs_response_data"].dump() == data
    assert basic["signature"].native == b"\x55" * 256
    singles = list(basic["tbs_response_data"]["responses"])
    for single, answer in zip(singles, answers, strict=True):
        assert single["cert_id"].dump() == answer.cert_id_der
        status = single["cert_status"]
        assert status.name == answer.status.value
        if answer.status is CertStatus.REVOKED:
            assert ts(status.chosen["revocation_time"].native) == answer.revoked_at
            code = status.chosen["revocation_reason"]
            assert (code.native is None) == (not answer.reason)
            if answer.reason:
                assert code.dump()[-1] == answer.reason
        assert ts(single["this_update"].native) == when // 2
    exts = basic["tbs_response_data"]["response_extensions"]
    if nonce is None:
        assert exts.native is None
    else:
        assert exts[0]["extn_value"].parsed.native == nonce
    reparsed = a_ocsp.OCSPResponse.load(der)
    assert reparsed.dump(force=True) == der  # asn1crypto re-encodes to the same DER


# --- openssl verifies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    d: Path = tmp_path_factory.mktemp("ocsp-pki")
    (d / "ca.pem").write_bytes(pki.ca.public_bytes(serialization.Encoding.PEM))
    for i, leaf in enumerate(pki.leaves):
        (d / f"leaf{i}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return d


def openssl_check(d: Path, resp: bytes, *extra: str) -> str:
    assert OPENSSL is not None
    (d / "resp.der").write_bytes(resp)
    args = [OPENSSL, "ocsp", "-respin", str(d / "resp.der"), "-issuer", str(d / "ca.pem")]
    args += ["-CAfile", str(d / "ca.pem"), "-resp_text", *extra]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


@pytest.mark.interop
@pytest.mark.parametrize("reason", [None, 1, 3, 5])
def test_openssl_verifies(pki: Pki, rs: ResponseSigner, pki_dir: Path, reason: int | None) -> None:
    now = _now()
    t = ts(now)
    revoked_at = t - 86400 * 2 - 3
    answers = [
        SingleAnswer(pki.cert_id(pki.leaves[0]), CertStatus.GOOD),
        SingleAnswer(pki.cert_id(pki.leaves[1]), CertStatus.REVOKED, revoked_at, reason),
        SingleAnswer(pki.cert_id(pki.leaves[2]), CertStatus.UNKNOWN),
    ]
    der = rs.sign_response(answers, produced_at=t, this_update=t - 60, next_update=t + 3600)
    certs = [a for i in range(3) for a in ("-cert", str(pki_dir / f"leaf{i}.pem"))]
    text = openssl_check(pki_dir, der, "-no_nonce", *certs)
    assert "Response verify OK" in text
    assert "Responder Id: " + rs.key_hash.hex().upper() in text
    assert re.search(r"leaf0\.pem: good", text)
    assert re.search(r"leaf1\.pem: revoked", text)
    assert re.search(r"leaf2\.pem: unknown", text)
    assert "WARNING" not in text
    stamp = lambda x: (now + dt.timedelta(seconds=x)).strftime("%b %e %H:%M:%S %Y GMT")  # noqa: E731
    assert f"This Update: {stamp(-60)}" in text
    assert f"Next Update: {stamp(3600)}" in text
    assert f"Revocation Time: {stamp(revoked_at - t)}" in text
    if reason is None:
        assert "Reason:" not in text
    else:
        assert f"Reason: {OPENSSL_REASON[reason]}" in text


@pytest.mark.interop
def test_openssl_checks_the_nonce(pki: Pki, rs: ResponseSigner, pki_dir: Path) -> None:
    """openssl builds a request with a nonce; we parse it and echo the nonce; openssl accepts."""
    assert OPENSSL is not None
    req_path = pki_dir / "req.der"
    args = [OPENSSL, "ocsp", "-issuer", str(pki_dir / "ca.pem")]
    for i in range(3):
        args += ["-cert", str(pki_dir / f"leaf{i}.pem")]
    subprocess.run([*args, "-reqout", str(req_path)], check=True, capture_output=True)
    req = parse_request(req_path.read_bytes(), max_certids=4)
    assert req.nonce is not None
    t = ts(_now())
    answers = [SingleAnswer(c.der, CertStatus.GOOD) for c in req.cert_ids]

    def sign(nonce: bytes | None) -> bytes:
        return rs.sign_response(
            answers, produced_at=t, this_update=t, next_update=t + 600, nonce=nonce
        )

    text = openssl_check(pki_dir, sign(req.nonce), "-reqin", str(req_path))
    assert "Response verify OK" in text
    assert "WARNING: no nonce in response" not in text
    assert "nonce verify error" not in text.lower()
    assert text.count("Cert Status: good") == 3
    # A wrong nonce fails openssl's check: the test can fail.
    (pki_dir / "resp.der").write_bytes(sign(bytes(b ^ 0xFF for b in req.nonce)))
    cmd = [OPENSSL, "ocsp", "-respin", str(pki_dir / "resp.der"), "-reqin", str(req_path)]
    cmd += ["-issuer", str(pki_dir / "ca.pem"), "-CAfile", str(pki_dir / "ca.pem")]
    bad = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "nonce verify error" in (bad.stdout + bad.stderr).lower()
    # And no nonce at all is reported.
    no_nonce = openssl_check(pki_dir, sign(None), "-reqin", str(req_path))
    assert "WARNING: no nonce in response" in no_nonce


@pytest.mark.interop
def test_openssl_rejects_a_tampered_response(pki: Pki, rs: ResponseSigner, pki_dir: Path) -> None:
    t = ts(_now())
    der = rs.sign_response(
        [SingleAnswer(pki.cert_id(pki.leaves[0]), CertStatus.GOOD)],
        produced_at=t,
        this_update=t,
        next_update=t + 600,
    )
    tampered = der.replace(b"\x80\x00", b"\x82\x00", 1)  # good -> unknown, signature unchanged
    assert tampered != der
    assert OPENSSL is not None
    (pki_dir / "resp.der").write_bytes(tampered)
    cmd = [
        OPENSSL,
        "ocsp",
        "-respin",
        str(pki_dir / "resp.der"),
        "-issuer",
        str(pki_dir / "ca.pem"),
    ]
    cmd += ["-CAfile", str(pki_dir / "ca.pem"), "-cert", str(pki_dir / "leaf0.pem")]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    assert "Response Verify Failure" in out.stdout + out.stderr


@pytest.mark.interop
def test_gnutls_ocsptool_verifies(pki: Pki, rs: ResponseSigner, pki_dir: Path) -> None:
    ocsptool = shutil.which("ocsptool")
    if ocsptool is None:
        pytest.skip("gnutls-bin (ocsptool) not installed")
    t = ts(_now())
    der = rs.sign_response(
        multi_answers(pki, t - 100),
        produced_at=t,
        this_update=t,
        next_update=t + 600,
        nonce=b"\x01\x02\x03",
    )
    (pki_dir / "gnutls.der").write_bytes(der)
    cmd = [ocsptool, "-e", "--load-trust", str(pki_dir / "ca.pem")]
    cmd += ["--load-response", str(pki_dir / "gnutls.der"), "--inder"]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Verifying OCSP Response: Success" in text
    assert "Responder Key ID: " + rs.key_hash.hex() in text
    assert "Nonce: 010203" in text
    statuses = re.findall(r"Certificate Status: (\w+)", text)
    assert statuses == ["good", "revoked", "unknown", "revoked"]
