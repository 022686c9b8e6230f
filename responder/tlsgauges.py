"""When the TLS server certificate a worker serves expires, as a gauge (`TlsCollector`).

Where the worker terminates TLS itself (``[server.tls]``), every party's client refuses the
handshake once the server certificate's notAfter has passed: no OCSP answer, CRL or /v1 call
reaches anyone through this node, whatever the store holds. So
``jpkiva_tls_certificate_not_after_timestamp_seconds`` says when, and the alert
JpkiVaTlsCertificateExpiring fires weeks ahead (docs/operations.md, "TLS server
certificate").

The value is the certificate the worker has loaded, not the file on disk: read from the
chain's first certificate each time the worker loads it (at its start and at each reload that
put a new chain in force, `responder.server`), so a renewed file not yet reloaded still shows
the certificate being served. No series where the worker does not terminate TLS (a proxy in
front does), or when the chain's first certificate could not be read apart from OpenSSL's own
load (the load is never refused for it: the log says so, `tls_not_after_unread`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from cryptography import x509
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["TlsCollector", "chain_not_after"]


def chain_not_after(pem: bytes) -> datetime | None:
    """The notAfter of the first certificate of a PEM chain (the server's own, as OpenSSL's
    ``load_cert_chain`` takes it); None when cryptography reads none."""
    try:
        first = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        return None
    return first.not_valid_after_utc


class TlsCollector(Collector):
    """The notAfter (Unix seconds) of the TLS server certificate this worker serves."""

    def __init__(self) -> None:
        self._not_after: float | None = None

    def loaded(self, not_after: datetime | None) -> None:
        """The worker put in force a chain whose certificate ends at ``not_after`` (None:
        unread, no series until the next load)."""
        self._not_after = None if not_after is None else not_after.timestamp()

    def collect(self) -> Iterator[Metric]:
        if self._not_after is not None:
            yield GaugeMetricFamily(
                "jpkiva_tls_certificate_not_after_timestamp_seconds",
                "When the TLS server certificate this node serves expires: past it, clients "
                "refuse the handshake and no party reaches the node.",
                value=self._not_after,
            )
