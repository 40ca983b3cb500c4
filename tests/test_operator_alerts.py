"""Operators hear of users' trouble (issue 14), with a real daemon, real proxied requests through
the fake upstream and the fake Resend: a usage spike emails each address in
alerts.operator_emails once (instance, owner, spend against baseline) besides the owner; a
balance that runs out mid-conversation raises a live `balance_paused` event and one email per
operator, once per pause — not per request, nor for a repeated notice — and again for the next
pause after a top-up."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from conftest import ApiEnv, notice_of, running_api_env
from test_events import sse, until_event
from test_fleet import until

from blitzclawd.metering.spikes import check_spikes
from blitzclawd.notify.templates import cost_usd
from blitzclawd.runtime.messages import BalanceDepleted
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

OPERATORS = ["oncall@blitzclaw.test", "finance@blitzclaw.test"]
SECTIONS = {"alerts": {"operator_emails": OPERATORS}}


async def ask(env: ApiEnv, inst: seed.SeededInstance) -> str | None:
    """One proxied message, settled before this returns; the notice it was refused with."""
    async with env.http.post(
        env.proxy + "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={**inst.headers, "anthropic-version": "2023-06-01"},
    ) as resp:
        assert resp.status == 200
        await resp.read()
        notice = notice_of(resp)

    async def settled() -> bool:
        proxy = env.daemon.supervisor.child("proxy")
        return proxy.idle and not await env.pool.fetchval("SELECT count(*) FROM reservations")

    await until(settled)
    return notice


def mail_to(env: ApiEnv, address: str, subject_word: str) -> list[dict[str, Any]]:
    return [m for m in env.resend.sent if address in m["to"] and subject_word in m["subject"]]


async def all_sent(env: ApiEnv, kind: str, count: int) -> bool:
    rows = await env.pool.fetch("SELECT status FROM notifications WHERE kind = $1", kind)
    return len(rows) == count and all(r["status"] == "sent" for r in rows)


async def test_a_spike_emails_every_operator_once(database: str) -> None:
    async with running_api_env(database, SECTIONS) as env:
        owner = await seed.create_user(env.pool, email="ada@example.test")
        await seed.credit(env.pool, owner, 50_000_000)
        inst = await seed.create_instance(env.pool, owner)
        for _ in range(2):
            assert await ask(env, inst) is None
        spent = await env.pool.fetchval("SELECT sum(cost_micros)::bigint FROM usage_logs")
        settings = env.daemon.settings
        settings = dataclasses.replace(
            settings, alerts=dataclasses.replace(settings.alerts, spike_floor_usd=0.000001)
        )
        tell = env.daemon.context.actors.notifier.tell
        assert await check_spikes(env.pool, settings, tell) == 1
        assert await check_spikes(env.pool, settings, tell) == 0  # the same window: nothing

        await until(lambda: all_sent(env, "operator_usage_spike", 2))
        await until(lambda: all_sent(env, "usage_spike", 1))
        assert len(mail_to(env, "ada@example.test", "Unusual spending")) == 1
        for address in OPERATORS:
            (mail,) = mail_to(env, address, "Operator alert")
            assert inst.id in mail["subject"] and inst.id in mail["text"]
            assert f"user {owner} (ada@example.test)" in mail["text"]
            assert f"{cost_usd(spent)} in the last hour" in mail["text"]
            assert "no spending before" in mail["text"] and "still running" in mail["text"]
        told = [m for m in env.resend.sent if "Operator alert" in m["subject"]]
        assert sorted(a for m in told for a in m["to"]) == sorted(OPERATORS)  # not the owner


async def test_a_balance_that_runs_out_alerts_operators_once_per_pause(database: str) -> None:
    async with running_api_env(database, SECTIONS) as env:
        admin = {"Authorization": f"Bearer {env.admin_key}"}
        events = await env.http.get(env.api + "/api/admin/events", headers=admin)
        stream = sse(events)
        owner = await seed.create_user(env.pool, email="grace@example.test")
        # $0.50 above the $10 minimum; each request below costs ~$0.45 (100k prompt tokens, far
        # more than admission foresees from the tiny body): the second one runs it out.
        await seed.credit(env.pool, owner, 10_500_000)
        inst = await seed.create_instance(env.pool, owner)
        env.llm.scenario = Scenario(input_tokens=100_000, output_tokens=10)

        async def run_out() -> int:
            """Requests until one is refused for the pause; how many were answered."""
            for answered in range(10):
                if await ask(env, inst) is not None:
                    return answered
            raise AssertionError("the balance never ran out")

        assert await run_out() == 2
        seen: list[dict] = []
        first = await until_event(
            stream,
            lambda e: e["event"] == "balance_paused" and e["data"]["user_id"] == owner,
            seen,
        )
        assert first["data"]["paused_instances"] == 1 and first["data"]["balance_micros"] < 10**7
        await until(lambda: all_sent(env, "operator_balance_paused", 2))
        for address in OPERATORS:
            (mail,) = mail_to(env, address, "ran out of balance")
            assert f"user {owner} (grace@example.test)" in mail["text"]
            assert "1 instance was paused" in mail["text"]

        # More requests are refused without a settlement; the same pause told again (as another
        # daemon's billing could) is recorded once: no second alert, no second email.
        assert await ask(env, inst) == "paused"
        balance = await env.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(owner)
        )
        notifier = env.daemon.context.actors.notifier
        await notifier.ask(BalanceDepleted(owner, balance, 1), timeout=10)
        assert await env.pool.fetchval("SELECT count(*) FROM balance_alerts") == 1
        assert await all_sent(env, "operator_balance_paused", 2)

        # A top-up resumes the instance; the next time it runs out is a new pause, told again.
        await seed.credit(env.pool, owner, 1_000_000)
        assert await run_out() == 2
        second = await until_event(
            stream,
            lambda e: e["event"] == "balance_paused" and e["data"]["user_id"] == owner,
            seen,
        )
        assert second["id"] > first["id"]
        await until(lambda: all_sent(env, "operator_balance_paused", 4))
        assert await env.pool.fetchval("SELECT count(*) FROM balance_alerts") == 2
        for address in OPERATORS:
            assert len(mail_to(env, address, "ran out of balance")) == 2
        await stream.aclose()
        events.close()
