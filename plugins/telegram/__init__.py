"""Telegram, the built-in channel plugin: a bot the user creates with @BotFather.

Registered through the ``blitzclawd`` entry-point group like any third-party plugin. Everything
the daemon knows of Telegram is here: the bot token checked with the Bot API (``bot.py``, aiogram
imported on first use), the ``channels.telegram`` block of openclaw.json, and who may talk to
the bot. With no allowlist the bot runs in OpenClaw's ``pairing`` policy: a stranger's first
message gets an 8-character code, which the owner approves from the dashboard (the core's
pairing routes run the release's own ``openclaw pairing approve``); the approved sender then
joins ``allow_from`` and, being the first, becomes the owner (``commands.ownerAllowFrom``), so
later configures keep them in.
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
from blitzclawd_plugins.telegram.bot import checked_bot, set_profile

NAME = "telegram"
BOT_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,128}$")
USER_ID = re.compile(r"^[0-9]{1,20}$")
MAX_ALLOW_FROM = 100
# Shown by GET (what Telegram says of the bot): accepted back and ignored, so a client can send
# what it read (Telegram, not the client, says which bot a token is).
_SHOWN = frozenset({"bot_id", "bot_username", "bot_name", "bot_link"})

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
        "Numeric Telegram user ids allowed to talk to your assistant (yours first). Leave it "
        "empty and approve yourself instead: message the bot, then approve the code it sends "
        "you in your dashboard.",
        kind="string_list",
        example="123456789",
    ),
)


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, field=f"channel_config.{name}")


def allow_from(raw: Any) -> list[str]:
    """Telegram numeric user ids, as a JSON list (a bare string is not a list of its digits)."""
    name = "channel_config.allow_from"
    if not isinstance(raw, list):
        raise _invalid("allow_from", f"{name} must be a list of numeric Telegram user ids")
    if len(raw) > MAX_ALLOW_FROM:
        raise _invalid("allow_from", f"{name} may hold at most {MAX_ALLOW_FROM} ids")
    ids: list[str] = []
    for item in raw:
        value = item.strip() if isinstance(item, str) else item
        if type(value) is int and value > 0:
            value = str(value)
        if not isinstance(value, str) or not USER_ID.fullmatch(value) or int(value) == 0:
            raise _invalid(
                "allow_from",
                f'{name} must be a list of numeric Telegram user ids, e.g. ["123456789"]',
            )
        if value not in ids:
            ids.append(value)
    return ids


def telegram_channel(*, bot_token: str, allow_from: list[str] | None) -> tuple[str, OpenClawBlock]:
    """``channels.telegram`` for a bot: an allowlist of numeric user ids (the first is the
    owner), else ``pairing`` (OpenClaw rejects ``allowlist`` with an empty list)."""
    if not isinstance(bot_token, str) or not BOT_TOKEN.fullmatch(bot_token):
        raise ValueError("bot_token: not a Telegram bot token (digits:rest)")
    ids: list[str] = []
    for raw in allow_from or []:
        value = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        if not USER_ID.fullmatch(value):
            raise ValueError(f"allow_from: {raw!r} is not a numeric Telegram user id")
        if value not in ids:
            ids.append(value)
    block: dict[str, Any] = {"enabled": True, "botToken": Secret(bot_token)}
    if ids:
        block.update(dmPolicy="allowlist", allowFrom=ids)
    else:
        block["dmPolicy"] = "pairing"
    return NAME, OpenClawBlock(block, owners=tuple(ids[:1]))


class TelegramChannel:
    name = NAME
    display_name = "Telegram"
    fields = FIELDS
    server_packages: tuple[str, ...] = ()  # built into OpenClaw
    session_dirs: tuple[str, ...] = ()  # nothing to link: the token is the whole credential

    async def verify(
        self, settings: Settings, config: dict[str, Any], current: ChannelState | None
    ) -> ChannelState:
        unknown = sorted(k for k in config if k not in ("bot_token", "allow_from", *_SHOWN))
        if unknown:
            name = f"channel_config.{unknown[0]}"[:200]
            raise ApiError(422, "invalid_field", f"{name} is not a telegram setting", field=name)
        public = dict(current.public) if current else {}
        secrets = dict(current.secrets) if current else {}
        if config.get("allow_from") is not None:
            public["allow_from"] = allow_from(config["allow_from"])
        public.setdefault("allow_from", [])
        token = config.get("bot_token")
        if token is not None:
            if not isinstance(token, str) or not BOT_TOKEN.fullmatch(token.strip()):
                raise _invalid(
                    "bot_token",
                    "channel_config.bot_token: not a Telegram bot token (digits:rest), copy it "
                    "again from @BotFather",
                )
            token = token.strip()
            if token != secrets.get("bot_token") or "bot_username" not in public:
                bot = await checked_bot(settings.telegram, token)
                public.update(bot.public())
            secrets["bot_token"] = token
        return ChannelState(public, secrets)

    def openclaw(self, state: ChannelState) -> OpenClawBlock:
        return telegram_channel(
            bot_token=state.secrets["bot_token"], allow_from=state.public.get("allow_from")
        )[1]

    async def activated(self, settings: Settings, state: ChannelState, about: str) -> None:
        """The bot's profile follows the persona (what a user reads before the first message)."""
        await set_profile(
            settings.telegram,
            state.secrets["bot_token"],
            description=f"{about} Send a message to start.",
            short_description=about,
        )

    def paired(self, state: ChannelState, sender_id: str) -> ChannelState | None:
        ids = list(state.public.get("allow_from") or [])
        if not USER_ID.fullmatch(sender_id) or sender_id in ids or len(ids) >= MAX_ALLOW_FROM:
            return None
        return ChannelState({**state.public, "allow_from": [*ids, sender_id]}, state.secrets)

    def routes(self) -> Sequence[ChannelRoute]:
        return (
            ChannelRoute(
                "GET",
                "bot",
                _bot,
                active_only=False,
                summary="Telegram: the bot this assistant answers as, and who may talk to it",
                answer={
                    "type": "object",
                    "required": ["bot", "allow_from"],
                    "properties": {
                        "bot": {"type": "object"},
                        "allow_from": {"type": "array", "items": {"type": "string"}},
                    },
                },
            ),
        )

    def setup_text(self, public: dict[str, Any]) -> str:
        link = public.get("bot_link") or "your bot in Telegram"
        if not public.get("bot_username"):
            return (
                "Connect your Telegram bot: create one with @BotFather (/newbot) and send its "
                "token to your assistant's channel settings."
            )
        if public.get("allow_from"):
            return f"Open {link} in Telegram and send your assistant a message."
        return (
            f"Open {link} in Telegram and send it a message. It answers with a pairing code: "
            "approve that code in your dashboard (Pairing requests) and your assistant is yours."
        )

    def label(self, public: dict[str, Any]) -> str | None:
        bot = public.get("bot_username")
        return f"@{bot}" if bot else None


async def _bot(call: InstanceCall) -> dict[str, Any]:
    """The bot this assistant answers as, and who may talk to it."""
    public = call.public
    return {
        "bot": {k: public.get(k) for k in sorted(_SHOWN)},
        "allow_from": public.get("allow_from", []),
    }


@hookimpl
def register_channels() -> list[TelegramChannel]:
    return [TelegramChannel()]
