"""`crlbuilder group pull [--follow]`: the 機構's CRL files into a group appliance's store.

A group signature verifier (団体署名検証者, Act §17(5)) answers its members from the
signature CRL files the 機構 provides to it (Act §18(2), §20(1)), fetched with the
group's own credential at the agreed cycle (提供の周期, Ord §33(2)). One pass, for
every issuer of ``group.json`` (`crlbuilder.group.setup`):

1. ``GET`` the full CRL's URL with ``Authorization: Bearer`` and, when the store holds the
   file last imported from it, ``If-None-Match`` with that file's ETag: a 304 means the
   file has not changed, nothing to fetch (a 304 provides nothing: the 機構 counts no
   download and uses no cycle for it); a 200 is a download (counted in the 機構's ledger
   against the group, 帳簿 Act §40), imported (`crlbuilder.crl.importer`: signature
   against the CA certificate the group received, order, freshness; applied in one write
   transaction, which also keeps the file's ETag with its CRL number in the issuer's
   `CrlState`, so a restarted pull, or a one-off ``group pull`` before ``--follow``, asks
   with it too and is not counted again);
2. the same for the delta CRL (a 404 there: the 機構 publishes no delta CRL). A delta
   based on a full CRL newer than the one imported (the 機構 published a new full CRL
   between the two fetches) makes the pass fetch the full CRL again, once.

"This full CRL is the one I have" and "this delta is already applied" are nothing to
do (``already-imported`` / ``unchanged``), never errors. A CRL that fails verification,
goes backwards or is past its nextUpdate is refused and the store keeps the last good
data, the log line saying why; the responder then answers from that data, and says
``tryLater`` (and raises ``jpkiva_stale_issuer``, alert JpkiVaIssuerStale) once its
nextUpdate passes. A 機構 that cannot be reached (refused connection, timeout, 5xx, a
broken HTTP answer, an answer not received whole within its deadline: `fetch`) is retried
with a doubling backoff (1 s up to the cycle; a Retry-After is honoured). A 429 is
not a failure: the agreement (取決め) limits the group's downloads (a file changed less than
the agreed cycle after its last download, 提供の周期 Ord §33(2), or the day's quota), and the
file is ``limited``, asked again at the 機構's Retry-After. The responder reads the store
on its own and is never held by a pull (LMDB readers do not wait for the writer).

``--follow`` repeats the pass: a cycle after the end of a clean pass (so two downloads
of one file are never less than a cycle apart), sooner after a failure (the backoff) or
when a limited file may be downloaded (its Retry-After, at most a cycle).
Each request's deadline (``--timeout`` and ``--min-rate``): the whole exchange, from
the connection to the last byte of the body, ends within ``--timeout`` seconds (default
30) plus one second per ``--min-rate`` bytes received (default 1M: 1 MiB a second), so a
2 GiB CRL, the most accepted, may take 30 s + 2,048 s while a 機構 that drips its status
line, headers or body is cut as soon as it falls behind the rate. A cut download is
``unreachable`` ("not received whole within its deadline ...: cut, nothing imported, the
store unchanged"): the store, its ETags and the next pass are as if it had never started.
SIGTERM to ``--follow`` gives up the file being downloaded at once (within a quarter of a
second: ``stopped``, its bytes dropped, nothing imported; a download is held in memory, never
a partial file) and ends the pass, no other file asked; the next run asks for it again (the
store has not changed: the 機構 counts it again, or refuses it within the cycle, 429).
Log lines are JSON on stderr: ``group-pull`` per file (issuer id, full or delta,
status, CRL number, counts, why refused), ``group-pass`` per pass, ``group-stale``
when an issuer's data passes its nextUpdate; never the token, never a serial.
"""

# This docstring is ``crlbuilder group pull --help``'s description. This module holds the
# command's flags, built without `crlbuilder.group.pull` (the CRL import, the store, the HTTP
# client): ``crlbuilder --help`` and every other command start without them.

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from crlbuilder.options import positive_seconds, transfer_rate

TIMEOUT: Final = 30.0
"""Seconds one request may take besides its bytes' time (`fetch`): connect, TLS, the
request, the status and header lines, a small file."""
MIN_RATE: Final = 1 << 20
"""Bytes a second a download is held to on top of `TIMEOUT` (1 MiB/s: a 2 GiB CRL, the
most accepted, may take 2,048 s more)."""


def add_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``pull`` on ``crlbuilder group``'s subparsers."""
    p = subparsers.add_parser(
        "pull",
        help="fetch, verify and import the 機構's CRL files (--follow: every cycle)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--group", type=Path, required=True, help="the group directory (group.json)")
    p.add_argument("--follow", action="store_true", help="repeat at the agreed cycle")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=TIMEOUT,
        metavar="SECONDS",
        help="seconds one request may take, connection to last byte, besides the time "
        "--min-rate allows for its bytes; > 0 (default %(default)g)",
    )
    p.add_argument(
        "--min-rate",
        type=transfer_rate,
        default=MIN_RATE,
        metavar="BYTES",
        help="the least rate a download is held to, bytes a second (K, M, G: KiB, MiB, GiB): "
        "each request may take --timeout plus one second per BYTES received; a slower "
        "answer is cut, nothing imported (default 1M: a 2 GiB CRL may take 2,048 s more)",
    )
    p.set_defaults(func=run)
