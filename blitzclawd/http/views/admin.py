"""/api/admin/*: operator endpoints (admin role only)."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.auth import require_admin
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.jsonutil import json_response


async def daemons(request: web.Request) -> web.Response:
    """Every daemon sharing the database, and this one's actors."""
    require_admin(request)
    ctx = request.app[CONTEXT]
    rows = await ctx.pool.fetch(
        "SELECT id::text, hostname, pid, version, started_at, last_seen, stopped_at "
        "FROM daemons ORDER BY started_at DESC LIMIT 100"
    )
    actors = (
        []
        if ctx.supervisor is None
        else [
            {"name": s.name, "state": s.state, "restarts": s.restarts, "restart": s.restart}
            for s in ctx.supervisor.status()
        ]
    )
    return json_response(
        {
            "this_daemon": ctx.daemon_id,
            "actors": actors,
            "daemons": [
                {
                    **dict(r),
                    **{
                        k: r[k].isoformat() if r[k] else None
                        for k in ("started_at", "last_seen", "stopped_at")
                    },
                }
                for r in rows
            ],
        }
    )
