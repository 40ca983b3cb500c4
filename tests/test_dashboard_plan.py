"""The base plan in a real headless Chromium: the dashboard's offer, Subscribe → the fake Creem
checkout page → back on the dashboard, which waits for the webhooks and shows the plan; settings'
"Cancel at period end" (confirmed) → "ends on <date>"."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from browser import chromium
from conftest import running_api_env
from test_dashboard import _shots, _sign_up

from blitzclawd.testing.daemon_process import free_port


@asynccontextmanager
async def plan_env(database: str) -> AsyncIterator[Any]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    sections = {
        "api": {"port": port},
        "auth": {"allowed_origins": [origin]},
        "creem": {"subscription_success_url": origin + "/dashboard?subscribed=1"},
    }
    async with running_api_env(database, sections) as env:
        env.creem.local_checkout_urls = True
        env.creem.webhook_url = origin + "/api/billing/webhook"
        yield env


async def test_subscribe_see_the_plan_and_cancel(database: str) -> None:
    async with plan_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "plan@example.test")
        offer = await page.inner_text("#plan-offer")
        assert offer == "Base plan: $20/month, $10 of usage included"
        await page.click("#subscribe")
        await page.wait_for_selector("text=Fake Creem checkout", timeout=15_000)
        assert "2000 cents" in await page.content()
        await page.click("button:has-text('Pay now')")
        # Back on the dashboard, which (if the webhooks are still on their way) waits for them,
        # then shows the plan.
        await page.wait_for_selector("#plan-status", timeout=30_000)
        assert page.url.startswith(env.api + "/dashboard")
        sub = next(iter(env.creem.subscriptions.values()))
        renews = sub["current_period_end_date"][:10]
        # Three webhooks (checkout.completed, subscription.active, subscription.paid): the
        # period's end and its credit may land just after the page first shows the plan.
        deadline = time.monotonic() + 15
        while await page.inner_text(
            "#available"
        ) != "$10.00" or f"Renews on {renews}" not in await page.inner_text("#plan-status"):
            assert time.monotonic() < deadline, await page.inner_text("#plan")
            await page.reload()
        await _shots(page, "dashboard-plan")

        await page.goto(env.api + "/settings")
        assert f"renews on {renews}" in await page.inner_text("#plan-status")
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", accept)
        await page.click("#cancel-plan")
        await page.wait_for_selector(f"#plan-status:has-text('ends on {renews}')")
        assert dialogs and "Cancel the base plan?" in dialogs[0]
        assert await page.is_hidden("#cancel-plan")
        assert sub["status"] == "scheduled_cancel"
        await _shots(page, "settings-plan-cancelled")
        # After a reload the page says the same; the dashboard too.
        await page.reload()
        assert f"ends on {renews}" in await page.inner_text("#plan-status")
        assert await page.query_selector("#cancel-plan") is None
        await page.goto(env.api + "/dashboard")
        assert f"Ends on {renews}" in await page.inner_text("#plan-status")
        user = await env.pool.fetchval("SELECT id FROM users WHERE email = 'plan@example.test'")
        row = await env.pool.fetchrow(
            "SELECT status, current_period_end FROM subscriptions WHERE user_id = $1",
            uuid.UUID(str(user)),
        )
        assert row["status"] == "scheduled_cancel"
        assert row["current_period_end"] == dt.datetime.fromisoformat(
            sub["current_period_end_date"]
        )


async def test_the_dashboard_waits_for_the_subscriptions_webhook(database: str) -> None:
    """Back from the checkout before Creem's webhook: the page says it is being confirmed, and
    shows the plan once the webhook arrived, without a reload by hand."""
    async with plan_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "late@example.test")
        hook, env.creem.webhook_url = env.creem.webhook_url, ""  # held back: delivered below
        await page.click("#subscribe")
        await page.wait_for_selector("text=Fake Creem checkout", timeout=15_000)
        await page.click("button:has-text('Pay now')")
        await page.wait_for_selector("#plan-pending", timeout=15_000)
        assert "being confirmed" in await page.inner_text("#plan-pending")
        sub = next(iter(env.creem.subscriptions.values()))
        assert await env.creem.deliver(hook, env.creem.event("subscription.paid", sub)) == [200]
        await page.wait_for_selector("#plan-status", timeout=15_000)
        assert page.url == env.api + "/dashboard"
        assert "Renews on" in await page.inner_text("#plan-status")
