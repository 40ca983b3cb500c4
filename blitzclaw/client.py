"""The one way the client side reaches a BlitzClaw daemon: its HTTP API.

Every answer that is not a success becomes an ApiFailure carrying the API's own error (status,
code, message, field), and a daemon that cannot be reached an Unreachable: callers print one
line and exit with the code that says which (blitzclaw.cli).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_TIMEOUT = 30.0
# A followed stream may be quiet for long, but the event stream says "keep-alive" every 15 s: a
# read that waits longer than this is a connection that died without a word.
EVENTS_TIMEOUT = httpx.Timeout(10.0, read=45.0)


class ClientError(Exception):
    """Something the caller should say in one line."""


@dataclass
class ApiFailure(ClientError):
    status: int
    code: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.message}{where}"


class Unreachable(ClientError):
    pass


class BlitzClient:
    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._trace = trace  # told each request and its answer (the CLI's --verbose)
        headers = {"User-Agent": "blitzclaw-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BlitzClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach BlitzClaw at {self.api_url} ({exc})") from None
        if self._trace is not None:
            self._trace(f"{method} {response.url} -> {response.status_code}")
        if response.is_success:
            kind = response.headers.get("content-type", "")
            return response.json() if "json" in kind else response.text
        raise _failure(response)

    def stream(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[str]:
        """A text answer as it arrives (a followed log)."""
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if not response.is_success:
                    response.read()
                    raise _failure(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach BlitzClaw at {self.api_url} ({exc})") from None

    def events(self, last_id: str | None = None) -> Iterator[dict[str, Any]]:
        """The operators' live events (Server-Sent Events), each as {"id", "type", "data"}."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with self._http.stream(
                "GET", "/api/admin/events", headers=headers, timeout=EVENTS_TIMEOUT
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _failure(response)
                event: dict[str, Any] = {}
                for line in response.iter_lines():
                    if not line:
                        if "type" in event:
                            yield event
                        event = {}
                    elif line.startswith("id: "):
                        event["id"] = line[4:]
                    elif line.startswith("event: "):
                        event["type"] = line[7:]
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach BlitzClaw at {self.api_url} ({exc})") from None

    # -- what the CLI and the console ask ------------------------------------------------------

    def me(self) -> Any:
        return self.request("GET", "/api/auth/me")

    def balance(self) -> Any:
        return self.request("GET", "/api/billing/balance")

    def topup(self, amount_cents: int) -> Any:
        return self.request("POST", "/api/billing/topup", json={"amount_cents": amount_cents})

    def subscribe(self) -> Any:
        return self.request("POST", "/api/billing/subscribe")

    def unsubscribe(self) -> Any:
        return self.request("DELETE", "/api/billing/subscribe")

    def topups(self, limit: int = 50) -> Any:
        return self.request("GET", "/api/billing/topups", params={"limit": limit})

    def usage(self, frm: str | None = None, to: str | None = None) -> Any:
        params = {k: v for k, v in (("from", frm), ("to", to)) if v}
        return self.request("GET", "/api/billing/usage", params=params)

    def instances(self) -> Any:
        return self.request("GET", "/api/instances")

    def instance(self, instance_id: str) -> Any:
        return self.request("GET", f"/api/instances/{instance_id}")

    def create_instance(self, body: dict[str, Any]) -> Any:
        return self.request("POST", "/api/instances", json=body)

    def instance_action(self, instance_id: str, action: str) -> Any:
        if action == "delete":
            return self.request("DELETE", f"/api/instances/{instance_id}")
        return self.request("POST", f"/api/instances/{instance_id}/{action}")

    def channels(self) -> Any:
        return self.request("GET", "/api/channels")

    # -- an operator's (the admin key, or an admin user's key) ---------------------------------

    def admin_instances(
        self, search: str | None = None, status: str | None = None, limit: int | None = None
    ) -> Any:
        """Every user's instances: {"instances": [...], "total": N}."""
        params = {"q": search, "status": status, "limit": limit}
        return self.request(
            "GET", "/api/admin/instances", params={k: v for k, v in params.items() if v}
        )

    def admin_instance_action(self, instance_id: str, action: str) -> Any:
        """restart, stop, start, pause, resume or delete any user's instance."""
        if action == "delete":
            return self.request("DELETE", f"/api/admin/instances/{instance_id}")
        return self.request("POST", f"/api/admin/instances/{instance_id}/{action}")

    def admin_users(self, search: str | None = None, limit: int | None = None) -> Any:
        params = {"q": search, "limit": limit}
        return self.request(
            "GET", "/api/admin/users", params={k: v for k, v in params.items() if v}
        )


def _failure(response: httpx.Response) -> ApiFailure:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    return ApiFailure(
        response.status_code,
        str(error.get("code") or f"http_{response.status_code}"),
        str(error.get("message") or response.reason_phrase or "request failed"),
        error.get("field"),
    )
