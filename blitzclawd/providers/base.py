"""Where servers come from: the provider interface the pool manager and provisioner rely on.

A provider only creates, lists, rebuilds and deletes machines; readiness (the cloud-init callback)
and everything over SSH live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Every server we create carries this label; listings are always scoped to it, so the pool's
# reconciler can never see (and delete) machines that belong to something else in the project.
SERVICE_KEY, SERVICE_VALUE = "service", "blitzclaw"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    provider_id: int
    name: str
    # Hetzner's status: initializing|starting|running|stopping|off|deleting|rebuilding|migrating|
    # unknown.
    status: str
    ipv4: str | None
    location: str | None
    server_type: str
    labels: dict[str, str] = field(hash=False)
    created: datetime


class ProviderError(Exception):
    """A provider call failed. The message is safe to log and show: it never carries the token."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # the provider's machine-readable error code, when it sent one


class CapacityError(ProviderError):
    """This location (or every configured one) cannot take the server type right now."""


class ServerProvider(Protocol):
    async def create(self, *, name: str, user_data: str, labels: dict[str, str]) -> ServerInfo:
        """A started server, labelled `service=blitzclaw` plus `labels`, running `user_data`."""
        ...

    async def delete(self, provider_id: int) -> None:
        """Destroy the server; one that is already gone is fine."""
        ...

    async def rebuild(self, provider_id: int, *, user_data: str | None = None) -> None:
        """Wipe the disk from the image, so no file of a previous user survives."""
        ...

    async def get(self, provider_id: int) -> ServerInfo | None:
        """The server, or None when it does not exist."""
        ...

    async def list(self, labels: dict[str, str]) -> list[ServerInfo]:
        """Every one of our servers carrying all of `labels` (all pages)."""
        ...
