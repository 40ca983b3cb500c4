"""The three upstream APIs the proxy serves, and what differs between them.

Why one module: every way the three APIs differ (path, error style, meters, the fields that
multiply a request's cost or read server-side context) is declared here, beside `assess`, the
one function that bounds a request's worst case from them; a reviewer checks that every priced
field of every API is bounded in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from blitzclawd.metering import images
from blitzclawd.metering.pricing import (
    STANDARD_TIERS,
    Fees,
    ModelPrice,
    PriceTable,
    Usage,
    max_input_tokens,
)
from blitzclawd.metering.usage import (
    AnthropicStreamMeter,
    OpenAIChatStreamMeter,
    OpenAIResponsesStreamMeter,
    anthropic_usage,
    openai_chat_usage,
    openai_responses_usage,
)
from blitzclawd.proxy.errors import ANTHROPIC, OPENAI, ProxyError


class Meter(Protocol):
    """What the relay needs of a stream meter (one adapter per API below)."""

    def feed(self, event: str, data: bytes) -> None: ...
    def billable_usage(self, input_tokens_estimate: int = 0) -> Usage: ...

    @property
    def saw_tokens(self) -> bool: ...


class _ChatMeter(OpenAIChatStreamMeter):
    """Chat streams have data lines only: the event name carries nothing."""

    def feed(self, event: str, data: bytes) -> None:  # type: ignore[override]
        super().feed(data)


@dataclass(frozen=True, slots=True)
class ApiSpec:
    name: str  # usage_logs.api
    provider: str  # which upstream (and which price-table api) serves it
    path: str
    max_tokens_fields: tuple[str, ...]  # where a request states its output ceiling
    meter: Callable[[], Meter]
    usage_of: Callable[[dict[str, Any]], Usage]  # non-streaming response body -> usage
    upstream_id_header: str

    @property
    def error_style(self) -> str:
        return ANTHROPIC if self.provider == "anthropic" else OPENAI


ANTHROPIC_MESSAGES = ApiSpec(
    "anthropic-messages",
    "anthropic",
    "/v1/messages",
    ("max_tokens",),
    AnthropicStreamMeter,
    anthropic_usage,
    "request-id",
)
OPENAI_CHAT = ApiSpec(
    "openai-chat",
    "openai",
    "/v1/chat/completions",
    ("max_completion_tokens", "max_tokens"),
    _ChatMeter,
    openai_chat_usage,
    "x-request-id",
)
OPENAI_RESPONSES = ApiSpec(
    "openai-responses",
    "openai",
    "/v1/responses",
    ("max_output_tokens",),
    OpenAIResponsesStreamMeter,
    openai_responses_usage,
    "x-request-id",
)


# -- what a request can be billed for, at most -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """The [pricing] settings admission applies."""

    default_max_uses: int = 5  # a server tool without max_uses (or Responses max_tool_calls)
    openai_default_tiers: tuple[str, ...] = ("default",)
    allow_unpriced: frozenset[str] = frozenset()


@dataclass(slots=True)
class Worst:
    """Everything one request can be billed for (admission reserves its cost) and what the
    settlement must know to price it."""

    stream: bool
    max_output: int | None  # per choice; None: the model's own ceiling
    input_bound: int  # input tokens one model call may read
    passes: int = 1  # model calls: server tools loop, each reading the context again
    outputs: int = 1  # choices (OpenAI chat `n`)
    tiers: tuple[str | None, ...] = (None,)  # the service tiers it may be served at
    tier: str | None = None  # the tier it asked for (the one the answer reports wins)
    long_ok: bool = False  # the model's long context is enabled (its rates may apply)
    audio: bool = False  # it may read or produce audio
    fee_micros: int = 0  # per-use fees it may incur, at list price
    body: dict[str, Any] | None = None  # set when we changed the body (caps on tool uses)
    image_bytes: int = 0  # base64 image data in the body: billed as image tokens, not text
    image_tokens: int = 0  # what its images are likely billed as (metering/images.py)


# Anthropic-defined tools the client runs (no fee; their system prompt is within FRAMING_TOKENS).
_A_CLIENT_TOOLS = ("bash_", "text_editor_", "computer_", "memory_")
# Server tools with a per-use price and a max_uses bound: type prefix -> Fees field.
_A_SERVER_TOOLS = (("web_search_", "web_search"), ("web_fetch_", "web_fetch"))
# Known server tools we cannot price (or bound) -> the name that allows them.
_A_UNPRICED = (("code_execution_", "code_execution"), ("tool_search_tool_", "tool_search"))
_R_CLIENT_TOOLS = frozenset({"function", "custom", "local_shell", "shell", "apply_patch"})
_R_SERVER_TOOLS = {"web_search": "web_search", "web_search_2025_08_26": "web_search"}
_R_UNPRICED = {
    "web_search_preview": "web_search_preview",
    "web_search_preview_2025_03_11": "web_search_preview",
    "code_interpreter": "code_execution",
    "image_generation": "image_generation",
    "computer_use_preview": "computer_use",
    "computer_use": "computer_use",
}
# Content blocks (and Responses input items) by what their tokens are bounded by. Their own text,
# in the body: bounded by its bytes.
_PLAIN = frozenset(
    {
        "text",
        "input_text",
        "output_text",
        "refusal",
        "summary_text",
        "reasoning_text",
        "tool_use",
        "server_tool_use",
        "mcp_tool_use",
        "thinking",
        "search_result",
        "function_call",
        "custom_tool_call",
    }
)
# An image, whatever its bytes (a URL, a tiny but huge-resolution WebP): IMAGE_MAX_TOKENS each.
_IMAGES = frozenset({"image", "image_url", "input_image", "computer_screenshot"})
# Blocks holding more blocks (tool results, messages): their content is walked in turn.
_NESTED = {
    "tool_result": "content",
    "mcp_tool_result": "content",
    "function_call_output": "output",
    "custom_tool_call_output": "output",
    "computer_call_output": "output",
    "message": "content",
}
# Everything else is expanded on the provider's side, beyond its bytes: a file by id, a PDF (each
# page billed as text plus an image), a stored item, a container upload, encrypted thinking or
# search results, a block type we do not know. Such a request reserves the context window.


@dataclass(slots=True)
class _Content:
    images: int = 0
    audio: bool = False
    context: bool = False
    image_blocks: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)


def _walk(blocks: Any, into: _Content, depth: int = 0) -> None:
    """Classify content blocks (a list; a plain string is text). Runs over the parsed body: no
    second pass over its bytes, and a type spelled with JSON escapes is seen as what it is."""
    if type(blocks) is not list:
        if blocks is not None and type(blocks) is not str:
            into.context = True  # not a shape we know
        return
    plain = _PLAIN
    for block in blocks:
        # The hot loop: nearly every block is text or a tool call.
        if type(block) is dict and block.get("type") in plain:
            continue
        _block(block, into, depth)


def _block(block: Any, into: _Content, depth: int) -> None:
    if type(block) is not dict:
        if type(block) is not str:
            into.context = True
        return
    kind = block.get("type")
    if kind is None and "role" in block:
        kind = "message"  # a Responses input message may omit its type
    if kind in _IMAGES:
        into.images += 1
        into.image_blocks.append((block, images.data_of(block)))
    elif kind == "input_audio":
        into.audio = True
    elif kind == "reasoning":
        # Its summary is in the body; encrypted reasoning expands on the provider's side.
        if block.get("encrypted_content") is not None:
            into.context = True
    elif kind in _NESTED and depth < 8:
        _walk(block.get(_NESTED[kind]), into, depth + 1)  # type: ignore[index]
    else:
        into.context = True


def _messages(messages: Any, into: _Content) -> None:
    """The content of every message of a list (Anthropic, OpenAI chat)."""
    plain = _PLAIN
    for message in _list(messages):
        content = message.get("content") if type(message) is dict else message
        if type(content) is str:
            continue
        if type(content) is not list:
            if content is not None:
                into.context = True
            continue
        for block in content:
            if type(block) is dict and block.get("type") in plain:
                continue
            _block(block, into, 0)


_MAX_N = 128  # OpenAI's own limit on chat `n`


def _list(v: Any) -> list[Any]:
    return v if type(v) is list else []


def _refuse(message: str) -> ProxyError:
    return ProxyError(400, "invalid_request", message)


def _flag(body: dict[str, Any], name: str) -> bool:
    """A boolean field: absent/null is false; anything but a JSON boolean is refused (a truthy
    1 or "yes" would change the answer's shape behind the meter's back)."""
    v = body.get(name)
    if v is None:
        return False
    if type(v) is not bool:
        raise _refuse(f"{name}: must be true or false")
    return v


def _uses(tool: dict[str, Any], field: str, default: int) -> tuple[int, bool]:
    """The tool's own bound on its uses, or the default (True: it must be set in the body)."""
    v = tool.get(field)
    if v is None:
        return default, True
    if type(v) is not int or v < 0 or v > 10_000:
        where = "tools: " if field == "max_uses" else ""
        raise _refuse(f"{where}{field}: must be an integer between 0 and 10000")
    return v, False


