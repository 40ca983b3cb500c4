"""The spec's whole journey through the pages only (issue 15), in a real headless Chromium, against
a real daemon with the fakes (Clerk, Creem, Telegram, Hetzner with pool servers over real SSH,
the LLM upstream): sign up → top up $25 (the fake Creem's checkout paid, its webhook delivered) →
the balance shown → a Telegram assistant with a wrong token (said under its field), then the
right one → deploy progress → active → the owner approved from the page → a request proxied for
the instance shows in usage, and the balance drops by its exact cost → SOUL edited → deleted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from browser import chromium
from test_dashboard import _shots, _sign_up
from test_fleet import BOT_TOKEN, available, fleet_env, until

from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_clerk import FakeClerk
from blitzclawd.testing.fake_creem import FakeCreem
from blitzclawd.testing.fake_llm import FakeLLM
from blitzclawd.testing.fake_resend import FakeResend


@asynccontextmanager
async def journey_env(
    database: str, tmp_path: Path, *, browser: bool = True
) -> AsyncIterator[tuple[Any, Any]]:
    """A daemon with the fleet's fakes and Clerk's, Creem's, Resend's and the LLM's, on a port
    chosen first (the pages' origin is in its settings), and a Chromium (unless not wanted)."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    async with (
        FakeClerk() as clerk,
        FakeCreem(local_checkout_urls=True) as creem,
        FakeResend() as resend,
        FakeLLM() as llm,
    ):
        product = next(iter(creem.products))
        sections = {
            "auth": {
                "clerk_jwks_url": clerk.jwks_url,
                "clerk_api_url": clerk.api_url,
                "clerk_frontend_api": clerk.frontend_api,
                "clerk_publishable_key": "pk_test_fake",
                "allowed_origins": [origin],
            },
            "creem": {
                "api_url": creem.base_url,
                "product_id": product,
                "unit_cents": creem.products[product],
                "success_url": origin + "/dashboard/topup/return",
            },
            "notify": {"resend_url": resend.base_url, "sweep_interval": 0.1},
            "upstream": {"anthropic_url": llm.base_url, "openai_url": llm.base_url},
        }
        secrets = {
            "clerk_secret_key": clerk.secret_key,
            "clerk_webhook_secret": clerk.webhook_secret,
            "creem_api_key": creem.api_key,
            "creem_webhook_secret": creem.webhook_secret,
            "resend_api_key": resend.api_key,
            "anthropic_api_key": llm.anthropic_key,
            "openai_api_key": llm.openai_key,
        }
        async with (
            fleet_env(database, tmp_path, sections=sections, secrets=secrets, api_port=port) as env,
            chromium() if browser else contextlib.nullcontext() as chrome,
        ):
            env.clerk, env.creem = clerk, creem
            creem.webhook_url = origin + "/api/billing/webhook"
            await available(env, 1)
            yield env, chrome


