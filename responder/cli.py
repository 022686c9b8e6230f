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
from responder import reloadctl, report
from responder.config import add_arguments, load_config, overrides_from_args
from responder.registry import cli as registrycli
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

    registrycli.add_cli(sub)
    report.add_cli(sub)
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
