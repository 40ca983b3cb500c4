"""Run a real `blitzclawd serve` process for tests and benchmarks, and wait on it with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from blitzclawd.testing.fake_llm import FakeLLM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, *, state_dir: Path, extra: str = "") -> tuple[Path, int, int]:
    """A blitzclawd.toml on free loopback ports; returns (path, api_port, proxy_port)."""
    api_port, proxy_port = free_port(), free_port()
    path.write_text(
        f'[daemon]\nstate_dir = "{state_dir}"\nlog_format = "json"\n'
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
        f'[proxy]\nhost = "127.0.0.1"\nport = {proxy_port}\n{extra}'
    )
    return path, api_port, proxy_port


class DaemonProcess:
    """One `python -m blitzclawd serve` child process; its stderr (the JSON log) goes to a file."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str | None,
        config_extra: str = "",
        env: Mapping[str, str] | None = None,
        name: str = "daemon",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config_path, self.api_port, self.proxy_port = write_config(
            workdir / f"{name}.toml", state_dir=workdir / f"{name}-state", extra=config_extra
        )
        self.log_path = workdir / f"{name}.log"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("BLITZCLAW_")}
        if database_url:
            self._env["BLITZCLAW_DATABASE_URL"] = database_url
        self._env.update(env or {})
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "blitzclawd",
                "--config",
                str(self.config_path),
                "serve",
                env=self._env,
                stdout=log,
                stderr=log,
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def readyz(self, session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]] | None:
        """(status, body) of GET /readyz, or None when nothing answers yet."""
        try:
            async with session.get(
                self.api_url + "/readyz", timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                return resp.status, await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_ready(self, session: aiohttp.ClientSession, deadline: float = 30.0) -> dict:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            answer = await self.readyz(session)
            if answer is not None and answer[0] == 200:
                return answer[1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"daemon not ready within {deadline}s:\n{self.log_text()[-4000:]}")

    async def actor_state(self, session: aiohttp.ClientSession, actor: str) -> str | None:
        answer = await self.readyz(session)
        if answer is None:
            return None
        states = {a["name"]: a["state"] for a in answer[1].get("actors", [])}
        return states.get(actor)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, deadline: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), deadline)

    async def stop(self, deadline: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; safe to call twice."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), deadline)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


def proxying_to(
    fake: FakeLLM,
    workdir: Path,
    *,
    database_url: str,
    name: str = "daemon",
    config_extra: str = "",
) -> DaemonProcess:
    """A daemon whose Anthropic and OpenAI upstreams are `fake`, with the keys `fake` accepts."""
    return DaemonProcess(
        workdir,
        database_url=database_url,
        name=name,
        config_extra=(
            f'[upstream]\nanthropic_url = "{fake.base_url}"\nopenai_url = "{fake.base_url}"\n'
            + config_extra
        ),
        env={
            "BLITZCLAW_ANTHROPIC_API_KEY": fake.anthropic_key,
            "BLITZCLAW_OPENAI_API_KEY": fake.openai_key,
        },
    )
