"""Feeds the operators' live events (blitzclawd.events) while someone listens: once a second,
this daemon's actors (state and restarts, from its supervision tree), its proxy (requests,
errors, revenue, and the median and 95th percentile latency - each the upper bound of its
histogram bucket - in that second, from its metrics), and what changed in the fleet - read from
the shared database, so events from every daemon's work reach every daemon's listeners:
instance and pool server status, health results and alerts, usage spikes, balances that ran
out (their instances paused), webhook events. It stops when the last listener leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from typing import TYPE_CHECKING, Any

from blitzclawd.queries import events as rows
from blitzclawd.runtime.outage import dependency_unavailable

if TYPE_CHECKING:
    from blitzclawd.context import DaemonContext

log = logging.getLogger("blitzclawd.events")
PERIOD = 1.0


class EventWatch:
    def __init__(self, ctx: DaemonContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # its first look taken: changes after this are reported
        self._actors: dict[str, tuple[str, int]] = {}
        self._proxy: tuple[float, float, float] | None = None
        self._latency: dict[float, float] = {}  # the latency histogram's cumulative counts

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self.ready.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        bus = self._ctx.events
        since: dt.datetime | None = None
        while bus.subscribers:
            try:
                self._actor_events()
                self._proxy_summary()
                until = await rows.now(self._ctx.pool)
                if since is not None:
                    for kind, row in await rows.changes(self._ctx.pool, since, until):
                        bus.publish(kind, _plain(row))
                since = until
                self.ready.set()
            except Exception as exc:  # a database outage: the next second tries again
                if not dependency_unavailable(exc):
                    log.warning("event watch failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(PERIOD)

    def _actor_events(self) -> None:
        supervisor = self._ctx.supervisor
        if supervisor is None:
            return
        for status in supervisor.status():
            now = (status.state, status.restarts)
            if self._actors.get(status.name) != now:
                if status.name in self._actors:  # the first look is a baseline, not news
                    self._ctx.events.publish(
                        "actor",
                        {"name": status.name, "state": status.state, "restarts": status.restarts},
                    )
                self._actors[status.name] = now

    def _proxy_summary(self) -> None:
        totals = _proxy_totals(self._ctx.metrics)
        latency = _latency_buckets(self._ctx.metrics)
        if self._proxy is not None:
            requests, errors, revenue = (a - b for a, b in zip(totals, self._proxy, strict=True))
            if requests:
                second = {le: n - self._latency.get(le, 0.0) for le, n in latency.items()}
                self._ctx.events.publish(
                    "proxy",
                    {
                        "requests": int(requests),
                        "errors": int(errors),
                        "revenue_usd": round(revenue, 6),
                        "seconds": PERIOD,
                        "p50_ms": quantile_ms(second, 0.5),
                        "p95_ms": quantile_ms(second, 0.95),
                    },
                )
        self._proxy = totals
        self._latency = latency


def _proxy_totals(metrics: Any) -> tuple[float, float, float]:
    requests = errors = revenue = 0.0
    for family in metrics.proxy_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                requests += sample.value
                if sample.labels.get("status") != "200":
                    errors += sample.value
    for family in metrics.charged.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                revenue += sample.value
    return requests, errors, revenue


def _latency_buckets(metrics: Any) -> dict[float, float]:
    """The proxy's request-duration histogram, every API summed: upper bound (s) -> how many
    requests took at most that long (cumulative, as Prometheus keeps it)."""
    buckets: dict[float, float] = {}
    for family in metrics.proxy_seconds.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def quantile_ms(cumulative: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the `q` quantile of what a histogram's
    cumulative counts (one second's delta) hold; None when they hold nothing, or when it lies
    beyond the largest finite bound."""
    count = cumulative.get(math.inf, 0.0)
    if count <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * count:
            return None if math.isinf(le) else round(le * 1000, 3)
    return None


def _plain(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in dict(row).items()}
