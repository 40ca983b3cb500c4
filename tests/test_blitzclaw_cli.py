"""The `blitzclaw` command line (issue 16, first part), through the installed console script
against a real daemon with the fakes: sign in with a key, balance, a top-up paid at the (fake)
checkout, an assistant created, listed, shown and deleted; every failure a one-line message with
its documented exit status; JSON and YAML that parse, tables that fit 80 columns; and the client
side imports nothing of the daemon."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from test_dashboard import BOT_TOKEN, dashboard_env
from test_dashboard_journey import journey_env
from test_fleet import ADMIN_KEY, until
from test_fleet import BOT_TOKEN as BOT

from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port

CLIENT = Path(__file__).resolve().parent.parent / "blitzclaw"


def _script() -> str:
    found = shutil.which("blitzclaw", path=str(Path(sys.executable).parent))
    assert found, "the blitzclaw console script is installed with the package"
    return found


async def _cli(home: Path, *args: str, key: str | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home), "NO_COLOR": "1"}
    env.pop("BLITZCLAW_API_KEY", None)
    if key is not None:
        env["BLITZCLAW_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        _script(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def _json(home: Path, *args: str, key: str | None = None) -> Any:
    code, out, err = await _cli(home, "--format", "json", *args, key=key)
    assert code == 0, (args, err)
    return json.loads(out)


def test_the_client_side_imports_nothing_of_the_daemon() -> None:
    for path in sorted(CLIENT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] == "blitzclawd"], path


async def test_a_users_session_from_the_command_line(database: str, tmp_path: Path) -> None:
    async with dashboard_env(database) as env:
        api = env.api
        user = {"Authorization": f"Bearer {env.clerk.mint('user_cli', azp=api)}"}
        origin = {"Origin": api}
        status, made = await env.call(
            "POST", "/api/auth/api-keys", headers={**user, **origin}, json={"name": "cli"}
        )
        assert status == 201, made
        key = made["key"]
        home = tmp_path / "config"

        # Signing in keeps the key in a file only its owner can read.
        code, out, err = await _cli(home, "--api-url", api, "auth", "login", "--api-key", key)
        assert code == 0, err
        stored = home / "blitzclaw" / "config.toml"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and key in stored.read_text()
        me = await _json(home, "auth", "whoami")
        assert me["via"] == "api_key" and set(me) == {"id", "email", "role", "via"}

        balance = await _json(home, "billing", "balance")
        assert balance["balance_usd"] == 0 and balance["below_minimum"] is True
        code, out, err = await _cli(home, "--verbose", "--format", "json", "billing", "balance")
        assert code == 0 and "GET " in err and "/api/billing/balance -> 200" in err, err
        assert json.loads(out)["balance_usd"] == 0  # stdout stays the result

        # A top-up: the checkout link, paid at the (fake) Creem, then in the history.
        made = await _json(home, "billing", "topup", "--amount", "25")
        assert made["amount_cents"] == 2500 and made["checkout_url"]
        _, raw = env.creem.complete_checkout(made["checkout_id"])
        assert (await env.creem.deliver(api + "/api/billing/webhook", raw))[-1] == 200
        history = await _json(home, "billing", "history")
        assert [(t["id"], t["status"]) for t in history] == [(made["topup_id"], "paid")]
        assert (await _json(home, "billing", "balance"))["balance_usd"] == 25

        # An assistant: created (without waiting here: no pool servers), listed, shown, deleted.
        made = await _json(
            home, "instances", "create", "--channel", "telegram", "--token", BOT_TOKEN, "--no-wait"
        )
        iid = made["id"]
        assert made["channel_config"]["bot_username"] == "ada_helper_bot"
        listed = await _json(home, "instances", "list")
        assert [i["id"] for i in listed] == [iid]
        code, out, err = await _cli(home, "--format", "yaml", "instances", "get", iid)
        assert code == 0 and yaml.safe_load(out)["id"] == iid
        code, out, err = await _cli(home, "--format", "table", "instances", "list")
        assert code == 0 and iid in out
        assert max(len(line) for line in out.splitlines()) <= 80
        deleted = await _json(home, "instances", "delete", iid, "--force")
        assert deleted["status"] == "deleted"

        # Failures: one line each, with the documented status.
        missing = str(uuid.uuid4())
        for args, want in (
            (("instances", "get", missing), 4),
            (("billing", "topup", "--amount", "3"), 6),
            (("--api-url", f"http://127.0.0.1:{free_port()}", "billing", "balance"), 8),
        ):
            code, out, err = await _cli(home, *args)
            assert code == want, (args, code, err)
            assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        code, _, err = await _cli(home, "billing", "balance", key="sk_not-a-real-key")
        assert code == 3 and "revoked" in err
        # No money, no assistant: 402 is status 5.
        poor = {"Authorization": f"Bearer {env.clerk.mint('user_poor', azp=api)}"}
        _, poor_key = await env.call(
            "POST", "/api/auth/api-keys", headers={**poor, **origin}, json={"name": "cli"}
        )
        code, _, err = await _cli(
            home,
            "instances",
            "create",
            "--channel",
            "telegram",
            "--token",
            BOT_TOKEN,
            key=poor_key["key"],
        )
        assert code == 5 and err.startswith("error: "), err

        # Signing out revokes the key.
        code, _, err = await _cli(home, "auth", "logout")
        assert code == 0, err
        status, _ = await env.call(
            "GET", "/api/auth/me", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 401


async def test_the_specs_cli_script(database: str, tmp_path: Path) -> None:
    """The spec's CLI section, adapted: login by key → balance → top-up (checkout completed) →
    create → wait until active → telegram info → a proxied request's exact cost in usage →
    delete; json output checked the way `jq` would."""
    async with journey_env(database, tmp_path, browser=False) as (env, _):
        api = env.api
        token = env.clerk.mint("user_script", azp=api)
        status, made = await env.call(
            "POST",
            "/api/auth/api-keys",
            {"Authorization": f"Bearer {token}"},
            {"name": "script"},
        )
        assert status == 201, made
        home = tmp_path / "config"
        code, _, err = await _cli(home, "--api-url", api, "auth", "login", "--api-key", made["key"])
        assert code == 0, err
        assert (await _json(home, "billing", "balance"))["balance_usd"] == 0

        topup = await _json(home, "billing", "topup", "--amount", "25")
        _, raw = env.creem.complete_checkout(topup["checkout_id"])
        await env.creem.deliver(api + "/api/billing/webhook", raw)
        assert (await _json(home, "billing", "balance"))["balance_usd"] == 25

        made = await _json(home, "instances", "create", "--channel", "telegram", "--token", BOT)
        assert made["status"] == "active"  # it waited
        iid = made["id"]
        info = await _json(home, "telegram", "info", iid)
        assert info["channel.bot_username"] == "alice_assistant_bot" and info["status"] == "active"
        checked = await _json(home, "telegram", "validate", "--bot-token", BOT)
        assert checked["valid"] is True
        code, _, err = await _cli(home, "telegram", "validate", "--bot-token", "1:nope")
        assert code == 6 and "bot_token" in err, err
        changed = await _json(
            home, "telegram", "connect", iid, "--allow-from", "42", "--allow-from", "43"
        )
        assert changed["channel_config"]["allow_from"] == ["42", "43"]  # the token kept
        code, out, err = await _cli(home, "telegram", "--help")
        assert code == 0 and "pairing" in out and "bot" in out, (out, err)  # its own route too

        # The assistant answers once (as OpenClaw would, with its own credentials).
        server = env.server_of((await env.instance(iid))["hetzner_server_id"]).ssh
        doc = json.loads((server.home / ".openclaw/secrets.json").read_text())
        cfg = json.loads((server.home / ".openclaw/openclaw.json").read_text())
        headers = {
            **cfg["models"]["providers"]["blitzclaw"].get("headers", {}),
            **doc["models"]["providers"]["blitzclaw"].get("headers", {}),
            "anthropic-version": "2023-06-01",
        }
        proxy = f"http://127.0.0.1:{env.daemon.settings.proxy.port}/v1/messages"
        body = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 30,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with env.http.post(proxy, json=body, headers=headers) as r:
            assert r.status == 200
        cost = await until(
            lambda: env.pool.fetchval(
                "SELECT cost_micros FROM usage_logs WHERE instance_id = $1", uuid.UUID(iid)
            )
        )
        usage = await _json(home, "billing", "usage")
        assert usage["total"]["cost_micros"] == cost
        assert [(line["instance_id"], line["cost_micros"]) for line in usage["lines"]] == [
            (iid, cost)
        ]
        # An operator's ssh, pinned to the host key BlitzClaw trusts.
        code, out, err = await _cli(
            home, "--api-key", ADMIN_KEY, "admin", "instances", "ssh", iid, "--print"
        )
        assert code == 0, err
        words = out.split()
        known = Path(words[words.index("-o") + 1].split("=", 1)[1])
        pinned = await env.pool.fetchval(
            "SELECT s.ssh_host_key FROM server_pool s JOIN instances i "
            "ON i.server_id = s.id WHERE i.id = $1",
            uuid.UUID(iid),
        )
        line = await asyncio.to_thread(known.read_text)
        assert line.split(" ", 1)[1].strip() == pinned.strip()
        assert "StrictHostKeyChecking=yes" in out and words[-1].startswith("openclaw@127.")
        audited = await env.pool.fetchval(
            "SELECT count(*) FROM admin_actions WHERE action = 'instance.ssh'"
        )
        assert audited == 1
        soul_file = tmp_path / "SOUL.md"
        soul_file.write_text("Call me Ada.")
        assert (await _json(home, "instances", "soul", iid, "--file", str(soul_file)))["id"] == iid
        assert (await _json(home, "instances", "soul", iid))["soul_md"] == "Call me Ada."
        server.log("gateway: hello from the log", ident="openclaw[7]")
        code, out, err = await _cli(home, "instances", "logs", iid, "--lines", "50")
        assert code == 0 and "hello from the log" in out, err
        auto = await _json(
            home, "billing", "auto-topup", "--on", "--threshold", "15", "--amount", "25"
        )
        assert auto == {"enabled": True, "threshold_cents": 1500, "amount_cents": 2500}
        code, _, err = await _cli(
            home, "apikey", "set", iid, "--provider", "anthropic", "--key", "sk-ant-nope-0000"
        )
        assert code == 6 and "refused" in err, err
        deleted = await _json(home, "instances", "delete", iid, "--force")
        assert deleted["status"] == "deleted"


def _decode_terminal_qr(text: str) -> list[str]:
    """Read back the QR codes drawn in a terminal (segno's compact blocks: a block is light)."""
    import zxingcpp
    from PIL import Image

    lines = [line for line in text.splitlines() if line and set(line) <= set("█▀▄ ")]
    if not lines:
        return []
    width, height = max(len(line) for line in lines), len(lines) * 2
    image = Image.new("L", (width, height), 255)
    pixels = image.load()
    for y, line in enumerate(lines):
        for x, char in enumerate(line):
            pixels[x, 2 * y] = 255 if char in "█▀" else 0
            pixels[x, 2 * y + 1] = 255 if char in "█▄" else 0
    image = image.resize((width * 8, height * 8), Image.NEAREST)
    return [found.text for found in zxingcpp.read_barcodes(image)]


async def test_whatsapp_qr_in_the_terminal_until_connected(database: str, tmp_path: Path) -> None:
    async with journey_env(database, tmp_path, browser=False) as (env, _):
        token = env.clerk.mint("user_qr", azp=env.api)
        _, made = await env.call(
            "POST", "/api/auth/api-keys", {"Authorization": f"Bearer {token}"}, {"name": "qr"}
        )
        home = tmp_path / "config"
        await _cli(home, "--api-url", env.api, "auth", "login", "--api-key", made["key"])
        me = await _json(home, "auth", "whoami")
        await seed.credit(env.pool, me["id"], 25_000_000)
        made = await _json(home, "instances", "create", "--channel", "whatsapp")
        iid = made["id"]
        server = env.server_of((await env.instance(iid))["hetzner_server_id"]).ssh
        qr = asyncio.create_task(_cli(home, "--format", "json", "whatsapp", "qr", iid))
        await asyncio.wait_for(server.whatsapp_until_waiting(1), 30)  # the code is on screen
        shown = server.whatsapp_qr_raw
        server.whatsapp_scan("15551234567")
        code, out, err = await asyncio.wait_for(qr, 60)
        assert code == 0, err
        assert json.loads(out)["status"] == "connected"
        assert shown in _decode_terminal_qr(err)  # what the terminal drew scans to the code


async def test_the_operators_commands(database: str, tmp_path: Path) -> None:
    async with dashboard_env(database) as env:
        home = tmp_path / "config"
        admin = ("--api-url", env.api, "--api-key", env.admin_key)
        pool = await _json(home, *admin, "admin", "pool", "status")
        assert pool["held"] is False and pool["servers"] == []
        assert await _json(home, *admin, "admin", "users", "list") == {"users": []}
        # One assistant paused, resumed and deleted (only with --yes: nobody here to ask).
        owner = await seed.create_user(env.pool)
        inst = await seed.create_instance(env.pool, owner)
        listed = await _json(home, *admin, "admin", "instances", "list")
        assert listed["total"] == 1 and listed["instances"][0]["spend_today_micros"] == 0
        paused = await _json(home, *admin, "admin", "instances", "pause", inst.id)
        assert paused == {"id": inst.id, "status": "paused"}
        resumed = await _json(home, *admin, "admin", "instances", "resume", inst.id)
        assert resumed == {"id": inst.id, "status": "active"}
        code, _, err = await _cli(home, *admin, "admin", "instances", "resume", inst.id)
        assert code == 7 and err.startswith("error: only an instance an operator paused"), err
        code, _, err = await _cli(home, *admin, "admin", "instances", "delete", inst.id)
        assert code == 2 and "--yes" in err, err
        status_of = "SELECT status FROM instances WHERE id = $1"
        assert await env.pool.fetchval(status_of, uuid.UUID(inst.id)) == "active"
        deleted = await _json(home, *admin, "admin", "instances", "delete", inst.id, "--yes")
        assert deleted == {"id": inst.id, "queued": "teardown"}
        assert await env.pool.fetchval(status_of, uuid.UUID(inst.id)) == "deleted"
        code, _, err = await _cli(home, *admin, "admin", "instances", "delete", inst.id, "-y")
        assert code == 4, err
        # The live events: followed while payments keep arriving (a webhook event each).
        follow = asyncio.create_task(_cli(home, *admin, "admin", "events", "--limit", "1"))
        product = next(iter(env.creem.products))

        async def seen() -> bool:
            _, raw = env.creem.product_link_order(product, customer_email="nobody@example.test")
            await env.creem.deliver(env.api + "/api/billing/webhook", raw)
            await asyncio.wait({follow}, timeout=1.0)
            return follow.done()

        await until(seen, deadline=60)
        code, out, err = await follow
        assert code == 0, err
        event = json.loads(out.splitlines()[0])
        assert event["type"] == "webhook" and event["id"], event
        # To a user these commands do not exist.
        token = env.clerk.mint("user_not_admin", azp=env.api)
        _, made = await env.call(
            "POST",
            "/api/auth/api-keys",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "x"},
        )
        code, _, err = await _cli(
            home, "--api-url", env.api, "--api-key", made["key"], "admin", "pool", "status"
        )
        assert code == 4 and err.startswith("error: "), err


