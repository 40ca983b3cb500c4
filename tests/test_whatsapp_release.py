"""The WhatsApp commands the daemon runs, answered by the pinned release itself (issue 13): a
real OpenClaw gateway with our generated WhatsApp config and the pinned `@openclaw/whatsapp`
plugin installed, on loopback. It is ready (`/readyz` 200) with no phone linked, so an unlinked
instance is active, not an error; and `plugins/whatsapp/gateway.py` parses what the release's
CLI prints for `gateway call web.login.start|wait`, `channels status --json` and `channels
logout` (no network here: the login itself fails to reach WhatsApp, as the release says)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from openclaw_tool import OpenClaw, ensure_openclaw, ensure_plugins_home, with_plugins
from openclaw_tool import write_instance as write_home

from blitzclawd.fleet.openclaw_config import (
    GATEWAY_PORT,
    OwnKey,
    build_config,
    render_config,
    split_secrets,
)
from blitzclawd_plugins.whatsapp import gateway, whatsapp_channel

pytestmark = pytest.mark.timeout(1800)  # a first run installs OpenClaw and the plugin


@dataclass
class _Done:
    exit_status: int
    stdout: str
    stderr: str


class LocalShell:
    """What the daemon's SSH session is to plugins/whatsapp/gateway.py (`run(command)`), on
    this machine, with `openclaw` the pinned release for the instance whose home is `home`."""

    def __init__(self, tool: OpenClaw, home: Path, bin_dir: Path) -> None:
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "OPENCLAW_STATE_DIR": str(home / ".openclaw"),
            "OPENCLAW_CONFIG_PATH": str(home / ".openclaw/openclaw.json"),
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "NO_COLOR": "1",
        }
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "openclaw"
        shim.write_text(f'#!/bin/sh\nexec "{tool.node}" "{tool.cli}" "$@"\n')
        shim.chmod(0o755)
        self.home = home

    @contextlib.asynccontextmanager
    async def create_process(self, command: str, **_: object) -> AsyncIterator[_Process]:
        """Like asyncssh's: stdout read as text as it comes, the exit status at the end."""
        proc = await asyncio.create_subprocess_shell(
            command,
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield _Process(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


class _Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.stdout = self
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    async def read(self, n: int) -> str:
        assert self._proc.stdout is not None
        data = await self._proc.stdout.read(n)
        return self._decoder.decode(data, final=not data)

    def kill(self) -> None:
        self._proc.kill()

    async def wait(self, check: bool = False) -> _Done:
        return _Done(await self._proc.wait(), "", "")


@contextlib.asynccontextmanager
async def running_gateway(shell: LocalShell) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        "openclaw",
        "gateway",
        "run",
        env=shell.env,
        cwd=shell.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def ready(deadline: float) -> dict:
    """/readyz's answer once it is 200, as the deploy waits for it (bounded by `deadline`)."""
    url = f"http://127.0.0.1:{GATEWAY_PORT}/readyz"
    async with aiohttp.ClientSession() as http, asyncio.timeout(deadline):
        while True:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return await response.json(content_type=None)
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)  # the gateway takes seconds to boot; nothing to wait on


async def test_the_release_answers_the_whatsapp_commands_we_run(tmp_path: Path) -> None:
    tool = await asyncio.to_thread(ensure_openclaw)
    installed = await asyncio.to_thread(ensure_plugins_home, tool)
    cfg = build_config(
        gateway_token="gw_" + "k" * 30,
        channel=whatsapp_channel(),
        own_key=OwnKey("anthropic", "sk-ant-api03-" + "x" * 20, "claude-sonnet-4-5"),
    )
    config, secrets = split_secrets(cfg)
    home = write_home(tmp_path / "home", render_config(config), render_config(secrets))
    with_plugins(home, installed)
    shell = LocalShell(tool, home, tmp_path / "bin")

    async with running_gateway(shell):
        # Ready with nothing linked: the deploy's wait ends and the instance is active.
        assert (await ready(300))["ready"] is True

        link = await gateway.status(shell)  # type: ignore[arg-type]
        assert link == gateway.LinkStatus(linked=False, connected=False, phone=None)

        answer = await gateway.wait_login(shell, current=gateway.NO_QR, seconds=1)  # type: ignore[arg-type]
        assert answer == gateway.LoginAnswer("No active WhatsApp login in progress.")

        # The plugin loaded (trusted), so the provider is there; WhatsApp itself is unreachable.
        answer = await gateway.start_login(shell, force=False)  # type: ignore[arg-type]
        assert answer.qr_data_url is None and not answer.connected
        assert answer.message.startswith("WhatsApp login failed"), answer

        said = await gateway.logout(shell)  # type: ignore[arg-type]
        assert "No saved auth was cleared for whatsapp/default" in said
