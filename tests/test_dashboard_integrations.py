"""/settings/integrations in a real Chromium (issue 18): connect Google through the fake's
consent page and back, let an assistant use it, remove the access (revoked at Google)."""

from __future__ import annotations

from pathlib import Path

from browser import chromium
from conftest import running_api_env
from test_dashboard import _sign_up

from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_google import FakeGoogle


async def test_connect_attach_and_remove_google_in_the_browser(
    database: str, tmp_path: Path
) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    async with FakeGoogle() as google:
        sections = {
            "api": {"port": port},
            "auth": {"allowed_origins": [origin]},
            "notify": {"app_url": origin},
            "google": {
                "client_id": google.client_id,
                "authorization_url": google.authorization_url,
                "token_url": google.token_url,
                "revoke_url": google.revoke_url,
                "userinfo_url": google.userinfo_url,
            },
        }
        secrets = {"google_client_secret": google.client_secret}
        async with running_api_env(database, sections, secrets) as env, chromium() as browser:
            page = await _sign_up(browser, env.api, "grace@example.test")
            user_id = await env.pool.fetchval(
                "SELECT id::text FROM users WHERE email = 'grace@example.test'"
            )
            instance = await seed.create_instance(env.pool, user_id)
            await page.goto(env.api + "/settings")
            await page.click("#integrations-link")
            await page.wait_for_url(env.api + "/settings/integrations")

            # Connect: Google's consent page (the fake's), Allow, and back here.
            await page.click("#google-connect")
            await page.wait_for_url(google.authorization_url + "*")
            await page.fill("input[name=email]", "grace@gmail.example")
            await page.click("button:has-text('Allow')")
            await page.wait_for_url(env.api + "/settings/integrations?connected=google")
            assert await page.text_content("#google-email") == "grace@gmail.example"

            # Let the assistant use it.
            box = page.locator(f"input.attach[data-instance='{instance.id}']")
            await box.check()
            await page.wait_for_selector("#integration-status:has-text('Attached')")
            attached = await env.pool.fetchval(
                "SELECT count(*) FROM instance_integrations WHERE instance_id = $1::uuid",
                instance.id,
            )
            assert attached == 1

            # Remove: asked first, then revoked at Google and gone.
            issued = list(google.issued)
            page.once("dialog", lambda dialog: dialog.accept())
            await page.click("#google-remove")
            await page.wait_for_selector("#google-connect")
            assert not any(google.token_is_live(token) for token in issued)
            assert not await env.pool.fetchval("SELECT count(*) FROM user_integrations")
