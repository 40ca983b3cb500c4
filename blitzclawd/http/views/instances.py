"""/api/instances: a user's OpenClaw instances. Every query is scoped by the caller's own user id:
another user's instance (or a malformed id) is a 404, exactly like one that does not exist.

Creating claims an available server in the same transaction as the instance row (FOR UPDATE SKIP
LOCKED: two users at once never get the same server), else the instance waits as `pending` and the
pool manager is asked to provision. The actual configuration over SSH is a durable job for the
provisioner. Bot tokens are stored encrypted (plaintext exists only while deploying).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

import aiohttp
import asyncssh
from aiohttp import web

from blitzclawd import credentials
from blitzclawd.config import billing_minimum_micros
from blitzclawd.credentials import channel_secret_context, own_key_context
from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.fleet import remote
from blitzclawd.fleet.openclaw_config import OFFICIAL_APIS, OWN_API_KEY, telegram_channel
from blitzclawd.fleet.personas import PERSONA_NAMES, soul_md
from blitzclawd.fleet.telegram_bot import (
    BotIdentity,
    TelegramUnavailable,
    TokenRefused,
    bot_identity,
)
from blitzclawd.http import validate
from blitzclawd.http.auth import lock_live_user, require_user
from blitzclawd.http.context import CONTEXT, DaemonContext
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.runtime.messages import JobsQueued, PoolCheck

log = logging.getLogger("blitzclawd.instances")

CHANNEL_TYPES = ("telegram", "whatsapp")
MAX_SOUL_INPUT = 100_000  # raw characters read before the exact OpenClaw-length check
_FIELDS = """i.id::text, i.status, i.status_reason, i.channel_type, i.channel_config,
             i.persona_template, i.soul_md, host(i.ip_address) AS ip_address, i.created_at,
             i.updated_at, i.use_own_api_key"""


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
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _parse_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["instance_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such instance") from None


async def _owned(ctx: DaemonContext, user_id: str, instance_id: uuid.UUID) -> Any:
    row = await ctx.pool.fetchrow(
        f"SELECT {_FIELDS} FROM instances i "
        "WHERE i.id = $1 AND i.user_id = $2 AND i.deleted_at IS NULL",
        instance_id,
        uuid.UUID(user_id),
    )
    if row is None:
        raise ApiError(404, "not_found", "no such instance")
    return row


def _soul(persona: str, raw: Any) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise ApiError(422, "invalid_field", "soul_md must be a string", field="soul_md")
    if isinstance(raw, str) and len(raw) > MAX_SOUL_INPUT:
        raise ApiError(422, "invalid_field", "soul_md is over 20000 characters", field="soul_md")
    try:
        soul_md(persona, raw)
    except ValueError as exc:
        name = str(exc).partition(": ")[0]
        raise ApiError(422, "invalid_field", str(exc), field=name) from None
    return raw


# What a client may send in channel_config: the telegram inputs, plus the bot's description as
# GET shows it (ignored: Telegram says which bot a token is), so a read-modify-write round-trips.
_TELEGRAM_KEYS = frozenset(
    {"bot_token", "allow_from", "bot_id", "bot_username", "bot_name", "bot_link"}
)
_TELEGRAM_ID = re.compile(r"[0-9]{1,20}")
MAX_ALLOW_FROM = 100


def _allow_from(raw: Any) -> list[str] | None:
    """Telegram numeric user ids, as a JSON list (a bare string is not a list of its digits)."""
    name = "channel_config.allow_from"
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise validate.invalid(name, f"{name} must be a list of numeric Telegram user ids")
    if len(raw) > MAX_ALLOW_FROM:
        raise validate.invalid(name, f"{name} may hold at most {MAX_ALLOW_FROM} ids")
    ids: list[str] = []
    for item in raw:
        value = item.strip() if isinstance(item, str) else item
        if type(value) is int and value > 0:
            value = str(value)
        if not isinstance(value, str) or not _TELEGRAM_ID.fullmatch(value) or int(value) == 0:
            raise validate.invalid(
                name, f'{name} must be a list of numeric Telegram user ids, e.g. ["123456789"]'
            )
        ids.append(value)
    return ids


def _channel(kind: str, raw: Any) -> tuple[dict[str, Any], str | None]:
    """(non-secret channel_config to store, bot token or None); 422 naming the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ApiError(
            422, "invalid_field", "channel_config must be an object", field="channel_config"
        )
    allowed = _TELEGRAM_KEYS if kind == "telegram" else frozenset()
    unknown = sorted(k for k in raw if k not in allowed)
    if unknown:
        name = f"channel_config.{unknown[0]}"[:200]
        raise validate.invalid(name, f"{name} is not a {kind} setting")
    if kind == "whatsapp":
        return {}, None
    token = raw.get("bot_token")
    allow = _allow_from(raw.get("allow_from"))
    if token is None:
        raise ApiError(
            422,
            "invalid_field",
            "channel_config.bot_token is required for telegram",
            field="channel_config.bot_token",
        )
    try:
        block = telegram_channel(bot_token=token, allow_from=allow)
    except ValueError as exc:
        name = str(exc).partition(":")[0]
        raise ApiError(
            422, "invalid_field", f"channel_config.{exc}", field=f"channel_config.{name}"
        ) from None
    stored = {"allow_from": block["telegram"].get("allowFrom", [])}
    return stored, token


