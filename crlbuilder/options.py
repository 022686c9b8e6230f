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
import difflib
import math
import os
import stat
import sys
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, get_args, get_origin

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


MAX_TOML_BYTES: Final = 4 << 20
"""A configuration file larger than this is refused (the largest real one is a few KiB)."""


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of the TOML file ``path``; `ConfigError` naming it when unreadable, not a
    regular file, larger than `MAX_TOML_BYTES`, not UTF-8 or not TOML.

    Opened without blocking and checked before it is read: the responder's master reads its
    configuration again on every reload, in the loop that supervises the workers, and a
    path replaced by a named pipe (a symbolic link to one) held it in ``open`` for ever (no
    worker restarted, no SIGTERM handled), one to ``/dev/zero`` filled its memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(str(path), "", "not a regular file")
            if info.st_size > MAX_TOML_BYTES:
                raise ConfigError(str(path), "", f"larger than {MAX_TOML_BYTES} bytes")
            os.set_blocking(fd, True)
            data = fh.read(MAX_TOML_BYTES + 1)
        if len(data) > MAX_TOML_BYTES:  # grown since the fstat
            raise ConfigError(str(path), "", f"larger than {MAX_TOML_BYTES} bytes")
        return tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the bytes itself
        raise ConfigError(
            str(path), "", f"not UTF-8 text (at byte offset {exc.start}): TOML files are UTF-8"
        ) from None
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
        problem, at = _problem_at(exc)
        if "[...]" in at:  # a table's value: msgspec does not say under which key
            at = _name_keys(tree, type_, dec_hook, at)
        field = at.removeprefix("$").lstrip(".")
        field = field.replace("[", ".").replace("]", "")
        if problem.startswith("Object contains unknown field `"):
            problem += _known(type_, field, problem.split("`")[1])
        raise ConfigError(source, field, problem) from None


def _known(type_: type, field: str, unknown: str) -> str:
    """What a misspelt key should have been: `` (did you mean `path`?)``, else the keys the
    table takes; "" when the table at ``field`` is not a Struct's."""
    struct: object = type_
    for name in (n for n in field.split(".") if n):
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            return ""
        struct = next((f.type for f in msgspec.structs.fields(struct) if f.name == name), None)
    if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
        return ""
    names = [f.encode_name for f in msgspec.structs.fields(struct)]
    close = difflib.get_close_matches(unknown, names, n=1)
    return f" (did you mean `{close[0]}`?)" if close else f" (it takes: {', '.join(names)})"


def _problem_at(exc: msgspec.ValidationError) -> tuple[str, str]:
    """A msgspec validation error's problem and path (``$.crl.retention_days[...]``)."""
    message = str(exc)
    problem, _, at = message.rpartition(" - at `")
    if not problem:
        return message, ""
    return problem, at.rstrip("`")


def _name_keys(
    tree: dict[str, Any],
    type_: type,
    dec_hook: Callable[[type, Any], Any] | None,
    at: str,
) -> str:
    """``at`` with each ``[...]`` (a table's value, as msgspec says it) replaced by the key
    whose value fails: the first key that fails alone in its table, as msgspec reads a
    table in order. ``at`` unchanged when no key is found."""
    pieces = at.split("[...]")
    path: list[str] = []  # the tables walked, keys included
    trial = tree
    for i, piece in enumerate(pieces[:-1]):
        path += [name for name in piece.removeprefix("$").split(".") if name]
        table: Any = trial
        for name in path:  # only names lead here: the config's tables hold no arrays of tables
            table = table.get(name) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            return at
        failing = "[...]".join(pieces[: i + 1]) + "[...]"
        for key, value in table.items():
            alone = _with(trial, path, {key: value})
            try:
                msgspec.convert(alone, type_, dec_hook=dec_hook, str_keys=True)
            except msgspec.ValidationError as exc:
                if _problem_at(exc)[1].startswith(failing):
                    trial = alone
                    path.append(key)
                    break
        else:
            return at
    return "$." + ".".join(path) + pieces[-1]


def _with(tree: dict[str, Any], path: list[str], value: object) -> dict[str, Any]:
    """A copy of ``tree`` with the table at ``path`` replaced by ``value`` (the rest shared)."""
    head, *tail = path
    return {**tree, head: _with(tree.get(head, {}), tail, value) if tail else value}


def describe_commands(parser: argparse.ArgumentParser, epilog: str) -> None:
    """Give ``parser`` the ``epilog`` (exit codes, where to read more) and every subcommand
    below it that has no description of its own its help line as one, so that each
    ``--help`` says what its command does, not only its usage."""
    parser.epilog = parser.epilog or epilog
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            line = helps.get(name)
            if sub.description is None and line:
                sub.description = line[:1].upper() + line[1:] + ("" if line.endswith(".") else ".")
            describe_commands(sub, epilog)


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


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (an argparse ``type``: a timeout, which at 0 or
    below would fail every request as an unreachable peer instead of refusing the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds are a finite number > 0")
    return value


_RATE_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MIN_TRANSFER_RATE: Final = 1 << 10
"""The least ``transfer_rate`` taken (1 KiB/s: below it a 2 GiB file would be allowed weeks)."""


def transfer_rate(text: str) -> int:
    """Bytes a second, a whole number with an optional binary suffix (``512K``, ``1M``,
    ``2G``: KiB, MiB, GiB), from 1K up (an argparse ``type``: the least rate a download is
    held to, `crlbuilder.deadlinehttp.Deadline`'s ``per_byte``)."""
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    number = text[: len(text) - len(unit)].strip()
    if unit not in _RATE_UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not bytes a second (a whole number, optionally K, M or G: 512K, 1M)"
        )
    value = int(number) * _RATE_UNITS[unit]
    if value < MIN_TRANSFER_RATE:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1K (1024 bytes a second)")
    return value


def bounds(field_type: object) -> str:
    """The range a msgspec ``Annotated[..., Meta(...)]`` type allows, as ``--help`` says it
    (``> 0, <= 86400``); "" for a type without bounds."""
    if get_origin(field_type) is not Annotated:
        return ""
    said: list[str] = []
    for meta in get_args(field_type)[1:]:
        if isinstance(meta, msgspec.Meta):
            for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                value = getattr(meta, name)
                if value is not None:
                    said.append(f"{sign} {value}")
    return ", ".join(said)
