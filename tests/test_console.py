"""The Textual operator console (issue 17, first part), driven by Textual's pilot against a real
daemon with the fakes: the overview shows the daemon, its actors, pool and health; the instances
table lists every user's assistants and searches; the live events arrive as they happen. The
console imports nothing of the daemon, and the daemon nothing of Textual or the console."""

from __future__ import annotations

import ast
import asyncio
import uuid
from pathlib import Path

import aiohttp
from conftest import running_api_env

from blitzclaw.client import BlitzClient
from blitzclawd.testing import seed
from blitzclawd_tui.app import ConsoleApp

ROOT = Path(__file__).resolve().parent.parent


def _imports(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_the_console_and_the_daemon_stay_apart() -> None:
    assert "blitzclawd" not in _imports(ROOT / "tui")
    daemon = _imports(ROOT / "blitzclawd")
    assert not daemon & {"textual", "blitzclawd_tui", "blitzclaw"}


def _text(app: ConsoleApp, selector: str) -> str:
    return str(app.query_one(selector).render())


async def _until(pilot, check, seconds: float = 20.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not check():
                await pilot.pause(0.05)
    except TimeoutError:
        status = _text(pilot.app, "#status-line")
        raise AssertionError(f"not within {seconds} s; the status line says {status!r}") from None


async def test_the_console_shows_the_fleet_and_follows_events(api_env) -> None:
    user = await seed.create_user(api_env.pool, email="ada@example.test")
    instance = await seed.create_instance(api_env.pool, user)
    client = BlitzClient(api_env.api, api_env.admin_key)
    app = ConsoleApp(client)
    async with app.run_test(size=(140, 40)) as pilot:
        await _until(pilot, lambda: "daemon(s) on the database" in _text(app, "#daemon"))
        await _until(pilot, lambda: "Pool" in _text(app, "#overview-pool"))
        await _until(pilot, lambda: "Health:" in _text(app, "#overview-health"))

        await pilot.press("i")
        assert app.query_one("#tabs").active == "instances"
        table = app.query_one("#instance-table")
        await _until(pilot, lambda: table.row_count == 1)
        assert instance.id in [str(k.value) for k in table.rows]
        # Stop it, after saying yes: the daemon has it stopped, and the action is audited.
        table.focus()
        await pilot.press("s")
        await _until(pilot, lambda: app.screen.__class__.__name__ == "Confirm")
        await pilot.press("y")

        async def stopped() -> bool:
            status = await api_env.pool.fetchval(
                "SELECT status FROM instances WHERE id = $1", uuid.UUID(instance.id)
            )
            return status == "stopped"

        async with asyncio.timeout(20):
            while not await stopped():
                await pilot.pause(0.05)
        audited = await api_env.pool.fetchval(
            "SELECT count(*) FROM admin_actions WHERE action = 'instance.stop'"
        )
        assert audited == 1
        # Saying no changes nothing.
        await pilot.press("R")
        await _until(pilot, lambda: app.screen.__class__.__name__ == "Confirm")
        await pilot.press("n")
        await pilot.pause(0.2)
        assert not await api_env.pool.fetchval(
            "SELECT count(*) FROM admin_actions WHERE action = 'instance.restart'"
        )

        # Search: nothing matches a stranger's address.
        await pilot.click("#search")
        await pilot.press(*"nobody@", "enter")
        await _until(pilot, lambda: table.row_count == 0)

        # A payment webhook arrives: the events tab shows it.
        app.set_focus(None)  # out of the search box: keys are commands again
        await pilot.press("e")
        assert app.query_one("#tabs").active == "events"
        product = next(iter(api_env.creem.products))

        def shown() -> bool:
            return any(" webhook: " in line for line in app.seen_events)

        try:
            async with asyncio.timeout(30):
                while not shown():  # a new payment each round, until the stream has shown one
                    _, raw = api_env.creem.product_link_order(
                        product, customer_email="x@example.test"
                    )
                    await api_env.creem.deliver(api_env.api + "/api/billing/webhook", raw)
                    for _ in range(20):
                        if shown():
                            break
                        await pilot.pause(0.05)
        except TimeoutError:
            raise AssertionError((_text(app, "#status-line"), app.seen_events)) from None
    client.close()


async def test_the_console_reconnects_when_the_listener_restarts(database: str) -> None:
    """The API listener restarts under the console (a short grace here): the stream breaks, the
    console says so, comes back with Last-Event-ID, and events flow again."""
    async with running_api_env(database, {"daemon": {"shutdown_grace": 0.5}}) as env:
        client = BlitzClient(env.api, env.admin_key)
        app = ConsoleApp(client)
        product = next(iter(env.creem.products))

        async def webhook_seen(pilot, after: int) -> None:
            async with asyncio.timeout(30):
                while not any(" webhook: " in line for line in app.seen_events[after:]):
                    _, raw = env.creem.product_link_order(product, customer_email="z@example.test")
                    await env.creem.deliver(env.api + "/api/billing/webhook", raw)
                    for _ in range(20):
                        if any(" webhook: " in line for line in app.seen_events[after:]):
                            break
                        await pilot.pause(0.05)

        async with app.run_test(size=(140, 40)) as pilot:
            await webhook_seen(pilot, 0)
            admin = {"Authorization": f"Bearer {env.admin_key}"}
            try:  # the answer goes through the listener being restarted: it may not arrive
                status, _ = await env.call(
                    "POST", "/api/admin/actors/edge%2Fapi-listener/restart", headers=admin
                )
                assert status == 202
            except aiohttp.ServerDisconnectedError:
                pass
            await _until(pilot, lambda: app.reconnects >= 1, 30)
            # The listener is back before the next webhook: one sent while it was down would
            # be retried by (fake) Creem only much later.
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await env.call("GET", "/healthz"))[0] == 200:
                            break
                    except aiohttp.ClientError:
                        pass
                    await pilot.pause(0.05)
            try:
                await webhook_seen(pilot, len(app.seen_events))
            except TimeoutError:
                raise AssertionError(
                    (app.reconnects, _text(app, "#status-line"), app.seen_events[-3:])
                ) from None
        client.close()
