"""WhatsApp, the built-in channel plugin: the user links their own number by scanning a QR code.

Registered through the ``blitzclawd`` entry-point group like any third-party plugin. WhatsApp is
an external OpenClaw plugin (``@openclaw/whatsapp``, pinned to the release): pool servers
install it at boot and the config trusts it (``plugins.entries.whatsapp.enabled``; without that
the gateway refuses to load it and no login can start). An unlinked WhatsApp does not make the
gateway unready (``/readyz`` is 200, verified with 2026.9.6), so the instance is active and
healthy before the user has scanned anything.

Routes (the core checks auth, ownership, channel and an active instance):

- ``POST .../whatsapp/login`` ``{"force": false}``: start linking; the QR to scan.
- ``GET .../whatsapp/qr[?wait=1&since=<id>]``: the current QR (its text, an SVG, the PNG and
  seconds left); with ``wait`` and the id the client shows, holds until it rotates or the phone
  links (at most 25 s: ask again).
- ``GET .../whatsapp/status``: not_linked, waiting_for_scan, expired, connected (with the
  phone number) or logged_out. The first time it sees the phone linked (and again when the
  backup is over six hours old) the session files are backed up, encrypted, so a rebuilt server
  comes back linked.
- ``POST .../whatsapp/disconnect``: logs out and wipes the session from the server and backup.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from blitzclawd.channels import (
    ChannelField,
    ChannelRoute,
    ChannelState,
    InstanceCall,
    OpenClawBlock,
)
from blitzclawd.config import Settings
from blitzclawd.errors import ApiError
from blitzclawd.fleet.versions import OPENCLAW_VERSION
from blitzclawd.hookspecs import hookimpl
from blitzclawd.http.declare import Boolean, QueryFlag, QueryText
from blitzclawd_plugins.whatsapp import gateway, qr

log = logging.getLogger("blitzclawd.whatsapp")

NAME = "whatsapp"
PACKAGE = f"@openclaw/whatsapp@{OPENCLAW_VERSION}"
WAIT_SECONDS = 25  # a long poll stays under common proxy idle timeouts
_STATE_KEYS = ("phone", "linked_at", "login_started_at", "logged_out_at", "backed_up_at")
# Baileys keeps rotating its keys: a linked session is backed up again when seen this much later.
BACKUP_EVERY = 6 * 3600


def whatsapp_channel() -> tuple[str, OpenClawBlock]:
    """``channels.whatsapp``: the user links their own number, their self-chat reaches the
    agent (``selfChatMode``), strangers must pair first and groups are ignored, so nobody else
    spends the user's balance."""
    block = {
        "enabled": True,
        "dmPolicy": "pairing",
        "selfChatMode": True,
        "groupPolicy": "disabled",
    }
    return NAME, OpenClawBlock(block, trust_plugin=True)


