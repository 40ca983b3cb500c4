"""CORS for a front end on another origin (auth.allowed_origins, the same list session tokens'
`azp` is checked against): its browser may call /api/ with credentials; no other origin gets
any CORS header, so a page elsewhere cannot read answers. Preflights (OPTIONS with
Access-Control-Request-Method) are answered here, before authentication."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web

from blitzclawd.http.middlewares import Handler

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id, Last-Event-ID"
MAX_AGE = "600"


def cors(origins: Iterable[str]) -> Callable[..., object]:
    allowed = frozenset(o.rstrip("/") for o in origins if o)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ours = origin is not None and origin in allowed and request.path.startswith("/api/")
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and request.path.startswith("/api/")
        ):
            if not ours:
                return web.Response(status=403, text="origin not allowed")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin or "",
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE,
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if ours and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin or ""
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-Request-Id"
            response.headers.add("Vary", "Origin")
        return response

    return middleware
