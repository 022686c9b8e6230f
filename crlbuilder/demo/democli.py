"""The demo commands' flags: ``crlbuilder pki init`` (`crlbuilder.demo.pki`) and ``crlbuilder
synth`` (`crlbuilder.demo.synth`), built without those modules (cryptography's x509, the
signers, tqdm): ``crlbuilder --help`` and every other command start without them, and a demo
command imports its module when it runs (``run``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from crlbuilder.options import instant

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"
"""``pki init --base-url``'s default: where the demo responder listens."""

INIT_DESCRIPTION: Final = """Create the demo PKI under ``out`` and return its manifest (also written as ``pki.json``).

    Refuses a directory that exists and is not empty unless ``force`` (files of
    the same names are then replaced). ``key_size`` is the RSA modulus of every
    key (2048 or more, Ord §2, §38). ``base_url`` is where the responder will be
    reached: each issuer's OCSP URL is ``{base_url}/ocsp`` and its CRLs
    ``{base_url}/crl/{issuer_id}.crl`` and ``{base_url}/crl/{issuer_id}-delta.crl``.
    ``now`` (default: the current time) starts the short-lived certificates
    (OCSP signers, TLS, parties: two years); the CAs run from `GENERATIONS`'
    fixed starts for 30 years.

    With ``keys="softhsm"`` a SoftHSM2 token is made in ``out/softhsm``
    (`crlbuilder.demo.softhsm.init_token`: configuration, token, PIN file 0600; processes
    using the keys need ``SOFTHSM2_CONF=out/softhsm/softhsm2.conf``) and every signing key
    of the service is generated inside it (non-extractable, sensitive: Ord
    §73(4), §74(3)) and the manifest names it by its ``pkcs11:`` URI instead of a PEM
    file: the CAs' keys (CRL signing, 発行者署名符号), the delegated OCSP signers and the
    group relay's responder key. The token-issuing CA (``token_issuer``, the issuer of
    特定利用者証明検証者証明符号, Act §38-3) is made like a family's CA: its key, its
    certificate, its delegated OCSP signer. Only certificates are written. The demo TLS/client CA,
    the TLS server key (Python's ssl reads a file) and the parties' own keys stay PEM.
    """
"""``crlbuilder pki init --help``'s description: what `crlbuilder.demo.pki.init_pki` makes and
refuses."""

SYNTH_DESCRIPTION: Final = "The synthetic population: records of a simulated JPKI from 2016-01-01 to ``as_of``, with answers."
"""``crlbuilder synth --help``'s description: the first line of `crlbuilder.demo.synth`'s."""


def add_pki_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``pki init`` on an argparse subparsers object, run by ``run``
    (`crlbuilder.demo.pki.run_init`, or a function importing it when called)."""
    pki = subparsers.add_parser("pki", help="the demo/test PKI")
    sub = pki.add_subparsers(dest="pki_command", required=True)
    init = sub.add_parser(
        "init",
        help="create issuing CAs, OCSP signers, TLS and demo party credentials",
        description=INIT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--out", required=True, type=Path, help="directory to create")
    init.add_argument(
        "--key-size", type=int, default=2048, help="RSA modulus bits (>= 2048; default %(default)s)"
    )
    init.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="the responder's base URL (default %(default)s)",
    )
    init.add_argument("--force", action="store_true", help="write into a non-empty directory")
    init.add_argument(
        "--keys",
        choices=("pem", "softhsm"),
        default="pem",
        help="where the signing keys live: PEM files (default) or a new SoftHSM2 token "
        "in OUT/softhsm (run the builder and responder with "
        "SOFTHSM2_CONF=OUT/softhsm/softhsm2.conf)",
    )
    init.set_defaults(func=run)


def add_synth_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``synth`` on an argparse subparsers object, run by ``run``
    (`crlbuilder.demo.synth.run_synth`, or a function importing it when called)."""
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic population: records, sample certificates, answers",
        description=SYNTH_DESCRIPTION,
    )
    p.add_argument("--pki", required=True, type=Path, help="PKI directory (pki.json)")
    p.add_argument("--holders", required=True, type=int, help="number of holders")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--as-of",
        type=instant,
        default=None,
        help="end of the simulation, RFC 3339 (default: now, to the second)",
    )
    p.add_argument("--samples", type=int, default=300, help="sample certificates (default 300)")
    p.add_argument("--force", action="store_true", help="replace earlier output in --out")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=run)
