"""The Audit tab: who called what on the node, newest first, filtered by user and method (audit.recent)."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Static

from ..results import AuditEntry, AuditRecent
from ..route_edits import unreadable
from . import format as fmt
from .detail_tables import refill
from .node_pane import NodePane

COLUMNS = ("at", "user", "method", "result", "params", "message")
LIMIT = 200
PARAMS_WIDTH = 60  # the params cell is a summary: the row must stay one line


def params_summary(params: dict) -> str:
    """`name=ct, destinations=["A"]`: each param as key=JSON value, cut to one table cell."""
    parts = [f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in params.items()]
    return fmt.clip(", ".join(parts), PARAMS_WIDTH) if parts else fmt.DASH


class AuditPane(NodePane):
    """audit.recent with the filters typed above the table (Enter applies; kept across refreshes)."""

    TAB = "audit"
    TITLE = "Audit"
    DETAILS = {"audit.recent": {"limit": LIMIT}}
    FOCUS = "#audit-table"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "leave_filter", "Back to the table", show=False),
    ]
    COMPONENT_CLASSES = {"audit-pane--failed"}  # a call that did not go through: coloured in app.tcss

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(node_name, readonly=readonly, **kw)
        self.filters: dict[str, str] = {}
        self.entries: tuple[AuditEntry, ...] = ()
        # The screen asks this pane's DETAILS on every refresh: the instance's own, filters included.
        self.DETAILS = {"audit.recent": {"limit": LIMIT}}

    def compose(self) -> ComposeResult:
        with Horizontal(id="audit-filters"):
            yield Label("user", classes="filter-label")
            yield Input(id="audit-user", placeholder="e.g. alice or local:root (Enter applies)")
            yield Label("method", classes="filter-label")
            yield Input(id="audit-method", placeholder="e.g. routes.add (Enter applies)")
        yield Static(id="audit-note", classes="pane-note")
        yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)

    # --- data in ----------------------------------------------------------------------------------

    def show_detail(self, method: str, result, error) -> None:
        if method == "audit.recent":
            self.show(result, error)

    def show(self, result: AuditRecent | None, error) -> None:
        if error is not None:
            self.note(unreadable("audit.recent", error), "error")
            return
        self.entries = result.entries
        failed = self.get_component_rich_style("audit-pane--failed", partial=True)
        rows = []
        for e in result.entries:
            cells = (e.at, e.user, e.method, e.result, params_summary(e.params), e.message)
            style = failed if e.result != "ok" else ""
            rows.append((str(e.id), tuple(Text(fmt.text(c), style=style) for c in cells)))
        refill(self.query_one("#audit-table", DataTable), COLUMNS, rows)
        counted = f"{len(rows)} {'entry' if len(rows) == 1 else 'entries'}"
        shown = ", ".join(f"{k} {v}" for k, v in self.filters.items())
        if shown:
            self.note(f"{counted} with {shown}" if rows else f"no entries with {shown}")
        else:
            self.note(f"{counted}, newest first" if rows else "nothing audited yet")

    # --- the filters ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "leave_filter":  # Esc in a filter leaves it; on the table Esc is the screen's Back
            return isinstance(self.app.focused, Input) and self.app.focused.parent is self.query_one("#audit-filters")
        return super().check_action(action, parameters)

    def action_filter(self) -> None:
        self.query_one("#audit-user", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#audit-table", DataTable).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        typed = {
            "user": self.query_one("#audit-user", Input).value.strip(),
            "method": self.query_one("#audit-method", Input).value.strip(),
        }
        self.filters = {k: v for k, v in typed.items() if v}
        self.DETAILS = {"audit.recent": {"limit": LIMIT, **self.filters}}
        self.ask(
            "audit.recent",
            self.DETAILS["audit.recent"],
            lambda result, error: self.show(result, error),
            read_only=True,
        )
