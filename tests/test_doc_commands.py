"""README.md's commands against the real command lines.

- "Commands (each has `--help`)": each line names real subcommands (every one of an
  ``a|b|c`` list) and every ``--flag`` it shows is one of that command's;
- every other ``crlbuilder``/``responder`` command of README.md's shell blocks parses
  (``<placeholder>`` taken as one word, a bare ``...`` left out), as tests/test_deploy.py checks docs/operations.md's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crlbuilder import cli as crlbuilder_cli
from responder import cli as responder_cli
from tests.support.cliparsers import flags, subparsers

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "crlbuilder": crlbuilder_cli.parser,
    "responder": responder_cli.parser,
}

pytestmark = pytest.mark.unit


SYNOPSIS_HEAD = "Commands (each has `--help`):\n\n```sh\n"


def _synopsis() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split(SYNOPSIS_HEAD, 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_synopsis_names_real_commands_andflags() -> None:
    lines = _synopsis()
    assert len(lines) >= 10, lines
    for line in lines:
        words = line.split()
        parser = PARSERS[words[0]]()
        commands = [(parser, words[0])]
        rest = len(words)
        for k, word in enumerate(
            words[1:], 1
        ):  # the command words, to the first flag or placeholder
            subs = subparsers(commands[-1][0])
            names = word.split("|")
            if not subs or not all(n in subs for n in names):
                assert not subs or word.startswith(("-", "[")) or word.isupper(), (
                    f"README: {line!r}: no command {word!r}"
                )
                rest = k
                break
            commands = [(subs[n], n) for n in names]
        for sub, name in commands:
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
                assert flag in flags(sub), f"README: {line!r}: {name} has no {flag}"
            _check_alternatives(line, words[rest - 1 :], sub, name)


def _choices(parser: argparse.ArgumentParser, flag: str) -> set[str]:
    return {str(c) for a in parser._actions if flag in a.option_strings for c in a.choices or ()}


def _check_alternatives(
    line: str, words: list[str], parser: argparse.ArgumentParser, name: str
) -> None:
    """Each lower-case alternative of an ``a|b`` word of ``words`` (the last command word,
    then the rest of the line) is a value the flag before it accepts (``--format
    html|csv|json``): a subcommand written there (``--new-log ...|verify-log``) was never
    looked up, so a misspelt one passed."""
    for before, word in itertools.pairwise(words):
        if "|" not in word:
            continue
        for alt in word.strip("[]").split("|"):
            if alt.startswith("-") or alt == "..." or not alt.islower() or ":" in alt:
                continue  # a flag (checked above), a placeholder, "more of the same"
            flag = before.strip("[]")
            assert alt in _choices(parser, flag), (
                f"README: {line!r}: {alt!r} is no value of {name} {flag} (a subcommand "
                "belongs on a line of its own)"
            )


def _commands(markdown: str) -> Iterator[list[str]]:
    """The crlbuilder/responder command lines of the ```sh blocks, as words."""
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"<([^<>]+)>", r"\1", raw.split(" #", 1)[0])
            line = re.sub(r"(?<=\s)\.\.\.(?=\s|$)", "", line)  # "more of the same"
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            for i, w in enumerate(words):
                if w in PARSERS and (i == 0 or words[i - 1] in {"--", "sudo", "exec"}):
                    ends = [j for j, x in enumerate(words) if x[0] in "&|;<>" or x[:2] == "2>"]
                    yield words[i : min([j for j in ends if j > i], default=len(words))]
                    break


def test_readme_command_examples_parse() -> None:
    text = README.read_text(encoding="utf-8")
    before, after = text.split(SYNOPSIS_HEAD, 1)
    examples = before + after.split("```", 1)[1]  # the synopsis's placeholders left out
    parsed = 0
    for words in _commands(examples):
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                PARSERS[words[0]]().parse_args(words[1:])
        except SystemExit as e:
            assert e.code in (0, None), f"README: {' '.join(words)!r}: {said.getvalue()}"
        parsed += 1
    assert parsed >= 5, parsed
