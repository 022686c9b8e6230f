"""What an argparse parser accepts, for the tests that check the documents' commands against
the CLIs (tests/test_doc_commands.py, tests/test_doc_references.py)."""

from __future__ import annotations

import argparse


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``parser``'s subcommands by name (none: an empty dict)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string ``parser`` itself takes (``-h``, ``--store`` ...)."""
    return {o for a in parser._actions for o in a.option_strings}
