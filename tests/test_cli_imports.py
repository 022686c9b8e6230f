"""Both commands start without importing what their other commands use.

An operator's ``responder registry ...``, ``crlbuilder outbox ...`` and ``--help``, and the
hundreds of commands the suite starts, spent most of their time importing modules they did not
use (the NATS client through the registry's CLI, the ledger and asyncio through the report's,
the build and the CRL import, cryptography's x509 through the demo PKI and the ceremonies):
each command's flags are now built without its handlers' modules (`responder.registry.cliargs`,
`crlbuilder.ceremonycli`, `crlbuilder.crl.importcli`, `crlbuilder.group.initcli` and
`pullcli`, `crlbuilder.demo.democli`), which are imported when the command runs. Checked here
in a fresh interpreter each (what an earlier test imported would hide it): the whole parser
tree built and every ``--help`` formatted, then a command run, and what ``sys.modules`` holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crlbuilder import ceremony
from crlbuilder import cli as crlbuilder_cli
from responder import cli as responder_cli
from responder.registry import cli as registrycli
from tests.conftest import Built

HEAVY: tuple[str, ...] = (
    # third-party modules no --help uses (measured with python -X importtime: nats 55-90 ms,
    # asyncio 25-40 ms, cryptography's x509 30-40 ms, tqdm 17 ms, prometheus_client 19 ms)
    "nats",
    "asyncio",
    "ssl",
    "cryptography",
    "lmdb",
    "tqdm",
    "prometheus_client",
    "uvloop",
    "httptools",
    "joserfc",
    "pkcs11",
    "asn1crypto",
    "lxml",
    "xmlsec",
    "http.client",
    # the modules that do the commands' work
    "responder.registry.cli",
    "responder.registry.shared",
    "responder.report",
    "responder.ledger",
    "responder.app",
    "crlbuilder.build",
    "crlbuilder.apply",
    "crlbuilder.jetstream",
    "crlbuilder.crl.importer",
    "crlbuilder.ceremony",
    "crlbuilder.demo.pki",
    "crlbuilder.demo.synth",
    "crlbuilder.group.init",
    "crlbuilder.group.pull",
    "crlbuilder.store.lmdbstore",
    "crlbuilder.keys.signer",
)
"""What building either parser and ``--help`` must not import (a package or any of its
submodules)."""

_PROBE = """
import argparse, contextlib, io, json, sys
from {module} import main, parser

walked = []

def walk(p, path):
    p.format_help()
    walked.append(path)
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                walk(sub, path + [name])

walk(parser(), [])
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
print(json.dumps({{"rc": rc, "out": out.getvalue(), "walked": walked,
                   "modules": sorted(sys.modules)}}))
