"""Creem webhooks against a running daemon, over real HTTP with signed bodies and PostgreSQL:
credits only for what we sold, refunds capped at their credit, and hostile-but-signed events
that are recorded and acknowledged without crashing the billing actor."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import orjson
import pytest

from blitzclawd.payments import unmatched
from blitzclawd.payments.unmatched import Unmatched, list_unmatched
from blitzclawd.testing.fake_creem import OMIT, creem_id, splice_escape

HOOK = "/api/billing/webhook"


async def signed_up(env: Any, clerk_id: str) -> str:
    status, _ = await env.clerk.deliver(
        env.api + "/api/webhooks/clerk",
        "user.created",
        env.clerk.user_created(clerk_id, f"{clerk_id}@example.test"),
    )
    assert status == 200
    return str(await env.pool.fetchval("SELECT id FROM users WHERE clerk_user_id = $1", clerk_id))


async def new_topup(env: Any, clerk_id: str, cents: int) -> dict[str, Any]:
    status, body = await env.call(
        "POST",
        "/api/billing/topup",
        headers=env.session_headers(clerk_id),
        json={"amount_cents": cents},
    )
    assert status == 201, body
    return body


async def post(env: Any, raw: bytes) -> tuple[int, Any]:
    """One signed delivery, as Creem makes it; (status, body)."""
    headers = {"creem-signature": env.creem.sign(raw), "content-type": "application/json"}
    async with env.http.post(env.api + HOOK, data=raw, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


def product(env: Any) -> str:
    return next(iter(env.creem.products))


async def balance(env: Any, user_id: str) -> int:
    value = await env.pool.fetchval(
        "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user_id)
    )
    return value or 0


async def books(env: Any) -> tuple[Any, ...]:
    """Everything money: each balance, and every ledger entry (exact micro-USD)."""
    return (
        tuple(await env.pool.fetch("SELECT user_id, balance_micros FROM balances ORDER BY 1")),
        tuple(
            await env.pool.fetch(
                "SELECT user_id, amount_micros, kind, idempotency_key FROM ledger_entries "
                "ORDER BY id"
            )
        ),
    )


def billing_health(env: Any) -> tuple[str, int]:
    """(state, restarts) of the billing actor, as its supervisor reports it."""
    status = env.daemon.supervisor.status_of("money/billing")
    return status.state, status.restarts


async def until(check: Any, deadline: float = 10.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def two_users(env: Any) -> tuple[str, str]:
    """A (no money yet) and B, who has $10 from a top-up of her own."""
    a = await signed_up(env, "user_alice")
    b = await signed_up(env, "user_bob")
    topup = await new_topup(env, "user_bob", 1000)
    _, raw = env.creem.complete_checkout(topup["checkout_id"])
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, b) == 10_000_000
    return a, b


def unmatched_row(env: Any, event_id: str) -> Any:
    return env.pool.fetchrow(
        "SELECT reason, amount_cents, currency, request_id, claimed_user, topup_id::text, "
        "user_id::text, payload::text AS payload FROM unmatched_payments WHERE event_id = $1",
        event_id,
    )


# -- credits only for what we sold -----------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "user_mismatch",  # the case: B went from $10 to $787
        "no_request_id",  # an order through a product link, metadata naming B
        "unknown_request_id",
        "malformed_request_id",
        "non_usd",
        "amount_above_topup",
        "checkout_mismatch",  # one checkout's payment naming another top-up of the same user
    ],
)
async def test_payments_we_did_not_sell_credit_nothing(api_env: Any, case: str) -> None:
    env = api_env
    a, b = await two_users(env)
    topup = await new_topup(env, "user_alice", 2000)
    checkout = topup["checkout_id"]
    expected_reason = case
    if case == "user_mismatch":
        _, raw = env.creem.complete_checkout(checkout, amount_cents=77_700, metadata={"user_id": b})
    elif case == "no_request_id":
        _, raw = env.creem.product_link_order(
            product(env), customer_email="bob@x.test", units=777, metadata={"user_id": b}
        )
    elif case == "unknown_request_id":
        expected_reason = "unknown_topup"
        _, raw = env.creem.complete_checkout(checkout, request_id=str(uuid.uuid4()))
    elif case == "malformed_request_id":
        expected_reason = "unknown_topup"
        _, raw = env.creem.complete_checkout(checkout, request_id="'; DROP TABLE topups; --")
    elif case == "non_usd":
        expected_reason = "currency"
        _, raw = env.creem.complete_checkout(checkout, currency="EUR")
    elif case == "checkout_mismatch":
        other = await new_topup(env, "user_alice", 2000)
        _, raw = env.creem.complete_checkout(other["checkout_id"], request_id=topup["topup_id"])
    else:
        _, raw = env.creem.complete_checkout(checkout, amount_cents=2001)
    event_id = orjson.loads(raw)["id"]
    before = await books(env)

    assert await post(env, raw) == (200, {"status": "unmatched"})  # acknowledged: no retries
    assert await books(env) == before  # not a micro-dollar moved, for anyone
    assert (await balance(env, a), await balance(env, b)) == (0, 10_000_000)
    assert (
        await env.pool.fetchval(
            "SELECT status FROM topups WHERE id = $1", uuid.UUID(topup["topup_id"])
        )
        == "pending"
    )
    row = await unmatched_row(env, event_id)
    assert row["reason"] == expected_reason
    assert orjson.loads(row["payload"])["order"]["id"].startswith("ord_")  # kept for the operator
    if case == "user_mismatch":
        assert (row["amount_cents"], row["claimed_user"]) == (77_700, b)
        assert (row["topup_id"], row["user_id"]) == (topup["topup_id"], a)
    if case == "no_request_id":
        assert (row["amount_cents"], row["request_id"], row["topup_id"]) == (77_700, None, None)
    if case == "non_usd":
        assert row["currency"] == "EUR"
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM processed_webhook_events WHERE event_id = $1", event_id
        )
        == 1
    )

    # Creem redelivers (it did not see our 200, say): nothing more is recorded or credited.
    assert await post(env, raw) == (200, {"status": "duplicate"})
    assert await env.pool.fetchval("SELECT count(*) FROM unmatched_payments") == 1
    assert await books(env) == before
    listed = await list_unmatched(env.pool)
    assert [(u.event_id, u.reason) for u in listed] == [(event_id, expected_reason)]
    assert billing_health(env) == ("running", 0)


async def test_paid_less_credits_what_was_paid_and_a_topup_is_paid_once(api_env: Any) -> None:
    env = api_env
    a, _ = await two_users(env)
    topup = await new_topup(env, "user_alice", 2000)
    event, raw = env.creem.complete_checkout(topup["checkout_id"], amount_cents=1500)  # discount
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, a) == 15_000_000
    row = await env.pool.fetchrow(
        "SELECT status, credited_micros, order_id FROM topups WHERE id = $1",
        uuid.UUID(topup["topup_id"]),
    )
    assert tuple(row) == ("paid", 15_000_000, event["object"]["order"]["id"])

    # The same order under a new event id: a duplicate, not a second credit.
    again = env.creem.event("checkout.completed", event["object"])
    assert await post(env, again) == (200, {"status": "duplicate"})
    # Another order for the paid top-up: recorded, not credited.
    other = orjson.loads(orjson.dumps(event["object"]))
    other["order"]["id"] = creem_id("ord")
    other_raw = env.creem.event("checkout.completed", other)
    assert await post(env, other_raw) == (200, {"status": "unmatched"})
    assert (await unmatched_row(env, orjson.loads(other_raw)["id"]))["reason"] == (
        "topup_already_paid"
    )
    assert await balance(env, a) == 15_000_000
    assert await env.pool.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'") == 2


# -- poison webhooks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "through"),
    [
        (10**18, "topup"),  # the case: int8 overflow once in micro-USD
        (10**18, "product_link"),
        (2**63, "topup"),  # beyond bigint itself
        (10**30, "topup"),  # beyond 64 bits: JSON parsers read it as a float
        (-5, "topup"),
        ("2000", "topup"),
        (20.0, "topup"),
        (OMIT, "topup"),  # no amount at all
    ],
)
async def test_an_absurd_amount_is_that_events_answer(
    api_env: Any, amount: Any, through: str
) -> None:
    env = api_env
    a, b = await two_users(env)
    if through == "topup":
        topup = await new_topup(env, "user_alice", 2000)
        _, raw = env.creem.complete_checkout(topup["checkout_id"], amount_cents=amount)
    else:
        _, raw = env.creem.product_link_order(
            product(env), customer_email="x@x.test", metadata={"user_id": b}
        )
        raw = raw.replace(b'"amount":100,', b'"amount":%d,' % amount, 1)
    event_id = orjson.loads(raw)["id"]
    before = await books(env)

    # Creem's retry schedule, without its waits: the first answer ends it.
    statuses = await env.creem.deliver(env.api + HOOK, raw, sleep=_no_wait)
    assert statuses == [200]
    assert await books(env) == before
    row = await unmatched_row(env, event_id)
    assert row["reason"] == "invalid_data" and row["amount_cents"] is None
    assert (
        await env.pool.fetchval(
            "SELECT event_type FROM processed_webhook_events WHERE event_id = $1", event_id
        )
        == "checkout.completed"
    )
    assert billing_health(env) == ("running", 0)  # no crash, no restart
    assert env.daemon.supervisor.child("billing").running
    assert await post(env, raw) == (200, {"status": "duplicate"})  # a retry is idempotent
    status, _ = await env.call("GET", "/healthz")
    assert status == 200  # and the daemon is up

    # The actor still does its work: a legit top-up is credited.
    topup = await new_topup(env, "user_alice", 3000)
    _, raw = env.creem.complete_checkout(topup["checkout_id"])
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, a) == 30_000_000


async def _no_wait(seconds: float) -> None:
    return None


@pytest.mark.parametrize("poison", ["nul", "lone_surrogate"])
async def test_hostile_text_in_a_legit_topup_is_cleaned_and_credited_once(
    api_env: Any, poison: str
) -> None:
    env = api_env
    a = await signed_up(env, "user_alice")
    topup = await new_topup(env, "user_alice", 2000)
    if poison == "nul":
        _, raw = env.creem.complete_checkout(
            topup["checkout_id"],
            customer_fields={"name": "Ada\x00Lovelace", "country": "\x00"},
            metadata={"user_id": a, "note\x00": "x\x00y"},
        )
        assert b"\\u0000" in raw
        name = "AdaLovelace"
    else:
        _, raw = env.creem.complete_checkout(
            topup["checkout_id"], customer_fields={"name": "Ada @@SURROGATE@@"}
        )
        raw = splice_escape(raw, "@@SURROGATE@@", "\\ud800")
        name = "Ada \ufffd"
    event_id = json.loads(raw)["id"]  # orjson refuses it: valid JSON all the same

    async def deliver() -> int:
        return (await post(env, raw))[0]

    # Creem's first delivery and a few concurrent retries: all acknowledged, credited once.
    assert await asyncio.gather(*(deliver() for _ in range(4))) == [200] * 4
    assert await balance(env, a) == 20_000_000
    assert await env.pool.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'") == 1
    payload = await env.pool.fetchval(
        "SELECT payload::text FROM processed_webhook_events WHERE event_id = $1", event_id
    )
    assert orjson.loads(payload)["customer"]["name"] == name
    assert await env.pool.fetchval("SELECT count(*) FROM unmatched_payments") == 0
    assert billing_health(env) == ("running", 0)
    # The receipt email goes out as for any top-up.
    await until(lambda: _sent_to(env, "user_alice@example.test", "receipt"))


async def _sent_to(env: Any, email: str, word: str) -> bool:
    return any(
        email in (m.get("to") or []) and word in (m.get("subject") or "").lower()
        for m in env.resend.sent
    )


# -- refunds ---------------------------------------------------------------------------------


async def test_refunds_never_exceed_their_credit(api_env: Any) -> None:
    env = api_env
    a, b = await two_users(env)
    topup = await new_topup(env, "user_alice", 2000)
    checkout = topup["checkout_id"]
    _, raw = env.creem.complete_checkout(checkout, amount_cents=1500)  # credited $15
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, a) == 15_000_000

    _, first = env.creem.refund_checkout(checkout, amount_cents=1000)
    assert await post(env, first) == (200, {"status": "applied"})
    assert await balance(env, a) == 5_000_000
    # Two partial refunds summing above the credit ($10 + $10 > $15): the second is capped.
    _, second = env.creem.refund_checkout(checkout, amount_cents=1000, unverified_fields=False)
    assert await post(env, second) == (200, {"status": "applied"})
    assert await balance(env, a) == 0
    capped = await unmatched_row(env, orjson.loads(second)["id"])
    assert (capped["reason"], capped["amount_cents"], capped["user_id"]) == (
        "refund_above_credit",
        1000,
        a,
    )
    # Nothing left of the credit: a third refund moves nothing.
    _, third = env.creem.refund_checkout(checkout, amount_cents=500)
    assert await post(env, third) == (200, {"status": "unmatched"})
    assert await post(env, third) == (200, {"status": "duplicate"})
    assert await balance(env, a) == 0
    refunds = await env.pool.fetch(
        "SELECT amount_micros FROM ledger_entries WHERE kind = 'refund' ORDER BY id"
    )
    assert [r["amount_micros"] for r in refunds] == [-10_000_000, -5_000_000]
    assert (
        await env.pool.fetchval(
            "SELECT refunded_micros FROM topups WHERE id = $1", uuid.UUID(topup["topup_id"])
        )
        == 15_000_000
    )
    assert await balance(env, b) == 10_000_000  # nobody else paid for it


async def test_refunds_only_for_a_credit_we_made(api_env: Any) -> None:
    env = api_env
    a, b = await two_users(env)
    # An order we never credited (a product link, metadata naming B), then its refund.
    event, raw = env.creem.product_link_order(
        product(env), customer_email="bob@x.test", units=20, metadata={"user_id": b}
    )
    assert await post(env, raw) == (200, {"status": "unmatched"})
    before = await books(env)
    _, refund = env.creem.refund_checkout(event["object"]["id"])
    assert await post(env, refund) == (200, {"status": "unmatched"})
    assert (await unmatched_row(env, orjson.loads(refund)["id"]))["reason"] == "unknown_payment"
    # A refund of a real top-up, in another currency: not ours to convert.
    topup = await new_topup(env, "user_alice", 2000)
    _, raw = env.creem.complete_checkout(topup["checkout_id"])
    assert await post(env, raw) == (200, {"status": "applied"})
    before = await books(env)
    _, refund = env.creem.refund_checkout(topup["checkout_id"], currency="EUR")
    assert await post(env, refund) == (200, {"status": "unmatched"})
    assert (await unmatched_row(env, orjson.loads(refund)["id"]))["reason"] == "currency"
    # A refund with an absurd amount: bad data, recorded.
    _, refund = env.creem.refund_checkout(topup["checkout_id"], amount_cents=10**18)
    assert await post(env, refund) == (200, {"status": "unmatched"})
    assert (await unmatched_row(env, orjson.loads(refund)["id"]))["reason"] == "invalid_data"
    assert await books(env) == before
    assert (await balance(env, a), await balance(env, b)) == (20_000_000, 10_000_000)
    assert billing_health(env) == ("running", 0)


async def test_no_request_id_event_without_metadata_is_recorded(api_env: Any) -> None:
    env = api_env
    await two_users(env)
    before = await books(env)
    _, raw = env.creem.product_link_order(product(env), customer_email="z@x.test")
    obj = orjson.loads(raw)["object"]
    assert "request_id" not in obj and "metadata" not in obj
    assert await post(env, raw) == (200, {"status": "unmatched"})
    assert await books(env) == before
    assert (await unmatched_row(env, orjson.loads(raw)["id"]))["reason"] == "no_request_id"


def test_omit_drops_a_field() -> None:
    from blitzclawd.testing.fake_creem import FakeCreem

    fake = FakeCreem()
    _, raw = fake.product_link_order(
        "prod_blitzclaw_credits", customer_email="q@x.test", request_id=OMIT, metadata={"a": "b"}
    )
    obj = orjson.loads(raw)["object"]
    assert "request_id" not in obj and obj["metadata"] == {"a": "b"}


async def test_data_the_database_would_refuse_is_recorded_not_crashed_on(api_env: Any) -> None:
    env = api_env
    a, _ = await two_users(env)
    first = await new_topup(env, "user_alice", 2000)
    paid, raw = env.creem.complete_checkout(first["checkout_id"])
    assert await post(env, raw) == (200, {"status": "applied"})
    before = await books(env)

    # An id too long for an index: refused where it enters (invalid_data).
    second = await new_topup(env, "user_alice", 2000)
    event, raw = env.creem.complete_checkout(second["checkout_id"])
    event["object"]["order"]["id"] = "ord_" + "x" * 5000
    long_id = env.creem.event("checkout.completed", event["object"])
    assert await post(env, long_id) == (200, {"status": "unmatched"})
    assert (await unmatched_row(env, orjson.loads(long_id)["id"]))["reason"] == "invalid_data"

    # The order that paid the first top-up, now naming the second: the database refuses it (one
    # order pays one top-up); the event's effect is rolled back, the event itself recorded.
    event["object"]["order"]["id"] = paid["object"]["order"]["id"]
    reused = env.creem.event("checkout.completed", event["object"])
    assert await post(env, reused) == (200, {"status": "unmatched"})
    row = await unmatched_row(env, orjson.loads(reused)["id"])
    assert (row["reason"], row["topup_id"]) == ("rejected_by_database", None)
    assert await books(env) == before
    assert (
        await env.pool.fetchval(
            "SELECT status FROM topups WHERE id = $1", uuid.UUID(second["topup_id"])
        )
        == "pending"
    )
    assert billing_health(env) == ("running", 0)
    assert await post(env, reused) == (200, {"status": "duplicate"})
    # Creem's genuine event for the second top-up still credits it.
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, a) == 40_000_000


async def test_subscription_events_for_no_user_we_know_are_recorded(api_env: Any) -> None:
    env = api_env
    await two_users(env)
    before = await books(env)
    _, raw = env.creem.subscription_event(
        "subscription.paid",
        customer_email="stranger@x.test",
        price_cents=10**18,
        metadata={"user_id": str(uuid.uuid4()), "x\x00": "\x00"},
    )
    assert await post(env, raw) == (200, {"status": "unmatched"})
    row = await unmatched_row(env, orjson.loads(raw)["id"])
    assert row["reason"] == "unknown_user"
    _, raw = env.creem.subscription_event("subscription.past_due", customer_email="s@x.test")
    assert await post(env, raw) == (200, {"status": "unmatched"})
    assert await books(env) == before
    assert billing_health(env) == ("running", 0)


async def test_unmatched_payments_are_listed_newest_first_in_pages(db_pool: Any) -> None:
    async with db_pool.acquire() as conn:
        for n in range(5):
            await conn.execute(
                "INSERT INTO processed_webhook_events (provider, event_id, event_type) "
                "VALUES ('creem', $1, 'checkout.completed')",
                f"evt_{n}",
            )
            await unmatched.record(
                conn,
                "creem",
                f"evt_{n}",
                "checkout.completed",
                {"n": n},
                Unmatched("no_request_id", "a product link", amount_cents=100 * n, currency="USD"),
            )
        # Recording the same event again adds nothing.
        await unmatched.record(
            conn, "creem", "evt_0", "checkout.completed", {}, Unmatched("currency", "again")
        )
    page = await list_unmatched(db_pool, limit=3)
    assert [u.event_id for u in page] == ["evt_4", "evt_3", "evt_2"]
    assert (page[0].reason, page[0].amount_cents, page[0].payload) == (
        "no_request_id",
        400,
        {"n": 4},
    )
    rest = await list_unmatched(db_pool, limit=3, before_id=page[-1].id)
    assert [(u.event_id, u.reason) for u in rest] == [
        ("evt_1", "no_request_id"),
        ("evt_0", "no_request_id"),
    ]
    with pytest.raises(ValueError):
        await list_unmatched(db_pool, limit=0)
    with pytest.raises(ValueError, match="unknown reason"):
        Unmatched("because", "no")


@pytest.mark.parametrize(
    ("amount", "tax", "credited"),
    [
        (2000, 420, 20_000_000),  # amount before tax, tax on top: the amount
        (2420, 420, 20_000_000),  # amount with the tax counted in: without it
        (1800, 378, 18_000_000),  # a discount, tax on top
        (2421, 420, None),  # more than the tax explains: nothing
    ],
)
async def test_sales_tax_is_never_credit(
    api_env: Any, amount: int, tax: int, credited: int | None
) -> None:
    env = api_env
    a = await signed_up(env, "user_alice")
    topup = await new_topup(env, "user_alice", 2000)
    _, raw = env.creem.complete_checkout(topup["checkout_id"], amount_cents=amount, tax_cents=tax)
    status = "unmatched" if credited is None else "applied"
    assert await post(env, raw) == (200, {"status": status})
    assert await balance(env, a) == (credited or 0)


async def test_a_refund_with_tax_takes_back_the_credit_not_the_tax(api_env: Any) -> None:
    env = api_env
    a = await signed_up(env, "user_alice")
    topup = await new_topup(env, "user_alice", 2000)
    _, raw = env.creem.complete_checkout(topup["checkout_id"], tax_cents=420)  # paid 2420
    assert await post(env, raw) == (200, {"status": "applied"})
    assert await balance(env, a) == 20_000_000
    _, half = env.creem.refund_checkout(topup["checkout_id"], amount_cents=1210)
    assert await post(env, half) == (200, {"status": "applied"})
    assert await balance(env, a) == 10_000_000  # 1210 of 2420 paid: half the credit
    _, rest = env.creem.refund_checkout(topup["checkout_id"])  # all 2420 again: capped
    assert await post(env, rest) == (200, {"status": "applied"})
    assert await balance(env, a) == 0
    assert (await unmatched_row(env, orjson.loads(rest)["id"]))["reason"] == "refund_above_credit"


async def test_an_event_that_fails_for_no_fault_of_its_data_is_retried_not_crashed_on(
    database: str,
) -> None:
    """A webhook whose transaction fails for another reason (here: it waits on a lock longer
    than lock_timeout) is answered "failed" (500: Creem retries), leaves nothing recorded, and
    the billing actor runs on; the retry then applies it once."""
    from blitzclawd.actors.billing import BillingActor
    from blitzclawd.config import parse_settings
    from blitzclawd.db.pool import connect, create_pool
    from blitzclawd.payments.creem import parse_event
    from blitzclawd.runtime.messages import CreemWebhook
    from blitzclawd.testing import seed
    from blitzclawd.testing.fake_creem import FakeCreem

    holder = await connect(database)
    name = await holder.fetchval("SELECT current_database()")
    await holder.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '300ms'")
    pool = await create_pool(database, min_size=1, max_size=2)
    actor = BillingActor(pool, parse_settings({}))
    run = asyncio.ensure_future(actor.run())
    try:
        await asyncio.wait_for(actor.started.wait(), 10)
        user = await seed.create_user(pool)
        topup_id = uuid.uuid4()
        fake = FakeCreem()
        sent, raw = fake.product_link_order(
            next(iter(fake.products)),
            customer_email="a@x.test",
            units=20,
            request_id=str(topup_id),
            metadata={"user_id": user},
        )
        await pool.execute(
            "INSERT INTO topups (id, user_id, amount_cents, checkout_id) VALUES ($1, $2, 2000, $3)",
            topup_id,
            uuid.UUID(user),
            sent["object"]["id"],
        )
        event = parse_event(raw)
        async with holder.transaction():  # someone else holds the top-up's row
            await holder.execute("SELECT FROM topups WHERE id = $1 FOR UPDATE", topup_id)
            outcome = await actor.apply_webhook(CreemWebhook(event))
        assert outcome.status == "failed"
        assert actor.running
        assert await pool.fetchval("SELECT count(*) FROM processed_webhook_events") == 0
        assert (await actor.apply_webhook(CreemWebhook(event))).status == "applied"
        assert (await actor.apply_webhook(CreemWebhook(event))).status == "duplicate"
        assert await balance_of(pool, user) == 20_000_000
    finally:
        actor.stop()
        await asyncio.wait({run}, timeout=10)
        await pool.close()
        await holder.execute(f'ALTER DATABASE "{name}" RESET lock_timeout')
        await holder.close()
    assert run.done() and run.exception() is None


async def balance_of(pool: Any, user_id: str) -> int:
    return await pool.fetchval(
        "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user_id)
    )


async def test_a_user_lists_their_topups(api_env: Any) -> None:
    """GET /api/billing/topups: newest first, paid or not, with Creem's ids; only one's own."""
    env = api_env
    await two_users(env)
    first = await new_topup(env, "user_alice", 2000)
    event, raw = env.creem.complete_checkout(first["checkout_id"], amount_cents=2000)
    assert await post(env, raw) == (200, {"status": "applied"})
    second = await new_topup(env, "user_alice", 1000)  # checkout opened, never paid
    alice = env.session_headers("user_alice")
    status, body = await env.call("GET", "/api/billing/topups", headers=alice)
    assert status == 200, body
    listed = body["topups"]
    assert [t["id"] for t in listed] == [second["topup_id"], first["topup_id"]]
    assert listed[0]["status"] == "pending" and listed[0]["paid_at"] is None
    paid = listed[1]
    assert (paid["status"], paid["amount_cents"], paid["credited_micros"]) == (
        "paid",
        2000,
        20_000_000,
    )
    assert paid["order_id"] == event["object"]["order"]["id"]
    assert paid["checkout_id"] == first["checkout_id"]
    status, body = await env.call("GET", "/api/billing/topups?limit=1", headers=alice)
    assert [t["id"] for t in body["topups"]] == [second["topup_id"]]
    status, body = await env.call("GET", "/api/billing/topups?limit=0", headers=alice)
    assert status == 422 and body["error"]["field"] == "limit"
    status, body = await env.call(
        "GET", "/api/billing/topups", headers=env.session_headers("user_bob")
    )
    bobs = {t["id"] for t in body["topups"]}
    assert not bobs & {first["topup_id"], second["topup_id"]}
