"""The operator's API (issue 14), end to end with a real daemon over real SSH: the pool, every
user's instances (search, restart, stop, start), failed jobs retried; every action audited with
who, what and when; to anyone but an operator each route is a 404."""

from __future__ import annotations

from pathlib import Path

from test_fleet import ADMIN_KEY, active, available, create_active, fleet_env, until

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_the_operator_surface(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        alice = await env.user()
        iid, row = await create_active(env, alice)
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


async def _ask(api_env, inst) -> tuple[int, str | None, str]:
    """One proxied message as the instance: (status, the notice it stands for, its text)."""
    from conftest import notice_of

    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    async with api_env.http.post(api_env.proxy + "/v1/messages", json=body, headers=headers) as r:
        text = await r.text()
        return r.status, notice_of(r), text


async def test_an_operator_pauses_resumes_and_deletes_one_instance(api_env) -> None:
    """Pause: the proxy refuses that instance at once (not the owner's others); resume: served
    again; a balance-paused one cannot be resumed by hand; delete: teardown queued. Audited;
    404 to anyone else and for what does not exist."""
    import uuid as uuid_

    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    user = api_env.session_headers("user_plain")
    owner = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, owner, 25_000_000)
    inst = await seed.create_instance(api_env.pool, owner)
    other = await seed.create_instance(api_env.pool, owner)
    poor = await seed.create_instance(api_env.pool, owner, status="paused")
    await api_env.pool.execute(
        "UPDATE instances SET status_reason = 'balance_depleted' WHERE id = $1",
        uuid_.UUID(poor.id),
    )
    status_of = "SELECT status, status_reason FROM instances WHERE id = $1"
    routes = (
        ("POST", f"/api/admin/instances/{inst.id}/pause"),
        ("POST", f"/api/admin/instances/{inst.id}/resume"),
        ("DELETE", f"/api/admin/instances/{inst.id}"),
    )
    for method, path in routes:
        assert (await api_env.call(method, path, headers=user))[0] == 404, path
        assert (await api_env.call(method, path))[0] == 401, path
        missing = path.replace(inst.id, str(uuid_.uuid4()))
        status, body = await api_env.call(method, missing, headers=admin)
        assert status == 404 and body["error"]["code"] == "not_found", (missing, body)
    assert (await api_env.call("GET", "/api/admin/audit", headers=admin))[1]["actions"] == []

    assert (await _ask(api_env, inst))[:2] == (200, None)  # served (and its copy cached)
    status, body = await api_env.call("POST", routes[0][1], headers=admin)
    assert status == 200 and body == {"id": inst.id, "status": "paused"}, body
    row = await api_env.pool.fetchrow(status_of, uuid_.UUID(inst.id))
    assert tuple(row) == ("paused", "paused_by_operator")
    status, notice, text = await _ask(api_env, inst)
    assert (status, notice) == (200, "paused") and "operators have paused me" in text, text
    assert (await _ask(api_env, other))[:2] == (200, None)  # the owner's others still answer
    status, body = await api_env.call("POST", routes[0][1], headers=admin)
    assert status == 409 and body["error"]["code"] == "not_running", body
    assert "paused (paused_by_operator)" in body["error"]["message"]

    status, body = await api_env.call("POST", routes[1][1], headers=admin)
    assert status == 200 and body == {"id": inst.id, "status": "active"}, body
    assert tuple(await api_env.pool.fetchrow(status_of, uuid_.UUID(inst.id))) == ("active", None)
    assert (await _ask(api_env, inst))[:2] == (200, None)
    status, body = await api_env.call("POST", routes[1][1], headers=admin)
    assert status == 409 and body["error"]["code"] == "not_paused", body

    # Paused for its balance: not an operator's to resume; nothing changes.
    status, body = await api_env.call(
        "POST", f"/api/admin/instances/{poor.id}/resume", headers=admin
    )
    assert status == 409 and body["error"]["code"] == "not_paused", body
    assert "balance_depleted" in body["error"]["message"]
    assert "resumes by itself once the user's balance is above" in body["error"]["message"]
    row = await api_env.pool.fetchrow(status_of, uuid_.UUID(poor.id))
    assert tuple(row) == ("paused", "balance_depleted")
    status, body = await api_env.call(
        "POST", f"/api/admin/instances/{poor.id}/pause", headers=admin
    )
    assert status == 409 and body["error"]["code"] == "not_running", body

    status, body = await api_env.call("DELETE", routes[2][1], headers=admin)
    assert status == 202 and body == {"id": inst.id, "queued": "teardown"}, body
    row = await api_env.pool.fetchrow(
        "SELECT status, deleted_at FROM instances WHERE id = $1", uuid_.UUID(inst.id)
    )
    assert row["status"] == "deleted" and row["deleted_at"] is not None
    jobs = await api_env.pool.fetch(
        "SELECT kind FROM instance_jobs WHERE instance_id = $1", uuid_.UUID(inst.id)
    )
    assert [j["kind"] for j in jobs] == ["teardown"]
    assert (await _ask(api_env, inst))[0] == 404  # deleted: the proxy no longer knows it
    for method, path in routes:  # gone for every action
        status, body = await api_env.call(method, path, headers=admin)
        assert status == 404, (path, body)
    assert (
        await api_env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1", uuid_.UUID(inst.id)
        )
        == 1
    )  # one teardown, never two

    status, body = await api_env.call("GET", "/api/admin/audit", headers=admin)
    assert [(a["action"], a["target"]) for a in body["actions"]] == [
        ("instance.delete", inst.id),
        ("instance.resume", inst.id),
        ("instance.pause", inst.id),
    ]


