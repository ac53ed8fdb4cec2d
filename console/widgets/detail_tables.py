"""Tables of the node screen filled from agent results: checks, pools, migration plan, jobs, associations."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from ..results import Association, Check, Job, Migration, NodeStatus, PoolsList
from ..snapshot import NodeSnapshot
from . import format as fmt


def refill(table: DataTable, columns: tuple[str, ...], rows: list[tuple[str, tuple]]) -> None:
    """Replace the rows (key, cells), keeping the cursor on the same key; every cell as plain Text."""
    if not table.columns:
        for label in columns:
            table.add_column(label, key=label)
    selected, row = None, table.cursor_row
    if table.row_count and 0 <= row < table.row_count:
        selected = table.coordinate_to_cell_key((row, 0)).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(fmt.text(c)) for c in cells), key=key)
    keys = [key for key, _ in rows]
    # The row's key, not its place: new jobs above the selected one must not move a key press onto another
    # job (issue 17: `c` named the wrong job after a refresh). A row that is gone leaves the cursor where it was.
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)
    elif keys and selected is not None:
        table.move_cursor(row=min(max(row, 0), len(keys) - 1), animate=False)


def row_fields(table: DataTable, key: str) -> list[tuple[str, str]]:
    """Each column's label and the row's whole cell, for the row detail (a cell the table cuts is whole here)."""
    labels = [str(c.label) for c in table.columns.values()]
    return [(label, str(cell)) for label, cell in zip(labels, table.get_row(key), strict=False)]


def fill_checks(table: DataTable, checks: Sequence[Check]) -> None:
    rows = []
    for i, c in enumerate(checks):
        shown = "" if c.value is None else f"{c.value}{' ' + c.unit if c.unit else ''}"
        rows.append((f"{i}:{c.name}", (c.status, c.name, shown, c.threshold, c.message)))
    refill(table, ("status", "check", "value", "threshold", "message"), rows)


def check_extras(checks: Sequence[Check]) -> dict[str, list[tuple[str, str]]]:
    """The figures a check has beyond its columns (`detail`), by the row key fill_checks gives it."""
    return {
        f"{i}:{c.name}": [(f"detail: {name}", fmt.text(value)) for name, value in (c.detail or {}).items()]
        for i, c in enumerate(checks)
    }


POOL_COLUMNS = (
    "pool",
    "tier",
    "holds",
    "instances",
    "capacity",
    "used %",
    "watermarks",
    "state",
    "filesystem used",
    "free",
    "size",
)


def fill_pools(table: DataTable, result: PoolsList | None) -> None:
    """What each pool holds, then its filesystem's figures apart: the filesystem is shared with whatever else
    lives on it (issue 17: "used 22.9 GiB" for a pool that held 1.6 MB)."""
    rows = []
    for p in result.pools if result is not None else ():
        state = p.error or (
            "above high watermark" if p.above_high_watermark else "accepting" if p.accepting else "full"
        )
        marks = "" if p.high_watermark is None else f"{p.low_watermark}–{p.high_watermark}%"
        # Without a capacity of its own a pool's watermarks count the filesystem's use (an older agent: `used`).
        disk_used = p.disk_used if p.disk_used is not None else (None if p.capacity_is_logical else p.used)
        rows.append(
            (
                p.name,
                (
                    p.name,
                    p.tier,
                    fmt.size(p.indexed_bytes),
                    p.instances,
                    fmt.size(p.capacity) if p.capacity_is_logical else "filesystem",
                    fmt.pct(p.used_percent),
                    marks,
                    state,
                    fmt.size(disk_used),
                    fmt.size(p.disk_free),
                    fmt.size(p.disk_total),
                ),
            )
        )
    refill(table, POOL_COLUMNS, rows)


def plan_note(result: Migration) -> str:
    """The line above the plan: its totals, or why nothing is planned."""
    line = f"plan: {result.studies} studies, {result.instances} instances, {fmt.size(result.bytes)}; "
    line += f"{len(result.skipped)} skipped"
    if not result.plan:
        line += f" — {result.reason}" if result.reason else " — nothing to move"
    return line


def fill_plan(table: DataTable, report: Migration) -> None:
    rows = [
        (f"m{i}", (m.study_uid, m.instances, fmt.size(m.bytes), f"{m.source} → {m.target}", m.reason))
        for i, m in enumerate(report.plan)
    ]
    rows += [(f"s{i}", (s.study_uid or s.source, "", "", "skipped", s.why)) for i, s in enumerate(report.skipped)]
    refill(table, ("study", "instances", "size", "move", "why"), rows)


def fill_jobs(table: DataTable, jobs: Sequence[Job]) -> None:
    rows = []
    for j in jobs:
        progress = f"{j.items_done or 0}/{j.items_total}" if j.items_total else fmt.count(j.items_done)
        attempts = f"{j.attempts}/{'?' if j.max_attempts is None else j.max_attempts}"
        # A node from before the fix keeps a done job's old error: say it is history, not the job's state.
        error = Text(f"previous: {j.last_error}", style="dim") if j.state == "done" and j.last_error else j.last_error
        rows.append(
            (
                str(j.id),
                (j.id, j.kind, j.state, attempts, j.destination, progress, j.next_attempt_at, error),
            )
        )
    refill(table, ("id", "kind", "state", "attempts", "destination", "items", "next attempt", "last error"), rows)


def job_extras(jobs: Sequence[Job]) -> dict[str, list[tuple[str, str]]]:
    """A job's fields beyond its columns that the node gave, by the row key fill_jobs gives it."""
    return {
        str(j.id): [
            (name, str(value))
            for name, value in (
                ("study", j.study_uid),
                ("reason", j.reason),
                ("created", j.created_at),
                ("updated", j.updated_at),
            )
            if value is not None
        ]
        for j in jobs
    }


