"""The base plan against a running daemon, the fake Creem and PostgreSQL, over real HTTP:
subscribe → pay the fake checkout → webhooks credit the included usage → renew → cancel at the
period's end → the period ends with no further credit."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import orjson
import pytest
from conftest import running_api_env
from test_creem_webhooks import books, post, signed_up

HOOK = "/api/billing/webhook"
SUB = "/api/billing/subscribe"
INCLUDED = 10_000_000  # billing.subscription_included_usd: $10 in micro-USD


async def subscription_entries(env: Any, user_id: str) -> list[int]:
    rows = await env.pool.fetch(
        "SELECT amount_micros FROM ledger_entries WHERE user_id = $1 AND kind = 'subscription' "
        "ORDER BY id",
        uuid.UUID(user_id),
    )
    return [r["amount_micros"] for r in rows]


async def plan(env: Any, clerk_id: str) -> Any:
    headers = env.session_headers(clerk_id)
    status, body = await env.call("GET", "/api/billing/balance", headers=headers)
    assert status == 200, body
    return body["plan"]


async def until(check: Any, what: str, deadline: float = 10.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def subscribed(env: Any, clerk_id: str) -> tuple[str, str]:
    """Subscribe through the API and pay the fake checkout: (user id, Creem subscription id)."""
    user_id = await signed_up(env, clerk_id)
    status, body = await env.call("POST", SUB, headers=env.session_headers(clerk_id))
    assert status == 201, body
    assert set(body) == {"checkout_url", "checkout_id"}
    checkout = env.creem.checkouts[body["checkout_id"]]
    assert checkout["product"]["billing_type"] == "recurring"
    assert checkout["metadata"]["user_id"] == user_id
    events = await env.creem.pay(body["checkout_id"], env.api + HOOK)
    assert [e["eventType"] for e in events] == [
        "checkout.completed",
        "subscription.active",
        "subscription.paid",
    ]
    return user_id, env.creem.checkouts[body["checkout_id"]]["subscription"]


async def test_subscribe_pay_renew_cancel_end(api_env: Any) -> None:
    env = api_env
    user_id, sub_id = await subscribed(env, "user_plan")
    # The first period: exactly the included usage, as one `subscription` ledger entry.
    assert await subscription_entries(env, user_id) == [INCLUDED]
    status, bal = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_plan")
    )
    assert bal["balance_micros"] == INCLUDED
    first = bal["plan"]
    assert first["status"] == "active" and first["ends_at"] is None
    assert first["included_usd"] == 10.0
    end = dt.datetime.fromisoformat(first["renews_at"])
    assert end == dt.datetime.fromisoformat(
        env.creem.subscriptions[sub_id]["current_period_end_date"]
    )
    assert 27 <= (end - dt.datetime.now(dt.UTC)).days <= 31
    # The checkout's own event credited nothing: no unmatched payment either.
    assert await env.pool.fetchval("SELECT count(*) FROM unmatched_payments") == 0

    # Subscribing again while subscribed: 409, and no checkout is made.
    checkouts = len(env.creem.checkouts)
    status, body = await env.call("POST", SUB, headers=env.session_headers("user_plan"))
    assert status == 409 and body["error"]["code"] == "already_subscribed"
    assert len(env.creem.checkouts) == checkouts

    # A renewal: credited again; the plan renews a month later.
    _, statuses = await env.creem.renew(sub_id, env.api + HOOK)
    assert statuses == [200]
    assert await subscription_entries(env, user_id) == [INCLUDED, INCLUDED]
    second = await plan(env, "user_plan")
    assert dt.datetime.fromisoformat(second["renews_at"]) > end

    # Cancel at the period's end: Creem's subscription is scheduled to cancel.
    status, body = await env.call("DELETE", SUB, headers=env.session_headers("user_plan"))
    assert status == 200, body
    assert body["status"] == "scheduled_cancel"
    assert body["ends_at"] == second["renews_at"]
    assert env.creem.subscriptions[sub_id]["status"] == "scheduled_cancel"
    cancelled = await plan(env, "user_plan")
    assert cancelled["status"] == "scheduled_cancel"
    assert cancelled["renews_at"] is None and cancelled["ends_at"] == second["renews_at"]
    # Cancelling again answers the same, and does not call Creem again.
    status, again = await env.call("DELETE", SUB, headers=env.session_headers("user_plan"))
    assert (status, again) == (200, body)

    # The period ends: Creem sends subscription.canceled, never another payment.
    before = await books(env)
    envelope, statuses = await env.creem.renew(sub_id, env.api + HOOK)
    assert envelope["eventType"] == "subscription.canceled" and statuses == [200]
    with pytest.raises(ValueError):
        env.creem.renewal_event(sub_id)
    assert await books(env) == before  # no credit, ledger unchanged
    ended = await plan(env, "user_plan")
    assert ended["status"] == "canceled" and ended["renews_at"] is None
    assert ended["ends_at"] is not None
    # Nothing left to cancel: 404; subscribing again is possible.
    status, body = await env.call("DELETE", SUB, headers=env.session_headers("user_plan"))
    assert status == 404 and body["error"]["code"] == "no_subscription"
    status, body = await env.call("POST", SUB, headers=env.session_headers("user_plan"))
    assert status == 201, body


async def test_checkout_page_pays_and_delivers(api_env: Any) -> None:
    """The checkout page's "Pay now" delivers the three events to webhook_url by itself."""
    env = api_env
    env.creem.webhook_url = env.api + HOOK
    env.creem.local_checkout_urls = True
    user_id = await signed_up(env, "user_page")
    _, body = await env.call("POST", SUB, headers=env.session_headers("user_page"))
    async with env.http.post(
        f"{env.creem.base_url}/checkout/{body['checkout_id']}/pay", allow_redirects=False
    ) as resp:
        assert resp.status == 303
    await until(
        lambda: subscription_entries(env, user_id), "the first period's credit", deadline=15
    )
    assert await subscription_entries(env, user_id) == [INCLUDED]
    assert (await plan(env, "user_page"))["status"] == "active"


