"""The form to register or change an AE title: fields in, an AetDraft out (the node screen confirms and calls)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, Static

from ..aet_edits import OPERATIONS, AetDraft
from .form import FormScreen


class AetFormScreen(FormScreen):
    """Dismisses with the draft on Save (or Enter in a field), None on Cancel or Esc.

    `error` is what the agent said of the last attempt (shown above the fields, its field marked);
    `note` says where a pre-filled value came from."""

    def __init__(
        self,
        node: str,
        draft: AetDraft | None = None,
        *,
        editing: bool = False,
        error: str | None = None,
        error_field: str | None = None,
        note: str | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.node = node
        self.draft = draft or AetDraft()
        self.editing = editing
        self.error = error
        self.error_field = error_field
        self.note = note

    def compose(self) -> ComposeResult:
        d = self.draft
        title = self.title_text or (
            f"Change {d.ae_title} on {self.node}" if self.editing else f"Register an AE title on {self.node}"
        )
        with Vertical(classes="dialog aet-form"):
            yield Label(title, classes="question")
            if self.note:
                yield Static(Text(self.note), id="form-note")
            shown = "form-error" + ("" if self.error else " empty")
            yield Static(Text(self.error or ""), id="form-error", classes=shown)
            with Horizontal(classes="field"):
                yield Label("AE title", classes="field-label")
                yield Input(d.ae_title, id="ae_title", max_length=16, disabled=self.editing)
            with Horizontal(classes="field"):
                yield Label("host", classes="field-label")
                yield Input(d.host, id="host", placeholder="host name or IP address")
            with Horizontal(classes="field"):
                yield Label("port", classes="field-label")
                yield Input(
                    "" if d.port is None else str(d.port), id="port", type="integer", placeholder="DICOM port, 1-65535"
                )
            with Horizontal(classes="field"):
                yield Label("description", classes="field-label")
                yield Input(d.description, id="description")
            with Horizontal(classes="field"):
                yield Label("operations", classes="field-label")
                for op in OPERATIONS:
                    yield Checkbox(op, op in d.operations, id=f"op-{op}")
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox("C-MOVE destination", d.move_destination, id="move_destination")
                yield Checkbox("TLS", d.tls, id="tls")
            with Horizontal(classes="buttons"):
                yield Button("Save" if self.editing else "Register", id="save", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        if self.error_field and self.query(f"#{self.error_field}"):
            field = self.query_one(f"#{self.error_field}")
            field.add_class("invalid")
            field.focus()
        elif self.draft.ae_title:  # pre-filled (an edit, or the fix of a refusal): Enter saves it
            self.query_one("#save", Button).focus()
        else:
            self.query_one("#ae_title", Input).focus()

    def _read(self) -> AetDraft | None:
        """The fields as a draft, or None after showing what is missing (the agent checks the rest)."""
        value = {name: self.query_one(f"#{name}", Input).value.strip() for name in ("ae_title", "host", "port")}
        port = None
        if value["port"]:
            try:
                port = int(value["port"])
            except ValueError:
                return self._invalid("port", "port: a number, 1-65535")
        if not value["ae_title"]:
            return self._invalid("ae_title", "ae_title: give the AE title")
        return AetDraft(
            ae_title=value["ae_title"],
            host=value["host"],
            port=port,
            description=self.query_one("#description", Input).value.strip(),
            operations=tuple(op for op in OPERATIONS if self.query_one(f"#op-{op}", Checkbox).value),
            move_destination=self.query_one("#move_destination", Checkbox).value,
            tls=self.query_one("#tls", Checkbox).value,
        )
