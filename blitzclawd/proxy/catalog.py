"""The proxy's free endpoints: Anthropic's token counter (forwarded, never billed, limited per
instance) and the model list (our price table, in the caller's SDK style). Both authenticate the
instance like a billed request.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import yarl
from aiohttp import web

from blitzclawd.metering.pricing import ModelPrice, PriceTable
from blitzclawd.proxy.apis import priced_request
from blitzclawd.proxy.errors import PROXY_REQUEST_ID, ProxyError
from blitzclawd.proxy.instances import InstanceCache
from blitzclawd.proxy.relay import ERROR_BODY_MAX, client_headers, our_key_refused, upstream_headers

log = logging.getLogger("blitzclawd.proxy")

COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class Catalog:
    def __init__(
        self,
        instances: InstanceCache,
        prices: PriceTable,
        *,
        anthropic_key: Any,
        anthropic_url: str,
        count_tokens_per_minute: int,
        session: Callable[[], aiohttp.ClientSession | None],
    ) -> None:
        self._instances = instances
        self.prices = prices
        self._keys = {"anthropic": anthropic_key}
        self._count_tokens_url = yarl.URL(anthropic_url + COUNT_TOKENS_PATH)
        self._per_minute = count_tokens_per_minute
        self._session = session
        self._count_calls: dict[str, collections.deque[float]] = {}

    # -- /v1/messages/count_tokens -------------------------------------------------------------

    async def count_tokens(self, request: web.Request) -> web.Response:
        """Forwarded to Anthropic's free token counter: authenticated, never billed, limited
        per instance (`limits.count_tokens_per_minute`) so it cannot be used to flood our key."""
        inst = await self._instances.authenticate(request)
        if inst.status != "active":
            # Counting is free: a paused instance may count (a 402 here would make OpenClaw
            # disable its key); a stopped or deleted one may not.
            await self._instances.active(inst)
        raw = await request.read()
        priced_request(raw, self.prices, "anthropic")
        self._count_call(inst.id)
        key = self._keys["anthropic"]
        if key is None:
            raise ProxyError(503, "api", "the anthropic upstream is not configured")
        session = self._session()
        assert session is not None
        headers = upstream_headers(request, "anthropic", key.reveal())
        try:
            async with session.post(self._count_tokens_url, data=raw, headers=headers) as upstream:
                answer = await upstream.content.read(ERROR_BODY_MAX)
                status = upstream.status
                out = client_headers(upstream.headers, request[PROXY_REQUEST_ID])
        except (aiohttp.ClientError, TimeoutError):
            raise ProxyError(502, "api", "the anthropic upstream is unreachable") from None
        if our_key_refused(status, answer):
            log.error("the upstream refused our master key", extra={"status": status})
            raise ProxyError(502, "api", "the anthropic upstream is unavailable; retry shortly")
        return web.Response(body=answer, status=status, headers=out)

    def _count_call(self, instance_id: str) -> None:
        limit = self._per_minute
        if not limit:
            return
        now = time.monotonic()
        calls = self._count_calls.setdefault(instance_id, collections.deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= limit:
            # A counter is a helper, not a turn: its caller can go on without it, so it is told
            # to stop at once (x-should-retry: false) rather than sleep a retry-after.
            raise ProxyError(
                429,
                "rate_limit",
                f"token counting is limited to {limit} calls a minute per instance; "
                "try again in a minute",
                headers={"x-should-retry": "false"},
            )
        calls.append(now)
        if len(self._count_calls) > 100_000:  # bounded: forget instances idle for a minute
            for iid in [i for i, c in self._count_calls.items() if not c or c[-1] <= now - 60]:
                del self._count_calls[iid]

    # -- /v1/models --------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        await self._instances.authenticate(request)
        anthropic_style = _anthropic_style(request)
        data = [_model_entry(p, anthropic_style) for p in self.prices.models()]
        if anthropic_style:
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        else:
            body = {"object": "list", "data": data}
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model_id}: one entry of the price table, in the caller's style."""
        await self._instances.authenticate(request)
        model_id = request.match_info["model_id"]
        price = self.prices.get(model_id)
        if price is None:
            raise ProxyError(404, "not_found", f"model: {model_id!r} is not available here")
        entry = _model_entry(price, _anthropic_style(request))
        return web.json_response(entry, dumps=lambda v: orjson.dumps(v).decode())


def _anthropic_style(request: web.Request) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _model_entry(price: ModelPrice, anthropic_style: bool) -> dict[str, Any]:
    if anthropic_style:
        return {
            "type": "model",
            "id": price.model,
            "display_name": price.model,
            "created_at": "2025-01-01T00:00:00Z",
        }
    return {"id": price.model, "object": "model", "created": 0, "owned_by": price.api}
