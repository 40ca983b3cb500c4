"""/api/instances: a user's OpenClaw instances. Every query is scoped by the caller's own user id:
another user's instance (or a malformed id) is a 404, exactly like one that does not exist.

The views check input and answer; the changes (a pending instance and its server, settings with
the job that deploys them) are blitzclawd.services.instances'. Bot tokens and own keys are
encrypted here, before anything is stored (plaintext exists only while deploying).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web

from blitzclawd import credentials, plugins
from blitzclawd.channels import missing, seal
from blitzclawd.config import billing_minimum_micros
from blitzclawd.credentials import channel_secret_context, own_key_context
from blitzclawd.fleet.personas import soul_md
from blitzclawd.http.auth import require_user
from blitzclawd.http.channel_state import store_channel
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.instance_access import gateway_log, instance_id_of, owned_instance
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import instances as rows
from blitzclawd.services import instances as service
from blitzclawd.services import own_keys

log = logging.getLogger("blitzclawd.instances")

MAX_SOUL_INPUT = 100_000  # raw characters read before the exact OpenClaw-length check


def _setup_text(row: Any) -> str | None:
    """What the user does next, in the channel plugin's own words."""
    channel = plugins.channels().get(row["channel_type"])
    return channel.setup_text(row["channel_config"] or {}) if channel is not None else None


def _view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "channel_type": row["channel_type"],
        "channel_config": row["channel_config"] or {},  # non-secret parts only
        "persona_template": row["persona_template"],
        "soul_md": row["soul_md"],
        "ip_address": row["ip_address"],
        "use_own_api_key": row["use_own_api_key"],
        "setup_text": _setup_text(row),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _soul(persona: str, raw: str | None) -> str | None:
    """OpenClaw's own rules for SOUL.md (its length once the persona's frame is around it)."""
    try:
        soul_md(persona, raw)
    except ValueError as exc:
        name = str(exc).partition(": ")[0]
        raise ApiError(422, "invalid_field", str(exc), field=name) from None
    return raw


async def create(request: web.Request) -> web.Response:
    """A new instance; without its channel's required settings (e.g. a bot token) it waits for
    them (waiting_for_channel, no server claimed) until POST /api/instances/{id}/channel."""
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    body = args_of(request).body
    kind = body["channel_type"]
    channel = plugins.channels()[kind]
    persona = body["persona_template"]
    soul = _soul(persona, body.get("soul_md"))
    # Checked before anything is stored or a server claimed.
    state = await channel.verify(ctx.settings, body.get("channel_config") or {}, None)
    instance_id = uuid.uuid4()
    new = rows.NewInstance(
        id=instance_id,
        user_id=user_id,
        channel_type=kind,
        channel_config=state.public,
        channel_secret_enc=seal(ctx.keyring(), channel_secret_context(instance_id), state.secrets),
        persona_template=persona,
        soul_md=soul,
        # Never handed out: the first deploy rotates in the secret the instance gets.
        secret_hash=credentials.hash_secret(credentials.new_secret()),
        status="waiting_for_channel" if missing(channel, state) else "pending",
    )
    row = await service.create(
        ctx.pool,
        ctx.actors,
        new,
        minimum_micros=billing_minimum_micros(ctx.settings),
        limit=ctx.settings.fleet.max_instances_per_user,
    )
    return json_response(_view(row), status=201)


