"""The operators' live events (issue 14): GET /api/admin/events as Server-Sent Events over real
HTTP, fed while listened to; a deploy and a health sweep arrive in order; Last-Event-ID resumes
without repeats; a subscriber that does not read loses its oldest events and is told, and
publishing never waits for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from test_fleet import ADMIN_KEY, BOT_TOKEN, available, fleet_env

from blitzclawd.events import EventBus

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def take(stream: AsyncIterator[Any], n: int) -> list[Any]:
    out = []
    async with asyncio.timeout(10):
        async for item in stream:
            out.append(item)
            if len(out) == n:
                return out
    return out


async def test_a_slow_subscriber_loses_old_events_and_is_told() -> None:
    bus = EventBus(ring=100, queue=10)
    stream = bus.subscribe(None)
    first = asyncio.ensure_future(take(stream, 11))
    await asyncio.sleep(0)  # subscribed, waiting
    for i in range(25):  # never awaits: a subscriber that does not read cannot slow this
        bus.publish("tick", {"i": i})
    got = await first
    assert got[0].type == "lost" and got[0].data == {"dropped": 15}
    assert [e.data["i"] for e in got[1:]] == list(range(15, 25))
    await stream.aclose()
    assert bus.subscribers == 0

    # Resume after an id: the ring replays what came after it, nothing before.
    ids = [e.id for e in (bus.publish("tick", {"i": i}) for i in range(25, 30))]
    again = bus.subscribe(ids[1])
    assert [e.data["i"] for e in await take(again, 3)] == [27, 28, 29]
    await again.aclose()
    # An id older than the ring (or from before a restart): told that events were lost.
    old = bus.subscribe(1)
    assert (await take(old, 1))[0].type == "lost"
    await old.aclose()


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict]:
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    event: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])


async def until_event(stream: AsyncIterator[dict], want: Any, seen: list[dict]) -> dict:
    async with asyncio.timeout(30):
        async for event in stream:
            seen.append(event)
            if want(event):
                return event
    raise AssertionError("stream ended")


async def test_events_over_sse(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice = await env.user()
        assert (await env.call("GET", "/api/admin/events", alice))[0] == 404
        url = env.api + "/api/admin/events"
        # The answer starts once the daemon watches: from here on, changes are reported.
        resp = await env.http.get(url, headers=ADMIN)
        stream = sse(resp)
        seen: list[dict] = []
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
            },
        )
        assert status == 201
        iid = body["id"]
        active = await until_event(
            stream,
            lambda e: (
                e["event"] == "instance"
                and e["data"]["instance_id"] == iid
                and e["data"]["status"] == "active"
            ),
            seen,
        )
        assert (await env.call("POST", "/api/admin/health/check", ADMIN, {}))[0] == 200
        health = await until_event(
            stream,
            lambda e: e["event"] == "health" and e["data"]["instance_id"] == iid,
            seen,
        )
        assert health["data"]["ok"] is True and health["id"] > active["id"]
        ids = [e["id"] for e in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        await stream.aclose()
        resp.close()

        # Resume from the deploy's event: what came after it, nothing before, no repeats.
        resp = await env.http.get(url, headers={**ADMIN, "Last-Event-ID": str(active["id"])})
        again = sse(resp)
        replayed: list[dict] = []
        await until_event(again, lambda e: e["id"] == health["id"], replayed)
        assert replayed[0]["id"] > active["id"]  # nothing before it again
        assert {e["id"] for e in replayed} <= {e["id"] for e in seen}
        await again.aclose()
        resp.close()


async def test_the_proxy_summary_has_its_latency(api_env) -> None:
    """The per-second `proxy` event: requests and their median and 95th percentile latency (the
    upper bounds of the histogram buckets holding them), after requests were proxied."""
    from blitzclawd.metrics import _SECONDS
    from blitzclawd.testing import seed

    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    owner = await seed.create_user(api_env.pool)
    await seed.credit(api_env.pool, owner, 25_000_000)
    inst = await seed.create_instance(api_env.pool, owner)
    resp = await api_env.http.get(api_env.api + "/api/admin/events", headers=admin)
    stream = sse(resp)
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    for _ in range(3):
        async with api_env.http.post(
            api_env.proxy + "/v1/messages", json=body, headers=headers
        ) as answer:
            assert answer.status == 200
            await answer.read()
    seen: list[dict] = []
    event = await until_event(stream, lambda e: e["event"] == "proxy", seen)
    data = event["data"]
    assert data["requests"] >= 1 and data["errors"] == 0, data
    bounds = {round(b * 1000, 3) for b in _SECONDS}
    assert isinstance(data["p50_ms"], float) and data["p50_ms"] in bounds, data
    assert isinstance(data["p95_ms"], float) and data["p95_ms"] >= data["p50_ms"], data
    await stream.aclose()
    resp.close()
