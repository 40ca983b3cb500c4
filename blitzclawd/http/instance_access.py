"""Reaching a user's instance from a view: the id in the path, the row only if it is the caller's
(another user's instance, or a malformed id, is a 404 like a missing one), and an SSH session to
its server with the pinned host key."""

from __future__ import annotations

import uuid
from typing import Any

import asyncssh
from aiohttp import web

from blitzclawd.context import DaemonContext
from blitzclawd.errors import ApiError
from blitzclawd.fleet import remote
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
