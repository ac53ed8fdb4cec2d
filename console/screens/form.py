"""The base of the console's edit forms (AE title, user, route): Save or Enter reads the fields, Esc cancels."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class FormScreen(ModalScreen):
    """Dismisses with what `_read()` makes of the fields (a draft), or None on Cancel or Esc. `_read()` returns
    None after `_invalid()` has said what is wrong; the form has a `#form-error` line and a `#save` button."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def _read(self):
        raise NotImplementedError

    def _mark(self, selector: str) -> None:
        """The field marked invalid and focused."""
        widget = self.query_one(selector)
        widget.add_class("invalid")
        widget.focus()

    def _invalid(self, field: str, message: str) -> None:
        """Say what is wrong above the fields and mark the field (an id, or a selector starting with #)."""
        error = self.query_one("#form-error", Static)
        error.update(Text(message))
        error.remove_class("empty")
        self.query(".invalid").remove_class("invalid")
        self._mark(field if field.startswith("#") else f"#{field}")
        return None

    def _submit(self) -> None:
        draft = self._read()
        if draft is not None:
            self.dismiss(draft)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self._submit()
        else:
            self.dismiss(None)
