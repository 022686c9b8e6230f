"""When the responder's signing certificates expire, as gauges (`SignerCollector`).

A relying party checks every answer against the signer certificate it carries (RFC 6960
§4.2.2.2): once that certificate's notAfter has passed, every answer of its issuer fails
at the client, whatever it says: from then the workers answer ``tryLater`` for the issuer
(rule ``signer_expired``, `responder.flow`). So
``jpkiva_ocsp_signer_not_after_timestamp_seconds{issuer}`` says when, per issuer
generation the worker answers for (its own delegate; a compromised generation's answers
are signed by its successor's, which has its own series), and the alert
JpkiVaOcspSignerExpiring fires weeks ahead (docs/operations.md, "OCSP signer renewal").

The /v1 answers are signed by the answer-signing key (応答署名用の鍵, `responder.v1.jws`; on a
group appliance the group's responder key): past its certificate's notAfter no answer is
signed and every /v1 route that provides information answers 503 (`AnswerSigner.sign`), so
``jpkiva_answer_signer_not_after_timestamp_seconds`` says when, and the alert
JpkiVaAnswerSignerExpiring fires weeks ahead (docs/operations.md, "Rolling the answer key").

The token issuer's CA certificate (``token_issuer`` in ``pki.json``, `crlbuilder.tokens`)
signs every 特定利用者証明検証者証明符号 (Act §38-3): no token outlives it, and past its notAfter
the builder issues none and POST /v1/token answers 503 (`responder.v1.token`). Where this
responder takes token requests (``[token]``), ``jpkiva_token_issuer_not_after_timestamp_seconds
{issuer}`` says when, and the alert JpkiVaTokenIssuerExpiring fires weeks ahead.

The certificates are read once, when the worker loads its signers (a renewal takes a
restart, `systemctl restart jpki-va-responder`, docs/operations.md). Labels: issuer ids
only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from responder.ocsp import IssuerView

__all__ = ["SignerCollector"]


class SignerCollector(Collector):
    """Each issuer's delegated OCSP signer certificate's notAfter, the /v1 answer-signing
    certificate's and the token issuer's (Unix seconds)."""

    def __init__(
        self,
        views: Iterable[IssuerView],
        answer: datetime | None = None,
        token: tuple[str, datetime] | None = None,
    ) -> None:
        """``answer``: the answer-signing certificate's notAfter; None where no /v1 answer is
        signed (no series then). ``token``: the token issuer's id and its certificate's
        notAfter; None where no token is requested (no series then)."""
        self._not_after = sorted(
            (v.id, v.signer.signer.certificate.not_valid_after_utc.timestamp()) for v in views
        )
        self._answer = None if answer is None else answer.timestamp()
        self._token = None if token is None else (token[0], token[1].timestamp())

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
        if self._answer is not None:
            yield GaugeMetricFamily(
                "jpkiva_answer_signer_not_after_timestamp_seconds",
                "When the /v1 answer-signing certificate expires: past it, no answer is "
                "signed and the /v1 routes answer 503.",
                value=self._answer,
            )
        if self._token is not None:
            tokens = GaugeMetricFamily(
                "jpkiva_token_issuer_not_after_timestamp_seconds",
                "When the token issuer's certificate expires: no token outlives it, and past "
                "it none is issued (POST /v1/token answers 503).",
                labels=["issuer"],
            )
            tokens.add_metric([self._token[0]], self._token[1])
            yield tokens
