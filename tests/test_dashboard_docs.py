"""The public help pages (/docs, /docs/{slug}), the landing page's prices, and the operator's terms
and privacy policy (/terms, /privacy) against a real daemon (issue 15): each page's key content,
the price list equal to the configured list prices x markup, an unknown page a 404, the
operator's file shown escaped (and a placeholder when there is none), the pages' security
headers; and the pages in Chromium at a phone's width."""

from __future__ import annotations

import asyncio
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from browser import chromium
from conftest import running_api_env

from blitzclawd.config import billing_minimum_micros

SLUGS = ("getting-started", "telegram", "whatsapp", "billing", "faq")
ARTIFACTS = Path(os.environ.get("BLITZCLAW_ARTIFACTS", "build/screenshots"))


async def page(env: Any, path: str) -> tuple[int, str, dict[str, str]]:
    async with env.http.get(env.api + path) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def expected_usd(rate: float, markup: float) -> str:
    """Independently of the page's Fraction arithmetic: the config's decimals, multiplied."""
    value = Decimal(str(rate)) * Decimal(str(markup))
    if value == value.quantize(Decimal("0.01")):
        return f"${value:,.2f}"
    return f"${value.normalize():,f}"


def expected_rows(settings: Any) -> list[tuple[str, str, str, str]]:
    markup = settings.pricing.markup
    rows = []
    for m in settings.pricing.models:
        cache_read = m.cache_read if m.cache_read is not None else m.input / 10
        rows.append(
            (
                m.id,
                expected_usd(m.input, markup),
                expected_usd(cache_read, markup),
                expected_usd(m.output, markup),
            )
        )
    return rows


def price_table_rows(html: str) -> list[tuple[str, ...]]:
    table = html.split('id="price-table"', 1)[1].split("</table>", 1)[0]
    return re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", table
    )


async def test_help_pages_prices_and_placeholders(api_env) -> None:
    settings = api_env.daemon.settings
    minimum = f"${billing_minimum_micros(settings) / 1e6:,.2f}"

    status, html, headers = await page(api_env, "/docs")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    for slug in SLUGS:
        assert f'href="/docs/{slug}"' in html, slug
    # Every page links the help, the terms and the privacy policy from its footer.
    for link in ('href="/docs"', 'href="/terms"', 'href="/privacy"'):
        assert link in html

    key_content = {
        "getting-started": ["Sign up", "Top up your balance", "Pick a persona", "Talk to it"],
        "telegram": ["@BotFather", "/newbot", "pairing code", "Approve", "owner"],
        "whatsapp": ["Linked devices", "Link a device", "QR code", "Before you link"],
        "billing": [
            minimum,
            "$10",
            "$1,000",
            "Automatic top-up",
            "\u00d7 1.5",
            "claude-sonnet-4-6",
        ],
        "faq": ["balance runs out", "Stop", "Delete", "What do you keep about me", "own AI"],
    }
    for slug, needles in key_content.items():
        status, html, headers = await page(api_env, f"/docs/{slug}")
        assert status == 200, slug
        assert "Content-Security-Policy" in headers
        assert "style=" not in html and "<script>" not in html  # the policy forbids inline
        for needle in needles:
            assert needle in html, (slug, needle)

    # The price list is the configured models at list price x markup, every one of them.
    _, billing, _ = await page(api_env, "/docs/billing")
    rows = price_table_rows(billing)
    assert rows == expected_rows(settings)
    assert ("gpt-5", "$1.875", "$0.1875", "$15.00") in rows  # exact, never rounded to a cent
    assert "each search costs $0.015" in billing  # $10 per 1,000, x 1.5

    # The landing page shows the same exact prices and leads to the details.
    status, landing, _ = await page(api_env, "/")
    assert status == 200
    assert "<td>gpt-5</td><td>$1.875</td><td>$15.00</td>" in landing
    assert 'href="/docs/billing"' in landing

    # An unknown page is a 404 that still lists the help pages, under the same headers.
    status, html, headers = await page(api_env, "/docs/no-such-page")
    assert status == 404
    assert "couldn't find that help page" in html and 'href="/docs/faq"' in html
    assert "Content-Security-Policy" in headers
    status, _, _ = await page(api_env, "/docs/billing/more")
    assert status == 404

    # No operator text configured: a clear placeholder, not an empty page.
    for path, words in (("/terms", "its terms yet"), ("/privacy", "its privacy policy yet")):
        status, html, headers = await page(api_env, path)
        assert status == 200
        assert "The operator of this service has not published" in html
        assert words in html
        assert "Content-Security-Policy" in headers


