"""What the proxy listener's views need of the proxy actor: its request handlers.

The views address it through this Protocol (blitzclawd.registry.Actors.proxy), never by its
class: actors/proxy.py implements it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from aiohttp import web

from blitzclawd.proxy.apis import ApiSpec


@runtime_checkable
class ProxyHandler(Protocol):
    @property
    def running(self) -> bool: ...

    async def serve(self, request: web.Request, api: ApiSpec) -> web.StreamResponse: ...

    async def count_tokens(self, request: web.Request) -> web.Response: ...

    async def models(self, request: web.Request) -> web.Response: ...

    async def model(self, request: web.Request) -> web.Response: ...