async def test_out_of_order_events_do_not_move_back(api_env: Any) -> None:
    env = api_env
    user_id, sub_id = await subscribed(env, "user_order")
    sub = env.creem.subscriptions[sub_id]
    # An old `subscription.active` (created before the cancel) arriving after it changes nothing.
    stale = env.creem.event("subscription.active", dict(sub))
    status, body = await env.call("DELETE", SUB, headers=env.session_headers("user_order"))
    assert status == 200, body
    assert (await post(env, stale))[0] == 200
    assert (await plan(env, "user_order"))["status"] == "scheduled_cancel"
    # The end arrives before the (older) scheduled_cancel webhook: still ended afterwards.
    envelope, raw = env.creem.renewal_event(sub_id)
    old = env.creem.event("subscription.scheduled_cancel", {**sub, "status": "scheduled_cancel"})
    late = orjson_with_created_at(old, envelope["created_at"] - 1000)
    assert (await post(env, raw))[0] == 200
    assert (await post(env, late))[0] == 200
    assert (await plan(env, "user_order"))["status"] == "canceled"
    assert await subscription_entries(env, user_id) == [INCLUDED]


def orjson_with_created_at(raw: bytes, created_at: int) -> bytes:
    envelope = orjson.loads(raw)
    envelope["created_at"] = created_at
    return orjson.dumps(envelope)


async def test_another_users_events_never_touch_the_plan(api_env: Any) -> None:
    env = api_env
    _, sub_a = await subscribed(env, "user_a")
    mine = await plan(env, "user_a")
    user_b = await signed_up(env, "user_b")
    # B's own subscription events: B's plan, not A's.
    _, raw = env.creem.subscription_event(
        "subscription.canceled", customer_email="b@example.test", metadata={"user_id": user_b}
    )
    assert (await post(env, raw))[0] == 200
    assert await plan(env, "user_a") == mine
    assert (await plan(env, "user_b"))["status"] == "canceled"
    # An event for A's subscription that names B: refused (recorded), A's plan unchanged.
    forged = env.creem.event(
        "subscription.canceled",
        {**env.creem.subscriptions[sub_a], "metadata": {"user_id": user_b}},
    )
    before = await books(env)
    status, body = await post(env, forged)
    assert status == 200 and body["status"] == "unmatched"
    assert await plan(env, "user_a") == mine
    paid = env.creem.event(
        "subscription.paid", {**env.creem.subscriptions[sub_a], "metadata": {"user_id": user_b}}
    )
    assert (await post(env, paid))[1]["status"] == "unmatched"
    assert await books(env) == before
    reasons = await env.pool.fetch("SELECT reason FROM unmatched_payments ORDER BY id")
    assert [r["reason"] for r in reasons] == ["user_mismatch", "user_mismatch"]


