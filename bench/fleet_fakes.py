"""The fleet benchmark's fake servers: N FakeHetzner servers in processes of their own.

    async with FakeFleet(10_000, processes=2, public_key=line, workdir=tmp) as fleet:
        fleet.ssh_port, fleet.servers   # [{name, ip, host_key}]: booted, gateways active
        fleet.cpu_s()                   # CPU seconds of all the fake processes, from /proc
        await fleet.stats()             # what each process saw since the last call

Each process (this file run as a script) creates its share of the servers through its own
FakeHetzner's API with our real cloud-init user data (so sudo allows exactly what it allows in
production), waits for every ready call, writes a gateway config and starts the gateway, prints
one JSON line, then answers `stats` lines on stdin until stdin closes (also when the benchmark
dies: nothing is left behind).

Why several processes: each server is a listening socket and, once the monitor connects, an
accepted one, so one process needs two descriptors per server; 10,000 servers do not fit under
a 20,000-descriptor hard limit, and an accept over the limit drops the client's connection
(libuv accepts and closes it at once; the monitor sees `ConnectionLost` and, today, tries a
restart). The servers share one SSH port, which this process holds (bound, not listening), each
process on its own loopback range.

Reported per process: CPU, RSS, descriptors and their limit, SSH connections open, logins,
restart commands received, gateways not active, the worst event-loop lag (how late a 50 ms sleep
woke) and the loop's error reports (a failed accept shows there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from aiohttp import web

from blitzclawd import credentials
from blitzclawd.fleet.cloudinit import render_pool_server
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_hetzner import FakeHetzner

THIS_FILE = Path(__file__).resolve()
ADDRESS_STRIDE = 1 << 16  # each process's loopback range: 65,536 addresses
FDS_PER_SERVER = 2  # its listener and the monitor's connection
FD_RESERVE = 500  # the API and the ready endpoint with their kept-alive connections, stdio
_TICK = os.sysconf("SC_CLK_TCK")


# -- process measurements (any pid, from /proc) ---------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Raise this process's descriptor soft limit to the hard one; (soft, hard) after."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def max_servers_per_process(hard_limit: int) -> int:
    return max(1, (hard_limit - FD_RESERVE) // FDS_PER_SERVER)


# -- the parent's side ----------------------------------------------------------------------------


class FakeFleet:
    """`servers` fake servers split over `processes` child processes sharing one SSH port."""

    def __init__(self, servers: int, *, processes: int, public_key: str, workdir: Path) -> None:
        self.count, self.processes = servers, processes
        self.public_key, self.workdir = public_key, workdir
        self.ssh_port = 0
        self.servers: list[dict[str, str]] = []
        self.setup: list[dict[str, Any]] = []  # per process: pid, seconds, fd limit, loop lag
        self._claim: socket.socket | None = None
        self._procs: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids)

    async def __aenter__(self) -> FakeFleet:
        # Holding 127.0.0.1:P keeps any wildcard listener off the port all fakes listen on.
        self._claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._claim.bind(("127.0.0.1", 0))
        self.ssh_port = self._claim.getsockname()[1]
        try:
            shares = [self.count // self.processes] * self.processes
            for k in range(self.count % self.processes):
                shares[k] += 1
            for k, share in enumerate(shares):
                self._procs.append(await self._spawn(k, share))
            if max(shares) > ADDRESS_STRIDE * 250 // 256:  # .0 and .255 are skipped
                raise ValueError("more servers in one process than its address range holds")
            # Creating and booting a server takes ~10 ms of a fake's CPU (measured: 10,000 in
            # 91 s); 60 ms each leaves room for a machine busy with other work.
            limit = 60 + max(shares) * 0.06
            async with asyncio.timeout(limit):
                lines = await asyncio.gather(*(self._line(p) for p in self._procs))
            for proc, line in zip(self._procs, lines, strict=True):
                self.servers.extend(line.pop("servers"))
                self.setup.append({"pid": proc.pid, **line})
        except BaseException:
            await self.close(kill=True)  # still creating: they would not read stdin yet
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _spawn(self, k: int, share: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(THIS_FILE),
            "--servers",
            str(share),
            "--first-address",
            str(1 + k * ADDRESS_STRIDE),
            "--ssh-port",
            str(self.ssh_port),
            "--name-prefix",
            f"bc-bench-{k}-",
            "--public-key",
            self.public_key,
            "--workdir",
            str(self.workdir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # the server list is one line
        )

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake servers' process {proc.pid} ended early")
        return orjson.loads(line)

    async def stats(self) -> list[dict[str, Any]]:
        """Each process's figures; the loop lag and errors are those since the last call."""

        async def one(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdin is not None
            proc.stdin.write(b"stats\n")
            await proc.stdin.drain()
            line = await self._line(proc)
            # Read from here: a process out of descriptors cannot open its own /proc files.
            return {**line, "pid": proc.pid, "fds": open_fds(proc.pid), "rss_mb": rss_mb(proc.pid)}

        async with asyncio.timeout(120):
            return list(await asyncio.gather(*map(one, self._procs)))

    async def close(self, *, kill: bool = False) -> None:
        """Close stdin (each process then stops its servers and ends); kill what lingers."""
        for proc in self._procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        for proc in self._procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.1 if kill else 120)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if self._claim is not None:
            self._claim.close()
            self._claim = None


