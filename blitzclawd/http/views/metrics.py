"""GET /metrics: the daemon's Prometheus metrics, for an operator (the admin key or an admin's
credentials; Prometheus sends it as `authorization: {credentials: ...}`). Instances never reach
it: they only reach the proxy listener. Who may call it is its declaration's check."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.context import CONTEXT
from blitzclawd.metrics import CONTENT_TYPE
from blitzclawd.queries.metrics import fleet_state

_LABELS = {
    "pool_servers": ("status",),
    "instances": ("status",),
    "jobs": ("kind", "status"),
    "job_seconds": ("kind",),
    "health_checks": ("kind",),
    "health": ("state",),
    "emails": ("kind", "outcome"),
    "webhooks": ("source", "outcome"),
}


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    m = ctx.metrics
    for name, rows in (await fleet_state(ctx.pool)).items():
        m.set_labelled(getattr(m, name), rows, *_LABELS[name])
    m.actor_restarts.clear()
    for status in ctx.supervisor.status() if ctx.supervisor is not None else []:
        m.actor_restarts.labels(status.name).set(status.restarts)
    body = m.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
