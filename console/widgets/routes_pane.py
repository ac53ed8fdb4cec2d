"""The Routes tab: the node's auto-routing rules, and add and remove, each confirmed and its result shown."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Static

from agent.protocol import CONFLICT, INVALID_PARAMS, RPCError

from .. import route_edits as edits
from ..aet_edits import refusal
from ..results import Aet, Route, RoutesList
from ..route_edits import RouteDraft
from ..screens.confirm import ConfirmScreen
from ..screens.route_form import RouteFormScreen
from .detail_tables import refill
from .node_pane import NodePane

COLUMNS = ("name", "match", "destinations", "created")


def fill_routes(table: DataTable, routes: tuple[Route, ...]) -> None:
    rows = [(r.name, (r.name, edits.match_text(r.match), ", ".join(r.destinations), r.created_at)) for r in routes]
    refill(table, COLUMNS, rows)


class RoutesPane(NodePane):
    """routes.list, and the node's AEs (aets.list) to choose destinations from; add and remove (admin only)."""

    TAB = "routes"
    TITLE = "Routes"
    DETAILS = {"routes.list": {}, "aets.list": {}}
    MUTATING = frozenset({"add", "remove"})
    FOCUS = "#routes-table"
    BINDINGS = [
        Binding("a", "add", "Add route"),
        Binding("d", "remove", "Remove route"),
    ]

    def __init__(self, node_name: str, *, readonly: bool, **kw) -> None:
        super().__init__(node_name, readonly=readonly, **kw)
        self.routes: dict[str, Route] = {}
        self.aets: tuple[Aet, ...] = ()
        self.status_shown = True  # the note says what the list is (empty, unreadable), not an action's result

    def compose(self) -> ComposeResult:
        yield Static(id="routes-note", classes="pane-note")
        yield DataTable(id="routes-table", cursor_type="row", zebra_stripes=True)
        if not self.readonly:
            with Horizontal(classes="actions"):
                yield Button("Add", id="route-add", variant="primary", classes="mutating")
                yield Button("Remove", id="route-remove", variant="error", classes="mutating")

    # --- data in ----------------------------------------------------------------------------------

    def show_detail(self, method: str, result, error) -> None:
        if method == "routes.list":
            self.show(result, error)
        elif method == "aets.list" and error is None:
            self.aets = result.aets

    def show(self, result: RoutesList | None, error) -> None:
        if error is not None:
            # routes.* are admin-only, reads included: a viewer or operator is told so, not shown an empty list.
            self._status(edits.unreadable("routes.list", error), "error")
            return
        self.routes = {r.name: r for r in result.routes}
        fill_routes(self.query_one("#routes-table", DataTable), result.routes)
        empty = "no routes: new instances stay on this node" + ("" if self.readonly else "; a adds one")
        self._status("" if result.routes else empty)

    def _status(self, line: str, kind: str = "") -> None:
        """What the list says in the note, unless the note holds an action's result (kept until the next)."""
        if self.status_shown or not str(self.query_one("#routes-note", Static).render()):
            super().note(line, kind)
            self.status_shown = True

    def note(self, line: str, kind: str = "") -> None:
        super().note(line, kind)
        self.status_shown = False  # an action's result: a refresh does not overwrite it

    def selected(self) -> Route | None:
        table = self.query_one("#routes-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self.routes.get(key)

    # --- actions ----------------------------------------------------------------------------------

    def add(self, draft: RouteDraft | None = None, error: RPCError | None = None) -> None:
        """The form (pre-filled with `draft`), the confirmation, then routes.add; a refused value reopens the form."""

        def filled(new: RouteDraft | None) -> None:
            if new is None:
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.ask("routes.add", edits.add_params(new), answered)

            def answered(result, error) -> None:
                if error is None:
                    r = result.route
                    self.done(
                        f"added route {r.name} on {self.node_name}: {edits.match_text(r.match)} → "
                        f"{', '.join(r.destinations)}"
                    )
                elif isinstance(error, RPCError) and error.kind in (INVALID_PARAMS, CONFLICT):
                    self.add(new, error)  # the agent's words, in the form, on the field it names
                else:
                    self.refused(refusal(f"routes.add {new.name}", error))

            self.app.push_screen(ConfirmScreen(edits.describe_add(new, self.node_name), "Add route"), confirmed)

        form = RouteFormScreen(
            self.node_name,
            self.aets,
            draft,
            error=refusal("the node refused it", error) if error is not None else None,
            error_field=error.data.get("field") if error is not None else None,
        )
        self.app.push_screen(form, filled)

    def remove(self) -> None:
        route = self.selected()
        if route is None:
            self.notify("no route selected", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.ask("routes.remove", {"name": route.name}, answered)

        def answered(result, error) -> None:
            if error is None:
                self.done(f"removed route {result.removed} from {self.node_name}")
            else:
                self.refused(refusal(f"routes.remove {route.name}", error))

        self.app.push_screen(ConfirmScreen(edits.describe_remove(route, self.node_name), "Remove"), confirmed)

    def action_add(self) -> None:
        self.add()

    def action_remove(self) -> None:
        self.remove()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"route-add": self.add, "route-remove": self.remove}
        if event.button.id in actions:
            event.stop()
            actions[event.button.id]()
