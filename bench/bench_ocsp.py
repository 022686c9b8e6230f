"""Micro benchmarks of the OCSP protocol core: request parsing and response production.

Run: ``python -m bench.bench_ocsp`` (prints a table; one process, one core).

- parse: µs per request for crlbuilder.ocsp.request.parse_request against
  asn1crypto (load and read every CertID field and the nonce) and
  cryptography's load_der_ocsp_request (load and read the same; it accepts one
  CertID only);
- encode: µs per response for crlbuilder.ocsp.response, excluding the RSA
  signature (response_data + assemble with a fixed signature);
- sign: responses/s of ResponseSigner.sign_response against a bare
  cryptography RSA-2048 PKCS#1 v1.5 SHA-256 signature of 100 bytes, and
  cryptography's OCSPResponseBuilder.sign for the same single answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import timeit
from collections.abc import Callable
from typing import Any

from asn1crypto import ocsp as a_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from crlbuilder.model import CertStatus
from crlbuilder.ocsp.request import parse_request
from crlbuilder.ocsp.response import ResponseSigner, SingleAnswer, cert_id_der, issuer_hashes
from tests.support.pki import Ca, certificate, rsa_key

SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")


class KeySigner:
    """An in-memory RSA key with the crlbuilder.keys.signer shape."""

    signature_algorithm_der = SHA256_RSA

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.certificate = cert

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def build_pki() -> tuple[rsa.RSAPrivateKey, x509.Certificate, x509.Certificate, x509.Certificate]:
    key = rsa_key()
    ca = Ca(key, certificate("Bench CA", key, serial=1, days=2, ca=True))
    signer_cert = ca.issue(
        "Bench OCSP signer", key, serial=2, days=2, ca=False,
        extensions=[
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), True),
            (x509.OCSPNoCheck(), False),
        ],
    )  # fmt: skip
    leaf = ca.issue("leaf", key, serial=0x1234_5678_9ABC, days=2, ca=False)
    return key, ca.cert, signer_cert, leaf


def per_call_us(fn: Callable[[], Any], min_time: float) -> float:
    """Best of 3 repeats, each long enough to take ``min_time`` seconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=3, number=number)) / number * 1e6


def asn1crypto_parse(der: bytes) -> tuple[list[tuple[Any, ...]], Any]:
    req = a_ocsp.OCSPRequest.load(der)
    out = []
    for single in req["tbs_request"]["request_list"]:
        c = single["req_cert"]
        out.append(
            (
                c["hash_algorithm"]["algorithm"].native,
                c["issuer_name_hash"].native,
                c["issuer_key_hash"].native,
                c["serial_number"].native,
                c.dump(),
            )
        )
    nonce = req.nonce_value
    return out, nonce.native if nonce is not None else None


