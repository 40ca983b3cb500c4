"""The overview: each daemon and its supervision tree, the proxy live (from the event stream),
the pool by location and status, and the health alerts."""

from __future__ import annotations

import collections
import datetime as dt
import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static, Tree
from textual.widgets.tree import TreeNode

from blitzclawd_tui.format import age, cell

PROXY_WINDOW = 10.0  # seconds the live proxy figures cover
# "waiting": a singleton another daemon holds (the supervisor's states).
STATE_MARK = {
    "running": "●",
    "starting": "◌",
    "restarting": "◐",
    "waiting": "◇",
    "standby": "◇",
    "held": "◇",
    "stopped": "○",
    "terminated": "○",
    "failed": "✖",
}


class ProxyLive:
    """The proxy's per-second summaries from every daemon, over the last few seconds."""

    def __init__(self) -> None:
        self.seconds: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(
            maxlen=600
        )
        self.per_second: collections.deque[float] = collections.deque([0.0] * 60, maxlen=60)

    def add(self, data: dict[str, Any], now: float) -> None:
        self.seconds.append((now, data))
        self.per_second.append(float(data.get("requests") or 0))

    def summary(self, now: float) -> str:
        recent = [d for at, d in self.seconds if now - at <= PROXY_WINDOW]
        if not recent:
            return "Proxy: no requests in the last 10 s"
        requests = sum(int(d.get("requests") or 0) for d in recent)
        errors = sum(int(d.get("errors") or 0) for d in recent)
        revenue = sum(float(d.get("revenue_usd") or 0) for d in recent)
        p50s = [d["p50_ms"] for d in recent if d.get("p50_ms") is not None]
        p50 = f"{sorted(p50s)[len(p50s) // 2]:g} ms" if p50s else "-"
        return (
            f"Proxy: {requests / PROXY_WINDOW:.1f} req/s · {errors} error(s) · p50 {p50} · "
            f"revenue ${revenue / PROXY_WINDOW:.4f}/s (last 10 s)"
        )


def add_actor(parent: TreeNode[Any], actor: dict[str, Any], url: str, above: str) -> None:
    """An actor under its supervisor, its own children under it; the node's data says which
    daemon and path to restart."""
    path = f"{above}/{actor['name']}" if above else str(actor["name"])
    mark = STATE_MARK.get(actor.get("state"), "?")
    restarts = actor.get("restarts") or 0
    extra = f", {restarts} restart(s)" if restarts else ""
    error = " !" if actor.get("last_error") else ""  # the error itself: beside the tree
    state = actor.get("state")
    if state == "standby":  # a singleton: another daemon on the database holds it
        state = "standby: held by another daemon"
    label = f"{mark} {actor['name']} ({state}{extra}){error}"
    children = actor.get("children") or []
    if children:
        node = parent.add(label, data=(url, path), expand=True)
        for child in children:
            add_actor(node, child, url, path)
    else:
        parent.add_leaf(label, data=(url, path))


def actor_errors(actors: list[dict[str, Any]], daemon: str, above: str = "") -> list[str]:
    found = []
    for actor in actors:
        path = f"{above}/{actor['name']}" if above else str(actor["name"])
        if actor.get("last_error"):
            found.append(f"  {daemon} {path}: {str(actor['last_error'])[:200]}")
        found += actor_errors(actor.get("children") or [], daemon, path)
    return found


class OverviewPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.proxy = ProxyLive()

    def compose(self) -> ComposeResult:
        with Horizontal(id="overview-top"):
            tree: Tree[str] = Tree("daemons", id="actor-tree")
            tree.show_root = False
            yield tree
            with Vertical(id="overview-side"):
                yield Static("Loading…", id="daemon")
                yield Static("Proxy: waiting for the event stream", id="proxy")
                yield Static("Requests per second, the last minute", classes="muted")
                yield Sparkline(list(self.proxy.per_second), id="proxy-spark")
                yield Static("", id="overview-pool")
                yield Static("", id="overview-health")
                yield Static("", id="alerts")

    def show_daemons(self, answers: dict[str, dict[str, Any]], now: dt.datetime) -> None:
        """`answers`: each daemon's /api/admin/daemons, by the URL the console reached it at."""
        tree = self.query_one("#actor-tree", Tree)
        cursor = tree.cursor_line  # kept across the rebuild: the operator's place in the tree
        tree.clear()
        lines: list[str] = []
        errors: list[str] = []
        for url, data in answers.items():
            node = tree.root.add(f"{str(data['this_daemon'])[:8]} {url}", expand=True)
            for actor in data["actors"]:
                add_actor(node, actor, url, "")
            errors += actor_errors(data["actors"], str(data["this_daemon"])[:8])
            live = [d for d in data["daemons"] if not d.get("stopped_at")]
            stopped = len(data["daemons"]) - len(live)
            earlier = f" ({stopped} stopped earlier)" if stopped else ""
            lines.append(f"{data['this_daemon']}: {len(live)} daemon(s) on the database{earlier}")
            for d in live:
                lines.append(
                    f"  {cell(d.get('hostname'))} pid {cell(d.get('pid'))} "
                    f"v{cell(d.get('version'))}: seen {age(d.get('last_seen'), now)} ago"
                )
        if cursor >= 0:
            tree.cursor_line = cursor
        if errors:
            lines += ["", "Last errors (! in the tree):", *errors]
        self.query_one("#daemon", Static).update("\n".join(lines) or "No daemon answered")

    def show_pool(self, data: dict[str, Any]) -> None:
        by_location: dict[str, collections.Counter[str]] = {}
        for server in data.get("servers") or []:
            where = server.get("location") or "unknown"
            by_location.setdefault(where, collections.Counter())[server.get("status")] += 1
        lines = ["Pool" + (" (held: no new spares)" if data.get("held") else "")]
        for where, counts in sorted(by_location.items()):
            parts = " · ".join(f"{status} {n}" for status, n in sorted(counts.items()))
            lines.append(f"  {where}: {parts}")
        if len(lines) == 1:
            lines.append("  no servers")
        self.query_one("#overview-pool", Static).update("\n".join(lines))

    def show_health(self, data: dict[str, Any], now: dt.datetime) -> None:
        summary = data["summary"]
        self.query_one("#overview-health", Static).update(
            f"Health: {summary['ok']} ok, {summary['failing']} failing "
            f"of {summary['checked']} checked"
        )
        alerts = data.get("alerts") or []
        lines = [f"Alerts: {len(alerts)}"] + [
            f"  {age(a.get('created_at'), now)} ago {cell(a.get('kind'))} "
            f"{cell(a.get('instance_id'))[:8]} {cell(a.get('detail'))[:60]}"
            for a in alerts[:5]
        ]
        self.query_one("#alerts", Static).update("\n".join(lines))

    def proxy_second(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        self.proxy.add(data, now)
        self.query_one("#proxy", Static).update(self.proxy.summary(now))
        self.query_one("#proxy-spark", Sparkline).data = list(self.proxy.per_second)
