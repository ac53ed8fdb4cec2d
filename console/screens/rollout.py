"""The fleet-wide AE roll-out in the console: one AE from the form, a dry-run diff per node, then batches
that stop at the first failed node, an echo from each; the same engine as `pacsdeck fleet aets apply`."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from .. import rollout
from ..aet_edits import AetDraft
from ..aets_file import AetDefinition, AetsFileError, parse_aets
from ..transport.base import TransportError
from ..widgets.detail_tables import refill
from .aet_form import AetFormScreen
from .confirm import ConfirmScreen

COLUMNS = ("node", "plan", "state", "result")


def definition_of(draft: AetDraft) -> AetDefinition:
    """The form's draft as one AE of an AE file, checked by the file's rules (AetsFileError names the field).
    Empty host and description are left out: a node that has them keeps its own."""
    entry = {
        "ae_title": draft.ae_title,
        "operations": list(draft.operations),
        "move_destination": draft.move_destination,
        "tls": draft.tls,
    }
    if draft.host:
        entry["host"] = draft.host
    if draft.port is not None:
        entry["port"] = draft.port
    if draft.description:
        entry["description"] = draft.description
    return parse_aets({"aets": [entry]})[0]


def start(app, names: list[str], draft: AetDraft | None = None, error: str | None = None) -> None:
    """The AE form for these nodes, then the roll-out screen with its dry run."""
    where = names[0] if len(names) == 1 else f"{len(names)} nodes ({', '.join(names)})"

    def filled(new: AetDraft | None) -> None:
        if new is None:
            return
        try:
            wanted = definition_of(new)
        except AetsFileError as err:
            start(app, names, new, f"{err.field.removeprefix('aets[0].')}: {err.message}")
            return
        app.push_screen(RolloutScreen(names, wanted))

    title = f"Roll out an AE title to {where}: a dry run comes first"
    app.push_screen(AetFormScreen(where, draft, error=error, title=title), filled)


def _plan_text(node: rollout.NodeRollout) -> str:
    if node.error is not None and not node.plan:
        return f"cannot plan: {node.error}"
    parts = [rollout.change_text(c) for c in node.pending]
    if any(c.action == rollout.SAME for c in node.plan):
        parts.append(rollout.SAME)
    return "; ".join(parts)


def _result_text(node: rollout.NodeRollout) -> str:
    """What applying did (render_node's words, on one line, without the name and state: they have columns)."""
    if node.state in (rollout.PLANNED, rollout.NOT_ATTEMPTED) or (node.state == rollout.UNCHANGED and not node.echoes):
        return ""
    _first, *echoes = rollout.render_node(node).split("\n")
    if node.state == rollout.FAILED:
        detail = node.error or ""
        if node.applied:
            detail += f" (applied before it failed: {', '.join(node.applied)})"
    else:
        detail = ", ".join(node.applied)
    return "; ".join(part for part in [detail, *(e.strip() for e in echoes)] if part)


class RolloutScreen(Screen):
    """Plans on mount (every node in parallel, on a worker thread), applies on Apply after a confirmation.
    Calls go through each node's own transport in the app, so host keys, roles and the audit log apply."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("a", "apply", "Apply")]

    def __init__(self, names: list[str], wanted: AetDefinition) -> None:
        super().__init__()
        self.names = names
        self.wanted = wanted
        self.nodes: list[rollout.NodeRollout] = []
        self.phase = "planning"  # planning, planned, applying, done

    def compose(self) -> ComposeResult:
        yield Header()
        count = f"{len(self.names)} node" + ("" if len(self.names) == 1 else "s")
        yield Label(f"Roll out {self.wanted.ae_title} to {count}", classes="question")
        yield Static(Text("dry run: reading each node's AE titles …"), id="rollout-note")
        yield DataTable(id="rollout-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="rollout-detail")  # the selected node's plan and result in full: cells are cut
        with Horizontal(classes="actions"):
            yield Label("batch", classes="field-label")
            yield Input("1", id="rollout-batch", type="integer", max_length=4)
            yield Button("Apply", id="rollout-apply", variant="warning", disabled=True, classes="mutating")
            yield Button("Close", id="rollout-close")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "AE roll-out"
        self.query(".mutating").set(display=not self.app.readonly)
        self._show()
        self.query_one(DataTable).focus()
        self.run_worker(self._plan, thread=True, name="roll-out plan")

    def _transports(self) -> dict:
        return {name: self.app.nodes[name].transport or _Disconnected() for name in self.names}

    def _plan(self) -> None:
        nodes = rollout.plan(self.names, self._transports(), (self.wanted,))
        self.app.call_from_thread(self._planned, nodes)

    def _planned(self, nodes: list[rollout.NodeRollout]) -> None:
        self.nodes, self.phase = nodes, "planned"
        self.refresh_bindings()
        self._show()
        todo = sum(1 for n in nodes if n.pending)
        stops = next((n.name for n in nodes if n.error is not None), None)
        line = f"dry run, nothing changed: {todo} of {len(nodes)} nodes need a change"
        if stops:
            line += f"; applying would stop at {stops} (its plan cannot be read)"
        self.query_one("#rollout-note", Static).update(Text(line))
        self.query_one("#rollout-apply", Button).disabled = not todo or self.app.readonly

    def _show(self) -> None:
        if not self.nodes:
            rows = [(n, (n, "…", "planning", "")) for n in self.names]
        else:
            rows = [(n.name, (n.name, _plan_text(n), n.state, _result_text(n))) for n in self.nodes]
        refill(self.query_one(DataTable), COLUMNS, rows)
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        table = self.query_one(DataTable)
        node = next((n for n in self.nodes if table.row_count and n.name == self._selected(table)), None)
        text = "" if node is None else f"{node.name}: {_plan_text(node)}\n{node.state}  {_result_text(node)}".rstrip()
        self.query_one("#rollout-detail", Static).update(Text(text))

    @staticmethod
    def _selected(table: DataTable) -> str | None:
        if not 0 <= table.cursor_row < table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def _batch(self) -> int | None:
        value = self.query_one("#rollout-batch", Input).value.strip()
        if not value.isdigit() or int(value) < 1:
            self.notify("batch: a whole number of nodes, at least 1", severity="error")
            return None
        return int(value)

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "apply":
            return None if self.app.readonly or self.phase != "planned" else True
        return True

    def action_apply(self) -> None:
        batch = self._batch()
        if batch is None or self.phase != "planned" or self.app.readonly:
            return
        todo = [n.name for n in self.nodes if n.pending]
        question = (
            f"Apply {self.wanted.ae_title} to {len(todo)} nodes ({', '.join(todo)}) in batches of {batch}, "
            f"in this order, stopping at the first node that fails?"
        )

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.phase = "applying"
                self.query_one("#rollout-apply", Button).disabled = True
                self.query_one("#rollout-note", Static).update(Text(f"applying in batches of {batch} …"))
                self.run_worker(lambda: self._apply(batch), thread=True, name="roll-out apply")

        self.app.push_screen(ConfirmScreen(question, "Apply"), confirmed)

    def _apply(self, batch: int) -> None:
        started = time.perf_counter()
        rollout.apply(self.nodes, self._transports(), batch, on_node=lambda _n: self.app.call_from_thread(self._show))
        self.app.call_from_thread(self._applied, time.perf_counter() - started)

    def _applied(self, seconds: float) -> None:
        self.phase = "done"
        self.refresh_bindings()
        self._show()
        summary = rollout.render_summary(self.nodes, dry_run=False).split("\n")[-1].rsplit("; exit ", 1)[0]
        self.query_one("#rollout-note", Static).update(Text(f"done in {seconds:.1f} s: {summary}"))
        failed = next((n for n in self.nodes if n.state == rollout.FAILED), None)
        self.notify(summary, severity="error" if failed else "information")
        for name in self.names:
            self.app.refresh_node(name)

    def action_back(self) -> None:
        if self.phase == "applying":
            self.notify("the roll-out is running; it stops by itself at the end of its batches", severity="warning")
            return
        self.app.pop_screen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rollout-apply":
            self.action_apply()
        elif event.button.id == "rollout-close":
            self.action_back()


class _Disconnected:
    """A node with no transport (fixed snapshots): every call fails as unreachable, which the plan reports."""

    def call(self, method: str, params: dict | None = None, timeout: float | None = None):
        raise TransportError("not connected")
