"""The group appliance's one request to the 機構 for a member's record information (I/O only).

`ask` sends one ``POST /v1/record-info`` to the 機構's appliance with the group's bearer
token (団体署名検証者 asking, Act §20(4)) and returns what came back, or why nothing usable
did, within bounds a slow or broken 機構 cannot stretch:

- one deadline for the whole exchange (connect, TLS handshake, send, status line, header
  lines, body), not per socket operation (`crlbuilder.deadlinehttp`): a 機構 that drips
  any part of its answer a byte at a time cannot hold the thread longer than ``timeout``
  (`Failed.TIMEOUT`);
- at most ``limit`` bytes of body (`crlbuilder.deadlinehttp.read_body`, as the pull's and
  ``import-crl``'s: refused at its Content-Length when that announces more): a longer answer
  is `Failed.TOO_LARGE`, never passed on cut short;
- no redirect is followed (a 3xx comes back as such: the caller refuses it), so the
  group's token never goes to a host the 機構 names;
- the token is sent over https, or over plain http to a loopback host only (as
  `crlbuilder.group.pull.fetch`): else `Failed.INSECURE`, nothing sent;
- an answer that is not HTTP (a bad status line, a body cut short of its Content-Length, a
  broken chunk, a header field folded over lines or holding a control character) is
  `Failed.MALFORMED`; a connection refused or reset, `Failed.UNREACHABLE`.

What is judged of a complete answer (status, type, signature) is the caller's
(`responder.relay.judge`). Nothing here logs: the request carries a certificate's issuer
and serial, the answer may carry a holder's four facts.
"""

from __future__ import annotations

import enum
import http.client
import re
import ssl
import urllib.parse
from typing import Final, NamedTuple

from crlbuilder.deadlinehttp import (
    Connection,
    CutShort,
    Deadline,
    TooLarge,
    loopback_host,
    read_body,
)

__all__ = ["Failed", "Upstream", "ask", "token_url_refusal"]

_CHUNK: Final = 64 << 10
_NOT_IN_A_FIELD: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What no field value holds (RFC 9110 §5.5: visible characters, SP, HTAB, obs-text).
http.client keeps an obs-fold (a line begun with SP or HTAB continuing the one before) in the
value, CR LF included: passed on to the member, it wrote that line break into the member's
answer. RFC 9112 §5.2: a gateway answers 502 for it, or unfolds it; this one answers 502."""


class Upstream(NamedTuple):
    """The 機構's complete answer: status, header fields (names lower case), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Failed(enum.Enum):
    """Why no complete answer came back (the value is the log's ``error``)."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    INSECURE = "insecure"


def token_url_refusal(url: str) -> str | None:
    """Why the group's token may not be sent to ``url`` (None: it may): an http(s) URL, and
    plain http only to a loopback host (the token would cross the network in clear)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        return "the 機構's URL is not an http(s) URL"
    if u.scheme == "http" and not loopback_host(u.hostname):
        return "the 機構's URL is plain http to a host other than loopback: the token is not sent"
    return None


def ask(
    url: str,
    body: bytes,
    token: str,
    *,
    timeout: float,
    limit: int,
    context: ssl.SSLContext | None = None,
) -> Upstream | Failed:
    """POST ``body`` (application/json) to ``url`` with ``token``; the module docstring says
    what comes back. ``context``: the TLS context of an https ``url``, made once by the caller
    (`responder.relay.RecordInfoRelay.tls`); one is made for the request when None (tens of
    milliseconds: the system's CA bundle)."""
    if token_url_refusal(url) is not None:
        return Failed.INSECURE
    deadline = Deadline(timeout)
    u = urllib.parse.urlsplit(url)
    tls = (context or ssl.create_default_context()) if u.scheme == "https" else None
    port = u.port or (443 if tls is not None else 80)  # given: a bare "::1" is not host:port
    conn = Connection(u.hostname or "", port, deadline=deadline, context=tls)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, application/problem+json",
                "Authorization": f"Bearer {token}",
            },
        )
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if any(_NOT_IN_A_FIELD.search(v) for v in headers.values()):
            return Failed.MALFORMED  # a folded line, a control character: never passed on
        return Upstream(resp.status, headers, read_body(resp, limit, chunk=_CHUNK))
    except TooLarge:
        return Failed.TOO_LARGE
    except CutShort:
        return Failed.MALFORMED
    except TimeoutError:
        return Failed.TIMEOUT
    except (http.client.HTTPException, ValueError, UnicodeError):
        return Failed.MALFORMED
    except OSError:  # refused, reset, no route, DNS, TLS
        return Failed.TIMEOUT if deadline.passed else Failed.UNREACHABLE
    finally:
        conn.close()
