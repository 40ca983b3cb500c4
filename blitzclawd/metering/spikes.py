"""Usage spike alerts (config [alerts]): an instance spending far above its own recent hourly
baseline — a runaway loop, a leaked bot, a prompt that makes the agent call tools forever —
is told to its owner by email and to operators (a warning log line, the live events' `spike`,
an email to each of alerts.operator_emails), once per instance per clock hour; optionally it is
paused at once (`spike_pause`).

Run on every janitor sweep (a singleton: one daemon checks); the hour's UNIQUE row makes the
"once" hold across sweeps and daemons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg

from blitzclawd.config import Settings, usd_to_micros
from blitzclawd.notify.operators import queue_for_operators
from blitzclawd.notify.queue import queue_notification
from blitzclawd.queries import spikes as rows
from blitzclawd.runtime.messages import Fact, NotificationQueued, Notify

log = logging.getLogger("blitzclawd.alerts")


async def check_spikes(
    pool: asyncpg.Pool, settings: Settings, notify: Callable[[object], object] | None = None
) -> int:
    """Alerts raised now (0 when nothing spikes, or this hour already alerted)."""
    cfg = settings.alerts
    floor = usd_to_micros("alerts.spike_floor_usd", cfg.spike_floor_usd)
    raised = 0
    for row in await rows.spikes(pool, cfg.spike_factor, max(floor, 1), cfg.spike_baseline_hours):
        pause = cfg.spike_pause and row["status"] == "active"
        async with pool.acquire() as conn, conn.transaction():
            window = await rows.record(
                conn, row["instance_id"], row["spent"], row["baseline"], pause
            )
            if window is None:
                continue
            period = f"spike:{row['instance_id']}:{window.isoformat()}"
            owner = await queue_notification(
                conn,
                Notify(
                    row["user_id"],
                    "usage_spike",
                    period,
                    {
                        "instance_name": f"assistant {row['instance_id'][:8]}",
                        "spent_micros": row["spent"],
                        "baseline_micros": row["baseline"],
                        "paused": pause,
                    },
                ),
            )
            operators = await queue_for_operators(
                conn,
                cfg.operator_emails,
                Notify(row["user_id"], "operator_usage_spike", period, _operator_facts(row, pause)),
            )
        raised += 1
        log.warning(
            "usage spike",
            extra={
                "instance": row["instance_id"],
                "spent_micros": row["spent"],
                "baseline_micros": row["baseline"],
                "paused": pause,
            },
        )
        if notify is not None:
            for queued in ([owner] if owner is not None else []) + operators:
                notify(NotificationQueued(queued))
    return raised


def _operator_facts(row: asyncpg.Record, paused: bool) -> dict[str, Fact]:
    facts: dict[str, Fact] = {
        "instance_id": row["instance_id"],
        "user_id": row["user_id"],
        "spent_micros": row["spent"],
        "baseline_micros": row["baseline"],
        "paused": paused,
    }
    if row["owner_email"]:
        facts["owner_email"] = row["owner_email"]
    return facts
