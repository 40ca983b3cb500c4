"""The channel plugins' own routes, ``/api/instances/{id}/<channel>/<path>``, and the generic
``POST /api/instances/{id}/channel``.

The core applies what a plugin must never have to get right: the caller is authenticated, the
instance is theirs (another user's is a 404, like a missing one), it uses this channel (409,
saying which it uses), it is active when the route needs it (409), and the SSH session is the
pinned one, opened only if the route asks for it and always closed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import asyncssh
from aiohttp import web

from blitzclawd.channels import Channel, ChannelRoute
from blitzclawd.config import Settings
from blitzclawd.context import DaemonContext
from blitzclawd.credentials import channel_session_context
from blitzclawd.errors import ApiError
from blitzclawd.fleet import remote
from blitzclawd.http import validate
from blitzclawd.http.auth import require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.instance_access import instance_id_of, owned_instance, ssh_to
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import instances as rows

log = logging.getLogger("blitzclawd.channels")

# Each call may hold an SSH session to the instance's server (a QR long poll, up to ~70 s): a
# few at once per instance, on this daemon, so nobody can pile up thousands.
MAX_CALLS_PER_INSTANCE = 4
_busy: dict[str, int] = {}


class _Call:
    """blitzclawd.channels.InstanceCall for one request."""

    def __init__(
        self,
        request: web.Request,
        ctx: DaemonContext,
        row: Any,
        channel: Channel,
        route: ChannelRoute,
    ) -> None:
        self._request = request
        self._route = route
        self._ctx = ctx
        self._channel = channel
        self._conn: asyncssh.SSHClientConnection | None = None
        self.instance_id: str = str(row["id"])
        self.status: str = row["status"]
        self.public: dict[str, Any] = dict(row["channel_config"] or {})
        self.query: Mapping[str, str] = request.query
        self.settings: Settings = ctx.settings

    async def json(self) -> dict[str, Any]:
        """The body: the route's declared fields as checked, else the JSON object as sent."""
        if self._route.body:
            return args_of(self._request).body
        return await validate.json_object(self._request)

    async def ssh(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            self._conn = await ssh_to(self._ctx, uuid.UUID(self.instance_id))
        return self._conn

    async def save_public(self, public: dict[str, Any]) -> None:
        await rows.set_channel_config(self._ctx.pool, uuid.UUID(self.instance_id), public)
        self.public = dict(public)

    async def save_session(self) -> int:
        archive = await remote.read_session(await self.ssh(), self._channel.session_dirs)
        if not archive:
            return 0  # nothing there now: the last good backup stays (wipe_session drops it)
        context = channel_session_context(self.instance_id)
        blob = self._ctx.keyring().encrypt(archive, context)
        await rows.set_session(self._ctx.pool, uuid.UUID(self.instance_id), blob)
        return len(archive)

    async def wipe_session(self) -> None:
        await remote.remove_session(await self.ssh(), self._channel.session_dirs)
        await rows.set_session(self._ctx.pool, uuid.UUID(self.instance_id), None)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()


def handler(channel: Channel, route: ChannelRoute) -> Any:
    """The route's view: the core's checks, then the plugin's handler."""

    async def handle(request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        row = await owned_instance(ctx, require_user(request), instance_id_of(request))
        if row["channel_type"] != channel.name:
            raise ApiError(
                409,
                "wrong_channel",
                f"this assistant uses {row['channel_type']}, not {channel.display_name}: "
                f"{route.path} is for {channel.display_name} assistants",
            )
        if route.active_only and row["status"] != "active":
            raise ApiError(
                409, "not_ready", f"the assistant is {row['status']}; this needs it active"
            )
        busy = _busy.setdefault(row["id"], 0)
        if busy >= MAX_CALLS_PER_INSTANCE:
            raise ApiError(
                429,
                "too_many_requests",
                "this assistant is already answering other requests; try again in a moment",
            )
        _busy[row["id"]] = busy + 1
        call = _Call(request, ctx, row, channel, route)
        try:
            body = await route.handler(call)
        except (remote.RemoteError, asyncssh.Error, OSError, TimeoutError) as exc:
            log.warning(
                "channel route failed on the server",
                extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            raise ApiError(
                502, "server_error", "the assistant's server did not do it; try again"
            ) from None
        finally:
            await call.close()
            _busy[row["id"]] -= 1
            if not _busy[row["id"]]:
                del _busy[row["id"]]
        return json_response(body)

    handle.__name__ = f"{channel.name}_{route.path.replace('/', '_')}"
    return handle
