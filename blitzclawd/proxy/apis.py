"""The three upstream APIs the proxy serves, and what differs between them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from blitzclawd.metering.pricing import Usage
from blitzclawd.metering.usage import (
    AnthropicStreamMeter,
    OpenAIChatStreamMeter,
    OpenAIResponsesStreamMeter,
    anthropic_usage,
    openai_chat_usage,
    openai_responses_usage,
)
from blitzclawd.proxy.errors import ANTHROPIC, OPENAI


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
