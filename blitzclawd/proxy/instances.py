"""The proxy's copies of instances: who may call (instance id + secret), their status and limits.

Copies are cached; every change that matters to a proxy (status, secret, limits) is announced by
the database (NOTIFY blitzclaw_instances) and drops the copy at once. The same listening
connection hears the lease notes (blitzclawd.proxy.leases). While the database is unavailable a
cached copy serves as it is, kept past its TTL: asked again at most every DB_RETRY_AFTER s, a
refresh that hangs holds its request at most REFRESH_WAIT s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from blitzclawd import credentials
from blitzclawd.proxy.errors import ProxyError
from blitzclawd.proxy.leases import CHANNEL as LEASE_CHANNEL
from blitzclawd.proxy.leases import LeaseBook
from blitzclawd.proxy.settlement import database_trouble
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.proxy")

INSTANCE_CACHE_TTL = 30.0  # s; a backstop: changes are announced (NOTIFY) and drop the copy
DB_RETRY_AFTER = 1.0
REFRESH_WAIT = 2.0
INSTANCE_CHANNEL = "blitzclaw_instances"


@dataclass(frozen=True, slots=True)
class InstanceAuth:
    id: str
    user_id: str
    secret_hash: bytes
    status: str
    use_own_api_key: bool
    msgs_per_hour: int | None
    tokens_per_day: int | None
    status_reason: str | None
    fetched_at: float


def database_unavailable(cause: BaseException) -> ProxyError:
    """The refusal of a request that needs the database while it is unavailable."""
    log.info("request refused: the database is unavailable", extra={"error": type(cause).__name__})
    return ProxyError(
        503,
        "overloaded",
        "the BlitzClaw database is briefly unavailable; retry shortly",
        headers={"retry-after": "2"},
    )


class InstanceCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        leases: LeaseBook,
        *,
        failing: Callable[..., None],
        works: Callable[[str], None],
    ) -> None:
        self._pool = pool
        self._leases = leases
        self._failing = failing
        self._works = works
        self._copies: dict[str, InstanceAuth] = {}
        # Copies fetched before this (monotonic) time are re-read before use: announcements may
        # have been missed (the listener was down). While the database is down they still serve.
        self._stale_before = 0.0
        self._db_failed_at = -DB_RETRY_AFTER  # when a refresh last found the database down
        self._announcements = 0  # instance changes heard so far (see get)
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None
        self._lost_listener: asyncpg.pool.PoolConnectionProxy | None = None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def listen(self) -> None:
        """Hold one connection that LISTENs for instance changes; on loss, re-read every copy."""
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            if not database_trouble(exc):
                raise
            self._failing("listening for instance changes", exc)
            return
        try:
            await conn.add_listener(INSTANCE_CHANNEL, self._announced)
            await conn.add_listener(LEASE_CHANNEL, self._lease_note)
        except BaseException as exc:
            await self._pool.release(conn)
            if not isinstance(exc, Exception) or not database_trouble(exc):
                raise
            self._failing("listening for instance changes", exc)
            return
        self._works("listening for instance changes")
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn
        self._leases.listening(True)
        self._stale_before = time.monotonic()  # anything announced before now was not heard

    async def unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        self._leases.listening(False)
        try:
            conn.remove_termination_listener(self._listener_lost)
            await conn.remove_listener(INSTANCE_CHANNEL, self._announced)
            await conn.remove_listener(LEASE_CHANNEL, self._lease_note)
        finally:
            await self._pool.release(conn)

    def _announced(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._announcements += 1
        self._copies.pop(payload, None)

    async def release_lost_listener(self) -> None:
        """Give a listener connection that died back to the pool, which replaces it."""
        if self._lost_listener is not None:
            lost, self._lost_listener = self._lost_listener, None
            try:
                await self._pool.release(lost)
            except Exception as exc:  # a dead connection: the pool replaces it all the same
                if not database_trouble(exc):
                    raise

    def _lease_note(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._leases.notified(payload)

    def _listener_lost(self, _conn: object) -> None:
        log.warning("lost the instance-change listener; re-listening on the next tick")
        self._lost_listener, self._listener = self._listener, None
        self._leases.listening(False)
        self._announcements += 1
        # Re-read every copy before use; while the database is down, the copies still serve.
        self._stale_before = time.monotonic()

    def forget_user(self, user_id: str) -> None:
        """Drop the user's copies (e.g. their instances were just paused)."""
        for instance_id, inst in list(self._copies.items()):
            if inst.user_id == user_id:
                del self._copies[instance_id]

    async def authenticate(self, request: web.Request) -> InstanceAuth:
        found = credentials.from_headers(request.headers)
        if found is None:
            raise ProxyError(
                401, "authentication", "missing or malformed BlitzClaw instance credentials"
            )
        instance_id, secret = found
        inst = await self.get(str(instance_id))
        if inst is not None and not credentials.verify_secret(secret, inst.secret_hash):
            # Every deploy rotates the instance's secret: a cached hash may be the old one.
            inst = await self.get(str(instance_id), fresh=True)
        if inst is None or not credentials.verify_secret(secret, inst.secret_hash):
            raise ProxyError(401, "authentication", "invalid BlitzClaw instance credentials")
        if inst.status == "deleted":
            raise ProxyError(404, "not_found", "this instance has been deleted")
        if inst.use_own_api_key:
            raise ProxyError(
                403,
                "permission",
                "this instance uses its own API key and calls the provider directly",
            )
        return inst

    async def get(self, instance_id: str, *, fresh: bool = False) -> InstanceAuth | None:
        now = time.monotonic()
        cached = self._copies.get(instance_id)
        if (
            cached is not None
            and not fresh
            and now - cached.fetched_at < INSTANCE_CACHE_TTL
            and cached.fetched_at >= self._stale_before
        ):
            return cached
        fallback = cached if not fresh else None  # what serves if the database cannot answer
        if fallback is not None and now - self._db_failed_at < DB_RETRY_AFTER:
            return fallback
        heard = self._announcements
        try:
            async with asyncio.timeout(REFRESH_WAIT if fallback is not None else None):
                row = await self._pool.fetchrow(
                    "SELECT id::text, user_id::text, secret_hash, status, use_own_api_key, "
                    "msgs_per_hour, tokens_per_day, status_reason FROM instances WHERE id = $1",
                    uuid.UUID(instance_id),
                )
        except Exception as exc:
            if not dependency_unavailable(exc):  # (a timeout is: a hung connection attempt)
                raise
            self._db_failed_at = time.monotonic()
            if fallback is not None:
                return fallback  # the database cannot say otherwise: the copy we have serves
            raise database_unavailable(exc) from None
        if row is None:
            self._copies.pop(instance_id, None)
            return None
        inst = InstanceAuth(*row, fetched_at=now)
        # A change announced while we read may be newer than our row: use it, do not keep it.
        if self._announcements == heard:
            self._copies[instance_id] = inst
        return inst

    async def active(self, inst: InstanceAuth) -> InstanceAuth:
        """The instance, if it is active after all (the cached copy may be stale) or paused;
        else refuse."""
        fresh = await self.get(inst.id, fresh=True)
        status = fresh.status if fresh else "deleted"
        if fresh is not None and status == "active":
            return fresh
        if fresh is not None and status == "paused":
            return fresh  # serve() answers with a notice to top up
        if status == "deleted":
            raise ProxyError(404, "not_found", "this instance has been deleted")
        raise ProxyError(403, "permission", f"this instance is {status}")
