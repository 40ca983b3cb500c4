"""Every screen of the operator console as a snapshot (pytest-textual-snapshot): the console at
140x40 over real HTTP, through the real BlitzClient, to a loopback server answering with the
admin API's recorded answers (tests/console_recording.json, kept honest by
tests/test_console_recording.py), with "now" fixed and no live events. The SVGs are in
tests/__snapshots__/test_console_snapshots/; after an intended change to a screen, look at the
new ones and accept them with `pytest tests/test_console_snapshots.py --snapshot-update`.

README's screenshot of the console (docs/screenshots/console.svg) is the instances snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_console_recording import recording

from blitzclaw.client import BlitzClient
from blitzclawd_tui.app import ConsoleApp
from blitzclawd_tui.events import EventsPane, event_line
from blitzclawd_tui.overview import OverviewPane

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_console_snapshots"
README_SCREENSHOT = ROOT / "docs" / "screenshots" / "console.svg"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SIZE = (140, 40)
KEY = "blitzclaw-admin-recorded"
# The recorded daemon's address as the console shows it (header, supervision tree): the real
# loopback port changes from run to run, and a snapshot must not.
SHOWN_URL = "http://blitz-eu-1.internal:8080"
DEADLINE = 20.0


class RecordedDaemon:
    """The recorded answers on a loopback port, served from a thread of its own: the snapshot
    fixture runs the console in its own event loop."""

    def __init__(self) -> None:
        self.answers = recording()
        self.asked: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _answer(self, request: web.Request) -> web.Response:
        self.asked.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        if request.path not in self.answers:
            return web.json_response({"error": {"code": "not_found"}}, status=404)
        return web.json_response(self.answers[request.path])

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._answer)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> RecordedDaemon:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def daemon() -> Iterator[RecordedDaemon]:
    with RecordedDaemon() as served:
        yield served
    # The console asked only what was recorded (a new request needs a new recording).
    assert set(served.asked) <= set(served.answers), set(served.asked) - set(served.answers)


@pytest.fixture
def console(daemon: RecordedDaemon) -> Iterator[ConsoleApp]:
    client = BlitzClient(daemon.url, KEY)
    client.api_url = SHOWN_URL  # what it is called on screen; requests go to daemon.url
    yield ConsoleApp(client, clock=lambda: NOW, live=False)
    client.close()


def _text(node: Any, selector: str) -> str:
    return str(node.query_one(selector).render())


def _loaded(app: ConsoleApp) -> bool:
    """Every view filled from the recording."""
    tables = {
        "#instance-table": 12,
        "#user-table": 6,
        "#server-table": 15,
        "#job-table": 3,
        "#unmatched-table": 1,
    }
    return (
        all(app.query_one(t).row_count == n for t, n in tables.items())
        and "daemon(s) on the database" in _text(app, "#daemon")
        and "fsn1" in _text(app, "#overview-pool")
        and "Health:" in _text(app, "#overview-health")
        and "gave up after" in _text(app, "#alerts")
        and _text(app, "#money-summary").startswith("Last 7 days")
        and "Pool: assigned" in _text(app, "#pool-summary")
    )


async def _until(pilot: Any, check: Callable[[], bool]) -> None:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE:
            status = _text(pilot.app, "#status-line")
            raise AssertionError(f"not within {DEADLINE} s; the status line says {status!r}")
        await pilot.pause(0.05)


async def _settled(pilot: Any) -> None:
    """A still picture: no blinking cursor, nothing left to lay out."""
    from textual.widgets import Input

    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()
    await pilot.pause()  # a text changed by the last step is laid out by then


def steps(*more: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """Wait for every view, then each step in turn."""

    async def run_before(pilot: Any) -> None:
        await _until(pilot, lambda: _loaded(pilot.app))
        for step in more:
            await step(pilot)
        await _settled(pilot)

    return run_before


def press(*keys: str) -> Callable[[Any], Awaitable[None]]:
    async def step(pilot: Any) -> None:
        await pilot.press(*keys)

    return step


def screen_is(name: str) -> Callable[[Any], Awaitable[None]]:
    async def step(pilot: Any) -> None:
        await _until(pilot, lambda: type(pilot.app.screen).__name__ == name)

    return step


async def proxy_seconds(pilot: Any) -> None:
    """The proxy's last ten seconds, as the event stream would bring them."""
    overview = pilot.app.query_one(OverviewPane)
    for second in range(10):
        overview.proxy_second(
            {"requests": 30 + 4 * (second % 5), "errors": int(second == 6), "revenue_usd": 0.09}
        )


