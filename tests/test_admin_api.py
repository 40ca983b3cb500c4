"""The operator's API (issue 14), end to end with a real daemon over real SSH: the pool, every
user's instances (search, restart, stop, start), failed jobs retried; every action audited with
who, what and when; to anyone but an operator each route is a 404."""

from __future__ import annotations

from pathlib import Path

from test_fleet import ADMIN_KEY, BOT_TOKEN, active, available, fleet_env, until

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_the_operator_surface(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        alice = await env.user()
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
            },
        )
        assert status == 201, body
        iid = body["id"]
        row = await active(env, iid)
        server = env.server_of(row["hetzner_server_id"]).ssh

        # Not there for a user, nor without credentials.
        for method, path in (
            ("GET", "/api/admin/pool"),
            ("GET", "/api/admin/jobs"),
            ("POST", "/api/admin/jobs/1/retry"),
            ("GET", "/api/admin/instances"),
            ("POST", f"/api/admin/instances/{iid}/stop"),
            ("GET", "/api/admin/audit"),
            ("POST", "/api/admin/pool/provision"),
            ("POST", "/api/admin/health/check"),
        ):
            assert (await env.call(method, path, alice))[0] == 404, path
            assert (await env.call(method, path, {}))[0] == 401, path

        status, body = await env.call("GET", "/api/admin/pool", ADMIN)
        assert status == 200 and body["by_status"].get("assigned") == 1, body
        assigned = next(s for s in body["servers"] if s["status"] == "assigned")
        assert assigned["assigned_to"] == iid and assigned["age_seconds"] >= 0

        status, body = await env.call("GET", "/api/admin/instances?q=" + iid[:8], ADMIN)
        assert [i["id"] for i in body["instances"]] == [iid]
        assert body["instances"][0]["server_ip"] == assigned["ip"]
        status, body = await env.call("GET", "/api/admin/instances?status=bogus", ADMIN)
        assert status == 422 and body["error"]["field"] == "status"

        # Stop and start someone's assistant.
        status, _ = await env.call("POST", f"/api/admin/instances/{iid}/stop", ADMIN)
        assert status == 202

        async def stopped() -> bool:
            return server.gateway_state == "inactive"

        await until(stopped)
        assert (await env.instance(iid))["status"] == "stopped"
        status, _ = await env.call("POST", f"/api/admin/instances/{iid}/start", ADMIN)
        assert status == 202
        await active(env, iid)
        assert (await env.call("POST", f"/api/admin/instances/{iid}/reboot", ADMIN))[0] == 404

        # A job that failed for good, retried.
        failed = await env.pool.fetchval(
            """INSERT INTO instance_jobs (instance_id, kind, status, attempts, last_error,
                                          finished_at)
               VALUES ($1, 'restart', 'failed', 5, 'gave up', now()) RETURNING id""",
            row["id"],
        )
        status, body = await env.call("GET", "/api/admin/jobs?status=failed", ADMIN)
        assert [j["id"] for j in body["jobs"]] == [failed]
        assert body["jobs"][0]["last_error"] == "gave up"
        status, body = await env.call("POST", f"/api/admin/jobs/{failed}/retry", ADMIN)
        assert status == 202, body

        async def retried() -> bool:
            return (
                await env.pool.fetchval("SELECT status FROM instance_jobs WHERE id = $1", failed)
            ) == "done"

        await until(retried)
        assert (await env.call("POST", f"/api/admin/jobs/{failed}/retry", ADMIN))[0] == 404

        # More servers now, within max_size; a health sweep now.
        for bad in ({}, {"count": 0}, {"count": "2"}, {"count": 51}):
            status, body = await env.call("POST", "/api/admin/pool/provision", ADMIN, bad)
            assert status == 422 and body["error"]["field"] == "count", (bad, body)
        before = len(env.fake.servers)
        status, body = await env.call("POST", "/api/admin/pool/provision", ADMIN, {"count": 1})
        assert status == 202 and body == {"asked": 1, "created": 1}, body
        assert len(env.fake.servers) == before + 1
        status, body = await env.call("POST", "/api/admin/health/check", ADMIN, {})
        assert status == 200, body
        assert body["report"]["checked"] == 1 and body["report"]["ok"] == 1
        assert [i["instance_id"] for i in body["instances"]] == [iid]

        # Every action, audited.
        status, body = await env.call("GET", "/api/admin/audit", ADMIN)
        assert [(a["actor"], a["action"], a["target"]) for a in body["actions"]] == [
            ("admin_key", "health.check", None),
            ("admin_key", "pool.provision", None),
            ("admin_key", "job.retry", str(failed)),
            ("admin_key", "instance.start", iid),
            ("admin_key", "instance.stop", iid),
        ]
        assert all(a["created_at"] for a in body["actions"])


