"""The proxy listener's middleware: every failure answers in the provider's own error format."""

from __future__ import annotations

import logging

from aiohttp import web

from blitzclawd.http.middlewares import Handler
from blitzclawd.logs import request_id_var
from blitzclawd.proxy.errors import (
    PROXY_REQUEST_ID,
    PROXY_REQUEST_ID_HEADER,
    ProxyError,
    error_response,
    style_for_path,
)
from blitzclawd.proxy.ids import new_request_id
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.proxy")


@web.middleware
async def proxy_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = new_request_id()
    request[PROXY_REQUEST_ID] = rid
    token = request_id_var.set(rid)
    style = style_for_path(request.path, request.headers)
    try:
        return await handler(request)
    except ProxyError as exc:
        return _with_id(error_response(style, exc, rid), rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = {404: "not_found", 405: "invalid_request", 413: "request_too_large"}.get(
            exc.status, "invalid_request"
        )
        return _with_id(error_response(style, ProxyError(exc.status, kind, exc.reason), rid), rid)
    except Exception as exc:
        if dependency_unavailable(exc):  # an outage is waited out, not a bug: retry shortly
            log.warning("database unavailable", extra={"path": request.path})
            failure = ProxyError(
                503,
                "overloaded",
                "database unavailable; retry shortly",
                headers={"retry-after": "2"},
            )
            return _with_id(error_response(style, failure, rid), rid)
        log.exception("proxy request failed", extra={"path": request.path})
        failure = ProxyError(500, "api", "internal error in the BlitzClaw proxy")
        return _with_id(error_response(style, failure, rid), rid)
    finally:
        request_id_var.reset(token)


def _with_id(response: web.Response, rid: str) -> web.Response:
    response.headers[PROXY_REQUEST_ID_HEADER] = rid
    return response
