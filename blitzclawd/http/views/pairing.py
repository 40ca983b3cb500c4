"""/api/instances/{id}/pairing: who is asking to talk to the assistant, and letting them.

A channel in OpenClaw's `pairing` DM policy (a bot without an allowlist, say) answers a
stranger's first message with an 8-character code and ignores them until the code is approved
on the server. Users have no SSH: these routes list the pending requests and approve one with
the pinned release's own commands (`openclaw pairing list|approve`), over the pinned SSH session.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from blitzclawd import plugins
from blitzclawd.channels import ChannelState
from blitzclawd.fleet import remote
from blitzclawd.http.auth import require_user
from blitzclawd.http.channel_state import stored_state
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.instance_access import instance_id_of, owned_instance, ssh_to
from blitzclawd.http.jsonutil import json_response
from blitzclawd.services import instances as service


def _request_view(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    return {
        "code": raw.get("code"),
        "sender_id": raw.get("id"),
        "username": meta.get("username"),
        "name": " ".join(filter(None, (meta.get("firstName"), meta.get("lastName")))) or None,
        "requested_at": raw.get("createdAt"),
    }


async def _active_row(request: web.Request) -> Any:
    ctx = request.app[CONTEXT]
    row = await owned_instance(ctx, require_user(request), instance_id_of(request))
    wanted = args_of(request).path.get("channel")  # /api/instances/{id}/<channel>/pairing
    if wanted is not None and row["channel_type"] != wanted:
        raise ApiError(
            409, "wrong_channel", f"this assistant uses {row['channel_type']}, not {wanted}"
        )
    if row["status"] != "active":
        raise ApiError(
            409, "not_ready", f"the instance is {row['status']}; pairing needs it active"
        )
    return row


async def list_requests(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await _active_row(request)
    async with await ssh_to(ctx, instance_id_of(request)) as conn:
        try:
            pending = await remote.pairing_requests(conn, row["channel_type"])
        except remote.RemoteError:
            raise ApiError(
                502, "server_error", "the assistant's server could not list the requests"
            ) from None
    return json_response({"requests": [_request_view(r) for r in pending]})


async def approve(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await _active_row(request)
    code = args_of(request).body["code"].upper()
    if not remote.PAIRING_CODE.fullmatch(code):
        raise ApiError(
            422,
            "invalid_field",
            "code must be the 8-character code the assistant sent (letters and digits)",
            field="code",
        )
    async with await ssh_to(ctx, instance_id_of(request)) as conn:
        try:
            pending = await remote.pairing_requests(conn, row["channel_type"])
            match = next((r for r in pending if r.get("code") == code), None)
            if match is not None:
                await remote.approve_pairing(conn, row["channel_type"], code)
        except remote.RemoteError:
            raise ApiError(502, "server_error", "the assistant's server did not approve") from None
    if match is None:
        raise ApiError(
            404,
            "not_found",
            "no pending request with this code: codes expire after an hour; send the "
            "assistant a new message for a new one",
            field="code",
        )
    # The channel keeps it in its settings (e.g. an allowlist, and the owner), so the
    # next configure writes a config that still lets them in.
    channel = plugins.channels().get(row["channel_type"])
    sender = str(match.get("id") or "")
    if channel is not None and sender:
        secrets = (await stored_state(ctx, row, channel))[0].secrets

        def keep(public: dict[str, Any]) -> dict[str, Any] | None:
            changed = channel.paired(ChannelState(public, secrets), sender)
            return None if changed is None else changed.public

        await service.update_channel_config(ctx.pool, instance_id_of(request), keep)
    return json_response({"approved": _request_view(match)})
