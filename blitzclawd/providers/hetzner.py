"""Hetzner Cloud servers through hcloud-python (synchronous: every call runs in a worker thread).

    provider = HetznerProvider(token, ssh_keys=["blitzclaw-provisioner"])
    info = await provider.create(name="bc-7f3a", user_data=cloud_init, labels={"pool": "main"})

Capacity: `resource_unavailable` ("error during placement", "server location disabled", HTTP
412), `placement_error` (also reported asynchronously by the create action) and
`no_space_left_in_location` mean "not here, not now": the next configured location is tried.
`resource_limit_exceeded` is the project's quota: another location would not help, so it is a
plain ProviderError. Rate limit: at most `max_concurrency` calls in flight, and a call waits while
the `RateLimit-*` headers Hetzner sends say the hourly budget (3600) is nearly spent; a 429 is
retried by hcloud with its exponential back-off. Waiting for an action (a create takes Hetzner
seconds to tens of seconds) is a poll every `poll_interval`, each poll one call: between polls
no slot and no worker thread is held, so fifty creates can wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import requests
from hcloud import APIException, Client
from hcloud.actions import Action, BoundAction
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import BoundServerType, ServerType
from hcloud.servers import BoundServer, CreateServerResponse, Server
from hcloud.ssh_keys import SSHKey

from blitzclawd.providers.base import (
    SERVICE_KEY,
    SERVICE_VALUE,
    CapacityError,
    ProviderError,
    ServerInfo,
)

log = logging.getLogger("blitzclawd.hetzner")

T = TypeVar("T")

CAPACITY_CODES = frozenset({"resource_unavailable", "placement_error", "no_space_left_in_location"})
# Known retired types and their same-size successors (WIRE.md); others are caught from the API's
# per-location deprecation data before anything is ordered.
RETIRED_TYPES = {"cx22": "cx23"}
_ACTION_DEADLINE_S = 600.0  # create/rebuild/delete actions finish in well under a minute
_TYPE_TTL_S = 300.0  # per-location availability changes; re-read the server type this often
_RATE_RESERVE = 50  # requests kept back for deletes and reads when the hourly budget runs low
_REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read


class _ActionFailed(ProviderError):
    """A Hetzner action ended in error (the server it made may exist: delete it)."""


class _CapacityActionFailed(_ActionFailed, CapacityError):
    """... for want of capacity there (placement_error): the next location is tried."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Hetzner's last `RateLimit-*` headers: the budget refills evenly over an hour."""

    limit: int
    remaining: int
    reset: float  # unix time at which the budget is full again
    seen: float  # time.monotonic() when these headers arrived

    def pause(self, now: float, reserve: int = _RATE_RESERVE) -> float:
        """Seconds to wait before the next call so `reserve` requests stay available."""
        per_second = self.limit / 3600.0
        if per_second <= 0:
            return 0.0
        estimate = min(self.limit, self.remaining + (now - self.seen) * per_second)
        return max(0.0, min((reserve - estimate) / per_second, 60.0))


@dataclass(frozen=True, slots=True)
class Price:
    location: str
    hourly_net: Decimal
    hourly_gross: Decimal
    monthly_net: Decimal
    monthly_gross: Decimal


