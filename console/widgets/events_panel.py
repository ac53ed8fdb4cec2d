"""The events panel: what changed in the fleet (node went down, pool over its watermark…), newest first."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from . import format as fmt

SEVERITIES = ("info", "warning", "critical")


class EventsPanel(DataTable):
    """Shows the last `limit` events; severity coloured through component classes in app.tcss."""

    COMPONENT_CLASSES = {f"events-panel--{s}" for s in SEVERITIES}

    def __init__(self, limit: int = 200, **kw) -> None:
        super().__init__(cursor_type="none", show_cursor=False, **kw)
        self.limit = limit
        self.border_title = "events"

    def on_mount(self) -> None:
        self.add_column("time", key="time")
        self.add_column("severity", key="severity")
        self.add_column("node", key="node")
        self.add_column("event", key="text")

    def show(self, events) -> None:
        """`events` oldest first, as the app keeps them."""
        self.clear()
        for event in reversed(list(events)[-self.limit :]):
            style = self.get_component_rich_style(f"events-panel--{event.severity}", partial=True)
            self.add_row(
                Text(fmt.clock(event.at)), Text(event.severity, style=style), Text(event.node), Text(event.text)
            )