def assess(
    api: ApiSpec,
    body: dict[str, Any],
    raw: bytes,
    price: ModelPrice,
    headers: Mapping[str, str],
    prices: PriceTable,
    policy: Policy,
) -> Worst:
    """What the request in `body` (parsed from `raw`) can cost at most, or a 400 naming the
    field that makes it unpriceable or unbounded. Reads the parsed body (no second JSON pass);
    `raw` only for its size."""
    stream = _flag(body, "stream")
    max_out: int | None = None
    for name in api.max_tokens_fields:
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise _refuse(f"{name}: must be a positive integer")
        if value > price.max_output_tokens:
            raise _refuse(
                f"{name}: at most {price.max_output_tokens} for {price.model}, got {value}"
            )
        max_out = value if max_out is None else max(max_out, value)
    worst = Worst(stream, max_out, 0)
    content = _Content()
    if api.provider == "anthropic":
        system = body.get("system")
        if type(system) is list:
            _walk(system, content)
        _messages(body.get("messages"), content)
    elif api.name == "openai-chat":
        _messages(body.get("messages"), content)
    else:
        _walk(body.get("input"), content)
    context = content.context
    if content.audio:
        if price.audio_input is None:
            raise _refuse(f"messages: audio input is not available for {price.model} here")
        worst.audio = True
    fees = prices.fees(price.api)
    if api.provider == "anthropic":
        context = _anthropic(body, worst, fees, policy) or context
        lc = price.long_context
        if lc is not None:
            beta = headers.get("anthropic-beta", "")
            worst.long_ok = not lc.beta or lc.beta in (b.strip() for b in beta.split(","))
    else:
        context = _openai(api, body, price, worst, fees, policy) or context
    window = price.context_window
    if worst.long_ok and price.long_context is not None:
        window = price.long_context.context_window
    if context:
        if not window:
            raise _refuse(
                f"model: {price.model} has no known context window here, so a request that "
                "reads files, stored conversations or server tools' results cannot be bounded"
            )
        worst.input_bound = window
    for block, data in content.image_blocks:
        if data is not None:
            worst.image_bytes += len(data)
        worst.image_tokens += images.likely_tokens(block, api.provider, data)
    if not context:
        # An image's base64 bytes are billed as at most IMAGE_MAX_TOKENS, not as text.
        worst.input_bound = max_input_tokens(len(raw) - worst.image_bytes, content.images)
        if window:
            worst.input_bound = min(worst.input_bound, window)
    return worst


