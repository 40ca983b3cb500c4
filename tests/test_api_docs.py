"""/api/docs renders the API reference in a real headless Chromium: the pinned renderer's files
served by the daemon itself, the document loaded, no script or policy error on the page."""

from __future__ import annotations

from browser import chromium


async def test_the_reference_page_renders_in_chromium(api_env) -> None:
    errors: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on("requestfailed", lambda req: errors.append(f"failed: {req.url}"))
        response = await page.goto(api_env.api + "/api/docs", wait_until="load")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")
        # Swagger UI draws one block per operation once it has read the document.
        await page.wait_for_selector(".opblock", timeout=30_000)
        title = await page.inner_text(".info .title")
        assert "BlitzClaw API" in title
        summaries = await page.locator(".opblock-summary-description").all_inner_texts()
        assert "Start a top-up: a Creem checkout to send the user to" in summaries
        paths = await page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/api/instances/{instance_id}/whatsapp/qr" in p for p in paths)
        assert not [p for p in paths if p.startswith("/api/admin/")]  # not for strangers
        # Open one operation: its parameters and answers are shown.
        await page.locator(".opblock-summary", has_text="/api/billing/usage").first.click()
        await page.wait_for_selector(".parameters-container", timeout=10_000)
        text = await page.inner_text(".opblock.is-open")
        assert "from" in text and "422" in text
        await page.close()
    assert not errors, errors


async def test_only_the_renderers_own_files_are_served(api_env) -> None:
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "init.js"):
        status, _ = await api_env.call("GET", f"/api/docs/static/{name}")
        assert status == 200, name
    for name in ("swagger-editor-bundle.js", "..%2F..%2Fcore.py", "LICENSE"):
        status, body = await api_env.call("GET", f"/api/docs/static/{name}")
        assert status == 404 and body["error"]["code"] == "not_found", name
