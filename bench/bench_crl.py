"""Benchmark of large CRLs (失効情報ファイル, Act §16, §35): our encoder and parser against peers.

For N revoked certificates (default 1,000,000) on one fresh RSA-2048 CA:

- encode: ``crlbuilder.crl.encode.encode_crl`` (DER encoding + SHA-256/RSA signature)
  against ``openssl ca -gencrl`` on an index.txt holding the same revoked set
  with the same reasons, dates and CA key;
- import: ``crlbuilder.crl.parse.parse_crl`` + ``verify_crl_signature`` + walking
  every entry, against cryptography's ``load_der_x509_crl`` + iterating every
  entry (serial, date, reasonCode), which can be capped (``--cryptography-cap``,
  default 1,000,000 entries): beyond the cap its per-entry rate is extrapolated to
  N, and the table and JSON say so;
- sizes of both CRL files, and whether the two revoked lists are identical.

Usage: ``python -m bench.bench_crl --entries 1000000 --out results.json``.
Prints a small table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crlbuilder.crl.encode import encode_crl, write_crl_file
from crlbuilder.crl.parse import parse_crl, verify_crl_signature
from crlbuilder.keys.signer import PemSigner
from tests.support.pki import make_ca as test_ca
from tests.support.pki import rsa_key

T = TypeVar("T")

# The mix of reasons J-LIS practice produces most (0 unspecified has no reasonCode).
REASONS = (0, 1, 3, 4, 5)
REASON_WEIGHTS = (2, 5, 20, 30, 43)
OPENSSL_REASON = {
    1: "keyCompromise",
    2: "CACompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
}
REASON_OF_FLAG = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
}


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def make_ca(directory: Path) -> tuple[Path, Path, x509.Certificate]:
    """A fresh RSA-2048 CA (cryptography), written as ca.key (0600) and ca.pem."""
    key = rsa_key()
    cert = test_ca("jpki-va Bench CRL CA", key, organization="jpki-va bench").cert
    key_path = directory / "ca.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path = directory / "ca.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, cert


def revoked_set(n: int, seed: int) -> list[tuple[int, int, int]]:
    """N entries sorted by serial: 8-octet serials, times over five years, weighted reasons."""
    rng = random.Random(seed)
    serials = sorted(rng.sample(range(1, 2**63), n))
    start = int(datetime(2021, 4, 1, tzinfo=UTC).timestamp())
    span = 5 * 365 * 86400
    reasons = rng.choices(REASONS, REASON_WEIGHTS, k=n)
    return [
        (serial, start + rng.randrange(span), reason)
        for serial, reason in zip(serials, reasons, strict=True)
    ]


def write_openssl_ca(
    directory: Path, key_path: Path, cert_path: Path, entries: list[tuple[int, int, int]]
) -> Path:
    """An openssl CA directory whose index.txt revokes exactly ``entries``."""
    with (directory / "index.txt").open("w") as index:
        for serial, at, reason in entries:
            when = datetime.fromtimestamp(at, UTC).strftime("%y%m%d%H%M%SZ")
            revocation = f"{when},{OPENSSL_REASON[reason]}" if reason else when
            hex_serial = f"{serial:X}"
            if len(hex_serial) % 2:
                hex_serial = "0" + hex_serial
            index.write(f"R\t351231000000Z\t{revocation}\t{hex_serial}\tunknown\t/CN=holder\n")
    (directory / "index.txt.attr").write_text("unique_subject = no\n")
    (directory / "crlnumber").write_text("1000\n")
    config = directory / "openssl.cnf"
    config.write_text(
        "[ca]\ndefault_ca = bench\n[bench]\n"
        f"dir = {directory}\ndatabase = $dir/index.txt\ncertificate = {cert_path}\n"
        f"private_key = {key_path}\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\n"
        "default_crl_days = 1\nunique_subject = no\n"
    )
    return config


def pem_to_der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    return base64.b64decode(body)


def cryptography_walk(der: bytes) -> tuple[int, float, float]:
    """Load with cryptography and read every entry's serial, date and reason: (count, load s, walk s)."""
    crl, load_seconds = timed(lambda: x509.load_der_x509_crl(der))

    def walk() -> int:
        count = 0
        for revoked in crl:
            _ = (revoked.serial_number, revoked.revocation_date_utc)
            with contextlib.suppress(x509.ExtensionNotFound):
                REASON_OF_FLAG[
                    revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
                ]
            count += 1
        return count

    count, walk_seconds = timed(walk)
    return count, load_seconds, walk_seconds


