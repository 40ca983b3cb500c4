"""Singleton: checks every active instance's gateway over SSH, restarts it on evidence, gives up,
alerts.

Every `health_interval` seconds one sweep runs over the instances that are `active` and have no
job queued or running (a deploy in progress is not an outage). Each check runs `curl -fsS
--max-time <health_timeout> http://127.0.0.1:18789/readyz` on the instance's server over SSH with
the server's pinned host key (blitzclawd.fleet.health_probe); the checks' starts are spread over
`health_spread` seconds rather than fired at once, at most `health_concurrency` run at once, and
the SSH connection to a server is kept between sweeps.

A restart needs evidence that the gateway is unhealthy, never a single timeout or a connection
error of our own making:
- the gateway said so (not_ready: /readyz answered an error, curl exit 22; down: nothing listens,
  curl exit 7): restarted at once;
- it did not answer in time (timeout) `health_timeouts_before_restart` checks in a row (sweeps
  are `health_interval` apart): restarted then, and not before (a slow sweep, an overloaded
  server or a blip is reported, not acted on);
- we could not reach the server over SSH (unreachable): never restarted (a restart could not be
  sent either); reported, and alerted as `unreachable` to the operators (not the owner: it says
  nothing about their assistant) once it lasts `health_down_alert_after`.
A healthy answer slower than `health_slow_after` is ok, reported as slow. A restart waits up to
`health_restart_timeout` for /readyz, at most `health_max_restarts` times since the instance was
last healthy; the next failure with evidence after that puts the instance in `error` with the
reason and raises an alert. An outage (with evidence) longer than `health_down_alert_after`
raises a `down` alert (once per outage). Alerts are an error-level log line and a `health_alerts`
row; for `down` and `error` the instance's owner is emailed (the notifier's `instance_error`,
once per alert, in words for them: the technical detail stays in the row and the log). The last
result of every instance is in `instance_health` (GET /api/health/instances), written for the
whole sweep in one set-based statement.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from blitzclawd.config import FleetSettings
from blitzclawd.fleet import remote
from blitzclawd.fleet.health_probe import Checker, Probe
from blitzclawd.queries import health
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Notify, SweepNow, Tick

log = logging.getLogger("blitzclawd.health")


@dataclass(frozen=True, slots=True)
class SweepReport:
    checked: int = 0
    ok: int = 0  # healthy, not restarted (slow ones included)
    slow: int = 0  # healthy, but answered after health_slow_after
    timeouts: int = 0  # no answer in time, not (yet) restarted
    unreachable: int = 0  # no SSH: never restarted
    restarted: int = 0
    recovered: int = 0
    errored: int = 0
    alerts: int = 0
    seconds: float = 0.0


class HealthMonitor(Actor):
    def __init__(
        self,
        pool: asyncpg.Pool,
        cfg: FleetSettings,
        ssh_key: Callable[[], Any],
        *,
        notify: Callable[[object], None] | None = None,
    ) -> None:
        super().__init__("health-monitor")
        self._pool = pool
        self._cfg = cfg
        self._notify = notify  # the notifier: each alert is emailed to the instance's owner
        self.checker = Checker(
            ssh_key, connect_timeout=cfg.ssh_connect_timeout, concurrency=cfg.health_concurrency
        )
        self._lock = asyncio.Lock()
        self.last_report: SweepReport | None = None

    async def on_start(self) -> None:
        self.every(self._cfg.health_interval, "health")

    async def on_stop(self) -> None:
        await self.checker.close()

    async def handle(self, message: object) -> SweepReport | None:
        if isinstance(message, (Tick, SweepNow)):
            return await self.sweep(spread=isinstance(message, Tick))
        return None

    async def sweep(self, *, spread: bool = True) -> SweepReport:
        """One sweep; `spread`: starts spread over health_spread (an operator's "sweep now"
        runs at once)."""
        async with self._lock:
            started = time.monotonic()
            rows = await health.to_check(self._pool, self._cfg.health_down_alert_after)
            targets = {row["id"]: self._target(row) for row in rows}
            self.checker.retain(set(targets.values()))
            # Never longer than half the interval: the next sweep must not queue behind this one.
            # Started in one batch a second (not one by one: each wake-up has its cost, and a
            # trickle of single checks took three times the CPU of batches in bench/fleet.py).
            window = min(self._cfg.health_spread, self._cfg.health_interval / 2) if spread else 0
            batch = max(1, math.ceil(len(rows) / window)) if window >= 1 else max(1, len(rows))
            outcomes = await asyncio.gather(
                *(
                    self._check(row, targets[row["id"]], started + (n // batch))
                    for n, row in enumerate(rows)
                )
            )
            results = [o for o in outcomes if o is not None]
            await self._record(results)
            report = SweepReport(
                checked=len(rows),
                ok=sum(1 for r in results if r.ok and not r.restarted),
                slow=sum(1 for r in results if r.slow),
                timeouts=sum(1 for r in results if r.state == "timeout"),
                unreachable=sum(1 for r in results if r.state == "unreachable"),
                restarted=sum(1 for r in results if r.restarted),
                recovered=sum(1 for r in results if r.ok and r.restarted),
                errored=sum(1 for r in results if r.state == "error"),
                alerts=sum(1 for r in results if r.alert is not None),
                seconds=round(time.monotonic() - started, 3),
            )
            self.last_report = report
            if report.restarted or report.errored or report.alerts or report.unreachable:
                log.info("health sweep", extra={"report": str(report)})
            return report

    def _target(self, row: asyncpg.Record) -> remote.Target:
        return remote.Target(row["ip"], self._cfg.ssh_port, row["ssh_host_key"])

    async def _check(self, row: asyncpg.Record, target: remote.Target, at: float) -> _Result | None:
        cfg = self._cfg
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        probe = await self.checker.probe(target, timeout=cfg.health_timeout)
        iid, restarts, failures = row["id"], row["restarts"], row["failures"]
        if probe.ok:
            slow = probe.seconds > cfg.health_slow_after
            detail = f"slow: /readyz answered in {probe.seconds:.1f}s" if slow else None
            return _Result(iid, True, "ok", detail, 0, seconds=probe.seconds, slow=slow)
        if probe.state == "unreachable":
            # Nothing known about the gateway, nothing to restart with: say so, keep the counts.
            alert = None
            if row["down_long"] and row["alerted_at"] is None:
                alert = ("unreachable", f"unreachable since {row['down_since'].isoformat()}")
            return _Result(
                iid, False, "unreachable", probe.detail[:500], restarts, failures, alert=alert
            )
        if probe.state == "timeout":
            failures += 1
            if failures < cfg.health_timeouts_before_restart:
                detail = f"{probe.detail} ({failures} in a row)"[:500]
                return _Result(iid, False, "timeout", detail, restarts, failures)
        return await self._restart(row, target, probe, failures)

    async def _restart(
        self, row: asyncpg.Record, target: remote.Target, probe: Probe, failures: int
    ) -> _Result | None:
        """The gateway is unhealthy on evidence: restart it, or give up after the maximum.
        None (nothing done or recorded) when the instance changed since the sweep's query: a
        gateway its owner just stopped is down, and must stay so."""
        cfg, iid, restarts = self._cfg, row["id"], row["restarts"]
        if not await health.still_checked(self._pool, iid):
            return None
        if restarts >= cfg.health_max_restarts:
            reason = f"health: still failing after {restarts} automatic restarts: {probe.detail}"
            return _Result(
                iid, False, "error", reason[:500], restarts, failures, alert=("error", reason[:500])
            )
        why = await self.checker.restart(target, timeout=cfg.health_restart_timeout)
        restarts += 1
        if why is None:
            detail = f"restarted (automatic restart {restarts}): {probe.detail}"[:500]
            return _Result(iid, True, "ok", detail, restarts, restarted=True)
        detail = f"{probe.detail}; restart {restarts} failed: {why}"[:500]
        alert = None
        if row["down_long"] and row["alerted_at"] is None:
            alert = ("down", f"down since {row['down_since'].isoformat()}: {detail}")
        return _Result(
            iid, False, probe.state, detail, restarts, failures, restarted=True, alert=alert
        )

    async def _record(self, results: list[_Result]) -> None:
        if not results:
            return
        alerts: list[tuple[int, uuid.UUID, str]] = []  # (alert id, instance, kind)
        async with self._pool.acquire() as conn, conn.transaction():
            await health.record(
                conn,
                [
                    health.Checked(
                        r.instance_id,
                        r.ok,
                        r.state,
                        r.detail,
                        r.restarts,
                        r.failures,
                        r.alert is not None,
                        None if r.seconds is None else round(r.seconds * 1000),
                    )
                    for r in results
                ],
            )
            for r in results:
                if r.state == "error":
                    await health.mark_error(conn, r.instance_id, r.detail or "")
                if r.alert is not None:
                    kind, detail = r.alert
                    alert_id = await health.add_alert(conn, r.instance_id, kind, detail)
                    alerts.append((alert_id, r.instance_id, kind))
        owners_told = [a for a in alerts if a[2] in _OWNER_TEXT]
        if owners_told and self._notify is not None:
            await self._tell_owners(owners_told)
        for r in results:
            if r.alert is not None:
                log.error(
                    "ALERT: server unreachable"
                    if r.alert[0] == "unreachable"
                    else "ALERT: instance unhealthy",
                    extra={"instance": str(r.instance_id), "alert": r.alert[0], "detail": r.detail},
                )

    async def _tell_owners(self, alerts: list[tuple[int, uuid.UUID, str]]) -> None:
        """Email each alert to the instance's owner, once per alert (its id is the period)."""
        assert self._notify is not None
        owners = {
            r["id"]: r
            for r in await health.owners(self._pool, [instance for _, instance, _ in alerts])
        }
        for alert_id, instance, kind in alerts:
            row = owners.get(instance)
            if row is None:
                continue
            bot = (row["channel_config"] or {}).get("bot_username")
            name = f"@{bot}" if bot else f"assistant {str(instance)[:8]}"
            self._notify(
                Notify(
                    row["user_id"],
                    "instance_error",
                    f"alert:{alert_id}",
                    {
                        "instance_name": name,
                        "error": _OWNER_TEXT[kind],
                    },
                )
            )


# What the owner reads: their assistant's state in their words (the detail, with hosts, exit
# codes and commands, stays in health_alerts and the logs).
_OWNER_TEXT = {
    "down": "it has stopped answering messages; we are restarting it",
    "error": "it stopped answering messages, and three automatic restarts did not bring it back",
}


@dataclass(slots=True)
class _Result:
    instance_id: uuid.UUID
    ok: bool
    state: str
    detail: str | None
    restarts: int
    failures: int = 0  # timeouts in a row
    restarted: bool = False
    alert: tuple[str, str] | None = None
    seconds: float | None = None  # the healthy answer's time
    slow: bool = False
