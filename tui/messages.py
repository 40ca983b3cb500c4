"""What the console's workers bring back to the screen (Textual messages, as dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class Loaded(Message):
    """An answer from a daemon: `what` names the view it feeds."""

    what: str
    data: Any
    daemon: str = ""


@dataclass
class Failed(Message):
    """A call that did not succeed, said in one line."""

    what: str
    error: str


@dataclass
class Done(Message):
    """An operator's action the daemon accepted; `refresh` names the views it changed."""

    text: str
    refresh: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class LogText(Message):
    """More of a followed instance log."""

    instance_id: str
    text: str
