"""/api/auth/*: who am I, and API keys for the CLI and scripts (shown once, stored hashed)."""

from __future__ import annotations

import uuid

from aiohttp import web

from blitzclawd.config import billing_minimum_micros
from blitzclawd.http.auth import caller_of, hash_key, new_api_key, require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import accounts
from blitzclawd.queries.billing import balance_summary
from blitzclawd.services import api_keys

MAX_KEYS_PER_USER = 20


async def me(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    caller = caller_of(request)
    if caller.user_id is None:
        return json_response({"id": None, "role": caller.role, "via": caller.via})
    row = await accounts.profile(ctx.pool, uuid.UUID(caller.user_id))
    return json_response(
        {
            "id": row["id"],
            "clerk_user_id": row["clerk_user_id"],
            "email": row["email"],
            "role": caller.role,
            "via": caller.via,
            "created_at": row["created_at"].isoformat(),
            "balance": await balance_summary(
                ctx.pool, caller.user_id, billing_minimum_micros(ctx.settings)
            ),
        }
    )


def _key_json(row) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "created_at": row["created_at"].isoformat(),
        "last_used_at": row["last_used_at"].isoformat() if row["last_used_at"] else None,
        "revoked_at": row["revoked_at"].isoformat() if row["revoked_at"] else None,
    }


async def create_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    name = args_of(request).body["name"]
    key = new_api_key()
    row = await api_keys.create(
        ctx.pool, user_id, name, key[:10], hash_key(key), limit=MAX_KEYS_PER_USER
    )
    # The only time the key is shown: we keep its hash, never the key.
    return json_response({**_key_json(row), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    keys = await accounts.keys_of(ctx.pool, uuid.UUID(require_user(request)))
    return json_response({"keys": [_key_json(r) for r in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    key_id = args_of(request).path["key_id"]
    row = await accounts.revoke_key(ctx.pool, uuid.UUID(require_user(request)), key_id)
    if row is None:  # someone else's key looks exactly like a missing one
        raise ApiError(404, "not_found", "no such API key")
    return json_response(_key_json(row))
