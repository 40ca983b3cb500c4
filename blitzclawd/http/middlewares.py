"""Request id, request logging, and turning every failure into the JSON error shape."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from blitzclawd.http.errors import ApiError, error_body, error_response
from blitzclawd.http.jsonutil import json_response
from blitzclawd.logs import request_id_var
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_REQUEST_ID_HEADER = "X-Request-Id"
# A caller's request id is kept only when it is short and plain: it ends up in logs.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID_KEY = web.RequestKey("blitzclaw_request_id", str)


def request_id_of(request: web.Request) -> str:
    return request[REQUEST_ID_KEY]


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(API_REQUEST_ID_HEADER, "")
    rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = rid
    token = request_id_var.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await _errors_to_json(request, handler, rid)
        status = response.status
        if not response.prepared:
            response.headers[API_REQUEST_ID_HEADER] = rid
        return response
    finally:
        if request.path not in ("/healthz", "/readyz"):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
        request_id_var.reset(token)


async def _errors_to_json(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc, rid)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not failures
            raise
        code = exc.reason.lower().replace(" ", "_")
        body = error_body(
            code,
            exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason,
            rid,
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response(body, status=exc.status, headers=headers)
    except Exception as exc:
        if dependency_unavailable(exc):  # an outage is waited out, not a bug: retry shortly
            log.warning("database unavailable", extra={"path": request.path})
            return json_response(
                error_body("database_unavailable", "database unavailable; retry shortly", rid),
                status=503,
                headers={"Retry-After": "5"},
            )
        # The traceback goes to the log, never to the caller (it may hold secrets).
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return json_response(error_body("internal_error", "internal server error", rid), status=500)
