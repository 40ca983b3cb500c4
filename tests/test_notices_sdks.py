"""The proxy's notices (a limit, a paused instance, a low balance) read by the official SDKs.

A notice is the assistant's answer in the provider's wire format: each SDK, at its default
settings, parses it (whole and streamed) into the text the user reads, at once, with zero usage.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from blitzclawd.testing import seed

PAUSED = "Your BlitzClaw balance has run out, so I'm paused."


@pytest.fixture
async def paused(proxy_env):
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id, status="paused")
    return proxy_env, inst


async def test_anthropic_sdk_reads_a_notice_whole_and_streamed(paused) -> None:
    env, inst = paused
    client = anthropic.AsyncAnthropic(base_url=env.url, api_key=inst.api_key)
    ask = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with client:
        message = await client.messages.create(**ask)
        assert message.content[0].text.startswith(PAUSED)
        assert (message.usage.input_tokens, message.usage.output_tokens) == (0, 0)
        assert message.stop_reason == "end_turn"
        async with client.messages.stream(**ask) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text.startswith(PAUSED) and final.content[0].text == text
    assert env.fake.received == 0


async def test_openai_sdk_reads_a_notice_from_chat_and_responses(paused) -> None:
    env, inst = paused
    client = openai.AsyncOpenAI(base_url=env.url + "/v1", api_key=inst.api_key)
    async with client:
        chat = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content.startswith(PAUSED)
        assert chat.usage.total_tokens == 0
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith(PAUSED) and chunks[-1].usage.total_tokens == 0
        response = await client.responses.create(model="gpt-4o", input="hi")
        assert response.output_text.startswith(PAUSED)
        async with client.responses.stream(model="gpt-4o", input="hi") as events:
            final = await events.get_final_response()
        assert final.output_text.startswith(PAUSED)
    assert env.fake.received == 0
