"""Deleting an account (Clerk's signed user.deleted) leaves nothing that says who it was: the test
walks every column of every table for the user's personal strings. Only the ledger, top-ups and
usage history stay, attached to an anonymous row."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
from test_accounts import completed_topup, signed_up, until

from blitzclawd.testing import seed

CLERK_ID = "user_2AdaLovelacePersonal77"
EMAIL = "ada.lovelace.1815@example.test"
SOUL = "Ada's secret soul: speaks of the Analytical Engine"
OLD_SOUL = "An older soul of Ada, deleted with its instance"
BOT_USERNAME = "ada_engine_personal_bot"
BOT_NAME = "Ada Engine Personal"
BOT_ID = 7_311_204_987
ALLOWED_ID = "5550123987"
KEY_NAME = "Ada's personal laptop"


async def where_found(pool: asyncpg.Pool, needle: str) -> list[str]:
    """table.column of every row value (as text; bytea as escaped text) containing `needle`."""
    columns = await pool.fetch(
        """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           ORDER BY 1, 2"""
    )
    assert len(columns) > 100  # the whole schema, not a handful of tables
    found = []
    for col in columns:
        ident = f'"{col["column_name"]}"'
        value = f"encode({ident}, 'escape')" if col["data_type"] == "bytea" else f"{ident}::text"
        hits = await pool.fetchval(
            f'SELECT count(*) FROM "{col["table_name"]}" '
            f"WHERE strpos(lower({value}), lower($1)) > 0",
            needle,
        )
        if hits:
            found.append(f"{col['table_name']}.{col['column_name']}")
    return found


async def test_user_deleted_leaves_no_personal_data_in_any_column(api_env) -> None:
    user = await signed_up(api_env, CLERK_ID, EMAIL)
    session = api_env.session_headers(CLERK_ID)
    # Money in through Creem: its stored event carries the customer's email.
    _, raw = await completed_topup(api_env, CLERK_ID, 2000)
    async with api_env.http.post(
        api_env.api + "/api/billing/webhook",
        data=raw,
        headers={"creem-signature": api_env.creem.sign(raw), "content-type": "application/json"},
    ) as resp:
        assert resp.status == 200
    assert EMAIL in raw.decode()
    # An order through a product link, in the user's name: recorded as unmatched (we sold no
    # such top-up), with its payload and the user it claimed, for the operator.
    _, link_raw = api_env.creem.product_link_order(
        next(iter(api_env.creem.products)),
        customer_email=EMAIL,
        metadata={"user_id": user},
    )
    async with api_env.http.post(
        api_env.api + "/api/billing/webhook",
        data=link_raw,
        headers={
            "creem-signature": api_env.creem.sign(link_raw),
            "content-type": "application/json",
        },
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "unmatched"
    # An instance with a SOUL text and a Telegram bot, and an older one deleted before.
    for soul, deleted in ((SOUL, False), (OLD_SOUL, True)):
        inst = await seed.create_instance(api_env.pool, user)
        await api_env.pool.execute(
            """UPDATE instances SET soul_md = $2, persona_template = 'custom',
                      channel_config = $3::text::jsonb, channel_secret_enc = '\\x01',
                      status = CASE WHEN $4 THEN 'deleted' ELSE status END,
                      deleted_at = CASE WHEN $4 THEN now() END,
                      status_reason = CASE WHEN $4 THEN 'deleted by ' || $5 END
               WHERE id = $1""",
            uuid.UUID(inst.id),
            soul,
            orjson.dumps(
                {
                    "allow_from": [ALLOWED_ID],
                    "bot_id": BOT_ID,
                    "bot_username": BOT_USERNAME,
                    "bot_name": BOT_NAME,
                    "bot_link": f"https://t.me/{BOT_USERNAME}",
                }
            ).decode(),
            deleted,
            EMAIL,
        )
        await api_env.pool.execute(
            "INSERT INTO health_alerts (instance_id, kind, detail) VALUES ($1, 'down', $2)",
            uuid.UUID(inst.id),
            f"@{BOT_USERNAME} is not answering",
        )
        # A retried job whose last attempt's error quotes the bot.
        await api_env.pool.execute(
            """INSERT INTO instance_jobs (instance_id, kind, status, attempts, last_error)
               VALUES ($1, 'configure', 'queued', 1, $2)""",
            uuid.UUID(inst.id),
            f"telegram refused @{BOT_USERNAME}",
        )
    status, _ = await api_env.call(
        "POST", "/api/auth/api-keys", headers=session, json={"name": KEY_NAME}
    )
    assert status == 201
    personal = (CLERK_ID, EMAIL, SOUL, OLD_SOUL, BOT_USERNAME, BOT_NAME, str(BOT_ID), ALLOWED_ID)
    personal += (KEY_NAME,)
    for needle in personal:  # the walk finds them while the account exists
        assert await where_found(api_env.pool, needle), needle
    assert "processed_webhook_events.payload" in await where_found(api_env.pool, EMAIL)
    assert "unmatched_payments.payload" in await where_found(api_env.pool, EMAIL)
    ledger_before = await api_env.pool.fetch(
        "SELECT id, amount_micros, kind FROM ledger_entries WHERE user_id = $1 ORDER BY id",
        uuid.UUID(user),
    )

    status, _ = await api_env.clerk.deliver(
        api_env.api + "/api/webhooks/clerk", "user.deleted", api_env.clerk.user_deleted(CLERK_ID)
    )
    assert status == 200

    for needle in personal:
        assert await where_found(api_env.pool, needle) == [], needle
    # The books stay, on the same (now anonymous) row; the account stays deleted.
    assert ledger_before and ledger_before == await api_env.pool.fetch(
        "SELECT id, amount_micros, kind FROM ledger_entries WHERE user_id = $1 ORDER BY id",
        uuid.UUID(user),
    )
    assert await api_env.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM users WHERE id = $1", uuid.UUID(user)
    )
    status, body = await api_env.call("GET", "/api/auth/me", headers=session)
    assert status == 401, body
    assert await api_env.pool.fetchval("SELECT count(*) FROM users") == 1
    # A late user.created for the same Clerk id makes no new account.
    status, _ = await api_env.clerk.deliver(
        api_env.api + "/api/webhooks/clerk",
        "user.created",
        api_env.clerk.user_created(CLERK_ID, EMAIL),
    )
    assert status == 200
    assert await api_env.pool.fetchval("SELECT count(*) FROM users") == 1
    for needle in personal:
        assert await where_found(api_env.pool, needle) == [], needle


async def test_a_creation_racing_the_deletion_adds_nothing_to_the_erased_account(api_env) -> None:
    """A request authenticated just before user.deleted (its session still cached) waits on the
    user's row while the deletion holds it, then finds the account deleted: 401, nothing made."""
    user = await signed_up(api_env, "user_racing_delete")
    session = api_env.session_headers("user_racing_delete")
    status, _ = await api_env.call("GET", "/api/auth/me", headers=session)  # session now cached
    assert status == 200
    async with api_env.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        # What user.deleted does first: lock the row; then mark it deleted.
        await conn.execute(
            "UPDATE users SET deleted_at = now() WHERE id = $1", uuid.UUID(user), timeout=10
        )
        pending = asyncio.ensure_future(
            api_env.call("POST", "/api/auth/api-keys", headers=session, json={"name": "late"})
        )

        async def waiting_on_the_row() -> bool:
            return await api_env.pool.fetchval(
                """SELECT EXISTS (SELECT FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'
                     AND pid <> pg_backend_pid())"""
            )

        assert await until(waiting_on_the_row)
        await tx.commit()
    status, body = await pending
    assert status == 401, body
    assert await api_env.pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_deletion_for_an_unknown_account_stores_no_id(api_env) -> None:
    status, _ = await api_env.clerk.deliver(
        api_env.api + "/api/webhooks/clerk", "user.deleted", api_env.clerk.user_deleted(CLERK_ID)
    )
    assert status == 200
    assert await where_found(api_env.pool, CLERK_ID) == []
    assert await api_env.pool.fetchval("SELECT count(*) FROM processed_webhook_events") == 1
