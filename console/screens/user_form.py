"""The form to add a user, change a user's role or replace its SSH keys: fields in, a UserDraft out."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ..user_edits import ROLES, KeyProblem, UserDraft, parse_keys, read_key_file
from .form import FormScreen

ADD, ROLE, KEYS = "add", "role", "keys"


class UserFormScreen(FormScreen):
    """Dismisses with the draft on Save (or Enter in a one-line field), None on Cancel or Esc.

    `mode` is ADD (name, role, keys), ROLE (the role only) or KEYS (the keys only: pasted lines, a .pub
    file's path, or both). No password: nothing in pacsdeck logs in with one. `error` is what the agent
    said of the last attempt, shown above the fields with its field marked."""

    def __init__(
        self,
        node: str,
        mode: str = ADD,
        draft: UserDraft | None = None,
        *,
        error: str | None = None,
        error_field: str | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.mode = mode
        self.draft = draft or UserDraft()
        self.error = error
        # The agent names a key as ssh_keys[2]: the pasted keys' box is where it gets fixed.
        self.error_field = "keys" if (error_field or "").startswith("ssh_keys") else error_field

    def compose(self) -> ComposeResult:
        d = self.draft
        title = {
            ADD: f"Add a user on {self.node}",
            ROLE: f"Change {d.name}'s role on {self.node}",
            KEYS: f"Replace {d.name}'s SSH keys on {self.node}",
        }[self.mode]
        with Vertical(classes="dialog user-form"):
            yield Label(title, classes="question")
            shown = "form-error" + ("" if self.error else " empty")
            yield Static(Text(self.error or ""), id="form-error", classes=shown)
            if self.mode == ADD:
                with Horizontal(classes="field"):
                    yield Label("name", classes="field-label")
                    yield Input(d.name, id="name", max_length=32, placeholder="lowercase letters, digits, _ . -")
            if self.mode in (ADD, ROLE):
                with Horizontal(classes="field"):
                    yield Label("role", classes="field-label")
                    yield Select([(r, r) for r in ROLES], value=d.role, allow_blank=False, id="role")
            if self.mode in (ADD, KEYS):
                with Horizontal(classes="field"):
                    yield Label("SSH public keys", classes="field-label")
                    yield TextArea("\n".join(d.keys), id="keys", soft_wrap=True, show_line_numbers=False)
                with Horizontal(classes="field"):
                    yield Label("or a .pub file", classes="field-label")
                    yield Input(id="key_file", placeholder="e.g. ~/.ssh/id_ed25519.pub (read by this console)")
                hint = "one key per line (ssh-ed25519 AAAA… alice@laptop), or a .pub file's path"
                if self.mode == KEYS:
                    hint += "; these replace every key the user has (none: the user can no longer log in)"
                yield Static(hint, id="form-note")
            with Horizontal(classes="buttons"):
                yield Button("Add" if self.mode == ADD else "Save", id="save", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        if self.error_field and self.query(f"#{self.error_field}"):
            field = self.query_one(f"#{self.error_field}")
            field.add_class("invalid")
            field.focus()
        else:
            self.query_one({ADD: "#name", ROLE: "#role", KEYS: "#keys"}[self.mode]).focus()

    def _read(self) -> UserDraft | None:
        """The fields as a draft, or None after showing what is wrong (the agent checks the rest)."""
        name = self.query_one("#name", Input).value.strip() if self.mode == ADD else self.draft.name
        if self.mode == ADD and not name:
            return self._invalid("name", "name: give the user's name")
        role = self.query_one("#role", Select).value if self.mode in (ADD, ROLE) else self.draft.role
        keys = self.draft.keys
        if self.mode in (ADD, KEYS):
            try:
                keys = parse_keys(self.query_one("#keys", TextArea).text, "pasted key", read_paths=True)
            except KeyProblem as err:
                return self._invalid("keys", str(err))
            path = self.query_one("#key_file", Input).value.strip()
            if path:
                try:
                    keys = tuple(dict.fromkeys(keys + read_key_file(path)))
                except KeyProblem as err:
                    return self._invalid("key_file", str(err))
        return UserDraft(name=name, role=str(role), keys=keys)