async def _checked_bot(ctx: DaemonContext, token: str) -> BotIdentity:
    """The bot the token belongs to, as Telegram says (getMe); else a clear error."""
    settings = ctx.settings.telegram
    try:
        return await bot_identity(token, settings.api_url, seconds=settings.timeout)
    except TokenRefused as exc:
        raise ApiError(
            422,
            "invalid_field",
            f"channel_config.bot_token: {exc}",
            field="channel_config.bot_token",
        ) from None
    except TelegramUnavailable as exc:
        log.warning("telegram unreachable for a token check", extra={"error": str(exc)})
        raise ApiError(
            503,
            "telegram_unavailable",
            "Telegram cannot be reached to check the bot token; nothing was changed, try again "
            "in a minute",
        ) from None


def _bot_config(bot: BotIdentity) -> dict[str, Any]:
    """What the dashboard shows of the bot (nothing secret)."""
    return {
        "bot_id": bot.id,
        "bot_username": bot.username,
        "bot_name": bot.first_name,
        "bot_link": bot.link,
    }


async def create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    body = await validate.json_object(request)
    kind = validate.choice(body, "channel_type", CHANNEL_TYPES)
    persona = validate.choice(body, "persona_template", PERSONA_NAMES)
    soul = _soul(persona, body.get("soul_md"))
    config, token = _channel(kind, body.get("channel_config"))
    if token is not None:  # before anything is stored or a server claimed
        config.update(_bot_config(await _checked_bot(ctx, token)))
    instance_id = uuid.uuid4()
    secret_enc = (
        ctx.keyring().encrypt_text(token, channel_secret_context(instance_id)) if token else None
    )
    minimum = billing_minimum_micros(ctx.settings)
    limit = ctx.settings.fleet.max_instances_per_user
    async with ctx.pool.acquire() as conn, conn.transaction():
        # One user's creations run one at a time (the count below, then the insert), on every
        # daemon: the per-user limit holds under concurrency.
        await lock_live_user(conn, user_id)
        available = await conn.fetchval(
            "SELECT balance_micros - (SELECT coalesce(sum(amount_micros), 0)::bigint "
            "FROM reservations r WHERE r.user_id = $1) FROM balances WHERE user_id = $1",
            user_id,
        )
        if (available or 0) < minimum:
            raise ApiError(
                402,
                "insufficient_balance",
                f"a balance of at least ${minimum / 1e6:.2f} is needed to create an instance",
            )
        count = await conn.fetchval(
            "SELECT count(*) FROM instances WHERE user_id = $1 AND deleted_at IS NULL", user_id
        )
        if count >= limit:
            raise ApiError(409, "instance_limit", f"at most {limit} instances per user")
        await conn.execute(
            """INSERT INTO instances (id, user_id, status, channel_type, channel_config,
                                      channel_secret_enc, persona_template, soul_md, secret_hash)
               VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)""",
            instance_id,
            user_id,
            kind,
            config,
            secret_enc,
            persona,
            soul,
            # Never handed out: the first deploy rotates in the secret the instance gets.
            credentials.hash_secret(credentials.new_secret()),
        )
        server = await fleet_pool.claim_available_server(conn, instance_id)
        if server is not None:
            await fleet_pool.enqueue_job(conn, instance_id, "deploy")
        row = await conn.fetchrow(f"SELECT {_FIELDS} FROM instances i WHERE i.id = $1", instance_id)
    if server is not None:
        ctx.actors.provisioner.tell(JobsQueued())
    else:
        ctx.actors.pool_manager.tell(PoolCheck("no available server"))
    log.info("instance created", extra={"instance": str(instance_id), "status": row["status"]})
    return json_response(_view(row), status=201)


