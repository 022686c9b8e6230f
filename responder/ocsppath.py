"""Which request paths are OCSP's (RFC 6960 appendix A.1, RFC 5019 §5): the routes
(`responder.app`), the metrics' endpoint label (`responder.metrics.endpoint_of`) and
deploy/haproxy's ``party_route`` ACL must agree on them.

    POST /ocsp, /ocsp/, /     the request in the body
    GET  /ocsp/{request}      the request in the path, for the responder URL .../ocsp
    GET  /{request}           the same for a responder URL that is the root (``{url}/{request}``)

``{request}`` is the URL encoding of the base64 of the DER OCSPRequest. At the root it shares
the namespace with every other route, so a root path is OCSP's only when its bytes can be a
request (`ROOT_REQUEST`): after its leading slashes (a client given ``http://va.example/``
may send ``//{request}``) it begins with ``M``, since every OCSPRequest is a DER SEQUENCE
(0x30), whose base64 begins with ``M`` (URL-encoded and base64url alike), and holds only
base64 and base64url characters, ``=`` and percent escapes. No other route begins with ``M``
(/healthz, /readyz, /metrics, /v1/, /crl/, /ca/, /reports/, /announcements, /ocsp are lower
case), nor do browsers' and crawlers' requests (/favicon.ico, /robots.txt: a '.' is not
base64): none of them is shadowed, and they stay what they were. Within that namespace a
path that does not decode is OCSP's malformedRequest, as under /ocsp/.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ROOT_REQUEST", "ROOT_REQUEST_PATTERN", "is_ocsp", "is_root_request"]

ROOT_REQUEST_PATTERN: Final = "/+M[-A-Za-z0-9+/=_%]*"
"""A root path that is an OCSP GET's, whole; deploy/haproxy/haproxy.cfg's ``party_route``
and log ACLs hold the same text between ``^`` and ``$``."""
ROOT_REQUEST: Final = re.compile(ROOT_REQUEST_PATTERN.encode())


def is_root_request(path: bytes) -> bool:
    """Whether ``path`` (no query) is ``/{request}``: an OCSP GET at the root."""
    return ROOT_REQUEST.fullmatch(path) is not None


def is_ocsp(path: bytes) -> bool:
    """Whether ``path`` (no query) is one of OCSP's, whatever the method."""
    return path in (b"/ocsp", b"/") or path.startswith(b"/ocsp/") or is_root_request(path)