class HetznerProvider:
    """ServerProvider on Hetzner Cloud; listings only see servers labelled service=blitzclaw."""

    def __init__(
        self,
        token: str,
        *,
        api_endpoint: str = "https://api.hetzner.cloud/v1",
        server_type: str = "cx23",
        image: str = "debian-12",
        locations: Sequence[str] = ("fsn1", "nbg1"),
        ssh_keys: Sequence[str] = (),
        poll_interval: float = 1.0,
        max_concurrency: int = 4,
    ) -> None:
        retired = RETIRED_TYPES.get(server_type.lower())
        if retired:
            raise ProviderError(
                f"Hetzner no longer sells server type {server_type!r} for new servers; "
                f"configure {retired!r} (same size) instead",
                code="invalid_server_type",
            )
        if not locations:
            raise ProviderError("at least one Hetzner location is needed", code="invalid_input")
        if max_concurrency < 1 or poll_interval <= 0:
            raise ProviderError("max_concurrency >= 1 and poll_interval > 0 are needed")
        self.server_type = server_type
        self.image = image
        self.locations = tuple(locations)
        self.ssh_keys = tuple(ssh_keys)
        self._token = token  # kept only to scrub it from any message we pass on
        self._poll_interval = poll_interval
        self._client = Client(
            token,
            api_endpoint=api_endpoint,
            application_name="blitzclawd",
            poll_interval=poll_interval,
            poll_max_retries=max(10, int(_ACTION_DEADLINE_S / poll_interval)),
            timeout=_REQUEST_TIMEOUT,
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._rate: RateLimit | None = None
        self._pause_logged = -math.inf
        self._type_cache: tuple[float, BoundServerType | None] | None = None
        self._observe_rate_limit()

    def __repr__(self) -> str:
        return f"HetznerProvider(server_type={self.server_type!r}, locations={self.locations!r})"

    @property
    def rate_limit(self) -> RateLimit | None:
        """The rate limit as of Hetzner's last answer (None before the first one)."""
        return self._rate

    # -- the ServerProvider interface -----------------------------------------------------------

    async def create(self, *, name: str, user_data: str, labels: dict[str, str]) -> ServerInfo:
        merged = {**labels, SERVICE_KEY: SERVICE_VALUE}
        orderable = await self._run("server type lookup", self._orderable_locations)
        failures: list[str] = [f"{loc}: not offered now" for loc in self._skipped(orderable)]
        last_code = "resource_unavailable"
        for location in orderable:
            try:
                return await self._create_at(name, user_data, merged, location)
            except CapacityError as exc:
                log.warning("hetzner: no capacity in %s, trying the next: %s", location, exc)
                failures.append(f"{location}: {exc}")
                self._type_cache = None  # availability changed: re-read it next time
                last_code = exc.code or last_code
        raise CapacityError(
            f"no Hetzner capacity for {self.server_type} ({'; '.join(failures)})", code=last_code
        )

    async def delete(self, provider_id: int) -> None:
        action = await self._run("server delete", self._delete_sync, provider_id)
        if action is not None:  # None: it was already gone
            await self._wait("server delete", action)

    async def rebuild(self, provider_id: int, *, user_data: str | None = None) -> None:
        action = await self._run("server rebuild", self._rebuild_sync, provider_id, user_data)
        await self._wait("server rebuild", action)

    async def get(self, provider_id: int) -> ServerInfo | None:
        return await self._run("server get", self._get_sync, provider_id)

    async def prices(self) -> dict[str, Price]:
        """The configured server type's prices per location, as Hetzner lists them today."""
        server_type = await self._run("server type lookup", self._server_type_sync)
        return {
            price["location"]: Price(
                location=price["location"],
                hourly_net=Decimal(price["price_hourly"]["net"]),
                hourly_gross=Decimal(price["price_hourly"]["gross"]),
                monthly_net=Decimal(price["price_monthly"]["net"]),
                monthly_gross=Decimal(price["price_monthly"]["gross"]),
            )
            for price in server_type.prices or []
        }

    async def _create_at(
        self, name: str, user_data: str, labels: dict[str, str], location: str
    ) -> ServerInfo:
        what = "server create"
        response = await self._run(what, self._create_sync, name, user_data, labels, location)
        server_id = response.server.id
        try:
            for action in (response.action, *response.next_actions):
                await self._wait(what, action)
        except _ActionFailed:
            # A create that failed after the fact (placement_error) leaves a server behind.
            try:
                await self.delete(server_id)
            except ProviderError as exc:  # the create's error matters more; the pool retries
                log.warning("hetzner: could not delete failed server %s: %s", server_id, exc)
            raise
        return await self._run(what, self._info_sync, server_id)

    async def _wait(self, what: str, action: BoundAction) -> None:
        """Until the action has finished (as hcloud's wait_until_finished: poll, then sleep),
        polling in its own call each time; _ActionFailed (a CapacityError for placement) when
        it ended in error, a ProviderError `timeout` after _ACTION_DEADLINE_S."""
        deadline = time.monotonic() + _ACTION_DEADLINE_S
        while True:
            await self._run(what, action.reload)
            if action.status != Action.STATUS_RUNNING:
                break
            if time.monotonic() + self._poll_interval > deadline:
                raise ProviderError(
                    f"Hetzner {what}: action {action.id} still running after "
                    f"{_ACTION_DEADLINE_S:.0f} s",
                    code="timeout",
                )
            await asyncio.sleep(self._poll_interval)
        if action.status == Action.STATUS_ERROR:
            error = action.error or {}
            code = str(error.get("code") or "action_failed")
            failure = self._failure(what, code, str(error.get("message") or "the action failed"))
            kind = _CapacityActionFailed if isinstance(failure, CapacityError) else _ActionFailed
            raise kind(str(failure), code=code)

    # -- in the worker thread -------------------------------------------------------------------

    def _create_sync(
        self, name: str, user_data: str, labels: dict[str, str], location: str
    ) -> CreateServerResponse:
        return self._client.servers.create(
            name=name,
            server_type=ServerType(name=self.server_type),
            image=Image(name=self.image),
            ssh_keys=[SSHKey(name=key) for key in self.ssh_keys] or None,
            user_data=user_data,
            labels=labels,
            location=Location(name=location),
            start_after_create=True,
        )

    def _info_sync(self, provider_id: int) -> ServerInfo:
        return _info(self._client.servers.get_by_id(provider_id))

    def _delete_sync(self, provider_id: int) -> BoundAction | None:
        try:
            return self._client.servers.delete(Server(id=provider_id))
        except APIException as exc:
            if exc.code == "not_found":
                return None  # already gone: what we wanted
            raise

    def _rebuild_sync(self, provider_id: int, user_data: str | None) -> BoundAction:
        response = self._client.servers.rebuild(
            Server(id=provider_id), Image(name=self.image), user_data=user_data
        )
        return response.action

    def _get_sync(self, provider_id: int) -> ServerInfo | None:
        try:
            return _info(self._client.servers.get_by_id(provider_id))
        except APIException as exc:
            if exc.code == "not_found":
                return None
            raise

    def _list_sync(self, selector: str) -> list[ServerInfo]:
        return [_info(server) for server in self._client.servers.get_all(label_selector=selector)]

    def _server_type_sync(self) -> BoundServerType:
        now = time.monotonic()
        if self._type_cache is None or now - self._type_cache[0] > _TYPE_TTL_S:
            self._type_cache = (now, self._client.server_types.get_by_name(self.server_type))
        server_type = self._type_cache[1]
        if server_type is None:
            raise ProviderError(
                f"Hetzner has no server type {self.server_type!r}", code="invalid_server_type"
            )
        return server_type

    def _orderable_locations(self) -> list[str]:
        """The configured locations, in order, where the server type can be ordered right now."""
        server_type = self._server_type_sync()
        if server_type.locations is None:  # an API without per-location data: just try them
            return list(self.locations)
        now = datetime.now(UTC)
        offered, retired = {}, set()
        for entry in server_type.locations:
            until = entry.deprecation.unavailable_after if entry.deprecation else None
            if until is not None and until < now:
                retired.add(entry.location.name)
            else:
                offered[entry.location.name] = entry.available is not False
        if retired and all(loc in retired for loc in self.locations):
            raise ProviderError(
                f"Hetzner no longer sells server type {self.server_type!r} in "
                f"{', '.join(self.locations)}; configure a current type",
                code="invalid_server_type",
            )
        return [loc for loc in self.locations if offered.get(loc)]

    def _skipped(self, orderable: Sequence[str]) -> list[str]:
        return [loc for loc in self.locations if loc not in orderable]

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            if self._rate is not None:
                pause = self._rate.pause(time.monotonic())
                if pause > 0:
                    if time.monotonic() - self._pause_logged > 60:  # once a minute, not per call
                        self._pause_logged = time.monotonic()
                        log.warning("hetzner: rate limit nearly spent, waiting %.1f s", pause)
                    await asyncio.sleep(pause)
            return await asyncio.to_thread(self._guarded, what, fn, *args)

    def _guarded(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` with hcloud's and requests' errors turned into ProviderError.

        The ProviderError is raised outside the `except` blocks, so it carries no context: a
        requests exception holds the request, and the request holds the token.
        """
        failure: ProviderError
        try:
            return fn(*args)
        except APIException as exc:
            failure = self._failure(what, str(exc.code), exc.message)
        except requests.RequestException as exc:
            failure = self._failure(what, None, f"{type(exc).__name__}: {exc}"[:300])
        raise failure

    def _failure(self, what: str, code: str | None, message: str) -> ProviderError:
        text = f"Hetzner {what} failed: {message}" + (f" ({code})" if code else "")
        if self._token:
            text = text.replace(self._token, "[token]")
        kind = CapacityError if code in CAPACITY_CODES else ProviderError
        return kind(text, code=code)

    def _observe_rate_limit(self) -> None:
        # hcloud does not surface response headers; its requests session does (private, so guarded).
        session = getattr(getattr(self._client, "_client", None), "_session", None)
        if isinstance(session, requests.Session):
            session.hooks["response"].append(self._on_response)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        headers = response.headers
        try:
            self._rate = RateLimit(
                limit=int(headers["RateLimit-Limit"]),
                remaining=int(headers["RateLimit-Remaining"]),
                reset=float(headers["RateLimit-Reset"]),
                seen=time.monotonic(),
            )
        except (KeyError, ValueError):
            pass

    # Last in the class: below this line, `list` in an annotation would name this method.
    async def list(self, labels: dict[str, str]) -> list[ServerInfo]:
        wanted = {**labels, SERVICE_KEY: SERVICE_VALUE}
        selector = ",".join(f"{key}={value}" for key, value in sorted(wanted.items()))
        return await self._run("server list", self._list_sync, selector)


def _info(server: BoundServer) -> ServerInfo:
    public = server.public_net
    ipv4 = public.ipv4.ip if public is not None and public.ipv4 is not None else None
    return ServerInfo(
        provider_id=server.id,
        name=server.name,
        status=server.status,
        ipv4=ipv4,
        location=server.location.name if server.location is not None else None,
        server_type=server.server_type.name if server.server_type is not None else "",
        labels=dict(server.labels or {}),
        created=server.created or datetime.now(UTC),
    )
