"""What the daemon does on a pool server, over SSH with the server's PINNED host key.

Every connection trusts exactly the host key the server reported in its ready callback
(server_pool.ssh_host_key); a server without one is never connected to, and known_hosts is never
None. The login is the `openclaw` user (it owns ~/.openclaw and may restart the gateway unit
through sudo); paths are relative to its home, for SFTP and the shell alike.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import time
from dataclasses import dataclass

import asyncssh

from blitzclawd.fleet.openclaw_config import GATEWAY_PORT

LOGIN_USER = "openclaw"
OPENCLAW_DIR = ".openclaw"
CONFIG_FILE = ".openclaw/openclaw.json"
SECRETS_FILE = ".openclaw/secrets.json"
WORKSPACE_DIR = ".openclaw/workspace"
SOUL_FILE = ".openclaw/workspace/SOUL.md"
RESTART = "sudo -n systemctl restart openclaw-gateway.service"
STOP = "sudo -n systemctl stop openclaw-gateway.service"
READYZ = f"curl -fsS http://127.0.0.1:{GATEWAY_PORT}/readyz"
MAX_LOG_LINES = 5000


class RemoteError(Exception):
    """A step on the server failed; the message names the step, never a secret."""


@dataclass(frozen=True, slots=True)
class Target:
    ip: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA..." as pinned from the ready callback


def known_hosts(target: Target) -> asyncssh.SSHKnownHosts:
    host = target.ip if target.port == 22 else f"[{target.ip}]:{target.port}"
    return asyncssh.import_known_hosts(f"{host} {target.host_key}\n")


async def connect(
    target: Target,
    client_key: asyncssh.SSHKey,
    *,
    timeout: float,  # noqa: ASYNC109
) -> asyncssh.SSHClientConnection:
    if not target.host_key:
        raise RemoteError("the server has no pinned host key yet")
    try:
        return await asyncssh.connect(
            target.ip,
            target.port,
            username=LOGIN_USER,
            client_keys=[client_key],
            known_hosts=known_hosts(target),
            agent_path=None,
            config=None,
            connect_timeout=timeout,
            login_timeout=timeout,
            # A server that froze behind an open TCP connection is noticed (the connection
            # closes after 3 unanswered keepalives) instead of hanging a job forever.
            keepalive_interval=15,
            keepalive_count_max=3,
        )
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"ssh to {target.ip}: {type(exc).__name__}: {exc}") from None


async def run(
    conn: asyncssh.SSHClientConnection, command: str, what: str, stdin: str | None = None
) -> str:
    """`command`'s output; a secret goes in `stdin`, never in the command (ps, logs)."""
    try:
        result = await conn.run(command, check=False, input=stdin)
    except BrokenPipeError:  # e.g. the command was not found, and never read its stdin
        raise RemoteError(f"{what} failed: it ended before reading its input") from None
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"{what} failed: {type(exc).__name__}") from None
    if result.exit_status != 0:
        err = str(result.stderr or "").strip()[:300]
        raise RemoteError(f"{what} failed (exit {result.exit_status}): {err}")
    return str(result.stdout or "")


async def write_instance_files(
    conn: asyncssh.SSHClientConnection, *, config: str, secrets: str, soul: str
) -> None:
    """secrets.json (0600, written first), openclaw.json and the workspace SOUL.md."""
    await run(conn, f"mkdir -p -m 700 {OPENCLAW_DIR} {WORKSPACE_DIR}", "creating ~/.openclaw")
    try:
        async with conn.start_sftp_client() as sftp:
            await _write(sftp, SECRETS_FILE, secrets, 0o600)
            await _write(sftp, CONFIG_FILE, config, 0o600)
            await _write(sftp, SOUL_FILE, soul, 0o644)
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"writing the instance files: {type(exc).__name__}") from None
    await run(conn, f"chmod 600 {SECRETS_FILE} {CONFIG_FILE}", "chmod of the secrets")


async def write_private(conn: asyncssh.SSHClientConnection, path: str, text: str) -> None:
    """One 0600 file (its folder must exist)."""
    try:
        async with conn.start_sftp_client() as sftp:
            await _write(sftp, path, text, 0o600)
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"writing {path}: {type(exc).__name__}") from None


async def _write(sftp: asyncssh.SFTPClient, path: str, text: str, mode: int) -> None:
    attrs = asyncssh.SFTPAttrs(permissions=mode)
    async with sftp.open(path, "w", attrs) as f:
        await f.write(text)
    await sftp.chmod(path, mode)


