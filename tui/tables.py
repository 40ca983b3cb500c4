"""Tables kept in place: rows added, changed cell by cell or removed by key, so a refresh keeps
the operator's cursor and costs little when a few of thousands of rows changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from weakref import WeakKeyDictionary

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

# What each table was last given, by row key: compared with a tuple instead of asking the table
# for each row's cells (DataTable.get_row), which over 10,000 rows was most of a refresh.
_SHOWN: WeakKeyDictionary[DataTable, dict[str, tuple]] = WeakKeyDictionary()


def _shown(table: DataTable) -> dict[str, tuple]:
    shown = _SHOWN.get(table)
    if shown is None or len(shown) != table.row_count:  # changed behind our back: ask it
        shown = {str(k.value): tuple(table.get_row(k)) for k in table.rows}
        _SHOWN[table] = shown
    return shown


def sync_rows(table: DataTable, columns: Sequence[str], rows: Iterable[tuple[str, tuple]]) -> None:
    """Make `table` hold exactly `rows` ((key, cells) in order of first appearance)."""
    wanted = {key: tuple(cells) for key, cells in rows}
    shown = _shown(table)
    for key in [k for k in shown if k not in wanted]:
        table.remove_row(key)
        del shown[key]
    for key, cells in wanted.items():
        old = shown.get(key)
        if old is None:
            table.add_row(*cells, key=key)
        elif old != cells:
            for column, was, new in zip(columns, old, cells, strict=True):
                if was != new:
                    table.update_cell(key, column, new)
        shown[key] = cells


def update_row(table: DataTable, columns: Sequence[str], key: str, cells: tuple) -> bool:
    """One row's changed cells in place (the rest of the table untouched); False when `table`
    has no row `key`."""
    shown = _shown(table)
    old = shown.get(key)
    if old is None:
        return False
    for column, was, new in zip(columns, old, cells, strict=True):
        if was != new:
            table.update_cell(key, column, new)
    shown[key] = tuple(cells)
    return True


def selected_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None
