"""The operator console: the daemon, its pool and health, every user's assistants, and the live
events, steered with the keyboard (bindings in the footer) or the mouse.

Every call to the daemon runs in a thread worker (the client is blocking httpx), so the screen
never waits on the network; results come back as messages.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import get_current_worker

from blitzclaw.client import BlitzClient, ClientError

RECONNECT_SECONDS = 1.0
INSTANCE_COLUMNS = ("id", "status", "email", "channel_type", "server_ip", "health")


@dataclass
class Loaded(Message):
    """What a worker brought back from the daemon."""

    what: str
    data: Any


@dataclass
class Failed(Message):
    what: str
    error: str


@dataclass
class EventArrived(Message):
    event: dict[str, Any]


class Confirm(ModalScreen[bool]):
    """Yes or no, before an action that changes a user's assistant."""

    BINDINGS = [("y", "answer(True)", "Yes"), ("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question)
            yield Label("y: yes · n: no", classes="muted")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConsoleApp(App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "BlitzClaw console"
    BINDINGS = [
        ("r", "refresh", "Refresh"),
        ("R", "instance('restart')", "Restart"),
        ("s", "instance('stop')", "Stop"),
        ("S", "instance('start')", "Start"),
        ("o", "show('overview')", "Overview"),
        ("i", "show('instances')", "Instances"),
        ("e", "show('events')", "Events"),
        ("q", "quit", "Quit"),
    ]

    def __init__(self, client: BlitzClient) -> None:
        super().__init__()
        self.client = client
        self.search = ""
        self.seen_events: list[str] = []  # what the events tab shows, newest last
        self.reconnects = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Overview", id="overview"), Vertical():
                yield Static("Loading…", id="daemon")
                yield Static("", id="pool")
                yield Static("", id="health")
            with TabPane("Instances", id="instances"), Vertical():
                yield Input(placeholder="Search by id, email or address", id="search")
                yield DataTable(id="instance-table", zebra_stripes=True)
            with TabPane("Events", id="events"):
                yield RichLog(id="event-log", max_lines=2000, markup=False)
        yield Static("", id="status-line")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#instance-table", DataTable)
        table.add_columns(*INSTANCE_COLUMNS)
        self.action_refresh()
        self.follow_events()

    def action_show(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def action_refresh(self) -> None:
        self.fetch("daemons", "GET", "/api/admin/daemons")
        self.fetch("pool", "GET", "/api/admin/pool")
        self.fetch("health", "GET", "/api/health/instances")
        self.fetch_instances()

    def fetch_instances(self) -> None:
        params = {"q": self.search} if self.search else None
        self.fetch("instances", "GET", "/api/admin/instances", params=params)

    @work(thread=True, group="fetch")
    def fetch(
        self, what: str, method: str, path: str, params: dict[str, Any] | None = None
    ) -> None:
        try:
            data = self.client.request(method, path, params=params)
        except ClientError as exc:
            self.post_message(Failed(what, str(exc)))
            return
        self.post_message(Loaded(what, data))

    @work(thread=True, group="events", exclusive=True)
    def follow_events(self) -> None:
        """Follow the stream; when it breaks (a daemon restart, the network), say so and come
        back with Last-Event-ID: the daemon replays what was missed, or says it was lost."""
        worker = get_current_worker()
        last: str | None = None
        while not worker.is_cancelled:
            try:
                for event in self.client.events(last):
                    last = event.get("id") or last
                    self.post_message(EventArrived(event))
            except ClientError as exc:
                self.post_message(Failed("events", f"{exc}; reconnecting"))
            self.reconnects += 1
            time.sleep(RECONNECT_SECONDS)

    def on_loaded(self, message: Loaded) -> None:
        data = message.data
        if message.what == "daemons":
            names = ", ".join(f"{a['name']} ({a['state']})" for a in data["actors"])
            self.query_one("#daemon", Static).update(
                f"Daemon {data['this_daemon']} · {len(data['daemons'])} daemon(s)\nActors: {names}"
            )
        elif message.what == "pool":
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(data["by_status"].items())) or "empty"
            held = " (held: no new spares)" if data.get("held") else ""
            self.query_one("#pool", Static).update(f"Pool: {counts}{held}")
        elif message.what == "health":
            summary = data["summary"]
            self.query_one("#health", Static).update(
                f"Health: {summary['ok']} ok, {summary['failing']} failing, "
                f"{len(data['alerts'])} alert(s)"
            )
        elif message.what == "done":
            self.query_one("#status-line", Static).update(str(data))
            self.fetch_instances()
            return
        elif message.what == "instances":
            table = self.query_one("#instance-table", DataTable)
            table.clear()
            for row in data["instances"]:
                table.add_row(*(str(row.get(c) or "-") for c in INSTANCE_COLUMNS), key=row["id"])
        self.query_one("#status-line", Static).update("")

    def on_failed(self, message: Failed) -> None:
        self.query_one("#status-line", Static).update(f"{message.what}: {message.error}")

    def on_event_arrived(self, message: EventArrived) -> None:
        event = message.event
        if event["type"] == "lost":
            self.query_one("#status-line", Static).update(
                "Some events were lost while the console was away (the views are refreshed)."
            )
            self.action_refresh()
        data = json.dumps(event.get("data"), sort_keys=True)
        line = f"{event.get('id', '')} {event['type']}: {data}"
        self.seen_events = [*self.seen_events[-1999:], line]
        self.query_one("#event-log", RichLog).write(line)
        if event["type"] in ("instance", "pool", "health"):
            self.action_refresh()

    def action_instance(self, action: str) -> None:
        """Restart, stop or start the selected instance, after a yes."""
        table = self.query_one("#instance-table", DataTable)
        if self.query_one("#tabs", TabbedContent).active != "instances" or not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is None:
            return

        def decided(yes: bool | None) -> None:
            if yes:
                self.act(action, key)

        self.push_screen(Confirm(f"{action.capitalize()} instance {key}?"), decided)

    @work(thread=True, group="act")
    def act(self, action: str, instance_id: str) -> None:
        try:
            self.client.request("POST", f"/api/admin/instances/{instance_id}/{action}")
        except ClientError as exc:
            self.post_message(Failed(action, str(exc)))
            return
        self.post_message(Loaded("done", f"{action} queued for {instance_id}"))

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.search = message.value.strip()
        self.fetch_instances()


def run(api_url: str, api_key: str | None) -> None:
    ConsoleApp(BlitzClient(api_url, api_key)).run()


def main() -> None:
    """`blitzclaw-console`: the same daemon and key as the `blitzclaw` command line."""
    from blitzclaw import settings

    found = settings.load()
    run(found.api_url, found.api_key)
