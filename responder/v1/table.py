"""The /v1 route table: every JSON route, one entry each, read by the dispatcher
(`responder.v1.routes`) and the OpenAPI generator (`responder.v1.openapi`).

To add a route: write its module (request/response Structs, a sans-I/O handler, a
``ROUTE`` = `responder.v1.route.Route`), import it here and add its ``ROUTE`` to `ROUTES`.
"""

from __future__ import annotations

from typing import Final

from responder.v1 import changes, corresponding, recordinfo, status, token, verify
from responder.v1.route import AnyRoute

ROUTES: Final[tuple[AnyRoute, ...]] = (
    status.ROUTE,
    recordinfo.ROUTE,
    corresponding.ROUTE,
    changes.WATCH_ROUTE,
    changes.CHANGES_ROUTE,
    verify.ROUTE,
    token.ROUTE,
)

MEMBER_ROUTES: Final[tuple[AnyRoute, ...]] = (status.ROUTE, verify.ROUTE)
"""The routes a group appliance (団体署名検証者) serves its own members (署名確認者) itself,
from its own store, decided by `responder.policy.decide_member`: the status of signature
certificates (the group's answer of Act §20(1), asked again later too, §21(3); the JSON
form of its OCSP answers, counted in its ledger as those are) and the validation of a
signature (Act §20(1), §21(1)). The record-info relay (`responder.relay`) is the other /v1
route there."""
