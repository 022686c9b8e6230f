"""Worker 0's ledger cycle (帳簿, Act §40): collect the workers' files, then, on a node of
several, exchange with the ledger stream (`responder.app.JpkiApp._collect_ledger`).

An app of its own (the store opened once per process: apart from tests/test_app_routes.py's).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from responder.app import JpkiApp
from tests.conftest import Built


def test_a_refused_ledger_file_is_logged_while_the_ledger_stream_is_unreachable(
    built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker 0's cycle collects, then ships to the ledger stream; a failed shipment (NATS
    down) ended the cycle before the collection's refused worker files were logged
    (``ledger_file_refused``, the file and the reason: what the runbook greps for), so a
    damaged file of the 帳簿 (Act §40) went unsaid in the log for as long as NATS was down.
    Both are logged now."""
    with socket.socket() as s:  # a loopback port nobody listens on: no NATS server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = built.app_config(
        tmp_path / "a",
        **{"cluster.nats": f"nats://127.0.0.1:{port}", "cluster.node": "node-a", "server.workers": 2,
           "ledger.collect_interval": 3600},
    )  # fmt: skip
    app = JpkiApp(cfg, 1)  # worker 1: no cycle of its own; the test runs worker 0's
    try:
        bad = cfg.ledger.dir / ("w0009-" + "0" * 32 + ".ledger")
        bad.write_bytes(b"\0" * 10)  # truncated
        with caplog.at_level(logging.WARNING):
            app._collect_ledger()
        said = [r.getMessage() for r in caplog.records]
        assert "ledger_ship_failed" in said, said
        assert "ledger_file_refused" in said, said
    finally:
        app.close()
