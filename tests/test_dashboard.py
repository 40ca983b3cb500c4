"""The users' dashboard in a real headless Chromium (issue 15): signing up through Clerk's widget
(the fake Clerk's stand-in for ClerkJS), the dashboard, a $25 top-up paid on the (fake) Creem
checkout page and seen arriving without a reload; another user sees none of it; a cross-site post
carrying the session cookie changes nothing. Screenshots at desktop and phone widths go to
$BLITZCLAW_ARTIFACTS (default build/screenshots)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from browser import chromium
from conftest import running_api_env
from playwright.async_api import Browser, Page

from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_telegram import FakeTelegram

ARTIFACTS = Path(os.environ.get("BLITZCLAW_ARTIFACTS", "build/screenshots"))
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
BOT_TOKEN = "7000000001:AAHk0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123"


@asynccontextmanager
async def dashboard_env(database: str) -> AsyncIterator[Any]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    telegram = FakeTelegram()
    await telegram.start()
    telegram.add_bot("ada_helper_bot", "Ada's helper", token=BOT_TOKEN)
    sections = {
        "telegram": {"api_url": telegram.base_url},
        "api": {"port": port},
        "auth": {"allowed_origins": [origin]},
        "creem": {"success_url": origin + "/dashboard/topup/return"},
    }
    try:
        async with running_api_env(database, sections) as env:
            # ClerkJS comes from the fake's frontend API; Creem's checkout page is the fake's.
            env.creem.local_checkout_urls = True
            env.creem.webhook_url = origin + "/api/billing/webhook"
            yield env
    finally:
        await telegram.stop()


async def _shots(page: Page, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    size = page.viewport_size
    for width_name, (width, height) in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": height})
        await page.screenshot(path=str(ARTIFACTS / f"{name}-{width_name}.png"), full_page=True)
    if size:
        await page.set_viewport_size(size)


async def _sign_up(browser: Browser, api: str, email: str) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(api + "/dashboard")  # not signed in: sent to sign in, and back after
    assert "/sign-in" in page.url
    await page.click("text=Create an account")
    await page.fill("input[name=identifier]", email)
    await _shots(page, "sign-up")
    await page.click("button:has-text('Continue')")
    await page.wait_for_url(api + "/dashboard", timeout=15_000)
    assert not errors, errors
    return page


async def test_sign_up_top_up_and_see_it_arrive(database: str) -> None:
    async with dashboard_env(database) as env, chromium() as browser:
        await _shots_of_public_pages(browser, env.api)
        page = await _sign_up(browser, env.api, "ada@example.test")
        assert await page.inner_text("#available") == "$0.00"
        assert await page.is_visible("#no-instances")
        await _shots(page, "dashboard-empty")

        await page.click("a.button:has-text('Top up')")
        await page.wait_for_url(env.api + "/dashboard/topup")
        await _shots(page, "topup")
        await page.click("button.amount-choice:has-text('$25')")
        # Creem's checkout page (the fake's), then back to the return page.
        await page.wait_for_selector("text=Fake Creem checkout", timeout=15_000)
        await page.click("button:has-text('Pay now')")
        await page.wait_for_url(f"{env.api}/dashboard/topup/return*", timeout=15_000)
        # The webhook arrives in the background; the page says so without a reload.
        await page.wait_for_selector("#payment.done", timeout=30_000)
        assert "$25.00 added" in await page.inner_text("#payment-status")
        await _shots(page, "topup-received")

        await page.click("a.button:has-text('Back to the dashboard')")
        await page.wait_for_url(env.api + "/dashboard")
        assert await page.inner_text("#available") == "$25.00"
        await _shots(page, "dashboard")
        balance = await env.pool.fetchval(
            "SELECT balance_micros FROM balances b JOIN users u ON u.id = b.user_id "
            "WHERE u.email = 'ada@example.test'"
        )
        assert balance == 25_000_000

        # Another user sees none of it.
        other = await _sign_up(browser, env.api, "bob@example.test")
        assert await other.inner_text("#available") == "$0.00"
        html = await other.content()
        assert "ada@example.test" not in html

        # Signing out ends the session: the dashboard asks to sign in again.
        await page.click("#sign-out")
        await page.wait_for_url(env.api + "/", timeout=15_000)
        await page.goto(env.api + "/dashboard")
        assert "/sign-in" in page.url


async def _shots_of_public_pages(browser: Browser, api: str) -> None:
    page = await browser.new_page()
    for path, name in (("/", "landing"), ("/sign-in", "sign-in")):
        response = await page.goto(api + path)
        assert response is not None and response.status == 200, path
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers.get("x-frame-options") == "DENY"
        await _shots(page, name)
    await page.close()


async def test_a_cross_site_post_with_the_cookie_changes_nothing(database: str) -> None:
    """Another site (another port on this host: the same site for cookies, so the browser does
    send the session cookie) posts a form and a fetch to the API: both refused, nothing made."""
    async with dashboard_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "eve-target@example.test")
        keys = await env.pool.fetchval("SELECT count(*) FROM api_keys")

        evil = web.Application()
        form = (
            f'<form id="f" method="post" enctype="text/plain" action="{env.api}/api/auth/'
            'api-keys"><input name=\'{"name":"x","y":"\' value=\'"}\'></form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        script = (
            f"<script>fetch('{env.api}/api/billing/topup',{{method:'POST',credentials:'include',"
            "headers:{'Content-Type':'text/plain'},body:JSON.stringify({amount_cents:2500})})"
            ".catch(function(){}).then(function(){document.title='sent'})</script>"
        )
        pages = {"/form": form, "/fetch": script}

        async def serve(request: web.Request) -> web.Response:
            return web.Response(text=pages[request.path], content_type="text/html")

        evil.router.add_get("/form", serve)
        evil.router.add_get("/fetch", serve)
        runner = web.AppRunner(evil)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            responses: list[int] = []
            answered = asyncio.Event()

            def seen(response: Any) -> None:
                if "/api/" in response.url:
                    responses.append(response.status)
                    answered.set()

            page.on("response", seen)
            await page.goto(f"http://127.0.0.1:{port}/form")
            await asyncio.wait_for(answered.wait(), 15)  # the form's post, answered
            # The fetch's answer is for the browser to hide from that site; it was sent.
            await page.goto(f"http://127.0.0.1:{port}/fetch")
            await page.wait_for_function("document.title === 'sent'", timeout=15_000)
            assert responses and all(status == 403 for status in responses), responses
        finally:
            await runner.cleanup()
        assert await env.pool.fetchval("SELECT count(*) FROM api_keys") == keys
        assert await env.pool.fetchval("SELECT count(*) FROM topups") == 0


async def test_cookie_changes_need_this_sites_origin(api_env) -> None:
    """With the session cookie, a change needs an Origin of this site; with a Bearer credential
    (the CLI, scripts) it needs none."""
    token = api_env.clerk.mint("user_csrf")
    cookie = {"Cookie": f"__session={token}"}
    own = api_env.api  # http://127.0.0.1:<port>
    for origin, expected in ((None, 403), ("http://evil.example", 403), (own, 201)):
        headers = {**cookie, **({"Origin": origin} if origin else {})}
        status, body = await api_env.call(
            "POST", "/api/auth/api-keys", headers=headers, json={"name": "k"}
        )
        assert status == expected, (origin, body)
        if expected == 403:
            assert body["error"]["code"] == "cross_site"
    status, _ = await api_env.call(
        "POST",
        "/api/auth/api-keys",
        headers=api_env.session_headers("user_csrf"),
        json={"name": "b"},
    )
    assert status == 201
    status, _ = await api_env.call("GET", "/api/auth/me", headers=cookie)  # reading needs none
    assert status == 200


async def test_the_wizard_creates_an_assistant_and_its_page_follows_it(database: str) -> None:
    async with dashboard_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "ada@example.test")
        user_id = await env.pool.fetchval("SELECT id FROM users WHERE email = 'ada@example.test'")
        await seed.credit(env.pool, str(user_id), 25_000_000)
        await page.click("#new-assistant")
        await page.wait_for_url(env.api + "/instances/new")
        await _shots(page, "new-instance")
        # A wrong token: said under its field, nothing created.
        await page.fill("input[name=bot_token]", "123456789:this-is-not-a-real-token-at-all00")
        await page.click("#create")
        slot = page.locator("[data-error-for='channel_config.bot_token']")
        await slot.filter(has_text="token").wait_for(timeout=15_000)
        assert await env.pool.fetchval("SELECT count(*) FROM instances") == 0
        # The right one: recognised as soon as it is pasted.
        await page.fill("input[name=bot_token]", BOT_TOKEN)
        await page.dispatch_event("input[name=bot_token]", "change")
        await page.locator(".field-ok").filter(has_text="@ada_helper_bot").wait_for(timeout=15_000)
        await page.click("#create")
        await page.wait_for_url(re.compile(r".*/instances/[0-9a-f-]{36}$"), timeout=15_000)
        instance_id = page.url.rsplit("/", 1)[1]
        assert await page.inner_text("#status") == "Setting up"
        assert await page.is_visible("#progress")
        await _shots(page, "instance-setting-up")
        row = await env.pool.fetchrow("SELECT user_id, channel_config FROM instances")
        assert row["user_id"] == user_id and row["channel_config"]["bot_username"]

        # Its persona: additions under the template, counted against OpenClaw's limit.
        await page.click("#edit-soul")
        await page.wait_for_url(f"{env.api}/instances/{instance_id}/soul")
        await page.fill("#soul-text", "Call me Ada. Answer in French.")
        assert int(await page.inner_text("#soul-count")) > len("Call me Ada. Answer in French.")
        await page.click("#save-soul")
        await page.locator("#soul-saved").filter(has_text="Saved").wait_for(timeout=15_000)
        soul = await env.pool.fetchval("SELECT soul_md FROM instances")
        assert soul == "Call me Ada. Answer in French."
        await _shots(page, "soul")
        await page.goto(f"{env.api}/instances/{instance_id}")

        # Another user sees nothing of Ada's on any page: hers are 404s, like missing ones.
        other = await _sign_up(browser, env.api, "bob@example.test")
        for path in (f"/instances/{instance_id}", f"/instances/{instance_id}/soul"):
            response = await other.goto(env.api + path)
            assert response is not None and response.status == 404, path
        for path in (
            "/dashboard",
            "/dashboard/usage",
            "/dashboard/usage.csv",
            "/dashboard/topup",
            "/instances/new",
            "/settings",
        ):
            answer = await other.request.get(env.api + path)
            text = await answer.text()
            assert answer.status == 200, path
            for hers in ("ada@example.test", instance_id, "ada_helper_bot", "Call me Ada"):
                assert hers not in text, (path, hers)

        # Delete it (after saying yes).
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("button[data-action=delete]")
        await page.wait_for_url(env.api + "/dashboard", timeout=15_000)
        row = await env.pool.fetchrow("SELECT status, deleted_at FROM instances")
        assert row["status"] == "deleted" and row["deleted_at"] is not None
        assert await page.is_visible("#no-instances")


async def test_usage_chart_table_and_csv_are_the_users_own(database: str) -> None:
    async with dashboard_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "ada@example.test")
        ada = await env.pool.fetchval("SELECT id FROM users WHERE email = 'ada@example.test'")
        today = dt.datetime.now(dt.UTC)
        for days_ago, model, cost in ((0, "claude-sonnet-4-6", 1_250_000), (3, "=cmd()", 40_000)):
            await env.pool.execute(
                "INSERT INTO usage_logs (request_id, user_id, api, model, input_tokens, "
                "output_tokens, cost_micros, created_at) "
                "VALUES ($1, $2, 'anthropic-messages', $3, 1000, 200, $4, $5)",
                uuid.uuid4(),
                ada,
                model,
                cost,
                today - dt.timedelta(days=days_ago),
            )
        await page.click("a:has-text('Usage')")
        await page.wait_for_url(env.api + "/dashboard/usage")
        assert await page.inner_text("#usage-total") == "$1.29"
        assert await page.locator("#usage-lines tbody tr").count() == 2
        assert await page.locator(".chart > svg > rect").count() == 2  # one bar a day
        await _shots(page, "usage")
        # A date range the user mistyped: said, and the default shown.
        await page.goto(env.api + "/dashboard/usage?from=2026-13-01")
        assert "Dates look like" in await page.inner_text("main")
        csv_answer = await page.request.get(env.api + "/dashboard/usage.csv")
        assert csv_answer.status == 200
        assert "attachment" in csv_answer.headers["content-disposition"]
        text = await csv_answer.text()
        assert text.splitlines()[0].startswith("day,model,instance_id,requests")
        assert "'=cmd()" in text and ",=cmd()" not in text  # never a formula in a spreadsheet
        assert "1.250000" in text

        # By assistant: two of Ada's, one line each; choosing one shows its line only.
        first = await seed.create_instance(env.pool, str(ada))
        second = await seed.create_instance(env.pool, str(ada))
        for inst in (first, second):
            await env.pool.execute(
                "INSERT INTO usage_logs (request_id, user_id, instance_id, api, model, "
                "cost_micros) VALUES ($1, $2, $3, 'anthropic-messages', 'claude-haiku-4-5', 5000)",
                uuid.uuid4(),
                ada,
                uuid.UUID(inst.id),
            )
        await page.goto(env.api + "/dashboard/usage")
        await page.select_option("select[name=instance]", first.id)
        await page.click("form.range button[type=submit]")
        await page.wait_for_url(re.compile(f".*instance={first.id}.*"))
        rows = await page.locator("#usage-lines tbody tr").all_inner_texts()
        assert len(rows) == 1 and first.id[:8] in rows[0]

        other = await _sign_up(browser, env.api, "bob@example.test")
        await other.goto(env.api + "/dashboard/usage")
        assert await other.is_visible("#no-usage")
        theirs = await (await other.request.get(env.api + "/dashboard/usage.csv")).text()
        assert len(theirs.splitlines()) == 1  # the header only


async def test_settings_keys_auto_top_up_and_payments(database: str) -> None:
    async with dashboard_env(database) as env, chromium() as browser:
        page = await _sign_up(browser, env.api, "ada@example.test")
        await page.click("a:has-text('Settings')")
        await page.wait_for_url(env.api + "/settings")
        assert await page.inner_text("#email") == "ada@example.test"
        assert await page.is_visible("#no-payments")
        await page.fill("#new-key input[name=name]", "laptop")
        await page.click("#new-key button")
        await page.wait_for_selector("#new-key-shown:not([hidden])", timeout=15_000)
        key = await page.inner_text("#new-key-value")
        assert key.startswith("sk_")
        status, me = await env.call(
            "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 200 and me["email"] == "ada@example.test"
        # A reload never shows it again; revoking it ends it.
        await page.reload()
        assert key not in await page.content()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("button.revoke")
        await page.wait_for_function("!document.querySelector('button.revoke')", timeout=15_000)
        status, _ = await env.call(
            "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 401

        # Automatic top-up: a threshold under the minimum is refused, in words.
        await page.check("#auto-topup input[name=enabled]")
        await page.fill("#auto-topup input[name=threshold]", "1")
        await page.fill("#auto-topup input[name=amount]", "25")
        await page.click("#auto-topup button")
        await page.locator("#auto-error").filter(has_text="minimum").wait_for(timeout=15_000)
        await page.fill("#auto-topup input[name=threshold]", "15")
        await page.click("#auto-topup button")
        await page.locator("#auto-saved").filter(has_text="on").wait_for(timeout=15_000)
        row = await env.pool.fetchrow(
            "SELECT auto_topup_enabled, topup_threshold_micros, topup_amount_micros FROM balances"
        )
        assert tuple(row) == (True, 15_000_000, 25_000_000)
        await _shots(page, "settings")
