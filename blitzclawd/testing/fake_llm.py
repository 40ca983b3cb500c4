"""A faithful fake of the Anthropic Messages and OpenAI Chat Completions / Responses HTTP APIs.

It speaks the real wire format (bodies, SSE event sequences, usage fields, error shapes, headers)
so a metering proxy can be tested and benchmarked without the real providers:

    async with FakeLLM(scenario=Scenario(output_tokens=40)) as fake:
        base_url = fake.base_url             # point the proxy's upstream here
        fake.set_next(Scenario(status=429))  # the next request is rate limited

A process that cannot reach the object steers each request with the header
`x-fake-scenario: {"output_tokens": 100, "chunk_delay": 0.01}` (fields of Scenario). Run it
standalone with `python -m blitzclawd.testing.fake_llm --port 9000 [--scenario JSON]`;
`GET /_fake/stats` then reports what it received and completed.

Why one module: a fake of one wire format family (Anthropic Messages, OpenAI Chat and Responses)
on one port, sharing scenarios and usage accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from blitzclawd.testing.local_server import LocalHTTPServer

ANTHROPIC_VERSION_HEADER = "anthropic-version"
SCENARIO_HEADER = "x-fake-scenario"
MODELS = ("claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini")
MAX_BODY = 32 * 1024 * 1024  # Anthropic's request size limit; larger bodies get 413

# Every produced token is one word, so `len(text.split())` is the number of output tokens.
_WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()
_TOKENS = tuple(" " + w for w in _WORDS)

_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    413: ("invalid_request_error", None, "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}


@dataclass
class Scenario:
    """How the fake answers one request; set per fake, queued with set_next, or sent as a header."""

    output_tokens: int = 12  # tokens of text to produce (capped by the request's max tokens)
    tokens_per_chunk: int = 4
    # Uncached input tokens; None: len(raw body) // 4. OpenAI's prompt_tokens adds cache reads.
    input_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0  # Anthropic only (OpenAI has no cache writes)
    cache_write_1h_tokens: int = 0
    chunk_delay: float = 0.0  # seconds before each content chunk (non-streaming: summed up)
    # After N content chunks: Anthropic sends `event: error` (overloaded_error) and ends the body;
    # OpenAI ends the body without a final chunk, usage or [DONE] and closes the connection.
    fail_after_chunks: int | None = None
    # After N content chunks the TCP connection closes mid-body (non-streaming: before any answer).
    drop_connection_after_chunks: int | None = None
    status: int = 200  # non-200: the provider's own error body with this status
    retry_after: int = 1  # `retry-after` seconds on a 429
    ping_every: int = 2  # Anthropic: `event: ping` after every N content chunks (0: never)
    delta_repeats_input: bool = True  # Anthropic: final message_delta repeats input/cache counts
    # Server-side tool uses: Anthropic reports them in usage.server_tool_use (web_search_requests,
    # web_fetch_requests); OpenAI Responses as web_search_call / file_search_call output items.
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    file_search_calls: int = 0
    # The tier that served it; None: Anthropic "standard", OpenAI the requested tier or "default".
    service_tier: str | None = None
    # OpenAI audio tokens, parts of prompt_tokens / completion_tokens (their *_details).
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    # Merged into the usage object as is (fields the API may add that we do not know).
    extra_usage: dict[str, Any] | None = None
    # Reasoning tokens produced before the answer when the request enables it (Anthropic
    # `thinking` enabled / adaptive: a thinking block with its signature; OpenAI Chat
    # `reasoning_effort` other than "none": hidden, counted in reasoning_tokens). Billed as output:
    # Anthropic's output_tokens and OpenAI's completion_tokens include them.
    thinking_tokens: int = 16


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body; None when it was empty or not JSON


class _Refusal(Exception):
    """A request the real API refuses; each provider shapes the error body itself."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int = 1,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after