async def _usage(api_env, instance, micros: int, when: str) -> None:
    """A usage row of `micros` at `when` (an SQL expression)."""
    import uuid as uuid_

    await api_env.pool.execute(
        "INSERT INTO usage_logs (request_id, instance_id, user_id, api, model, cost_micros, "
        f"created_at) VALUES ($1, $2, $3, 'anthropic-messages', 'claude-sonnet-4-6', $4, {when})",
        uuid_.uuid4(),
        uuid_.UUID(instance.id),
        uuid_.UUID(instance.user_id),
        micros,
    )


DAY_START = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


async def test_the_listings_spending_limits_and_top_ups(api_env) -> None:
    """GET /api/admin/instances: today's charged usage per instance (UTC day), own limits,
    health detail, total beyond limit; GET /api/admin/users: spending today and over 30 days,
    paid top-ups, open leases - each to the micro-dollar."""
    import datetime as dt
    import uuid as uuid_

    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    owner = await seed.create_user(api_env.pool, email="spender@example.test")
    idle = await seed.create_user(api_env.pool, email="idle@example.test")
    await seed.credit(api_env.pool, owner, 25_000_000)
    busy = await seed.create_instance(api_env.pool, owner, msgs_per_hour=7)
    quiet = await seed.create_instance(api_env.pool, owner, tokens_per_day=50_000)
    await _usage(api_env, busy, 1_234_567, "now()")
    await _usage(api_env, busy, 1, f"{DAY_START} + interval '1 microsecond'")
    await _usage(api_env, busy, 5_000_000, f"{DAY_START} - interval '1 second'")  # yesterday
    await _usage(api_env, quiet, 9_000_000, "now() - interval '40 days'")  # beyond 30 days
    await api_env.pool.execute(
        "INSERT INTO instance_health (instance_id, ok, state, detail) "
        "VALUES ($1, false, 'down', 'gateway not listening')",
        uuid_.UUID(busy.id),
    )

    status, body = await api_env.call(
        "GET", "/api/admin/instances?q=spender@example&limit=10000", headers=admin
    )
    assert status == 200 and body["total"] == 2, body
    rows = {i["id"]: i for i in body["instances"]}
    assert rows[busy.id]["spend_today_micros"] == 1_234_568
    assert rows[quiet.id]["spend_today_micros"] == 0
    assert (rows[busy.id]["messages_per_hour"], rows[busy.id]["tokens_per_day"]) == (7, None)
    assert (rows[quiet.id]["messages_per_hour"], rows[quiet.id]["tokens_per_day"]) == (
        None,
        50_000,
    )
    assert rows[busy.id]["health"] == "down"
    assert rows[busy.id]["health_detail"] == "gateway not listening"
    assert rows[quiet.id]["health"] is None and rows[quiet.id]["health_detail"] is None
    status, body = await api_env.call(
        "GET", "/api/admin/instances?q=spender@example&limit=1", headers=admin
    )
    assert [i["id"] for i in body["instances"]] == [quiet.id] and body["total"] == 2
    status, body = await api_env.call("GET", "/api/admin/instances?q=nobody-at-all", headers=admin)
    assert status == 200 and body == {"instances": [], "total": 0}
    status, body = await api_env.call("GET", "/api/admin/instances?limit=10001", headers=admin)
    assert status == 422 and body["error"]["field"] == "limit"

    # Users: paid top-ups count (a pending one does not), one open lease (this daemon's).
    for cents, state, days_ago in ((2500, "paid", 2), (1000, "paid", 1), (5000, "pending", 0)):
        paid = state == "paid"
        await api_env.pool.execute(
            "INSERT INTO topups (user_id, amount_cents, status, credited_micros, paid_at) "
            "VALUES ($1, $2, $3, $4, now() - $5::interval)",
            uuid_.UUID(owner),
            cents,
            state,
            cents * 10_000 if paid else None,
            dt.timedelta(days=days_ago) if paid else None,
        )
    await api_env.pool.execute(
        "INSERT INTO balance_leases (user_id, daemon_id, amount_micros) VALUES ($1, $2, 1000000)",
        uuid_.UUID(owner),
        uuid_.UUID(api_env.daemon.daemon_id),
    )
    last_paid = await api_env.pool.fetchval(
        "SELECT max(paid_at) FROM topups WHERE user_id = $1", uuid_.UUID(owner)
    )
    status, body = await api_env.call("GET", "/api/admin/users?q=@example.test", headers=admin)
    assert status == 200, body
    users = {u["id"]: u for u in body["users"]}
    spender = users[owner]
    assert spender["spend_today_micros"] == 1_234_568
    assert spender["spend_30d_micros"] == 6_234_568
    assert spender["topped_up_micros"] == 35_000_000
    assert spender["last_topup_at"] == last_paid.isoformat()
    assert spender["leases"] == 1 and spender["reserved_micros"] == 1_000_000
    assert spender["instances"] == 2 and spender["balance_micros"] == 25_000_000
    assert {k: users[idle][k] for k in ("spend_today_micros", "spend_30d_micros")} == {
        "spend_today_micros": 0,
        "spend_30d_micros": 0,
    }
    assert users[idle]["topped_up_micros"] == 0 and users[idle]["last_topup_at"] is None
    assert users[idle]["leases"] == 0 and users[idle]["instances"] == 0
