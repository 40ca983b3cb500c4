"""The upstream connector reuses the connection released last (aiohttp's own takes the oldest)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from blitzclawd.proxy.connector import MostRecentFirstConnector


async def _peer_port_server() -> tuple[web.AppRunner, str]:
    async def peer(request: web.Request) -> web.Response:
        if request.query.get("hold"):
            await asyncio.sleep(float(request.query["hold"]))
        return web.Response(text=str(request.transport.get_extra_info("peername")[1]))

    app = web.Application()
    app.router.add_get("/", peer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def test_the_connection_released_last_is_reused_first() -> None:
    runner, url = await _peer_port_server()
    try:
        async with aiohttp.ClientSession(connector=MostRecentFirstConnector()) as http:

            async def port(hold: float = 0.0) -> str:
                async with http.get(url, params={"hold": str(hold)} if hold else None) as resp:
                    return await resp.text()

            # Five connections open at once; the one that finishes last is the hottest.
            ports = await asyncio.gather(*(port(0.05 * (i + 1)) for i in range(5)))
            assert len(set(ports)) == 5
            last = ports[-1]
            # One request at a time now: always that same socket, never a rotation over all five.
            assert [await port() for _ in range(10)] == [last] * 10
    finally:
        await runner.cleanup()
