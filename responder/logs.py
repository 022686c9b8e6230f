"""The access log: one JSON line per answered request on stderr, and nothing of its content.

``[log] access_log`` says which requests: ``off``, ``sampled`` (``sample_rate``
of them, drawn at random) or ``all``. Each line goes through the ``responder``
loggers, so it has the lifecycle logs' shape (`responder.server.JsonLineFormatter`):

    {"ts": "2025-01-01T00:00:00.000Z", "level": "info", "logger": "responder.access",
     "event": "request", "pid": 4242, "worker": 0, "request_id": 17,
     "client": "192.0.2.7", "party": "sig-verifier", "endpoint": "ocsp", "method": "POST",
     "http_status": 200, "ocsp_status": "successful", "duration_ms": 0.141}

What a line is made of: the worker's request counter, the client's address (the
TCP peer's IP, so operators can find an abuser; behind a proxy it is the proxy's;
it is an address of a relying party's machine, not personal data of a certificate
holder), the HTTP method and status, the time, and the app's
`responder.outcome.Outcome` (endpoint, OCSP status, the registered party id or
``"-"``), all from bounded vocabularies. The request's
target, headers (the bearer token), body (serial numbers), the client certificate
and anything personal (個人情報; the four facts, 基本4情報, of a sign certificate,
Act §44-45) are never read here, so they cannot reach the log.
Layer-made errors (400, 408, 413, 414, 431, 503) are logged with
``request_id: null``, the client's address and endpoint `layer_endpoint`: ``shed``
for the layer's load shedding (`responder.http.SHED_STATUS`: a connection refused
or displaced at a connection limit), ``other`` for the rest; the metrics use the
same label.

Lines are written synchronously to stderr: ``all`` costs a few microseconds per
request; ``sampled`` at the default 1% costs next to nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Final

from responder.config import LogConfig
from responder.http import SHED_STATUS, Request, Response
from responder.outcome import NO_PARTY

__all__ = ["AccessLog", "layer_endpoint", "method_label"]

_log: Final = logging.getLogger("responder.access")
_log.setLevel(logging.INFO)  # asked for by [log] access_log, whatever [log] level says

_METHODS: Final[dict[bytes, str]] = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
}


def method_label(method: bytes) -> str:
    """The HTTP method as a label: one of the common ones, ``other``, or ``""`` when unknown."""
    if not method:
        return ""
    return _METHODS.get(method, "other")


def layer_endpoint(status: int) -> str:
    """The ``endpoint`` of an answer the HTTP layer made itself: ``shed`` for its load
    shedding (not a failure of the product: outside the critical error ratio), else ``other``."""
    return "shed" if status == SHED_STATUS else "other"


class AccessLog:
    """One worker's access log; also an `responder.http.HttpHooks` when it is the only hook."""

    def __init__(
        self, config: LogConfig, worker: int, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.worker = worker
        self._rng = rng
        self.on = False
        """True unless ``access_log = "off"``: callers test it before calling `request`."""
        self._all = False
        self._rate = 0.0
        self.configure(config)

    def configure(self, config: LogConfig) -> None:
        """Apply ``[log]`` (at start and on SIGHUP)."""
        self.on = config.access_log != "off" and (
            config.access_log == "all" or config.sample_rate > 0
        )
        self._all = config.access_log == "all"
        self._rate = config.sample_rate

    def request(self, req: Request, resp: Response, seconds: float) -> None:
        """Log one answered request (when sampled)."""
        if not self._all and self._rng() >= self._rate:
            return
        note = req.note
        _log.info(
            "request",
            extra={
                "fields": {
                    "worker": self.worker,
                    "request_id": req.request_id,
                    "client": req.peer[0],
                    "party": note.party if note is not None else NO_PARTY,
                    "endpoint": note.endpoint if note is not None else "other",
                    "method": method_label(req.method),
                    "http_status": resp.status,
                    "ocsp_status": note.ocsp_status if note is not None else "",
                    "duration_ms": round(seconds * 1000.0, 3),
                }
            },
        )

    def http_error(self, status: int, client: str = "") -> None:
        """Log an answer the HTTP layer made itself, before any request was complete."""
        if not self._all and self._rng() >= self._rate:
            return
        _log.info(
            "request",
            extra={
                "fields": {
                    "worker": self.worker,
                    "request_id": None,
                    "client": client,
                    "party": "-",
                    "endpoint": layer_endpoint(status),
                    "method": "",
                    "http_status": status,
                    "ocsp_status": "",
                    "duration_ms": None,
                }
            },
        )

    # -- HttpHooks, when metrics are off -------------------------------------------------

    def on_connection_open(self) -> None:
        return None

    def on_connection_close(self) -> None:
        return None

    def on_request_done(self, req: Request, resp: Response, seconds: float) -> None:
        if self.on:
            self.request(req, resp, seconds)

    def on_http_error(self, status: int, peer: str = "") -> None:
        if self.on:
            self.http_error(status, peer)
