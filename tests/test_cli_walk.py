"""Both commands walked from the outside, as an operator meets them.

- every command and subcommand's ``--help`` exits 0 and says what it does (a description,
  not only its usage) and ends with the exit codes and where to read more;
- a table of bad input (a missing file, a directory instead of a file, a file not UTF-8,
  an empty one, a misspelt key, a value of the wrong type or out of range) each refused with
  the exit code the commands document (2: bad usage or configuration), one line naming the
  file or flag and the field, never a traceback, and nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crlbuilder import cli as crlbuilder_cli
from responder import cli as responder_cli

MAINS: dict[str, Callable[[list[str] | None], int]] = {
    "crlbuilder": crlbuilder_cli.main,
    "responder": responder_cli.main,
}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "crlbuilder": crlbuilder_cli.parser,
    "responder": responder_cli.parser,
}


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, [*path, name])


COMMANDS = [[prog, *path] for prog, make in PARSERS.items() for path in _commands(make(), [])]


def _help(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = MAINS[argv[0]]([*argv[1:], "--help"])
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue()


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_help_says_what_the_command_does(argv: list[str]) -> None:
    rc, text = _help(argv)
    assert rc == 0
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith("usage: " + " ".join(argv))
    description = rest.split("\n\n")[0]
    # the block after the usage is prose, not already the options' or subcommands' list
    assert description.strip() and not description.startswith(
        ("options:", "positional arguments:")
    ), f"{' '.join(argv)} --help says nothing of what it does"
    assert "Exit" in text and "docs/" in text, "no exit codes or pointer to the docs"


def test_the_walk_covers_the_commands_the_brief_names() -> None:
    walked = {" ".join(c) for c in COMMANDS}
    for name in (
        "crlbuilder build", "crlbuilder synth", "crlbuilder publish", "crlbuilder import-crl",
        "crlbuilder group pull", "crlbuilder keys inventory", "crlbuilder store copy",
        "crlbuilder stream adopt", "crlbuilder pki init", "crlbuilder nats-key",
        "responder serve", "responder registry add", "responder report",
        "responder watch-compact",
    ):  # fmt: skip
        assert name in walked


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Bad inputs, side by side in one directory; no environment override in the way."""
    for var in ("JPKI_VA_STORE", "JPKI_VA_PKI", "JPKI_VA_REGISTRY", "JPKI_VA_FACTS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.toml").write_bytes(b'[store]\npath = "caf\xe9"\n')
    (tmp_path / "empty.toml").write_bytes(b"")
    (tmp_path / "typo.toml").write_text('[store]\npaht = "x"\n')
    (tmp_path / "section.toml").write_text("[limits]\nmax = 1\n")
    (tmp_path / "port.toml").write_text("[server]\nport = 70000\n")
    (tmp_path / "porttype.toml").write_text('[server]\nport = "8080"\n')
    (tmp_path / "workers.toml").write_text("[server]\nworkers = -1\n")
    (tmp_path / "interval.toml").write_text("[input]\nfollow_interval = -1.0\n")
    (tmp_path / "retention.toml").write_text(
        "[crl.retention_days]\nsign-mobile = 3650\nsign-card = 0\n"
    )
    (tmp_path / "bycategory.toml").write_text(
        "[crl.retention_days_by_category.sign-card]\nrequest = 10\n"
        "[crl.retention_days_by_category.auth-card]\nrequest = 10\ncard-cascade = -1\n"
    )
    (tmp_path / "inf.toml").write_text("[input]\nfollow_interval = inf\n")
    (tmp_path / "cycle.toml").write_text("[crl]\ncycle_seconds = 1_000_000_000_000\n")
    (tmp_path / "century.toml").write_text("[crl.retention_days]\nsign-card = 1_000_000\n")
    (tmp_path / "timeout.toml").write_text("[server.limits]\nheader_timeout = inf\n")
    return tmp_path


