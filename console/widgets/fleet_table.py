"""The fleet table: one row per node from its latest snapshot, filtered and sorted, status coloured from CSS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

from . import format as fmt

STATUSES = ("up", "degraded", "down", "unreachable", "untrusted")
# Worst first when sorting by status: what needs attention comes to the top.
_STATUS_RANK = {"untrusted": 0, "unreachable": 1, "down": 2, "degraded": 3, "up": 4}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    cell: Callable  # snapshot -> str
    sort: Callable  # snapshot -> comparable (None sorts last)


def _queue(s) -> str:
    if s.queue_pending is None and s.queue_failed is None:
        return fmt.DASH
    return f"{fmt.count(s.queue_pending)}/{fmt.count(s.queue_failed)}"


def _ae_port(s) -> str:
    if s.ae_title is None:
        return fmt.DASH
    return f"{s.ae_title}:{s.port}" if s.port is not None else s.ae_title


COLUMNS = (
    Column("node", "node", lambda s: s.name, lambda s: s.name.lower()),
    Column("site", "site", lambda s: fmt.text(s.site), lambda s: (s.site or "").lower() or None),
    Column("status", "status", lambda s: s.status, lambda s: _STATUS_RANK.get(s.status, -1)),
    Column("version", "version", lambda s: fmt.text(s.version), lambda s: s.version),
    Column("ae", "AE:port", _ae_port, lambda s: s.ae_title),
    Column("primary", "primary", lambda s: fmt.pct(s.primary_used_pct), lambda s: _neg(s.primary_used_pct)),
    Column("archive", "archive", lambda s: fmt.pct(s.archive_used_pct), lambda s: _neg(s.archive_used_pct)),
    Column("ingest", "ingest/s", lambda s: fmt.rate(s.ingest_rate), lambda s: _neg(s.ingest_rate)),
    Column("queue", "queue p/f", _queue, lambda s: _neg(s.queue_failed)),
    Column("backup", "backup", lambda s: fmt.age(s.backup_age_s), lambda s: _neg(s.backup_age_s)),
    Column("check", "worst check", lambda s: fmt.clip(fmt.text(s.worst_check), 24), lambda s: s.worst_check),
    # The whole reason is on the node screen; here it must not push the table off a normal terminal.
    Column("reason", "reason", lambda s: fmt.clip(fmt.text(s.reason), 40), lambda s: s.reason),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


def _neg(value):
    """Numbers sort largest first: the fullest pool, the oldest backup, the most failures on top."""
    return None if value is None else -value


def matches(snapshot, query: str) -> bool:
    """Every word of the query appears in the node's name, site, tags or status (case-insensitive)."""
    haystack = " ".join((snapshot.name, snapshot.site or "", *snapshot.tags, snapshot.status)).lower()
    return all(word in haystack for word in query.lower().split())


def order(snapshots, column: str, reverse: bool = False) -> list:
    """Sorted by one column, missing values last whichever the direction, then by name."""
    col = next(c for c in COLUMNS if c.key == column)
    present = [s for s in snapshots if col.sort(s) is not None]
    missing = [s for s in snapshots if col.sort(s) is None]
    present.sort(key=lambda s: s.name.lower())
    present.sort(key=col.sort, reverse=reverse)  # stable, even reversed: names stay A-Z among equals
    missing.sort(key=lambda s: s.name.lower())
    return present + missing


class FleetTable(DataTable):
    """Rows keyed by node name; `show` redraws only the cells that changed unless the order did."""

    COMPONENT_CLASSES = {f"fleet-table--{status}" for status in (*STATUSES, "polling")}

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self._shown: list[str] = []
        self._cells: dict[str, tuple] = {}
        self.marked: frozenset[str] = frozenset()  # nodes marked (space) for a fleet-wide roll-out

    def on_mount(self) -> None:
        for col in COLUMNS:
            self.add_column(col.label, key=col.key)

    def _row(self, snapshot) -> tuple:
        cells = []
        for col in COLUMNS:
            value = col.cell(snapshot)
            if col.key == "node":
                value = ("● " if snapshot.name in self.marked else "  ") + value
            if col.key == "status" and f"fleet-table--{value}" in self.COMPONENT_CLASSES:
                # The colour is a component class styled in app.tcss, not a colour chosen here.
                cells.append(Text(value, style=self.get_component_rich_style(f"fleet-table--{value}", partial=True)))
            else:
                cells.append(Text(value))  # Text, not str: node data is never parsed as markup
        return tuple(cells)

    def show(
        self, snapshots, *, query: str = "", sort: str = "status", reverse: bool = False, marked=frozenset()
    ) -> None:
        self.marked = frozenset(marked)
        visible = order([s for s in snapshots if matches(s, query)], sort, reverse)
        names = [s.name for s in visible]
        rows = {s.name: self._row(s) for s in visible}
        if names == self._shown and not self._wider(rows):
            # Same rows in the same order: change only the cells that changed. (update_width=True would
            # measure the whole column again for every cell: the cost of a busy fleet's redraw.)
            for name in names:
                old = self._cells.get(name)
                for i, col in enumerate(COLUMNS):
                    if old is None or old[i] != rows[name][i]:
                        self.update_cell(name, col.key, rows[name][i])
        else:
            selected = self.selected_node
            self.clear()
            for name in names:
                self.add_row(*rows[name], key=name)
            if selected in names:
                self.move_cursor(row=names.index(selected), animate=False)
        self._shown = names
        self._cells = rows

    def _wider(self, rows: dict[str, tuple]) -> bool:
        """Does any new cell need more room than its column has?"""
        widths = [self.columns[col.key].content_width for col in COLUMNS]
        return any(cell.cell_len > widths[i] for cells in rows.values() for i, cell in enumerate(cells))

    @property
    def shown(self) -> list[str]:
        """Node names in the order they are on screen."""
        return list(self._shown)

    @property
    def selected_node(self) -> str | None:
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
