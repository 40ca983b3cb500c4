"""The proxy listener's endpoints: thin views over the proxy actor."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.context import CONTEXT
from blitzclawd.proxy.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES, ApiSpec
from blitzclawd.proxy.errors import ProxyError
from blitzclawd.proxy.handler import ProxyHandler


def _proxy(request: web.Request) -> ProxyHandler:
    actor = request.app[CONTEXT].actors.proxy()
    if actor is None or not actor.running:
        raise ProxyError(
            503,
            "overloaded",
            "the proxy is restarting; retry shortly",
            headers={"retry-after": "1"},
        )
    return actor


def _endpoint(api: ApiSpec):
    async def view(request: web.Request) -> web.StreamResponse:
        return await _proxy(request).serve(request, api)

    view.__name__ = api.name.replace("-", "_")
    return view


messages = _endpoint(ANTHROPIC_MESSAGES)
chat_completions = _endpoint(OPENAI_CHAT)
responses = _endpoint(OPENAI_RESPONSES)


async def models(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).models(request)


async def model(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).model(request)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).count_tokens(request)
