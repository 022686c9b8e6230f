"""Walk an argparse parser's options, subcommands included, for the tests of every --help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def options(p: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
    """(command path, option) of every option of ``p`` and of its subcommands, depth first."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield from options(sp, f"{name} {sub}")
        elif action.option_strings:
            yield name, action
