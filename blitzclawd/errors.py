"""One base for the errors the daemon answers a request with.

Each front door keeps its wire shape: the API's `{"error": {"code", "message", "field"?,
"request_id"}}` (blitzclawd.http.errors.ApiError) and the providers' shapes on the proxy
(blitzclawd.proxy.errors.ProxyError). What they share: an HTTP status and a reason a person reads.
"""

from __future__ import annotations


class RequestRefused(Exception):
    """A request is answered with `status` and `message` (the reason, for the caller)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
