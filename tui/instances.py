"""Every user's assistants: a searchable table (status, owner, server, channel, health, spend
today), the selected one in detail, and its gateway's log followed live."""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, RichLog, Static

from blitzclawd_tui.format import age, cell, dollars, number
from blitzclawd_tui.tables import selected_key, sync_rows, update_row

COLUMNS = (
    ("id", "Instance"),
    ("status", "Status"),
    ("email", "Owner"),
    ("server_ip", "Server"),
    ("channel_type", "Channel"),
    ("health", "Health"),
    ("spend_today", "Today"),
    ("created", "Age"),
)
COLUMN_KEYS = tuple(key for key, _ in COLUMNS)
# A status with a reason is marked "*"; the reason is in the detail below the table.


def row_cells(row: dict[str, Any], now: dt.datetime) -> tuple[str, ...]:
    return (
        str(row["id"])[:8],
        cell(row.get("status")) + (" *" if row.get("status_reason") else ""),
        cell(row.get("email")),
        cell(row.get("server_ip")),
        cell(row.get("channel_type")),
        cell(row.get("health")),
        dollars(row.get("spend_today_micros")),
        age(row.get("created_at"), now),
    )


class InstancesPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: dict[str, dict[str, Any]] = {}
        self.following: str | None = None  # the instance whose log is followed
        self._partial = ""  # a log line not yet ended
        self.now = dt.datetime.now(dt.UTC)  # the console's "now" at the last load
        self.pending: set[str] = set()  # rows changed by events, not yet drawn

    def compose(self) -> ComposeResult:
        with Horizontal(id="instance-bar"):
            yield Input(placeholder="Search by id, email or address (Enter)", id="search")
            yield Static("", id="instance-count")
        yield DataTable(id="instance-table", zebra_stripes=True, cursor_type="row")
        with Horizontal(id="instance-bottom"):
            yield Static("Select an instance", id="instance-detail")
            log = RichLog(id="instance-log", max_lines=1000, markup=False, wrap=True)
            log.border_title = "Log (L: follow the selected instance's log)"
            yield log

    def on_mount(self) -> None:
        table = self.query_one("#instance-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)

    @property
    def table(self) -> DataTable:
        return self.query_one("#instance-table", DataTable)

    def selected(self) -> str | None:
        return selected_key(self.table)

    def show(self, data: dict[str, Any], now: dt.datetime) -> None:
        self.now = now
        found = data["instances"]
        self.rows = {str(r["id"]): r for r in found}
        sync_rows(self.table, COLUMN_KEYS, ((k, row_cells(r, now)) for k, r in self.rows.items()))
        total = data.get("total", len(found))
        more = f" (first {len(found)}: search to narrow)" if total > len(found) else ""
        self.query_one("#instance-count", Static).update(f"{total} instance(s){more}")
        self.show_detail()

    def changed(self, kind: str, change: dict[str, Any]) -> bool:
        """An instance or health event noted on its row (drawn by apply_changes); False when
        the row is not shown (the listing is loaded again instead)."""
        key = str(change.get("instance_id"))
        row = self.rows.get(key)
        if row is None:
            return False
        if kind == "instance":
            row.update(status=change.get("status"), status_reason=change.get("status_reason"))
        else:
            row.update(health=change.get("state"), health_checked_at=change.get("at"))
        self.pending.add(key)
        return True

    def apply_changes(self, now: dt.datetime) -> None:
        """The rows events changed since the last time, each alone (a walk over thousands of
        rows per event is what kept a busy stream from reaching the screen)."""
        pending, self.pending = self.pending, set()
        for key in pending:
            row = self.rows.get(key)
            if row is not None:
                update_row(self.table, COLUMN_KEYS, key, row_cells(row, now))
        if self.selected() in pending:
            self.show_detail()

    def show_detail(self) -> None:
        key = self.selected()
        row = self.rows.get(key or "")
        if row is None:
            self.query_one("#instance-detail", Static).update("Select an instance")
            return
        reason = f" ({row['status_reason']})" if row.get("status_reason") else ""
        limits = (
            f"{number(row.get('messages_per_hour'))} msgs/h · "
            f"{number(row.get('tokens_per_day'))} tokens/day"
        )
        now = self.now
        checked = row.get("health_checked_at")
        self.query_one("#instance-detail", Static).update(
            "\n".join(
                [
                    f"Instance {row['id']}",
                    f"Owner    {cell(row.get('email'))}",
                    f"User id  {cell(row.get('user_id'))}",
                    f"Status   {cell(row.get('status'))}{reason}",
                    f"Server   {cell(row.get('server_name'))} {cell(row.get('server_ip'))}",
                    f"Channel  {cell(row.get('channel_type'))}",
                    f"Health   {cell(row.get('health'))}"
                    + (f" ({row['health_detail']})" if row.get("health_detail") else "")
                    + (f", checked {age(checked, now)} ago" if checked else ""),
                    f"Today    {dollars(row.get('spend_today_micros'))}",
                    f"Limits   {limits} (global: the global limit)",
                    f"Created  {age(row.get('created_at'), now)} ago",
                    "",
                    "L: follow its log · l: limits · p/P: pause/resume",
                ]
            )
        )

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def log_started(self, instance_id: str) -> None:
        self.following = instance_id
        self._partial = ""
        log = self.query_one("#instance-log", RichLog)
        log.clear()
        log.write(f"Following the log of {instance_id[:8]}…")

    def log_text(self, instance_id: str, text: str) -> None:
        if instance_id != self.following:
            return
        log = self.query_one("#instance-log", RichLog)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            log.write(line)
