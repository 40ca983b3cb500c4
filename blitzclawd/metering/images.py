"""Images in a request: their bytes are billed as image tokens, by each provider's own rule.

A base64 image in the body is not text: Anthropic bills it by its pixels (about width x height
/ 750 tokens after scaling to at most 1568 px on the long edge and ~1,600 tokens), OpenAI by
512 px tiles (85 + 170 per tile at high detail, after fitting 2048 x 2048 and a 768 px short
side; 85 at low detail). Admission bounds every image by IMAGE_MAX_TOKENS whatever its pixels
(pricing.max_input_tokens); the rules here give the likely count, which is what an interrupted
stream that reported no input is billed. The dimensions come from the image's own header (PNG,
GIF, WebP, JPEG), read from the first bytes of its base64 data; an image we cannot read (a URL,
another format) counts as IMAGE_LIKELY_TOKENS.
"""

from __future__ import annotations

import binascii
import math
import struct
from typing import Any

# Claude's largest image after scaling (~1.2 MP) is ~1,600 tokens.
IMAGE_LIKELY_TOKENS = 1_600
_HEAD_CHARS = 131_072  # base64 chars decoded to find the header (JPEG's may follow EXIF data)


def data_of(block: dict[str, Any]) -> str | None:
    """The base64 data an image block carries in the body, or None (a URL, a file id)."""
    source = block.get("source")
    if type(source) is dict:  # Anthropic: {"type": "base64", "media_type", "data"}
        data = source.get("data")
        return data if type(data) is str else None
    url = block.get("image_url")
    if type(url) is dict:  # OpenAI chat: {"url": "data:image/png;base64,..."}
        url = url.get("url")
    if type(url) is str and url.startswith("data:"):  # chat, Responses, screenshots
        comma = url.find(",")
        return url[comma + 1 :] if comma >= 0 else None
    return None


def detail_of(block: dict[str, Any]) -> str:
    url = block.get("image_url")
    detail = url.get("detail") if type(url) is dict else block.get("detail")
    return detail if detail in ("low", "high") else "auto"


def dimensions(b64: str) -> tuple[int, int] | None:
    """(width, height) from the image's header, or None when it cannot be read."""
    head = b64[:_HEAD_CHARS]
    head = head[: len(head) - len(head) % 4]
    try:
        raw = binascii.a2b_base64(head)
    except (binascii.Error, ValueError):
        return None
    try:
        if raw[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", raw[16:24])
        if raw[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", raw[6:10])
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            return _webp(raw)
        if raw[:2] == b"\xff\xd8":
            return _jpeg(raw)
    except struct.error:
        return None
    return None


def _webp(raw: bytes) -> tuple[int, int] | None:
    kind = raw[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", raw[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg(raw: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = struct.unpack(">H", raw[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def anthropic_tokens(width: int, height: int) -> int:
    """Claude's rule: scaled down to <= 1568 px on the long edge and <= ~1,600 tokens, then
    w x h / 750 tokens."""
    if width <= 0 or height <= 0:
        return IMAGE_LIKELY_TOKENS
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_200_000 / (width * height)))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    return math.ceil(w * h / 750)


def openai_tokens(width: int, height: int, detail: str = "auto") -> int:
    """GPT-4o's tile rule: 85 base + 170 per 512 px tile at high detail (85 at low)."""
    if detail == "low":
        return 85
    if width <= 0 or height <= 0:
        return IMAGE_LIKELY_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    shrink = min(1.0, 768 / min(w, h))
    w, h = w * shrink, h * shrink
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def likely_tokens(block: dict[str, Any], provider: str, data: str | None) -> int:
    """The tokens an image block is most likely billed as."""
    size = dimensions(data) if data else None
    if size is None:
        return 85 if provider == "openai" and detail_of(block) == "low" else IMAGE_LIKELY_TOKENS
    if provider == "anthropic":
        return anthropic_tokens(*size)
    return openai_tokens(*size, detail_of(block))
