"""A follow loop's signing outage: a step that signs, its failure, and when to try again.

Both follow loops of the builder (the spool's `Builder.follow`, the record stream's
`Builder.consume`) sign after they commit: pre-signed answers, CRLs, tokens. A signing key
checked at start that cannot be used now (a token removed or failing, its module or sessions
gone: `SignerError`) is an outage, not a fault: the records stay committed and applied, the
step is a ``warning`` event naming the key (never its PIN), and the loop runs its signing
again `SIGNING_RETRY_SECONDS` later, until it signs. Sans-I/O: the events go to ``emit``,
the time comes from ``clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from crlbuilder.keys.signer import SignerError

SIGNING_RETRY_SECONDS: Final = 10.0
"""A follow loop whose signing failed tries again this long after, applying the records that
arrive meanwhile."""


@dataclass
class SigningRetry:
    """The signing outage of one follow loop: `run` each signing step, refresh when `due`."""

    emit: Callable[[dict[str, object]], None]
    clock: Callable[[], float] = time.monotonic
    retry_at: float | None = None
    """Set while the last signing step failed: when to sign again."""

    def run(self, what: str, step: Callable[[], object]) -> bool:
        """Run ``step`` (named ``what`` in the warning); False when a signing key failed."""
        try:
            step()
        except SignerError as e:
            self.retry_at = self.clock() + SIGNING_RETRY_SECONDS
            self.emit({"event": "warning", "message": (
                f"{what}: signing failed ({e}); records are still applied, and signing is "
                f"tried again in {SIGNING_RETRY_SECONDS:g} s")})  # fmt: skip
            return False
        self.retry_at = None
        return True

    def waiting(self) -> bool:
        """A failed signing waits for its retry: what would only sign again (a token request
        still queued) does not trigger a step before `due`."""
        return self.retry_at is not None

    def due(self) -> bool:
        """A failed signing is to be tried again now."""
        return self.retry_at is not None and self.clock() >= self.retry_at

    def wait(self, longest: float) -> float:
        """How long the loop may sleep, at most ``longest``: not past the retry."""
        if self.retry_at is None:
            return longest
        return min(longest, max(0.0, self.retry_at - self.clock()))
