"""Pool and jobs: the servers by status and age (provision, drain, resume), and provisioning
jobs with their error (retry a failed one)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from blitzclawd_tui.format import age, cell
from blitzclawd_tui.tables import selected_key, sync_rows

SERVER_COLUMNS = (
    ("name", "Server"),
    ("status", "Status"),
    ("location", "Location"),
    ("ip", "Address"),
    ("assigned", "Assigned to"),
    ("age", "Age"),
    ("in_status", "In status"),
)
JOB_COLUMNS = (
    ("id", "Job"),
    ("kind", "Kind"),
    ("status", "Status"),
    ("attempts", "Tries"),
    ("instance", "Instance"),
    ("age", "Age"),
    ("error", "Last error"),
)


def server_cells(s: dict[str, Any], now: dt.datetime) -> tuple[str, ...]:
    return (
        cell(s.get("name")),
        cell(s.get("status")),
        cell(s.get("location")),
        cell(s.get("ip")),
        cell(s.get("assigned_to"))[:8],
        age(s.get("created_at"), now),
        age(s.get("status_changed_at"), now),
    )


def job_cells(j: dict[str, Any], now: dt.datetime) -> tuple[str, ...]:
    return (
        cell(j.get("id")),
        cell(j.get("kind")),
        cell(j.get("status")),
        cell(j.get("attempts")),
        cell(j.get("instance_id"))[:8],
        age(j.get("created_at"), now),
        cell(j.get("last_error")).replace("\n", " ")[:160],
    )


class PoolPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.jobs: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static("Pool: loading…", id="pool-summary")
        yield DataTable(id="server-table", zebra_stripes=True, cursor_type="row")
        yield Static("Jobs, newest first (t: retry the selected failed job)", classes="muted")
        yield DataTable(id="job-table", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        for selector, columns in (("#server-table", SERVER_COLUMNS), ("#job-table", JOB_COLUMNS)):
            table = self.query_one(selector, DataTable)
            for key, label in columns:
                table.add_column(label, key=key)

    def selected_job(self) -> dict[str, Any] | None:
        return self.jobs.get(selected_key(self.query_one("#job-table", DataTable)) or "")

    def show_pool(self, data: dict[str, Any], now: dt.datetime) -> None:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(data["by_status"].items())) or "empty"
        hold = data.get("hold") or {}
        held = (
            f" · HELD since {cell(hold.get('held_at'))[:19]} by {cell(hold.get('held_by'))}"
            if data.get("held")
            else ""
        )
        self.query_one("#pool-summary", Static).update(
            f"Pool: {counts}{held}  (n: provision · d: drain · g: resume)"
        )
        servers = {str(s["id"]): server_cells(s, now) for s in data.get("servers") or []}
        sync_rows(
            self.query_one("#server-table", DataTable),
            [k for k, _ in SERVER_COLUMNS],
            servers.items(),
        )

    def show_jobs(self, data: dict[str, Any], now: dt.datetime) -> None:
        self.jobs = {str(j["id"]): j for j in data["jobs"]}
        sync_rows(
            self.query_one("#job-table", DataTable),
            [k for k, _ in JOB_COLUMNS],
            ((k, job_cells(j, now)) for k, j in self.jobs.items()),
        )
