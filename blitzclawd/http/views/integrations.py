"""/api/integrations: the user's connected outside accounts (Google), and the browser's return
from Google's consent page (GET /integrations/google/callback, a page of the dashboard).

Never a token in an answer: what the user sees is the account, the scopes, the expiry and the
instances using it. The changes are blitzclawd.services.integrations'.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from blitzclawd.http.auth import Caller, require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.instance_access import instance_id_of
from blitzclawd.http.jsonutil import json_response
from blitzclawd.integrations.google import GoogleOAuth
from blitzclawd.queries import integrations as rows
from blitzclawd.services import integrations as service
from blitzclawd.web.pages import base_context
from blitzclawd.web.security import signed_in, to_sign_in

CONNECTED_PAGE = "/settings/integrations?connected=google"


def _google(request: web.Request) -> GoogleOAuth:
    ctx = request.app[CONTEXT]
    google = GoogleOAuth.from_settings(ctx.settings, ctx.secrets)
    if google is None:
        raise service.not_configured()
    return google


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "provider": row["provider"],
        "status": row["status"],
        "account_email": row["account_email"],
        "scopes": list(row["scopes"]),
        "expires_at": _when(row["expires_at"]),
        "attached_instances": [str(i) for i in row["attached_instances"]],
        "created_at": row["created_at"].isoformat(),
        "broken_reason": row["broken_reason"],
    }


async def list_integrations(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    _google(request)
    found = await rows.of_user(ctx.pool, uuid.UUID(require_user(request)))
    return json_response({"integrations": [_view(r) for r in found]})


async def connect_google(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    google = _google(request)
    user_id = uuid.UUID(require_user(request))
    url = await service.start_google(ctx.pool, ctx.keyring(), google, user_id)
    return json_response({"url": url})


async def google_callback(request: web.Request) -> web.Response:
    """The API form of the callback, for clients that receive Google's redirect themselves."""
    ctx = request.app[CONTEXT]
    google = _google(request)
    user_id = uuid.UUID(require_user(request))
    body = args_of(request).body
    row = await service.complete_google(
        ctx.pool, ctx.actors, ctx.keyring(), google, user_id, body["state"], body["code"]
    )
    return json_response(_view(row))


async def disconnect(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    google = _google(request)
    provider = args_of(request).path["provider"]
    user_id = uuid.UUID(require_user(request))
    await service.disconnect(ctx.pool, ctx.actors, ctx.keyring(), google, user_id, provider)
    return json_response({"provider": provider, "deleted": True})


async def _attachment(request: web.Request, attach: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    _google(request)
    user_id = uuid.UUID(require_user(request))
    instance_id = instance_id_of(request)
    integration_id = args_of(request).body["integration_id"]
    change = service.attach if attach else service.detach
    changed = await change(ctx.pool, ctx.actors, user_id, instance_id, integration_id)
    return json_response(
        {
            "instance_id": str(instance_id),
            "integration_id": str(integration_id),
            "attached": attach,
            "changed": changed,
        }
    )


async def attach(request: web.Request) -> web.Response:
    return await _attachment(request, True)


async def detach(request: web.Request) -> web.Response:
    return await _attachment(request, False)


# -- the browser's return from Google ----------------------------------------------------------


def _page(
    request: web.Request, user: Caller | None, status: int, title: str, message: str
) -> web.Response:
    return aiohttp_jinja2.render_template(
        "integration_result.html",
        request,
        base_context(request, user, title=title, message=message),
        status=status,
    )


async def browser_callback(request: web.Request) -> web.StreamResponse:
    """GET /integrations/google/callback?code&state (or ?error=access_denied&state): the
    signed-in user's own consent only; success goes to the integrations settings."""
    user = await signed_in(request)
    if user is None or user.user_id is None:
        raise to_sign_in(request)  # back here after signing in (safe_return keeps it on-site)
    ctx = request.app[CONTEXT]
    google = GoogleOAuth.from_settings(ctx.settings, ctx.secrets)
    if google is None:
        return _page(request, user, 503, "Not available", service.not_configured().message)
    user_id = uuid.UUID(user.user_id)
    q = request.query
    state, code, error = q.get("state", ""), q.get("code", ""), q.get("error")
    try:
        if error:
            if state:
                await service.deny_google(ctx.pool, user_id, state)
            if error == "access_denied":
                return _page(
                    request,
                    user,
                    400,
                    "You did not allow access",
                    "You did not allow BlitzClaw to use your Google account, so nothing was "
                    "connected. You can connect it any time from your settings.",
                )
            return _page(
                request, user, 400, "Google did not connect", f"Google said: {error[:100]}"
            )
        if not state or not code:
            return _page(request, user, 400, "Nothing to connect", "This link is missing its code.")
        await service.complete_google(
            ctx.pool, ctx.actors, ctx.keyring(), google, user_id, state, code
        )
    except ApiError as exc:
        titles = {403: "This link is not yours", 502: "Google did not answer"}
        return _page(
            request, user, exc.status, titles.get(exc.status, "Not connected"), exc.message
        )
    raise web.HTTPSeeOther(CONNECTED_PAGE)