def _anthropic(body: dict[str, Any], worst: Worst, fees: Fees, policy: Policy) -> bool:
    """Anthropic fields that change the price; True when server-side context can be read."""
    tier = body.get("service_tier")
    if tier is not None and tier not in ("auto", "standard_only"):
        raise _refuse("service_tier: must be 'auto' or 'standard_only'")
    geo = body.get("inference_geo")
    if geo is not None and geo != "global":
        # US-only inference is billed at a premium we do not price.
        raise _refuse("inference_geo: only 'global' is available here")
    context = False
    loops = 0
    if body.get("mcp_servers"):
        if "mcp_servers" not in policy.allow_unpriced:
            raise _refuse("mcp_servers: the MCP connector is not available here")
        context, loops = True, policy.default_max_uses
    tools = body.get("tools")
    if tools is None:
        tools = []
    if type(tools) is not list:
        raise _refuse("tools: must be a list")
    changed: list[Any] | None = None
    for i, tool in enumerate(tools):
        kind = tool.get("type") if type(tool) is dict else None
        if kind is None or kind == "custom" or not isinstance(kind, str):
            continue  # the client's own tool
        if kind.startswith(_A_CLIENT_TOOLS):
            continue
        fee = next((f for prefix, f in _A_SERVER_TOOLS if kind.startswith(prefix)), None)
        if fee is not None:
            uses, missing = _uses(tool, "max_uses", policy.default_max_uses)
            if missing:  # the cap we bill against must bind the upstream too
                changed = changed if changed is not None else list(tools)
                changed[i] = {**tool, "max_uses": uses}
            loops += uses
            worst.fee_micros += uses * getattr(fees, fee)
            context = True
            continue
        name = next((n for prefix, n in _A_UNPRICED if kind.startswith(prefix)), kind)
        if name not in policy.allow_unpriced:
            raise _refuse(f"tools: the {kind!r} tool is not available here (it cannot be priced)")
        loops += policy.default_max_uses
        context = True
    worst.passes = 1 + loops
    if changed is not None:
        worst.body = {**body, "tools": changed}
    return context


