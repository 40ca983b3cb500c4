"""A faithful fake of the Telegram Bot API's `getMe`, on 127.0.0.1, for the bots it knows.

    async with FakeTelegram() as telegram:
        token = telegram.add_bot("myai_assistant_bot", "My AI Assistant")
        # settings: [telegram] api_url = telegram.base_url

Wire facts (WIRE.md "Telegram Bot API via aiogram 3"): URLs are `{base}/bot{token}/{method}`;
aiogram POSTs form-encoded bodies. getMe answers `{"ok":true,"result":{"id":…,"is_bot":true,
"first_name":…,"username":…,…}}`; an unknown token `401 {"ok":false,"error_code":401,
"description":"Unauthorized"}`; an unknown method `404 {"ok":false,"error_code":404,
"description":"Not Found"}`. setMyDescription (`description`, at most 512 characters) and
setMyShortDescription (`short_description`, at most 120) answer `{"ok":true,"result":true}`,
`400 Bad Request: ..._INVALID` beyond (kept per bot in `profiles`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web

from blitzclawd.testing.local_server import LocalHTTPServer


@dataclass(frozen=True, slots=True)
class FakeBot:
    id: int
    username: str
    first_name: str


class FakeTelegram(LocalHTTPServer):
    def __init__(self) -> None:
        self.bots: dict[str, FakeBot] = {}  # token -> bot
        self.calls: list[tuple[str, str]] = []  # (method, token) as received
        self.profiles: dict[str, dict[str, str]] = {}  # token -> description, short_description
        self._next_id = 7_000_000_000

    def add_bot(
        self, username: str, first_name: str = "Assistant", *, token: str | None = None
    ) -> str:
        """A bot Telegram knows; its token (`<bot id>:<35 characters>`, as BotFather gives)."""
        self._next_id += 1
        bot_id = int(token.partition(":")[0]) if token else self._next_id
        token = token or f"{bot_id}:AA{secrets.token_urlsafe(25)[:33]}"
        self.bots[token] = FakeBot(bot_id, username, first_name)
        return token

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        return app

    async def _method(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        self.calls.append((method, token))
        form = await request.post() if request.method == "POST" else {}  # form-encoded
        bot = self.bots.get(token)
        if bot is None:
            return _error(401, "Unauthorized")
        limits = {"setmydescription": 512, "setmyshortdescription": 120}
        if method.lower() in limits:
            field = "description" if method.lower() == "setmydescription" else "short_description"
            value = str(form.get(field, ""))
            if len(value) > limits[method.lower()]:
                return _error(400, f"Bad Request: {field.upper()}_INVALID")
            self.profiles.setdefault(token, {})[field] = value
            return web.json_response({"ok": True, "result": True})
        if method.lower() != "getme":
            return _error(404, "Not Found")
        return web.json_response(
            {
                "ok": True,
                "result": {
                    "id": bot.id,
                    "is_bot": True,
                    "first_name": bot.first_name,
                    "username": bot.username,
                    "can_join_groups": True,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                    "can_connect_to_business": False,
                    "has_main_web_app": False,
                },
            }
        )


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": status, "description": description}, status=status
    )