"""


def _probe(module: str, *argv: str) -> dict[str, object]:
    """In a fresh interpreter: ``module``'s parser tree built, every ``--help`` formatted,
    then ``main(argv)`` run; its exit code, output, the commands walked and ``sys.modules``."""
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("JPKI_VA_NATS", None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module), *argv],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


@pytest.mark.integration  # a fresh interpreter
@pytest.mark.parametrize("module", ["responder.cli", "crlbuilder.cli"])
def test_help_imports_no_handler(module: str) -> None:
    found = _probe(module, "--help")
    assert found["rc"] == 0
    assert "COMMAND" in str(found["out"])
    walked = found["walked"]
    assert isinstance(walked, list) and len(walked) > 20  # the whole tree was built
    assert _loaded(found["modules"], HEAVY) == []


@pytest.mark.integration  # a fresh interpreter
def test_registry_list_imports_the_registry_not_nats_nor_the_report(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    assert registrycli.main([
        "registry", "add", "--registry", str(reg), "--actor", "t", "--id", "bank-1",
        "--name", "n", "--address", "a", "--representative", "r", "--office", "o",
        "--start", "2024-04-01", "--title", "signature-verifier", "--category", "4",
        "--liability", "l", "--token-sha256", "ab" * 32,
    ]) == 0  # fmt: skip
    found = _probe("responder.cli", "registry", "list", "--registry", str(reg), "--format", "json")
    assert found["rc"] == 0
    assert [p["id"] for p in json.loads(str(found["out"]))] == ["bank-1"]
    # what it used was imported when it ran; what it did not use was not
    assert _loaded(found["modules"], ("responder.registry.cli",)) == ["responder.registry.cli"]
    unused = ("nats", "asyncio", "ssl", "prometheus_client", "lmdb", "responder.report",
              "responder.ledger", "responder.registry.shared", "crlbuilder.jetstream")  # fmt: skip
    assert _loaded(found["modules"], unused) == []


@pytest.mark.integration  # a fresh interpreter
def test_outbox_mark_imports_no_crypto_nor_store(tmp_path: Path) -> None:
    notices = tmp_path / "notices.jsonl"
    notices.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    found = _probe("crlbuilder.cli", "outbox", "mark", "--file", str(notices))
    assert found["rc"] == 0
    assert str(found["out"]).startswith("2:")
    assert _loaded(found["modules"], ("crlbuilder.outboxprune",)) == ["crlbuilder.outboxprune"]
    assert _loaded(found["modules"], HEAVY) == []


@pytest.mark.integration  # a fresh interpreter, and the built fixture's population
def test_a_build_from_record_files_imports_no_nats(built: Built, tmp_path: Path) -> None:
    """``crlbuilder build`` from record files (no ``--source``) applies no record stream:
    the NATS client, asyncio and the stream's modules are not imported."""
    args = built.builder_args(store=tmp_path / "store", crl_dir=tmp_path / "crl")
    found = _probe("crlbuilder.cli", "build", *args)
    assert found["rc"] == 0
    assert _loaded(found["modules"], ("crlbuilder.build",)) == ["crlbuilder.build"]
    unused = ("nats", "asyncio", "ssl", "crlbuilder.jetstream", "crlbuilder.stream")
    assert _loaded(found["modules"], unused) == []


def _actions(parser: argparse.ArgumentParser, *path: str) -> set[str]:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _leaves_without_func(
    parser: argparse.ArgumentParser, path: list[str], func: object = None
) -> list[str]:
    func = parser._defaults.get("func", func)  # a parent's, unless the command sets its own
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [] if callable(func) else [" ".join(path)]
    return [
        leaf
        for name, sub in subs[0].choices.items()
        for leaf in _leaves_without_func(sub, [*path, name], func)
    ]


def test_every_action_has_its_handler() -> None:
    """The parsers name the actions, the handlers' modules map them to what does them: the
    two lists are the same (an action added to one only would fail when run), and every
    command of either tree runs something."""
    assert _actions(responder_cli.parser(), "registry") == set(registrycli.COMMANDS)
    assert _actions(crlbuilder_cli.parser(), "keys") == set(ceremony.COMMANDS)
    assert _leaves_without_func(responder_cli.parser(), ["responder"]) == []
    assert _leaves_without_func(crlbuilder_cli.parser(), ["crlbuilder"]) == []


def test_the_descriptions_copied_into_the_flags_modules_match_their_handlers() -> None:
    """``synth --help`` and ``keys --help`` describe the command by its module's docstring; the
    flags modules carry a copy (the handler's module is not imported to build the parser): the
    copies say what the handlers' docstrings say."""
    from crlbuilder import ceremony, ceremonycli
    from crlbuilder.demo import democli, synth

    assert synth.__doc__ is not None and ceremony.__doc__ is not None
    assert ceremonycli.__doc__ is not None
    assert synth.__doc__.splitlines()[0] == democli.SYNTH_DESCRIPTION
    assert ceremonycli.__doc__.split("\n\n")[0] == ceremony.__doc__.split("\n\n")[0]