async def test_auth_login_by_confirming_a_code_in_the_browser(
    database: str, tmp_path: Path
) -> None:
    """The device flow end to end: the CLI shows a code and a link; the person, signed in on the
    dashboard, confirms it there (in Chromium, as they would); the CLI gets its own key."""
    from browser import chromium
    from test_dashboard import _sign_up

    async with dashboard_env(database) as env, chromium() as browser:
        home = tmp_path / "config"
        process = await asyncio.create_subprocess_exec(
            _script(),
            "--api-url",
            env.api,
            "--format",
            "json",
            "auth",
            "login",
            "--no-browser",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "XDG_CONFIG_HOME": str(home)},
        )
        try:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line.startswith("Confirm the code "), line
            code_shown, url = line.split()[3], line.split()[-1]
            page = await _sign_up(browser, env.api, "ada@example.test")
            await page.goto(url)
            assert await page.inner_text("#device-code") == code_shown
            await page.click("#device-allow")
            await page.locator("#device-done").filter(has_text="terminal").wait_for()
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
        assert process.returncode == 0, err
        assert json.loads(out)["email"] == "ada@example.test"
        me = await _json(home, "auth", "whoami")
        assert me["email"] == "ada@example.test" and me["via"] == "api_key"
        # The same code cannot be confirmed twice.
        await page.goto(url)
        assert await page.is_visible("#device-missing")


