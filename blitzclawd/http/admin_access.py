"""What every operator view does first: the caller is an operator (else the route does not
exist: 404) and who they are for the audit trail; rows as JSON; a query choice checked."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from blitzclawd.errors import ApiError
from blitzclawd.http.auth import require_admin


def actor_of(request: web.Request) -> str:
    caller = require_admin(request)
    return "admin_key" if caller.user_id is None else f"user:{caller.user_id}"


def plain(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in dict(row).items()}


def choice_query(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise ApiError(
            422, "invalid_field", f"{name} must be one of {', '.join(allowed)}", field=name
        )
    return value


def user_id_of(request: web.Request) -> uuid.UUID:
    """The user id in the path; a malformed one is a 404 like a missing user."""
    try:
        return uuid.UUID(request.match_info["user_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such user") from None
