"""Linking WhatsApp through the instance's own gateway, with the pinned release's commands (run
over the pinned SSH session; verified with openclaw 2026.9.6, WIRE.md "WhatsApp login through
the gateway"):

    openclaw gateway call web.login.start --params '{...}' --json --timeout MS
    openclaw gateway call web.login.wait  --params '{...}' --json --timeout MS
    openclaw channels status --json
    openclaw channels logout --channel whatsapp --account default

`gateway call` authenticates with the gateway token of the instance's own config (no token on
the command line). A login lives 180 s; its first QR 60 s, later ones 20 s (Baileys).
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from typing import Any

import asyncssh

ACCOUNT = "default"
LOGIN_TTL = 180  # seconds a login (and its QRs) lives on the gateway
FIRST_QR_SECONDS, NEXT_QR_SECONDS = 60, 20
# The gateway checks currentQrDataUrl against ^data:image/png;base64, (2026.9.6): an empty PNG
# is a valid "current QR" that no real one equals, so a wait answers the running QR at once.
NO_QR = "data:image/png;base64,"
CREDENTIALS_DIR = ".openclaw/credentials/whatsapp"  # <account>/creds.json, keys beside it


class GatewayError(Exception):
    """The gateway could not do it (its message, fit to log; never a secret)."""


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    message: str
    qr_data_url: str | None = None
    connected: bool = False


@dataclass(frozen=True, slots=True)
class LinkStatus:
    linked: bool
    connected: bool
    phone: str | None


MAX_OUTPUT = 4 * 1024 * 1024  # a QR data URL is a few KB: the gateway's answers are small


async def _run(conn: asyncssh.SSHClientConnection, command: str, seconds: float) -> tuple[int, str]:
    """(exit status, stdout) of `command`, reading at most MAX_OUTPUT: the server's user owns
    what runs there, so its output is bounded like any hostile input."""
    try:
        async with asyncio.timeout(seconds):
            async with conn.create_process(command, stderr=asyncssh.DEVNULL) as process:
                chunks: list[str] = []
                size = 0
                while chunk := await process.stdout.read(65536):
                    size += len(chunk)
                    if size > MAX_OUTPUT:
                        process.kill()
                        raise GatewayError("the gateway's answer is too large")
                    chunks.append(str(chunk))
                status = (await process.wait(check=False)).exit_status
    except TimeoutError:
        raise GatewayError("the gateway did not answer in time") from None
    except (OSError, asyncssh.Error) as exc:
        raise GatewayError(f"the server's session failed ({type(exc).__name__})") from None
    return (status if status is not None else 255), "".join(chunks)


def _json(out: str) -> dict[str, Any]:
    start = out.find("{")
    try:
        doc = json.JSONDecoder().raw_decode(out[start:])[0] if start >= 0 else None
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise GatewayError("the gateway's answer is not JSON")
    return doc


async def _call(
    conn: asyncssh.SSHClientConnection, method: str, params: dict[str, Any], timeout_ms: int
) -> LoginAnswer:
    command = (
        f"openclaw gateway call {method} --params {shlex.quote(json.dumps(params))} --json "
        f"--timeout {timeout_ms}"
    )
    exit_status, out = await _run(conn, command, timeout_ms / 1000 + 30)
    doc = _json(out)
    if exit_status != 0 or doc.get("ok") is False:
        error = doc.get("error") if isinstance(doc.get("error"), dict) else {}
        raise GatewayError(str(error.get("message") or f"{method} failed")[:300])
    qr = doc.get("qrDataUrl")
    return LoginAnswer(
        message=str(doc.get("message") or ""),
        qr_data_url=qr if isinstance(qr, str) else None,
        connected=doc.get("connected") is True,
    )


async def start_login(conn: asyncssh.SSHClientConnection, *, force: bool) -> LoginAnswer:
    """A QR to scan (the current one when a login is already running), or why not."""
    params = {"channel": "whatsapp", "accountId": ACCOUNT, "force": force, "timeoutMs": 30000}
    return await _call(conn, "web.login.start", params, 45000)


async def wait_login(
    conn: asyncssh.SSHClientConnection, *, current: str | None, seconds: int
) -> LoginAnswer:
    """Until the QR rotates away from `current`, the phone links, or `seconds` pass (with a
    `current` that is not a QR, the running login's QR at once)."""
    params: dict[str, Any] = {
        "channel": "whatsapp",
        "accountId": ACCOUNT,
        "timeoutMs": max(1000, seconds * 1000),
    }
    if current is not None:
        params["currentQrDataUrl"] = current
    return await _call(conn, "web.login.wait", params, max(1000, seconds * 1000) + 15000)


async def status(conn: asyncssh.SSHClientConnection) -> LinkStatus:
    exit_status, out = await _run(conn, "openclaw channels status --json", 60)
    if exit_status != 0:
        raise GatewayError("the gateway did not report its channels")
    doc = _json(out)
    channels = doc.get("channels")
    wa = channels.get("whatsapp") if isinstance(channels, dict) else None
    if not isinstance(wa, dict):
        raise GatewayError("the gateway has no WhatsApp channel")
    me = wa.get("self") if isinstance(wa.get("self"), dict) else {}
    phone = me.get("e164")
    return LinkStatus(
        linked=wa.get("linked") is True,
        connected=wa.get("connected") is True,
        phone=phone if isinstance(phone, str) else None,
    )


async def logout(conn: asyncssh.SSHClientConnection) -> str:
    exit_status, out = await _run(
        conn, f"openclaw channels logout --channel whatsapp --account {ACCOUNT}", 60
    )
    if exit_status != 0:
        raise GatewayError("the gateway did not log WhatsApp out")
    return out.strip()
