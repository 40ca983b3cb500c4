"""/api/admin/pool, drain and resume: the server pool as an operator on call sees and empties it.

A drain deletes ready, unassigned servers through the pool manager (the one place servers are
deleted) and holds the pool, so the manager does not make new spares until an operator resumes
it; the hold is a database row, so it binds every daemon and survives restarts. Both actions are
audited; to anyone but an operator these routes do not exist (404)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from blitzclawd.http.admin_access import actor_of, plain
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import admin as rows
from blitzclawd.queries import pool_drain
from blitzclawd.registry import ActorUnavailable
from blitzclawd.runtime.messages import Drain, Drained, PoolCheck

LOCATION = r"[a-z][a-z0-9-]{0,31}"  # a provider's location name: fsn1, nbg1, ash


async def pool(request: web.Request) -> web.Response:
    """Servers by status, with their age and location, and whether the pool is held."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    found = await rows.servers(ctx.pool)
    hold = await pool_drain.hold_of(ctx.pool)
    now = dt.datetime.now(dt.UTC)
    by_status: dict[str, int] = {}
    servers = []
    for r in found:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        servers.append({**plain(r), "age_seconds": int((now - r["created_at"]).total_seconds())})
    return json_response(
        {
            "held": hold is not None,
            "hold": None if hold is None else plain(hold),
            "by_status": by_status,
            "servers": servers,
        }
    )


async def drain(request: web.Request) -> web.Response:
    """`{"count"?: N, "location"?: "fsn1"}` (an empty body: every one): delete ready,
    unassigned servers and hold the pool until POST /api/admin/pool/resume."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    body = args_of(request).body  # a closed body: a misspelt option is refused
    count, location = body.get("count"), body.get("location")
    asked: dict[str, Any] = {"count": count, "location": location}
    try:
        done: Drained = await ctx.actors.pool_manager.ask(
            Drain(count, location, actor), timeout=120
        )
    except ActorUnavailable:
        raise ApiError(
            409, "elsewhere", "the pool manager runs on another daemon (or no provider is set)"
        ) from None
    except TimeoutError:
        # Held and under way all the same: the trail must say so.
        await rows.audit(ctx.pool, actor, "pool.drain", location, {**asked, "timed_out": True})
        raise ApiError(
            504, "timeout", "the provider is slow: the pool is held and servers are still going"
        ) from None
    outcome = {"deleted": done.deleted, **({"failed": done.failed} if done.failed else {})}
    await rows.audit(ctx.pool, actor, "pool.drain", location, {**asked, **outcome})
    return json_response({"held": True, "deleted": done.deleted, "failed": done.failed})


async def resume(request: web.Request) -> web.Response:
    """Lift the hold: the pool manager refills the pool to fleet.min_available again."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    was = await pool_drain.release(ctx.pool)
    detail = {"was_held": False} if was is None else {"was_held": True, **plain(was)}
    await rows.audit(ctx.pool, actor, "pool.resume", None, detail)
    ctx.actors.pool_manager.tell(PoolCheck("resumed"))  # elsewhere: its next pass refills
    return json_response({"held": False, "was_held": was is not None})
