"""Per-IP and per-user request rates on the API listener (token buckets, in this daemon's
memory): a burst of a minute's worth, refilled evenly; beyond it a 429 with `Retry-After`.

Exempt: health checks, the pool servers' ready callbacks (/internal/) and signed webhooks
(Creem and Clerk retry on their own schedule; refusing them delays money). The proxy listener
has its own per-instance limits (blitzclawd.proxy.limits). Keys are bounded (least recently
seen dropped first), so a flood of addresses cannot grow memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from blitzclawd.http.auth import CALLER
from blitzclawd.http.errors import error_body
from blitzclawd.http.jsonutil import json_response
from blitzclawd.http.middlewares import Handler, request_id_of

EXEMPT_PREFIXES = ("/healthz", "/readyz", "/internal/", "/api/webhooks/", "/api/billing/webhook")
MAX_KEYS = 100_000


class Buckets:
    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens a second
        self._max_keys = max_keys
        self._clock = clock
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str) -> float:
        """0 when `key` may go on (one token taken), else the seconds until it may."""
        now = self._clock()
        tokens, at = self._state.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._state[key] = (tokens, now)
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
        return wait


def _refused(request: web.Request, wait: float, who: str) -> web.Response:
    seconds = max(1, math.ceil(wait))
    body = error_body(
        "rate_limited",
        f"too many requests from this {who}; try again in {seconds} s",
        request_id_of(request),
    )
    return json_response(body, status=429, headers={"Retry-After": str(seconds)})


def _exempt(path: str) -> bool:
    return path.startswith(EXEMPT_PREFIXES)


def per_ip(per_minute: int) -> Callable[..., object]:
    """Before authentication: by the peer address (the daemon listens behind no proxy that
    would hide it: put a reverse proxy's own limits in front if there is one)."""
    buckets = Buckets(per_minute) if per_minute else None

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if buckets is not None and not _exempt(request.path):
            wait = buckets.take(request.remote or "unknown")
            if wait:
                return _refused(request, wait, "address")
        return await handler(request)

    return limit


def per_user(per_minute: int) -> Callable[..., object]:
    """After authentication: by the user (the admin key is not limited)."""
    buckets = Buckets(per_minute) if per_minute else None

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        caller = request.get(CALLER)
        if buckets is not None and caller is not None and caller.user_id is not None:
            wait = buckets.take(caller.user_id)
            if wait:
                return _refused(request, wait, "account")
        return await handler(request)

    return limit
