"""The daemon in-process: a crashing actor is restarted while the listeners keep answering; an
actor that keeps finding a dependency unavailable is waited for, never a reason to exit."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from blitzclawd.config import Secret, Secrets, parse_settings
from blitzclawd.daemon import EXIT_OK, Daemon
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.supervisor import ChildSpec
from blitzclawd.testing.daemon_process import free_port


class Crashy(Actor):
    """Crashes on demand, as a buggy actor would."""

    def __init__(self) -> None:
        super().__init__("crashy")

    async def handle(self, message: object) -> str:
        if message == "crash":
            raise RuntimeError("boom")
        return "pong"


class Unlucky(Actor):
    """Finds its dependency gone on every start while `down` is set, as on a database outage."""

    down = True
    attempts = 0

    def __init__(self) -> None:
        super().__init__("unlucky")

    async def on_start(self) -> None:
        Unlucky.attempts += 1
        if Unlucky.down:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


def settings_for_test():
    return parse_settings(
        {
            "api": {"port": free_port()},
            "proxy": {"port": free_port()},
            "supervisor": {"backoff_base": 0.01, "backoff_max": 0.05},
        }
    )


async def test_crashing_actor_is_restarted_while_listeners_answer(database: str) -> None:
    settings = settings_for_test()
    daemon = Daemon(
        settings,
        Secrets({"database_url": Secret(database)}),
        extra_children=[ChildSpec("crashy", Crashy)],
    )
    run = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 30)
    sup = daemon.supervisor
    assert sup is not None
    url = f"http://127.0.0.1:{settings.api.port}"
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        first = sup.child("crashy")
        assert await first.ask("ping") == "pong"
        first.tell("crash")
        deadline = time.monotonic() + 10
        restarted = False
        while time.monotonic() < deadline:  # the listeners answer the whole time
            async with http.get(url + "/healthz") as resp:
                statuses.append(resp.status)
            current = sup.child("crashy")
            if current is not None and current is not first and current.running:
                restarted = True
                break
            await asyncio.sleep(0.005)
        assert restarted, [s for s in sup.status()]
        assert await sup.child("crashy").ask("ping") == "pong"
        (crashy,) = [s for s in sup.status() if s.name == "crashy"]
        assert crashy.restarts == 1 and "boom" in (crashy.last_error or "")
        async with http.get(url + "/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{settings.proxy.port}/healthz") as resp:
            assert resp.status == 200
    assert statuses and set(statuses) == {200}
    daemon.request_stop()
    assert await asyncio.wait_for(run, 15) == EXIT_OK


async def test_an_unavailable_dependency_never_makes_the_daemon_exit(database: str) -> None:
    settings = settings_for_test()  # 3 restarts in 5 s would escalate
    daemon = Daemon(
        settings,
        Secrets({"database_url": Secret(database)}),
        extra_children=[ChildSpec("unlucky", Unlucky)],
    )
    Unlucky.down = False  # up for the start (a dependency missing at start-up is exit 69)
    run = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 30)
    sup = daemon.supervisor
    assert sup is not None
    first = sup.child("unlucky")
    url = f"http://127.0.0.1:{settings.api.port}/readyz"
    async with aiohttp.ClientSession() as http:
        Unlucky.down = True
        start = Unlucky.attempts
        first.stop()  # it goes, and every restart finds the dependency gone
        deadline = time.monotonic() + 15
        while Unlucky.attempts < start + 6:  # twice the window's allowance, within the window
            assert time.monotonic() < deadline, Unlucky.attempts
            async with http.get(url) as resp:
                if resp.status == 503:
                    assert "unlucky is" in (await resp.json())["reason"]
            await asyncio.sleep(0.01)
        assert not run.done() and not sup.escalated.is_set()
        Unlucky.down = False
        deadline = time.monotonic() + 15
        while True:  # bounded by the deadline: ready again once the dependency is back
            assert time.monotonic() < deadline
            async with http.get(url) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.01)
    daemon.request_stop()
    assert await asyncio.wait_for(run, 15) == EXIT_OK
