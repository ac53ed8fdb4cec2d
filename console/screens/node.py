"""One node up close: overview, health with sparklines, storage and migration, queues, associations, and the
tabs that manage the node (console.widgets.node_pane: AE titles, …)."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static, TabbedContent, TabPane

from ..aet_edits import from_refusal
from ..results import Association, Cancelled, Migration, QueueList, Retried, failure, read_answer
from ..widgets import format as fmt
from ..widgets.aets_pane import AetsPane
from ..widgets.audit_pane import AuditPane
from ..widgets.detail_tables import (
    check_extras,
    fill_associations,
    fill_checks,
    fill_jobs,
    fill_plan,
    fill_pools,
    job_extras,
    overview_text,
    plan_note,
)
from ..widgets.log_pane import LogPane
from ..widgets.node_pane import NodePane
from ..widgets.routes_pane import RoutesPane
from ..widgets.spark import Spark, trends
from ..widgets.users_pane import UsersPane
from .confirm import ConfirmScreen
from .row_detail import RowDetailScreen

# What the node screen asks the agent for besides the poll (the poll's raw results are reused).
DETAILS = {"pools.list": {}, "queue.list": {"limit": 200}, "associations.recent": {"limit": 100}}
# The managing tabs, in tab order after the five fixed ones; each asks for its own DETAILS and owns its keys.
PANES: tuple[type[NodePane], ...] = (AetsPane, UsersPane, RoutesPane, AuditPane, LogPane)
# Number keys switch tabs wherever the focus is (a newcomer found no key that did, issue 17): 1-9, then 0.
TAB_KEYS = "1234567890"
FIXED_TABS = (
    ("overview", "Overview"),
    ("health", "Health"),
    ("storage", "Storage"),
    ("queues", "Queues"),
    ("associations", "Associations"),
)
# The widget of each fixed tab that takes the focus when it opens, so the arrow keys act at once (issue 17: they
# moved nothing until Tab); the managing tabs name theirs in NodePane.FOCUS.
FIXED_FOCUS = {
    "overview": "#overview-scroll",
    "health": "#checks",
    "storage": "#pools",
    "queues": "#jobs",
    "associations": "#associations-table",
}
MUTATING_ACTIONS = {"retry_job", "cancel_job", "run_migration", "register_calling_ae"}
# Screen actions that belong to one tab: shown in the footer, and bound, only while that tab is open (a job
# cancelled from a tab where its row cannot be seen is a surprise; issue 17).
TAB_ACTIONS = {
    "register_calling_ae": "associations",
    "retry_job": "queues",
    "cancel_job": "queues",
    "run_migration": "storage",
}


class NodeScreen(Screen):
    """Attributes from the app (snapshot, history, details); actions go back to the app as node calls."""

    AUTO_FOCUS = FIXED_FOCUS["overview"]
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "refresh", "Refresh"),
        Binding("v", "show_row", "Row detail"),
        Binding("p", "plan_migration", "Migration plan"),
        Binding("m", "run_migration", "Run migration"),
        Binding("e", "retry_job", "Retry job"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("a", "register_calling_ae", "Register this AE"),
    ] + [
        Binding(key, f"show_tab('{tab}')", f"{title} tab", show=False)
        for key, (tab, title) in zip(TAB_KEYS, FIXED_TABS + tuple((p.TAB, p.TITLE) for p in PANES), strict=False)
    ]

    def __init__(self, name: str, fix: Association | None = None) -> None:
        super().__init__()
        self.node_name = name
        self.fix = fix  # a refused association to register as soon as the screen is up (from a fleet event)
        self.details: dict[str, object] = {}  # method -> the agent's answer as it came, or the error
        self._inflight = 0  # detail calls sent and not answered yet
        self.associations: dict[str, Association] = {}  # the Associations tab's rows by key
        # Fields a row has beyond its columns, for the row detail: table id -> row key -> (name, value).
        self.row_extras: dict[str, dict[str, list[tuple[str, str]]]] = {}

    def compose(self) -> ComposeResult:
        readonly = self.app.locked_readonly  # started --readonly: mutating buttons are never even built
        yield Header()
        with Horizontal(id="node-title"):
            yield Static(self.node_name, id="node-name")
            yield Label("", id="node-status")
            yield Static(id="node-reason")
        with TabbedContent(initial="overview"):
            with TabPane("Overview", id="overview"):
                yield VerticalScroll(Static(id="overview-text"), id="overview-scroll")
            with TabPane("Health", id="health"):
                yield DataTable(id="checks", cursor_type="row", zebra_stripes=True)
                yield Label("ingest, instances/s", id="ingest-label", classes="spark-label")
                yield Spark(floor=0.0, id="ingest-spark")  # a rate: 0 is an empty line, whatever else was seen
                yield Label("free disk space", id="free-label", classes="spark-label")
                # Its own min..max, at least 1 GiB wide: a drop shows, a few kilobytes of noise do not.
                yield Spark(least=2**30, id="free-spark")
            with TabPane("Storage", id="storage"):
                yield DataTable(id="pools", cursor_type="row", zebra_stripes=True)
                with Horizontal(classes="actions"):
                    yield Button("Migration plan", id="plan-migration")
                    if not readonly:
                        yield Button("Run migration", id="run-migration", variant="warning", classes="mutating")
                yield Static(id="plan-note")
                yield DataTable(id="plan", cursor_type="row", zebra_stripes=True)
            with TabPane("Queues", id="queues"):
                yield Static(id="queue-note")
                yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
                if not readonly:
                    with Horizontal(classes="actions mutating"):
                        yield Button("Retry job", id="retry-job", variant="primary")
                        yield Button("Cancel job", id="cancel-job", variant="error")
            with TabPane("Associations", id="associations"):
                yield DataTable(id="associations-table", cursor_type="row", zebra_stripes=True)
            for pane in PANES:
                with TabPane(pane.TITLE, id=pane.TAB):
                    yield pane(self.node_name, readonly=readonly, id=f"{pane.TAB}-pane")
        yield Footer()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_mount(self) -> None:
        self.sub_title = self.node_name
        self.query(".mutating").set(display=not self.app.readonly)
        self.app.fleet_changed.subscribe(self, self._fleet_changed)
        self.show_snapshot()
        if self.fix is not None and not self.app.readonly:
            # The fix first: its one call (rpc.discover) then goes ahead of the tabs' details.
            self.query_one(TabbedContent).active = "associations"
            self.query_one(AetsPane).register(self.fix)
        self.refresh_details()

    # --- data in ----------------------------------------------------------------------------------

    @property
    def snapshot(self):
        return self.app.snapshot(self.node_name)

    def _fleet_changed(self, name) -> None:
        if name == self.node_name:
            self.show_snapshot()
            self.refresh_details()

    def show_snapshot(self) -> None:
        snap = self.snapshot
        status = self.query_one("#node-status", Label)
        reason = self.query_one("#node-reason", Static)
        if snap is None:
            status.update("not polled yet")
            return
        status.update(snap.status)
        status.set_classes(f"status-{snap.status}")  # coloured in app.tcss
        reason.update(Text(f"{snap.reason or ''}   polled {fmt.clock(snap.polled_at)}"))
        self.query_one("#overview-text", Static).update(overview_text(snap))
        fill_checks(self.query_one("#checks", DataTable), snap.checks)
        self.row_extras["checks"] = check_extras(snap.checks)
        self._show_trends(self.app.history(self.node_name))

    def _show_trends(self, history: list[tuple]) -> None:
        """The sparklines of the polls seen, each label giving its scale (console.widgets.spark.trends)."""
        (ingest, ingest_label), (free, free_label) = trends(history)
        self.query_one("#ingest-spark", Spark).data = ingest
        self.query_one("#free-spark", Spark).data = free
        self.query_one("#ingest-label", Label).update(ingest_label)
        self.query_one("#free-label", Label).update(free_label)

    def refresh_details(self) -> None:
        if self._inflight:  # a slow node: the last round is still out, do not stack another behind it
            return
        calls = [(method, params, None) for method, params in DETAILS.items()]
        calls += [(m, params, pane) for pane in self.query(NodePane) for m, params in pane.DETAILS.items()]
        self._inflight = len(calls)
        for method, params, pane in calls:
            self._ask(
                method,
                params,
                lambda result, error, m=method, p=pane: self._got_detail(m, result, error, p),
                read_only=True,
            )

    def _ask(self, method: str, params: dict, done, *, record: str | None = None, read_only: bool = False) -> None:
        """One call through the app; `done(result, error)` gets the typed result (console.results) or the error,
        an answer this console cannot read among the errors. `details[record or method]` keeps the answer as it came."""

        def answered(answer, error) -> None:
            self.details[record or method] = answer if error is None else error
            done(*read_answer(method, answer, error))

        self.app.call_node(self.node_name, method, params, answered, owner=self, read_only=read_only)

    def _got_detail(self, method: str, result, error, pane: NodePane | None = None) -> None:
        self._inflight = max(0, self._inflight - 1)
        if pane is not None:
            pane.show_detail(method, result, error)
        elif method == "pools.list":
            fill_pools(self.query_one("#pools", DataTable), result)
        elif method == "queue.list":
            self._show_queue(result, error)
        elif method == "associations.recent":
            entries = result.associations if result is not None else ()
            self.associations = {str(i if a.id is None else a.id): a for i, a in enumerate(entries)}
            fill_associations(self.query_one("#associations-table", DataTable), entries)
            self.query_one(AetsPane).show_activity(entries)
            self.refresh_bindings()  # the selected row may now be a refusal that `a` can fix

    def _show_queue(self, result: QueueList | None, error) -> None:
        note = self.query_one("#queue-note", Static)
        table = self.query_one("#jobs", DataTable)
        if error is not None:
            kind = getattr(error, "kind", None)
            # A node from before the queue answers method-not-found: it has no queue, which is not an error.
            note.update(
                "this node has no queue (no queue.list)" if kind == "not_found" else failure("queue.list", error)
            )
            table.display = False
            return
        table.display = True
        oldest = result.oldest_pending_age_s
        note.update(
            Text(
                "  ".join(f"{k} {v}" for k, v in result.counts.items())
                + (f"  oldest pending {fmt.age(oldest)}" if oldest is not None else "")
            )
        )
        fill_jobs(table, result.jobs)
        self.row_extras["jobs"] = job_extras(result.jobs)

    # --- actions ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters) -> bool | None:
        # Read-only: mutating actions are hidden from the footer and never run.
        if action in MUTATING_ACTIONS and self.app.readonly:
            return False
        if action in TAB_ACTIONS and self._active_tab() != TAB_ACTIONS[action]:
            return False
        if action == "show_row" and not isinstance(self.focused, DataTable):
            return False  # shown only where there is a row to show (not the overview, not the log)
        if action == "register_calling_ae" and self._selected_refusal() is None:
            return None  # shown, dimmed: the key is there, this row is not a sender to register
        return True

    def _active_tab(self) -> str | None:
        tabs = self.query(TabbedContent)
        return tabs.first().active if tabs else None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()
        # The open tab's main widget takes the focus, so the arrow keys move its cursor (or scroll it) at once.
        focus = FIXED_FOCUS | {p.TAB: p.FOCUS for p in PANES}
        target = focus.get(event.pane.id or "")
        if target:
            self.query_one(target).focus()

    # --- a row in full (Enter or `v`) ------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter on a row: no table of this screen had another use for it; a pane that has one stops the event.
        self.show_row(event.data_table, event.row_key.value)

    def action_show_row(self) -> None:
        table = self.focused
        if not isinstance(table, DataTable) or table.row_count == 0:
            self.notify("no row selected: move to a table first", severity="warning")
            return
        self.show_row(table, table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)

    def show_row(self, table: DataTable, key: str | None) -> None:
        extras = self.row_extras.get(table.id or "", {})
        if key is not None and key in table.rows:
            self.app.push_screen(RowDetailScreen.of_row(self.node_name, table, key, extras.get(key, [])))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "associations-table":
            self.refresh_bindings()

    def on_node_pane_changed(self, event: NodePane.Changed) -> None:
        self.refresh_details()  # the pane's list, and the other tabs the change is about

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_refresh(self) -> None:
        self.app.refresh_node(self.node_name)
        self.refresh_details()

    def _selected_job(self) -> int | None:
        table = self.query_one("#jobs", DataTable)
        if not table.display or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return int(key)

    def action_retry_job(self) -> None:
        job = self._selected_job()
        if job is None:
            self.notify("no job selected", severity="warning")
            return
        self._job_call(job, "queue.retry", "retried", lambda result: result.retried)

    def action_cancel_job(self) -> None:
        job = self._selected_job()
        if job is None:
            self.notify("no job selected", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            # The job the question named, whatever the refreshes did to the table while it was open.
            if yes:
                self._job_call(job, "queue.cancel", "cancelled", lambda result: result.cancelled)

        self.app.push_screen(ConfirmScreen(f"Cancel job {job} on {self.node_name}?", "Cancel job"), confirmed)

    def _job_call(self, job: int, method: str, counted: str, count: Callable[[Retried | Cancelled], int]) -> None:

        def done(result, error) -> None:
            if error is not None:
                self.notify(f"{method} job {job}: {error}", severity="error")
            else:
                self.notify(f"job {job}: {counted} {count(result)}")
            self.refresh_details()

        self._ask(method, {"id": job}, done)

    def action_plan_migration(self) -> None:
        def done(result: Migration | None, error) -> None:
            note = self.query_one("#plan-note", Static)
            if error is not None:
                note.update(Text(f"migration plan: {error}"))
                return
            note.update(Text(plan_note(result)))
            fill_plan(self.query_one("#plan", DataTable), result)

        self._ask("pools.migrate", {"dry_run": True}, done, record="plan", read_only=True)

    def action_run_migration(self) -> None:
        def done(result: Migration | None, error) -> None:
            if error is not None:
                self.notify(f"migration: {error}", severity="error")
            elif result.job_id is None:
                self.notify(f"migration: {result.reason or 'nothing to move'}")
            else:
                self.notify(f"migration job {result.job_id} {result.state}: moved {result.moved_instances} instances")
            self.refresh_details()

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._ask("pools.migrate", {"dry_run": False}, done, record="migration")

        self.app.push_screen(
            ConfirmScreen(f"Run the migration rules on {self.node_name} now?", "Run migration"), confirmed
        )

    # --- AE titles, and the one-key fix of a refused sender ----------------------------------------------

    def _selected_refusal(self) -> Association | None:
        table = self.query("#associations-table")
        if not table or table.first().row_count == 0:
            return None
        table = table.first()
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        association = self.associations.get(key)
        return association if association is not None and from_refusal(association) is not None else None

    def action_register_calling_ae(self) -> None:
        association = self._selected_refusal()
        if association is None:
            self.notify("this association was not refused for an unregistered AE", severity="warning")
            return
        self.query_one(AetsPane).register(association)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "plan-migration": self.action_plan_migration,
            "run-migration": self.action_run_migration,
            "retry-job": self.action_retry_job,
            "cancel-job": self.action_cancel_job,
        }
        if event.button.id in actions:
            actions[event.button.id]()
