"""`crlbuilder group init`: a group appliance's directory from what the group received, nothing more.

A 団体署名検証者 (Act §17(5)) receives from the 機構 the issuers' CA certificates (the
機構 publishes them, Ord §74(1); its appliance serves them at ``GET /ca/index.json`` and
``GET /ca/<issuer>.pem``), the URLs of the CRL files (Act §18(2)) and its own
credential (a bearer token), and holds its own OCSP responder key and certificate. From
those alone this command writes, into ``--out``:

- ``group.json`` (`crlbuilder.group.setup`): issuers with each certificate's SHA-256 as
  received, CRL URLs, the 機構's URL, the agreed cycle (Ord §33(2)), the token file,
  the responder key reference, the store; read by ``crlbuilder group pull`` and by
  ``responder serve`` (``[group] file``);
- ``ca/<issuer>.pem`` (the CA certificates), ``group.pem`` (the group's responder
  certificate: what a member configures as trusted, ``openssl ocsp -VAfile group.pem``,
  RFC 6960 §4.2.2.2), ``authority.token`` (0600, the credential for the 機構);
- ``registry.toml``: the group's own registry, holding the group itself (its
  notification with the range of its members, 署名確認者の範囲, Ord §32(4), and its
  agreement, Ord §33); members are added with ``responder registry add --title
  signature-confirmer --group <group id>``;
- ``responder.toml``: the group's responder (group mode, its store, registry, ledger).

No CA key and no 機構 signer key is asked for or written. The CA certificates are
fetched over the 機構's public route: ``--ca-sha256`` pins the fingerprints the group
received out of band (every certificate fetched, a successor certificate too, must be one
of them, and every pin found), and the command prints each fingerprint for the operator to
compare.
Refused input (an existing directory, an unreachable 機構 or one whose answer is not
whole within 30 s from the connection on (a 機構 dripping it is cut), an index whose issuer id is not
an id or whose path would name another host (`AppliancePath`: the pull sends the group's
token to those URLs), a certificate that is no CA or does not match its pin, a responder key that does not match its certificate or a
certificate without the OCSP-signing purpose, a ``--token-file`` group or others may read or
that is not a regular file, `crlbuilder.tokenfile`) writes nothing.
"""

# This docstring is ``crlbuilder group init --help``'s description. This module holds the
# flags of ``group init`` and ``group keys``, built without `crlbuilder.group.init` (the HTTP
# client, cryptography's x509, the signer): ``crlbuilder --help`` and every other command
# start without them.

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from crlbuilder.rules import JST


def add_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``init`` on ``crlbuilder group``'s subparsers."""
    p = subparsers.add_parser(
        "init",
        help="a group appliance's directory from what the group received from the 機構",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="the group directory to make")
    g = p.add_argument_group("what the group received from the 機構")
    g.add_argument(
        "--authority", required=True, help="the 機構's appliance, e.g. https://va.example"
    )
    g.add_argument("--group-id", required=True, help="the group's party id at the 機構")
    g.add_argument(
        "--token-file", type=Path, required=True,
        help="the group's bearer token (a regular file, mode 0600 or stricter)",
    )  # fmt: skip
    g.add_argument(
        "--cycle", type=int, default=60,
        help="agreed cycle in seconds (Ord §33(2); default %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--ca-sha256",
        action="append",
        metavar="HEX",
        help="SHA-256 of a CA certificate as received out of band (repeat; pins the fetch)",
    )
    g.add_argument(
        "--answer-kid",
        action="append",
        metavar="KID",
        help="the id (RFC 7638 thumbprint) of an answer key of the 機構 as received out of "
        "band (repeat; each must be among the keys /v1/keys serves); write --answer-kid=KID: "
        "a thumbprint may begin with '-'",
    )
    g = p.add_argument_group("the group's own responder")
    g.add_argument("--responder-cert", type=Path, required=True, help="its certificate (PEM)")
    g.add_argument("--responder-key", required=True, help="its key: PEM file or pkcs11: URI")
    g.add_argument(
        "--port", type=int, default=8081, help="the group responder's port (default %(default)s)"
    )
    g.add_argument(
        "--metrics-port",
        type=int,
        default=9483,
        help="its admin listener's port (default %(default)s)",
    )
    g.add_argument(
        "--unlisted",
        choices=("good", "unknown"),
        default="good",
        help="the answer for a serial on no CRL (docs/operations.md; default %(default)s)",
    )
    g = p.add_argument_group("the group's notification (Ord §32) and agreement (Ord §33)")
    g.add_argument("--name", required=True, help="氏名又は名称")
    g.add_argument("--address", required=True, help="住所")
    g.add_argument("--representative", required=True, help="代表者の氏名")
    g.add_argument("--office", required=True, help="提供を受ける事務所の所在地")
    g.add_argument(
        "--start",
        type=date.fromisoformat,
        default=datetime.now(JST).date(),
        help="提供を開始する日 (YYYY-MM-DD, default today in Japan)",
    )
    g.add_argument("--group-kind", type=int, choices=(1, 2), required=True, help="Act §17(5) item")
    g.add_argument("--member", action="append", help="a member party id (署名確認者の範囲)")
    g.add_argument("--member-prefix", help="or: every party id with this prefix is a member")
    g.add_argument("--liability", required=True, help="損害賠償に関する事項 (Ord §33(3))")
    g.add_argument("--member-answer", required=True, help="how it answers members (Ord §33(4))")
    p.set_defaults(func=run)


def add_keys_cli(subparsers: Any, run: Callable[..., int]) -> None:
    """Register ``keys`` on ``crlbuilder group``'s subparsers."""
    p = subparsers.add_parser(
        "keys",
        help="pin the 機構's answer keys anew (its /v1/keys: key rotation)",
        description="Fetch the keys the 機構 signs its /v1 answers with (its public GET "
        "/v1/keys) and pin them in the group directory (kikou-keys.json), which the "
        "relay checks every record-information answer against before passing it on to a "
        "member. A new key set is taken only when it still includes a key pinned now (the "
        "機構 publishes its next key beside the current one before it signs with it), or a "
        "key id given with --answer-kid, received from the 機構 out of band; otherwise "
        "nothing is written. A group set up before answers were checked pins nothing: run "
        "this once after upgrading (until then the relay answers 502). The 機構's answer "
        "must arrive whole within 30 s of the connection (one dripping it is cut, nothing "
        "written). Prints the key ids added and dropped.",
    )
    p.add_argument("--group", type=Path, required=True, help="the group directory")
    p.add_argument(
        "--answer-kid",
        action="append",
        metavar="KID",
        help="a key id received from the 機構 out of band: taken even when the 機構 serves "
        "no key pinned now (repeat); write --answer-kid=KID: a thumbprint may begin with '-'",
    )
    p.set_defaults(func=run)
