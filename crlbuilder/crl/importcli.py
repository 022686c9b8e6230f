"""`crlbuilder import-crl`: the 機構's CRL files (失効情報ファイル) into a group appliance's store.

A group signature verifier (団体署名検証者, Act §17(5),(6)) receives the 機構's
signature CRL files (Act §18(2)) to answer its members (署名確認者, Act §20(1)).
It has no issuance records, only CRLs, so its status store is built from them:
this module owns that import. Each CRL (a file path or an http(s) URL, fetched
with an optional bearer token) is

- parsed (`crl.parse`, strict DER) and matched to one issuer certificate of the
  PKI manifest (``--pki``), or of a group appliance's ``group.json`` (``--group``: the CA
  certificates the group received, with its store and token), by issuer name (and authorityKeyIdentifier when present), and its
  signature verified with that certificate (after a compromise of a generation's
  key its CRLs carry its name but the successor's key: the manifest's successor
  certificate is then the one that matches, `known_issuers`; once a CRL of the generation
  that verifies with it is imported, one its own, compromised, key signed is refused:
  `_check_signer`; one that verifies as two generations' is refused unless the issuer
  whose URL it came from is named: `identify_issuer`);
- checked for freshness and order: nextUpdate after thisUpdate, thisUpdate not in the
  future (beyond `CLOCK_SKEW`), nextUpdate not passed (unless forced), a CRL number above the
  last one imported for the issuer (equal: already imported, nothing to do; a
  full CRL numbered like the base of the deltas imported since is the same full
  CRL fetched again: nothing to do either, whatever deltas followed it); a
  delta CRL (RFC 5280 §5.2.4) only on top of a full CRL numbered at least its
  BaseCRLNumber; a CRL of the scope (issuingDistributionPoint) of the last full CRL imported
  for the issuer, a delta exactly, a full CRL that or none (`_check_scope`: a partition
  taken for the whole would unlist every serial outside it);
- applied in ONE write transaction: a full CRL makes the issuer's revoked set
  exactly its entries (a merge walk of the stored range against the CRL's
  ascending entries; a first import appends), a delta CRL adds or updates its
  entries and deletes those marked removeFromCRL (8) (a serial listed twice, in either,
  is refused). Every changed serial gets
  a new status version and loses any stored OCSP answer; the commit sequence
  is bumped once; the issuer's `CrlState` records the CRL's number and times,
  and its nextUpdate, past which the responder refuses to answer.

The store is marked ``mode = crl-import`` (`store.format.META_MODE`): the
responder then answers "good" for a serial the store does not hold. A store
built from issuance records is refused, and so is every CRL that fails a check:
a refused CRL leaves the store exactly as it was. What the CRL cannot say is
stored as unknown: legal category 0, validity 0..0, holder all zeros.

An http(s) source is fetched within one deadline for the whole exchange (redirects, the
status and header lines and the body included): ``--timeout`` seconds (default 60) plus one
second per ``--min-rate`` bytes received (default 1M: 1 MiB a second; a 2 GiB CRL, the most
accepted, may take 2,048 s more). A server that drips its answer is cut as soon as it falls
behind the rate ("not received whole within its deadline ...: cut, nothing imported, the
store unchanged"), like any refused source, and the next source is read.
"""

# This docstring is ``crlbuilder import-crl --help``'s description. This module holds the
# command's flags, built without `crlbuilder.crl.importer` (the store, the build's issuer table,
# cryptography's x509): ``crlbuilder --help`` and every other command start without them.

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from crlbuilder.config import DEFAULT_CHANGES_KEEP_DAYS
from crlbuilder.options import instant, transfer_rate

FETCH_TIMEOUT: Final = 60.0
"""Seconds one fetch may take besides its bytes' time (`crlbuilder.crl.importer.read_source`)."""
FETCH_MIN_RATE: Final = 1 << 20
"""Bytes a second a fetch is held to on top of `FETCH_TIMEOUT` (1 MiB/s: a CRL of
`crlbuilder.crl.importer.MAX_CRL_BYTES` may take 2,048 s more)."""


def add_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``import-crl`` on an argparse subparsers object, run by ``run``
    (`crlbuilder.crl.importer.run_import`, or a function importing it when called)."""
    p = subparsers.add_parser(
        "import-crl",
        help="import the 機構's CRL files into a group appliance's store (団体署名検証者)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--store", type=Path,
        help="the status store directory (with --group: default the group's store)",
    )  # fmt: skip
    issuers = p.add_mutually_exclusive_group(required=True)
    issuers.add_argument(
        "--pki",
        type=Path,
        help="PKI directory (pki.json) with the issuer certificates",
    )
    issuers.add_argument(
        "--group",
        type=Path,
        help="a group appliance's directory (group.json, `crlbuilder group init`): its "
        "issuers, its store and its token",
    )
    p.add_argument(
        "--token-file", type=Path,
        help="file holding a bearer token sent to http(s) sources (with --group: default the "
        "group's token)",
    )  # fmt: skip
    p.add_argument(
        "--issuer", metavar="ID",
        help="every SOURCE is this issuer generation's CRL (fetched from its URL); needed for "
        "a CRL that verifies as two generations' (one CA name, a successor certificate)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="import a CRL whose nextUpdate has passed")
    p.add_argument("--as-of", type=instant, help="the current time (default now), for tests")
    p.add_argument(
        "--timeout", type=float, default=FETCH_TIMEOUT, metavar="SECONDS",
        help="seconds one URL's fetch may take, connection to last byte, besides the time "
        "--min-rate allows for its bytes (default %(default)g)",
    )  # fmt: skip
    p.add_argument(
        "--min-rate",
        type=transfer_rate,
        default=FETCH_MIN_RATE,
        metavar="BYTES",
        help="the least rate a fetch is held to, bytes a second (K, M, G: KiB, MiB, GiB): "
        "each may take --timeout plus one second per BYTES received; a slower answer is "
        "cut, nothing imported (default 1M: a 2 GiB CRL may take 2,048 s more)",
    )
    p.add_argument(
        "--changes-keep-days", type=int, default=DEFAULT_CHANGES_KEEP_DAYS,
        help="days the changes feed (GET /v1/changes) keeps each loss of effect "
        f"(default {DEFAULT_CHANGES_KEEP_DAYS})",
    )  # fmt: skip
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="CRL file (DER) or http(s) URL")
    p.set_defaults(func=run)