# -- one fake process -------------------------------------------------------------------------


class _Watch:
    """The loop's lag (how late a 50 ms sleep wakes) and its error reports, between stats."""

    PERIOD = 0.05

    def __init__(self) -> None:
        self.lag_max = 0.0
        self.stalls = 0  # wake-ups more than a second late
        self.errors = 0
        self.error_samples: list[str] = []

    async def run(self) -> None:
        while True:  # cancelled when the process ends
            t0 = time.monotonic()
            await asyncio.sleep(self.PERIOD)
            lag = time.monotonic() - t0 - self.PERIOD
            self.lag_max = max(self.lag_max, lag)
            self.stalls += lag > 1.0

    def on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            exc = context.get("exception")
            self.error_samples.append(f"{context.get('message')}: {exc!r}"[:300])

    def take(self) -> dict[str, Any]:
        out = {
            "loop_lag_max_s": round(self.lag_max, 3),
            "loop_stalls_over_1s": self.stalls,
            "loop_errors": self.errors,
            "loop_error_samples": self.error_samples,
        }
        self.lag_max, self.stalls, self.errors, self.error_samples = 0.0, 0, 0, []
        return out


async def serve(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    watch = _Watch()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(watch.on_error)
    watcher = asyncio.create_task(watch.run())
    ready: dict[str, str] = {}
    all_ready = asyncio.Event()

    async def on_ready(request: web.Request) -> web.Response:
        body = await request.json()
        ready[body["server_name"]] = body["host_key"]
        if len(ready) >= args.servers:
            all_ready.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/ready", on_ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fakes-", dir=args.workdir) as root:
        fake = FakeHetzner(
            root=Path(root),
            rate_limit=10**9,
            boot_delay=0,
            ssh_port=args.ssh_port,
            first_address=args.first_address,
        )
        async with fake:
            await _create(fake, args, f"http://127.0.0.1:{port}/ready")
            async with asyncio.timeout(600):
                await all_ready.wait()
            servers = []
            for server in fake.servers.values():
                ssh = server.ssh
                (ssh.home / ".openclaw").mkdir(parents=True, exist_ok=True)
                (ssh.home / ".openclaw/openclaw.json").write_text('{"gateway":{"mode":"local"}}')
                ssh._start_gateway()
                key = " ".join(ready[server.name].split()[:2])
                servers.append({"name": server.name, "ip": server.ipv4, "host_key": key})
            _say(
                {
                    "servers": servers,
                    "setup_s": round(time.monotonic() - t0, 2),
                    "nofile": nofile,
                    **watch.take(),
                }
            )
            stdin = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
            while await stdin.readline():  # one `stats` line each; EOF ends it
                _say(_stats(fake, nofile, watch))
        watcher.cancel()
    await runner.cleanup()


async def _create(fake: FakeHetzner, args: argparse.Namespace, ready_url: str) -> None:
    """Every server through the API, as the pool manager creates them, 50 requests at once.

    50 workers, not a task per server: rendering 10,000 user data up front would stall the loop
    for longer than the first requests' connect timeout."""
    headers = {"Authorization": f"Bearer {fake.token}"}
    todo = iter(range(args.servers))

    async def worker(http: aiohttp.ClientSession) -> None:
        for i in todo:  # shared: each index is taken once
            name = f"{args.name_prefix}{i:05d}"
            user_data = render_pool_server(
                server_name=name,
                server_secret=credentials.new_secret(),
                ready_url=ready_url,
                api_host_cidr="127.0.0.1/32",
                ssh_authorized_key=args.public_key,
            )
            payload = {
                "name": name,
                "server_type": "cx23",
                "image": "debian-12",
                "location": "fsn1",
                "user_data": user_data,
                "labels": {"service": "blitzclaw"},
            }
            url = f"{fake.base_url}/v1/servers"
            async with http.post(url, json=payload, headers=headers) as r:
                assert r.status == 201, await r.text()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(50)))


def _stats(fake: FakeHetzner, nofile: tuple[int, int], watch: _Watch) -> dict[str, Any]:
    servers = [s.ssh for s in fake.servers.values()]
    return {
        "cpu_s": round(time.process_time(), 2),
        "nofile": nofile,
        "ssh_connections": sum(s.open_connections for s in servers),
        "logins": sum(s.logins for s in servers),
        "restart_commands": sum("systemctl restart" in c for s in servers for c in s.commands),
        "gateways_not_active": sum(s.gateway_state != "active" for s in servers),
        **watch.take(),
    }


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, required=True)
    parser.add_argument("--first-address", type=int, default=1)
    parser.add_argument("--ssh-port", type=int, required=True)
    parser.add_argument("--name-prefix", default="bc-bench-")
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--workdir", type=Path, default=None)
    uvloop.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
