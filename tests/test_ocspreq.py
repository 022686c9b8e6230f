"""Tests of crlbuilder.ocsp.request: OCSP request parsing and the GET form.

Requests come from three independent encoders (cryptography's
OCSPRequestBuilder, `openssl ocsp -reqout`, asn1crypto) and are checked
field by field against cryptography's and asn1crypto's decoders; broken
inputs (random bytes, truncations, bit flips) must give a parse or a
RequestError, never anything else.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from asn1crypto import core as a_core
from asn1crypto import ocsp as a_ocsp
from asn1crypto import x509 as a_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crlbuilder.der import DerError
from crlbuilder.ocsp import request as ocspreq
from crlbuilder.ocsp.request import (
    CertId,
    OcspRequest,
    RequestError,
    decode_get_path,
    parse_request,
)
from crlbuilder.ocsp.response import ResponseStatus, cert_id_der, issuer_hashes
from tests.support.pki import START, Ca, certificate, rsa_key

OPENSSL = shutil.which("openssl")
SHA384_OID = "2.16.840.1.101.3.4.2.2"

# --- a small PKI ---------------------------------------------------------------


class Pki:
    """A CA, two leaves and a party certificate (the party signs requests)."""

    def __init__(self) -> None:
        self.ca_key = rsa_key()
        self.party_key = rsa_key()
        ca = Ca(self.ca_key, certificate("Test OCSP CA", self.ca_key, serial=1, ca=True, days=31))
        self.ca = ca.cert
        self.leaves = [
            ca.issue(f"leaf {s}", self.ca_key, serial=s, days=31) for s in (5, 0x80, 2**150 + 3)
        ]
        self.party = ca.issue("party", self.party_key, serial=99, days=31)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crypto_request(
    pki: Pki, leaf: x509.Certificate, alg: hashes.HashAlgorithm, nonce: bytes | None
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, pki.ca, alg)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def parse(der: bytes, **kw: Any) -> OcspRequest:
    kw.setdefault("max_certids", 8)
    return parse_request(der, **kw)


def a_request(
    cert_ids: list[dict[str, Any]],
    *,
    nonce: bytes | None = None,
    extensions: list[dict[str, Any]] | None = None,
    requestor: a_x509.GeneralName | None = None,
    signature: dict[str, Any] | None = None,
) -> bytes:
    """An OCSPRequest encoded by asn1crypto."""
    tbs: dict[str, Any] = {"request_list": [{"req_cert": c} for c in cert_ids]}
    exts = list(extensions or [])
    if nonce is not None:
        exts.insert(0, {"extn_id": "nonce", "critical": False, "extn_value": nonce})
    if exts:
        tbs["request_extensions"] = exts
    if requestor is not None:
        tbs["requestor_name"] = requestor
    req: dict[str, Any] = {"tbs_request": tbs}
    if signature is not None:
        req["optional_signature"] = signature
    return bytes(a_ocsp.OCSPRequest(req).dump())


def cid(alg: str = "sha1", serial: int = 5, size: int | None = None) -> dict[str, Any]:
    n = size if size is not None else {"sha1": 20, "sha256": 32, "sha384": 48}[alg]
    return {
        "hash_algorithm": {"algorithm": alg},
        "issuer_name_hash": b"\x11" * n,
        "issuer_key_hash": b"\x22" * n,
        "serial_number": serial,
    }


CANONICAL = bytes.fromhex(
    "3043304130" "3f303d303b300906052b0e03021a0500"
    "0414711d397671c9facf2242095925979a0698e46b11"
    "0414e0a2105cc209d30f2ea55d414498c97150f89253"
    "02023039"
)  # fmt: skip


# --- against cryptography ----------------------------------------------------------


@pytest.mark.parametrize("alg", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])
@pytest.mark.parametrize("nonce", [None, b"\x01", b"n" * 32, bytes(range(128))])
def test_cryptography_requests(pki: Pki, alg: hashes.HashAlgorithm, nonce: bytes | None) -> None:
    for leaf in pki.leaves:
        der = crypto_request(pki, leaf, alg, nonce)
        expected = ocsp.load_der_ocsp_request(der)
        got = parse(der)
        assert len(got.cert_ids) == 1
        c = got.cert_ids[0]
        assert c.hash_alg == alg.name
        assert c.issuer_name_hash == expected.issuer_name_hash
        assert c.issuer_key_hash == expected.issuer_key_hash
        assert c.serial == expected.serial_number == leaf.serial_number
        assert (c.issuer_name_hash, c.issuer_key_hash) == issuer_hashes(pki.ca, alg.name)
        assert c.der == cert_id_der(alg.name, c.issuer_name_hash, c.issuer_key_hash, c.serial)
        assert c.der in der
        assert got.nonce == nonce
        assert got.requestor_name is None
        assert got.signature is None
        assert got.unknown_extensions == ()


def test_canonical_fast_path_agrees_with_walk(pki: Pki) -> None:
    for alg in (hashes.SHA1(), hashes.SHA256()):
        for leaf in pki.leaves:
            der = crypto_request(pki, leaf, alg, None)
            fast = ocspreq._canonical(der)
            assert fast is not None
            assert fast == ocspreq._parse(der, 1, 128)
    assert ocspreq._canonical(CANONICAL) == ocspreq._parse(CANONICAL, 1, 128)


# --- against openssl -------------------------------------------------------------


@pytest.fixture(scope="module")
def openssl_requests(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    d: Path = tmp_path_factory.mktemp("openssl-req")
    (d / "ca.pem").write_bytes(pem(pki.ca))
    (d / "party.pem").write_bytes(pem(pki.party))
    key = pki.party_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (d / "party.key").write_bytes(key)
    for i, leaf in enumerate(pki.leaves):
        (d / f"leaf{i}.pem").write_bytes(pem(leaf))
    base = [OPENSSL, "ocsp", "-issuer", str(d / "ca.pem")]
    certs = ["-cert", str(d / "leaf0.pem"), "-cert", str(d / "leaf1.pem")]
    certs += ["-serial", "0x123456789abcdef0", "-cert", str(d / "leaf2.pem")]
    runs = {
        "multi-nonce": [*certs],
        "multi-sha256": ["-sha256", *certs],
        "single-no-nonce": ["-no_nonce", "-cert", str(d / "leaf0.pem")],
        "signed": [
            "-signer",
            str(d / "party.pem"),
            "-signkey",
            str(d / "party.key"),
            *certs,
        ],
    }
    out = {}
    for name, args in runs.items():
        path = d / f"{name}.der"
        subprocess.run([*base, *args, "-reqout", str(path)], check=True, capture_output=True)
        out[name] = path.read_bytes()
    return out


def assert_agrees_with_asn1crypto(der: bytes, got: OcspRequest) -> None:
    ref = a_ocsp.OCSPRequest.load(der)
    tbs = ref["tbs_request"]
    reqs = tbs["request_list"]
    assert len(got.cert_ids) == len(reqs)
    for c, r in zip(got.cert_ids, reqs, strict=True):
        rc = r["req_cert"]
        alg = rc["hash_algorithm"]["algorithm"]
        assert c.hash_alg == (alg.native if alg.native in ("sha1", "sha256") else alg.dotted)
        assert c.issuer_name_hash == rc["issuer_name_hash"].native
        assert c.issuer_key_hash == rc["issuer_key_hash"].native
        assert c.serial == rc["serial_number"].native
        assert c.der == rc.dump()
    nonce = ref.nonce_value
    assert got.nonce == (None if nonce is None else nonce.native)
    name = tbs["requestor_name"]
    assert got.requestor_name == (None if name.native is None else name.chosen.dump())
    sig = ref["optional_signature"]
    if sig.native is None:
        assert got.signature is None
    else:
        assert got.signature is not None
        assert got.signature.algorithm_oid == sig["signature_algorithm"]["algorithm"].dotted
        assert got.signature.algorithm_der == sig["signature_algorithm"].dump()
        assert got.signature.signature == sig["signature"].native
        assert got.signature.certs == tuple(c.dump() for c in sig["certs"])
        assert got.signature.tbs_request_der == tbs.dump()
    known = {"1.3.6.1.5.5.7.48.1.2", "1.3.6.1.5.5.7.48.1.4", "1.3.6.1.5.5.7.48.1.8"}
    exts = tbs["request_extensions"]
    others = [e["extn_id"].dotted for e in exts] if exts.native is not None else []
    assert got.unknown_extensions == tuple(o for o in others if o not in known)


@pytest.mark.interop
def test_openssl_requests(pki: Pki, openssl_requests: dict[str, bytes]) -> None:
    for name, der in openssl_requests.items():
        got = parse(der)
        assert_agrees_with_asn1crypto(der, got)
        serials = [c.serial for c in got.cert_ids]
        if name == "single-no-nonce":
            assert serials == [5]
            assert got.nonce is None
            assert ocspreq._canonical(der) == got
            continue
        assert serials == [5, 0x80, 0x123456789ABCDEF0, 2**150 + 3]
        assert got.nonce is not None and len(got.nonce) == 16  # openssl's default nonce
        alg = "sha256" if name == "multi-sha256" else "sha1"
        for c in got.cert_ids:
            assert c.hash_alg == alg
            assert (c.issuer_name_hash, c.issuer_key_hash) == issuer_hashes(pki.ca, alg)
        with pytest.raises(RequestError) as err:
            parse(der, max_certids=3)
        assert err.value.status == ResponseStatus.MALFORMED_REQUEST
        assert parse(der, max_certids=4) == got


@pytest.mark.interop
def test_openssl_signed_request(pki: Pki, openssl_requests: dict[str, bytes]) -> None:
    got = parse(openssl_requests["signed"])
    sig = got.signature
    assert sig is not None
    assert sig.algorithm_oid == "1.2.840.113549.1.1.11"
    assert sig.certs == (pki.party.public_bytes(serialization.Encoding.DER),)
    pki.party.public_key().verify(  # type: ignore[union-attr]
        sig.signature, sig.tbs_request_der, padding.PKCS1v15(), hashes.SHA256()
    )
    # requestorName is the signer's subject as a directoryName [4].
    assert got.requestor_name is not None
    name = a_x509.GeneralName.load(got.requestor_name)
    assert name.name == "directory_name"
    assert name.chosen.dump() == got.requestor_name  # [4] EXPLICIT Name
    assert got.requestor_name.endswith(pki.party.subject.public_bytes())


# --- against asn1crypto, generated ---------------------------------------------------------


def general_names() -> st.SearchStrategy[a_x509.GeneralName]:
    return st.one_of(
        st.builds(
            lambda h: a_x509.GeneralName(name="dns_name", value=h),
            st.from_regex(r"[a-z]{1,20}\.example", fullmatch=True),
        ),
        st.builds(
            lambda u: a_x509.GeneralName(name="uniform_resource_identifier", value=u),
            st.from_regex(r"https://[a-z]{1,30}/", fullmatch=True),
        ),
        st.builds(
            lambda cn: a_x509.GeneralName(
                name="directory_name", value=a_x509.Name.build({"common_name": cn})
            ),
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1),
        ),
    )


@st.composite
def generated_requests(draw: st.DrawFn) -> bytes:
    cert_ids = []
    for _ in range(draw(st.integers(1, 6))):
        alg = draw(st.sampled_from(["sha1", "sha256", "sha384"]))
        size = {"sha1": 20, "sha256": 32, "sha384": 48}[alg]
        c: dict[str, Any] = {
            "hash_algorithm": {"algorithm": alg},
            "issuer_name_hash": draw(st.binary(min_size=size, max_size=size)),
            "issuer_key_hash": draw(st.binary(min_size=size, max_size=size)),
            "serial_number": draw(
                st.one_of(st.integers(1, 2**160), st.integers(-(2**200), 2**200))
            ),
        }
        if draw(st.booleans()):
            c["hash_algorithm"]["parameters"] = None  # absent instead of NULL
        cert_ids.append(c)
    extensions = []
    if draw(st.booleans()):
        extensions.append(
            {"extn_id": "1.2.3.4.5", "critical": False, "extn_value": draw(st.binary(max_size=40))}
        )
    if draw(st.booleans()):
        extensions.append(
            {
                "extn_id": "acceptable_responses",
                "critical": draw(st.booleans()),
                "extn_value": ["basic_ocsp_response"],
            }
        )
    signature = None
    if draw(st.booleans()):
        signature = {
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature": draw(st.binary(min_size=1, max_size=300)),
        }
        if draw(st.booleans()):
            certs = [a_x509.Certificate.load(c) for c in draw(st.sampled_from(CERT_SETS))]
            signature["certs"] = certs
    return a_request(
        cert_ids,
        nonce=draw(st.none() | st.binary(min_size=1, max_size=128)),
        extensions=extensions,
        requestor=draw(st.none() | general_names()),
        signature=signature,
    )


def _cert_sets() -> list[list[bytes]]:
    key = rsa_key(1024)
    cert = certificate("requestor", key, serial=7, not_before=START, days=1).public_bytes(
        serialization.Encoding.DER
    )
    return [[], [cert], [cert, cert]]


CERT_SETS = _cert_sets()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_requests())
def test_agrees_with_asn1crypto(der: bytes) -> None:
    got = parse(der)
    assert_agrees_with_asn1crypto(der, got)
    assert ocspreq._parse(der, 8, 128) == got
    fast = ocspreq._canonical(der)
    assert fast is None or fast == got


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["sha1", "sha256"]),
    st.integers(-(2**159), 2**159),
    st.binary(min_size=32, max_size=32),
)
def test_canonical_requests(alg: str, serial: int, h: bytes) -> None:
    size = 20 if alg == "sha1" else 32
    der = a_request([{**cid(alg, serial), "issuer_name_hash": h[:size]}])
    got = parse(der)
    assert got.cert_ids[0].serial == serial
    assert got.cert_ids[0].issuer_name_hash == h[:size]
    assert got.cert_ids[0].der == cert_id_der(alg, h[:size], b"\x22" * size, serial)
    fast = ocspreq._canonical(der)
    if len(der) < 130:
        assert fast == got
    else:
        assert fast is None


# --- decisions -----------------------------------------------------------------------------


def test_other_hash_algorithm_is_well_formed_and_names_no_issuer() -> None:
    """RFC 6960 §2.3: a CertID hashed with an algorithm we do not index is parsed (not
    malformed), keeps its OID, and matches no issuer key: the app answers unauthorized
    (tests/test_responder_interop.py::test_unknown_certid_hash_algorithm_is_unauthorized)."""
    got = parse(a_request([cid("sha384"), cid("sha1")]))
    assert [c.hash_alg for c in got.cert_ids] == [SHA384_OID, "sha1"]
    assert "unauthorized" in ocspreq_doc_decision()


def ocspreq_doc_decision() -> str:
    """The docstring's decision about other hash algorithms (it must name the answer given).

    Read from the source: a module compiled by the native build (`make compiled`) has no
    ``__doc__``."""
    import ast

    import crlbuilder

    source = Path(crlbuilder.__file__).parent / "ocsp" / "request.py"
    doc = ast.get_docstring(ast.parse(source.read_text())) or ""
    start = doc.index("- CertID hash algorithms")
    return doc[start : doc.index("- Extensions", start)]


def test_unknown_noncritical_extensions_are_listed() -> None:
    exts = [
        {"extn_id": "1.2.3.4.5", "critical": False, "extn_value": b"x"},
        {"extn_id": "2.999.1", "critical": False, "extn_value": b""},
    ]
    got = parse(a_request([cid()], nonce=b"abc", extensions=exts))
    assert got.unknown_extensions == ("1.2.3.4.5", "2.999.1")
    assert got.nonce == b"abc"


def test_known_critical_extension_is_fine() -> None:
    ext = {
        "extn_id": "acceptable_responses",
        "critical": True,
        "extn_value": ["basic_ocsp_response"],
    }
    assert parse(a_request([cid()], extensions=[ext])).unknown_extensions == ()


def test_single_request_extensions() -> None:
    der = a_request([cid()])
    ref = a_ocsp.OCSPRequest.load(der)
    # a non-critical unknown single-request extension is ignored ...
    ref["tbs_request"]["request_list"][0]["single_request_extensions"] = [
        {"extn_id": "1.2.3.4", "critical": False, "extn_value": b"v"}
    ]
    got = parse(ref.dump(force=True))
    assert (
        got.cert_ids[0].der
        == a_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"][0]["req_cert"].dump()
    )
    # ... a critical one is not
    ref["tbs_request"]["request_list"][0]["single_request_extensions"] = [
        {"extn_id": "1.2.3.4", "critical": True, "extn_value": b"v"}
    ]
    with pytest.raises(RequestError):
        parse(ref.dump(force=True))


def test_explicit_v1_is_accepted() -> None:
    # version [0] EXPLICIT INTEGER 0 written out although DER omits the DEFAULT
    body = CANONICAL[4:]  # requestList
    tbs = b"\xa0\x03\x02\x01\x00" + body
    der = b"\x30" + bytes((len(tbs) + 2,)) + b"\x30" + bytes((len(tbs),)) + tbs
    assert parse(der).cert_ids == parse(CANONICAL).cert_ids


# --- malformed requests -----------------------------------------------------------------------


def rewrap_tbs(tbs_content: bytes, tail: bytes = b"") -> bytes:
    """An OCSPRequest around the given TBSRequest content (short lengths only)."""
    tbs = b"\x30" + bytes((len(tbs_content),)) + tbs_content
    body = tbs + tail
    return b"\x30" + bytes((len(body),)) + body


def nonce_ext(value: bytes, *, critical: bool = False) -> bytes:
    ext = bytes.fromhex("06092b0601050507300102") + (b"\x01\x01\xff" if critical else b"")
    ext += b"\x04" + bytes((len(value),)) + value
    return b"\x30" + bytes((len(ext),)) + ext


def exts(*items: bytes) -> bytes:
    seq = b"".join(items)
    seq = b"\x30" + bytes((len(seq),)) + seq
    return b"\xa2" + bytes((len(seq),)) + seq


REQUEST_LIST = CANONICAL[4:]
CERTID_BODY = CANONICAL[10:-4]


def seq(content: bytes) -> bytes:
    return b"\x30" + bytes((len(content),)) + content


def certid_request(serial_tlv: bytes, body: bytes = CERTID_BODY) -> bytes:
    """A one-CertID request with the given serialNumber TLV (short lengths only)."""
    return seq(seq(seq(seq(seq(body + serial_tlv)))))


MALFORMED = {
    "empty": b"",
    "one byte": b"\x30",
    "trailing data": CANONICAL + b"\x00",
    "wrong outer tag": b"\x31" + CANONICAL[1:],
    "indefinite length": b"\x30\x80" + CANONICAL[2:] + b"\x00\x00",
    "non-minimal length": b"\x30\x81\x43" + CANONICAL[2:],
    "high tag number": b"\x30\x03\x1f\x01\x00",
    "no CertID": rewrap_tbs(b"\x30\x00"),
    "version 2": rewrap_tbs(b"\xa0\x03\x02\x01\x01" + REQUEST_LIST),
    "non-minimal serial": certid_request(b"\x02\x03\x00\x30\x39"),
    "non-minimal negative serial": certid_request(b"\x02\x02\xff\x80"),
    "empty serial": certid_request(b"\x02\x00"),
    "serial not an INTEGER": certid_request(b"\x04\x02\x30\x39"),
    "CertID with extra field": certid_request(b"\x02\x02\x30\x39\x05\x00"),
    "empty nonce": rewrap_tbs(REQUEST_LIST + exts(nonce_ext(b"\x04\x00"))),
    "nonce 129": a_request([cid()], nonce=b"n" * 129),
    "nonce not an OCTET STRING": rewrap_tbs(REQUEST_LIST + exts(nonce_ext(b"\x02\x01\x05"))),
    "nonce raw": rewrap_tbs(REQUEST_LIST + exts(nonce_ext(b"abcdefgh"))),
    "duplicate nonce": rewrap_tbs(
        REQUEST_LIST + exts(nonce_ext(b"\x04\x01a"), nonce_ext(b"\x04\x01b"))
    ),
    "critical unknown extension": a_request(
        [cid()], extensions=[{"extn_id": "1.2.3.4", "critical": True, "extn_value": b"x"}]
    ),
    "sha1 hash of 19 bytes": a_request([cid("sha1", size=19)]),
    "sha256 hash of 20 bytes": a_request([cid("sha256", size=20)]),
    "sha1 with INTEGER parameters": CANONICAL.replace(
        bytes.fromhex("300906052b0e03021a0500"), bytes.fromhex("300906052b0e03021a0200")
    ),
    "signature with unused bits": rewrap_tbs(
        REQUEST_LIST,
        bytes.fromhex("a0133011300b06092a864886f70d01010b030201fe"),
    ),
    "unknown request field": rewrap_tbs(REQUEST_LIST + b"\xa3\x02\x05\x00"),
    "empty extension OID": rewrap_tbs(REQUEST_LIST + exts(b"\x30\x04\x06\x00\x04\x00")),
    "bad requestorName": rewrap_tbs(b"\xa1\x02\x05\x00" + REQUEST_LIST),
}


REASONS = {
    "CertID with extra field": "bad serialNumber",
    "bad requestorName": "bad requestorName",
    "critical unknown extension": "unsupported critical extension",
    "duplicate nonce": "duplicate extension",
    "empty": "truncated",
    "empty extension OID": "bad object identifier",
    "empty nonce": "nonce length",
    "empty serial": "empty integer",
    "high tag number": "multi-byte tag",
    "indefinite length": "indefinite length",
    "no CertID": "no CertID",
    "non-minimal length": "non-minimal length",
    "non-minimal negative serial": "non-minimal integer",
    "non-minimal serial": "non-minimal integer",
    "nonce 129": "nonce length",
    "nonce not an OCTET STRING": "bad nonce",
    "nonce raw": "truncated",
    "one byte": "truncated",
    "serial not an INTEGER": "bad serialNumber",
    "sha1 hash of 19 bytes": "bad CertID hashes",
    "sha1 with INTEGER parameters": "bad hashAlgorithm parameters",
    "sha256 hash of 20 bytes": "bad CertID hashes",
    "signature with unused bits": "bad signature value",
    "trailing data": "trailing data",
    "unknown request field": "bad requestExtensions",
    "version 2": "unsupported version",
    "wrong outer tag": "not an OCSPRequest",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name: str) -> None:
    with pytest.raises(RequestError) as err:
        parse(MALFORMED[name])
    assert err.value.status == ResponseStatus.MALFORMED_REQUEST == 1
    assert err.value.reason == REASONS[name]  # each case fails for the rule it breaks


def test_malformed_corpus_is_otherwise_valid() -> None:
    """The hand-made corpus breaks one rule each: fixing it parses (so the tests can fail)."""
    assert parse(rewrap_tbs(REQUEST_LIST + exts(nonce_ext(b"\x04\x01a")))).nonce == b"a"
    assert parse(a_request([cid()], nonce=b"n" * 128)).nonce == b"n" * 128
    assert parse(rewrap_tbs(REQUEST_LIST)) == parse(CANONICAL)
    assert certid_request(b"\x02\x02\x30\x39") == CANONICAL
    assert parse(certid_request(b"\x02\x02\x00\x80")).cert_ids[0].serial == 128
    assert parse(certid_request(b"\x02\x01\x80")).cert_ids[0].serial == -128
    signed = rewrap_tbs(REQUEST_LIST, bytes.fromhex("a0133011300b06092a864886f70d01010b030200ff"))
    assert parse(signed).signature is not None


def test_limits() -> None:
    der = a_request([cid(serial=i) for i in range(1, 6)], nonce=b"x" * 33)
    assert len(parse(der, max_certids=5).cert_ids) == 5
    with pytest.raises(RequestError):
        parse(der, max_certids=4)
    with pytest.raises(RequestError):
        parse(der, max_nonce=32)
    assert parse(der, max_nonce=33).nonce == b"x" * 33
    with pytest.raises(ValueError):
        parse(der, max_certids=0)


# --- nothing but RequestError -------------------------------------------------------------


def seeds(pki: Pki) -> list[bytes]:
    out = [CANONICAL]
    for alg in (hashes.SHA1(), hashes.SHA256()):
        out.append(crypto_request(pki, pki.leaves[2], alg, b"nonce-" * 5))
    out.append(
        a_request(
            [cid(), cid("sha384", serial=-7)],
            nonce=b"q",
            extensions=[{"extn_id": "1.2.3", "critical": False, "extn_value": b"z"}],
            requestor=a_x509.GeneralName(name="dns_name", value="a.example"),
            signature={
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": b"s" * 64,
                "certs": [a_x509.Certificate.load(CERT_SETS[1][0])],
            },
        )
    )
    return out


def only_request_errors(der: bytes) -> OcspRequest | None:
    """Run the walker and the fast path without parse_request's safety net.

    The walker raises RequestError, or DerError from the shared header reader, which
    parse_request turns into a RequestError with the same fixed reason.
    """
    fast = ocspreq._canonical(der)
    try:
        walked = ocspreq._parse(der, 8, 128)
    except (RequestError, DerError) as exc:
        if isinstance(exc, RequestError):
            assert exc.status == ResponseStatus.MALFORMED_REQUEST
        assert fast is None
        with pytest.raises(RequestError) as refused:
            parse_request(der, max_certids=8)
        assert refused.value.reason == exc.reason
        return None
    assert fast is None or fast == walked
    assert parse_request(der, max_certids=8) == walked
    return walked


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
@example(b"\x30\x02\x30\x00")
@example(b"\x30\x04\x30\x02\x30\x00")
@example(b"\x30\x06\x30\x04\x30\x02\x30\x00")
@example(b"\x30\x08\x30\x06\x30\x04\x30\x02\x30\x00")
def test_random_bytes(der: bytes) -> None:
    only_request_errors(der)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncations_and_bit_flips(pki_seeds: list[bytes], data: st.DataObject) -> None:
    der = data.draw(st.sampled_from(pki_seeds))
    cut = data.draw(st.integers(0, len(der)))
    only_request_errors(der[:cut])
    flipped = bytearray(der)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(der) - 1))
        flipped[pos] ^= 1 << data.draw(st.integers(0, 7))
    only_request_errors(bytes(flipped))
    pos = data.draw(st.integers(0, len(der) - 1))
    only_request_errors(der[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + der[pos:])


def test_every_truncation(pki_seeds: list[bytes]) -> None:
    for der in pki_seeds:
        for cut in range(len(der)):
            with pytest.raises(RequestError):
                parse(der[:cut])


@pytest.fixture(scope="module")
def pki_seeds(pki: Pki) -> list[bytes]:
    return seeds(pki)


def test_every_single_bit_flip_of_canonical() -> None:
    ok = 0
    for pos in range(len(CANONICAL)):
        for bit in range(8):
            flipped = bytearray(CANONICAL)
            flipped[pos] ^= 1 << bit
            if only_request_errors(bytes(flipped)) is not None:
                ok += 1
    assert ok > 0  # flips inside the hashes and the serial still parse


# --- GET -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda d: quote(base64.b64encode(d).decode(), safe=""),
        lambda d: base64.b64encode(d).decode(),  # '/' and '+' left unescaped
        lambda d: base64.urlsafe_b64encode(d).decode(),
        lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="),
        lambda d: base64.b64encode(d).decode().rstrip("="),
        lambda d: quote(base64.b64encode(d).decode(), safe="/"),
    ],
)
def test_get_path(encode: Any) -> None:
    for der in (CANONICAL, CANONICAL + b"\xfb\xff", CANONICAL + b"\xfe"):
        assert decode_get_path(encode(der)) == der


@pytest.mark.parametrize(
    "path", ["", "====", "A", "ab!c", "%ZZab", "MEMw%", "a b c d", "日本語", "YQ=x", "A" * 5000]
)
def test_get_path_malformed(path: str) -> None:
    with pytest.raises(RequestError) as err:
        decode_get_path(path)
    assert err.value.status == ResponseStatus.MALFORMED_REQUEST


def test_get_path_from_the_request_line_bytes() -> None:
    """The app passes the request target's raw bytes (no text decoding): the same DER as
    the text form, for every encoding clients send."""
    for der in (CANONICAL, CANONICAL + b"\xfb\xff", CANONICAL + b"\xfe"):
        std = base64.b64encode(der).decode()
        url = base64.urlsafe_b64encode(der).decode().rstrip("=")
        for text in (std, quote(std, safe=""), url, quote(std, safe="/")):
            assert decode_get_path(text.encode()) == der == decode_get_path(text)


def test_rfc5019_5_get_path_from_a_responder_url_ending_in_a_slash() -> None:
    """RFC 5019 §5: a GET is ``{url}/{base64}``; a client given a responder URL that ends in
    ``/`` (``http://va.example/ocsp/``) sends ``/ocsp//MEMw...``. A request's base64 starts
    with ``M`` (its DER with 0x30), never ``/``, so the extra slashes name nothing else."""
    for der in (CANONICAL, CANONICAL + b"\xfe"):
        std = base64.b64encode(der).decode()
        for text in ("/" + std, "//" + std, "/" + quote(std, safe="")):
            assert decode_get_path(text.encode()) == der == decode_get_path(text)
    for lone in ("/", "//"):
        with pytest.raises(RequestError):
            decode_get_path(lone)


@pytest.mark.parametrize(
    "path", [b"\xff\xfe\xfd\xfc", b"%FF%FE%FD%FC", b"QUJD\xc3\xa9", b"QUJD%00"]
)
def test_get_path_bytes_outside_base64_refused(path: bytes) -> None:
    with pytest.raises(RequestError) as err:
        decode_get_path(path)
    assert err.value.status == ResponseStatus.MALFORMED_REQUEST


@given(st.text(max_size=200))
def test_get_path_only_request_errors(path: str) -> None:
    with contextlib.suppress(RequestError):
        decode_get_path(path)


@given(st.binary(max_size=200))
def test_get_path_bytes_only_request_errors(path: bytes) -> None:
    with contextlib.suppress(RequestError):
        decode_get_path(path)


def test_get_request_round_trip(pki: Pki) -> None:
    der = crypto_request(pki, pki.leaves[0], hashes.SHA1(), None)
    path = quote(base64.b64encode(der).decode(), safe="")
    assert parse(decode_get_path(path)).cert_ids[0].serial == 5


def test_certid_is_hashable_lookup_key() -> None:
    c = parse(CANONICAL).cert_ids[0]
    assert isinstance(c, CertId)
    table = {(c.hash_alg, c.issuer_name_hash, c.issuer_key_hash): "issuer"}
    assert table[(c.hash_alg, c.issuer_name_hash, c.issuer_key_hash)] == "issuer"
    assert a_core.Integer(c.serial).dump() in c.der
