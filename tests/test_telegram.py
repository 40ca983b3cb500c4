"""A user's Telegram bot token is checked with Telegram (getMe, through aiogram) before anything
is stored: against the fake Bot API (blitzclawd.testing.fake_telegram), over real HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from test_fleet import BOT_TOKEN, fleet_env

from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_telegram import FakeTelegram
from blitzclawd_plugins.telegram.bot import (
    TelegramUnavailable,
    TokenRefused,
    bot_identity,
)

WELL_SHAPED_BUT_UNKNOWN = "987654321:AAE" + "x" * 32


async def test_bot_identity_asks_telegram_and_tells_refusal_from_unavailability() -> None:
    async with FakeTelegram() as telegram:
        token = telegram.add_bot("myai_assistant_bot", "My AI Assistant")
        bot = await bot_identity(token, telegram.base_url, seconds=5)
        assert (bot.username, bot.first_name) == ("myai_assistant_bot", "My AI Assistant")
        assert bot.id == int(token.split(":")[0])
        assert bot.link == "https://t.me/myai_assistant_bot"
        assert telegram.calls[-1] == ("getMe", token)
        with pytest.raises(TokenRefused, match="@BotFather"):
            await bot_identity(WELL_SHAPED_BUT_UNKNOWN, telegram.base_url, seconds=5)
        asked = len(telegram.calls)
        with pytest.raises(TokenRefused, match="digits:rest"):
            await bot_identity("not a token", telegram.base_url, seconds=5)
        assert len(telegram.calls) == asked  # refused before anything was sent
    with pytest.raises(TelegramUnavailable):
        await bot_identity(token, f"http://127.0.0.1:{free_port()}", seconds=5)


async def test_a_wrong_token_is_refused_before_anything_is_stored(
    database: str, tmp_path: Path
) -> None:
    async with fleet_env(database, tmp_path, min_available=0) as env:
        alice = await env.user()
        body = {"channel_type": "telegram", "persona_template": "assistant"}
        status, err = await env.call(
            "POST",
            "/api/instances",
            alice,
            {**body, "channel_config": {"bot_token": WELL_SHAPED_BUT_UNKNOWN}},
        )
        assert status == 422, err
        assert err["error"]["field"] == "channel_config.bot_token"
        assert "BotFather" in err["error"]["message"]
        assert WELL_SHAPED_BUT_UNKNOWN not in str(err)  # a token is never echoed back
        assert not await env.pool.fetchval("SELECT count(*) FROM instances")
        assert not await env.pool.fetchval("SELECT count(*) FROM instance_jobs")

        # The right token: the instance shows which bot it is and where to chat with it.
        status, created = await env.call(
            "POST", "/api/instances", alice, {**body, "channel_config": {"bot_token": BOT_TOKEN}}
        )
        assert status == 201, created
        config = created["channel_config"]
        assert config["bot_username"] == "alice_assistant_bot"
        assert config["bot_link"] == "https://t.me/alice_assistant_bot"
        assert config["bot_id"] == int(BOT_TOKEN.split(":")[0])
        assert BOT_TOKEN not in str(created)


async def test_telegram_unreachable_is_a_503_that_changes_nothing(
    database: str, tmp_path: Path
) -> None:
    down = {"telegram": {"api_url": f"http://127.0.0.1:{free_port()}", "timeout": 2.0}}
    async with fleet_env(database, tmp_path, min_available=0, sections=down) as env:
        alice = await env.user()
        status, err = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN},
            },
        )
        assert status == 503 and err["error"]["code"] == "telegram_unavailable", err
        assert not await env.pool.fetchval("SELECT count(*) FROM instances")


async def test_validate_and_connect_a_bot(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, min_available=0) as env:
        alice = await env.user()
        validate = "/api/channels/telegram/validate"
        status, body = await env.call(
            "POST", validate, alice, {"channel_config": {"bot_token": BOT_TOKEN}}
        )
        assert status == 200 and body["channel_config"]["bot_username"] == "alice_assistant_bot"
        status, body = await env.call(
            "POST", validate, alice, {"channel_config": {"bot_token": WELL_SHAPED_BUT_UNKNOWN}}
        )
        assert status == 422 and body["error"]["field"] == "channel_config.bot_token"

        status, created = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
            },
        )
        assert status == 201
        iid = created["id"]
        before = await env.instance(iid)

        # A wrong token changes nothing; a new bot is checked, stored and configured.
        connect = f"/api/instances/{iid}/channel"
        status, body = await env.call(
            "POST", connect, alice, {"channel_config": {"bot_token": WELL_SHAPED_BUT_UNKNOWN}}
        )
        assert status == 422
        assert (await env.instance(iid))["channel_secret_enc"] == before["channel_secret_enc"]
        second = env.telegram.add_bot("alice_second_bot", "Second")
        status, body = await env.call(
            "POST", connect, alice, {"channel_config": {"bot_token": second}}
        )
        assert status == 202 and body["queued"] == "configure", body
        assert body["channel_config"]["bot_link"] == "https://t.me/alice_second_bot"
        row = await env.instance(iid)
        assert row["channel_secret_enc"] != before["channel_secret_enc"]
        config = row["channel_config"]
        assert (config["bot_username"], config["allow_from"]) == ("alice_second_bot", ["42"])
        assert await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 AND kind = 'configure'",
            uuid.UUID(iid),
        )

        # Someone else's instance is not there; a WhatsApp instance has no bot to connect.
        mallory = await env.user()
        status, _ = await env.call(
            "POST", connect, mallory, {"channel_config": {"bot_token": second}}
        )
        assert status == 404
        status, wa = await env.call(
            "POST",
            "/api/instances",
            alice,
            {"channel_type": "whatsapp", "persona_template": "assistant"},
        )
        assert status == 201
        status, body = await env.call(
            "POST",
            f"/api/instances/{wa['id']}/channel",
            alice,
            {"channel_config": {"bot_token": second}},
        )
        assert status == 422 and body["error"]["field"] == "channel_config.bot_token", body
        status, body = await env.call("GET", f"/api/instances/{wa['id']}/telegram/bot", alice)
        assert status == 409 and body["error"]["code"] == "wrong_channel"
