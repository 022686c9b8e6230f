"""Signed OCSP requests find their requestor's key by index (issue 10.8).

Before, a signed request was checked against every registered signing key on the
event loop: with 300 registered keys an unregistered signed request cost 300 RSA
verifications. `Registry.request_signers` finds the candidates by requestorName (or
the attached certificate) first: an unknown requestor costs no signature check, a
known one exactly one.
"""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import algos as aalgos
from asn1crypto import ocsp as aocsp
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crlbuilder.model import Family
from crlbuilder.ocsp.request import RequestSignature, parse_request
from responder import access
from responder.registry.lookup import Registry
from responder.registry.schema import (
    Agreement,
    Notification,
    PartyEntry,
    RegistryFile,
    SignedRequestCredential,
    UserVerifierTitle,
)
from responder.registry.vocabulary import Method, Service
from tests.support.pki import certificate, rsa_key

REGISTERED = 300


def _entry(pid: str, cert_ref: str) -> PartyEntry:
    return PartyEntry(
        id=pid,
        name=pid,
        notification=Notification(address="a", office="o", start=dt.date(2024, 4, 1)),
        title=[UserVerifierTitle(category=1)],
        agreement=Agreement(
            services=[Service.AUTH_REVOCATION_INFO],
            families=[Family.AUTH_CARD],
            methods=[Method.OCSP],
            liability="l",
        ),
        credential=[SignedRequestCredential(cert=cert_ref)],
    )


def _signed_request(key: rsa.RSAPrivateKey, cert: x509.Certificate, *, name: bool = True) -> bytes:
    cid = aocsp.CertId(
        {
            "hash_algorithm": {"algorithm": "sha1"},
            "issuer_name_hash": b"\x01" * 20,
            "issuer_key_hash": b"\x02" * 20,
            "serial_number": 12345,
        }
    )
    tbs: dict[str, object] = {"request_list": [{"req_cert": cid}]}
    if name:
        subject = ax509.Name.load(cert.subject.public_bytes())
        tbs["requestor_name"] = ax509.GeneralName(name="directory_name", value=subject)
    tbs_req = aocsp.TBSRequest(tbs)
    signature = key.sign(tbs_req.dump(), padding.PKCS1v15(), hashes.SHA256())
    der_cert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return aocsp.OCSPRequest(
        {
            "tbs_request": tbs_req,
            "optional_signature": {
                "signature_algorithm": aalgos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}),
                "signature": signature,
                "certs": [der_cert],
            },
        }
    ).dump()


@pytest.fixture(scope="module")
def many(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Registry, rsa.RSAPrivateKey, x509.Certificate]:
    d = tmp_path_factory.mktemp("signers")
    entries = []
    first: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None
    for i in range(REGISTERED):
        key = rsa_key(1024)
        cert = certificate(f"party {i}", key)
        (d / f"p{i}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        entries.append(_entry(f"party-{i}", f"p{i}.pem"))
        if first is None:
            first = (key, cert)
    assert first is not None
    reg = Registry.build(RegistryFile(parties=entries), base=d, source=str(d / "r.toml"))
    return reg, first[0], first[1]


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, key: rsa.RSAPublicKey, sig: RequestSignature, algorithm: hashes.HashAlgorithm
    ) -> bool:
        self.calls += 1
        return access.verify_rsa(key, sig, algorithm)


def _who(reg: Registry, der: bytes) -> tuple[str | None, int]:
    count = Counting()
    party = access.by_signature(reg, parse_request(der, max_certids=8), verify=count)
    return (party.id if party else None), count.calls


def test_unregistered_signed_request_costs_no_signature_check(
    many: tuple[Registry, rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    reg = many[0]
    assert len(reg.signing_keys()) == REGISTERED
    stranger_key = rsa_key(1024)
    stranger = certificate("stranger", stranger_key)
    assert _who(reg, _signed_request(stranger_key, stranger)) == (None, 0)
    assert _who(reg, _signed_request(stranger_key, stranger, name=False)) == (None, 0)


def test_registered_signed_request_costs_exactly_one(
    many: tuple[Registry, rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    reg, key, cert = many
    assert _who(reg, _signed_request(key, cert)) == ("party-0", 1)
    assert _who(reg, _signed_request(key, cert, name=False)) == ("party-0", 1)  # by its cert
    # a stranger naming a registered party (and attaching its public certificate) is checked
    # against that one key only, and refused
    stranger_key = rsa_key(1024)
    assert _who(reg, _signed_request(stranger_key, cert)) == (None, 1)
