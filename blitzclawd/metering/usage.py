"""Token usage from upstream responses, streamed (fed event by event) or not.

Tolerant by design: unknown events, pings, missing fields and nulls are ignored; a malformed JSON
payload is skipped. Nothing here raises on upstream data, since a metering bug must never break
the relay.

Each stream meter exposes `usage` (what upstream reported so far), `usage_reported` (upstream's
final usage for the whole response arrived) and `approx_output_tokens` (chars/4 of the generated
text seen), combined by `billable_usage()` so an interrupted stream that produced tokens is never
billed at zero.

Why one module: the three wire formats' usage readers (whole answer and stream meter for
Anthropic Messages, OpenAI Chat Completions and Responses) share the Usage shape, the tolerant
parsing helpers and the unknown-field warning; each pair is ~150 lines and reads best beside
the others, where a difference between the formats shows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import orjson

from blitzclawd.metering.pricing import Usage

log = logging.getLogger("blitzclawd.metering")

_ZERO = Usage()
# Usage fields we do not know, already logged (once per name, per process): what we know of
# such a response is charged; someone must look at what we do not.
_UNKNOWN_SEEN: set[str] = set()


def _check_known(where: str, obj: dict[str, Any], known: frozenset[str]) -> None:
    """Log (once per field name) every field of a usage object we do not price or understand."""
    for k in obj:
        if k not in known:
            name = f"{where}.{k}"
            if name not in _UNKNOWN_SEEN:
                _UNKNOWN_SEEN.add(name)
                log.warning(
                    "unknown usage field: charged for what is known, not for this",
                    extra={"field": name, "value": repr(obj[k])[:80]},
                )


def _count(v: Any) -> int | None:
    """A token counter as a non-negative int; None when absent/null/not a number."""
    if type(v) is int:
        return v if v > 0 else 0
    if type(v) is float and math.isfinite(v):
        return math.ceil(v) if v > 0 else 0  # never seen in practice; round against us
    return None


def _dict(v: Any) -> dict[str, Any]:
    return v if type(v) is dict else {}


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if type(obj) is dict else None


def _approx_tokens(chars: int) -> int:
    return -(-chars // 4)


def _billable(
    usage: Usage, reported: bool, input_known: bool, approx: int, input_tokens_estimate: int
) -> Usage:
    if reported:
        return usage
    output = max(usage.output_tokens, approx)
    if input_known:
        return replace(usage, output_tokens=output)
    if output == 0 and not _has_fees(usage):
        return _ZERO  # nothing was generated: upstream failed before doing work
    return replace(usage, input_tokens=max(input_tokens_estimate, 0), output_tokens=output)


def _has_fees(u: Usage) -> bool:
    return bool(u.web_search_requests or u.web_fetch_requests or u.file_search_calls)


# --- Anthropic Messages -------------------------------------------------------------------------

_A_INPUT_SIDE = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_A_KEYS = ("output_tokens", *_A_INPUT_SIDE)
_A_SPLIT = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
# usage.server_tool_use: uses of Anthropic's server tools, each priced per use (web fetch at 0).
_A_SERVER = ("web_search_requests", "web_fetch_requests")
_A_KNOWN = frozenset(
    {*_A_KEYS, "cache_creation", "server_tool_use", "service_tier", "inference_geo"}
)
_A_SPLIT_KNOWN = frozenset(_A_SPLIT)
_A_SERVER_KNOWN = frozenset(_A_SERVER)
_TIER = "\x00tier"  # the counters dict also keeps the reported service tier (a str) here


def _anthropic_counters(u: dict[str, Any], into: dict[str, Any]) -> None:
    """Copy every counter present in an Anthropic usage object into `into` (last value wins)."""
    _check_known("anthropic.usage", u, _A_KNOWN)
    for k in _A_KEYS:
        n = _count(u.get(k))
        if n is not None:
            into[k] = n
    split = u.get("cache_creation")
    if type(split) is dict:
        _check_known("anthropic.usage.cache_creation", split, _A_SPLIT_KNOWN)
        for k in _A_SPLIT:
            n = _count(split.get(k))
            if n is not None:
                into[k] = n
    server = u.get("server_tool_use")
    if type(server) is dict:
        _check_known("anthropic.usage.server_tool_use", server, _A_SERVER_KNOWN)
        for k in _A_SERVER:
            n = _count(server.get(k))
            if n is not None:
                into[k] = n
    tier = u.get("service_tier")
    if type(tier) is str:
        into[_TIER] = tier


def _anthropic_usage(c: dict[str, Any]) -> Usage:
    w1h = c.get("ephemeral_1h_input_tokens", 0)
    # No breakdown (or one that does not add up): the remainder of the total counts as 5m.
    w5m = max(c.get("ephemeral_5m_input_tokens", 0), c.get("cache_creation_input_tokens", 0) - w1h)
    return Usage(
        input_tokens=c.get("input_tokens", 0),
        output_tokens=c.get("output_tokens", 0),
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
        cache_read_tokens=c.get("cache_read_input_tokens", 0),
        web_search_requests=c.get("web_search_requests", 0),
        web_fetch_requests=c.get("web_fetch_requests", 0),
        service_tier=c.get(_TIER),
    )


def anthropic_usage(body: dict[str, Any]) -> Usage:
    """Usage of a non-streaming /v1/messages response object."""
    c: dict[str, Any] = {}
    _anthropic_counters(_dict(_dict(body).get("usage")), c)
    return _anthropic_usage(c)


# Events worth parsing; the rest (ping, content_block_start/stop, unknown) are skipped unread.
_A_PARSED = frozenset(
    {"content_block_delta", "message_delta", "message_start", "message_stop", "error"}
)
# Text-bearing fields of content_block_delta.delta (text, tool input JSON, thinking).
_A_DELTA_TEXT = ("text", "partial_json", "thinking")


class AnthropicStreamMeter:
    """Feed it every SSE event of a /v1/messages stream: `feed(event_name, data)`."""

    __slots__ = (
        "_chars",
        "_counters",
        "completed",
        "error",
        "model",
        "upstream_id",
        "usage_reported",
    )

    def __init__(self) -> None:
        self._counters: dict[str, Any] = {}
        self._chars = 0
        self.model: str | None = None
        self.upstream_id: str | None = None
        self.completed = False  # message_stop seen
        self.error: dict[str, Any] | None = None  # payload of a mid-stream `event: error`
        self.usage_reported = False  # a message_delta carried usage (cumulative, final-ish)

    def feed(self, event: str, data: bytes) -> None:
        obj: dict[str, Any] | None = None
        if event not in _A_PARSED:
            if event != "message":
                return  # ping, content_block_start/stop, unknown: nothing billable, no parse
            obj = _loads(data)  # no `event:` line (not Anthropic's habit): the type says it
            kind = obj.get("type") if obj is not None else None
            if type(kind) is not str or kind not in _A_PARSED:
                return
            event = kind
        if event == "message_stop":
            self.completed = True
            return
        if obj is None:
            obj = _loads(data)
            if obj is None:
                if event == "error":  # unparseable, but still an error: keep the signal
                    self.error = {"type": "error", "error": {"type": "unparseable_error_event"}}
                return
        if event == "content_block_delta":
            delta = obj.get("delta")
            if type(delta) is dict:
                for k in _A_DELTA_TEXT:
                    s = delta.get(k)
                    if type(s) is str:
                        self._chars += len(s)
        elif event == "message_delta":
            u = obj.get("usage")
            if type(u) is dict:
                _anthropic_counters(u, self._counters)
                self.usage_reported = True
        elif event == "message_start":
            msg = _dict(obj.get("message"))
            _anthropic_counters(_dict(msg.get("usage")), self._counters)
            if type(msg.get("model")) is str:
                self.model = msg["model"]
            if type(msg.get("id")) is str:
                self.upstream_id = msg["id"]
        elif event == "error":
            self.error = obj

    @property
    def usage(self) -> Usage:
        return _anthropic_usage(self._counters)

    @property
    def approx_output_tokens(self) -> int:
        return _approx_tokens(self._chars)

    @property
    def saw_tokens(self) -> bool:
        return any(v for k, v in self._counters.items() if k != _TIER) or self._chars > 0

    def billable_usage(self, input_tokens_estimate: int = 0) -> Usage:
        """Usage to settle: the report when complete, else output at least the text seen."""
        known = any(k in self._counters for k in _A_INPUT_SIDE)
        return _billable(
            self.usage,
            self.usage_reported,
            known,
            self.approx_output_tokens,
            input_tokens_estimate,
        )


# --- OpenAI Chat Completions --------------------------------------------------------------------


# Known usage fields. text/image tokens are parts of the totals billed at the text rates (what
# OpenAI bills image input at on the models priced here); audio tokens have their own rates;
# accepted/rejected prediction tokens are inside completion_tokens.
_O_IN_DETAILS = frozenset({"cached_tokens", "audio_tokens", "text_tokens", "image_tokens"})
_O_OUT_DETAILS = frozenset(
    {
        "reasoning_tokens",
        "audio_tokens",
        "text_tokens",
        "image_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
    }
)
_CHAT_KNOWN = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)
_RESP_KNOWN = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "input_tokens_details",
        "output_tokens_details",
    }
)


def _details(where: str, v: Any, known: frozenset[str]) -> dict[str, Any]:
    d = _dict(v)
    if d:
        _check_known(where, d, known)
    return d


def _tier(v: Any) -> str | None:
    return v if type(v) is str else None


def _chat_usage(u: dict[str, Any], tier: str | None = None) -> Usage:
    _check_known("openai.usage", u, _CHAT_KNOWN)
    prompt = _count(u.get("prompt_tokens")) or 0
    pd = _details(
        "openai.usage.prompt_tokens_details", u.get("prompt_tokens_details"), _O_IN_DETAILS
    )
    cd = _details(
        "openai.usage.completion_tokens_details", u.get("completion_tokens_details"), _O_OUT_DETAILS
    )
    cached = min(_count(pd.get("cached_tokens")) or 0, prompt)
    output = _count(u.get("completion_tokens")) or 0
    return Usage(
        input_tokens=prompt - cached,  # prompt_tokens INCLUDES the cached ones
        output_tokens=output,
        cache_read_tokens=cached,
        reasoning_tokens=_count(cd.get("reasoning_tokens")) or 0,
        audio_input_tokens=min(_count(pd.get("audio_tokens")) or 0, prompt - cached),
        audio_output_tokens=min(_count(cd.get("audio_tokens")) or 0, output),
        service_tier=tier,
    )


def openai_chat_usage(body: dict[str, Any]) -> Usage:
    """Usage of a non-streaming /v1/chat/completions response object."""
    body = _dict(body)
    return _chat_usage(_dict(body.get("usage")), _tier(body.get("service_tier")))


class _ReportedOrSeen:
    """OpenAI meters: the usage the upstream reported at the end, else what the text suggests."""

    __slots__ = ()
    _usage: Usage | None
    _chars: int

    @property
    def usage_reported(self) -> bool:
        return self._usage is not None

    @property
    def usage(self) -> Usage:
        return self._usage or _ZERO

    @property
    def approx_output_tokens(self) -> int:
        return _approx_tokens(self._chars)

    @property
    def saw_tokens(self) -> bool:
        return self.usage.total_tokens > 0 or self._chars > 0

    def billable_usage(self, input_tokens_estimate: int = 0) -> Usage:
        """The reported usage when it came; else estimate input + chars/4 of the text seen."""
        return _billable(
            self.usage, self.usage_reported, False, self.approx_output_tokens, input_tokens_estimate
        )


class OpenAIChatStreamMeter(_ReportedOrSeen):
    """Feed it each `data:` payload of a /v1/chat/completions stream (b"[DONE]" ends it)."""

    __slots__ = ("_chars", "_usage", "completed", "error", "model", "upstream_id")

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._chars = 0
        self.model: str | None = None
        self.upstream_id: str | None = None
        self.completed = False  # data: [DONE] seen
        self.error: dict[str, Any] | None = None  # a mid-stream {"error": {...}} payload

    def feed(self, data: bytes) -> None:
        # Every chunk may carry usage and text, so each is parsed (orjson: ~0.3 us per chunk).
        if data.strip() == b"[DONE]":
            self.completed = True
            return
        obj = _loads(data)
        if obj is None:
            return
        if self.model is None and type(obj.get("model")) is str:
            self.model = obj["model"]
        if self.upstream_id is None and type(obj.get("id")) is str:
            self.upstream_id = obj["id"]
        u = obj.get("usage")
        if type(u) is dict:
            self._usage = _chat_usage(u, _tier(obj.get("service_tier")))
        choices = obj.get("choices")
        if type(choices) is list:
            for choice in choices:
                delta = _dict(_dict(choice).get("delta"))
                self._chars += _chat_delta_chars(delta)
        if type(obj.get("error")) is dict:
            self.error = obj

    @staticmethod
    def is_usage_only_chunk(data: bytes) -> bool:
        """True for the extra `choices: []` chunk that exists only because include_usage is set."""
        if b"[]" not in data:  # cheap pre-filter: content chunks have a non-empty choices list
            return False
        obj = _loads(data)
        return obj is not None and obj.get("choices") == [] and type(obj.get("usage")) is dict


def _chat_delta_chars(delta: dict[str, Any]) -> int:
    n = 0
    for k in ("content", "refusal", "reasoning_content"):
        s = delta.get(k)
        if type(s) is str:
            n += len(s)
    calls = delta.get("tool_calls")
    if type(calls) is list:
        for call in calls:
            fn = _dict(_dict(call).get("function"))
            for k in ("name", "arguments"):
                s = fn.get(k)
                if type(s) is str:
                    n += len(s)
    return n


# --- OpenAI Responses ---------------------------------------------------------------------------


# Output items of a response: the built-in tool calls billed per call, and every other kind we
# know (anything else is logged once: a new billable kind must not go unnoticed).
_R_FEE_ITEMS = {"web_search_call": "web_search_requests", "file_search_call": "file_search_calls"}
_R_ITEMS = frozenset(
    {
        *_R_FEE_ITEMS,
        "message",
        "reasoning",
        "function_call",
        "custom_tool_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
        "computer_call",
        "code_interpreter_call",
        "image_generation_call",
    }
)


def _responses_usage(resp: dict[str, Any]) -> Usage:
    """Usage of a Response object: its `usage`, its tier, and the tool calls in its output."""
    u = _dict(resp.get("usage"))
    _check_known("openai.response.usage", u, _RESP_KNOWN)
    total_in = _count(u.get("input_tokens")) or 0
    ind = _details(
        "openai.response.usage.input_tokens_details", u.get("input_tokens_details"), _O_IN_DETAILS
    )
    outd = _details(
        "openai.response.usage.output_tokens_details",
        u.get("output_tokens_details"),
        _O_OUT_DETAILS,
    )
    cached = min(_count(ind.get("cached_tokens")) or 0, total_in)
    output = _count(u.get("output_tokens")) or 0
    calls = {"web_search_requests": 0, "file_search_calls": 0}
    items = resp.get("output")
    if type(items) is list:
        for item in items:
            kind = _dict(item).get("type")
            counter = _R_FEE_ITEMS.get(kind)  # type: ignore[arg-type]
            if counter is not None:
                calls[counter] += 1
            elif type(kind) is str and kind not in _R_ITEMS:
                _check_known("openai.response.output[].type", {kind: None}, _R_ITEMS)
    return Usage(
        input_tokens=total_in - cached,  # input_tokens INCLUDES the cached ones
        output_tokens=output,
        cache_read_tokens=cached,
        reasoning_tokens=_count(outd.get("reasoning_tokens")) or 0,
        audio_input_tokens=min(_count(ind.get("audio_tokens")) or 0, total_in - cached),
        audio_output_tokens=min(_count(outd.get("audio_tokens")) or 0, output),
        service_tier=_tier(resp.get("service_tier")),
        **calls,
    )


def openai_responses_usage(body: dict[str, Any]) -> Usage:
    """Usage of a non-streaming /v1/responses response object."""
    return _responses_usage(_dict(body))


# Generated-text deltas: their `delta` string is what we estimate output tokens from.
_R_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
# Events whose `response` object carries id/model and (terminal ones) usage.
_R_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_R_RESPONSE = _R_TERMINAL | {"response.created", "response.in_progress"}


class OpenAIResponsesStreamMeter(_ReportedOrSeen):
    """Feed it every SSE event of a /v1/responses stream: `feed(event_name, data)`."""

    __slots__ = ("_chars", "_usage", "completed", "error", "model", "upstream_id")

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._chars = 0
        self.model: str | None = None
        self.upstream_id: str | None = None
        self.completed = False  # response.completed or response.incomplete (a normal end)
        self.error: dict[str, Any] | None = None  # `error` event payload or response.failed error

    def feed(self, event: str, data: bytes) -> None:
        obj: dict[str, Any] | None = None
        if event == "message":  # no `event:` line: fall back on the payload's type
            obj = _loads(data)
            if obj is None or type(obj.get("type")) is not str:
                return
            event = obj["type"]
        if event in _R_TEXT_DELTAS:
            obj = obj or _loads(data)
            if obj is not None and type(obj.get("delta")) is str:
                self._chars += len(obj["delta"])
        elif event in _R_RESPONSE:
            obj = obj or _loads(data)
            if obj is None:
                return
            resp = _dict(obj.get("response"))
            if type(resp.get("model")) is str:
                self.model = resp["model"]
            if type(resp.get("id")) is str:
                self.upstream_id = resp["id"]
            if event in _R_TERMINAL:
                if type(resp.get("usage")) is dict:
                    self._usage = _responses_usage(resp)
                if event == "response.failed":
                    err = resp.get("error")
                    self.error = err if type(err) is dict else obj
                else:
                    self.completed = True
        elif event == "error":
            obj = obj or _loads(data)
            self.error = obj if obj is not None else {"type": "error", "code": "unparseable"}


def warn_once(key: str, message: str) -> None:
    """Log `message` once per process for `key` (an unknown field, an unpriced tier)."""
    if key not in _UNKNOWN_SEEN:
        _UNKNOWN_SEEN.add(key)
        log.warning(message, extra={"field": key})
