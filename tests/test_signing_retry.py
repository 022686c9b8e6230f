"""`crlbuilder.signing_retry`: a follow loop's signing outage, warned once per try and retried."""

from __future__ import annotations

import pytest

from crlbuilder.keys.signer import SignerError
from crlbuilder.signing_retry import SIGNING_RETRY_SECONDS, SigningRetry


def test_a_failed_signing_warns_and_is_due_again_after_the_retry_delay() -> None:
    now = [100.0]
    events: list[dict[str, object]] = []
    retry = SigningRetry(events.append, clock=lambda: now[0])

    def gone() -> None:
        raise SignerError("pkcs11:token=t;object=k: signing failed: TokenNotPresent")

    assert retry.run("refresh", lambda: None) and not retry.due() and not events
    assert retry.wait(5.0) == 5.0
    assert not retry.run("refresh", gone)
    assert events == [{"event": "warning", "message": (
        "refresh: signing failed (pkcs11:token=t;object=k: signing failed: TokenNotPresent); "
        "records are still applied, and signing is tried again in 10 s")}]  # fmt: skip
    assert not retry.due() and retry.wait(60.0) == SIGNING_RETRY_SECONDS
    now[0] += SIGNING_RETRY_SECONDS
    assert retry.due() and retry.wait(60.0) == 0.0
    assert retry.run("refresh", lambda: None)  # signed again: nothing due
    assert not retry.due() and retry.wait(60.0) == 60.0


def test_anything_but_a_signing_key_failing_is_a_fault_not_an_outage() -> None:
    retry = SigningRetry(lambda e: None)
    with pytest.raises(ValueError, match="bug"):
        retry.run("refresh", lambda: int("bug"))
    assert retry.retry_at is None
