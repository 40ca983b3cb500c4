"""The fake server's WhatsApp linking over real SSH, answering as openclaw 2026.9.6 does:
`gateway call web.login.start|wait`, `channels status|logout`, and the phone's side (rotate, scan)
driven by the test. Every test is bounded by asyncio.timeout; waits are on conditions."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shlex
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from blitzclawd.testing.fake_server import FakeServer

CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")
GATEWAY = {"mode": "local", "port": 18789, "bind": "loopback"}
CONFIG = {
    "gateway": GATEWAY,
    "channels": {"whatsapp": {"dmPolicy": "pairing"}},
    "plugins": {"entries": {"whatsapp": {"enabled": True}}},
}
AUTH = ".openclaw/credentials/whatsapp/default"
LIMIT = 30  # seconds any one test may take
NEW_QR = "Scan this QR in WhatsApp → Linked Devices."
STILL_WAITING = (  # the real text, typographic apostrophe and all
    "Still waiting for the QR scan. Let me know when you’ve scanned it."  # noqa: RUF001
)


class Clock:
    """An injectable monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(
    home: Path, config: dict[str, Any] | None = CONFIG, **kwargs: Any
) -> AsyncIterator[tuple[FakeServer, asyncssh.SSHClientConnection]]:
    """A server whose gateway runs `config` (None: never started), and a root session on it."""
    public = CLIENT_KEY.export_public_key().decode()
    async with (
        asyncio.timeout(LIMIT),
        FakeServer("bc-wa", "127.0.0.1", 0, home=home, authorized_keys=[public], **kwargs) as srv,
    ):
        async with await connect(srv) as conn:
            if config is not None:
                await write_config(conn, config)
                assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
                assert srv.gateway_state == "active"
            yield srv, conn


async def connect(server: FakeServer) -> asyncssh.SSHClientConnection:
    line = f"[{server.host}]:{server.port} {server.host_key_line}"
    return await asyncssh.connect(
        server.host,
        server.port,
        username="root",
        client_keys=[CLIENT_KEY],
        known_hosts=asyncssh.import_known_hosts(line),
        agent_path=None,
        config=None,
    )


async def write_config(conn: asyncssh.SSHClientConnection, config: dict[str, Any]) -> None:
    async with conn.start_sftp_client() as sftp:
        await sftp.makedirs(".openclaw", exist_ok=True)
        async with sftp.open(".openclaw/openclaw.json", "w") as f:
            await f.write(json.dumps(config))


async def sh(conn: asyncssh.SSHClientConnection, command: str) -> tuple[int, str, str]:
    result = await conn.run(command)
    return result.exit_status or 0, str(result.stdout), str(result.stderr)


def call_line(method: str, params: dict[str, Any], timeout_ms: int = 20_000) -> str:
    """The command line the daemon sends: quoted JSON params, the optional --port/--token."""
    return (
        f"openclaw gateway call {method} --params {shlex.quote(json.dumps(params))} --json "
        f"--timeout {timeout_ms} --port 18789 --token tok"
    )


