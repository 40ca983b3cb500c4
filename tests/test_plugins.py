"""The plugin contract (issue 13): built-in channels load through the `blitzclawd` entry-point
group like any third-party plugin; every hook is documented and tested; GET /api/channels
describes each channel's fields and POST /api/channels/{type}/validate checks settings, over
real HTTP against the fake Telegram."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from test_fleet import BOT_TOKEN, fleet_env

from blitzclawd import hookspecs, plugins

ROOT = Path(__file__).resolve().parent.parent


def hook_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "blitzclawd_spec")
    ]


def test_every_hook_is_documented_and_tested() -> None:
    names = hook_names()
    assert names == ["register_channels"]
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name in names:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        # A test that calls the hook through the plugin manager.
        assert f"hook.{name}(" in tests, name


def test_built_ins_come_from_the_entry_point_group() -> None:
    group = {ep.name: ep.value for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert group["telegram"] == "blitzclawd_plugins.telegram"
    assert group["whatsapp"] == "blitzclawd_plugins.whatsapp"
    batches = plugins.manager().hook.register_channels()
    assert sorted(c.name for batch in batches for c in batch) == ["telegram", "whatsapp"]


def test_the_cli_lists_plugins_their_hooks_and_channels() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blitzclawd", "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    shown = json.loads(done.stdout)
    by_name = {p["name"]: p for p in shown["plugins"]}
    assert by_name["telegram"]["hooks"] == ["register_channels"]
    assert by_name["telegram"]["distribution"].startswith("blitzclawd ")
    assert by_name["whatsapp"]["module"] == "blitzclawd_plugins.whatsapp"
    telegram = next(c for c in shown["channels"] if c["type"] == "telegram")
    token = next(f for f in telegram["fields"] if f["name"] == "bot_token")
    assert token["secret"] and token["required"]


async def test_channels_over_the_api(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, min_available=0) as env:
        alice = await env.user()
        status, body = await env.call("GET", "/api/channels", alice)
        assert status == 200
        assert [c["type"] for c in body["channels"]] == ["telegram", "whatsapp"]
        assert body["channels"][1]["fields"] == []

        status, body = await env.call(
            "POST",
            "/api/channels/telegram/validate",
            alice,
            {"channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]}},
        )
        assert status == 200, body
        assert body["channel_config"]["bot_username"] == "alice_assistant_bot"
        assert body["channel_config"]["allow_from"] == ["42"]
        assert "bot_token" not in body["channel_config"]

        status, body = await env.call(
            "POST",
            "/api/channels/telegram/validate",
            alice,
            {"channel_config": {"bot_token": "987654321:AAE" + "x" * 32}},
        )
        assert status == 422 and body["error"]["field"] == "channel_config.bot_token"
        status, body = await env.call(
            "POST",
            "/api/channels/telegram/validate",
            alice,
            {"channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["me"]}},
        )
        assert status == 422 and body["error"]["field"] == "channel_config.allow_from"
        status, body = await env.call(
            "POST", "/api/channels/whatsapp/validate", alice, {"channel_config": {"x": 1}}
        )
        assert status == 422 and body["error"]["field"] == "channel_config.x"
        status, body = await env.call(
            "POST", "/api/channels/signal/validate", alice, {"channel_config": {}}
        )
        assert status == 404
        status, _ = await env.call("GET", "/api/channels", None)
        assert status == 401


def test_the_core_names_no_channel() -> None:
    """fleet/, http/, actors/ and services/ reach channels only through the plugin contract:
    none of them names one (in code, strings or comments), so a channel is a plugin's alone."""
    names = {*plugins.channels(), "discord", "bot_token", "botfather"}
    pattern = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b", re.IGNORECASE)
    found = []
    for part in ("fleet", "http", "actors", "services"):
        for path in sorted((ROOT / "blitzclawd" / part).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_a_channel_that_cannot_work_is_refused_at_load() -> None:
    """A plugin's mistake shows when the daemon starts, not when a user first hits it."""
    good = plugins.channels()["whatsapp"]

    class Broken:
        name = "broken"
        display_name = "Broken"
        fields = ()
        server_packages = ()
        session_dirs: tuple[str, ...] = ()

        def routes(self) -> tuple:
            return ()

    for attr, value in (
        ("name", "Bad Name"),
        ("session_dirs", ("../../etc",)),
        ("session_dirs", ("/root/.ssh",)),
    ):
        channel = Broken()
        setattr(channel, attr, value)
        with pytest.raises(RuntimeError):
            plugins._check(channel)  # type: ignore[arg-type]
    plugins._check(Broken())  # type: ignore[arg-type]
    plugins._check(good)
