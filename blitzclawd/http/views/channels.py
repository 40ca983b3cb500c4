"""/api/channels: the messaging channels the loaded plugins provide, described so that any UI
or CLI can ask for their settings, and a check of settings before anything is stored."""

from __future__ import annotations

from aiohttp import web

from blitzclawd import plugins
from blitzclawd.channels import describe
from blitzclawd.http import validate
from blitzclawd.http.auth import require_user
from blitzclawd.http.channel_state import require_complete
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response


async def list_channels(request: web.Request) -> web.Response:
    require_user(request)
    return json_response({"channels": [describe(c) for c in plugins.channels().values()]})


async def validate_channel(request: web.Request) -> web.Response:
    """Check a channel's settings (with the outside service where it has one), storing
    nothing: what the user would be shown of them, or why not."""
    ctx = request.app[CONTEXT]
    require_user(request)
    kind = request.match_info["channel_type"]
    channel = plugins.channels().get(kind)
    if channel is None:
        raise ApiError(404, "not_found", f"no channel {kind[:100]!r}; see GET /api/channels")
    body = await validate.json_object(request)
    config = body.get("channel_config", {})
    if not isinstance(config, dict):
        raise ApiError(
            422, "invalid_field", "channel_config must be an object", field="channel_config"
        )
    state = await channel.verify(ctx.settings, config, None)
    require_complete(channel, state)
    return json_response({"valid": True, "type": kind, "channel_config": state.public})
