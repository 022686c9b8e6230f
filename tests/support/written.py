"""An app's answer as the HTTP layer writes it, for tests that call the app in process.

The ledger (帳簿, Act §40) counts an answer as its bytes go to the transport
(`responder.http.Provision.sent`), not when the app decides it: a test that takes the
app's `Response` without a server runs that step itself with `written`, and `dropped` for an
answer the connection went away before.
"""

from __future__ import annotations

import asyncio

from responder.http import Response


def written(resp: Response | asyncio.Future[Response]) -> Response:
    """``resp`` as the layer writes it: its `Provision.sent` (the ledger's count) first."""
    assert isinstance(resp, Response), "an answer still being made"
    if resp.provision is not None:
        resp.provision.sent()
    return resp


def dropped(resp: Response | asyncio.Future[Response]) -> Response:
    """``resp`` made and never written (its connection gone before its turn)."""
    assert isinstance(resp, Response), "an answer still being made"
    if resp.provision is not None:
        resp.provision.dropped()
    return resp
