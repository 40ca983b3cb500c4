"""Application factories: the public API listener and the proxy listener."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http import rate_limit
from blitzclawd.http.auth import require_auth
from blitzclawd.http.context import CONTEXT, DaemonContext
from blitzclawd.http.cors import Cors
from blitzclawd.http.middlewares import request_context
from blitzclawd.http.protocol_errors import (
    PROTOCOL_ERRORS,
    api_protocol_error,
    proxy_protocol_error,
)
from blitzclawd.http.proxy_middleware import proxy_errors
from blitzclawd.http.routes import setup_api_routes, setup_proxy_routes
from blitzclawd.web.routes import setup_pages

# Request bodies above this are refused with 413 before a view sees them (OpenClaw sends ~60 KB).
MAX_BODY = 8 * 1024 * 1024
# The proxy takes what the providers take (Anthropic: 32 MB): a conversation with a few photos
# (base64, ~2.7 MB each from a phone) is well above the API's limit.
MAX_PROXY_BODY = 32 * 1024 * 1024


def make_api_app(ctx: DaemonContext) -> web.Application:
    limits = ctx.settings.limits
    cors = Cors(ctx.settings.auth.allowed_origins)
    app = web.Application(
        middlewares=[
            # Outermost: preflights are answered before authentication and rate limits.
            cors.middleware,
            request_context,
            rate_limit.per_ip(limits.api_per_ip_per_minute),
            require_auth,
            rate_limit.per_user(limits.api_per_user_per_minute),
        ],
        client_max_size=MAX_BODY,
    )
    # Every answer's CORS headers, error and streamed ones too (a browser must read them).
    cors.setup(app)
    app[CONTEXT] = ctx
    app[PROTOCOL_ERRORS] = api_protocol_error
    setup_api_routes(app)
    setup_pages(app)  # the users' dashboard, on the same origin as the API
    return app


def make_proxy_app(ctx: DaemonContext) -> web.Application:
    app = web.Application(middlewares=[proxy_errors], client_max_size=MAX_PROXY_BODY)
    app[CONTEXT] = ctx
    app[PROTOCOL_ERRORS] = proxy_protocol_error
    setup_proxy_routes(app)
    return app
