"""How long one ``POST /v1/token`` call holds a worker's event loop, by CSR key.

    python -m bench.bench_v1_token_loop [--runs 20] [--out FILE.json]

In process, through the /v1 dispatcher (`responder.v1.routes.V1Api.handle`: authentication,
policy, quota, strict decoding, the handler, its effect), with the worker's own desk
(`responder.v1.token.FileDesk`: the request file written whole with fsync, the queue read
back) in a temporary directory, and no batch thread (``pool`` None): what a call costs when it
is answered on the event loop, which is what it held the loop for before the route was
offloaded. Cases: a new request (queued) and the same again (found queued) for an EC P-256
key, RSA-2048, RSA-4096, RSA-8192, and the largest public exponents accepted (just under
2**256 for RSA-3072, `crlbuilder.tokenrequest.check_csr`'s bound; just under 2**64 for
RSA-8192, OpenSSL's above 3072 bits): the self-signature's verification; and a token handed
out (the 200 path: the certificate read and parsed). For
each: the median and the largest of ``--runs`` calls, in milliseconds. The answer's JWS is
not signed here (no answer-signing key): every /v1 route signs on the loop alike.

Prints the JSON result and writes it to ``--out``. Bounded: ``--runs`` calls per case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _rsa_big_exponent(bits: int, ebits: int) -> Any:
    """An RSA key of ``bits`` bits whose public exponent is the largest odd one below
    2**``ebits`` coprime with its λ(n): the costliest to verify that `check_csr` (e below
    2**256) and OpenSSL (e of 64 bits at most above a 3072-bit modulus) accept."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    base = rsa.generate_private_key(public_exponent=65_537, key_size=bits)
    pn = base.private_numbers()
    p, q = pn.p, pn.q
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    e = 2**ebits - 1
    while math.gcd(e, lam) != 1:
        e -= 2
    d = pow(e, -1, lam)
    return rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    ).private_key()  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))

    import msgspec
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from crlbuilder.tokenrequest import party_uri, read_request
    from responder.config import ResponderConfig
    from responder.http import Request, Response
    from responder.v1 import token as v1token
    from responder.v1.routes import V1Api
    from tests.support.pki import make_ca, rsa_key
    from tests.test_policy import NOW, build
    from tests.test_v1_status import Ledger, Quotas
    from tests.test_v1_token import INDEX, _issue, spec_table

    def csr_pem(key: Any) -> str:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "spec")]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(party_uri("spec"))]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    from datetime import UTC, datetime

    ca = make_ca("verifier-token-g1 CA", rsa_key(), not_before=datetime(2020, 1, 1, tzinfo=UTC))
    keys = {
        "ec-p256": ec.generate_private_key(ec.SECP256R1()),
        "rsa-2048": rsa.generate_private_key(public_exponent=65_537, key_size=2048),
        "rsa-4096": rsa.generate_private_key(public_exponent=65_537, key_size=4096),
        "rsa-8192": rsa.generate_private_key(public_exponent=65_537, key_size=8192),
        "rsa-3072-e2^256": _rsa_big_exponent(3072, 256),
        "rsa-8192-e2^64": _rsa_big_exponent(8192, 64),
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        requests, issued = Path(tmp) / "requests", Path(tmp) / "issued"
        pem_ca = ca.cert.public_bytes(serialization.Encoding.PEM).decode()

        class Harness:
            """The dispatcher with a worker's file desk, as the tests build it."""

            def __init__(self) -> None:
                self.ledger = Ledger()
                from crlbuilder.store.memory import MemoryReader

                self.reader = MemoryReader()
                self.registry = build(spec_table())
                desk = v1token.FileDesk(requests, issued, pem_ca, INDEX, max_per_party=10_000)
                route = dataclasses.replace(v1token.ROUTE, setup=lambda cfg: desk)
                self.api = V1Api(
                    (route,), ResponderConfig(), store=self.reader, quota=Quotas(),
                    ledger=self.ledger, signer=None,
                )  # fmt: skip

        h = Harness()

        def call(body: bytes) -> tuple[float, Response]:
            headers = {b"content-type": b"application/json", b"authorization": b"Bearer spec"}
            req = Request(
                b"POST", b"/v1/token", headers, body, ("127.0.0.1", 1), None, b"1.1", True, 1
            )
            t0 = time.perf_counter()
            got = h.api.handle(req, h.registry, NOW)
            took = time.perf_counter() - t0
            assert isinstance(got, Response), "offloaded: the pool is None here"
            return took, got

        for name, key in keys.items():
            body = msgspec.json.encode({"csr": csr_pem(key)})
            first, resp = call(body)
            assert resp.status == 202, bytes(resp.body)
            again = [call(body)[0] for _ in range(args.runs)]
            rid = msgspec.json.decode(bytes(resp.body))["request"]
            _issue(h, ca, read_request(requests / f"{rid}.json"), issued)  # type: ignore[arg-type]
            handed = [call(body)[0] for _ in range(args.runs)]
            results[name] = {
                "new_request_ms": round(first * 1e3, 3),
                "queued_again_median_ms": round(statistics.median(again) * 1e3, 3),
                "queued_again_max_ms": round(max(again) * 1e3, 3),
                "issued_median_ms": round(statistics.median(handed) * 1e3, 3),
                "issued_max_ms": round(max(handed) * 1e3, 3),
            }
    out = {"runs": args.runs, "cases": results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