SNAPSHOT = Path(__file__).parent / "snapshots" / "blitzclaw_json.json"


def _shape(value: Any) -> Any:
    """The keys of a JSON answer, all the way down (values vary; keys are the contract)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items()) if not k.startswith("channel.")}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "*"


async def test_json_keys_are_stable(database: str, tmp_path: Path) -> None:
    """Every command's JSON, as keys, against tests/snapshots/blitzclaw_json.json (regenerate
    with BLITZCLAW_UPDATE_SNAPSHOTS=1 after a deliberate change, and review the diff)."""
    async with dashboard_env(database) as env:
        api = env.api
        token = env.clerk.mint("user_snap", azp=api)
        _, made = await env.call(
            "POST",
            "/api/auth/api-keys",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "snap"},
        )
        home = tmp_path / "config"
        await _cli(home, "--api-url", api, "auth", "login", "--api-key", made["key"])
        me = await _json(home, "auth", "whoami")
        await seed.credit(env.pool, me["id"], 25_000_000)
        created = await _json(
            home, "instances", "create", "--channel", "telegram", "--token", BOT_TOKEN, "--no-wait"
        )
        iid = created["id"]
        admin = ("--api-key", env.admin_key)
        commands = {
            "auth whoami": ("auth", "whoami"),
            "billing balance": ("billing", "balance"),
            "billing topup": ("billing", "topup", "--amount", "25"),
            "billing subscribe": ("billing", "subscribe"),
            "billing history": ("billing", "history"),
            "billing usage": ("billing", "usage"),
            "billing auto-topup": ("billing", "auto-topup"),
            "instances create": None,
            "instances list": ("instances", "list"),
            "instances get": ("instances", "get", iid),
            "instances soul": ("instances", "soul", iid),
            "telegram info": ("telegram", "info", iid),
            "telegram validate": ("telegram", "validate", "--bot-token", BOT_TOKEN),
            "admin pool status": (*admin, "admin", "pool", "status"),
            "admin users list": (*admin, "admin", "users", "list"),
            "admin jobs": (*admin, "admin", "jobs", "list"),
            "admin instances list": (*admin, "admin", "instances", "list"),
        }
        shapes = {}
        for name, args in commands.items():
            shapes[name] = _shape(created if args is None else await _json(home, *args))
        if os.environ.get("BLITZCLAW_UPDATE_SNAPSHOTS"):
            SNAPSHOT.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")
        assert shapes == json.loads(SNAPSHOT.read_text())
