"""What the benchmark scripts share about the servers they start: readiness lines, stopping, errors.

The lifecycle itself (start with stderr to a log, wait for the readiness line, stop by PID and
then the children left) is `tests.support.procs`, the same code the tests use; a process
that does not become ready raises `BenchError` there too.
"""

from __future__ import annotations

from tests.support.procs import ProcessError as BenchError
from tests.support.procs import alive, children, started, stop, wait_line

__all__ = ["BenchError", "alive", "children", "started", "stop", "wait_line"]
