"""Errors in the provider's own format, so OpenClaw's SDKs understand our refusals.

/v1/messages answers like Anthropic ({"type":"error","error":{"type","message"}}); the OpenAI
endpoints answer like OpenAI ({"error":{"message","type","param","code"}}).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from blitzclawd.errors import RequestRefused
from blitzclawd.web_json import json_response

ANTHROPIC = "anthropic"
OPENAI = "openai"

# Our id of a proxied request: the reservation's and usage row's id, in logs and this header.
PROXY_REQUEST_ID_HEADER = "X-BlitzClaw-Request-Id"
PROXY_REQUEST_ID = web.RequestKey("blitzclaw_proxy_request_id", str)

# kind -> (Anthropic error type, OpenAI error type, OpenAI code)
_KINDS: dict[str, tuple[str, str, str | None]] = {
    "invalid_request": ("invalid_request_error", "invalid_request_error", None),
    "authentication": ("authentication_error", "invalid_request_error", "invalid_api_key"),
    "billing": ("billing_error", "insufficient_quota", "insufficient_quota"),
    "permission": ("permission_error", "invalid_request_error", "permission_denied"),
    "not_found": ("not_found_error", "invalid_request_error", "model_not_found"),
    "request_too_large": ("request_too_large", "invalid_request_error", "request_too_large"),
    "rate_limit": ("rate_limit_error", "requests", "rate_limit_exceeded"),
    "api": ("api_error", "server_error", None),
    "overloaded": ("overloaded_error", "server_error", "overloaded"),
}


class ProxyError(RequestRefused):
    """Refuse a proxy request: HTTP status, error kind (a key of _KINDS), reason for the user."""

    def __init__(
        self, status: int, kind: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown proxy error kind {kind!r}")
        super().__init__(status, message)
        self.kind = kind
        self.headers = headers or {}


def style_for_path(path: str, headers: Mapping[str, str] | None = None) -> str:
    """Whose error format a request gets: by its path; /v1/models, shared by both SDKs, by
    whether the caller speaks Anthropic (anthropic-version or x-api-key)."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1/models") and headers is not None:
        if "anthropic-version" in headers or "x-api-key" in headers:
            return ANTHROPIC
    return OPENAI


# Refusals a retry cannot change. Both official SDKs retry 408/409/429/5xx twice by default and
# obey `x-should-retry` over the status (anthropic/_base_client.py and openai/_base_client.py,
# `_should_retry`); they also sleep any `retry-after` first (the anthropic SDK 2.x with no cap),
# so every retry-after the proxy sets itself is at most MAX_RETRY_AFTER seconds: two retries stay
# well inside the 10 s a caller may wait.
_FINAL_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})
MAX_RETRY_AFTER = 2


def error_response(style: str, exc: ProxyError, request_id: str) -> web.Response:
    anthropic_type, openai_type, openai_code = _KINDS[exc.kind]
    headers = dict(exc.headers)
    # The header each SDK reads into `e.request_id` (Anthropic: request-id, OpenAI: x-request-id).
    headers["request-id" if style == ANTHROPIC else "x-request-id"] = request_id
    if exc.status in _FINAL_STATUSES:
        headers["x-should-retry"] = "false"
    retry_after = headers.get("retry-after")
    if retry_after is not None and (
        not retry_after.isdigit() or int(retry_after) > MAX_RETRY_AFTER
    ):
        headers["retry-after"] = str(MAX_RETRY_AFTER)
    if style == ANTHROPIC:
        body: dict = {
            "type": "error",
            "error": {"type": anthropic_type, "message": exc.message},
            "request_id": request_id,
        }
    else:
        body = {
            "error": {
                "message": exc.message,
                "type": openai_type,
                "param": None,
                "code": openai_code,
            }
        }
    return json_response(body, status=exc.status, headers=headers)