async def list_instances(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    found = await rows.of_user(ctx.pool, user_id)
    return json_response({"instances": [_view(r) for r in found]})


async def get(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    row = await owned_instance(ctx, user_id, instance_id_of(request))
    usage = await rows.usage_24h(ctx.pool, uuid.UUID(user_id), uuid.UUID(row["id"]))
    return json_response({**_view(row), "usage_24h": usage})


async def restart(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await owned_instance(ctx, require_user(request), instance_id_of(request))
    if row["status"] == "waiting_for_channel":
        raise ApiError(409, "not_ready", "connect the assistant's channel first (POST .../channel)")
    if row["status"] in ("pending", "provisioning"):
        raise ApiError(409, "not_ready", "the instance is still being set up")
    if row["status"] == "stopped":
        raise ApiError(409, "stopped", "the assistant is stopped: start it (POST .../start)")
    await service.restart(ctx.pool, ctx.actors, uuid.UUID(row["id"]))
    return json_response({"id": row["id"], "queued": "restart"}, status=202)


async def stop(request: web.Request) -> web.Response:
    """Stop an idle assistant: its gateway is stopped, the proxy refuses it (nothing is spent),
    the health monitor leaves it alone; POST .../start brings it back."""
    ctx = request.app[CONTEXT]
    row = await owned_instance(ctx, require_user(request), instance_id_of(request))
    await service.stop(ctx.pool, ctx.actors, uuid.UUID(row["id"]))
    return json_response({"id": row["id"], "status": "stopped", "queued": "stop"}, status=202)


async def start(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await owned_instance(ctx, require_user(request), instance_id_of(request))
    if row["status"] != "stopped":
        raise ApiError(409, "not_stopped", f"the assistant is {row['status']}, not stopped")
    await service.start(ctx.pool, ctx.actors, uuid.UUID(row["id"]))
    return json_response({"id": row["id"], "queued": "start"}, status=202)


async def configure(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    instance_id = instance_id_of(request)
    row = await owned_instance(ctx, user_id, instance_id)
    body = args_of(request).body  # soul_md and/or channel_config
    soul = service.UNSET
    if "soul_md" in body:
        soul = _soul(row["persona_template"] or "assistant", body["soul_md"])
    if "channel_config" in body:
        _, _, queued = await store_channel(
            ctx, row, body["channel_config"], require=False, soul=soul
        )
    else:
        queued = await service.configure(ctx.pool, ctx.actors, instance_id, soul=soul)
    return json_response({"id": row["id"], "queued": queued or None}, status=202)


async def connect_channel(request: web.Request) -> web.Response:
    """Connect (or change) the instance's channel: complete settings, checked with the outside
    service; settings left out keep their stored values (a bot token is never re-sent)."""
    ctx = request.app[CONTEXT]
    instance_id = instance_id_of(request)
    row = await owned_instance(ctx, require_user(request), instance_id)
    body = args_of(request).body
    channel, state, queued = await store_channel(
        ctx, row, body.get("channel_config", {}), require=True
    )
    return json_response(
        {
            "id": row["id"],
            "channel_type": channel.name,
            "channel_config": state.public,
            "queued": queued or None,
            "setup_text": channel.setup_text(state.public),
        },
        status=202,
    )


async def delete(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = instance_id_of(request)
    row = await owned_instance(ctx, require_user(request), instance_id)
    await service.delete(ctx.pool, ctx.actors, instance_id)
    return json_response({"id": row["id"], "status": "deleted", "queued": "delete"}, status=202)


async def logs(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    instance_id = instance_id_of(request)
    await owned_instance(ctx, require_user(request), instance_id)
    return await gateway_log(request, instance_id)


# -- the user's own provider key (spec "User API Keys") ------------------------------------------


async def set_api_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = instance_id_of(request)
    row = await owned_instance(ctx, require_user(request), instance_id)
    body = args_of(request).body
    provider, key = body["provider"], body["api_key"]
    assert ctx.http is not None
    await own_keys.check_with_provider(ctx.http, ctx.settings.upstream, provider, key)
    blob = ctx.keyring().encrypt_text(key, own_key_context(instance_id))
    await service.set_own_key(ctx.pool, ctx.actors, instance_id, provider, blob)
    return json_response(
        {"id": row["id"], "use_own_api_key": True, "provider": provider, "queued": "configure"},
        status=202,
    )


async def remove_api_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = instance_id_of(request)
    row = await owned_instance(ctx, require_user(request), instance_id)
    await service.clear_own_key(ctx.pool, ctx.actors, instance_id)
    return json_response(
        {"id": row["id"], "use_own_api_key": False, "queued": "configure"}, status=202
    )
