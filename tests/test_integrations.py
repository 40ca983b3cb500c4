"""Google integrations (issue 18, backend): connect with PKCE and a state bound to the session,
tokens encrypted at rest, refreshed before expiry by the janitor, broken when Google refuses,
revoked on disconnect, attached to instances. Real PostgreSQL, real HTTP, the fake Google."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from conftest import ApiEnv, running_api_env

from blitzclawd.integrations.google import access_token_context
from blitzclawd.testing import seed
from blitzclawd.testing.fake_google import FakeGoogle

CALLBACK = "/integrations/google/callback"


async def until(check: Callable[[], Awaitable[Any]], deadline: float = 15.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def google_env(database: str, **google: Any) -> AsyncIterator[tuple[ApiEnv, FakeGoogle]]:
    async with FakeGoogle() as fake:
        sections = {
            "google": {
                "client_id": fake.client_id,
                "authorization_url": fake.authorization_url,
                "token_url": fake.token_url,
                "revoke_url": fake.revoke_url,
                "userinfo_url": fake.userinfo_url,
                "refresh_interval": 0.05,
                **google,
            },
            "daemon": {"heartbeat_interval": 0.1},
        }
        secrets = {"google_client_secret": fake.client_secret}
        async with running_api_env(database, sections, secrets) as env:
            yield env, fake


class Session:
    """A signed-in browser: Clerk's session cookie (and this site's Origin for changes)."""

    def __init__(self, env: ApiEnv, clerk_id: str) -> None:
        self.env = env
        token = env.clerk.mint(clerk_id)
        self.headers = {"Cookie": f"__session={token}", "Origin": env.api}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.env.call(method, path, headers=self.headers, json=body)

    async def user_id(self) -> str:
        status, me = await self.call("GET", "/api/auth/me")
        assert status == 200, me
        return me["id"]

    async def open_callback(self, location: str) -> tuple[int, str, str | None]:
        """Follow Google's redirect to our callback page: (status, page, Location)."""
        query = urllib.parse.urlsplit(location).query
        async with self.env.http.get(
            f"{self.env.api}{CALLBACK}?{query}", headers=self.headers, allow_redirects=False
        ) as resp:
            return resp.status, await resp.text(), resp.headers.get("Location")