async def test_the_whole_journey_through_the_pages(database: str, tmp_path: Path) -> None:
    async with journey_env(database, tmp_path) as (env, browser):
        api = env.api
        # Sign up, top up $25, see it arrive.
        page = await _sign_up(browser, api, "ada@example.test")
        await page.click("a.button:has-text('Top up')")
        await page.wait_for_url(api + "/dashboard/topup")  # loaded: its script listens
        await page.click("button.amount-choice:has-text('$25')")
        await page.click("button:has-text('Pay now')", timeout=15_000)
        await page.wait_for_selector("#payment.done", timeout=30_000)
        await page.goto(api + "/dashboard")
        assert await page.inner_text("#available") == "$25.00"

        # A Telegram assistant: a wrong token first, then the right one.
        await page.click("#new-assistant")
        await page.wait_for_url(api + "/instances/new")
        await page.fill("input[name=bot_token]", "123456789:AAthis-is-not-a-real-token-at-all")
        await page.click("#create")
        slot = page.locator("[data-error-for='channel_config.bot_token']")
        await slot.filter(has_text="token").wait_for(timeout=15_000)
        await page.fill("input[name=bot_token]", BOT_TOKEN)
        await page.dispatch_event("input[name=bot_token]", "change")  # checked when pasted
        await page.locator(".field-ok").filter(has_text="@alice_assistant_bot").wait_for()
        await page.click("#create")
        await page.wait_for_url(re.compile(r".*/instances/[0-9a-f-]{36}$"), timeout=15_000)
        iid = page.url.rsplit("/", 1)[1]
        # Deploy progress, until the page itself says it is active.
        await page.locator("#status").filter(has_text="Active").wait_for(timeout=60_000)
        await _shots(page, "instance-active")
        row = await env.instance(iid)
        server = env.server_of(row["hetzner_server_id"])

        # Ada messages her bot, gets a code; she approves it on the page: now the owner.
        server.ssh.request_pairing("telegram", "555000111", "ABCD2345", firstName="Ada")
        await page.reload()
        await page.wait_for_selector("#pairing:not([hidden])", timeout=15_000)
        await page.click("#pairing-requests button:has-text('Approve')")
        await page.locator("#pairing-requests").filter(has_text="Approved").wait_for(timeout=15_000)
        assert server.ssh.pairing_allowed == {"telegram": ["555000111"]}

        # The assistant answers her: one request through the proxy, as OpenClaw sends it.
        home = server.ssh.home
        config = json.loads((home / ".openclaw/openclaw.json").read_text())
        secret_doc = json.loads((home / ".openclaw/secrets.json").read_text())
        headers = {
            **config["models"]["providers"]["blitzclaw"].get("headers", {}),
            **secret_doc["models"]["providers"]["blitzclaw"].get("headers", {}),
            "anthropic-version": "2023-06-01",
        }
        proxy = f"http://127.0.0.1:{env.daemon.settings.proxy.port}"
        message = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hello"}],
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(proxy + "/v1/messages", json=message, headers=headers) as r:
                assert r.status == 200, await r.text()
        cost = await until(
            lambda: env.pool.fetchval(
                "SELECT cost_micros FROM usage_logs WHERE instance_id = $1", uuid.UUID(iid)
            )
        )
        assert cost > 0

        async def settled() -> bool:
            await page.goto(api + "/dashboard")
            shown = await page.inner_text("#available")
            return shown == f"${(25_000_000 - cost) / 1_000_000:,.2f}"

        await until(settled)
        balance = await env.pool.fetchval(
            "SELECT balance_micros FROM balances b JOIN users u ON u.id = b.user_id "
            "WHERE u.email = 'ada@example.test'"
        )
        assert balance == 25_000_000 - cost  # to the micro-dollar
        await page.goto(api + "/dashboard/usage")
        assert await page.inner_text("#usage-total") == f"${cost / 1_000_000:,.2f}"
        assert await page.locator("#usage-lines tbody tr").count() == 1

        # Its page: limits shown, the live log, the channel's settings, her own key.
        await page.goto(f"{api}/instances/{iid}")
        assert "messages an hour" in await page.inner_text("#limits")
        await page.click("#logs-start")
        server.ssh.log("gateway: telegram connected", ident="openclaw[42]")
        await page.locator("#logs").filter(has_text="telegram connected").wait_for(timeout=15_000)
        await page.click("#logs-stop")
        await page.wait_for_selector("#logs-start:not([hidden])", timeout=15_000)
        new_token = env.telegram.add_bot("ada_second_bot", "Ada's second")
        await page.fill("#channel-form input[name=bot_token]", new_token)
        await page.click("#channel-form button[type=submit]")
        await page.locator("#channel-saved").filter(has_text="Saved").wait_for(timeout=15_000)
        assert (await env.instance(iid))["channel_config"]["bot_username"] == "ada_second_bot"
        await page.select_option("#own-key-form select[name=provider]", "anthropic")
        await page.fill("#own-key-form input[name=api_key]", "sk-ant-wrong-key-0000")
        await page.click("#own-key-form button[type=submit]")
        await page.locator("#own-key-error").filter(has_text="refused").wait_for(timeout=15_000)
        assert (await env.instance(iid))["use_own_api_key"] is False
        await _shots(page, "instance-settings")

        # Her persona, edited; then the assistant deleted.
        await page.goto(f"{api}/instances/{iid}/soul")
        await page.fill("#soul-text", "Call me Ada.")
        await page.click("#save-soul")
        await page.locator("#soul-saved").filter(has_text="Saved").wait_for(timeout=15_000)

        async def soul_on_server() -> bool:
            soul = home / ".openclaw/workspace/SOUL.md"
            return soul.exists() and "Call me Ada." in soul.read_text()

        await until(soul_on_server, deadline=30)
        await page.goto(f"{api}/instances/{iid}")
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("button[data-action=delete]")
        await page.wait_for_url(api + "/dashboard", timeout=15_000)
        assert (await env.instance(iid))["status"] == "deleted"


async def test_whatsapp_through_the_pages_to_connected(database: str, tmp_path: Path) -> None:
    async with journey_env(database, tmp_path) as (env, browser):
        api = env.api
        page = await _sign_up(browser, api, "ada@example.test")
        ada = await env.pool.fetchval("SELECT id FROM users WHERE email = 'ada@example.test'")
        await seed.credit(env.pool, str(ada), 25_000_000)  # (the top-up has its own journey)
        await page.click("#new-assistant")
        await page.wait_for_url(api + "/instances/new")
        await page.check("input[name=channel_type][value=whatsapp]")
        await page.click("#create")
        await page.wait_for_url(re.compile(r".*/instances/[0-9a-f-]{36}$"), timeout=15_000)
        iid = page.url.rsplit("/", 1)[1]
        await page.locator("#status").filter(has_text="Active").wait_for(timeout=60_000)
        server = env.server_of((await env.instance(iid))["hetzner_server_id"]).ssh
        await page.wait_for_selector("#whatsapp:not([hidden])", timeout=15_000)
        assert "Linked devices" in await page.inner_text("#whatsapp")  # what linking means

        await page.click("#whatsapp-link")
        await page.wait_for_selector("#whatsapp-qr-box:not([hidden])", timeout=30_000)
        first = await page.get_attribute("#whatsapp-qr", "src")
        assert first and first.startswith("data:image/png;base64,")
        await _shots(page, "whatsapp-qr")
        # WhatsApp rotates the code: the page shows the new one by itself.
        await asyncio.wait_for(server.whatsapp_until_waiting(1), 20)
        server.whatsapp_rotate_qr()
        await page.wait_for_function(
            "src => document.getElementById('whatsapp-qr').src !== src", arg=first, timeout=20_000
        )
        # The phone scans it.
        await asyncio.wait_for(server.whatsapp_until_waiting(1), 20)
        server.whatsapp_scan("15551234567")
        await page.wait_for_selector("#whatsapp.done", timeout=30_000)
        assert "Connected as +15551234567" in await page.inner_text("#whatsapp-state")
        await _shots(page, "whatsapp-connected")
        assert server.whatsapp_linked
        # And unlinked from the page (after saying yes).
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("#whatsapp-unlink")
        await (
            page.locator("#whatsapp-state").filter(has_text="disconnected").wait_for(timeout=15_000)
        )
        assert not server.whatsapp_linked