async def test_cancel_failure_changes_nothing(api_env: Any) -> None:
    env = api_env
    _, sub_id = await subscribed(env, "user_fail")
    env.creem.fail_next(1, 500)
    status, body = await env.call("DELETE", SUB, headers=env.session_headers("user_fail"))
    assert status == 502, body
    assert env.creem.subscriptions[sub_id]["status"] == "active"
    assert (await plan(env, "user_fail"))["status"] == "active"


async def test_no_plan_and_none_to_cancel(api_env: Any) -> None:
    env = api_env
    await signed_up(env, "user_none")
    assert await plan(env, "user_none") is None
    status, body = await env.call("DELETE", SUB, headers=env.session_headers("user_none"))
    assert status == 404 and body["error"]["code"] == "no_subscription"


async def test_not_configured(database: str) -> None:
    async with running_api_env(database, {"creem": {"subscription_product_id": ""}}) as env:
        await signed_up(env, "user_off")
        status, body = await env.call("POST", SUB, headers=env.session_headers("user_off"))
        assert status == 503 and body["error"]["code"] == "not_configured"
        assert "not offered" in body["error"]["message"]
        assert env.creem.checkouts == {}


async def test_fake_creem_subscription_api(api_env: Any) -> None:
    """The fake's subscription endpoints in Creem's shapes: cancel modes, 404, bad key."""
    from blitzclawd.payments.creem import CreemClient, CreemError

    env = api_env
    _, sub_id = await subscribed(env, "user_fake")
    client = CreemClient(env.http, env.creem.base_url, env.creem.api_key)
    assert (await client.get_subscription(sub_id))["status"] == "active"
    with pytest.raises(CreemError) as missing:
        await client.cancel_subscription("sub_nope", mode="scheduled")
    assert missing.value.status == 404 and "not found" in missing.value.message
    bad = CreemClient(env.http, env.creem.base_url, "creem_wrong_key")
    with pytest.raises(CreemError) as refused:
        await bad.get_subscription(sub_id)
    assert refused.value.bad_key
    done = await client.cancel_subscription(sub_id, mode="immediate")
    assert done["status"] == "canceled" and done["canceled_at"]


async def test_two_subscribe_clicks_open_one_checkout(api_env: Any) -> None:
    """A double tap, or Subscribe in two tabs at once: the same checkout both times (two open
    checkouts could both be paid: two plans). Once it is paid, the plan is live (409); after it
    ended, a new Subscribe opens a new checkout."""
    env = api_env
    await signed_up(env, "user_twice")
    headers = env.session_headers("user_twice")
    before = len(env.creem.checkouts)
    answers = await asyncio.gather(*(env.call("POST", SUB, headers=headers) for _ in range(3)))
    assert [status for status, _ in answers] == [201, 201, 201], answers
    assert len({body["checkout_id"] for _, body in answers}) == 1
    assert len({body["checkout_url"] for _, body in answers}) == 1
    assert len(env.creem.checkouts) == before + 1
    (checkout_id,) = {body["checkout_id"] for _, body in answers}
    await env.creem.pay(checkout_id, env.api + HOOK)
    assert await env.pool.fetchval("SELECT count(*) FROM plan_checkouts") == 0
    status, body = await env.call("POST", SUB, headers=headers)
    assert status == 409 and body["error"]["code"] == "already_subscribed"


async def test_a_checkout_creem_refused_is_not_remembered(api_env: Any) -> None:
    """Creem failing to open the checkout: 502, nothing claimed for good, the next click opens
    one (no database connection is held while Creem answers: the claim is its own row)."""
    env = api_env
    await signed_up(env, "user_retry")
    headers = env.session_headers("user_retry")
    env.creem.fail_next(1, 500)
    status, body = await env.call("POST", SUB, headers=headers)
    assert status == 502 and body["error"]["code"] == "payments_unavailable", body
    assert await env.pool.fetchval("SELECT count(*) FROM plan_checkouts") == 0
    status, body = await env.call("POST", SUB, headers=headers)
    assert status == 201, body
    remembered = await env.pool.fetchrow("SELECT checkout_id, checkout_url FROM plan_checkouts")
    assert dict(remembered) == {
        "checkout_id": body["checkout_id"],
        "checkout_url": body["checkout_url"],
    }