async def test_limits_actors_payments_and_logs(api_env) -> None:
    """Per-instance limits reach the proxy at once; an actor restarted through its supervisor;
    unmatched payments and this daemon's recent log lines listed; all audited, 404 to users."""
    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    user = api_env.session_headers("user_plain")
    owner = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, owner, 25_000_000)
    inst = await seed.create_instance(api_env.pool, owner)
    limits = f"/api/admin/instances/{inst.id}/limits"
    for method, path in (
        ("PATCH", limits),
        ("POST", "/api/admin/actors/core/notifier/restart"),
        ("GET", "/api/admin/payments/unmatched"),
        ("GET", "/api/admin/logs"),
    ):
        assert (await api_env.call(method, path, headers=user, json={}))[0] == 404, path

    for bad in (
        {},
        {"messages_per_hour": -1},
        {"tokens_per_day": "5"},
        {"messages_per_hour": True},
    ):
        status, body = await api_env.call("PATCH", limits, headers=admin, json=bad)
        assert status == 422, (bad, body)
    status, body = await api_env.call("PATCH", limits, headers=admin, json={"messages_per_hour": 1})
    assert status == 200 and body["messages_per_hour"] == 1 and body["tokens_per_day"] is None
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    message = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    texts = []
    for _ in range(2):
        async with api_env.http.post(
            api_env.proxy + "/v1/messages", json=message, headers=headers
        ) as resp:
            assert resp.status == 200
            texts.append(await resp.text())
    assert "limit" in texts[1].lower() and "limit" not in texts[0].lower()  # the 2nd: a notice

    status, body = await api_env.call(
        "POST", "/api/admin/actors/core/notifier/restart", headers=admin, json={}
    )
    assert status == 202 and body["restarted"] == "core/notifier", body
    status, _ = await api_env.call("POST", "/api/admin/actors/nope/restart", headers=admin, json={})
    assert status == 404

    status, body = await api_env.call("GET", "/api/admin/payments/unmatched", headers=admin)
    assert status == 200 and body == {"events": []}
    status, body = await api_env.call("GET", "/api/admin/logs?level=warning", headers=admin)
    assert status == 200
    assert any("restarted on request" in line["msg"] for line in body["lines"]), body
    assert all(line["level"] in ("warning", "error", "critical") for line in body["lines"])

    status, body = await api_env.call("GET", "/api/admin/audit", headers=admin)
    assert [a["action"] for a in body["actions"]][:2] == ["actor.restart", "instance.limits"]


async def test_users_and_manual_adjustments(api_env) -> None:
    """A manual ledger entry with a reason, booked by billing once per idempotency key."""
    import uuid as uuid_

    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    owner = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, owner, 10_000_000)
    status, body = await api_env.call("GET", f"/api/admin/users?q={owner}", headers=admin)
    assert status == 200 and [u["id"] for u in body["users"]] == [owner]
    assert body["users"][0]["balance_micros"] == 10_000_000

    adjust = f"/api/admin/users/{owner}/adjust"
    for bad, field in (
        ({"amount_micros": 0, "reason": "x"}, "amount_micros"),
        ({"amount_micros": "5", "reason": "x"}, "amount_micros"),
        ({"amount_micros": 10**13, "reason": "x"}, "amount_micros"),
        ({"amount_micros": 5}, "reason"),
        ({"amount_micros": 5, "reason": "  "}, "reason"),
    ):
        status, body = await api_env.call("POST", adjust, headers=admin, json=bad)
        assert status == 422 and body["error"]["field"] == field, (bad, body)
    status, _ = await api_env.call(
        "POST",
        f"/api/admin/users/{uuid_.uuid4()}/adjust",
        headers=admin,
        json={"amount_micros": 5, "reason": "x"},
    )
    assert status == 404
    assert (
        await api_env.call(
            "POST",
            adjust,
            headers=api_env.session_headers("user_plain"),
            json={"amount_micros": 5, "reason": "x"},
        )
    )[0] == 404

    credit = {"amount_micros": 2_500_000, "reason": "outage on 2026-12-01", "idempotency_key": "k1"}
    status, body = await api_env.call("POST", adjust, headers=admin, json=credit)
    assert status == 200 and body["outcome"] == "applied", body
    assert body["balance_micros"] == 12_500_000
    status, body = await api_env.call("POST", adjust, headers=admin, json=credit)
    assert body["outcome"] == "duplicate"
    entry = await api_env.pool.fetchrow(
        "SELECT amount_micros, reference FROM ledger_entries WHERE idempotency_key = 'admin:k1'"
    )
    assert entry["amount_micros"] == 2_500_000 and "outage on 2026-12-01" in entry["reference"]
    status, body = await api_env.call("GET", "/api/admin/audit", headers=admin)
    assert [a["action"] for a in body["actions"]] == ["user.adjust", "user.adjust"]
    assert body["actions"][0]["detail"]["reason"] == "outage on 2026-12-01"


async def test_an_operator_pauses_and_resumes_a_user(api_env) -> None:
    import uuid as uuid_

    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    owner = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, owner, 25_000_000)
    inst = await seed.create_instance(api_env.pool, owner)
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}

    assert (
        await api_env.call(
            "POST", f"/api/admin/users/{owner}/pause", headers=api_env.session_headers("user_plain")
        )
    )[0] == 404
    status, out = await api_env.call("POST", f"/api/admin/users/{owner}/pause", headers=admin)
    assert status == 200 and out["instances"] == 1, out
    status_of = "SELECT status, status_reason FROM instances WHERE id = $1"
    row = await api_env.pool.fetchrow(status_of, uuid_.UUID(inst.id))
    assert tuple(row) == ("paused", "paused_by_operator")
    async with api_env.http.post(
        api_env.proxy + "/v1/messages", json=body, headers=headers
    ) as resp:
        await resp.read()
    assert await api_env.pool.fetchval("SELECT count(*) FROM usage_logs") == 0  # nothing spent
    status, out = await api_env.call("POST", f"/api/admin/users/{owner}/resume", headers=admin)
    assert status == 200 and out["instances"] == 1
    assert (await api_env.pool.fetchrow(status_of, uuid_.UUID(inst.id)))["status"] == "active"
    assert (await api_env.call("POST", f"/api/admin/users/{owner}/delete", headers=admin))[0] == 404
    status, out = await api_env.call("GET", "/api/admin/audit", headers=admin)
    assert [a["action"] for a in out["actions"]] == ["user.resume", "user.pause"]
