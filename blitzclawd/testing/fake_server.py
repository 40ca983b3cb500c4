"""The SSH side of one fake pool server: a real asyncssh endpoint over a sandboxed home directory.

    async with FakeServer("bc-1", "127.0.0.1", 0, home=tmp_path, authorized_keys=[pub]) as srv:
        known = asyncssh.import_known_hosts(f"[127.0.0.1]:{srv.port} {srv.host_key_line}")
        async with asyncssh.connect("127.0.0.1", srv.port, username="openclaw",
                                    known_hosts=known, client_keys=[key]) as conn:
            await conn.run("sudo systemctl restart openclaw-gateway.service")

A user logs in with one of `authorized_keys` (any user name) or of `user_keys[user]`; its
login directory is /root for root and
/home/<user> otherwise, and every one of them is `home` on the host (one sandbox). Shell paths
`~`, `~/x`, relative ones and those under the login directory map into `home`; anything else,
including `..` or a symlink leading out, is refused. SFTP maps the same way (it does not expand
`~`: like OpenSSH's, a literal `~` is a directory name). Commands, one per exec request, may be
joined by `&&` (no pipes, redirections or variables):

    mkdir [-p] [-m MODE] P... | chmod [-R] OCTAL P... | rm [-rf] P... | cat P... | echo | true
    [sudo [-n]] systemctl restart|try-restart|start|stop|is-active|status openclaw-gateway
    journalctl -u openclaw-gateway [-n N] [--no-pager] [-f]
    curl -fsS http://127.0.0.1:18789/readyz (or /healthz)
    openclaw health --json | openclaw --version
    openclaw pairing list <channel> --json | openclaw pairing approve <channel> <CODE> [--notify]
    openclaw gateway call web.login.start|web.login.wait --params JSON --json [--timeout MS]
    openclaw channels status [--json] | openclaw channels logout --channel whatsapp [--account A]
    blitzclaw-gog [--no-input] auth credentials set - | auth import ... | auth list --json

gog, the Google skill's CLI, is blitzclawd/testing/fake_gog.py's (`srv.gog`: its keyring, read
with the password of ~/.openclaw/gateway.env). Stdin is read only by the commands that take it.
WhatsApp linking (the last two lines) is blitzclawd/testing/fake_whatsapp.py's, verified with
openclaw 2026.9.6; tests play the phone with `whatsapp_rotate_qr()` and `whatsapp_scan()`.

Privileges: root may do anything. Anyone else needs `sudo` to start, stop or restart the unit,
and sudo allows exactly the `sudo_rules` (from the user data's `sudo:` line when FakeHetzner
boots it, as in /etc/sudoers: `/usr/bin/systemctl restart openclaw-gateway.service` does not
match `systemctl restart openclaw-gateway`); `sudo_rules=None` allows everything.

The unit is the one cloud-init installs (Type=simple, ConditionPathExists on the config):
`systemctl restart` succeeds whatever the config; with no `~/.openclaw/openclaw.json` the unit
stays inactive (unmet condition), with a bad one the gateway exits 78 and the unit is failed.
The gateway accepts strict JSON only (the real file is JSON5), an object with
`gateway.mode == "local"`. `/readyz` and `openclaw health --json` answer only while it is
active; the real health JSON shape is UNVERIFIED here.

Why one module: one fake server's SSH side: its sandboxed commands and files must agree with one
another.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import posixpath
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncssh
import orjson

from blitzclawd.testing.fake_gog import FakeGog
from blitzclawd.testing.fake_whatsapp import FakeWhatsApp

GATEWAY_UNIT = "openclaw-gateway"
GATEWAY_USER = "openclaw"  # the unit's User=: its home holds the config
GATEWAY_PORT = 18789
CONFIG_PATH = ".openclaw/openclaw.json"  # relative to the home
OPENCLAW_VERSION = "2026.9.6"
EXIT_NOT_FOUND = 127

_OCTAL = re.compile(r"[0-7]{3,4}")
_OPERATORS = frozenset("|&;<>()")
_pids = itertools.count(4100)


class SandboxEscape(Exception):
    """A path that leads outside the sandboxed home."""


class FakeServer:
    """One server's sshd, SFTP and the handful of commands the provisioner and monitor run."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        home: Path,
        authorized_keys: Sequence[str] = (),
        user_keys: dict[str, list[str]] | None = None,
        sudo_rules: Sequence[str] | None = None,
        gateway_start_delay: float = 0.0,
        whatsapp_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.host, self.port = name, host, port
        self.home = Path(home)
        # Public key lines, checked at every login: for any user, and per user.
        self.authorized_keys: list[str] = list(authorized_keys)
        self.user_keys: dict[str, list[str]] = dict(user_keys or {})
        # Full command lines sudo allows non-root users, as in sudoers; None: anything.
        self.sudo_rules: list[str] | None = None if sudo_rules is None else list(sudo_rules)
        self.gateway_start_delay = gateway_start_delay
        self.gateway_state = "inactive"  # inactive | activating | active | failed
        self.gateway_port = GATEWAY_PORT
        self.gateway_config: dict[str, Any] | None = None  # as loaded at the last (re)start
        self.channels_ok = True  # False: /readyz answers 503 like a gateway with a broken channel
        # Seconds the gateway takes to answer /readyz (a slow but healthy one); past curl's
        # --max-time the check ends as curl's does (exit 28).
        self.readyz_delay = 0.0
        self.journal: list[str] = []
        # DM pairing, as the real state keeps it (~/.openclaw/state/openclaw.sqlite): pending
        # requests per channel (id, code, createdAt, lastSeenAt, meta) and approved senders.
        self.pairing_requests: dict[str, list[dict[str, Any]]] = {}
        self.pairing_allowed: dict[str, list[str]] = {}
        self.commands: list[str] = []  # every exec request, in order
        self.logins = 0  # successful authentications: connection reuse shows here
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._activation: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._journal_grew = asyncio.Event()
        self._running = False
        self.home.mkdir(parents=True, exist_ok=True)
        self.gog = FakeGog(self.home)  # installed by cloud-init, as on a real pool server
        self.gog_installed = True  # False: a server booted before gog was in the image
        # WhatsApp logins in the gateway; `whatsapp_clock` ages them (180 s) without sleeping.
        self.whatsapp = FakeWhatsApp(
            lambda: self.gateway_config,
            lambda: self.gateway_state == "active",
            self.home,
            clock=whatsapp_clock,
        )

    def __repr__(self) -> str:
        return f"FakeServer({self.name!r}, {self.host}:{self.port}, gateway={self.gateway_state})"

    @property
    def host_key_line(self) -> str:
        """The public host key as one OpenSSH line, `ssh-ed25519 AAAA...` (known_hosts wants it)."""
        return self._host_key.export_public_key("openssh").decode().strip()

    @property
    def open_connections(self) -> int:
        """SSH connections open to this server now (a client that keeps its connection: 1)."""
        return len(self._connections)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._acceptor = await asyncssh.create_server(
            lambda: _Session(self),
            self.host,
            self.port,
            server_host_keys=[self._host_key],
            process_factory=self._handle,
            sftp_factory=lambda chan: _SandboxSFTP(chan, self),
            encoding=None,
            allow_scp=False,
            reuse_address=True,
        )
        self.port = self._acceptor.get_port()

    async def stop(self) -> None:
        """Stop listening and drop every connection (a powered-off or rebuilt machine)."""
        self._running = False
        self._cancel_activation()
        _pulse(self, "_journal_grew")  # followers notice and end
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def wipe(self) -> None:
        """A fresh disk from the image: empty home, no gateway, no journal, a new host key."""
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self._cancel_activation()
        self.journal.clear()
        self.gateway_config, self.gateway_port, self.channels_ok = None, GATEWAY_PORT, True
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.whatsapp.reset()
        self._set_state("inactive")

    # -- test hooks ------------------------------------------------------------------------------

    def crash(self) -> None:
        """The gateway dies (OOM-killed, say): failed until the next restart."""
        self._cancel_activation()
        self.log("openclaw-gateway.service: Main process exited, code=killed, status=9/KILL")
        self.log("openclaw-gateway.service: Failed with result 'signal'.")
        self._set_state("failed")

    def whatsapp_rotate_qr(self) -> str:
        """WhatsApp issues the active login's next QR (waiters wake); its raw string."""
        return self.whatsapp.rotate_qr()

    def whatsapp_scan(self, phone: str = "15551234567") -> None:
        """The phone scans the current QR: credentials written, the login connected."""
        self.whatsapp.scan(phone)

    async def whatsapp_until_waiting(self, count: int = 1) -> None:
        """Until exactly `count` web.login.wait requests are blocked; wrap in asyncio.timeout()."""
        await self.whatsapp.until_waiting(count)

    @property
    def whatsapp_linked(self) -> bool:
        """Whether ~/.openclaw/credentials/whatsapp/default/creds.json exists."""
        return self.whatsapp.linked()

    @property
    def whatsapp_qr_raw(self) -> str | None:
        """The active login's current raw QR string, or None."""
        return self.whatsapp.qr_raw()

    @property
    def whatsapp_qr_raws(self) -> list[str]:
        """Every raw QR string issued, oldest first."""
        return self.whatsapp.qr_raws

    @property
    def whatsapp_logins_started(self) -> int:
        return self.whatsapp.logins_started

    def log(self, message: str, ident: str = "systemd[1]") -> None:
        """Append one journal line (journalctl's short format) and wake `-f` followers."""
        stamp = time.strftime("%b %d %H:%M:%S")
        self.journal.append(f"{stamp} {self.name} {ident}: {message}")
        _pulse(self, "_journal_grew")

    def finish_start(self) -> None:
        """An `activating` gateway becomes active now (tests that hold it with a long delay)."""
        if self.gateway_state == "activating":
            self._cancel_activation()
            self._become_active(f"openclaw[{next(_pids)}]")

    async def wait_gateway(self, state: str) -> None:
        """Until the gateway is in `state`; wrap in asyncio.timeout()."""
        while self.gateway_state != state:  # each pass waits for a change; the caller bounds it
            await self._state_changed.wait()

    @staticmethod
    def login_dir(user: str) -> str:
        return "/root" if user == "root" else f"/home/{user}"

    def resolve(self, raw: str, *, user: str = "root", expand_tilde: bool = True) -> Path:
        """The host path for a path as `user` writes it on the server; SandboxEscape if outside."""
        login = self.login_dir(user)
        if expand_tilde and (raw == "~" or raw.startswith("~/")):
            raw = login + raw[1:]
        virtual = posixpath.normpath(posixpath.join(login, raw))
        if virtual != login and not virtual.startswith(login + "/"):
            raise SandboxEscape(raw)
        local = self.home.joinpath(posixpath.relpath(virtual, login))
        root = os.path.realpath(self.home)
        real = os.path.realpath(local)
        if real != root and not real.startswith(root + os.sep):
            raise SandboxEscape(raw)  # a symlink leading out
        return local

    # -- the gateway -----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.gateway_state = state
        _pulse(self, "_state_changed")

    def _cancel_activation(self) -> None:
        if self._activation is not None:
            self._activation.cancel()
            self._activation = None

    def _load_config(self) -> tuple[dict[str, Any] | None, str]:
        where = f"{self.login_dir(GATEWAY_USER)}/{CONFIG_PATH}"
        try:
            text = (self.home / CONFIG_PATH).read_bytes()
        except OSError:
            return None, f"Missing config at {where}."
        try:
            config = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return None, f"Invalid config at {where}: {exc}"
        gateway = config.get("gateway") if isinstance(config, dict) else None
        if not isinstance(gateway, dict) or gateway.get("mode") != "local":
            return None, "Gateway start blocked: set gateway.mode=local (current: unset)."
        return config, ""

    def _start_gateway(self) -> None:
        self._cancel_activation()
        if self.gateway_state in ("active", "activating"):
            self._stop_gateway()
        if not (self.home / CONFIG_PATH).exists():
            where = f"{self.login_dir(GATEWAY_USER)}/{CONFIG_PATH}"
            self.log(
                "openclaw-gateway.service - OpenClaw Gateway was skipped because of an unmet "
                f"condition check (ConditionPathExists={where})."
            )
            self._set_state("inactive")
            return
        config, problem = self._load_config()
        self.log("Started openclaw-gateway.service - OpenClaw Gateway.")
        ident = f"openclaw[{next(_pids)}]"
        if config is None:
            self.log(problem, ident)
            self.log("openclaw-gateway.service: Main process exited, code=exited, status=78/CONFIG")
            self.log("openclaw-gateway.service: Failed with result 'exit-code'.")
            self._set_state("failed")
            return
        self.gateway_config = config
        self.gateway_port = int(config["gateway"].get("port", GATEWAY_PORT))
        self.log(f"[gateway] config loaded from ~/{CONFIG_PATH}", ident)
        if self.gateway_start_delay <= 0:
            self._become_active(ident)
        else:
            self._set_state("activating")
            self._activation = asyncio.get_running_loop().create_task(self._activate_later(ident))

    async def _activate_later(self, ident: str) -> None:
        await asyncio.sleep(self.gateway_start_delay)  # the simulated start-up time
        self._activation = None
        self._become_active(ident)

    def _become_active(self, ident: str) -> None:
        self.log(f"[gateway] listening on ws://127.0.0.1:{self.gateway_port}", ident)
        self._set_state("active")

    def _stop_gateway(self) -> None:
        self._cancel_activation()
        if self.gateway_state in ("active", "activating"):
            self.log("Stopping openclaw-gateway.service - OpenClaw Gateway...")
            self.log("openclaw-gateway.service: Deactivated successfully.")
            self.log("Stopped openclaw-gateway.service - OpenClaw Gateway.")
        self._set_state("inactive")

    # -- commands --------------------------------------------------------------------------------

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        io = _IO(process, str(process.get_extra_info("username") or "root"))
        if not command:
            io.err("fake server: no interactive shell; run one command per exec request\n")
            code = 1
        else:
            code = await self._run(command, process, io)
        with contextlib.suppress(Exception):  # the client may have gone already
            process.exit(code)

    async def _run(self, command: str, process: asyncssh.SSHServerProcess[bytes], io: _IO) -> int:
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            io.err(f"bash: syntax error: {exc}\n")
            return 2
        simple: list[list[str]] = [[]]
        for token in tokens:
            if token == "&&":
                simple.append([])
            elif set(token) <= _OPERATORS or "$" in token or "`" in token:
                io.err(f"fake server: unsupported shell syntax {token!r} in: {command}\n")
                return 2
            else:
                simple[-1].append(token)
        code = 0
        for argv in simple:
            if not argv:
                io.err("bash: syntax error near unexpected token `&&'\n")
                return 2
            code = await self._sudo(argv, process, io) if argv[0] == "sudo" else None
            if code is None:
                code = await self._one(argv, process, io)
            if code != 0:
                break
        return code

    async def _sudo(
        self, argv: list[str], process: asyncssh.SSHServerProcess[bytes], io: _IO
    ) -> int:
        argv = argv[1:]
        while argv and argv[0] in ("-n", "--non-interactive"):
            argv = argv[1:]
        if not argv:
            io.err("usage: sudo [-n] command\n")
            return 1
        if io.user != "root" and not self._sudo_allows(argv):
            program = argv[0] if argv[0].startswith("/") else f"/usr/bin/{argv[0]}"
            shown = " ".join([program, *argv[1:]])
            io.err(
                f"Sorry, user {io.user} is not allowed to execute '{shown}' as root on "
                f"{self.name}.\n"
            )
            return 1
        return await self._one(argv, process, _IO(io.process, io.user, root=True))

    def _sudo_allows(self, argv: list[str]) -> bool:
        if self.sudo_rules is None:
            return True
        program = argv[0] if argv[0].startswith("/") else f"/usr/bin/{argv[0]}"
        line = " ".join([program, *argv[1:]])
        return any(rule == "ALL" or rule == line for rule in self.sudo_rules)

    async def _one(
        self, argv: list[str], process: asyncssh.SSHServerProcess[bytes], io: _IO
    ) -> int:
        name, args = argv[0], argv[1:]
        if name == "journalctl":
            return await self._journalctl(args, process, io)
        if name == "openclaw" and self.whatsapp.handles(args):  # a login wait takes long
            return await self.whatsapp.run(args, io, process.channel.wait_closed)
        if name == "curl" and self.readyz_delay > 0 and self.gateway_state == "active":
            limit = _max_time(args)
            delay = self.readyz_delay
            await asyncio.sleep(delay if limit is None else min(delay, limit))
            if limit is not None and delay > limit:
                io.err(f"curl: (28) Operation timed out after {int(limit * 1000)} milliseconds\n")
                return 28
        if name == "blitzclaw-gog" and self.gog_installed:
            return await self.gog.run(args, io, lambda: process.stdin.read())
        builtin: Callable[[list[str], _IO], int] | None = {
            "mkdir": self._mkdir,
            "chmod": self._chmod,
            "rm": self._rm,
            "cat": self._cat,
            "echo": _echo,
            "true": lambda args, io: 0,
            "systemctl": self._systemctl,
            "curl": self._curl,
            "openclaw": self._openclaw,
        }.get(name)
        if builtin is None:
            io.err(f"bash: {name}: command not found\n")
            return EXIT_NOT_FOUND
        try:
            return builtin(args, io)
        except SandboxEscape as exc:
            io.err(f"{name}: {exc}: Permission denied (outside the sandbox)\n")
            return 1

    def _mkdir(self, args: list[str], io: _IO) -> int:
        parents, mode, paths = False, None, []
        items = iter(args)
        for arg in items:
            if arg in ("-p", "--parents"):
                parents = True
            elif arg == "-m":
                mode = next(items, "")
            elif arg.startswith("-"):
                io.err(f"mkdir: unsupported option '{arg}'\n")
                return 1
            else:
                paths.append(arg)
        if mode is not None and not _OCTAL.fullmatch(mode):
            io.err(f"mkdir: invalid mode '{mode}'\n")
            return 1
        code = 0
        for raw in paths:
            path = self.resolve(raw, user=io.user)
            try:
                path.mkdir(parents=parents, exist_ok=parents and path.is_dir())
                if mode is not None:
                    path.chmod(int(mode, 8))
            except OSError as exc:
                io.err(f"mkdir: cannot create directory '{raw}': {exc.strerror}\n")
                code = 1
        return code

    def _chmod(self, args: list[str], io: _IO) -> int:
        recursive = bool(args) and args[0] == "-R"
        args = args[1:] if recursive else args
        if len(args) < 2 or not _OCTAL.fullmatch(args[0]):
            io.err("chmod: usage: chmod [-R] OCTAL-MODE PATH... (the fake knows octal modes)\n")
            return 1
        mode, code = int(args[0], 8), 0
        for raw in args[1:]:
            path = self.resolve(raw, user=io.user)
            try:
                targets = [path, *path.rglob("*")] if recursive and path.is_dir() else [path]
                for target in targets:
                    target.chmod(mode)
            except OSError as exc:
                io.err(f"chmod: cannot access '{raw}': {exc.strerror}\n")
                code = 1
        return code

    def _rm(self, args: list[str], io: _IO) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-") and a != "--")
        recursive, force = bool(set(flags) & {"r", "R"}), "f" in flags
        if set(flags) - {"r", "R", "f"}:
            io.err(f"rm: unsupported option in '{flags}'\n")
            return 1
        code = 0
        for raw in (a for a in args if not a.startswith("-")):
            path = self.resolve(raw, user=io.user)
            if not path.exists() and not path.is_symlink():
                if not force:
                    io.err(f"rm: cannot remove '{raw}': No such file or directory\n")
                    code = 1
                continue
            if path.is_dir() and not path.is_symlink():
                if not recursive:
                    io.err(f"rm: cannot remove '{raw}': Is a directory\n")
                    code = 1
                    continue
                if path == self.home:  # the home directory itself stays; its contents go
                    for child in path.iterdir():
                        _remove(child)
                    continue
            _remove(path)
        return code

    def _cat(self, args: list[str], io: _IO) -> int:
        code = 0
        for raw in args:
            path = self.resolve(raw, user=io.user)
            try:
                io.out(path.read_bytes())
            except IsADirectoryError:
                io.err(f"cat: {raw}: Is a directory\n")
                code = 1
            except OSError as exc:
                io.err(f"cat: {raw}: {exc.strerror}\n")
                code = 1
        return code

    def _systemctl(self, args: list[str], io: _IO) -> int:
        quiet = any(a in ("-q", "--quiet") for a in args)
        words = [a for a in args if not a.startswith("-")]
        if len(words) != 2:
            io.err("systemctl: the fake takes VERB UNIT\n")
            return 1
        verb, unit = words
        if unit.removesuffix(".service") != GATEWAY_UNIT:
            if verb == "is-active":
                io.out("inactive\n")
                return 3
            io.err(f"Failed to {verb} {unit}: Unit {unit} not found.\n")
            return 5
        if verb in ("restart", "try-restart", "start", "stop") and not io.root:
            io.err(f"Failed to {verb} {unit}: Access denied\n")
            return 1
        running = self.gateway_state in ("active", "activating")
        if verb in ("restart", "start", "try-restart"):
            # Type=simple: the job succeeds once the process is forked, whatever happens next.
            wanted = {"restart": True, "start": not running, "try-restart": running}[verb]
            if wanted:
                self._start_gateway()
            return 0
        if verb == "stop":
            self._stop_gateway()
            return 0
        if verb == "is-active":
            if not quiet:
                io.out(f"{self.gateway_state}\n")
            return 0 if self.gateway_state == "active" else 3
        if verb == "status":
            shown = {"active": "active (running)", "activating": "activating (start)"}
            io.out(
                f"● {GATEWAY_UNIT}.service - OpenClaw Gateway\n"
                f"     Loaded: loaded (/etc/systemd/system/{GATEWAY_UNIT}.service; enabled)\n"
                f"     Active: {shown.get(self.gateway_state, self.gateway_state)}\n"
            )
            return 0 if self.gateway_state == "active" else 3
        io.err(f"Unknown command verb '{verb}'.\n")
        return 1

    def _curl(self, args: list[str], io: _IO) -> int:
        fail = silent = show_error = False
        urls: list[str] = []
        items = iter(args)
        for arg in items:
            if arg in ("-m", "--max-time", "--connect-timeout"):
                next(items, None)
            elif arg.startswith("--"):
                fail |= arg == "--fail"
                silent |= arg == "--silent"
                show_error |= arg == "--show-error"
            elif arg.startswith("-"):
                fail |= "f" in arg
                silent |= "s" in arg
                show_error |= "S" in arg
            else:
                urls.append(arg)
        url = urlsplit(urls[0] if urls else "")
        loud = show_error or not silent
        if url.hostname not in ("127.0.0.1", "localhost") or url.scheme != "http":
            if loud:
                io.err(f"curl: (7) Failed to connect to {url.hostname} (the fake has no network)\n")
            return 7
        port = url.port or 80
        if port != self.gateway_port or self.gateway_state not in ("active", "activating"):
            if loud:
                io.err(
                    f"curl: (7) Failed to connect to {url.hostname} port {port} after 0 ms: "
                    "Couldn't connect to server\n"
                )
            return 7
        status, body = self._http(url.path)
        if status >= 400 and fail:
            if loud:
                io.err(f"curl: (22) The requested URL returned error: {status}\n")
            return 22
        io.out(body)
        return 0

    def _http(self, path: str) -> tuple[int, bytes]:
        """The gateway's unauthenticated health endpoints."""
        active = self.gateway_state == "active"
        if path == "/healthz":
            return (200, b'{"ok":true,"status":"live"}') if active else (503, b'{"ok":false}')
        if path == "/readyz":
            if active and self.channels_ok:
                return 200, b'{"ready":true}'
            return 503, b'{"ready":false}'
        return 404, b"Not Found"

    def request_pairing(self, channel: str, sender_id: str, code: str, **meta: str) -> None:
        """A stranger messaged the bot: a pending request, as the real gateway stores it."""
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        self.pairing_requests.setdefault(channel, []).append(
            {
                "id": sender_id,
                "code": code,
                "createdAt": now,
                "lastSeenAt": now,
                "meta": {**meta, "accountId": "default"},
            }
        )

    def _pairing(self, args: list[str], io: _IO) -> int:
        """`openclaw pairing list <channel> --json` and `openclaw pairing approve <channel>
        <CODE> [--notify]`, answering as the pinned release does."""
        words = [a for a in args if not a.startswith("--")]
        if words[:1] == ["list"] and len(words) == 2 and "--json" in args:
            channel = words[1]
            listing = {"channel": channel, "requests": self.pairing_requests.get(channel, [])}
            io.out(orjson.dumps(listing, option=orjson.OPT_INDENT_2) + b"\n")
            return 0
        if words[:1] == ["approve"] and len(words) == 3:
            channel, code = words[1], words[2]
            pending = self.pairing_requests.get(channel, [])
            found = next((r for r in pending if r["code"] == code), None)
            if found is None:
                io.err(f"Error: No pending pairing request found for code: {code}\n")
                return 1
            pending.remove(found)
            self.pairing_allowed.setdefault(channel, []).append(found["id"])
            io.out(f"Approved {channel} sender {found['id']}.\n")
            return 0
        io.err(f"fake openclaw: unsupported pairing command {' '.join(args)!r}\n")
        return 1

    def _openclaw(self, args: list[str], io: _IO) -> int:
        if args in (["--version"], ["-V"]):
            io.out(f"OpenClaw {OPENCLAW_VERSION} (fake)\n")
            return 0
        if args[:1] == ["pairing"]:
            return self._pairing(args[1:], io)
        if not args or args[0] != "health":
            io.err(f"fake openclaw: unsupported command {' '.join(args)!r}\n")
            return 1
        as_json = "--json" in args
        if self.gateway_state != "active":
            message = f"Gateway not reachable at ws://127.0.0.1:{self.gateway_port}"
            if as_json:
                io.out(orjson.dumps({"ok": False, "error": message}) + b"\n")
            io.err(message + "\n")
            return 1
        channels = (self.gateway_config or {}).get("channels") or {}
        report = {
            "ok": self.channels_ok,
            "gateway": {"reachable": True, "port": self.gateway_port},
            "channels": {
                name: {"configured": True, "ok": self.channels_ok}
                for name, block in channels.items()
                if isinstance(block, dict) and block.get("enabled", True)
            },
        }
        io.out(orjson.dumps(report) + b"\n" if as_json else f"ok={report['ok']}\n".encode())
        return 0 if self.channels_ok else 1

    async def _journalctl(
        self, args: list[str], process: asyncssh.SSHServerProcess[bytes], io: _IO
    ) -> int:
        unit, lines, follow = None, None, False
        items = iter(args)
        try:
            for arg in items:
                if arg in ("-u", "--unit"):
                    unit = next(items)
                elif arg.startswith("--unit="):
                    unit = arg.split("=", 1)[1]
                elif arg in ("-n", "--lines"):
                    lines = int(next(items))
                elif arg.startswith("--lines="):
                    lines = int(arg.split("=", 1)[1])
                elif arg.startswith("-n") and arg[2:].isdigit():
                    lines = int(arg[2:])
                elif arg in ("-f", "--follow"):
                    follow = True
                elif arg not in ("--no-pager", "-q", "--quiet"):
                    io.err(f"journalctl: unrecognized option '{arg}'\n")
                    return 1
        except (StopIteration, ValueError):
            io.err("journalctl: option needs a numeric or unit argument\n")
            return 1
        mine = unit is not None and unit.removesuffix(".service") == GATEWAY_UNIT
        journal = self.journal if mine else []
        count = lines if lines is not None else (10 if follow else len(journal))
        tail = journal[-count:] if count > 0 else []
        if not follow:
            io.out("".join(f"{line}\n" for line in tail) if tail else "-- No entries --\n")
            return 0
        io.out("".join(f"{line}\n" for line in tail))
        if mine:
            await self._follow(process, io)
        return 0

    async def _follow(self, process: asyncssh.SSHServerProcess[bytes], io: _IO) -> None:
        """Stream new journal lines until the client closes the channel or the server stops."""
        seen = len(self.journal)
        closed = asyncio.ensure_future(process.channel.wait_closed())
        try:
            while self._running and not closed.done():  # bounded by the channel's life
                grew = asyncio.ensure_future(self._journal_grew.wait())
                fresh, seen = self.journal[seen:], len(self.journal)
                if fresh and not io.out("".join(f"{line}\n" for line in fresh)):
                    grew.cancel()
                    break
                await asyncio.wait({closed, grew}, return_when=asyncio.FIRST_COMPLETED)
                grew.cancel()
        finally:
            closed.cancel()


