"""Discord for blitzclawd, written as a third party would: only the public contract
(blitzclawd.hookspecs, blitzclawd.channels), its own entry point, nothing in the core.

OpenClaw's Discord channel is an external OpenClaw plugin (``@openclaw/discord``, pinned to
the release): pool servers install it, the config trusts it. The bot token is the one secret;
the block is what the pinned release accepts (``channels.discord.{enabled, token, dmPolicy}``).
Discord's API is not reachable from the tests, so the token's shape is all that is checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from blitzclawd.channels import (
    ChannelField,
    ChannelRoute,
    ChannelState,
    InstanceCall,
    OpenClawBlock,
    Secret,
)
from blitzclawd.config import Settings
from blitzclawd.errors import ApiError
from blitzclawd.hookspecs import hookimpl

OPENCLAW_VERSION = "2026.9.6"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,40}\.[A-Za-z0-9_-]{4,10}\.[A-Za-z0-9_-]{20,60}$")


class DiscordChannel:
    name = "discord"
    display_name = "Discord"
    fields = (
        ChannelField(
            "bot_token",
            "Bot token",
            "Your Discord application's bot token (Developer Portal > Bot > Reset Token).",
            secret=True,
            required=True,
        ),
    )
    server_packages = (f"@openclaw/discord@{OPENCLAW_VERSION}",)
    session_dirs: tuple[str, ...] = ()

    async def verify(
        self, settings: Settings, config: dict[str, Any], current: ChannelState | None
    ) -> ChannelState:
        unknown = sorted(k for k in config if k != "bot_token")
        if unknown:
            name = f"channel_config.{unknown[0]}"[:200]
            raise ApiError(422, "invalid_field", f"{name} is not a discord setting", field=name)
        secrets = dict(current.secrets) if current else {}
        token = config.get("bot_token")
        if token is not None:
            if not isinstance(token, str) or not TOKEN.fullmatch(token):
                raise ApiError(
                    422,
                    "invalid_field",
                    "channel_config.bot_token: not a Discord bot token",
                    field="channel_config.bot_token",
                )
            secrets["bot_token"] = token
        return ChannelState(dict(current.public) if current else {}, secrets)

    def openclaw(self, state: ChannelState) -> OpenClawBlock:
        block = {
            "enabled": True,
            "token": Secret(state.secrets["bot_token"]),
            "dmPolicy": "pairing",
        }
        return OpenClawBlock(block, trust_plugin=True)

    async def activated(self, settings: Settings, state: ChannelState, about: str) -> None:
        return None

    def paired(self, state: ChannelState, sender_id: str) -> ChannelState | None:
        return None

    def routes(self) -> Sequence[ChannelRoute]:
        return (ChannelRoute("GET", "invite", _invite, active_only=False),)

    def setup_text(self, public: dict[str, Any]) -> str:
        return "Invite your bot to a server, then send it a direct message."

    def label(self, public: dict[str, Any]) -> str | None:
        return None


async def _invite(call: InstanceCall) -> dict[str, Any]:
    return {"instance_id": call.instance_id, "status": call.status, "next": "invite the bot"}


@hookimpl
def register_channels() -> list[DiscordChannel]:
    return [DiscordChannel()]
