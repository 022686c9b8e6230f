"""What the two binaries' options share: the configuration's error and reading, and a time.

Configuration (設定): `crlbuilder.config` and `responder.config` each own their
sections, and both read one TOML file into msgspec Structs with `read_toml` and
`convert`, and refuse what cannot be used with the one `ConfigError`, which names
the source (the file, ``<command line>``, an environment variable), the dotted
field and the problem.

The command line: `run_command` runs a parsed subcommand (``func(args) -> int``),
and `instant` is the one parser of a time on it (``--as-of`` of
``crlbuilder build``, ``import-crl`` and ``synth``; the time forms of ``responder
registry``'s ``--at``, ``--since``, ``--not-before``, ``--not-after``): an ISO 8601
time that carries its UTC offset, so no reader has to guess the machine's time
zone (the Act's days are Japan days, `crlbuilder.rules.JST`). It refuses
everything else with one message format naming the text and the form wanted.

This module imports nothing else of the project: both `crlbuilder` and
`responder` may import it.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the source, the field, the problem.

    ``source`` is the file (or ``<command line>``, an environment variable, ...);
    ``field`` the dotted field (empty when the whole source is at fault).
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of the TOML file ``path``; `ConfigError` naming it when unreadable or not TOML."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML ({exc})") from None


def convert(
    tree: dict[str, Any],
    type_: type[T],
    source: str,
    *,
    dec_hook: Callable[[type, Any], Any] | None = None,
) -> T:
    """``tree`` validated into ``type_`` (msgspec); a failure is a `ConfigError` naming the field."""
    try:
        return msgspec.convert(tree, type_, dec_hook=dec_hook, str_keys=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        problem, _, at = message.rpartition(" - at `")
        if not problem:
            problem, at = message, ""
        field = at.rstrip("`").removeprefix("$").lstrip(".")
        field = field.replace("[", ".").replace("]", "")
        raise ConfigError(source, field, problem) from None


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand it names (its ``func``): the exit code.

    A file or directory the subcommand could not use and did not report itself (an output
    directory that cannot be created, a disk that fills) ends it with one line naming the
    path and the system's reason, exit 1, never a traceback.
    """
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except OSError as exc:
        command = getattr(args, "command", None)
        prog = f"{parser.prog} {command}" if command else parser.prog
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return rc


EXAMPLE: Final = "2026-04-01T00:00:00+09:00"
"""The form a command-line time takes, as the error messages show it."""


def instant(text: str) -> datetime:
    """An aware datetime from ISO 8601 ``text`` with an offset (``+09:00`` or ``Z``).

    An argparse ``type``: raises `argparse.ArgumentTypeError` (its message is
    what the user sees) when ``text`` is not such a time.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. {EXAMPLE}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset: give one, e.g. {EXAMPLE} (or Z for UTC)"
        )
    return value
