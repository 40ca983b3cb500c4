"""Instance health (`instance_health`, `health_alerts`): what the health monitor checks and
records, and what operators read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

_SWEEP_ROWS = """
SELECT i.id, host(s.ip_address) AS ip, s.ssh_host_key,
       coalesce(h.restarts, 0) AS restarts, coalesce(h.failures, 0) AS failures,
       h.down_since, h.alerted_at,
       h.down_since IS NOT NULL
         AND h.down_since < now() - make_interval(secs => $1) AS down_long
FROM instances i
JOIN server_pool s ON s.id = i.server_id
LEFT JOIN instance_health h ON h.instance_id = i.id
WHERE i.status = 'active' AND i.deleted_at IS NULL
  AND s.ip_address IS NOT NULL AND s.ssh_host_key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM instance_jobs j
                  WHERE j.instance_id = i.id AND j.status IN ('queued', 'running'))
"""

# One statement for a whole sweep (10,000 rows: one round trip, one plan).
_RECORD = """
WITH checked AS (
    SELECT * FROM unnest($1::uuid[], $2::boolean[], $3::text[], $4::text[], $5::int[],
                         $6::int[], $7::boolean[], $8::int[])
        AS c(instance_id, ok, state, detail, restarts, failures, alerting, answer_ms)
), written AS (
    INSERT INTO instance_health AS h
        (instance_id, checked_at, ok, state, detail, restarts, failures, answer_ms, down_since,
         alerted_at)
    SELECT instance_id, now(), ok, state, detail, restarts, failures, answer_ms,
           CASE WHEN ok THEN NULL ELSE now() END, CASE WHEN alerting THEN now() END
    FROM checked
    ON CONFLICT (instance_id) DO UPDATE SET
        checked_at = now(), ok = EXCLUDED.ok, state = EXCLUDED.state, detail = EXCLUDED.detail,
        restarts = EXCLUDED.restarts, failures = EXCLUDED.failures,
        answer_ms = EXCLUDED.answer_ms,
        down_since = CASE WHEN EXCLUDED.ok THEN NULL ELSE coalesce(h.down_since, now()) END,
        alerted_at = CASE WHEN EXCLUDED.ok THEN NULL
                          WHEN EXCLUDED.alerted_at IS NOT NULL THEN now()
                          ELSE h.alerted_at END
)
UPDATE instances SET last_health_check = now()
WHERE id IN (SELECT instance_id FROM checked)
"""


class Checked(NamedTuple):
    """One check's result as the monitor records it."""

    instance_id: uuid.UUID
    ok: bool
    state: str  # ok | not_ready | down | timeout | unreachable | error
    detail: str | None
    restarts: int  # automatic restarts since it was last healthy
    failures: int  # timeouts in a row
    alerting: bool  # an alert is raised for this outage now
    answer_ms: int | None  # how long a healthy /readyz took


async def to_check(db: Executor, down_alert_after: float) -> list[asyncpg.Record]:
    """Active instances with a ready server and no job queued or running: id, ip, ssh_host_key,
    restarts, failures, down_since, alerted_at, down_long (failing for `down_alert_after` s)."""
    return await db.fetch(_SWEEP_ROWS, down_alert_after)


async def still_checked(db: Executor, instance_id: uuid.UUID) -> bool:
    """Still as the sweep found it: active, no job queued or running (a sweep's checks start
    up to health_spread seconds after its query; the owner may have stopped it since)."""
    return bool(
        await db.fetchval(
            """SELECT true FROM instances i
               WHERE i.id = $1 AND i.status = 'active' AND i.deleted_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM instance_jobs j WHERE j.instance_id = i.id
                                 AND j.status IN ('queued', 'running'))""",
            instance_id,
        )
    )


async def record(conn: asyncpg.Connection, results: Sequence[Checked]) -> None:
    """A sweep's results, and the time of the check on the instances, in one statement."""
    columns = list(zip(*results, strict=True)) if results else [[] for _ in Checked._fields]
    await conn.execute(_RECORD, *(list(column) for column in columns))


async def mark_error(conn: asyncpg.Connection, instance_id: uuid.UUID, detail: str) -> None:
    """An active instance found broken beyond a restart: in error."""
    await conn.execute(
        """UPDATE instances SET status = 'error', status_reason = $2
           WHERE id = $1 AND status = 'active'""",
        instance_id,
        detail,
    )


async def add_alert(
    conn: asyncpg.Connection, instance_id: uuid.UUID, kind: str, detail: str
) -> int:
    return await conn.fetchval(
        "INSERT INTO health_alerts (instance_id, kind, detail) VALUES ($1, $2, $3) RETURNING id",
        instance_id,
        kind,
        detail,
    )


async def owners(db: Executor, instance_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """id, user_id and channel_config of each instance (for the alert emails)."""
    return await db.fetch(
        "SELECT id, user_id::text, channel_config FROM instances WHERE id = ANY($1::uuid[])",
        instance_ids,
    )


async def health_results(db: Executor, limit: int = 10_000) -> list[asyncpg.Record]:
    """The health monitor's last result for every live instance, worst first."""
    return await db.fetch(
        """SELECT h.instance_id::text, i.user_id::text, i.status AS instance_status,
                  i.status_reason, host(i.ip_address) AS ip_address, h.ok, h.state, h.detail,
                  h.restarts, h.failures, h.answer_ms, h.checked_at, h.down_since,
                  h.alerted_at
           FROM instance_health h JOIN instances i ON i.id = h.instance_id
           WHERE i.deleted_at IS NULL
           ORDER BY h.ok, h.down_since NULLS LAST, h.checked_at DESC
           LIMIT $1""",
        limit,
    )


async def recent_health_alerts(db: Executor, limit: int = 100) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT instance_id::text, kind, detail, created_at FROM health_alerts
           ORDER BY id DESC LIMIT $1""",
        limit,
    )
