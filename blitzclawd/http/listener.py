"""An aiohttp application served as a supervised child (AppRunner + TCPSite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from blitzclawd.http.protocol_errors import AppRunner

log = logging.getLogger("blitzclawd.http")


class HttpListener:
    """Serves one app on one address until stopped; stopping drains in-flight requests.

    On stop, the listening socket closes first (no new connections), then requests already
    being handled get `grace` seconds to finish before they are cancelled.
    """

    def __init__(
        self,
        name: str,
        app_factory: Callable[[], web.Application],
        host: str,
        port: int,
        *,
        grace: float,
    ) -> None:
        self.name = name
        self.started = asyncio.Event()
        self.port: int | None = None
        self._app_factory = app_factory
        self._host = host
        self._requested_port = port
        self._grace = grace
        self._stop = asyncio.Event()
        self.app: web.Application | None = None

    @property
    def state(self) -> str:
        if self._stop.is_set():
            return "stopping"
        return "running" if self.started.is_set() else "starting"

    async def run(self) -> None:
        runner = AppRunner(
            self._app_factory(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._grace,
        )
        await runner.setup()
        self.app = runner.app  # what it serves, for introspection (its routes)
        try:
            site = web.TCPSite(
                runner, self._host, self._requested_port, reuse_address=True, backlog=4096
            )
            await site.start()
            self.port = runner.addresses[0][1]
            log.info(
                "listening", extra={"listener": self.name, "host": self._host, "port": self.port}
            )
            self.started.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            log.info("listener closed", extra={"listener": self.name})

    def stop(self) -> None:
        self._stop.set()
