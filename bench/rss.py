"""The daemon's memory: resident set size right after start, and after a Telegram token check
(the first use of aiogram, which the daemon imports only then).

    .venv/bin/python bench/rss.py            # prints and writes bench/results/rss.json

A private PostgreSQL (or $BLITZCLAW_TEST_DATABASE_URL's server), a real `blitzclawd serve` in
its own process, and the fake Telegram on loopback; RSS is read from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench

from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess
from blitzclawd.testing.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "rss.json"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="blitzclawd-rss-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # as root, the embedded cluster runs as an unprivileged user
        async with FakeTelegram() as telegram, proxy_bench.postgres(work) as (dsn, _pid):
            token = telegram.add_bot("rss_bench_bot")
            conn = await asyncpg.connect(dsn)
            try:
                user = await seed.create_user(conn)
                key = new_api_key()
                await conn.execute(
                    "INSERT INTO api_keys (user_id, name, prefix, key_hash) "
                    "VALUES ($1, 'rss', $2, $3)",
                    user,
                    key[:10],
                    hash_key(key),
                )
            finally:
                await conn.close()
            daemon = DaemonProcess(
                work,
                database_url=dsn,
                config_extra=f'[telegram]\napi_url = "{telegram.base_url}"\n',
                name="rss-daemon",
            )
            await daemon.start()
            try:
                async with aiohttp.ClientSession() as session:
                    await daemon.wait_ready(session, deadline=60)
                    assert daemon.proc is not None
                    pid = daemon.proc.pid
                    await asyncio.sleep(2)  # settled: timers ran once, pools filled
                    after_start = rss_mb(pid)
                    async with session.post(
                        daemon.api_url + "/api/channels/telegram/validate",
                        json={"channel_config": {"bot_token": token}},
                        headers={"Authorization": f"Bearer {key}"},
                    ) as resp:
                        body = await resp.json()
                        if resp.status != 200:
                            raise RuntimeError(f"token check: {resp.status} {body}")
                    after_check = rss_mb(pid)
            finally:
                await daemon.stop(deadline=30)
    return {
        "rss_mb_after_start": after_start,
        "rss_mb_after_token_check": after_check,
        "machine": proxy_bench.machine("n/a"),
        "code": proxy_bench.code_version(),
        "command": proxy_bench.command_line(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    result = uvloop.run(run())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
