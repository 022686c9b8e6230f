"""The /v1 route table: every JSON route, one entry each, read by the dispatcher
(`responder.v1.routes`) and the OpenAPI generator (`responder.v1.openapi`).

To add a route: write its module (request/response Structs, a sans-I/O handler, a
``ROUTE`` = `responder.v1.route.Route`), import it here and add its ``ROUTE`` to `ROUTES`.
"""

from __future__ import annotations

from typing import Final

from responder.v1 import status, token
from responder.v1.route import AnyRoute

ROUTES: Final[tuple[AnyRoute, ...]] = (status.ROUTE, token.ROUTE)
