"""The daemon in-process: a crashing actor is restarted while the listeners keep answering."""

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
