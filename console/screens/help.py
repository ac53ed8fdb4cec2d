"""The help screen: every key of the console, by screen, as the bindings declare them."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

# Keys shown by their name on a keyboard, not Textual's key names.
_KEY_NAMES = {
    "slash": "/",
    "question_mark": "?",
    "escape": "Esc",
    "enter": "Enter",
    "ctrl+p": "Ctrl+P",
    "ctrl+q": "Ctrl+Q",
}


def key_label(key: str) -> str:
    return _KEY_NAMES.get(key, key)


class HelpScreen(ModalScreen[None]):
    """`sections` is [(where, [Binding, ...])], hidden (readonly) bindings already left out by the app."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close", show=False)]

    def __init__(self, sections: list[tuple[str, list[Binding]]], readonly: bool) -> None:
        super().__init__()
        self.sections = sections
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label(
                "pacsdeck console — keys"
                + ("  (read-only: actions that change a node are hidden)" if self.readonly else ""),
                classes="question",
            )
            yield DataTable(id="keys", cursor_type="none", show_cursor=False, zebra_stripes=True)
            yield Label("Esc or ? closes this screen. Ctrl+P opens the command palette.")

    def on_mount(self) -> None:
        table = self.query_one("#keys", DataTable)
        table.add_columns("where", "key", "does")
        for where, bindings in self.sections:
            for b in bindings:
                table.add_row(Text(where), Text(key_label(b.key)), Text(b.description))
