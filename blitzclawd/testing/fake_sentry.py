"""A faithful-enough fake of Sentry's ingest endpoint, on 127.0.0.1, for what sentry-sdk sends:
`POST /api/<project>/envelope/` with `X-Sentry-Auth: Sentry sentry_key=<public key>, ...`, a
body (gzip-encoded) of newline-separated JSON: the envelope header, then
per item its header and payload. Events (`type: event`) are kept in `events`; a wrong key is a
401 like Sentry's.

    async with FakeSentry() as sentry:
        dsn = sentry.dsn   # http://<key>@127.0.0.1:<port>/1
"""

from __future__ import annotations

import gzip
import json
import secrets
from typing import Any

from aiohttp import web

from blitzclawd.testing.local_server import LocalHTTPServer


class FakeSentry(LocalHTTPServer):
    def __init__(self) -> None:
        self.key = secrets.token_hex(16)
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []  # every body as received, decompressed

    @property
    def dsn(self) -> str:
        return self.base_url.replace("http://", f"http://{self.key}@") + "/1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{project}/envelope/", self._envelope)
        return app

    async def _envelope(self, request: web.Request) -> web.Response:
        auth = request.headers.get("X-Sentry-Auth", "")
        if f"sentry_key={self.key}" not in auth:
            return web.json_response({"detail": "bad sentry_key"}, status=401)
        body = await request.read()
        if body[:2] == b"\x1f\x8b":  # aiohttp already undoes Content-Encoding; not always
            body = gzip.decompress(body)
        self.raw.append(body)
        pos = body.find(b"\n") + 1 if b"\n" in body else len(body)  # past the envelope header
        while pos < len(body):
            end = body.find(b"\n", pos)
            end = len(body) if end < 0 else end
            line, pos = body[pos:end], end + 1
            if not line.strip():
                continue
            header = json.loads(line)
            length = header.get("length")
            if length is not None:  # a stated length: the payload may hold newlines
                payload, pos = body[pos : pos + length], pos + length + 1
            else:
                end = body.find(b"\n", pos)
                end = len(body) if end < 0 else end
                payload, pos = body[pos:end], end + 1
            if header.get("type") == "event":
                self.events.append(json.loads(payload))
        return web.json_response({"id": "0" * 32})