def cryptography_parse(der: bytes) -> tuple[Any, ...]:
    req = ocsp.load_der_ocsp_request(der)
    nonce = None
    for ext in req.extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            nonce = ext.value.nonce
    return (
        req.hash_algorithm,
        req.issuer_name_hash,
        req.issuer_key_hash,
        req.serial_number,
        nonce,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per repeat")
    args = parser.parse_args()
    t = args.min_time

    key, ca, signer_cert, leaf = build_pki()
    rs = ResponseSigner(KeySigner(key, signer_cert))

    def request(n: int, nonce: bytes | None, alg: hashes.HashAlgorithm) -> bytes:
        if n == 1:
            b = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, alg)
            if nonce is not None:
                b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
            return b.build().public_bytes(serialization.Encoding.DER)
        # several CertIDs: cryptography builds one only, asn1crypto encodes the rest
        name_hash, key_hash = issuer_hashes(ca, alg.name)
        tbs: dict[str, Any] = {
            "request_list": [
                {
                    "req_cert": {
                        "hash_algorithm": {"algorithm": alg.name},
                        "issuer_name_hash": name_hash,
                        "issuer_key_hash": key_hash,
                        "serial_number": 1000 + i,
                    }
                }
                for i in range(n)
            ]
        }
        if nonce is not None:
            tbs["request_extensions"] = [
                {"extn_id": "nonce", "critical": False, "extn_value": nonce}
            ]
        return bytes(a_ocsp.OCSPRequest({"tbs_request": tbs}).dump())

    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: float, unit: str = "µs") -> None:
        rows.append((what, f"{value:,.2f}" if unit == "µs" else f"{value:,.0f}", unit))
        print(f"  {what:<62} {rows[-1][1]:>10} {unit}", flush=True)

    print(f"jpki-va OCSP micro benchmarks ({time.strftime('%Y-%m-%d %H:%M:%S')}), one process")
    print("parse (µs per request, lower is better)")
    cases = [
        ("1 CertID sha1, no nonce (RFC 5019 canonical)", request(1, None, hashes.SHA1())),
        ("1 CertID sha256, no nonce", request(1, None, hashes.SHA256())),
        ("1 CertID sha1, 32-byte nonce", request(1, b"n" * 32, hashes.SHA1())),
        ("4 CertIDs sha1, 32-byte nonce", request(4, b"n" * 32, hashes.SHA1())),
    ]
    for name, der in cases:
        ours = parse_request(der, max_certids=16)
        ref, nonce = asn1crypto_parse(der)
        assert [tuple(c[:4]) for c in ours.cert_ids] == [r[:4] for r in ref]
        assert ours.nonce == nonce
        row(f"{name}: ocspreq", per_call_us(lambda d=der: parse_request(d, max_certids=16), t))
        row(f"{name}: asn1crypto", per_call_us(lambda d=der: asn1crypto_parse(d), t))
        if len(ours.cert_ids) == 1:
            row(f"{name}: cryptography", per_call_us(lambda d=der: cryptography_parse(d), t))

    print("encode, excluding the signature (µs per response)")
    now = int(time.time())
    name_hash, key_hash = issuer_hashes(ca, "sha1")
    one = [
        SingleAnswer(
            cert_id_der("sha1", name_hash, key_hash, leaf.serial_number), CertStatus.REVOKED, now, 1
        )
    ]
    four = [
        SingleAnswer(cert_id_der("sha1", name_hash, key_hash, 1000 + i), status, now - 60, None)
        for i, status in enumerate([*CertStatus, CertStatus.GOOD])
    ]
    signature = b"\x5a" * 256
    kw = {"produced_at": now, "this_update": now, "next_update": now + 3600}
    for name, answers, nonce in (
        ("1 answer (revoked, keyCompromise), no nonce", one, None),
        ("4 answers, 32-byte nonce", four, b"n" * 32),
    ):
        row(
            f"{name}: ocspsign",
            per_call_us(
                lambda a=answers, n=nonce: rs.assemble(
                    rs.response_data(a, nonce=n, **kw), signature
                ),
                t,
            ),
        )

    print("sign (responses or signatures per second, one core, higher is better)")
    data = b"\x01" * 100
    raw = per_call_us(lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()), t)
    ours = per_call_us(lambda: rs.sign_response(one, **kw), t)
    nowdt = dt.datetime.fromtimestamp(now, dt.UTC)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=ca,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.REVOKED,
            this_update=nowdt,
            next_update=nowdt + dt.timedelta(hours=1),
            revocation_time=nowdt,
            revocation_reason=x509.ReasonFlags.key_compromise,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        .certificates([signer_cert])
    )
    lib = per_call_us(lambda: builder.sign(key, hashes.SHA256()), t)
    row("raw RSA-2048 PKCS#1 v1.5 SHA-256 sign of 100 bytes", 1e6 / raw, "/s")
    row("ResponseSigner.sign_response (1 answer)", 1e6 / ours, "/s")
    row("cryptography OCSPResponseBuilder.sign (1 answer)", 1e6 / lib, "/s")
    print(f"  overhead of sign_response over the raw signature: {ours - raw:+.1f} µs")


if __name__ == "__main__":
    main()
