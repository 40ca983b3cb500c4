"""/api/admin/*: operator endpoints (admin role only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from blitzclawd.http.auth import require_admin
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import daemons as daemon_rows
from blitzclawd.queries import health


async def daemons(request: web.Request) -> web.Response:
    """Every daemon sharing the database, and this one's actors."""
    require_admin(request)
    ctx = request.app[CONTEXT]
    rows = await daemon_rows.listed(ctx.pool)
    actors = [] if ctx.supervisor is None else [_actor(s) for s in ctx.supervisor.status()]
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


def _actor(status: Any) -> dict[str, Any]:
    """One child of the supervision tree, with its own children (a supervisor's)."""
    return {
        "name": status.name,
        "state": status.state,
        "restarts": status.restarts,
        "restart": status.restart,
        "last_error": status.last_error,
        "strategy": status.strategy,
        "children": [_actor(c) for c in status.children],
    }


async def instance_health(request: web.Request) -> web.Response:
    """The health monitor's last result for every instance it has checked, worst first."""
    require_admin(request)
    ctx = request.app[CONTEXT]
    rows = await health.health_results(ctx.pool)
    alerts = await health.recent_health_alerts(ctx.pool)

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    instances = [
        {
            **dict(r),
            "checked_at": iso(r["checked_at"]),
            "down_since": iso(r["down_since"]),
            "alerted_at": iso(r["alerted_at"]),
        }
        for r in rows
    ]
    return json_response(
        {
            "instances": instances,
            "summary": {
                "checked": len(instances),
                "ok": sum(1 for r in rows if r["ok"]),
                "failing": sum(1 for r in rows if not r["ok"]),
            },
            "alerts": [{**dict(a), "created_at": iso(a["created_at"])} for a in alerts],
        }
    )
