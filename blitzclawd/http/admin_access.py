"""What every operator view does first: the caller is an operator (else the route does not
exist: 404) and who they are for the audit trail; rows as JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from blitzclawd.http.auth import require_admin


def actor_of(request: web.Request) -> str:
    caller = require_admin(request)
    return "admin_key" if caller.user_id is None else f"user:{caller.user_id}"


def plain(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in dict(row).items()}
