"""GET /metrics (issue 14): the operator's Prometheus metrics, parsed with Prometheus' own text
parser after a scripted run against a real daemon and the fake upstream: proxied requests by API,
model and status, tokens, revenue against upstream cost (at the configured markup), a refusal,
the fleet's state from the database; only an operator may read them."""

from __future__ import annotations

import uuid
from fractions import Fraction
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from blitzclawd.testing import seed

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(api_env: Any, headers: dict[str, str]) -> tuple[int, str]:
    async with api_env.http.get(api_env.api + "/metrics", headers=headers) as resp:
        return resp.status, await resp.text()


async def test_metrics_after_a_scripted_run(api_env: Any) -> None:
    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    user = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, user, 25_000_000)
    inst = await seed.create_instance(api_env.pool, user)
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    for _ in range(3):
        async with api_env.http.post(
            api_env.proxy + "/v1/messages", json=BODY, headers=headers
        ) as resp:
            assert resp.status == 200
            await resp.read()
    # A paused instance is refused before anything goes upstream.
    broke = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, broke, 25_000_000)
    paused = await seed.create_instance(api_env.pool, broke)
    await api_env.pool.execute(
        "UPDATE instances SET status = 'paused', status_reason = 'low_balance' WHERE id = $1",
        uuid.UUID(paused.id),
    )
    async with api_env.http.post(
        api_env.proxy + "/v1/messages",
        json=BODY,
        headers={**paused.headers, "anthropic-version": "2023-06-01"},
    ) as resp:
        await resp.read()

    async def settled() -> bool:
        return await api_env.pool.fetchval("SELECT count(*) FROM usage_logs") == 3

    from test_fleet import until

    await until(settled)
    status, text = await scrape(api_env, admin)
    assert status == 200, text
    found = samples(text)
    api, model = "anthropic-messages", BODY["model"]
    assert value(found, "blitzclaw_proxy_requests_total", api=api, model=model, status="200") == 3
    assert value(found, "blitzclaw_proxy_request_seconds_count", api=api) == 3
    logged = await api_env.pool.fetchrow(
        "SELECT sum(input_tokens)::bigint AS i, sum(output_tokens)::bigint AS o, "
        "sum(cost_micros)::bigint AS c "
        "FROM usage_logs"
    )
    tokens = {
        k: value(found, "blitzclaw_tokens_total", api=api, model=model, kind=k)
        for k in ("input", "output")
    }
    assert tokens == {"input": logged["i"], "output": logged["o"]}
    charged = value(found, "blitzclaw_charged_usd_total", api=api, model=model)
    cost = value(found, "blitzclaw_upstream_cost_usd_total", api=api, model=model)
    assert abs(charged - logged["c"] / 1e6) < 1e-9
    markup = api_env.daemon.settings.pricing.markup
    assert abs(cost - charged / float(Fraction(str(markup)))) < 1e-9 and 0 < cost < charged
    assert value(found, "blitzclaw_admission_refusals_total", reason="paused") == 1
    assert value(found, "blitzclaw_proxy_inflight") == 0
    # The fleet's state, read from the database at scrape time.
    assert value(found, "blitzclaw_instances", status="active") == 1
    assert value(found, "blitzclaw_instances", status="paused") == 1
    assert value(found, "blitzclaw_actor_restarts", actor="proxy") == 0

    # Operators only.
    assert (await scrape(api_env, {}))[0] == 401
    member = api_env.session_headers("user_m")
    assert (await scrape(api_env, member))[0] == 404


def test_the_example_dashboard_only_queries_metrics_we_export() -> None:
    """docs/grafana/blitzclaw-daemon.json: every series it asks for is one of ours."""
    import json
    import re
    from pathlib import Path

    from blitzclawd.metrics import Metrics

    ours = {m.name for m in Metrics().registry.collect()}
    dashboard = json.loads(
        (Path(__file__).resolve().parent.parent / "docs/grafana/blitzclaw-daemon.json").read_text()
    )
    asked = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"blitzclaw_[a-z_]+", target["expr"])
    }
    assert asked and asked <= ours, asked - ours


async def test_fleet_state_after_a_deploy(database: str, tmp_path) -> None:
    from test_fleet import ADMIN_KEY, available, create_active, fleet_env, until

    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice = await env.user()
        await create_active(env, alice)

        async def scraped() -> dict:
            async with env.http.get(
                env.api + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ) as resp:
                assert resp.status == 200
                return samples(await resp.text())

        async def deploy_booked() -> dict | None:
            found = await scraped()
            return found if value(found, "blitzclaw_jobs", kind="deploy", status="done") else None

        # The instance is active a moment before its deploy job is booked as done.
        found = await until(deploy_booked)
        assert value(found, "blitzclaw_instances", status="active") == 1
        assert value(found, "blitzclaw_pool_servers", status="assigned") == 1
        assert value(found, "blitzclaw_jobs", kind="deploy", status="done") == 1
        assert value(found, "blitzclaw_job_seconds_avg", kind="deploy") > 0
        assert (
            value(found, "blitzclaw_emails", kind="instance_created", outcome="pending")
            + value(found, "blitzclaw_emails", kind="instance_created", outcome="sent")
            == 1
        )


async def test_dashboards_over_time(api_env: Any) -> None:
    """GET /api/admin/metrics: per hour, requests and revenue against cost from real usage."""
    import datetime as dt

    from test_fleet import until

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    user = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, user, 25_000_000)
    inst = await seed.create_instance(api_env.pool, user)
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    for _ in range(2):
        async with api_env.http.post(
            api_env.proxy + "/v1/messages", json=BODY, headers=headers
        ) as resp:
            await resp.read()

    async def settled() -> bool:
        return await api_env.pool.fetchval("SELECT count(*) FROM usage_logs") == 2

    await until(settled)
    charged = await api_env.pool.fetchval("SELECT sum(cost_micros)::bigint FROM usage_logs")
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).isoformat()
    async with api_env.http.get(
        api_env.api + "/api/admin/metrics",
        params={"from": since, "step": "hour"},
        headers=admin,
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["step"] == "hour" and len(body["points"]) in (3, 4)
    last = body["points"][-1]
    assert (last["requests"], last["proxy_errors"], last["active_instances"]) == (2, 0, 1)
    assert last["charged_micros"] == charged
    markup = float(api_env.daemon.settings.pricing.markup)
    assert last["upstream_cost_micros"] == round(charged / markup)
    assert last["margin_micros"] == charged - last["upstream_cost_micros"] > 0
    assert sum(p["requests"] for p in body["points"]) == 2
    for bad in ({"step": "minute"}, {"from": "yesterday"}, {"from": "2026-01-01", "step": "hour"}):
        async with api_env.http.get(
            api_env.api + "/api/admin/metrics", params=bad, headers=admin
        ) as resp:
            assert resp.status == 422, bad
