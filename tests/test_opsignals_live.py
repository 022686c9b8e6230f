"""A node of several losing its record stream and its ledger stream, seen on /metrics: one
node (builder on the record stream, responder with metrics) on a real nats-server on
loopback, which is stopped by its PID and started again.

- While the server answers, the builder's last sight of the stream
  (``jpkiva_stream_head_seen_timestamp_seconds``) stays within a few seconds of now with
  no lag, and each collection's shipment of the ledger succeeds
  (``jpkiva_ledger_last_shipped_timestamp_seconds``).
- With the server stopped, the head's time stops where it was (its age grows: what
  JpkiVaStreamLost pages on), no shipment succeeds, each collection's attempt is counted
  (``jpkiva_ledger_ship_failures_total``: JpkiVaLedgerShippingFailing) and a provision
  counted meanwhile waits unshipped (``jpkiva_ledger_unshipped_counters``).
- With the server back, both streams recover without a restart: the head is seen again and
  the waiting counter is shipped.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from crlbuilder.model import CertStatus
from tests.conftest import Built
from tests.support import procs
from tests.support.nats import BIN, Node, Nodes, free_ports, nats_server
from tests.support.wait import until
from tests.test_cluster import Client, run_tool, stream_seq, valid

pytestmark = [pytest.mark.integration, pytest.mark.real_clock]

SEEN = "jpkiva_stream_head_seen_timestamp_seconds"
LAG = "jpkiva_stream_lag_records"
SHIPPED = "jpkiva_ledger_last_shipped_timestamp_seconds"
FAILURES = "jpkiva_ledger_ship_failures_total"
UNSHIPPED = "jpkiva_ledger_unshipped_counters"
MAX_LAG = "jpkiva_stream_max_lag_records"


def scrape(url: str) -> dict[str, float]:
    """The unlabelled series of /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_streams_lost_and_back_on_metrics(built: Built, tmp_path: Path) -> None:
    port, http_port, metrics_port = free_ports(3)
    with nats_server(tmp_path / "nats", port) as server:
        node = Node("node0", tmp_path / "node0", built.pki, True, built.facts_key, built.registry)
        node.d.mkdir()
        shutil.copy(built.registry, node.registry)
        nodes = Nodes(server, [node])
        responder: subprocess.Popen[bytes] | None = None
        try:
            out = run_tool("crlbuilder", "publish", "--source", server.source,
                           "--facts-key-file", str(built.facts_key),
                           str(built.population / "records"))  # fmt: skip
            total = int(msgspec.json.decode(out.stdout)["last_seq"])
            nodes.start_builder(node)
            until(lambda: stream_seq(node.store) >= total, 60, "the stream applied")
            args = [
                str(BIN / "responder"), "serve", "--store", str(node.store),
                "--pki", str(node.pki), "--registry", str(node.registry),
                "--crl-dir", str(node.d / "crl"), "--host", "127.0.0.1", "--port", str(http_port),
                "--workers", "1", "--ledger-dir", str(node.d / "ledger"),
                "--ledger-collect-interval", "0.5", "--metrics-port", str(metrics_port),
                "--metrics-render-interval", "0.1", "--nats", server.source, "--node", node.name,
                "--max-lag", "750",
            ]  # fmt: skip
            with (node.d / "responder.log").open("ab") as err:
                responder = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                             stdin=subprocess.DEVNULL)  # fmt: skip
            metrics = procs.wait_line(responder, r"metrics on (\S+)", 60)
            url = f"http://127.0.0.1:{http_port}"
            client = Client(built)
            good = next(a for a in built.answers if a.status is CertStatus.GOOD and valid(built, a))

            # both streams answer
            assert client.ask(url, good) == "good"
            m = until(lambda: (s := scrape(metrics)).get(SHIPPED, 0) > 0 and s[UNSHIPPED] == 0
                      and time.time() - s[SEEN] < 3 and s, 20, "a shipment")  # fmt: skip
            assert m[LAG] == 0 and m[FAILURES] == 0 and m[MAX_LAG] == 750, m

            # the NATS server stops: neither stream answers
            server.stop_all()
            stopped = time.time()
            assert client.ask(url, good) == "good"  # the node still answers; the count waits
            m = until(lambda: (s := scrape(metrics))[FAILURES] >= 2 and s[UNSHIPPED] >= 1
                      and time.time() - s[SEEN] >= 3 and s, 20, "failed shipments")  # fmt: skip
            assert m[SEEN] <= stopped + 1.5, m  # the builder saw it last before it stopped
            assert m[SHIPPED] <= stopped + 1.5, m  # nothing shipped since
            later = scrape(metrics)
            log = (node.d / "responder.log").read_text()
            assert '"event":"ledger_ship_failed"' in log and "cannot connect to NATS" in log
            assert later[SEEN] == m[SEEN] and later[FAILURES] >= m[FAILURES], (m, later)

            # back: the head is seen again and the waiting counter shipped
            server.restart(0)
            back = time.time()
            m = until(lambda: (s := scrape(metrics))[SEEN] >= back and s[SHIPPED] >= back
                      and s[UNSHIPPED] == 0 and s, 20, "both streams back")  # fmt: skip
            assert m[LAG] == 0, m
        finally:
            if responder is not None:
                procs.stop(responder, signal.SIGTERM, 15)
                if responder.stdout is not None:
                    responder.stdout.close()
            nodes.stop_all()