class _QrClock:
    """When this daemon first saw each QR, to tell a client how long it has left (bounded)."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._size = size

    def seconds_left(self, instance_id: str, data_url: str, first: bool) -> int:
        key = f"{instance_id}:{qr.qr_id(data_url)}"
        now = time.monotonic()
        seen = self._seen.setdefault(key, now)
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        life = gateway.FIRST_QR_SECONDS if first else gateway.NEXT_QR_SECONDS
        return max(0, round(life - (now - seen)))


_clock = _QrClock()


# What every WhatsApp route answers: the link's state (with the QR code while one is shown).
_LINK: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {
            "type": "string",
            "enum": ["connected", "waiting_for_scan", "logged_out", "expired", "not_linked"],
        },
        "phone": {"type": ["string", "null"], "description": "the linked number"},
        "online": {"type": "boolean"},
        "message": {"type": "string"},
        "id": {"type": "string", "description": "this QR code's id (for `since`)"},
        "qr": {"type": "string", "description": "the QR code's text"},
        "svg": {"type": "string", "description": "the QR code, drawn"},
        "png_data_url": {"type": "string"},
        "expires_in": {"type": ["integer", "number", "null"]},
    },
}


async def _qr_answer(
    call: InstanceCall, answer: gateway.LoginAnswer, message: str
) -> dict[str, Any]:
    assert answer.qr_data_url is not None
    started = call.public.get("login_started_at") or 0
    first = time.time() - started < gateway.FIRST_QR_SECONDS
    try:
        shown = await qr.view(
            answer.qr_data_url,
            seconds_left=_clock.seconds_left(call.instance_id, answer.qr_data_url, first),
        )
    except qr.NotAQr:
        raise ApiError(502, "whatsapp_unavailable", "the QR code could not be read") from None
    return {"status": "waiting_for_scan", "message": message, **shown}


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(
        502,
        "whatsapp_unavailable",
        f"WhatsApp linking is not available on your assistant right now ({exc}); try again in "
        "a minute",
    )


async def _status(call: InstanceCall) -> dict[str, Any]:
    try:
        link = await gateway.status(await call.ssh())
    except gateway.GatewayError as exc:
        raise _unavailable(exc) from None
    public, now = call.public, time.time()
    if link.linked:
        fresh = not public.get("linked_at") or public.get("phone") != link.phone
        if fresh or now - (public.get("backed_up_at") or 0) > BACKUP_EVERY:
            try:
                await call.save_session()  # a rebuilt server comes back linked
            except Exception as exc:  # best effort: the link itself is fine
                log.warning("whatsapp session not backed up", extra={"error": str(exc)[:300]})
            kept = {k: v for k, v in public.items() if k not in _STATE_KEYS}
            linked_at = int(now) if fresh else public["linked_at"]
            await call.save_public(
                {**kept, "phone": link.phone, "linked_at": linked_at, "backed_up_at": int(now)}
            )
        return {"status": "connected", "phone": link.phone, "online": link.connected}
    started = public.get("login_started_at")
    if started and now - started < gateway.LOGIN_TTL:
        return {"status": "waiting_for_scan", "phone": None}
    if public.get("linked_at") or public.get("logged_out_at"):
        return {"status": "logged_out", "phone": None}
    return {"status": "expired" if started else "not_linked", "phone": None}


async def _login(call: InstanceCall) -> dict[str, Any]:
    force = (await call.json()).get("force") or False  # checked: a boolean, if given
    try:
        answer = await gateway.start_login(await call.ssh(), force=force)
    except gateway.GatewayError as exc:
        raise _unavailable(exc) from None
    if answer.qr_data_url is not None:
        if "already active" not in answer.message or not call.public.get("login_started_at"):
            kept = {k: v for k, v in call.public.items() if k != "login_started_at"}
            await call.save_public({**kept, "login_started_at": int(time.time())})
        return await _qr_answer(call, answer, "Scan this QR code in WhatsApp > Linked devices.")
    if answer.connected or "already linked" in answer.message:
        return {**await _status(call), "message": "WhatsApp is already linked."}
    raise ApiError(502, "whatsapp_unavailable", answer.message or "WhatsApp login failed")


async def _qr(call: InstanceCall) -> dict[str, Any]:
    conn = await call.ssh()
    try:
        # A `current` that is no QR returns the running login's QR at once.
        answer = await gateway.wait_login(conn, current=gateway.NO_QR, seconds=1)
        since = call.query.get("since")
        if (
            call.query.get("wait") in ("1", "true")
            and answer.qr_data_url is not None
            and since == qr.qr_id(answer.qr_data_url)
        ):
            waited = await gateway.wait_login(
                conn, current=answer.qr_data_url, seconds=WAIT_SECONDS
            )
            answer = waited if (waited.qr_data_url or waited.connected) else answer
    except gateway.GatewayError as exc:
        raise _unavailable(exc) from None
    if answer.connected:
        return {**await _status(call), "message": "Linked! WhatsApp is ready."}
    if answer.qr_data_url is None:
        state = await _status(call)
        if state["status"] == "connected":
            return state
        raise ApiError(
            409,
            "no_login",
            "there is no QR code to scan right now: start linking first (POST "
            f"/api/instances/{call.instance_id}/whatsapp/login)",
        )
    return await _qr_answer(call, answer, "Scan this QR code in WhatsApp > Linked devices.")


async def _disconnect(call: InstanceCall) -> dict[str, Any]:
    try:
        await gateway.logout(await call.ssh())
    except gateway.GatewayError as exc:
        raise _unavailable(exc) from None
    await call.wipe_session()
    kept = {k: v for k, v in call.public.items() if k not in _STATE_KEYS}
    await call.save_public({**kept, "logged_out_at": int(time.time())})
    return {"status": "logged_out", "phone": None}


class WhatsAppChannel:
    name = NAME
    display_name = "WhatsApp"
    fields: tuple[ChannelField, ...] = ()  # nothing to type: the phone links by QR code
    server_packages = (PACKAGE,)
    session_dirs = (gateway.CREDENTIALS_DIR,)

    async def verify(
        self, settings: Settings, config: dict[str, Any], current: ChannelState | None
    ) -> ChannelState:
        unknown = sorted(k for k in config if k not in _STATE_KEYS)
        if unknown:
            name = f"channel_config.{unknown[0]}"[:200]
            raise ApiError(422, "invalid_field", f"{name} is not a whatsapp setting", field=name)
        return current or ChannelState()  # the link state is the daemon's, not the user's

    def openclaw(self, state: ChannelState) -> OpenClawBlock:
        return whatsapp_channel()[1]

    async def activated(self, settings: Settings, state: ChannelState, about: str) -> None:
        return None  # the user's own number: its profile is theirs

    def paired(self, state: ChannelState, sender_id: str) -> ChannelState | None:
        return None  # the release's pairing store keeps approved senders; nothing to add

    def routes(self) -> Sequence[ChannelRoute]:
        return (
            ChannelRoute(
                "POST",
                "login",
                _login,
                summary="WhatsApp: start linking; the first QR code to scan",
                body=(Boolean("force", description="start over even when a login is running"),),
                answer=_LINK,
            ),
            ChannelRoute(
                "GET",
                "qr",
                _qr,
                summary="WhatsApp: the QR code to scan now (it rotates every ~20 s)",
                description="With `wait=1&since=<id>` it answers when the QR code is no "
                "longer `<id>` (a new one, or linked), or after about a minute.",
                query=(
                    QueryFlag("wait", description="wait for a change"),
                    QueryText("since", max_length=100, description="the QR code shown now"),
                ),
                answer=_LINK,
            ),
            ChannelRoute(
                "GET",
                "status",
                _status,
                summary="WhatsApp: linked, and as which number",
                answer=_LINK,
            ),
            ChannelRoute(
                "POST",
                "disconnect",
                _disconnect,
                summary="WhatsApp: unlink the phone (and forget its session)",
                answer=_LINK,
            ),
        )

    def setup_text(self, public: dict[str, Any]) -> str:
        return (
            "Link your WhatsApp: open your assistant's WhatsApp page in the dashboard to show "
            "its QR code, then on your phone open WhatsApp > Settings > Linked devices > Link a "
            "device and scan it. Then message yourself: your assistant answers in that chat."
        )

    def label(self, public: dict[str, Any]) -> str | None:
        phone = public.get("phone")
        return f"WhatsApp {phone}" if phone else None


@hookimpl
def register_channels() -> list[WhatsAppChannel]:
    return [WhatsAppChannel()]
