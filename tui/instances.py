"""Every user's assistants: a searchable table (status, owner, server, channel, health, spend
today), the selected one in detail, and its gateway's log followed live."""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, RichLog, Static

from blitzclawd_tui.format import age, cell, dollars
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


def row_cells(row: dict[str, Any], now: dt.datetime) -> tuple[str, ...]:
    status = cell(row.get("status"))
    if row.get("status_reason"):
        status += f" ({row['status_reason']})"
    return (
        str(row["id"])[:8],
        status,
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

    def compose(self) -> ComposeResult:
        with Horizontal(id="instance-bar"):
            yield Input(placeholder="Search by id, email or address (Enter)", id="search")
            yield Static("", id="instance-count")
        yield DataTable(id="instance-table", zebra_stripes=True, cursor_type="row")
        with Horizontal(id="instance-bottom"):
            yield Static("Select an instance", id="instance-detail")
            yield RichLog(id="instance-log", max_lines=1000, markup=False, wrap=True)

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
        found = data["instances"]
        self.rows = {str(r["id"]): r for r in found}
        sync_rows(self.table, COLUMN_KEYS, ((k, row_cells(r, now)) for k, r in self.rows.items()))
        total = data.get("total", len(found))
        more = f" (first {len(found)}: search to narrow)" if total > len(found) else ""
        self.query_one("#instance-count", Static).update(f"{total} instance(s){more}")
        self.show_detail()

    def status_changed(self, change: dict[str, Any], now: dt.datetime) -> bool:
        """An instance event applied to its row in place; False when the row is not shown."""
        key = str(change.get("instance_id"))
        row = self.rows.get(key)
        if row is None:
            return False
        row.update(status=change.get("status"), status_reason=change.get("status_reason"))
        # That row alone: with thousands of rows, walking them all for each event is what
        # kept a busy stream from reaching the screen.
        update_row(self.table, COLUMN_KEYS, key, row_cells(row, now))
        if key == self.selected():
            self.show_detail()
        return True

    def show_detail(self) -> None:
        key = self.selected()
        row = self.rows.get(key or "")
        if row is None:
            self.query_one("#instance-detail", Static).update("Select an instance")
            return
        limits = (
            f"{cell(row.get('messages_per_hour'))} msgs/h · "
            f"{cell(row.get('tokens_per_day'))} tokens/day"
        )
        self.query_one("#instance-detail", Static).update(
            "\n".join(
                [
                    f"Instance {row['id']}",
                    f"Owner    {cell(row.get('email'))} ({cell(row.get('user_id'))})",
                    f"Status   {cell(row.get('status'))} {row.get('status_reason') or ''}",
                    f"Server   {cell(row.get('server_name'))} {cell(row.get('server_ip'))}",
                    f"Channel  {cell(row.get('channel_type'))}",
                    f"Health   {cell(row.get('health'))} at "
                    f"{cell(row.get('health_checked_at'))[:19]}",
                    f"Today    {dollars(row.get('spend_today_micros'))}",
                    f"Limits   {limits} (- is the global limit)",
                    f"Created  {cell(row.get('created_at'))[:19]}",
                    "",
                    "L: follow its log",
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
