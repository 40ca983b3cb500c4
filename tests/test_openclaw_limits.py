"""The pinned OpenClaw release at the limits (issue 11): told in the chat, never hung, never
locked out.

Each test runs real `openclaw agent --local` turns, with the config the provisioner generates,
against a real daemon (the fake Anthropic behind its proxy; fake Clerk and Creem in front of its
API). One instance home is kept across a test's turns, as on a server, so whatever OpenClaw
records about its provider (cooldowns, billing failures) carries over from turn to turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from openclaw_tool import OpenClaw, ensure_openclaw, write_instance

from blitzclawd.fleet.openclaw_config import (
    ProxyTarget,
    build_config,
    render_config,
    split_secrets,
)
from blitzclawd.fleet.personas import PERSONAS
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario
from blitzclawd_plugins.telegram import telegram_channel

SLOW = pytest.mark.timeout(900)
MODEL = "claude-sonnet-4-6"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TURN_TIMEOUT = 180.0  # a hung turn fails the test instead of sleeping for an hour


@pytest.fixture(scope="module")
def openclaw() -> OpenClaw:
    return ensure_openclaw()


class Assistant:
    """One instance's OpenClaw home, talked to one turn at a time."""

    def __init__(self, openclaw: OpenClaw, home: Path) -> None:
        self.openclaw = openclaw
        self.home = home

    async def turn(self, message: str) -> tuple[str, float, dict[str, Any]]:
        """(what the user reads, seconds the turn took, OpenClaw's report)."""
        started = time.monotonic()
        done = await asyncio.to_thread(
            self.openclaw.run,
            self.home,
            "agent",
            "--local",
            "--session-id",
            "chat",
            "-m",
            message,
            "--json",
            timeout=TURN_TIMEOUT,
        )
        took = time.monotonic() - started
        start = done.stdout.find("{")
        assert start >= 0, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
        report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
        text = "\n".join(p.get("text") or "" for p in report.get("payloads") or [])
        return text, took, report

    async def unusable_profiles(self) -> list[Any]:
        done = await asyncio.to_thread(
            self.openclaw.run, self.home, "models", "status", "--json", timeout=120
        )
        start = done.stdout.find("{")
        status, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
        return status["auth"].get("unusableProfiles") or []


def assistant(openclaw: OpenClaw, proxy_url: str, inst: Any, home: Path) -> Assistant:
    target = ProxyTarget(
        base_url=proxy_url,
        api="anthropic-messages",
        instance_id=inst.id,
        secret=inst.secret,
        models=[(MODEL, MODEL)],
        primary=MODEL,
    )
    channel = telegram_channel(bot_token=BOT_TOKEN, allow_from=None)
    config, secrets = split_secrets(
        build_config(gateway_token="gw_" + uuid.uuid4().hex, channel=channel, proxy=target)
    )
    write_instance(home, render_config(config), render_config(secrets), PERSONAS["dev"])
    return Assistant(openclaw, home)


