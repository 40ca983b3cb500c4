"""Reaching a user's instance from a view: the id in the path, the row only if it is the caller's
(another user's instance, or a malformed id, is a 404 like a missing one), and an SSH session to
its server with the pinned host key."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncssh
from aiohttp import web

from blitzclawd.context import DaemonContext
from blitzclawd.errors import ApiError
from blitzclawd.fleet import remote
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.queries import instances as rows


def instance_id_of(request: web.Request) -> uuid.UUID:
    """The path's instance id, as its declaration parsed it (a malformed one was a 404)."""
    return args_of(request).path["instance_id"]


async def owned_instance(ctx: DaemonContext, user_id: str, instance_id: uuid.UUID) -> Any:
    row = await rows.owned(ctx.pool, uuid.UUID(user_id), instance_id)
    if row is None:
        raise ApiError(404, "not_found", "no such instance")
    return row


async def ssh_to(ctx: DaemonContext, instance_id: uuid.UUID) -> asyncssh.SSHClientConnection:
    """A session to the instance's server; 409 before it has one, 502 when it does not answer."""
    server = await rows.server_of(ctx.pool, instance_id)
    if server is None or server["ip"] is None or not server["ssh_host_key"]:
        raise ApiError(409, "not_ready", "the instance has no server yet")
    cfg = ctx.settings.fleet
    target = remote.Target(server["ip"], cfg.ssh_port, server["ssh_host_key"])
    try:
        return await remote.connect(target, ctx.ssh_key(), timeout=cfg.ssh_connect_timeout)
    except remote.RemoteError:
        raise ApiError(502, "server_unreachable", "the instance's server did not answer") from None


async def gateway_log(request: web.Request, instance_id: uuid.UUID) -> web.StreamResponse:
    """The gateway's journal (`lines`, `follow`) as plain text, streamed while followed; the
    caller has checked who may read it (its owner, or an operator)."""
    ctx = request.app[CONTEXT]
    lines, follow = args_of(request).query["lines"], args_of(request).query["follow"]
    command = remote.journal_command(lines, follow)
    conn = await ssh_to(ctx, instance_id)
    async with conn:
        if not follow:
            result = await conn.run(command, check=False)
            return web.Response(text=str(result.stdout or ""), content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async with conn.create_process(command) as process:
            try:
                while True:
                    chunk = await process.stdout.read(4096)
                    if not chunk:
                        break
                    await response.write(chunk.encode() if isinstance(chunk, str) else chunk)
            except (ConnectionResetError, asyncssh.Error):
                process.close()  # the client left, or the server went away: end the stream
                return response
            except asyncio.CancelledError:
                process.close()
                raise
        await response.write_eof()
        return response
