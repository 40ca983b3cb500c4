"""What the daemon needs of a messaging channel (Telegram, WhatsApp, a third party's), as plugins
provide it through the ``register_channels`` hook (blitzclawd.hookspecs).

A channel describes its settings as fields (public ones are stored and shown; secret ones are
stored encrypted, as one JSON document per instance, and never shown), checks them against the
outside service where it can, turns them into its block of the instance's ``openclaw.json``,
names what pool servers must install for it and which files hold a linked session, adds routes
under ``/api/instances/{id}/<channel>/`` and says what a user does after creating an instance.
The core (fleet, http, actors) only ever talks to a channel through this protocol.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from blitzclawd.config import Settings

if TYPE_CHECKING:
    import asyncssh

    from blitzclawd.crypto import Keyring


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


@dataclass(frozen=True, slots=True)
class ChannelState:
    """A channel's settings for one instance: `public` is stored as channel_config and shown to
    its owner; `secrets` is stored encrypted (blitzclawd.credentials' channel context)."""

    public: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


class Secret(str):
    """A value of an OpenClaw block that is a credential: it is moved into the instance's 0600
    secrets file and referenced from openclaw.json (blitzclawd.fleet.openclaw_config)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class OpenClawBlock:
    """A channel's part of ``openclaw.json`` (blitzclawd.fleet.openclaw_config puts it in)."""

    config: dict[str, Any]  # channels.<name>; credentials (top-level values) as Secret
    trust_plugin: bool = False  # an external OpenClaw plugin: plugins.entries.<name>.enabled
    owners: tuple[str, ...] = ()  # the owner's sender ids: commands.ownerAllowFrom "<name>:<id>"


class InstanceCall(Protocol):
    """One request to a channel's route, for an instance the core has checked is the caller's."""

    instance_id: str
    status: str
    public: dict[str, Any]  # the instance's stored channel_config
    query: Mapping[str, str]
    settings: Settings

    async def json(self) -> dict[str, Any]:
        """The request's JSON object (the core answers 400/422 for anything else)."""
        ...

    async def ssh(self) -> asyncssh.SSHClientConnection:
        """A session to the instance's server with its pinned host key (opened once, closed by
        the core after the route); 409 before the instance has a server, 502 unreachable."""
        ...

    async def save_public(self, public: dict[str, Any]) -> None:
        """Store new public settings (nothing is deployed: what the server did itself)."""
        ...

    async def save_session(self) -> int:
        """Back up the channel's session files from the server, encrypted; the bytes kept."""
        ...

    async def wipe_session(self) -> None:
        """Remove the session files from the server and their backup."""
        ...


RouteHandler = Callable[[InstanceCall], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """``METHOD /api/instances/{id}/<channel>/<path>``: auth, ownership (another user's instance
    is a 404), the channel match (409 otherwise) and, if `active_only`, an active instance (409)
    are the core's; the handler answers a JSON object (200) or raises ApiError."""

    method: str  # "GET" | "POST"
    path: str  # e.g. "qr" or "pairing/approve"
    handler: RouteHandler
    active_only: bool = True
    # For the API's OpenAPI document, and checked before the handler runs: `query` holds
    # blitzclawd.http.declare parameters (QueryFlag, QueryText, ...), `body` its fields
    # (Boolean, Text, ...); `answer` is the JSON Schema of what the handler returns.
    summary: str = ""
    description: str = ""
    query: tuple[Any, ...] = ()
    body: tuple[Any, ...] = ()
    answer: dict[str, Any] | None = None


class Channel(Protocol):
    name: str  # the channel_type users send, e.g. "telegram"
    display_name: str
    fields: tuple[ChannelField, ...]
    # OpenClaw plugin packages (npm specs, pinned) every pool server installs at boot.
    server_packages: tuple[str, ...]
    # Directories (relative to the gateway user's home) holding a linked session: backed up
    # encrypted, restored on a new server, wiped on disconnect and delete.
    session_dirs: tuple[str, ...]

    async def verify(
        self, settings: Settings, config: dict[str, Any], current: ChannelState | None
    ) -> ChannelState:
        """Check `config` (what the user sent; settings it leaves out keep their `current`
        value) against the outside service where there is one. Required settings may still be
        missing (the instance waits for them). Raises blitzclawd.errors.ApiError naming the
        field: 422 when refused, 503 when the service cannot be asked."""
        ...

    def openclaw(self, state: ChannelState) -> OpenClawBlock:
        """This channel's block of openclaw.json for complete settings."""
        ...

    async def activated(self, settings: Settings, state: ChannelState, about: str) -> None:
        """The instance's gateway runs with these settings (after each deploy or configure):
        e.g. the bot's profile follows the persona, `about` in one line. Best effort: an error
        is logged, the instance stays active."""
        ...

    def paired(self, state: ChannelState, sender_id: str) -> ChannelState | None:
        """The owner approved a DM pairing request from `sender_id`: the settings to keep that
        (e.g. an allowlist that now includes them), or None when nothing changes."""
        ...

    def routes(self) -> Sequence[ChannelRoute]:
        """Extra instance-scoped routes, under /api/instances/{id}/<name>/."""
        ...

    def setup_text(self, public: dict[str, Any]) -> str:
        """What the user does after creating an instance with this channel, in plain words."""
        ...

    def label(self, public: dict[str, Any]) -> str | None:
        """How the user knows this assistant on the channel (e.g. "@my_bot"), if it has a name."""
        ...


def describe(channel: Channel) -> dict[str, Any]:
    """A channel as GET /api/channels shows it."""
    return {
        "type": channel.name,
        "display_name": channel.display_name,
        "fields": [f.as_dict() for f in channel.fields],
        "routes": [
            {
                "method": r.method,
                "path": f"/api/instances/{{id}}/{channel.name}/{r.path}",
                "summary": r.summary,
            }
            for r in channel.routes()
        ],
    }


def missing(channel: Channel, state: ChannelState) -> list[str]:
    """The required settings `state` lacks (the instance waits for them)."""
    return [
        f.name
        for f in channel.fields
        if f.required and not (state.secrets if f.secret else state.public).get(f.name)
    ]


def seal(keyring: Keyring, context: str, secrets: dict[str, str]) -> bytes | None:
    """The secrets document, encrypted for its instance (None when there is nothing secret)."""
    if not secrets:
        return None
    return keyring.encrypt_text(json.dumps(secrets, sort_keys=True), context)


def unseal(keyring: Keyring, context: str, blob: bytes | None, channel: Channel) -> dict[str, str]:
    """The secrets document; a blob from before documents (one bare secret) is the channel's
    first secret field."""
    if blob is None:
        return {}
    text = keyring.decrypt_text(blob, context)
    if text.startswith("{"):
        doc = json.loads(text)
        return {str(k): str(v) for k, v in doc.items()}
    first = next((f.name for f in channel.fields if f.secret), "secret")
    return {first: text}
