"""Tables kept in place: rows added, changed cell by cell or removed by key, so a refresh keeps
the operator's cursor and costs little when a few of thousands of rows changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist


def sync_rows(table: DataTable, columns: Sequence[str], rows: Iterable[tuple[str, tuple]]) -> None:
    """Make `table` hold exactly `rows` ((key, cells) in order of first appearance)."""
    wanted = dict(rows)
    for key in [k.value for k in list(table.rows)]:
        if key not in wanted:
            table.remove_row(key)
    for key, cells in wanted.items():
        if key in table.rows:
            current = table.get_row(key)
            for column, old, new in zip(columns, current, cells, strict=True):
                if old != new:
                    table.update_cell(key, column, new)
        else:
            table.add_row(*cells, key=key)


def selected_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None
