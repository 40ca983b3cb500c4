"""FakeServer over real SSH on loopback: sandboxed SFTP and commands, the gateway, journal, auth."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from blitzclawd.testing.fake_server import FakeServer

CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")
CONFIG = {"meta": {}, "gateway": {"mode": "local", "port": 18789, "bind": "loopback"}}
READYZ = "curl -fsS http://127.0.0.1:18789/readyz"


def public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode()


async def connect(
    server: FakeServer,
    key: asyncssh.SSHKey = CLIENT_KEY,
    host_key: str | None = None,
    username: str = "root",
) -> asyncssh.SSHClientConnection:
    line = host_key or server.host_key_line
    return await asyncssh.connect(
        server.host,
        server.port,
        username=username,
        client_keys=[key],
        known_hosts=asyncssh.import_known_hosts(f"[{server.host}]:{server.port} {line}"),
        agent_path=None,
        config=None,
    )


@asynccontextmanager
async def running(
    home: Path, **kwargs: Any
) -> AsyncIterator[tuple[FakeServer, asyncssh.SSHClientConnection]]:
    async with FakeServer(
        "bc-test", "127.0.0.1", 0, home=home, authorized_keys=[public(CLIENT_KEY)], **kwargs
    ) as server:
        async with await connect(server) as conn:
            yield server, conn


async def sh(conn: asyncssh.SSHClientConnection, command: str) -> tuple[int, str, str]:
    result = await conn.run(command)
    return result.exit_status, str(result.stdout), str(result.stderr)


async def write_config(conn: asyncssh.SSHClientConnection, text: str) -> None:
    async with conn.start_sftp_client() as sftp:
        await sftp.makedirs(".openclaw", exist_ok=True)
        async with sftp.open(".openclaw/openclaw.json", "w") as f:
            await f.write(text)


async def test_sftp_writes_and_reads_inside_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home) as (_, conn), conn.start_sftp_client() as sftp:
        assert await sftp.realpath(".") == "/root"  # the login directory, as on Hetzner
        await sftp.makedirs(".openclaw/workspace")
        async with sftp.open(".openclaw/workspace/SOUL.md", "w") as f:
            await f.write("# Soul\n")
        async with sftp.open("/root/.openclaw/secrets.env", "w") as f:  # absolute, same place
            await f.write("TOKEN=x\n")
        await sftp.chmod(".openclaw/secrets.env", 0o600)
        async with sftp.open("/root/.openclaw/workspace/SOUL.md") as f:
            assert await f.read() == "# Soul\n"
        assert sorted(await sftp.listdir(".openclaw")) == [".", "..", "secrets.env", "workspace"]
        await sftp.mkdir("~")  # SFTP does not expand ~: a literal directory, like OpenSSH's
    assert (home / ".openclaw/workspace/SOUL.md").read_text() == "# Soul\n"
    assert stat.S_IMODE((home / ".openclaw/secrets.env").stat().st_mode) == 0o600
    assert (home / "~").is_dir()


async def test_escaping_the_home_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    home = tmp_path / "home"
    home.mkdir()
    (home / "link").symlink_to(outside)  # a pre-existing link leading out
    async with running(home) as (_, conn), conn.start_sftp_client() as sftp:
        for path in ("/etc/passwd", "../outside/secret", "/root/../outside/secret", "link/secret"):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open(path)
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.symlink("/etc/passwd", "passwd")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open(str(tmp_path / "new"), "w")
        for command in (
            "cat /etc/passwd",
            "cat ~/../outside/secret",
            "cat link/secret",
            "rm -rf ../outside",
            f"mkdir -p {tmp_path}/escape",
            "chmod 777 /root/../outside",
        ):
            code, _, err = await sh(conn, command)
            assert code == 1 and "outside the sandbox" in err, command
    assert (outside / "secret").read_text() == "host file"
    assert not (tmp_path / "escape").exists()
    assert not (home / "passwd").exists()


async def test_file_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with running(home) as (_, conn):
        assert (await sh(conn, "mkdir -p ~/.openclaw/workspace && chmod 700 ~/.openclaw"))[0] == 0
        assert stat.S_IMODE((home / ".openclaw").stat().st_mode) == 0o700
        (home / ".openclaw/secrets.env").write_text("A=1\n")
        assert await sh(conn, "chmod 600 .openclaw/secrets.env") == (0, "", "")
        assert stat.S_IMODE((home / ".openclaw/secrets.env").stat().st_mode) == 0o600
        assert await sh(conn, "cat /root/.openclaw/secrets.env") == (0, "A=1\n", "")
        code, _, err = await sh(conn, "cat ~/missing")
        assert code == 1 and "No such file or directory" in err
        code, _, err = await sh(conn, "mkdir ~/.openclaw")  # exists, and no -p
        assert code == 1 and "File exists" in err
        code, _, err = await sh(conn, "chmod u+x ~/.openclaw")
        assert code == 1 and "octal" in err
        code, _, err = await sh(conn, "rm ~/.openclaw")
        assert code == 1 and "Is a directory" in err
        # && stops at the first failure, as in a shell
        code, _, _ = await sh(conn, "cat ~/missing && mkdir -p ~/never")
        assert code == 1 and not (home / "never").exists()
        assert (await sh(conn, "rm -rf ~/.openclaw ~/also-missing"))[0] == 0
        assert not (home / ".openclaw").exists()
        (home / "leftover").write_text("x")
        assert (await sh(conn, "rm -rf ~"))[0] == 0  # the contents go, the home stays
        assert home.is_dir() and list(home.iterdir()) == []
        assert await sh(conn, "sudo -n true && echo done") == (0, "done\n", "")


async def test_unknown_commands_and_shell_syntax(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        code, _, err = await sh(conn, "ls -la")
        assert code == 127 and "command not found" in err
        code, _, err = await sh(conn, "cat ~/x | grep y")
        assert code == 2 and "unsupported shell syntax" in err
        code, _, err = await sh(conn, "cat $HOME/x")
        assert code == 2 and "unsupported" in err
        shell = await conn.create_process()  # no command: an interactive shell
        await shell.wait()
        assert shell.exit_status == 1
        assert server.commands[:3] == ["ls -la", "cat ~/x | grep y", "cat $HOME/x"]


async def test_gateway_refuses_bad_configs(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        assert await sh(conn, "systemctl is-active openclaw-gateway") == (3, "inactive\n", "")
        # No config yet (a pool server): the unit's condition keeps it down, and that is no error.
        assert await sh(conn, "systemctl restart openclaw-gateway") == (0, "", "")
        assert await sh(conn, "systemctl is-active openclaw-gateway") == (3, "inactive\n", "")
        assert "unmet condition check" in server.journal[-1]
        for text in ("{not json", json.dumps({"gateway": {"mode": "remote"}}), "[]"):
            await write_config(conn, text)
            # Type=simple: the restart job succeeds; the gateway then exits 78
            assert await sh(conn, "systemctl restart openclaw-gateway") == (0, "", "")
            assert await sh(conn, "systemctl is-active openclaw-gateway") == (3, "failed\n", "")
            assert "status=78/CONFIG" in server.journal[-2]
            code, _, err = await sh(conn, READYZ)
            assert code == 7 and "Couldn't connect" in err
        code, out, _ = await sh(conn, "openclaw health --json")
        assert code == 1 and json.loads(out)["ok"] is False


async def test_gateway_lifecycle_and_health(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        config = {**CONFIG, "channels": {"telegram": {"enabled": True, "botToken": "1:x"}}}
        await write_config(conn, json.dumps(config))
        assert await sh(conn, "systemctl restart openclaw-gateway.service") == (0, "", "")
        assert server.gateway_state == "active"
        assert await sh(conn, "systemctl is-active openclaw-gateway") == (0, "active\n", "")
        assert await sh(conn, READYZ) == (0, '{"ready":true}', "")
        assert (await sh(conn, "curl -fsS http://127.0.0.1:18789/healthz"))[0] == 0
        code, out, _ = await sh(conn, "openclaw health --json")
        assert code == 0
        assert json.loads(out)["channels"] == {"telegram": {"configured": True, "ok": True}}
        assert await sh(conn, "openclaw --version") == (0, "OpenClaw 2026.9.6 (fake)\n", "")

        server.channels_ok = False  # a broken channel: alive but not ready
        code, _, err = await sh(conn, READYZ)
        assert code == 22 and "503" in err
        server.channels_ok = True

        server.crash()
        assert await sh(conn, "systemctl is-active openclaw-gateway") == (3, "failed\n", "")
        assert (await sh(conn, READYZ))[0] == 7
        assert (await sh(conn, "systemctl restart openclaw-gateway && " + READYZ))[0] == 0

        assert await sh(conn, "systemctl stop openclaw-gateway") == (0, "", "")
        assert server.gateway_state == "inactive"
        assert (await sh(conn, READYZ))[0] == 7
        assert await sh(conn, "systemctl try-restart openclaw-gateway") == (0, "", "")
        assert server.gateway_state == "inactive"  # try-restart leaves a stopped unit alone
        code, _, err = await sh(conn, "systemctl restart nginx")
        assert code == 5 and "not found" in err

        moved = {**CONFIG, "gateway": {"mode": "local", "port": 18800}}
        await write_config(conn, json.dumps(moved))
        assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
        assert (await sh(conn, READYZ))[0] == 7  # nothing on the default port any more
        assert (await sh(conn, "curl -fsS http://127.0.0.1:18800/readyz"))[0] == 0


async def test_gateway_start_delay(tmp_path: Path) -> None:
    # A start that takes an hour, ended by the test: nothing here depends on timing.
    async with running(tmp_path / "home", gateway_start_delay=3600) as (server, conn):
        await write_config(conn, json.dumps(CONFIG))
        assert (await sh(conn, "systemctl restart openclaw-gateway"))[0] == 0
        assert await sh(conn, "systemctl is-active openclaw-gateway") == (3, "activating\n", "")
        code, _, err = await sh(conn, READYZ)
        assert code == 22 and "503" in err
        waiter = asyncio.ensure_future(server.wait_gateway("active"))
        server.finish_start()
        async with asyncio.timeout(10):
            await waiter
        assert await sh(conn, READYZ) == (0, '{"ready":true}', "")


async def test_journal_tail_and_follow(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        await write_config(conn, json.dumps(CONFIG))
        await sh(conn, "systemctl restart openclaw-gateway")
        code, out, _ = await sh(conn, "journalctl -u openclaw-gateway -n 2 --no-pager")
        assert code == 0 and out.splitlines() == server.journal[-2:]
        assert "listening on ws://127.0.0.1:18789" in out
        assert (await sh(conn, "journalctl -u nginx -n 5 --no-pager"))[1] == "-- No entries --\n"
        assert (await sh(conn, "journalctl -u openclaw-gateway --bogus"))[0] == 1

        follow = await conn.create_process("journalctl -u openclaw-gateway -n 1 -f --no-pager")
        async with asyncio.timeout(10):
            assert await follow.stdout.readline() == server.journal[-1] + "\n"
            server.log("[telegram] message from 123456789", "openclaw[4242]")
            assert "message from 123456789" in await follow.stdout.readline()
            server.crash()
            assert "status=9/KILL" in await follow.stdout.readline()
            assert "Failed with result 'signal'" in await follow.stdout.readline()
        follow.close()
        async with asyncio.timeout(10):
            await follow.wait_closed()
        # the follower's end on the server is gone: the connection still works
        assert (await sh(conn, "true"))[0] == 0


async def test_stop_ends_followers_and_connections(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        follow = await conn.create_process("journalctl -u openclaw-gateway -f")
        server.log("one line")
        async with asyncio.timeout(10):
            assert "one line" in await follow.stdout.readline()
            await server.stop()
            assert await follow.stdout.readline() == ""  # EOF: the machine went away
        with pytest.raises(OSError):
            await connect(server)


async def test_only_authorized_keys_and_the_pinned_host_key(tmp_path: Path) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    async with running(tmp_path / "home") as (server, conn):
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(server, stranger)
        impostor = public(asyncssh.generate_private_key("ssh-ed25519")).strip()
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await connect(server, host_key=impostor)
        server.authorized_keys.append(public(stranger))  # keys are read at every login
        async with await connect(server, stranger) as other:
            assert (await sh(other, "echo hi"))[1] == "hi\n"
        await sh(conn, "true")
        await sh(conn, "true")
        assert server.logins == 2  # one per connection, however many commands
        assert server.host_key_line.startswith("ssh-ed25519 AAAA")
        assert len(server.host_key_line.split()) == 2


async def test_an_unprivileged_user_needs_the_exact_sudo_rule(tmp_path: Path) -> None:
    rules = [f"/usr/bin/systemctl {verb} openclaw-gateway.service" for verb in ("start", "restart")]
    home = tmp_path / "home"
    async with FakeServer(
        "bc-test",
        "127.0.0.1",
        0,
        home=home,
        user_keys={"openclaw": [public(CLIENT_KEY)]},
        sudo_rules=rules,
    ) as server:
        with pytest.raises(asyncssh.PermissionDenied):  # the key is openclaw's, not root's
            await connect(server)
        async with await connect(server, username="openclaw") as conn:
            async with conn.start_sftp_client() as sftp:
                assert await sftp.realpath(".") == "/home/openclaw"
                await sftp.makedirs("/home/openclaw/.openclaw")
                async with sftp.open("/home/openclaw/.openclaw/openclaw.json", "w") as f:
                    await f.write(json.dumps(CONFIG))
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.open("/root/.bashrc")
            code, _, err = await sh(conn, "systemctl restart openclaw-gateway.service")
            assert code == 1 and "Access denied" in err
            code, _, err = await sh(conn, "sudo systemctl restart openclaw-gateway")  # no .service
            assert code == 1 and "is not allowed to execute" in err
            code, _, err = await sh(conn, "sudo -n systemctl stop openclaw-gateway.service")
            assert code == 1 and "/usr/bin/systemctl stop" in err  # not among the rules
            assert server.gateway_state == "inactive"
            restart = "sudo -n systemctl restart openclaw-gateway.service"
            assert await sh(conn, restart) == (0, "", "")
            assert await sh(conn, "systemctl is-active openclaw-gateway") == (0, "active\n", "")
            assert (await sh(conn, "cat ~/.openclaw/openclaw.json"))[0] == 0
            assert (await sh(conn, "journalctl -u openclaw-gateway -n 1 --no-pager"))[0] == 0
    assert json.loads((home / ".openclaw/openclaw.json").read_text()) == CONFIG
