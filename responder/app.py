"""The responder's routes: what each path does, with whom, and in which order.

    POST /ocsp, POST /      OCSP (application/ocsp-request), RFC 6960 appendix A.1
    GET  /ocsp/{base64}     OCSP by GET, with RFC 5019 caching headers
    GET  /crl/{file}.crl    the current CRL files, for parties that may receive the family
    GET  /healthz           the process answers
    GET  /readyz            the store is open and fresh, the registry loaded

Order on every OCSP request: parse (bad bytes -> malformedRequest), attribute
it to a registered party (`access`: client certificate, bearer token or a
signed request; none -> unauthorized), check the issuer is ours and the family
is one the party may receive (else unauthorized), and only then look anything
up (`ocsp.OcspService`). Fresh signatures run in a thread (cryptography
releases the GIL while signing) so the worker's other connections go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Final

from crlbuilder.manifest import Manifest, load_manifest
from crlbuilder.ocspsign import ResponseStatus
from crlbuilder.store import Store
from responder import access
from responder.config import ResponderConfig
from responder.http import Request, Response
from responder.ocsp import ERRORS, OcspService, Ready, SignJob
from responder.ocspreq import RequestError, decode_get_path, parse_request
from responder.registry import Registry

OCSP_REQUEST: Final = b"application/ocsp-request"
OCSP_RESPONSE: Final = b"application/ocsp-response"
TEXT: Final = b"text/plain; charset=utf-8"
CRL: Final = b"application/pkix-crl"

_NOT_FOUND: Final = Response(404, b"not found\n", TEXT)
_OK: Final = Response(200, b"ok\n", TEXT)
_UNAUTHORIZED_HTTP: Final = Response(
    401, b"unauthorized\n", TEXT, ((b"www-authenticate", b"Bearer"),)
)
_FORBIDDEN: Final = Response(403, b"forbidden\n", TEXT)
_UNSUPPORTED: Final = Response(415, b"content type must be application/ocsp-request\n", TEXT)
_NO_STORE: Final = ((b"cache-control", b"no-store"),)
_OCSP_ERRORS: Final[dict[int, Response]] = {
    s: Response(200, der, OCSP_RESPONSE, _NO_STORE) for s, der in ERRORS.items()
}


def _method_not_allowed(allow: bytes) -> Response:
    return Response(405, b"method not allowed\n", TEXT, ((b"allow", allow),))


_POST_ONLY: Final = _method_not_allowed(b"POST")
_GET_ONLY: Final = _method_not_allowed(b"GET, HEAD")
_OCSP_METHODS: Final = _method_not_allowed(b"GET, POST")


class JpkiApp:
    """One worker's app: the store opened after fork, the registry, the OCSP service."""

    def __init__(self, config: ResponderConfig) -> None:
        self.config = config
        self.manifest: Manifest = load_manifest(config.store.pki)
        self.store = Store.open(config.store.path, readonly=True)
        self.registry = Registry.load(config.registry.path)
        self.ocsp = OcspService(
            self.store,
            self.manifest,
            good_validity_seconds=config.ocsp.good_validity_seconds,
            cache_entries=config.ocsp.good_cache_entries,
        )
        self.crl_dir = Path(config.store.crl_dir) if config.store.crl_dir else None
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sign")

    # --- lifecycle (called by responder.server) -----------------------------------

    def reload(self, config: ResponderConfig) -> None:
        """SIGHUP: new registry and OCSP limits; a broken registry file keeps the old one."""
        self.registry = Registry.load(config.registry.path)
        self.config = config

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # --- routing -----------------------------------------------------------------

    def handle(self, req: Request) -> Response | asyncio.Future[Response]:
        path = req.target.split(b"?", 1)[0]
        if path in (b"/ocsp", b"/"):
            if req.method != b"POST":
                return _OCSP_METHODS if path == b"/ocsp" else _NOT_FOUND
            ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if ctype != OCSP_REQUEST:
                return _UNSUPPORTED
            return self._ocsp(req, req.body, get=False)
        if path.startswith(b"/ocsp/"):
            if req.method not in (b"GET", b"HEAD"):
                return _GET_ONLY
            try:
                der = decode_get_path(path[6:].decode("ascii"))
            except (RequestError, UnicodeDecodeError):
                return _OCSP_ERRORS[ResponseStatus.MALFORMED_REQUEST]
            return self._ocsp(req, der, get=True)
        if path == b"/healthz":
            return _OK if req.method in (b"GET", b"HEAD") else _GET_ONLY
        if path == b"/readyz":
            return self._ready() if req.method in (b"GET", b"HEAD") else _GET_ONLY
        if path.startswith(b"/crl/"):
            return self._crl(req, path[5:]) if req.method in (b"GET", b"HEAD") else _GET_ONLY
        return _NOT_FOUND

    # --- OCSP ----------------------------------------------------------------------

    def _ocsp(self, req: Request, der: bytes, *, get: bool) -> Response | asyncio.Future[Response]:
        cfg = self.config.ocsp
        try:
            ocsp_req = parse_request(der, max_certids=cfg.max_certids, max_nonce=cfg.max_nonce)
        except RequestError as e:
            return _OCSP_ERRORS[e.status]
        party = access.by_transport(self.registry, req)
        if party is None and ocsp_req.signature is not None:
            party = access.by_signature(self.registry, ocsp_req.signature)
        if party is None:
            return _OCSP_ERRORS[ResponseStatus.UNAUTHORIZED]
        views = self.ocsp.issuer_of(ocsp_req)
        if views is None or len({v.index for v in views}) != 1:
            # not our issuer, or several issuers (one delegated signer covers one issuer only)
            return _OCSP_ERRORS[ResponseStatus.UNAUTHORIZED]
        if not party.may_receive(views[0].family):
            return _OCSP_ERRORS[ResponseStatus.UNAUTHORIZED]
        outcome = self.ocsp.answer(ocsp_req, views)
        if isinstance(outcome, Ready):
            return self._ocsp_response(outcome, get)
        return asyncio.ensure_future(self._sign(outcome, get))

    async def _sign(self, job: SignJob, get: bool) -> Response:
        ready = await asyncio.get_running_loop().run_in_executor(self.pool, job.run)
        self.ocsp.remember(job, ready)
        return self._ocsp_response(ready, get)

    def _ocsp_response(self, ready: Ready, get: bool) -> Response:
        if ready.ocsp_status:
            return _OCSP_ERRORS[ResponseStatus(ready.ocsp_status)]
        if not get:
            return Response(200, ready.der, OCSP_RESPONSE)
        return Response(200, ready.der, OCSP_RESPONSE, caching_headers(ready, int(time.time())))

    # --- other routes ----------------------------------------------------------------

    def _ready(self) -> Response:
        now = int(time.time())
        try:
            self.store.check_format()
        except Exception:  # any failure means not ready
            return Response(503, b"store not readable\n", TEXT)
        with self.store.env.begin() as txn:
            self.ocsp.refresh(txn)
        stale = [
            v.id for v in self.ocsp.by_index.values() if 0 < self.ocsp.fresh_until(v.index) <= now
        ]
        if stale:
            return Response(503, b"stale data for " + ", ".join(stale).encode() + b"\n", TEXT)
        return Response(200, b"ready\n", TEXT)

    def _crl(self, req: Request, name: bytes) -> Response:
        party = access.by_transport(self.registry, req)
        if party is None:
            return _UNAUTHORIZED_HTTP
        if self.crl_dir is None:
            return _NOT_FOUND
        try:
            fname = name.decode("ascii")
        except UnicodeDecodeError:
            return _NOT_FOUND
        stem = fname.removesuffix(".crl").removesuffix("-delta")
        view = next((v for v in self.ocsp.by_index.values() if v.id == stem), None)
        if view is None or not fname.endswith(".crl") or "/" in fname:
            return _NOT_FOUND
        if not party.may_receive(view.family):
            return _FORBIDDEN
        try:
            body = (self.crl_dir / fname).read_bytes()
        except OSError:
            return _NOT_FOUND
        return Response(200, body, CRL)


def caching_headers(ready: Ready, now: int) -> tuple[tuple[bytes, bytes], ...]:
    """RFC 5019 §6.2: max-age within nextUpdate, Last-Modified, Expires, ETag."""
    max_age = max(0, ready.next_update - now)
    return (
        (b"cache-control", b"max-age=%d, public, no-transform, must-revalidate" % max_age),
        (b"last-modified", formatdate(ready.this_update, usegmt=True).encode()),
        (b"expires", formatdate(ready.next_update, usegmt=True).encode()),
        (
            b"etag",
            b'"' + hashlib.sha1(ready.der, usedforsecurity=False).hexdigest().encode() + b'"',
        ),
    )


def create_app(config: ResponderConfig, worker_index: int) -> JpkiApp:
    """`responder.server`'s app factory: runs in each worker after the fork."""
    del worker_index
    return JpkiApp(config)
