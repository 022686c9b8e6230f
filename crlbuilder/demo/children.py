"""The demo's child processes (`crlbuilder.demo`): each started under a name, the last lines
of its error output kept, and what the demo says when one of them stops on its own.

A child whose error output is only noise while it runs (the builder's JSON events, the
group's feed) writes it to a pipe that a thread drains into the last `TAIL_LINES` lines, in
memory only: they are the tool's own messages (events, warnings, a traceback), shown when it
stops. A child started with ``keep_stderr=False`` (a responder) writes to the demo's own
error output, so its reason is already on the terminal.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Final

TAIL_LINES: Final = 12
"""How many of a stopped child's last lines of error output the demo shows."""

DRAIN_SECONDS: Final = 2.0
"""How long the demo waits for the rest of a stopped child's output (its own children may
hold the pipe open a little longer)."""


@dataclass
class Child:
    """One child of the demo: its name in what the demo says, its process, its last lines."""

    name: str
    proc: subprocess.Popen[str]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None

    def last_lines(self) -> list[str]:
        """Its last lines of error output (once the pipe's end is read, or after a while)."""
        if self.reader is not None:
            self.reader.join(DRAIN_SECONDS)
        return list(self.tail)


def start(name: str, argv: list[str], *, keep_stderr: bool, stdout: int | None = None) -> Child:
    """Start ``argv`` as the child ``name``; ``keep_stderr``: its error output drained into
    its last lines (else it goes where the demo's goes); ``stdout`` as `subprocess.Popen`'s."""
    proc = subprocess.Popen(
        argv, stdout=stdout, stderr=subprocess.PIPE if keep_stderr else None, text=True,
        errors="replace",
    )  # fmt: skip
    child = Child(name, proc)
    if proc.stderr is not None:
        child.reader = threading.Thread(
            target=_drain, args=(proc.stderr, child.tail), name=f"demo-{name}", daemon=True
        )
        child.reader.start()
    return child


def _drain(stream: IO[str], tail: deque[str]) -> None:
    with stream:
        for line in stream:
            tail.append(line.rstrip("\n"))


def exit_status(code: int) -> str:
    """A child's return code as people read it: ``exit status 2``, ``killed by SIGKILL``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def stopped_message(name: str, code: int, tail: list[str], *, kept: bool) -> str:
    """What the demo says when the child ``name`` stopped on its own with ``code``: its
    last lines ``tail`` when ``kept`` (else its error output is above, on the terminal)."""
    head = f"demo: {name} stopped ({exit_status(code)}); stopping the others"
    if not kept:
        return f"{head}. Its error output is above."
    if not tail:
        return f"{head}. It wrote no error output."
    lines = "\n".join(f"  | {line}" for line in tail)
    return f"{head}. The last lines of its error output:\n{lines}"
