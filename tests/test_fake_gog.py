"""The fake gog on a fake pool server, over real SSH, and the provisioner's steps against it
(blitzclawd.fleet.google_skill): what gogcli refuses, the fake refuses the same way."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken
from test_fake_server import running

from blitzclawd.fleet import google_skill, remote
from blitzclawd.testing.fake_gog import EXIT_CONFIG, NO_PASSWORD

CLIENT_ID = "1-x.apps.googleusercontent.com"
CLIENT = json.dumps({"installed": {"client_id": CLIENT_ID, "client_secret": "s3"}})
GOG = google_skill.GOG
ACCOUNT = google_skill.GoogleAccount(
    email="ada@gmail.test",
    client_id=CLIENT_ID,
    client_secret="GOCSPX-secret",
    refresh_token="1//0refresh",
    scopes=("https://www.googleapis.com/auth/gmail.readonly",),
)


async def test_gog_needs_the_keyring_password_and_the_client_first(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        done = await conn.run(f"{GOG} --no-input auth credentials set -", input=CLIENT)
        assert done.exit_status == 1 and NO_PASSWORD in str(done.stderr)
        assert server.gog.client_id() is None
        (tmp_path / "home/.openclaw").mkdir()
        (tmp_path / "home" / google_skill.ENV_FILE).write_text(google_skill.env_file("pw-1"))
        imported = f"{GOG} --no-input auth import --email a@b.test --services gmail"
        done = await conn.run(f"{imported} --refresh-token-stdin", input="1//0t")
        assert done.exit_status == EXIT_CONFIG and "oauth credentials missing" in str(done.stderr)
        done = await conn.run(f"{GOG} --no-input auth credentials set -", input="{}")
        assert done.exit_status == 2 and server.gog.client_id() is None
        done = await conn.run(f"{GOG} --no-input auth credentials set -", input=CLIENT)
        assert done.exit_status == 0, done.stderr
        done = await conn.run(f"{imported} --refresh-token-stdin", input="1//0t")
        assert done.exit_status == 0, done.stderr
        again = await conn.run(f"{imported} --refresh-token-stdin", input="1//0u")
        assert again.exit_status == 1 and "--force" in str(again.stderr)
        done = await conn.run(f"{GOG} --no-input auth list --json")
        assert json.loads(str(done.stdout)) == {
            "accounts": [{"email": "a@b.test", "services": ["gmail"]}]
        }
        # The keyring opens with its password only.
        with pytest.raises(InvalidToken):
            server.gog.read_item("token:default:a@b.test", "another password")


async def test_the_provisioners_steps_install_and_remove_an_account(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (server, conn):
        (tmp_path / "home/.openclaw").mkdir()
        await google_skill.install(conn, ACCOUNT)
        (account,) = server.gog.accounts()
        assert account["refresh_token"] == "1//0refresh" and account["services"] == ["gmail"]
        env_file = tmp_path / "home" / google_skill.ENV_FILE
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        first = server.gog.env()["GOG_KEYRING_PASSWORD"]
        await google_skill.install(conn, ACCOUNT)  # again: rebuilt under a new password
        assert server.gog.env()["GOG_KEYRING_PASSWORD"] != first
        assert [a["email"] for a in server.gog.accounts()] == ["ada@gmail.test"]
        assert not any("1//0refresh" in c or "GOCSPX" in c for c in server.commands)
        await google_skill.remove(conn)
        assert server.gog.items() == {} and not env_file.exists()
        await google_skill.remove(conn)  # nothing there: still fine


async def test_a_failing_gog_step_names_the_step_not_the_secret(tmp_path: Path) -> None:
    async with running(tmp_path / "home") as (_, conn):
        # No ~/.openclaw: the env file cannot be written.
        with pytest.raises(remote.RemoteError) as failed:
            await google_skill.install(conn, ACCOUNT)
        assert "gateway.env" in str(failed.value) and "1//0refresh" not in str(failed.value)
