"""Checking a user's Telegram bot token with the Bot API (`getMe`), through aiogram.

A pasted token can have the right shape and still be wrong (a typo, a revoked token, someone
else's): an instance set up with it would deploy and then never answer. So the token is checked
with Telegram before it is stored, and the bot it belongs to is what the user is shown.

aiogram is imported on first use, not with the daemon: importing it costs ~155 MB of memory,
which a daemon that never checks a token should not pay.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Any

from blitzclawd.config import TelegramSettings
from blitzclawd.errors import ApiError

log = logging.getLogger("blitzclawd.instances")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    id: int
    username: str
    first_name: str

    @property
    def link(self) -> str:
        """Where the user starts chatting with their assistant."""
        return f"https://t.me/{self.username}"

    def public(self) -> dict[str, Any]:
        """What the user is shown of the bot (nothing secret)."""
        return {
            "bot_id": self.id,
            "bot_username": self.username,
            "bot_name": self.first_name,
            "bot_link": self.link,
        }


class TokenRefused(Exception):
    """Telegram says this is no bot's token (the reason is fit to show the user)."""


class TelegramUnavailable(Exception):
    """Telegram could not be asked (network, timeout, its own error): try again later."""


async def _import_aiogram() -> None:
    """aiogram's first import takes a second or two of CPU: in a thread, so the event loop (the
    proxy's requests among others) keeps running meanwhile."""
    if "aiogram.client.session.aiohttp" not in sys.modules:
        await asyncio.to_thread(importlib.import_module, "aiogram.client.session.aiohttp")


async def bot_identity(token: str, api_url: str, *, seconds: float) -> BotIdentity:
    """The bot `token` belongs to; asking Telegram takes at most `seconds`."""
    await _import_aiogram()
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.exceptions import (
        TelegramAPIError,
        TelegramNetworkError,
        TelegramUnauthorizedError,
    )
    from aiogram.utils.token import TokenValidationError

    try:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_url.rstrip("/")))
        session.timeout = seconds
        bot = Bot(token, session=session)
    except TokenValidationError:
        raise TokenRefused("not a Telegram bot token (digits:rest)") from None
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        raise TokenRefused(
            "Telegram does not know this bot token: copy it again from @BotFather"
        ) from None
    except (TelegramNetworkError, TelegramAPIError, TimeoutError, OSError) as exc:
        raise TelegramUnavailable(type(exc).__name__) from None
    finally:
        await session.close()
    if not me.is_bot or not me.username:
        raise TokenRefused("this token does not belong to a bot")
    return BotIdentity(me.id, me.username, me.first_name)


async def set_profile(
    settings: TelegramSettings, token: str, *, description: str, short_description: str
) -> None:
    """The bot's description (shown before a chat starts) and short description (its profile
    and link previews): Telegram allows 512 and 120 characters. Its name stays the user's
    choice in @BotFather, and OpenClaw registers the command menu itself (setMyCommands at
    gateway start), so neither is touched here."""
    await _import_aiogram()
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_url.rstrip("/")))
    session.timeout = settings.timeout
    bot = Bot(token, session=session)
    try:
        await bot.set_my_description(description=description[:512])
        await bot.set_my_short_description(short_description=short_description[:120])
    finally:
        await session.close()


async def checked_bot(settings: TelegramSettings, token: str) -> BotIdentity:
    """The bot the token belongs to, as Telegram says (getMe); else the API's answer: 422 on
    channel_config.bot_token when Telegram refuses it, 503 when Telegram cannot be asked."""
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
