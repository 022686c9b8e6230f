"""`crlbuilder.lifecycle.StopRequest`: SIGTERM and SIGINT as a request to stop, in process."""

from __future__ import annotations

import os
import signal
from types import FrameType

from crlbuilder.lifecycle import StopRequest


def test_a_signal_sets_the_request_and_the_previous_handlers_come_back() -> None:
    seen: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = {s: signal.signal(s, previous) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with StopRequest() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGTERM)  # handled before kill returns (main thread)
            assert stop.requested and seen == []
        installed = StopRequest.install()
        os.kill(os.getpid(), signal.SIGINT)
        assert installed.requested and seen == []
        installed.restore()
        installed.restore()  # a second restore changes nothing
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        for s, h in before.items():
            signal.signal(s, h)
