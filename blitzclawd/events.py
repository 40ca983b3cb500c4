"""The operators' live events: an in-process bus with bounded subscribers and a replay ring.

Each event has an id that grows across daemon restarts (milliseconds since the epoch x 1000 +
a counter), a type and a JSON object. A subscriber gets the events after the id it last saw
(`Last-Event-ID`) from the ring of recent events; if that id is older than the ring (or from
before this daemon started) it is told first that events were lost. A subscriber's queue is
bounded: one that does not read loses its oldest events, is told how many, and never slows the
publisher (publishing is a few appends, never an await).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

RING = 2000
QUEUE = 512


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]


@dataclass(eq=False)
class Subscription:
    queue: deque[Event] = field(default_factory=deque)
    lost: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    limit: int = QUEUE

    def offer(self, event: Event) -> None:
        if len(self.queue) >= self.limit:
            self.queue.popleft()
            self.lost += 1
        self.queue.append(event)
        self.wake.set()


class EventBus:
    def __init__(self, *, ring: int = RING, queue: int = QUEUE) -> None:
        self._ring: deque[Event] = deque(maxlen=ring)
        self._subscribers: set[Subscription] = set()
        self._queue = queue
        self._last = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _next_id(self) -> int:
        self._last = max(self._last + 1, int(time.time() * 1000) * 1000)
        return self._last

    def publish(self, type_: str, data: dict[str, Any]) -> Event:
        event = Event(self._next_id(), type_, data)
        self._ring.append(event)
        for sub in self._subscribers:
            sub.offer(event)
        return event

    async def subscribe(
        self, last_id: int | None, *, heartbeat: float = 15.0
    ) -> AsyncIterator[Event | None]:
        """Events after `last_id` (replayed from the ring), then live ones; None is a heartbeat
        (nothing happened for `heartbeat` seconds). A gap is an event of type "lost"."""
        sub = Subscription(limit=self._queue)
        self._subscribers.add(sub)
        try:
            if last_id is not None:
                oldest = self._ring[0].id if self._ring else None
                if oldest is None or last_id < oldest - 1:
                    # Older than what this daemon remembers (or it restarted since): a gap.
                    yield Event(self._next_id(), "lost", {"since": last_id})
                for event in list(self._ring):
                    if event.id > last_id:
                        sub.offer(event)
            while True:
                if sub.lost:
                    lost, sub.lost = sub.lost, 0
                    yield Event(self._next_id(), "lost", {"dropped": lost})
                if sub.queue:
                    yield sub.queue.popleft()
                    continue
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat)
                except TimeoutError:
                    yield None
        finally:
            self._subscribers.discard(sub)
