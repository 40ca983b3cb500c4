"""/internal/*: called by our own pool servers, authenticated by each server's own secret."""

from __future__ import annotations

import hmac
import logging
import re

import asyncssh
from aiohttp import web

from blitzclawd import credentials
from blitzclawd.http import validate
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import fleet
from blitzclawd.runtime.messages import JobsQueued

log = logging.getLogger("blitzclawd.fleet")

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A hash nothing hashes to, so an unknown server costs the same compare as a known one.
_NO_HASH = b"\x00" * 32


def _bearer(request: web.Request) -> str:
    """The bearer secret, or "" when there is none or it is not printable ASCII (other header
    bytes arrive as lone surrogates, which cannot be hashed)."""
    value = request.headers.get("Authorization", "")
    secret = value[7:].strip() if value[:7].lower() == "bearer " else ""
    return secret if secret.isascii() and secret.isprintable() else ""


def _host_key(raw: object) -> str:
    """`type base64` of an OpenSSH public key line (comment dropped); 422 when it is none."""
    if not isinstance(raw, str) or len(raw) > 16384:
        raise ApiError(
            422, "invalid_field", "host_key must be an OpenSSH public key", field="host_key"
        )
    parts = raw.strip().split()
    try:
        asyncssh.import_public_key(" ".join(parts[:2]))
    except (asyncssh.KeyImportError, ValueError):
        raise ApiError(
            422, "invalid_field", "host_key must be an OpenSSH public key", field="host_key"
        ) from None
    return " ".join(parts[:2])


async def instance_ready(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await validate.json_object(request)
    name = body.get("server_name")
    secret = _bearer(request)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not secret:
        raise ApiError(401, "unauthenticated", "unknown server or wrong secret")
    row = await fleet.server_by_name(ctx.pool, name)
    stored = bytes(row["secret_hash"]) if row is not None and row["secret_hash"] else _NO_HASH
    ok = hmac.compare_digest(credentials.hash_secret(secret), stored)
    if row is None or not ok:
        log.warning("ready call refused", extra={"server_name": name})
        raise ApiError(401, "unauthenticated", "unknown server or wrong secret")
    host_key = _host_key(body.get("host_key"))
    outcome = await fleet.report_ready(ctx.pool, row["id"], host_key)
    if outcome is None:
        raise ApiError(409, "server_retired", "this server is being deleted")
    log.info("server ready", extra={"server_name": name, "outcome": outcome})
    if outcome == "deploy":
        ctx.actors.provisioner.tell(JobsQueued())  # else its poll picks the job up
    return json_response({"ok": True, "outcome": outcome})