async def consent(session: Session, google: FakeGoogle, email: str, allow: bool = True) -> str:
    status, body = await session.call("POST", "/api/integrations/google/connect")
    assert status == 200, body
    url = body["url"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["code_challenge_method"] == "S256" and query["access_type"] == "offline"
    assert "https://www.googleapis.com/auth/gmail.readonly" in query["scope"].split()
    return await (google.approve(url, email) if allow else google.deny(url))


async def connect(session: Session, google: FakeGoogle, email: str) -> dict[str, Any]:
    location = await consent(session, google, email)
    status, page, to = await session.open_callback(location)
    assert status == 303, page
    assert to == "/settings/integrations?connected=google"
    status, body = await session.call("GET", "/api/integrations")
    assert status == 200
    (integration,) = body["integrations"]
    return integration


async def stored_text(env: ApiEnv) -> str:
    """Every value of every column of the two tables that hold OAuth material, as text (bytea
    both as hex and as the bytes read as text)."""
    parts = []
    for table in ("user_integrations", "oauth_states"):
        for row in await env.pool.fetch(f"SELECT * FROM {table}"):
            for value in row.values():
                if isinstance(value, bytes | bytearray | memoryview):
                    raw = bytes(value)
                    parts += [raw.hex(), raw.decode("latin-1")]
                else:
                    parts.append(str(value))
    return "\n".join(parts)


async def integration_rows(env: ApiEnv) -> list[Any]:
    return await env.pool.fetch("SELECT * FROM user_integrations ORDER BY created_at")


async def test_connect_stores_tokens_encrypted_and_lists_the_account(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        integration = await connect(ada, google, "ada@gmail.test")
        assert integration["status"] == "connected"
        assert integration["account_email"] == "ada@gmail.test"
        assert integration["provider"] == "google"
        assert "https://www.googleapis.com/auth/calendar.readonly" in integration["scopes"]
        assert integration["attached_instances"] == [] and integration["expires_at"]
        assert not {"access_token", "refresh_token"} & set(integration)
        # Not one token, code or verifier of the fake's in plaintext anywhere in the database.
        text = await stored_text(env)
        assert google.issued
        for token in google.issued:
            assert token not in text
        # What is stored decrypts, with the keyring and its own context, to a live token.
        (row,) = await integration_rows(env)
        keyring = env.daemon.context.keyring()
        access = keyring.decrypt_text(row["access_token_enc"], access_token_context(row["id"]))
        assert google.token_is_live(access)
        assert row["refresh_token_enc"] is not None
        # The state was used once.
        assert (
            await env.pool.fetchval("SELECT count(*) FROM oauth_states WHERE used_at IS NULL") == 0
        )


async def test_a_state_from_another_session_is_refused_and_stores_nothing(database: str) -> None:
    async with google_env(database) as (env, google):
        ada, eve = Session(env, "user_ada"), Session(env, "user_eve")
        location = await consent(ada, google, "ada@gmail.test")
        status, page, _ = await eve.open_callback(location)
        assert status == 403
        assert "this link was started by another session" in page
        assert await integration_rows(env) == []
        # The API form says the same.
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        status, body = await eve.call("POST", "/api/integrations/google/callback", query)
        assert status == 403 and body["error"]["code"] == "wrong_session", body
        assert await integration_rows(env) == []
        # Not signed in at all: sent to sign in, and back here after.
        async with env.http.get(
            env.api + CALLBACK + "?" + urllib.parse.urlsplit(location).query,
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            assert resp.headers["Location"].startswith(
                "/sign-in?redirect_url=/integrations/google/callback?code"
            )
        # The state was not spent: its own user can still finish.
        status, page, _ = await ada.open_callback(location)
        assert status == 303, page


async def test_a_replayed_code_is_refused_and_changes_nothing(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        location = await consent(ada, google, "ada@gmail.test")
        status, _, _ = await ada.open_callback(location)
        assert status == 303
        before = [dict(r) for r in await integration_rows(env)]
        requests = google.token_requests
        status, page, _ = await ada.open_callback(location)
        assert status == 409 and "used already" in page
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        status, body = await ada.call("POST", "/api/integrations/google/callback", query)
        assert status == 409 and body["error"]["code"] == "state_used"
        assert [dict(r) for r in await integration_rows(env)] == before
        assert google.token_requests == requests  # refused before Google was asked


async def test_a_code_google_refuses_stores_nothing(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        location = await consent(ada, google, "ada@gmail.test")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        query["code"] = "4/0-not-a-code"
        status, body = await ada.call("POST", "/api/integrations/google/callback", query)
        assert status == 400 and body["error"]["code"] == "code_refused", body
        assert "invalid_grant" in body["error"]["message"]
        assert await integration_rows(env) == []


async def test_denied_consent_says_so_and_stores_nothing(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        location = await consent(ada, google, "ada@gmail.test", allow=False)
        assert "error=access_denied" in location
        status, page, _ = await ada.open_callback(location)
        assert status == 400 and "You did not allow access" in page
        assert await integration_rows(env) == []
        assert (
            await env.pool.fetchval("SELECT count(*) FROM oauth_states WHERE used_at IS NULL") == 0
        )


async def test_an_expired_state_is_refused(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        location = await consent(ada, google, "ada@gmail.test")
        await env.pool.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
        status, page, _ = await ada.open_callback(location)
        assert status == 410 and "expired" in page
        assert await integration_rows(env) == []


async def test_tokens_are_refreshed_before_expiry(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        instance = await seed.create_instance(env.pool, await ada.user_id())
        google.access_token_lifetime = 120  # within the 10-minute margin: due at once
        integration = await connect(ada, google, "ada@gmail.test")
        status, _ = await ada.call(
            "POST",
            f"/api/instances/{instance.id}/integrations/attach",
            {"integration_id": integration["id"]},
        )
        assert status == 200
        keyring = env.daemon.context.keyring()
        (row,) = await integration_rows(env)
        first = keyring.decrypt_text(row["access_token_enc"], access_token_context(row["id"]))
        google.expire_access_tokens()  # Google let it lapse early
        assert not google.token_is_live(first)

        async def refreshed() -> Any:
            r = await env.pool.fetchrow("SELECT * FROM user_integrations")
            token = keyring.decrypt_text(r["access_token_enc"], access_token_context(r["id"]))
            return token if token != first else None

        new = await until(refreshed)
        assert google.token_is_live(new)
        async with env.http.get(
            google.userinfo_url, headers={"Authorization": f"Bearer {new}"}
        ) as resp:
            assert resp.status == 200 and (await resp.json())["email"] == "ada@gmail.test"
        # gog on the server refreshes its own access tokens: a refresh that kept the refresh
        # token configures (and restarts) nothing; only the attach did.
        jobs = await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 AND kind = 'configure'",
            uuid.UUID(instance.id),
        )
        assert jobs == 1
        for token in google.issued:
            assert token not in await stored_text(env)


async def test_a_grant_revoked_at_google_breaks_the_integration_and_emails(database: str) -> None:
    async with google_env(database, refresh_margin=0) as (env, google):
        ada = Session(env, "user_ada")
        user_id = await ada.user_id()
        instance = await seed.create_instance(env.pool, user_id)
        await connect(ada, google, "ada@gmail.test")
        google.revoke_grant("ada@gmail.test")  # the user removed BlitzClaw in their account
        await env.pool.execute("UPDATE user_integrations SET expires_at = now()")  # due now

        async def broken() -> Any:
            return await env.pool.fetchval(
                "SELECT broken_reason FROM user_integrations WHERE status = 'broken'"
            )

        assert "revoked" in await until(broken)
        note = await until(
            lambda: env.pool.fetchrow(
                "SELECT facts FROM notifications WHERE kind = 'integration_broken'"
            )
        )
        assert "/settings/integrations" in str(note["facts"])
        status, body = await ada.call("GET", "/api/integrations")
        assert body["integrations"][0]["status"] == "broken"
        # A broken integration cannot be given to an assistant.
        status, body = await ada.call(
            "POST",
            f"/api/instances/{instance.id}/integrations/attach",
            {"integration_id": body["integrations"][0]["id"]},
        )
        assert status == 409 and body["error"]["code"] == "integration_broken"


async def test_google_not_answering_is_retried_not_broken(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        await connect(ada, google, "ada@gmail.test")
        google.outage = True
        before = await env.pool.fetchval("SELECT access_token_enc FROM user_integrations")
        asked = google.token_requests
        await env.pool.execute("UPDATE user_integrations SET expires_at = now()")  # due now

        async def tried_twice() -> bool:
            return google.token_requests >= asked + 2

        await until(tried_twice)
        row = await env.pool.fetchrow("SELECT * FROM user_integrations")
        assert row["status"] == "connected" and row["access_token_enc"] == before
        google.outage = False  # back: the next round refreshes it

        async def refreshed() -> bool:
            enc = await env.pool.fetchval("SELECT access_token_enc FROM user_integrations")
            return enc != before

        await until(refreshed)
        assert await env.pool.fetchval("SELECT status FROM user_integrations") == "connected"


async def test_disconnect_revokes_at_google_then_deletes(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        instance = await seed.create_instance(env.pool, await ada.user_id())
        integration = await connect(ada, google, "ada@gmail.test")
        await ada.call(
            "POST",
            f"/api/instances/{instance.id}/integrations/attach",
            {"integration_id": integration["id"]},
        )
        (grant,) = google.grants.values()
        status, body = await ada.call("DELETE", "/api/integrations/google")
        assert status == 200, body
        assert grant.revoked
        assert grant.refresh_token and not google.token_is_live(grant.refresh_token)
        assert await integration_rows(env) == []
        assert await env.pool.fetchval("SELECT count(*) FROM instance_integrations") == 0
        status, body = await ada.call("DELETE", "/api/integrations/google")
        assert status == 404
        # Revoked at Google already (the user did it there first): still removed here.
        await connect(ada, google, "ada@gmail.test")
        google.revoke_grant()
        status, body = await ada.call("DELETE", "/api/integrations/google")
        assert status == 200 and await integration_rows(env) == []


async def test_disconnect_keeps_the_row_when_google_does_not_answer(database: str) -> None:
    async with google_env(database, revoke_url="http://127.0.0.1:9/revoke") as (env, google):
        ada = Session(env, "user_ada")
        await connect(ada, google, "ada@gmail.test")
        status, body = await ada.call("DELETE", "/api/integrations/google")
        assert status == 502 and body["error"]["code"] == "google_unreachable"
        assert len(await integration_rows(env)) == 1


async def test_reconnecting_replaces_the_tokens_and_revokes_the_old_grant(database: str) -> None:
    async with google_env(database) as (env, google):
        ada = Session(env, "user_ada")
        first = await connect(ada, google, "ada@gmail.test")
        (old,) = google.grants.values()
        second = await connect(ada, google, "ada.work@gmail.test")
        assert second["id"] == first["id"] and second["account_email"] == "ada.work@gmail.test"
        assert old.revoked and len(await integration_rows(env)) == 1


async def test_attach_and_detach_are_the_owners_only(database: str) -> None:
    async with google_env(database) as (env, google):
        ada, bob = Session(env, "user_ada"), Session(env, "user_bob")
        mine = await seed.create_instance(env.pool, await ada.user_id())
        theirs = await seed.create_instance(env.pool, await bob.user_id())
        integration = await connect(ada, google, "ada@gmail.test")
        body = {"integration_id": integration["id"]}
        status, _ = await ada.call("POST", f"/api/instances/{theirs.id}/integrations/attach", body)
        assert status == 404
        status, _ = await bob.call("POST", f"/api/instances/{theirs.id}/integrations/attach", body)
        assert status == 404  # not bob's integration
        status, answer = await ada.call(
            "POST", f"/api/instances/{mine.id}/integrations/attach", body
        )
        assert status == 200 and answer["changed"] is True
        status, listing = await ada.call("GET", "/api/integrations")
        assert listing["integrations"][0]["attached_instances"] == [mine.id]
        status, listing = await bob.call("GET", "/api/integrations")
        assert listing == {"integrations": []}
        status, answer = await ada.call(
            "POST", f"/api/instances/{mine.id}/integrations/detach", body
        )
        assert status == 200 and answer["changed"] is True
        status, listing = await ada.call("GET", "/api/integrations")
        assert listing["integrations"][0]["attached_instances"] == []
        status, answer = await ada.call(
            "POST", f"/api/instances/{mine.id}/integrations/attach", {"integration_id": "x"}
        )
        assert status == 422


async def test_routes_answer_503_when_google_is_not_configured(api_env) -> None:
    session = Session(api_env, "user_plain")
    for method, path, body in (
        ("GET", "/api/integrations", None),
        ("POST", "/api/integrations/google/connect", None),
        ("POST", "/api/integrations/google/callback", {"code": "c", "state": "s" * 48}),
        ("DELETE", "/api/integrations/google", None),
    ):
        status, answer = await session.call(method, path, body)
        assert status == 503, (path, answer)
        assert answer["error"]["code"] == "not_configured"
        assert "google_client_secret" in answer["error"]["message"]
    status, _, _ = await session.open_callback("http://x/?code=c&state=s")
    assert status == 503
