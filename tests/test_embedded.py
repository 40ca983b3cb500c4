"""EmbeddedPostgres: a private cluster that belongs to its process and never outlives it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from blitzclawd.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_bindir

try:
    find_bindir()
except EmbeddedPostgresError as exc:
    pytest.skip(f"no PostgreSQL binaries: {exc}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = tempfile.mkdtemp(prefix="blitzclawd-test-embedded-")
    os.chmod(base, 0o755)  # as root, the cluster's unprivileged user must traverse it
    yield Path(base) / "state"
    for pid in postmasters(Path(base) / "state" / "data"):  # a failed test's leftovers
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state first); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"  # an unreaped zombie has exited


def uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:  # a short-lived backend may be gone already
        return None


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def postmasters(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (the postmaster's does)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(data_dir).encode() in argv and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def test_stop_leaves_no_process_behind(state_dir: Path) -> None:
    pg = EmbeddedPostgres(state_dir)
    dsn = await pg.start()
    try:
        assert pg.pid is not None
        family = [pg.pid, *children(pg.pid)]
        assert len(family) > 1  # checkpointer, walwriter, ...
        assert postmasters(pg.data_dir) == [pg.pid]
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "blitzclawd"
            assert await conn.fetchval("SHOW fsync") == "on"
        finally:
            await conn.close()
        if os.geteuid() == 0:  # PostgreSQL cannot run as root; we run it unprivileged
            assert 0 not in {uid(pid) for pid in family}
    finally:
        await pg.stop()
    assert postmasters(pg.data_dir) == []
    assert not [pid for pid in family if alive(pid)]
    assert pg.pid is None
    with pytest.raises(EmbeddedPostgresError, match="not running"):
        _ = pg.dsn
    await pg.stop()  # idempotent


async def test_restart_reuses_the_cluster(state_dir: Path) -> None:
    pg = EmbeddedPostgres(state_dir)
    dsn = await pg.start()
    try:
        assert await pg.start() == dsn  # already running
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        await conn.close()
    finally:
        await pg.stop()
    again = EmbeddedPostgres(state_dir)
    dsn2 = await again.start()
    try:
        assert urlsplit(dsn2).password == urlsplit(dsn).password
        conn = await asyncpg.connect(dsn2)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
        finally:
            await conn.close()
    finally:
        await again.stop()


async def test_password_is_required(state_dir: Path) -> None:
    pg = EmbeddedPostgres(state_dir)
    dsn = await pg.start()
    try:
        url = urlsplit(dsn)
        assert url.hostname == "127.0.0.1" and url.password
        wrong = dsn.replace(f":{url.password}@", ":not-the-password@")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(wrong)
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        hba = (pg.data_dir / "pg_hba.conf").read_text().splitlines()
        rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    finally:
        await pg.stop()


async def test_second_daemon_on_the_same_state_dir_is_refused(state_dir: Path) -> None:
    first = EmbeddedPostgres(state_dir)
    dsn = await first.start()
    try:
        with pytest.raises(EmbeddedPostgresError, match="another blitzclawd daemon"):
            await EmbeddedPostgres(state_dir).start()
        conn = await asyncpg.connect(dsn)  # the first one is unharmed
        await conn.close()
    finally:
        await first.stop()


async def test_starts_after_a_killed_run(state_dir: Path) -> None:
    pg = EmbeddedPostgres(state_dir)
    await pg.start()
    assert pg.pid is not None
    family = [pg.pid, *children(pg.pid)]
    os.kill(pg.pid, signal.SIGKILL)
    await pg.stop()  # reaps the postmaster
    # Its children notice and exit; until then they pin the old shared memory.
    assert await asyncio.to_thread(wait_for, lambda: not any(map(alive, family)))
    assert (pg.data_dir / "postmaster.pid").exists()  # stale
    dsn = await pg.start()
    try:
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        await pg.stop()


_CHILD = """
import asyncio, sys
from pathlib import Path
from blitzclawd.db.embedded import EmbeddedPostgres

async def main():
    pg = EmbeddedPostgres(Path(sys.argv[1]))
    await pg.start()
    print(pg.pid, flush=True)
    await asyncio.Event().wait()  # until SIGKILL

asyncio.run(main())
"""


@contextmanager
def crashed_daemon(state_dir: Path) -> Iterator[int]:
    """Run a daemon that starts a cluster in ``state_dir``, SIGKILL it; yield its postmaster."""
    daemon = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert daemon.stdout is not None
        line = daemon.stdout.readline()
        assert line, "the child could not start its cluster"
        postmaster = int(line)
        assert alive(postmaster)
        daemon.kill()  # no chance to clean up: only PR_SET_PDEATHSIG can stop the cluster
        daemon.wait(timeout=10)
        yield postmaster
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_cluster_dies_with_its_daemon(state_dir: Path) -> None:
    with crashed_daemon(state_dir) as postmaster:
        assert wait_for(lambda: not alive(postmaster) and not postmasters(state_dir / "data"))


async def test_restart_right_after_a_crash(state_dir: Path) -> None:
    # systemd restarts a crashed daemon at once, while the old postmaster may still shut down.
    with crashed_daemon(state_dir) as postmaster:
        pg = EmbeddedPostgres(state_dir)
        dsn = await pg.start()
        try:
            assert not alive(postmaster)
            conn = await asyncpg.connect(dsn)
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
        finally:
            await pg.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
async def test_untraversable_parent_is_named() -> None:
    locked = tempfile.mkdtemp(prefix="blitzclawd-test-locked-")  # 0700, root's
    try:
        with pytest.raises(EmbeddedPostgresError, match=re.escape(locked)):
            await EmbeddedPostgres(Path(locked) / "state").start()
    finally:
        shutil.rmtree(locked, ignore_errors=True)
