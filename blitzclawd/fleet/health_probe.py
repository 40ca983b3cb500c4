"""The SSH side of the health monitor, without the database: kept connections and /readyz probes.

A probe tells apart what the gateway said from what we could not find out, because only the
first is evidence for a restart:

    ok          /readyz answered 200 (`seconds` says how long it took: slow is still healthy)
    not_ready   the gateway answered, not ready (curl exit 22: e.g. a broken channel)
    down        nothing listens on the gateway's port (curl exit 7), or the check itself failed
    timeout     the gateway accepted the request but did not answer within the check's time
                (curl exit 28), or the server did not finish the command in time
    unreachable no SSH to the server (connect, login or channel failed, or timed out): our side
                or the network's; a restart could not even be sent

Connections are opened at most `concurrency` at a time (a sweep over 10,000 servers must not
storm them) and kept between sweeps; a dead one is replaced once, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from blitzclawd.fleet import remote

CURL_CONNECT = 7  # nothing listens on the gateway port
CURL_HTTP_ERROR = 22  # -f: the gateway answered with an error status (starting, channel broken)
CURL_TIMEOUT = 28  # --max-time reached: the gateway accepted but did not answer
# The server's own answer may take this much longer than curl's --max-time (SSH round trip).
_SSH_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Probe:
    state: str  # ok | not_ready | down | timeout | unreachable
    detail: str = ""
    seconds: float = 0.0  # how long the gateway took to answer (the probe's wall time)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def gateway_said(self) -> bool:
        """The gateway itself reported itself unhealthy: evidence enough for a restart."""
        return self.state in ("not_ready", "down")


def readyz(max_time: float) -> str:
    return f"curl -fsS --max-time {max(1, round(max_time))} http://127.0.0.1:{remote.GATEWAY_PORT}/readyz"


class Checker:
    def __init__(
        self, client_key: Callable[[], Any], *, connect_timeout: float, concurrency: int
    ) -> None:
        self._client_key = client_key
        self._connect_timeout = connect_timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._conns: dict[remote.Target, asyncssh.SSHClientConnection] = {}
        self.connects = 0  # new SSH connections opened (reuse shows as few)

    @property
    def kept(self) -> int:
        return len(self._conns)

    async def _conn(self, target: remote.Target) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(target)
        if conn is not None and not conn.is_closed():
            return conn
        self._conns.pop(target, None)
        conn = await remote.connect(target, self._client_key(), timeout=self._connect_timeout)
        self.connects += 1
        self._conns[target] = conn
        return conn

    def _drop(self, target: remote.Target) -> None:
        conn = self._conns.pop(target, None)
        if conn is not None:
            conn.close()

    async def _session(self, target: remote.Target, command: str) -> asyncssh.SSHClientProcess[str]:
        """The command started on a kept connection; a stale one (server restarted, idle cut) is
        replaced once. RemoteError when no SSH could be had."""
        for attempt in (1, 2):
            conn = await self._conn(target)  # RemoteError: connect or login failed
            try:
                return await conn.create_process(command)
            except (OSError, asyncssh.Error) as exc:
                self._drop(target)
                if attempt == 2:
                    raise remote.RemoteError(f"ssh: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def probe(self, target: remote.Target, *, timeout: float) -> Probe:  # noqa: ASYNC109
        """/readyz on the server, curl bounded by `timeout`."""
        async with self._sem:
            try:
                async with asyncio.timeout(self._connect_timeout * 2 + _SSH_MARGIN):
                    process = await self._session(target, readyz(timeout))
            except TimeoutError:
                self._drop(target)
                return Probe("unreachable", "no SSH session within the connect timeout")
            except remote.RemoteError as exc:
                return Probe("unreachable", str(exc))
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout + _SSH_MARGIN):
                    result = await process.wait(check=False)
            except TimeoutError:
                # The server took the command and never finished it: the gateway hangs, or the
                # server is overloaded. Not evidence alone (see the monitor); the session is
                # dropped with its connection so that the next probe starts clean.
                process.close()
                self._drop(target)
                return Probe("timeout", f"no answer within {timeout:g}s", timeout)
            except (OSError, asyncssh.Error) as exc:
                self._drop(target)
                return Probe("unreachable", f"ssh: {type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        code = result.exit_status
        err = str(result.stderr or "").strip()[:200]
        if code is None:
            # No exit status: the session or connection was cut mid-check (an sshd restart, a
            # reset, a NAT), or curl was killed by a signal. Nothing the gateway said.
            self._drop(target)
            signal = getattr(result, "exit_signal", None)
            return Probe(
                "unreachable",
                f"the check's SSH session ended without an exit status "
                f"({signal[0] if signal else 'connection lost'})",
                seconds,
            )
        if code == 0:
            return Probe("ok", "", seconds)
        if code == CURL_HTTP_ERROR:
            return Probe("not_ready", f"/readyz failed (curl exit 22): {err}", seconds)
        if code == CURL_CONNECT:
            return Probe("down", f"the gateway is not listening (curl exit 7): {err}", seconds)
        if code == CURL_TIMEOUT:
            return Probe(
                "timeout", f"/readyz did not answer in time (curl exit 28): {err}", seconds
            )
        return Probe("down", f"/readyz check exited {code}: {err}", seconds)

    async def restart(self, target: remote.Target, *, timeout: float) -> str | None:  # noqa: ASYNC109
        """Restart the gateway and wait for /readyz; None when it came back, else why not."""
        async with self._sem:
            try:
                async with asyncio.timeout(timeout + self._connect_timeout):
                    conn = await self._conn(target)
                    await remote.restart_and_wait(conn, timeout=timeout)
            except TimeoutError:
                self._drop(target)
                return f"the restart did not finish within {timeout:g}s"
            except remote.RemoteError as exc:
                return str(exc)
            except (OSError, asyncssh.Error) as exc:
                self._drop(target)
                return f"ssh: {type(exc).__name__}"
        return None

    def retain(self, targets: set[remote.Target]) -> None:
        """Close the connections of servers no longer checked."""
        for target in [t for t in self._conns if t not in targets]:
            self._drop(target)

    async def close(self) -> None:
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()
