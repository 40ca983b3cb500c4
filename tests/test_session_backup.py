"""A channel's linked session backed up and restored over SFTP (blitzclawd.fleet.remote): the
files round-trip with private modes; and since the server's own user owns them, a hostile tree
(a huge file, a symlink out of the home, too many files) is refused, never read whole."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncssh
import pytest

from blitzclawd.fleet import remote
from blitzclawd.testing.fake_server import FakeServer

KEY = asyncssh.generate_private_key("ssh-ed25519")
DIRS = (".openclaw/credentials/whatsapp",)


async def session(server: FakeServer) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        server.host,
        server.port,
        username="openclaw",
        client_keys=[KEY],
        known_hosts=asyncssh.import_known_hosts(
            f"[{server.host}]:{server.port} {server.host_key_line}"
        ),
        agent_path=None,
        config=None,
    )


async def test_round_trip_and_hostile_trees(tmp_path: Path) -> None:
    public = KEY.export_public_key().decode()
    home = tmp_path / "home"
    async with (
        asyncio.timeout(60),
        FakeServer("bc-s", "127.0.0.1", 0, home=home, authorized_keys=[public]) as server,
    ):
        creds = home / DIRS[0] / "default"
        creds.mkdir(parents=True)
        (creds / "creds.json").write_text('{"me": {"id": "15551234567:1@s.whatsapp.net"}}')
        (creds / "pre-key-1.json").write_bytes(os.urandom(300))
        async with await session(server) as conn:
            archive = await remote.read_session(conn, DIRS)
            assert await remote.has_session(conn, DIRS)
            await remote.remove_session(conn, DIRS)
            assert not (home / DIRS[0]).exists() and not await remote.has_session(conn, DIRS)
            assert await remote.read_session(conn, DIRS) == b""
            assert await remote.write_session(conn, archive) == 2
            assert (creds / "creds.json").read_text().startswith('{"me"')
            assert (creds / "creds.json").stat().st_mode & 0o777 == 0o600
            assert (creds.stat().st_mode & 0o777) == 0o700

            # A file far bigger than any session: refused from its size, not read.
            os.truncate(_touch(creds / "huge.bin"), remote.MAX_SESSION_BYTES + 1)  # sparse
            with pytest.raises(remote.RemoteError, match="too large"):
                await remote.read_session(conn, DIRS)
            (creds / "huge.bin").unlink()

            # A symlink where the session should be leads nowhere (nothing is read through it).
            await remote.remove_session(conn, DIRS)
            (home / ".openclaw/credentials").mkdir(parents=True, exist_ok=True)
            (home / DIRS[0]).symlink_to(tmp_path)
            assert await remote.read_session(conn, DIRS) == b""
            (home / DIRS[0]).unlink()

            # A backup naming a path out of the home is refused before anything is written.
            with pytest.raises(remote.RemoteError, match="outside"):
                await remote.write_session(conn, b'{"../../etc/x": "AA=="}')


def _touch(path: Path) -> Path:
    path.touch()
    return path
