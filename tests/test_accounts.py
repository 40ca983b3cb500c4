"""Accounts and money in, over real HTTP: Clerk sessions and webhooks, API keys, Creem top-ups
and webhooks, balance and usage, and the emails they cause."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from conftest import notice_of

from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario


async def signed_up(env, clerk_id: str | None = None, email: str | None = None) -> str:
    """A user created by Clerk's webhook; returns our user id."""
    clerk_id = clerk_id or f"user_{uuid.uuid4().hex[:20]}"
    email = email or f"{clerk_id}@example.test"
    status, _ = await env.clerk.deliver(
        env.api + "/api/webhooks/clerk", "user.created", env.clerk.user_created(clerk_id, email)
    )
    assert status == 200
    return str(await env.pool.fetchval("SELECT id FROM users WHERE clerk_user_id = $1", clerk_id))


async def until(check, deadline: float = 10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def ledger_state(env) -> tuple:
    return (
        await env.pool.fetchval("SELECT count(*) FROM ledger_entries"),
        await env.pool.fetchval("SELECT coalesce(sum(balance_micros), 0) FROM balances"),
        await env.pool.fetchval("SELECT count(*) FROM processed_webhook_events"),
    )


# -- Clerk session tokens --------------------------------------------------------------------------


async def test_first_authenticated_call_creates_the_user(api_env) -> None:
    status, me = await api_env.call(
        "GET", "/api/auth/me", headers=api_env.session_headers("user_first")
    )
    assert status == 200, me
    assert me["clerk_user_id"] == "user_first" and me["role"] == "user"
    assert me["balance"]["balance_cents"] == 0 and me["balance"]["below_minimum"] is True
    status, again = await api_env.call(
        "GET", "/api/auth/me", headers=api_env.session_headers("user_first")
    )
    assert again["id"] == me["id"]


async def test_session_cookie_works_too(api_env) -> None:
    token = api_env.clerk.mint("user_cookie")
    status, me = await api_env.call("GET", "/api/auth/me", headers={"Cookie": f"__session={token}"})
    assert status == 200 and me["clerk_user_id"] == "user_cookie"


@pytest.mark.parametrize(
    "mint",
    [
        {"ttl": -10},  # expired beyond the 5 s leeway
        {"nbf_offset": 60},  # not yet valid
        {"alg": "HS256"},  # the classic key-confusion forgery
        {"alg": "none"},
        {"azp": "https://evil.example"},
        {"kid": "kid_nobody_published"},
    ],
)
async def test_bad_session_tokens_are_401(api_env, mint) -> None:
    status, body = await api_env.call(
        "GET", "/api/auth/me", headers=api_env.session_headers("user_x", **mint)
    )
    assert status == 401, body
    assert body["error"]["code"] == "unauthenticated"
    assert await api_env.pool.fetchval("SELECT count(*) FROM users") == 0


async def test_token_signed_by_an_unpublished_key_is_401(api_env) -> None:
    token = api_env.clerk.mint("user_y", sign_with=api_env.clerk.unpublished_key())
    status, _ = await api_env.call(
        "GET", "/api/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 401


async def test_key_rotation_is_followed_without_a_restart(api_env) -> None:
    assert (await api_env.call("GET", "/api/auth/me", headers=api_env.session_headers("user_rot")))[
        0
    ] == 200
    api_env.clerk.rotate_key()

    # The verifier refetches on an unknown kid, at most once per few seconds.
    async def accepted() -> bool:
        status, _ = await api_env.call(
            "GET", "/api/auth/me", headers=api_env.session_headers("user_rot")
        )
        return status == 200

    await until(accepted, deadline=15)


async def test_no_credentials_is_401_and_public_routes_stay_public(api_env) -> None:
    for path in ("/api/auth/me", "/api/billing/balance", "/api/billing/usage"):
        status, body = await api_env.call("GET", path)
        assert status == 401 and body["error"]["request_id"]
    assert (await api_env.call("GET", "/healthz"))[0] == 200


# -- API keys and the admin role -------------------------------------------------------------------


async def test_api_keys_are_shown_once_stored_hashed_and_revocable(api_env) -> None:
    session = api_env.session_headers("user_keys")
    status, created = await api_env.call(
        "POST", "/api/auth/api-keys", headers=session, json={"name": "ci"}
    )
    assert status == 201 and created["key"].startswith("sk_")
    key = created["key"]
    stored = await api_env.pool.fetchrow("SELECT * FROM api_keys")
    assert key.encode() not in bytes(stored["key_hash"]) and stored["prefix"] == key[:10]
    status, me = await api_env.call(
        "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200 and me["via"] == "api_key"
    assert await api_env.pool.fetchval("SELECT last_used_at FROM api_keys") is not None
    status, listed = await api_env.call("GET", "/api/auth/api-keys", headers=session)
    assert [k["id"] for k in listed["keys"]] == [created["id"]]
    assert "key" not in listed["keys"][0]
    status, _ = await api_env.call("DELETE", f"/api/auth/api-keys/{created['id']}", headers=session)
    assert status == 200
    status, _ = await api_env.call(
        "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 401


async def test_api_key_name_is_validated(api_env) -> None:
    session = api_env.session_headers("user_kv")
    for bad in ({}, {"name": ""}, {"name": 5}, {"name": "x" * 101}):
        status, body = await api_env.call("POST", "/api/auth/api-keys", headers=session, json=bad)
        assert status == 422 and body["error"]["field"] == "name"
    assert await api_env.pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_admin_endpoints_need_the_admin_role(api_env) -> None:
    status, _ = await api_env.call(
        "GET", "/api/admin/daemons", headers=api_env.session_headers("user_plain")
    )
    assert status == 404  # operators' routes do not exist for anyone else
    status, body = await api_env.call(
        "GET", "/api/admin/daemons", headers={"Authorization": f"Bearer {api_env.admin_key}"}
    )
    assert status == 200 and body["this_daemon"] == api_env.daemon.daemon_id
    await api_env.pool.execute("UPDATE users SET role = 'admin' WHERE clerk_user_id = 'user_plain'")
    api_env.daemon.context.user_cache.clear()
    status, _ = await api_env.call(
        "GET", "/api/admin/daemons", headers=api_env.session_headers("user_plain")
    )
    assert status == 200


async def test_every_route_answers_only_for_the_callers_own_data(api_env) -> None:
    a, b = api_env.session_headers("user_a"), api_env.session_headers("user_b")
    _, key_b = await api_env.call("POST", "/api/auth/api-keys", headers=b, json={"name": "b"})
    _, me_b = await api_env.call("GET", "/api/auth/me", headers=b)
    await seed.credit(api_env.pool, me_b["id"], 25_000_000)
    inst_b = await seed.create_instance(api_env.pool, me_b["id"])
    resp = await api_env.http.post(
        api_env.proxy + "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={**inst_b.headers, "anthropic-version": "2023-06-01"},
    )
    assert resp.status == 200
    await resp.read()
    await until(lambda: api_env.pool.fetchval("SELECT count(*) FROM usage_logs"))
    # As A, against B's ids:
    status, _ = await api_env.call("DELETE", f"/api/auth/api-keys/{key_b['id']}", headers=a)
    assert status == 404
    assert await api_env.pool.fetchval("SELECT revoked_at FROM api_keys") is None
    status, keys = await api_env.call("GET", "/api/auth/api-keys", headers=a)
    assert keys["keys"] == []
    status, me = await api_env.call("GET", "/api/auth/me", headers=a)
    assert me["id"] != me_b["id"] and me["balance"]["balance_micros"] == 0
    status, bal = await api_env.call("GET", "/api/billing/balance", headers=a)
    assert bal["balance_micros"] == 0
    status, usage = await api_env.call("GET", "/api/billing/usage", headers=a)
    assert usage["lines"] == [] and usage["total"]["cost_micros"] == 0
    status, usage_b = await api_env.call("GET", "/api/billing/usage", headers=b)
    assert usage_b["lines"][0]["instance_id"] == inst_b.id
    status, _ = await api_env.call(
        "PATCH", "/api/billing/auto-topup", headers=a, json={"enabled": False}
    )
    assert status == 200
    assert (
        await api_env.pool.fetchval(
            "SELECT auto_topup_enabled FROM balances WHERE user_id = $1", uuid.UUID(me_b["id"])
        )
        is False
    )


# -- top-ups and the Creem webhook -----------------------------------------------------------------


@pytest.mark.parametrize("amount", [999, 100_001, 20.5, "2000", -1000, True, None])
async def test_bad_topup_amounts_are_422_and_write_nothing(api_env, amount) -> None:
    session = api_env.session_headers("user_topup")
    status, body = await api_env.call(
        "POST", "/api/billing/topup", headers=session, json={"amount_cents": amount}
    )
    assert status == 422, body
    assert body["error"]["field"] == "amount_cents"
    assert await api_env.pool.fetchval("SELECT count(*) FROM topups") == 0
    assert api_env.creem.checkouts == {}


async def test_topup_creates_a_creem_checkout(api_env) -> None:
    user = await signed_up(api_env, "user_buyer", "buyer@example.test")
    status, body = await api_env.call(
        "POST",
        "/api/billing/topup",
        headers=api_env.session_headers("user_buyer"),
        json={"amount_cents": 2000},
    )
    assert status == 201, body
    checkout = api_env.creem.checkouts[body["checkout_id"]]
    assert body["checkout_url"] == checkout["checkout_url"]
    assert checkout["request_id"] == body["topup_id"]
    assert checkout["metadata"]["user_id"] == user
    assert checkout["metadata"]["amount_cents"] == "2000"
    assert checkout["customer"]["email"] == "buyer@example.test"


async def completed_topup(env, clerk_id: str, cents: int) -> tuple[str, bytes]:
    _, body = await env.call(
        "POST",
        "/api/billing/topup",
        headers=env.session_headers(clerk_id),
        json={"amount_cents": cents},
    )
    _, raw = env.creem.complete_checkout(body["checkout_id"])
    return body["checkout_id"], raw


async def test_the_same_webhook_ten_times_concurrently_credits_once(api_env) -> None:
    user = await signed_up(api_env, "user_dup")
    _, raw = await completed_topup(api_env, "user_dup", 2000)
    url = api_env.api + "/api/billing/webhook"
    headers = {"creem-signature": api_env.creem.sign(raw), "content-type": "application/json"}

    async def post() -> int:
        async with api_env.http.post(url, data=raw, headers=headers) as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(post() for _ in range(10)))
    assert statuses == [200] * 10
    assert (
        await api_env.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 20_000_000
    )
    assert (
        await api_env.pool.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'") == 1
    )
    _, bal = await api_env.call(
        "GET", "/api/billing/balance", headers=api_env.session_headers("user_dup")
    )
    assert bal["balance_cents"] == 2000 and bal["warning"] is None


async def test_forged_missing_or_malformed_webhooks_change_nothing(api_env) -> None:
    await signed_up(api_env, "user_forge")
    _, raw = await completed_topup(api_env, "user_forge", 2000)
    before = await ledger_state(api_env)
    url = api_env.api + "/api/billing/webhook"
    for headers in ({}, {"creem-signature": "0" * 64}, {"creem-signature": "not hex"}):
        async with api_env.http.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 401
    tampered = raw.replace(b"2000", b"9000")
    async with api_env.http.post(
        url, data=tampered, headers={"creem-signature": api_env.creem.sign(raw)}
    ) as resp:
        assert resp.status == 401
    for body in (b"{not json", b"[]", b'{"id": "evt_1"}'):
        async with api_env.http.post(
            url, data=body, headers={"creem-signature": api_env.creem.sign(body)}
        ) as r:
            assert r.status == 400, await r.text()
    assert await ledger_state(api_env) == before


async def test_creem_retries_until_acknowledged_then_credits_once(api_env) -> None:
    user = await signed_up(api_env, "user_retry")
    _, raw = await completed_topup(api_env, "user_retry", 3000)
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    # The first delivery meets a restarting daemon; Creem retries (30 s later, here at once).
    url = api_env.api + "/api/billing/webhook"
    statuses = await api_env.creem.deliver(url + "-not-yet", raw, sleep=no_wait, max_attempts=2)
    assert statuses[-1] != 200
    statuses = await api_env.creem.deliver(url, raw, sleep=no_wait)
    assert statuses == [200]
    assert await api_env.creem.deliver(url, raw, sleep=no_wait) == [200]  # a replay: no change
    assert (
        await api_env.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 30_000_000
    )


async def test_unknown_event_types_are_acknowledged_and_recorded(api_env) -> None:
    raw = api_env.creem.event("subscription.trialing", {"id": "sub_1"})
    async with api_env.http.post(
        api_env.api + "/api/billing/webhook",
        data=raw,
        headers={"creem-signature": api_env.creem.sign(raw)},
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "recorded"
    assert (
        await api_env.pool.fetchval("SELECT event_type FROM processed_webhook_events")
        == "subscription.trialing"
    )


async def test_refund_debits_and_past_due_pauses_until_a_payment_goes_through(api_env) -> None:
    user = await signed_up(api_env, "user_refund")
    checkout_id, raw = await completed_topup(api_env, "user_refund", 5000)
    url = api_env.api + "/api/billing/webhook"
    assert await api_env.creem.deliver(url, raw) == [200]
    inst = await seed.create_instance(api_env.pool, user)
    _, refund_raw = api_env.creem.refund_checkout(checkout_id, amount_cents=2000)
    assert await api_env.creem.deliver(url, refund_raw) == [200]
    balance = await api_env.pool.fetchval(
        "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
    )
    assert balance == 30_000_000
    customer = api_env.creem.checkouts[checkout_id]["customer"]
    past_due = api_env.creem.event(
        "subscription.past_due", {"id": "sub_9", "customer": customer, "metadata": {}}
    )
    assert await api_env.creem.deliver(url, past_due) == [200]
    assert (
        await api_env.pool.fetchval(
            "SELECT status_reason FROM instances WHERE id = $1", uuid.UUID(inst.id)
        )
        == "payment_failed"
    )
    # The email and the assistant's notice say "update your payment or top up": a paid top-up
    # resumes it; an instance paused for another reason stays paused.
    other = await seed.create_instance(api_env.pool, user)
    await api_env.pool.execute(
        "UPDATE instances SET status = 'paused', status_reason = 'by operator' WHERE id = $1",
        uuid.UUID(other.id),
    )
    _, raw = await completed_topup(api_env, "user_refund", 1000)
    assert await api_env.creem.deliver(url, raw) == [200]
    rows = await api_env.pool.fetch(
        "SELECT id::text, status, status_reason FROM instances WHERE user_id = $1", uuid.UUID(user)
    )
    state = {r["id"]: (r["status"], r["status_reason"]) for r in rows}
    assert state == {inst.id: ("active", None), other.id: ("paused", "by operator")}


# -- balance, usage, auto top-up -------------------------------------------------------------------


async def test_usage_dates_are_validated(api_env) -> None:
    session = api_env.session_headers("user_usage")
    for query, field in (
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-05-02&to=2026-05-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "from"),
    ):
        status, body = await api_env.call("GET", f"/api/billing/usage?{query}", headers=session)
        assert status == 422 and body["error"]["field"] == field


async def test_auto_topup_is_validated_and_stored(api_env) -> None:
    session = api_env.session_headers("user_auto")
    for bad, field in (
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": True, "amount_cents": 2000}, "threshold_cents"),
        ({"enabled": True, "threshold_cents": 1500, "amount_cents": 5}, "amount_cents"),
        ({"enabled": True, "threshold_cents": 500, "amount_cents": 2000}, "threshold_cents"),
    ):
        status, body = await api_env.call(
            "PATCH", "/api/billing/auto-topup", headers=session, json=bad
        )
        assert status == 422 and body["error"]["field"] == field, body
    assert await api_env.pool.fetchval("SELECT count(*) FROM balances") == 0
    status, body = await api_env.call(
        "PATCH",
        "/api/billing/auto-topup",
        headers=session,
        json={"enabled": True, "threshold_cents": 1500, "amount_cents": 2000},
    )
    assert status == 200 and body == {
        "enabled": True,
        "threshold_cents": 1500,
        "amount_cents": 2000,
    }


# -- the whole path --------------------------------------------------------------------------------


async def test_signup_topup_usage_and_emails_end_to_end(api_env) -> None:
    user = await signed_up(api_env, "user_e2e", "e2e@example.test")
    await until(
        lambda: asyncio.sleep(
            0, [m for m in api_env.resend.sent if m["subject"] and "e2e@example.test" in m["to"]]
        )
    )
    _, raw = await completed_topup(api_env, "user_e2e", 1600)  # $16: $1 over the low line
    assert await api_env.creem.deliver(api_env.api + "/api/billing/webhook", raw) == [200]
    session = api_env.session_headers("user_e2e")
    _, bal = await api_env.call("GET", "/api/billing/balance", headers=session)
    assert bal["balance_cents"] == 1600
    inst = await seed.create_instance(api_env.pool, user)

    async def ask(input_tokens: int) -> int:
        api_env.llm.set_next(Scenario(input_tokens=input_tokens, output_tokens=10))
        async with api_env.http.post(
            api_env.proxy + "/v1/messages",
            json={
                "model": "claude-sonnet-4-6",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={**inst.headers, "anthropic-version": "2023-06-01"},
        ) as resp:
            await resp.read()
            return 402 if notice_of(resp) else resp.status  # told to top up in the chat

    async def settled() -> bool:
        proxy = api_env.daemon.supervisor.child("proxy")
        return proxy.idle and not await api_env.pool.fetchval("SELECT count(*) FROM reservations")

    # ~$0.45 a request (100k prompt tokens, far more than the tiny body lets admission foresee):
    # one after the other, each settled before the next, so the balance crosses $15, then $10.
    statuses = []
    for _ in range(16):
        statuses.append(await ask(100_000))
        await until(settled)
    assert statuses[0] == 200 and 402 in statuses  # paused once depleted
    _, usage = await api_env.call("GET", "/api/billing/usage", headers=session)
    assert usage["total"]["requests"] == statuses.count(200)
    _, bal = await api_env.call("GET", "/api/billing/balance", headers=session)
    assert bal["below_minimum"] is True and bal["warning"]

    def sent(kind_word: str) -> list:
        return [
            m
            for m in api_env.resend.sent
            if "e2e@example.test" in m["to"] and kind_word in m["subject"].lower()
        ]

    await until(lambda: asyncio.sleep(0, sent("low") and sent("paused")))
    await asyncio.sleep(0.3)  # a few sweeps later: still exactly once each
    assert len(sent("low")) == 1 and len(sent("paused")) == 1
    kinds = await api_env.pool.fetch(
        "SELECT kind, status FROM notifications WHERE user_id = $1 ORDER BY id", uuid.UUID(user)
    )
    assert [(r["kind"], r["status"]) for r in kinds] == [
        ("welcome", "sent"),
        ("topup_receipt", "sent"),
        ("balance_low", "sent"),
        ("balance_depleted", "sent"),
    ]
    receipt = [m for m in api_env.resend.sent if "e2e@example.test" in m["to"]][1]
    assert "16.00" in receipt["text"]
    _ = orjson  # bodies above are parsed by ApiEnv.call


async def test_user_deleted_erases_secrets_and_keeps_the_ledger(api_env) -> None:
    user = await signed_up(api_env, "user_gone", "gone@example.test")
    await seed.credit(api_env.pool, user, 20_000_000)
    inst = await seed.create_instance(api_env.pool, user)
    await api_env.pool.execute(
        "UPDATE instances SET channel_secret_enc = '\\x01' WHERE id = $1", uuid.UUID(inst.id)
    )
    _, key = await api_env.call(
        "POST",
        "/api/auth/api-keys",
        headers=api_env.session_headers("user_gone"),
        json={"name": "k"},
    )
    status, _ = await api_env.clerk.deliver(
        api_env.api + "/api/webhooks/clerk", "user.deleted", api_env.clerk.user_deleted("user_gone")
    )
    assert status == 200
    row = await api_env.pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user))
    assert row["deleted_at"] is not None and row["email"] is None
    inst_row = await api_env.pool.fetchrow(
        "SELECT * FROM instances WHERE id = $1", uuid.UUID(inst.id)
    )
    assert inst_row["status"] == "deleted" and inst_row["channel_secret_enc"] is None
    # The fleet is told to wipe its server.
    assert (
        await api_env.pool.fetchval(
            "SELECT kind FROM instance_jobs WHERE instance_id = $1", uuid.UUID(inst.id)
        )
        == "teardown"
    )
    assert (
        await api_env.pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE user_id = $1", uuid.UUID(user)
        )
        == 1
    )
    status, _ = await api_env.call(
        "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key['key']}"}
    )
    assert status == 401
    status, _ = await api_env.call(
        "GET", "/api/auth/me", headers=api_env.session_headers("user_gone")
    )
    assert status == 401


