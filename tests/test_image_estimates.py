"""Images are estimated by the providers' own token rules, not as base64 text (issue 11).

A photo from a phone is ~2 MB, ~2.7 MB of base64 in the body: counted as text it would
reserve millions of tokens and refuse a user with a modest balance. Admission bounds each
image by IMAGE_MAX_TOKENS whatever its bytes (the no-overdraft invariant still holds); the
likely count follows each provider's rule from the image's own header.
"""

from __future__ import annotations

import base64
import os
import struct
import uuid
import zlib

import orjson
import pytest
from conftest import notice_of

from blitzclawd.metering import images
from blitzclawd.metering.pricing import FRAMING_TOKENS, IMAGE_MAX_TOKENS, Usage
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def jpeg(width: int, height: int, size: int = 0) -> bytes:
    """A JPEG's header as a camera writes it (APP1 EXIF before the frame), padded to `size`."""
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 30_000) + b"Exif\x00\x00" + b"\x00" * 29_994
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    head = b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    body = head + exif + sof + b"\xff\xda"
    return body + os.urandom(max(0, size - len(body) - 2)) + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(800, 600), (800, 600)),
        (jpeg(4032, 3024), (4032, 3024)),
        (gif(320, 200), (320, 200)),
        (webp(1920, 1080), (1920, 1080)),
        (b"not an image at all", None),
    ],
    ids=["png", "jpeg-with-exif", "gif", "webp", "unknown"],
)
def test_dimensions_come_from_the_image_header(data: bytes, size: tuple | None) -> None:
    assert images.dimensions(b64(data)) == size


def test_the_providers_rules() -> None:
    # Anthropic's table: 1092 x 1092 is ~1,590 tokens; a 12 MP photo is resized to ~1.15 MP.
    assert images.anthropic_tokens(1092, 1092) == 1590
    assert images.anthropic_tokens(200, 200) == 54
    assert 1_500 <= images.anthropic_tokens(4032, 3024) <= 1_600
    # OpenAI's examples (GPT-4o): 1024 x 1024 high detail is 765; 2048 x 4096 is 1,105.
    assert images.openai_tokens(1024, 1024, "high") == 765
    assert images.openai_tokens(2048, 4096, "high") == 1105
    assert images.openai_tokens(4096, 8192, "low") == 85
    for rule in (images.anthropic_tokens(8000, 8000), images.openai_tokens(8000, 8000)):
        assert rule <= IMAGE_MAX_TOKENS  # the worst case admission holds covers every rule


def _assess(api_name: str, body: dict) -> tuple:
    from blitzclawd.config import fee_table, model_prices, parse_settings
    from blitzclawd.metering.pricing import PriceTable
    from blitzclawd.proxy import apis

    pricing = parse_settings({}).pricing
    table = PriceTable(model_prices(pricing), fees=fee_table(pricing))
    api = {a.name: a for a in (apis.ANTHROPIC_MESSAGES, apis.OPENAI_CHAT, apis.OPENAI_RESPONSES)}
    raw = orjson.dumps(body)
    return apis.assess(
        api[api_name], body, raw, table.get(body["model"]), {}, table, apis.Policy()
    ), raw


PHOTO = b64(jpeg(4032, 3024, size=2_000_000))


@pytest.mark.parametrize(
    ("api", "block", "model"),
    [
        (
            "anthropic-messages",
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/jpeg", "data": PHOTO},
            },
            "claude-sonnet-4-6",
        ),
        (
            "openai-chat",
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + PHOTO}},
            "gpt-4o",
        ),
        (
            "openai-responses",
            {"type": "input_image", "image_url": "data:image/jpeg;base64," + PHOTO},
            "gpt-4o",
        ),
    ],
    ids=["anthropic", "chat", "responses"],
)
def test_a_photo_is_bounded_as_an_image_not_as_its_bytes(api: str, block: dict, model: str) -> None:
    content = [block, {"type": "text", "text": "What is in this photo?"}]
    key = "input" if api == "openai-responses" else "messages"
    body = {"model": model, "max_tokens": 1000, key: [{"role": "user", "content": content}]}
    if api == "openai-responses":
        body = {"model": model, "max_output_tokens": 1000, "input": body[key]}
    worst, raw = _assess(api, body)
    assert worst.image_bytes == len(PHOTO)
    assert worst.input_bound == len(raw) - len(PHOTO) + FRAMING_TOKENS + IMAGE_MAX_TOKENS
    assert worst.input_bound < 12_000  # not the ~2.7 million "tokens" of its base64
    rule = images.anthropic_tokens(4032, 3024) if api.startswith("anthropic") else 765
    assert worst.image_tokens == rule


async def test_a_2mb_photo_from_a_user_5_dollars_above_the_minimum_is_admitted_and_billed_exactly(
    proxy_env,
) -> None:
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 15_000_000)  # the minimum is $10
    inst = await seed.create_instance(proxy_env.pool, user)
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 8192,
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": PHOTO},
                    },
                    {"type": "text", "text": "What is in this photo?"},
                ],
            }
        ],
    }
    # Anthropic bills the photo by its pixels: ~1,560 tokens, plus the question.
    proxy_env.fake.set_next(Scenario(input_tokens=1_580, output_tokens=120))
    resp = await proxy_env.post("/v1/messages", body, instance=inst)
    async with resp:
        await resp.read()
    assert resp.status == 200 and notice_of(resp) is None
    assert proxy_env.fake.received == 1
    await proxy_env.settled()
    proxy = proxy_env.daemon.supervisor.child("proxy")
    cost = proxy.prices.cost_micros(
        proxy.prices.get("claude-sonnet-4-6"), Usage(input_tokens=1_580, output_tokens=120)
    )
    row = await proxy_env.pool.fetchrow(
        "SELECT input_tokens, output_tokens, cost_micros FROM usage_logs WHERE instance_id = $1",
        uuid.UUID(inst.id),
    )
    assert tuple(row) == (1_580, 120, cost)
    assert await proxy_env.balance(user) == 15_000_000 - cost
