"""Usage spike alerts (issue 14): real proxied requests through the fake upstream make an
instance's last hour far above its (empty) baseline; the check raises exactly one alert per
instance per hour window, emails the owner, pauses it when configured, and leaves a quiet
instance alone; tiny spenders stay under the floor."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from blitzclawd.config import AlertsSettings
from blitzclawd.metering.spikes import check_spikes
from blitzclawd.testing import seed

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Say hi"}],
}


async def test_one_alert_per_instance_per_window(proxy_env: Any) -> None:
    env = proxy_env
    quiet = await seed.create_instance(env.pool, env.instance.user_id)
    for _ in range(3):
        resp = await env.post("/v1/messages", BODY)
        assert resp.status == 200
        await resp.read()
    await env.settled()
    spent = await env.pool.fetchval("SELECT sum(cost_micros)::bigint FROM usage_logs")
    assert spent > 0

    # A floor above what was spent: nobody alerts.
    high = dataclasses.replace(
        env.daemon.settings,
        alerts=AlertsSettings(spike_floor_usd=float(spent + 1_000_000) / 1e6),
    )
    assert await check_spikes(env.pool, high) == 0

    settings = dataclasses.replace(
        env.daemon.settings, alerts=AlertsSettings(spike_floor_usd=0.000001, spike_pause=True)
    )
    assert await check_spikes(env.pool, settings) == 1
    assert await check_spikes(env.pool, settings) == 0  # the same window: no second alert
    alerts = await env.pool.fetch(
        "SELECT instance_id::text, spent_micros, paused FROM spend_alerts"
    )
    assert [(a["instance_id"], a["spent_micros"], a["paused"]) for a in alerts] == [
        (env.instance.id, spent, True)
    ]
    row = await env.pool.fetchrow(
        "SELECT status, status_reason FROM instances WHERE id = $1", uuid.UUID(env.instance.id)
    )
    assert tuple(row) == ("paused", "usage_spike")
    assert (
        await env.pool.fetchval("SELECT status FROM instances WHERE id = $1", uuid.UUID(quiet.id))
        == "active"
    )
    mail = await env.pool.fetch("SELECT kind, facts FROM notifications WHERE kind = 'usage_spike'")
    assert len(mail) == 1
    # The paused instance is refused in the chat (a notice), nothing more is spent.
    resp = await env.post("/v1/messages", BODY)
    await resp.read()
    await env.settled()
    assert await env.pool.fetchval("SELECT sum(cost_micros)::bigint FROM usage_logs") == spent
