"""Resend: send one email over HTTP (WIRE.md "Resend", resend.com/docs/api-reference/errors).

Retrying is the caller's business (the notifier retries from its table with backoff); this client
says whether a retry can help. The Idempotency-Key makes a retry after an unknown outcome safe:
Resend answers the first send's id instead of sending again.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 256
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")  # Resend's rule for tag names and values
_MAX_MESSAGE = 300


class ResendError(Exception):
    """A refused or failed send. `status` is None when no HTTP answer came back."""

    def __init__(self, status: int | None, name: str, message: str) -> None:
        super().__init__(f"Resend {'unreachable' if status is None else status} {name}: {message}")
        self.status = status
        self.name = name
        self.message = message

    @property
    def retryable(self) -> bool:
        # 429 and 5xx pass; so does "the same key is still in flight" (409) and no answer at all.
        # Anything else (bad key, validation) fails the same way every time.
        return (
            self.status is None
            or self.status == 429
            or self.status >= 500
            or self.name == "concurrent_idempotent_requests"
        )


class ResendClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        sender: str,
        *,
        timeout: float = 15.0,
    ) -> None:
        if not api_key:
            raise ValueError("the Resend API key is empty")
        self._session = session
        self._url = base_url.rstrip("/") + "/emails"
        self._key = api_key
        self.sender = sender
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"ResendClient(url={self._url!r}, sender={self.sender!r})"

    async def send(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str,
        idempotency_key: str,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Send one email; returns Resend's id for it (the first send's id on a repeated key)."""
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ValueError(f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
        body: dict[str, Any] = {
            "from": self.sender,
            "to": [to],
            "subject": subject,
            "text": text,
            "html": html,
        }
        if tags:
            for key, value in tags.items():
                if not _TAG.fullmatch(key) or not _TAG.fullmatch(value):
                    raise ValueError(f"tag {key!r}: only ASCII letters, digits, _ and - allowed")
            body["tags"] = [{"name": k, "value": v} for k, v in tags.items()]
        headers = {
            "authorization": f"Bearer {self._key}",
            "content-type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_key,
        }
        try:
            async with self._session.post(
                self._url, data=orjson.dumps(body), headers=headers, timeout=self._timeout
            ) as resp:
                status, raw = resp.status, await resp.read()
        except TimeoutError:
            raise ResendError(None, "timeout", "no answer in time") from None
        except aiohttp.ClientError as exc:
            # `from None`: aiohttp errors can carry the request (headers included) along.
            raise ResendError(None, "connection_error", type(exc).__name__) from None
        data = _json(raw)
        if status != 200:
            name = data.get("name") if isinstance(data.get("name"), str) else "http_error"
            message = data.get("message")
            if not isinstance(message, str) or not message:
                message = raw.decode("utf-8", "replace").strip() or "no error message"
            raise ResendError(status, name, _redact(message[:_MAX_MESSAGE], self._key))
        email_id = data.get("id")
        if not isinstance(email_id, str) or not email_id:
            raise ResendError(status, "malformed_response", "no id in the answer")
        return email_id


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]")