def fill_associations(table: DataTable, entries: Sequence[Association]) -> None:
    rows = [
        (
            str(i if a.id is None else a.id),
            (
                a.started_at,
                a.calling_ae,
                a.called_ae,
                f"{a.peer_host}:{a.peer_port}",
                a.result,
                a.instances,
                a.reason,
            ),
        )
        for i, a in enumerate(entries)
    ]
    refill(table, ("started", "calling AE", "called AE", "peer", "result", "instances", "reason"), rows)


def overview_text(snap: NodeSnapshot) -> Text:
    """node.status and the snapshot's figures as aligned `label  value` lines."""
    status = snap.node_status or NodeStatus()  # none before a first answer: every figure a dash
    process = status.process
    lines = [
        ("status", snap.status + (f" ({snap.reason})" if snap.reason else "")),
        ("version", fmt.text(snap.version)),
        ("AE title", fmt.text(snap.ae_title)),
        ("port", fmt.text(snap.port)),
        ("config", fmt.text(status.node.config)),
        ("listening", fmt.text(status.listening)),
        (
            "process",
            f"pid {process.pid}, {process.workers} workers, up {fmt.age(process.uptime_s)}"
            if process is not None
            else fmt.DASH,
        ),
        ("instances", fmt.text(snap.instances if snap.instances is not None else status.counts.instances)),
        ("studies", fmt.text(status.counts.studies)),
        ("primary used", fmt.pct(snap.primary_used_pct)),
        ("archive used", fmt.pct(snap.archive_used_pct)),
        ("disk free", fmt.size(snap.disk_free_bytes)),
        ("ingest", f"{fmt.rate(snap.ingest_rate)} instances/s"),
        ("queue", f"{fmt.count(snap.queue_pending)} pending, {fmt.count(snap.queue_failed)} failed"),
        ("backup age", fmt.age(snap.backup_age_s)),
        ("worst check", fmt.text(snap.worst_check)),
        ("latency", f"{snap.latency_ms:.1f} ms" if snap.latency_ms is not None else fmt.DASH),
        ("polled", fmt.clock(snap.polled_at)),
    ]
    text = Text()
    for label, value in lines:
        text.append(f"{label:<14}", style="bold")
        text.append(f"{value}\n")
    return text
