"""Signatures per second with the key in SoftHSM2 against a PEM key and raw cryptography (issue 15).

Run: ``python -m bench.bench_pkcs11 [--seconds 1] [--rounds 3] [--out bench/results/pkcs11.json]``.

One process, one thread, in process (no HTTP): what the product's own code does per
signature, with three keys of the same size (RSA-2048 unless ``--bits``):

- **raw**: cryptography's ``RSAPrivateKey.sign`` (PKCS#1 v1.5, SHA-256) of the same bytes:
  the floor every back end sits on;
- **pem**: `crlbuilder.keys.signer.PemSigner` (the default back end);
- **pkcs11**: `crlbuilder.keys.pkcs11.Pkcs11Signer` through `load_signer` on a key
  generated inside a fresh SoftHSM2 token (`crlbuilder.demo.softhsm.init_token`, in a
  temporary directory): session kept open, one login per process, no per-signature login.

Two paths, each run for ``--seconds`` of this thread's CPU time per back end (SoftHSM2
signs in the calling thread, so that is its whole cost; wall-clock rates are recorded
too), the back ends interleaved over ``--rounds`` rounds (the machine is shared: the
median round counts):

- **presign batch**: `crlbuilder.presign._sign_many`, the loop a builder signing worker
  runs over a chunk of pre-signed answers' ResponseData (revoked answers);
- **fresh answers**: `responder.ocsp.SignJob.run`, what a responder signing thread runs for
  a request with a nonce (a new nonce each answer).

The ratio stated is pkcs11 / pem (goal ≥ 0.8×, issue 15) and each against raw. The presign
path also times **token**: python-pkcs11's C_Sign on the same key handle without
`Pkcs11Signer` around it, which tells the wrapper's cost from SoftHSM2's own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signer_cert(ca_key: rsa.RSAPrivateKey, cn: str, public: rsa.RSAPublicKey) -> x509.Certificate:
    """A delegated OCSP signer certificate for ``public`` issued by the bench CA."""
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name("bench CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Signatures per CPU second of this thread, and per wall second, of ``fn`` (which returns
    how many it made) run for ``seconds`` of CPU. SoftHSM2 signs in this thread, so its CPU
    time is the back end's whole cost, and CPU time is what the shared machine disturbs least."""
    done = 0
    c0, w0 = time.thread_time(), time.perf_counter()
    while (cpu := time.thread_time() - c0) < seconds or done == 0:
        done += fn()
    return done / cpu, done / (time.perf_counter() - w0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, default=2048)
    p.add_argument("--seconds", type=float, default=1.0, help="per back end and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=200, help="answers per presign chunk")
    p.add_argument("--out", type=Path, default=HERE / "results" / "pkcs11.json")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pkcs11-") as tmp:
        from crlbuilder.demo.softhsm import init_token

        token = init_token(Path(tmp) / "softhsm", label="jpki-va-bench")
        os.environ.update(token.env)  # before the module is loaded in this process

        from pkcs11 import Mechanism

        from crlbuilder import presign
        from crlbuilder.keys.pkcs11 import generate_rsa_key
        from crlbuilder.keys.signer import load_signer
        from crlbuilder.model import CertStatus, Family
        from crlbuilder.ocsp.response import ResponseSigner, SingleAnswer, cert_id_der
        from responder.ocsp import SignJob

        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
        pem_key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
        pem_path, pem_cert = Path(tmp) / "pem.key", Path(tmp) / "pem.pem"
        fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, pem_key.private_bytes(serialization.Encoding.PEM,
                 serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
        os.close(fd)
        pem_cert.write_bytes(
            _signer_cert(ca_key, "pem", pem_key.public_key()).public_bytes(
                serialization.Encoding.PEM
            )
        )
        ref = token.key_uri("bench-ocsp")
        hsm_cert = Path(tmp) / "hsm.pem"
        public = generate_rsa_key(ref, args.bits, module=token.module)
        hsm_cert.write_bytes(
            _signer_cert(ca_key, "pkcs11", public).public_bytes(serialization.Encoding.PEM)
        )
        signers = {
            "pem": load_signer(str(pem_path), pem_cert),
            "pkcs11": load_signer(ref, hsm_cert),
        }
        response_signers = {k: ResponseSigner(v) for k, v in signers.items()}

        now = int(time.time())
        name_hash, key_hash = os.urandom(20), os.urandom(20)
        answers = [
            SingleAnswer(cert_id_der("sha1", name_hash, key_hash, 10_000 + n),
                         CertStatus.REVOKED, now - 3600, 1)
            for n in range(args.batch)
        ]  # fmt: skip
        data_of = response_signers["pem"].response_data
        blobs = [
            data_of([a], produced_at=now, this_update=now, next_update=now + 86400) for a in answers
        ]

        def raw_batch() -> int:
            for b in blobs:
                pem_key.sign(b, padding.PKCS1v15(), hashes.SHA256())
            return len(blobs)

        def presign_batch(kind: str) -> Callable[[], int]:
            def run() -> int:
                presign._worker_signers["bench"] = signers[kind]
                return len(presign._sign_many("bench", blobs))

            return run

        token_key = signers["pkcs11"]._key()  # type: ignore[attr-defined]

        def token_batch() -> int:
            """C_Sign through python-pkcs11 on the same key handle, without Pkcs11Signer."""
            for b in blobs:
                token_key.sign(b, mechanism=Mechanism.SHA256_RSA_PKCS)
            return len(blobs)

        one = [answers[0]]

        def raw_fresh() -> int:
            data = data_of(one, produced_at=now, this_update=now, next_update=now + 86400,
                           nonce=os.urandom(32))  # fmt: skip
            pem_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            return 1

        def fresh(kind: str) -> Callable[[], int]:
            rs = response_signers[kind]

            def run() -> int:
                SignJob(rs, one, now, now + 86400, os.urandom(32), ("revoked",),
                        (Family.SIGN_CARD,), None).run()  # fmt: skip
                return 1

            return run

        paths: dict[str, dict[str, Callable[[], int]]] = {
            "presign_batch": {"raw": raw_batch, "pem": presign_batch("pem"),
                              "pkcs11": presign_batch("pkcs11"), "token": token_batch},
            "fresh_answers": {"raw": raw_fresh, "pem": fresh("pem"), "pkcs11": fresh("pkcs11")},
        }  # fmt: skip
        for path in paths.values():  # warm up: sessions, caches
            for fn in path.values():
                fn()
        rounds: dict[str, dict[str, list[float]]] = {
            p: {k: [] for k in path} for p, path in paths.items()
        }
        wall: dict[str, dict[str, list[float]]] = {
            p: {k: [] for k in path} for p, path in paths.items()
        }
        print(f"jpki-va PKCS#11 bench ({time.strftime('%Y-%m-%d %H:%M:%S')}), RSA-{args.bits},"
              f" one thread, {args.rounds} rounds of {args.seconds} s per back end")  # fmt: skip
        for r in range(args.rounds):
            for p_name, path in paths.items():
                for kind, fn in path.items():
                    cpu_rate, wall_rate = rate(fn, args.seconds)
                    rounds[p_name][kind].append(cpu_rate)
                    wall[p_name][kind].append(wall_rate)
            print(f"  round {r + 1}: " + ", ".join(
                f"{p_name} {k} {v[-1]:,.0f}/s" for p_name, d in rounds.items() for k, v in d.items()
            ), flush=True)  # fmt: skip

    result: dict[str, Any] = {
        "bits": args.bits,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "batch": args.batch,
        "module": token.module,
        "load": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "command": "python -m bench.bench_pkcs11",
    }
    for p_name, d in rounds.items():
        med = {k: statistics.median(v) for k, v in d.items()}
        if "token" in med:
            result.setdefault("pkcs11_wrapper_share", round(1 - med["pkcs11"] / med["token"], 3))
        result[p_name] = {
            "per_second": {k: round(v, 1) for k, v in med.items()},
            "all_rounds": {k: [round(x, 1) for x in v] for k, v in d.items()},
            "wall_per_second": {k: round(statistics.median(v), 1) for k, v in wall[p_name].items()},
            "ratio_pkcs11_to_pem": round(med["pkcs11"] / med["pem"], 3),
            "ratio_pkcs11_to_raw": round(med["pkcs11"] / med["raw"], 3),
            "ratio_pem_to_raw": round(med["pem"] / med["raw"], 3),
            "goal_met": med["pkcs11"] / med["pem"] >= 0.8,
        }
        print(f"{p_name}: pkcs11 {med['pkcs11']:,.0f}/s, pem {med['pem']:,.0f}/s, raw "
              f"{med['raw']:,.0f}/s: pkcs11/pem {med['pkcs11'] / med['pem']:.2f}× "
              f"(goal ≥ 0.8×), pkcs11/raw {med['pkcs11'] / med['raw']:.2f}×")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
