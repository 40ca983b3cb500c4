import asyncio
from blitzclaw.client import BlitzClient
from blitzclawd.testing import seed
from blitzclawd_tui.app import ConsoleApp

async def test_look(api_env):
    for n in range(5):
        user = await seed.create_user(api_env.pool, email=f"user{n}@example.test")
        await seed.credit(api_env.pool, user, 25_000_000 * (n + 1))
        for _ in range(n % 3 + 1):
            await seed.create_instance(api_env.pool, user)
    app = ConsoleApp(BlitzClient(api_env.api, api_env.admin_key))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(3)
        for key in "oiuje":
            await pilot.press(key)
            await pilot.pause(1)
            app.save_screenshot(f"/tmp/look-{key}.svg")
        await pilot.press("ctrl+p")
        await pilot.pause(0.5)
        app.save_screenshot("/tmp/look-palette.svg")
