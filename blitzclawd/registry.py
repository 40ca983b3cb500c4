"""Typed references to the daemon's actors: how views and actors reach one another.

Nobody holds an actor object: a child is rebuilt on every restart, so a reference looks it up in
the supervision tree at each use (a singleton's inner actor when this daemon holds it). Each
reference is typed by the messages its actor takes (blitzclawd.runtime.messages), which is the
whole protocol between them; no caller imports an actor class.

`tell` is best effort, for wake-ups and emails after work is committed: an actor that is down,
restarting, on another daemon (a singleton) or full must not fail the caller, and durable work
is found again by the actor's own timer. `ask` is for answers the caller needs; it raises
ActorUnavailable when there is nobody to ask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from blitzclawd.proxy.handler import ProxyHandler
from blitzclawd.runtime.messages import (
    Adjust,
    AutoTopupDue,
    BalanceDepleted,
    CreemWebhook,
    Drain,
    JobsQueued,
    LowBalance,
    NotificationQueued,
    Notify,
    PoolCheck,
    Provision,
    RecoverOrphans,
    SweepNow,
)

log = logging.getLogger("blitzclawd.registry")

M = TypeVar("M", contravariant=True)


class ActorUnavailable(Exception):
    """The actor is not running here right now (starting, restarting, stopped, elsewhere)."""


class _Mailbox(Protocol):
    def tell(self, message: Any) -> None: ...

    async def ask(self, message: Any, timeout: float = 5.0) -> Any: ...  # noqa: ASYNC109


Lookup = Callable[[str], object | None]


class Ref(Generic[M]):
    """The actor at `path` in the tree, taking messages of type M."""

    __slots__ = ("_lookup", "path")

    def __init__(self, path: str, lookup: Lookup) -> None:
        self.path = path
        self._lookup = lookup

    def _target(self) -> _Mailbox | None:
        child = self._lookup(self.path)
        child = getattr(child, "inner", child)  # a SingletonChild runs its actor inside
        return child if child is not None and hasattr(child, "tell") else None  # type: ignore[return-value]

    @property
    def here(self) -> bool:
        """Running in this daemon now."""
        return self._target() is not None

    def tell(self, message: M) -> bool:
        """Deliver if the actor is here and has room; never raises. Returns whether delivered."""
        actor = self._target()
        if actor is None:
            log.info(
                "actor not here: message not delivered",
                extra={"actor": self.path, "message": type(message).__name__},
            )
            return False
        try:
            actor.tell(message)
        except Exception as exc:  # a full mailbox or a stopping actor
            log.warning(
                "message not delivered",
                extra={"actor": self.path, "message": type(message).__name__, "error": repr(exc)},
            )
            return False
        return True

    async def ask(self, message: M, timeout: float) -> Any:  # noqa: ASYNC109 (as Actor.ask)
        """The actor's answer; ActorUnavailable if it is not here, its error if it fails."""
        actor = self._target()
        if actor is None:
            raise ActorUnavailable(self.path)
        return await actor.ask(message, timeout=timeout)


NotifierMessage = Notify | NotificationQueued | BalanceDepleted | LowBalance | AutoTopupDue


@dataclass(frozen=True, slots=True)
class Actors:
    """Every actor another part of the daemon addresses, by the messages it takes."""

    notifier: Ref[NotifierMessage]
    provisioner: Ref[JobsQueued]
    pool_manager: Ref[PoolCheck | Provision | Drain]
    health_monitor: Ref[SweepNow]
    billing: Ref[CreemWebhook | RecoverOrphans | Adjust]
    _lookup: Lookup

    def proxy(self) -> ProxyHandler | None:
        """The proxy actor's request handlers (its mailbox takes only its own timers)."""
        actor = self._lookup("money/proxy")
        # Not isinstance on the runtime-checkable Protocol: that checks every member, per request.
        return cast(ProxyHandler, actor) if hasattr(actor, "serve") else None

    @classmethod
    def of(cls, lookup: Lookup) -> Actors:
        """References resolved through `lookup` (the root supervisor's `child`)."""
        return cls(
            notifier=Ref("core/notifier", lookup),
            provisioner=Ref("fleet/provisioner", lookup),
            pool_manager=Ref("fleet/pool-manager", lookup),
            health_monitor=Ref("fleet/health-monitor", lookup),
            billing=Ref("money/billing", lookup),
            _lookup=lookup,
        )