@contextmanager
def notices_told() -> Iterator[list[str]]:
    """The reasons of the notices the proxy answers with meanwhile, one per request it got
    (its "answered with a notice" log line): a client retrying would show up as more."""
    told: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "answered with a notice":
                told.append(record.__dict__["reason"])

    logger, handler = logging.getLogger("blitzclawd.proxy"), Seen(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield told
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def until(check: Any, what: str, deadline: float = 15.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


@SLOW
async def test_at_the_hourly_limit_the_turn_ends_at_once_with_when_it_resets(
    openclaw: OpenClaw, api_env: Any, tmp_path: Path
) -> None:
    env = api_env
    user = await seed.create_user(env.pool)
    await seed.credit(env.pool, user, 50_000_000)
    inst = await seed.create_instance(env.pool, user, msgs_per_hour=1)
    bot = assistant(openclaw, env.proxy, inst, tmp_path)

    answered, _, report = await bot.turn("Say hi")
    assert report["meta"]["executionTrace"]["winnerProvider"] == "blitzclaw", report
    assert answered and "limit" not in answered
    forwarded = env.llm.received

    with notices_told() as notices:
        told, took, _ = await bot.turn("Are you there?")
    assert "this hour's limit of 1 messages" in told, told
    assert "UTC)" in told  # when it ends
    assert env.llm.received == forwarded  # nothing forwarded, nothing billed
    # The turn ends on its first answer: one request, no retry, so no retry delay. Before,
    # OpenClaw slept the 429's retry-after (up to an hour); TURN_TIMEOUT fails such a turn.
    assert notices == ["messages_per_hour"], notices
    print(f"\nturn told the hourly limit: {took:.1f} s")
    assert await bot.unusable_profiles() == []


@SLOW
async def test_over_the_daily_token_limit_the_user_is_told_when_it_resets(
    openclaw: OpenClaw, api_env: Any, tmp_path: Path
) -> None:
    env = api_env
    user = await seed.create_user(env.pool)
    await seed.credit(env.pool, user, 50_000_000)
    inst = await seed.create_instance(env.pool, user, tokens_per_day=5_000)
    bot = assistant(openclaw, env.proxy, inst, tmp_path)
    env.llm.set_next(Scenario(input_tokens=6_000, output_tokens=20))
    answered, _, _ = await bot.turn("Say hi")
    assert answered and "allowance" not in answered

    async def settled() -> bool:
        proxy = env.daemon.supervisor.child("proxy")
        return proxy.idle and not await env.pool.fetchval("SELECT count(*) FROM reservations")

    await until(settled, "the first turn is settled")
    with notices_told() as notices:
        told, _, _ = await bot.turn("And now?")
    assert notices == ["tokens_per_day"], notices  # one request, no retry
    assert "today's allowance of 5,000 tokens" in told and "midnight UTC" in told, told
    assert await bot.unusable_profiles() == []


@SLOW
async def test_a_paused_user_is_told_to_top_up_and_the_turn_after_the_top_up_is_answered(
    openclaw: OpenClaw, api_env: Any, tmp_path: Path
) -> None:
    env = api_env
    status, _ = await env.clerk.deliver(
        env.api + "/api/webhooks/clerk",
        "user.created",
        env.clerk.user_created("user_paula", "paula@example.test"),
    )
    assert status == 200
    user = str(await env.pool.fetchval("SELECT id FROM users WHERE clerk_user_id = 'user_paula'"))
    await seed.credit(env.pool, user, 13_000_000)  # $3 above the minimum
    inst = await seed.create_instance(env.pool, user)
    bot = assistant(openclaw, env.proxy, inst, tmp_path)

    # A turn the upstream bills far beyond what its body foresaw (1M input tokens, $4.50 with
    # our markup): the balance goes under the minimum when it settles; the instance is paused.
    env.llm.set_next(Scenario(input_tokens=1_000_000, output_tokens=20))
    answered, _, _ = await bot.turn("Summarise my week")
    assert answered

    async def paused() -> bool:
        got = await env.pool.fetchval(
            "SELECT status FROM instances WHERE id = $1", uuid.UUID(inst.id)
        )
        return got == "paused"

    await until(paused, "the instance is paused")
    forwarded = env.llm.received
    with notices_told() as notices:
        told, _, _ = await bot.turn("Hello?")
    # Every request of the turn is told (after the 1M-token turn OpenClaw first compacts its
    # context, so it makes more than one); none reaches the upstream or is billed.
    assert notices and set(notices) == {"paused"}, notices
    assert env.llm.received == forwarded
    assert "balance has run out" in told and "/dashboard/topup" in told, told

    # The top-up, as the user makes it: a Creem checkout, paid, its signed webhook.
    status, topup = await env.call(
        "POST",
        "/api/billing/topup",
        headers=env.session_headers("user_paula"),
        json={"amount_cents": 2000},
    )
    assert status == 201, topup
    _, raw = env.creem.complete_checkout(topup["checkout_id"])
    paid_at = time.monotonic()
    async with env.http.post(
        env.api + "/api/billing/webhook",
        data=raw,
        headers={"creem-signature": env.creem.sign(raw), "content-type": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()

    async def resumed() -> bool:
        return not await paused()

    await until(resumed, "the top-up resumes the instance")
    forwarded = env.llm.received
    credited_at = time.monotonic()
    answered, took, report = await bot.turn("Thanks, go on")
    assert env.llm.received == forwarded + 1, report  # answered by the model, at once
    assert "balance" not in answered and answered, answered
    assert time.monotonic() - credited_at < TURN_TIMEOUT
    # README's figure (`pytest -s`): from the signed webhook to the answered turn, and the part
    # of it that is OpenClaw's own turn (process start, agent, model call).
    print(f"\ncredit to answer: {time.monotonic() - paid_at:.1f} s; turn {took:.1f} s")
    assert await bot.unusable_profiles() == []