async def call(
    conn: asyncssh.SSHClientConnection, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    code, out, err = await sh(conn, call_line(method, {"channel": "whatsapp", **params}))
    assert err == ""
    return code, json.loads(out)


async def start(conn: asyncssh.SSHClientConnection, *, force: bool = False) -> dict[str, Any]:
    code, answer = await call(
        conn, "web.login.start", accountId="default", force=force, timeoutMs=30000
    )
    assert code == 0
    return answer


async def wait(conn: asyncssh.SSHClientConnection, **params: Any) -> dict[str, Any]:
    code, answer = await call(conn, "web.login.wait", accountId="default", **params)
    assert code == 0
    return answer


async def status(conn: asyncssh.SSHClientConnection) -> dict[str, Any]:
    code, out, _ = await sh(conn, "openclaw channels status --json")
    assert code == 0
    return json.loads(out)["channels"]["whatsapp"]


def decode(data_url: str) -> str:
    """The text a QR reader gets from the PNG data URL."""
    zxingcpp = pytest.importorskip("zxingcpp")
    image = pytest.importorskip("PIL.Image")
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    png = base64.b64decode(data_url[len(prefix) :])
    found = zxingcpp.read_barcodes(image.open(io.BytesIO(png)))
    assert len(found) == 1
    return str(found[0].text)


async def test_login_needs_a_running_gateway_and_the_plugin(tmp_path: Path) -> None:
    unavailable = (
        '{"ok":false,"error":{"type":"gateway_request_error","code":"UNAVAILABLE",'
        '"message":"gateway not reachable","retryable":true}}\n'
    )
    not_available = (
        '{"ok":false,"error":{"type":"gateway_request_error","code":"INVALID_REQUEST",'
        '"message":"web login provider is not available","retryable":false}}\n'
    )
    params = {"channel": "whatsapp", "accountId": "default", "force": False, "timeoutMs": 30000}
    line = call_line("web.login.start", params)
    async with running(tmp_path / "home", config=None) as (server, conn):
        assert await sh(conn, line) == (1, unavailable, "")
        code, _, err = await sh(conn, "openclaw channels status --json")
        assert code == 1 and "Gateway not reachable" in err
        no_plugin = {"gateway": GATEWAY, "channels": {"whatsapp": {}}}
        no_channel = {"gateway": GATEWAY, "plugins": {"entries": {"whatsapp": {"enabled": True}}}}
        disabled = {**CONFIG, "plugins": {"entries": {"whatsapp": {"enabled": False}}}}
        for config in (no_plugin, no_channel, disabled):
            await write_config(conn, config)
            assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
            assert await sh(conn, line) == (1, not_available, "")
            wait_line = call_line("web.login.wait", {"channel": "whatsapp", "timeoutMs": 1000})
            assert await sh(conn, wait_line) == (1, not_available, "")
        # The config the gateway loaded counts, not the file: fixed on disk, still unavailable.
        await write_config(conn, CONFIG)
        assert await sh(conn, line) == (1, not_available, "")
        assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
        assert (await sh(conn, line))[0] == 0
        assert server.whatsapp_logins_started == 1


async def test_start_gives_a_readable_qr_and_keeps_it_while_fresh(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path / "home", whatsapp_clock=clock) as (server, conn):
        assert server.whatsapp_qr_raw is None
        line = call_line("web.login.start", {"channel": "whatsapp", "force": False})
        code, out, err = await sh(conn, line)
        assert (code, err) == (0, "")
        assert out.startswith('{\n  "qrDataUrl": "data:image/png;base64,')  # pretty, in order
        first = json.loads(out)
        assert first["message"] == NEW_QR
        raw = decode(first["qrDataUrl"])
        assert raw == server.whatsapp_qr_raw == server.whatsapp_qr_raws[-1]
        assert raw.startswith("https://wa.me/settings/linked_devices#2@")
        assert len(raw.split("#", 1)[1].split(",")) == 5
        clock.now += 179  # still fresh
        again = await start(conn)
        assert again == {
            "qrDataUrl": first["qrDataUrl"],
            "message": "QR already active. Scan it in WhatsApp → Linked Devices.",
        }
        assert server.whatsapp_logins_started == 1
        clock.now += 1  # 180 s: stale, so a new login
        fresh = await start(conn)
        assert fresh["message"] == NEW_QR and fresh["qrDataUrl"] != first["qrDataUrl"]
        assert decode(fresh["qrDataUrl"]) == server.whatsapp_qr_raws[-1] != raw
        assert server.whatsapp_logins_started == 2


async def test_wait_returns_the_next_qr_when_it_rotates(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        first = (await start(conn))["qrDataUrl"]
        pending = asyncio.create_task(wait(conn, timeoutMs=120000, currentQrDataUrl=first))
        await server.whatsapp_until_waiting(1)
        assert not pending.done()  # only a rotation, a scan or the deadline can answer it
        raw = server.whatsapp_rotate_qr()
        answer = await pending
        assert answer == {
            "connected": False,
            "message": "QR refreshed. Scan the latest code in WhatsApp → Linked Devices.",
            "qrDataUrl": answer["qrDataUrl"],
        }
        assert answer["qrDataUrl"] != first and decode(answer["qrDataUrl"]) == raw
        assert server.whatsapp_qr_raws == [decode(first), raw]
        current = answer["qrDataUrl"]
        # A caller holding an old QR learns the current one at once.
        stale = await wait(conn, timeoutMs=120000, currentQrDataUrl=first)
        assert stale["qrDataUrl"] == answer["qrDataUrl"]
        # Without a scan or rotation the deadline answers (timeoutMs is at least 1000 ms).
        assert await wait(conn, timeoutMs=0, currentQrDataUrl=answer["qrDataUrl"]) == {
            "connected": False,
            "message": STILL_WAITING,
        }
        # A client that hangs up ends its wait on the server too.
        async with await connect(server) as other:
            gone = asyncio.create_task(wait(other, timeoutMs=120000, currentQrDataUrl=current))
            await server.whatsapp_until_waiting(1)
            gone.cancel()
        await server.whatsapp_until_waiting(0)
        # The CLI's own --timeout ends a wait that outlasts it.
        params = {"channel": "whatsapp", "timeoutMs": 120000, "currentQrDataUrl": current}
        code, out, err = await sh(conn, call_line("web.login.wait", params, timeout_ms=50))
        assert (code, out) == (1, "") and "gateway timeout after 50ms" in err
        assert server.whatsapp_logins_started == 1


async def test_scan_links_the_phone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home) as (server, conn):
        before = await status(conn)
        assert before["statusState"] == "not-linked" and before["linked"] is False
        assert before["self"] == {"e164": None, "jid": None, "lid": None}
        with pytest.raises(RuntimeError):
            server.whatsapp_scan()  # no login, no QR to scan
        qr = (await start(conn))["qrDataUrl"]
        waits = [
            asyncio.create_task(wait(conn, timeoutMs=120000, currentQrDataUrl=qr)) for _ in range(2)
        ]
        await server.whatsapp_until_waiting(2)
        server.whatsapp_scan("+15551234567")
        linked = {"connected": True, "message": "✅ Linked! WhatsApp is ready."}
        assert await asyncio.gather(*waits) == [linked, linked]
        assert server.whatsapp_linked and server.whatsapp_qr_raw is None  # the login is over
        creds = home / AUTH / "creds.json"
        assert json.loads(creds.read_text())["me"]["id"] == "15551234567:12@s.whatsapp.net"
        assert len(list((home / AUTH).iterdir())) == 2
        for path in (home / AUTH).iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        report = json.loads((await sh(conn, "openclaw channels status --json"))[1])
        assert report["channelOrder"] == ["whatsapp"]
        after = report["channels"]["whatsapp"]
        assert after["configured"] and after["statusState"] == "linked" and after["linked"]
        assert after["self"] == {
            "e164": "+15551234567",
            "jid": "15551234567:12@s.whatsapp.net",
            "lid": None,
        }
        assert after["running"] and after["connected"] and after["lastError"] is None
        assert await wait(conn, timeoutMs=1000) == {
            "connected": False,
            "message": "No active WhatsApp login in progress.",
        }
        assert await start(conn) == {
            "message": "WhatsApp is already linked (+15551234567). "
            "Say “relink” if you want a fresh QR."
        }
        assert server.whatsapp_logins_started == 1
        # force: the old credentials go, a new login starts
        relink = await start(conn, force=True)
        assert relink["message"] == NEW_QR and not server.whatsapp_linked
        assert decode(relink["qrDataUrl"]) == server.whatsapp_qr_raw
        assert server.whatsapp_logins_started == 2


async def test_logout_and_restoring_the_credentials(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home) as (server, conn):
        await start(conn)
        server.whatsapp_scan("447700900123")
        backup = tmp_path / "backup"
        shutil.copytree(home / AUTH, backup)
        logout = "openclaw channels logout --channel whatsapp --account default"
        assert await sh(conn, logout) == (0, "Logged out of whatsapp/default.\n", "")
        assert not (home / AUTH).exists() and not server.whatsapp_linked
        assert (await status(conn))["statusState"] == "not-linked"
        assert await sh(conn, "openclaw channels logout --channel whatsapp") == (
            0,
            "No saved auth was cleared for whatsapp/default. Other credentials may still be "
            "active.\n",
            "",
        )
        async with conn.start_sftp_client() as sftp:  # a restore puts the files back
            await sftp.put(str(backup), AUTH, recurse=True)
        restored = await status(conn)
        assert restored["linked"] and restored["self"]["e164"] == "+447700900123"

        # A logout during a login ends it: a waiter hears so.
        qr = (await start(conn, force=True))["qrDataUrl"]
        pending = asyncio.create_task(wait(conn, timeoutMs=120000, currentQrDataUrl=qr))
        await server.whatsapp_until_waiting(1)
        assert (await sh(conn, logout))[0] == 0
        assert await pending == {"connected": False, "message": "Login ended without a connection."}


async def test_a_login_expires_after_180_seconds(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path / "home", whatsapp_clock=clock) as (server, conn):
        first = (await start(conn))["qrDataUrl"]
        clock.now += 180
        assert await wait(conn, timeoutMs=120000, currentQrDataUrl=first) == {
            "connected": False,
            "message": "The login QR expired. Ask me to generate a new one.",
        }
        assert server.whatsapp_qr_raw is None  # reset
        assert (await wait(conn, timeoutMs=1000))["message"] == (
            "No active WhatsApp login in progress."
        )
        with pytest.raises(RuntimeError):
            server.whatsapp_rotate_qr()
        again = await start(conn)
        assert again["message"] == NEW_QR and again["qrDataUrl"] != first


async def test_a_gateway_restart_or_wipe_ends_the_login(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        await start(conn)
        assert server.whatsapp_qr_raw is not None
        assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
        assert server.whatsapp_qr_raw is None  # the login lived in the old process
        assert (await wait(conn, timeoutMs=1000))["message"] == (
            "No active WhatsApp login in progress."
        )
        await start(conn)
        server.whatsapp_scan()
        server.wipe()
        assert not server.whatsapp_linked and server.whatsapp_qr_raws == []
        assert server.whatsapp_logins_started == 0


async def test_wait_params_are_checked_like_the_release(tmp_path: Path) -> None:
    """A currentQrDataUrl that is not a PNG data URL is refused (the release's own schema)."""
    async with running(tmp_path / "home") as (_server, conn):
        await start(conn)
        code, answer = await call(
            conn, "web.login.wait", accountId="default", currentQrDataUrl="-", timeoutMs=1000
        )
        assert code == 1 and answer["ok"] is False
        assert "must match pattern" in answer["error"]["message"]
        # An empty PNG data URL is valid, and is no QR: the running QR comes back at once.
        answer = await wait(conn, currentQrDataUrl="data:image/png;base64,", timeoutMs=1000)
        assert answer["qrDataUrl"].startswith("data:image/png;base64,i")
