"""A real headless Chromium for the tests, driven by Playwright.

The browser is the system's (Debian's `chromium`, installed by README's set-up): Playwright
cannot download its own builds here. `BLITZCLAW_CHROMIUM` names another binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

# As root, Chromium needs --no-sandbox; the rest keeps it off a network it cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    path = os.environ.get("BLITZCLAW_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError(
            "no Chromium: README's install command installs Debian's chromium package "
            "(or set BLITZCLAW_CHROMIUM to a Chromium binary)"
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield browser
        finally:
            await browser.close()
