"""The WhatsApp QR as the daemon shows it (plugins/whatsapp/qr.py): read back from the gateway's
PNG, redrawn as SVG; anything that is not a QR-sized PNG is refused, never decoded at any size."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
import segno
from PIL import Image

from blitzclawd_plugins.whatsapp import qr

RAW = "https://wa.me/settings/linked_devices#2@AbC,bm9pc2U=,aWRlbnRpdHk=,YWR2,1"


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(text, error="l").save(out, kind="png", scale=5)
    return out.getvalue()


def test_the_text_comes_back_and_is_redrawn() -> None:
    url = data_url(qr_png(RAW))
    shown = asyncio.run(qr.view(url, seconds_left=42))
    assert shown["qr"] == RAW and shown["expires_in"] == 42
    assert shown["id"] == qr.qr_id(url) and shown["png_data_url"] == url
    assert shown["svg"].lstrip().startswith("<svg")
    # The SVG is the same QR: rendered to PNG again, it reads back to the same text.
    assert qr.decode(data_url(qr_png(qr.decode(url)))) == RAW


def test_what_is_not_a_qr_is_refused() -> None:
    blank = io.BytesIO()
    Image.new("L", (64, 64), 255).save(blank, "PNG")
    huge = io.BytesIO()
    Image.new("L", (5000, 5000), 255).save(huge, "PNG")  # 25 Mpx in a few KB: never decoded
    gif = io.BytesIO()
    Image.new("L", (64, 64)).save(gif, "GIF")
    for url in (
        "data:image/png;base64,",
        "data:image/png;base64,!!!",
        "data:image/jpeg;base64," + base64.b64encode(qr_png(RAW)).decode(),
        data_url(blank.getvalue()),
        data_url(huge.getvalue()),
        data_url(gif.getvalue()),
        "data:image/png;base64," + "A" * 3_000_000,
    ):
        with pytest.raises(qr.NotAQr):
            qr.decode(url)
