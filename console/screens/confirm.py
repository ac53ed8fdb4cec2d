"""A yes/no question before an action that changes a node (cancel a job, run a migration)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True only on the explicit button; Escape or No is False. The arrow keys move between
    the two; `default` says which has the focus first (No unless the caller says the change is safe)."""

    BINDINGS = [
        Binding("escape", "dismiss(False)", "No"),
        Binding("left,right", "app.focus_next", "Yes / No", show=False),
    ]

    def __init__(self, question: str, yes_label: str, *, default: bool = False) -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes_label, id="yes", variant="warning")
                yield Button("No", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes" if self.default else "#no", Button).focus()  # the safe answer, unless told

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
