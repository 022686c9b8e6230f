"""The costliest `POST /v1/verify` calls an attacker can send, in process (RSA work per call).

Run: ``python -m bench.bench_verify_worst [--items 1000] [--repeat 3]``.

Each case is one call of ``--items`` raw PKCS#1 items (or CMS where named) through the /v1
dispatcher in process (`responder.v1.routes.V1Api` over the tests' `MemoryReader`: decode,
the handler, the JSON answer; no JWS, no HTTP), answered inline, timed by the process's CPU
time; the best of ``--repeat`` runs. Every signature is garbage of the key's length, so each
item costs the RSA operation it provokes and nothing is ``ok``. The keys are random moduli
(nobody holds their private half): an attacker chooses the size and the exponent of a key
in a certificate it makes itself.

- ``foreign-8192-e32``: a self-signed certificate (no JPKI issuer), an 8192-bit modulus,
  public exponent 2^32 - 1: the largest key the check accepted before the path was known;
- ``foreign-8192-e32-cms``: the same key in a CMS SignedData (signed attributes);
- ``jpki-name-8192-e32``: issued by a CA that copies a JPKI issuer's name (another key):
  the path's one RSA check is the JPKI CA's key over the certificate;
- ``jpki-2048-e65537``: a genuine JPKI sign certificate (the profile's key) with a bad
  signature: what any public JPKI certificate lets an attacker provoke;
- ``jpki-4096-e32``: a certificate the JPKI CA issued with a 4096-bit key and exponent
  2^32 - 1, the largest the check verifies (`responder.validation.signature.MAX_RSA_BITS`):
  the bound should the 機構 ever issue such keys;
- ``jpki-8192-e32``: the same with an 8192-bit key (past the bound).

Prints one line per case: ms of CPU per call, us per item, and the items' result codes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from crlbuilder.model import Family
from tests.support.signing import OTHER_KEY, Jpki, cms_signed, der
from tests.test_policy import NOW
from tests.test_v1_verify import Api

SERIAL = 0x51
E32 = (1 << 32) - 1


def modulus(bits: int) -> rsa.RSAPublicKey:
    n = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(E32 if bits != 2048 else 65537, n).public_key()


def self_signed(public: rsa.RSAPublicKey) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "costly")])
    at = datetime.fromtimestamp(NOW, UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(public).serial_number(SERIAL)
        .not_valid_before(at - timedelta(days=1)).not_valid_after(at + timedelta(days=1))
        .sign(OTHER_KEY, hashes.SHA256())
    )  # fmt: skip


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def raw_items(cert: x509.Certificate, n: int) -> list[dict[str, Any]]:
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    size = min((key.key_size + 7) // 8, 1024)
    item = {
        "format": "pkcs1",
        "certificate": b64(der(cert)),
        "signature": b64(b"\x01" * size),
        "data": b64(b"document"),
    }
    return [item] * n


def cms_items(cert: x509.Certificate, n: int) -> list[dict[str, Any]]:
    """Signed attributes, the signature replaced by garbage of the modulus's length."""
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    info = cms.ContentInfo.load(cms_signed(b"document", cert, OTHER_KEY))
    info["content"]["signer_infos"][0]["signature"] = b"\x01" * ((key.key_size + 7) // 8)
    return [{"format": "cms", "cms": b64(bytes(info.dump(force=True)))}] * n


def cases(j: Jpki, n: int) -> dict[str, list[dict[str, Any]]]:
    start = datetime.fromtimestamp(NOW, UTC) - timedelta(days=30)
    foreign = self_signed(modulus(8192))
    named = Jpki.make().issue(Family.SIGN_CARD, SERIAL, not_before=start, public=modulus(8192))

    def jpki(bits: int) -> x509.Certificate:
        return j.issue(Family.SIGN_CARD, SERIAL + bits, not_before=start, public=modulus(bits))

    return {
        "foreign-8192-e32": raw_items(foreign, n),
        "foreign-8192-e32-cms": cms_items(foreign, n),
        "jpki-name-8192-e32": raw_items(named, n),
        "jpki-2048-e65537": raw_items(jpki(2048), n),
        "jpki-4096-e32": raw_items(jpki(4096), n),
        "jpki-8192-e32": raw_items(jpki(8192), n),
    }


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best = float("inf")
    got: Any = None
    for _ in range(repeat):
        t = time.process_time()
        got = call()
        best = min(best, time.process_time() - t)
    return best, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    j = Jpki.make()
    api = Api(j)
    for name, items in cases(j, args.items).items():
        body = msgspec.json.encode({"items": items})
        seconds, (resp, got) = timed(lambda body=body: api.call(body), args.repeat)
        assert resp.status == 200, got
        codes = collections.Counter(r["result"] for r in got["results"])
        signature = collections.Counter(r["signature"]["outcome"] for r in got["results"])
        print(
            f"{name:24} {seconds * 1000:9.1f} ms/call {seconds / args.items * 1e6:8.1f} us/item"
            f"  results {dict(codes)} signature {dict(signature)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
