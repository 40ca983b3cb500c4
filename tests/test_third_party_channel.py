"""A third party's channel proves the plugin contract (issue 13): a Discord channel packaged as
its own distribution with its own ``blitzclawd`` entry point (tests/discord_plugin), installed
by pip into a scratch directory on sys.path, is listed, created and deployed over real SSH, and
its block of openclaw.json is accepted by the pinned OpenClaw release with its OpenClaw plugin
installed, without any core file naming it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openclaw_tool import (
    EXTERNAL_PLUGINS,
    ensure_openclaw,
    ensure_plugins_home,
    with_plugins,
    write_instance,
)
from test_fleet import active, available, fleet_env

from blitzclawd import plugins
from blitzclawd.fleet.openclaw_config import OwnKey, build_config, render_config, split_secrets

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tests" / "discord_plugin"
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


def _reload_plugins() -> None:
    plugins.channels.cache_clear()
    plugins.manager.cache_clear()


@pytest.fixture(scope="module")
def discord_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip installs the plugin (its dist-info carries the entry point) into a directory put on
    sys.path, as a site-packages would be; removed again after this module."""
    site = tmp_path_factory.mktemp("discord-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(PACKAGE),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    sys.path.insert(0, str(site))
    _reload_plugins()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("blitzclawd_test_discord", None)
        _reload_plugins()


def test_the_plugin_is_found_through_its_entry_point(discord_site: Path) -> None:
    assert list(plugins.channels()) == ["discord", "telegram", "whatsapp"]
    shown = {p["name"]: p for p in plugins.describe()}
    assert shown["discord"]["distribution"] == "blitzclawd-test-discord 0.1.0"
    assert shown["discord"]["hooks"] == ["register_channels"]
    # The CLI of a daemon with it installed says so too.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(discord_site), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "blitzclawd", "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    listed = json.loads(done.stdout)
    assert [c["type"] for c in listed["channels"]] == ["discord", "telegram", "whatsapp"]


async def test_a_discord_instance_is_created_and_deployed(
    discord_site: Path, database: str, tmp_path: Path
) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice, bob = await env.user(), await env.user()
        status, body = await env.call("GET", "/api/channels", alice)
        discord = next(c for c in body["channels"] if c["type"] == "discord")
        assert discord["fields"][0]["name"] == "bot_token" and discord["fields"][0]["secret"]
        assert discord["routes"] == [
            {"method": "GET", "path": "/api/instances/{id}/discord/invite", "summary": ""}
        ]
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {"channel_type": "discord", "persona_template": "dev", "channel_config": {"x": 1}},
        )
        assert status == 422 and body["error"]["field"] == "channel_config.x", body
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "discord",
                "persona_template": "dev",
                "channel_config": {"bot_token": TOKEN},
            },
        )
        assert status == 201, body
        assert body["setup_text"].startswith("Invite your bot")
        iid = body["id"]
        row = await active(env, iid)
        server = env.server_of(row["hetzner_server_id"])
        config = server.ssh.gateway_config
        assert config["plugins"] == {"entries": {"discord": {"enabled": True}}}
        assert config["channels"]["discord"]["token"]["source"] == "file"  # a SecretRef
        secrets = json.loads((server.ssh.home / ".openclaw/secrets.json").read_text())
        assert secrets["channels"]["discord"]["token"] == TOKEN
        assert TOKEN not in (server.ssh.home / ".openclaw/openclaw.json").read_text()
        # Pool servers install its OpenClaw plugin at boot, pinned.
        assert "@openclaw/discord@2026.9.6" in server.user_data
        # Its route, with the core's checks.
        status, body = await env.call("GET", f"/api/instances/{iid}/discord/invite", alice)
        assert status == 200 and body["instance_id"] == iid, body
        assert (await env.call("GET", f"/api/instances/{iid}/discord/invite", bob))[0] == 404


@pytest.mark.timeout(1800)  # a first run installs OpenClaw and its plugins from the npm registry
async def test_the_pinned_release_accepts_its_block(discord_site: Path, tmp_path: Path) -> None:
    channel = plugins.channels()["discord"]
    state = await channel.verify(None, {"bot_token": TOKEN}, None)  # type: ignore[arg-type]
    cfg = build_config(
        gateway_token="gw_" + "k" * 30,
        channel=("discord", channel.openclaw(state)),
        own_key=OwnKey("anthropic", "sk-ant-api03-" + "x" * 20, "claude-sonnet-4-5"),
    )
    config, secrets = split_secrets(cfg)
    openclaw = await asyncio.to_thread(ensure_openclaw)
    assert set(channel.server_packages) <= set(EXTERNAL_PLUGINS)
    installed = await asyncio.to_thread(ensure_plugins_home, openclaw)
    home = write_instance(tmp_path / "home", render_config(config), render_config(secrets))
    with_plugins(home, installed)
    code, report = await asyncio.to_thread(openclaw.run_json, home, "config", "validate")
    assert code == 0 and report["valid"] is True and report["warnings"] == [], report
    code, audit = await asyncio.to_thread(openclaw.run_json, home, "secrets", "audit", "--check")
    assert code == 0 and audit["status"] == "clean", audit
