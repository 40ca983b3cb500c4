"""A user's channel settings in a view: the instance's channel plugin, its stored settings with
the secrets decrypted (only while checking a change), and a change checked and stored with the
job that carries it to the server."""

from __future__ import annotations

import uuid
from typing import Any

from blitzclawd import plugins
from blitzclawd.channels import Channel, ChannelState, missing, seal, unseal
from blitzclawd.config import billing_minimum_micros
from blitzclawd.credentials import channel_secret_context
from blitzclawd.errors import ApiError
from blitzclawd.queries import instances as rows
from blitzclawd.services import instances as service


def channel_of(kind: str) -> Channel:
    channel = plugins.channels().get(kind)
    if channel is None:  # its plugin is no longer installed
        raise ApiError(409, "unknown_channel", f"the channel {kind!r} is not available")
    return channel


def config_object(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ApiError(
            422, "invalid_field", "channel_config must be an object", field="channel_config"
        )
    return raw


def require_complete(channel: Channel, state: ChannelState) -> None:
    lacking = missing(channel, state)
    if lacking:
        name = f"channel_config.{lacking[0]}"
        raise ApiError(422, "invalid_field", f"{name} is required for {channel.name}", field=name)


async def stored_state(ctx: Any, row: Any, channel: Channel) -> tuple[ChannelState, bytes | None]:
    """The stored settings, secrets decrypted (only while checking), and the sealed blob they
    came from (what a change must still find stored to apply)."""
    blob = await rows.channel_secrets(ctx.pool, uuid.UUID(str(row["id"])))
    secrets = unseal(ctx.keyring(), channel_secret_context(row["id"]), blob, channel)
    return ChannelState(row["channel_config"] or {}, secrets), blob


async def store_channel(
    ctx: Any, row: Any, raw: Any, *, require: bool, soul: Any = service.UNSET
) -> tuple[Channel, ChannelState, str]:
    """Check new channel settings against the stored ones and store them with what carries
    them to the server; (channel, new state, what was queued)."""
    channel = channel_of(row["channel_type"])
    current, blob = await stored_state(ctx, row, channel)
    state = await channel.verify(ctx.settings, config_object(raw), current)
    if require:
        require_complete(channel, state)
    instance_id = uuid.UUID(str(row["id"]))
    sealed = seal(ctx.keyring(), channel_secret_context(instance_id), state.secrets)
    queued = await service.configure(
        ctx.pool,
        ctx.actors,
        instance_id,
        soul=soul,
        channel=(state.public, sealed),
        complete=not missing(channel, state),
        # Made from these: a change stored meanwhile (a pairing, another tab) is not overwritten.
        expected=(row["channel_config"] or {}, blob),
        minimum_micros=billing_minimum_micros(ctx.settings),
    )
    return channel, state, queued
