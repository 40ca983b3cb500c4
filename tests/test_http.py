"""HTTP plumbing: the JSON error shape, request ids, health and readiness, graceful drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from blitzclawd.config import Secrets, Settings
from blitzclawd.context import DaemonContext
from blitzclawd.db.pool import create_pool
from blitzclawd.http.app import make_api_app
from blitzclawd.http.errors import ApiError
from blitzclawd.http.listener import HttpListener
from blitzclawd.http.middlewares import request_context
from blitzclawd.registry import Actors
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.supervisor import ChildSpec, Restart, Supervisor
from blitzclawd.testing.daemon_process import free_port


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret-token-abc leaked?")


async def bad_field(request: web.Request) -> web.Response:
    raise ApiError(422, "invalid", "must be at least 1000", field="amount_cents")


@asynccontextmanager
async def client_for(app: web.Application) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def plain_app() -> web.Application:
    app = web.Application(middlewares=[request_context])
    app.router.add_get("/boom", boom)
    app.router.add_post("/field", bad_field)
    return app


async def test_errors_are_json_with_code_message_field_and_request_id(caplog) -> None:
    async with client_for(plain_app()) as client:
        resp = await client.post("/field")
        body = await resp.json()
        assert resp.status == 422
        assert body["error"]["field"] == "amount_cents"
        assert body["error"]["code"] == "invalid"
        assert body["error"]["request_id"] == resp.headers["X-Request-Id"]

        resp = await client.get("/nowhere")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"

        resp = await client.put("/field")
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "method_not_allowed"

        with caplog.at_level(logging.ERROR, logger="blitzclawd.http"):
            resp = await client.get("/boom")
        text = await resp.text()
        assert resp.status == 500
        assert "secret-token" not in text  # the reason stays in the log, not the body
        assert (await resp.json())["error"]["code"] == "internal_error"
        assert any("secret-token" in str(r.exc_info) for r in caplog.records)


async def test_request_id_is_kept_when_plain_and_replaced_when_not() -> None:
    async with client_for(plain_app()) as client:
        resp = await client.get("/nowhere", headers={"X-Request-Id": "abc-123"})
        assert resp.headers["X-Request-Id"] == "abc-123"
        resp = await client.get("/nowhere", headers={"X-Request-Id": "bad id\twith junk"})
        assert resp.headers["X-Request-Id"] != "bad id\twith junk"
        assert len(resp.headers["X-Request-Id"]) == 32


class Idle(Actor):
    pass


def context_for(pool: Any, sup: Supervisor) -> DaemonContext:
    return DaemonContext(
        Settings(),
        Secrets(),
        pool,
        "test-daemon",
        supervisor=sup,
        actors=Actors.of(sup.child),
        http=None,  # type: ignore[arg-type]  # views here make no outbound call
        clerk=None,  # type: ignore[arg-type]
        clerk_users=None,
        provider=None,
    )


async def readiness(database: str, specs: list[ChildSpec], *, crash: str | None = None):
    pool = await create_pool(database, min_size=1, max_size=2)
    # A long backoff keeps a crashed child down while readiness is asked.
    sup = Supervisor(specs, backoff_base=30, backoff_max=30)
    ctx = context_for(pool, sup)
    await sup.start()
    try:
        if crash is not None:
            sup.child(crash).tell("crash")
            for _ in range(500):
                if sup.child(crash) is None:
                    break
                await asyncio.sleep(0.01)
        async with client_for(make_api_app(ctx)) as client:
            assert (await client.get("/healthz")).status == 200
            resp = await client.get("/readyz")
            return resp.status, await resp.json()
    finally:
        await sup.stop()
        await pool.close()


class Fragile(Actor):
    async def handle(self, message: object) -> None:
        raise RuntimeError("fragile")


async def test_readyz_is_200_when_database_and_actors_are_up(database: str) -> None:
    status, body = await readiness(database, [ChildSpec("idle", Idle)])
    assert status == 200
    assert body["status"] == "ready" and body["database"] == "ok"
    assert body["actors"][0]["name"] == "idle" and body["actors"][0]["state"] == "running"


async def test_readyz_is_503_naming_a_permanent_actor_that_is_down(database: str) -> None:
    status, body = await readiness(
        database, [ChildSpec("idle", Idle), ChildSpec("fragile", Fragile)], crash="fragile"
    )
    assert status == 503
    assert "fragile" in body["reason"]


async def test_a_temporary_actor_that_ended_leaves_the_daemon_ready(database: str) -> None:
    status, _ = await readiness(
        database,
        [ChildSpec("idle", Idle), ChildSpec("fragile", Fragile, Restart.TEMPORARY)],
        crash="fragile",
    )
    assert status == 200


async def test_readyz_is_503_when_the_database_is_gone(database: str) -> None:
    pool = await create_pool(database, min_size=1, max_size=1)
    await pool.close()  # every acquire now fails, as with a database that went away
    ctx = context_for(pool, Supervisor([]))  # built, not started
    async with client_for(make_api_app(ctx)) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
    assert resp.status == 503
    assert "database" in body["reason"] and "actors not started" in body["reason"]


async def test_listener_drains_in_flight_requests_on_stop() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({"done": True})

    def app() -> web.Application:
        a = web.Application(middlewares=[request_context])
        a.router.add_get("/slow", slow)
        return a

    port = free_port()
    listener = HttpListener("test", app, "127.0.0.1", port, grace=10)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.started.wait(), 10)
    async with aiohttp.ClientSession() as http:
        in_flight = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.wait_for(entered.wait(), 10)
        listener.stop()

        # New connections are refused once the listener began stopping ...
        async def refused() -> bool:
            try:
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(f"http://127.0.0.1:{port}/probe")
            except aiohttp.ClientConnectionError:
                return True
            return False

        for _ in range(200):
            if await refused():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("listener still accepts connections after stop()")
        # ... while the request already in flight completes normally.
        release.set()
        resp = await asyncio.wait_for(in_flight, 10)
        assert resp.status == 200 and (await resp.json()) == {"done": True}
    await asyncio.wait_for(task, 15)
