"""/api/channels: the messaging channels the loaded plugins provide, described so that any UI
or CLI can ask for their settings, and a check of settings before anything is stored."""

from __future__ import annotations

from aiohttp import web

from blitzclawd import plugins
from blitzclawd.channels import describe
from blitzclawd.http.auth import require_user
from blitzclawd.http.channel_state import require_complete
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.jsonutil import json_response


async def list_channels(request: web.Request) -> web.Response:
    require_user(request)
    return json_response({"channels": [describe(c) for c in plugins.channels().values()]})


async def validate_channel(request: web.Request) -> web.Response:
    """Check a channel's settings (with the outside service where it has one), storing
    nothing: what the user would be shown of them, or why not."""
    ctx = request.app[CONTEXT]
    given = args_of(request)
    kind = given.path["channel_type"]  # one of the loaded channels (else 404)
    channel = plugins.channels()[kind]
    state = await channel.verify(ctx.settings, given.body.get("channel_config", {}), None)
    require_complete(channel, state)
    return json_response({"valid": True, "type": kind, "channel_config": state.public})