async def test_clerk_webhook_signature_is_required(api_env) -> None:
    headers, body = api_env.clerk.webhook(
        "user.created", api_env.clerk.user_created("user_z", "z@example.test")
    )
    forged = {**headers, "svix-signature": "v1,AAAA"}
    async with api_env.http.post(
        api_env.api + "/api/webhooks/clerk", data=body, headers=forged
    ) as resp:
        assert resp.status == 401
    async with api_env.http.post(api_env.api + "/api/webhooks/clerk", data=body) as resp:
        assert resp.status == 401
    assert await api_env.pool.fetchval("SELECT count(*) FROM users") == 0
    for _ in range(3):  # the genuine one, replayed: one user, one welcome
        async with api_env.http.post(
            api_env.api + "/api/webhooks/clerk", data=body, headers=headers
        ) as resp:
            assert resp.status == 200
    assert await api_env.pool.fetchval("SELECT count(*) FROM users") == 1


async def test_crossing_the_auto_topup_threshold_emails_a_prepared_checkout(api_env) -> None:
    user = await signed_up(api_env, "user_autotop", "auto@example.test")
    session = api_env.session_headers("user_autotop")
    _, raw = await completed_topup(api_env, "user_autotop", 2000)
    assert await api_env.creem.deliver(api_env.api + "/api/billing/webhook", raw) == [200]
    status, _ = await api_env.call(
        "PATCH",
        "/api/billing/auto-topup",
        headers=session,
        json={"enabled": True, "threshold_cents": 1990, "amount_cents": 3000},
    )
    assert status == 200
    inst = await seed.create_instance(api_env.pool, user)
    for _ in range(2):  # ~$0.45 each: the first crosses $19.90, the second must not email again
        api_env.llm.set_next(Scenario(input_tokens=100_000, output_tokens=10))
        async with api_env.http.post(
            api_env.proxy + "/v1/messages",
            json={
                "model": "claude-sonnet-4-6",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={**inst.headers, "anthropic-version": "2023-06-01"},
        ) as resp:
            assert resp.status == 200
            await resp.read()

    async def offered() -> list:
        urls = [c["checkout_url"] for c in api_env.creem.checkouts.values()][1:]
        return [
            m
            for m in api_env.resend.sent
            if "auto@example.test" in m["to"] and any(u in m["text"] for u in urls)
        ]

    (mail,) = await until(offered)
    topup = await api_env.pool.fetchrow(
        "SELECT amount_cents, checkout_id FROM topups WHERE user_id = $1 AND status = 'pending'",
        uuid.UUID(user),
    )
    assert topup["amount_cents"] == 3000
    assert api_env.creem.checkouts[topup["checkout_id"]]["checkout_url"] in mail["text"]


async def test_failed_emails_are_retried_with_backoff_and_sent_once(api_env) -> None:
    api_env.resend.fail_next(1, status=500)
    user = await signed_up(api_env, "user_retry_mail", "retry@example.test")

    async def failed_once():
        row = await api_env.pool.fetchrow(
            "SELECT status, attempts, last_error, next_attempt_at > now() AS later "
            "FROM notifications WHERE user_id = $1 AND kind = 'welcome'",
            uuid.UUID(user),
        )
        return row if row and row["attempts"] == 1 else None

    row = await until(failed_once)
    assert row["status"] == "pending" and row["later"] and "500" in row["last_error"]
    assert not [m for m in api_env.resend.sent if "retry@example.test" in m["to"]]
    # Fast-forward the backoff instead of waiting it out; the next sweep sends it.
    await api_env.pool.execute(
        "UPDATE notifications SET next_attempt_at = now() WHERE user_id = $1", uuid.UUID(user)
    )

    async def sent():
        return [m for m in api_env.resend.sent if "retry@example.test" in m["to"]]

    assert len(await until(sent)) == 1
    await asyncio.sleep(0.3)  # several sweeps later: still once
    assert len(await sent()) == 1
    assert (
        await api_env.pool.fetchval(
            "SELECT status FROM notifications WHERE user_id = $1", uuid.UUID(user)
        )
        == "sent"
    )


async def test_while_billing_is_down_a_webhook_is_refused_for_a_retry_and_applied_after(
    api_env,
) -> None:
    # Billing is money's one writer: no second path applies the event meanwhile.
    user = await signed_up(api_env, "user_billing_down")
    _, raw = await completed_topup(api_env, "user_billing_down", 2000)
    url = api_env.api + "/api/billing/webhook"
    root = api_env.daemon.supervisor
    events = "SELECT count(*) FROM processed_webhook_events"
    before = await api_env.pool.fetchval(events)
    await root.terminate_child("money/billing")
    try:
        async with api_env.http.post(
            url, data=raw, headers={"creem-signature": api_env.creem.sign(raw)}
        ) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "billing_unavailable"
        assert await api_env.pool.fetchval(events) == before  # not even recorded
        assert await api_env.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        ) in (None, 0)
    finally:
        await root.restart_child("money/billing")
    assert await api_env.creem.deliver(url, raw) == [200]  # Creem's retry
    assert (
        await api_env.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 20_000_000
    )
