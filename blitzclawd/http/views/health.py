"""GET /healthz (the process answers) and GET /readyz (it can do its job).

The body shows the supervision tree and every actor by its path. While the database is
unavailable /readyz says so and only that ("database unavailable"): the
actors waiting for it are its consequence, listed in the body with their states.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from blitzclawd.db.pool import ping
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
            await ping(ctx.pool)
        database = "ok"
    except Exception as exc:  # any failure means not ready; the body says which
        database = f"unreachable: {type(exc).__name__}"
        reasons.append("database unavailable")
    root = ctx.supervisor
    if not root.started.is_set():
        reasons.append("actors not started")
    ok, why = root.children_running()
    if not ok and not reasons:
        reasons.append(why or "an actor is not running")
    tree = [child.as_dict() for child in root.status()]
    body = {
        "status": "ready" if not reasons else "not_ready",
        "reason": "; ".join(reasons) or None,
        "daemon_id": ctx.daemon_id,
        "database": database,
        # The supervision tree (blitzclawd.tree): each supervisor with its strategy and children.
        "tree": {"name": root.name, "strategy": root.strategy.value, "children": tree},
        "actors": _leaves(tree),
    }
    return json_response(body, status=200 if not reasons else 503)


def _leaves(tree: list[dict], prefix: str = "") -> list[dict]:
    """Every actor (not supervisor) of the tree, with its path ("fleet/provisioner")."""
    out: list[dict] = []
    for node in tree:
        path = prefix + str(node["name"])
        if "children" in node:
            out.extend(_leaves(node["children"], path + "/"))  # type: ignore[arg-type]
        else:
            out.append({**node, "path": path})
    return out