@dataclass(slots=True)
class _Turn:
    """One answer being produced: what it says and what it bills."""

    model: str
    scenario: Scenario
    tokens: int  # after the max-tokens cap
    truncated: bool
    input_tokens: int

    @property
    def n_chunks(self) -> int:
        return -(-self.tokens // max(1, self.scenario.tokens_per_chunk))

    def chunks(self) -> Iterator[str]:
        step = max(1, self.scenario.tokens_per_chunk)
        for start in range(0, self.tokens, step):
            yield _text(start, min(step, self.tokens - start))

    def text(self) -> str:
        return _text(0, self.tokens)


def _text(start: int, count: int) -> str:
    return _words(start % len(_TOKENS), count, start == 0)


@functools.lru_cache(maxsize=4096)  # the words repeat with a short period: chunk texts are few
def _words(phase: int, count: int, first: bool) -> str:
    text = "".join(_TOKENS[(phase + i) % len(_TOKENS)] for i in range(count))
    return text[1:] if first else text


_SLOT = "\x00"  # orjson writes it as "\u0000", which _template splits on


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _sse(event: str | None, obj: Any) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def _template(event: str | None, obj: Any) -> tuple[bytes, ...]:
    """Pre-encode an SSE event once per stream; the hot loop splices values into its slots."""
    return tuple(_sse(event, obj).split(b'"\\u0000"'))


_ANTHROPIC_PING = _sse("ping", {"type": "ping"})


def _streams(body: dict[str, Any]) -> bool:
    """Like the real APIs' lax validation: a truthy 1 or "true" streams as well as true."""
    return body.get("stream") in (True, 1, "true")


_OPENAI_DONE = b"data: [DONE]\n\n"


def _anthropic_thinking(body: dict[str, Any], sc: Scenario) -> int:
    """Thinking tokens an Anthropic request gets (0 unless enabled); refuses what the API does.

    `enabled` needs 1024 <= budget_tokens < max_tokens; `adaptive` lets the model choose (here:
    the scenario's count, within max_tokens); `disabled` or none: no thinking.
    """
    thinking = body.get("thinking")
    if thinking is None:
        return 0
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return 0
    if kind == "adaptive":
        return min(sc.thinking_tokens, max(0, body["max_tokens"] - 1))
    if kind != "enabled":
        raise _Refusal(400, "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
        raise _Refusal(400, "thinking.enabled.budget_tokens: Input should be >= 1024")
    if budget >= body["max_tokens"]:
        raise _Refusal(400, "`max_tokens` must be greater than `thinking.budget_tokens`")
    return min(sc.thinking_tokens, budget)


def _thinking_delta(text: str) -> dict[str, str]:
    return {"type": "thinking_delta", "thinking": text}


class FakeLLM(LocalHTTPServer):
    """An aiohttp server answering like api.anthropic.com and api.openai.com on one port."""

    backlog = 2048  # benchmarks open 1000 streams at once
    anthropic_key: str = "sk-ant-fake-master"
    openai_key: str = "sk-fake-master"

    def __init__(self, *, scenario: Scenario | None = None, record_limit: int = 10_000) -> None:
        self.scenario = scenario or Scenario()
        # Users' own provider keys the fake also accepts (spec "User API Keys"), both APIs.
        self.user_keys: set[str] = set()
        self.requests: list[RecordedRequest] = []
        # 10k recorded OpenClaw bodies (~60 KB JSON each) take GBs: benchmarks pass a lower limit.
        self.record_limit = record_limit
        self.received = 0  # every request, including the ones no longer in `requests`
        self.completed = 0  # 200 answers whose last byte (message_stop, [DONE], ...) was written
        self.base_url = ""
        # A Set-Cookie on every answer, as the real APIs' CDN sends (Cloudflare's __cf_bm).
        self.set_cookie: str | None = None
        self._next: list[Scenario] = []
        self._runner: web.AppRunner | None = None
        reset = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._anthropic_headers = {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "2000000",
            "anthropic-ratelimit-input-tokens-remaining": "2000000",
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": "400000",
            "anthropic-ratelimit-output-tokens-remaining": "400000",
            "anthropic-ratelimit-output-tokens-reset": reset,
            "anthropic-ratelimit-tokens-limit": "2400000",
            "anthropic-ratelimit-tokens-remaining": "2400000",
            "anthropic-ratelimit-tokens-reset": reset,
        }
        self._openai_headers = {
            "openai-version": "2020-10-01",
            "openai-processing-ms": "5",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def set_next(self, *scenarios: Scenario) -> None:
        """Queue one-shot scenarios, consumed in order by the next POSTs to an API endpoint."""
        self._next.extend(scenarios)

    async def _with_cookie(self, _request: web.Request, response: web.StreamResponse) -> None:
        if self.set_cookie is not None:
            response.headers["Set-Cookie"] = self.set_cookie

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY + 1)
        app.on_response_prepare.append(self._with_cookie)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic_count_tokens)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_fake/stats", self._stats)
        return app

    # -- shared plumbing ---------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[Any, int]:
        """Read, parse and record the body; returns it (None if absent or not JSON) and its size."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._record(request, None)
            raise _Refusal(413) from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        return body, len(raw)

    def _record(self, request: web.Request, body: Any) -> None:
        self.received += 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest(request.path, headers, body))
        if len(self.requests) > self.record_limit:
            del self.requests[: len(self.requests) - self.record_limit]

    def _scenario_for(self, request: web.Request) -> Scenario:
        scenario = self._next.pop(0) if self._next else self.scenario
        override = request.headers.get(SCENARIO_HEADER)
        if override:
            try:
                fields = orjson.loads(override)
                scenario = dataclasses.replace(scenario, **fields)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise _Refusal(400, f"{SCENARIO_HEADER}: {exc}") from None
        return scenario

    async def _serve(
        self,
        request: web.Request,
        refuse: Callable[[web.Request, _Refusal], web.Response],
        answer: Callable[[web.Request, Any, Scenario], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            body, size = await self._receive(request)
            scenario = self._scenario_for(request)
            if scenario.input_tokens is None:  # the real count grows with the prompt
                scenario = dataclasses.replace(scenario, input_tokens=size // 4)
            return await answer(request, body, scenario)
        except _Refusal as refusal:
            return refuse(request, refusal)

    def _turn(self, body: dict[str, Any], sc: Scenario, cap: int | None) -> _Turn:
        if sc.status != 200:
            raise _Refusal(sc.status, retry_after=sc.retry_after)
        tokens = sc.output_tokens if cap is None else min(sc.output_tokens, cap)
        return _Turn(body["model"], sc, tokens, tokens < sc.output_tokens, sc.input_tokens or 0)

    async def _send_json(
        self, request: web.Request, turn: _Turn, build: Callable[[], Any], headers: dict[str, str]
    ) -> web.StreamResponse:
        sc = turn.scenario
        if sc.chunk_delay:
            await asyncio.sleep(sc.chunk_delay * turn.n_chunks)  # generation time
        if sc.drop_connection_after_chunks is not None:
            _close(request)
            return web.Response()
        resp = web.Response(body=orjson.dumps(build()), headers=headers)
        resp.content_type = "application/json"
        try:  # written here rather than by aiohttp so `completed` is counted after the last byte
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            return resp
        self.completed += 1
        return resp

    async def _send_stream(
        self,
        request: web.Request,
        turn: _Turn,
        headers: dict[str, str],
        *,
        head: bytes,
        chunk: Callable[[int, str], bytes],
        tail: Callable[[], bytes],
        fail: Callable[[web.StreamResponse], Awaitable[None]],
    ) -> web.StreamResponse:
        """Write head, one write per content chunk, then tail; honours the failure scenarios."""
        sc = turn.scenario
        resp = web.StreamResponse(
            headers={
                **headers,
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            await resp.write(head)
            chunks = list(turn.chunks())
            for i in range(len(chunks) + 1):
                if i == sc.drop_connection_after_chunks:
                    _close(request)
                    return resp
                if i == sc.fail_after_chunks:
                    await fail(resp)
                    return resp
                if i == len(chunks):
                    break
                if sc.chunk_delay:
                    await asyncio.sleep(sc.chunk_delay)
                await resp.write(chunk(i, chunks[i]))
            await resp.write_eof(tail())
        except ConnectionError:  # the client went away: nothing left to finish
            return resp
        self.completed += 1
        return resp

    # -- Anthropic ---------------------------------------------------------------------------

    def _anthropic_refuse(self, request: web.Request, refusal: _Refusal) -> web.Response:
        rid = _new_id("req_")
        kind, default = _ANTHROPIC_ERRORS.get(
            refusal.status,
            ("api_error" if refusal.status >= 500 else "invalid_request_error", "Error"),
        )
        body = {
            "type": "error",
            "error": {"type": kind, "message": refusal.message or default},
            "request_id": rid,
        }
        headers = {**self._anthropic_headers, "request-id": rid}
        if refusal.status == 429:
            headers["retry-after"] = str(refusal.retry_after)
        return web.json_response(body, status=refusal.status, headers=headers, dumps=_dumps)

    def _anthropic_auth(self, request: web.Request) -> None:
        # OpenClaw sends x-api-key; the current anthropic SDK (2.x) sends `Authorization: Bearer`.
        key = request.headers.get("x-api-key")
        if key is None and (auth := request.headers.get("authorization")):
            key = auth.removeprefix("Bearer ").strip()
        if key is None:
            raise _Refusal(401, "x-api-key header is required")
        if key != self.anthropic_key and key not in self.user_keys:
            raise _Refusal(401, "invalid x-api-key")

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._anthropic_refuse, self._anthropic_answer)

    async def _anthropic_count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._anthropic_refuse, self._anthropic_count)

    async def _anthropic_count(
        self, request: web.Request, body: Any, sc: Scenario
    ) -> web.StreamResponse:
        """Anthropic's free counter: like a message request without max_tokens; answers
        {"input_tokens": N} (the scenario's count, else a quarter of the body's bytes)."""
        self._anthropic_auth(request)
        if ANTHROPIC_VERSION_HEADER not in request.headers:
            raise _Refusal(400, "anthropic-version: header is required")
        if not isinstance(body, dict):
            raise _Refusal(400, "There was an error parsing the body of your request as JSON")
        for field, kind, name in (
            ("model", str, "a valid string"),
            ("messages", list, "a valid list"),
        ):
            if field not in body:
                raise _Refusal(400, f"{field}: Field required")
            if not isinstance(body[field], kind):
                raise _Refusal(400, f"{field}: Input should be {name}")
        if sc.status != 200:
            raise _Refusal(sc.status, retry_after=sc.retry_after)
        headers = {**self._anthropic_headers, "request-id": _new_id("req_")}
        return web.json_response(
            {"input_tokens": sc.input_tokens or 0}, headers=headers, dumps=_dumps
        )

    async def _anthropic_answer(
        self, request: web.Request, body: Any, sc: Scenario
    ) -> web.StreamResponse:
        self._anthropic_auth(request)
        if ANTHROPIC_VERSION_HEADER not in request.headers:
            raise _Refusal(400, "anthropic-version: header is required")
        if not isinstance(body, dict):
            raise _Refusal(400, "There was an error parsing the body of your request as JSON")
        for field, kind, name in (
            ("model", str, "a valid string"),
            ("max_tokens", int, "a valid integer"),
            ("messages", list, "a valid list"),
        ):
            if field not in body:
                raise _Refusal(400, f"{field}: Field required")
            if not isinstance(body[field], kind) or isinstance(body[field], bool):
                raise _Refusal(400, f"{field}: Input should be {name}")
        thinking = _anthropic_thinking(body, sc)
        turn = self._turn(body, sc, body["max_tokens"] - thinking)
        rid, msg_id = _new_id("req_"), _new_id("msg_")
        headers = {**self._anthropic_headers, "request-id": rid}
        stop_reason = "max_tokens" if turn.truncated else "end_turn"
        cache = {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": sc.cache_write_5m_tokens + sc.cache_write_1h_tokens,
            "cache_read_input_tokens": sc.cache_read_tokens,
        }
        final: dict[str, Any] = {}  # what only the final usage carries
        if sc.web_search_requests or sc.web_fetch_requests:
            final["server_tool_use"] = {
                "web_search_requests": sc.web_search_requests,
                "web_fetch_requests": sc.web_fetch_requests,
            }
        final.update(sc.extra_usage or {})

        def message(content: list[Any], stop: str | None, output_tokens: int) -> dict[str, Any]:
            return {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    **cache,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": sc.cache_write_5m_tokens,
                        "ephemeral_1h_input_tokens": sc.cache_write_1h_tokens,
                    },
                    "output_tokens": output_tokens,
                    "service_tier": sc.service_tier or "standard",
                    **(final if stop is not None else {}),
                },
            }

        # A thinking block comes first (its text: "" when display is "omitted"), then the text.
        think_text = "" if (body.get("thinking") or {}).get("display") == "omitted" else None
        think_text = _text(0, thinking) if think_text is None else think_text
        signature = base64.b64encode(os.urandom(48)).decode()
        block = {"type": "thinking", "thinking": think_text, "signature": signature}
        blocks = [block] if thinking else []
        at = len(blocks)  # the text block's index
        output_tokens = thinking + turn.tokens

        if not _streams(body):
            return await self._send_json(
                request,
                turn,
                lambda: message(
                    [*blocks, {"type": "text", "text": turn.text()}], stop_reason, output_tokens
                ),
                headers,
            )

        head = _sse("message_start", {"type": "message_start", "message": message([], None, 1)})
        if thinking:
            head += b"".join(
                _sse(kind, {"type": kind, "index": 0, **fields})
                for kind, fields in (
                    (
                        "content_block_start",
                        {"content_block": {"type": "thinking", "thinking": "", "signature": ""}},
                    ),
                    *(
                        [("content_block_delta", {"delta": _thinking_delta(think_text)})]
                        if think_text
                        else []
                    ),
                    (
                        "content_block_delta",
                        {"delta": {"type": "signature_delta", "signature": signature}},
                    ),
                    ("content_block_stop", {}),
                )
            )
        head += (
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": at,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            + _ANTHROPIC_PING
        )
        pre, post = _template(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": at,
                "delta": {"type": "text_delta", "text": _SLOT},
            },
        )
        every = sc.ping_every

        def chunk(i: int, text: str) -> bytes:
            event = pre + orjson.dumps(text) + post
            return event + _ANTHROPIC_PING if every > 0 and (i + 1) % every == 0 else event

        def tail() -> bytes:
            usage: dict[str, Any] = dict(cache) if sc.delta_repeats_input else {}
            usage["output_tokens"] = output_tokens  # cumulative: the total, not an increment
            usage.update(final)
            return (
                _sse("content_block_stop", {"type": "content_block_stop", "index": at})
                + _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": usage,
                    },
                )
                + _sse("message_stop", {"type": "message_stop"})
            )

        async def fail(resp: web.StreamResponse) -> None:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            await resp.write_eof(
                _sse("error", {"type": "error", "error": error, "request_id": rid})
            )

        return await self._send_stream(
            request, turn, headers, head=head, chunk=chunk, tail=tail, fail=fail
        )

    # -- OpenAI ------------------------------------------------------------------------------

    def _openai_refuse(self, request: web.Request, refusal: _Refusal) -> web.Response:
        kind, code, default = _OPENAI_ERRORS.get(
            refusal.status,
            ("server_error" if refusal.status >= 500 else "invalid_request_error", None, "Error"),
        )
        body = {
            "error": {
                "message": refusal.message or default,
                "type": kind,
                "param": refusal.param,
                "code": refusal.code or code,
            }
        }
        headers = {**self._openai_headers, "x-request-id": _new_id("req_")}
        if refusal.status == 429:
            headers["retry-after"] = str(refusal.retry_after)
        return web.json_response(body, status=refusal.status, headers=headers, dumps=_dumps)

    def _openai_auth(self, request: web.Request) -> None:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise _Refusal(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = auth.removeprefix("Bearer ").strip()
        if key != self.openai_key and key not in self.user_keys:
            masked = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            raise _Refusal(401, f"Incorrect API key provided: {masked}.")

    def _openai_check(
        self, request: web.Request, body: Any, messages: bool, cap_fields: tuple[str, ...]
    ) -> int | None:
        """Auth and body checks shared by both OpenAI endpoints; returns the max-tokens cap."""
        self._openai_auth(request)
        if not isinstance(body, dict):
            raise _Refusal(400, "We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str):
            raise _Refusal(400, "you must provide a model parameter", param="model")
        if messages and not isinstance(body.get("messages"), list):
            raise _Refusal(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if body.get("stream_options") is not None and not _streams(body):
            raise _Refusal(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        cap = None
        for field in cap_fields:
            value = body.get(field)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise _Refusal(400, f"Invalid type for '{field}'.", param=field)
                cap = value
        return cap

    def _openai_turn(self, body: dict[str, Any], sc: Scenario, cap: int | None) -> _Turn:
        turn = self._turn(body, sc, cap)
        turn.input_tokens += sc.cache_read_tokens  # OpenAI's input counts include cached tokens
        return turn

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._openai_refuse, self._chat_answer)

    async def _chat_answer(
        self, request: web.Request, body: Any, sc: Scenario
    ) -> web.StreamResponse:
        cap = self._openai_check(request, body, True, ("max_tokens", "max_completion_tokens"))
        effort = body.get("reasoning_effort")
        # Reasoning (hidden in Chat Completions) comes out of the same max_completion_tokens.
        reasoning = 0
        if effort is not None and effort != "none":
            reasoning = sc.thinking_tokens if cap is None else min(sc.thinking_tokens, cap)
        turn = self._openai_turn(body, sc, None if cap is None else cap - reasoning)
        headers = {**self._openai_headers, "x-request-id": _new_id("req_")}
        finish = "length" if turn.truncated else "stop"
        base = {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": turn.model,
            "system_fingerprint": "fp_fake",
        }
        usage = {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.tokens + reasoning,
            "total_tokens": turn.input_tokens + turn.tokens + reasoning,
            "prompt_tokens_details": {
                "cached_tokens": sc.cache_read_tokens,
                "audio_tokens": sc.audio_input_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": sc.audio_output_tokens,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            **(sc.extra_usage or {}),
        }
        base["service_tier"] = _openai_tier(body, sc)
        if not _streams(body):
            message = {"role": "assistant", "content": turn.text(), "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return await self._send_json(
                request, turn, lambda: {**base, "choices": [choice], "usage": usage}, headers
            )

        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        base["object"] = "chat.completion.chunk"
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def event(delta: Any, finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice], **extra}

        head = _sse(None, event({"role": "assistant", "content": "", "refusal": None}, None))
        pre, post = _template(None, event({"content": _SLOT}, None))

        def tail() -> bytes:
            out = _sse(None, event({}, finish))
            if include_usage:
                out += _sse(None, {**base, "choices": [], "usage": usage})
            return out + _OPENAI_DONE

        return await self._send_stream(
            request,
            turn,
            headers,
            head=head,
            chunk=lambda i, text: pre + orjson.dumps(text) + post,
            tail=tail,
            fail=lambda resp: _cut(request, resp),
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._openai_refuse, self._responses_answer)

    async def _responses_answer(
        self, request: web.Request, body: Any, sc: Scenario
    ) -> web.StreamResponse:
        cap = self._openai_check(request, body, False, ("max_output_tokens",))
        if not isinstance(body.get("input", ""), str | list):
            raise _Refusal(400, "Invalid type for 'input'.", param="input")
        turn = self._openai_turn(body, sc, cap)
        headers = {**self._openai_headers, "x-request-id": _new_id("req_")}
        status = "incomplete" if turn.truncated else "completed"
        item_id = _new_id("msg_")
        response: dict[str, Any] = {
            "id": _new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": body.get("background") is True,
            "error": None,
            "incomplete_details": None,
            "max_output_tokens": body.get("max_output_tokens"),
            "model": turn.model,
            "output": [],
            "service_tier": _openai_tier(body, sc),
            "usage": None,
        }
        if body.get("background") is True:
            # Background mode: queued now, the answer (and its usage) fetched later by id.
            return await self._send_json(
                request, turn, lambda: {**response, "status": "queued"}, headers
            )
        # The built-in tool calls the model made before answering, one output item each.
        calls: list[dict[str, Any]] = [
            {
                "id": _new_id("ws_"),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": "lorem ipsum"},
            }
            for _ in range(sc.web_search_requests)
        ] + [
            {
                "id": _new_id("fs_"),
                "type": "file_search_call",
                "status": "completed",
                "queries": ["lorem ipsum"],
                "results": None,
            }
            for _ in range(sc.file_search_calls)
        ]

        def part(text: str) -> dict[str, Any]:
            return {"type": "output_text", "annotations": [], "text": text}

        def item(done: bool) -> dict[str, Any]:
            return {
                "id": item_id,
                "type": "message",
                "status": status if done else "in_progress",
                "role": "assistant",
                "content": [part(turn.text())] if done else [],
            }

        def finished() -> dict[str, Any]:
            return {
                **response,
                "status": status,
                "incomplete_details": {"reason": "max_output_tokens"} if turn.truncated else None,
                "output": [*calls, item(True)],
                "usage": {
                    "input_tokens": turn.input_tokens,
                    "input_tokens_details": {"cached_tokens": sc.cache_read_tokens},
                    "output_tokens": turn.tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": turn.input_tokens + turn.tokens,
                    **(sc.extra_usage or {}),
                },
            }

        if not _streams(body):
            return await self._send_json(request, turn, finished, headers)

        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        head = b"".join(
            _sse(kind, {"type": kind, "sequence_number": seq, **fields})
            for seq, (kind, fields) in enumerate(
                (
                    ("response.created", {"response": response}),
                    ("response.in_progress", {"response": response}),
                    ("response.output_item.added", {"output_index": 0, "item": item(False)}),
                    ("response.content_part.added", {**where, "part": part("")}),
                )
            )
        )
        kind = "response.output_text.delta"
        pre, mid, post = _template(
            kind,
            {"type": kind, **where, "delta": _SLOT, "logprobs": [], "sequence_number": _SLOT},
        )

        def tail() -> bytes:
            text, seq = turn.text(), 4 + turn.n_chunks
            return b"".join(
                _sse(kind, {"type": kind, "sequence_number": seq + offset, **fields})
                for offset, (kind, fields) in enumerate(
                    (
                        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
                        ("response.content_part.done", {**where, "part": part(text)}),
                        ("response.output_item.done", {"output_index": 0, "item": item(True)}),
                        (f"response.{status}", {"response": finished()}),
                    )
                )
            )

        return await self._send_stream(
            request,
            turn,
            headers,
            head=head,
            chunk=lambda i, text: pre + orjson.dumps(text) + mid + str(4 + i).encode() + post,
            tail=tail,
            fail=lambda resp: _cut(request, resp),
        )

    # -- models and stats --------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        anthropic = "x-api-key" in request.headers or ANTHROPIC_VERSION_HEADER in request.headers
        try:
            (self._anthropic_auth if anthropic else self._openai_auth)(request)
        except _Refusal as refusal:
            return (self._anthropic_refuse if anthropic else self._openai_refuse)(request, refusal)
        if anthropic:
            created = "2025-01-01T00:00:00Z"
            data: list[dict[str, Any]] = [
                {"type": "model", "id": m, "display_name": m, "created_at": created} for m in MODELS
            ]
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": MODELS[0],
                "last_id": MODELS[-1],
            }
            headers = {**self._anthropic_headers, "request-id": _new_id("req_")}
        else:
            data = [
                {"id": m, "object": "model", "created": 1735689600, "owned_by": "system"}
                for m in MODELS
            ]
            body = {"object": "list", "data": data}
            headers = {**self._openai_headers, "x-request-id": _new_id("req_")}
        return web.json_response(body, headers=headers, dumps=_dumps)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"received": self.received, "completed": self.completed}, dumps=_dumps
        )


def _openai_tier(body: dict[str, Any], sc: Scenario) -> str:
    """The tier OpenAI reports: the scenario's, else the one asked for, else "default"."""
    if sc.service_tier is not None:
        return sc.service_tier
    asked = body.get("service_tier")
    return asked if asked in ("priority", "flex") else "default"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _close(request: web.Request) -> None:
    """Abrupt close: what was written is flushed, then the body just stops (no final chunk)."""
    if request.transport is not None:
        request.transport.close()


async def _cut(request: web.Request, resp: web.StreamResponse) -> None:
    """OpenAI's mid-stream failure: the body ends with no final chunk, usage or [DONE]."""
    await resp.write_eof()
    _close(request)


async def _main(host: str, port: int, scenario: Scenario) -> None:
    fake = FakeLLM(scenario=scenario, record_limit=100)
    print(await fake.start(host, port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic/OpenAI upstream (loopback only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="{}", help="JSON object of Scenario fields")
    args = parser.parse_args(argv)
    scenario = Scenario(**orjson.loads(args.scenario))
    try:
        import uvloop  # the daemon's loop; the fake should not be the benchmark's bottleneck

        uvloop.run(_main(args.host, args.port, scenario))
    except ImportError:
        asyncio.run(_main(args.host, args.port, scenario))


if __name__ == "__main__":
    main()
