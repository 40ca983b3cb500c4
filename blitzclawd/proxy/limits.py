"""Per-instance abuse limits (spec "Abuse Prevention"): requests per hour, tokens per UTC day.

Counters live in memory, seeded once per instance from usage_logs, so the hot path does no query.
With several daemons each enforces its own view (seeded from the shared history), which can let
an instance exceed a limit by at most the traffic other daemons served since the seed.
A limit of 0 disables it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

HOUR = 3600.0
DAY = 86400.0

# instance id -> (request times in the last hour as epoch seconds, tokens used today)
Seeder = Callable[[str], Awaitable[tuple[list[float], int]]]


@dataclass(slots=True)
class _Window:
    requests: deque[float] = field(default_factory=deque)
    day: int = 0  # days since the epoch (UTC) that `tokens` counts
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # "messages_per_hour" | "tokens_per_day"
    retry_after: int  # seconds
    message: str


class LimitTracker:
    def __init__(self, seed: Seeder, *, clock: Callable[[], float] = time.time) -> None:
        self._seed = seed
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._seeding: dict[str, asyncio.Future[_Window]] = {}

    async def _window(self, instance_id: str) -> _Window:
        window = self._windows.get(instance_id)
        if window is not None:
            return window
        pending = self._seeding.get(instance_id)
        if pending is None:  # first request of this instance: one seed query, shared
            pending = asyncio.ensure_future(self._load(instance_id))
            self._seeding[instance_id] = pending
        return await asyncio.shield(pending)

    async def _load(self, instance_id: str) -> _Window:
        try:
            times, tokens = await self._seed(instance_id)
            window = _Window(deque(sorted(times)), int(self._clock() // DAY), tokens)
            self._windows[instance_id] = window
            return window
        finally:
            self._seeding.pop(instance_id, None)

    async def admit(
        self, instance_id: str, msgs_per_hour: int, tokens_per_day: int
    ) -> Refusal | None:
        """Count one request, unless a limit is reached (then count nothing, say when to retry)."""
        window = await self._window(instance_id)
        now = self._clock()
        self._roll(window, now)
        if tokens_per_day and window.tokens >= tokens_per_day:
            retry = int((window.day + 1) * DAY - now) + 1
            return Refusal(
                "tokens_per_day",
                retry,
                f"daily token limit of {tokens_per_day} reached for this instance",
            )
        if msgs_per_hour and len(window.requests) >= msgs_per_hour:
            retry = int(window.requests[0] + HOUR - now) + 1
            return Refusal(
                "messages_per_hour",
                max(retry, 1),
                f"hourly limit of {msgs_per_hour} messages reached for this instance",
            )
        window.requests.append(now)
        return None

    def add_tokens(self, instance_id: str, tokens: int) -> None:
        window = self._windows.get(instance_id)
        if window is None:
            return
        self._roll(window, self._clock())
        window.tokens += tokens

    def _roll(self, window: _Window, now: float) -> None:
        horizon = now - HOUR
        requests = window.requests
        while requests and requests[0] <= horizon:
            requests.popleft()
        today = int(now // DAY)
        if today != window.day:
            window.day, window.tokens = today, 0


async def usage_window(pool: asyncpg.Pool, instance_id: str) -> tuple[list[float], int]:
    """What seeds an instance's limits: the times of its requests in the last hour, and its
    tokens since midnight UTC."""
    row = await pool.fetchrow(
        """SELECT
             array(SELECT extract(epoch FROM created_at)::float8 FROM usage_logs
                   WHERE instance_id = $1 AND created_at > now() - interval '1 hour'),
             coalesce((SELECT sum(input_tokens + output_tokens + cache_write_5m_tokens
                                  + cache_write_1h_tokens + cache_read_tokens)
                       FROM usage_logs WHERE instance_id = $1
                         AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC')
                                           AT TIME ZONE 'UTC'), 0)::bigint""",
        uuid.UUID(instance_id),
    )
    return list(row[0]), int(row[1])
