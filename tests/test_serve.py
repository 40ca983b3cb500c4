"""`blitzclawd serve` as a real process: signals, escalation, several daemons on one database."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from blitzclawd.db.migrate import available
from blitzclawd.testing.daemon_process import DaemonProcess

FAST_SINGLETON = "[supervisor]\nsingleton_poll = 0.2\n"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        await d.stop()


async def eventually(check, deadline: float, what: str):
    """Poll an async predicate until it returns a truthy value, or fail after `deadline` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {deadline}s: {what}")


async def test_sigterm_stops_cleanly_with_exit_zero(
    database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    d = DaemonProcess(tmp_path, database_url=database)
    daemons.append(d)
    await d.start()
    body = await d.wait_ready(http)
    assert body["database"] == "ok"
    assert {a["name"] for a in body["actors"]} >= {"heartbeat", "janitor", "api-listener"}
    d.signal(signal.SIGTERM)
    assert await d.wait_exit(5.0) == 0
    log = d.log_text()
    assert '"msg":"stopped"' in log
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT stopped_at FROM daemons")
    finally:
        await conn.close()
    assert row["stopped_at"] is not None  # the heartbeat's on_stop ran: a clean stop


async def test_sigint_stops_like_sigterm(
    database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    d = DaemonProcess(tmp_path, database_url=database)
    daemons.append(d)
    await d.start()
    await d.wait_ready(http)
    d.signal(signal.SIGINT)
    assert await d.wait_exit(5.0) == 0


async def test_exceeding_the_restart_window_exits_nonzero(
    database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    d = DaemonProcess(
        tmp_path,
        database_url=database,
        config_extra="[supervisor]\nmax_restarts = 2\nwithin = 60.0\nbackoff_base = 0.01\n"
        "backoff_max = 0.05\n",
    )
    daemons.append(d)
    await d.start()
    await d.wait_ready(http)
    # Pull the heartbeat's table away: every restart of it crashes again, as a broken
    # dependency would, until the restart window is exceeded.
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("ALTER TABLE daemons RENAME TO daemons_gone")
    finally:
        await conn.close()
    code = await d.wait_exit(30.0)
    assert code == 70, d.log_text()[-3000:]
    log = d.log_text()
    assert "restart intensity exceeded" in log
    assert "Traceback" in log  # each crash is logged with its traceback


async def test_two_daemons_one_singleton_and_takeover_after_kill(
    database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    a = DaemonProcess(tmp_path, database_url=database, config_extra=FAST_SINGLETON, name="a")
    b = DaemonProcess(tmp_path, database_url=database, config_extra=FAST_SINGLETON, name="b")
    daemons.extend([a, b])
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(a.wait_ready(http), b.wait_ready(http))

    async def janitor_states() -> list[str | None]:
        return [await a.actor_state(http, "janitor"), await b.actor_state(http, "janitor")]

    async def settled() -> list[str | None] | None:
        states = await janitor_states()
        return states if sorted(map(str, states)) == ["running", "standby"] else None

    states = await eventually(settled, 15.0, "exactly one daemon runs the janitor")
    holder, other = (a, b) if states[0] == "running" else (b, a)
    # Stays exactly one for a while: the standby keeps polling but never wins a held lock.
    for _ in range(5):
        assert sorted(map(str, await janitor_states())) == ["running", "standby"]
    holder.signal(signal.SIGKILL)
    await holder.wait_exit(5.0)

    async def other_runs() -> bool:
        return await other.actor_state(http, "janitor") == "running"

    await eventually(other_runs, 10.0, "the surviving daemon takes the singleton over")


async def test_two_daemons_starting_together_on_an_empty_database(
    empty_database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    a = DaemonProcess(tmp_path, database_url=empty_database, name="a")
    b = DaemonProcess(tmp_path, database_url=empty_database, name="b")
    daemons.extend([a, b])
    await asyncio.gather(a.start(), b.start())
    await asyncio.gather(a.wait_ready(http), b.wait_ready(http))
    conn = await asyncpg.connect(empty_database)
    try:
        versions = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
        daemons_seen = await conn.fetchval("SELECT count(*) FROM daemons")
    finally:
        await conn.close()
    assert versions == [m.version for m in available()]
    assert daemons_seen == 2


def _postgres_pids_for(data_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmdline and str(data_dir) in cmdline:
            pids.append(int(entry.name))
    return pids


async def test_zero_config_serve_uses_embedded_postgres(
    request: pytest.FixtureRequest, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    # A state dir the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700).
    state = Path(tempfile.mkdtemp(prefix="blitzclawd-embedded-"))
    os.chmod(state, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    d = DaemonProcess(tmp_path, database_url=None, env={"BLITZCLAW_STATE_DIR": str(state)})
    # Only the ports are configured (so the test never collides with a running daemon).
    d.config_path.write_text(f"[api]\nport = {d.api_port}\n[proxy]\nport = {d.proxy_port}\n")
    daemons.append(d)
    await d.start()
    body = await d.wait_ready(http, deadline=15.0)
    assert body["database"] == "ok"
    assert _postgres_pids_for(state), "the embedded cluster runs under the state dir"
    d.signal(signal.SIGTERM)
    assert await d.wait_exit(5.0) == 0
    assert _postgres_pids_for(state) == []


async def test_systemd_notify_ready_then_stopping(
    database: str, tmp_path: Path, daemons: list, http: aiohttp.ClientSession
) -> None:
    import socket

    sock_dir = Path(tempfile.mkdtemp(prefix="bc-notify-"))  # short: AF_UNIX paths are limited
    sock_path = sock_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        d = DaemonProcess(tmp_path, database_url=database, env={"NOTIFY_SOCKET": str(sock_path)})
        daemons.append(d)
        await d.start()
        first = await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)
        assert first == b"READY=1"
        answer = await d.readyz(http)
        assert answer is not None and answer[0] == 200  # READY=1 means ready
        d.signal(signal.SIGTERM)
        assert await asyncio.wait_for(loop.sock_recv(sock, 4096), 10) == b"STOPPING=1"
        assert await d.wait_exit(5.0) == 0
    finally:
        sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