# argv, the exit code, what the one line must name (every piece)
BAD: list[tuple[str, int, tuple[str, ...]]] = [
    ("crlbuilder build --config latin1.toml --store s", 2, ("latin1.toml", "not UTF-8")),
    ("responder serve --config latin1.toml", 2, ("latin1.toml", "not UTF-8")),
    ("responder watch-compact --config latin1.toml", 2, ("latin1.toml", "not UTF-8")),
    ("crlbuilder build --config adir --store s", 2, ("adir", "Is a directory")),
    ("responder serve --config adir", 2, ("adir", "Is a directory")),
    ("crlbuilder build --config nothere.toml --store s", 2, ("nothere.toml", "cannot read")),
    ("responder serve --config nothere.toml", 2, ("nothere.toml", "cannot read")),
    ("crlbuilder build --config empty.toml --store s --pki nothere", 2, ("nothere", "PKI")),
    ("responder serve --config typo.toml", 2,
     ("typo.toml", "store", "paht", "did you mean `path`?")),
    ("crlbuilder build --config typo.toml --store s", 2,
     ("typo.toml", "store", "paht", "did you mean `path`?")),
    ("crlbuilder build --config section.toml --store s", 2,
     ("section.toml", "unknown field `limits`", "it takes: store, pki, input,")),
    ("responder serve --config port.toml", 2, ("port.toml", "server.port", "65535")),
    ("responder serve --config porttype.toml", 2, ("porttype.toml", "server.port", "int")),
    ("responder serve --port 70000", 2, ("--port", "server.port", "65535")),
    ("responder serve --port eighty", 2, ("--port", "eighty")),
    ("responder serve --config workers.toml", 2, ("workers.toml", "server.workers", ">= 0")),
    ("responder serve --workers -1", 2, ("server.workers", ">= 0")),
    ("responder serve --header-timeout -5", 2, ("server.limits.header_timeout", "> 0")),
    ("crlbuilder build --config interval.toml --store s", 2,
     ("interval.toml", "input.follow_interval", "> 0")),
    # out of any sane range: inf waited forever (OverflowError after the start-up build),
    # a cycle of 10^12 s dated a CRL past year 9999 (ValueError after the commit)
    ("crlbuilder build --config inf.toml --store s", 2,
     ("inf.toml", "input.follow_interval", "<= 86400")),
    ("crlbuilder build --follow-interval inf --store s", 2,
     ("--follow-interval", "input.follow_interval", "<= 86400")),
    ("crlbuilder build --config cycle.toml --store s", 2,
     ("cycle.toml", "crl.cycle_seconds", "<= 31622400")),
    ("crlbuilder build --crl-cycle-seconds 1000000000000 --store s", 2,
     ("--crl-cycle-seconds", "crl.cycle_seconds", "<= 31622400")),
    ("crlbuilder build --config century.toml --store s", 2,
     ("century.toml", "crl.retention_days.sign-card", "<= 36525")),
    ("responder serve --config timeout.toml", 2,
     ("timeout.toml", "server.limits.header_timeout", "<= 86400")),
    ("responder serve --drain-timeout inf", 2,
     ("--drain-timeout", "server.limits.drain_timeout", "<= 86400")),
    ("crlbuilder build --batch-size 0 --store s", 2, ("--batch-size", "input.batch_size")),
    ("crlbuilder build --sign-workers -1 --store s", 2, ("--sign-workers", "ocsp.sign_workers")),
    ("crlbuilder build --follow --max-idle -1 --store s", 2, ("--max-idle", "-1")),
    ("crlbuilder build --config retention.toml --store s", 2,
     ("retention.toml", "crl.retention_days.sign-card:", ">= 1")),
    ("crlbuilder build --config bycategory.toml --store s", 2,
     ("bycategory.toml", "crl.retention_days_by_category.auth-card.card-cascade:", ">= 1")),
    ("crlbuilder group pull --group adir --timeout 0", 2, ("--timeout", "'0'", "> 0")),
    ("crlbuilder group pull --group adir --timeout -1", 2, ("--timeout", "'-1'")),
    ("crlbuilder group pull --group adir --timeout nan", 2, ("--timeout", "'nan'")),
    ("crlbuilder group pull --group adir --min-rate 0", 2, ("--min-rate", "'0'", "at least 1K")),
    ("crlbuilder group pull --group adir --min-rate 1MB", 2, ("--min-rate", "'1MB'")),
    ("crlbuilder import-crl --pki adir --store s --min-rate 10 x.crl", 2,
     ("--min-rate", "'10'", "at least 1K")),
    ("crlbuilder status --store nothere --issuer sign-card-g1 --serial 5", 2, ("nothere",)),
    ("crlbuilder store copy nothere copy", 2, ("nothere", "no status store")),
    ("crlbuilder nats-config --users adir", 2, ("adir", "directory")),
    ("crlbuilder nats-config --users latin1.toml", 2, ("latin1.toml", "UTF-8")),
    ("responder registry check --registry latin1.toml", 2, ("latin1.toml", "not UTF-8")),
    ("responder registry check --registry adir", 2, ("adir", "Is a directory")),
    ("responder registry list --registry nothere.toml", 2, ("nothere.toml", "cannot read")),
    ("responder report --year 2026 --ledger adir --registry latin1.toml", 2,
     ("latin1.toml", "not UTF-8")),
    ("responder report --year 2026 --ledger nothere", 2, ("nothere", "ledger")),
    # a missing audit log is not "0 records, chain BROKEN": exit 1 as documented (the log is
    # what verify-audit checks; a lost one fails it), the line says what is wrong
    ("responder registry verify-audit --registry nothere.toml", 1,
     ("error: nothere.audit.jsonl: no audit log here", "nothing verified")),
    ("responder registry verify-audit --audit adir", 1, ("adir: no audit log here",)),
    ("responder watch-compact --keep -1", 2, ("--keep",)),
]  # fmt: skip


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("line", "code", "named"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_in_one_line_naming_it(
    inputs: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    code: int,
    named: tuple[str, ...],
) -> None:
    before = _tree(inputs)
    prog, *argv = line.split()
    try:
        rc = MAINS[prog](argv)  # an exception escaping here is the traceback an operator sees
    except SystemExit as e:
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert rc == code, err
    assert last.startswith(prog), last
    for piece in named:
        assert piece in last, f"{piece!r} not in {last!r}"
    assert _tree(inputs) == before, "a refused command changed the files around it"


@pytest.mark.integration  # runs both commands as processes
def test_a_config_not_utf8_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    """The same refusal as the operator's shell sees it: exit 2, one line, no traceback."""
    bad = tmp_path / "builder.toml"
    bad.write_bytes(b"[store]\npath = '\xff'\n")
    for module in ("crlbuilder.cli", "responder.cli"):
        command = "build" if module == "crlbuilder.cli" else "serve"
        done = subprocess.run(
            [sys.executable, "-m", module, command, "--config", str(bad)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert f"{bad}: not UTF-8 text (at byte offset 16)" in done.stderr


@pytest.mark.integration  # runs both packages as processes
def test_python_m_runs_each_command() -> None:
    """``python -m crlbuilder`` and ``python -m responder`` (was: "is a package and cannot
    be directly executed") are the console scripts, prog name and exit codes included."""
    for package in ("crlbuilder", "responder"):
        done = subprocess.run(
            [sys.executable, "-m", package, "--help"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {package} ")
        bad = subprocess.run(
            [sys.executable, "-m", package, "no-such-command"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_refused_ceremony_says_error_as_every_command_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``crlbuilder keys ...`` refusals read ``crlbuilder keys X: error: ...`` like every
    other command's, so one grep for ``: error:`` finds them all (was without ``error:``)."""
    rc = crlbuilder_cli.main(
        ["keys", "add-operator", "--operators", str(tmp_path / "operators"), "--name", "a",
         "--secret", "typed-secret", "--log", str(tmp_path / "log"), "--new-log"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "typed-secret" not in err
    assert err.startswith("crlbuilder keys add-operator: error: a secret source is file:/path")
    assert not (tmp_path / "log").exists() and not (tmp_path / "operators").exists()
