"""WhatsApp linking on a fake pool server, as the pinned OpenClaw release answers it over SSH.

Verified with openclaw 2026.9.6 (the CLI's output and the WhatsApp plugin's login algorithm):

    openclaw gateway call web.login.start --params '{"channel":"whatsapp","accountId":"default",
        "force":false,"timeoutMs":30000}' --json --timeout 30000 [--port P --token T]
    openclaw gateway call web.login.wait --params '{"channel":"whatsapp","accountId":"default",
        "timeoutMs":120000,"currentQrDataUrl":"data:image/png;base64,..."}' --json --timeout M
    openclaw channels status --json
    openclaw channels logout --channel whatsapp [--account default]

The login lives in the gateway process (a restart or a stop ends it) and is fresh for 180 s
after it started (`clock`, injectable). Each QR holds a Baileys-like raw string
(`https://wa.me/settings/linked_devices#<ref>,<noise>,<identity>,<adv>,<platform>`) rendered as
a real PNG (segno), so a decoder reads it back. Linked means the account's Baileys
`creds.json` exists under `~/.openclaw/credentials/whatsapp/<account>/`: restoring those files
links it again. Tests drive the phone side: `rotate_qr()` (Baileys' next ref), `scan()` (the
phone linked: credentials written, the login connected).

Modelled by the fake, not verified: a logout during a login ends it (a waiter gets the plugin's
"Login ended without a connection."); a wait that outlives the CLI's `--timeout` fails with
`gateway timeout after Nms`; the text (non --json) status; errors for unknown methods/channels;
the status fields beyond channelOrder/channels.whatsapp (ts, labels, accounts) and the blocks of
channels other than WhatsApp.
A wait's deadline runs on the event loop's clock; only the 180 s freshness uses `clock`. A gateway
stop is not pushed to a waiting `web.login.wait` (it sees the login gone when it next wakes).

Why one module: the login state machine, the credentials on disk and the four commands that read
and drive them must agree with one another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

LOGIN_TTL = 180.0  # seconds a login stays fresh (the plugin's ACTIVE_LOGIN_TTL_MS)
WAIT_DEFAULT_MS, WAIT_MIN_MS = 120_000, 1000
DEFAULT_ACCOUNT = "default"
CREDENTIALS = ".openclaw/credentials/whatsapp"  # relative to the gateway user's home

NEW_QR = "Scan this QR in WhatsApp → Linked Devices."
QR_ACTIVE = "QR already active. Scan it in WhatsApp → Linked Devices."
NO_LOGIN = "No active WhatsApp login in progress."
EXPIRED = "The login QR expired. Ask me to generate a new one."
LINKED = "✅ Linked! WhatsApp is ready."
REFRESHED = "QR refreshed. Scan the latest code in WhatsApp → Linked Devices."
STILL_WAITING = (  # the real text, typographic apostrophe and all
    "Still waiting for the QR scan. Let me know when you’ve scanned it."  # noqa: RUF001
)
ENDED = "Login ended without a connection."
CHANNEL_ORDER = ("telegram", "whatsapp", "discord", "irc", "googlechat", "slack", "signal")
_CALL_OPTIONS = frozenset({"--params", "--timeout", "--port", "--token", "--url", "--password"})


class Output(Protocol):
    """Where a command writes (the fake server's per-request IO)."""

    def out(self, data: str | bytes) -> bool: ...
    def err(self, data: str | bytes) -> bool: ...


@dataclass
class _Login:
    started: float  # on the clock
    config: object  # the gateway's loaded config when it started: another one means a restart
    qr_raw: str = ""
    qr_data_url: str = ""
    connected: bool = False


class _Failure(Exception):
    """A gateway request error, as `gateway call --json` prints it."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable


class FakeWhatsApp:
    """The WhatsApp side of one fake server: logins, QRs, credentials and their commands."""

    def __init__(
        self,
        config: Callable[[], dict[str, Any] | None],
        gateway_active: Callable[[], bool],
        home: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config, self._gateway_active, self.home, self.clock = (
            config,
            gateway_active,
            Path(home),
            clock,
        )
        self.qr_raws: list[str] = []  # every raw QR string issued, oldest first
        self.logins_started = 0
        self.waiting = 0  # web.login.wait requests blocked right now
        self._logins: dict[str, _Login] = {}
        self._changed = asyncio.Event()  # rotation, scan, logout: waiters look again
        self._waiting_changed = asyncio.Event()

    # -- test controls (the phone's side) --------------------------------------------------------

    def rotate_qr(self, account: str = DEFAULT_ACCOUNT) -> str:
        """WhatsApp issues the next QR for the active login; waiters wake. Returns the raw."""
        login = self._require(account)
        self._new_qr(login)
        self._pulse()
        return login.qr_raw

    def scan(self, phone: str = "15551234567", account: str = DEFAULT_ACCOUNT) -> None:
        """The phone `phone` scanned the current QR: Baileys' credentials are written (0600) and
        the login is connected; waiters wake."""
        login = self._require(account)
        digits = phone.removeprefix("+")
        auth = self.auth_dir(account)
        auth.mkdir(parents=True, exist_ok=True)
        auth.chmod(0o700)
        creds = {
            "noiseKey": {"private": _b64(32), "public": _b64(32)},
            "signedIdentityKey": {"private": _b64(32), "public": _b64(32)},
            "registrationId": secrets.randbelow(16380) + 1,
            "advSecretKey": _b64(32),
            "me": {"id": f"{digits}:12@s.whatsapp.net", "name": ""},
            "platform": "smba",
            "registered": True,
        }
        sync_key = {"keyData": _b64(32), "timestamp": str(int(time.time() * 1000))}
        for name, body in (("creds.json", creds), ("app-state-sync-key-AAAA.json", sync_key)):
            path = auth / name
            path.write_bytes(orjson.dumps(body))
            path.chmod(0o600)
        login.connected = True
        self._pulse()

    async def until_waiting(self, count: int = 1) -> None:
        """Until exactly `count` web.login.wait requests are blocked (say, before a scan; 0:
        all answered or hung up); wrap in asyncio.timeout()."""
        while self.waiting != count:  # each pass waits for a change; the caller bounds it
            await self._waiting_changed.wait()

    def linked(self, account: str = DEFAULT_ACCOUNT) -> bool:
        return (self.auth_dir(account) / "creds.json").is_file()

    def qr_raw(self, account: str = DEFAULT_ACCOUNT) -> str | None:
        """The active login's current raw QR string, or None without one."""
        login = self._active(account)
        return login.qr_raw if login is not None and login.qr_raw else None

    def reset(self) -> None:
        """A fresh machine: no login, no history (the files go with the home)."""
        self._logins.clear()
        self.qr_raws.clear()
        self.logins_started = 0
        self._pulse()

    def auth_dir(self, account: str = DEFAULT_ACCOUNT) -> Path:
        return self.home / CREDENTIALS / account

    # -- commands --------------------------------------------------------------------------------

    @staticmethod
    def handles(args: list[str]) -> bool:
        """Whether `openclaw ARGS` is one of this module's commands."""
        return args[:2] == ["gateway", "call"] or args[:2] in (
            ["channels", "status"],
            ["channels", "logout"],
        )

    async def run(
        self, args: list[str], io: Output, closed: Callable[[], Awaitable[Any]] | None = None
    ) -> int:
        """Answer `openclaw ARGS`; `closed()` completes when the client hangs up (a long wait
        then ends without an answer)."""
        if args[:2] == ["channels", "status"]:
            return self._status(args[2:], io)
        if args[:2] == ["channels", "logout"]:
            return self._logout_command(args[2:], io)
        hangup = asyncio.ensure_future(closed()) if closed is not None else None
        try:
            return await self._call(args[2:], io, hangup)
        finally:
            if hangup is not None:
                hangup.cancel()

    async def _call(self, args: list[str], io: Output, hangup: asyncio.Future[Any] | None) -> int:
        method, options = _parse_call(args)
        if method is None:
            io.err("error: missing required argument 'method'\n")
            return 1
        try:
            params = orjson.loads(options.get("--params", "{}"))
        except orjson.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            io.err("Error: --params must be a JSON object\n")
            return 1
        cli_timeout = options.get("--timeout")
        try:
            answer = self._answer(method, params, hangup)
            if cli_timeout is not None and cli_timeout.isdigit():
                async with asyncio.timeout(int(cli_timeout) / 1000):
                    result = await answer
            else:
                result = await answer
        except _Failure as exc:
            error = {
                "type": "gateway_request_error",
                "code": exc.code,
                "message": exc.message,
                "retryable": exc.retryable,
            }
            io.out(orjson.dumps({"ok": False, "error": error}) + b"\n")
            return 1
        except TimeoutError:
            io.err(f"Error: gateway timeout after {cli_timeout}ms\n")
            return 1
        if result is None:  # the client hung up
            return 1
        io.out(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return 0

    async def _answer(
        self, method: str, params: dict[str, Any], hangup: asyncio.Future[Any] | None
    ) -> dict[str, Any] | None:
        if not self._gateway_active():
            raise _Failure("UNAVAILABLE", "gateway not reachable", retryable=True)
        if method not in ("web.login.start", "web.login.wait"):
            raise _Failure("INVALID_REQUEST", f"unknown method: {method}", retryable=False)
        config = self._config()
        if (
            params.get("channel", "whatsapp") != "whatsapp"
            or not isinstance(_dig(config, "channels", "whatsapp"), dict)
            or _dig(config, "plugins", "entries", "whatsapp", "enabled") is not True
        ):
            raise _Failure(
                "INVALID_REQUEST", "web login provider is not available", retryable=False
            )
        account = str(params.get("accountId") or DEFAULT_ACCOUNT)
        if method == "web.login.start":
            return self._start(account, force=params.get("force") is True)
        timeout_ms = params.get("timeoutMs")
        timeout_ms = WAIT_DEFAULT_MS if not isinstance(timeout_ms, int | float) else timeout_ms
        current = params.get("currentQrDataUrl")
        if current is not None and not (
            isinstance(current, str) and current.startswith("data:image/png;base64,")
        ):
            # The gateway validates its params (verified with openclaw 2026.9.6).
            raise _Failure(
                "INVALID_REQUEST",
                "invalid web.login.wait params: at /currentQrDataUrl: must match pattern "
                '"^data:image/png;base64,"',
                retryable=False,
            )
        return await self._wait(
            account,
            max(timeout_ms, WAIT_MIN_MS),
            current if isinstance(current, str) else None,
            hangup,
        )

    def _start(self, account: str, *, force: bool) -> dict[str, Any]:
        if self.linked(account):
            if not force:
                e164, jid = self._self_id(account)
                return {
                    "message": f"WhatsApp is already linked ({e164 or jid or 'unknown'}). "
                    "Say “relink” if you want a fresh QR."
                }
            self._logout(account)  # relink: the old device's credentials go first
        existing = self._active(account)
        if existing is not None and self._fresh(existing) and existing.qr_data_url:
            return {"qrDataUrl": existing.qr_data_url, "message": QR_ACTIVE}
        self._end(account)
        login = _Login(started=self.clock(), config=self._config())
        self._new_qr(login)
        self._logins[account] = login
        self.logins_started += 1
        return {"qrDataUrl": login.qr_data_url, "message": NEW_QR}

    async def _wait(
        self,
        account: str,
        timeout_ms: float,
        current: str | None,
        hangup: asyncio.Future[Any] | None,
    ) -> dict[str, Any] | None:
        login = self._active(account)
        if login is None:
            return {"connected": False, "message": NO_LOGIN}
        if not self._fresh(login):
            self._end(account)
            return {"connected": False, "message": EXPIRED}
        self._count_waiting(+1)
        try:
            return await self._wait_loop(account, login, timeout_ms, current, hangup)
        finally:
            self._count_waiting(-1)

    async def _wait_loop(
        self,
        account: str,
        login: _Login,
        timeout_ms: float,
        current: str | None,
        hangup: asyncio.Future[Any] | None,
    ) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:  # each pass waits for a change (rotation, scan, logout) or the deadline
            changed = self._changed
            if login.connected:  # every waiter on this login learns it, as in the plugin
                self._end(account)
                return {"connected": True, "message": LINKED}
            if self._active(account) is not login:
                return {"connected": False, "message": ENDED}
            if current and login.qr_data_url and login.qr_data_url != current:
                return {"connected": False, "message": REFRESHED, "qrDataUrl": login.qr_data_url}
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {"connected": False, "message": STILL_WAITING}
            woken = asyncio.ensure_future(changed.wait())
            waiting = {woken} if hangup is None else {woken, hangup}
            try:
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if hangup is not None and hangup.done():
                return None

    def _status(self, args: list[str], io: Output) -> int:
        if not self._gateway_active():
            io.err("Gateway not reachable.\n")
            return 1
        channels = _dig(self._config(), "channels")
        configured = [
            name
            for name, block in (channels.items() if isinstance(channels, dict) else ())
            if isinstance(block, dict)
        ]
        order = [c for c in CHANNEL_ORDER if c in configured]
        order += sorted(c for c in configured if c not in CHANNEL_ORDER)
        channels = {name: self._channel_status(name) for name in order}
        report = {
            "ts": int(time.time() * 1000),
            "channelOrder": order,
            "channelLabels": {name: name.capitalize() for name in order},
            "channels": channels,
            "channelAccounts": {
                name: [{"accountId": DEFAULT_ACCOUNT, **block}] for name, block in channels.items()
            },
            "channelDefaultAccountId": {name: DEFAULT_ACCOUNT for name in order},
        }
        if "--json" in args:
            io.out(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
            return 0
        for name, block in channels.items():
            state = block.get("statusState", "configured")
            running = "running" if block["running"] else "stopped"
            io.out(f"- {report['channelLabels'][name]} default: {state}, {running}\n")
        return 0

    def _channel_status(self, name: str) -> dict[str, Any]:
        if name != "whatsapp":
            return {"configured": True, "running": True, "lastError": None}
        linked = self.linked()
        e164, jid = self._self_id(DEFAULT_ACCOUNT) if linked else (None, None)
        return {
            "configured": True,
            "statusState": "linked" if linked else "not-linked",
            "linked": linked,
            "self": {"e164": e164, "jid": jid, "lid": None},
            "running": linked,
            "connected": linked,
            "lastError": None,
        }

    def _logout_command(self, args: list[str], io: Output) -> int:
        options: dict[str, str] = {}
        items = iter(args)
        for arg in items:
            if arg in ("--channel", "--account"):
                options[arg] = next(items, "")
            elif "=" in arg and arg.split("=", 1)[0] in ("--channel", "--account"):
                key, value = arg.split("=", 1)
                options[key] = value
        channel = options.get("--channel", "")
        account = options.get("--account") or DEFAULT_ACCOUNT
        if channel != "whatsapp":
            io.err(f"Error: Unknown channel: {channel or '(none)'}\n")
            return 1
        if self._logout(account):
            io.out(f"Logged out of {channel}/{account}.\n")
        else:
            io.out(
                f"No saved auth was cleared for {channel}/{account}. "
                "Other credentials may still be active.\n"
            )
        return 0

    # -- state -----------------------------------------------------------------------------------

    def _active(self, account: str) -> _Login | None:
        """The account's login, if the gateway process that started it still runs."""
        login = self._logins.get(account)
        if login is not None and (not self._gateway_active() or login.config is not self._config()):
            del self._logins[account]  # the gateway stopped or restarted: its socket is gone
            login = None
        return login

    def _require(self, account: str) -> _Login:
        login = self._active(account)
        if login is None or not login.qr_raw:
            raise RuntimeError(f"no active WhatsApp login with a QR for account {account!r}")
        return login

    def _fresh(self, login: _Login) -> bool:
        return self.clock() - login.started < LOGIN_TTL

    def _end(self, account: str) -> None:
        if self._logins.pop(account, None) is not None:
            self._pulse()

    def _logout(self, account: str) -> bool:
        """Clear the account's credentials and end its login; whether there were any."""
        self._end(account)
        auth = self.auth_dir(account)
        existed = auth.exists()
        shutil.rmtree(auth, ignore_errors=True)
        return existed

    def _self_id(self, account: str) -> tuple[str | None, str | None]:
        """(e164, jid) from creds.json's `me.id`, like the plugin's readWebSelfId."""
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError, TypeError):
            jid = orjson.loads((self.auth_dir(account) / "creds.json").read_bytes())["me"]["id"]
            if isinstance(jid, str):
                digits = jid.split("@", 1)[0].split(":", 1)[0]
                return (f"+{digits}" if digits.isdigit() else None), jid
        return None, None

    def _new_qr(self, login: _Login) -> None:
        raw = (
            f"https://wa.me/settings/linked_devices#2@{_b64(48)},{_b64(32)},{_b64(32)},{_b64(32)},1"
        )
        login.qr_raw, login.qr_data_url = raw, _png_data_url(raw)
        self.qr_raws.append(raw)

    def _pulse(self) -> None:
        """Wake every waiter, and arm a fresh event for the next change."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _count_waiting(self, delta: int) -> None:
        self.waiting += delta
        self._waiting_changed.set()
        self._waiting_changed = asyncio.Event()


def _parse_call(args: list[str]) -> tuple[str | None, dict[str, str]]:
    """`<method> [--params JSON] [--json] [--timeout MS] [--port P] [--token T] ...`"""
    method: str | None = None
    options: dict[str, str] = {}
    items = iter(args)
    for arg in items:
        key = arg.split("=", 1)[0]
        if key in _CALL_OPTIONS:
            options[key] = arg.split("=", 1)[1] if "=" in arg else next(items, "")
        elif method is None and not arg.startswith("-"):
            method = arg
    return method, options


def _dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]..., or None where a level is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _b64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _png_data_url(raw: str) -> str:
    import segno  # only the WhatsApp fake needs it

    return segno.make_qr(raw, error="l").png_data_uri(scale=6, border=4)
