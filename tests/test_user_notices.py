"""Telling users, in plain words: a real daemon, real PostgreSQL and HTTP, the fakes of Clerk,
Creem and Resend.

A deploy that fails for good sends one instance_error email without technical detail (and the
attempts that are retried send none); payment.failed / subscription.past_due send one email per
event (a replay sends none); a user first seen through a session gets their address from Clerk's
Backend API and then their receipts; user.updated changes the address; a known-unverified email
is a 403, and Clerk being down locks nobody out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import orjson
from conftest import running_api_env

from blitzclawd.fleet.pool import enqueue_job
from blitzclawd.runtime.messages import JobsQueued
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port

CREEM_HOOK = "/api/billing/webhook"
CLERK_HOOK = "/api/webhooks/clerk"


async def until(check: Callable[[], Awaitable[Any]], deadline: float = 20.0) -> Any:
    async with asyncio.timeout(deadline):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


def mails(env: Any, to: str | None = None, subject: str = "") -> list[dict[str, Any]]:
    return [
        m
        for m in env.resend.sent
        if (to is None or to in (m.get("to") or [])) and subject in (m.get("subject") or "")
    ]


async def signed_up(env: Any, clerk_id: str, email: str) -> str:
    status, _ = await env.clerk.deliver(
        env.api + CLERK_HOOK, "user.created", env.clerk.user_created(clerk_id, email)
    )
    assert status == 200
    return str(await env.pool.fetchval("SELECT id FROM users WHERE clerk_user_id = $1", clerk_id))


async def creem_post(env: Any, raw: bytes) -> tuple[int, Any]:
    headers = {"creem-signature": env.creem.sign(raw), "content-type": "application/json"}
    async with env.http.post(env.api + CREEM_HOOK, data=raw, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


async def settled_notifications(env: Any, user_id: str, kind: str) -> list[Any]:
    """The user's `kind` rows once none is pending any more."""

    async def check() -> list[Any] | None:
        rows = await env.pool.fetch(
            "SELECT status, period, last_error FROM notifications WHERE user_id = $1 AND kind = $2",
            uuid.UUID(user_id),
            kind,
        )
        return rows if rows and all(r["status"] != "pending" for r in rows) else None

    return await until(check)


# -- a deploy that fails for good --------------------------------------------------------------


async def test_a_deploy_failing_for_good_sends_one_plain_email(database: str) -> None:
    closed = free_port()  # nothing listens: every SSH attempt is refused
    fleet = {"job_max_attempts": 3, "job_poll": 0.1, "ssh_port": closed, "ssh_connect_timeout": 2}
    async with running_api_env(database, {"fleet": fleet}) as env:
        user_id = await signed_up(env, "user_deployfail", "owner@example.test")
        instance = await seed.create_instance(
            env.pool, user_id, status="pending", channel_type="whatsapp"
        )
        host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        async with env.pool.acquire() as conn, conn.transaction():
            server = await conn.fetchval(
                """INSERT INTO server_pool (name, ip_address, status, assigned_to, ssh_host_key)
                   VALUES ('bc-fail-1', '127.0.0.1', 'assigned', $1, $2) RETURNING id""",
                uuid.UUID(instance.id),
                host_key.strip(),
            )
            await conn.execute(
                "UPDATE instances SET server_id = $2 WHERE id = $1", uuid.UUID(instance.id), server
            )
            job_id = await enqueue_job(conn, uuid.UUID(instance.id), "deploy")
        env.daemon.context.actors.provisioner.tell(JobsQueued())

        async def job() -> Any:
            return await env.pool.fetchrow(
                "SELECT status, attempts, last_error FROM instance_jobs WHERE id = $1", job_id
            )

        # A failed attempt that will be retried: the job is queued again, and nobody is emailed.
        retried = await until(
            lambda: _when(job(), lambda j: j["status"] == "queued" and j["attempts"] >= 1)
        )
        assert "127.0.0.1" in retried["last_error"]
        assert not await env.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE kind = 'instance_error'"
        )
        assert not mails(env, "owner@example.test", "Problem")

        final = await until(lambda: _when(job(), lambda j: j["status"] == "failed"), 30)
        assert final["attempts"] == 3
        inst = await env.pool.fetchrow(
            "SELECT status, status_reason FROM instances WHERE id = $1", uuid.UUID(instance.id)
        )
        assert inst["status"] == "error"
        technical = inst["status_reason"]
        assert "ssh to 127.0.0.1" in technical  # the detail stays with us

        rows = await settled_notifications(env, user_id, "instance_error")
        assert [(r["status"], r["period"]) for r in rows] == [("sent", f"job:{job_id}")]
        sent = mails(env, "owner@example.test", "Problem with your assistant")
        assert len(sent) == 1
        body = sent[0]["text"] + sent[0]["html"]
        assert "could not finish setting it up" in body  # what happened
        assert "alerted" in body and "try again" in body  # what we do, what they can do
        for detail in (technical, "127.0.0.1", str(closed), "ssh", "SSH", "Error", "deploy"):
            assert detail not in body, detail
        # Nothing more is sent later (the notifier's sweeps run every 0.1 s).
        await asyncio.sleep(0.5)
        assert len(mails(env)) == len(mails(env, subject="Welcome")) + 1


