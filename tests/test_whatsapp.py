"""WhatsApp linked by QR code, end to end over real SSH (issue 13): the instance is active before
anything is linked; login shows a QR read back from the gateway's PNG; the QR rotates under a
long poll; a scan links the phone and the session is backed up encrypted; a rebuilt server comes
back linked from that backup; disconnect logs out and wipes it. The fake server answers the
pinned release's own commands (blitzclawd.testing.fake_whatsapp)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from test_fleet import BOT_TOKEN, FleetEnv, active, available, fleet_env, until

from blitzclawd_plugins.whatsapp import gateway

PHONE = "15551234567"
CREDS = Path(gateway.CREDENTIALS_DIR) / "default" / "creds.json"


async def _rebuild(env: FleetEnv, hetzner_id: int) -> None:
    """The operator rebuilds the instance's server at Hetzner: a fresh disk, same user data."""
    server = env.server_of(hetzner_id)
    async with env.http.post(
        f"{env.fake.base_url}/v1/servers/{hetzner_id}/actions/rebuild",
        json={"image": server.image},
        headers={"Authorization": f"Bearer {env.fake.token}"},
    ) as response:
        assert response.status == 200, await response.text()


async def test_whatsapp_links_by_qr_and_survives_a_rebuild(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice, bob = await env.user(), await env.user()
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {"channel_type": "whatsapp", "persona_template": "assistant"},
        )
        assert status == 201, body
        assert "Linked devices" in body["setup_text"]
        iid = body["id"]
        row = await active(env, iid)  # active with nothing linked: not an error
        hetzner_id = row["hetzner_server_id"]
        server = env.server_of(hetzner_id).ssh
        # The external plugin is trusted, or the gateway would refuse to load it.
        assert server.gateway_config["plugins"] == {"entries": {"whatsapp": {"enabled": True}}}
        base = f"/api/instances/{iid}/whatsapp"

        # Another user's instance is not there, on every route.
        for method, path in (
            ("POST", "login"),
            ("GET", "qr"),
            ("GET", "status"),
            ("POST", "disconnect"),
            ("GET", "pairing"),
        ):
            status, body = await env.call(method, f"{base}/{path}", bob, {})
            assert status == 404, (path, body)
        assert server.whatsapp_logins_started == 0

        status, body = await env.call("GET", f"{base}/status", alice)
        assert (status, body["status"]) == (200, "not_linked"), body
        status, body = await env.call("GET", f"{base}/qr", alice)
        assert status == 409 and body["error"]["code"] == "no_login", body

        # Login: the QR as text (read back from the gateway's PNG), as SVG and as the PNG.
        status, login = await env.call("POST", f"{base}/login", alice, {})
        assert status == 200, login
        assert login["status"] == "waiting_for_scan"
        assert login["qr"] == server.whatsapp_qr_raw
        assert login["svg"].lstrip().startswith("<svg")
        assert login["png_data_url"].startswith("data:image/png;base64,")
        assert 0 < login["expires_in"] <= 60
        status, body = await env.call("GET", f"{base}/status", alice)
        assert body["status"] == "waiting_for_scan"
        status, shown = await env.call("GET", f"{base}/qr", alice)
        assert status == 200 and shown["id"] == login["id"]

        # A page holding the current QR waits; the gateway rotates it; the page gets the new one.
        waiting = asyncio.create_task(
            env.call("GET", f"{base}/qr?wait=1&since={login['id']}", alice)
        )
        await asyncio.wait_for(server.whatsapp_until_waiting(1), 20)
        rotated = server.whatsapp_rotate_qr()
        status, body = await asyncio.wait_for(waiting, 20)
        assert status == 200 and body["qr"] == rotated and body["id"] != login["id"], body

        # The phone scans: the waiting page learns it is linked, with the phone number.
        waiting = asyncio.create_task(
            env.call("GET", f"{base}/qr?wait=1&since={body['id']}", alice)
        )
        await asyncio.wait_for(server.whatsapp_until_waiting(1), 20)
        server.whatsapp_scan(PHONE)
        status, body = await asyncio.wait_for(waiting, 20)
        assert status == 200 and body["status"] == "connected", body
        assert body["phone"] == f"+{PHONE}"
        # Backed up, encrypted: the phone number and keys are not in it as plain text.
        blob = (await env.instance(iid))["channel_session_enc"]
        assert blob is not None and PHONE.encode() not in bytes(blob)
        status, body = await env.call("GET", f"/api/instances/{iid}", alice)
        assert body["channel_config"]["phone"] == f"+{PHONE}"

        # The server is rebuilt (a fresh disk): the deploy restores the session before the
        # gateway starts, so the user does not scan again.
        await _rebuild(env, hetzner_id)

        async def restored() -> bool:
            row = await env.instance(iid)
            return (
                row["status"] == "active"
                and server.whatsapp_linked
                and (server.gateway_state == "active")
            )

        await until(restored, 30)
        assert (server.home / CREDS).stat().st_mode & 0o777 == 0o600
        status, body = await env.call("GET", f"{base}/status", alice)
        assert (body["status"], body["phone"]) == ("connected", f"+{PHONE}"), body

        # Disconnect: logged out, the session gone from the server and from the backup.
        status, body = await env.call("POST", f"{base}/disconnect", alice, {})
        assert (status, body["status"]) == (200, "logged_out"), body
        assert not (server.home / gateway.CREDENTIALS_DIR).exists()
        assert (await env.instance(iid))["channel_session_enc"] is None
        status, body = await env.call("GET", f"{base}/status", alice)
        assert body["status"] == "logged_out"


async def test_channel_routes_say_why_they_do_not_apply(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, min_available=0) as env:
        alice = await env.user()
        status, tg = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN},
            },
        )
        assert status == 201
        for method, path in (("GET", "qr"), ("POST", "login"), ("GET", "status")):
            status, body = await env.call(
                method, f"/api/instances/{tg['id']}/whatsapp/{path}", alice, {}
            )
            assert status == 409 and body["error"]["code"] == "wrong_channel", body
            assert "uses telegram" in body["error"]["message"]
        status, wa = await env.call(
            "POST", "/api/instances", alice, {"channel_type": "whatsapp", "persona_template": "dev"}
        )
        # Not active yet (no server in the pool): linking waits for it.
        status, body = await env.call(
            "POST", f"/api/instances/{wa['id']}/whatsapp/login", alice, {}
        )
        assert status == 409 and body["error"]["code"] == "not_ready", body
        status, body = await env.call("GET", f"/api/instances/{uuid.uuid4()}/whatsapp/qr", alice)
        assert status == 404
