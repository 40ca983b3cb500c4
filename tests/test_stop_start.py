"""An owner stops an idle assistant and starts it again (issue 14), over real SSH: stopped at
once for the proxy (403, nothing spent), its gateway stopped on the server, left alone by
configures and restarts until started; another user's instance is a 404."""

from __future__ import annotations

import json
from pathlib import Path

from test_fleet import active, available, create_active, fleet_env, until

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_stop_and_start(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice, bob = await env.user(), await env.user()
        iid, row = await create_active(env, alice)
        server = env.server_of(row["hetzner_server_id"]).ssh
        base = f"/api/instances/{iid}"
        assert (await env.call("POST", f"{base}/stop", bob))[0] == 404
        status, body = await env.call("POST", f"{base}/start", alice)
        assert status == 409 and body["error"]["code"] == "not_stopped", body

        status, body = await env.call("POST", f"{base}/stop", alice)
        assert status == 202 and body["status"] == "stopped", body
        assert (await env.instance(iid))["status"] == "stopped"

        async def gateway_stopped() -> bool:
            return server.gateway_state == "inactive"

        await until(gateway_stopped)
        # The proxy refuses it (its credential is the one the deploy wrote to the server).
        secrets = json.loads((server.home / ".openclaw/secrets.json").read_text())
        provider = secrets["models"]["providers"]["blitzclaw"]
        headers = {
            "X-BlitzClaw-Instance": iid,
            "X-BlitzClaw-Secret": provider["headers"]["X-BlitzClaw-Secret"],
            "anthropic-version": "2023-06-01",
        }
        proxy = f"http://127.0.0.1:{env.daemon.settings.proxy.port}/v1/messages"

        async def refused() -> bool:
            async with env.http.post(proxy, json=BODY, headers=headers) as resp:
                return resp.status == 403

        await until(refused)
        # Stopped means stopped: no restart, and a new SOUL.md waits for the start.
        status, body = await env.call("POST", f"{base}/restart", alice)
        assert status == 409 and body["error"]["code"] == "stopped", body
        assert (await env.call("POST", f"{base}/stop", alice))[0] == 409
        status, _ = await env.call("POST", f"{base}/configure", alice, {"soul_md": "Be brief."})
        assert status == 202

        async def written() -> bool:
            soul = server.home / ".openclaw/workspace/SOUL.md"
            return soul.exists() and soul.read_text().rstrip().endswith("Be brief.")

        await until(written)
        assert server.gateway_state == "inactive"
        assert (await env.instance(iid))["status"] == "stopped"

        status, body = await env.call("POST", f"{base}/start", alice)
        assert status == 202, body
        await active(env, iid)
        assert server.gateway_state == "active"