async def _when(fetch: Awaitable[Any], ok: Callable[[Any], bool]) -> Any:
    value = await fetch
    return value if value is not None and ok(value) else None


# -- payment failures --------------------------------------------------------------------------


async def test_payment_failed_and_past_due_each_send_one_email(api_env: Any) -> None:
    env = api_env
    user_id = await signed_up(env, "user_payfail", "payer@example.test")
    await seed.credit(env.pool, user_id, 50_000_000)
    for _ in range(2):
        await seed.create_instance(env.pool, user_id)
    event, raw = env.creem.subscription_event(
        "payment.failed", customer_email="payer@example.test", metadata={"user_id": user_id}
    )
    assert await creem_post(env, raw) == (200, {"status": "applied"})
    assert await creem_post(env, raw) == (200, {"status": "duplicate"})  # Creem's retry

    rows = await settled_notifications(env, user_id, "payment_failed")
    assert [(r["status"], r["period"]) for r in rows] == [("sent", f"creem:{event['id']}")]
    sent = mails(env, "payer@example.test", "payment did not go through")
    assert len(sent) == 1
    text = sent[0]["text"]
    assert "did not go through" in text  # what happened
    assert "we paused your 2 assistants" in text  # what we did
    assert "update your payment details, or top up" in text  # what they can do
    assert "http://localhost:3000/dashboard" in text
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM instances WHERE user_id = $1 AND status = 'paused'",
            uuid.UUID(user_id),
        )
        == 2
    )

    # subscription.past_due: its own event, its own single email.
    _, raw = env.creem.subscription_event(
        "subscription.past_due", customer_email="payer@example.test", metadata={"user_id": user_id}
    )
    assert await creem_post(env, raw) == (200, {"status": "applied"})
    assert await creem_post(env, raw) == (200, {"status": "duplicate"})
    rows = await settled_notifications(env, user_id, "payment_failed")
    assert len(rows) == 2
    await asyncio.sleep(0.3)  # a few notifier sweeps: still two
    assert len(mails(env, "payer@example.test", "payment did not go through")) == 2


# -- users first seen through a session --------------------------------------------------------


async def test_a_session_only_user_gets_their_email_from_clerk_and_a_receipt(
    api_env: Any,
) -> None:
    env = api_env
    env.clerk.add_user("user_sessiononly", "session@example.test")  # no user.created webhook
    status, me = await env.call(
        "GET", "/api/auth/me", headers=env.session_headers("user_sessiononly")
    )
    assert status == 200, me
    assert env.clerk.user_requests == ["user_sessiononly"]
    row = await env.pool.fetchrow(
        "SELECT id::text, email, email_verified FROM users WHERE clerk_user_id = $1",
        "user_sessiononly",
    )
    assert (row["email"], row["email_verified"]) == ("session@example.test", True)

    # The checkout right after first sight carries the address.
    status, topup = await env.call(
        "POST",
        "/api/billing/topup",
        headers=env.session_headers("user_sessiononly"),
        json={"amount_cents": 2000},
    )
    assert status == 201, topup
    assert env.creem.checkouts[topup["checkout_id"]]["customer"] == {
        "email": "session@example.test"
    }
    _, raw = env.creem.complete_checkout(topup["checkout_id"])
    assert await creem_post(env, raw) == (200, {"status": "applied"})
    rows = await settled_notifications(env, row["id"], "topup_receipt")
    assert [r["status"] for r in rows] == ["sent"]
    assert len(mails(env, "session@example.test", "Receipt: $20.00")) == 1
    # Known now: later requests do not ask Clerk again.
    await env.call("GET", "/api/auth/me", headers=env.session_headers("user_sessiononly"))
    assert env.clerk.user_requests == ["user_sessiononly"]


async def test_clerk_down_never_breaks_sign_in_and_the_address_is_fetched_later(
    api_env: Any,
) -> None:
    env = api_env
    env.clerk.add_user("user_clerkdown", "later@example.test")
    for failure in (503, 429):
        env.clerk.users_status = failure
        env.daemon.context.user_cache.clear()
        await env.pool.execute("UPDATE users SET clerk_checked_at = NULL")  # a minute passes
        status, body = await env.call(
            "GET", "/api/auth/me", headers=env.session_headers("user_clerkdown")
        )
        assert status == 200, body  # signed in all the same
    user_id = await env.pool.fetchval(
        "SELECT id::text FROM users WHERE clerk_user_id = 'user_clerkdown'"
    )
    assert (
        await env.pool.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(user_id)) is None
    )
    # An unknown user (404) is not an error either.
    status, _ = await env.call("GET", "/api/auth/me", headers=env.session_headers("user_ghost"))
    assert status == 200

    # Clerk is back and a minute has passed: an email due to be sent looks the address up.
    env.clerk.users_status = 200
    await env.pool.execute("UPDATE users SET clerk_checked_at = NULL")
    await seed.credit(env.pool, user_id, 50_000_000)
    await seed.create_instance(env.pool, user_id)
    _, raw = env.creem.subscription_event(
        "payment.failed", customer_email="later@example.test", metadata={"user_id": user_id}
    )
    assert await creem_post(env, raw) == (200, {"status": "applied"})
    rows = await settled_notifications(env, user_id, "payment_failed")
    assert [r["status"] for r in rows] == ["sent"]
    assert len(mails(env, "later@example.test", "payment did not go through")) == 1


