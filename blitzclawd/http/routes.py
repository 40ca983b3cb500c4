"""URL table of each listener."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.views import health


def setup_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)


def setup_api_routes(app: web.Application) -> None:
    setup_health_routes(app)


def setup_proxy_routes(app: web.Application) -> None:
    # The /v1/* metering endpoints arrive with the proxy issue.
    setup_health_routes(app)
