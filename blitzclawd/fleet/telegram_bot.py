"""Checking a user's Telegram bot token with the Bot API (`getMe`), through aiogram.

A pasted token can have the right shape and still be wrong (a typo, a revoked token, someone
else's): an instance set up with it would deploy and then never answer. So the token is checked
with Telegram before it is stored, and the bot it belongs to is what the user is shown.

aiogram is imported on first use, not with the daemon: importing it costs ~155 MB of memory,
which a daemon that never checks a token should not pay.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BotIdentity:
    id: int
    username: str
    first_name: str

    @property
    def link(self) -> str:
        """Where the user starts chatting with their assistant."""
        return f"https://t.me/{self.username}"


class TokenRefused(Exception):
    """Telegram says this is no bot's token (the reason is fit to show the user)."""


class TelegramUnavailable(Exception):
    """Telegram could not be asked (network, timeout, its own error): try again later."""


async def bot_identity(token: str, api_url: str, *, seconds: float) -> BotIdentity:
    """The bot `token` belongs to; asking Telegram takes at most `seconds`."""
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
