"""What the daemon needs of a messaging channel (Telegram, WhatsApp, a third party's), as plugins
provide it through the ``register_channels`` hook (blitzclawd.hookspecs).

A channel describes its settings as fields (public ones are stored and shown; secret ones are
stored encrypted and never shown), checks them, against the outside service where it can, and
says what a user does after creating an instance with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from blitzclawd.config import Settings


@dataclass(frozen=True, slots=True)
class ChannelField:
    """One setting of a channel, described so that any UI or CLI can ask for it."""

    name: str
    label: str
    description: str
    secret: bool = False
    required: bool = False
    kind: str = "string"  # "string" | "string_list"
    example: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "secret": self.secret,
            "required": self.required,
            "type": self.kind,
            "example": self.example,
        }


class Channel(Protocol):
    name: str  # the channel_type users send, e.g. "telegram"
    display_name: str
    fields: tuple[ChannelField, ...]

    async def verify(self, settings: Settings, config: dict[str, Any]) -> dict[str, Any]:
        """Check `config` (shape, then with the outside service where there is one); what the
        user is shown of it (nothing secret). Raises blitzclawd.errors.ApiError naming the field:
        422 when refused, 503 when the service cannot be asked."""
        ...

    def setup_text(self, public: dict[str, Any]) -> str:
        """What the user does after creating an instance with this channel, in plain words."""
        ...


def describe(channel: Channel) -> dict[str, Any]:
    """A channel as GET /api/channels shows it."""
    return {
        "type": channel.name,
        "display_name": channel.display_name,
        "fields": [f.as_dict() for f in channel.fields],
    }