def recorded_events() -> list[dict[str, Any]]:
    """The last minute's events as the stream brings them (types and fields of
    blitzclawd.queries.events), about the recorded fleet."""
    answers = recording()
    server = next(s for s in answers["/api/admin/pool"]["servers"] if s["status"] == "provisioning")
    down = next(h for h in answers["/api/health/instances"]["instances"] if h["state"] == "down")
    alert = next(a for a in answers["/api/health/instances"]["alerts"] if a["kind"] == "down")
    paused = next(
        i
        for i in answers["/api/admin/instances"]["instances"]
        if i["status_reason"] == "paused_by_operator"
    )
    webhook = answers["/api/admin/payments/unmatched"]["events"][0]
    found = [
        ("pool", {k: server[k] for k in ("name", "status", "ip")} | {"server_id": server["id"]}),
        ("webhook", {k: webhook[k] for k in ("provider", "event_type", "event_id")}),
        ("health", {k: down[k] for k in ("instance_id", "ok", "state", "detail", "restarts")}),
        ("alert", {k: alert[k] for k in ("instance_id", "kind", "detail")}),
        ("instance", {"instance_id": paused["id"], "user_id": paused["user_id"]}),
        ("actor", {"name": "fleet/health-monitor", "state": "running", "restarts": 2}),
        ("proxy", {"requests": 41, "errors": 0, "revenue_usd": 0.118, "seconds": 1.0}),
    ]
    first = NOW - dt.timedelta(seconds=60)
    events = []
    for n, (kind, data) in enumerate(found):
        at = first + dt.timedelta(seconds=8 * n)
        if kind == "instance":
            data |= {"status": paused["status"], "status_reason": paused["status_reason"]}
        if kind != "proxy" and kind != "actor":
            data["at"] = at.isoformat()
        events.append({"id": str(int(at.timestamp()) * 1_000_000), "type": kind, "data": data})
    return events


async def events_arrived(pilot: Any) -> None:
    pilot.app.query_one(EventsPane).add([event_line(e) for e in recorded_events()])


def test_overview(snap_compare, console) -> None:
    assert snap_compare(console, terminal_size=SIZE, run_before=steps(proxy_seconds))


def test_instances(snap_compare, console) -> None:
    """The third instance selected: the detail pane shows it."""
    assert snap_compare(console, terminal_size=SIZE, run_before=steps(press("i", "down", "down")))


def test_users_and_money(snap_compare, console) -> None:
    assert snap_compare(console, terminal_size=SIZE, run_before=steps(press("u")))


def test_pool_and_jobs(snap_compare, console) -> None:
    assert snap_compare(console, terminal_size=SIZE, run_before=steps(press("j", "down")))


def test_events(snap_compare, console) -> None:
    assert snap_compare(console, terminal_size=SIZE, run_before=steps(press("e"), events_arrived))


def test_command_palette(snap_compare, console) -> None:
    async def typed(pilot: Any) -> None:
        await pilot.press(*"instance")
        await _until(pilot, lambda: _palette_done(pilot.app.screen, "instance"))
        counts = []
        while len(counts) < 3 or len(set(counts[-3:])) > 1:  # the same list three times running
            assert len(counts) < 100, counts
            await pilot.pause(0.05)
            await _until(pilot, lambda: _palette_done(pilot.app.screen, "instance"))
            counts.append(pilot.app.screen.query_one("CommandList").option_count)

    run = steps(press("ctrl+p"), screen_is("CommandPalette"), typed)
    assert snap_compare(console, terminal_size=SIZE, run_before=run)


def _palette_done(palette: Any, typed: str) -> bool:
    """The palette's search for what was typed has ended: every match listed, the first one
    highlighted, no busy indicator (each key typed starts a search that cancels the last one)."""
    from textual.command import CommandList
    from textual.widgets import Input

    searching = [
        w
        for w in palette.app.workers
        if w.group == palette._GATHER_COMMANDS_GROUP and not w.is_finished
    ]
    listed = palette.query_one(CommandList)
    return (
        palette.query_one(Input).value == typed
        and not searching
        and palette.has_class("-ready")
        and not palette._show_busy
        and listed.option_count > 0
        and listed.highlighted == 0
    )


def test_limits_form(snap_compare, console) -> None:
    run = steps(press("i", "down", "down", "l"), screen_is("Form"), press(*"120"))
    assert snap_compare(console, terminal_size=SIZE, run_before=run)


def test_adjust_form_with_a_wrong_amount(snap_compare, console) -> None:
    async def refused(pilot: Any) -> None:
        await _until(pilot, lambda: "not an amount" in _text(pilot.app.screen, "#form-error"))

    run = steps(
        press("u", "a"),
        screen_is("Form"),
        press(*"12.5.0", "enter", *"goodwill after the outage", "enter"),
        refused,
    )
    assert snap_compare(console, terminal_size=SIZE, run_before=run)


def test_stop_confirmation(snap_compare, console) -> None:
    run = steps(press("i", "down", "down", "down", "s"), screen_is("Confirm"))
    assert snap_compare(console, terminal_size=SIZE, run_before=run)


def test_readme_shows_the_instances_snapshot() -> None:
    """README's console screenshot is the instances snapshot as accepted."""
    snapshot = SNAPSHOTS / "test_instances.svg"
    assert README_SCREENSHOT.read_text() == snapshot.read_text(), (
        f"copy {snapshot.relative_to(ROOT)} to {README_SCREENSHOT.relative_to(ROOT)}"
    )
    readme = (ROOT / "README.md").read_text()
    assert "](docs/screenshots/console.svg)" in readme
