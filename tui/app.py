"""The operator console: the daemons and their actors, the proxy live, the pool, every user's
assistants, users and money, jobs, and the live events, steered with the keyboard (each tab's
keys in the footer, every action in the command palette, ctrl+p) or the mouse.

Every call to a daemon runs in a thread worker (the client is blocking httpx), so the screen
never waits on the network; answers come back as messages. Events are read by one thread per
daemon into an inbox the screen drains ten times a second, so a busy stream costs the screen a
batch, not a message per event.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from blitzclaw.client import BlitzClient, ClientError
from blitzclawd_tui import commands
from blitzclawd_tui.actions import OperatorActions
from blitzclawd_tui.events import EventsPane, event_line
from blitzclawd_tui.instances import InstancesPane
from blitzclawd_tui.messages import Failed, Loaded
from blitzclawd_tui.money import MoneyPane
from blitzclawd_tui.overview import OverviewPane
from blitzclawd_tui.pool import PoolPane

RECONNECT_SECONDS = 1.0
DRAIN_SECONDS = 0.1  # how often arrived events reach the screen
# At most this often for views an event made stale (a view's full answer is decoded in a worker
# thread, which holds the interpreter while it does): the heavy ones less often.
STALE_MIN_SECONDS = {"health": 10.0, "users": 5.0, "metrics": 10.0, "unmatched": 5.0}
ROW_CHANGES_SECONDS = 1.0  # rows changed by events are drawn at most this often
REFRESH_SECONDS = 2.0  # views an event made stale are loaded again at most this often
FULL_REFRESH_SECONDS = 30.0
INSTANCE_LIMIT = 10_000
# Which views an event makes stale.
STALE_AFTER = {
    "instance": ("instances",),
    "pool": ("pool",),
    "health": ("health",),
    "alert": ("health",),
    "spike": ("users", "instances"),
    "balance_paused": ("users", "instances"),
    "webhook": ("users", "unmatched", "metrics"),
    "actor": ("daemons",),
    "lost": ("daemons", "pool", "health", "instances", "users", "metrics", "unmatched"),
}
LOST = "Events were lost while the console was away: every view is loaded again."


def _title(tab: str) -> str:
    """A tab's label with its key: the footer keeps its room for the tab's actions."""
    key, label = next((k, label) for t, k, label in commands.TABS if t == tab)
    return f"{label} ({key})"


class ConsoleApp(OperatorActions, App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "BlitzClaw console"
    BINDINGS = commands.bindings()

    def __init__(
        self,
        client: BlitzClient,
        *more_daemons: BlitzClient,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        live: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.clients = (client, *more_daemons)
        self.clock = clock
        self.live = live  # follow events and refresh on timers (snapshots turn it off)
        self.seen_events: list[str] = []  # what the events tab was given, newest last
        self.reconnects = 0
        self.daemon_answers: dict[str, dict[str, Any]] = {}
        self._inbox: collections.deque[tuple[str, dict[str, Any] | str]] = collections.deque()
        self._stale: set[str] = set()
        self._loaded_at: dict[str, float] = {}  # when each view was last asked for
        self._lock = threading.Lock()

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane(_title("overview"), id="overview"):
                yield OverviewPane(id="overview-pane")
            with TabPane(_title("instances"), id="instances"):
                yield InstancesPane(id="instances-pane")
            with TabPane(_title("money"), id="money"):
                yield MoneyPane(id="money-pane")
            with TabPane(_title("pool"), id="pool"):
                yield PoolPane(id="pool-pane")
            with TabPane(_title("events"), id="events"):
                yield EventsPane(id="events-pane")
        yield Static("", id="status-line")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = " · ".join(c.api_url for c in self.clients)
        self.load("all")
        self.query_one(EventsPane).set_following(self.live)
        self.focus_tab(self.tab)  # now, not only when the first tab's activation arrives
        if self.live:
            for client in self.clients:
                self.follow_events(client)
            self.set_interval(DRAIN_SECONDS, self.drain_events)
            self.set_interval(ROW_CHANGES_SECONDS, self.show_row_changes)
            self.set_interval(REFRESH_SECONDS, self.load_stale)
            self.set_interval(FULL_REFRESH_SECONDS, lambda: self.load("all"))

    @property
    def tab(self) -> str:
        return str(self.query_one("#tabs", TabbedContent).active)

    def say(self, text: str) -> None:
        self.query_one("#status-line", Static).update(text)

    def action_show(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self.focus_tab(tab)

    def on_tabbed_content_tab_activated(self, message: TabbedContent.TabActivated) -> None:
        self.focus_tab(str(message.pane.id))
        self.query_one(EventsPane).set_visible(message.pane.id == "events")
        if message.pane.id == "instances":  # the tab first, the rows changed meanwhile next
            self.call_after_refresh(self.show_row_changes)
        self.refresh_bindings()

    def focus_tab(self, tab: str) -> None:
        """The tab's main table takes the keys (arrows move its cursor)."""
        target = {
            "overview": "#actor-tree",
            "instances": "#instance-table",
            "money": "#user-table",
            "pool": "#job-table",
            "events": "#event-log",
        }[tab]
        self.query_one(target).focus()

    # -- the command palette and the keys ------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for command in commands.COMMANDS:
            yield SystemCommand(
                command.title, command.help, lambda name=command.name: self.run_command(name)
            )
        for tab, _, label in commands.TABS:
            yield SystemCommand(
                f"Show {label}", f"The {label} tab", lambda t=tab: self.action_show(t)
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A tab's keys work (and show in the footer) only while that tab is shown."""
        if action == "command" and parameters:
            command = commands.BY_NAME.get(str(parameters[0]))
            return command is not None and command.tab in (None, self.tab)
        return True

    def action_command(self, name: str) -> None:
        self.run_command(name)

    def run_command(self, name: str) -> None:
        command = commands.BY_NAME[name]
        if command.tab is not None and command.tab != self.tab:
            self.action_show(command.tab)
        getattr(self, "do_" + name.replace("-", "_"))()

    # -- loading -------------------------------------------------------------------------------

    def load(self, *views: str) -> None:
        wanted = set(views)
        if "all" in wanted:
            wanted = {"daemons", "pool", "health", "instances", "users", "metrics", "unmatched"}
            wanted.add("jobs")
        now = time.monotonic()
        self._loaded_at.update(dict.fromkeys(wanted, now))
        if "daemons" in wanted:
            for client in self.clients:
                self.fetch("daemons", "GET", "/api/admin/daemons", client=client)
        if "pool" in wanted:
            self.fetch("pool", "GET", "/api/admin/pool")
            wanted.add("jobs")
        if "jobs" in wanted:
            self.fetch("jobs", "GET", "/api/admin/jobs", params={"limit": 200})
        if "health" in wanted:
            self.fetch("health", "GET", "/api/health/instances")
        if "instances" in wanted:
            search = self.query_one("#search", Input).value.strip()
            params: dict[str, Any] = {"limit": INSTANCE_LIMIT}
            if search:
                params["q"] = search
            self.fetch("instances", "GET", "/api/admin/instances", params=params)
        if "users" in wanted:
            search = self.query_one("#user-search", Input).value.strip()
            self.fetch(
                "users", "GET", "/api/admin/users", params={"limit": 1000, "q": search or None}
            )
        if "metrics" in wanted:
            _, length, step = self.query_one(MoneyPane).range
            end = self.clock()
            params = {"from": (end - length).isoformat(), "to": end.isoformat(), "step": step}
            self.fetch("metrics", "GET", "/api/admin/metrics", params=params)
        if "unmatched" in wanted:
            self.fetch("unmatched", "GET", "/api/admin/payments/unmatched", params={"limit": 50})

    def load_stale(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = {
                view
                for view in self._stale
                if now - self._loaded_at.get(view, 0.0)
                >= STALE_MIN_SECONDS.get(view, REFRESH_SECONDS)
            }
            self._stale -= due
        if due:
            self.load(*due)

    def do_refresh(self) -> None:
        self.load("all")

    @work(thread=True, group="fetch")
    def fetch(
        self,
        what: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        client: BlitzClient | None = None,
    ) -> None:
        client = client or self.client
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            data = client.request(method, path, params=params)
        except ClientError as exc:
            self.post_message(Failed(what, str(exc)))
            return
        self.post_message(Loaded(what, data, client.api_url))

    def on_loaded(self, message: Loaded) -> None:
        try:
            self.show(message)
        except NoMatches:  # an answer that arrived as the console was closing
            pass

    def show(self, message: Loaded) -> None:
        data, now = message.data, self.clock()
        match message.what:
            case "daemons":
                self.daemon_answers[message.daemon] = data
                self.query_one(OverviewPane).show_daemons(self.daemon_answers, now)
            case "pool":
                self.query_one(OverviewPane).show_pool(data)
                self.query_one(PoolPane).show_pool(data, now)
            case "jobs":
                self.query_one(PoolPane).show_jobs(data, now)
            case "health":
                self.query_one(OverviewPane).show_health(data, now)
            case "instances":
                self.query_one(InstancesPane).show(data, now)
            case "users":
                self.query_one(MoneyPane).show_users(data, now)
            case "metrics":
                self.query_one(MoneyPane).show_metrics(data)
            case "unmatched":
                self.query_one(MoneyPane).show_unmatched(data, now)

    def on_failed(self, message: Failed) -> None:
        self.say(f"{message.what}: {message.error}")

    # -- events --------------------------------------------------------------------------------

    @work(thread=True, group="events")
    def follow_events(self, client: BlitzClient) -> None:
        """Follow one daemon's stream; when it breaks (a daemon restart, the network), say so
        and come back with Last-Event-ID: the daemon replays what was missed, or says it lost
        some (an event of type `lost`)."""
        worker = get_current_worker()
        last: str | None = None
        while not worker.is_cancelled:
            try:
                for event in client.events(last):
                    last = event.get("id") or last
                    self._inbox.append((client.api_url, event))
                    if worker.is_cancelled:
                        return
            except ClientError as exc:
                self._inbox.append((client.api_url, f"event stream broken ({exc}); reconnecting"))
            self.reconnects += 1
            time.sleep(RECONNECT_SECONDS)

    def drain_events(self) -> None:
        """What arrived since the last look, to the events tab and the views it concerns."""
        if not self._inbox:
            return
        lines: list[str] = []  # for the events tab, up to the next line of the console's own
        proxy: list[dict[str, Any]] = []
        daemons = len(self.clients) > 1
        overview = self.query_one(OverviewPane)
        instances = self.query_one(InstancesPane)
        events = self.query_one(EventsPane)
        stale: set[str] = set()

        def flush() -> None:
            events.add(lines)
            self.seen_events.extend(lines)
            lines.clear()

        for _ in range(len(self._inbox)):
            daemon, event = self._inbox.popleft()
            if isinstance(event, str):  # the console's own news about a stream
                flush()
                events.note(f"[{daemon}] {event}")
                self.say(event)
                continue
            kind = event.get("type", "")
            lines.append(event_line(event, daemon if daemons else ""))
            data = event.get("data") or {}
            if kind == "lost":
                self.say(LOST)
                flush()
                events.note(LOST)
            elif kind == "proxy":
                proxy.append(data)
            elif kind in ("instance", "health") and instances.changed(kind, data):
                # Its row, in place (shown at the next tick): no reload of thousands of rows.
                stale.update(("health",) if kind == "health" else ())
                continue
            stale.update(STALE_AFTER.get(kind, ()))
        flush()
        if proxy:  # the batch's seconds, the overview redrawn once
            at = time.monotonic()
            for data in proxy[:-1]:
                overview.proxy.add(data, at)
            overview.proxy_second(proxy[-1])
        if stale:
            with self._lock:
                self._stale.update(stale)
        if len(self.seen_events) > 4000:
            del self.seen_events[:-2000]

    def show_row_changes(self) -> None:
        """Rows changed by events, drawn once a second and only while the instances tab is
        shown: each change makes the table measure its rows again, and a busy stream would
        otherwise keep it doing nothing else."""
        if self.tab == "instances":
            self.query_one(InstancesPane).apply_changes(self.clock())

    # -- search boxes --------------------------------------------------------------------------

    def on_input_submitted(self, message: Input.Submitted) -> None:
        match message.input.id:
            case "search":
                self.load("instances")
                self.query_one("#instance-table").focus()
            case "user-search":
                self.load("users")
                self.query_one("#user-table").focus()
            case "event-filter":
                self.query_one(EventsPane).set_filter(message.value)
                self.query_one("#event-log").focus()


def run(api_url: str, api_key: str | None, more_urls: Iterable[str] = ()) -> None:
    more = [BlitzClient(url, api_key) for url in more_urls]
    ConsoleApp(BlitzClient(api_url, api_key), *more).run()


def main() -> None:
    """`blitzclaw-console [URL…]`: the daemon and key of the `blitzclaw` command line, and any
    other daemons sharing its database."""
    import sys

    from blitzclaw import settings

    found = settings.load()
    run(found.api_url, found.api_key, sys.argv[1:])
