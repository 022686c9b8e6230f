"""What the app decided about one request (`Outcome`), for those that only watch it.

The app leaves an `Outcome` in ``responder.http.Request.note``; the HTTP layer reads
whether a registered party was proven (`Outcome.attributed`: the connection leaves the
unattributed budget), the metrics (`responder.metrics`) and the access log
(`responder.logs`) read its fields by name and never look at the request's content
themselves. Every field is a string from a bounded vocabulary, never request data: a
party appears by its registry id, never a holder (the four facts, serial numbers).

This module imports nothing of the project, so the lowest layer (`responder.http`) can
name the type the highest one (`responder.app`) writes.
"""

from __future__ import annotations

from typing import Final, NamedTuple

NO_PARTY: Final = "-"
"""The ``party`` of a request no registered party proved (the metrics' label value)."""


class Outcome(NamedTuple):
    """The app's decision about a request.

    A NamedTuple: hashable (the metrics key their local counters on it) and cheap to
    build on the hot path; constants for the answers that do not depend on the request
    are built once (`responder.app`).
    """

    endpoint: str
    """ocsp | crl | healthz | readyz | metrics | other (`responder.metrics.ENDPOINTS`)."""
    ocsp_status: str = ""
    """The OCSPResponseStatus name (`responder.metrics.OCSP_STATUS`), or "" for none."""
    cert_status: str = ""
    """good | revoked | unknown: the first CertID's status in a successful answer."""
    family: str = ""
    """The certificate family the request was about (`crlbuilder.model.Family` value)."""
    party: str = NO_PARTY
    """The registered party's id, or `NO_PARTY`."""
    source: str = ""
    """presigned | cached | signed: where a successful OCSP answer came from."""
    rule: str = ""
    """The refusal rule (`responder.metrics.RULES`), or "" when not refused."""

    @property
    def attributed(self) -> bool:
        """A registered party proved itself on this request."""
        return self.party not in (NO_PARTY, "")
