"""The access log (responder/logs.py): which requests, what a line holds, and what it never holds.

The end-to-end hygiene check (a real server, real tokens, certificates, serials and
the four facts of the sample sign certificates grepped in its stderr) is
``tests/test_metrics.py::test_sources_refusals_and_log_hygiene``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest

from responder.config import LogConfig
from responder.http import Request, Response
from responder.logs import AccessLog, method_label
from responder.outcome import Outcome
from responder.server import configure_logging

NOTE = Outcome("ocsp", "successful", "good", "auth-card", "auth-verifier", "signed")
TOKEN = "tok-0123456789abcdef0123456789abcdef"
SERIAL = 0x40E666ABAF5CC7F6
NAME = "山田太郎"


def _req(rid: int = 1, note: Outcome | None = NOTE) -> Request:
    """A request full of what must never be logged: a token, a serial, a certificate, a name."""
    cert = b"0\x82\x01\x0a" + NAME.encode() + b"\x00" * 16
    return Request(
        b"POST",
        b"/ocsp/" + base64.b64encode(SERIAL.to_bytes(8, "big")),
        {b"authorization": f"Bearer {TOKEN}".encode(), b"x-name": NAME.encode()},
        SERIAL.to_bytes(8, "big") + NAME.encode(),
        ("192.0.2.7", 40000),
        cert,
        b"1.1",
        True,
        rid,
        note,
    )


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The JSON lines the ``responder`` loggers write (as `responder serve` sets them up)."""
    out = io.StringIO()
    # every logger `configure_logging` sets up, restored afterwards so that later tests
    # (caplog on crlbuilder.keys, for one) see their records again
    loggers = [logging.getLogger(n) for n in ("responder", "crlbuilder.keys")]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    configure_logging("warning", out)  # the access log is written whatever the level says
    logger = loggers[0]
    ours = next(h for h in logger.handlers if getattr(h, "_jpki_va", False))
    assert isinstance(ours, logging.StreamHandler)
    previous = ours.setStream(out)
    try:
        yield out
    finally:
        ours.setStream(previous)
        for lg, (level, propagate, handlers) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate, lg.handlers = propagate, handlers


def test_a_line_is_one_json_object_without_request_data(lines: io.StringIO) -> None:
    log = AccessLog(LogConfig(access_log="all"), 1)
    log.on_request_done(_req(7), Response(200, b"answer", b"application/ocsp-response"), 0.0012345)
    log.on_http_error(413, "198.51.100.9")
    text = lines.getvalue()
    first, second = (json.loads(x) for x in text.splitlines())
    assert first["event"] == "request" and first["level"] == "info"
    assert first["logger"] == "responder.access" and isinstance(first["pid"], int)
    assert {k: first[k] for k in ("worker", "request_id", "party", "endpoint", "method",
                                  "http_status", "ocsp_status", "duration_ms")} == {
        "worker": 1, "request_id": 7, "party": "auth-verifier", "endpoint": "ocsp",
        "method": "POST", "http_status": 200, "ocsp_status": "successful", "duration_ms": 1.234,
    }  # fmt: skip
    assert second["request_id"] is None and second["http_status"] == 413
    assert second["endpoint"] == "other" and second["party"] == "-"
    for secret in (TOKEN, str(SERIAL), f"{SERIAL:x}", f"{SERIAL:X}", NAME, "40000",
                   base64.b64encode(SERIAL.to_bytes(8, "big")).decode()):  # fmt: skip
        assert secret not in text


def test_sampling_draws_per_request() -> None:
    draws = iter([0.9, 0.1, 0.5, 0.05])
    log = AccessLog(LogConfig(access_log="sampled", sample_rate=0.2), 3, rng=lambda: next(draws))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("responder.access")
    handler = Keep()
    logger.addHandler(handler)
    try:
        for rid in range(1, 5):
            log.on_request_done(_req(rid), Response(200, b"", b"text/plain"), 0.001)
    finally:
        logger.removeHandler(handler)
    assert [r.__dict__["fields"]["request_id"] for r in records] == [2, 4]


def test_modes_and_reconfiguration(lines: io.StringIO) -> None:
    log = AccessLog(LogConfig(access_log="off"), 0)
    assert not log.on
    log.on_request_done(_req(), Response(200, b"", b"text/plain"), 0.001)
    assert lines.getvalue() == ""
    assert not AccessLog(LogConfig(access_log="sampled", sample_rate=0.0), 0).on
    log.configure(LogConfig(access_log="all"))  # SIGHUP
    assert log.on
    log.on_request_done(_req(note=None), Response(500, b"", b"text/plain"), 0.001)
    line = json.loads(lines.getvalue())
    assert line["endpoint"] == "other" and line["party"] == "-" and line["http_status"] == 500


def test_method_labels_are_bounded() -> None:
    assert [method_label(m) for m in (b"GET", b"HEAD", b"POST", b"PROPFIND", b"")] == [
        "GET", "HEAD", "POST", "other", "",
    ]  # fmt: skip


def test_lines_name_the_client_address_so_operators_can_find_an_abuser(
    lines: io.StringIO,
) -> None:
    """Issue 10 (also seen): the peer's IP, in answered requests and layer-made errors alike
    (a relying party's machine, not a holder's personal data); never its port."""
    log = AccessLog(LogConfig(access_log="all"), 0)
    log.on_request_done(_req(3), Response(200, b"", b"text/plain"), 0.001)
    log.on_http_error(408, "198.51.100.9")
    log.on_http_error(503)  # a hook caller that knows no address
    first, second, third = (json.loads(x) for x in lines.getvalue().splitlines())
    assert first["client"] == "192.0.2.7"
    assert second["client"] == "198.51.100.9" and second["http_status"] == 408
    assert third["client"] == ""
    assert "40000" not in lines.getvalue()