# -- user.updated ------------------------------------------------------------------------------


async def test_user_updated_changes_the_address_and_bad_payloads_change_nothing(
    api_env: Any,
) -> None:
    env = api_env
    user_id = await signed_up(env, "user_mover", "old@example.test")
    await seed.credit(env.pool, user_id, 50_000_000)
    await seed.create_instance(env.pool, user_id)

    good = env.clerk.user_updated("user_mover", "new@example.test")
    bad_cases = [
        ({**good, "email_addresses": "new@example.test"}, "data.email_addresses"),
        ({**good, "primary_email_address_id": "idn_nope"}, "data.primary_email_address_id"),
        (
            {**good, "email_addresses": [{"id": "idn_x", "email_address": "not an address"}]},
            "data.email_addresses[0].email_address",
        ),
        ({k: v for k, v in good.items() if k != "id"}, "data.id"),
    ]
    for data, field in bad_cases:
        status, body = await env.clerk.deliver(env.api + CLERK_HOOK, "user.updated", data)
        assert status == 400, body
        error = orjson.loads(body)["error"]
        assert (error["code"], error["field"]) == ("invalid_event", field)
        assert (
            await env.pool.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(user_id))
            == "old@example.test"
        )

    status, body = await env.clerk.deliver(env.api + CLERK_HOOK, "user.updated", good)
    assert (status, orjson.loads(body)) == (200, {"status": "applied"})
    assert (
        await env.pool.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(user_id))
        == "new@example.test"
    )

    _, raw = env.creem.subscription_event(
        "payment.failed", customer_email="new@example.test", metadata={"user_id": user_id}
    )
    assert await creem_post(env, raw) == (200, {"status": "applied"})
    await settled_notifications(env, user_id, "payment_failed")
    assert len(mails(env, "new@example.test", "payment did not go through")) == 1
    assert not mails(env, "old@example.test", "payment did not go through")


# -- auth.require_verified_email ---------------------------------------------------------------


async def test_an_unverified_email_is_refused_and_a_verified_one_is_not(api_env: Any) -> None:
    env = api_env
    env.clerk.add_user("user_unverified", "unverified@example.test", verified=False)
    status, body = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_unverified")
    )
    assert status == 403, body
    assert body["error"]["code"] == "email_unverified"
    assert body["error"]["field"] == "email"
    assert "verify your email address" in body["error"]["message"]

    await signed_up(env, "user_verified", "verified@example.test")
    status, body = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_verified")
    )
    assert status == 200, body

    # Verified in Clerk: user.updated says so, and the user is let in at once.
    data = env.clerk.user_updated("user_unverified", verified=True)
    status, _ = await env.clerk.deliver(env.api + CLERK_HOOK, "user.updated", data)
    assert status == 200
    status, body = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_unverified")
    )
    assert status == 200, body

    # A primary email that becomes unverified (a new address not confirmed yet) is refused
    # again, at once on this daemon (its session cache is dropped).
    data = env.clerk.user_updated("user_verified", "changed@example.test", verified=False)
    status, _ = await env.clerk.deliver(env.api + CLERK_HOOK, "user.updated", data)
    assert status == 200
    status, body = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_verified")
    )
    assert (status, body["error"]["code"]) == (403, "email_unverified")

    # Unknown because Clerk is down: let in (fail-safe for verified users during a blip).
    env.clerk.users_status = 503
    env.clerk.add_user("user_unknown", "unknown@example.test", verified=False)
    status, body = await env.call(
        "GET", "/api/billing/balance", headers=env.session_headers("user_unknown")
    )
    assert status == 200, body


def test_the_primary_emails_verification_is_read_as_clerk_sends_it() -> None:
    from blitzclawd.auth.clerk_users import ClerkUser, parse_user
    from blitzclawd.testing.fake_clerk import FakeClerk

    clerk = FakeClerk()
    verified = clerk.add_user("user_a", "a@example.test")
    unverified = clerk.add_user("user_b", "b@example.test", verified=False)
    assert parse_user(verified) == ClerkUser("user_a", "a@example.test", True)
    assert parse_user(unverified) == ClerkUser("user_b", "b@example.test", False)
    # No verification object says nothing: unknown, never a lock-out.
    verified["email_addresses"][0]["verification"] = None
    assert parse_user(verified) == ClerkUser("user_a", "a@example.test", None)
    # No primary address at all.
    assert parse_user(
        {"id": "user_c", "email_addresses": [], "primary_email_address_id": None}
    ) == (ClerkUser("user_c", None, None))