def run(n: int, cryptography_cap: int, seed: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "entries": n,
        "seed": seed,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "openssl": subprocess.run(
                ["openssl", "version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
            "cpus": os.cpu_count(),
        },
    }
    key_path, cert_path, cert = make_ca(workdir)
    signer = PemSigner.from_files(key_path, cert_path)
    entries, seconds = timed(lambda: revoked_set(n, seed))
    print(f"generated {n:,} entries in {seconds:.1f} s", file=sys.stderr)
    this_update = datetime.now(UTC).replace(microsecond=0)
    next_update = this_update + timedelta(days=1)

    # --- encode: ours ---
    ours, encode_seconds = timed(
        lambda: encode_crl(
            issuer=cert,
            signer=signer,
            number=1000,
            this_update=this_update,
            next_update=next_update,
            entries=entries,
        )
    )
    ours_path = workdir / "ours.crl"
    _, write_seconds = timed(lambda: write_crl_file(ours_path, ours))
    print(f"encode_crl: {encode_seconds:.2f} s, {len(ours):,} octets", file=sys.stderr)

    # --- encode: openssl ca -gencrl ---
    config = write_openssl_ca(workdir, key_path, cert_path, entries)
    openssl_pem = workdir / "openssl.crl.pem"
    command = [
        "openssl",
        "ca",
        "-gencrl",
        "-config",
        str(config),
        "-crldays",
        "1",
        "-out",
        str(openssl_pem),
    ]
    completed, openssl_seconds = timed(
        lambda: subprocess.run(command, capture_output=True, text=True, check=False)
    )
    if completed.returncode != 0:
        raise SystemExit(f"openssl ca -gencrl failed: {completed.stderr.strip()}")
    openssl_der = pem_to_der(openssl_pem.read_bytes())
    print(
        f"openssl ca -gencrl: {openssl_seconds:.2f} s, {len(openssl_der):,} octets", file=sys.stderr
    )

    # --- import: ours ---
    parsed, parse_seconds = timed(lambda: parse_crl(ours))
    _, verify_seconds = timed(lambda: verify_crl_signature(parsed, cert))
    walked, walk_seconds = timed(lambda: sum(1 for _ in parsed.entries()))
    assert walked == n
    print(
        f"parse+verify+walk: {parse_seconds + verify_seconds + walk_seconds:.2f} s", file=sys.stderr
    )

    # --- cross-check: openssl's CRL read by our parser lists exactly our entries ---
    openssl_parsed = parse_crl(openssl_der)
    verify_crl_signature(openssl_parsed, cert)
    same_entries = list(openssl_parsed.entries()) == entries

    # --- import: cryptography (capped) ---
    cap = min(n, cryptography_cap)
    if cap < n:
        sample = encode_crl(
            issuer=cert,
            signer=signer,
            number=1001,
            this_update=this_update,
            next_update=next_update,
            entries=entries[:cap],
        )
    else:
        sample = ours
    c_count, c_load, c_walk = cryptography_walk(sample)
    assert c_count == cap
    c_total = c_load + c_walk
    _, c_full_load = timed(lambda: x509.load_der_x509_crl(ours))

    results["encode"] = {
        "ours_seconds": round(encode_seconds, 3),
        "ours_write_file_seconds": round(write_seconds, 3),
        "openssl_ca_gencrl_seconds": round(openssl_seconds, 3),
        "speedup_vs_openssl": round(openssl_seconds / encode_seconds, 2),
        "openssl_includes": "process start, loading index.txt and the key, sorting, encoding, signing, PEM output",
    }
    results["import"] = {
        "ours_parse_seconds": round(parse_seconds, 3),
        "ours_verify_seconds": round(verify_seconds, 3),
        "ours_walk_entries_seconds": round(walk_seconds, 3),
        "ours_total_seconds": round(parse_seconds + verify_seconds + walk_seconds, 3),
        "cryptography_entries_measured": cap,
        "cryptography_load_seconds": round(c_load, 3),
        "cryptography_walk_seconds": round(c_walk, 3),
        "cryptography_total_seconds": round(c_total, 3),
        "cryptography_total_extrapolated_to_n_seconds": round(c_total * n / cap, 3)
        if cap
        else None,
        "cryptography_extrapolated": cap < n,
        "cryptography_load_full_crl_seconds": round(c_full_load, 3),
    }
    results["sizes"] = {
        "ours_der_octets": len(ours),
        "openssl_der_octets": len(openssl_der),
        "index_txt_octets": (workdir / "index.txt").stat().st_size,
    }
    results["checks"] = {
        "openssl_crl_entries_equal_ours": same_entries,
        "revoked_certificates_byte_identical": parsed.revoked_der == openssl_parsed.revoked_der,
    }
    return results


def print_table(results: dict[str, Any]) -> None:
    n = results["entries"]
    enc = results["encode"]
    imp = results["import"]
    sizes = results["sizes"]
    cap = imp["cryptography_entries_measured"]
    crypto_note = (
        f"measured on {cap:,}, extrapolated" if imp["cryptography_extrapolated"] else "measured"
    )
    rows = [
        ("encode + sign: crlbuilder.crl.encode.encode_crl", f"{enc['ours_seconds']:.2f} s"),
        ("encode + sign: openssl ca -gencrl", f"{enc['openssl_ca_gencrl_seconds']:.2f} s"),
        ("  speed-up vs openssl", f"{enc['speedup_vs_openssl']:.1f}x"),
        ("import: parse_crl + verify + all entries", f"{imp['ours_total_seconds']:.2f} s"),
        (
            f"import: cryptography load + all entries ({crypto_note})",
            f"{imp['cryptography_total_extrapolated_to_n_seconds']:.2f} s",
        ),
        (
            "  cryptography load_der_x509_crl alone, full CRL",
            f"{imp['cryptography_load_full_crl_seconds']:.2f} s",
        ),
        ("size: ours (DER)", f"{sizes['ours_der_octets']:,} B"),
        ("size: openssl (DER)", f"{sizes['openssl_der_octets']:,} B"),
        ("openssl's entries == ours", str(results["checks"]["openssl_crl_entries_equal_ours"])),
        (
            "revokedCertificates byte-identical",
            str(results["checks"]["revoked_certificates_byte_identical"]),
        ),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"CRL benchmark, {n:,} entries, RSA-2048 / SHA-256")
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>14}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="revoked entries (default 1,000,000)"
    )
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--cryptography-cap",
        type=int,
        default=1_000_000,
        help="at most this many entries for the cryptography load+iterate comparison "
        "(default 1,000,000; beyond it the time is measured on that many and extrapolated)",
    )
    parser.add_argument("--seed", type=int, default=20260401)
    parser.add_argument(
        "--workdir", type=Path, help="keep the files here (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.entries, args.cryptography_cap, args.seed, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-crl-") as tmp:
            results = run(args.entries, args.cryptography_cap, args.seed, Path(tmp))
    print_table(results)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
