"""The Users tab: the node's agent users with role and SSH keys; add, change role, replace keys, remove."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Static

from agent.protocol import CONFLICT, INVALID_PARAMS, RPCError

from .. import user_edits as edits
from ..results import User, UsersList
from ..screens.confirm import ConfirmScreen
from ..screens.user_form import ADD, KEYS, ROLE, UserFormScreen
from ..user_edits import UserDraft
from .detail_tables import refill
from .node_pane import NodePane

EMPTY = (
    "no users yet: `a` adds one with its role and SSH key (the local account that owns node.yaml acts as admin "
    "without being one)"
)
COLUMNS = ("name", "role", "SSH keys", "password (legacy)", "created", "updated")


def _minute(at: str | None) -> str | None:
    """2026-05-01T08:00:12.345Z -> 2026-05-01 08:00Z: the minute is enough here, and the row must fit."""
    return f"{at[:16].replace('T', ' ')}Z" if at and len(at) >= 16 else at


def fill_users(table: DataTable, users: tuple[User, ...]) -> None:
    rows = [
        (
            u.name,
            (
                u.name,
                u.role,
                edits.keys_cell(u),
                "set, never checked" if u.has_password else "–",
                _minute(u.created_at),
                _minute(u.updated_at),
            ),
        )
        for u in users
    ]
    refill(table, COLUMNS, rows)


class UsersPane(NodePane):
    """users.list (admin only: another role is told so); add, change role, replace keys, remove."""

    TAB = "users"
    TITLE = "Users"
    DETAILS = {"users.list": {}}
    MUTATING = frozenset({"add", "change_role", "replace_keys", "remove"})
    FOCUS = "#users-table"
    BINDINGS = [
        Binding("a", "add", "Add user"),
        Binding("r", "change_role", "Change role"),
        Binding("k", "replace_keys", "Replace keys"),
        Binding("d", "remove", "Remove user"),
    ]

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(node_name, readonly=readonly, **kw)
        self.users: dict[str, User] = {}
        self.forbidden: RPCError | None = None  # the agent's refusal of users.list to this role, if it was
        self.hinted = False  # the note says how to add the first user
        self.listed = False  # users.list has answered once

    def compose(self) -> ComposeResult:
        yield Static(id="users-note", classes="pane-note")
        yield DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
        if not self.readonly:
            with Horizontal(classes="actions"):
                yield Button("Add", id="user-add", variant="primary", classes="mutating")
                yield Button("Change role", id="user-role", classes="mutating")
                yield Button("Replace keys", id="user-keys", classes="mutating")
                yield Button("Remove", id="user-remove", variant="error", classes="mutating")

    # --- data in ----------------------------------------------------------------------------------

    def show_detail(self, method: str, result, error) -> None:
        if method == "users.list":
            self.show(result, error)

    def show(self, result: UsersList | None, error) -> None:
        table = self.query_one("#users-table", DataTable)
        if error is not None:
            told = self.forbidden is not None  # said already: keep the note for what the person did since
            self.forbidden = error if edits.is_forbidden(error) else None
            if self.forbidden is not None:  # no rows that look like "no users"; the table keeps the focus
                self.users = {}
                fill_users(table, ())
            if not (told and self.forbidden is not None):
                self.note(edits.list_refusal(error), "error")
            return
        empty = not result.users
        if self.forbidden is not None:  # the refusal is out of date: the role was raised meanwhile
            self.note(EMPTY if empty else "")
        elif empty and not self.listed:
            self.note(EMPTY)
        elif not empty and self.hinted:
            self.note("")
        self.listed = True
        self.forbidden = None
        self.users = {u.name: u for u in result.users}
        fill_users(table, result.users)

    def note(self, line: str, kind: str = "") -> None:
        self.hinted = line == EMPTY
        super().note(line, kind)

    def selected(self) -> User | None:
        table = self.query_one("#users-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.users.get(key)

    def _may(self, action: str) -> bool:
        """A session the agent already refused users.list is told at once, not after filling in a form."""
        if self.forbidden is not None:
            self.refused(edits.refusal(action, None, self.forbidden))  # the same role, the same answer
            return False
        return True

    def _chosen(self, action: str) -> User | None:
        if not self._may(action):
            return None
        user = self.selected()
        if user is None:
            self.notify("no user selected", severity="warning")
        return user

    def _form(self, mode: str, draft: UserDraft, error: RPCError | None = None) -> UserFormScreen:
        return UserFormScreen(
            self.node_name,
            mode,
            draft,
            error=edits.form_error(error) if error is not None else None,
            error_field=error.data.get("field") if error is not None else None,
        )

    # --- actions ----------------------------------------------------------------------------------

    def add(self, draft: UserDraft | None = None, error: RPCError | None = None) -> None:
        """The form, the confirmation, then users.add; a value the agent refuses reopens the form, marked."""
        if not self._may("users.add"):
            return

        def filled(new: UserDraft | None) -> None:
            if new is None:
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("users.add", edits.add_params(new), answered)

            def answered(result, error) -> None:
                if error is None:
                    u = result.user
                    self.done(f"added {u.name} ({u.role}) on {self.node_name} with {edits.count_keys(len(u.ssh_keys))}")
                elif isinstance(error, RPCError) and error.kind in (INVALID_PARAMS, CONFLICT):
                    self.add(new, error)
                else:
                    self.refused(edits.refusal("users.add", new.name, error))

            self.app.push_screen(ConfirmScreen(edits.describe_add(new, self.node_name), "Add user"), confirmed)

        self.app.push_screen(self._form(ADD, draft or UserDraft(), error), filled)

    def change_role(self) -> None:
        user = self._chosen("users.update")
        if user is None:
            return

        def filled(new: UserDraft | None) -> None:
            if new is None:
                return
            if new.role == user.role:
                self.note(f"{user.name}: the role is {user.role} already; nothing changed")
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("users.update", edits.role_params(user, new.role), answered)

            def answered(result, error) -> None:
                if error is None:
                    self.done(f"{result.user.name} is {result.user.role} on {self.node_name} now")
                else:
                    self.refused(edits.refusal("users.update", user.name, error))

            question = edits.describe_role(user, new.role, self.node_name)
            self.app.push_screen(ConfirmScreen(question, "Change role"), confirmed)

        self.app.push_screen(self._form(ROLE, UserDraft(user.name, user.role)), filled)

    def replace_keys(self, draft: UserDraft | None = None, error: RPCError | None = None) -> None:
        user = self._chosen("users.update")
        if user is None:
            return

        def filled(new: UserDraft | None) -> None:
            if new is None:
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("users.update", edits.keys_params(user, new.keys), answered)

            def answered(result, error) -> None:
                if error is None:
                    u = result.user
                    self.done(f"{u.name} has {edits.count_keys(len(u.ssh_keys))} on {self.node_name} now")
                elif isinstance(error, RPCError) and error.kind == INVALID_PARAMS:
                    self.replace_keys(new, error)
                else:
                    self.refused(edits.refusal("users.update", user.name, error))

            question = edits.describe_keys(user, new.keys, self.node_name)
            self.app.push_screen(ConfirmScreen(question, "Replace keys"), confirmed)

        self.app.push_screen(self._form(KEYS, draft or UserDraft(user.name, user.role), error), filled)

    def remove(self) -> None:
        user = self._chosen("users.remove")
        if user is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.ask("users.remove", {"name": user.name}, answered)

        def answered(result, error) -> None:
            if error is None:
                self.done(f"removed {result.removed} from {self.node_name}")
            else:
                self.refused(edits.refusal("users.remove", user.name, error))

        self.app.push_screen(ConfirmScreen(edits.describe_remove(user, self.node_name), "Remove"), confirmed)

    def action_add(self) -> None:
        self.add()

    def action_change_role(self) -> None:
        self.change_role()

    def action_replace_keys(self) -> None:
        self.replace_keys()

    def action_remove(self) -> None:
        self.remove()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "user-add": self.add,
            "user-role": self.change_role,
            "user-keys": self.replace_keys,
            "user-remove": self.remove,
        }
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()
