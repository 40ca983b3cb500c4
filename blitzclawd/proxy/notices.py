"""Answers in the assistant's own voice when the proxy will not forward a request.

At a limit, or when the user's balance cannot pay for a turn, the proxy answers with a short
assistant message in the provider's wire format (a 200, streamed if the request streams) instead
of an HTTP error. Never forwarded, never billed, never counted against a limit.

Why not an error: the clients are the contract, and each turns our errors into silence.
- OpenClaw (2026.9.6) retries a 429 with the server's `retry-after` as its delay when no fallback
  model is configured ("transient same-model retry 1/9 ... reason=rate_limit: delayMs=3511000"):
  at the hourly limit the assistant went quiet for an hour, and said nothing.
- On a 402 OpenClaw records a billing failure against the provider's inline key
  (`usageStats["inline-api-key:blitzclaw"]`, dist/usage-state-*.mjs): it stops calling us for
  10 minutes, doubling per failure up to 24 hours, whatever the balance is by then ("Inline API
  key for provider "blitzclaw" is temporarily disabled after a provider auth/billing failure").
  The record is keyed by provider, not by key, so rotating the key would not clear it. An answer
  that is a success records nothing: the turn after a top-up is answered at once.
- The official SDKs retry 429 and 5xx twice by default and sleep any `retry-after` first (the
  anthropic SDK 2.x has no cap: `_calculate_retry_timeout` in anthropic/_base_client.py; openai
  gives up above 60 s), so an error with the true wait would block a caller for up to an hour.
The user reads the notice in their chat, with what happened, when it ends and what to do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from blitzclawd.proxy.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, ApiSpec

NOTICE_HEADER = "X-BlitzClaw-Notice"  # which refusal the answer stands for (for machines)


@dataclass(frozen=True, slots=True)
class Notice:
    reason: str  # messages_per_hour | tokens_per_day | paused | payment_failed | balance
    text: str


# -- what the user reads ------------------------------------------------------------------------


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M UTC")


def _wait(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    text = f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{text} {rest} minute{'s' if rest != 1 else ''}" if rest else text


def hourly_limit(limit: int, retry_after: float, now: float | None = None) -> Notice:
    now = time.time() if now is None else now
    return Notice(
        "messages_per_hour",
        f"You've reached this hour's limit of {limit} messages, so I can't answer right now. "
        f"I can answer again in about {_wait(retry_after)} (at {_clock(now + retry_after)}).",
    )


def daily_limit(limit: int, retry_after: float, now: float | None = None) -> Notice:
    now = time.time() if now is None else now
    return Notice(
        "tokens_per_day",
        f"You've used today's allowance of {limit:,} tokens, so I can't answer right now. "
        f"It resets at midnight UTC: I can answer again in about {_wait(retry_after)} "
        f"(at {_clock(now + retry_after)}).",
    )


def paused(reason: str | None, topup_url: str) -> Notice:
    if reason == "paused_by_operator":  # not the user's money: topping up would not help
        return Notice(
            "paused",
            "BlitzClaw's operators have paused me for now, so I can't answer. "
            "Contact BlitzClaw support to find out why.",
        )
    if reason == "payment_failed":
        return Notice(
            "payment_failed",
            "Your last BlitzClaw payment didn't go through, so I'm paused. "
            f"Update your payment or top up at {topup_url} and I'll answer again right away.",
        )
    return Notice(
        "paused",
        "Your BlitzClaw balance has run out, so I'm paused. "
        f"Top up at {topup_url} and I'll answer again right away.",
    )


def low_balance(may_cost: int, minimum: int, topup_url: str) -> Notice:
    return Notice(
        "balance",
        "Your BlitzClaw balance is too low for this message "
        f"(it may cost up to ${math.ceil(may_cost / 10_000) / 100:.2f}, and "
        f"${minimum / 1e6:.2f} must stay in your balance). "
        f"Top up at {topup_url} and I'll answer again right away.",
    )


# -- the answer, in each API's wire format ------------------------------------------------------


def respond(
    api: ApiSpec, body: dict[str, Any], model: str, notice: Notice, rid: str
) -> web.Response:
    """The notice as the upstream would have answered: streamed when asked, never billed
    (every usage count is zero)."""
    stream = body.get("stream") is True
    build = _BUILDERS[api.name]
    payload = build(body, model, notice.text, rid, stream)
    headers = {
        NOTICE_HEADER: notice.reason,
        # The id both SDKs expose (e.request_id / response._request_id) and ours.
        api.upstream_id_header: rid,
        "X-BlitzClaw-Request-Id": rid,
    }
    if stream:
        headers["Cache-Control"] = "no-cache"
        return web.Response(body=payload, headers=headers, content_type="text/event-stream")
    return web.Response(body=payload, headers=headers, content_type="application/json")


def _sse(event: str | None, data: Any) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _anthropic(body: dict[str, Any], model: str, text: str, rid: str, stream: bool) -> bytes:
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return orjson.dumps(message)
    start = {**message, "content": [], "stop_reason": None}
    return b"".join(
        (
            _sse("message_start", {"type": "message_start", "message": start}),
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 0},
                },
            ),
            _sse("message_stop", {"type": "message_stop"}),
        )
    )


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if type(n) is int and 1 <= n <= 128 else 1


def _chat(body: dict[str, Any], model: str, text: str, rid: str, stream: bool) -> bytes:
    created = int(time.time())
    ident = f"chatcmpl-{rid}"
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    n = _choices(body)
    if not stream:
        return orjson.dumps(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
        )
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        data: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if with_usage:  # OpenAI sends the key only to a client that asked for usage
            data["usage"] = None
        return _sse(None, data)

    parts = [
        chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(n)
    ]
    parts += [
        chunk([{"index": i, "delta": {"content": text}, "finish_reason": None}]) for i in range(n)
    ]
    parts += [chunk([{"index": i, "delta": {}, "finish_reason": "stop"}]) for i in range(n)]
    if with_usage:
        parts.append(
            _sse(
                None,
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                },
            )
        )
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _responses(body: dict[str, Any], model: str, text: str, rid: str, stream: bool) -> bytes:
    created = int(time.time())
    item_id = f"msg_{rid}"
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    usage = {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    response: dict[str, Any] = {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if not stream:
        return orjson.dumps(response)
    begun = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": begun}),
        ("response.in_progress", {"response": begun}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
        ),
        (
            "response.content_part.added",
            {
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {**part, "text": ""},
            },
        ),
        (
            "response.output_text.delta",
            {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": text},
        ),
        (
            "response.output_text.done",
            {"item_id": item_id, "output_index": 0, "content_index": 0, "text": text},
        ),
        (
            "response.content_part.done",
            {"item_id": item_id, "output_index": 0, "content_index": 0, "part": part},
        ),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": response}),
    ]
    return b"".join(
        _sse(name, {"type": name, "sequence_number": i, **data})
        for i, (name, data) in enumerate(events)
    )


_BUILDERS: dict[str, Callable[[dict[str, Any], str, str, str, bool], bytes]] = {
    ANTHROPIC_MESSAGES.name: _anthropic,
    OPENAI_CHAT.name: _chat,
    "openai-responses": _responses,
}
