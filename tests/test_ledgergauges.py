"""The ledger's refused worker files as a metric (`responder.ledgergauges`): what the last
collection refused (`Ledger.collect`, kept in the ledger's meta table), read back when
/metrics is scraped, for the alert JpkiVaLedgerFileRefused."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from responder.ledger import Ledger, LedgerWriter, Method, Service
from responder.ledgergauges import RefusedCollector


def scrape(d: Path) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RefusedCollector(d))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_a_refused_worker_file_shows_until_a_collection_reads_them_all(tmp_path: Path) -> None:
    """A damaged worker file was logged (``ledger_file_refused``) at every collection and
    nowhere else: no metric, no alert, while the 帳簿 (Act §40) and the reports missed its
    counts. The gauge says how many files the last collection refused."""
    assert scrape(tmp_path) == {"jpkiva_ledger_files_refused": 0.0}  # nothing collected yet
    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP)
    bad = tmp_path / ("w0009-" + "0" * 32 + ".ledger")
    bad.write_bytes(b"\0" * 10)  # truncated
    with Ledger.open(tmp_path) as ledger:
        assert len(ledger.collect().refused) == 1
        assert ledger.refused_files() == 1
    assert scrape(tmp_path) == {"jpkiva_ledger_files_refused": 1.0}
    bad.unlink()  # moved away, or restored whole
    with Ledger.open(tmp_path) as ledger:
        assert ledger.collect().refused == []
    assert scrape(tmp_path) == {"jpkiva_ledger_files_refused": 0.0}
