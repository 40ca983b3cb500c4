"""URL table of each listener."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.views import health, proxy


def setup_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)


def setup_api_routes(app: web.Application) -> None:
    setup_health_routes(app)


def setup_proxy_routes(app: web.Application) -> None:
    setup_health_routes(app)
    app.router.add_post("/v1/messages", proxy.messages)
    app.router.add_post("/v1/chat/completions", proxy.chat_completions)
    app.router.add_post("/v1/responses", proxy.responses)
    app.router.add_get("/v1/models", proxy.models)