async def list_instances(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    rows = await ctx.pool.fetch(
        f"SELECT {_FIELDS} FROM instances i WHERE i.user_id = $1 AND i.deleted_at IS NULL "
        "ORDER BY i.created_at",
        user_id,
    )
    return json_response({"instances": [_view(r) for r in rows]})


async def get(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    row = await _owned(ctx, user_id, _parse_id(request))
    usage = await ctx.pool.fetchrow(
        """SELECT count(*) AS requests, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
                  coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
                  coalesce(sum(cost_micros), 0)::bigint AS cost_micros
           FROM usage_logs
           WHERE instance_id = $1 AND user_id = $2 AND created_at > now() - interval '24 hours'""",
        uuid.UUID(row["id"]),
        uuid.UUID(user_id),
    )
    return json_response({**_view(row), "usage_24h": dict(usage)})


async def _queue(
    ctx: DaemonContext, instance_id: uuid.UUID, kind: str, update: str | None = None, *args: Any
) -> None:
    """Queue a `kind` job for the instance, after `update` (its $1 is the instance id, the rest
    `args`) in the same transaction: the job never runs without the change, nor the reverse."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if update is not None:
            await conn.execute(update, instance_id, *args)
        await fleet_pool.enqueue_job(conn, instance_id, kind)
    ctx.actors.provisioner.tell(JobsQueued())


async def restart(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await _owned(ctx, require_user(request), _parse_id(request))
    if row["status"] in ("pending", "provisioning"):
        raise ApiError(409, "not_ready", "the instance is still being set up")
    await _queue(ctx, uuid.UUID(row["id"]), "restart")
    return json_response({"id": row["id"], "queued": "restart"}, status=202)


async def configure(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    instance_id = _parse_id(request)
    row = await _owned(ctx, user_id, instance_id)
    body = await validate.json_object(request)
    if "soul_md" not in body and "channel_config" not in body:
        raise ApiError(422, "invalid_field", "send soul_md and/or channel_config", field="soul_md")
    sets: list[str] = []
    args: list[Any] = [instance_id]
    if "soul_md" in body:
        args.append(_soul(row["persona_template"] or "assistant", body["soul_md"]))
        sets.append(f"soul_md = ${len(args)}")
    if "channel_config" in body:
        config, token = _channel(row["channel_type"], body["channel_config"])
        if token is not None:
            config.update(_bot_config(await _checked_bot(ctx, token)))
        args.append(config)
        sets.append(f"channel_config = ${len(args)}")
        if token is not None:
            args.append(ctx.keyring().encrypt_text(token, channel_secret_context(instance_id)))
            sets.append(f"channel_secret_enc = ${len(args)}")
    await _queue(
        ctx,
        instance_id,
        "configure",
        f"UPDATE instances SET {', '.join(sets)} WHERE id = $1 AND deleted_at IS NULL",
        *args[1:],
    )
    return json_response({"id": row["id"], "queued": "configure"}, status=202)


async def telegram_connect(request: web.Request) -> web.Response:
    """Connect (or replace) the instance's Telegram bot: checked with Telegram, then deployed."""
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    instance_id = _parse_id(request)
    row = await _owned(ctx, user_id, instance_id)
    if row["channel_type"] != "telegram":
        raise ApiError(
            409, "wrong_channel", f"this instance uses {row['channel_type']}, not telegram"
        )
    body = await validate.json_object(request)
    kept = (row["channel_config"] or {}).get("allow_from")
    config, token = _channel(
        "telegram",
        {"bot_token": body.get("bot_token"), **({"allow_from": kept} if kept else {})},
    )
    assert token is not None
    bot = await _checked_bot(ctx, token)
    config.update(_bot_config(bot))
    await _queue(
        ctx,
        instance_id,
        "configure",
        "UPDATE instances SET channel_config = $2, channel_secret_enc = $3 "
        "WHERE id = $1 AND deleted_at IS NULL",
        config,
        ctx.keyring().encrypt_text(token, channel_secret_context(instance_id)),
    )
    return json_response(
        {"id": row["id"], "queued": "configure", "telegram": _bot_config(bot)}, status=202
    )


async def telegram_validate(request: web.Request) -> web.Response:
    """Check a bot token without storing it: the bot it belongs to, or why not."""
    ctx = request.app[CONTEXT]
    require_user(request)
    body = await validate.json_object(request)
    _channel("telegram", {"bot_token": body.get("bot_token")})
    bot = await _checked_bot(ctx, body["bot_token"])
    return json_response({"valid": True, "telegram": _bot_config(bot)})


async def delete(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = _parse_id(request)
    row = await _owned(ctx, require_user(request), instance_id)
    # From here the proxy refuses it (deleted); the teardown job wipes its server.
    await _queue(
        ctx,
        instance_id,
        "teardown",
        "UPDATE instances SET status = 'deleted', deleted_at = now() WHERE id = $1",
    )
    return json_response({"id": row["id"], "status": "deleted"}, status=202)


async def logs(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    instance_id = _parse_id(request)
    await _owned(ctx, require_user(request), instance_id)
    lines = validate.query_int(
        request, "lines", default=100, minimum=1, maximum=remote.MAX_LOG_LINES
    )
    follow = validate.query_flag(request, "follow")
    server = await ctx.pool.fetchrow(
        """SELECT host(s.ip_address) AS ip, s.ssh_host_key FROM instances i
           JOIN server_pool s ON s.id = i.server_id WHERE i.id = $1""",
        instance_id,
    )
    if server is None or server["ip"] is None or not server["ssh_host_key"]:
        raise ApiError(409, "not_ready", "the instance has no server yet")
    cfg = ctx.settings.fleet
    target = remote.Target(server["ip"], cfg.ssh_port, server["ssh_host_key"])
    command = remote.journal_command(lines, follow)
    try:
        conn = await remote.connect(target, ctx.ssh_key(), timeout=cfg.ssh_connect_timeout)
    except remote.RemoteError:
        raise ApiError(502, "server_unreachable", "the instance's server did not answer") from None
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


# -- the user's own provider key (spec "User API Keys") ------------------------------------------


async def _provider_accepts(ctx: DaemonContext, provider: str, key: str) -> None:
    """GET /v1/models with the key at the provider: 422 when refused, 502 when unreachable."""
    up = ctx.settings.upstream
    if provider == "anthropic":
        url = up.anthropic_url.rstrip("/") + "/v1/models"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = up.openai_url.rstrip("/").removesuffix("/v1") + "/v1/models"
        headers = {"Authorization": f"Bearer {key}"}
    assert ctx.http is not None
    try:
        async with ctx.http.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
        ) as resp:
            status = resp.status
            await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        raise ApiError(
            502, "provider_unavailable", f"could not reach {provider} to check the key; retry"
        ) from None
    if status in (401, 403):
        raise ApiError(
            422,
            "invalid_api_key",
            f"{provider} refused this API key (HTTP {status})",
            field="api_key",
        )
    if status != 200:
        raise ApiError(
            502, "provider_unavailable", f"{provider} answered HTTP {status} checking the key"
        )


async def set_api_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = _parse_id(request)
    row = await _owned(ctx, require_user(request), instance_id)
    body = await validate.json_object(request)
    provider = validate.choice(body, "provider", OFFICIAL_APIS)
    key = body.get("api_key")
    if not isinstance(key, str) or not OWN_API_KEY.fullmatch(key):
        raise ApiError(
            422,
            "invalid_field",
            "api_key must be 8-512 printable characters without spaces",
            field="api_key",
        )
    await _provider_accepts(ctx, provider, key)
    blob = ctx.keyring().encrypt_text(key, own_key_context(instance_id))
    await _queue(
        ctx,
        instance_id,
        "configure",
        """UPDATE instances SET use_own_api_key = true, own_api_provider = $2,
                  own_api_key_enc = $3
           WHERE id = $1 AND deleted_at IS NULL""",
        provider,
        blob,
    )
    log.info("own API key set", extra={"instance": str(instance_id), "provider": provider})
    return json_response(
        {"id": row["id"], "use_own_api_key": True, "provider": provider, "queued": "configure"},
        status=202,
    )


async def remove_api_key(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = _parse_id(request)
    row = await _owned(ctx, require_user(request), instance_id)
    await _queue(
        ctx,
        instance_id,
        "configure",
        """UPDATE instances SET use_own_api_key = false, own_api_provider = NULL,
                  own_api_key_enc = NULL
           WHERE id = $1 AND deleted_at IS NULL""",
    )
    return json_response(
        {"id": row["id"], "use_own_api_key": False, "queued": "configure"}, status=202
    )
