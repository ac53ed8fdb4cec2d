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
    selected = None
    if table.row_count and 0 <= table.cursor_row < table.row_count:
        selected = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(fmt.text(c)) for c in cells), key=key)
    keys = [key for key, _ in rows]
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def fill_checks(table: DataTable, checks: Sequence[Check]) -> None:
    rows = []
    for i, c in enumerate(checks):
        shown = "" if c.value is None else f"{c.value}{' ' + c.unit if c.unit else ''}"
        rows.append((f"{i}:{c.name}", (c.status, c.name, shown, c.threshold, c.message)))
    refill(table, ("status", "check", "value", "threshold", "message"), rows)


def fill_pools(table: DataTable, result: PoolsList | None) -> None:
    rows = []
    for p in result.pools if result is not None else ():
        state = p.error or (
            "above high watermark" if p.above_high_watermark else "accepting" if p.accepting else "full"
        )
        marks = "" if p.high_watermark is None else f"{p.low_watermark}–{p.high_watermark}%"
        rows.append(
            (
                p.name,
                (
                    p.name,
                    p.tier,
                    p.instances,
                    fmt.size(p.used),
                    fmt.size(p.capacity),
                    fmt.pct(p.used_percent),
                    marks,
                    state,
                ),
            )
        )
    refill(table, ("pool", "tier", "instances", "used", "capacity", "used %", "watermarks", "state"), rows)


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
        rows.append(
            (
                str(j.id),
                (j.id, j.kind, j.state, attempts, j.destination, progress, j.next_attempt_at, j.last_error),
            )
        )
    refill(table, ("id", "kind", "state", "attempts", "destination", "items", "next attempt", "last error"), rows)


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
