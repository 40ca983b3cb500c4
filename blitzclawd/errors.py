"""One base for the errors the daemon answers a request with.

Each front door keeps its wire shape: the API's `{"error": {"code", "message", "field"?,
"request_id"}}` (blitzclawd.http.errors.ApiError) and the providers' shapes on the proxy
(blitzclawd.proxy.errors.ProxyError). What they share: an HTTP status and a reason a person reads.
"""

from __future__ import annotations

from typing import Any


class RequestRefused(Exception):
    """A request is answered with `status` and `message` (the reason, for the caller)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiError(RequestRefused):
    """A refusal on the API: status, machine code, reason, field (the body is built by
    blitzclawd.http.errors). Raised by views and by the services they call."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(status, message)
        self.code = code
        self.field = field
        self.extra = extra
