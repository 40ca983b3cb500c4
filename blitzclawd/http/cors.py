"""CORS for a front end on another origin (auth.allowed_origins, the same list session tokens'
`azp` is checked against): its browser may call /api/ with credentials; no other origin gets
any CORS header, so a page elsewhere cannot read answers. Preflights (OPTIONS with
Access-Control-Request-Method) are answered by the middleware, before authentication.

Every other answer gets its headers as it is prepared (aiohttp's on_response_prepare), not after
the view returns: a stream a view prepares itself (the live events, followed logs) has sent its
headers by then, and an error answer built by a middleware is prepared the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from blitzclawd.http.middlewares import Handler

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id, Last-Event-ID"
MAX_AGE = "600"

PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


class Cors:
    """The middleware (preflights) and the prepare hook (every answer) for one origin list."""

    def __init__(self, origins: Iterable[str]) -> None:
        self._allowed = frozenset(o.rstrip("/") for o in origins if o)

    def setup(self, app: web.Application) -> None:
        """The prepare hook on `app` (the middleware goes first in its list, see http/app.py)."""
        app.on_response_prepare.append(self.on_prepare)

    def origin_of(self, request: web.Request) -> str | None:
        """The request's Origin when it is one of ours (and the path is the API's), else None."""
        origin = request.headers.get("Origin")
        if origin is not None and origin in self._allowed and request.path.startswith("/api/"):
            return origin
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and request.path.startswith("/api/")
        ):
            if self.origin_of(request) is None:
                return web.Response(status=403, text="origin not allowed")
            # The origin and credentials headers are added by on_prepare, as to every answer.
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE,
                },
            )
        return await handler(request)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = self.origin_of(request)
        if origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-Request-Id"
        response.headers.add("Vary", "Origin")
