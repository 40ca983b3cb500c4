"""URL table of each listener: the API's is its declared operations (blitzclawd/http/operations.py),
each view behind its declaration's checks."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.declare import OPERATIONS, OperationTable, bind
from blitzclawd.http.operations import api_operations
from blitzclawd.http.views import health, integrations, proxy
from blitzclawd.web.routes import GOOGLE_CALLBACK
from blitzclawd.web.security import secured


def setup_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)


def setup_api_routes(app: web.Application) -> None:
    ops = api_operations()
    for op in ops:
        app.router.add_route(op.method, op.route, bind(op))
    app[OPERATIONS] = OperationTable(ops)
    # A page of the dashboard (not in the API document), but a change: the consent's return.
    app.router.add_get(GOOGLE_CALLBACK, secured(integrations.browser_callback))


def setup_proxy_routes(app: web.Application) -> None:
    setup_health_routes(app)
    app.router.add_post("/v1/messages", proxy.messages)
    app.router.add_post("/v1/chat/completions", proxy.chat_completions)
    app.router.add_post("/v1/responses", proxy.responses)
    app.router.add_post("/v1/messages/count_tokens", proxy.count_tokens)
    app.router.add_get("/v1/models", proxy.models)
    app.router.add_get("/v1/models/{model_id}", proxy.model)
