"""Every message actors exchange, in one place, so the protocol reads top to bottom.

Messages are frozen, slotted dataclasses: immutable once sent, cheap to create.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tick:
    """A periodic timer fired; `timer` names which one (an actor may run several)."""

    timer: str
