"""The API listener's rate limits and CORS (issue 14): per address and per user, 429 with
Retry-After beyond a minute's burst, webhooks and health checks never limited; a browser on an
allowed origin may call the API (preflight, credentials, errors readable), no other origin."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import running_api_env

from blitzclawd.http.rate_limit import Buckets


def test_buckets_refill_evenly_and_stay_bounded() -> None:
    now = [0.0]
    buckets = Buckets(60, max_keys=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(60)] == [0.0] * 60
    assert buckets.take("a") == 1.0  # one a second once the burst is spent
    now[0] += 0.5
    assert buckets.take("a") == 0.5
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    for key in ("b", "c", "d"):
        buckets.take(key)
    assert list(buckets._state) == ["b", "c", "d"]  # "a", least recently seen, dropped


async def test_users_and_addresses_are_limited(database: str) -> None:
    sections = {"limits": {"api_per_ip_per_minute": 30, "api_per_user_per_minute": 5}}
    async with running_api_env(database, sections) as env:
        alice = env.session_headers("user_alice")
        statuses = [(await env.call("GET", "/api/auth/me", headers=alice))[0] for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        async with env.http.get(env.api + "/api/auth/me", headers=alice) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "rate_limited"
        # Another user from the same address still goes on; the admin key is not limited.
        bob = env.session_headers("user_bob")
        assert (await env.call("GET", "/api/auth/me", headers=bob))[0] == 200
        admin = {"Authorization": f"Bearer {env.admin_key}"}
        for _ in range(10):
            assert (await env.call("GET", "/api/admin/daemons", headers=admin))[0] == 200
        # The address's own limit (30 a minute) is spent now; health checks are exempt.
        codes = [(await env.call("GET", "/api/auth/me", headers=bob))[0] for _ in range(20)]
        assert 429 in codes
        assert (await env.call("GET", "/readyz"))[0] == 200


async def test_cors_for_allowed_origins_only(database: str) -> None:
    sections = {"auth": {"allowed_origins": ["http://localhost:3000", "https://app.example.test"]}}
    async with running_api_env(database, sections) as env:
        good = {"Origin": "https://app.example.test"}
        evil = {"Origin": "https://evil.example.test"}
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with env.http.options(
            env.api + "/api/instances", headers={**good, **preflight}
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.test"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        async with env.http.options(
            env.api + "/api/instances", headers={**evil, **preflight}
        ) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers

        alice = env.session_headers("user_alice")
        got: list[Any] = []
        for origin in (good, evil):
            async with env.http.get(env.api + "/api/auth/me", headers={**alice, **origin}) as resp:
                got.append((resp.status, resp.headers.get("Access-Control-Allow-Origin")))
        assert got == [(200, "https://app.example.test"), (200, None)]
        # An error is readable by the allowed page too.
        async with env.http.get(env.api + "/api/auth/me", headers=good) as resp:
            assert resp.status == 401
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.test"


async def test_cors_on_a_stream_the_view_prepares(database: str) -> None:
    """The live events are sent by their view before any middleware sees an answer: an allowed
    origin gets its CORS headers on the stream all the same, any other origin none."""
    sections = {"auth": {"allowed_origins": ["https://app.example.test"]}}
    async with running_api_env(database, sections) as env:
        admin = {"Authorization": f"Bearer {env.admin_key}"}
        got: list[Any] = []
        for origin in ("https://app.example.test", "https://evil.example.test"):
            async with env.http.get(
                env.api + "/api/admin/events", headers={**admin, "Origin": origin}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/event-stream"
                got.append(
                    (
                        resp.headers.get("Access-Control-Allow-Origin"),
                        resp.headers.get("Access-Control-Allow-Credentials"),
                        "Origin" in resp.headers.getall("Vary", []),
                    )
                )
                async with asyncio.timeout(10):  # the stream itself, already under way
                    assert await resp.content.readline() == b"retry: 2000\n"
        assert got == [("https://app.example.test", "true", True), (None, None, False)]
