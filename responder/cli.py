"""The `responder` command: subcommands and their flags, nothing else.

    responder serve --config FILE [flags]          the OCSP/CRL server (master + workers)
    responder registry init --pki DIR --out FILE   a registry of a demo PKI's parties

Exit codes: 0 done, 1 the server failed to start, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from responder.config import ConfigError, add_arguments, load_config, overrides_from_args


def _serve(args: argparse.Namespace) -> int:
    from responder.app import create_app
    from responder.server import serve

    overrides = overrides_from_args(args)
    try:
        config = load_config(args.config, overrides)
        # fail early, in the master, on what every worker would fail on
        from crlbuilder.manifest import ManifestError, load_manifest
        from crlbuilder.store import Store
        from crlbuilder.storeformat import StoreFormatError
        from responder.registry import Registry, RegistryError

        load_manifest(config.store.pki)
        Registry.load(config.registry.path)
        Store.open(config.store.path, readonly=True).close()
    except (ConfigError, ManifestError, RegistryError, StoreFormatError) as e:
        print(f"responder serve: error: {e}", file=sys.stderr)
        return 2
    return serve(config, create_app, reload_config=lambda: load_config(args.config, overrides))


def _registry_init(args: argparse.Namespace) -> int:
    from crlbuilder.manifest import ManifestError, load_manifest
    from responder.registry import registry_from_manifest

    try:
        manifest = load_manifest(args.pki)
    except ManifestError as e:
        print(f"responder registry init: error: {e}", file=sys.stderr)
        return 2
    out: Path = args.out
    if out.exists() and not args.force:
        print(
            f"responder registry init: error: {out} exists (use --force to replace it)",
            file=sys.stderr,
        )
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    text = registry_from_manifest(manifest, out)
    tmp = out.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(out)
    print(f"{out}: {len(manifest.parties)} parties")
    return 0


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
        "stops, SIGHUP reloads the configuration and the registry.",
    )
    s.add_argument("--config", type=Path, help="TOML configuration (see config/responder.toml)")
    add_arguments(s)
    s.set_defaults(func=_serve)

    r = sub.add_parser("registry", help="the registry of parties")
    rsub = r.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    ri = rsub.add_parser(
        "init", help="write a registry of a demo PKI's parties (token hashes, certificates)"
    )
    ri.add_argument("--pki", type=Path, required=True, help="PKI directory (pki.json)")
    ri.add_argument("--out", type=Path, required=True, help="registry TOML to write")
    ri.add_argument("--force", action="store_true", help="replace an existing file")
    ri.set_defaults(func=_registry_init)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
