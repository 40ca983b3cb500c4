"""Telegram, the built-in channel plugin: a bot the user creates with @BotFather.

Registered through the ``blitzclawd`` entry-point group like any third-party plugin. (The bot
token check and the OpenClaw block still live in blitzclawd.fleet; moving them here is the next
step of issue 13.)
"""

from __future__ import annotations

from typing import Any

from blitzclawd.channels import ChannelField
from blitzclawd.config import Settings
from blitzclawd.errors import ApiError
from blitzclawd.fleet.openclaw_config import telegram_channel
from blitzclawd.fleet.telegram_bot import checked_bot
from blitzclawd.hookspecs import hookimpl

FIELDS = (
    ChannelField(
        "bot_token",
        "Bot token",
        "The token @BotFather gave you when you created your bot (/newbot).",
        secret=True,
        required=True,
        example="123456789:AAHk0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123",
    ),
    ChannelField(
        "allow_from",
        "Who may talk to it",
        "Numeric Telegram user ids allowed to talk to your assistant (yours first).",
        kind="string_list",
        example="123456789",
    ),
)


class TelegramChannel:
    name = "telegram"
    display_name = "Telegram"
    fields = FIELDS

    async def verify(self, settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
        token = config.get("bot_token")
        if not isinstance(token, str) or not token.strip():
            raise ApiError(
                422, "invalid_field", "bot_token is required", field="channel_config.bot_token"
            )
        try:
            block = telegram_channel(bot_token=token.strip(), allow_from=config.get("allow_from"))
        except ValueError as exc:
            name = str(exc).partition(":")[0]
            raise ApiError(
                422, "invalid_field", f"channel_config.{exc}", field=f"channel_config.{name}"
            ) from None
        bot = await checked_bot(settings.telegram, token.strip())
        return {**bot.public(), "allow_from": block["telegram"].get("allowFrom", [])}

    def setup_text(self, public: dict[str, Any]) -> str:
        link = public.get("bot_link") or "your bot in Telegram"
        return f"Open {link} in Telegram and send your assistant a message."


@hookimpl
def register_channels() -> list[TelegramChannel]:
    return [TelegramChannel()]