async def test_the_operators_terms_are_shown_escaped_and_follow_the_file(
    database: str, tmp_path: Path
) -> None:
    terms = tmp_path / "terms.md"
    terms.write_text("# Terms of service\n\n1. Be kind.\n2. <script>alert(1)</script> & more\n")
    sections = {
        "web": {"terms_path": str(terms), "privacy_path": str(tmp_path / "missing.txt")},
        "pricing": {"markup": 1.25},
    }
    async with running_api_env(database, sections) as env:
        status, html, _ = await page(env, "/terms")
        assert status == 200
        assert "# Terms of service\n\n1. Be kind." in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
        assert "<script>alert" not in html
        assert "not published" not in html

        # An edit shows without a restart.
        terms.write_text("Version two.\n")
        later = terms.stat().st_mtime_ns + 2_000_000_000
        os.utime(terms, ns=(later, later))
        _, html, _ = await page(env, "/terms")
        assert "Version two." in html and "Be kind" not in html

        # Too big to be a legal text, or blank: the placeholder (and one warning in the log).
        terms.write_bytes(b"x" * (1024 * 1024 + 1))
        _, html, _ = await page(env, "/terms")
        assert "has not published its terms yet" in html
        terms.write_text("  \n")
        os.utime(terms, ns=(later + 10**9, later + 10**9))
        _, html, _ = await page(env, "/terms")
        assert "has not published its terms yet" in html

        # A file that does not exist: the placeholder.
        status, html, _ = await page(env, "/privacy")
        assert status == 200 and "privacy policy yet" in html

        # The price list follows the configured markup.
        _, billing, _ = await page(env, "/docs/billing")
        assert price_table_rows(billing) == expected_rows(env.daemon.settings)
        assert ("claude-sonnet-4-6", "$3.75", "$0.375", "$18.75") in price_table_rows(billing)
        assert "\u00d7 1.25" in billing


async def test_help_pages_render_on_a_phone_in_chromium(api_env) -> None:
    errors: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 390, "height": 844})
        tab = await context.new_page()
        tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await tab.goto(api_env.api + "/")
        await tab.click("#pricing-details")
        await tab.wait_for_url(api_env.api + "/docs/billing")
        rows = await tab.locator("#price-table tbody tr").count()
        assert rows == len(api_env.daemon.settings.pricing.models)
        await tab.click("footer >> text=Help")
        await tab.wait_for_url(api_env.api + "/docs")
        for path in ["/", "/docs", *(f"/docs/{s}" for s in SLUGS), "/terms", "/privacy"]:
            await tab.goto(api_env.api + path)
            # Readable on a phone: nothing wider than the screen (the price table scrolls).
            overflow = await tab.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (path, overflow)
            name = "docs" if path == "/docs" else path.strip("/").replace("/", "-") or "landing"
            await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
            await tab.screenshot(path=str(ARTIFACTS / f"help-{name}-phone.png"), full_page=True)
            await tab.set_viewport_size({"width": 1280, "height": 900})
            await tab.screenshot(path=str(ARTIFACTS / f"help-{name}-desktop.png"), full_page=True)
            await tab.set_viewport_size({"width": 390, "height": 844})
        await context.close()
    assert not errors, errors
