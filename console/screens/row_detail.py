"""One table row in full: each column's name and its whole value, wrapped (a table cuts long messages and reasons)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from ..widgets.detail_tables import row_fields

# How the title names a row of each node-screen table: a noun and the column that says which one.
ROW_NAMES = {
    "checks": ("check", 1),
    "pools": ("pool", 0),
    "plan": ("study", 0),
    "jobs": ("job", 0),
    "associations-table": ("association from", 1),
}


def detail_table(fields: Sequence[tuple[str, str]]) -> Table:
    """Two columns: each name in bold, its whole value beside it, wrapped within the dialog."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in fields:
        grid.add_row(name, Text(value))
    return grid


class RowDetailScreen(ModalScreen[None]):
    """Opened by Enter or `v` on a row of the node screen; Esc (or Enter, or `v` again) closes it."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("enter,v,q", "dismiss", "Close", show=False),
    ]

    def __init__(self, title: str, fields: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.title_line = title
        self.fields = tuple(fields)

    @classmethod
    def of_row(cls, node_name: str, table: DataTable, key: str, extras: Sequence[tuple[str, str]] = ()):
        """The row `key` of `table`: its columns, then `extras` (what the table has no column for)."""
        fields = row_fields(table, key) + list(extras)
        noun, column = ROW_NAMES.get(table.id or "", ("row", 0))
        which = fields[column][1] if column < len(fields) else key
        return cls(f"{node_name}: {noun} {which}", fields)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog row-detail"):
            yield Label(self.title_line, classes="question")
            with VerticalScroll(id="row-fields"):
                yield Static(detail_table(self.fields), id="row-text")
            yield Label("Esc closes", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#row-fields").focus()  # the arrow keys scroll a long row
