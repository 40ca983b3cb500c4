"""The base plan: subscribing is a Creem checkout of the recurring product; cancelling asks Creem
to end the subscription at the period's end. What the subscription then is comes from Creem's
webhooks (payments.apply keeps queries.subscriptions); a paid period's credit is the ledger's."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass

import aiohttp
import asyncpg

from blitzclawd.auth.clerk_users import clerk_users, ensure_email
from blitzclawd.config import Secrets, Settings
from blitzclawd.payments import creem
from blitzclawd.payments.creem import Checkout, CreemClient
from blitzclawd.queries import subscriptions

CHECKOUT_REUSE = 1800.0  # seconds an unpaid plan checkout is answered again
OPENING_WAIT = 30.0  # seconds a second request waits for the first one's checkout (Creem: 15 s)


class PlanUnconfigured(Exception):
    """No Creem API key or no subscription product: subscribing is off."""


class AlreadySubscribed(Exception):
    """The user has a subscription that has not ended."""


class CheckoutOpening(Exception):
    """Another request of the user is opening the plan's checkout and Creem has not answered."""


class NoSubscription(Exception):
    """The user has no subscription that could be cancelled."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    status: str
    ends_at: dt.datetime | None


def _client(http: aiohttp.ClientSession, settings: Settings, secrets: Secrets) -> CreemClient:
    key = secrets.get("creem_api_key")
    if key is None or not settings.creem.subscription_product_id:
        raise PlanUnconfigured
    return CreemClient(http, settings.creem.api_url, key.reveal())


async def subscribe(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    secrets: Secrets,
    user_id: str,
) -> Checkout:
    """A checkout of the plan; raises PlanUnconfigured, AlreadySubscribed, or CreemError.

    metadata.user_id is how the subscription's events find the user (Creem copies the
    checkout's metadata to the subscription). A checkout opened within CHECKOUT_REUSE seconds
    and not paid yet is answered again, and a request arriving while another opens one waits
    for its answer (claimed under a per-user lock, in short transactions): two clicks never
    open two checkouts that could both be paid, which would be two plans. Raises
    CheckoutOpening when the other request's Creem call has not ended in OPENING_WAIT."""
    client = _client(http, settings, secrets)
    uid = uuid.UUID(user_id)
    if await subscriptions.live_of(pool, uid) is not None:
        raise AlreadySubscribed
    email = await ensure_email(pool, clerk_users(http, settings, secrets), user_id)
    deadline = time.monotonic() + OPENING_WAIT
    while True:
        # Short transactions only: no connection is held while Creem answers or while waiting.
        async with pool.acquire() as conn, conn.transaction():
            await subscriptions.lock_checkout(conn, uid)
            if await subscriptions.live_of(conn, uid) is not None:  # paid meanwhile
                raise AlreadySubscribed
            row = await subscriptions.checkout_of(conn, uid)
            if row is not None and row["checkout_id"] and row["age"] < CHECKOUT_REUSE:
                return Checkout(row["checkout_id"], row["checkout_url"], None, "pending")
            opening = row is not None and not row["checkout_id"] and row["age"] < OPENING_WAIT
            if not opening:
                await subscriptions.claim_checkout(conn, uid)  # ours to open
        if not opening:
            break
        if time.monotonic() > deadline:  # the other request's Creem call hangs: say so
            raise CheckoutOpening
        await asyncio.sleep(0.1)  # another request is opening it: its answer is ours too
    try:
        checkout = await client.create_checkout(
            product_id=settings.creem.subscription_product_id,
            request_id=f"plan-{uuid.uuid4()}",
            customer_email=email,
            success_url=settings.creem.subscription_success_url,
            metadata={"user_id": user_id, "purpose": "subscription"},
        )
    except BaseException:
        await subscriptions.release_checkout(pool, uid)  # the next click tries again
        raise
    await subscriptions.remember_checkout(pool, uid, checkout.id, checkout.checkout_url)
    return checkout


async def cancel(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    secrets: Secrets,
    user_id: str,
) -> Cancelled:
    """Cancel at the period's end; raises PlanUnconfigured, NoSubscription, or CreemError (then
    nothing changed). Cancelling what is already scheduled to end answers the same again."""
    client = _client(http, settings, secrets)
    uid = uuid.UUID(user_id)
    live = await subscriptions.live_of(pool, uid)
    if live is None:
        raise NoSubscription
    if live["cancel_at_period_end"]:
        return Cancelled("scheduled_cancel", live["current_period_end"])
    answer = await client.cancel_subscription(live["id"], mode="scheduled")
    try:
        end = creem.subscription_state(answer).period_end
        period_end = dt.datetime.fromisoformat(end) if end else None
    except ValueError:
        period_end = None
    if period_end is not None and period_end.tzinfo is None:
        period_end = period_end.replace(tzinfo=dt.UTC)
    row = await subscriptions.mark_scheduled_cancel(pool, live["id"], uid, period_end)
    if row is None:  # it ended meanwhile (a webhook won the race)
        raise NoSubscription
    return Cancelled("scheduled_cancel", row["current_period_end"])