def _openai(
    api: ApiSpec,
    body: dict[str, Any],
    price: ModelPrice,
    worst: Worst,
    fees: Fees,
    policy: Policy,
) -> bool:
    """OpenAI fields that change the price; True when server-side context can be read."""
    tier = body.get("service_tier")
    if tier is None or tier in ("auto", "default"):
        worst.tiers = tuple(
            t for t in policy.openai_default_tiers if price.tier(t) or t in STANDARD_TIERS
        ) or (None,)
    elif type(tier) is str and price.tier(tier) is not None:
        worst.tiers = (tier,)
    else:
        raise _refuse(f"service_tier: {tier!r} is not available for {price.model} here")
    worst.tier = tier if type(tier) is str else None
    tools = body.get("tools")
    if tools is None:
        tools = []
    if type(tools) is not list:
        raise _refuse("tools: must be a list")
    if api.name == "openai-chat":
        n = body.get("n")
        if n is not None:
            if type(n) is not int or not 1 <= n <= _MAX_N:
                raise _refuse(f"n: must be an integer between 1 and {_MAX_N}")
            worst.outputs = n
        audio_out = body.get("audio") is not None or (
            type(body.get("modalities")) is list and "audio" in body["modalities"]
        )
        if audio_out:
            if price.audio_output is None:
                raise _refuse(f"modalities: audio output is not available for {price.model} here")
            worst.audio = True
        if body.get("prediction") is not None:
            # Rejected predicted tokens are billed as output, beyond max_tokens: at most the body.
            worst.max_output = (worst.max_output or price.max_output_tokens) + len(
                orjson.dumps(body["prediction"])
            )
        if body.get("web_search_options") is not None:
            if "web_search_options" not in policy.allow_unpriced:
                raise _refuse("web_search_options: web search is not available here")
        for tool in tools:
            kind = tool.get("type") if type(tool) is dict else None
            if kind not in ("function", "custom") and str(kind) not in policy.allow_unpriced:
                raise _refuse(f"tools: the {kind!r} tool is not available here")
        return False
    # Responses
    if _flag(body, "background"):
        raise _refuse(
            "background: background mode is not supported here (its answer is fetched later, "
            "outside the proxy, where it cannot be metered); send the request without it"
        )
    context = any(
        body.get(k) is not None for k in ("previous_response_id", "conversation", "prompt")
    )
    server_fee = -1
    for tool in tools:
        kind = tool.get("type") if type(tool) is dict else None
        if kind in _R_CLIENT_TOOLS:
            continue
        fee_name = _R_SERVER_TOOLS.get(kind)  # type: ignore[arg-type]
        if kind == "file_search":
            fee_name = "file_search"
        if fee_name is not None:
            server_fee = max(server_fee, getattr(fees, fee_name))
        elif kind == "mcp":
            server_fee = max(server_fee, 0)  # tokens only (its calls are bounded below)
        else:
            name = _R_UNPRICED.get(kind, str(kind))  # type: ignore[arg-type]
            if name not in policy.allow_unpriced:
                raise _refuse(
                    f"tools: the {kind!r} tool is not available here (it cannot be priced)"
                )
            server_fee = max(server_fee, 0)
    if server_fee >= 0:
        calls, missing = _uses(body, "max_tool_calls", policy.default_max_uses)
        if missing:  # the cap we bill against must bind the upstream too
            worst.body = {**body, "max_tool_calls": calls}
        worst.passes = 1 + calls
        worst.fee_micros = calls * server_fee
        context = True
    return context


def priced_request(
    raw: bytes, prices: PriceTable, provider: str
) -> tuple[dict[str, Any], str, ModelPrice]:
    """(body, model, its price) of a request to `provider`; 400 for a body that is not a JSON
    object naming a model, 404 for a model we do not serve there."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProxyError(400, "invalid_request", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "invalid_request", "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError(400, "invalid_request", "model: a model name is required")
    price = prices.get(model)
    if price is None or price.api != provider:
        raise ProxyError(404, "not_found", f"model: {model!r} is not available here")
    return body, model, price
