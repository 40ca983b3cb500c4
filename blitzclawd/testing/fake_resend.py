"""A faithful fake of Resend's `POST /emails`, on 127.0.0.1, recording what it "sent".

    async with FakeResend() as resend:
        client = ResendClient(http, resend.base_url, resend.api_key, "BlitzClaw <hi@x.test>")
        resend.fail_next(2)            # the next two sends answer 500
        resend.rate_limit = 2          # then at most 2 requests per second (429 beyond)

Wire facts (WIRE.md "Resend", resend.com/docs/api-reference/errors): Bearer auth, errors
`{"statusCode","message","name"}`, Idempotency-Key of 1-256 characters (same key and body: the
first answer again, nothing sent twice; same key, other body: 409).
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from blitzclawd.notify.resend import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY
from blitzclawd.testing.local_server import LocalHTTPServer

_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
_FROM = re.compile(r"(?:[^<>]*<\s*(?P<inner>[^<>]+?)\s*>|(?P<bare>[^<>]+))")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
MAX_RECIPIENTS = 50


class _Refusal(Exception):
    def __init__(
        self, status: int, name: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message
        self.headers = headers or {}


class FakeResend(LocalHTTPServer):
    """`POST /emails` with Resend's auth, validation, idempotency and rate limit."""

    def __init__(
        self,
        *,
        api_key: str = "re_fake_0123456789abcdef",
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        # Requests per second, Resend's default team limit is 2; None: unlimited. Tests that
        # check the 429 pass a `clock` that does not move, so no timing decides the outcome.
        self.rate_limit = rate_limit
        self.sent: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # every answer, in order
        self.base_url = ""
        self._clock = clock
        self._window: deque[float] = deque()
        self._fail_next: list[int] = []
        self._by_key: dict[str, tuple[bytes, str]] = {}  # idempotency key -> (body, email id)
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"FakeResend(base_url={self.base_url!r}, sent={len(self.sent)})"

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next `count` authenticated requests fail with `status` (5xx: Resend's error)."""
        self._fail_next.extend([status] * count)

    # -- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/emails", self._emails)
        return app

    # -- the endpoint ----------------------------------------------------------------------------

    async def _emails(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers: dict[str, str] = {}
        try:
            self._authenticate(request)
            headers = self._rate_limit()
            if self._fail_next:
                status = self._fail_next.pop(0)
                raise _Refusal(status, "internal_server_error", "An unexpected error occurred.")
            email_id = self._send(request.headers.get(IDEMPOTENCY_HEADER), raw)
        except _Refusal as refusal:
            body = {"statusCode": refusal.status, "message": refusal.message, "name": refusal.name}
            return self._answer(refusal.status, body, {**headers, **refusal.headers})
        return self._answer(200, {"id": email_id}, headers)

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
        self.statuses.append(status)
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _authenticate(self, request: web.Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, "missing_api_key", "Missing API key in the authorization header.")
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise _Refusal(403, "invalid_api_key", "API key is invalid.")

    def _rate_limit(self) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        now = self._clock()
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        remaining = self.rate_limit - len(self._window)
        headers = {"ratelimit-limit": str(self.rate_limit), "ratelimit-reset": "1"}
        if remaining <= 0:
            headers.update({"ratelimit-remaining": "0", "retry-after": "1"})
            message = (
                f"Too many requests. You can only make {self.rate_limit} requests per second. "
                "See rate limit response headers for more information."
            )
            raise _Refusal(429, "rate_limit_exceeded", message, headers)
        self._window.append(now)
        headers["ratelimit-remaining"] = str(remaining - 1)
        return headers

    def _send(self, key: str | None, raw: bytes) -> str:
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise _Refusal(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Refusal(400, "validation_error", "The body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "validation_error", "The body must be a JSON object.")
        email = _validate(body)
        if key is not None:
            fingerprint = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
            seen = self._by_key.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise _Refusal(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload.",
                    )
                return seen[1]  # the first answer again; nothing is sent twice
        email_id = str(uuid.uuid4())
        if key is not None:
            self._by_key[key] = (fingerprint, email_id)
        self.sent.append({"id": email_id, **email, "idempotency_key": key})
        return email_id


def _validate(body: dict[str, Any]) -> dict[str, Any]:
    """What gets recorded; _Refusal with Resend's name and wording for what it refuses."""
    for field in ("from", "to", "subject"):
        if not body.get(field):
            raise _Refusal(422, "missing_required_field", f"Missing `{field}` field.")
    if not body.get("html") and not body.get("text"):
        raise _Refusal(422, "missing_required_field", "Missing `html` or `text` field.")
    sender = body["from"]
    match = _FROM.fullmatch(sender) if isinstance(sender, str) else None
    address = (match.group("inner") or match.group("bare")).strip() if match else ""
    if not _ADDRESS.fullmatch(address):
        raise _Refusal(
            422,
            "invalid_from_address",
            "Invalid `from` field. The email address needs to follow the `email@example.com` "
            "or `Name <email@example.com>` format.",
        )
    to = body["to"] if isinstance(body["to"], list) else [body["to"]]
    if not 1 <= len(to) <= MAX_RECIPIENTS or not all(
        isinstance(a, str) and _ADDRESS.fullmatch(a) for a in to
    ):
        raise _Refusal(400, "validation_error", "Invalid `to` field.")
    for field in ("subject", "html", "text"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise _Refusal(400, "validation_error", f"Invalid `{field}` field.")
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and isinstance(t.get("value"), str)
        and _TAG.fullmatch(t["name"])
        and _TAG.fullmatch(t["value"])
        for t in tags
    ):
        raise _Refusal(
            400,
            "validation_error",
            "Invalid `tags` field: names and values may only contain ASCII letters, numbers, "
            "underscores, or dashes.",
        )
    return {
        "from": sender,
        "to": to,
        "subject": body["subject"],
        "text": body.get("text"),
        "html": body.get("html"),
        "tags": {t["name"]: t["value"] for t in tags},
    }
