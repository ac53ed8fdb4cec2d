"""The AE titles tab: the node's registered AEs, and add, edit, remove and echo, each confirmed and its result shown."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Static

from agent.protocol import CONFLICT, INVALID_PARAMS, RPCError

from .. import aet_edits as edits
from ..aet_edits import AetDraft
from ..results import Aet, AetsList, Association, Discover, Echo, failure
from ..screens.aet_form import AetFormScreen
from ..screens.confirm import ConfirmScreen
from . import format as fmt
from .detail_tables import refill
from .node_pane import NodePane

COLUMNS = ("AE title", "host", "port", "operations", "move destination", "TLS", "last association", "description")


def last_seen(entries: Sequence[Association]) -> dict[str, Association]:
    """The newest association of each calling AE title among `entries` (associations.recent)."""
    newest: dict[str, Association] = {}
    for a in entries:
        if a.calling_ae and (
            a.calling_ae not in newest or (a.started_at or "") > (newest[a.calling_ae].started_at or "")
        ):
            newest[a.calling_ae] = a
    return newest


def _seen(a: Association | None) -> str:
    return fmt.DASH if a is None else f"{fmt.text(a.started_at)} {fmt.text(a.result)}"


def fill_aets(table: DataTable, aets: tuple[Aet, ...], seen: dict[str, Association]) -> None:
    rows = [
        (
            a.ae_title,
            (
                a.ae_title,
                a.host,
                a.port,
                ", ".join(a.operations) or "none",
                "yes" if a.move_destination else "no",
                "yes" if a.tls else "no",
                _seen(seen.get(a.ae_title)),
                a.description,
            ),
        )
        for a in aets
    ]
    refill(table, COLUMNS, rows)


class AetsPane(NodePane):
    """aets.list with each AE's last association (associations.recent, from the screen); add, edit, remove, echo."""

    TAB = "aets"
    TITLE = "AE titles"
    DETAILS = {"aets.list": {}}
    MUTATING = frozenset({"add", "edit", "remove"})
    FOCUS = "#aets-table"
    BINDINGS = [
        Binding("a", "add", "Add AE"),
        Binding("u", "edit", "Edit AE"),
        Binding("d", "remove", "Remove AE"),
        Binding("E", "echo", "Echo AE"),
    ]

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(node_name, readonly=readonly, **kw)
        self.aets: dict[str, Aet] = {}
        self.seen: dict[str, Association] = {}  # the newest association of each calling AE the node logged
        self.port_required: bool | None = None  # does this node's aets.add demand a port? (rpc.discover, once)

    def compose(self) -> ComposeResult:
        yield Static(id="aets-note", classes="pane-note")
        yield DataTable(id="aets-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="actions"):
            if not self.readonly:
                yield Button("Add", id="aet-add", variant="primary", classes="mutating")
                yield Button("Edit", id="aet-edit", classes="mutating")
                yield Button("Remove", id="aet-remove", variant="error", classes="mutating")
            yield Button("Echo", id="aet-echo")

    # --- data in ----------------------------------------------------------------------------------

    def show_detail(self, method: str, result, error) -> None:
        if method == "aets.list":
            self.show(result, error)

    def show(self, result: AetsList | None, error) -> None:
        table = self.query_one("#aets-table", DataTable)
        if error is not None:
            self.note(failure("aets.list", error))
            return
        self.aets = {a.ae_title: a for a in result.aets}
        fill_aets(table, result.aets, self.seen)

    def show_activity(self, entries: Sequence[Association]) -> None:
        """associations.recent, for each AE's last association and its result."""
        self.seen = last_seen(entries)
        if self.aets:
            fill_aets(self.query_one("#aets-table", DataTable), tuple(self.aets.values()), self.seen)

    def selected(self) -> Aet | None:
        table = self.query_one("#aets-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.aets.get(key)

    # --- actions ----------------------------------------------------------------------------------

    def add(self, draft: AetDraft | None = None, note: str | None = None, error: RPCError | None = None) -> None:
        """The form (pre-filled with `draft`), the confirmation, then aets.add; a refused value reopens the form."""

        def filled(new: AetDraft | None) -> None:
            if new is None:
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("aets.add", edits.add_params(new), answered)

            def answered(result, error) -> None:
                if error is None:
                    a = result.aet
                    self.done(f"registered {a.ae_title} on {self.node_name} ({a.host}:{fmt.text(a.port)})")
                elif isinstance(error, RPCError) and error.kind in (INVALID_PARAMS, CONFLICT):
                    self.add(new, note, error)  # the agent's words, in the form, on the field it names
                else:
                    self.refused(edits.refusal(f"aets.add {new.ae_title}", error))

            # Adding is undone by Remove and the question says exactly what gets in: Yes is the default,
            # so a refused sender is let in with `a`, Enter, Enter.
            self.app.push_screen(
                ConfirmScreen(edits.describe_add(new, self.node_name), "Register", default=True), confirmed
            )

        self.app.push_screen(self._form(draft, note=note, error=error), filled)

    def register(self, association: Association) -> None:
        """The one-key fix: the add form filled in from a refused association (what rpc.discover says aets.add
        needs decides whether a port is filled in), then as add()."""

        def known(result: Discover | None, error) -> None:
            add = result.method("aets.add") if result is not None else None
            # An agent that cannot say is taken to be the strict one: a port it did not need is harmless.
            self.port_required = add is None or add.requires("port")
            self.register(association)

        if self.port_required is None:
            self.ask("rpc.discover", {}, known, read_only=True)
            return
        draft = edits.from_refusal(association, self.port_required)
        if draft is None:
            self.notify("this association was not refused for an unregistered AE", severity="warning")
            return
        port = (
            f"port {draft.port} is DICOM's default, used only if this node ever calls it"
            if draft.port is not None
            else "no port: the node never calls a store-only sender"
        )
        self.add(
            draft,
            note=f"{draft.ae_title} from {draft.host} was refused: not registered. Operations: store (what it "
            f"tried); {port}.",
        )

    def _form(self, draft, *, editing: bool = False, note=None, error: RPCError | None = None) -> AetFormScreen:
        return AetFormScreen(
            self.node_name,
            draft,
            editing=editing,
            note=note,
            error=edits.refusal("the node refused it", error) if error is not None else None,
            error_field=error.data.get("field") if error is not None else None,
        )

    def edit(self, draft: AetDraft | None = None, error: RPCError | None = None) -> None:
        old = self.selected()
        if old is None:
            self.notify("no AE title selected", severity="warning")
            return

        def filled(new: AetDraft | None) -> None:
            if new is None:
                return
            params = edits.update_params(old, new)
            if len(params) == 1:
                self.note(f"{old.ae_title}: nothing changed")
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("aets.update", params, answered)

            def answered(result, error) -> None:
                if error is None:
                    self.done(f"changed {result.aet.ae_title} on {self.node_name}")
                elif isinstance(error, RPCError) and error.kind == INVALID_PARAMS:
                    self.edit(new, error)
                else:
                    self.refused(edits.refusal(f"aets.update {old.ae_title}", error))

            self.app.push_screen(ConfirmScreen(edits.describe_update(old, params, self.node_name), "Save"), confirmed)

        self.app.push_screen(self._form(draft or edits.draft_of(old), editing=True, error=error), filled)

    def remove(self) -> None:
        aet = self.selected()
        if aet is None:
            self.notify("no AE title selected", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.ask("aets.remove", {"ae_title": aet.ae_title}, answered)

        def answered(result, error) -> None:
            if error is None:
                self.done(f"removed {result.removed} from {self.node_name}")
            else:
                self.refused(edits.refusal(f"aets.remove {aet.ae_title}", error))

        self.app.push_screen(ConfirmScreen(edits.describe_remove(aet, self.node_name), "Remove"), confirmed)

    def echo(self) -> None:
        """aets.echo changes nothing on the node: allowed in a read-only console (the agent still wants operator)."""
        aet = self.selected()
        if aet is None:
            self.notify("no AE title selected", severity="warning")
            return
        self.note(f"echo {aet.ae_title}: calling {fmt.text(aet.host)}:{fmt.text(aet.port)} …")

        def answered(result: Echo | None, error) -> None:
            if error is not None:
                self.refused(edits.refusal(f"aets.echo {aet.ae_title}", error))
                return
            line = edits.echo_line(aet.ae_title, result)
            self.note(line, "ok" if result.ok else "error")
            self.notify(line, severity="information" if result.ok else "error")

        self.ask("aets.echo", {"ae_title": aet.ae_title}, answered, read_only=True)

    def action_add(self) -> None:
        self.add()

    def action_edit(self) -> None:
        self.edit()

    def action_remove(self) -> None:
        self.remove()

    def action_echo(self) -> None:
        self.echo()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"aet-add": self.add, "aet-edit": self.edit, "aet-remove": self.remove, "aet-echo": self.echo}
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()
