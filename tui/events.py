"""The live events: filterable by text, pausable (what arrives meanwhile is kept and shown on
resume), and a line when the stream was broken and events were lost."""

from __future__ import annotations

import collections
import datetime as dt
import json
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, RichLog, Static

KEPT = 2000  # events kept for filtering again and for a paused view
REDRAWN = 200  # the newest kept lines drawn when the tab is shown again or the filter changes


# What an event is about comes first (then the rest in the daemon's order); times are in the id.
FIRST = ("instance_id", "user_id", "server_id", "name", "status", "state", "kind", "ok")
SKIPPED = ("at",)


def event_time(event_id: Any) -> str:
    """The event id is milliseconds since the epoch x 1000 + a counter: its UTC time."""
    try:
        at = dt.datetime.fromtimestamp(int(event_id) // 1_000_000, dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--:--"
    return at.strftime("%H:%M:%S")


def event_line(event: dict[str, Any], daemon: str = "") -> str:
    data = event.get("data")
    if isinstance(data, dict):
        keys = [k for k in FIRST if k in data] + [
            k for k in data if k not in FIRST and k not in SKIPPED
        ]
        text = " ".join(f"{k}={json.dumps(data[k], default=str)}" for k in keys)
    else:
        text = json.dumps(data, default=str)
    where = f"[{daemon}] " if daemon else ""
    return f"{where}{event_time(event.get('id'))} {event.get('type', '?')}: {text}"


class EventsPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.kept: collections.deque[str] = collections.deque(maxlen=KEPT)
        self.paused = False
        self.unseen = 0  # arrived while paused
        self.filter = ""
        self.following = True  # False: the console follows no stream (it says so)
        # Lines reach the log only while the tab is shown: drawing a thousand a second nobody
        # sees was a good part of the console's work. Shown again, the newest are drawn.
        self.visible = False
        self._behind = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="event-bar"):
            yield Input(placeholder="Filter: type or text (Enter)", id="event-filter")
            yield Static("live", id="event-state")
        yield RichLog(id="event-log", max_lines=KEPT, markup=False, wrap=True)

    def add(self, lines: list[str]) -> None:
        self.kept.extend(lines)
        if self.paused:
            self.unseen += len(lines)
            self._say_state()
            return
        if not self.visible:
            self._behind = self._behind or bool(lines)
            return
        self._write([line for line in lines if self._shown(line)])

    def note(self, text: str) -> None:
        """A line of the console's own (lost events, reconnects), shown even when filtered."""
        self.kept.append(text)
        if self.visible:
            self.query_one("#event-log", RichLog).write(text)
        else:
            self._behind = True

    def set_visible(self, visible: bool) -> None:
        self.visible = visible
        if visible and self._behind and not self.paused:
            self._redraw()

    def on_mount(self) -> None:
        self._say_state()

    def set_following(self, following: bool) -> None:
        self.following = following
        self._say_state()

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.unseen = 0
            self._redraw()
        self._say_state()

    def set_filter(self, text: str) -> None:
        self.filter = text.strip().lower()
        self._redraw()
        self._say_state()

    def _shown(self, line: str) -> bool:
        return not self.filter or self.filter in line.lower()

    def _redraw(self) -> None:
        self._behind = False
        self.query_one("#event-log", RichLog).clear()
        shown = [line for line in self.kept if self._shown(line)]
        self._write(shown[-REDRAWN:])

    def _write(self, lines: list[str]) -> None:
        """Lines to the log in one write: rendered, measured and scrolled once, not once a
        line (at a thousand events a second, per-line writes were most of the screen's work)."""
        if lines:
            self.query_one("#event-log", RichLog).write("\n".join(lines))

    def _say_state(self) -> None:
        state = f"paused, {self.unseen} new" if self.paused else "live"
        if not self.following:
            state = "not following the stream"
        if self.filter:
            state += f" · filter {self.filter!r}"
        self.query_one("#event-state", Static).update(state)
