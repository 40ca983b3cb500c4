"""The supervision tree as declared in blitzclawd.tree, and how it contains a crash loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import running_proxy_env

from blitzclawd import tree
from blitzclawd.children import Children, Resources
from blitzclawd.config import parse_settings
from blitzclawd.runtime.messages import JobsQueued
from blitzclawd.runtime.supervisor import ChildSpec, Supervisor

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


def declared(**kwargs: Any) -> tree.Branch:
    settings = parse_settings({"supervisor": {"max_restarts": 4, "within": 7.0}})
    # Building specs opens nothing: every factory runs only when its child starts.
    resources = Resources("postgresql://unused", None, None, None)  # type: ignore[arg-type]
    children = Children(settings, resources, lambda: None)  # type: ignore[arg-type,return-value]
    return tree.declare(children, **kwargs)


def test_the_tree_is_declared_in_one_place_with_its_strategies() -> None:
    assert tree.shape(declared(embedded=True, pool_manager=True)) == {
        "root": [
            "one_for_one",
            "postgres",
            {"core": ["one_for_one", "heartbeat", "janitor", "notifier"]},
            {"money": ["one_for_one", "billing", "proxy"]},
            {"fleet": ["one_for_one", "provisioner", "health-monitor", "pool-manager"]},
            {"edge": ["one_for_one", "proxy-listener", "api-listener"]},
        ]
    }
    # An external database has no keeper; without a Hetzner token there is no pool manager.
    bare = tree.shape(declared(embedded=False, pool_manager=False))
    assert bare["root"][1] == {"core": ["one_for_one", "heartbeat", "janitor", "notifier"]}  # type: ignore[index]
    assert {"fleet": ["one_for_one", "provisioner", "health-monitor"]} in bare["root"]  # type: ignore[index]


def test_every_supervisor_has_its_own_window_and_waits_for_its_children() -> None:
    settings = parse_settings({"supervisor": {"max_restarts": 4, "within": 7.0}})
    root = tree.build(declared(embedded=False, pool_manager=True), settings.supervisor)
    assert root.window == (4, 7.0) and root.strategy.value == "one_for_one"
    specs: list[ChildSpec] = [slot.spec for slot in root._slots]
    for spec in specs:
        sub = spec.factory()
        assert isinstance(sub, Supervisor) and sub.name == spec.name
        assert sub.window == (4, 7.0)
        inner = [slot.spec for slot in sub._slots]
        # Stopping a subtree stops its children one by one: its timeout covers theirs.
        assert spec.shutdown_timeout > sum(s.shutdown_timeout for s in inner)
        assert spec.start_timeout > sum(s.start_timeout for s in inner)


async def until(condition: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def test_a_crash_looping_fleet_actor_restarts_fleet_alone_while_the_proxy_serves(
    database: str, tmp_path: Path
) -> None:
    # A backoff long enough to watch each step; windows wide enough that only counts decide.
    window = {"max_restarts": 3, "within": 60.0, "backoff_base": 0.5, "backoff_max": 2.0}
    async with running_proxy_env(database, supervisor=window) as env:
        root = env.daemon.supervisor
        fleet, proxy, billing = (root.child(p) for p in ("fleet", "money/proxy", "money/billing"))
        assert isinstance(fleet, Supervisor) and proxy is not None and billing is not None

        served: list[int] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            for _ in range(5_000):  # bounded; ends when the test has seen what it waits for
                if stop.is_set():
                    return
                async with await env.post("/v1/messages", BODY) as resp:
                    await resp.read()
                    served.append(resp.status)

        sending = asyncio.create_task(traffic())
        crashes_inside_fleet = 0

        def fleet_restarted() -> bool:
            nonlocal crashes_inside_fleet
            if root.status_of("fleet").restarts == 0:
                crashes_inside_fleet = root.status_of("fleet/provisioner").restarts
                return False
            return True

        # A real fault: the provisioner's job queue is gone, so every claim fails (not an
        # outage: an undefined table), on its start and at every wake-up.
        await env.pool.execute("ALTER TABLE instance_jobs RENAME TO instance_jobs_gone")
        try:
            env.daemon.context.actors.provisioner.tell(JobsQueued())
            await until(fleet_restarted, "fleet escalates to the root")
        finally:
            await env.pool.execute("ALTER TABLE instance_jobs_gone RENAME TO instance_jobs")
        # The first crashes were restarted inside fleet (its window: 3); the 4th escalated it.
        assert crashes_inside_fleet == 3
        await until(lambda: root.child("fleet/provisioner") is not None, "fleet runs again")
        after = len(served)
        await until(lambda: len(served) >= after + 5 or sending.done(), "requests after it")
        stop.set()
        await asyncio.wait_for(sending, 30)

        assert not root.escalated.is_set()
        assert root.status_of("fleet").restarts == 1
        assert root.child("fleet") is not fleet  # rebuilt whole
        # Nothing outside fleet was touched: the same proxy and billing, never restarted.
        assert root.child("money/proxy") is proxy and root.child("money/billing") is billing
        for path in ("core", "money", "edge", "money/proxy", "edge/proxy-listener"):
            assert root.status_of(path).restarts == 0, path
        assert served and set(served) == {200}, sorted(set(served))
        async with await env.post("/v1/messages", BODY) as resp:
            assert resp.status == 200
