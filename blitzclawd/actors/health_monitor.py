"""Singleton: checks every active instance's gateway over SSH, restarts it, gives up, alerts.

Every `health_interval` seconds one sweep runs over the instances that are `active` and have no
job queued or running (a deploy in progress is not an outage). Each check runs `curl -fsS
http://127.0.0.1:18789/readyz` on the instance's server over SSH with the server's pinned host
key; at most `health_concurrency` checks run at once, each bounded by `health_timeout`, and the
SSH connection to a server is kept between sweeps (a dead one is replaced once, at once).

A failing check (curl exit 22: the gateway answers but is not ready, e.g. a broken channel;
exit 7: nothing listens; no SSH at all) restarts the gateway and waits up to
`health_restart_timeout` for /readyz, at most `health_max_restarts` times since the instance
was last healthy; the next failure after that puts the instance in `error` with the reason and
raises an alert. An outage longer than `health_down_alert_after` raises an alert too (once per
outage). Alerts are an error-level log line and a `health_alerts` row, and the instance's owner is
emailed (the notifier's `instance_error`, once per alert, in words for them: the technical detail
stays in the row and the log); the last result of every instance is in `instance_health`
(GET /api/health/instances).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import asyncssh

from blitzclawd.config import FleetSettings
from blitzclawd.fleet import remote
from blitzclawd.queries import health
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Notify, SweepNow, Tick

log = logging.getLogger("blitzclawd.health")

CURL_HTTP_ERROR = 22  # -f: the gateway answered with an error status (starting, channel broken)
CURL_CONNECT = 7  # nothing listens on the gateway port


@dataclass(frozen=True, slots=True)
class Probe:
    """One /readyz check: state is ok | not_ready | down | unreachable."""

    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class Checker:
    """The SSH side of the monitor, without the database: pooled connections and probes."""

    def __init__(
        self, client_key: Callable[[], Any], *, connect_timeout: float, concurrency: int
    ) -> None:
        self._client_key = client_key
        self._connect_timeout = connect_timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._conns: dict[remote.Target, asyncssh.SSHClientConnection] = {}
        self.connects = 0  # new SSH connections opened (reuse shows as few)

    async def _conn(self, target: remote.Target) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(target)
        if conn is not None and not conn.is_closed():
            return conn
        self._conns.pop(target, None)
        conn = await remote.connect(target, self._client_key(), timeout=self._connect_timeout)
        self.connects += 1
        self._conns[target] = conn
        return conn

    def _drop(self, target: remote.Target) -> None:
        conn = self._conns.pop(target, None)
        if conn is not None:
            conn.close()

    async def _run(self, target: remote.Target, command: str) -> asyncssh.SSHCompletedProcess:
        """Run on a kept connection; a stale one (server restarted, idle cut) is replaced once."""
        for attempt in (1, 2):
            conn = await self._conn(target)
            try:
                return await conn.run(command, check=False)
            except (OSError, asyncssh.Error) as exc:
                self._drop(target)
                if attempt == 2:
                    raise remote.RemoteError(f"ssh: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def probe(self, target: remote.Target, *, timeout: float) -> Probe:  # noqa: ASYNC109
        async with self._sem:
            try:
                async with asyncio.timeout(timeout):
                    result = await self._run(target, remote.READYZ)
            except TimeoutError:
                self._drop(target)
                return Probe("unreachable", f"no answer within {timeout:g}s")
            except remote.RemoteError as exc:
                return Probe("unreachable", str(exc))
        code = result.exit_status
        if code == 0:
            return Probe("ok")
        err = str(result.stderr or "").strip()[:200]
        if code == CURL_HTTP_ERROR:
            return Probe("not_ready", f"/readyz failed (curl exit 22): {err}")
        if code == CURL_CONNECT:
            return Probe("down", f"the gateway is not listening (curl exit 7): {err}")
        return Probe("down", f"/readyz check exited {code}: {err}")

    async def restart(self, target: remote.Target, *, timeout: float) -> str | None:  # noqa: ASYNC109
        """Restart the gateway and wait for /readyz; None when it came back, else why not."""
        async with self._sem:
            try:
                async with asyncio.timeout(timeout + self._connect_timeout):
                    conn = await self._conn(target)
                    await remote.restart_and_wait(conn, timeout=timeout)
            except TimeoutError:
                self._drop(target)
                return f"the restart did not finish within {timeout:g}s"
            except remote.RemoteError as exc:
                return str(exc)
            except (OSError, asyncssh.Error) as exc:
                self._drop(target)
                return f"ssh: {type(exc).__name__}"
        return None

    def retain(self, targets: set[remote.Target]) -> None:
        """Close the connections of servers no longer checked."""
        for target in [t for t in self._conns if t not in targets]:
            self._drop(target)

    async def close(self) -> None:
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()


@dataclass(frozen=True, slots=True)
class SweepReport:
    checked: int = 0
    ok: int = 0
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
            return await self.sweep()
        return None

    async def sweep(self) -> SweepReport:
        async with self._lock:
            started = time.monotonic()
            rows = await health.to_check(self._pool, self._cfg.health_down_alert_after)
            targets = {row["id"]: self._target(row) for row in rows}
            self.checker.retain(set(targets.values()))
            outcomes = await asyncio.gather(*(self._check(row, targets[row["id"]]) for row in rows))
            results = [o for o in outcomes if o is not None]
            await self._record(results)
            report = SweepReport(
                checked=len(rows),
                ok=sum(1 for r in results if r.ok and not r.restarted),
                restarted=sum(1 for r in results if r.restarted),
                recovered=sum(1 for r in results if r.ok and r.restarted),
                errored=sum(1 for r in results if r.state == "error"),
                alerts=sum(1 for r in results if r.alert is not None),
                seconds=round(time.monotonic() - started, 3),
            )
            self.last_report = report
            if report.restarted or report.errored or report.alerts:
                log.info("health sweep", extra={"report": str(report)})
            return report

    def _target(self, row: asyncpg.Record) -> remote.Target:
        return remote.Target(row["ip"], self._cfg.ssh_port, row["ssh_host_key"])

    async def _check(self, row: asyncpg.Record, target: remote.Target) -> _Result:
        cfg = self._cfg
        probe = await self.checker.probe(target, timeout=cfg.health_timeout)
        if probe.ok:
            return _Result(row["id"], True, "ok", None, 0)
        restarts = row["restarts"]
        if restarts >= cfg.health_max_restarts:
            reason = (f"health: still failing after {restarts} automatic restarts: {probe.detail}")[
                :500
            ]
            return _Result(row["id"], False, "error", reason, restarts, alert=("error", reason))
        why = await self.checker.restart(target, timeout=cfg.health_restart_timeout)
        restarts += 1
        if why is None:
            detail = f"restarted (automatic restart {restarts}): {probe.detail}"[:500]
            return _Result(row["id"], True, "ok", detail, restarts, restarted=True)
        detail = f"{probe.detail}; restart {restarts} failed: {why}"[:500]
        alert = None
        if row["down_long"] and row["alerted_at"] is None:
            alert = ("down", f"down since {row['down_since'].isoformat()}: {detail}")
        return _Result(row["id"], False, probe.state, detail, restarts, restarted=True, alert=alert)

    async def _record(self, results: list[_Result]) -> None:
        if not results:
            return
        alerts: list[tuple[int, uuid.UUID, str]] = []  # (alert id, instance, kind)
        async with self._pool.acquire() as conn, conn.transaction():
            await health.record(
                conn,
                [
                    (r.instance_id, r.ok, r.state, r.detail, r.restarts, r.alert is not None)
                    for r in results
                ],
            )
            for r in results:
                if r.state == "error":
                    await health.mark_error(conn, r.instance_id, r.detail)
                if r.alert is not None:
                    kind, detail = r.alert
                    alert_id = await health.add_alert(conn, r.instance_id, kind, detail)
                    alerts.append((alert_id, r.instance_id, kind))
        if alerts and self._notify is not None:
            await self._tell_owners(alerts)
        for r in results:
            if r.alert is not None:
                log.error(
                    "ALERT: instance unhealthy",
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
    restarted: bool = False
    alert: tuple[str, str] | None = None
