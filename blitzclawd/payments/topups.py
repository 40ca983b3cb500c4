"""A top-up: a Creem checkout for the amount, remembered so its webhook can be matched."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import aiohttp
import asyncpg

from blitzclawd.auth.clerk_users import clerk_users, ensure_email
from blitzclawd.config import Secrets, Settings
from blitzclawd.payments.creem import Checkout, CreemClient


class PaymentsUnconfigured(Exception):
    """No Creem API key or product id: top-ups are off."""


@dataclass(frozen=True, slots=True)
class Topup:
    id: str
    amount_cents: int
    checkout: Checkout


async def create_topup(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    secrets: Secrets,
    user_id: str,
    amount_cents: int,
) -> Topup:
    """Raises PaymentsUnconfigured, or CreemError when Creem refuses (then nothing is stored)."""
    key, creem = secrets.get("creem_api_key"), settings.creem
    if key is None or not creem.product_id:
        raise PaymentsUnconfigured
    # Looked up at Clerk if still missing (a session-only user): Creem's checkout then knows
    # who pays; without it (Clerk unreachable) the customer types it in at the checkout.
    email = await ensure_email(pool, clerk_users(http, settings, secrets), user_id)
    topup_id = uuid.uuid4()
    checkout = await CreemClient(http, creem.api_url, key.reveal()).create_checkout(
        product_id=creem.product_id,
        request_id=str(topup_id),
        customer_email=email,
        success_url=creem.success_url,
        units=amount_cents // creem.unit_cents,
        metadata={"user_id": user_id, "amount_cents": str(amount_cents), "topup_id": str(topup_id)},
    )
    await pool.execute(
        "INSERT INTO topups (id, user_id, amount_cents, checkout_id) VALUES ($1, $2, $3, $4)",
        topup_id,
        uuid.UUID(user_id),
        amount_cents,
        checkout.id,
    )
    return Topup(str(topup_id), amount_cents, checkout)
