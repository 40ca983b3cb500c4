"""The floor under the proxy's added latency: a bare aiohttp relay (no auth, database, metering).

Starts the fake upstream and a minimal aiohttp pass-through (each in its own process), then
sends 1,000 sequential streaming requests (after 200 warm-up) to each and prints p50/p99.

    .venv/bin/python bench/relay_floor.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp

from blitzclawd.testing.daemon_process import free_port

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "stream": True,
    "messages": [{"role": "user", "content": "x" * 4000}],
}
KEY = {"x-api-key": "sk-ant-fake-master", "anthropic-version": "2023-06-01"}

RELAY = """
import sys, aiohttp, uvloop
from aiohttp import web
upstream, port = sys.argv[1], int(sys.argv[2])
async def make():
    session = aiohttp.ClientSession(auto_decompress=False)
    async def relay(req):
        raw = await req.read()
        headers = {"x-api-key": "sk-ant-fake-master", "anthropic-version": "2023-06-01",
                   "content-type": "application/json"}
        async with session.post(upstream + "/v1/messages", data=raw, headers=headers) as r:
            resp = web.StreamResponse(status=r.status,
                                      headers={"content-type": r.headers["content-type"]})
            await resp.prepare(req)
            async for chunk in r.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    app = web.Application()
    app.router.add_post("/v1/messages", relay)
    return app
uvloop.install()
web.run_app(make(), host="127.0.0.1", port=port, access_log=None, print=None)
"""


async def measure(http: aiohttp.ClientSession, url: str, headers: dict) -> tuple[float, float]:
    latencies = []
    for i in range(1200):
        started = time.perf_counter()
        async with http.post(url + "/v1/messages", json=BODY, headers=headers) as resp:
            await resp.read()
        if i >= 200:
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


async def run(upstream: str, relay_port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # bounded wait for the relay to listen
            try:
                async with http.post(f"http://127.0.0.1:{relay_port}/v1/messages", json=BODY):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        direct = await measure(http, upstream, KEY)
        relayed = await measure(http, f"http://127.0.0.1:{relay_port}", {})
    print(f"direct      p50 {direct[0]:.3f} ms  p99 {direct[1]:.3f} ms")
    print(f"bare relay  p50 {relayed[0]:.3f} ms  p99 {relayed[1]:.3f} ms")
    print(f"added       p50 {relayed[0] - direct[0]:.3f} ms  p99 {relayed[1] - direct[1]:.3f} ms")


def main() -> None:
    import uvloop

    up_port, relay_port = free_port(), free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blitzclawd.testing.fake_llm",
            "--port",
            str(up_port),
            "--scenario",
            '{"output_tokens":20,"tokens_per_chunk":4}',
        ],
        stdout=subprocess.PIPE,
    )
    assert fake.stdout is not None
    fake.stdout.readline()  # the fake prints its URL once it listens
    upstream = f"http://127.0.0.1:{up_port}"
    relay = subprocess.Popen([sys.executable, "-c", RELAY, upstream, str(relay_port)])
    try:
        uvloop.run(run(upstream, relay_port))
    finally:
        relay.terminate()
        fake.terminate()
        relay.wait(10)
        fake.wait(10)


if __name__ == "__main__":
    main()
