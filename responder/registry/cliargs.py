"""The `responder registry` command line: its actions, their flags and the flags' types.

Built without the handlers (`responder.registry.cli`, which imports the registry's checks,
its audit and, for ``--nats``, the NATS client): ``responder --help`` and every other command
start without them, and a registry action imports them when it runs (``add_cli``'s ``run``).
The flags' types (``_date``, ``_count``, ``_reason``, ``_instant``) refuse a value before
anything is read or written.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from crlbuilder.model import Family
from crlbuilder.options import instant
from crlbuilder.rules import JST
from responder.registry.pastinstants import ALLOWANCE
from responder.registry.schema import COUNT_MAX
from responder.registry.vocabulary import Method, Service, Title

DEFAULT_BUCKET: Final = "JPKI_REGISTRY"
"""The JetStream key-value bucket of the shared registry unless ``--bucket`` names another
(`responder.registry.shared`)."""


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _count(value: str) -> int:
    """A whole number of 0 or more (0 where the option says it means "none"), at most
    `schema.COUNT_MAX` (what the file may hold: refused here, before anything is written)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative (0 means none)")
    if n > COUNT_MAX:
        raise argparse.ArgumentTypeError(f"{n} is too large (at most {COUNT_MAX})")
    return n


def _reason(value: str) -> str:
    """A reason in words: 1 to 2000 characters, not only spaces (what the registry's texts hold)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the reason is empty")
    if len(value) > 2000:
        raise argparse.ArgumentTypeError("the reason is longer than 2000 characters")
    return value


def _instant(value: str) -> datetime:
    """A date (its 00:00 Japan time: the registry's days are Japan days), or a time with an
    offset as every command-line time (`crlbuilder.options.instant`, which words the refusal)."""
    if len(value) == 10:
        try:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=JST)
        except ValueError:
            pass
    return instant(value)


def _common(p: argparse.ArgumentParser, *, writes: bool) -> None:
    p.add_argument("--registry", type=Path, help="registry TOML file (env JPKI_VA_REGISTRY)")
    if writes:
        p.add_argument(
            "--audit", type=Path, help="audit log (default: beside the registry, .audit.jsonl)"
        )
        p.add_argument(
            "--actor", default=_os_user(), help="who makes the change (default: the OS user)"
        )
        _audit_key_flag(p)
        _nats_flags(p)


def _audit_key_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audit-key",
        type=Path,
        help="the audit log's key for personal fields (HMAC-SHA256; 0600; default: beside the "
        "registry, .audit.secret; drawn when absent)",
    )


def _correction_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--correction",
        metavar="REASON",
        type=_reason,
        help=f"this change corrects the record: an instant more than {ALLOWANCE:g} s in the "
        "past is taken, and REASON is kept in the audit log (without it such an instant is "
        "refused: the ledger counted what the party received then)",
    )


def _nats_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nats",
        metavar="nats://HOST:PORT[,...]",
        default=os.environ.get("JPKI_VA_NATS") or None,
        help="several nodes: the registry is shared in a JetStream key-value bucket "
        "(env JPKI_VA_NATS); a change goes there first, compare-and-set",
    )
    p.add_argument(
        "--bucket", default=DEFAULT_BUCKET, help=f"the key-value bucket (default {DEFAULT_BUCKET})"
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _party_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.add_argument("--id", required=True, help="party id ([a-z0-9-])")
    p.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        help="TOML with the party's [[party]] table, as the starting point (update: its "
        "suspensions and end are kept)",
    )
    p.add_argument("--name", help="氏名又は名称 (Ord §30(1))")
    g = p.add_argument_group("notification (届出, Ord §30, §32, §61)")
    g.add_argument("--address", help="住所")
    g.add_argument("--representative", help="代表者の氏名 (a corporation; required for a group)")
    g.add_argument("--office", help="提供を受ける事務所の所在地")
    g.add_argument("--start", type=_date, help="提供を開始する日 (YYYY-MM-DD, Japan date)")
    g.add_argument("--notified", type=_date, help="the day the notification was received")
    g.add_argument(
        "--filed-by",
        metavar="ID",
        help="the party's contractor (its --delegated-to) filed this notification in its "
        "place (Ord §29(3), §60(1)); '' clears",
    )
    g = p.add_argument_group("titles")
    g.add_argument(
        "--title",
        action="append",
        choices=[t.value for t in Title],
        help="a title (repeat for several)" + ("; replaces the titles" if update else ""),
    )
    g.add_argument(
        "--category", type=int, help="Act §17(1) item 1..6 (signature-verifier, user-verifier)"
    )
    g.add_argument(
        "--certified-until",
        type=_date,
        help="categories 5, 6: last day of the certification (Act §17(2))",
    )
    g.add_argument(
        "--delegated-to",
        metavar="ID",
        help="signature-verifier, user-verifier of category 6: the certified contractor "
        "(電子署名等確認業務受託者) the party entrusts its whole verification work to, named on "
        "both titles; the party is deemed certified while the contractor is (its own "
        "--certified-until removed), its contractor's suspensions stop it, and on each side "
        "whose kind the contractor holds it is served under the contractor's agreement, "
        "deemed its own, sharing its quotas (Ord §29, §60); its own agreement covers only "
        "the other side",
    )
    if update:
        g.add_argument(
            "--no-delegation",
            action="store_true",
            help="end the delegation (Ord §29): the titles name no contractor and the "
            "notification no filer; give --certified-until, and an agreement if it had none",
        )
    g.add_argument(
        "--group-kind",
        type=int,
        help="group-signature-verifier: Act §17(5) item 1 or 2; signature-confirmer: its group's item",
    )
    g.add_argument(
        "--members",
        action="append",
        help="group: member party ids, comma separated (署名確認者の範囲)",
    )
    g.add_argument("--member-prefix", help="group: every party id with this prefix is a member")
    g.add_argument("--group", help="signature-confirmer: its group's party id")
    g.add_argument(
        "--approved", type=_date, help="specified-user-verifier: day of the approval (Act §38-2)"
    )
    g.add_argument("--approval", help="specified-user-verifier: reference of the approval")
    g.add_argument(
        "--approved-until",
        type=_date,
        help="specified-user-verifier: last day of the approval period (its tokens end then)",
    )
    g.add_argument(
        "--approval-revoked",
        type=_instant,
        help="specified-user-verifier: when the approval was revoked (Act §38-2(6))",
    )
    g = p.add_argument_group(
        "agreement (取決め, Ord §31, §33, §62); defaults: all the titles allow (for a "
        "principal, less what its contractor's agreement covers, Ord §29(4), §60(2))"
    )
    g.add_argument(
        "--service", action="append", choices=[s.value for s in Service],
        help="a service agreed (repeat; replaces the list; a new party: every service its titles allow)",
    )  # fmt: skip
    g.add_argument(
        "--family", action="append", choices=[f.value for f in Family],
        help="a certificate family agreed (repeat; replaces the list; unset, with --service or for a new party: every family the services cover)",
    )  # fmt: skip
    g.add_argument(
        "--method", action="append", choices=[m.value for m in Method],
        help="a method of provision agreed (repeat; replaces the list; unset, with --service or for a new party: every method the services use)",
    )  # fmt: skip
    g.add_argument(
        "--crl-cycle",
        type=_count,
        help="seconds: at most one download of each CRL file (generation, full or delta) per period (0: none)",
    )
    g.add_argument(
        "--quota-per-second", type=_count,
        help="requests per second (0: no quota); a signature-confirmer: its own bound on its "
        "group's appliance instead of [group] member_requests_per_second",
    )  # fmt: skip
    g.add_argument(
        "--quota-per-day", type=_count,
        help="requests per day (0: no quota); a signature-confirmer: its own bound on its "
        "group's appliance instead of [group] member_requests_per_day",
    )  # fmt: skip
    g.add_argument(
        "--provisions-per-day",
        type=_count,
        help="provisions (件数: OCSP CertIDs, batch entries, changes, CRL downloads) per Japan day (0: no bound)",
    )
    g.add_argument("--liability", help="損害賠償に関する事項 (Ord §31(3))")
    g.add_argument("--member-answer", help="group: how it answers its members (Ord §33(4))")
    g.add_argument("--concluded", type=_date, help="day the agreement was concluded")
    if update:
        g.add_argument(
            "--drop-agreement",
            action="store_true",
            help="remove the party's own agreement: a principal (--delegated-to) is then served "
            "under its contractor's only, deemed its own (Ord §29(4), §60(2))",
        )
    g = p.add_argument_group("credentials")
    g.add_argument(
        "--new-token",
        action="count",
        default=0,
        help="add a fresh random bearer token, printed once",
    )
    g.add_argument(
        "--token-sha256", action="append", help="add a bearer token known by its SHA-256 (hex)"
    )
    g.add_argument("--mtls-cert", action="append", type=Path, help="add a TLS client certificate")
    g.add_argument(
        "--signed-request-cert",
        action="append",
        type=Path,
        help="add a certificate for signed OCSP requests",
    )
    g.add_argument("--label", help="label of the one credential this command adds")
    g.add_argument("--not-before", type=_instant, help="start of the added credentials' window")
    g.add_argument("--not-after", type=_instant, help="end of the added credentials' window")
    if update:
        g.add_argument(
            "--remove-credential", action="append", metavar="LABEL",
            help="remove the credential with this label (repeatable)",
        )  # fmt: skip
        g.add_argument(
            "--expire-credential",
            action="append",
            metavar="LABEL",
            help="end its window at --at (default now): rotation",
        )
        g.add_argument("--at", type=_instant, help="when --expire-credential takes effect")
    else:
        p.set_defaults(remove_credential=None, expire_credential=None, at=None,
                       no_delegation=False, drop_agreement=False)  # fmt: skip


def add_cli(subparsers: Any, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """Add ``registry`` and its actions to ``responder``'s top-level subparsers, every action
    run by ``run`` (which reads ``args.registry_command``: `responder.registry.cli.run`, or a
    function importing it when called)."""
    r: argparse.ArgumentParser = subparsers.add_parser(
        "registry",
        help="the registry of parties: notification, agreement, credentials, state",
        description="Every change is checked in full, audited (hash-chained JSON lines) and "
        "written atomically; running workers pick it up within a second.",
    )
    r.set_defaults(func=run)
    sub = r.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    p = sub.add_parser("init", help="write a registry of a demo PKI's parties")
    p.add_argument("--pki", type=Path, required=True, help="PKI directory (pki.json)")
    p.add_argument("--out", type=Path, required=True, help="registry TOML to write")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing file (refused when it holds parties the demo PKI has not, "
        "unless --discard-parties names how many)",
    )
    p.add_argument(
        "--discard-parties",
        type=_count,
        metavar="N",
        help="with --force: the number of parties not in the demo PKI that the replaced "
        "registry holds and that are discarded (must match)",
    )
    p.add_argument("--audit", type=Path, help="audit log (default: beside the registry)")
    p.add_argument("--actor", default=_os_user(), help="who (default: the OS user)")
    _audit_key_flag(p)

    p = sub.add_parser("add", help="register a party (notification and agreement)")
    _common(p, writes=True)
    _party_flags(p, update=False)

    p = sub.add_parser("update", help="change a party; add, expire or remove credentials")
    _common(p, writes=True)
    _party_flags(p, update=True)
    _correction_flag(p)

    p = sub.add_parser("suspend", help="stop provision (提供の停止, Act §18(6),(7), §37(4))")
    _common(p, writes=True)
    p.add_argument("--id", required=True, help="the party to suspend")
    p.add_argument("--article", required=True, help="e.g. 'Act §18(6)(1)', 'Act §37(4)(3)'")
    p.add_argument("--reason", required=True, help="why, in words (kept in the registry)")
    p.add_argument("--since", type=_instant, help="default: now")
    p.add_argument(
        "--carry-over",
        action="store_true",
        help="also stop the other title's services (Act §18(6)(6), §37(4)(6))",
    )
    _correction_flag(p)

    p = sub.add_parser("resume", help="end the suspensions in force")
    _common(p, writes=True)
    p.add_argument("--id", required=True, help="the suspended party")
    p.add_argument(
        "--article", help="only the suspension under this article (default: every one in force)"
    )
    p.add_argument("--at", type=_instant, help="default: now")
    _correction_flag(p)

    p = sub.add_parser("end", help="end provision to a party (final once in effect)")
    _common(p, writes=True)
    p.add_argument(
        "--id",
        required=True,
        help="the party whose provision ends; a contractor's (電子署名等確認業務受託者, Ord §29) "
        "is refused while a principal naming it would outlive it: end or move those first, "
        "or give --with-principals",
    )
    p.add_argument(
        "--with-principals",
        action="store_true",
        help="a contractor: end, in the same change and at the same instant, each principal "
        "naming it that would outlive it (article Ord §29(1): their deemed certification "
        "ends with the contractor's provision)",
    )
    p.add_argument("--reason", required=True, help="why, in words (kept in the registry)")
    p.add_argument("--article", help="e.g. 'Act §17(3)' (certification revoked)")
    p.add_argument("--at", type=_instant, help="default: now")
    _correction_flag(p)

    p = sub.add_parser("import", help="add the parties of another registry file")
    _common(p, writes=True)
    p.add_argument(
        "--from", dest="from_file", type=Path, required=True,
        help="registry TOML file whose parties are added (certificate paths rebased)",
    )  # fmt: skip
    p.add_argument("--replace", action="store_true", help="replace parties with the same id")
    _correction_flag(p)

    p = sub.add_parser(
        "migrate",
        help="rewrite old flat-format entries in the current format (届出 and 取決め supplied)",
        description="Old entries (titles = [...]) have no notification or agreement and are "
        "refused when the registry loads. Their notification, title details and agreement "
        "come from --details (TOML [[party]] tables by id); credentials are kept. Audited.",
    )
    _common(p, writes=True)
    p.add_argument(
        "--details",
        type=Path,
        help="TOML file: [[party]] id, notification, title, agreement for each old entry",
    )
    p.add_argument(
        "--drop",
        action="append",
        metavar="ID",
        help="leave this old-format party out of the registry (repeatable)",
    )

    p = sub.add_parser("export", help="the registry in normalized form")
    _common(p, writes=False)
    p.add_argument(
        "--out",
        type=Path,
        help="file to write (mode 0600; certificate paths relative to it; default stdout, "
        "paths relative to the registry)",
    )
    p.add_argument("--format", choices=("toml", "json"), default="toml", help="default: toml")

    p = sub.add_parser("show", help="one party and its state now")
    _common(p, writes=False)
    p.add_argument("--id", required=True, help="the party")
    p.add_argument("--format", choices=("toml", "json"), default="toml", help="default: toml")

    p = sub.add_parser("list", help="every party, its state and credentials")
    _common(p, writes=False)
    p.add_argument("--format", choices=("text", "json"), default="text", help="default: text")

    p = sub.add_parser("check", help="validate the registry, print warnings")
    _common(p, writes=False)

    p = sub.add_parser(
        "sync",
        help="several nodes: take the shared registry (--nats) into this node's file",
        description="Write the registry held in the JetStream key-value bucket to this node's "
        "file, checked and audited here (action replicate); with --follow, every change as it "
        "is made on any node (workers pick the file up within a second).",
    )
    _common(p, writes=True)
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep watching until SIGTERM; NATS servers that do not answer yet (at the start "
        "too) are waited for, a warning every second",
    )

    p = sub.add_parser("verify-audit", help="check the audit log's hash chain and the registry")
    p.add_argument("--registry", type=Path, help="also check this registry is the last audited")
    p.add_argument("--audit", type=Path, help="audit log (default: beside --registry)")

    p = sub.add_parser(
        "audit-hash",
        help="an auditor's check: the audit log's keyed hash of a value read from stdin",
        description="Reads one value (a name, address, representative or office) from standard "
        "input, so that it is in no shell history or process list, and prints the hmac-sha256: "
        "text the audit log holds for it under the key; search the log for that text.",
    )
    p.add_argument("--registry", type=Path, help="the registry whose key (beside it) is used")
    p.add_argument("--audit-key", type=Path, help="the key file (default: beside --registry)")
    return r
