"""/api/auth/device/*: signing the CLI in without typing a key (a device flow).

`code` (public) opens a request: a secret device code for the CLI, a short user code for the
person; `approve` (a signed-in user, from the dashboard's /device page) confirms the user code;
`token` (public, with the device code) answers 202 while it waits, then the new API key once.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from blitzclawd.http.auth import hash_key, new_api_key, require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import device_logins as rows
from blitzclawd.services import api_keys
from blitzclawd.services import device_logins as flow

MAX_KEYS_PER_USER = 20


async def device_login_code(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    name = args_of(request).body.get("client_name") or "blitzclaw"
    opened = await flow.open_request(ctx.pool, name)
    page = f"{request.scheme}://{request.host}/device"
    return json_response(
        {
            "device_code": opened.device_code,
            "user_code": opened.user_code,
            "verification_uri": page,
            "verification_uri_complete": f"{page}?code={opened.user_code}",
            "expires_in": flow.LIFETIME,
            "interval": flow.INTERVAL,
        },
        status=201,
    )


async def approve_device_login(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    user_code = args_of(request).body["user_code"].upper()
    found = await rows.pending_by_user_code(ctx.pool, user_code)
    if found is None or not await rows.approve(ctx.pool, user_code, user_id):
        raise ApiError(
            404,
            "not_found",
            "no sign-in waits for this code: it may have expired; run `blitzclaw auth login` again",
            field="user_code",
        )
    return json_response({"approved": True, "client_name": found["client_name"]})


async def device_login_token(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    approved = await flow.take_approval(ctx.pool, args_of(request).body["device_code"])
    if approved is None:
        return json_response({"status": "pending"}, status=202)
    user_id, client_name = approved
    key = new_api_key()
    row = await api_keys.create(
        ctx.pool, uuid.UUID(user_id), client_name, key[:10], hash_key(key), limit=MAX_KEYS_PER_USER
    )
    return json_response({"status": "approved", "key": key, "key_id": str(row["id"])})
