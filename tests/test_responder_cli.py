"""`responder serve` refusing to start: one line naming what is wrong, exit code 2."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.cli import main, parser


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        ('[server]\nport = "x"\n', "server.port: Expected `int`, got `str`"),
        ("[server\nport = 1\n", "invalid TOML"),
        ("[server]\nbogus = 1\n", "unknown field `bogus`"),
    ],
    ids=["missing", "wrong-type", "not-toml", "unknown-field"],
)
def test_a_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, said: str
) -> None:
    config = tmp_path / "responder.toml"
    if text is not None:
        config.write_text(text)
    rc = main(["serve", "--config", str(config), "--no-metrics"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"responder serve: error: {config}: ") and said in err, err


def test_a_bad_flag_value_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "--port", "99999", "--no-metrics"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "server.port: Expected `int` <= 65535" in err


def _options(p: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield from _options(sp, f"{name} {sub}")
        elif action.option_strings:
            yield name, action


def test_every_option_of_every_subcommand_is_explained() -> None:
    unexplained = [
        f"{name} {action.option_strings[0]}"
        for name, action in _options(parser(), "responder")
        if not action.help
    ]
    assert unexplained == []