def _max_time(args: list[str]) -> float | None:
    """curl's -m/--max-time, if given."""
    for flag, value in itertools.pairwise(args):
        if flag in ("-m", "--max-time"):
            try:
                return float(value)
            except ValueError:
                return None
    return None


class _IO:
    """One exec request: who runs it, and its stdout/stderr (writes after the client left are
    dropped)."""

    def __init__(
        self, process: asyncssh.SSHServerProcess[bytes], user: str, *, root: bool = False
    ) -> None:
        self.process, self.user = process, user
        self.root = root or user == "root"

    def out(self, data: str | bytes) -> bool:
        return self._write(self.process.stdout, data)

    def err(self, data: str | bytes) -> bool:
        return self._write(self.process.stderr, data)

    @staticmethod
    def _write(stream: asyncssh.SSHWriter[bytes], data: str | bytes) -> bool:
        try:
            stream.write(data.encode() if isinstance(data, str) else data)
        except (OSError, asyncssh.Error):
            return False
        return True


class _Session(asyncssh.SSHServer):
    """Public-key logins only, against the server's current authorized keys."""

    def __init__(self, owner: FakeServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is required for everyone

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        owner = self._owner
        for line in [*owner.authorized_keys, *owner.user_keys.get(username, [])]:
            with contextlib.suppress(asyncssh.KeyImportError):
                if asyncssh.import_public_key(line).public_data == key.public_data:
                    return True
        return False

    def auth_completed(self) -> None:
        self._owner.logins += 1


class _SandboxSFTP(asyncssh.SFTPServer):
    """SFTP confined to the server's home, with the same path mapping as the shell commands."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], owner: FakeServer) -> None:
        super().__init__(chan)
        self._owner = owner
        self._user = str(chan.get_extra_info("username") or "root")

    def map_path(self, path: bytes) -> bytes:
        raw = os.fsdecode(path) or "."
        try:
            local = self._owner.resolve(raw, user=self._user, expand_tilde=False)
        except SandboxEscape:
            raise asyncssh.SFTPPermissionDenied("outside the sandbox") from None
        return os.fsencode(local)

    def reverse_map_path(self, path: bytes) -> bytes:
        root = os.fsencode(os.path.realpath(self._owner.home))
        remote = os.fsencode(self._owner.login_dir(self._user))
        if path == root:
            return remote
        if path.startswith(root + b"/"):
            return remote + path[len(root) :]
        raise asyncssh.SFTPNoSuchFile("File not found")


def _pulse(owner: FakeServer, attribute: str) -> None:
    """Wake everyone waiting on the event, and arm a fresh one for the next change."""
    getattr(owner, attribute).set()
    setattr(owner, attribute, asyncio.Event())


def _echo(args: list[str], io: _IO) -> int:
    io.out(" ".join(args) + "\n")
    return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
