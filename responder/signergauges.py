"""When each delegated OCSP signer's certificate expires, as a gauge (`SignerCollector`).

A relying party checks every answer against the signer certificate it carries (RFC 6960
§4.2.2.2): once that certificate's notAfter has passed, every answer of its issuer fails
at the client, whatever it says: from then the workers answer ``tryLater`` for the issuer
(rule ``signer_expired``, `responder.flow`). So
``jpkiva_ocsp_signer_not_after_timestamp_seconds{issuer}`` says when, per issuer
generation the worker answers for (its own delegate; a compromised generation's answers
are signed by its successor's, which has its own series), and the alert
JpkiVaOcspSignerExpiring fires weeks ahead (docs/operations.md, "OCSP signer renewal").

The certificates are read once, when the worker loads its issuers (a renewal takes a
restart, `systemctl restart jpki-va-responder`, docs/operations.md). Labels: issuer ids
only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.ocsp import IssuerView

__all__ = ["SignerCollector"]


class SignerCollector(Collector):
    """Each issuer's delegated OCSP signer certificate's notAfter (Unix seconds)."""

    def __init__(self, views: Iterable[IssuerView]) -> None:
        self._not_after = sorted(
            (v.id, v.signer.signer.certificate.not_valid_after_utc.timestamp()) for v in views
        )

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "jpkiva_ocsp_signer_not_after_timestamp_seconds",
            "When the issuer's delegated OCSP signer certificate expires: past it, every "
            "answer of the issuer fails at the client.",
            labels=["issuer"],
        )
        for issuer, not_after in self._not_after:
            gauge.add_metric([issuer], not_after)
        yield gauge
