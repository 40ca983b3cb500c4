"""GET /healthz (the process answers) and GET /readyz (it can do its job).

While the database is unavailable /readyz says so and only that ("database unavailable"): the
actors waiting for it are its consequence, listed in the body with their states.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from blitzclawd.http.context import CONTEXT
from blitzclawd.http.jsonutil import json_response

DB_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    reasons: list[str] = []
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT):
            await ctx.pool.fetchval("SELECT 1")
        database = "ok"
    except Exception as exc:  # any failure means not ready; the body says which
        database = f"unreachable: {type(exc).__name__}"
        reasons.append("database unavailable")
    actors: list[dict] = []
    if ctx.supervisor is None:
        reasons.append("actors not started")
    else:
        ok, why = ctx.supervisor.children_running()
        if not ok and not reasons:
            reasons.append(why or "an actor is not running")
        actors = [
            {"name": s.name, "state": s.state, "restarts": s.restarts, "restart": s.restart}
            for s in ctx.supervisor.status()
        ]
    body = {
        "status": "ready" if not reasons else "not_ready",
        "reason": "; ".join(reasons) or None,
        "daemon_id": ctx.daemon_id,
        "database": database,
        "actors": actors,
    }
    return json_response(body, status=200 if not reasons else 503)
