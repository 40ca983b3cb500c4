"""Errors aiohttp answers before any middleware runs, in each listener's own error shape.

An oversized header, a conflicting Transfer-Encoding / Content-Length, a bad request line: the
HTTP parser refuses these and aiohttp's ``RequestHandler.handle_error`` answers in plain text,
with no route or middleware involved (aiohttp has no hook for it, aio-libs/aiohttp#3287). A
listener's runner therefore builds its connections with a handler that lets aiohttp do its part
(logging, refusing when a response is already under way, closing the connection) and then
swaps the body for the app's renderer, found under ``PROTOCOL_ERRORS`` on the app.

The parser's own message is not echoed: it can quote the offending bytes of a header, which may
be a credential.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from blitzclawd.http.errors import error_body
from blitzclawd.http.jsonutil import json_response
from blitzclawd.proxy.errors import OPENAI, PROXY_REQUEST_ID_HEADER, ProxyError, error_response

log = logging.getLogger("blitzclawd.http")

# (status, code, plain-words reason) -> the response to send instead of aiohttp's text.
ProtocolErrorRenderer = Callable[[int, str, str], web.Response]
PROTOCOL_ERRORS = web.AppKey("blitzclaw_protocol_errors", ProtocolErrorRenderer)


def describe(status: int, exc: BaseException | None) -> tuple[str, str]:
    """(machine code, reason) for a failure aiohttp answers itself."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "header_too_large", "the request line or a header is longer than the server accepts"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "bad_request", "the request does not start with a known HTTP method"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "bad_request", "the request target is not a valid URL"
    if isinstance(exc, http_exceptions.BadHttpMessage):
        return "bad_request", (
            "the request is not well-formed HTTP (its headers or body framing, e.g. "
            "Transfer-Encoding with Content-Length)"
        )
    if status == 504:
        return "timeout", "the request took too long"
    if status >= 500:
        return "internal_error", "internal server error"
    return "bad_request", "the request is not well-formed HTTP"


def api_protocol_error(status: int, code: str, message: str) -> web.Response:
    """The API's error shape: {"error": {code, message, request_id}}."""
    rid = uuid.uuid4().hex
    return json_response(
        error_body(code, message, rid), status=status, headers={"X-Request-Id": rid}
    )


def proxy_protocol_error(status: int, code: str, message: str) -> web.Response:
    """A provider-shaped error. The path was never parsed, so OpenAI's shape, whose
    {"error": {"message", "type"}} also carries what Anthropic's SDK reads."""
    rid = uuid.uuid4().hex
    kind = "api" if status >= 500 else "request_too_large" if status == 413 else "invalid_request"
    response = error_response(OPENAI, ProxyError(status, kind, message), rid)
    response.headers[PROXY_REQUEST_ID_HEADER] = rid
    response.headers["request-id"] = rid  # the style is unknown: also where Anthropic's SDK reads
    return response


class _Handler(RequestHandler):
    def __init__(self, manager: Any, *, render: ProtocolErrorRenderer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._render = render

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp logs, refuses when a response has begun, and marks the connection to close.
        plain = super().handle_error(request, status, exc, message)
        try:
            response = self._render(status, *describe(status, exc))
        except Exception:
            log.exception("protocol error renderer failed")
            return plain
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, handler: Any, *, render: ProtocolErrorRenderer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._render = render

    def __call__(self) -> RequestHandler:
        # Server keeps its loop and handler arguments in these two attributes (aiohttp 3.x).
        return _Handler(self, loop=self._loop, render=self._render, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer parser errors through the app's renderer."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        render = self.app.get(PROTOCOL_ERRORS)
        if render is None:
            return server
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            render=render,
            **server._kwargs,
        )
