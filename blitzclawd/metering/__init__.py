"""Pure metering core: list prices and cost arithmetic, usage extraction, SSE parsing.

No I/O and no asyncio: these run per request and per stream chunk inside the proxy.
"""

from blitzclawd.metering.pricing import (
    ModelPrice,
    PriceTable,
    Usage,
    default_prices,
    estimate_input_tokens,
)
from blitzclawd.metering.sse import SSEParser
from blitzclawd.metering.usage import (
    AnthropicStreamMeter,
    OpenAIChatStreamMeter,
    OpenAIResponsesStreamMeter,
    anthropic_usage,
    openai_chat_usage,
    openai_responses_usage,
)

__all__ = [
    "AnthropicStreamMeter",
    "ModelPrice",
    "OpenAIChatStreamMeter",
    "OpenAIResponsesStreamMeter",
    "PriceTable",
    "SSEParser",
    "Usage",
    "anthropic_usage",
    "default_prices",
    "estimate_input_tokens",
    "openai_chat_usage",
    "openai_responses_usage",
]
