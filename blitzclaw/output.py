"""How results are shown: a table on a terminal, JSON when piped (or as asked), or YAML."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml")


def default_format() -> str:
    return "table" if sys.stdout.isatty() else "json"


def emit(data: Any, fmt: str, *, columns: tuple[str, ...] = (), no_color: bool = False) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return
    if fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
        return
    console = Console(width=80, no_color=no_color, soft_wrap=False)
    rows = data if isinstance(data, list) else None
    if rows is None:
        table = Table(show_header=False, box=None)
        for key, value in (data or {}).items():
            table.add_row(str(key), _cell(value))
        console.print(table)
        return
    if not rows:
        console.print("(none)")
        return
    keys = columns or tuple(rows[0])
    table = Table(*keys, box=None)
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in keys))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:60]
    return str(value)
