"""The WhatsApp link QR, as a page or a terminal wants it.

The gateway hands out the QR only as a PNG data URL (``qrDataUrl``: the plugin renders Baileys'
string itself). The string is what a terminal needs (``segno`` draws it in text) and what a page
re-renders crisply at any size, so it is read back from the PNG with zxing-cpp and drawn again
as SVG with segno. Pillow, zxing-cpp and segno are imported on first use: a daemon that never
links a WhatsApp does not pay for them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
from typing import Any

PNG_PREFIX = "data:image/png;base64,"
MAX_DATA_URL = 2_000_000  # a QR PNG is a few KB; anything near this is not one
MAX_PIXELS = 1_000_000  # a real QR PNG is a few hundred pixels wide


class NotAQr(ValueError):
    """The gateway's answer holds no readable QR code."""


def qr_id(data_url: str) -> str:
    """A short name for one QR, so a client can ask to wait until it changes."""
    return hashlib.sha256(data_url.encode()).hexdigest()[:16]


def decode(data_url: str) -> str:
    """The text of the QR code in a PNG data URL."""
    if not data_url.startswith(PNG_PREFIX) or len(data_url) > MAX_DATA_URL:
        raise NotAQr("not a PNG data URL")
    try:
        png = base64.b64decode(data_url[len(PNG_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise NotAQr("not base64") from None
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            # The header says the size before anything is decoded: a QR is a few hundred
            # pixels wide, so a huge one (a decompression bomb) is refused unread.
            width, height = image.size
            if image.format != "PNG" or width * height > MAX_PIXELS:
                raise NotAQr("not a QR-sized PNG image")
            image.load()
            found = zxingcpp.read_barcodes(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise NotAQr("not a PNG image") from None
    texts = [r.text for r in found if r.format == zxingcpp.BarcodeFormat.QRCode and r.text]
    if not texts:
        raise NotAQr("no QR code in the image")
    return texts[0]


def svg(text: str) -> str:
    """The QR drawn as SVG (error level L, as Baileys' own terminal rendering uses)."""
    import segno

    out = io.BytesIO()
    segno.make_qr(text, error="l").save(out, kind="svg", scale=8, border=4, xmldecl=False)
    return out.getvalue().decode()


async def view(data_url: str, *, seconds_left: int) -> dict[str, Any]:
    """What GET .../whatsapp/qr answers for one QR (decoded and drawn in a thread: CPU work
    the event loop must not wait on)."""
    return await asyncio.to_thread(_view, data_url, seconds_left)


def _view(data_url: str, seconds_left: int) -> dict[str, Any]:
    text = decode(data_url)
    return {
        "id": qr_id(data_url),
        "qr": text,
        "svg": svg(text),
        "png_data_url": data_url,
        "expires_in": seconds_left,
    }