async def restart_and_wait(
    conn: asyncssh.SSHClientConnection,
    *,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Restart the gateway unit, then poll its /readyz until it answers (bounded by timeout)."""
    await run(conn, RESTART, "restarting the gateway")
    await wait_ready(conn, timeout=timeout)


async def wait_ready(
    conn: asyncssh.SSHClientConnection,
    *,
    timeout: float,  # noqa: ASYNC109
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = await conn.run(READYZ, check=False)
        if result.exit_status == 0:
            return
        if time.monotonic() + delay > deadline:
            raise RemoteError(f"the gateway did not become ready within {timeout:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def journal_command(lines: int, follow: bool) -> str:
    lines = max(1, min(lines, MAX_LOG_LINES))
    return f"journalctl -u openclaw-gateway -n {lines} --no-pager" + (" -f" if follow else "")


# -- DM pairing (the pinned release's `openclaw pairing`; its state: ~/.openclaw/state) ----------

PAIRING_CODE = re.compile(r"[A-HJ-NP-Z2-9]{8}")  # 8 characters, no 0 O 1 I (OpenClaw's codes)


async def pairing_requests(conn: asyncssh.SSHClientConnection, channel: str) -> list[dict]:
    """Pending DM pairing requests of `channel`: id (the sender), code, createdAt, meta."""
    out = await run(
        conn, f"openclaw pairing list {shlex.quote(channel)} --json", "listing pairing requests"
    )
    return parse_pairing_list(out)


def parse_pairing_list(out: str) -> list[dict]:
    """The requests of `openclaw pairing list <channel> --json` (log lines may precede it)."""
    start = out.find("{")
    try:
        listing = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        listing = None
    if not isinstance(listing, dict) or not isinstance(listing.get("requests"), list):
        raise RemoteError("listing pairing requests: no JSON listing in the answer")
    return [r for r in listing["requests"] if isinstance(r, dict)]


async def approve_pairing(conn: asyncssh.SSHClientConnection, channel: str, code: str) -> str:
    """Approve the pending request with `code`: its sender may talk to the assistant from now on
    (the first approval also makes them the command owner); what the release answered."""
    if not PAIRING_CODE.fullmatch(code):
        raise ValueError("code: not a pairing code")
    return await run(
        conn,
        f"openclaw pairing approve {shlex.quote(channel)} {code}",
        "approving the pairing code",
    )


# -- a channel's linked session (keys of a QR-linked phone): backed up, restored, wiped ----------

MAX_SESSION_BYTES = 32 * 1024 * 1024  # Baileys keeps thousands of small key files; never more
MAX_SESSION_FILES = 20_000
DIRECTORY = asyncssh.FILEXFER_TYPE_DIRECTORY


async def read_session(conn: asyncssh.SSHClientConnection, dirs: tuple[str, ...]) -> bytes:
    """Every regular file under `dirs` (relative to the home), as one JSON document; b"" when
    there is none. The server's user owns these files, so they are read as hostile: symlinks
    are skipped (they could point anywhere), sizes are checked before reading (at most
    MAX_SESSION_BYTES in all), and so is the number of files."""
    files: dict[str, str] = {}
    total = 0
    try:
        async with conn.start_sftp_client() as sftp:
            stack = []
            for folder in dirs:
                if await sftp.exists(folder) and (await sftp.lstat(folder)).type == DIRECTORY:
                    stack.append(folder)
            while stack:
                folder = stack.pop()
                for entry in await sftp.readdir(folder):
                    name = entry.filename
                    if name in (".", ".."):
                        continue
                    path = f"{folder}/{name}"
                    kind = entry.attrs.type
                    if len(files) + len(stack) >= MAX_SESSION_FILES:
                        raise RemoteError("the channel's session has too many files to back up")
                    if kind == DIRECTORY:
                        stack.append(path)
                    elif kind == asyncssh.FILEXFER_TYPE_REGULAR:
                        room = MAX_SESSION_BYTES - total
                        if (entry.attrs.size or 0) > room:
                            raise RemoteError("the channel's session is too large to back up")
                        async with sftp.open(path, "rb") as f:
                            data = await f.read(room + 1)
                        if len(data) > room:  # grew since it was listed
                            raise RemoteError("the channel's session is too large to back up")
                        total += len(data)
                        files[path] = base64.b64encode(data).decode()
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"reading the channel's session: {type(exc).__name__}") from None
    return json.dumps(files, sort_keys=True).encode() if files else b""


async def write_session(conn: asyncssh.SSHClientConnection, archive: bytes) -> int:
    """Put back files from :func:`read_session` (private: 0700 folders, 0600 files)."""
    files = json.loads(archive) if archive else {}
    try:
        async with conn.start_sftp_client() as sftp:
            for path, data in sorted(files.items()):
                if path.startswith("/") or ".." in path.split("/"):
                    raise RemoteError("the session backup names a path outside the home")
                parent = path.rpartition("/")[0]
                if parent and not await sftp.isdir(parent):
                    await sftp.makedirs(parent, attrs=asyncssh.SFTPAttrs(permissions=0o700))
                attrs = asyncssh.SFTPAttrs(permissions=0o600)
                async with sftp.open(path, "wb", attrs) as f:
                    await f.write(base64.b64decode(data))
                await sftp.chmod(path, 0o600)
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"restoring the channel's session: {type(exc).__name__}") from None
    return len(files)


async def has_session(conn: asyncssh.SSHClientConnection, dirs: tuple[str, ...]) -> bool:
    try:
        async with conn.start_sftp_client() as sftp:
            for folder in dirs:
                if await sftp.isdir(folder) and [
                    e for e in await sftp.readdir(folder) if e.filename not in (".", "..")
                ]:
                    return True
    except (OSError, asyncssh.Error) as exc:
        raise RemoteError(f"looking for the channel's session: {type(exc).__name__}") from None
    return False


async def remove_session(conn: asyncssh.SSHClientConnection, dirs: tuple[str, ...]) -> None:
    if dirs:
        await run(conn, "rm -rf " + " ".join(shlex.quote(d) for d in dirs), "removing the session")
