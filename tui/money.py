"""Users and money: each user's balance, what their leases hold, spend and top-ups; revenue
against cost and the margin over a chosen range; webhook events with money not applied."""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Sparkline, Static

from blitzclawd_tui.format import age, cell, dollars
from blitzclawd_tui.tables import selected_key, sync_rows

# The ranges the operator cycles through (m): label, length, step of the daemon's series.
RANGES = (
    ("24 hours", dt.timedelta(hours=24), "hour"),
    ("7 days", dt.timedelta(days=7), "day"),
    ("30 days", dt.timedelta(days=30), "day"),
    ("90 days", dt.timedelta(days=90), "day"),
)
USER_COLUMNS = (
    ("email", "User"),
    ("balance", "Balance"),
    ("reserved", "Leases hold"),
    ("today", "Today"),
    ("month", "30 days"),
    ("topped_up", "Topped up"),
    ("instances", "Inst."),
    ("leases", "Leases"),
    ("last_topup", "Last top-up"),
    ("role", "Role"),
    ("created", "Age"),
)
USER_KEYS = tuple(key for key, _ in USER_COLUMNS)
UNMATCHED_COLUMNS = ("age", "event", "reason", "amount", "claimed user")


def user_cells(row: dict[str, Any], now: dt.datetime) -> tuple[str, ...]:
    return (
        cell(row.get("email")),
        dollars(row.get("balance_micros")),
        dollars(row.get("reserved_micros")),
        dollars(row.get("spend_today_micros")),
        dollars(row.get("spend_30d_micros")),
        dollars(row.get("topped_up_micros")),
        cell(row.get("instances")),
        cell(row.get("leases")),
        age(row.get("last_topup_at"), now),
        cell(row.get("role")),
        age(row.get("created_at"), now),
    )


def totals(points: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("charged_micros", "upstream_cost_micros", "margin_micros", "topups_micros")
    return {k: sum(int(p.get(k) or 0) for p in points) for k in keys}


class MoneyPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.range_index = 1
        self.users: dict[str, dict[str, Any]] = {}

    @property
    def range(self) -> tuple[str, dt.timedelta, str]:
        return RANGES[self.range_index]

    def compose(self) -> ComposeResult:
        with Horizontal(id="money-top"):
            with Vertical(id="money-chart"):
                yield Static("Revenue and cost: loading…", id="money-summary")
                yield Static("Revenue", id="revenue-label", classes="muted")
                yield Sparkline([], id="revenue-spark")
                yield Static("Cost", id="cost-label", classes="muted")
                yield Sparkline([], id="cost-spark")
            with Vertical(id="money-unmatched"):
                yield Static("Webhook events with money not applied", classes="muted")
                yield DataTable(id="unmatched-table", cursor_type="row")
        yield Input(placeholder="Search users by id, email or Clerk id (Enter)", id="user-search")
        yield DataTable(id="user-table", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        users = self.query_one("#user-table", DataTable)
        for key, label in USER_COLUMNS:
            users.add_column(label, key=key)
        self.query_one("#unmatched-table", DataTable).add_columns(*UNMATCHED_COLUMNS)

    @property
    def table(self) -> DataTable:
        return self.query_one("#user-table", DataTable)

    def selected(self) -> str | None:
        return selected_key(self.table)

    def next_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(RANGES)
        self.query_one("#money-summary", Static).update(f"Loading the last {self.range[0]}…")

    def show_users(self, data: dict[str, Any], now: dt.datetime) -> None:
        self.users = {str(u["id"]): u for u in data["users"]}
        sync_rows(self.table, USER_KEYS, ((k, user_cells(u, now)) for k, u in self.users.items()))

    def show_metrics(self, data: dict[str, Any]) -> None:
        points = data.get("points") or []
        sums = totals(points)
        revenue, cost, margin = (
            sums["charged_micros"],
            sums["upstream_cost_micros"],
            sums["margin_micros"],
        )
        share = f" ({margin / revenue:.0%})" if revenue else ""
        servers = [p["server_cost"] for p in points if p.get("server_cost") is not None]
        server_cost = (
            f" · servers {sum(servers):,.2f} {data.get('server_cost_currency') or ''}".rstrip()
            if servers
            else " · server prices unknown"
        )
        requests = sum(int(p.get("requests") or 0) for p in points)
        self.query_one("#money-summary", Static).update(
            f"Last {self.range[0]} by {data.get('step')} (m: change)\n"
            f"Revenue {dollars(revenue)} · cost {dollars(cost)} · "
            f"margin {dollars(margin)}{share}\n"
            f"Top-ups received {dollars(sums['topups_micros'])} · {requests:,} requests"
            f"{server_cost}"
        )
        charged = [int(p.get("charged_micros") or 0) for p in points]
        costs = [int(p.get("upstream_cost_micros") or 0) for p in points]
        # Each line scales to its own peak: the labels say the peaks, so they compare.
        self.query_one("#revenue-label", Static).update(
            f"Revenue per {data.get('step')} (peak {dollars(max(charged, default=0))})"
        )
        self.query_one("#cost-label", Static).update(
            f"Cost per {data.get('step')} (peak {dollars(max(costs, default=0))})"
        )
        self.query_one("#revenue-spark", Sparkline).data = charged
        self.query_one("#cost-spark", Sparkline).data = costs

    def show_unmatched(self, data: dict[str, Any], now: dt.datetime) -> None:
        table = self.query_one("#unmatched-table", DataTable)
        table.clear()
        for e in data["events"]:
            amount = e.get("amount_cents")
            table.add_row(
                age(e.get("received_at"), now),
                cell(e.get("event_type")),
                cell(e.get("reason")),
                "-" if amount is None else f"{amount / 100:,.2f} {cell(e.get('currency'))}",
                cell(e.get("claimed_user")),
            )
