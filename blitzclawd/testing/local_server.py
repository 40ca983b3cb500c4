"""The plumbing every fake service shares: serve `app()` on loopback, start/stop, `async with`."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalHTTPServer:
    """Subclass, implement `app()`; then `async with Fake() as fake: fake.base_url ...`."""

    backlog = 128  # raise it for fakes that take 1000 connections at once (benchmarks)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # No access log: per-request logging would dominate a fake's cost under load.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=self.backlog).start()
        self.base_url = "http://{}:{}".format(*self._runner.addresses[0][:2])
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
