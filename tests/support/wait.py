"""`until`: poll a condition until it holds or a deadline passes (wall-clock waits in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    check: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns a true value, and return it.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first. The deadline is
    on the monotonic clock, so a shifted wall clock (libfaketime) does not move it.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
