"""Actors, supervision and singletons: the daemon's runtime, free of business logic."""

from blitzclawd.runtime.actor import Actor, ActorNotRunning, AskTimeout, MailboxFull
from blitzclawd.runtime.singleton import LockLost, SingletonChild, lock_key
from blitzclawd.runtime.supervisor import (
    Child,
    ChildSpec,
    ChildStatus,
    Restart,
    StartFailed,
    Supervisor,
    SupervisorEscalation,
    backoff_delay,
)

__all__ = [
    "Actor",
    "ActorNotRunning",
    "AskTimeout",
    "Child",
    "ChildSpec",
    "ChildStatus",
    "LockLost",
    "MailboxFull",
    "Restart",
    "SingletonChild",
    "StartFailed",
    "Supervisor",
    "SupervisorEscalation",
    "backoff_delay",
    "lock_key",
]
