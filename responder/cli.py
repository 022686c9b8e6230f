"""The `responder` command: subcommands and their flags, nothing else.

    responder serve --config FILE [flags]          the OCSP/CRL server (master + workers)
    responder reload --pid PID                     reload a running server, wait for its verdict
    responder registry init|add|update|show|list|suspend|resume|end|import|export|check|verify-audit
                                                   the registry of parties (届出・取決め), audited
    responder report --year YYYY --format html|csv|json --ledger DIR   the yearly report (報告書)
    responder watch-compact --config FILE          snapshot the watch lists, purge the watch stream

Exit codes: 0 done, 1 the server failed to start, 2 bad usage or configuration, 5 a
signing token refused the PIN (`crlbuilder.keys.signer.EXIT_PIN_REFUSED`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Final

from crlbuilder.lifecycle import no_core_dumps
from crlbuilder.options import ConfigError, describe_commands, run_command
from crlbuilder.seal import take_facts_key
from responder import reloadctl
from responder.config import add_arguments, load_config, overrides_from_args
from responder.registry import cliargs as registryargs
from responder.v1 import watchcompact

EPILOG: Final = (
    "Exit codes: 0 done, 1 the work failed or the server failed to start, 2 bad usage or "
    "configuration; serve 5 a signing token refused the PIN (the units do not restart it). "
    "Every COMMAND has its own --help. The configuration: "
    "config/responder.toml (every field, commented); operating it: README.md and "
    "docs/operations.md."
)
"""What every ``responder`` --help ends with."""


def _serve(args: argparse.Namespace) -> int:
    # imported here, not for `registry` and `report`; and before the try below, whose
    # except clause names these errors (a bad configuration fails before any of them)
    from crlbuilder.group.setup import GroupSetupError, load_group_setup
    from crlbuilder.keys.pkcs11 import close_all
    from crlbuilder.keys.signer import EXIT_PIN_REFUSED, PinRefused, SignerError
    from crlbuilder.manifest import ManifestError, load_manifest
    from crlbuilder.ocsp.delegate import nocheck_missing
    from crlbuilder.store.format import StoreFormatError
    from crlbuilder.store.lmdbstore import Store
    from responder.app import create_app
    from responder.ocsp import load_group_issuers, load_issuers
    from responder.registry.lookup import LastGoodRegistry, Registry
    from responder.registry.schema import RegistryError
    from responder.server import serve
    from responder.v1.jws import load_answer_signer
    from responder.v1.recordinfo import setup as record_info_setup

    overrides = overrides_from_args(args)
    try:
        config = load_config(args.config, overrides)
        # fail early, in the master, on what every worker would fail on:
        # every signing key opens and matches its certificate (a wrong PIN, a missing token
        # or key label, a key that is not the certificate's) before any answer is served;
        # the master then lets go of its PKCS#11 sessions: each worker opens its own
        if config.group.file is not None:  # a group appliance: its own responder key only
            # (the /v1 answers it relays are the 機構's, signed by the 機構: responder.relay)
            load_group_issuers(load_group_setup(config.group.file))
        else:
            manifest = load_manifest(config.store.pki)
            for view in load_issuers(manifest):  # off the profile, not refused: said once
                delegate = view.signer.signer.certificate
                if (note := nocheck_missing(view.certificate, delegate)) is not None:
                    print(f"responder serve: warning: {view.id}'s OCSP signer: {note}",
                          file=sys.stderr)  # fmt: skip
            load_answer_signer(config, manifest)  # the JWS of /v1 answers (responder.v1.jws)
            record_info_setup(config)  # the facts key of /v1/record-info, if configured
        close_all()
        # the master keeps the last good registry; a worker (re)started while the file is
        # broken serves it (responder.registry.LastGoodRegistry)
        last_good = LastGoodRegistry(config.registry.path, Registry.load(config.registry.path))
        Store.open(config.store.path, readonly=True).close()
    except (
        ConfigError, ManifestError, GroupSetupError, RegistryError, StoreFormatError, SignerError,
    ) as e:  # fmt: skip
        print(f"responder serve: error: {e}", file=sys.stderr)
        return EXIT_PIN_REFUSED if isinstance(e, PinRefused) else 2
    return serve(
        config,
        functools.partial(create_app, last_good=last_good),
        reload_config=lambda: load_config(args.config, overrides),
        master_tick=last_good.refresh,
    )


def _registry(args: argparse.Namespace) -> int:
    # the registry's handlers (its checks, audit, NATS) imported when a registry action runs
    from responder.registry import cli as registrycli

    return registrycli.run(args)


def _report(args: argparse.Namespace) -> int:
    from responder import report  # the ledger, asyncio: imported when a report is made

    return report.report_command(args)


def _add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report``: its flags here, its work in `responder.report` (imported when it runs)."""
    p = subparsers.add_parser(
        "report",
        help="the yearly report (報告書, Act §41): provisions per recipient and month",
        description="Collects the workers' ledger files into the durable ledger, then writes "
        "the report of one year. Exit 0 done, 1 some worker files were refused (nothing "
        "written unless --allow-refused, and then the report says it is incomplete) or, with "
        "--nats, the ledger stream could not be reached, 2 bad usage, ledger or registry, or --out "
        "that cannot be written (nothing left there; a report already at --out is kept whole).",
    )
    p.add_argument("--year", type=int, required=True, help="calendar year (JST months)")
    p.add_argument(
        "--format", choices=("html", "csv", "json"), default="html", help="default: html"
    )
    p.add_argument(
        "--ledger", type=Path, required=True,
        help="the ledger directory (the responder's [ledger] dir; it must exist)",
    )  # fmt: skip
    p.add_argument("--registry", type=Path, help="registry TOML: recipients' names")
    p.add_argument(
        "--out", type=Path,
        help="file to write, mode 0600 (default: standard output)",
    )  # fmt: skip
    p.add_argument(
        "--store", type=Path, help="status store: add 発行件数 (a full scan of the store)"
    )
    p.add_argument("--no-collect", action="store_true", help="report what is collected, read-only")
    p.add_argument(
        "--nats",
        metavar="nats://HOST:PORT[,...]",
        help="several nodes: ship this node's counts to the ledger stream and report the whole "
        "service's (every node's counts gathered from the stream)",
    )
    p.add_argument(
        "--node",
        help="this node's name on the ledger stream (default: the name this ledger ships as, "
        "its responder's [cluster] node; the host name before its first shipment)",
    )
    p.add_argument(
        "--ledger-stream",
        default="JPKI_LEDGER",
        help="with --nats: the JetStream stream of the nodes' ledger counts (default: JPKI_LEDGER)",
    )
    p.add_argument(
        "--allow-refused",
        action="store_true",
        help="write the report even when some worker files were refused",
    )
    p.set_defaults(func=_report)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="responder",
        description="Serve JPKI revocation status (OCSP, CRL files) from the status store "
        "to registered parties only.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="run the server: a master and N worker processes on one port",
        description="Prints 'listening on URL' once every worker serves. SIGTERM drains and "
        "stops, SIGHUP (or `responder reload --pid`, which waits for the verdict) reloads the "
        "configuration and the registry.",
    )
    s.add_argument(
        "--config", type=Path,
        help="TOML configuration (see config/responder.toml; default: none, the built-in defaults)",
    )  # fmt: skip
    add_arguments(s)
    s.set_defaults(func=_serve)

    registryargs.add_cli(sub, _registry)
    _add_report(sub)
    reloadctl.add_cli(sub)
    watchcompact.add_cli(sub)
    describe_commands(p, EPILOG)
    return p


def main(argv: list[str] | None = None) -> int:
    no_core_dumps()  # no dump of a key, PIN or secret: before any is read (`crlbuilder.lifecycle`)
    take_facts_key()  # out of the environment: no child inherits it (`crlbuilder.seal`)
    return run_command(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
