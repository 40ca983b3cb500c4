"""WhatsApp, the built-in channel plugin: the user links their own number by scanning a QR code.

Registered through the ``blitzclawd`` entry-point group like any third-party plugin. (The QR
login flow is still to come: issue 13.)
"""

from __future__ import annotations

from typing import Any

from blitzclawd.channels import ChannelField
from blitzclawd.config import Settings
from blitzclawd.errors import ApiError
from blitzclawd.hookspecs import hookimpl


class WhatsAppChannel:
    name = "whatsapp"
    display_name = "WhatsApp"
    fields: tuple[ChannelField, ...] = ()  # nothing to type: the phone links by QR code

    async def verify(self, settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(config)
        if unknown:
            name = f"channel_config.{unknown[0]}"[:200]
            raise ApiError(422, "invalid_field", f"{name} is not a whatsapp setting", field=name)
        return {}

    def setup_text(self, public: dict[str, Any]) -> str:
        return (
            "Link your WhatsApp: on your phone open WhatsApp > Settings > Linked devices and "
            "scan the QR code shown for your assistant."
        )


@hookimpl
def register_channels() -> list[WhatsAppChannel]:
    return [WhatsAppChannel()]
