"""The fleet screen: every node in one table, a filter, the sort column and the events panel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input

from ..aet_edits import from_refusal
from ..widgets.events_panel import EventsPanel
from ..widgets.fleet_table import COLUMN_KEYS, COLUMNS, FleetTable

REDRAW = 0.1  # seconds: the longest a new snapshot waits to be drawn


class FleetScreen(Screen):
    """Reads the app's snapshots and events; asks the app (actions) to open, trust or refresh a node."""

    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("enter", "open_node", "Open node", show=False),
        Binding("t", "trust", "Trust host"),
        Binding("r", "refresh_node", "Refresh node"),
        Binding("a", "register_refused", "Register refused AE"),
        Binding("space", "toggle_mark", "Mark"),
        Binding("A", "roll_out", "Roll out an AE"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_column = "status"
        self.sort_reverse = False
        self.query_text = ""
        self._pending: set[str] = set()  # redraws scheduled and not run yet
        self.marked: set[str] = set()  # nodes marked with space: where `A` rolls an AE out

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: name, site, tag or status (Enter keeps it, Esc clears)", id="filter")
        yield FleetTable(id="fleet")
        yield EventsPanel(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.app.fleet_changed.subscribe(self, self._fleet_changed)
        self.app.events_changed.subscribe(self, self._events_changed)
        self.redraw()
        self.query_one(EventsPanel).show(self.app.event_log)
        self.query_one(FleetTable).focus()

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    def redraw(self) -> None:
        self.table.show(
            self.app.current_snapshots(),
            query=self.query_text,
            sort=self.sort_column,
            reverse=self.sort_reverse,
            marked=self.marked,
        )
        label = next(c.label for c in COLUMNS if c.key == self.sort_column)
        arrow = "↑" if self.sort_reverse else "↓"
        shown, total = len(self.table.shown), len(self.app.fleet.nodes)
        where = f" · filter {self.query_text!r}" if self.query_text else ""
        marks = f" · {len(self.marked)} marked" if self.marked else ""
        self.sub_title = f"{shown}/{total} nodes · sort {label} {arrow}{where}{marks}"

    def _fleet_changed(self, _name) -> None:
        self._later("table", self.redraw)

    def _events_changed(self, _events) -> None:
        self._later("events", lambda: self.query_one(EventsPanel).show(self.app.event_log))
        self.refresh_bindings()  # a new refusal of the selected node: `a` can fix it

    def _later(self, what: str, draw) -> None:
        """Snapshots arrive one by one (50 nodes: 50 a round); draw at most every REDRAW seconds, so a
        busy fleet costs one redraw per interval, not one per node."""
        if what in self._pending:
            return

        def run() -> None:
            self._pending.discard(what)
            draw()

        self._pending.add(what)
        self.set_timer(REDRAW, run)

    # --- filter -----------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("open")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("open")
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("open")
        self.query_text = ""
        self.redraw()
        self.table.focus()

    def set_filter(self, text: str) -> None:
        """From the command palette: show the box with this text."""
        box = self.query_one("#filter", Input)
        box.value = text
        box.set_class(bool(text), "open")
        self.query_text = text.strip()
        self.redraw()

    # --- sort -------------------------------------------------------------------------------------

    def action_sort_next(self) -> None:
        i = COLUMN_KEYS.index(self.sort_column)
        self.sort_column = COLUMN_KEYS[(i + 1) % len(COLUMN_KEYS)]
        self.sort_reverse = False
        self.redraw()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.redraw()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table is not self.table:
            return
        key = event.column_key.value
        if key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = key, False
        self.redraw()

    # --- rows -------------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is self.table:
            self.app.open_node(event.row_key.value)

    def action_open_node(self) -> None:
        if self.table.selected_node:
            self.app.open_node(self.table.selected_node)

    def action_trust(self) -> None:
        name = self.table.selected_node
        if name:
            self.app.start_trust(name)

    def _fixable_refusal(self):
        """The newest event of the selected node about a sender refused for not being registered."""
        name = self.table.selected_node if self.query(FleetTable) else None
        for event in reversed(self.app.event_log):
            if event.node == name and event.association is not None and from_refusal(event.association):
                return event
        return None

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "register_refused":
            return not self.app.readonly and self._fixable_refusal() is not None
        if action == "roll_out":
            return not self.app.readonly
        return True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is self.table:
            self.refresh_bindings()

    def action_register_refused(self) -> None:
        """The fix of the fleet event "CT9 was refused by site-b: not registered": that node's add form, filled in."""
        event = self._fixable_refusal()
        if event is not None:
            self.app.open_node(event.node, fix=event.association)

    # --- marks and the roll-out -------------------------------------------------------------------

    def action_toggle_mark(self) -> None:
        name = self.table.selected_node
        if name:
            self.marked ^= {name}
            self.redraw()
            if self.table.cursor_row < self.table.row_count - 1:
                self.table.move_cursor(row=self.table.cursor_row + 1)  # space, space, space marks a run of nodes

    def rollout_targets(self) -> list[str]:
        """The marked nodes in fleet order (the first is the canary), else the selected one."""
        if self.marked:
            return [e.name for e in self.app.fleet.nodes if e.name in self.marked]
        return [self.table.selected_node] if self.table.selected_node else []

    def action_roll_out(self) -> None:
        names = self.rollout_targets()
        if names:
            self.app.start_rollout(names)

    def action_refresh_node(self) -> None:
        name = self.table.selected_node
        if name:
            self.app.refresh_node(name)
