"""What the two binaries' options share: a time given on the command line.

`instant` is the one parser of a command-line time (``--as-of`` of ``crlbuilder
build``, ``import-crl`` and ``synth``; the time forms of ``responder registry``'s
``--at``, ``--since``, ``--not-before``, ``--not-after``): an ISO 8601 time that
carries its UTC offset, so no reader has to guess the machine's time zone (the
Act's days are Japan days, `crlbuilder.rules.JST`). It refuses everything else
with one message format naming the text and the form wanted.

This module imports nothing else of the project: both `crlbuilder` and
`responder` may import it.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Final

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
