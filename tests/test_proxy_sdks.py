"""The official anthropic and openai SDKs against the proxy, at their default settings (two
retries, their own retry rules): token counting, model lookup, request ids on our errors, and no
refusal of ours that keeps a caller waiting (issue 11)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import openai
import pytest
from conftest import running_proxy_env

from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

ASK = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
PATIENCE = 10.0  # what a caller may wait on a refusal, retries included


def clients(env: Any, inst: Any) -> tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI]:
    return (
        anthropic.AsyncAnthropic(base_url=env.url, api_key=inst.api_key),
        openai.AsyncOpenAI(base_url=env.url + "/v1", api_key=inst.api_key),
    )


async def test_count_tokens_is_forwarded_not_billed(proxy_env) -> None:
    a, _ = clients(proxy_env, proxy_env.instance)
    before = await proxy_env.balance()
    proxy_env.fake.set_next(Scenario(input_tokens=1234))
    async with a:
        counted = await a.messages.count_tokens(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
        )
    assert counted.input_tokens == 1234
    assert proxy_env.fake.requests[-1].path == "/v1/messages/count_tokens"
    await proxy_env.settled()
    assert await proxy_env.balance() == before
    assert await proxy_env.pool.fetchval("SELECT count(*) FROM usage_logs") == 0


async def test_count_tokens_is_limited_per_instance_and_says_so_at_once(database) -> None:
    async with running_proxy_env(database, limits={"count_tokens_per_minute": 2}) as env:
        a, _ = clients(env, env.instance)
        ask = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
        async with a:
            for _ in range(2):
                await a.messages.count_tokens(**ask)
            started = time.monotonic()
            with pytest.raises(anthropic.RateLimitError) as caught:
                await a.messages.count_tokens(**ask)
            assert time.monotonic() - started < PATIENCE
        assert "2 calls a minute" in caught.value.message
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert env.fake.received == 2  # the refused call was not retried, nor forwarded


async def test_models_retrieve_in_both_sdks(proxy_env) -> None:
    a, o = clients(proxy_env, proxy_env.instance)
    async with a, o:
        claude = await a.models.retrieve("claude-sonnet-4-6")
        gpt = await o.models.retrieve("gpt-4o")
        assert (claude.id, claude.type) == ("claude-sonnet-4-6", "model")
        assert (gpt.id, gpt.owned_by) == ("gpt-4o", "openai")
        with pytest.raises(anthropic.NotFoundError):
            await a.models.retrieve("claude-nonesuch")
        with pytest.raises(openai.NotFoundError):
            await o.models.retrieve("gpt-nonesuch")


async def test_our_errors_carry_the_request_id_each_sdk_reads(proxy_env) -> None:
    a, o = clients(proxy_env, proxy_env.instance)
    async with a, o:
        with pytest.raises(anthropic.NotFoundError) as caught_a:
            await a.messages.create(**{**ASK, "model": "claude-nonesuch"})
        with pytest.raises(openai.NotFoundError) as caught_o:
            await o.chat.completions.create(**{**CHAT, "model": "gpt-nonesuch"})
    for caught in (caught_a, caught_o):
        rid = caught.value.request_id
        assert rid and rid == caught.value.response.headers["X-BlitzClaw-Request-Id"]


Refusal = Callable[[anthropic.AsyncAnthropic, openai.AsyncOpenAI], Awaitable[Any]]
REFUSALS: dict[str, tuple[Refusal, Refusal]] = {
    "unknown model": (
        lambda a, o: a.messages.create(**{**ASK, "model": "claude-nonesuch"}),
        lambda a, o: o.chat.completions.create(**{**CHAT, "model": "gpt-nonesuch"}),
    ),
    "bad field": (
        lambda a, o: a.messages.create(**ASK, extra_body={"service_tier": "priority"}),
        lambda a, o: o.chat.completions.create(**CHAT, n=100_000),
    ),
    "too large": (
        lambda a, o: a.messages.create(
            **{**ASK, "messages": [{"role": "user", "content": "x" * (33 * 1024 * 1024)}]}
        ),
        lambda a, o: o.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * (33 * 1024 * 1024)}]
        ),
    ),
}


@pytest.mark.parametrize("case", [*REFUSALS, "bad credentials", "deleted instance"])
async def test_no_refusal_of_ours_keeps_an_sdk_waiting(proxy_env, case: str) -> None:
    inst = proxy_env.instance
    if case == "bad credentials":
        inst = seed.SeededInstance(inst.id, inst.user_id, "x" * 43)
    elif case == "deleted instance":
        inst = await seed.create_instance(proxy_env.pool, inst.user_id, status="deleted")
    a, o = clients(proxy_env, inst)
    anthropic_call, openai_call = REFUSALS.get(
        case,
        (lambda a, o: a.messages.create(**ASK), lambda a, o: o.chat.completions.create(**CHAT)),
    )
    async with a, o:
        for call, error in ((anthropic_call, anthropic.APIError), (openai_call, openai.APIError)):
            started = time.monotonic()
            with pytest.raises(error) as caught:
                await call(a, o)
            assert time.monotonic() - started < PATIENCE, case
            assert caught.value.request_id, case
    assert proxy_env.fake.received == 0
