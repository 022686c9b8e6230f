"""The ledger's refused worker files as a metric (`responder.ledgergauges`): what the last
collection refused (`Ledger.collect`, kept in the ledger's meta table), read back when
/metrics is scraped, for the alert JpkiVaLedgerFileRefused."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from responder.ledger import DB_NAME, Ledger, LedgerWriter, Method, Service
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
    assert scrape(tmp_path)["jpkiva_ledger_files_refused"] == 0.0  # nothing collected yet
    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP)
    bad = tmp_path / ("w0009-" + "0" * 32 + ".ledger")
    bad.write_bytes(b"\0" * 10)  # truncated
    with Ledger.open(tmp_path) as ledger:
        assert len(ledger.collect().refused) == 1
        assert ledger.refused_files() == 1
    assert scrape(tmp_path)["jpkiva_ledger_files_refused"] == 1.0
    bad.unlink()  # moved away, or restored whole
    with Ledger.open(tmp_path) as ledger:
        assert ledger.collect().refused == []
    assert scrape(tmp_path)["jpkiva_ledger_files_refused"] == 0.0


def test_when_the_last_collection_ran_is_a_gauge_and_an_unreadable_ledger_has_none(
    tmp_path: Path,
) -> None:
    """A collection that kept failing (the ledger's disk full, its database damaged) was one
    log line each time (``ledger_collect_failed``): no metric, no alert, while the 帳簿 (Act
    §40) and every report made of it (Act §41) missed the counts of the meantime. The gauge
    says when the last one ran (JpkiVaLedgerCollectionStale pages when it is old), and a
    ledger that does not read leaves it out (the alert pages on its absence too)."""
    assert scrape(tmp_path) == {
        "jpkiva_ledger_files_refused": 0.0,
        "jpkiva_ledger_last_collected_timestamp_seconds": 0.0,  # never
    }
    with LedgerWriter.open(tmp_path, 0) as w:
        w.count("bank-a", Service.SIGN_REVOCATION_INFO, Method.OCSP)
    with Ledger.open(tmp_path) as ledger:
        ledger.collect(now=1_800_000_000)
    assert scrape(tmp_path)["jpkiva_ledger_last_collected_timestamp_seconds"] == 1_800_000_000
    with Ledger.open(tmp_path) as ledger:
        ledger.collect(now=1_800_000_010)
    assert scrape(tmp_path)["jpkiva_ledger_last_collected_timestamp_seconds"] == 1_800_000_010
    (tmp_path / DB_NAME).write_bytes(b"not a database" * 100)
    assert scrape(tmp_path) == {}
